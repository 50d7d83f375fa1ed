#ifndef CK_DISPATCH_H
#define CK_DISPATCH_H
#include "ckernels.h"

// Each kernel of ours is compiled three times, for AVX-512 (F, BW, DQ, VL), for AVX2 with FMA and F16C
// (x86-64-v3's vector part, which every AVX2 CPU we meet has) and for baseline x86-64, and each call runs
// the body ck_isa_level() names: the CPU's best, capped by DISTILL_ISA so that the suite can run the AVX2
// and plain bodies on an AVX-512 machine. (target_clones picked the body in the loader, where no
// setting can reach it.)
#define CK_TARGET_AVX512 __attribute__((target("avx512f,avx512bw,avx512dq,avx512vl")))
#define CK_TARGET_AVX2 __attribute__((target("avx2,fma,f16c")))

// CK_KERNEL(ret, name, (parameters), (arguments)) { body } defines `ret name(parameters)`: the body is
// inlined into one function per instruction set, and `name` calls the one in force.
#define CK_KERNEL(ret, name, params, args)                                                                         \
    static inline __attribute__((always_inline)) ret name##_body params;                                           \
    static CK_TARGET_AVX512 ret name##_avx512 params { return name##_body args; }                                  \
    static CK_TARGET_AVX2 ret name##_avx2 params { return name##_body args; }                                      \
    static ret name##_baseline params { return name##_body args; }                                                 \
    ret name params {                                                                                              \
        switch (ck_isa_level()) {                                                                                  \
        case CK_ISA_AVX512: return name##_avx512 args;                                                             \
        case CK_ISA_AVX2: return name##_avx2 args;                                                                 \
        default: return name##_baseline args;                                                                      \
        }                                                                                                          \
    }                                                                                                              \
    static inline __attribute__((always_inline)) ret name##_body params

#endif
