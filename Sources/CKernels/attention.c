#include "ckernels.h"
#include "dispatch.h"
#include "fastexp.h"
#include <math.h>
#include <string.h>

// Causal attention of one query head over one sequence, for training and scoring, with the softmax fused
// and no [T, T] probabilities kept. It replaced, per block of 64 query rows, five to seven OpenBLAS calls
// of 64 × ≤T × d (d = 32 at both presets) with the softmax passes between them: at these sizes OpenBLAS
// spends as long packing and setting up as multiplying, and attention took 10–15% of a training step
// while it is 8% of the FLOPs.
//
// Query rows go in blocks of 16: a block's rows see keys [0, n), n its last row's position + 1 rounded
// up to 16, so at most 15 masked columns a row are computed (blocks of 64 computed up to 63).
// Keys (and, in backward, values) are transposed once per call into [d, T'] (T' = T rounded up to 16,
// zero past T), so four rows' scores are d broadcast FMAs into registers. p·V, dS·K, dSᵀ·Q and Pᵀ·dO are
// tiles of four rows (or four positions, reading the block's dS and P transposed) by two vectors, summed
// over positions (or query rows) in ascending order. Each output is a fixed chain of operations, so the
// result does not depend on the threads or on how the heads are split, and backward can write the
// forward's output again bitwise (training need not keep it).
//
// Measured against the OpenBLAS version (one core, a C harness, T 77–256, d 32 and 48): forward 0.51–0.60×
// the time with the AVX-512 body, 0.77–0.95× with the AVX2 one; backward 0.45–0.58× and 0.69–0.85×.

enum { BLOCK_ROWS = 16 };

static size_t padded_length(size_t length) { return (length + 15) / 16 * 16; }

size_t ck_attention_scratch_floats(size_t length, size_t d) {
    // keys_t and values_t [d, T'] each; p and dS [BLOCK_ROWS, T'] each; 16 floats that dK's and dV's
    // tiles of four positions may read past dS's last row (their sums are dropped).
    return (2 * d + 2 * BLOCK_ROWS) * padded_length(length) + 16;
}

static inline size_t round_up16(size_t n) { return (n + 15) / 16 * 16; }

// to [d, tp] ← from's rows 0..<length (`stride` apart, d floats each) transposed; zero past length.
// Sixteen rows at a time: the qkv rows are a few KiB apart, so one column of all rows spans lines that
// share a handful of L1 sets and were evicted before the next column came (a column at a time cost 15%
// of the forward).
static inline __attribute__((always_inline)) void transpose_rows(float *to, const float *from, size_t stride,
                                                                 size_t length, size_t d, size_t tp) {
    size_t j0 = 0;
    for (; j0 + 16 <= length; j0 += 16)
        for (size_t k = 0; k < d; k++) {
            float *row = to + k * tp + j0;
            for (size_t j = 0; j < 16; j++) row[j] = from[(j0 + j) * stride + k];
        }
    for (size_t k = 0; k < d; k++) {
        float *row = to + k * tp;
        for (size_t j = j0; j < length; j++) row[j] = from[j * stride + k];
        for (size_t j = length; j < tp; j++) row[j] = 0.0f;
    }
}

// out_r [n] = scale · (a_r [d] · bt[:, j]) for j < n (n a multiple of 16, bt [d, tp]) and four rows r, so
// that each load of bt serves four FMAs: columns in chunks of `width`, then of 48, 32 or 16 (four rows of
// one vector would be four chains of dependent FMAs, too few to hide their latency). Rows may repeat.
static inline __attribute__((always_inline)) void scores_chunk(float *const out[4], const float *const a[4],
                                                               const float *bt, size_t tp, size_t j, size_t d, float scale,
                                                               const size_t width) {
    float acc[4][64];
    for (size_t r = 0; r < 4; r++)
        for (size_t l = 0; l < width; l++) acc[r][l] = 0.0f;
    for (size_t k = 0; k < d; k++) {
        const float *column = bt + k * tp + j;
        for (size_t r = 0; r < 4; r++) {
            const float x = a[r][k];
            for (size_t l = 0; l < width; l++) acc[r][l] += x * column[l];
        }
    }
    // One row at a time: rows that repeat may share memory.
    for (size_t r = 0; r < 4; r++)
        for (size_t l = 0; l < width; l++) out[r][j + l] = acc[r][l] * scale;
}

static inline __attribute__((always_inline)) void scores_rows(float *const out[4], const float *const a[4],
                                                              const float *bt, size_t tp, size_t n, size_t d, float scale,
                                                              const size_t width) {
    size_t j = 0;
    for (; j + width <= n; j += width) scores_chunk(out, a, bt, tp, j, d, scale, width);
    switch (n - j) {
    case 48: scores_chunk(out, a, bt, tp, j, d, scale, 48); break;
    case 32: scores_chunk(out, a, bt, tp, j, d, scale, 32); break;
    case 16: scores_chunk(out, a, bt, tp, j, d, scale, 16); break;
    default: for (; j < n; j += 16) scores_chunk(out, a, bt, tp, j, d, scale, 16);
    }
}

// The sum of sixteen lane sums, in a fixed order.
static inline __attribute__((always_inline)) float fold16(const float lanes[16]) {
    float half[8], quarter[4];
    for (int l = 0; l < 8; l++) half[l] = lanes[l] + lanes[l + 8];
    for (int l = 0; l < 4; l++) quarter[l] = half[l] + half[l + 4];
    return (quarter[0] + quarter[2]) + (quarter[1] + quarter[3]);
}

// The softmax of a row of scores over its first `valid` entries, the rest of its n (a multiple of 16) set
// to 0, written over it; its maximum and 1/sum go to maximum_out and inverse_out. Sixteen lanes with the
// mask as a select, folded in a fixed order, so rows of any length vectorise whole.
static inline __attribute__((always_inline)) void softmax_keeping(float *row, size_t valid, size_t n, float *maximum_out,
                                                                  float *inverse_out) {
    float lanes[16];
    for (int l = 0; l < 16; l++) lanes[l] = -INFINITY;
    for (size_t j = 0; j < n; j += 16)
        for (int l = 0; l < 16; l++) {
            const float x = j + l < valid ? row[j + l] : -INFINITY;
            lanes[l] = x > lanes[l] ? x : lanes[l];
        }
    float maximum = -INFINITY;
    for (int l = 0; l < 16; l++) maximum = lanes[l] > maximum ? lanes[l] : maximum;
    float sums[16] = {0};
    for (size_t j = 0; j < n; j += 16)
        for (int l = 0; l < 16; l++) {
            const float e = j + l < valid ? fast_expf(row[j + l] - maximum) : 0.0f;
            row[j + l] = e;
            sums[l] += e;
        }
    const float inverse = 1.0f / fold16(sums);
    for (size_t j = 0; j < n; j++) row[j] *= inverse;
    *maximum_out = maximum;
    *inverse_out = inverse;
}

// The probabilities again from the kept maximum and 1/sum: the same operations as softmax_keeping, so
// the same scores give the same bits.
static inline __attribute__((always_inline)) void softmax_recompute(float *row, size_t valid, size_t n, float maximum,
                                                                    float inverse) {
    for (size_t j = 0; j < n; j += 16)
        for (int l = 0; l < 16; l++) {
            const float e = j + l < valid ? fast_expf(row[j + l] - maximum) : 0.0f;
            row[j + l] = e * inverse;
        }
}

// dS = P ⊙ (dP − Σ P ⊙ dP) · scale over n entries, written over dP (0 where P is 0).
static inline __attribute__((always_inline)) void softmax_backward(float *ds, const float *p, size_t n, float scale) {
    float lanes[16] = {0};
    for (size_t j = 0; j < n; j += 16)
        for (int l = 0; l < 16; l++) lanes[l] += p[j + l] * ds[j + l];
    const float dot = fold16(lanes);
    for (size_t j = 0; j < n; j++) ds[j] = p[j] * (ds[j] - dot) * scale;
}

// out[r, c..c+width) (=, or += with `accumulate`) Σ_{j<n} p(r, j) · v[j, c..c+width) for four rows r0..r0+3,
// p(r, j) at p[r·across + j·along] (a block's rows of probabilities, or their transpose), out rows ldo
// apart, v rows `stride` apart; only rows below `rows` are written. Four rows × two vectors (`width` 32
// with AVX-512, 16 with AVX2) are eight independent chains of FMAs, each p(r, j) broadcast once for all
// its columns.
static inline __attribute__((always_inline)) void values_tile(float *out, size_t ldo, const float *p, size_t across,
                                                              size_t along, size_t r0, size_t rows, const float *v,
                                                              size_t stride, size_t n, size_t c, int accumulate,
                                                              const size_t width) {
    const float *p0 = p + r0 * across, *p1 = p0 + across, *p2 = p1 + across, *p3 = p2 + across;
    float acc[4][64];
    for (size_t i = 0; i < 4; i++)
        for (size_t l = 0; l < width; l++) acc[i][l] = 0.0f;
    for (size_t j = 0; j < n; j++) {
        const float *x = v + j * stride + c;
        const float w0 = p0[j * along], w1 = p1[j * along], w2 = p2[j * along], w3 = p3[j * along];
        for (size_t l = 0; l < width; l++) {
            acc[0][l] += w0 * x[l];
            acc[1][l] += w1 * x[l];
            acc[2][l] += w2 * x[l];
            acc[3][l] += w3 * x[l];
        }
    }
    for (size_t i = 0; i < 4 && r0 + i < rows; i++) {
        float *o = out + (r0 + i) * ldo + c;
        for (size_t l = 0; l < width; l++) o[l] = accumulate ? o[l] + acc[i][l] : acc[i][l];
    }
}

// out[r, :] (=, or += with `accumulate`) Σ_{j<n} p(r, j) · v[j, :] for r < rows: four rows × `width`
// columns at a time, then 16, then one (an awkward d). p's entries for up to three rows past `rows` are
// read and their sums dropped (they lie in the zeroed scratch, so they are finite).
static inline __attribute__((always_inline)) void rows_times_rows(float *out, size_t ldo, const float *p, size_t across,
                                                                  size_t along, size_t rows, const float *v, size_t stride,
                                                                  size_t n, size_t d, int accumulate, const size_t width) {
    for (size_t r = 0; r < rows; r += 4) {
        size_t c = 0;
        for (; c + width <= d; c += width)
            values_tile(out, ldo, p, across, along, r, rows, v, stride, n, c, accumulate, width);
        for (; c + 16 <= d; c += 16) values_tile(out, ldo, p, across, along, r, rows, v, stride, n, c, accumulate, 16);
        for (; c < d; c++) values_tile(out, ldo, p, across, along, r, rows, v, stride, n, c, accumulate, 1);
    }
}

// Register tiles per instruction set: scores 4 rows × score_width columns, p·V 4 rows × value_width (8
// accumulators and what feeds them, within the 32 zmm, 16 ymm or 16 xmm registers).
struct tiles { size_t score_width, value_width; };

static inline __attribute__((always_inline)) void
attention_forward_body(float *out, size_t out_stride, float *stats, const float *q, const float *k, const float *v,
                       size_t stride, size_t length, size_t d, float scale, float *scratch, const struct tiles tile) {
    const size_t tp = padded_length(length);
    float *keys_t = scratch, *p = keys_t + d * tp; // [d, tp], [BLOCK_ROWS, tp]
    transpose_rows(keys_t, k, stride, length, d, tp);
    memset(p, 0, BLOCK_ROWS * tp * sizeof(float));
    for (size_t r0 = 0; r0 < length; r0 += BLOCK_ROWS) {
        const size_t r1 = r0 + BLOCK_ROWS < length ? r0 + BLOCK_ROWS : length, n = round_up16(r1);
        for (size_t i = r0; i < r1; i += 4) {
            // Rows in fours; a short last group repeats its last row.
            float *rows_p[4];
            const float *rows_q[4];
            for (size_t m = 0; m < 4; m++) {
                const size_t row = i + m < r1 ? i + m : r1 - 1;
                rows_p[m] = p + (row - r0) * tp;
                rows_q[m] = q + row * stride;
            }
            scores_rows(rows_p, rows_q, keys_t, tp, n, d, scale, tile.score_width);
            for (size_t row = i; row < r1 && row < i + 4; row++)
                softmax_keeping(p + (row - r0) * tp, row + 1, n, stats + 2 * row, stats + 2 * row + 1);
        }
        rows_times_rows(out + r0 * out_stride, out_stride, p, tp, 1, r1 - r0, v, stride, r1, d, 0, tile.value_width);
    }
}

static inline __attribute__((always_inline)) void
attention_backward_body(float *dq, float *dk, float *dv, float *out, const float *d_out, size_t out_stride,
                        const float *stats, const float *q, const float *k, const float *v, size_t stride, size_t length,
                        size_t d, float scale, int add_to_dq, int add_to_dkv, float *scratch, const struct tiles tile) {
    const size_t tp = padded_length(length);
    float *keys_t = scratch, *values_t = keys_t + d * tp, *p = values_t + d * tp, *ds = p + BLOCK_ROWS * tp;
    transpose_rows(keys_t, k, stride, length, d, tp);
    transpose_rows(values_t, v, stride, length, d, tp);
    memset(p, 0, (2 * BLOCK_ROWS * tp + 16) * sizeof(float));
    for (size_t r0 = 0; r0 < length; r0 += BLOCK_ROWS) {
        const size_t r1 = r0 + BLOCK_ROWS < length ? r0 + BLOCK_ROWS : length, n = round_up16(r1), rows = r1 - r0;
        for (size_t i = r0; i < r1; i += 4) {
            float *rows_p[4], *rows_ds[4];
            const float *rows_q[4], *rows_d_out[4];
            for (size_t m = 0; m < 4; m++) {
                const size_t row = i + m < r1 ? i + m : r1 - 1;
                rows_p[m] = p + (row - r0) * tp;
                rows_ds[m] = ds + (row - r0) * tp;
                rows_q[m] = q + row * stride;
                rows_d_out[m] = d_out + row * out_stride;
            }
            // P again, bitwise the forward's: the same scores, then its softmax from the kept maximum and
            // 1/sum. dP = dO · Vᵀ.
            scores_rows(rows_p, rows_q, keys_t, tp, n, d, scale, tile.score_width);
            scores_rows(rows_ds, rows_d_out, values_t, tp, n, d, 1.0f, tile.score_width);
            for (size_t row = i; row < r1 && row < i + 4; row++) {
                float *pr = p + (row - r0) * tp;
                softmax_recompute(pr, row + 1, n, stats[2 * row], stats[2 * row + 1]);
                // dS = P ⊙ (dP − rowsum(P ⊙ dP)) · scale; masked entries have P = 0, so dS is 0 there.
                softmax_backward(ds + (row - r0) * tp, pr, n, scale);
            }
        }
        // The forward's output again, when asked: the same P and the same call, so the same bits.
        if (out) rows_times_rows(out + r0 * out_stride, out_stride, p, tp, 1, rows, v, stride, r1, d, 0, tile.value_width);
        // dQ += dS K over the positions the block sees; dK += dSᵀ Q and dV += Pᵀ dO over the block's rows,
        // read as the transposes of the block's dS and P (rows of 4 positions, summed over query rows).
        // Without `add_to_dq` the block's dQ rows are written, not added (the same bits as adding to zero);
        // without `add_to_dkv` the same for dK and dV at positions [r0, r1), which no earlier block reached.
        // (Each branch passes its constant: a flag read in the tiles' stores cost 5% of the backward.)
        if (add_to_dq) rows_times_rows(dq + r0 * stride, stride, ds, tp, 1, rows, k, stride, r1, d, 1, tile.value_width);
        else rows_times_rows(dq + r0 * stride, stride, ds, tp, 1, rows, k, stride, r1, d, 0, tile.value_width);
        const size_t reached = add_to_dkv ? r1 : r0; // positions added to; the rest written
        rows_times_rows(dk, stride, ds, 1, tp, reached, q + r0 * stride, stride, rows, d, 1, tile.value_width);
        rows_times_rows(dv, stride, p, 1, tp, reached, d_out + r0 * out_stride, out_stride, rows, d, 1, tile.value_width);
        if (!add_to_dkv) {
            rows_times_rows(dk + r0 * stride, stride, ds + r0, 1, tp, rows, q + r0 * stride, stride, rows, d, 0,
                            tile.value_width);
            rows_times_rows(dv + r0 * stride, stride, p + r0, 1, tp, rows, d_out + r0 * out_stride, out_stride, rows, d, 0,
                            tile.value_width);
        }
    }
}

static const struct tiles tiles_avx512 = {64, 32}, tiles_avx2 = {16, 16}, tiles_baseline = {16, 8};

#define CK_ATTENTION_FORWARD_PARAMS                                                                                    \
    (float *out, size_t out_stride, float *stats, const float *q, const float *k, const float *v, size_t stride,      \
     size_t length, size_t d, float scale, float *scratch)
#define CK_ATTENTION_FORWARD_ARGS out, out_stride, stats, q, k, v, stride, length, d, scale, scratch
#define CK_ATTENTION_BACKWARD_PARAMS                                                                                   \
    (float *dq, float *dk, float *dv, float *out, const float *d_out, size_t out_stride, const float *stats,            \
     const float *q, const float *k, const float *v, size_t stride, size_t length, size_t d, float scale, int add_to_dq, \
     int add_to_dkv, float *scratch)
#define CK_ATTENTION_BACKWARD_ARGS dq, dk, dv, out, d_out, out_stride, stats, q, k, v, stride, length, d, scale, add_to_dq, add_to_dkv, scratch

static CK_TARGET_AVX512 void forward_avx512 CK_ATTENTION_FORWARD_PARAMS {
    attention_forward_body(CK_ATTENTION_FORWARD_ARGS, tiles_avx512);
}
static CK_TARGET_AVX2 void forward_avx2 CK_ATTENTION_FORWARD_PARAMS {
    attention_forward_body(CK_ATTENTION_FORWARD_ARGS, tiles_avx2);
}
static void forward_baseline CK_ATTENTION_FORWARD_PARAMS {
    attention_forward_body(CK_ATTENTION_FORWARD_ARGS, tiles_baseline);
}
static CK_TARGET_AVX512 void backward_avx512 CK_ATTENTION_BACKWARD_PARAMS {
    attention_backward_body(CK_ATTENTION_BACKWARD_ARGS, tiles_avx512);
}
static CK_TARGET_AVX2 void backward_avx2 CK_ATTENTION_BACKWARD_PARAMS {
    attention_backward_body(CK_ATTENTION_BACKWARD_ARGS, tiles_avx2);
}
static void backward_baseline CK_ATTENTION_BACKWARD_PARAMS {
    attention_backward_body(CK_ATTENTION_BACKWARD_ARGS, tiles_baseline);
}

void ck_attention_forward CK_ATTENTION_FORWARD_PARAMS {
    switch (ck_isa_level()) {
    case CK_ISA_AVX512: return forward_avx512(CK_ATTENTION_FORWARD_ARGS);
    case CK_ISA_AVX2: return forward_avx2(CK_ATTENTION_FORWARD_ARGS);
    default: return forward_baseline(CK_ATTENTION_FORWARD_ARGS);
    }
}

void ck_attention_backward CK_ATTENTION_BACKWARD_PARAMS {
    switch (ck_isa_level()) {
    case CK_ISA_AVX512: return backward_avx512(CK_ATTENTION_BACKWARD_ARGS);
    case CK_ISA_AVX2: return backward_avx2(CK_ATTENTION_BACKWARD_ARGS);
    default: return backward_baseline(CK_ATTENTION_BACKWARD_ARGS);
    }
}
