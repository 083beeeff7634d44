/* metrics.h: BLEU-1..4, CIDEr-D and ROUGE-L exactly as the COCO caption
 * evaluation code (pycocoevalcap) computes them, per image and over a corpus.
 *
 * Input: for each image one candidate caption and its reference captions,
 * already tokenised (pipeline/ptb.h does pycocoevalcap's tokenisation; with
 * --pretokenized the texts are used as given). The scorers split texts the
 * way the reference's Python does: BLEU and CIDEr-D on runs of whitespace
 * (Python's str.split(): ASCII and Unicode spaces), ROUGE-L on single
 * spaces (str.split(" "), so "" is one empty token). Tokens are compared as
 * raw bytes; nothing is lower-cased or normalised here.
 *
 * What is computed (n = 1..4 throughout):
 * - BLEU: per image, clipped n-gram matches (a candidate n-gram's count
 *   clipped by its largest count in any one reference), candidate n-gram
 *   counts max(len - n + 1, 0), the candidate length and the "closest"
 *   reference length (smallest |ref - cand|, ties to the shorter). Corpus
 *   BLEU-n = (prod_k<=n (matches_k + 1e-15) / (counts_k + 1e-9))^(1/n) over the
 *   summed counts, times exp(1 - 1/ratio) when ratio = (cand_len + 1e-15) /
 *   (ref_len + 1e-9) < 1. Per-image BLEU applies the same formula to one
 *   image's counts.
 * - CIDEr-D: tf-idf vectors of each order, df(g) = number of scored images
 *   whose references contain g, weight tf * (log(N) - log(max(1, df))), N =
 *   number of scored images; per order the clipped cosine
 *   sum_g min(c, r) * r / (|c| |r|) (0 if a norm is 0) times
 *   exp(-(lc - lr)^2 / 72) where the "length" l is the sentence's number of
 *   bigrams (the reference's quirk, kept); averaged over orders and
 *   references, times 10. Corpus = mean of the per-image scores.
 * - ROUGE-L: LCS; P = max over references of LCS / len(cand), R = max of
 *   LCS / len(ref); score = (1 + 1.2^2) P R / (R + 1.2^2 P), 0 if P or R is 0.
 *   Corpus = mean of the per-image scores.
 * Floating-point operations follow the reference's order, including numpy's
 * summation order in np.mean (pairwise within blocks of 8192), so results
 * agree to the last bit with one exception: numpy's log on AVX-512 machines
 * is not correctly rounded and differs from the C library's in the last bit
 * for about a quarter of integer arguments, so CIDEr-D can differ from a
 * pycocoevalcap run on such a machine around the 16th significant digit.
 *
 * Edge cases (the first two crash the reference):
 * - An image with no reference (n_references == 0) is not scored: it is left
 *   out of the corpus entirely (BLEU sums, CIDEr-D's N and df, the means),
 *   its per-image scores are all 0 and scored[i] is 0. The corpus is the
 *   n_scored images that have references.
 * - References that hold no token at all, over the whole corpus: every
 *   n-gram gets df 0 and every reference vector is zero, so CIDEr-D is 0 for
 *   every image (the reference fails on max() of an empty df table). BLEU
 *   follows its formula: with no clipped match every factor is at most
 *   1e-6, so BLEU-n is at most 1e-6 for a non-empty candidate (BLEU-1 of a
 *   two-token candidate is 1e-15 / 2 = 5e-16; the reference length 0 gives
 *   no brevity penalty), and 0 for an empty candidate. ROUGE-L is 1.0 for
 *   an empty candidate (one empty token against one empty token) and 0
 *   otherwise.
 * - Empty candidate with references: BLEU 0 (brevity penalty exp(1 - 1e6..)
 *   underflows), CIDEr-D 0, ROUGE-L 0 unless a reference is empty too (1.0).
 * - A corpus of one image: log(N) = 0 and every df is 1, so CIDEr-D is 0.
 * - No scored image at all: every corpus score is 0.
 * - Identical candidate and references can give CIDEr-D 10.000000000000002,
 *   as in the reference (double rounding, kept).
 */
#ifndef RC_METRICS_H
#define RC_METRICS_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/err.h"

#define METRICS_BLEU_N 4 /* BLEU-1 .. BLEU-4 */

/* One image to score: borrowed strings, NUL-terminated, tokens separated by
 * spaces. */
typedef struct metrics_item {
    const char *candidate;          // the candidate caption
    const char *const *references;  // (n_references) reference captions
    size_t n_references;            // 0: the image is not scored (see above)
} metrics_item;

typedef struct metrics_scores {
    double bleu[METRICS_BLEU_N]; // BLEU-1, BLEU-2, BLEU-3, BLEU-4
    double cider;                // CIDEr-D
    double rouge_l;              // ROUGE-L
} metrics_scores;

typedef struct metrics_result {
    size_t n_items;            // images given
    size_t n_scored;           // images with at least one reference: the corpus
    metrics_scores corpus;     // corpus scores over the n_scored images
    metrics_scores *per_image; // (n_items) per-image scores, all 0 where !scored[i]
    unsigned char *scored;     // (n_items) 1 if image i had a reference and was scored
    uint64_t cand_len;         // BLEU: summed candidate lengths (tokens)
    uint64_t ref_len;          // BLEU: summed closest-reference lengths
} metrics_result;

/* Scores n_items images. Returns a result to release with metrics_free, or
 * NULL (err filled) when memory runs out. The inputs are not kept. */
metrics_result *metrics_compute(const metrics_item *items, size_t n_items, rc_error *err);

/* Releases a result. NULL is allowed. */
void metrics_free(metrics_result *result);

/* The mean of x[0..n) summed in numpy's order (np.mean: pairwise summation
 * within blocks of 8192 values, the blocks added in turn), 0 for n = 0.
 * Exposed for the tests and for callers that average per-image scores. */
double metrics_mean(const double *x, size_t n);

/* Writes the scores as one JSON object and a new line, numbers in full
 * double precision: {"bleu": [b1, b2, b3, b4], "cider": x, "rouge_l": x,
 * "per_image": {"ID": {"bleu": [...], "cider": x, "rouge_l": x}, ...}}, the
 * per-image entries of the scored items in order, ids[i] naming item i
 * (valid UTF-8). A NULL result writes zero scores and no per-image entry.
 * (pipeline/metrics_json.c) */
void metrics_write_json(FILE *out, const metrics_result *result, const char *const *ids);

#endif
