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
