#ifndef CKERNELS_H
#define CKERNELS_H
#include <stddef.h>
#include <stdint.h>
// Element-wise kernels for the model's hot loops. Each has an AVX-512, an AVX2 (with FMA) and a baseline
// body, and runs the one ck_isa_level() names, so a baseline x86-64 build still runs wide vectors. Shapes are in the comments; rows are
// contiguous.

/// x[n] = exp(x[n]) with a vectorisable polynomial (relative error below 2e-7).
void ck_exp_inplace(float *x, size_t n);

/// Softmax of a row of length n in place, over its first `valid` entries (the rest set to 0), returning its
/// maximum and 1/sum (decoding attention's; training attention has its own, attention.c).
void ck_softmax_prefix_keeping(float *row, size_t valid, size_t n, float *maximum, float *inverse);

/// Decoding attention of one query row and one head over the first `seen` cached positions:
/// out[d] = sum_j p_j values[j, :], p = softmax(scale * (q . keys_t[:, j])). keys_t [d, capacity] (the keys
/// kept transposed), values [capacity, d], scores: `seen` floats of scratch (left holding p). Every body
/// sums in the same order (positions in four interleaved streams for p.V).
void ck_attend_cached(float *out, const float *q, const float *keys_t, const float *values, size_t capacity,
                      size_t seen, size_t d, float scale, float *scores);

/// Causal attention of one query head over one sequence of `length` rows (training and scoring):
/// out[t, :] = Σ_{j≤t} p_tj v[j, :], p_t = softmax_j(scale · q_t · k_j). q, k and v rows are `stride` floats
/// apart (the fused qkv rows), out rows `out_stride`; d floats each. stats [length, 2] receives each row's
/// maximum and 1/sum (ck_softmax_prefix_keeping's) for the backward. scratch: ck_attention_scratch_floats.
void ck_attention_forward(float *out, size_t out_stride, float *stats, const float *q, const float *k, const float *v,
                          size_t stride, size_t length, size_t d, float scale, float *scratch);

/// Backward of ck_attention_forward: adds to dq, dk and dv (rows `stride` apart) the gradients from d_out
/// (rows `out_stride` apart), recomputing the probabilities from q, k and stats; writes them instead (the
/// bits of adding to zero) to dq when `add_to_dq` is 0 and to dk and dv when `add_to_dkv` is 0. Unless
/// `out` is NULL it also writes the forward's output there again (rows `out_stride` apart), bitwise what
/// the forward wrote, so that the output need not be kept.
void ck_attention_backward(float *dq, float *dk, float *dv, float *out, const float *d_out, size_t out_stride,
                           const float *stats, const float *q, const float *k, const float *v, size_t stride,
                           size_t length, size_t d, float scale, int add_to_dq, int add_to_dkv, float *scratch);

/// Floats of scratch one call of ck_attention_forward or ck_attention_backward needs.
size_t ck_attention_scratch_floats(size_t length, size_t d);

/// RMSNorm forward: out[N,C] = x / rms(x) * weight, rstd[N] kept for backward.
void ck_rmsnorm_forward(float *out, float *rstd, const float *x, const float *weight,
                        size_t rows, size_t width, float eps);

/// RMSNorm backward; accumulates into dx[N,C] and dweight[C].
void ck_rmsnorm_backward(float *dx, float *dweight, const float *dout, const float *x,
                         const float *weight, const float *rstd, size_t rows, size_t width);

/// SwiGLU forward: h[N,F] = silu(gateUp[n, 0..F]) * gateUp[n, F..2F] (gate and up side by side).
void ck_swiglu_forward(float *h, const float *gateUp, size_t rows, size_t hidden);

/// SwiGLU backward, written over its input: gateUp [N, 2F] holds gate and up on entry and their
/// gradients from dh [N, F] on return (the training pass keeps no other copy of gateUp's gradient).
void ck_swiglu_backward_inplace(float *gateUp, const float *dh, size_t rows, size_t hidden);

/// Rotary embedding of rows [from, to) of x [rows, row_stride] in place: `heads` heads of width d, row r
/// at position start + r % length, tables [positions, d/2]; direction 1 forward, −1 backward.
void ck_rotary(float *x, size_t row_stride, size_t from, size_t to, size_t length, size_t start, size_t heads,
               size_t d, const float *cos_table, const float *sin_table, float direction);

/// y[i] += x[i]
void ck_add_inplace(float *y, const float *x, size_t n);

/// y[i] *= s
void ck_scale_inplace(float *y, float s, size_t n);

/// Hands the allocator's free memory back to the system (glibc's malloc_trim; nothing elsewhere), so
/// that the resident size counts only live memory: `bench` calls it before each workload's peak.
void ck_release_free_memory(void);

/// Sum of squares, accumulated in double.
double ck_sum_squares(const float *x, size_t n);

/// AdamW update over n values (decoupled weight decay `decay` = lr * weight_decay, applied first), each
/// gradient taken times `grad_scale` (clipping).
void ck_adamw(float *param, float *m, float *v, const float *grad, float grad_scale, size_t n,
              float lr, float beta1, float beta2, float eps, float decay,
              float bias_correction1, float bias_correction2);

/// The caller and `helpers` threads that share the parallel steps of the model (team.c says why they
/// spin between steps). ck_team_run runs task(context, i) once for each i in 0..<parts, each part on
/// whichever thread claims it first (the caller, or one of the first parts − 1 helpers), and returns 1
/// when all are done; it returns 0 at once, running nothing, when the team is busy with another step (a
/// nested or concurrent call) or parts is outside 1...CK_TEAM_MAX_PARTS.
enum { CK_TEAM_MAX_PARTS = 0xFFFF };
typedef struct ck_team ck_team;
typedef void (*ck_team_task)(void *context, int part);
ck_team *ck_team_create(int helpers);
void ck_team_destroy(ck_team *team);
int ck_team_helpers(const ck_team *team);
int ck_team_run(ck_team *team, ck_team_task task, void *context, int parts);
/// ck_team_run with at most `helpers` of the team's helpers posted (a team made for more threads than
/// the work wants now), so that ck_team_thread_slot stays below helpers + 1.
int ck_team_run_with(ck_team *team, ck_team_task task, void *context, int parts, int helpers);
/// The slot of the calling thread in the step it runs a part of: helper i's is i + 1, the step's caller's
/// 0 (and any thread's outside a step). Two parts of one step never run on the same slot at once:
/// per-thread scratch can be indexed by it.
int ck_team_thread_slot(void);
/// 1 when the helpers have often come late of late (another process on their cores): splitting work
/// into more parts than threads then lets the caller take what a slowed helper cannot. 0 otherwise.
int ck_team_contended(const ck_team *team);
/// Steps the team has run, and how many of them the caller ran alone (helpers late: another process on
/// their core). Read by the caller that runs the steps.
void ck_team_counts(const ck_team *team, unsigned long *steps, unsigned long *solo_steps);

/// The 16-bit weight formats of ck_linear_half.
enum { CK_HALF_BF16 = 0, CK_HALF_F16 = 1 };

/// y[r, o] = x[r, ·] · w[o, ·] for r < rows, o < out (added to y when `accumulate`), with x [rows, in]
/// and w [out, in] as bfloat16 or IEEE half bits (`format`), widened exactly to float; y's rows are
/// `ldy` apart. Each output is one dot product in a fixed order, whatever part of w a caller passes.
void ck_linear_half(float *y, size_t ldy, const float *x, const uint16_t *w, int format, size_t rows, size_t in,
                    size_t out, int accumulate);
/// ck_linear_half with a chosen body (a CK_ISA_ level, at most ck_isa_level()), so that a test can check
/// each one.
void ck_linear_half_at_level(int level, float *y, size_t ldy, const float *x, const uint16_t *w, int format,
                             size_t rows, size_t in, size_t out, int accumulate);

/// y[r, o] = x[r, ·] · w[o, ·] as ck_linear_half, with w [out, in] in llama.cpp's Q8_0 layout: q [out, in]
/// 8-bit integers and scales [out, in / 32] floats, w[o, k] = scales[o, k / 32] · q[o, k]; in must be a
/// multiple of 32. Each block's Σ x·q is taken in float, then scaled: one dot product in a fixed order
/// per output. The body is the one ck_isa_level() names (AVX-512, AVX2 with FMA, or plain C).
void ck_linear_q8_0(float *y, size_t ldy, const float *x, const int8_t *q, const float *scales, size_t rows, size_t in,
                    size_t out, int accumulate);
void ck_linear_q8_0_at_level(int level, float *y, size_t ldy, const float *x, const int8_t *q, const float *scales,
                             size_t rows, size_t in, size_t out, int accumulate);

/// y[r, o] = x[r, ·] · w[o, ·] for r < rows, o < out (added to y when `accumulate`), x [rows, in] and
/// w [out, in] in f32, y's rows `ldy` apart: the products of decoding (one token, or a few sequences
/// decoded together), in place of OpenBLAS's sgemv and sgemm. Each output is one dot product in the same
/// fixed order whatever the rows and whatever part of w a caller passes.
void ck_linear_f32(float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in, size_t out, int accumulate);
void ck_linear_f32_at_level(int level, float *y, size_t ldy, const float *x, size_t rows, const float *w, size_t in,
                            size_t out, int accumulate);

#include "ck_losses.h"
/// Whether this CPU runs AVX-512 (F, BW, DQ, VL, CD: OpenBLAS's SkylakeX kernels) and AVX2 with FMA
/// (its Haswell kernels).
int ck_cpu_has_avx512(void);
int ck_cpu_has_avx2(void);

/// The instruction sets our kernels have a body for, in order.
enum { CK_ISA_BASELINE = 0, CK_ISA_AVX2 = 1, CK_ISA_AVX512 = 2 };
/// The body every kernel of ours runs: this CPU's best (ck_isa_cpu_level), capped by the environment
/// variable DISTILL_ISA (`avx512`, `avx2` or `baseline`; read once, at the first call, and kept).
int ck_isa_level(void);
int ck_isa_cpu_level(void);
/// The level a DISTILL_ISA value names, or -1 for NULL or any other text.
int ck_isa_parse(const char *name);

#endif
