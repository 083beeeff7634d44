#include "decoder.h"

#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "ops.h"

/* The cache row of slot's own position (see dec_cache.kv_rows). */
static int own_row(const dec_cache *cache, int slot, int position)
{
    return (slot * cache->n_layers) * cache->max_positions + position;
}

/* n_memories < 0: one memory per slot, no indirection. */
static int cache_build(dec_cache *cache, const captioner *m, int n_slots, int n_memories, int max_positions,
                       rc_error *err)
{
    const cfg_model *c = &m->cfg;
    memset(cache, 0, sizeof *cache);
    if (max_positions > c->max_positions)
        return rc_fail(err, "%d positions requested, the model has %d", max_positions, c->max_positions);
    const int shared = n_memories >= 0;
    cache->n_slots = n_slots;
    cache->n_memories = shared ? n_memories : n_slots;
    cache->n_layers = c->num_layers;
    cache->max_positions = max_positions;
    cache->memory_tokens = cfg_memory_tokens(c);
    cache->dim = c->embed_dim;
    cache->n_threads = omp_get_max_threads();
    const size_t dim = (size_t)c->embed_dim, rows = (size_t)n_slots;
    const int longest = max_positions > cache->memory_tokens ? max_positions : cache->memory_tokens;
    cache->self_kv = malloc(sizeof(float) * rows * c->num_layers * max_positions * 2 * dim);
    cache->cross_kv = malloc(sizeof(float) * cache->n_memories * c->num_layers * cache->memory_tokens * 2 * dim);
    if (shared) {
        cache->memory_of = malloc(sizeof(int) * rows);
        cache->kv_rows = malloc(sizeof(int) * rows * max_positions);
        cache->kv_rows_tmp = malloc(sizeof(int) * rows * max_positions);
        if (!cache->memory_of || !cache->kv_rows || !cache->kv_rows_tmp) {
            dec_cache_free(cache);
            return rc_fail(err, "out of memory for the decoder cache (%d sequences)", n_slots);
        }
        for (int s = 0; s < n_slots; s++) {
            cache->memory_of[s] = n_memories > 0 ? s % n_memories : 0;
            for (int p = 0; p < max_positions; p++)
                cache->kv_rows[(size_t)s * max_positions + p] = own_row(cache, s, p);
        }
    }
    cache->x = malloc(sizeof(float) * rows * dim);
    cache->qkv = malloc(sizeof(float) * rows * 3 * dim);
    cache->attn = malloc(sizeof(float) * rows * dim);
    cache->tmp = malloc(sizeof(float) * rows * dim);
    cache->ffn = malloc(sizeof(float) * rows * c->ffn_dim);
    cache->scores_len = longest * c->num_heads;
    cache->scores = malloc(sizeof(float) * cache->n_threads * cache->scores_len);
    if (!cache->self_kv || !cache->cross_kv || !cache->x || !cache->qkv || !cache->attn || !cache->tmp ||
        !cache->ffn || !cache->scores) {
        dec_cache_free(cache);
        return rc_fail(err, "out of memory for the decoder cache (%d sequences)", n_slots);
    }
    return 0;
}

int dec_cache_build(dec_cache *cache, const captioner *m, int n_slots, int max_positions, rc_error *err)
{
    return cache_build(cache, m, n_slots, -1, max_positions, err);
}

int dec_cache_build_beams(dec_cache *cache, const captioner *m, int n_slots, int n_memories, int max_positions,
                          rc_error *err)
{
    if (n_memories < 1 || n_memories > n_slots)
        return rc_fail(err, "%d memories for %d sequences: need 1 to %d", n_memories, n_slots, n_slots);
    return cache_build(cache, m, n_slots, n_memories, max_positions, err);
}

void dec_follow(dec_cache *cache, int n, const int *slots, const int *parents, int n_positions)
{
    const size_t P = (size_t)cache->max_positions;
    for (int i = 0; i < n; i++)
        memcpy(cache->kv_rows_tmp + (size_t)i * P, cache->kv_rows + (size_t)parents[i] * P,
               sizeof(int) * n_positions);
    for (int i = 0; i < n; i++)
        memcpy(cache->kv_rows + (size_t)slots[i] * P, cache->kv_rows_tmp + (size_t)i * P, sizeof(int) * n_positions);
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
    free(cache->memory_of);
    free(cache->kv_rows);
    free(cache->kv_rows_tmp);
    memset(cache, 0, sizeof *cache);
}

static float *self_kv_at(const dec_cache *cache, int slot, int layer, int position)
{
    return cache->self_kv +
           (((size_t)slot * cache->n_layers + layer) * cache->max_positions + position) * 2 * cache->dim;
}

/* The cross-attention keys and values of memory row `memory`. */
static float *cross_kv_at(const dec_cache *cache, int memory, int layer)
{
    return cache->cross_kv + ((size_t)memory * cache->n_layers + layer) * cache->memory_tokens * 2 * cache->dim;
}

static int memory_row(const dec_cache *cache, int slot)
{
    return cache->memory_of ? cache->memory_of[slot] : slot;
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

const char *dec_part_name(dec_part part)
{
    static const char *const names[DEC_N_PARTS] = {
        "embed",     "self_qkv", "self_attention", "self_out", "cross_q", "cross_attention",
        "cross_out", "ffn_up",   "ffn_down",       "layernorm", "fc_out"};
    return part >= 0 && part < DEC_N_PARTS ? names[part] : "?";
}

/* With a profile: adds the time since `since` to `part` and returns now. */
static double lap(const dec_cache *cache, dec_part part, double since)
{
    if (!cache->profile)
        return 0.0;
    const double now = omp_get_wtime();
    cache->profile->seconds[part] += now - since;
    return now;
}

void dec_step(const captioner *m, dec_cache *cache, int n, const int *slots, const int *tokens,
              const int *positions, float *logits)
{
    const cfg_model *c = &m->cfg;
    const int dim = c->embed_dim, heads = c->num_heads, head_dim = dim / heads, L = cache->memory_tokens;
    const float eps = (float)c->layer_norm_eps;
    float *x = cache->x;
    if (cache->kv_rows)
        for (int i = 0; i < n; i++)
            cache->kv_rows[(size_t)slots[i] * cache->max_positions + positions[i]] =
                own_row(cache, slots[i], positions[i]);
    double t = cache->profile ? omp_get_wtime() : 0.0;
    for (int i = 0; i < n; i++) {
        const float *emb = m->token_embedding + (size_t)tokens[i] * dim;
        const float *pos = m->pos_encoder + (size_t)positions[i] * dim;
        for (int d = 0; d < dim; d++)
            x[(size_t)i * dim + d] = emb[d] + pos[d];
    }
    t = lap(cache, DEC_EMBED, t);
    for (int layer = 0; layer < c->num_layers; layer++) {
        const decoder_layer *W = &m->layers[layer];
        /* self-attention over this sequence's positions 0..positions[i] */
        gemm_linear(&W->self_qkv, n, x, dim, cache->qkv, 3 * dim, NULL);
        t = lap(cache, DEC_SELF_QKV, t);
        /* one sequence: no thread team (each fork and join can cost a
         * scheduler time slice when other processes share the cores) */
#pragma omp parallel for schedule(static) if (n > 1)
        for (int i = 0; i < n; i++) {
            const float *row = cache->qkv + (size_t)i * 3 * dim;
            float *kv = self_kv_at(cache, slots[i], layer, positions[i]);
            memcpy(kv, row + dim, sizeof(float) * 2 * dim);
            float *scores = cache->scores + (size_t)omp_get_thread_num() * cache->scores_len;
            if (cache->kv_rows)
                ops_attention_rows(row, cache->self_kv + (size_t)layer * cache->max_positions * 2 * dim,
                                   cache->kv_rows + (size_t)slots[i] * cache->max_positions, positions[i] + 1,
                                   2 * dim, dim, heads, head_dim, cache->attn + (size_t)i * dim, scores);
            else
                ops_attention(row, self_kv_at(cache, slots[i], layer, 0), positions[i] + 1, 2 * dim, dim, heads,
                              head_dim, cache->attn + (size_t)i * dim, scores);
        }
        t = lap(cache, DEC_SELF_ATTENTION, t);
        const gemm_epilogue add_x = {.residual = x, .ld_residual = dim};
        gemm_linear(&W->self_out, n, cache->attn, dim, cache->tmp, dim, &add_x);
        t = lap(cache, DEC_SELF_OUT, t);
        ops_layernorm(cache->tmp, x, n, dim, W->norm_w[0], W->norm_b[0], eps);
        t = lap(cache, DEC_LAYERNORM, t);
        /* cross-attention to the image's memory tokens */
        gemm_linear(&W->cross_q, n, x, dim, cache->qkv, dim, NULL);
        t = lap(cache, DEC_CROSS_Q, t);
#pragma omp parallel for schedule(static) if (n > 1)
        for (int i = 0; i < n; i++)
            ops_attention(cache->qkv + (size_t)i * dim, cross_kv_at(cache, memory_row(cache, slots[i]), layer), L,
                          2 * dim, dim, heads, head_dim, cache->attn + (size_t)i * dim,
                          cache->scores + (size_t)omp_get_thread_num() * cache->scores_len);
        t = lap(cache, DEC_CROSS_ATTENTION, t);
        gemm_linear(&W->cross_out, n, cache->attn, dim, cache->tmp, dim, &add_x);
        t = lap(cache, DEC_CROSS_OUT, t);
        ops_layernorm(cache->tmp, x, n, dim, W->norm_w[1], W->norm_b[1], eps);
        t = lap(cache, DEC_LAYERNORM, t);
        /* feed-forward */
        const gemm_epilogue relu = {.relu = 1};
        gemm_linear(&W->ffn_up, n, x, dim, cache->ffn, c->ffn_dim, &relu);
        t = lap(cache, DEC_FFN_UP, t);
        gemm_linear(&W->ffn_down, n, cache->ffn, c->ffn_dim, cache->tmp, dim, &add_x);
        t = lap(cache, DEC_FFN_DOWN, t);
        ops_layernorm(cache->tmp, x, n, dim, W->norm_w[2], W->norm_b[2], eps);
        t = lap(cache, DEC_LAYERNORM, t);
    }
    gemm_linear(&m->fc_out, n, x, dim, logits, c->vocab_size, NULL);
    lap(cache, DEC_FC_OUT, t);
}
