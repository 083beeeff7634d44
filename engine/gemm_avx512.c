/* gemm_avx512.c: the AVX-512F micro-kernel (see gemm_kernel.h).
 *
 * A block of up to 6 rows x 64 columns (two panels) lives in 24 zmm
 * registers. Each k loads the panels' row (4 vectors) and broadcasts one x
 * element per row (6 loads) for 24 FMAs: the two FMA ports stay busy and
 * the other instructions fit in the front end's width (14 rows x 1 panel,
 * tried first, needs 3 instructions per 2 FMAs; it measured as fast or
 * slower on every product shape of the model).
 * Compiled for AVX-512 through target attributes, whatever the file's
 * flags; the driver only calls it when CPUID reports AVX-512F and FMA.
 *
 * bf16 panels: a panel row is one 64-byte load of 16 words, each holding
 * columns c and c + 16; a shift left by 16 makes columns 0..15 floats, a
 * mask of the high halves columns 16..31 (one instruction per vector, where
 * zero-extending 16 halves and shifting would take two). Multiplying
 * bfloat16 by bfloat16 (VDPBF16PS, AVX512_BF16, which rounds x too) is the
 * avx512bf16 backend's kernel (gemm_avx512bf16_body.h).
 */
#include <immintrin.h>
#include <stdint.h>

#include "gemm_avx512.h"

#define AVX512 __attribute__((target("avx512f,fma")))
#define UNROLL AVX512_UNROLL

enum { MR = AVX512_MR, NV = AVX512_NV, PANEL_VECTORS = AVX512_PANEL_VECTORS };

/* Panel rows prefetched ahead of the one in use (4 to 16 measured alike,
 * a few percent faster than none, on the encoder's products). */
enum { B_AHEAD = 8 };

/* Row k of the block's panels as nv vectors of 16 floats: vector v holds
 * columns 16v .. 16v + 15, from panel v / 2. */
static AVX512 inline __attribute__((always_inline)) void panel_row(const int nv, const int bf16,
                                                                   const void *const *panel, int k, __m512 b[NV])
{
    UNROLL
    for (int q = 0; q < nv / PANEL_VECTORS; q++) {
        if (bf16) {
            const __m512i pairs = _mm512_load_si512((const uint16_t *)panel[q] + (size_t)k * GEMM_PANEL);
            b[2 * q] = _mm512_castsi512_ps(_mm512_slli_epi32(pairs, 16));
            b[2 * q + 1] = _mm512_castsi512_ps(_mm512_and_si512(pairs, _mm512_set1_epi32((int)0xFFFF0000u)));
        } else {
            const float *row = (const float *)panel[q] + (size_t)k * GEMM_PANEL;
            b[2 * q] = _mm512_load_ps(row);
            b[2 * q + 1] = _mm512_load_ps(row + 16);
        }
    }
}

/* acc[r][v] += x[r, k] * panel row k, vector v, for v < nv and every k of
 * the block. */
static AVX512 inline __attribute__((always_inline)) void accumulate(const int mr, const int nv, const int bf16,
                                                                    const gemm_block *g, const void *const *panel,
                                                                    __m512 acc[][NV])
{
    for (int k0 = 0; k0 < g->kc; k0 += g->run) {
        const size_t shift = (size_t)(k0 / g->run) * g->run_stride; /* this run, from the first */
        const int len = g->kc - k0 < g->run ? g->kc - k0 : g->run;
        const float *a[MR];
        UNROLL
        for (int r = 0; r < mr; r++)
            a[r] = g->a[r] + shift;
        for (int k = 0; k < len; k++) {
            /* bring the next block's rows into L1 while this block works: each 16 k, one more line
             * of each (x read once from memory, as in the first 3x3 convolution, ran ~20% faster) */
            if ((k & 15) == 0 && g->prefetch)
                UNROLL
                for (int r = 0; r < MR; r++)
                    _mm_prefetch((const char *)(g->a_next[r] + shift + k), _MM_HINT_T0);
            /* the panels' rows come from L2 (a block's slice of W is too big for L1), and
             * profiles showed the FMAs waiting on them: ask for them a few rows ahead (a
             * read past the panel's end is only a hint, never a fault) */
            UNROLL
            for (int q = 0; q < nv / PANEL_VECTORS; q++) {
                const char *ahead =
                    (const char *)panel[q] + (size_t)(k0 + k + B_AHEAD) * GEMM_PANEL * (bf16 ? sizeof(uint16_t) : sizeof(float));
                _mm_prefetch(ahead, _MM_HINT_T0);
                if (!bf16) /* a float row is two cache lines */
                    _mm_prefetch(ahead + 64, _MM_HINT_T0);
            }
            __m512 b[NV];
            panel_row(nv, bf16, panel, k0 + k, b);
            UNROLL
            for (int r = 0; r < mr; r++) {
                const __m512 ar = _mm512_set1_ps(a[r][k]);
                UNROLL
                for (int v = 0; v < nv; v++)
                    acc[r][v] = _mm512_fmadd_ps(ar, b[v], acc[r][v]);
            }
        }
    }
}

/* One block of exactly `mr` rows; always inlined with a constant mr (and
 * bf16) so that the accumulators stay in registers. Vector v covers columns
 * 16v..16v+15: panel v / 2, half v % 2. */
static AVX512 inline __attribute__((always_inline)) void block_rows(const int mr, const int bf16,
                                                                    const gemm_block *g)
{
    __mmask16 mask[NV];
    const void *panel[NV / PANEL_VECTORS];
    avx512_block_start(g, bf16 ? sizeof(uint16_t) : sizeof(float), mask, panel);
    __m512 acc[MR][NV];
    avx512_load_sums(mr, g, mask, acc);
    if (g->nr > GEMM_PANEL)
        accumulate(mr, NV, bf16, g, panel, acc);
    else /* one panel (the last of W may have no successor to read) */
        accumulate(mr, PANEL_VECTORS, bf16, g, panel, acc);
    avx512_store_sums(mr, g, mask, acc);
}

GEMM_KERNEL_ENTRY_POINTS(AVX512, block_rows)

/* gemm_bf16_round on 16 floats at a time (the rounding's integer form, so
 * that it needs AVX-512F only and keeps subnormals as that function does). */
AVX512 void gemm_avx512_to_bf16(const float *x, int n, uint16_t *out)
{
    const __m512i magnitude = _mm512_set1_epi32(0x7FFFFFFF), inf = _mm512_set1_epi32(0x7F800000);
    const __m512i half_less = _mm512_set1_epi32(0x7FFF), one = _mm512_set1_epi32(1), quiet = _mm512_set1_epi32(0x40);
    for (int i = 0; i < n; i += 16) {
        const __mmask16 m = avx512_lanes(n - i);
        const __m512i bits = _mm512_maskz_loadu_epi32(m, x + i);
        const __m512i high = _mm512_srli_epi32(bits, 16);
        const __m512i rounded = _mm512_srli_epi32(
            _mm512_add_epi32(_mm512_add_epi32(bits, half_less), _mm512_and_si512(high, one)), 16);
        const __mmask16 nan = _mm512_cmpgt_epu32_mask(_mm512_and_si512(bits, magnitude), inf);
        const __m512i halves = _mm512_mask_blend_epi32(nan, rounded, _mm512_or_si512(high, quiet));
        _mm512_mask_cvtepi32_storeu_epi16(out + i, m, halves);
    }
}

void gemm_avx512_run(const gemm_block *g)
{
    run(g);
}

const gemm_ukernel gemm_ukernel_avx512 = {"avx512", MR, NV * 16, run, run_bf16, 0, NULL};
