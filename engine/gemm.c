#include "gemm.h"

#include <cblas.h>
#include <stddef.h>

/* OpenBLAS's own thread control (not part of the CBLAS standard). */
void openblas_set_num_threads(int num_threads);

void gemm_init(void)
{
    openblas_set_num_threads(1);
}

/* Tile sizes of y handed to one thread: large enough that sgemm runs at
 * speed, small enough that 2+ threads get work for decoder-sized products. */
enum { TILE_M = 256, TILE_N = 512 };

static void apply_epilogue(const gemm_epilogue *ep, int m0, int m1, int n0, int n1, float *y, int ldy)
{
    for (int i = m0; i < m1; i++) {
        float *row = y + (size_t)i * ldy;
        if (ep->residual) {
            const float *res = ep->residual + (size_t)i * ep->ld_residual;
            for (int j = n0; j < n1; j++)
                row[j] += res[j];
        }
        if (ep->relu)
            for (int j = n0; j < n1; j++)
                row[j] = row[j] > 0.0f ? row[j] : 0.0f;
    }
}

void gemm_linear(const gemm_weights *w, int m, const float *x, int ldx, float *y, int ldy,
                 const gemm_epilogue *epilogue)
{
    const int n = w->n_out, k = w->n_in;
    if (m <= 0 || n <= 0)
        return;
    const int tiles_m = (m + TILE_M - 1) / TILE_M;
    const int tiles_n = (n + TILE_N - 1) / TILE_N;
    const int n_tiles = tiles_m * tiles_n;
#pragma omp parallel for schedule(dynamic, 1) if (n_tiles > 1)
    for (int t = 0; t < n_tiles; t++) {
        const int m0 = (t / tiles_n) * TILE_M, n0 = (t % tiles_n) * TILE_N;
        const int mt = m - m0 < TILE_M ? m - m0 : TILE_M;
        const int nt = n - n0 < TILE_N ? n - n0 : TILE_N;
        float *yt = y + (size_t)m0 * ldy + n0;
        float beta = 0.0f;
        if (w->bias) {
            for (int i = 0; i < mt; i++)
                for (int j = 0; j < nt; j++)
                    yt[(size_t)i * ldy + j] = w->bias[n0 + j];
            beta = 1.0f;
        }
        if (k > 0)
            cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, mt, nt, k, 1.0f,
                        x + (size_t)m0 * ldx, ldx, w->w + (size_t)n0 * k, k, beta, yt, ldy);
        else if (!w->bias)
            for (int i = 0; i < mt; i++)
                for (int j = 0; j < nt; j++)
                    yt[(size_t)i * ldy + j] = 0.0f;
        if (epilogue)
            apply_epilogue(epilogue, m0, m0 + mt, n0, n0 + nt, y, ldy);
    }
}
