/* bfloat16 weights in the model (model_options): that each part's choice
 * reaches every one of its matrix products, and what bf16 costs in
 * accuracy, measured against the same model in fp32 on synthetic
 * radiographs (io/synth.h), for bf16 in the decoder only (what `radcap
 * --precision bf16` asks for) and in the whole model:
 *   memory     max |difference| of the encoder's output (the decoder's memory);
 *   logits     max |difference| at every decoding step, both models fed the
 *              fp32 model's greedy tokens (teacher forcing, so that the
 *              comparison is step by step on the same prefix), next to
 *              max |logit|; how often the two argmaxes agree there, and how
 *              close fp32's own top two logits were where they do not;
 *   captions   the fraction of greedy captions (each model decoding on its own)
 *              identical token for token, the measure (target 98%).
 * On the committed tiny fixture (200 images) and on the card's full
 * configuration with random weights (engine/random_model.h, calibrated so
 * that captions differ between images; 128 images). The full one takes a
 * few minutes of CPU and is skipped when RADCAP_BF16_FULL=0 and in the
 * sanitizer build; on the dot-product kernel it runs when
 * RADCAP_BF16_FULL=2 (the tiny fixture's runs always).
 *
 * What is asserted is what rounding the weights to 8 significant bits
 * allows (a relative error of at most 2^-9 per weight): with bf16 in the
 * decoder, logits within 1% of their scale and the same argmax at >= 98% of
 * the steps; with bf16 in the ResNet too, whose 50 layers amplify the
 * rounding (the memory moves by up to 9% of its range), logits within 5%
 * and the same argmax at >= 97%. Whole captions agree less often on these
 * random models than the 98% (their logits are nearly flat, so
 * near-ties are common): those figures are printed, not asserted.
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

#include "engine/config.h"
#include "engine/decoder.h"
#include "engine/encoder.h"
#include "engine/gemm.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/random_model.h"
#include "io/synth.h"
#include "tests/helpers/testutil.h"

#define TINY_DIR "tests/fixtures/tiny"

/* Every matrix product of the model, for checking how each is packed: the
 * encoder's first (convolutions, vis_proj, graph layer; *n_encoder of
 * them), then the decoder's (fc_out, the layers'). Returns the count. */
static int model_products(captioner *m, gemm_weights **out, int max, int *n_encoder)
{
    int n = 0;
    out[n++] = &m->stem.gemm;
    for (int b = 0; b < m->n_blocks; b++) {
        bottleneck *blk = &m->blocks[b];
        out[n++] = &blk->reduce.gemm, out[n++] = &blk->spatial.gemm, out[n++] = &blk->expand.gemm;
        if (blk->has_shortcut)
            out[n++] = &blk->shortcut.gemm;
    }
    out[n++] = &m->vis_proj, out[n++] = &m->graph_msg;
    *n_encoder = n;
    out[n++] = &m->fc_out;
    for (int i = 0; i < m->cfg.num_layers; i++) {
        decoder_layer *L = &m->layers[i];
        gemm_weights *parts[] = {&L->self_qkv, &L->self_out, &L->cross_q, &L->cross_kv,
                                 &L->cross_out, &L->ffn_up, &L->ffn_down};
        for (size_t k = 0; k < sizeof parts / sizeof *parts; k++)
            out[n++] = parts[k];
    }
    assert_true(n <= max);
    return n;
}

static void load_tiny(captioner *m, cfg_model *cfg, const model_options *options)
{
    rc_error err = {{0}};
    if (cfg_load(cfg, TINY_DIR "/config.json", &err) < 0 ||
        model_load_with(m, cfg, TINY_DIR "/model.bin", options, &err) < 0)
        fail_msg("%s", err.msg);
}

/* The precisions are recorded, and every product's weights are packed in
 * its part's (and only in it); NULL options and zeroed ones are fp32. */
static void test_options_reach_every_product(void **state)
{
    (void)state;
    const model_options zeroed = {0}, decoder = {.decoder_precision = GEMM_BF16},
                        encoder = {.encoder_precision = GEMM_BF16},
                        both = {.encoder_precision = GEMM_BF16, .decoder_precision = GEMM_BF16};
    const model_options *choices[] = {NULL, &zeroed, &decoder, &encoder, &both};
    for (size_t c = 0; c < sizeof choices / sizeof *choices; c++) {
        captioner m;
        cfg_model cfg;
        load_tiny(&m, &cfg, choices[c]);
        const model_options want = choices[c] ? *choices[c] : zeroed;
        assert_int_equal(m.encoder_precision, want.encoder_precision);
        assert_int_equal(m.decoder_precision, want.decoder_precision);
        gemm_weights *products[256];
        int n_encoder;
        const int n = model_products(&m, products, 256, &n_encoder);
        for (int i = 0; i < n; i++) {
            const gemm_precision p = i < n_encoder ? want.encoder_precision : want.decoder_precision;
            assert_int_equal(products[i]->precision, p);
            assert_true((products[i]->packed_bf16 != NULL) == (p == GEMM_BF16));
            assert_true((products[i]->packed != NULL) == (p == GEMM_FP32));
        }
        model_free(&m);
    }
    /* a precision outside the enum is refused, naming it */
    captioner m;
    cfg_model cfg;
    rc_error err = {{0}};
    const model_options bad = {.decoder_precision = (gemm_precision)5};
    assert_int_equal(cfg_load(&cfg, TINY_DIR "/config.json", &err), 0);
    assert_int_equal(model_load_with(&m, &cfg, TINY_DIR "/model.bin", &bad, &err), -1);
    assert_non_null(strstr(err.msg, "precision 5"));
    model_free(&m);
}

/* radcap's --precision values: names, parsing (bad ones named, the value
 * untouched) and which parts each makes bf16. */
static void test_precision_names(void **state)
{
    (void)state;
    static const struct { const char *name; model_precision precision; gemm_precision encoder, decoder; } cases[] = {
        {"fp32", MODEL_FP32, GEMM_FP32, GEMM_FP32},
        {"bf16", MODEL_BF16, GEMM_FP32, GEMM_BF16},
        {"bf16-all", MODEL_BF16_ALL, GEMM_BF16, GEMM_BF16},
    };
    rc_error err = {{0}};
    for (size_t i = 0; i < sizeof cases / sizeof *cases; i++) {
        model_precision p = (model_precision)7;
        assert_int_equal(model_precision_parse(cases[i].name, &p, &err), 0);
        assert_int_equal(p, cases[i].precision);
        assert_string_equal(model_precision_name(p), cases[i].name);
        const model_options o = model_precision_options(p);
        assert_int_equal(o.encoder_precision, cases[i].encoder);
        assert_int_equal(o.decoder_precision, cases[i].decoder);
    }
    static const char *const bad[] = {"BF16", "bf16_all", "", "fp16", "bf16 "};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        model_precision p = MODEL_BF16;
        assert_int_equal(model_precision_parse(bad[i], &p, &err), -1);
        assert_int_equal(p, MODEL_BF16);
        char quoted[32];
        snprintf(quoted, sizeof quoted, "'%s'", bad[i]);
        assert_non_null(strstr(err.msg, quoted));
        assert_non_null(strstr(err.msg, "fp32, bf16 or bf16-all"));
    }
    assert_string_equal(model_precision_name((model_precision)9), "?");
    const model_options none = model_precision_options((model_precision)9);
    assert_int_equal(none.encoder_precision, GEMM_FP32);
    assert_int_equal(none.decoder_precision, GEMM_FP32);
}

/* n synthetic radiographs at the model's input size, grey replicated to the
 * three channels and normalised as preprocessing does: (v / 255 - mean) / std.
 * images: (n, 3, S, S). */
static void synthetic_inputs(const cfg_model *cfg, int n, uint64_t seed, float *images)
{
    const int S = cfg->image_size;
    uint8_t *pixels = malloc((size_t)S * S);
    char caption[SYNTH_CAPTION_MAX];
    assert_non_null(pixels);
    rng_state r;
    rng_seed(&r, seed);
    for (int i = 0; i < n; i++) {
        rc_error err = {{0}};
        if (synth_phantom(&r, S, S, pixels, caption, sizeof caption, NULL, &err) < 0)
            fail_msg("%s", err.msg);
        for (int c = 0; c < 3; c++)
            for (size_t p = 0; p < (size_t)S * S; p++)
                images[((size_t)i * 3 + c) * S * S + p] =
                    (pixels[p] / 255.0f - cfg->image_mean[c]) / cfg->image_std[c];
    }
    free(pixels);
}

typedef struct agreement {
    const char *what;         /* which weights are bf16 */
    double logit_bound;       /* asserted: logit_diff <= logit_bound * logit_max */
    double argmax_bound;      /* asserted: same_argmax >= argmax_bound * steps */
    int images, identical;    /* greedy captions, and those identical to fp32's */
    double memory_diff, memory_max; /* max |bf16 - fp32| and max |fp32| of the encoder output */
    double logit_diff, logit_max;   /* the same over the logits of every teacher-forced step */
    long steps, same_argmax;  /* teacher-forced steps, and those whose argmaxes agree */
    double flip_margin;       /* largest fp32 top-1 minus top-2 logit at a step where the argmaxes differ */
    long close_steps;         /* steps where fp32's top-1 logit leads by under CLOSE */
} agreement;

#define CLOSE 0.01

static int argmax(const float *v, int n)
{
    int best = 0;
    for (int i = 1; i < n; i++)
        if (v[i] > v[best])
            best = i;
    return best;
}

/* logits[best] minus the largest other logit. */
static double margin(const float *v, int n, int best)
{
    double second = -INFINITY;
    for (int i = 0; i < n; i++)
        if (i != best && v[i] > second)
            second = v[i];
    return v[best] - second;
}

static void max_diff(const float *a, const float *ref, size_t n, double *diff, double *max_ref)
{
    for (size_t i = 0; i < n; i++) {
        const double d = fabs((double)a[i] - ref[i]);
        *diff = d > *diff ? d : *diff;
        *max_ref = fabs(ref[i]) > *max_ref ? fabs(ref[i]) : *max_ref;
    }
}

/* Feeds both models bos then the fp32 caption's tokens (the step after the
 * last one, if the caption ended on eos, included) and compares the logits;
 * flipped[i] = 1 when image i has a step where the argmaxes differ. */
static void compare_forced(const captioner *m32, const captioner *m16, int n, const float *mem32,
                           const float *mem16, const int *ids, const int *lens, agreement *a, int *flipped)
{
    const cfg_model *c = &m32->cfg;
    const int max_len = c->max_len, V = c->vocab_size, L = cfg_memory_tokens(c), D = c->embed_dim;
    dec_cache c32, c16;
    rc_error err = {{0}};
    if (dec_cache_build(&c32, m32, n, max_len, &err) < 0 || dec_cache_build(&c16, m16, n, max_len, &err) < 0)
        fail_msg("%s", err.msg);
    int *slots = malloc(sizeof(int) * n), *tokens = malloc(sizeof(int) * n), *positions = malloc(sizeof(int) * n);
    float *l32 = malloc(sizeof(float) * (size_t)n * V), *l16 = malloc(sizeof(float) * (size_t)n * V);
    float *scratch = malloc(sizeof(float) * (size_t)n * L * 2 * D);
    assert_true(slots && tokens && positions && l32 && l16 && scratch);
    for (int i = 0; i < n; i++)
        slots[i] = i, flipped[i] = 0;
    dec_set_memory(m32, &c32, n, slots, mem32, scratch);
    dec_set_memory(m16, &c16, n, slots, mem16, scratch);
    for (int step = 0; step < max_len; step++) {
        int active = 0;
        for (int i = 0; i < n; i++)
            if (step <= lens[i]) {
                slots[active] = i;
                tokens[active] = step == 0 ? c->bos_token_id : ids[(size_t)i * max_len + step - 1];
                positions[active++] = step;
            }
        if (!active)
            break;
        dec_step(m32, &c32, active, slots, tokens, positions, l32);
        dec_step(m16, &c16, active, slots, tokens, positions, l16);
        for (int k = 0; k < active; k++) {
            const int i = slots[k], want = step < lens[i] ? ids[(size_t)i * max_len + step] : c->eos_token_id;
            const float *row32 = l32 + (size_t)k * V, *row16 = l16 + (size_t)k * V;
            if (argmax(row32, V) != want) /* what the fp32 greedy decoding chose, from the same logits */
                fail_msg("image %d step %d: fp32 argmax %d, but greedy decoding chose %d", i, step,
                         argmax(row32, V), want);
            max_diff(row16, row32, V, &a->logit_diff, &a->logit_max);
            const double fp32_margin = margin(row32, V, want);
            if (argmax(row16, V) == want) {
                a->same_argmax++;
            } else {
                flipped[i] = 1;
                a->flip_margin = fp32_margin > a->flip_margin ? fp32_margin : a->flip_margin;
            }
            a->close_steps += fp32_margin < CLOSE;
            a->steps++;
        }
    }
    free(slots), free(tokens), free(positions), free(l32), free(l16), free(scratch);
    dec_cache_free(&c32);
    dec_cache_free(&c16);
}

typedef struct comparison {
    int n_images, distinct;   /* images, and distinct fp32 captions among them (a model
                               * captioning every image alike would prove little) */
    double mean_len;          /* fp32 caption length, tokens */
} comparison;

/* Runs n_images synthetic images (in batches) through m32 and each of the
 * n_variants models with bf16 weights, filling a[v] for variant v. A variant
 * whose encoder is fp32 has the same encoder weights, packed the same way,
 * as m32: its memory is m32's, bit for bit (gemm.h), and is not recomputed.
 * Checks that a bf16 caption differs from fp32's exactly when a teacher-forced
 * step of its image flips the argmax: up to the first flip, the bf16 greedy
 * decoding has fed the same tokens, so (rows being computed independently
 * of the batch, gemm.h) its logits are those same bits. */
static comparison compare_precisions(const captioner *m32, const captioner *const *variants, int n_variants,
                                     int n_images, int batch, uint64_t seed, agreement *a)
{
    const cfg_model *c = &m32->cfg;
    const int S = c->image_size, L = cfg_memory_tokens(c), D = c->embed_dim, max_len = c->max_len;
    comparison cmp = {.n_images = n_images};
    float *images = malloc(sizeof(float) * (size_t)batch * 3 * S * S);
    float *mem32 = malloc(sizeof(float) * (size_t)batch * L * D);
    float *mem16 = malloc(sizeof(float) * (size_t)batch * L * D);
    int *ids32 = malloc(sizeof(int) * (size_t)n_images * max_len);
    int *ids16 = malloc(sizeof(int) * (size_t)batch * max_len);
    int *lens32 = malloc(sizeof(int) * n_images), *lens16 = malloc(sizeof(int) * batch);
    int *flipped = malloc(sizeof(int) * batch);
    assert_true(images && mem32 && mem16 && ids32 && ids16 && lens32 && lens16 && flipped);
    rc_error err = {{0}};
    for (int first = 0; first < n_images; first += batch) {
        const int n = n_images - first < batch ? n_images - first : batch;
        int *my_ids = ids32 + (size_t)first * max_len, *my_lens = lens32 + first;
        synthetic_inputs(c, n, seed + (uint64_t)first, images);
        if (enc_forward(m32, n, images, &(enc_outputs){.memory = mem32}, &err) < 0 ||
            gen_greedy(m32, n, mem32, NULL, my_ids, my_lens, &err) < 0)
            fail_msg("%s", err.msg);
        for (int v = 0; v < n_variants; v++) {
            const captioner *m16 = variants[v];
            const float *memory = mem32;
            if (m16->encoder_precision != GEMM_FP32) {
                if (enc_forward(m16, n, images, &(enc_outputs){.memory = mem16}, &err) < 0)
                    fail_msg("%s", err.msg);
                memory = mem16;
            }
            if (gen_greedy(m16, n, memory, NULL, ids16, lens16, &err) < 0)
                fail_msg("%s", err.msg);
            a[v].images += n;
            max_diff(memory, mem32, (size_t)n * L * D, &a[v].memory_diff, &a[v].memory_max);
            compare_forced(m32, m16, n, mem32, memory, my_ids, my_lens, &a[v], flipped);
            for (int i = 0; i < n; i++) {
                const int same = my_lens[i] == lens16[i] && memcmp(my_ids + (size_t)i * max_len,
                                                                   ids16 + (size_t)i * max_len,
                                                                   sizeof(int) * my_lens[i]) == 0;
                if (same == flipped[i])
                    fail_msg("bf16 %s, image %d: the caption is %s, but teacher forcing %s an argmax", a[v].what,
                             first + i, same ? "fp32's" : "not fp32's", flipped[i] ? "flipped" : "flipped no");
                a[v].identical += same;
            }
        }
    }
    for (int i = 0; i < n_images; i++) {
        cmp.mean_len += lens32[i] / (double)n_images;
        int seen = 0;
        for (int j = 0; j < i && !seen; j++)
            seen = lens32[j] == lens32[i] &&
                   memcmp(ids32 + (size_t)j * max_len, ids32 + (size_t)i * max_len, sizeof(int) * lens32[i]) == 0;
        cmp.distinct += !seen;
    }
    free(images), free(mem32), free(mem16), free(ids32), free(ids16), free(lens32), free(lens16), free(flipped);
    return cmp;
}

/* Prints the figures and asserts what bf16 weights allow (see the top). */
static void report(const char *model, const comparison *cmp, const agreement *a, int n_variants)
{
    printf("  %s: %d images, %d distinct fp32 captions, %.1f tokens on average\n", model, cmp->n_images,
           cmp->distinct, cmp->mean_len);
    for (int v = 0; v < n_variants; v++) {
        printf("  bf16 %s:\n", a[v].what);
        printf("    memory  max |bf16 - fp32| %.3g (max |fp32| %.3g, ratio %.2e)\n", a[v].memory_diff,
               a[v].memory_max, a[v].memory_diff / a[v].memory_max);
        printf("    logits  max |bf16 - fp32| %.3g (max |fp32| %.3g, ratio %.2e) over %ld teacher-forced steps;\n"
               "            same argmax at %.2f%% of them; fp32's top logit leads by under %g at %.2f%%, and by "
               "at most %.3g where the argmaxes differ\n",
               a[v].logit_diff, a[v].logit_max, a[v].logit_diff / a[v].logit_max, a[v].steps,
               100.0 * a[v].same_argmax / a[v].steps, CLOSE, 100.0 * a[v].close_steps / a[v].steps,
               a[v].flip_margin);
        printf("    greedy captions identical to fp32's: %d of %d (%.1f%%); the others are exactly those with a "
               "flipped near-tie\n",
               a[v].identical, a[v].images, 100.0 * a[v].identical / a[v].images);
        assert_true(a[v].logit_diff > 0);  /* the weights were rounded */
        assert_true(a[v].logit_diff <= a[v].logit_bound * a[v].logit_max);
        assert_true(a[v].same_argmax >= a[v].argmax_bound * a[v].steps);
    }
}

enum { N_VARIANTS = 2 };
static const model_options bf16_variants[N_VARIANTS] = {
    {.decoder_precision = GEMM_BF16},
    {.encoder_precision = GEMM_BF16, .decoder_precision = GEMM_BF16},
};
/* what, logit_bound, argmax_bound of each variant (see the top) */
static const agreement bf16_expected[N_VARIANTS] = {
    {.what = "decoder (radcap --precision bf16)", .logit_bound = 0.01, .argmax_bound = 0.98},
    {.what = "encoder and decoder", .logit_bound = 0.05, .argmax_bound = 0.97},
};
/* the same on a dot-product backend (x rounded too; see the top) */
static const agreement dot_expected[N_VARIANTS] = {
    {.what = "decoder, dot products (radcap --precision bf16 --gemm avx512bf16)", .logit_bound = 0.02,
     .argmax_bound = 0.97},
    {.what = "encoder and decoder, dot products", .logit_bound = 0.10, .argmax_bound = 0.95},
};

/* Selects the backend the models are packed for and run on; 0 (skipped,
 * said why) when this CPU cannot run it. */
static int select_backend(const char *backend)
{
    if (!gemm_backend_supported(backend)) {
        printf("  SKIP: this CPU cannot run the %s backend\n", backend);
        return 0;
    }
    rc_error err = {{0}};
    if (gemm_set_backend(backend, &err) < 0)
        fail_msg("%s", err.msg);
    printf("  gemm backend %s\n", gemm_backend_name());
    return 1;
}

static void tiny_fixture_accuracy(const char *backend, const agreement *expected)
{
    if (!select_backend(backend))
        skip();
    captioner m32, m16[N_VARIANTS];
    const captioner *variants[N_VARIANTS];
    agreement a[N_VARIANTS];
    memcpy(a, expected, sizeof a);
    cfg_model cfg;
    load_tiny(&m32, &cfg, NULL);
    for (int v = 0; v < N_VARIANTS; v++) {
        load_tiny(&m16[v], &cfg, &bf16_variants[v]);
        variants[v] = &m16[v];
    }
    const comparison cmp = compare_precisions(&m32, variants, N_VARIANTS, 200, 50, 1000, a);
    report("tiny fixture", &cmp, a, N_VARIANTS);
    model_free(&m32);
    for (int v = 0; v < N_VARIANTS; v++)
        model_free(&m16[v]);
    select_backend("auto");
}

static void full_card_accuracy(const char *backend, const agreement *expected)
{
    if (!select_backend(backend))
        skip();
    cfg_model cfg;
    cfg_default(&cfg);
    random_model rm;
    ckpt_file view;
    captioner m32, m16[N_VARIANTS];
    const captioner *variants[N_VARIANTS];
    agreement a[N_VARIANTS];
    memcpy(a, expected, sizeof a);
    rc_error err = {{0}};
    if (random_model_build(&rm, &cfg, 7, &err) < 0 || ckpt_view(&view, rm.tensors, rm.n_tensors, "random", &err) < 0 ||
        model_build(&m32, &cfg, &view, &err) < 0)
        fail_msg("%s", err.msg);
    for (int v = 0; v < N_VARIANTS; v++) {
        if (ckpt_view(&view, rm.tensors, rm.n_tensors, "random", &err) < 0 ||
            model_build_with(&m16[v], &cfg, &view, &bf16_variants[v], &err) < 0)
            fail_msg("%s", err.msg);
        variants[v] = &m16[v];
    }
    const comparison cmp = compare_precisions(&m32, variants, N_VARIANTS, 128, 32, 2000, a);
    report("full card configuration, random weights", &cmp, a, N_VARIANTS);
    model_free(&m32);
    for (int v = 0; v < N_VARIANTS; v++)
        model_free(&m16[v]);
    random_model_free(&rm);
    select_backend("auto");
}

/* Which backend runs an accuracy test, and what it must reach. */
typedef struct accuracy_case {
    const char *backend;
    const agreement *expected;
} accuracy_case;

/* auto: the weights-only bf16 the engine's kernels share. The dot-product
 * kernel with its instruction emulated (exactly gemm.h's definition) runs
 * on any AVX-512 CPU; with the instruction itself where the CPU has it. */
static const accuracy_case widened = {"auto", bf16_expected}, dot_emulated = {"avx512bf16-emulated", dot_expected},
                           dot_instruction = {"avx512bf16", dot_expected};

static void test_tiny_fixture_accuracy(void **state)
{
    const accuracy_case *c = *state;
    tiny_fixture_accuracy(c->backend, c->expected);
}

static void test_full_card_accuracy(void **state)
{
    const accuracy_case *c = *state;
    /* RADCAP_BF16_FULL: 0 none, 1 (unset) the widened backend's, 2 every backend's */
    const char *full = getenv("RADCAP_BF16_FULL");
    const int level = full ? atoi(full) : 1;
    if (level == 0 || tu_sanitized()) {
        printf("  SKIP: full-size bf16 accuracy (RADCAP_BF16_FULL=0, or the sanitizer build: the optimised one runs "
               "it)\n");
        skip();
    }
    if (c != &widened && level < 2) { /* a minute more of make test */
        printf("  SKIP: full-size accuracy on %s (RADCAP_BF16_FULL=2 runs it)\n", c->backend);
        skip();
    }
    full_card_accuracy(c->backend, c->expected);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_precision_names),
        cmocka_unit_test(test_options_reach_every_product),
        cmocka_unit_test_prestate(test_tiny_fixture_accuracy, (void *)&widened),
        cmocka_unit_test_prestate(test_tiny_fixture_accuracy, (void *)&dot_emulated),
        cmocka_unit_test_prestate(test_tiny_fixture_accuracy, (void *)&dot_instruction),
        cmocka_unit_test_prestate(test_full_card_accuracy, (void *)&widened),
        cmocka_unit_test_prestate(test_full_card_accuracy, (void *)&dot_emulated),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
