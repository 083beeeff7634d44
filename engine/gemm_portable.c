/* gemm_portable.c: the micro-kernel in plain C (see gemm_kernel.h), for
 * CPUs without AVX2 and as the readable statement of what the vector
 * kernels compute. fmaf keeps it bit-identical to them; on a CPU without
 * FMA it is a (correctly rounded) library call, slow but exact.
 */
#include <math.h>
#include <stdint.h>

#include "gemm_kernel.h"

enum { MR = 4 };

/* Row k of a bfloat16 panel as floats, in column order. */
static void widen_row(const uint16_t *row, float *out)
{
    for (int c = 0; c < GEMM_PANEL; c++)
        out[c] = gemm_bf16_to_float(row[gemm_bf16_slot(c)]);
}

static void block(const gemm_block *g, int bf16)
{
    float acc[MR][GEMM_PANEL];
    for (int r = 0; r < g->mr; r++)
        for (int j = 0; j < GEMM_PANEL; j++)
            acc[r][j] = g->first || j >= g->nr ? 0.0f : g->c[r * g->ldc + j];
    float widened[GEMM_PANEL];
    for (int k = 0; k < g->kc; k++) {
        const float *b = bf16 ? widened : (const float *)g->b + (size_t)k * GEMM_PANEL;
        if (bf16)
            widen_row((const uint16_t *)g->b + (size_t)k * GEMM_PANEL, widened);
        for (int r = 0; r < g->mr; r++) {
            const float a = g->a[r][(size_t)(k / g->run) * g->run_stride + k % g->run];
            for (int j = 0; j < GEMM_PANEL; j++)
                acc[r][j] = fmaf(a, b[j], acc[r][j]);
        }
    }
    for (int r = 0; r < g->mr; r++)
        for (int j = 0; j < g->nr; j++) {
            float v = acc[r][j];
            if (g->last) {
                if (g->bias)
                    v = v + g->bias[j];
                if (g->residual)
                    v = v + g->residual[r * g->ld_residual + j];
                if (g->relu)
                    v = v > 0.0f ? v : 0.0f;
            }
            g->c[r * g->ldc + j] = v;
        }
}

static void run(const gemm_block *g)
{
    block(g, 0);
}

static void run_bf16(const gemm_block *g)
{
    block(g, 1);
}

const gemm_ukernel gemm_ukernel_portable = {"portable", MR, GEMM_PANEL, run, run_bf16, 0, NULL};
