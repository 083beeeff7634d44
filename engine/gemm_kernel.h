/* gemm_kernel.h: the contract between the blocked driver (gemm.c) and the
 * per-instruction-set micro-kernels (gemm_avx512.c, gemm_avx2.c,
 * gemm_portable.c). Internal to the engine.
 *
 * A micro-kernel computes one block of y: up to `mr_max` rows by up to
 * `nr_max` columns (one or more consecutive packed panels of GEMM_PANEL
 * columns), over one range of K. It must accumulate each
 * element as one fmaf chain in increasing k, starting from 0 at the first K
 * block and from the stored partial sum otherwise, and at the last K block
 * add the bias, then the residual, then apply ReLU, exactly as gemm.h
 * promises: that is what makes every backend give the same bits.
 * `run` reads float panels, `run_bf16` bfloat16 ones (gemm.h's layout),
 * widened to float exactly in registers before the same multiply-adds.
 *
 * Dot-product kernels (bf16_dot = 1: the avx512bf16 backends) compute
 * bfloat16 products gemm.h's other way: their `run_bf16` takes x already
 * rounded to bfloat16 (x_bf16, made by the kernel's own `to_bf16`) and W in
 * the k-pair layout, and adds the two products of each pair of k to the sum,
 * the odd k first (gemm.h). Their `run` is the avx512 kernel's.
 */
#ifndef RC_GEMM_KERNEL_H
#define RC_GEMM_KERNEL_H

#include <stddef.h>
#include <stdint.h>

#include "gemm.h"

/* Most rows any micro-kernel takes per block. */
enum { GEMM_MR_MAX = 8 };

typedef struct gemm_block {
    /* Rows by pointer, not by a stride: a convolution's patch rows are
     * windows of its input image (gemm_conv2d), not rows of one matrix. */
    const float *a[GEMM_MR_MAX];      /* row r of x at column k0 (kc floats), r < mr; not set
                                       * for a dot kernel, which reads x_bf16 */
    const float *a_next[GEMM_MR_MAX]; /* the next block's rows at k0 (all mr_max of them,
                                       * repeated if it has fewer), to prefetch while this
                                       * one computes; valid when prefetch is 1 */
    int prefetch;          /* 1: a_next holds rows */
    int run;               /* the kc columns are runs of `run` contiguous floats (the last
                            * may be shorter): kc itself for a plain matrix ... */
    size_t run_stride;     /* ... and run j of row r starts at a[r] + j * run_stride (window
                            * rows of a convolution: one image row apart) */
    const void *b;         /* first packed panel at k0: (kc, GEMM_PANEL) floats, or bfloat16
                            * for run_bf16 (k-pair rows for a dot kernel); 64-byte aligned */
    const uint16_t *x_bf16; /* dot kernels only: row r of x from k0, rounded to bfloat16, at
                             * x_bf16 + r * ld_x_bf16: kc halves and a zero when kc is odd;
                             * 4-byte aligned (a pair is one 32-bit word) */
    size_t ld_x_bf16;      /* even */
    size_t panel_stride;   /* elements from one panel to the next (n_in * GEMM_PANEL) */
    int kc;                /* K range of this block (may be 0) */
    float *c;              /* y at (i0, j0): (mr, ldc) */
    size_t ldc;            /* row stride of c, in floats */
    int mr;                /* rows, 1 .. mr_max */
    int nr;                /* valid columns, 1 .. nr_max (panels past them are not read) */
    int first;             /* 1: sums start at 0; 0: continue from c */
    int last;              /* 1: apply the epilogue below and store the result */
    const float *bias;     /* at j0: (nr), or NULL; read when last */
    const float *residual; /* at (i0, j0): (mr, ld_residual), or NULL; read when last */
    size_t ld_residual;    /* row stride of residual, in floats */
    int relu;              /* 1: max(0, .) when last */
} gemm_block;

typedef struct gemm_ukernel {
    const char *name; /* backend name, as gemm_set_backend takes it */
    int mr_max;       /* most rows per block */
    int nr_max;       /* most columns per block: a multiple of GEMM_PANEL */
    void (*run)(const gemm_block *block);      /* float panels */
    void (*run_bf16)(const gemm_block *block); /* bfloat16 panels */
    int bf16_dot;     /* 1: run_bf16 is a dot-product kernel (see the top) */
    /* dot kernels: out[i] = gemm_bf16_round(x[i]) for i < n, bit for bit */
    void (*to_bf16)(const float *x, int n, uint16_t *out);
} gemm_ukernel;

/* Where column c (0 .. GEMM_PANEL-1) of a bfloat16 panel row sits among its
 * 32 halves, as a little-endian uint16_t array (gemm.h: word c % 16, the low
 * half for c < 16). */
static inline int gemm_bf16_slot(int c)
{
    return 2 * (c % (GEMM_PANEL / 2)) + c / (GEMM_PANEL / 2);
}

/* Defines a SIMD kernel's entry points, static void run(g) (float panels)
 * and run_bf16(g) (bfloat16 ones), from its always-inlined
 * block_rows(mr, bf16, g): the switch makes the row count a constant in
 * each case (1 to 6, the kernels' most), so that the accumulator arrays
 * become registers. ATTR is the kernel's target attribute; the file's MR
 * (its most rows) must be at most 6. */
#define GEMM_KERNEL_ENTRY_POINTS(ATTR, block_rows)                                                                 \
    static ATTR inline __attribute__((always_inline)) void run_rows(const int bf16, const gemm_block *g)           \
    {                                                                                                              \
        switch (g->mr) {                                                                                           \
        case 1: block_rows(1, bf16, g); return;                                                                    \
        case 2: block_rows(2, bf16, g); return;                                                                    \
        case 3: block_rows(3, bf16, g); return;                                                                    \
        case 4: block_rows(4, bf16, g); return;                                                                    \
        case 5: block_rows(5, bf16, g); return;                                                                    \
        case 6: block_rows(6, bf16, g); return;                                                                    \
        }                                                                                                          \
    }                                                                                                              \
    _Static_assert(MR <= 6, "GEMM_KERNEL_ENTRY_POINTS covers 6 rows at most");                                     \
    static ATTR void run(const gemm_block *g) { run_rows(0, g); }                                                  \
    static ATTR void run_bf16(const gemm_block *g) { run_rows(1, g); }

extern const gemm_ukernel gemm_ukernel_avx512;
extern const gemm_ukernel gemm_ukernel_avx2;
extern const gemm_ukernel gemm_ukernel_portable;
extern const gemm_ukernel gemm_ukernel_avx512bf16;
extern const gemm_ukernel gemm_ukernel_avx512bf16_emulated;

#endif
