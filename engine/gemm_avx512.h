/* gemm_avx512.h: what the AVX-512 micro-kernels share (gemm_avx512.c, the
 * float and widened-bfloat16 kernel; gemm_avx512bf16_body.h, the dot-product
 * ones): the block's shape in registers, and loading and storing its
 * accumulators with the epilogue. Internal to the engine.
 *
 * Everything here is always inlined with constant rows and vectors, so that
 * the accumulator arrays become registers, and compiled for AVX-512F+FMA:
 * a kernel built for a larger instruction set may inline it, never the
 * reverse.
 */
#ifndef RC_GEMM_AVX512_H
#define RC_GEMM_AVX512_H

#include <immintrin.h>
#include <stdint.h>

#include "gemm_kernel.h"

#define AVX512_INLINE static __attribute__((target("avx512f,fma"), always_inline)) inline
/* -O2 would keep the accumulator arrays in memory without full unrolling */
#define AVX512_UNROLL _Pragma("GCC unroll 16")

/* A block: up to 6 rows by 4 vectors of 16 columns (two panels) in 24 zmm
 * registers; vector v holds columns 16v .. 16v + 15, from panel v / 2. */
enum { AVX512_MR = 6, AVX512_NV = 4, AVX512_PANEL_VECTORS = GEMM_PANEL / 16 };

/* Lanes of a vector that hold one of `count` remaining columns. */
AVX512_INLINE __mmask16 avx512_lanes(int count)
{
    return count >= 16 ? (__mmask16)0xFFFF : count <= 0 ? (__mmask16)0 : (__mmask16)((1u << count) - 1);
}

/* The block's column masks, and its first panel's address (and the
 * second's) for elements of `element` bytes. */
AVX512_INLINE void avx512_block_start(const gemm_block *g, size_t element, __mmask16 mask[AVX512_NV],
                                      const void *panel[AVX512_NV / AVX512_PANEL_VECTORS])
{
    AVX512_UNROLL
    for (int v = 0; v < AVX512_NV; v++)
        mask[v] = avx512_lanes(g->nr - 16 * v);
    AVX512_UNROLL
    for (int q = 0; q < AVX512_NV / AVX512_PANEL_VECTORS; q++)
        panel[q] = (const char *)g->b + q * g->panel_stride * element;
}

/* The accumulators of `mr` rows: zero on the first K block, else the
 * partial sums stored in y. */
AVX512_INLINE void avx512_load_sums(const int mr, const gemm_block *g, const __mmask16 mask[AVX512_NV],
                                    __m512 acc[][AVX512_NV])
{
    AVX512_UNROLL
    for (int r = 0; r < mr; r++)
        AVX512_UNROLL
        for (int v = 0; v < AVX512_NV; v++)
            acc[r][v] = g->first ? _mm512_setzero_ps() : _mm512_maskz_loadu_ps(mask[v], g->c + r * g->ldc + 16 * v);
}

/* Stores the sums of `mr` rows, after the epilogue (bias, residual, ReLU)
 * on the last K block. */
AVX512_INLINE void avx512_store_sums(const int mr, const gemm_block *g, const __mmask16 mask[AVX512_NV],
                                     __m512 acc[][AVX512_NV])
{
    const __m512 zero = _mm512_setzero_ps();
    AVX512_UNROLL
    for (int v = 0; v < AVX512_NV; v++) {
        if (!mask[v])
            continue;
        const __m512 bias = g->last && g->bias ? _mm512_maskz_loadu_ps(mask[v], g->bias + 16 * v) : zero;
        AVX512_UNROLL
        for (int r = 0; r < mr; r++) {
            __m512 y = acc[r][v];
            if (g->last) {
                if (g->bias)
                    y = _mm512_add_ps(y, bias);
                if (g->residual)
                    y = _mm512_add_ps(y, _mm512_maskz_loadu_ps(mask[v], g->residual + r * g->ld_residual + 16 * v));
                if (g->relu)
                    y = _mm512_max_ps(y, zero); /* max(y, 0): 0 for NaN, +0 for -0, as `y > 0 ? y : 0` */
            }
            _mm512_mask_storeu_ps(g->c + r * g->ldc + 16 * v, mask[v], y);
        }
    }
}

/* out[i] = gemm_bf16_round(x[i]) for i < n (any n, any alignment), bit
 * for bit: the dot-product kernels' to_bf16. */
void gemm_avx512_to_bf16(const float *x, int n, uint16_t *out);

/* The avx512 backend's float kernel (the dot-product backends' `run`). */
void gemm_avx512_run(const gemm_block *g);

#endif
