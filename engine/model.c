#include "model.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* ---- the expected state dict ------------------------------------------ */

typedef struct spec_list {
    model_tensor_spec *items; /* (n, cap) */
    int n, cap;
    int failed;               /* an allocation failed */
} spec_list;

static void spec_add(spec_list *l, int is_counter, int ndim, const int64_t *shape, const char *fmt, ...)
    __attribute__((format(printf, 5, 6)));

static void spec_add(spec_list *l, int is_counter, int ndim, const int64_t *shape, const char *fmt, ...)
{
    if (l->failed)
        return;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 512;
        model_tensor_spec *grown = realloc(l->items, sizeof *grown * cap);
        if (!grown) {
            l->failed = 1;
            return;
        }
        l->items = grown;
        l->cap = cap;
    }
    model_tensor_spec *s = &l->items[l->n++];
    memset(s, 0, sizeof *s);
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(s->name, sizeof s->name, fmt, ap);
    va_end(ap);
    s->ndim = ndim;
    for (int i = 0; i < ndim; i++)
        s->shape[i] = shape[i];
    s->is_counter = is_counter;
}

#define SHAPE(...) ((const int64_t[]){__VA_ARGS__})

/* A ResNetConvLayer or ResNetShortCut: convolution.weight + BatchNorm. */
static void spec_conv(spec_list *l, const char *prefix, int c_in, int c_out, int kernel)
{
    static const char *bn[] = {"weight", "bias", "running_mean", "running_var"};
    spec_add(l, 0, 4, SHAPE(c_out, c_in, kernel, kernel), "%s.convolution.weight", prefix);
    for (int i = 0; i < 4; i++)
        spec_add(l, 0, 1, SHAPE(c_out), "%s.normalization.%s", prefix, bn[i]);
    spec_add(l, 1, 0, NULL, "%s.normalization.num_batches_tracked", prefix);
}

/* nn.Linear (or a MultiheadAttention in_proj pair, same shapes). */
static void spec_linear(spec_list *l, const char *weight, const char *bias, const char *prefix, int n_out,
                        int n_in)
{
    spec_add(l, 0, 2, SHAPE(n_out, n_in), "%s.%s", prefix, weight);
    spec_add(l, 0, 1, SHAPE(n_out), "%s.%s", prefix, bias);
}

/* Whether bottleneck `layer` of `stage` has a projection shortcut, and its
 * stride: HF's rule (channels change or stride is not 1). */
static int block_stride(int stage, int layer)
{
    return (stage > 0 && layer == 0) ? 2 : 1;
}

static int block_in_channels(const cfg_model *c, int stage, int layer)
{
    if (layer > 0)
        return c->hidden_sizes[stage];
    return stage == 0 ? c->embedding_size : c->hidden_sizes[stage - 1];
}

int model_tensor_specs(const cfg_model *c, model_tensor_spec **specs, int *n, rc_error *err)
{
    spec_list l = {0};
    char prefix[96];
    const int dim = c->embed_dim;
    spec_add(&l, 0, 3, SHAPE(1, c->max_positions, dim), "pos_encoder");
    spec_conv(&l, "encoder.embedder.embedder", c->num_channels, c->embedding_size, 7);
    for (int s = 0; s < c->n_stages; s++)
        for (int j = 0; j < c->depths[s]; j++) {
            const int c_in = block_in_channels(c, s, j), c_out = c->hidden_sizes[s];
            const int width = c_out / c->bottleneck_reduction;
            if (c_in != c_out || block_stride(s, j) != 1) {
                snprintf(prefix, sizeof prefix, "encoder.encoder.stages.%d.layers.%d.shortcut", s, j);
                spec_conv(&l, prefix, c_in, c_out, 1);
            }
            const int ins[3] = {c_in, width, width}, outs[3] = {width, width, c_out}, ks[3] = {1, 3, 1};
            for (int k = 0; k < 3; k++) {
                snprintf(prefix, sizeof prefix, "encoder.encoder.stages.%d.layers.%d.layer.%d", s, j, k);
                spec_conv(&l, prefix, ins[k], outs[k], ks[k]);
            }
        }
    spec_linear(&l, "weight", "bias", "vis_proj", dim, c->hidden_sizes[c->n_stages - 1]);
    spec_linear(&l, "weight", "bias", "graph_layer.msg_linear", dim, dim);
    spec_add(&l, 0, 2, SHAPE(c->vocab_size, dim), "embedding.weight");
    for (int i = 0; i < c->num_layers; i++) {
        snprintf(prefix, sizeof prefix, "decoder.layers.%d.self_attn", i);
        spec_linear(&l, "in_proj_weight", "in_proj_bias", prefix, 3 * dim, dim);
        snprintf(prefix, sizeof prefix, "decoder.layers.%d.self_attn.out_proj", i);
        spec_linear(&l, "weight", "bias", prefix, dim, dim);
        snprintf(prefix, sizeof prefix, "decoder.layers.%d.multihead_attn", i);
        spec_linear(&l, "in_proj_weight", "in_proj_bias", prefix, 3 * dim, dim);
        snprintf(prefix, sizeof prefix, "decoder.layers.%d.multihead_attn.out_proj", i);
        spec_linear(&l, "weight", "bias", prefix, dim, dim);
        snprintf(prefix, sizeof prefix, "decoder.layers.%d.linear1", i);
        spec_linear(&l, "weight", "bias", prefix, c->ffn_dim, dim);
        snprintf(prefix, sizeof prefix, "decoder.layers.%d.linear2", i);
        spec_linear(&l, "weight", "bias", prefix, dim, c->ffn_dim);
        for (int k = 1; k <= 3; k++) {
            spec_add(&l, 0, 1, SHAPE(dim), "decoder.layers.%d.norm%d.weight", i, k);
            spec_add(&l, 0, 1, SHAPE(dim), "decoder.layers.%d.norm%d.bias", i, k);
        }
    }
    spec_linear(&l, "weight", "bias", "fc_out", c->vocab_size, dim);
    if (l.failed) {
        free(l.items);
        return rc_fail(err, "out of memory listing the model's tensors");
    }
    *specs = l.items;
    *n = l.n;
    return 0;
}

/* ---- checking a checkpoint against the specs --------------------------- */

static void shape_str(char *buf, size_t size, int ndim, const int64_t *shape)
{
    size_t used = (size_t)snprintf(buf, size, "(");
    for (int i = 0; i < ndim && used < size; i++)
        used += (size_t)snprintf(buf + used, size - used, i ? ", %lld" : "%lld", (long long)shape[i]);
    if (used < size)
        snprintf(buf + used, size - used, ")");
}

/* Appends "item" to one of the report's lists, keeping count past what fits. */
typedef struct name_list {
    char text[300]; /* comma-separated names that fit */
    int n;          /* all names, including those that did not fit */
} name_list;

static void name_list_add(name_list *l, const char *item)
{
    size_t used = strlen(l->text);
    const int truncated = used >= 3 && strcmp(l->text + used - 3, "...") == 0;
    if (!truncated && used + strlen(item) + 7 < sizeof l->text)
        snprintf(l->text + used, sizeof l->text - used, "%s%s", l->n ? ", " : "", item);
    else if (!truncated)
        snprintf(l->text + used, sizeof l->text - used, "%s...", l->n ? ", " : "");
    l->n++;
}

static int is_float_dtype(ckpt_dtype d)
{
    return d == CKPT_F32 || d == CKPT_F16 || d == CKPT_BF16 || d == CKPT_F64;
}

static int check_tensors(const ckpt_file *f, const model_tensor_spec *specs, int n_specs, rc_error *err)
{
    name_list missing = {{0}, 0}, unexpected = {{0}, 0}, mismatched = {{0}, 0};
    char item[400], want[96], got[96];
    for (int i = 0; i < n_specs; i++) {
        const model_tensor_spec *s = &specs[i];
        const ckpt_tensor *t = ckpt_find(f, s->name);
        if (!t) {
            name_list_add(&missing, s->name);
            continue;
        }
        if (s->is_counter) {
            if (is_float_dtype(t->dtype) || t->numel != 1) {
                snprintf(item, sizeof item, "%s is %s with %lld elements, expected an integer scalar", s->name,
                         ckpt_dtype_name(t->dtype), (long long)t->numel);
                name_list_add(&mismatched, item);
            }
            continue;
        }
        int same = t->ndim == s->ndim;
        for (int d = 0; same && d < s->ndim; d++)
            same = t->shape[d] == s->shape[d];
        if (!same) {
            shape_str(want, sizeof want, s->ndim, s->shape);
            shape_str(got, sizeof got, t->ndim, t->shape);
            snprintf(item, sizeof item, "%s has shape %s, expected %s", s->name, got, want);
            name_list_add(&mismatched, item);
        } else if (!is_float_dtype(t->dtype)) {
            snprintf(item, sizeof item, "%s is %s, expected a floating-point type", s->name,
                     ckpt_dtype_name(t->dtype));
            name_list_add(&mismatched, item);
        }
    }
    for (int i = 0; i < f->n_tensors; i++) {
        int known = 0;
        for (int j = 0; j < n_specs && !known; j++)
            known = strcmp(f->tensors[i].name, specs[j].name) == 0;
        if (!known)
            name_list_add(&unexpected, f->tensors[i].name);
    }
    if (!missing.n && !unexpected.n && !mismatched.n)
        return 0;
    char report[sizeof err->msg];
    size_t used = 0;
    const name_list *lists[3] = {&missing, &unexpected, &mismatched};
    const char *labels[3] = {"missing", "unexpected", "wrong shape or type"};
    for (int i = 0; i < 3; i++)
        if (lists[i]->n && used < sizeof report)
            used += (size_t)snprintf(report + used, sizeof report - used, "%s %d %s: %s", used ? ";" : "",
                                     lists[i]->n, labels[i], lists[i]->text);
    return rc_fail(err, "%s: checkpoint does not match the model configuration:%s", f->path, report);
}

/* ---- building the model ----------------------------------------------- */

/* The float32 data of a validated tensor, converted (and kept) if needed. */
static const float *tensor_f32(captioner *m, const char *name, rc_error *err)
{
    const ckpt_tensor *t = ckpt_find(&m->ckpt, name);
    if (!t) {
        rc_fail(err, "%s: tensor %s is missing", m->ckpt.path, name);
        return NULL;
    }
    if (t->dtype == CKPT_F32)
        return t->data;
    float *copy = malloc(sizeof(float) * (size_t)t->numel);
    float **list = realloc(m->converted, sizeof *list * (m->n_converted + 1));
    if (!copy || !list) {
        free(copy);
        if (list)
            m->converted = list;
        rc_fail(err, "%s: out of memory converting %s", m->ckpt.path, name);
        return NULL;
    }
    m->converted = list;
    m->converted[m->n_converted++] = copy;
    if (ckpt_to_f32(t, copy, err) < 0)
        return NULL;
    return copy;
}

/* Drops the resident pages of a tensor that lies in the checkpoint's file
 * mapping once it has been packed: the pages are clean (read-only, private),
 * so the kernel frees them and reads them back from the file if anything
 * touches them again (the cblas backend may). Without this, the whole file
 * (read once by the CRC check) stays in the RSS next to the packed copies. */
static void release_pages(const captioner *m, const void *data, size_t bytes)
{
    const uintptr_t map = (uintptr_t)m->ckpt.map, page = (uintptr_t)sysconf(_SC_PAGESIZE);
    uintptr_t from = (uintptr_t)data, to = from + bytes;
    if (!m->ckpt.owns_map || from < map || to > map + m->ckpt.map_size)
        return;
    from = (from + page - 1) / page * page; /* whole pages inside the tensor only */
    to = to / page * page;
    if (to > from)
        madvise((void *)from, to - from, MADV_DONTNEED); /* advice: failure changes nothing */
}

static int linear_from(captioner *m, gemm_weights *g, const char *prefix, const char *weight, const char *bias,
                       int n_out, int n_in, int row_offset, gemm_precision precision, rc_error *err)
{
    char name[160];
    snprintf(name, sizeof name, "%s.%s", prefix, weight);
    const float *w = tensor_f32(m, name, err);
    snprintf(name, sizeof name, "%s.%s", prefix, bias);
    const float *b = w ? tensor_f32(m, name, err) : NULL;
    if (!b)
        return -1;
    g->n_out = n_out;
    g->n_in = n_in;
    g->w = w + (size_t)row_offset * n_in;
    g->bias = b + row_offset;
    g->precision = precision;
    if (gemm_pack(g, err) < 0)
        return rc_prefix(err, "%s: %s", m->ckpt.path, prefix);
    release_pages(m, g->w, sizeof(float) * (size_t)n_out * n_in);
    return 0;
}

/* Where conv_from folds: the folded biases stay with the model, the folded
 * weights only until they are packed. */
typedef struct fold_buffers {
    float *bias;    /* the next convolution's folded bias goes here (advanced by conv_from) */
    float *weights; /* scratch for one convolution's folded weights (the largest) */
} fold_buffers;

/* Folds a convolution's BatchNorm (eval mode) into its weights:
 * w' = w * gamma / sqrt(var + eps), b' = beta - mean * gamma / sqrt(var + eps),
 * reordering w from (c_out, c_in, k, k) to (c_out, k, k, c_in) for gemm_conv2d,
 * then packs w' (the packed panels are all the products read: gemm.w is
 * left NULL). */
static int conv_from(captioner *m, conv_layer *conv, const char *prefix, int c_in, int c_out, int kernel,
                     int stride, fold_buffers *fold, rc_error *err)
{
    static const char *parts[] = {"convolution.weight", "normalization.weight", "normalization.bias",
                                  "normalization.running_mean", "normalization.running_var"};
    const float *p[5];
    char name[160];
    for (int i = 0; i < 5; i++) {
        snprintf(name, sizeof name, "%s.%s", prefix, parts[i]);
        if (!(p[i] = tensor_f32(m, name, err)))
            return -1;
    }
    const float *w = p[0], *gamma = p[1], *beta = p[2], *mean = p[3], *var = p[4];
    const size_t n_weights = (size_t)c_out * kernel * kernel * c_in;
    float *wf = fold->weights, *bf = fold->bias;
    fold->bias += c_out;
    const double eps = m->cfg.batch_norm_eps;
#pragma omp parallel for schedule(static) if (n_weights > 65536)
    for (int o = 0; o < c_out; o++) {
        const double scale = gamma[o] / sqrt((double)var[o] + eps);
        bf[o] = (float)(beta[o] - mean[o] * scale);
        /* written in order; the reads stay within filter o (L1-sized) */
        const float *from = w + (size_t)o * c_in * kernel * kernel;
        float *to = wf + (size_t)o * kernel * kernel * c_in;
        for (int tap = 0; tap < kernel * kernel; tap++)
            for (int i = 0; i < c_in; i++)
                *to++ = (float)(from[(size_t)i * kernel * kernel + tap] * scale);
    }
    conv->c_in = c_in;
    conv->c_out = c_out;
    conv->kernel = kernel;
    conv->stride = stride;
    conv->pad = kernel / 2;
    conv->gemm = (gemm_weights){
        .n_out = c_out, .n_in = kernel * kernel * c_in, .w = wf, .bias = bf, .precision = m->encoder_precision};
    const int packed = gemm_pack(&conv->gemm, err);
    conv->gemm.w = NULL;
    if (packed < 0)
        return rc_prefix(err, "%s: %s", m->ckpt.path, prefix);
    release_pages(m, w, sizeof(float) * n_weights);
    return 0;
}

/* Floats of all folded convolution biases of cfg, and of the largest
 * convolution's weights. */
static void fold_sizes(const model_tensor_spec *specs, int n, size_t *biases, size_t *largest)
{
    *biases = *largest = 0;
    for (int i = 0; i < n; i++)
        if (specs[i].ndim == 4) { /* a convolution weight: (c_out, c_in, k, k) */
            const size_t weights =
                (size_t)(specs[i].shape[0] * specs[i].shape[1] * specs[i].shape[2] * specs[i].shape[3]);
            *biases += (size_t)specs[i].shape[0];
            *largest = weights > *largest ? weights : *largest;
        }
}

static int build_encoder(captioner *m, fold_buffers *fold, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    char prefix[96];
    if (conv_from(m, &m->stem, "encoder.embedder.embedder", c->num_channels, c->embedding_size, 7, 2, fold,
                  err) < 0)
        return -1;
    int b = 0;
    for (int s = 0; s < c->n_stages; s++)
        for (int j = 0; j < c->depths[s]; j++, b++) {
            bottleneck *blk = &m->blocks[b];
            const int c_in = block_in_channels(c, s, j), c_out = c->hidden_sizes[s];
            const int width = c_out / c->bottleneck_reduction, stride = block_stride(s, j);
            blk->has_shortcut = c_in != c_out || stride != 1;
            if (blk->has_shortcut) {
                snprintf(prefix, sizeof prefix, "encoder.encoder.stages.%d.layers.%d.shortcut", s, j);
                if (conv_from(m, &blk->shortcut, prefix, c_in, c_out, 1, stride, fold, err) < 0)
                    return -1;
            }
            conv_layer *convs[3] = {&blk->reduce, &blk->spatial, &blk->expand};
            const int ins[3] = {c_in, width, width}, outs[3] = {width, width, c_out}, ks[3] = {1, 3, 1};
            const int strides[3] = {1, stride, 1};
            for (int k = 0; k < 3; k++) {
                snprintf(prefix, sizeof prefix, "encoder.encoder.stages.%d.layers.%d.layer.%d", s, j, k);
                if (conv_from(m, convs[k], prefix, ins[k], outs[k], ks[k], strides[k], fold, err) < 0)
                    return -1;
            }
        }
    const int dim = c->embed_dim;
    if (linear_from(m, &m->vis_proj, "vis_proj", "weight", "bias", dim, c->hidden_sizes[c->n_stages - 1], 0,
                    m->encoder_precision, err) < 0 ||
        linear_from(m, &m->graph_msg, "graph_layer.msg_linear", "weight", "bias", dim, dim, 0, m->encoder_precision,
                    err) < 0)
        return -1;
    return 0;
}

static int build_decoder(captioner *m, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    const int dim = c->embed_dim;
    char prefix[96], name[128];
    if (!(m->token_embedding = tensor_f32(m, "embedding.weight", err)) ||
        !(m->pos_encoder = tensor_f32(m, "pos_encoder", err)))
        return -1;
    for (int i = 0; i < c->num_layers; i++) {
        decoder_layer *L = &m->layers[i];
        struct {
            gemm_weights *g;
            const char *module, *weight, *bias;
            int n_out, n_in, row_offset;
        } parts[] = {
            {&L->self_qkv, "self_attn", "in_proj_weight", "in_proj_bias", 3 * dim, dim, 0},
            {&L->self_out, "self_attn.out_proj", "weight", "bias", dim, dim, 0},
            {&L->cross_q, "multihead_attn", "in_proj_weight", "in_proj_bias", dim, dim, 0},
            {&L->cross_kv, "multihead_attn", "in_proj_weight", "in_proj_bias", 2 * dim, dim, dim},
            {&L->cross_out, "multihead_attn.out_proj", "weight", "bias", dim, dim, 0},
            {&L->ffn_up, "linear1", "weight", "bias", c->ffn_dim, dim, 0},
            {&L->ffn_down, "linear2", "weight", "bias", dim, c->ffn_dim, 0},
        };
        for (size_t k = 0; k < sizeof parts / sizeof parts[0]; k++) {
            snprintf(prefix, sizeof prefix, "decoder.layers.%d.%s", i, parts[k].module);
            if (linear_from(m, parts[k].g, prefix, parts[k].weight, parts[k].bias, parts[k].n_out, parts[k].n_in,
                            parts[k].row_offset, m->decoder_precision, err) < 0)
                return -1;
        }
        for (int k = 0; k < 3; k++) {
            snprintf(name, sizeof name, "decoder.layers.%d.norm%d.weight", i, k + 1);
            if (!(L->norm_w[k] = tensor_f32(m, name, err)))
                return -1;
            snprintf(name, sizeof name, "decoder.layers.%d.norm%d.bias", i, k + 1);
            if (!(L->norm_b[k] = tensor_f32(m, name, err)))
                return -1;
        }
    }
    return linear_from(m, &m->fc_out, "fc_out", "weight", "bias", c->vocab_size, dim, 0, m->decoder_precision, err);
}

int model_build(captioner *m, const cfg_model *cfg, ckpt_file *ckpt, rc_error *err)
{
    return model_build_with(m, cfg, ckpt, NULL, err);
}

static const char *const model_precision_names[] = {[MODEL_FP32] = "fp32", [MODEL_BF16] = "bf16",
                                                    [MODEL_BF16_ALL] = "bf16-all"};

int model_precision_parse(const char *name, model_precision *precision, rc_error *err)
{
    for (int p = MODEL_FP32; p <= MODEL_BF16_ALL; p++)
        if (strcmp(name, model_precision_names[p]) == 0) {
            *precision = (model_precision)p;
            return 0;
        }
    return rc_fail(err, "unknown precision '%s' (expected fp32, bf16 or bf16-all)", name);
}

const char *model_precision_name(model_precision precision)
{
    return precision >= MODEL_FP32 && precision <= MODEL_BF16_ALL ? model_precision_names[precision] : "?";
}

model_options model_precision_options(model_precision precision)
{
    return (model_options){
        .encoder_precision = precision == MODEL_BF16_ALL ? GEMM_BF16 : GEMM_FP32,
        .decoder_precision = precision == MODEL_BF16 || precision == MODEL_BF16_ALL ? GEMM_BF16 : GEMM_FP32};
}

int model_build_with(captioner *m, const cfg_model *cfg, ckpt_file *ckpt, const model_options *options,
                     rc_error *err)
{
    memset(m, 0, sizeof *m);
    m->cfg = *cfg;
    m->encoder_precision = options ? options->encoder_precision : GEMM_FP32;
    m->decoder_precision = options ? options->decoder_precision : GEMM_FP32;
    m->ckpt = *ckpt;
    memset(ckpt, 0, sizeof *ckpt);
    const char *path = m->ckpt.path;
    if (cfg_validate(cfg, err) < 0) {
        rc_prefix(err, "model configuration");
        goto fail;
    }
    model_tensor_spec *specs = NULL;
    int n_specs = 0;
    if (model_tensor_specs(cfg, &specs, &n_specs, err) < 0)
        goto fail;
    if (check_tensors(&m->ckpt, specs, n_specs, err) < 0) {
        free(specs);
        goto fail;
    }
    size_t bias_floats, weight_floats;
    fold_sizes(specs, n_specs, &bias_floats, &weight_floats);
    free(specs);
    m->folded = malloc(sizeof(float) * (bias_floats ? bias_floats : 1));
    fold_buffers fold = {m->folded, malloc(sizeof(float) * (weight_floats ? weight_floats : 1))};
    m->n_blocks = 0;
    for (int s = 0; s < cfg->n_stages; s++)
        m->n_blocks += cfg->depths[s];
    m->blocks = calloc(m->n_blocks, sizeof *m->blocks);
    m->layers = calloc(cfg->num_layers, sizeof *m->layers);
    if (!m->folded || !fold.weights || !m->blocks || !m->layers) {
        free(fold.weights);
        rc_fail(err, "%s: out of memory building the model", path);
        goto fail;
    }
    const int built = build_encoder(m, &fold, err) == 0 && build_decoder(m, err) == 0;
    free(fold.weights);
    if (!built)
        goto fail;
    /* What the forward passes still read from the file (embeddings, biases,
     * norms: a few MB) comes back on first touch. */
    release_pages(m, m->ckpt.map, m->ckpt.map_size);
    return 0;
fail:
    model_free(m);
    return -1;
}

int model_load(captioner *m, const cfg_model *cfg, const char *path, rc_error *err)
{
    return model_load_with(m, cfg, path, NULL, err);
}

int model_load_with(captioner *m, const cfg_model *cfg, const char *path, const model_options *options,
                    rc_error *err)
{
    ckpt_file ckpt;
    memset(m, 0, sizeof *m);
    if (ckpt_open(&ckpt, path, err) < 0)
        return -1;
    return model_build_with(m, cfg, &ckpt, options, err);
}

/* Frees the packed copies of every layer's weights (gemm_pack at load). */
static void unpack_weights(captioner *m)
{
    gemm_unpack(&m->stem.gemm);
    for (int b = 0; m->blocks && b < m->n_blocks; b++) {
        conv_layer *convs[4] = {&m->blocks[b].reduce, &m->blocks[b].spatial, &m->blocks[b].expand,
                                &m->blocks[b].shortcut};
        for (int i = 0; i < 4; i++)
            gemm_unpack(&convs[i]->gemm);
    }
    gemm_unpack(&m->vis_proj);
    gemm_unpack(&m->graph_msg);
    for (int i = 0; m->layers && i < m->cfg.num_layers; i++) {
        decoder_layer *L = &m->layers[i];
        gemm_weights *parts[7] = {&L->self_qkv, &L->self_out, &L->cross_q, &L->cross_kv,
                                  &L->cross_out, &L->ffn_up, &L->ffn_down};
        for (int k = 0; k < 7; k++)
            gemm_unpack(parts[k]);
    }
    gemm_unpack(&m->fc_out);
}

void model_free(captioner *m)
{
    unpack_weights(m);
    free(m->blocks);
    free(m->layers);
    free(m->folded);
    for (int i = 0; i < m->n_converted; i++)
        free(m->converted[i]);
    free(m->converted);
    ckpt_close(&m->ckpt);
    memset(m, 0, sizeof *m);
}
