/* gemm_avx2.c: the AVX2+FMA micro-kernel (see gemm_kernel.h).
 *
 * With 16 ymm registers a whole 32-column panel does not fit next to its
 * accumulators, so the panel is done as two halves of 16 columns: up to 6
 * rows x 16 columns in 12 registers, two for the panel row, one broadcast
 * (12 FMAs for 8 loads). Each half is the same fmaf chain per element as
 * every other backend, so the split does not change results.
 * bf16 panels (gemm.h's layout): both halves load the same 16 words of a
 * row; the first half shifts their low halves into floats, the second
 * masks their high halves.
 */
#include <immintrin.h>
#include <stdint.h>

#include "gemm_kernel.h"

#define AVX2 __attribute__((target("avx2,fma")))
/* Loops over rows and vectors of a block are unrolled completely, so that
 * the accumulator arrays become registers (-O2 would keep them in memory). */
#define UNROLL _Pragma("GCC unroll 16")

enum { MR = 6 };

/* Lane mask for the first `count` of 8 floats (maskload/maskstore). */
static AVX2 inline __m256i lanes(int count)
{
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(count), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}

/* Columns 16*half + 8*q .. +7 of panel row k, as floats. */
static AVX2 inline __attribute__((always_inline)) __m256 panel_octet(const int bf16, const void *b, int k, int half,
                                                                     int q)
{
    if (!bf16)
        return _mm256_load_ps((const float *)b + (size_t)k * GEMM_PANEL + 16 * half + 8 * q);
    const __m256i pairs = _mm256_load_si256((const __m256i *)((const uint16_t *)b + (size_t)k * GEMM_PANEL + 16 * q));
    return _mm256_castsi256_ps(half ? _mm256_and_si256(pairs, _mm256_set1_epi32((int)0xFFFF0000u))
                                    : _mm256_slli_epi32(pairs, 16));
}

/* Columns 16*half .. 16*half+15 of a block of exactly `mr` rows. */
static AVX2 inline __attribute__((always_inline)) void half_rows(const int mr, const int bf16, const gemm_block *g,
                                                                 int half)
{
    const int cols = g->nr - 16 * half; /* valid columns in this half, > 0 */
    const __m256i mask[2] = {lanes(cols), lanes(cols - 8)};
    float *c = g->c + 16 * half;
    __m256 acc[MR][2];
    UNROLL
    for (int r = 0; r < mr; r++)
        UNROLL
        for (int q = 0; q < 2; q++)
            acc[r][q] = g->first ? _mm256_setzero_ps() : _mm256_maskload_ps(c + r * g->ldc + 8 * q, mask[q]);
    for (int k0 = 0; k0 < g->kc; k0 += g->run) { /* runs as in gemm_avx512.c */
        const size_t shift = (size_t)(k0 / g->run) * g->run_stride;
        const int len = g->kc - k0 < g->run ? g->kc - k0 : g->run;
        const float *a[MR];
        UNROLL
        for (int r = 0; r < mr; r++)
            a[r] = g->a[r] + shift;
        for (int k = 0; k < len; k++) {
            if (half == 0 && (k & 15) == 0 && g->prefetch) /* as in gemm_avx512.c */
                UNROLL
                for (int r = 0; r < MR; r++)
                    _mm_prefetch((const char *)(g->a_next[r] + shift + k), _MM_HINT_T0);
            const __m256 b0 = panel_octet(bf16, g->b, k0 + k, half, 0), b1 = panel_octet(bf16, g->b, k0 + k, half, 1);
            UNROLL
            for (int r = 0; r < mr; r++) {
                const __m256 ar = _mm256_broadcast_ss(a[r] + k);
                acc[r][0] = _mm256_fmadd_ps(ar, b0, acc[r][0]);
                acc[r][1] = _mm256_fmadd_ps(ar, b1, acc[r][1]);
            }
        }
    }
    const __m256 zero = _mm256_setzero_ps();
    UNROLL
    for (int q = 0; q < 2; q++) {
        if (cols - 8 * q <= 0)
            continue;
        const int off = 16 * half + 8 * q;
        const __m256 bias = g->last && g->bias ? _mm256_maskload_ps(g->bias + off, mask[q]) : zero;
        UNROLL
        for (int r = 0; r < mr; r++) {
            __m256 v = acc[r][q];
            if (g->last) {
                if (g->bias)
                    v = _mm256_add_ps(v, bias);
                if (g->residual)
                    v = _mm256_add_ps(v, _mm256_maskload_ps(g->residual + r * g->ld_residual + off, mask[q]));
                if (g->relu)
                    v = _mm256_max_ps(v, zero); /* 0 for NaN, +0 for -0, as `v > 0 ? v : 0` */
            }
            _mm256_maskstore_ps(c + r * g->ldc + 8 * q, mask[q], v);
        }
    }
}

static AVX2 inline __attribute__((always_inline)) void block_rows(const int mr, const int bf16, const gemm_block *g)
{
    half_rows(mr, bf16, g, 0);
    if (g->nr > 16)
        half_rows(mr, bf16, g, 1);
}

GEMM_KERNEL_ENTRY_POINTS(AVX2, block_rows)

const gemm_ukernel gemm_ukernel_avx2 = {"avx2", MR, GEMM_PANEL, run, run_bf16, 0, NULL};
