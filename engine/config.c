#include "config.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "file.h"

void cfg_default(cfg_model *cfg)
{
    static const int hidden[] = {256, 512, 1024, 2048};
    static const int depths[] = {3, 4, 6, 3};
    memset(cfg, 0, sizeof *cfg);
    cfg->image_size = 224;
    cfg->num_channels = 3;
    cfg->embedding_size = 64;
    cfg->n_stages = 4;
    for (int i = 0; i < 4; i++) {
        cfg->hidden_sizes[i] = hidden[i];
        cfg->depths[i] = depths[i];
    }
    cfg->bottleneck_reduction = 4;
    cfg->batch_norm_eps = 1e-5;
    cfg->graph_window = 3;
    cfg->graph_steps = 3;
    cfg->embed_dim = 512;
    cfg->num_heads = 8;
    cfg->ffn_dim = 1024;
    cfg->num_layers = 4;
    cfg->vocab_size = 30522;
    cfg->max_positions = 2000;
    cfg->layer_norm_eps = 1e-5;
    cfg->max_len = 80;
    cfg->bos_token_id = 101;
    cfg->eos_token_id = 102;
    const float mean[3] = {0.485f, 0.456f, 0.406f}, std[3] = {0.229f, 0.224f, 0.225f};
    memcpy(cfg->image_mean, mean, sizeof mean);
    memcpy(cfg->image_std, std, sizeof std);
}

/* One integer field of cfg_model, by JSON key. */
typedef struct {
    const char *key;
    size_t offset;
} int_field;

#define INT_FIELD(name) {#name, offsetof(cfg_model, name)}
static const int_field int_fields[] = {
    INT_FIELD(image_size),   INT_FIELD(num_channels), INT_FIELD(embedding_size),
    INT_FIELD(bottleneck_reduction), INT_FIELD(graph_window), INT_FIELD(graph_steps),
    INT_FIELD(embed_dim),    INT_FIELD(num_heads),    INT_FIELD(ffn_dim),
    INT_FIELD(num_layers),   INT_FIELD(vocab_size),   INT_FIELD(max_positions),
    INT_FIELD(max_len),      INT_FIELD(bos_token_id), INT_FIELD(eos_token_id),
};

static int json_int(const cJSON *item, int *out, const char *source, rc_error *err)
{
    if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
        fabs(item->valuedouble) > 1e9)
        return rc_fail(err, "%s: key \"%s\" must be an integer", source, item->string);
    *out = (int)item->valuedouble;
    return 0;
}

/* Reads a JSON array of n_max numbers at most into ints or floats; returns count. */
static int json_array(const cJSON *item, int n_max, int *ints, float *floats, const char *source,
                      rc_error *err)
{
    if (!cJSON_IsArray(item))
        return rc_fail(err, "%s: key \"%s\" must be an array", source, item->string);
    int n = cJSON_GetArraySize(item);
    if (n < 1 || n > n_max)
        return rc_fail(err, "%s: key \"%s\" must have 1 to %d elements, not %d", source,
                       item->string, n_max, n);
    int i = 0;
    const cJSON *el;
    cJSON_ArrayForEach(el, item)
    {
        if (!cJSON_IsNumber(el))
            return rc_fail(err, "%s: key \"%s\" element %d is not a number", source, item->string, i);
        if (ints) {
            if (el->valuedouble != floor(el->valuedouble) || fabs(el->valuedouble) > 1e9)
                return rc_fail(err, "%s: key \"%s\" element %d is not an integer", source,
                               item->string, i);
            ints[i] = (int)el->valuedouble;
        } else {
            if (!isfinite(el->valuedouble) || fabs(el->valuedouble) > 1e30)
                return rc_fail(err, "%s: key \"%s\" element %d is out of range", source, item->string, i);
            floats[i] = (float)el->valuedouble;
        }
        i++;
    }
    return n;
}

int cfg_parse(cfg_model *cfg, const char *text, size_t len, const char *source, rc_error *err)
{
    cJSON *root = cJSON_ParseWithLength(text, len);
    if (!root)
        return rc_fail(err, "%s: not valid JSON (near byte %ld)", source,
                       (long)(cJSON_GetErrorPtr() ? cJSON_GetErrorPtr() - text : 0));
    int rc = -1;
    if (!cJSON_IsObject(root)) {
        rc_fail(err, "%s: the model configuration must be a JSON object", source);
        goto done;
    }
    int n_hidden = -1, n_depths = -1;
    const cJSON *item;
    cJSON_ArrayForEach(item, root)
    {
        const char *key = item->string;
        size_t i;
        for (i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++)
            if (strcmp(key, int_fields[i].key) == 0)
                break;
        if (i < sizeof int_fields / sizeof int_fields[0]) {
            if (json_int(item, (int *)((char *)cfg + int_fields[i].offset), source, err) < 0)
                goto done;
        } else if (strcmp(key, "hidden_sizes") == 0) {
            if ((n_hidden = json_array(item, CFG_MAX_STAGES, cfg->hidden_sizes, NULL, source, err)) < 0)
                goto done;
        } else if (strcmp(key, "depths") == 0) {
            if ((n_depths = json_array(item, CFG_MAX_STAGES, cfg->depths, NULL, source, err)) < 0)
                goto done;
        } else if (strcmp(key, "image_mean") == 0 || strcmp(key, "image_std") == 0) {
            float *dst = key[6] == 'm' ? cfg->image_mean : cfg->image_std;
            int n = json_array(item, 3, NULL, dst, source, err);
            if (n < 0)
                goto done;
            if (n != 3) {
                rc_fail(err, "%s: key \"%s\" must have 3 elements", source, key);
                goto done;
            }
        } else if (strcmp(key, "batch_norm_eps") == 0 || strcmp(key, "layer_norm_eps") == 0) {
            if (!cJSON_IsNumber(item) || !isfinite(item->valuedouble) || item->valuedouble > 1.0) {
                rc_fail(err, "%s: key \"%s\" must be a number at most 1", source, key);
                goto done;
            }
            *(key[0] == 'b' ? &cfg->batch_norm_eps : &cfg->layer_norm_eps) = item->valuedouble;
        } else if (key[0] == '_') {
            /* keys starting with '_' are comments */
        } else {
            rc_fail(err, "%s: unknown key \"%s\"", source, key);
            goto done;
        }
    }
    if (n_hidden >= 0 || n_depths >= 0) {
        if (n_hidden < 0 || n_depths < 0 || n_hidden != n_depths) {
            rc_fail(err, "%s: \"hidden_sizes\" and \"depths\" must be given together, with the same length",
                    source);
            goto done;
        }
        cfg->n_stages = n_hidden;
    }
    rc = cfg_validate(cfg, err);
    if (rc < 0)
        rc_prefix(err, "%s", source);
done:
    cJSON_Delete(root);
    return rc;
}

int cfg_load(cfg_model *cfg, const char *path, rc_error *err)
{
    cfg_default(cfg);
    size_t len;
    char *text = rc_read_file(path, (size_t)16 << 20, "the model configuration", &len, err);
    if (!text)
        return -1;
    const int rc = cfg_parse(cfg, text, len, path, err);
    free(text);
    return rc;
}

int cfg_validate(const cfg_model *c, rc_error *err)
{
#define NEED(cond, ...)                                                                            \
    do {                                                                                           \
        if (!(cond))                                                                               \
            return rc_fail(err, __VA_ARGS__);                                                      \
    } while (0)
    NEED(c->num_channels >= 1 && c->num_channels <= 64, "num_channels must be 1..64");
    NEED(c->embedding_size >= 1 && c->embedding_size <= 4096, "embedding_size must be 1..4096");
    NEED(c->n_stages >= 1 && c->n_stages <= CFG_MAX_STAGES, "hidden_sizes must have 1..%d entries",
         CFG_MAX_STAGES);
    NEED(c->bottleneck_reduction >= 1, "bottleneck_reduction must be positive");
    for (int i = 0; i < c->n_stages; i++) {
        NEED(c->hidden_sizes[i] >= 1 && c->hidden_sizes[i] <= 65536, "hidden_sizes[%d] must be 1..65536", i);
        NEED(c->hidden_sizes[i] % c->bottleneck_reduction == 0,
             "hidden_sizes[%d] must be divisible by bottleneck_reduction", i);
        NEED(c->depths[i] >= 1 && c->depths[i] <= 1000, "depths[%d] must be 1..1000", i);
    }
    NEED(c->image_size >= 8 && c->image_size <= 8192, "image_size must be 8..8192");
    NEED(cfg_feature_side(c) >= 1, "image_size %d is too small for %d stages", c->image_size, c->n_stages);
    NEED(c->graph_window >= 1 && c->graph_window % 2 == 1, "graph_window must be odd and positive");
    NEED(c->graph_steps >= 0 && c->graph_steps <= 1000, "graph_steps must be 0..1000");
    NEED(c->embed_dim >= 1 && c->embed_dim <= 65536, "embed_dim must be 1..65536");
    NEED(c->num_heads >= 1 && c->embed_dim % c->num_heads == 0, "embed_dim must be divisible by num_heads");
    NEED(c->ffn_dim >= 1 && c->ffn_dim <= 1 << 20, "ffn_dim must be 1..1048576");
    NEED(c->num_layers >= 1 && c->num_layers <= 256, "num_layers must be 1..256");
    NEED(c->vocab_size >= 2 && c->vocab_size <= 1 << 24, "vocab_size must be 2..16777216");
    NEED(c->max_len >= 1, "max_len must be positive");
    NEED(c->max_positions >= c->max_len + 1, "max_positions (%d) must exceed max_len (%d)",
         c->max_positions, c->max_len);
    NEED(c->bos_token_id >= 0 && c->bos_token_id < c->vocab_size, "bos_token_id out of the vocabulary");
    NEED(c->eos_token_id >= 0 && c->eos_token_id < c->vocab_size, "eos_token_id out of the vocabulary");
    NEED(c->layer_norm_eps > 0 && c->batch_norm_eps > 0, "norm epsilons must be positive");
    for (int i = 0; i < 3; i++)
        NEED(c->image_std[i] > 0, "image_std must be positive");
#undef NEED
    return 0;
}

/* Output side of a convolution or pooling window. */
static int conv_out(int in, int kernel, int stride, int pad)
{
    return (in + 2 * pad - kernel) / stride + 1;
}

int cfg_feature_side(const cfg_model *c)
{
    int s = conv_out(c->image_size, 7, 2, 3); /* stem convolution */
    s = conv_out(s, 3, 2, 1);                 /* stem max-pool */
    for (int i = 1; i < c->n_stages; i++)     /* stride 2 in stages 2.. */
        s = conv_out(s, 3, 2, 1);
    return s;
}

int cfg_memory_tokens(const cfg_model *c)
{
    int s = cfg_feature_side(c);
    return s * s;
}

char *cfg_to_json(const cfg_model *c)
{
    cJSON *o = cJSON_CreateObject();
    if (!o)
        return NULL;
    for (size_t i = 0; i < sizeof int_fields / sizeof int_fields[0]; i++)
        cJSON_AddNumberToObject(o, int_fields[i].key, *(const int *)((const char *)c + int_fields[i].offset));
    cJSON_AddItemToObject(o, "hidden_sizes", cJSON_CreateIntArray(c->hidden_sizes, c->n_stages));
    cJSON_AddItemToObject(o, "depths", cJSON_CreateIntArray(c->depths, c->n_stages));
    cJSON_AddNumberToObject(o, "batch_norm_eps", c->batch_norm_eps);
    cJSON_AddNumberToObject(o, "layer_norm_eps", c->layer_norm_eps);
    cJSON_AddItemToObject(o, "image_mean", cJSON_CreateFloatArray(c->image_mean, 3));
    cJSON_AddItemToObject(o, "image_std", cJSON_CreateFloatArray(c->image_std, 3));
    char *s = cJSON_Print(o);
    cJSON_Delete(o);
    return s;
}
