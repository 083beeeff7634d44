/* gemm_portable.c: the micro-kernel in plain C (see gemm_kernel.h), for
 * CPUs without AVX2 and as the readable statement of what the vector
 * kernels compute. fmaf keeps it bit-identical to them; on a CPU without
 * FMA it is a (correctly rounded) library call, slow but exact.
 */
#include <math.h>

#include "gemm_kernel.h"

enum { MR = 4 };

static void run(const gemm_block *g)
{
    float acc[MR][GEMM_PANEL];
    for (int r = 0; r < g->mr; r++)
        for (int j = 0; j < GEMM_PANEL; j++)
            acc[r][j] = g->first || j >= g->nr ? 0.0f : g->c[r * g->ldc + j];
    const float *b = g->b;
    for (int k = 0; k < g->kc; k++, b += GEMM_PANEL)
        for (int r = 0; r < g->mr; r++) {
            const float a = g->a[r * g->lda + k];
            for (int j = 0; j < GEMM_PANEL; j++)
                acc[r][j] = fmaf(a, b[j], acc[r][j]);
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

const gemm_ukernel gemm_ukernel_portable = {"portable", MR, GEMM_PANEL, run};
