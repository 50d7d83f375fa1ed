#include "ckernels.h"
#include "dispatch.h"
#include "fastexp.h"
#include <stdlib.h>
#include <math.h>
#include <string.h>
#ifdef __GLIBC__
#include <malloc.h>
#endif

// Each kernel gets an AVX-512, an AVX2 and a baseline body (dispatch.h).

CK_KERNEL(void, ck_exp_inplace, (float *x, size_t n),
          (x, n)) {
    for (size_t i = 0; i < n; i++) x[i] = fast_expf(x[i]);
}

// The exponential loop runs over the whole row with the mask as a select, not over its first `valid`
// entries, so that it vectorises with no scalar tail, whose fast_expf calls cost more than masked lanes.
CK_KERNEL(void, ck_softmax_prefix_keeping, (float *row, size_t valid, size_t n, float *maximum_out,
          float *inverse_out),
          (row, valid, n, maximum_out, inverse_out)) {
#pragma clang fp reassociate(on)
    // Sixteen running maxima: a plain max reduction does not vectorise (NaN ordering), this does.
    float lanes[16];
    for (int l = 0; l < 16; l++) lanes[l] = -INFINITY;
    size_t i = 0;
    for (; i + 16 <= valid; i += 16)
        for (int l = 0; l < 16; l++) lanes[l] = row[i + l] > lanes[l] ? row[i + l] : lanes[l];
    float maximum = -INFINITY;
    for (int l = 0; l < 16; l++) maximum = lanes[l] > maximum ? lanes[l] : maximum;
    for (; i < valid; i++) maximum = row[i] > maximum ? row[i] : maximum;
    float sum = 0.0f;
    for (size_t i = 0; i < n; i++) {
        float e = i < valid ? fast_expf(row[i] - maximum) : 0.0f;
        row[i] = e;
        sum += e;
    }
    float inverse = 1.0f / sum;
    for (size_t i = 0; i < n; i++) row[i] *= inverse;
    *maximum_out = maximum;
    *inverse_out = inverse;
}

// Decoding attention. The keys are kept transposed, so a block of 64 positions' scores is d broadcast
// FMAs into four (AVX-512) or eight (AVX2) registers: a score per position as a dot product of d = 32
// floats spent more time in its horizontal sum than in its products (29% of batch-32 decoding's time
// in a profile of 32 samples × 240 tokens at `small`).
// p.V sums the positions in four interleaved streams (j mod 4) so that four FMA chains run at once; the
// order is written out, so every body with FMA gives the same bits.
static inline __attribute__((always_inline)) void attend_scores(float *scores, const float *q,
                                                                const float *keys_t, size_t capacity,
                                                                size_t from, size_t count, size_t d,
                                                                float scale) {
    float acc[64];
    for (size_t i = 0; i < 64; i++) acc[i] = 0.0f;
    for (size_t k = 0; k < d; k++) {
        const float qk = q[k], *row = keys_t + k * capacity + from;
        for (size_t i = 0; i < 64; i++) acc[i] += qk * row[i];
    }
    for (size_t i = 0; i < count; i++) scores[from + i] = acc[i] * scale;
}

static inline __attribute__((always_inline)) void attend_values(float *out, const float *p, const float *values,
                                                                size_t seen, size_t d, size_t from, size_t width) {
    float acc[4][64];
    for (int s = 0; s < 4; s++)
        for (size_t i = 0; i < width; i++) acc[s][i] = 0.0f;
    size_t j = 0;
    for (; j + 4 <= seen; j += 4)
        for (int s = 0; s < 4; s++) {
            const float pj = p[j + s], *row = values + (j + s) * d + from;
            for (size_t i = 0; i < width; i++) acc[s][i] += pj * row[i];
        }
    for (; j < seen; j++) {
        const float pj = p[j], *row = values + j * d + from;
        for (size_t i = 0; i < width; i++) acc[j % 4][i] += pj * row[i];
    }
    for (size_t i = 0; i < width; i++) out[from + i] = (acc[0][i] + acc[1][i]) + (acc[2][i] + acc[3][i]);
}

CK_KERNEL(void, ck_attend_cached, (float *out, const float *q, const float *keys_t, const float *values,
          size_t capacity, size_t seen, size_t d, float scale, float *scores),
          (out, q, keys_t, values, capacity, seen, d, scale, scores)) {
    // Blocks of 64 positions read up to 63 positions past `seen`, never past `capacity`; their
    // scores are dropped.
    size_t j = 0;
    for (; j < seen; j += 64) {
        size_t count = seen - j < 64 ? seen - j : 64;
        if (j + 64 <= capacity) {
            attend_scores(scores, q, keys_t, capacity, j, count, d, scale);
        } else {
            for (size_t i = 0; i < count; i++) {
                float sum = 0.0f;
                for (size_t k = 0; k < d; k++) sum += q[k] * keys_t[k * capacity + j + i];
                scores[j + i] = sum * scale;
            }
        }
    }
    float maximum, inverse;
    ck_softmax_prefix_keeping_body(scores, seen, seen, &maximum, &inverse);
    // p.V in column blocks of 64, 32, 16 and then one at a time: constant widths keep the sums in registers.
    size_t from = 0;
    for (; from + 64 <= d; from += 64) attend_values(out, scores, values, seen, d, from, 64);
    if (from + 32 <= d) { attend_values(out, scores, values, seen, d, from, 32); from += 32; }
    if (from + 16 <= d) { attend_values(out, scores, values, seen, d, from, 16); from += 16; }
    for (; from < d; from++) attend_values(out, scores, values, seen, d, from, 1);
}

CK_KERNEL(void, ck_rmsnorm_forward, (float *out, float *rstd, const float *x, const float *weight, size_t rows,
          size_t width, float eps),
          (out, rstd, x, weight, rows, width, eps)) {
#pragma clang fp reassociate(on)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * width;
        float *outr = out + r * width;
        float squares = 0.0f;
        for (size_t i = 0; i < width; i++) squares += xr[i] * xr[i];
        float s = 1.0f / sqrtf(squares / (float)width + eps);
        rstd[r] = s;
        for (size_t i = 0; i < width; i++) outr[i] = xr[i] * s * weight[i];
    }
}

CK_KERNEL(void, ck_rmsnorm_backward, (float *dx, float *dweight, const float *dout, const float *x,
          const float *weight, const float *rstd, size_t rows, size_t width),
          (dx, dweight, dout, x, weight, rstd, rows, width)) {
#pragma clang fp reassociate(on)
    for (size_t r = 0; r < rows; r++) {
        const float *xr = x + r * width, *dr = dout + r * width;
        float *dxr = dx + r * width;
        float s = rstd[r];
        // d x_hat = dout * w;  dx = s * (d x_hat - x_hat * mean(d x_hat * x_hat))
        float dot = 0.0f;
        for (size_t i = 0; i < width; i++) dot += dr[i] * weight[i] * xr[i];
        float coefficient = dot * s * s / (float)width;
        for (size_t i = 0; i < width; i++) {
            dxr[i] += s * (dr[i] * weight[i] - xr[i] * coefficient);
            dweight[i] += dr[i] * xr[i] * s;
        }
    }
}

static inline float sigmoid(float x) { return 1.0f / (1.0f + fast_expf(-x)); }

CK_KERNEL(void, ck_swiglu_forward, (float *h, const float *gateUp, size_t rows, size_t hidden),
          (h, gateUp, rows, hidden)) {
    for (size_t r = 0; r < rows; r++) {
        const float *gate = gateUp + r * 2 * hidden, *up = gate + hidden;
        float *hr = h + r * hidden;
        for (size_t i = 0; i < hidden; i++) hr[i] = gate[i] * sigmoid(gate[i]) * up[i];
    }
}

CK_KERNEL(void, ck_swiglu_backward_inplace, (float *gateUp, const float *dh, size_t rows, size_t hidden),
          (gateUp, dh, rows, hidden)) {
    for (size_t r = 0; r < rows; r++) {
        float *gate = gateUp + r * 2 * hidden, *up = gate + hidden;
        const float *dhr = dh + r * hidden;
        for (size_t i = 0; i < hidden; i++) {
            // Both inputs are read before either gradient is written over them.
            float g = gate[i], u = up[i], s = sigmoid(g);
            up[i] = dhr[i] * g * s;
            gate[i] = dhr[i] * u * s * (1.0f + g * (1.0f - s));
        }
    }
}

CK_KERNEL(void, ck_add_inplace, (float *y, const float *x, size_t n),
          (y, x, n)) {
    for (size_t i = 0; i < n; i++) y[i] += x[i];
}

CK_KERNEL(void, ck_scale_inplace, (float *y, float s, size_t n),
          (y, s, n)) {
    for (size_t i = 0; i < n; i++) y[i] *= s;
}

CK_KERNEL(double, ck_sum_squares, (const float *x, size_t n),
          (x, n)) {
#pragma clang fp reassociate(on)
    double total = 0.0;
    for (size_t i = 0; i < n; i++) total += (double)x[i] * (double)x[i];
    return total;
}

CK_KERNEL(void, ck_adamw, (float *param, float *m, float *v, const float *grad, float grad_scale, size_t n, float lr,
          float beta1, float beta2, float eps, float decay, float bias_correction1, float bias_correction2),
          (param, m, v, grad, grad_scale, n, lr, beta1, beta2, eps, decay, bias_correction1, bias_correction2)) {
    for (size_t i = 0; i < n; i++) {
        // The clipping's scale applied here, not in a pass of its own: the same product, so the same bits.
        float g = grad[i] * grad_scale;
        m[i] = beta1 * m[i] + (1.0f - beta1) * g;
        v[i] = beta2 * v[i] + (1.0f - beta2) * g * g;
        float mhat = m[i] / bias_correction1;
        float vhat = v[i] / bias_correction2;
        param[i] -= decay * param[i];
        param[i] -= lr * mhat / (sqrtf(vhat) + eps);
    }
}

int ck_cpu_has_avx512(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512dq")
        && __builtin_cpu_supports("avx512vl") && __builtin_cpu_supports("avx512cd");
}

int ck_cpu_has_avx2(void) {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
}

int ck_isa_cpu_level(void) {
    __builtin_cpu_init();
    if (ck_cpu_has_avx512()) return CK_ISA_AVX512;
    if (ck_cpu_has_avx2() && __builtin_cpu_supports("f16c")) return CK_ISA_AVX2;
    return CK_ISA_BASELINE;
}

int ck_isa_parse(const char *name) {
    if (name == NULL) return -1;
    if (strcmp(name, "avx512") == 0) return CK_ISA_AVX512;
    if (strcmp(name, "avx2") == 0) return CK_ISA_AVX2;
    if (strcmp(name, "baseline") == 0) return CK_ISA_BASELINE;
    return -1;
}

int ck_isa_level(void) {
    // Decided on the first call and kept: every later call of a kernel runs the same body, so results stay
    // bitwise repeatable within a process. Two threads racing here compute the same value.
    static int level = -1;
    int known = __atomic_load_n(&level, __ATOMIC_RELAXED);
    if (known >= 0) return known;
    int cpu = ck_isa_cpu_level(), wanted = ck_isa_parse(getenv("DISTILL_ISA"));
    known = wanted >= 0 && wanted < cpu ? wanted : cpu;
    __atomic_store_n(&level, known, __ATOMIC_RELAXED);
    return known;
}

void ck_release_free_memory(void) {
#ifdef __GLIBC__
    malloc_trim(0);
#endif
}

// Rotary embedding, Hugging Face's "rotate half": in each of `heads` heads of width d of rows [from, to)
// of x (rows `row_stride` apart, row r at position start + r % length), element i pairs with i + d/2 and
// the pair turns by the angle whose cosine and sine are cos_table/sin_table [position, d/2]; direction
// −1 turns it back (the backward pass). Products and sums stay apart (no fused multiply-add), so every
// body gives the bits of the scalar expression.
CK_KERNEL(void, ck_rotary, (float *x, size_t row_stride, size_t from, size_t to, size_t length, size_t start,
          size_t heads, size_t d, const float *cos_table, const float *sin_table, float direction),
          (x, row_stride, from, to, length, start, heads, d, cos_table, sin_table, direction)) {
#pragma clang fp contract(off)
    size_t half = d / 2;
    for (size_t r = from; r < to; r++) {
        const float *c = cos_table + (start + r % length) * half, *s = sin_table + (start + r % length) * half;
        for (size_t h = 0; h < heads; h++) {
            float *restrict low = x + r * row_stride + h * d, *restrict high = low + half;
            for (size_t i = 0; i < half; i++) {
                float a = low[i], b = high[i], sine = direction * s[i];
                low[i] = a * c[i] - b * sine;
                high[i] = b * c[i] + a * sine;
            }
        }
    }
}
