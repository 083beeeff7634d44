/* gemm.h: the engine's one matrix-product interface.
 *
 * Every dense layer of the model (convolutions, read in place by gemm_conv2d; linear layers,
 * attention projections, fc_out) is y = x W^T + b, with W stored the way
 * PyTorch stores nn.Linear weights: (n_out, n_in), row-major. Keeping one
 * entry point means a faster backend changes one module, not the model.
 *
 * Backends (chosen once per process, see gemm_set_backend):
 *   avx512    the engine's AVX-512F+FMA kernels      (gemm_avx512.c)
 *   avx2      the engine's AVX2+FMA kernels          (gemm_avx2.c)
 *   portable  the same algorithm in plain C          (gemm_portable.c)
 *   cblas     CBLAS sgemm (OpenBLAS) on tiles of y, single-threaded inside
 *             OpenMP's loop so that OpenMP stays the only thread pool.
 *   avx512bf16           avx512, except that bf16 products multiply bfloat16
 *                        by bfloat16 with VDPBF16PS (AVX512_BF16): twice
 *                        the multiply-adds per instruction, x rounded too
 *                        (see Precision; gemm_avx512bf16.c)
 *   avx512bf16-emulated  the same kernel with that instruction emulated
 *                        (AVX-512F): to test it on CPUs without it; slow
 * Those two are never chosen by "auto": they change bf16 results (x is
 * rounded), so a site asks for them.
 * All but cblas share one blocked driver (gemm.c): weights packed once at
 * load into panels of GEMM_PANEL columns, cache blocking over K and N,
 * OpenMP over tiles of M and N, bias/residual/ReLU fused into the store.
 *
 * Determinism (the engine's backends, not cblas): every output element is
 *     s = 0; for k = 0 .. n_in-1: s = fmaf(x[i, k], W[j, k], s);
 *     if bias: s = s + bias[j];  if residual: s = s + residual[i, j];
 *     if relu: s = s > 0 ? s : 0;
 * exactly, in float. So y[i, j] depends only on row i of x and column j of
 * W: not on m, on the other rows in the batch (a caption never depends on
 * which images were batched with it), on the tiling or the thread count, and
 * avx512, avx2 and portable give bit-identical results.
 *
 * Precision: weights are packed as float (GEMM_FP32, the default) or as
 * bfloat16 (GEMM_BF16), which halves their memory and the bandwidth they
 * take while streaming (what decoding a few sequences is bound by).
 * Activations, bias, residual and the sums stay float. In bf16 the contract
 * above holds with W[j, k] replaced by gemm_bf16_to_float(gemm_bf16_round(
 * W[j, k])): the weights are rounded once, when packed, and the products are
 * then exact, so the three engine backends still agree bit for bit; cblas
 * multiplies the same rounded weights (widened to float) with sgemm.
 *
 * bf16 on the avx512bf16 backends (dot products): x is rounded too, and
 * each output element is
 *     x' = gemm_bf16_round(x), W' = gemm_bf16_round(W), both zero past n_in;
 *     s = 0; for q = 0 .. ceil(n_in / 2) - 1:
 *         s = s + x'[i, 2q+1] * W'[j, 2q+1];  s = s + x'[i, 2q] * W'[j, 2q];
 *     then bias, residual and ReLU as above.
 * The products are exact in float and each sum is rounded once. The
 * emulated backend computes exactly this; VDPBF16PS does too but treats
 * bfloat16 subnormals as zero and flushes subnormal sums to zero. Row i
 * still depends only on row i of x and W (not on m, tiles or threads).
 */
#ifndef RC_GEMM_H
#define RC_GEMM_H

#include <stdint.h>

#include "err.h"

/* Columns of W per packed panel: two AVX-512 vectors, four AVX2 ones. */
enum { GEMM_PANEL = 32 };

/* How packed weights hold their values. */
typedef enum gemm_precision {
    GEMM_FP32 = 0, /* float, as given */
    GEMM_BF16 = 1, /* bfloat16: rounded to nearest (ties to even) when packed */
} gemm_precision;

typedef struct gemm_weights {
    int n_out;         /* N: output features */
    int n_in;          /* K: input features */
    const float *w;    /* (n_out, n_in) row-major; may be NULL once packed */
    const float *bias; /* (n_out), or NULL */
    float *packed;     /* (ceil(n_out / GEMM_PANEL), n_in, GEMM_PANEL): panel p
                        * holds W[p*32 + c, k] at [p][k][c], zero-padded past
                        * n_out; 64-byte aligned; NULL until gemm_pack, and
                        * always NULL in GEMM_BF16 */
    gemm_precision precision; /* how gemm_pack packs W; GEMM_FP32 (0) unless set */
    uint16_t *packed_bf16;    /* GEMM_BF16 only: (ceil(n_out / GEMM_PANEL), n_in,
                               * GEMM_PANEL) bfloat16; row k of panel p holds 16
                               * 32-bit words, word c = W[p*32 + c, k] in its low
                               * half and W[p*32 + 16 + c, k] in its high half (so
                               * either half widens to float with one shift or one
                               * mask); zero-padded, 64-byte aligned; NULL until
                               * gemm_pack, and always NULL in GEMM_FP32.
                               * With bf16_pairs, the dot products' layout instead:
                               * (ceil(n_out / GEMM_PANEL), ceil(n_in / 2), GEMM_PANEL, 2):
                               * pair row q of panel p holds 32 words, word c =
                               * W[p*32 + c, 2q] in its low half and W[p*32 + c, 2q+1]
                               * in its high half (zero past n_in) */
    int bf16_pairs;           /* 1: packed_bf16 has the k-pair layout (set by gemm_pack
                               * when the backend in use is an avx512bf16 one) */
} gemm_weights;

/* What is applied to each output element after the product and bias, in this
 * order: add residual[m, n] (if residual is not NULL), then max(0, .) if relu. */
typedef struct gemm_epilogue {
    const float *residual; /* (m, ld_residual) or NULL */
    int ld_residual;       /* row stride of residual, in floats */
    int relu;              /* 1: apply ReLU */
} gemm_epilogue;

/* y[i, j] = epilogue(sum_k x[i, k] * W[j, k] + bias[j]) for i < m, j < n_out.
 * x is (m, ldx) with ldx >= n_in; y is (m, ldy) with ldy >= n_out; elements
 * of y past n_out in each row are left untouched. y must not overlap x or
 * the residual (x and the residual may overlap each other). epilogue may be
 * NULL. Unpacked weights (packed == NULL) are packed into a temporary for the
 * call, which is correct but slow: pack once with gemm_pack. Parallel over
 * tiles of y with OpenMP; inside a parallel region it runs on the calling
 * thread alone. */
void gemm_linear(const gemm_weights *w, int m, const float *x, int ldx, float *y, int ldy,
                 const gemm_epilogue *epilogue);

/* A convolution's input, read as the x of gemm_linear without building that
 * matrix of patches (an implicit GEMM: im2col's copy, nine times the
 * image for a 3x3 window, never exists). Row i of x is output pixel i of
 * the (batch, out_h, out_w) output in row-major order; its kernel * kernel
 * * c_in elements are the window's pixels in (ky, kx, c) order, so W is a
 * PyTorch convolution weight permuted to (c_out, kh, kw, c_in). The image
 * is read as it is: any padding must already be in it (ops_pad). */
typedef struct gemm_conv {
    const float *x;        /* (batch, h, w, c_in), channels-last, padding included */
    int batch, h, w, c_in; /* as stored */
    int kernel, stride;    /* square window, step */
} gemm_conv;

/* The convolution conv with weights w (n_in = kernel * kernel * c_in):
 * y (batch * out_h * out_w, ldy), channels-last, out_h being
 * ops_conv_out(h, kernel, stride, 0) (ops.h) and out_w likewise, epilogue as gemm_linear's
 * (the residual is indexed by output pixel). Every element is bit for bit
 * what gemm_linear gives on the explicit patch matrix: gemm.h's
 * determinism holds. m = 0 or c_in = 0 follow gemm_linear too. */
void gemm_conv2d(const gemm_weights *w, const gemm_conv *conv, float *y, int ldy, const gemm_epilogue *epilogue);

/* Makes w->packed (or w->packed_bf16, as w->precision says, in the layout
 * the backend in use reads) from w->w, or when w->w is NULL from bfloat16
 * panels already there in the other layout (call once, at load; a second
 * call keeps what is there, and a packed copy of the other precision or
 * layout is freed). w->w stays as it is (in GEMM_FP32 the cblas backend
 * reads it when present; the caller may drop it afterwards: a product on a
 * backend that reads the other bfloat16 layout then repacks for the call,
 * which is correct but slow: choose the backend before packing).
 * Returns -1 if memory runs out, if the values are missing (w->w NULL, W
 * not empty and no bfloat16 panels for a bf16 packing) or if w->precision
 * is not one of the enum's. */
int gemm_pack(gemm_weights *w, rc_error *err);

/* Frees w->packed and w->packed_bf16 (safe on never-packed weights). */
void gemm_unpack(gemm_weights *w);

/* x rounded to bfloat16, to nearest with ties to even (Inf stays Inf,
 * finite values past the largest bfloat16 become Inf, subnormals round like
 * any other value); a NaN stays a NaN of the same sign, made quiet, with the
 * top 7 bits of its payload. */
uint16_t gemm_bf16_round(float x);

/* The float a bfloat16 stands for (exact). */
float gemm_bf16_to_float(uint16_t h);

/* Parses "fp32" or "bf16" into *precision; -1 naming the text otherwise. */
int gemm_precision_parse(const char *name, gemm_precision *precision, rc_error *err);

/* "fp32" or "bf16" ("?" for a value outside the enum). */
const char *gemm_precision_name(gemm_precision precision);

/* Selects the backend for the whole process: "auto" (the fastest this CPU
 * supports: avx512, else avx2, else portable), "avx512", "avx2", "portable",
 * "cblas", "avx512bf16" or "avx512bf16-emulated". Returns -1 for an unknown name or an instruction set this CPU
 * lacks. Without a call, the first gemm_linear uses $RADCAP_GEMM when it
 * names a usable backend, else "auto". Call at start-up, not while products
 * run. */
int gemm_set_backend(const char *name, rc_error *err);

/* The backend in use (one of gemm_set_backend's names, never "auto"),
 * resolving the choice as the first gemm_linear would. */
const char *gemm_backend_name(void);

/* 1 if this CPU can run the named backend ("auto" always can). */
int gemm_backend_supported(const char *name);

/* Makes the BLAS backend single-threaded (OpenMP parallelises around it).
 * Call once at start-up, before any gemm_linear. */
void gemm_init(void);

#endif
