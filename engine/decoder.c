#include "decoder.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

int dec_cache_build(dec_cache *cache, const captioner *m, int n_slots, int max_positions, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    memset(cache, 0, sizeof *cache);
    if (max_positions > c->max_positions)
        return rc_fail(err, "%d positions requested, the model has %d", max_positions, c->max_positions);
    cache->n_slots = n_slots;
    cache->n_layers = c->num_layers;
    cache->max_positions = max_positions;
    cache->memory_tokens = cfg_memory_tokens(c);
    cache->dim = c->embed_dim;
    cache->n_threads = omp_get_max_threads();
    const size_t dim = (size_t)c->embed_dim, rows = (size_t)n_slots;
    const int longest = max_positions > cache->memory_tokens ? max_positions : cache->memory_tokens;
    cache->self_kv = malloc(sizeof(float) * rows * c->num_layers * max_positions * 2 * dim);
    cache->cross_kv = malloc(sizeof(float) * rows * c->num_layers * cache->memory_tokens * 2 * dim);
    cache->x = malloc(sizeof(float) * rows * dim);
    cache->qkv = malloc(sizeof(float) * rows * 3 * dim);
    cache->attn = malloc(sizeof(float) * rows * dim);
    cache->tmp = malloc(sizeof(float) * rows * dim);
    cache->ffn = malloc(sizeof(float) * rows * c->ffn_dim);
    cache->scores_len = longest;
    cache->scores = malloc(sizeof(float) * cache->n_threads * longest);
    if (!cache->self_kv || !cache->cross_kv || !cache->x || !cache->qkv || !cache->attn || !cache->tmp ||
        !cache->ffn || !cache->scores) {
        dec_cache_free(cache);
        return rc_fail(err, "out of memory for the decoder cache (%d sequences)", n_slots);
    }
    return 0;
}

void dec_cache_free(dec_cache *cache)
{
    free(cache->self_kv);
    free(cache->cross_kv);
    free(cache->x);
    free(cache->qkv);
    free(cache->attn);
    free(cache->tmp);
    free(cache->ffn);
    free(cache->scores);
    memset(cache, 0, sizeof *cache);
}

static float *self_kv_at(const dec_cache *cache, int slot, int layer, int position)
{
    return cache->self_kv +
           (((size_t)slot * cache->n_layers + layer) * cache->max_positions + position) * 2 * cache->dim;
}

static float *cross_kv_at(const dec_cache *cache, int slot, int layer)
{
    return cache->cross_kv + ((size_t)slot * cache->n_layers + layer) * cache->memory_tokens * 2 * cache->dim;
}

void dec_set_memory(const captioner *m, dec_cache *cache, int n, const int *slots, const float *memory,
                    float *scratch)
{
    const int L = cache->memory_tokens, dim = cache->dim;
    const size_t per_image = (size_t)L * 2 * dim;
    for (int layer = 0; layer < cache->n_layers; layer++) {
        gemm_linear(&m->layers[layer].cross_kv, n * L, memory, dim, scratch, 2 * dim, NULL);
        for (int i = 0; i < n; i++)
            memcpy(cross_kv_at(cache, slots[i], layer), scratch + i * per_image, sizeof(float) * per_image);
    }
}

void dec_step(const captioner *m, dec_cache *cache, int n, const int *slots, const int *tokens,
              const int *positions, float *logits)
{
    const cfg_model *c = &m->cfg;
    const int dim = c->embed_dim, heads = c->num_heads, head_dim = dim / heads, L = cache->memory_tokens;
    const float eps = (float)c->layer_norm_eps;
    float *x = cache->x;
    for (int i = 0; i < n; i++) {
        const float *emb = m->token_embedding + (size_t)tokens[i] * dim;
        const float *pos = m->pos_encoder + (size_t)positions[i] * dim;
        for (int d = 0; d < dim; d++)
            x[(size_t)i * dim + d] = emb[d] + pos[d];
    }
    for (int layer = 0; layer < c->num_layers; layer++) {
        const decoder_layer *W = &m->layers[layer];
        /* self-attention over this sequence's positions 0..positions[i] */
        gemm_linear(&W->self_qkv, n, x, dim, cache->qkv, 3 * dim, NULL);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++) {
            const float *row = cache->qkv + (size_t)i * 3 * dim;
            float *kv = self_kv_at(cache, slots[i], layer, positions[i]);
            memcpy(kv, row + dim, sizeof(float) * 2 * dim);
            ops_attention(row, self_kv_at(cache, slots[i], layer, 0), positions[i] + 1, 2 * dim, dim, heads,
                          head_dim, cache->attn + (size_t)i * dim,
                          cache->scores + (size_t)omp_get_thread_num() * cache->scores_len);
        }
        const gemm_epilogue add_x = {.residual = x, .ld_residual = dim};
        gemm_linear(&W->self_out, n, cache->attn, dim, cache->tmp, dim, &add_x);
        ops_layernorm(cache->tmp, n, dim, W->norm_w[0], W->norm_b[0], eps);
        memcpy(x, cache->tmp, sizeof(float) * n * dim);
        /* cross-attention to the image's memory tokens */
        gemm_linear(&W->cross_q, n, x, dim, cache->qkv, dim, NULL);
#pragma omp parallel for schedule(static)
        for (int i = 0; i < n; i++)
            ops_attention(cache->qkv + (size_t)i * dim, cross_kv_at(cache, slots[i], layer), L, 2 * dim, dim,
                          heads, head_dim, cache->attn + (size_t)i * dim,
                          cache->scores + (size_t)omp_get_thread_num() * cache->scores_len);
        gemm_linear(&W->cross_out, n, cache->attn, dim, cache->tmp, dim, &add_x);
        ops_layernorm(cache->tmp, n, dim, W->norm_w[1], W->norm_b[1], eps);
        memcpy(x, cache->tmp, sizeof(float) * n * dim);
        /* feed-forward */
        const gemm_epilogue relu = {.relu = 1};
        gemm_linear(&W->ffn_up, n, x, dim, cache->ffn, c->ffn_dim, &relu);
        gemm_linear(&W->ffn_down, n, cache->ffn, c->ffn_dim, cache->tmp, dim, &add_x);
        ops_layernorm(cache->tmp, n, dim, W->norm_w[2], W->norm_b[2], eps);
        memcpy(x, cache->tmp, sizeof(float) * n * dim);
    }
    gemm_linear(&m->fc_out, n, x, dim, logits, c->vocab_size, NULL);
}
