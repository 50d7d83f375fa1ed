#include "ckernels.h"
#include "decoding.h"
#include <immintrin.h>

// The matrix–vector product of an f32 decoding step, as ck_linear_half does it for 16-bit weights: four
// output rows at a time, each an f32 dot product with 16 (AVX-512) or 8 (AVX2) lanes over k, the next
// rows prefetched ahead of the hardware prefetcher. OpenBLAS's sgemv, which this replaces for one-row
// products, ran a `small` token at a quarter of the bf16 kernel's speed on one core although it reads
// only twice the bytes (`distill bench`: 1,652 against 6,871 tokens/s), so it is not the memory that
// held it back. Every output is one dot product in a fixed order, so the result does not depend on how
// the outputs are split between threads (or on the row's place in its group of four: ck_group_row).

// The scalar end of four dot products, k in [from, in), after their vector part.
static inline void add_tail(float sums[4], const float *w0, const float *w1, const float *w2, const float *w3,
                            const float *x, size_t from, size_t in) {
    for (size_t k = from; k < in; k++) {
        sums[0] += w0[k] * x[k];
        sums[1] += w1[k] * x[k];
        sums[2] += w2[k] * x[k];
        sums[3] += w3[k] * x[k];
    }
}

// Several input rows (a batch of sequences decoded together): each group of four weight rows is read
// from memory once and then from the L1 cache for every input row, where OpenBLAS's sgemm packed the
// whole weight matrix again at every call (batch 8 decoded fewer tokens a second than batch 1). Each
// output is summed in the same order as with one row, so a batch gives bitwise each row's own result.
__attribute__((always_inline, target("avx512f"))) static inline void
linear_avx512(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
    size_t vectorised = in / 16 * 16;
    for (size_t o = 0; o < out; o += 4) {
        const float *w0 = w + o * in, *w1 = w + ck_group_row(o, 1, out) * in;
        const float *w2 = w + ck_group_row(o, 2, out) * in, *w3 = w + ck_group_row(o, 3, out) * in;
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * in;
            __m512 s0 = _mm512_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (size_t k = 0; k < vectorised; k += 16) {
                if (r == 0)
                    for (size_t ahead = 4; ahead < 8; ahead++) _mm_prefetch((const char *)(w0 + ahead * in + k), _MM_HINT_T0);
                __m512 xv = _mm512_loadu_ps(xr + k);
                s0 = _mm512_fmadd_ps(_mm512_loadu_ps(w0 + k), xv, s0);
                s1 = _mm512_fmadd_ps(_mm512_loadu_ps(w1 + k), xv, s1);
                s2 = _mm512_fmadd_ps(_mm512_loadu_ps(w2 + k), xv, s2);
                s3 = _mm512_fmadd_ps(_mm512_loadu_ps(w3 + k), xv, s3);
            }
            float sums[4] = {_mm512_reduce_add_ps(s0), _mm512_reduce_add_ps(s1), _mm512_reduce_add_ps(s2),
                             _mm512_reduce_add_ps(s3)};
            add_tail(sums, w0, w1, w2, w3, xr, vectorised, in);
            ck_store_group(y + r * ldy, o, out, accumulate, sums);
        }
    }
}

// Four rows as in the AVX-512 body: four independent sums keep the FMA units busy (one row's single
// chain of FMAs waits on each one's latency).
__attribute__((always_inline, target("avx2,fma"))) static inline void
linear_avx2(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
    size_t vectorised = in / 8 * 8;
    for (size_t o = 0; o < out; o += 4) {
        const float *w0 = w + o * in, *w1 = w + ck_group_row(o, 1, out) * in;
        const float *w2 = w + ck_group_row(o, 2, out) * in, *w3 = w + ck_group_row(o, 3, out) * in;
        for (size_t r = 0; r < rows; r++) {
            const float *xr = x + r * in;
            __m256 s0 = _mm256_setzero_ps(), s1 = s0, s2 = s0, s3 = s0;
            for (size_t k = 0; k < vectorised; k += 8) {
                // One cache line of each next row every second step (a line holds 16 floats).
                if (r == 0 && (k & 15) == 0)
                    for (size_t ahead = 4; ahead < 8; ahead++) _mm_prefetch((const char *)(w0 + ahead * in + k), _MM_HINT_T0);
                __m256 xv = _mm256_loadu_ps(xr + k);
                s0 = _mm256_fmadd_ps(_mm256_loadu_ps(w0 + k), xv, s0);
                s1 = _mm256_fmadd_ps(_mm256_loadu_ps(w1 + k), xv, s1);
                s2 = _mm256_fmadd_ps(_mm256_loadu_ps(w2 + k), xv, s2);
                s3 = _mm256_fmadd_ps(_mm256_loadu_ps(w3 + k), xv, s3);
            }
            float sums[4] = {ck_sum8(s0), ck_sum8(s1), ck_sum8(s2), ck_sum8(s3)};
            add_tail(sums, w0, w1, w2, w3, xr, vectorised, in);
            ck_store_group(y + r * ldy, o, out, accumulate, sums);
        }
    }
}

__attribute__((target("avx512f"))) static void linear_avx512_entry(float *y, size_t ldy, const float *x, size_t rows,
                                                                    const float *w, size_t in, size_t out, int accumulate) {
    linear_avx512(y, ldy, x, rows, w, in, out, accumulate);
}

__attribute__((target("avx2,fma"))) static void linear_avx2_entry(float *y, size_t ldy, const float *x, size_t rows,
                                                                 const float *w, size_t in, size_t out, int accumulate) {
    linear_avx2(y, ldy, x, rows, w, in, out, accumulate);
}

static void linear_plain(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out,
                         int accumulate) {
    for (size_t r = 0; r < rows; r++) {
        for (size_t o = 0; o < out; o++) {
            float d = 0;
            for (size_t k = 0; k < in; k++) d += w[o * in + k] * x[r * in + k];
            y[r * ldy + o] = accumulate ? y[r * ldy + o] + d : d;
        }
    }
}

void ck_linear_f32(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
    ck_linear_f32_at_level(ck_isa_level(), y, ldy, x, rows, w, in, out, accumulate);
}

void ck_linear_f32_at_level(int level, float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in,
                            size_t out, int accumulate) {
    if (level > ck_isa_level()) level = ck_isa_level();
    switch (level) {
    case CK_ISA_AVX512: linear_avx512_entry(y, ldy, x, rows, w, in, out, accumulate); break;
    case CK_ISA_AVX2: linear_avx2_entry(y, ldy, x, rows, w, in, out, accumulate); break;
    default: linear_plain(y, ldy, x, rows, w, in, out, accumulate);
    }
}
