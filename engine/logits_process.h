/* logits_process.h: repetition control and minimum length, as Hugging
 * Face's logits processors do it, on one row of next-token scores.
 *
 * Greedy decoding applies them to the model's raw logits, beam search to
 * the log-softmax of the logits (as Hugging Face's greedy_search and
 * beam_search do). The sequence they look at is the hypothesis so far,
 * bos ([CLS]) included, as Hugging Face's input_ids include the decoder
 * start token:
 *
 *   repetition penalty P (RepetitionPenaltyLogitsProcessor, CTRL): every
 *       distinct token of the sequence has its score s replaced by s * P
 *       if s < 0, else s / P (once, however often it occurs);
 *   no-repeat n-gram N (NoRepeatNGramLogitsProcessor): a token that would
 *       complete an n-gram of N tokens already present in the sequence
 *       gets -inf (N = 1: every token of the sequence);
 *   min length M: while fewer than M tokens follow bos, eos gets -inf
 *       (Hugging Face's min_new_tokens; its min_length would count bos).
 *
 * Applied in Hugging Face's order (repetition, n-gram, min length); -inf
 * stays -inf under the penalty, so the order does not change results.
 */
#ifndef RC_LOGITS_PROCESS_H
#define RC_LOGITS_PROCESS_H

#include "generate.h"

/* 1 when d asks for any of the processors. */
int lp_active(const gen_decoding *d);

/* Applies d's processors to scores (one per vocabulary entry) for the
 * sequence seq[0..n_seq) (bos first; every id a valid index of scores). */
void lp_apply(const gen_decoding *d, int eos_token_id, const int *seq, int n_seq, float *scores);

#endif
