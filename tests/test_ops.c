/* Unit tests of the engine's kernels (gemm.h, ops.h) against naive
 * reference implementations written here from the definitions, in double
 * precision, on odd shapes. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/gemm.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/helpers/testutil.h"

static float *random_floats(rng_state *r, size_t n, double scale)
{
    float *x = malloc(sizeof(float) * (n ? n : 1));
    for (size_t i = 0; i < n; i++)
        x[i] = (float)(scale * rng_normal(r));
    return x;
}

static void expect_close(const float *ours, const double *ref, size_t n, double tol)
{
    for (size_t i = 0; i < n; i++)
        if (!(fabs(ours[i] - ref[i]) <= tol * (1.0 + fabs(ref[i]))))
            fail_msg("element %zu: %.9g, expected %.9g", i, ours[i], ref[i]);
}

/* y = x W^T + b (+ residual) (ReLU) for many shapes, including 1, 7, 33,
 * 1000 and sizes that straddle the backend's tiles; strided x and y. */
static void test_gemm_shapes(void **state)
{
    (void)state;
    static const int sizes[] = {1, 7, 33, 257, 1000};
    rng_state r;
    rng_seed(&r, 1);
    for (size_t a = 0; a < 5; a++)
        for (size_t b = 0; b < 5; b++)
            for (size_t c = 0; c < 5; c++) {
                const int m = sizes[a], n = sizes[b], k = sizes[c];
                if ((size_t)m * n * k > 40000000)
                    continue;
                const int ldx = k + 3, ldy = n + 5;
                float *x = random_floats(&r, (size_t)m * ldx, 1.0), *w = random_floats(&r, (size_t)n * k, 1.0);
                float *bias = random_floats(&r, n, 1.0), *res = random_floats(&r, (size_t)m * n, 1.0);
                float *y = malloc(sizeof(float) * m * ldy);
                double *ref = malloc(sizeof(double) * m * n);
                const int relu = (a + b + c) % 2;
                for (int i = 0; i < m; i++)
                    for (int j = 0; j < n; j++) {
                        double s = bias[j];
                        for (int t = 0; t < k; t++)
                            s += (double)x[i * ldx + t] * w[j * k + t];
                        s += res[i * n + j];
                        ref[i * n + j] = relu && s < 0 ? 0 : s;
                    }
                const gemm_weights gw = {.n_out = n, .n_in = k, .w = w, .bias = bias};
                const gemm_epilogue ep = {res, n, relu};
                gemm_linear(&gw, m, x, ldx, y, ldy, &ep);
                for (int i = 0; i < m; i++)
                    expect_close(y + (size_t)i * ldy, ref + (size_t)i * n, n, 1e-4 * sqrt(k));
                free(x), free(w), free(bias), free(res), free(y), free(ref);
            }
}

/* No bias, no epilogue. */
static void test_gemm_plain(void **state)
{
    (void)state;
    const float x[2 * 3] = {1, 2, 3, 4, 5, 6}, w[2 * 3] = {1, 0, -1, 0.5f, 0.5f, 0.5f};
    float y[4];
    const gemm_weights gw = {.n_out = 2, .n_in = 3, .w = w, .bias = NULL};
    gemm_linear(&gw, 2, x, 3, y, 2, NULL);
    /* row 0: 1-3 = -2, (1+2+3)/2 = 3; row 1: 4-6 = -2, 15/2 = 7.5 */
    const double want[4] = {-2, 3, -2, 7.5};
    expect_close(y, want, 4, 0);
}

/* Convolution as the encoder runs it (ops_pad, then gemm_conv2d on the
 * padded image) against a direct 7-loop convolution. */
static void test_padded_conv(void **state)
{
    (void)state;
    struct { int h, w, c_in, c_out, kernel, stride, pad; } cases[] = {
        {9, 7, 3, 5, 7, 2, 3}, {8, 8, 4, 6, 3, 1, 1}, {7, 9, 5, 3, 3, 2, 1}, {5, 5, 2, 4, 1, 2, 0}, {1, 1, 3, 2, 3, 1, 1},
    };
    rng_state r;
    rng_seed(&r, 2);
    for (size_t ci = 0; ci < sizeof cases / sizeof cases[0]; ci++) {
        const int h = cases[ci].h, w = cases[ci].w, cin = cases[ci].c_in, cout = cases[ci].c_out;
        const int k = cases[ci].kernel, s = cases[ci].stride, p = cases[ci].pad;
        const int oh = ops_conv_out(h, k, s, p), ow = ops_conv_out(w, k, s, p);
        float *x = random_floats(&r, (size_t)h * w * cin, 1.0);       /* (h, w, c_in) */
        float *wt = random_floats(&r, (size_t)cout * k * k * cin, 1.0); /* (c_out, k, k, c_in) */
        float *bias = random_floats(&r, cout, 1.0);
        const int hp = h + 2 * p, wp = w + 2 * p;
        float *padded = malloc(sizeof(float) * hp * wp * cin), *y = malloc(sizeof(float) * oh * ow * cout);
        memset(padded, 0x7f, sizeof(float) * hp * wp * cin); /* every element written, border included */
        double *ref = malloc(sizeof(double) * oh * ow * cout);
        for (int oy = 0; oy < oh; oy++)
            for (int ox = 0; ox < ow; ox++)
                for (int o = 0; o < cout; o++) {
                    double acc = bias[o];
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++)
                            for (int i = 0; i < cin; i++) {
                                int iy = oy * s - p + ky, ix = ox * s - p + kx;
                                if (iy >= 0 && iy < h && ix >= 0 && ix < w)
                                    acc += (double)x[(iy * w + ix) * cin + i] * wt[((o * k + ky) * k + kx) * cin + i];
                            }
                    ref[(oy * ow + ox) * cout + o] = acc;
                }
        ops_pad(x, h, w, cin, p, padded);
        for (int py = 0; py < hp; py++)
            for (int px = 0; px < wp; px++)
                for (int i = 0; i < cin; i++) {
                    const int iy = py - p, ix = px - p, inside = iy >= 0 && iy < h && ix >= 0 && ix < w;
                    assert_true(padded[(py * wp + px) * cin + i] == (inside ? x[(iy * w + ix) * cin + i] : 0.0f));
                }
        const gemm_weights gw = {.n_out = cout, .n_in = k * k * cin, .w = wt, .bias = bias};
        const gemm_conv conv = {.x = padded, .batch = 1, .h = hp, .w = wp, .c_in = cin, .kernel = k, .stride = s};
        assert_int_equal(ops_conv_out(hp, k, s, 0), oh);
        assert_int_equal(ops_conv_out(wp, k, s, 0), ow);
        gemm_conv2d(&gw, &conv, y, cout, NULL);
        expect_close(y, ref, (size_t)oh * ow * cout, 1e-5);
        free(x), free(wt), free(bias), free(padded), free(y), free(ref);
    }
}

static void test_maxpool(void **state)
{
    (void)state;
    /* one channel 3x3 image, window 3 stride 2 pad 1 -> 2x2:
     *  1 9 2      out(0,0) = max(1,9,4,-5) = 9   out(0,1) = max(9,2,-5,3) = 9
     *  4 -5 3     out(1,0) = max(4,-5,-7,-8) = 4 out(1,1) = max(-5,3,-8,-6) = 3
     * -7 -8 -6    (padding never wins, even against negatives) */
    const float x[9] = {1, 9, 2, 4, -5, 3, -7, -8, -6};
    float y[4];
    ops_maxpool(x, 3, 3, 1, 3, 2, 1, y);
    const double want[4] = {9, 9, 4, 3};
    expect_close(y, want, 4, 0);
    /* all-negative corner: top-left window of a 2-channel image */
    const float x2[2 * 2 * 2] = {-3, -1, -2, -4, -5, -6, -7, -8};
    float y2[2];
    ops_maxpool(x2, 2, 2, 2, 3, 2, 1, y2); /* 1x1 output covering all 4 pixels */
    const double want2[2] = {-2, -1};
    expect_close(y2, want2, 2, 0);
}

/* Against the definition in double: a few rows in place, and enough rows
 * to be shared among threads, out of place (then the same bits in place). */
static void test_layernorm(void **state)
{
    (void)state;
    rng_state r;
    rng_seed(&r, 3);
    static const int cases[][2] = {{5, 37}, {600, 64}}; /* rows, dim */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int n = cases[c][0], dim = cases[c][1];
        float *x = random_floats(&r, (size_t)n * dim, 3.0), *g = random_floats(&r, dim, 1.0);
        float *b = random_floats(&r, dim, 1.0), *y = malloc(sizeof(float) * n * dim);
        double *ref = malloc(sizeof(double) * n * dim);
        assert_true(y && ref);
        for (int i = 0; i < n; i++) {
            double mean = 0, var = 0;
            for (int d = 0; d < dim; d++)
                mean += x[i * dim + d] / (double)dim;
            for (int d = 0; d < dim; d++)
                var += (x[i * dim + d] - mean) * (x[i * dim + d] - mean) / dim;
            for (int d = 0; d < dim; d++)
                ref[i * dim + d] = (x[i * dim + d] - mean) / sqrt(var + 1e-5) * g[d] + b[d];
        }
        if (c == 0) {
            ops_layernorm(x, x, n, dim, g, b, 1e-5f);
            expect_close(x, ref, (size_t)n * dim, 1e-5);
        } else {
            ops_layernorm(x, y, n, dim, g, b, 1e-5f);
            expect_close(y, ref, (size_t)n * dim, 1e-5);
            ops_layernorm(x, x, n, dim, g, b, 1e-5f);
            assert_memory_equal(x, y, sizeof(float) * n * dim);
        }
        free(x), free(g), free(b), free(y), free(ref);
    }
}

/* torch.roll(x, shifts=s, dims=1)[t] = x[(t - s) mod L]; the graph layer
 * averages the rolls for s = -1, 0, 1, so row t sees rows t+1, t, t-1. */
static void test_roll_mean(void **state)
{
    (void)state;
    const float x[4 * 2] = {1, 10, 2, 20, 3, 30, 4, 40};
    float y[8];
    ops_roll_mean(x, 4, 2, 1, y);
    /* row 0: (x1 + x0 + x3)/3 = (2+1+4)/3, (20+10+40)/3; row 3: (x0 + x3 + x2)/3 */
    const double want[8] = {7 / 3.0, 70 / 3.0, 2, 20, 3, 30, 8 / 3.0, 80 / 3.0};
    expect_close(y, want, 8, 1e-6);
    /* a single token: every roll is itself */
    float y1[2];
    ops_roll_mean(x, 1, 2, 1, y1);
    const double want1[2] = {1, 10};
    expect_close(y1, want1, 2, 1e-6);
}

/* Against the definition in double. Head sizes below and above the kernel's
 * 16-float blocks (5; 40 = two blocks and a tail of 8), keys in padded rows. */
static void test_attention(void **state)
{
    (void)state;
    rng_state r;
    rng_seed(&r, 4);
    static const int cases[][3] = {{3, 5, 11}, {2, 40, 9}, {8, 64, 49}}; /* heads, head_dim, keys */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int heads = cases[c][0], hd = cases[c][1], n_keys = cases[c][2];
        const int dim = heads * hd, ld = 2 * dim + 1;
        float *q = random_floats(&r, dim, 1.0), *kv = random_floats(&r, (size_t)n_keys * ld, 1.0);
        float *out = malloc(sizeof(float) * dim), *scores = malloc(sizeof(float) * heads * n_keys);
        double *ref = malloc(sizeof(double) * dim), *s = malloc(sizeof(double) * n_keys);
        for (int h = 0; h < heads; h++) {
            double mx = -INFINITY, total = 0;
            for (int t = 0; t < n_keys; t++) {
                s[t] = 0;
                for (int i = 0; i < hd; i++)
                    s[t] += (double)q[h * hd + i] * kv[t * ld + h * hd + i];
                s[t] /= sqrt(hd);
                mx = s[t] > mx ? s[t] : mx;
            }
            for (int t = 0; t < n_keys; t++)
                total += exp(s[t] - mx);
            for (int i = 0; i < hd; i++) {
                double acc = 0;
                for (int t = 0; t < n_keys; t++)
                    acc += exp(s[t] - mx) / total * kv[t * ld + dim + h * hd + i];
                ref[h * hd + i] = acc;
            }
        }
        ops_attention(q, kv, n_keys, ld, dim, heads, hd, out, scores);
        expect_close(out, ref, dim, 1e-5);
        free(q), free(kv), free(out), free(scores), free(ref), free(s);
    }
}

/* The vector paths (AVX-512 scores and values, AVX2 softmax, where the CPU
 * has them) give the very bits of the plain C definition: heads in and out
 * of step with the 16-pair chunks (8, 12, 3, 16), head sizes of one and
 * four 16-float blocks and one that is not a multiple of 16 (plain C
 * everywhere), key counts around the softmax's 8 lanes (1, 7, 17, 49, 80),
 * keys read in order and through rows (beam search's indirection). */
static void test_attention_vector_is_plain(void **state)
{
    (void)state;
    rng_state r;
    rng_seed(&r, 5);
    static const int cases[][3] = {{8, 64, 49}, {8, 64, 1}, {12, 16, 7},
                                   {3, 32, 17}, {16, 32, 80}, {2, 40, 9}}; /* heads, head_dim, keys */
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        const int heads = cases[c][0], hd = cases[c][1], n_keys = cases[c][2];
        const int dim = heads * hd, ld = 2 * dim + 3;
        float *q = random_floats(&r, dim, 1.0), *kv = random_floats(&r, (size_t)(n_keys + 5) * ld, 3.0);
        float *vector = malloc(sizeof(float) * dim), *plain = malloc(sizeof(float) * dim);
        float *scores = malloc(sizeof(float) * heads * n_keys);
        int *rows = malloc(sizeof(int) * n_keys);
        assert_true(vector && plain && scores && rows);
        for (int t = 0; t < n_keys; t++)
            rows[t] = (t * 7 + 3) % (n_keys + 5);
        for (int indirect = 0; indirect < 2; indirect++) {
            const int *order = indirect ? rows : NULL;
            if (order)
                ops_attention_rows(q, kv, order, n_keys, ld, dim, heads, hd, vector, scores);
            else
                ops_attention(q, kv, n_keys, ld, dim, heads, hd, vector, scores);
            ops_attention_plain(q, kv, order, n_keys, ld, dim, heads, hd, plain, scores);
            for (int i = 0; i < dim; i++)
                if (memcmp(&vector[i], &plain[i], sizeof(float)) != 0)
                    fail_msg("%d heads of %d, %d keys%s: out[%d] = %.9g, plain C gives %.9g", heads, hd, n_keys,
                             indirect ? " (rows)" : "", i, vector[i], plain[i]);
        }
        free(q), free(kv), free(vector), free(plain), free(scores), free(rows);
    }
}

static void test_argmax_and_clamp(void **state)
{
    (void)state;
    const float x[6] = {0.5f, 3.0f, -1.0f, 3.0f, 2.0f, 3.0f};
    assert_int_equal(ops_argmax(x, 6), 1); /* first of the tied maxima, as torch.argmax */
    assert_int_equal(ops_argmax(x, 1), 0);
    /* long rows (the lanes' path) against the definition: the first index
     * whose value is strictly larger than every earlier one's, NaN never */
    rng_state r;
    rng_seed(&r, 6);
    float *row = random_floats(&r, 1000, 1.0);
    for (int trial = 0; trial < 6; trial++) {
        const int n = trial == 0 ? 1000 : 17 + 97 * trial;
        if (trial == 2)
            row[5] = row[700] = 9.0f; /* a tie across lanes */
        if (trial == 3)
            row[3] = NAN, row[40] = 50.0f, row[41] = NAN; /* NaN never wins */
        if (trial == 4)
            row[0] = NAN; /* ...nor loses when first */
        int best = 0;
        for (int i = 1; i < n; i++)
            if (row[i] > row[best])
                best = i;
        assert_int_equal(ops_argmax(row, n), best);
    }
    free(row);
    float c[5] = {-2.5f, -1.0f, 0.25f, 1.0f, 7.0f};
    ops_clamp(c, 5, -1.0f, 1.0f);
    const double want[5] = {-1, -1, 0.25, 1, 1};
    expect_close(c, want, 5, 0);
    const float l[3] = {1000.0f, 1000.0f, -INFINITY};
    assert_true(fabs(ops_logsumexp(l, 3) - (1000.0 + log(2.0))) < 1e-3);
}

int main(void)
{
    gemm_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_gemm_shapes), cmocka_unit_test(test_gemm_plain),
        cmocka_unit_test(test_padded_conv), cmocka_unit_test(test_maxpool),
        cmocka_unit_test(test_layernorm),   cmocka_unit_test(test_roll_mean),
        cmocka_unit_test(test_attention),   cmocka_unit_test(test_attention_vector_is_plain),
        cmocka_unit_test(test_argmax_and_clamp),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
