#include "ckernels.h"
#include "decoding.h"
#include <immintrin.h>
#include <string.h>

// Matrix–vector products over weights stored as 16-bit floats, for decoding: one token's step reads
// every weight once and does two flops per weight, so its speed is the memory's, and 16-bit weights
// halve the bytes. Each weight is widened exactly to float in registers and the products and sums are
// float, so the result is that of an f32 product over the rounded weights, up to the order of the sums.
// Debian's OpenBLAS is built without its bfloat16 routines (sbgemv), hence this kernel of our own.
//
// Every output is one dot product in a fixed order (16 or 8 lanes over k, the tail after), so the
// result does not depend on how the outputs are split between threads.
// Several rows (sequences decoded together) take each group of four weight rows in turn, so that its
// weights are read from memory once for all of them, not once per row; each row's sums are the same.

static inline float widen_bf16(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline float widen_f16(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, mantissa = h & 0x3FF, bits;
    int exponent = (h >> 10) & 0x1F;
    if (exponent == 0) {
        float magnitude = (float)mantissa * 0x1p-24f; // subnormal half: exact as a normal float
        memcpy(&bits, &magnitude, sizeof bits);
        bits |= sign;
    } else if (exponent == 0x1F) {
        bits = sign | 0x7F800000u | (mantissa << 13);
    } else {
        bits = sign | ((uint32_t)(exponent - 15 + 127) << 23) | (mantissa << 13);
    }
    float value;
    memcpy(&value, &bits, sizeof value);
    return value;
}

static inline float widen(uint16_t h, int format) { return format == CK_HALF_BF16 ? widen_bf16(h) : widen_f16(h); }

// The scalar end of four dot products, k in [from, in), after their vector part.
static inline void add_tail(float sums[4], const uint16_t *w0, const uint16_t *w1, const uint16_t *w2, const uint16_t *w3,
                            const float *x, size_t from, size_t in, int format) {
    for (size_t k = from; k < in; k++) {
        sums[0] += widen(w0[k], format) * x[k];
        sums[1] += widen(w1[k], format) * x[k];
        sums[2] += widen(w2[k], format) * x[k];
        sums[3] += widen(w3[k], format) * x[k];
    }
}

// MARK: AVX-512: 16 lanes, four output rows at a time (decoding.h).

__attribute__((target("avx512f"))) static inline __m512 widen16(const uint16_t *p, int format) {
    __m256i halves = _mm256_loadu_si256((const __m256i *)p);
    if (format == CK_HALF_BF16) return _mm512_castsi512_ps(_mm512_slli_epi32(_mm512_cvtepu16_epi32(halves), 16));
    return _mm512_cvtph_ps(halves);
}

__attribute__((always_inline, target("avx512f"))) static inline void
linear_avx512(float *y, size_t ldy, const float *x, const uint16_t *w, size_t rows, size_t in, size_t out,
              int accumulate, const int format) {
    size_t vectorised = in / 16 * 16;
    for (size_t o = 0; o < out; o += 4) {
        const uint16_t *w0 = w + o * in, *w1 = w + ck_group_row(o, 1, out) * in;
        const uint16_t *w2 = w + ck_group_row(o, 2, out) * in, *w3 = w + ck_group_row(o, 3, out) * in;
        for (size_t r = 0; r < rows; r++) { // several rows: the group's weights come from L1 after the first
            const float *xr = x + r * in;
            float *yr = y + r * ldy;
            __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (size_t k = 0; k < vectorised; k += 16) {
                // The next four rows, ahead of the hardware prefetcher (as in q8gemv.c), during the first
                // input row only: the others find this group in L1.
                if (r == 0)
                    for (size_t ahead = 4; ahead < 8; ahead++) _mm_prefetch((const char *)(w0 + ahead * in + k), _MM_HINT_T0);
                __m512 xv = _mm512_loadu_ps(xr + k);
                s0 = _mm512_fmadd_ps(widen16(w0 + k, format), xv, s0);
                s1 = _mm512_fmadd_ps(widen16(w1 + k, format), xv, s1);
                s2 = _mm512_fmadd_ps(widen16(w2 + k, format), xv, s2);
                s3 = _mm512_fmadd_ps(widen16(w3 + k, format), xv, s3);
            }
            float sums[4] = {_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(s1), _mm512_reduce_add_ps(s2),
                             _mm512_reduce_add_ps(s3)};
            add_tail(sums, w0, w1, w2, w3, xr, vectorised, in, format);
            ck_store_group(yr, o, out, accumulate, sums);
        }
    }
}

// MARK: AVX2 with FMA (and F16C for halves): 8 lanes, four output rows at a time, as the AVX-512 body
// (one row's single chain of FMAs waited on each one's latency).

__attribute__((target("avx2,fma,f16c"))) static inline __m256 widen8(const uint16_t *p, int format) {
    __m128i halves = _mm_loadu_si128((const __m128i *)p);
    if (format == CK_HALF_BF16) return _mm256_castsi256_ps(_mm256_slli_epi32(_mm256_cvtepu16_epi32(halves), 16));
    return _mm256_cvtph_ps(halves);
}

__attribute__((always_inline, target("avx2,fma,f16c"))) static inline void
linear_avx2(float *y, size_t ldy, const float *x, const uint16_t *w, size_t rows, size_t in, size_t out,
            int accumulate, const int format) {
    size_t vectorised = in / 8 * 8;
    for (size_t o = 0; o < out; o += 4) {
        const uint16_t *w0 = w + o * in, *w1 = w + ck_group_row(o, 1, out) * in;
        const uint16_t *w2 = w + ck_group_row(o, 2, out) * in, *w3 = w + ck_group_row(o, 3, out) * in;
        for (size_t r = 0; r < rows; r++) { // several rows: the group's weights come from L1 after the first
            const float *xr = x + r * in;
            float *yr = y + r * ldy;
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (size_t k = 0; k < vectorised; k += 8) {
                // A cache line of each of the next four rows every fourth step (a line holds 32 halves).
                if (r == 0 && (k & 31) == 0)
                    for (size_t ahead = 4; ahead < 8; ahead++) _mm_prefetch((const char *)(w0 + ahead * in + k), _MM_HINT_T0);
                __m256 xv = _mm256_loadu_ps(xr + k);
                s0 = _mm256_fmadd_ps(widen8(w0 + k, format), xv, s0);
                s1 = _mm256_fmadd_ps(widen8(w1 + k, format), xv, s1);
                s2 = _mm256_fmadd_ps(widen8(w2 + k, format), xv, s2);
                s3 = _mm256_fmadd_ps(widen8(w3 + k, format), xv, s3);
            }
            float sums[4] = {ck_sum8(s0), ck_sum8(s1), ck_sum8(s2), ck_sum8(s3)};
            add_tail(sums, w0, w1, w2, w3, xr, vectorised, in, format);
            ck_store_group(yr, o, out, accumulate, sums);
        }
    }
}

// One entry per body and format; the format is a constant there, so the compiler drops its branches.
#define ENTRY(body, features, suffix, format)                                                                    \
    __attribute__((target(features))) static void body##_##suffix(float *y, size_t ldy, const float *x,           \
                                                                   const uint16_t *w, size_t rows, size_t in,     \
                                                                   size_t out, int accumulate) {                  \
        body(y, ldy, x, w, rows, in, out, accumulate, format);                                                   \
    }
ENTRY(linear_avx512, "avx512f", bf16, CK_HALF_BF16)
ENTRY(linear_avx512, "avx512f", f16, CK_HALF_F16)
ENTRY(linear_avx2, "avx2,fma,f16c", bf16, CK_HALF_BF16)
ENTRY(linear_avx2, "avx2,fma,f16c", f16, CK_HALF_F16)

// MARK: baseline

static void linear_plain(float *y, size_t ldy, const float *x, const uint16_t *w, size_t rows, size_t in, size_t out,
                         int accumulate, int format) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            float d = 0;
            for (size_t k = 0; k < in; k++) d += widen(w[o * in + k], format) * x[r * in + k];
            y[r * ldy + o] = accumulate ? y[r * ldy + o] + d : d;
        }
    }
}

void ck_linear_half(float *y, size_t ldy, const float *x, const uint16_t *w, int format, size_t rows, size_t in,
                    size_t out, int accumulate) {
    ck_linear_half_at_level(ck_isa_level(), y, ldy, x, w, format, rows, in, out, accumulate);
}

void ck_linear_half_at_level(int level, float *y, size_t ldy, const float *x, const uint16_t *w, int format,
                             size_t rows, size_t in, size_t out, int accumulate) {
    if (level > ck_isa_level()) level = ck_isa_level();
    switch (level) {
    case CK_ISA_AVX512:
        if (format == CK_HALF_BF16) linear_avx512_bf16(y, ldy, x, w, rows, in, out, accumulate);
        else linear_avx512_f16(y, ldy, x, w, rows, in, out, accumulate);
        break;
    case CK_ISA_AVX2:
        if (format == CK_HALF_BF16) linear_avx2_bf16(y, ldy, x, w, rows, in, out, accumulate);
        else linear_avx2_f16(y, ldy, x, w, rows, in, out, accumulate);
        break;
    default:
        linear_plain(y, ldy, x, w, rows, in, out, accumulate, format);
    }
}
