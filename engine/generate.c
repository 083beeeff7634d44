#include "generate.h"

#include <stdlib.h>

#include "decoder.h"
#include "ops.h"

int gen_greedy(const captioner *m, int n, const float *memory, const gen_options *options, int *ids, int *lens,
               rc_error *err)
{
    const cfg_model *c = &m->cfg;
    const int max_len = options && options->max_len > 0 ? options->max_len : c->max_len;
    if (max_len > c->max_positions)
        return rc_fail(err, "max_len %d exceeds the model's %d positions", max_len, c->max_positions);
    if (n <= 0)
        return 0;
    dec_cache cache;
    if (dec_cache_build(&cache, m, n, max_len, err) < 0)
        return -1;
    const int L = cfg_memory_tokens(c), V = c->vocab_size;
    int *slots = malloc(sizeof(int) * n), *tokens = malloc(sizeof(int) * n), *positions = malloc(sizeof(int) * n);
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    float *scratch = malloc(sizeof(float) * (size_t)n * L * 2 * c->embed_dim);
    if (!slots || !tokens || !positions || !logits || !scratch) {
        free(slots), free(tokens), free(positions), free(logits), free(scratch);
        dec_cache_free(&cache);
        return rc_fail(err, "out of memory for decoding %d images", n);
    }
    for (int i = 0; i < n; i++) {
        slots[i] = i;
        tokens[i] = c->bos_token_id;
        lens[i] = 0;
    }
    dec_set_memory(m, &cache, n, slots, memory, scratch);
    int n_active = n;
    for (int step = 0; step < max_len && n_active > 0; step++) {
        for (int i = 0; i < n_active; i++)
            positions[i] = step;
        dec_step(m, &cache, n_active, slots, tokens, positions, logits);
        int kept = 0;
        for (int i = 0; i < n_active; i++) {
            const int image = slots[i];
            const float *row = logits + (size_t)i * V;
            if (options && options->on_logits)
                options->on_logits(options->ctx, image, step, row, V);
            const int next = ops_argmax(row, V);
            if (next == c->eos_token_id)
                continue;
            ids[(size_t)image * max_len + lens[image]++] = next;
            if (lens[image] == max_len)
                continue;
            slots[kept] = image;
            tokens[kept] = next;
            kept++;
        }
        n_active = kept;
    }
    free(slots), free(tokens), free(positions), free(logits), free(scratch);
    dec_cache_free(&cache);
    return 0;
}

int gen_teacher_forced(const captioner *m, int n, const float *memory, const int *image, const int *const *tokens,
                       const int *n_tokens, double *nll, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    const int L = cfg_memory_tokens(c), V = c->vocab_size, dim = c->embed_dim;
    int longest = 0;
    for (int i = 0; i < n; i++) {
        nll[i] = 0.0;
        if (n_tokens[i] - 1 > c->max_positions)
            return rc_fail(err, "sequence %d has %d tokens; the model has %d positions", i, n_tokens[i],
                           c->max_positions);
        for (int t = 0; t < n_tokens[i]; t++)
            if (tokens[i][t] < 0 || tokens[i][t] >= V)
                return rc_fail(err, "sequence %d token %d is id %d, outside the model's %d classes", i, t,
                               tokens[i][t], V);
        longest = n_tokens[i] - 1 > longest ? n_tokens[i] - 1 : longest;
    }
    if (n <= 0 || longest <= 0)
        return 0;
    dec_cache cache;
    if (dec_cache_build(&cache, m, n, longest, err) < 0)
        return -1;
    int *slots = malloc(sizeof(int) * n), *inputs = malloc(sizeof(int) * n), *positions = malloc(sizeof(int) * n);
    int *rows = malloc(sizeof(int) * n);
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    float *scratch = malloc(sizeof(float) * (size_t)L * 2 * dim);
    if (!slots || !inputs || !positions || !rows || !logits || !scratch) {
        free(slots), free(inputs), free(positions), free(rows), free(logits), free(scratch);
        dec_cache_free(&cache);
        return rc_fail(err, "out of memory for teacher forcing %d sequences", n);
    }
    /* each sequence's slot gets its own image's cross-attention keys/values */
    for (int i = 0; i < n; i++)
        dec_set_memory(m, &cache, 1, &i, memory + (size_t)image[i] * L * dim, scratch);
    for (int step = 0; step < longest; step++) {
        int active = 0;
        for (int i = 0; i < n; i++)
            if (step < n_tokens[i] - 1) {
                slots[active] = i;
                inputs[active] = tokens[i][step];
                positions[active] = step;
                rows[active++] = i;
            }
        dec_step(m, &cache, active, slots, inputs, positions, logits);
        for (int a = 0; a < active; a++) {
            const int i = rows[a];
            const float *row = logits + (size_t)a * V;
            nll[i] += (double)ops_logsumexp(row, V) - (double)row[tokens[i][step + 1]];
        }
    }
    free(slots), free(inputs), free(positions), free(rows), free(logits), free(scratch);
    dec_cache_free(&cache);
    return 0;
}
