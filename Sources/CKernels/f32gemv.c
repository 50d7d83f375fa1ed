#include "ckernels.h"
#include "decoding.h"
#include <immintrin.h>

// The matrix–vector product of an f32 decoding step, as ck_linear_half does it for 16-bit weights: four
// output rows at a time, each an f32 dot product with 16 (AVX-512) or 8 (AVX2) lanes over k, the next
// rows prefetched ahead of the hardware prefetcher. OpenBLAS's sgemv, which this replaces for one-row
// products, ran a `small` token at a quarter of the bf16 kernel's speed on one core although it reads
// only twice the bytes (`distill bench`: 1,652 against 6,871 tokens/s), so it is not the memory that
// held it back. Several input rows (sequences decoded together) go in tiles of four (AVX-512) or two
// (AVX2) rows by four outputs. Every output is one dot product in a fixed order, so the result does not
// depend on how the outputs are split between threads, on the row's place in its group of four
// (ck_group_row), or on whether its input row was in a tile.

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

// The sixteen sums of a tile (s[4·row + member]) to their totals, lane 4·member + row holding the total
// of s[4·row + member]: each by the same tree of additions as _mm512_reduce_add_ps (lanes i and i + 8,
// then i and i + 4, i and i + 2, 0 and 1), so a row decoded in a tile gets the bits it gets alone. Fifteen
// additions for sixteen totals, where sixteen reductions take sixty-four.
__attribute__((always_inline, target("avx512f"))) static inline __m512 reduce16_avx512(const __m512 s[16]) {
    __m512 halves[8], quarters[4], eighths[2];
    for (int i = 0; i < 8; i++) // lanes 0–7: s[2i]'s i + (i + 8); lanes 8–15: s[2i + 1]'s
        halves[i] = _mm512_add_ps(_mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], 0x44),
                                  _mm512_shuffle_f32x4(s[2 * i], s[2 * i + 1], 0xEE));
    for (int i = 0; i < 4; i++) // 128-bit quarter q: s[4i + q]'s i + (i + 4)
        quarters[i] = _mm512_add_ps(_mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0x88),
                                    _mm512_shuffle_f32x4(halves[2 * i], halves[2 * i + 1], 0xDD));
    for (int i = 0; i < 2; i++) // in quarter q: two lanes of s[8i + q], two of s[8i + 4 + q]
        eighths[i] = _mm512_add_ps(_mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0x44),
                                   _mm512_shuffle_ps(quarters[2 * i], quarters[2 * i + 1], 0xEE));
    // in quarter q: the totals of s[q], s[4 + q], s[8 + q], s[12 + q]
    return _mm512_add_ps(_mm512_shuffle_ps(eighths[0], eighths[1], 0x88), _mm512_shuffle_ps(eighths[0], eighths[1], 0xDD));
}

// Four input rows × four weight rows (w[0..3]) from row r: sixteen independent sums keep both FMA units
// busy and each weight load serves four rows (rows one at a time wait on the FMA's latency and load a
// weight for each FMA: batch 32 decoded no faster than batch 8).
__attribute__((always_inline, target("avx512f"))) static inline void
tile4x4_avx512(float *y, size_t ldy, const float *x, size_t r, const float *const w[4], size_t in, size_t vectorised,
               size_t o, size_t out, int accumulate, const float *prefetch) {
    const float *xr = x + r * in;
    __m512 s[16];
    for (int i = 0; i < 16; i++) s[i] = _mm512_setzero_ps();
    for (size_t k = 0; k < vectorised; k += 16) {
        if (prefetch)
            for (size_t ahead = 0; ahead < 4; ahead++) _mm_prefetch((const char *)(prefetch + ahead * in + k), _MM_HINT_T0);
        __m512 wv0 = _mm512_loadu_ps(w[0] + k), wv1 = _mm512_loadu_ps(w[1] + k);
        __m512 wv2 = _mm512_loadu_ps(w[2] + k), wv3 = _mm512_loadu_ps(w[3] + k);
        for (int row = 0; row < 4; row++) {
            __m512 xv = _mm512_loadu_ps(xr + row * in + k);
            s[4 * row] = _mm512_fmadd_ps(wv0, xv, s[4 * row]);
            s[4 * row + 1] = _mm512_fmadd_ps(wv1, xv, s[4 * row + 1]);
            s[4 * row + 2] = _mm512_fmadd_ps(wv2, xv, s[4 * row + 2]);
            s[4 * row + 3] = _mm512_fmadd_ps(wv3, xv, s[4 * row + 3]);
        }
    }
    float totals[16];
    _mm512_storeu_ps(totals, reduce16_avx512(s));
    for (size_t row = 0; row < 4; row++) {
        float sums[4] = {totals[row], totals[4 + row], totals[8 + row], totals[12 + row]};
        add_tail(sums, w[0], w[1], w[2], w[3], xr + row * in, vectorised, in);
        ck_store_group(y + (r + row) * ldy, o, out, accumulate, sums);
    }
}

// Rows one at a time, four weight rows at a time: each group of four is read from memory once and then
// from the L1 cache for every input row, the next group's rows fetched ahead of the hardware
// prefetcher during the first row. (Sixteen weight rows at a time, sixteen sums and one reduction for
// all, took 1.07–1.5× the time for one row: `docs/performance.md`.)
__attribute__((noinline, target("avx512f"))) static void
rows_avx512(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
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

// Rows in tiles of four (rows a multiple of four), each group of four weight rows read once for all of them.
__attribute__((noinline, target("avx512f"))) static void
tiles_avx512(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
    size_t vectorised = in / 16 * 16;
    for (size_t o = 0; o < out; o += 4) {
        const float *const group[4] = {w + o * in, w + ck_group_row(o, 1, out) * in, w + ck_group_row(o, 2, out) * in,
                                       w + ck_group_row(o, 3, out) * in};
        for (size_t r = 0; r < rows; r += 4)
            tile4x4_avx512(y, ldy, x, r, group, in, vectorised, o, out, accumulate, r == 0 ? w + (o + 4) * in : NULL);
    }
}

// Several input rows (a batch of sequences decoded together), where OpenBLAS's sgemm packed the whole
// weight matrix again at every call (batch 8 decoded fewer tokens a second than batch 1): tiles of four
// rows, then the rows left one at a time. Every output is summed in the same order in a tile or alone,
// so a batch gives bitwise each row's own result.
__attribute__((always_inline, target("avx512f"))) static inline void
linear_avx512(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
    size_t tiled = rows / 4 * 4;
    if (tiled > 0) tiles_avx512(y, ldy, x, tiled, w, in, out, accumulate);
    if (rows > tiled) rows_avx512(y + tiled * ldy, ldy, x + tiled * in, rows - tiled, w, in, out, accumulate);
}

// The eight sums of an AVX2 tile (s[4·row + member], two rows) to their totals, lane 4·half + m
// holding the total of s[2m + half]: each by ck_sum8's tree (lanes i and i + 4, i and i + 2, 0 and 1).
__attribute__((always_inline, target("avx2,fma"))) static inline __m256 reduce8_avx2(const __m256 s[8]) {
    __m256 halves[4], quarters[2];
    for (int i = 0; i < 4; i++) // 128-bit half h: s[2i + h]'s i + (i + 4)
        halves[i] = _mm256_add_ps(_mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x20),
                                  _mm256_permute2f128_ps(s[2 * i], s[2 * i + 1], 0x31));
    for (int i = 0; i < 2; i++) // in half h: two lanes of s[4i + h], two of s[4i + 2 + h]
        quarters[i] = _mm256_add_ps(_mm256_shuffle_ps(halves[2 * i], halves[2 * i + 1], 0x44),
                                    _mm256_shuffle_ps(halves[2 * i], halves[2 * i + 1], 0xEE));
    // in half h: the totals of s[h], s[2 + h], s[4 + h], s[6 + h]
    return _mm256_add_ps(_mm256_shuffle_ps(quarters[0], quarters[1], 0x88),
                         _mm256_shuffle_ps(quarters[0], quarters[1], 0xDD));
}

// Two input rows × four weight rows (w[0..3]) from row r, eight independent sums: as many as the sixteen
// registers hold beside the four weight rows.
__attribute__((always_inline, target("avx2,fma"))) static inline void
tile2x4_avx2(float *y, size_t ldy, const float *x, size_t r, const float *const w[4], size_t in, size_t vectorised,
             size_t o, size_t out, int accumulate, const float *prefetch) {
    const float *xr = x + r * in;
    __m256 s[8];
    for (int i = 0; i < 8; i++) s[i] = _mm256_setzero_ps();
    for (size_t k = 0; k < vectorised; k += 8) {
        if (prefetch && (k & 15) == 0)
            for (size_t ahead = 0; ahead < 4; ahead++) _mm_prefetch((const char *)(prefetch + ahead * in + k), _MM_HINT_T0);
        __m256 wv0 = _mm256_loadu_ps(w[0] + k), wv1 = _mm256_loadu_ps(w[1] + k);
        __m256 wv2 = _mm256_loadu_ps(w[2] + k), wv3 = _mm256_loadu_ps(w[3] + k);
        for (int row = 0; row < 2; row++) {
            __m256 xv = _mm256_loadu_ps(xr + row * in + k);
            s[4 * row] = _mm256_fmadd_ps(wv0, xv, s[4 * row]);
            s[4 * row + 1] = _mm256_fmadd_ps(wv1, xv, s[4 * row + 1]);
            s[4 * row + 2] = _mm256_fmadd_ps(wv2, xv, s[4 * row + 2]);
            s[4 * row + 3] = _mm256_fmadd_ps(wv3, xv, s[4 * row + 3]);
        }
    }
    float totals[8];
    _mm256_storeu_ps(totals, reduce8_avx2(s));
    for (size_t row = 0; row < 2; row++) {
        // s[4·row + member] is s[2m + half] with m = 2·row + member / 2, half = member % 2.
        float sums[4] = {totals[2 * row], totals[4 + 2 * row], totals[2 * row + 1], totals[5 + 2 * row]};
        add_tail(sums, w[0], w[1], w[2], w[3], xr + row * in, vectorised, in);
        ck_store_group(y + (r + row) * ldy, o, out, accumulate, sums);
    }
}

// As the AVX-512 body: four independent sums keep the FMA units busy (one row's single chain of FMAs
// waits on each one's latency).
__attribute__((noinline, target("avx2,fma"))) static void
rows_avx2(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
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

__attribute__((noinline, target("avx2,fma"))) static void
tiles_avx2(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
    size_t vectorised = in / 8 * 8;
    for (size_t o = 0; o < out; o += 4) {
        const float *const group[4] = {w + o * in, w + ck_group_row(o, 1, out) * in, w + ck_group_row(o, 2, out) * in,
                                       w + ck_group_row(o, 3, out) * in};
        for (size_t r = 0; r < rows; r += 2)
            tile2x4_avx2(y, ldy, x, r, group, in, vectorised, o, out, accumulate, r == 0 ? w + (o + 4) * in : NULL);
    }
}

// As the AVX-512 body, with tiles of two rows.
__attribute__((always_inline, target("avx2,fma"))) static inline void
linear_avx2(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate) {
    size_t tiled = rows / 2 * 2;
    if (tiled > 0) tiles_avx2(y, ldy, x, tiled, w, in, out, accumulate);
    if (rows > tiled) rows_avx2(y + tiled * ldy, ldy, x + tiled * in, rows - tiled, w, in, out, accumulate);
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
