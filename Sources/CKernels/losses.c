// Row kernels for the logit losses; see ck_losses.h. Written as plain loops over restrict pointers
// that clang vectorises in each instruction set's body (dispatch.h). Floating-point reductions are only vectorised when the
// loop says so (`vectorize(enable)` lets clang reorder the sum), which is fine here: the order is
// still fixed for a given build, so results stay bitwise repeatable.
#include "ck_losses.h"
#include "dispatch.h"
#include <math.h>
#include <stdint.h>
#include <string.h>

#define VECTORIZE _Pragma("clang loop vectorize(enable) interleave(enable)")

// exp(x) = 2^k · e^r with k = round(x / ln 2) and |r| ≤ ln 2 / 2; e^r by its Taylor series to degree 7
// (truncation below 6e-9 relative). Results below FLT_MIN flush to 0, which softmax does not miss.
static inline float exp_inline(float x) {
    const float lo = -87.3365402f;  // ln(FLT_MIN)
    const float hi = 88.0f;         // keeps k ≤ 127, so 2^k stays a normal float
    float xc = x < lo ? lo : x;
    xc = xc > hi ? hi : xc;
    // Round to nearest by adding and removing 1.5·2^23; without -ffast-math clang keeps both steps.
    float kf = xc * 1.44269504088896341f + 12582912.0f;
    kf = kf - 12582912.0f;
    // Cody–Waite: ln 2 split so that kf·ln2_hi is exact.
    float r = xc - kf * 0.693359375f;
    r = r - kf * -2.12194440e-4f;
    float p = 1.98412698e-4f;        // 1/7!
    p = p * r + 1.38888889e-3f;      // 1/6!
    p = p * r + 8.33333333e-3f;      // 1/5!
    p = p * r + 4.16666667e-2f;      // 1/4!
    p = p * r + 1.66666667e-1f;      // 1/3!
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t k = (int32_t)kf;
    union { int32_t i; float f; } two_k;
    two_k.i = (k + 127) << 23;
    float result = p * two_k.f;
    return x < lo ? 0.0f : result;
}

// log(x) for x normal or zero: x = m·2^e with m in [√½, √2), log m = 2·atanh(s), s = (m−1)/(m+1),
// by its series to s^9 (|s| ≤ 0.172, truncation below 3e-9 relative).
static inline float log_inline(float x) {
    union { float f; int32_t i; } bits;
    bits.f = x;
    int32_t e = ((bits.i >> 23) & 0xff) - 127;
    bits.i = (bits.i & 0x007fffff) | 0x3f800000;
    float m = bits.f;
    int32_t big = m > 1.41421356f;
    m = big ? m * 0.5f : m;
    e = big ? e + 1 : e;
    float f = m - 1.0f;
    float s = f / (2.0f + f);
    float s2 = s * s;
    float p = 2.0f / 9.0f;
    p = p * s2 + 2.0f / 7.0f;
    p = p * s2 + 2.0f / 5.0f;
    p = p * s2 + 2.0f / 3.0f;
    p = p * s2 + 2.0f;
    float ef = (float)e;
    // ln 2 split in two so that ef·ln2_hi is exact.
    float result = ef * 0.693359375f + (s * p + ef * -2.12194440e-4f);
    float special = x == 0.0f ? -INFINITY : NAN;
    return x > 0.0f ? result : special;
}

// log(a·A + b·B) from la = log a + log A and lb = log b + log B, without underflow:
// max + log(1 + exp(min − max)). −inf when both are.
static inline float log_mix_inline(float la, float lb) {
    float hi = la > lb ? la : lb;
    float lo = la > lb ? lb : la;
    float diff = lo - hi;
    diff = hi == -INFINITY ? -INFINITY : diff;
    float result = hi + log_inline(1.0f + exp_inline(diff));
    return hi == -INFINITY ? -INFINITY : result;
}

float ck_expf(float x) { return exp_inline(x); }
float ck_logf(float x) { return log_inline(x); }

CK_KERNEL(float, ck_max, (const float *restrict x, size_t n),
          (x, n)) {
    // Sixteen running maxima so the loop vectorises without reordering any floating-point sum.
    float lanes[16];
    for (int l = 0; l < 16; l++) lanes[l] = -INFINITY;
    size_t i = 0;
    for (; i + 16 <= n; i += 16)
        for (int l = 0; l < 16; l++) lanes[l] = x[i + l] > lanes[l] ? x[i + l] : lanes[l];
    float m = -INFINITY;
    for (int l = 0; l < 16; l++) m = lanes[l] > m ? lanes[l] : m;
    for (; i < n; i++) m = x[i] > m ? x[i] : m;
    return m;
}

CK_KERNEL(float, ck_exp_sum, (float *restrict out, const float *restrict x, float scale, float shift, size_t n),
          (out, x, scale, shift, n)) {
    float sum = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float e = exp_inline(scale * x[i] - shift);
        out[i] = e;
        sum += e;
    }
    return sum;
}

CK_KERNEL(float, ck_square_sum, (float *restrict out, const float *restrict x, size_t n),
          (out, x, n)) {
    float sum = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float e = x[i] * x[i];
        out[i] = e;
        sum += e;
    }
    return sum;
}

CK_KERNEL(void, ck_scale, (float *restrict x, float scale, size_t n),
          (x, scale, n)) {
    for (size_t i = 0; i < n; i++) x[i] *= scale;
}

CK_KERNEL(void, ck_log, (float *restrict out, const float *restrict p, size_t n),
          (out, p, n)) {
    VECTORIZE
    for (size_t i = 0; i < n; i++) out[i] = log_inline(p[i]);
}

CK_KERNEL(void, ck_affine_masked, (float *restrict out, const float *restrict x, float scale, float shift,
          const float *restrict mask_p, size_t n),
          (out, x, scale, shift, mask_p, n)) {
    if (mask_p == NULL) {
        for (size_t i = 0; i < n; i++) out[i] = scale * x[i] - shift;
    } else {
        VECTORIZE
        for (size_t i = 0; i < n; i++) out[i] = mask_p[i] == 0.0f ? -INFINITY : scale * x[i] - shift;
    }
}

CK_KERNEL(double, ck_forward_kl_row, (float *restrict d, const float *restrict s, const float *restrict t,
          const float *restrict eS, float cS, const float *restrict eT, float cT, const float *restrict e1, float c1,
          float kd_scale, float ce_scale, size_t n),
          (d, s, t, eS, cS, eT, cT, e1, c1, kd_scale, ce_scale, n)) {
    // The cross-term Σ T·(t − s) in float lanes (n ≤ a few 10^4 terms of one sign mostly), then double.
    float cross = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) cross += (eT[i] * cT) * (t[i] - s[i]);
    if (d != NULL) {
        if (e1 != NULL) {
            for (size_t i = 0; i < n; i++)
                d[i] += kd_scale * (eS[i] * cS - eT[i] * cT) + ce_scale * (e1[i] * c1);
        } else {
            for (size_t i = 0; i < n; i++) d[i] += kd_scale * (eS[i] * cS - eT[i] * cT);
        }
    }
    return (double)cross;
}

CK_KERNEL(void, ck_axpy, (float *restrict d, const float *restrict x, float scale, size_t n),
          (d, x, scale, n)) {
    for (size_t i = 0; i < n; i++) d[i] += scale * x[i];
}

CK_KERNEL(double, ck_reverse_kl_row, (float *restrict g, double *sum_sg, const float *restrict S,
          const float *restrict logS, const float *restrict logT, size_t n),
          (g, sum_sg, S, logS, logT, n)) {
    float loss = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float gi = logS[i] - logT[i];
        g[i] = gi;
        // 0·log 0 = 0: a student probability that underflowed contributes nothing.
        loss += S[i] > 0.0f ? S[i] * gi : 0.0f;
    }
    *sum_sg = loss;
    return loss;
}

CK_KERNEL(double, ck_jsd_row, (float *restrict g, double *sum_sg, const float *restrict S,
          const float *restrict logS, const float *restrict T, const float *restrict logT, float beta, size_t n),
          (g, sum_sg, S, logS, T, logT, beta, n)) {
    const float log_beta = logf(beta), log_rest = logf(1.0f - beta), rest = 1.0f - beta;
    float teacher_part = 0.0f, student_part = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float logM = log_mix_inline(log_beta + logT[i], log_rest + logS[i]);
        float student_log_ratio = logS[i] - logM;
        g[i] = rest * student_log_ratio;
        teacher_part += T[i] > 0.0f ? T[i] * (logT[i] - logM) : 0.0f;
        student_part += S[i] > 0.0f ? S[i] * student_log_ratio : 0.0f;
    }
    *sum_sg = (double)rest * (double)student_part;
    return (double)beta * teacher_part + (double)rest * student_part;
}

CK_KERNEL(double, ck_tvd_row, (float *restrict g, double *sum_sg, const float *restrict S, const float *restrict T,
          size_t n),
          (g, sum_sg, S, T, n)) {
    float distance = 0.0f, sg = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float diff = S[i] - T[i];
        float sign = diff > 0.0f ? 0.5f : (diff < 0.0f ? -0.5f : 0.0f);
        g[i] = sign;
        sg += S[i] * sign;
        distance += diff > 0.0f ? diff : -diff;
    }
    *sum_sg = sg;
    return 0.5 * (double)distance;
}

CK_KERNEL(double, ck_skew_kl_row, (float *restrict g, double *sum_sg, const float *restrict S,
          const float *restrict logS, const float *restrict T, const float *restrict logT, float alpha, size_t n),
          (g, sum_sg, S, logS, T, logT, alpha, n)) {
    const float log_alpha = logf(alpha), log_rest = logf(1.0f - alpha), rest = 1.0f - alpha;
    float loss = 0.0f, sg = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float logM = log_mix_inline(log_alpha + logT[i], log_rest + logS[i]);
        // T/M ≤ 1/α is finite wherever T > 0; where T = 0 the term and its score vanish.
        float ratio = T[i] > 0.0f ? exp_inline(logT[i] - logM) : 0.0f;
        float gi = -rest * ratio;
        g[i] = gi;
        sg += S[i] * gi;
        loss += T[i] > 0.0f ? T[i] * (logT[i] - logM) : 0.0f;
    }
    *sum_sg = sg;
    return loss;
}

CK_KERNEL(double, ck_skew_reverse_kl_row, (float *restrict g, double *sum_sg, const float *restrict S,
          const float *restrict logS, const float *restrict logT, float alpha, size_t n),
          (g, sum_sg, S, logS, logT, alpha, n)) {
    const float log_alpha = logf(alpha), log_rest = logf(1.0f - alpha);
    float loss = 0.0f, sg = 0.0f;
    VECTORIZE
    for (size_t i = 0; i < n; i++) {
        float logM = log_mix_inline(log_alpha + logS[i], log_rest + logT[i]);
        float log_ratio = logS[i] - logM;
        float gi = log_ratio - alpha * exp_inline(log_ratio);
        g[i] = gi;
        float weighted = S[i] > 0.0f ? S[i] * log_ratio : 0.0f;
        loss += weighted;
        sg += S[i] > 0.0f ? S[i] * gi : 0.0f;
    }
    *sum_sg = sg;
    return loss;
}

CK_KERNEL(void, ck_softmax_backward, (float *restrict d, const float *restrict S, const float *restrict g,
          float sum_sg, float scale, size_t n),
          (d, S, g, sum_sg, scale, n)) {
    for (size_t i = 0; i < n; i++) d[i] += scale * S[i] * (g[i] - sum_sg);
}

static void sift_down(float *heap, size_t size, size_t index) {
    for (;;) {
        size_t smallest = index, left = 2 * index + 1, right = left + 1;
        if (left < size && heap[left] < heap[smallest]) smallest = left;
        if (right < size && heap[right] < heap[smallest]) smallest = right;
        if (smallest == index) return;
        float swap = heap[index];
        heap[index] = heap[smallest];
        heap[smallest] = swap;
        index = smallest;
    }
}

float ck_kth_largest(const float *x, size_t n, size_t k, float *heap) {
    for (size_t i = 0; i < k; i++) heap[i] = x[i] != x[i] ? -INFINITY : x[i];
    for (size_t i = k / 2; i-- > 0;) sift_down(heap, k, i);
    for (size_t i = k; i < n; i++) {
        if (x[i] > heap[0]) {  // NaN compares false and is skipped
            heap[0] = x[i];
            sift_down(heap, k, 0);
        }
    }
    return heap[0];
}

CK_KERNEL(void, ck_weighted_mixture_row, (float *restrict out, const float *const *teachers, const float *weights,
          size_t count, size_t vocab, float tau, float *restrict scratch),
          (out, teachers, weights, count, vocab, tau, scratch)) {
    const float inverse_tau = 1.0f / tau;
    for (size_t v = 0; v < vocab; v++) out[v] = 0.0f;
    for (size_t i = 0; i < count; i++) {
        if (weights && weights[i] == 0.0f) continue;
        const float *z = teachers[i];
        float maximum = ck_max(z, vocab);
        float sum = ck_exp_sum(scratch, z, inverse_tau, maximum * inverse_tau, vocab);
        // Equal weights are 1/(count·sum) in one division, the form their results were first fixed with.
        float weight = weights ? weights[i] / sum : 1.0f / ((float)count * sum);
        VECTORIZE
        for (size_t v = 0; v < vocab; v++) out[v] += weight * scratch[v];
    }
    // A probability every teacher rounds to 0 becomes the smallest normal float, not log 0, so the
    // divergences downstream never meet 0 · (−inf).
    VECTORIZE
    for (size_t v = 0; v < vocab; v++) {
        float p = out[v] > 1.17549435e-38f ? out[v] : 1.17549435e-38f;
        out[v] = tau * log_inline(p);
    }
}
