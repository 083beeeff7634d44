/* gemm_avx512bf16_body.h: the bfloat16 dot-product micro-kernel (see
 * gemm_kernel.h), compiled twice: with VDPBF16PS (AVX512_BF16) in
 * gemm_avx512bf16.c, and with that instruction emulated by two FMAs in
 * gemm_avx512bf16_emulated.c (GEMM_DOT_EMULATED 1), so that the kernel's
 * layout, blocking and epilogue are tested on CPUs without the instruction.
 * Define GEMM_DOT_EMULATED and GEMM_DOT_UKERNEL (the gemm_ukernel's
 * variable) and GEMM_DOT_NAME (its backend name) before including it.
 *
 * A block is the avx512 kernel's (gemm_avx512.h): 6 rows by 64 columns in
 * 24 registers. Each pair of k loads the two panels' pair rows (4 vectors
 * of 16 words, word c holding column c's two weights), broadcasts each
 * row's pair of x (one 32-bit word) and issues 24 dot products: twice the
 * multiply-adds of the float kernel's 24 FMAs per step.
 *
 * VDPBF16PS adds to each lane the product of the odd (high) halves, then
 * that of the even (low) halves, each rounded to nearest even (Intel's
 * definition); both products are exact in float, so two FMAs in that order
 * are the same sums, except that the instruction treats bfloat16
 * subnormals as zero and flushes subnormal results to zero.
 */
#include <immintrin.h>
#include <stdint.h>
#include <string.h>

#include "gemm_avx512.h"

#if GEMM_DOT_EMULATED
#define DOT __attribute__((target("avx512f,fma")))
#else
#define DOT __attribute__((target("avx512f,fma,avx512bf16")))
#endif
#define DOT_INLINE static DOT inline __attribute__((always_inline))
#define UNROLL AVX512_UNROLL

/* Pair rows prefetched ahead of the one in use (one pair row of a panel is
 * two cache lines, as a float row). */
enum { PAIRS_AHEAD = 8 };

/* acc + a.odd * b.odd + a.even * b.even in each 32-bit lane. */
DOT_INLINE __m512 dot_pairs(__m512 acc, __m512i a, __m512i b)
{
#if GEMM_DOT_EMULATED
    const __m512i odd = _mm512_set1_epi32((int)0xFFFF0000u);
    acc = _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_and_si512(a, odd)),
                          _mm512_castsi512_ps(_mm512_and_si512(b, odd)), acc);
    return _mm512_fmadd_ps(_mm512_castsi512_ps(_mm512_slli_epi32(a, 16)),
                           _mm512_castsi512_ps(_mm512_slli_epi32(b, 16)), acc);
#else
    return _mm512_dpbf16_ps(acc, (__m512bh)a, (__m512bh)b);
#endif
}

/* acc[r][v] += every pair of the block's K range, for v < nv. */
DOT_INLINE void accumulate_pairs(const int mr, const int nv, const gemm_block *g, const void *const *panel,
                                 __m512 acc[][AVX512_NV])
{
    const int pairs = (g->kc + 1) / 2;
    for (int q = 0; q < pairs; q++) {
        __m512i b[AVX512_NV];
        UNROLL
        for (int p = 0; p < nv / AVX512_PANEL_VECTORS; p++) {
            const uint16_t *row = (const uint16_t *)panel[p] + (size_t)q * 2 * GEMM_PANEL;
            _mm_prefetch((const char *)(row + PAIRS_AHEAD * 2 * GEMM_PANEL), _MM_HINT_T0);
            _mm_prefetch((const char *)(row + PAIRS_AHEAD * 2 * GEMM_PANEL) + 64, _MM_HINT_T0);
            b[2 * p] = _mm512_load_si512(row);
            b[2 * p + 1] = _mm512_load_si512(row + GEMM_PANEL);
        }
        UNROLL
        for (int r = 0; r < mr; r++) {
            uint32_t pair;
            memcpy(&pair, g->x_bf16 + r * g->ld_x_bf16 + 2 * (size_t)q, sizeof pair);
            const __m512i a = _mm512_set1_epi32((int)pair);
            UNROLL
            for (int v = 0; v < nv; v++)
                acc[r][v] = dot_pairs(acc[r][v], a, b[v]);
        }
    }
}

DOT_INLINE void block_rows(const int mr, const gemm_block *g)
{
    __mmask16 mask[AVX512_NV];
    const void *panel[AVX512_NV / AVX512_PANEL_VECTORS];
    avx512_block_start(g, sizeof(uint16_t), mask, panel);
    __m512 acc[AVX512_MR][AVX512_NV];
    avx512_load_sums(mr, g, mask, acc);
    if (g->nr > GEMM_PANEL)
        accumulate_pairs(mr, AVX512_NV, g, panel, acc);
    else /* one panel (the last of W may have no successor to read) */
        accumulate_pairs(mr, AVX512_PANEL_VECTORS, g, panel, acc);
    avx512_store_sums(mr, g, mask, acc);
}

static DOT void run_dot(const gemm_block *g)
{
    switch (g->mr) {
    case 1: block_rows(1, g); return;
    case 2: block_rows(2, g); return;
    case 3: block_rows(3, g); return;
    case 4: block_rows(4, g); return;
    case 5: block_rows(5, g); return;
    case 6: block_rows(6, g); return;
    }
}

const gemm_ukernel GEMM_DOT_UKERNEL = {GEMM_DOT_NAME, AVX512_MR, AVX512_NV * 16, gemm_avx512_run, run_dot, 1,
                                       gemm_avx512_to_bf16};
