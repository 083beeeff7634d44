/* Parity of the C engine with the PyTorch reference (tests/reference/).
 *
 * A fixture directory holds a model (torch.save state dict), its
 * configuration and reference.safetensors, recorded by make_fixtures.py with
 * PyTorch: the inputs, the ResNet output, vis_proj and graph outputs, the
 * logits at several greedy steps and the greedy token ids. Every activation
 * and logit must be within 1e-4 x the tensor's max |value|, and the token
 * sequences identical. The tiny fixture is committed; the full card-sized
 * one is generated into the build directory when torch is available.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/encoder.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "tests/helpers/testutil.h"

#define TOLERANCE 1e-4

typedef struct fixture {
    cfg_model cfg;
    captioner model;
    ckpt_file ref;
    int n_images;
} fixture;

static const ckpt_tensor *ref_tensor(const fixture *fx, const char *name, ckpt_dtype dtype)
{
    const ckpt_tensor *t = ckpt_find(&fx->ref, name);
    if (!t)
        fail_msg("reference.safetensors has no tensor '%s'", name);
    assert_int_equal(t->dtype, dtype);
    return t;
}

static void load_fixture(fixture *fx, const char *dir)
{
    char path[4096];
    rc_error err = {{0}};
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (cfg_load(&fx->cfg, path, &err) < 0)
        fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/model.bin", dir);
    if (model_load(&fx->model, &fx->cfg, path, &err) < 0)
        fail_msg("%s", err.msg);
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    if (ckpt_open(&fx->ref, path, &err) < 0)
        fail_msg("%s", err.msg);
    fx->n_images = (int)ref_tensor(fx, "input", CKPT_F32)->shape[0];
}

static void free_fixture(fixture *fx)
{
    model_free(&fx->model);
    ckpt_close(&fx->ref);
}

/* Asserts |ours - ref| <= TOLERANCE * max|ref| over n elements. */
static void expect_close(const char *what, const float *ours, const float *ref, size_t n)
{
    double diff, max_ref;
    tu_max_diff(ours, ref, n, &diff, &max_ref);
    printf("  %-12s max |diff| %.3g, max |ref| %.3g, ratio %.3g\n", what, diff, max_ref,
           max_ref > 0 ? diff / max_ref : diff);
    if (!(diff <= TOLERANCE * max_ref))
        fail_msg("%s differs from PyTorch: max |diff| %g > %g x %g", what, diff, TOLERANCE, max_ref);
}

/* Records the logits of the steps listed in the fixture. */
typedef struct logit_recorder {
    const int64_t *steps; /* (n_steps) */
    int n_steps;
    float *logits;        /* (n_images, n_steps, vocab) NaN where never recorded */
} logit_recorder;

static void record_logits(void *ctx, int image, int step, const float *logits, int vocab)
{
    logit_recorder *rec = ctx;
    for (int k = 0; k < rec->n_steps; k++)
        if (rec->steps[k] == step)
            memcpy(rec->logits + ((size_t)image * rec->n_steps + k) * vocab, logits, sizeof(float) * vocab);
}

static void run_parity(const char *dir)
{
    fixture fx;
    load_fixture(&fx, dir);
    const cfg_model *c = &fx.cfg;
    const int n = fx.n_images, L = cfg_memory_tokens(c), dim = c->embed_dim, V = c->vocab_size;
    const int C = c->hidden_sizes[c->n_stages - 1], side = cfg_feature_side(c);
    printf("fixture %s: %d images, %d memory tokens\n", dir, n, L);
    assert_true(n >= 20);

    float *features = malloc(sizeof(float) * n * L * C);
    float *vis = malloc(sizeof(float) * n * L * dim), *memory = malloc(sizeof(float) * n * L * dim);
    rc_error err = {{0}};
    const enc_outputs out = {features, vis, memory};
    if (enc_forward(&fx.model, n, ref_tensor(&fx, "input", CKPT_F32)->data, &out, &err) < 0)
        fail_msg("%s", err.msg);

    /* The reference records the ResNet output channel-major (N, C, h, w). */
    const ckpt_tensor *enc_ref = ref_tensor(&fx, "encoder_out", CKPT_F32);
    assert_int_equal(enc_ref->shape[1], C);
    assert_int_equal(enc_ref->shape[2], side);
    float *features_nchw = malloc(sizeof(float) * n * L * C);
    for (int b = 0; b < n; b++)
        for (int t = 0; t < L; t++)
            for (int ch = 0; ch < C; ch++)
                features_nchw[((size_t)b * C + ch) * L + t] = features[((size_t)b * L + t) * C + ch];
    expect_close("encoder_out", features_nchw, enc_ref->data, (size_t)n * L * C);
    expect_close("vis_tokens", vis, ref_tensor(&fx, "vis_tokens", CKPT_F32)->data, (size_t)n * L * dim);
    expect_close("memory", memory, ref_tensor(&fx, "memory", CKPT_F32)->data, (size_t)n * L * dim);

    const ckpt_tensor *steps = ref_tensor(&fx, "logit_steps", CKPT_I64);
    const ckpt_tensor *logits_ref = ref_tensor(&fx, "logits", CKPT_F32);
    const int K = (int)steps->numel;
    assert_int_equal(logits_ref->numel, (int64_t)n * K * V);
    logit_recorder rec = {steps->data, K, malloc(sizeof(float) * n * K * V)};
    for (size_t i = 0; i < (size_t)n * K * V; i++)
        rec.logits[i] = NAN;
    const int max_len = c->max_len;
    int *ids = malloc(sizeof(int) * n * max_len), *lens = malloc(sizeof(int) * n);
    const gen_options opts = {.max_len = max_len, .on_logits = record_logits, .ctx = &rec};
    if (gen_greedy(&fx.model, n, memory, &opts, ids, lens, &err) < 0)
        fail_msg("%s", err.msg);

    /* Compare recorded steps image by image: both sides must agree on which
     * steps exist (NaN where the caption had ended). */
    const float *lref = logits_ref->data;
    double worst = 0.0;
    for (int b = 0; b < n; b++)
        for (int k = 0; k < K; k++) {
            const float *ours = rec.logits + ((size_t)b * K + k) * V, *theirs = lref + ((size_t)b * K + k) * V;
            if (isnan(theirs[0]) || isnan(ours[0])) {
                if (isnan(theirs[0]) != isnan(ours[0]))
                    fail_msg("image %d step %lld: recorded on one side only", b,
                             (long long)((const int64_t *)steps->data)[k]);
                continue;
            }
            double diff, max_ref;
            tu_max_diff(ours, theirs, V, &diff, &max_ref);
            if (!(diff <= TOLERANCE * max_ref))
                fail_msg("logits of image %d step %lld: max |diff| %g > %g x %g", b,
                         (long long)((const int64_t *)steps->data)[k], diff, TOLERANCE, max_ref);
            worst = diff / max_ref > worst ? diff / max_ref : worst;
        }
    printf("  %-12s worst ratio %.3g over %d images x %d steps\n", "logits", worst, n, K);

    const int64_t *ids_ref = ref_tensor(&fx, "greedy_ids", CKPT_I64)->data;
    const int64_t *lens_ref = ref_tensor(&fx, "greedy_len", CKPT_I64)->data;
    int distinct = 0;
    for (int b = 0; b < n; b++) {
        if (lens[b] != lens_ref[b])
            fail_msg("image %d: %d tokens, PyTorch %lld", b, lens[b], (long long)lens_ref[b]);
        for (int t = 0; t < lens[b]; t++)
            if (ids[b * max_len + t] != ids_ref[b * max_len + t])
                fail_msg("image %d token %d: %d, PyTorch %lld", b, t, ids[b * max_len + t],
                         (long long)ids_ref[b * max_len + t]);
        int seen = 0;
        for (int a = 0; a < b && !seen; a++)
            seen = lens[a] == lens[b] && memcmp(ids + a * max_len, ids + b * max_len, sizeof(int) * lens[b]) == 0;
        distinct += !seen;
    }
    printf("  %-12s identical for %d images (%d distinct captions)\n", "greedy ids", n, distinct);
    /* A fixture where every image gets the same caption would prove little. */
    assert_true(distinct >= n / 2);

    /* The same captions when each image is decoded alone (batching must not
     * change results). */
    int one_ids[1024], one_len;
    assert_true(max_len <= 1024);
    for (int b = 0; b < n; b++) {
        if (gen_greedy(&fx.model, 1, memory + (size_t)b * L * dim, NULL, one_ids, &one_len, &err) < 0)
            fail_msg("%s", err.msg);
        assert_int_equal(one_len, lens[b]);
        assert_memory_equal(one_ids, ids + b * max_len, sizeof(int) * one_len);
    }

    free(features), free(features_nchw), free(vis), free(memory), free(rec.logits), free(ids), free(lens);
    free_fixture(&fx);
}

static void test_tiny_parity(void **state)
{
    (void)state;
    run_parity("tests/fixtures/tiny");
}

/* The card's full configuration: regenerated with PyTorch into the build
 * directory (it is 300 MB, too big to commit). */
static void test_full_parity(void **state)
{
    (void)state;
    char dir[2048], path[4096], cmd[8192];
    if (tu_sanitized()) {
        printf("SKIP full-size parity under the sanitizer build (the optimised build runs it)\n");
        skip();
    }
    snprintf(dir, sizeof dir, "%s/fixtures/full", tu_build_dir());
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    if (!tu_file_exists(path)) {
        if (!tu_python_has("torch")) {
            printf("SKIP full-size parity: %s cannot import torch (apt-get install python3-torch)\n", tu_python());
            skip();
        }
        printf("generating the full-size PyTorch fixture in %s ...\n", dir);
        snprintf(cmd, sizeof cmd, "'%s' tests/reference/make_fixtures.py --seed 20261129 --n-inputs 20 --out '%s'",
                 tu_python(), dir);
        if (tu_run(cmd) != 0)
            fail_msg("make_fixtures.py failed: %s", cmd);
    }
    run_parity(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tiny_parity),
        cmocka_unit_test(test_full_parity),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
