/* decoder.h: the Transformer decoder, one token at a time.
 *
 * A dec_cache holds, for each of n_slots sequences, the self-attention keys
 * and values of every position decoded so far and the cross-attention keys
 * and values of its image's memory tokens, computed once per image. A step
 * feeds one token to each of any subset of slots, so finished sequences
 * simply stop being fed and new images can take free slots.
 */
#ifndef RC_DECODER_H
#define RC_DECODER_H

#include "err.h"
#include "model.h"

typedef struct dec_cache {
    int n_slots;        /* sequences held */
    int n_layers;       /* decoder layers */
    int max_positions;  /* positions per sequence (tokens fed at most) */
    int memory_tokens;  /* L */
    int dim;            /* embed_dim */
    float *self_kv;     /* (n_slots, n_layers, max_positions, 2 * dim): key then value per position */
    float *cross_kv;    /* (n_slots, n_layers, memory_tokens, 2 * dim): key then value per memory token */
    /* step scratch, sized for n_slots rows */
    float *x;           /* (n_slots, dim) hidden state */
    float *qkv;         /* (n_slots, 3 * dim) */
    float *attn;        /* (n_slots, dim) attention output before out_proj */
    float *tmp;         /* (n_slots, dim) */
    float *ffn;         /* (n_slots, ffn_dim) */
    float *scores;      /* (n_threads, scores_len) attention weights, one row per thread */
    int scores_len;     /* max(max_positions, memory_tokens) */
    int n_threads;      /* rows of scores */
} dec_cache;

/* Allocates a cache for n_slots sequences of up to max_positions tokens. */
int dec_cache_build(dec_cache *cache, const captioner *m, int n_slots, int max_positions, rc_error *err);
void dec_cache_free(dec_cache *cache);

/* Computes the cross-attention keys and values of n images' memory tokens
 * (n, memory_tokens, dim) into slots[0..n). scratch holds n * L * 2 * dim floats. */
void dec_set_memory(const captioner *m, dec_cache *cache, int n, const int *slots, const float *memory,
                    float *scratch);

/* One decoding step for n sequences: sequence i lives in slots[i], is fed
 * tokens[i] at position positions[i] (its earlier positions must have been
 * fed already) and gets its next-token logits in logits + i * vocab_size. */
void dec_step(const captioner *m, dec_cache *cache, int n, const int *slots, const int *tokens,
              const int *positions, float *logits);

#endif
