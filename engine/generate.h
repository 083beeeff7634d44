/* generate.h: caption generation.
 *
 * Greedy decoding exactly as the model card's generate_caption: start from
 * bos ([CLS]), take the argmax (first index on ties), stop at eos ([SEP]) or
 * after max_len generated tokens. Unlike the card, the encoder runs once per
 * image and the decoder keeps a key/value cache; the images of a batch are
 * decoded together and a finished caption leaves the batch.
 */
#ifndef RC_GENERATE_H
#define RC_GENERATE_H

#include "err.h"
#include "model.h"

/* Called with each step's logits (vocab_size floats) of each image; for
 * tests and diagnostics. */
typedef void (*gen_logits_fn)(void *ctx, int image, int step, const float *logits, int vocab_size);

typedef struct gen_options {
    int max_len;            /* generated tokens at most; 0 means the configuration's max_len */
    gen_logits_fn on_logits; /* may be NULL */
    void *ctx;              /* passed to on_logits */
} gen_options;

/* Decodes n images from their memory tokens (n, memory_tokens, embed_dim).
 * ids is (n, max_len): image i's generated tokens (without bos and eos) are
 * ids[i * max_len .. + lens[i]). options may be NULL for the defaults. */
int gen_greedy(const captioner *m, int n, const float *memory, const gen_options *options, int *ids, int *lens,
               rc_error *err);

/* Teacher forcing, the card's training objective: for each of n sequences,
 * feeds tokens[i][0 .. n_tokens[i]-2] (the inputs: all but the last token)
 * through the decoder with image memory[image[i]] and adds up the
 * cross-entropy -log softmax(logits)[tokens[i][t+1]] of each target (all but
 * the first token) into nll[i], in nats. memory is (n_images, L, dim).
 * Sequences are at most max_positions + 1 tokens; every token must be below
 * vocab_size (else an error naming it). */
int gen_teacher_forced(const captioner *m, int n, const float *memory, const int *image, const int *const *tokens,
                       const int *n_tokens, double *nll, rc_error *err);

#endif
