#ifndef CK_LOSSES_H
#define CK_LOSSES_H
#include <stddef.h>
// Row kernels for the logit losses (cross-entropy and the distillation divergences). Each works on one
// row of `n` logits that fits in cache; the Swift side walks the rows, splits them over threads and
// keeps the per-row scratch buffers. Every reduction returns a double or float that depends only on
// the data and the build, so two calls on the same input agree bit for bit.

/// max_i x[i] (−inf for n == 0).
float ck_max(const float *x, size_t n);

/// out[i] = exp(scale·x[i] − shift); returns Σ out[i]. `out` may alias nothing else.
float ck_exp_sum(float *out, const float *x, float scale, float shift, size_t n);

/// out[i] = x[i]²; returns Σ out[i]. With x = exp((s − m)/2) this is exp(s − m) for one multiply.
float ck_square_sum(float *out, const float *x, size_t n);

/// x[i] *= scale
void ck_scale(float *x, float scale, size_t n);

/// out[i] = p[i] > 0 ? log(p[i]) : −inf, for probabilities (normal floats or zero).
void ck_log(float *out, const float *p, size_t n);

/// out[i] = scale·x[i] − shift, or −inf where mask_p != NULL and mask_p[i] == 0 (a token outside the
/// teacher's top-K support).
void ck_affine_masked(float *out, const float *x, float scale, float shift, const float *mask_p, size_t n);

/// Fused forward KL + cross-entropy gradient for one row. With S = eS·cS (student softmax at τ),
/// T = eT·cT (teacher softmax at τ, zero outside a top-K support) and P = e1·c1 (student softmax at 1,
/// skipped when e1 is NULL): d[i] += kd_scale·(S[i] − T[i]) + ce_scale·P[i] when d != NULL.
/// Returns Σ T[i]·(t[i] − s[i]) in double (the row's KL is that / τ + lse_S − lse_T).
double ck_forward_kl_row(float *d, const float *s, const float *t,
                         const float *eS, float cS, const float *eT, float cT,
                         const float *e1, float c1, float kd_scale, float ce_scale, size_t n);

/// d[i] += scale·x[i]
void ck_axpy(float *d, const float *x, float scale, size_t n);

// The divergences below all take the student and teacher distributions at τ as probabilities (S, T)
// and log-probabilities (logS, logT; logT may be −inf where T == 0). Each returns the row's loss in
// double, writes a score g[i] and sets *sum_sg = Σ S[i]·g[i], such that the gradient of the row loss
// with respect to the student's scaled logits u = s/τ is S[j]·(g[j] − Σ S·g) (ck_softmax_backward).

/// Reverse KL, KL(S‖T): g = logS − logT.
double ck_reverse_kl_row(float *g, double *sum_sg, const float *S, const float *logS, const float *logT, size_t n);

/// Generalised JSD for 0 < β < 1: β·KL(T‖M) + (1−β)·KL(S‖M), M = βT + (1−β)S; g = (1−β)(logS − logM).
double ck_jsd_row(float *g, double *sum_sg, const float *S, const float *logS, const float *T,
                  const float *logT, float beta, size_t n);

/// Total variation distance ½Σ|T − S|: g = ½·sign(S − T).
double ck_tvd_row(float *g, double *sum_sg, const float *S, const float *T, size_t n);

/// Skew KL, KL(T ‖ αT + (1−α)S): g = −(1−α)·T/M.
double ck_skew_kl_row(float *g, double *sum_sg, const float *S, const float *logS, const float *T,
                      const float *logT, float alpha, size_t n);

/// Skew reverse KL, KL(S ‖ αS + (1−α)T): g = (logS − logM) − α·S/M.
double ck_skew_reverse_kl_row(float *g, double *sum_sg, const float *S, const float *logS,
                              const float *logT, float alpha, size_t n);

/// d[j] += scale·S[j]·(g[j] − sum_sg)
void ck_softmax_backward(float *d, const float *S, const float *g, float sum_sg, float scale, size_t n);

/// Accurate vectorisable exp and log on single values (relative error about 2e-7), exposed for tests.
float ck_expf(float x);
float ck_logf(float x);
/// The k-th largest of x[0..<n] (1 <= k <= n; NaN counts as -inf), by one pass that keeps the k
/// largest seen so far in a min-heap of `heap[k]`: almost every value is rejected by one comparison
/// with the heap's root, so a row of a few thousand logits costs about one comparison per value.
float ck_kth_largest(const float *x, size_t n, size_t k, float *heap);

/// The logits of an ensemble: out[v] = τ·log(Σ_i weights[i]·softmax(teachers[i]/τ)[v]), so that
/// softmax(out/τ) is the weighted mean of the teachers' tempered distributions; the weights must add up
/// to 1, and NULL weights are equal ones. `scratch` holds `vocab` floats.
void ck_weighted_mixture_row(float *out, const float *const *teachers, const float *weights, size_t count,
                             size_t vocab, float tau, float *scratch);

#endif
