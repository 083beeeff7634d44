#include "encoder.h"

#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* Images encoded together: enough rows for efficient products in the last
 * stage (7x7 = 49 rows per image), few enough to keep scratch memory small. */
enum { ENC_GROUP = 8 };

/* Scratch buffers for one group of images, each sized for the largest
 * activation of the network. */
typedef struct enc_scratch {
    float *cur, *next;   /* block input / output: (group, h, w, c) */
    float *t1, *t2, *sc; /* reduce, spatial and shortcut outputs */
    float *padded;       /* a padded convolution's input: (group, h + 2 pad, w + 2 pad, c_in) */
} enc_scratch;

/* Applies one convolution to `batch` NHWC images x (h, w, c_in) giving y
 * (oh, ow, c_out), with the epilogue (residual add, ReLU) fused. A padded
 * one reads a padded copy of x (`padded`: far smaller than the patches). */
static void conv_forward(const conv_layer *cv, int batch, int h, int w, const float *x, float *y, float *padded,
                         const gemm_epilogue *ep)
{
    if (cv->kernel == 1 && cv->stride == 1) {
        gemm_linear(&cv->gemm, batch * h * w, x, cv->c_in, y, cv->c_out, ep);
        return;
    }
    if (cv->pad > 0) {
        const int hp = h + 2 * cv->pad, wp = w + 2 * cv->pad;
        const size_t in_image = (size_t)h * w * cv->c_in, padded_image = (size_t)hp * wp * cv->c_in;
#pragma omp parallel for schedule(static)
        for (int b = 0; b < batch; b++)
            ops_pad(x + b * in_image, h, w, cv->c_in, cv->pad, padded + b * padded_image);
        x = padded;
        h = hp;
        w = wp;
    }
    const gemm_conv conv = {.x = x, .batch = batch, .h = h, .w = w, .c_in = cv->c_in, .kernel = cv->kernel,
                            .stride = cv->stride};
    gemm_conv2d(&cv->gemm, &conv, y, cv->c_out, ep);
}

/* Padded input of a convolution over side x side pixels (0 when unpadded). */
static size_t padded_size(const conv_layer *cv, int side)
{
    return cv->pad > 0 ? (size_t)(side + 2 * cv->pad) * (side + 2 * cv->pad) * cv->c_in : 0;
}

/* Largest activation and padded input, per image, over the network. */
static void scratch_sizes(const captioner *m, size_t *act, size_t *padded)
{
    const cfg_model *c = &m->cfg;
    *padded = padded_size(&m->stem, c->image_size);
    int side = ops_conv_out(c->image_size, 7, 2, 3);
    *act = (size_t)side * side * c->embedding_size;
    size_t input = (size_t)c->image_size * c->image_size * c->num_channels;
    *act = *act > input ? *act : input;
    side = ops_conv_out(side, 3, 2, 1);
    for (int b = 0; b < m->n_blocks; b++) {
        const bottleneck *blk = &m->blocks[b];
        const int out_side = ops_conv_out(side, 3, blk->spatial.stride, 1);
        const size_t sizes[3] = {(size_t)side * side * blk->reduce.c_out,
                                 (size_t)out_side * out_side * blk->expand.c_out, padded_size(&blk->spatial, side)};
        *act = sizes[0] > *act ? sizes[0] : *act;
        *act = sizes[1] > *act ? sizes[1] : *act;
        *padded = sizes[2] > *padded ? sizes[2] : *padded;
        side = out_side;
    }
}

/* ResNet on one group: NCHW images in, channels-last features (group, L, C)
 * left in s->cur. */
static void resnet_forward(const captioner *m, int group, const float *images, enc_scratch *s)
{
    const cfg_model *c = &m->cfg;
    const int size = c->image_size;
    const size_t image_floats = (size_t)c->num_channels * size * size;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < group; b++)
        ops_chw_to_hwc(images + b * image_floats, c->num_channels, size, size, s->next + b * image_floats);

    const gemm_epilogue relu = {.relu = 1};
    conv_forward(&m->stem, group, size, size, s->next, s->t1, s->padded, &relu);
    int side = ops_conv_out(size, 7, 2, 3);
    const int pooled = ops_conv_out(side, 3, 2, 1);
    const size_t stem_image = (size_t)side * side * c->embedding_size;
    const size_t pooled_image = (size_t)pooled * pooled * c->embedding_size;
#pragma omp parallel for schedule(static)
    for (int b = 0; b < group; b++)
        ops_maxpool(s->t1 + b * stem_image, side, side, c->embedding_size, 3, 2, 1, s->cur + b * pooled_image);
    side = pooled;

    for (int i = 0; i < m->n_blocks; i++) {
        const bottleneck *blk = &m->blocks[i];
        const int out_side = ops_conv_out(side, 3, blk->spatial.stride, 1);
        conv_forward(&blk->reduce, group, side, side, s->cur, s->t1, s->padded, &relu);
        conv_forward(&blk->spatial, group, side, side, s->t1, s->t2, s->padded, &relu);
        const float *residual = s->cur;
        if (blk->has_shortcut) {
            conv_forward(&blk->shortcut, group, side, side, s->cur, s->sc, s->padded, NULL);
            residual = s->sc;
        }
        const gemm_epilogue add_relu = {.residual = residual, .ld_residual = blk->expand.c_out, .relu = 1};
        conv_forward(&blk->expand, group, out_side, out_side, s->t2, s->next, s->padded, &add_relu);
        float *swap = s->cur;
        s->cur = s->next;
        s->next = swap;
        side = out_side;
    }
}

/* vis_proj then graph propagation for one group; features (group*L, C) in. */
static void project_and_propagate(const captioner *m, int group, const float *features, float *vis_tokens,
                                  float *memory, float *agg)
{
    const cfg_model *c = &m->cfg;
    const int L = cfg_memory_tokens(c), dim = c->embed_dim;
    const size_t rows = (size_t)group * L;
    gemm_linear(&m->vis_proj, (int)rows, features, m->vis_proj.n_in, vis_tokens, dim, NULL);
    memcpy(memory, vis_tokens, sizeof(float) * rows * dim);
    for (int step = 0; step < c->graph_steps; step++) {
#pragma omp parallel for schedule(static)
        for (int b = 0; b < group; b++)
            ops_roll_mean(memory + (size_t)b * L * dim, L, dim, c->graph_window / 2, agg + (size_t)b * L * dim);
        /* x = hardtanh(x + msg_linear(mean)): the product lands on top of x */
        const gemm_epilogue add = {.residual = memory, .ld_residual = dim};
        float *messages = agg + rows * dim;
        gemm_linear(&m->graph_msg, (int)rows, agg, dim, messages, dim, &add);
        ops_clamp(messages, rows * dim, -1.0f, 1.0f);
        memcpy(memory, messages, sizeof(float) * rows * dim);
    }
}

int enc_workspace_build(enc_workspace *ws, const captioner *m, int max_batch, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    *ws = (enc_workspace){.group = max_batch < 1 ? 1 : max_batch < ENC_GROUP ? max_batch : ENC_GROUP};
    size_t act, padded;
    scratch_sizes(m, &act, &padded);
    const size_t floats[6] = {act, act, act, act, act, padded};
    int ok = 1;
    for (int i = 0; i < 6; i++)
        ok &= (ws->buffers[i] = malloc(sizeof(float) * (floats[i] * ws->group + 1))) != NULL;
    const size_t token_floats = (size_t)ws->group * cfg_memory_tokens(c) * c->embed_dim;
    ws->vis_tokens = malloc(sizeof(float) * token_floats);
    ws->memory = malloc(sizeof(float) * token_floats);
    ws->graph = malloc(sizeof(float) * token_floats * 2);
    if (!ok || !ws->vis_tokens || !ws->memory || !ws->graph) {
        enc_workspace_free(ws);
        return rc_fail(err, "out of memory for encoder scratch (%d images at once)", max_batch);
    }
    return 0;
}

void enc_workspace_free(enc_workspace *ws)
{
    for (int i = 0; i < 6; i++)
        free(ws->buffers[i]);
    free(ws->vis_tokens);
    free(ws->memory);
    free(ws->graph);
    *ws = (enc_workspace){0};
}

void enc_forward_with(const captioner *m, enc_workspace *ws, int batch, const float *images, const enc_outputs *out)
{
    const cfg_model *c = &m->cfg;
    const int L = cfg_memory_tokens(c), dim = c->embed_dim, channels = c->hidden_sizes[c->n_stages - 1];
    const size_t image_floats = (size_t)c->num_channels * c->image_size * c->image_size;
    for (int first = 0; first < batch; first += ws->group) {
        const int group = batch - first < ws->group ? batch - first : ws->group;
        enc_scratch s = {ws->buffers[0], ws->buffers[1], ws->buffers[2], ws->buffers[3], ws->buffers[4],
                         ws->buffers[5]};
        resnet_forward(m, group, images + first * image_floats, &s);
        project_and_propagate(m, group, s.cur, ws->vis_tokens, ws->memory, ws->graph);
        if (out->features)
            memcpy(out->features + (size_t)first * L * channels, s.cur, sizeof(float) * group * L * channels);
        if (out->vis_tokens)
            memcpy(out->vis_tokens + (size_t)first * L * dim, ws->vis_tokens, sizeof(float) * group * L * dim);
        if (out->memory)
            memcpy(out->memory + (size_t)first * L * dim, ws->memory, sizeof(float) * group * L * dim);
    }
}

int enc_forward(const captioner *m, int batch, const float *images, const enc_outputs *out, rc_error *err)
{
    enc_workspace ws;
    if (enc_workspace_build(&ws, m, batch, err) < 0)
        return -1;
    enc_forward_with(m, &ws, batch, images, out);
    enc_workspace_free(&ws);
    return 0;
}
