/* gemm.h: the engine's one matrix-product interface.
 *
 * Every dense layer of the model (convolutions after im2col, linear layers,
 * attention projections, fc_out) is y = x W^T + b, with W stored the way
 * PyTorch stores nn.Linear weights: (n_out, n_in), row-major. Keeping one
 * entry point means a faster backend (the engine's own AVX-512 kernels, a
 * vendor BLAS) changes one file, not the model.
 *
 * The current backend calls CBLAS sgemm on tiles of y from an OpenMP loop,
 * with the BLAS itself single-threaded, so that OpenMP is the only thread
 * pool (OpenBLAS's own busy-waiting threads would fight OpenMP's for cores).
 */
#ifndef RC_GEMM_H
#define RC_GEMM_H

typedef struct gemm_weights {
    int n_out;         /* N: output features */
    int n_in;          /* K: input features */
    const float *w;    /* (n_out, n_in) row-major */
    const float *bias; /* (n_out), or NULL */
} gemm_weights;

/* What is applied to each output element after the product and bias, in this
 * order: add residual[m, n] (if residual is not NULL), then max(0, .) if relu. */
typedef struct gemm_epilogue {
    const float *residual; /* (m, ld_residual) or NULL */
    int ld_residual;       /* row stride of residual, in floats */
    int relu;              /* 1: apply ReLU */
} gemm_epilogue;

/* y[i, j] = epilogue(sum_k x[i, k] * w->w[j, k] + bias[j]) for i < m, j < n_out.
 * x is (m, ldx) with ldx >= n_in; y is (m, ldy) with ldy >= n_out; y must not
 * alias x. epilogue may be NULL. Parallel over tiles of y with OpenMP; call
 * it from outside parallel regions. */
void gemm_linear(const gemm_weights *w, int m, const float *x, int ldx, float *y, int ldy,
                 const gemm_epilogue *epilogue);

/* Makes the BLAS backend single-threaded (OpenMP parallelises around it).
 * Call once at start-up, before any gemm_linear. */
void gemm_init(void);

#endif
