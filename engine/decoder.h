/* decoder.h: the Transformer decoder, one token at a time.
 *
 * A dec_cache holds, for each of n_slots sequences, the self-attention keys
 * and values of every position decoded so far and the cross-attention keys
 * and values of its image's memory tokens, computed once per image. A step
 * feeds one token to each of any subset of slots, so finished sequences
 * simply stop being fed and new images can take free slots.
 *
 * For beam search (dec_cache_build_beams) several slots share one image's
 * cross-attention keys and values, and a slot's sequence may continue
 * another slot's: each slot lists, per position, the row of the cache that
 * holds that position's keys and values (written by whichever slot fed it),
 * so reordering beams copies these row numbers (dec_follow), never keys or
 * values. A slot writes its own rows only, position p at the step that
 * feeds p, so rows other sequences still read are never overwritten.
 */
#ifndef RC_DECODER_H
#define RC_DECODER_H

#include "err.h"
#include "model.h"

/* The parts of a decoding step, for dec_profile. */
typedef enum dec_part {
    DEC_EMBED,           /* token and position embeddings */
    DEC_SELF_QKV,        /* self-attention's query/key/value product */
    DEC_SELF_ATTENTION,  /* attending over each sequence's earlier positions */
    DEC_SELF_OUT,        /* self-attention's output product (+ residual) */
    DEC_CROSS_Q,         /* cross-attention's query product */
    DEC_CROSS_ATTENTION, /* attending over each image's memory tokens */
    DEC_CROSS_OUT,       /* cross-attention's output product (+ residual) */
    DEC_FFN_UP,          /* feed-forward up (+ ReLU) */
    DEC_FFN_DOWN,        /* feed-forward down (+ residual) */
    DEC_LAYERNORM,       /* the three LayerNorms of each layer */
    DEC_FC_OUT,          /* the vocabulary logits */
    DEC_N_PARTS
} dec_part;

/* Wall-clock seconds dec_step spent in each part, added up over calls
 * (benchmarks; each part is timed on the calling thread around its
 * parallel region). */
typedef struct dec_profile {
    double seconds[DEC_N_PARTS];
} dec_profile;

/* "embed", "self_qkv", ..., "fc_out" ("?" outside the enum). */
const char *dec_part_name(dec_part part);

typedef struct dec_cache {
    int n_slots;        /* sequences held */
    int n_layers;       /* decoder layers */
    int max_positions;  /* positions per sequence (tokens fed at most) */
    int memory_tokens;  /* L */
    int dim;            /* embed_dim */
    float *self_kv;     /* (n_slots, n_layers, max_positions, 2 * dim): key then value per position */
    float *cross_kv;    /* (n_memories, n_layers, memory_tokens, 2 * dim): key then value per memory token */
    int n_memories;     /* images whose cross-attention keys/values are held (n_slots unless shared) */
    int *memory_of;     /* (n_slots) the memory row each slot attends to; NULL: its own slot */
    int *kv_rows;       /* (n_slots, max_positions) where position p of the slot's sequence was written:
                           slot s's own position p is row s * n_layers * max_positions + p, whose
                           layer-l keys are at self_kv + (l * max_positions + row) * 2 * dim;
                           NULL: every slot reads its own positions */
    int *kv_rows_tmp;   /* (n_slots, max_positions) dec_follow's scratch, with kv_rows */
    /* step scratch, sized for n_slots rows */
    float *x;           /* (n_slots, dim) hidden state */
    float *qkv;         /* (n_slots, 3 * dim) */
    float *attn;        /* (n_slots, dim) attention output before out_proj */
    float *tmp;         /* (n_slots, dim) */
    float *ffn;         /* (n_slots, ffn_dim) */
    float *scores;      /* (n_threads, scores_len) attention weights, one row per thread */
    int scores_len;     /* num_heads * max(max_positions, memory_tokens) */
    int n_threads;      /* rows of scores */
    dec_profile *profile; /* NULL (dec_cache_build's), or where dec_step adds its parts' times */
} dec_cache;

/* Allocates a cache for n_slots sequences of up to max_positions tokens. */
int dec_cache_build(dec_cache *cache, const captioner *m, int n_slots, int max_positions, rc_error *err);

/* A cache for n_slots sequences that share the cross-attention keys and
 * values of n_memories images and may continue each other's sequences
 * (beam search). Set memory_of[slot] (initially slot % n_memories) before
 * the first step; positions are followed through kv_rows (dec_follow). */
int dec_cache_build_beams(dec_cache *cache, const captioner *m, int n_slots, int n_memories, int max_positions,
                          rc_error *err);

/* Beam reordering: for i < n, slots[i]'s sequence becomes a copy of
 * parents[i]'s positions 0..n_positions-1 (all parents are read before any
 * slot changes, so slots and parents may overlap). Only row numbers move;
 * memory_of is left alone (a beam's parent is a beam of the same image).
 * The next position a slot is fed goes to its own row. Needs a cache from
 * dec_cache_build_beams. */
void dec_follow(dec_cache *cache, int n, const int *slots, const int *parents, int n_positions);
void dec_cache_free(dec_cache *cache);

/* Computes the cross-attention keys and values of n images' memory tokens
 * (n, memory_tokens, dim) into memory rows slots[0..n) (the slots
 * themselves unless the cache shares memories). scratch holds
 * n * L * 2 * dim floats. */
void dec_set_memory(const captioner *m, dec_cache *cache, int n, const int *slots, const float *memory,
                    float *scratch);

/* One decoding step for n sequences: sequence i lives in slots[i], is fed
 * tokens[i] at position positions[i] (its earlier positions must have been
 * fed already) and gets its next-token logits in logits + i * vocab_size. */
void dec_step(const captioner *m, dec_cache *cache, int n, const int *slots, const int *tokens,
              const int *positions, float *logits);

#endif
