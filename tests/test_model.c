/* Loading a model from a checkpoint: the expected state dict, the checks
 * that name missing / unexpected / mis-shaped tensors, dtype conversion, and
 * that init-model's random weights load and caption. */
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
#include "engine/gemm.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/random_model.h"
#include "tests/helpers/testutil.h"

static cfg_model tiny_config(void)
{
    cfg_model cfg;
    rc_error err = {{0}};
    if (cfg_load(&cfg, "tests/fixtures/tiny/config.json", &err) < 0)
        fail_msg("%s", err.msg);
    return cfg;
}

/* The card's model has 398 tensors, pos_encoder first, and the key names
 * the issue lists (the PyTorch reference checks the same on its side). */
static void test_card_state_dict(void **state)
{
    (void)state;
    cfg_model cfg;
    cfg_default(&cfg);
    model_tensor_spec *specs;
    int n;
    rc_error err = {{0}};
    assert_int_equal(model_tensor_specs(&cfg, &specs, &n, &err), 0);
    assert_int_equal(n, 398);
    assert_string_equal(specs[0].name, "pos_encoder");
    const char *names[] = {"encoder.embedder.embedder.convolution.weight",
                           "encoder.encoder.stages.0.layers.0.shortcut.convolution.weight",
                           "encoder.encoder.stages.1.layers.0.layer.1.normalization.running_var",
                           "graph_layer.msg_linear.weight", "decoder.layers.3.multihead_attn.in_proj_weight",
                           "fc_out.bias"};
    for (size_t k = 0; k < sizeof names / sizeof names[0]; k++) {
        int found = 0;
        for (int i = 0; i < n; i++)
            found |= strcmp(specs[i].name, names[k]) == 0;
        if (!found)
            fail_msg("no tensor %s", names[k]);
    }
    assert_string_equal(specs[n - 1].name, "fc_out.bias");
    int counters = 0;
    int64_t params = 0;
    for (int i = 0; i < n; i++) {
        counters += specs[i].is_counter;
        if (strncmp(specs[i].name, "encoder.", 8) == 0 && !specs[i].is_counter &&
            !strstr(specs[i].name, "running_")) {
            int64_t numel = 1;
            for (int d = 0; d < specs[i].ndim; d++)
                numel *= specs[i].shape[d];
            params += numel;
        }
    }
    assert_int_equal(counters, 53);        /* one per BatchNorm: 1 stem + 48 bottleneck + 4 shortcut */
    assert_int_equal(params, 23508032);    /* ResNet-50 without its classifier head */
    free(specs);
}

/* Writes a tiny random model with `edit` applied to its tensor list, and
 * returns model_load's message (empty on success). */
typedef void (*tensor_edit)(ckpt_tensor *tensors, int *n);

static void load_edited(tensor_edit edit, char *message, size_t size)
{
    cfg_model cfg = tiny_config();
    random_model rm;
    rc_error err = {{0}};
    assert_int_equal(random_model_build(&rm, &cfg, 5, &err), 0);
    int n = rm.n_tensors;
    if (edit)
        edit(rm.tensors, &n);
    char *dir = tu_mkdtemp("model"), path[4200];
    snprintf(path, sizeof path, "%s/edited.bin", dir);
    if (ckpt_write_torch(path, rm.tensors, n, NULL, &err) < 0)
        fail_msg("%s", err.msg);
    rm.n_tensors = rm.n_tensors > n ? rm.n_tensors : n;
    random_model_free(&rm);
    captioner m;
    rc_clear(&err);
    if (model_load(&m, &cfg, path, &err) == 0)
        model_free(&m);
    snprintf(message, size, "%s", err.msg);
    printf("  message: %s\n", message[0] ? message : "(loaded)");
    free(dir);
}

static int index_of(const ckpt_tensor *t, int n, const char *name)
{
    for (int i = 0; i < n; i++)
        if (strcmp(t[i].name, name) == 0)
            return i;
    fail_msg("no tensor %s", name);
    return -1;
}

static void drop_graph_bias(ckpt_tensor *t, int *n)
{
    int i = index_of(t, *n, "graph_layer.msg_linear.bias");
    char *name = t[i].name;
    memmove(t + i, t + i + 1, sizeof *t * (*n - i - 1));
    t[*n - 1].name = name; /* kept at the end so that it is still freed */
    (*n)--;
}

static void reshape_fc_out(ckpt_tensor *t, int *n)
{
    int i = index_of(t, *n, "fc_out.weight");
    t[i].shape[0] /= 2;
    t[i].numel /= 2;
}

static void rename_to_unexpected(ckpt_tensor *t, int *n)
{
    int i = index_of(t, *n, "decoder.layers.1.norm3.bias");
    free(t[i].name);
    t[i].name = strdup("decoder.layers.1.norm4.bias");
}

static void make_counter_float(ckpt_tensor *t, int *n)
{
    int i = index_of(t, *n, "encoder.embedder.embedder.normalization.num_batches_tracked");
    static float one = 1.0f;
    t[i].dtype = CKPT_F32;
    t[i].data = &one;
}

static void test_load_ok(void **state)
{
    (void)state;
    char msg[1024];
    load_edited(NULL, msg, sizeof msg);
    assert_string_equal(msg, "");
}

static void test_missing_key(void **state)
{
    (void)state;
    char msg[1024];
    load_edited(drop_graph_bias, msg, sizeof msg);
    assert_non_null(strstr(msg, "edited.bin"));
    assert_non_null(strstr(msg, "1 missing: graph_layer.msg_linear.bias"));
    assert_null(strstr(msg, "unexpected"));
}

static void test_wrong_shape(void **state)
{
    (void)state;
    char msg[1024];
    load_edited(reshape_fc_out, msg, sizeof msg);
    assert_non_null(strstr(msg, "fc_out.weight has shape (200, 32), expected (400, 32)"));
    assert_null(strstr(msg, "missing"));
}

static void test_unexpected_key(void **state)
{
    (void)state;
    char msg[1024];
    load_edited(rename_to_unexpected, msg, sizeof msg);
    assert_non_null(strstr(msg, "1 missing: decoder.layers.1.norm3.bias"));
    assert_non_null(strstr(msg, "1 unexpected: decoder.layers.1.norm4.bias"));
}

static void test_wrong_dtype(void **state)
{
    (void)state;
    char msg[1024];
    load_edited(make_counter_float, msg, sizeof msg);
    assert_non_null(strstr(msg, "num_batches_tracked is float32 with 1 elements, expected an integer scalar"));
}

/* A checkpoint for another configuration: one clear message, not 180. */
static void test_config_mismatch(void **state)
{
    (void)state;
    cfg_model cfg;
    cfg_default(&cfg);
    captioner m;
    rc_error err = {{0}};
    assert_int_equal(model_load(&m, &cfg, "tests/fixtures/tiny/model.bin", &err), -1);
    printf("  message: %s\n", err.msg);
    assert_non_null(strstr(err.msg, "checkpoint does not match the model configuration"));
    assert_true(strlen(err.msg) < sizeof err.msg - 1);
}

/* The same weights stored as float16 load (converted) and give nearly the
 * same memory tokens as float32. */
static void test_half_precision_checkpoint(void **state)
{
    (void)state;
    cfg_model cfg = tiny_config();
    random_model rm;
    rc_error err = {{0}};
    assert_int_equal(random_model_build(&rm, &cfg, 9, &err), 0);
    char *dir = tu_mkdtemp("model"), f32_path[4200], f16_path[4200];
    snprintf(f32_path, sizeof f32_path, "%s/f32.bin", dir);
    snprintf(f16_path, sizeof f16_path, "%s/f16.safetensors", dir);
    assert_int_equal(ckpt_write_torch(f32_path, rm.tensors, rm.n_tensors, NULL, &err), 0);
    /* round every float tensor to float16 (and keep the rounded float32 copy
     * as the reference), by way of the checkpoint's own conversion */
    uint16_t **halves = calloc(rm.n_tensors, sizeof *halves);
    for (int i = 0; i < rm.n_tensors; i++) {
        ckpt_tensor *t = &rm.tensors[i];
        if (t->dtype != CKPT_F32)
            continue;
        float *x = (float *)t->data;
        halves[i] = malloc(sizeof(uint16_t) * t->numel);
        for (int64_t k = 0; k < t->numel; k++) {
            /* IEEE half by rounding through the float's bits (round to nearest even) */
            uint32_t b;
            memcpy(&b, &x[k], 4);
            const uint32_t sign = (b >> 16) & 0x8000;
            int exp = (int)((b >> 23) & 0xff) - 127 + 15;
            uint32_t mant = b & 0x7fffff;
            uint16_t h;
            if (exp <= 0) { /* subnormal or zero in half */
                if (exp < -10) {
                    h = (uint16_t)sign;
                } else {
                    mant |= 0x800000;
                    const int shift = 14 - exp;
                    uint32_t hm = mant >> shift, rem = mant & ((1u << shift) - 1), half = 1u << (shift - 1);
                    if (rem > half || (rem == half && (hm & 1)))
                        hm++;
                    h = (uint16_t)(sign | hm);
                }
            } else {
                uint32_t hm = mant >> 13, rem = mant & 0x1fff;
                uint32_t v = ((uint32_t)exp << 10) | hm;
                if (rem > 0x1000 || (rem == 0x1000 && (hm & 1)))
                    v++;
                assert_true(exp < 31);
                h = (uint16_t)(sign | v);
            }
            halves[i][k] = h;
        }
        t->dtype = CKPT_F16;
        t->data = halves[i];
    }
    assert_int_equal(ckpt_write_safetensors(f16_path, rm.tensors, rm.n_tensors, &err), 0);
    captioner m32, m16;
    if (model_load(&m32, &cfg, f32_path, &err) < 0 || model_load(&m16, &cfg, f16_path, &err) < 0)
        fail_msg("%s", err.msg);
    assert_true(m16.n_converted > 0);
    const int S = cfg.image_size, L = cfg_memory_tokens(&cfg), D = cfg.embed_dim;
    float *images = malloc(sizeof(float) * 2 * 3 * S * S);
    for (int i = 0; i < 2 * 3 * S * S; i++)
        images[i] = (float)sin(i * 0.01) * 2.0f;
    float *mem32 = malloc(sizeof(float) * 2 * L * D), *mem16 = malloc(sizeof(float) * 2 * L * D);
    assert_int_equal(enc_forward(&m32, 2, images, &(enc_outputs){.memory = mem32}, &err), 0);
    assert_int_equal(enc_forward(&m16, 2, images, &(enc_outputs){.memory = mem16}, &err), 0);
    double diff, max_ref;
    tu_max_diff(mem16, mem32, (size_t)2 * L * D, &diff, &max_ref);
    printf("  float16 vs float32 memory: max |diff| %.3g of %.3g\n", diff, max_ref);
    assert_true(diff > 0.0);          /* the weights really were rounded */
    assert_true(diff < 0.05 * max_ref); /* and converted, not misread */
    model_free(&m32);
    model_free(&m16);
    for (int i = 0; i < rm.n_tensors; i++)
        free(halves[i]);
    free(halves), free(images), free(mem32), free(mem16), free(dir);
    random_model_free(&rm);
}

/* Random weights from init-model give well-conditioned activations and
 * captions that differ between inputs (what demos and benchmarks rely on). */
static void test_random_model_captions_differ(void **state)
{
    (void)state;
    cfg_model cfg = tiny_config();
    random_model rm;
    rc_error err = {{0}};
    assert_int_equal(random_model_build(&rm, &cfg, 11, &err), 0);
    char *dir = tu_mkdtemp("model"), path[4200];
    snprintf(path, sizeof path, "%s/random.bin", dir);
    assert_int_equal(ckpt_write_torch(path, rm.tensors, rm.n_tensors, NULL, &err), 0);
    random_model_free(&rm);
    captioner m;
    if (model_load(&m, &cfg, path, &err) < 0)
        fail_msg("%s", err.msg);
    const int n = 8, S = cfg.image_size, L = cfg_memory_tokens(&cfg), D = cfg.embed_dim;
    float *images = malloc(sizeof(float) * n * 3 * S * S), *memory = malloc(sizeof(float) * n * L * D);
    for (int b = 0; b < n; b++) /* smooth fields of different frequencies and offsets */
        for (int i = 0; i < 3 * S * S; i++)
            images[(size_t)b * 3 * S * S + i] = (float)(1.5 * sin((i % S) * 0.05 * (b + 1) + b) - 0.3 * b);
    assert_int_equal(enc_forward(&m, n, images, &(enc_outputs){.memory = memory}, &err), 0);
    int *ids = malloc(sizeof(int) * n * cfg.max_len), lens[8];
    assert_int_equal(gen_greedy(&m, n, memory, NULL, ids, lens, &err), 0);
    int distinct = 0;
    for (int b = 0; b < n; b++) {
        int seen = 0;
        for (int a = 0; a < b && !seen; a++)
            seen = lens[a] == lens[b] && memcmp(ids + a * cfg.max_len, ids + b * cfg.max_len, sizeof(int) * lens[b]) == 0;
        distinct += !seen;
    }
    printf("  %d distinct captions of %d\n", distinct, n);
    assert_true(distinct >= n / 2);
    model_free(&m);
    free(images), free(memory), free(ids), free(dir);
}

int main(void)
{
    gemm_init();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_card_state_dict),  cmocka_unit_test(test_load_ok),
        cmocka_unit_test(test_missing_key),      cmocka_unit_test(test_wrong_shape),
        cmocka_unit_test(test_unexpected_key),   cmocka_unit_test(test_wrong_dtype),
        cmocka_unit_test(test_config_mismatch),  cmocka_unit_test(test_half_precision_checkpoint),
        cmocka_unit_test(test_random_model_captions_differ),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
