/* ops.h: the engine's small kernels (everything but matrix products, which
 * are in gemm.h). Activations are float32; images and feature maps are
 * channels-last (NHWC) so that a 1x1 convolution is a plain matrix product.
 * Kernels are single-threaded unless they say otherwise: callers parallelise
 * over images, rows or heads.
 */
#ifndef RC_OPS_H
#define RC_OPS_H

#include <stddef.h>

/* Output side of a convolution or pooling window over `in` pixels. */
int ops_conv_out(int in, int kernel, int stride, int pad);

/* Copies one NHWC image x (h, w, c) into y (h + 2 pad, w + 2 pad, c),
 * inside a border of zeros `pad` pixels wide: the image a padded
 * convolution reads (gemm_conv2d). */
void ops_pad(const float *x, int h, int w, int c, int pad, float *y);

/* Max-pooling of one NHWC image x (h, w, c) into y (oh, ow, c); padding
 * never wins (as PyTorch pads with -inf). */
void ops_maxpool(const float *x, int h, int w, int c, int kernel, int stride, int pad, float *y);

/* NCHW (c, h, w) to NHWC (h, w, c) for one image. */
void ops_chw_to_hwc(const float *x, int c, int h, int w, float *y);

/* LayerNorm over each of n rows of length dim of x into y (y == x: in
 * place; otherwise they must not overlap):
 * y = (x - mean) / sqrt(var + eps) * gamma + beta (biased variance), mean
 * and variance summed in double. Rows across OpenMP threads when there are
 * many (a row's result does not depend on that). */
void ops_layernorm(const float *x, float *y, int n, int dim, const float *gamma, const float *beta, float eps);

/* Clamps each element to [lo, hi] in place (Hardtanh). */
void ops_clamp(float *x, size_t n, float lo, float hi);

/* The graph layer's neighbourhood mean: y[t] = mean over s in [-half, half]
 * of x[(t - s) mod len] for each row t of x (len, dim): torch.roll semantics
 * along the token axis, so the sequence wraps around. */
void ops_roll_mean(const float *x, int len, int dim, int half, float *y);

/* Single-query scaled dot-product attention for n_heads heads of head_dim:
 * q (n_heads * head_dim); the t-th key and value are kv + t * ld_kv and
 * kv + t * ld_kv + v_offset (head h uses elements h * head_dim ..);
 * out (n_heads * head_dim), which must not overlap q or kv. scores is
 * scratch of n_heads * n_keys floats. The sums' order is fixed
 * (engine/ops_attention.c), so every CPU gives the same bits; exp is
 * ops_exp.h's polynomial (within about 2e-7 of expf). AVX-512 where the
 * CPU has it and head_dim is a multiple of 16. */
void ops_attention(const float *q, const float *kv, int n_keys, int ld_kv, int v_offset, int n_heads,
                   int head_dim, float *out, float *scores);

/* ops_attention with the keys and values at scattered rows: the t-th key is
 * kv + rows[t] * ld_kv (rows NULL: t). Beam search reads a sequence's
 * earlier positions where its ancestors wrote them. */
void ops_attention_rows(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv, int v_offset,
                        int n_heads, int head_dim, float *out, float *scores);

/* ops_attention_rows in plain C whatever the CPU: the definition the vector
 * paths match bit for bit (for tests). */
void ops_attention_plain(const float *q, const float *kv, const int *rows, int n_keys, int ld_kv, int v_offset,
                         int n_heads, int head_dim, float *out, float *scores);

/* Index of the largest of x[0..n), the first one on ties (torch.argmax). */
int ops_argmax(const float *x, int n);

/* log-sum-exp of x[0..n), computed stably. */
float ops_logsumexp(const float *x, int n);

/* ops_logsumexp with a polynomial exp in float (AVX2 when the CPU has it),
 * several times faster and within about 1e-6 of it: for the log-softmax
 * that confidence scores and beam search need at every decoding step.
 * -inf elements add about 1e-38 x the largest term. */
float ops_logsumexp_fast(const float *x, int n);

#endif
