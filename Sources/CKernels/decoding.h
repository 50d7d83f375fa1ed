// Shared by the decoding kernels (f32gemv.c, halfgemv.c, q8gemv.c).
#ifndef CK_DECODING_H
#define CK_DECODING_H
#include <immintrin.h>
#include <stddef.h>

// The AVX-512 and AVX2 bodies work on four output rows at a time. The last group of a product whose row count is
// not a multiple of four reads its last row again in place of the missing ones (their sums are dropped),
// so every output is summed in the same order wherever it falls.
static inline size_t ck_group_row(size_t first, size_t member, size_t out) {
    return first + member < out ? first + member : out - 1;
}

// Writes (or, with `accumulate`, adds) the sums of group rows first..first+3 that exist.
static inline void ck_store_group(float *y, size_t first, size_t out, int accumulate, const float sums[4]) {
    for (size_t member = 0; member < 4 && first + member < out; member++)
        y[first + member] = accumulate ? y[first + member] + sums[member] : sums[member];
}

// The sum of an AVX2 register's eight lanes.
__attribute__((target("avx2,fma"))) static inline float ck_sum8(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

#endif
