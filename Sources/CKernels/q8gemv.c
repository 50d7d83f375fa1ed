#include "ckernels.h"
#include "decoding.h"
#include <immintrin.h>

// Matrix–vector products over weights in llama.cpp's Q8_0 layout, for decoding: each row of w is cut into
// blocks of 32 weights, stored as 8-bit integers q with one float scale d per block (w ≈ d·q). A quarter
// of the f32 bytes per token, half of the 16-bit ones; decoding a small model is limited by those bytes.
// x stays float: each block's Σ x·q is taken in float and then scaled, so the result is that of an f32
// product over the dequantized weights d·q, up to the order of the sums (llama.cpp instead rounds x to
// 8 bits too).
//
// Every output is one dot product in a fixed order, so the result does not depend on how the outputs
// are split between threads.
// Several rows (sequences decoded together) take each group of four weight rows in turn, so that its
// weights are read from memory once for all of them, not once per row; each row's sums are the same.

// MARK: AVX-512: a block is two vectors of 16; four output rows at a time share the loads of x (decoding.h).

__attribute__((target("avx512f"))) static inline __m512 widen16(const int8_t *p) {
    return _mm512_cvtepi32_ps(_mm512_cvtepi8_epi32(_mm_loadu_si128((const __m128i *)p)));
}

__attribute__((target("avx512f"))) static inline __m512 block16x2(__m512 x0, __m512 x1, const int8_t *q) {
    return _mm512_fmadd_ps(x1, widen16(q + 16), _mm512_mul_ps(x0, widen16(q)));
}

__attribute__((target("avx512f"))) static void linear_avx512(float *y, size_t ldy, const float *x, const int8_t *q,
                                                             const float *scales, size_t rows, size_t in, size_t out,
                                                             int accumulate) {
    size_t blocks = in / 32;
    for (size_t o = 0; o < out; o += 4) {
        size_t o1 = ck_group_row(o, 1, out), o2 = ck_group_row(o, 2, out), o3 = ck_group_row(o, 3, out);
        const int8_t *q0 = q + o * in, *q1 = q + o1 * in, *q2 = q + o2 * in, *q3 = q + o3 * in;
        const float *d0 = scales + o * blocks, *d1 = scales + o1 * blocks, *d2 = scales + o2 * blocks;
        const float *d3 = scales + o3 * blocks;
        for (size_t r = 0; r < rows; r++) { // several rows: the group's weights come from L1 after the first
            const float *xr = x + r * in;
            float *yr = y + r * ldy;
            __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (size_t b = 0; b < blocks; b++) {
                // The next four rows' blocks, ahead of the hardware prefetcher (measured: ~8% faster), during
                // the first input row only.
                if (r == 0)
                    for (size_t ahead = 4; ahead < 8; ahead++) _mm_prefetch((const char *)(q0 + ahead * in + 32 * b), _MM_HINT_T0);
                __m512 x0 = _mm512_loadu_ps(xr + 32 * b), x1 = _mm512_loadu_ps(xr + 32 * b + 16);
                s0 = _mm512_fmadd_ps(block16x2(x0, x1, q0 + 32 * b), _mm512_set1_ps(d0[b]), s0);
                s1 = _mm512_fmadd_ps(block16x2(x0, x1, q1 + 32 * b), _mm512_set1_ps(d1[b]), s1);
                s2 = _mm512_fmadd_ps(block16x2(x0, x1, q2 + 32 * b), _mm512_set1_ps(d2[b]), s2);
                s3 = _mm512_fmadd_ps(block16x2(x0, x1, q3 + 32 * b), _mm512_set1_ps(d3[b]), s3);
            }
            float sums[4] = {_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(s1), _mm512_reduce_add_ps(s2),
                             _mm512_reduce_add_ps(s3)};
            ck_store_group(yr, o, out, accumulate, sums);
        }
    }
}

// MARK: AVX2 with FMA: a block is four vectors of 8; four output rows at a time, as the AVX-512 body (one
// row's chain of dependent FMAs waited on each one's latency).

__attribute__((target("avx2,fma"))) static inline __m256 widen8(const int8_t *p) {
    return _mm256_cvtepi32_ps(_mm256_cvtepi8_epi32(_mm_loadl_epi64((const __m128i *)p)));
}

__attribute__((target("avx2,fma"))) static inline __m256 block8x4(const float *xb, const int8_t *qb) {
    __m256 block = _mm256_mul_ps(_mm256_loadu_ps(xb), widen8(qb));
    block = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 8), widen8(qb + 8), block);
    block = _mm256_fmadd_ps(_mm256_loadu_ps(xb + 16), widen8(qb + 16), block);
    return _mm256_fmadd_ps(_mm256_loadu_ps(xb + 24), widen8(qb + 24), block);
}

__attribute__((target("avx2,fma"))) static void linear_avx2(float *y, size_t ldy, const float *x, const int8_t *q,
                                                            const float *scales, size_t rows, size_t in, size_t out,
                                                            int accumulate) {
    size_t blocks = in / 32;
    for (size_t o = 0; o < out; o += 4) {
        size_t o1 = ck_group_row(o, 1, out), o2 = ck_group_row(o, 2, out), o3 = ck_group_row(o, 3, out);
        const int8_t *q0 = q + o * in, *q1 = q + o1 * in, *q2 = q + o2 * in, *q3 = q + o3 * in;
        const float *d0 = scales + o * blocks, *d1 = scales + o1 * blocks, *d2 = scales + o2 * blocks;
        const float *d3 = scales + o3 * blocks;
        for (size_t r = 0; r < rows; r++) { // several rows: the group's weights come from L1 after the first
            const float *xr = x + r * in;
            float *yr = y + r * ldy;
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (size_t b = 0; b < blocks; b++) {
                if (r == 0)
                    for (size_t ahead = 4; ahead < 8; ahead++) _mm_prefetch((const char *)(q0 + ahead * in + 32 * b), _MM_HINT_T0);
                const float *xb = xr + 32 * b;
                s0 = _mm256_fmadd_ps(block8x4(xb, q0 + 32 * b), _mm256_set1_ps(d0[b]), s0);
                s1 = _mm256_fmadd_ps(block8x4(xb, q1 + 32 * b), _mm256_set1_ps(d1[b]), s1);
                s2 = _mm256_fmadd_ps(block8x4(xb, q2 + 32 * b), _mm256_set1_ps(d2[b]), s2);
                s3 = _mm256_fmadd_ps(block8x4(xb, q3 + 32 * b), _mm256_set1_ps(d3[b]), s3);
            }
            float sums[4] = {ck_sum8(s0), ck_sum8(s1), ck_sum8(s2), ck_sum8(s3)};
            ck_store_group(yr, o, out, accumulate, sums);
        }
    }
}

// MARK: baseline

static void linear_plain(float *y, size_t ldy, const float *x, const int8_t *q, const float *scales, size_t rows,
                         size_t in, size_t out, int accumulate) {
    size_t blocks = in / 32;
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            float e = 0;
            for (size_t b = 0; b < blocks; b++) {
                float block = 0;
                for (size_t k = 32 * b; k < 32 * b + 32; k++) block += x[r * in + k] * (float)q[o * in + k];
                e += block * scales[o * blocks + b];
            }
            y[r * ldy + o] = accumulate ? y[r * ldy + o] + e : e;
        }
    }
}

void ck_linear_q8_0(float *y, size_t ldy, const float *x, const int8_t *q, const float *scales, size_t rows, size_t in,
                    size_t out, int accumulate) {
    ck_linear_q8_0_at_level(ck_isa_level(), y, ldy, x, q, scales, rows, in, out, accumulate);
}

void ck_linear_q8_0_at_level(int level, float *y, size_t ldy, const float *x, const int8_t *q, const float *scales,
                             size_t rows, size_t in, size_t out, int accumulate) {
    if (level > ck_isa_level()) level = ck_isa_level();
    switch (level) {
    case CK_ISA_AVX512: linear_avx512(y, ldy, x, q, scales, rows, in, out, accumulate); break;
    case CK_ISA_AVX2: linear_avx2(y, ldy, x, q, scales, rows, in, out, accumulate); break;
    default: linear_plain(y, ldy, x, q, scales, rows, in, out, accumulate);
    }
}
