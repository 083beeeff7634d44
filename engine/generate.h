/* generate.h: caption generation.
 *
 * Greedy decoding exactly as the model card's generate_caption: start from
 * bos ([CLS]), take the argmax (first index on ties), stop at eos ([SEP]) or
 * after max_len generated tokens. Unlike the card, the encoder runs once per
 * image and the decoder keeps a key/value cache; the images of a batch are
 * decoded together and a finished caption leaves the batch (and, in a
 * gen_session, a new image can take its place).
 */
#ifndef RC_GENERATE_H
#define RC_GENERATE_H

#include "err.h"
#include "model.h"

/* Beams per image at most. */
#define GEN_MAX_BEAM 16

/* The user's decoding choices: plain values, recorded with runs. The
 * maximum length is not here: it is cfg.max_len / gen_options.max_len. */
typedef struct gen_decoding {
    int beam;                  // beams per image, 1..16; 1 = greedy (the card's decoding, default)
    double length_penalty;     // alpha of sum_logprob / length^alpha (Hugging Face); default 1.0
    int early_stopping;        // 1: Hugging Face early_stopping=True semantics; default 0
    int min_length;            // eos forbidden before this many generated tokens; default 0
    int no_repeat_ngram;       // 0 = off; N: no n-gram of size N twice (HF NoRepeatNGram)
    double repetition_penalty; // 1.0 = off; HF/CTRL semantics
    int token_scores;          // 1: also return every token's probability
} gen_decoding;

/* The card's decoding: greedy, length_penalty 1.0, no early stopping,
 * min_length 0, no repetition control, no token scores. */
void gen_decoding_default(gen_decoding *d);

/* 0 when d is usable; -1 naming the bad field otherwise (beam outside
 * 1..16, negative min_length or no_repeat_ngram, repetition_penalty <= 0,
 * a length_penalty that is not finite, early_stopping or token_scores not
 * 0/1). */
int gen_decoding_check(const gen_decoding *d, rc_error *err);

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

/* Where gen_decode writes the captions of n images and how confident the
 * model was. Arrays are the caller's; the optional ones may be NULL.
 *
 * Confidence: the probability of a caption token is the softmax of the
 * model's raw logits at its step (before any repetition control or length
 * penalty), taken at the token chosen. A caption's tokens are those of ids:
 * the closing [SEP] is not one of them, so token_probs lines up with ids
 * (and with the results database's token_ids). mean_logprob is the mean
 * natural log of these probabilities and min_token_prob their minimum;
 * both are NAN for an empty caption. */
typedef struct gen_output {
    int *ids;               // (n, max_len) image i's tokens, without bos and eos, at ids + i * max_len
    int *lens;              // (n) tokens of each caption
    float *token_probs;     // (n, max_len) or NULL: each token's probability, laid out like ids
    double *mean_logprob;   // (n) or NULL
    double *min_token_prob; // (n) or NULL
    double *score;          // (n) or NULL: beam search's sequence score (Hugging Face's sequences_scores:
                            //   summed processed log-probabilities, [SEP]'s included, / length^alpha);
                            //   NAN for greedy decoding, which has none
} gen_output;

/* Decodes n images from their memory tokens (n, memory_tokens, embed_dim)
 * as d says (NULL: the defaults, i.e. gen_greedy): beam 1 is greedy
 * decoding with d's logits processors on the raw logits (Hugging Face's
 * greedy_search), beam > 1 is beam search (beam.h). options may be NULL;
 * on_logits is only called by greedy decoding. */
int gen_decode(const captioner *m, int n, const float *memory, const gen_decoding *d, const gen_options *options,
               const gen_output *out, rc_error *err);

/* ---- continuous batching: a greedy decoding session ----------------------
 *
 * A session holds up to max_slots sequences being decoded greedily. Images
 * join whenever slots are free (gen_session_add), every gen_session_step
 * feeds one token to every unfinished sequence in one batched decoder step,
 * and finished captions are collected with gen_session_take_finished, which
 * frees their slots for new images. So the decoder keeps running at full
 * width while captions of different lengths finish at different steps.
 *
 * An image's caption and confidence are exactly what gen_decode gives for
 * it (with the same decoding and max_len) whatever the other sequences and
 * whenever it joined, as long as the matrix products compute a row
 * independently of the others (the engine's gemm backends; gemm.h): each
 * sequence has its own positions, keys and values, and the logits
 * processors see its own tokens only. */
typedef struct gen_session gen_session;

/* A finished caption, as gen_decode would write it for its image. The
 * arrays are the session's: valid until the next gen_session_add or
 * gen_session_free. */
typedef struct gen_caption {
    int tag;                  // the caller's tag given to gen_session_add
    int len;                  // tokens, without bos and eos
    const int *ids;           // (len)
    const float *token_probs; // (len) each token's probability; NULL without confidence
    double mean_logprob;      // NAN without confidence or for an empty caption
    double min_token_prob;    // NAN likewise
} gen_caption;

/* A session of max_slots (>= 1) sequences decoded greedily with d's
 * logits processors (NULL: the defaults; d->beam must be 1). options gives
 * max_len (0: the configuration's) and on_logits, which is called with the
 * sequence's tag as `image` and its own step number; options may be NULL.
 * confidence 1 computes each token's probability (gen_output's
 * confidence); 0 saves that work. Fails (err filled) on a bad decoding,
 * max_len beyond the model's positions, or no memory. */
gen_session *gen_session_new(const captioner *m, int max_slots, const gen_decoding *d, const gen_options *options,
                             int confidence, rc_error *err);

/* Starts decoding n images from their memory tokens (n, memory_tokens,
 * embed_dim), image i tagged tags[i] (any values; they are handed back).
 * Fails (err filled) when n exceeds gen_session_free_slots. With max_len 0
 * the captions are finished (empty) at once. */
int gen_session_add(gen_session *s, int n, const float *memory, const int *tags, rc_error *err);

/* One token for every active sequence (one dec_step for all of them).
 * Returns how many sequences finished at this step (0 when none was
 * active). */
int gen_session_step(gen_session *s);

/* Moves up to max finished captions, oldest first, into out[0..) and frees
 * their slots; returns how many. */
int gen_session_take_finished(gen_session *s, gen_caption *out, int max);

/* Sequences still being decoded; slots neither decoding nor holding an
 * untaken caption. */
int gen_session_active(const gen_session *s);
int gen_session_free_slots(const gen_session *s);

/* The greatest number of generated tokens of a caption (the session's
 * max_len). */
int gen_session_max_len(const gen_session *s);

/* Releases the session (NULL is allowed). */
void gen_session_free(gen_session *s);

/* The number of generated tokens at most: options->max_len, or the
 * configuration's when options is NULL or its max_len 0; -1 (err filled)
 * beyond the model's positions. */
int gen_max_len(const captioner *m, const gen_options *options, rc_error *err);

/* Confidence of one caption from its tokens' natural log-probabilities
 * logprobs[0..n) (see gen_output): fills what is not NULL. */
void gen_confidence(const double *logprobs, int n, float *token_probs, double *mean_logprob,
                    double *min_token_prob);

/* Teacher forcing, the card's training objective: for each of n sequences,
 * feeds tokens[i][0 .. n_tokens[i]-2] (the inputs: all but the last token)
 * through the decoder with image memory[image[i]] and adds up the
 * cross-entropy -log softmax(logits)[tokens[i][t+1]] of each target (all but
 * the first token) into nll[i], in nats. memory is (n_images, L, dim);
 * an image's cross-attention keys and values are computed once for all the
 * sequences that name it (image[i] >= 0, else an error).
 * Sequences are at most max_positions + 1 tokens; every token must be below
 * vocab_size (else an error naming it). */
int gen_teacher_forced(const captioner *m, int n, const float *memory, const int *image, const int *const *tokens,
                       const int *n_tokens, double *nll, rc_error *err);

#endif
