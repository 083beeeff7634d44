/* Tests of gemm.h: every backend against references written here from the
 * definition (a double-precision sum, and for the engine's own backends the
 * exact fmaf chain gemm.h promises, element by element), on odd shapes, with
 * float weights and with bfloat16 ones (the references then multiply the
 * weights rounded by gemm_bf16_round, itself checked against hand-computed
 * cases and an independent rounding in double); determinism across batch
 * composition, tiles, threads and backends; the packed layouts; backend and
 * precision selection. */
#include <math.h>
#include <omp.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine/gemm.h"
#include "engine/gemm_avx512.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/helpers/testutil.h"

/* Marks y's padding (columns n .. ldy-1): it must survive every product. */
#define SENTINEL 12345.0f

/* Every backend, and what gemm.h promises of it. Products whose inputs are
 * exact in bfloat16 give the same on all of them. */
typedef struct backend_case {
    const char *name;
    int engine;  /* 1: the engine's own (gemm.h's exact sums; rows independent of the batch); 0: cblas */
    int dot;     /* 1: in bf16, x rounded too and pairs summed (gemm.h) */
    int rounded; /* 1: those bf16 sums only within rounding of the definition (VDPBF16PS itself,
                  * which may differ on subnormals; the emulated backend is exact) */
} backend_case;
static const backend_case backends[] = {
    {"avx512", 1, 0, 0}, {"avx2", 1, 0, 0}, {"portable", 1, 0, 0}, {"cblas", 0, 0, 0},
    {"avx512bf16-emulated", 1, 1, 0}, {"avx512bf16", 1, 1, 1},
};
enum { N_BACKENDS = 6 };
static const gemm_precision precisions[] = {GEMM_FP32, GEMM_BF16};
enum { N_PRECISIONS = 2 };

/* W as a backend multiplies it: each value, or its bfloat16 rounding. */
static float *multiplied_weights(const float *w, size_t n, gemm_precision precision)
{
    float *out = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(out);
    for (size_t i = 0; i < n; i++)
        out[i] = precision == GEMM_BF16 ? gemm_bf16_to_float(gemm_bf16_round(w[i])) : w[i];
    return out;
}

static float *random_floats(rng_state *r, size_t n, double scale)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    assert_non_null(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * rng_normal(r));
    return x;
}

static void use_backend(const char *name)
{
    rc_error err = {{0}};
    if (gemm_set_backend(name, &err) < 0)
        fail_msg("%s", err.msg);
    if (strcmp(name, "auto") != 0)
        assert_string_equal(gemm_backend_name(), name);
}

/* One product's operands; x (m, ldx), residual (m, ld_res), y (m, ldy). */
typedef struct problem {
    int m, n, k, ldx, ldy, ld_res;
    float *x, *w, *bias, *res;
    int use_bias, use_res, relu;
} problem;

static problem make_problem(rng_state *r, int m, int n, int k, int variant)
{
    problem p = {.m = m, .n = n, .k = k, .ldx = k + variant % 3, .ldy = n + 1 + variant % 5, .ld_res = n + 2};
    p.x = random_floats(r, (size_t)m * p.ldx, 1.0);
    p.w = random_floats(r, (size_t)n * k, 1.0);
    p.bias = random_floats(r, n, 1.0);
    p.res = random_floats(r, (size_t)m * p.ld_res, 1.0);
    p.use_bias = variant & 1;
    p.use_res = (variant >> 1) & 1;
    p.relu = (variant >> 2) & 1;
    return p;
}

static void free_problem(problem *p)
{
    free(p->x), free(p->w), free(p->bias), free(p->res);
}

/* y = epilogue(x W^T + b) in double, W being w (n, k): the mathematical answer. */
static double *reference_double(const problem *p, const float *w)
{
    double *ref = malloc(sizeof(double) * ((size_t)p->m * p->n + 1));
    assert_non_null(ref);
    for (int i = 0; i < p->m; i++)
        for (int j = 0; j < p->n; j++) {
            double s = 0;
            for (int t = 0; t < p->k; t++)
                s += (double)p->x[(size_t)i * p->ldx + t] * w[(size_t)j * p->k + t];
            if (p->use_bias)
                s += p->bias[j];
            if (p->use_res)
                s += p->res[(size_t)i * p->ld_res + j];
            ref[(size_t)i * p->n + j] = p->relu && !(s > 0) ? 0 : s;
        }
    return ref;
}

/* The exact float computation gemm.h specifies, W being w (n, k): for the
 * engine's backends the fmaf chain; for the dot-product ones (pairs = 1, on
 * x and W as given: pass them rounded) pairs of k, the odd one first, zero
 * past k (a product of two bfloat16 is exact: s + x * w rounds once). */
static float *reference_exact(const problem *p, const float *w, int pairs)
{
    float *ref = malloc(sizeof(float) * ((size_t)p->m * p->n + 1));
    assert_non_null(ref);
    for (int i = 0; i < p->m; i++)
        for (int j = 0; j < p->n; j++) {
            const float *x = p->x + (size_t)i * p->ldx, *wj = w + (size_t)j * p->k;
            float s = 0.0f;
            for (int t = 0; t < p->k; t += 1 + pairs)
                if (pairs) {
                    s = s + (t + 1 < p->k ? x[t + 1] * wj[t + 1] : 0.0f);
                    s = s + x[t] * wj[t];
                } else {
                    s = fmaf(x[t], wj[t], s);
                }
            if (p->use_bias)
                s = s + p->bias[j];
            if (p->use_res)
                s = s + p->res[(size_t)i * p->ld_res + j];
            ref[(size_t)i * p->n + j] = p->relu ? (s > 0.0f ? s : 0.0f) : s;
        }
    return ref;
}

static float *reference_chain(const problem *p, const float *w)
{
    return reference_exact(p, w, 0);
}

static float *reference_pairs(const problem *p, const float *w)
{
    return reference_exact(p, w, 1);
}

/* x as the dot-product backends multiply it: rounded to bfloat16. */
static problem rounded_x(const problem *p)
{
    problem q = *p;
    q.x = multiplied_weights(p->x, (size_t)p->m * p->ldx, GEMM_BF16);
    return q;
}

/* Runs the product into a fresh y whose padding holds SENTINEL. */
static float *run_problem(const problem *p, const gemm_weights *gw)
{
    float *y = malloc(sizeof(float) * ((size_t)p->m * p->ldy + 1));
    assert_non_null(y);
    for (size_t i = 0; i < (size_t)p->m * p->ldy; i++)
        y[i] = SENTINEL;
    const gemm_epilogue ep = {p->use_res ? p->res : NULL, p->ld_res, p->relu};
    gemm_linear(gw, p->m, p->x, p->ldx, y, p->ldy, &ep);
    return y;
}

/* Checks y against both references (the chain only when `exact`) and that
 * the padding past n is untouched. */
static void check_result(const char *backend, const problem *p, const float *y, const double *ref,
                         const float *chain, int exact)
{
    const double tol = 1e-5 * sqrt((double)p->k + 1);
    for (int i = 0; i < p->m; i++) {
        for (int j = 0; j < p->n; j++) {
            const float got = y[(size_t)i * p->ldy + j];
            const double want = ref[(size_t)i * p->n + j];
            if (!(fabs(got - want) <= tol * (1.0 + fabs(want))))
                fail_msg("%s (m %d, n %d, k %d, bias %d, res %d, relu %d): y[%d, %d] = %.9g, expected %.9g", backend,
                         p->m, p->n, p->k, p->use_bias, p->use_res, p->relu, i, j, got, want);
            if (exact && memcmp(&got, &chain[(size_t)i * p->n + j], sizeof got) != 0)
                fail_msg("%s (m %d, n %d, k %d): y[%d, %d] = %.9g is not gemm.h's exact sum %.9g", backend, p->m,
                         p->n, p->k, i, j, got, chain[(size_t)i * p->n + j]);
        }
        for (int j = p->n; j < p->ldy; j++)
            if (y[(size_t)i * p->ldy + j] != SENTINEL)
                fail_msg("%s (m %d, n %d, k %d): padding y[%d, %d] was overwritten", backend, p->m, p->n, p->k, i,
                         j);
    }
}

/* Every backend and precision, packed and unpacked weights, on shapes
 * around the vector width (16), the panel (32) and the AVX-512 block (64
 * columns), the kernels' rows (6, 4), the K block (1024: K of 1025 and 2100
 * take 2 and 3 blocks) and the row tile (336); all 8 epilogue combinations
 * in turn. The weights are normal draws, so rounding them to bfloat16
 * changes nearly all of them: a bf16 product that multiplied the float
 * weights would miss the chain. */
static void test_backends_on_odd_shapes(void **state)
{
    (void)state;
    static const int ms[] = {1, 7, 14, 15, 33, 337, 1000};
    static const int ns[] = {1, 7, 16, 31, 33, 64, 100, 1000};
    static const int ks[] = {1, 7, 17, 33, 257, 1000, 1025, 2100};
    rng_state r;
    rng_seed(&r, 11);
    int variant = 0, cases = 0;
    for (size_t a = 0; a < sizeof ms / sizeof *ms; a++)
        for (size_t b = 0; b < sizeof ns / sizeof *ns; b++)
            for (size_t c = 0; c < sizeof ks / sizeof *ks; c++) {
                const int m = ms[a], n = ns[b], k = ks[c];
                /* under the sanitizers (memory errors, not sums) the small
                 * shapes: every size above still occurs in one */
                const double limit = tu_sanitized() ? 3e5 : 3e6;
                if ((double)m * n * k > limit && !(m == 1000 && n == 33 && k == 1000 && !tu_sanitized()))
                    continue;
                problem p = make_problem(&r, m, n, k, variant++);
                for (int pr = 0; pr < N_PRECISIONS; pr++) {
                    float *w = multiplied_weights(p.w, (size_t)n * k, precisions[pr]);
                    double *ref = reference_double(&p, w);
                    float *chain = reference_chain(&p, w);
                    gemm_weights packed = {.n_out = n, .n_in = k, .w = p.w, .bias = p.use_bias ? p.bias : NULL,
                                           .precision = precisions[pr]};
                    rc_error err = {{0}};
                    if (gemm_pack(&packed, &err) < 0)
                        fail_msg("%s", err.msg);
                    gemm_weights unpacked = packed;
                    unpacked.packed = NULL, unpacked.packed_bf16 = NULL;
                    /* the dot products: fp32 is avx512's; bf16 is the pair sum of rounded x and W
                     * (the panels were packed for the other layout: these products repack them
                     * for the call) */
                    problem q = rounded_x(&p);
                    double *dot_ref = reference_double(&q, w);
                    float *pairs = reference_pairs(&q, w);
                    const int bf16 = precisions[pr] == GEMM_BF16;
                    for (int be = 0; be < N_BACKENDS; be++) {
                        const backend_case *bk = &backends[be];
                        if (!gemm_backend_supported(bk->name))
                            continue;
                        use_backend(bk->name);
                        char label[64];
                        snprintf(label, sizeof label, "%s %s", bk->name, gemm_precision_name(precisions[pr]));
                        const int dot = bk->dot && bf16;
                        for (int form = 0; form < 2; form++) {
                            float *y = run_problem(&p, form ? &unpacked : &packed);
                            check_result(label, &p, y, dot ? dot_ref : ref, dot ? pairs : chain,
                                         bk->engine && !(dot && bk->rounded));
                            free(y);
                        }
                    }
                    free(q.x), free(dot_ref), free(pairs);
                    gemm_unpack(&packed);
                    free(w), free(ref), free(chain);
                }
                free_problem(&p);
                cases++;
            }
    printf("  %d shapes x %d backends x fp32/bf16 x packed/unpacked weights\n", cases, N_BACKENDS);
    use_backend("auto");
}

/* The patch matrix of a convolution written out (what gemm_conv2d reads
 * in place): (batch * oh * ow, kernel * kernel * c_in), (ky, kx, c) order. */
static float *explicit_patches(const gemm_conv *cv)
{
    const int oh = ops_conv_out(cv->h, cv->kernel, cv->stride, 0), ow = ops_conv_out(cv->w, cv->kernel, cv->stride, 0);
    const size_t row = (size_t)cv->kernel * cv->kernel * cv->c_in;
    float *cols = malloc(sizeof(float) * cv->batch * oh * ow * row);
    assert_non_null(cols);
    for (int b = 0; b < cv->batch; b++)
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int ky = 0; ky < cv->kernel; ky++)
                    for (int kx = 0; kx < cv->kernel; kx++)
                        for (int c = 0; c < cv->c_in; c++)
                            cols[(((size_t)b * oh + oy) * ow + ox) * row + ((size_t)ky * cv->kernel + kx) * cv->c_in + c] =
                                cv->x[(((size_t)b * cv->h + oy * cv->stride + ky) * cv->w + ox * cv->stride + kx) * cv->c_in + c];
    return cols;
}

/* gemm_conv2d gives, bit for bit, what gemm_linear gives on the explicit
 * patches, on every backend and precision: windows of 1, 3 and 7, strides
 * 1 and 2, one channel, the stem's 3 (seven window rows in one K block),
 * window rows longer than the K block (3 x 400 = 1200 > 1024), K blocks of
 * two window rows then one (3 x 150 = 450 a row), image sides the stride does not divide,
 * batches whose rows cross the row tile (336), all epilogues, and y wider
 * than the output (its padding untouched). */
static void test_conv_is_the_patch_product(void **state)
{
    (void)state;
    static const struct { int batch, h, w, c_in, n_out, kernel, stride; } cases[] = {
        {2, 17, 15, 3, 64, 7, 2}, {3, 14, 14, 16, 33, 3, 1}, {1, 9, 8, 400, 40, 3, 1}, {2, 11, 11, 7, 70, 3, 2},
        {3, 10, 9, 24, 31, 1, 2},  {1, 5, 5, 1, 1, 3, 1},    {4, 3, 3, 5, 9, 3, 1},   {1, 6, 7, 150, 20, 3, 1},
    };
    rng_state r;
    rng_seed(&r, 23);
    for (size_t ci = 0; ci < sizeof cases / sizeof *cases; ci++) {
        const int batch = cases[ci].batch, h = cases[ci].h, w = cases[ci].w, c_in = cases[ci].c_in;
        const int n = cases[ci].n_out, kernel = cases[ci].kernel, stride = cases[ci].stride;
        const int k = kernel * kernel * c_in, ldy = n + 3;
        const int m = batch * ops_conv_out(h, kernel, stride, 0) * ops_conv_out(w, kernel, stride, 0);
        float *x = random_floats(&r, (size_t)batch * h * w * c_in, 1.0);
        float *weights = random_floats(&r, (size_t)n * k, 0.1), *bias = random_floats(&r, n, 1.0);
        float *residual = random_floats(&r, (size_t)m * n, 1.0);
        const gemm_conv conv = {.x = x, .batch = batch, .h = h, .w = w, .c_in = c_in, .kernel = kernel, .stride = stride};
        float *cols = explicit_patches(&conv);
        float *want = malloc(sizeof(float) * m * ldy), *got = malloc(sizeof(float) * m * ldy);
        assert_non_null(want);
        assert_non_null(got);
        const gemm_epilogue ep = {.residual = ci % 2 ? residual : NULL, .ld_residual = n, .relu = ci % 3 != 0};
        for (int pr = 0; pr < N_PRECISIONS; pr++) {
            gemm_weights gw = {.n_out = n, .n_in = k, .w = weights, .bias = ci % 4 != 3 ? bias : NULL,
                               .precision = precisions[pr]};
            rc_error err = {{0}};
            if (gemm_pack(&gw, &err) < 0)
                fail_msg("%s", err.msg);
            for (int be = 0; be < N_BACKENDS; be++) {
                if (!gemm_backend_supported(backends[be].name))
                    continue;
                use_backend(backends[be].name);
                for (size_t i = 0; i < (size_t)m * ldy; i++)
                    want[i] = got[i] = SENTINEL;
                gemm_linear(&gw, m, cols, k, want, ldy, &ep);
                gemm_conv2d(&gw, &conv, got, ldy, &ep);
                for (size_t i = 0; i < (size_t)m * ldy; i++)
                    if (memcmp(&want[i], &got[i], sizeof(float)) != 0)
                        fail_msg("%s %s, case %zu: y[%zu, %zu] = %.9g, the patch product gives %.9g", backends[be].name,
                                 gemm_precision_name(precisions[pr]), ci, i / ldy, i % ldy, got[i], want[i]);
            }
            gemm_unpack(&gw);
        }
        free(x), free(weights), free(bias), free(residual), free(cols), free(want), free(got);
    }
    use_backend("auto");
}

/* K = 0: y = epilogue(bias), the empty sum being 0. */
static void test_empty_k(void **state)
{
    (void)state;
    const float bias[3] = {1.5f, -2.0f, 0.25f}, res[2 * 3] = {1, 1, 1, -1, -1, -1};
    const float x[2] = {99, 99}; /* never read: K is 0 */
    for (int be = 0; be < N_BACKENDS; be++)
        for (int pr = 0; pr < N_PRECISIONS; pr++) {
            if (!gemm_backend_supported(backends[be].name))
                continue;
            use_backend(backends[be].name);
            gemm_weights gw = {.n_out = 3, .n_in = 0, .w = NULL, .bias = bias, .precision = precisions[pr]};
            rc_error err = {{0}};
            assert_int_equal(gemm_pack(&gw, &err), 0);
            float y[2 * 3];
            const gemm_epilogue ep = {res, 3, 1};
            gemm_linear(&gw, 2, x, 1, y, 3, &ep);
            /* row 0: relu(bias + 1) = 2.5, 0 (-1), 1.25; row 1: relu(bias - 1) = 0.5, 0, 0 */
            const float want[6] = {2.5f, 0.0f, 1.25f, 0.5f, 0.0f, 0.0f};
            for (int i = 0; i < 6; i++)
                if (y[i] != want[i])
                    fail_msg("%s %s: y[%d] = %g, expected %g", backends[be].name, gemm_precision_name(precisions[pr]),
                             i, y[i], want[i]);
            gemm_unpack(&gw);
        }
    use_backend("auto");
}

/* m = 0 and n = 0 touch nothing. */
static void test_empty_products(void **state)
{
    (void)state;
    const float w[4] = {1, 2, 3, 4}, x[2] = {1, 1};
    float y[4] = {7, 7, 7, 7};
    const gemm_weights gw = {.n_out = 2, .n_in = 2, .w = w, .bias = NULL};
    gemm_linear(&gw, 0, x, 2, y, 2, NULL);
    const gemm_weights none = {.n_out = 0, .n_in = 2, .w = w, .bias = NULL};
    gemm_linear(&none, 1, x, 2, y, 2, NULL);
    for (int i = 0; i < 4; i++)
        assert_true(y[i] == 7.0f);
}

/* The residual may be x itself (y = x + f(x) when n == k); y must be apart. */
static void test_residual_is_x(void **state)
{
    (void)state;
    /* x = [[1, 2], [3, 4]], W = [[1, 0], [1, 1]], bias = [0.5, -10]:
     * x W^T = [[1, 3], [3, 7]]; + bias = [[1.5, -7], [3.5, -3]];
     * + x = [[2.5, -5], [6.5, 1]]; relu -> [[2.5, 0], [6.5, 1]]
     * (W is exact in bfloat16, so both precisions give this) */
    const float x[4] = {1, 2, 3, 4}, w[4] = {1, 0, 1, 1}, bias[2] = {0.5f, -10.0f};
    const float want[4] = {2.5f, 0.0f, 6.5f, 1.0f};
    for (int be = 0; be < N_BACKENDS; be++)
        for (int pr = 0; pr < N_PRECISIONS; pr++) {
            if (!gemm_backend_supported(backends[be].name))
                continue;
            use_backend(backends[be].name);
            gemm_weights gw = {.n_out = 2, .n_in = 2, .w = w, .bias = bias, .precision = precisions[pr]};
            rc_error err = {{0}};
            assert_int_equal(gemm_pack(&gw, &err), 0);
            float y[4];
            const gemm_epilogue ep = {x, 2, 1};
            gemm_linear(&gw, 2, x, 2, y, 2, &ep);
            for (int i = 0; i < 4; i++)
                if (y[i] != want[i])
                    fail_msg("%s %s: y[%d] = %g, expected %g", backends[be].name, gemm_precision_name(precisions[pr]),
                             i, y[i], want[i]);
            gemm_unpack(&gw);
        }
    use_backend("auto");
}

/* Packs p's weights at `precision`, and gemm.h's exact result with the
 * weights so rounded: the fmaf chain, or for a dot-product backend in bf16
 * the pair sums of x rounded too. */
static gemm_weights packed_weights(const problem *p, gemm_precision precision, int dot, float **chain)
{
    gemm_weights gw = {.n_out = p->n, .n_in = p->k, .w = p->w, .bias = p->bias, .precision = precision};
    rc_error err = {{0}};
    if (gemm_pack(&gw, &err) < 0)
        fail_msg("%s", err.msg);
    float *w = multiplied_weights(p->w, (size_t)p->n * p->k, precision);
    if (dot && precision == GEMM_BF16) {
        problem q = rounded_x(p);
        *chain = reference_pairs(&q, w);
        free(q.x);
    } else {
        *chain = reference_chain(p, w);
    }
    free(w);
    return gw;
}

/* A row's result is the same bits whatever rows surround it, where it falls
 * in the kernels' blocks and tiles, how many threads run, and which engine
 * backend computes it, in both precisions. Shapes as the model's: a
 * decoder-like product (N split over threads) and an encoder-like one (M
 * and N split). */
static void test_determinism(void **state)
{
    (void)state;
    struct { int rows, n, k; } shapes[] = {{300, 200, 1100}, {700, 96, 320}};
    static const int windows[][2] = {{0, 1}, {5, 1}, {17, 13}, {100, 14}, {3, 200}, {299, 1}, {0, 300}, {1, 299}};
    const int saved_threads = omp_get_max_threads();
    rng_state r;
    rng_seed(&r, 12);
    for (size_t s = 0; s < sizeof shapes / sizeof *shapes; s++) {
        const int rows = shapes[s].rows, n = shapes[s].n, k = shapes[s].k;
        problem p = make_problem(&r, rows, n, k, 7); /* bias, residual and ReLU */
        float *y = malloc(sizeof(float) * (size_t)rows * p.ldy);
        assert_non_null(y);
        for (int pr = 0; pr < N_PRECISIONS; pr++)
            for (int be = 0; be < N_BACKENDS; be++) {
                const backend_case *b = &backends[be];
                if (!b->engine || !gemm_backend_supported(b->name))
                    continue;
                use_backend(b->name);
                float *chain;
                gemm_weights gw = packed_weights(&p, precisions[pr], b->dot, &chain);
                if (b->rounded) { /* the instruction: each row as computed alone */
                    for (int i = 0; i < rows; i++) {
                        const gemm_epilogue ep = {p.res + (size_t)i * p.ld_res, p.ld_res, 1};
                        gemm_linear(&gw, 1, p.x + (size_t)i * p.ldx, p.ldx, chain + (size_t)i * n, n, &ep);
                    }
                }
                /* 2 threads is what every other test runs: the sanitizer build skips it */
                for (int threads = 1; threads <= 3; threads += tu_sanitized() ? 2 : 1) {
                    omp_set_num_threads(threads);
                    for (size_t wi = 0; wi < sizeof windows / sizeof *windows; wi++) {
                        const int first = windows[wi][0];
                        const int m = windows[wi][1] < rows - first ? windows[wi][1] : rows - first;
                        const gemm_epilogue ep = {p.res + (size_t)first * p.ld_res, p.ld_res, 1};
                        gemm_linear(&gw, m, p.x + (size_t)first * p.ldx, p.ldx, y, p.ldy, &ep);
                        for (int i = 0; i < m; i++)
                            if (memcmp(y + (size_t)i * p.ldy, chain + (size_t)(first + i) * n, sizeof(float) * n))
                                fail_msg("%s %s, %d threads, rows %d..%d of (%d, %d, %d): row %d differs from the "
                                         "same row computed alone",
                                         b->name, gemm_precision_name(precisions[pr]), threads,
                                         first, first + m, rows, n, k, first + i);
                    }
                }
                omp_set_num_threads(saved_threads);
                free(chain);
                gemm_unpack(&gw);
            }
        free(y);
        free_problem(&p);
    }
    use_backend("auto");
}

/* Called from inside a parallel region (each thread its own product), a
 * product runs on its calling thread and gives the same bits. */
static void test_inside_parallel_region(void **state)
{
    (void)state;
    rng_state r;
    rng_seed(&r, 13);
    problem p = make_problem(&r, 64, 200, 300, 7);
    float *y = malloc(sizeof(float) * (size_t)p.m * p.ldy);
    assert_non_null(y);
    for (int pr = 0; pr < N_PRECISIONS; pr++)
        for (int be = 0; be < N_BACKENDS; be++) {
            const backend_case *b = &backends[be];
            if (!b->engine || !gemm_backend_supported(b->name))
                continue;
            use_backend(b->name);
            float *chain;
            gemm_weights gw = packed_weights(&p, precisions[pr], b->dot, &chain);
            if (b->rounded) { /* the instruction: the rows computed by one call */
                const gemm_epilogue ep = {p.res, p.ld_res, 1};
                gemm_linear(&gw, p.m, p.x, p.ldx, chain, p.n, &ep);
            }
            memset(y, 0, sizeof(float) * (size_t)p.m * p.ldy);
#pragma omp parallel for num_threads(4) schedule(static, 1)
            for (int part = 0; part < 8; part++) { /* rows 8 part .. 8 part + 7 */
                const gemm_epilogue ep = {p.res + (size_t)part * 8 * p.ld_res, p.ld_res, 1};
                gemm_linear(&gw, 8, p.x + (size_t)part * 8 * p.ldx, p.ldx, y + (size_t)part * 8 * p.ldy, p.ldy,
                            &ep);
            }
            for (int i = 0; i < p.m; i++)
                if (memcmp(y + (size_t)i * p.ldy, chain + (size_t)i * p.n, sizeof(float) * p.n) != 0)
                    fail_msg("%s %s: row %d computed inside a parallel region differs", b->name,
                             gemm_precision_name(precisions[pr]), i);
            free(chain);
            gemm_unpack(&gw);
        }
    free(y);
    free_problem(&p);
    use_backend("auto");
}

/* Panel p holds W[p*32 + c, k] at [p][k][c], zeros past n_out. */
static void test_packed_layout(void **state)
{
    (void)state;
    const int n = 40, k = 3;
    float w[40 * 3];
    for (int j = 0; j < n; j++)
        for (int t = 0; t < k; t++)
            w[j * k + t] = (float)(100 * j + t);
    gemm_weights gw = {.n_out = n, .n_in = k, .w = w, .bias = NULL};
    rc_error err = {{0}};
    assert_int_equal(gemm_pack(&gw, &err), 0);
    assert_non_null(gw.packed);
    assert_int_equal((uintptr_t)gw.packed % 64, 0);
    float *first = gw.packed;
    assert_int_equal(gemm_pack(&gw, &err), 0); /* already packed: kept */
    assert_ptr_equal(gw.packed, first);
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < k; t++)
            for (int c = 0; c < GEMM_PANEL; c++) {
                const int j = p * GEMM_PANEL + c;
                const float want = j < n ? (float)(100 * j + t) : 0.0f;
                assert_true(gw.packed[((size_t)p * k + t) * GEMM_PANEL + c] == want);
            }
    /* once packed, the original may go: every backend (cblas through the
     * panels) computes from the packed copy. x = [1, 1, 1]: y[j] = 300 j + 3 */
    gw.w = NULL;
    const float x[3] = {1, 1, 1};
    for (int be = 0; be < N_BACKENDS; be++) {
        if (!gemm_backend_supported(backends[be].name))
            continue;
        use_backend(backends[be].name);
        float y[40];
        gemm_linear(&gw, 1, x, 3, y, 40, NULL);
        for (int j = 0; j < n; j++)
            if (y[j] != (float)(300 * j + 3))
                fail_msg("%s from panels only: y[%d] = %g, expected %d", backends[be].name, j, y[j], 300 * j + 3);
    }
    gemm_unpack(&gw);
    assert_null(gw.packed);
    gemm_unpack(&gw); /* harmless twice */
    gemm_weights nothing = {.n_out = 2, .n_in = 2, .w = NULL, .bias = NULL};
    assert_int_equal(gemm_pack(&nothing, &err), -1);
    assert_non_null(strstr(err.msg, "(2, 2)"));
    use_backend("auto");
}

static float float_of_bits(uint32_t bits)
{
    float x;
    memcpy(&x, &bits, sizeof x);
    return x;
}

static uint32_t bits_of_float(float x)
{
    uint32_t bits;
    memcpy(&bits, &x, sizeof bits);
    return bits;
}

/* Rounding to bfloat16 on cases worked out by hand: a bfloat16 is the top
 * half of a float, so rounding looks at the low half (0x8000 is exactly
 * half a bfloat16 ulp). */
static void test_bf16_rounding_cases(void **state)
{
    (void)state;
    static const struct { uint32_t in; uint16_t out; const char *why; } cases[] = {
        {0x00000000u, 0x0000, "+0"},
        {0x80000000u, 0x8000, "-0 keeps its sign"},
        {0x3F800000u, 0x3F80, "1.0 is exact"},
        {0x40490FDBu, 0x4049, "pi 3.14159274: low half 0x0FDB < 0x8000, down to 3.140625"},
        {0x3F807FFFu, 0x3F80, "just under half an ulp above 1: down"},
        {0x3F808000u, 0x3F80, "tie between 0x3F80 (even) and 0x3F81: down to even"},
        {0x3F808001u, 0x3F81, "just over half: up"},
        {0x3F818000u, 0x3F82, "tie between 0x3F81 (odd) and 0x3F82: up to even"},
        {0xBF808000u, 0xBF80, "negative tie: the magnitude rounds to even"},
        {0xBF818000u, 0xBF82, "negative tie: the magnitude rounds to even, away from 0 here"},
        {0x3FFF8000u, 0x4000, "tie at the top of [1, 2), 0x3FFF odd: carries into the exponent, 2.0"},
        {0x7F800000u, 0x7F80, "+Inf"},
        {0xFF800000u, 0xFF80, "-Inf"},
        {0x7F7F7FFFu, 0x7F7F, "under the midpoint above the largest finite bfloat16: stays finite"},
        {0x7F7F8000u, 0x7F80, "tie between the largest finite (0x7F7F, odd) and 2^128: Inf"},
        {0x7F7FFFFFu, 0x7F80, "FLT_MAX lies past that midpoint: Inf"},
        {0xFF7FFFFFu, 0xFF80, "-FLT_MAX: -Inf"},
        {0x7FC00000u, 0x7FC0, "quiet NaN"},
        {0xFFC00000u, 0xFFC0, "negative quiet NaN keeps its sign"},
        {0x7F800001u, 0x7FC0, "NaN whose payload is all in the dropped half: stays NaN (quiet), not Inf"},
        {0x7FA00000u, 0x7FE0, "signalling NaN: made quiet, payload's top bits kept"},
        {0xFFFFFFFFu, 0xFFFF, "all-ones NaN"},
        {0x00000001u, 0x0000, "smallest subnormal 2^-149, under half of the smallest bfloat16 2^-133: +0"},
        {0x00008000u, 0x0000, "subnormal tie between 0 (even) and 2^-133: 0"},
        {0x00008001u, 0x0001, "subnormal just over the tie: 2^-133"},
        {0x00010000u, 0x0001, "2^-133 is exact"},
        {0x00018000u, 0x0002, "subnormal tie between 0x0001 (odd) and 0x0002: up to even"},
        {0x80018000u, 0x8002, "negative subnormal tie"},
        {0x007FFFFFu, 0x0080, "largest subnormal rounds up to the smallest normal, 2^-126"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        const uint16_t got = gemm_bf16_round(float_of_bits(cases[i].in));
        if (got != cases[i].out)
            fail_msg("bf16 rounding of 0x%08X (%s) gave 0x%04X, expected 0x%04X", (unsigned)cases[i].in,
                     cases[i].why, (unsigned)got, (unsigned)cases[i].out);
    }
    /* widening is exact: the bits go to the top half */
    assert_true(gemm_bf16_to_float(0x3F80) == 1.0f);
    assert_true(gemm_bf16_to_float(0x4049) == 3.140625f);
    assert_true(gemm_bf16_to_float(0xC000) == -2.0f);
    assert_true(gemm_bf16_to_float(0x0001) == ldexpf(1.0f, -133));
    assert_true(gemm_bf16_to_float(0x7F80) == INFINITY);
    assert_true(gemm_bf16_to_float(0xFF80) == -INFINITY);
    assert_true(isnan(gemm_bf16_to_float(0x7FC0)));
    assert_int_equal(bits_of_float(gemm_bf16_to_float(0x8000)), 0x80000000u);
}

/* Round to nearest, ties to even, decided in double: the two bfloat16
 * around x (in magnitude: x's top half, and the next one up, which past the
 * largest finite value stands for 2^128 and rounds to Inf) and the exact
 * distances to them. Subtracting two floats this close is exact in double. */
static uint16_t bf16_nearest_in_double(uint32_t bits)
{
    const uint16_t down = (uint16_t)(bits >> 16), up = (uint16_t)(down + 1);
    const double x = float_of_bits(bits), below = gemm_bf16_to_float(down);
    const double above = (down & 0x7FFF) == 0x7F7F ? copysign(ldexp(1.0, 128), x) : gemm_bf16_to_float(up);
    const double to_below = fabs(x - below), to_above = fabs(above - x);
    if (to_below != to_above)
        return to_below < to_above ? down : up;
    return (down & 1) ? up : down;
}

/* Every top half with the low halves next to a tie, and a million random
 * floats, against the rounding decided in double. */
static void test_bf16_rounding_against_double(void **state)
{
    (void)state;
    static const uint32_t lows[] = {0x0000, 0x0001, 0x7FFF, 0x8000, 0x8001, 0xFFFF};
    rng_state r;
    rng_seed(&r, 14);
    long checked = 0;
    for (uint32_t i = 0; i < (1u << 16) * 6 + 1000000; i++) {
        const uint32_t bits = i < (1u << 16) * 6 ? (i / 6) << 16 | lows[i % 6] : (uint32_t)rng_next(&r);
        if ((bits & 0x7F800000u) == 0x7F800000u) /* Inf and NaN: the hand-computed cases */
            continue;
        const uint16_t got = gemm_bf16_round(float_of_bits(bits)), want = bf16_nearest_in_double(bits);
        if (got != want)
            fail_msg("bf16 rounding of 0x%08X gave 0x%04X, the nearest (ties to even) is 0x%04X", (unsigned)bits,
                     (unsigned)got, (unsigned)want);
        checked++;
    }
    printf("  %ld floats round as decided in double\n", checked);
}

/* bf16 panels: word c of panel p's row k holds W[p*32 + c, k] rounded in
 * its low half and W[p*32 + 16 + c, k] in its high half, zeros past n_out;
 * products read nothing else (the float weights may go); packing in the
 * other precision replaces the copy. */
static void test_bf16_packed_layout(void **state)
{
    (void)state;
    const int n = 40, k = 3;
    float w[40 * 3];
    for (int j = 0; j < n; j++)
        for (int t = 0; t < k; t++)
            w[j * k + t] = (float)(4 * j + t); /* integers below 256: exact in bfloat16 */
    w[5 * k + 1] = float_of_bits(0x3F818000u); /* a tie: packed as 0x3F82 = 1.015625 */
    gemm_weights gw = {.n_out = n, .n_in = k, .w = w, .precision = GEMM_BF16};
    rc_error err = {{0}};
    assert_int_equal(gemm_pack(&gw, &err), 0);
    assert_null(gw.packed);
    assert_non_null(gw.packed_bf16);
    assert_int_equal((uintptr_t)gw.packed_bf16 % 64, 0);
    for (int p = 0; p < 2; p++)
        for (int t = 0; t < k; t++)
            for (int c = 0; c < GEMM_PANEL / 2; c++) {
                uint32_t word;
                memcpy(&word, gw.packed_bf16 + ((size_t)p * k + t) * GEMM_PANEL + 2 * c, sizeof word);
                const int lo = p * GEMM_PANEL + c, hi = lo + GEMM_PANEL / 2;
                const uint32_t want = (uint32_t)(lo < n ? gemm_bf16_round(w[lo * k + t]) : 0) |
                                      (uint32_t)(hi < n ? gemm_bf16_round(w[hi * k + t]) : 0) << 16;
                if (word != want)
                    fail_msg("panel %d row %d word %d is 0x%08X, expected 0x%08X", p, t, c, (unsigned)word,
                             (unsigned)want);
            }
    uint32_t tie_word;
    memcpy(&tie_word, gw.packed_bf16 + 1 * GEMM_PANEL + 2 * 5, sizeof tie_word);
    assert_int_equal(tie_word & 0xFFFF, 0x3F82);
    /* from the panels alone, x = [1, 1, 1]: y[j] = 12 j + 3, but y[5] = 20 + 1.015625 + 22 */
    gw.w = NULL;
    const float x[3] = {1, 1, 1};
    for (int be = 0; be < N_BACKENDS; be++) {
        if (!gemm_backend_supported(backends[be].name))
            continue;
        use_backend(backends[be].name);
        float y[40];
        gemm_linear(&gw, 1, x, 3, y, 40, NULL);
        for (int j = 0; j < n; j++) {
            const float want = j == 5 ? 43.015625f : (float)(12 * j + 3);
            if (y[j] != want)
                fail_msg("%s from bf16 panels only: y[%d] = %g, expected %g", backends[be].name, j, y[j], want);
        }
    }
    use_backend("auto");
    /* no float values left: cannot pack in fp32 */
    gw.precision = GEMM_FP32;
    assert_int_equal(gemm_pack(&gw, &err), -1);
    assert_non_null(gw.packed_bf16);
    /* with them, the fp32 copy replaces the bf16 one */
    gw.w = w;
    assert_int_equal(gemm_pack(&gw, &err), 0);
    assert_non_null(gw.packed);
    assert_null(gw.packed_bf16);
    assert_true(gw.packed[1 * GEMM_PANEL + 5] == float_of_bits(0x3F818000u));
    gemm_unpack(&gw);
    gw.precision = (gemm_precision)7;
    assert_int_equal(gemm_pack(&gw, &err), -1);
    assert_non_null(strstr(err.msg, "precision 7"));
    assert_null(gw.packed);
    assert_null(gw.packed_bf16);
}

/* Packed while a dot-product backend is in use, bf16 panels hold pairs of
 * k: word c of panel p's pair row q is W[p*32 + c, 2q] (low half) and
 * W[p*32 + c, 2q + 1] (high half), zeros past n_in and n_out. Products on
 * a backend reading the other layout repack from these panels (the float
 * weights gone), and gemm_pack with such a backend converts them for good
 * into the very panels packing the floats gives. */
static void test_bf16_pair_layout(void **state)
{
    (void)state;
    if (!gemm_backend_supported("avx512bf16-emulated")) {
        printf("  SKIP: the dot-product backends need AVX-512F\n");
        return;
    }
    const int n = 40, k = 5;
    float w[40 * 5];
    for (int j = 0; j < n; j++)
        for (int t = 0; t < k; t++)
            w[j * k + t] = (float)(2 * j + 3 * t); /* integers below 256: exact in bfloat16 */
    use_backend("avx512bf16-emulated");
    gemm_weights gw = {.n_out = n, .n_in = k, .w = w, .precision = GEMM_BF16};
    rc_error err = {{0}};
    assert_int_equal(gemm_pack(&gw, &err), 0);
    assert_int_equal(gw.bf16_pairs, 1);
    assert_int_equal((uintptr_t)gw.packed_bf16 % 64, 0);
    const int pair_rows = (k + 1) / 2;
    for (int p = 0; p < 2; p++)
        for (int q = 0; q < pair_rows; q++)
            for (int c = 0; c < GEMM_PANEL; c++) {
                uint32_t word;
                memcpy(&word, gw.packed_bf16 + (((size_t)p * pair_rows + q) * GEMM_PANEL + c) * 2, sizeof word);
                const int j = p * GEMM_PANEL + c, t = 2 * q;
                const uint32_t want = (uint32_t)(j < n ? gemm_bf16_round(w[j * k + t]) : 0) |
                                      (uint32_t)(j < n && t + 1 < k ? gemm_bf16_round(w[j * k + t + 1]) : 0) << 16;
                if (word != want)
                    fail_msg("panel %d pair row %d word %d is 0x%08X, expected 0x%08X", p, q, c, (unsigned)word,
                             (unsigned)want);
            }
    /* from the panels alone, x = [1, 2, 3, 4, 5]: y[j] = 15 * 2j + 3 * 40 = 30 j + 120 on every backend */
    gw.w = NULL;
    const float x[5] = {1, 2, 3, 4, 5};
    for (int be = 0; be < N_BACKENDS; be++) {
        if (!gemm_backend_supported(backends[be].name))
            continue;
        use_backend(backends[be].name);
        float y[40];
        gemm_linear(&gw, 1, x, 5, y, 40, NULL);
        for (int j = 0; j < n; j++)
            if (y[j] != (float)(30 * j + 120))
                fail_msg("%s from pair panels only: y[%d] = %g, expected %d", backends[be].name, j, y[j],
                         30 * j + 120);
    }
    /* repacked for good for avx512: the same bits as packing the floats */
    use_backend("avx512");
    assert_int_equal(gemm_pack(&gw, &err), 0);
    assert_int_equal(gw.bf16_pairs, 0);
    gemm_weights fresh = {.n_out = n, .n_in = k, .w = w, .precision = GEMM_BF16};
    assert_int_equal(gemm_pack(&fresh, &err), 0);
    assert_memory_equal(gw.packed_bf16, fresh.packed_bf16, sizeof(uint16_t) * 2 * k * GEMM_PANEL);
    /* and back to pairs */
    use_backend("avx512bf16-emulated");
    assert_int_equal(gemm_pack(&gw, &err), 0);
    assert_int_equal(gw.bf16_pairs, 1);
    gemm_unpack(&fresh);
    fresh.w = w;
    assert_int_equal(gemm_pack(&fresh, &err), 0);
    assert_memory_equal(gw.packed_bf16, fresh.packed_bf16, sizeof(uint16_t) * 2 * pair_rows * 2 * GEMM_PANEL);
    gemm_unpack(&gw);
    gemm_unpack(&fresh);
    assert_int_equal(gw.bf16_pairs, 0);
    use_backend("auto");
}

/* The dot kernels' rounding of x is gemm_bf16_round bit for bit: Inf, NaN
 * (quietened), subnormals, ties, the largest finite values, at every
 * length and alignment (masked tails; nothing written past n). */
static void test_dot_rounding_of_x(void **state)
{
    (void)state;
    if (!gemm_backend_supported("avx512")) {
        printf("  SKIP: the dot-product kernels need AVX-512F\n");
        return;
    }
    static const uint32_t special[] = {0x7F800000u, 0xFF800000u, 0x7F800001u, 0xFFC12345u, 0x7FBFFFFFu,
                                       0x00000001u, 0x80008000u, 0x00018000u, 0x3F818000u, 0x3F808000u,
                                       0x7F7FFFFFu, 0x7F7F8000u, 0xFF7F7FFFu, 0x00000000u, 0x80000000u};
    enum { N = 67 };
    uint32_t bits[N];
    rng_state r;
    rng_seed(&r, 15);
    long checked = 0;
    for (int round = 0; round < 2000; round++) {
        for (int i = 0; i < N; i++)
            bits[i] = i < (int)(sizeof special / sizeof *special) && round % 2 == 0 ? special[(i + round) % 15]
                                                                                  : (uint32_t)rng_next(&r);
        float x[N];
        memcpy(x, bits, sizeof x);
        const int start = round % 5, n = round % (N - start + 1);
        uint16_t out[N + 1];
        for (int i = 0; i <= N; i++)
            out[i] = 0xABCD;
        gemm_avx512_to_bf16(x + start, n, out);
        for (int i = 0; i < n; i++)
            if (out[i] != gemm_bf16_round(x[start + i]))
                fail_msg("x = 0x%08X rounded to 0x%04X, gemm_bf16_round gives 0x%04X", (unsigned)bits[start + i],
                         (unsigned)out[i], (unsigned)gemm_bf16_round(x[start + i]));
        for (int i = n; i <= N; i++)
            assert_int_equal(out[i], 0xABCD);
        checked += n;
    }
    printf("  %ld values\n", checked);
}

static void test_precision_names(void **state)
{
    (void)state;
    gemm_precision p = GEMM_BF16;
    rc_error err = {{0}};
    assert_int_equal(gemm_precision_parse("fp32", &p, &err), 0);
    assert_int_equal(p, GEMM_FP32);
    assert_int_equal(gemm_precision_parse("bf16", &p, &err), 0);
    assert_int_equal(p, GEMM_BF16);
    static const char *const bad[] = {"fp16", "BF16", "", "bf16 ", "float32"};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        p = GEMM_BF16;
        assert_int_equal(gemm_precision_parse(bad[i], &p, &err), -1);
        assert_int_equal(p, GEMM_BF16); /* untouched */
        char quoted[32];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        assert_non_null(strstr(err.msg, quoted));
        assert_non_null(strstr(err.msg, "fp32 or bf16"));
    }
    assert_string_equal(gemm_precision_name(GEMM_FP32), "fp32");
    assert_string_equal(gemm_precision_name(GEMM_BF16), "bf16");
    assert_string_equal(gemm_precision_name((gemm_precision)9), "?");
}

static void test_backend_selection(void **state)
{
    (void)state;
    rc_error err = {{0}};
    assert_int_equal(gemm_set_backend("sse9", &err), -1);
    assert_non_null(strstr(err.msg, "'sse9'"));
    assert_false(gemm_backend_supported("sse9"));
    assert_true(gemm_backend_supported("portable"));
    assert_true(gemm_backend_supported("cblas"));
    assert_true(gemm_backend_supported("auto"));
    /* auto is the widest vector unit this CPU has */
    assert_int_equal(gemm_set_backend("auto", &err), 0);
    const char *want = gemm_backend_supported("avx512") ? "avx512"
                       : gemm_backend_supported("avx2") ? "avx2"
                                                        : "portable";
    assert_string_equal(gemm_backend_name(), want);
    /* the dot-product backends only when asked for (they change bf16 results) */
    assert_int_equal(gemm_backend_supported("avx512bf16-emulated"), gemm_backend_supported("avx512"));
    if (!__builtin_cpu_supports("avx512bf16")) {
        assert_false(gemm_backend_supported("avx512bf16"));
        assert_int_equal(gemm_set_backend("avx512bf16", &err), -1);
        assert_non_null(strstr(err.msg, "lacks"));
    }
    if (!gemm_backend_supported("avx512")) {
        assert_int_equal(gemm_set_backend("avx512", &err), -1);
        assert_non_null(strstr(err.msg, "lacks"));
    }
}

/* Without gemm_set_backend, $RADCAP_GEMM decides at first use, and a value
 * that names nothing usable falls back to auto. The choice is made once per
 * process, so each case runs in a child forked before this program's first
 * product (this test runs first). */
static int child_backend_is(const char *env_value, const char *expected)
{
    pid_t pid = fork();
    if (pid == 0) {
        setenv("RADCAP_GEMM", env_value, 1);
        _exit(strcmp(gemm_backend_name(), expected) == 0 ? 0 : 1);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    return WIFEXITED(status) && WEXITSTATUS(status) == 0;
}

static void test_environment_choice(void **state)
{
    (void)state;
    const char *fastest = gemm_backend_supported("avx512") ? "avx512"
                          : gemm_backend_supported("avx2") ? "avx2"
                                                           : "portable";
    assert_true(child_backend_is("portable", "portable"));
    assert_true(child_backend_is("cblas", "cblas"));
    assert_true(child_backend_is("no-such-backend", fastest));
}

int main(void)
{
    gemm_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_environment_choice), /* first: before this process picks a backend */
        cmocka_unit_test(test_backend_selection),  cmocka_unit_test(test_packed_layout),
        cmocka_unit_test(test_empty_products),     cmocka_unit_test(test_empty_k),
        cmocka_unit_test(test_residual_is_x),      cmocka_unit_test(test_conv_is_the_patch_product),      cmocka_unit_test(test_backends_on_odd_shapes),
        cmocka_unit_test(test_determinism),        cmocka_unit_test(test_inside_parallel_region),
        cmocka_unit_test(test_bf16_rounding_cases), cmocka_unit_test(test_bf16_rounding_against_double),
        cmocka_unit_test(test_bf16_packed_layout), cmocka_unit_test(test_bf16_pair_layout),
        cmocka_unit_test(test_dot_rounding_of_x),  cmocka_unit_test(test_precision_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
