/* beam.h: beam search as Hugging Face's generate(num_beams=k) does it.
 *
 * Each image keeps k beams, all of them fed together (n_images x k rows per
 * decoder step); the beams of an image share its cross-attention keys and
 * values, and a beam that continues another reads that beam's earlier
 * self-attention keys and values through row indexes (decoder.h), so
 * nothing but row numbers and token histories moves when beams reorder.
 *
 * At every step, for each live beam, the next-token scores are the
 * log-softmax of the model's logits, passed through the logits processors
 * (logits_process.h), plus the beam's running score. The 2k best (beam,
 * token) pairs of the image, best first (ties: lower beam, then lower
 * token), are taken in order: an eos pair among the first k finishes a
 * hypothesis, scored sum / length^alpha, where sum is the pair's score and
 * length the generated tokens including that eos; any other pair becomes
 * one of the next k beams, until k are found. An image keeps its k best
 * hypotheses (a new one enters when fewer than k are kept or it beats the
 * worst, which then leaves; ties evict the earliest) and is done when it
 * holds k and either early_stopping is set or the worst of them is at
 * least best / (step + 1)^alpha, best being the step's best pair score
 * (Hugging Face's early_stopping=False heuristic). After max_len steps the
 * live beams of images not done are offered as hypotheses of length
 * max_len. The caption is the best hypothesis (the latest added among
 * equals), its score Hugging Face's sequences_scores.
 *
 * At the first step all k beams of an image are the same [CLS] prefix:
 * beam 0 starts at score 0 and the others at -1e9, as in Hugging Face, and
 * the decoder runs once per image. Lengths follow current Hugging Face
 * (generated_len: tokens after the decoder start, eos included), and
 * max_len counts generated tokens, as max_new_tokens does.
 */
#ifndef RC_BEAM_H
#define RC_BEAM_H

#include "generate.h"

/* Beam search with d->beam beams (1 allowed: a one-beam search, which
 * picks the greedy tokens unless processors change the order of scores
 * differently on log-probabilities) for n images' memory tokens; see
 * gen_decode for memory, options (on_logits is not called) and out. */
int gen_beam_search(const captioner *m, int n, const float *memory, const gen_decoding *d,
                    const gen_options *options, const gen_output *out, rc_error *err);

#endif
