/* Tests of pipeline/metrics.h: BLEU-1..4, CIDEr-D and ROUGE-L.
 *
 * Small cases are computed by hand, the arithmetic written beside each
 * expectation. BLEU's smoothing constants (1e-15 added to matches and
 * lengths, 1e-9 to counts and reference lengths) move the hand values by
 * less than 1e-8 relative; those checks use that tolerance and say so.
 * Then an independent Python implementation of the same formulas
 * (tests/reference/coco_metrics_ref.py) scores a few hundred random images
 * and every per-image and corpus value must agree to 1e-12 relative.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "engine/rng.h"
#include "pipeline/metrics.h"
#include "tests/helpers/testutil.h"

#define SMOOTHING_TOL 1e-8 /* relative effect of BLEU's 1e-15 / 1e-9 terms on these small cases */

static void expect_rel(double actual, double expected, double rel, const char *what)
{
    double scale = fabs(expected) > fabs(actual) ? fabs(expected) : fabs(actual);
    if (!(fabs(actual - expected) <= rel * scale))
        fail_msg("%s: got %.17g, expected %.17g (relative tolerance %g)", what, actual, expected, rel);
}

/* Scores items given as (candidate, NULL-terminated references) rows. */
typedef struct {
    const char *candidate;
    const char *refs[8];
} row;

static metrics_result *score_rows(const row *rows, size_t n)
{
    metrics_item *items = calloc(n, sizeof *items);
    for (size_t i = 0; i < n; i++) {
        items[i].candidate = rows[i].candidate;
        items[i].references = rows[i].refs;
        while (rows[i].refs[items[i].n_references])
            items[i].n_references++;
    }
    rc_error err = {{0}};
    metrics_result *res = metrics_compute(items, n, &err);
    if (!res)
        fail_msg("metrics_compute: %s", err.msg);
    free(items);
    return res;
}

/* ---- BLEU ---- */

/* Clipping: candidate "the the the the" against "the cat the mat".
 * 1-grams: "the" x4 in the candidate, at most 2 in the reference -> 2 of 4.
 * 2-grams: "the the" x3, none in the reference -> 0 of 3; 3-grams 0 of 2;
 * 4-grams 0 of 1. Lengths 4 and 4: no brevity penalty (to 1e-8).
 * BLEU-1 = 2/4 = 0.5;
 * BLEU-2 = sqrt(0.5 * (1e-15 / 3)) = sqrt(1.6667e-16) = 1.2909944487358e-08
 *   (the 1e-15 keeps an n-gram order with no match from giving exactly 0). */
static void test_bleu_clipping(void **state)
{
    (void)state;
    row rows[] = {{"the the the the", {"the cat the mat", NULL}}};
    metrics_result *r = score_rows(rows, 1);
    expect_rel(r->per_image[0].bleu[0], 0.5, SMOOTHING_TOL, "BLEU-1");
    expect_rel(r->per_image[0].bleu[1], sqrt(0.5 * 1e-15 / 3.0), 1e-6, "BLEU-2");
    expect_rel(r->corpus.bleu[0], 0.5, SMOOTHING_TOL, "corpus BLEU-1 of one image");
    metrics_free(r);
}

/* Clipping uses the largest count in any single reference, not the sum over
 * references: candidate "a a b", references "a b" and "a c". Each reference
 * holds "a" once, so "a" x2 is clipped to 1; "b" matches: 2 of 3.
 * (Summing over references would give 3 of 3.) Closest length: both refs
 * have 2 tokens, candidate 3: ratio 3/2 > 1, no penalty. BLEU-1 = 2/3. */
static void test_bleu_clip_by_single_reference(void **state)
{
    (void)state;
    row rows[] = {{"a a b", {"a b", "a c", NULL}}};
    metrics_result *r = score_rows(rows, 1);
    expect_rel(r->per_image[0].bleu[0], 2.0 / 3.0, SMOOTHING_TOL, "BLEU-1");
    /* 2-grams: "a a" (no), "a b" (yes, in ref 1): 1 of 2. BLEU-2 = sqrt(2/3 * 1/2) = sqrt(1/3). */
    expect_rel(r->per_image[0].bleu[1], sqrt(1.0 / 3.0), SMOOTHING_TOL, "BLEU-2");
    metrics_free(r);
}

/* Closest reference length, tie to the shorter: candidate "a b c" (3),
 * references "a b" (2) and "a b c d" (4), both 1 away. The reference takes
 * min((|l - c|, l)), so 2. Then ratio = 3/2 >= 1: no penalty, and
 * BLEU-1 = 3/3 = 1 (a, b, c all in "a b c d"), BLEU-2 = 1 (2 of 2),
 * BLEU-3 = 1 (1 of 1), BLEU-4: no 4-gram, factor (0 + 1e-15) / (0 + 1e-9) =
 * 1e-6, so BLEU-4 = (1 * 1 * 1 * 1e-6)^(1/4) = 0.031622776601683791.
 * Had the tie gone to 4, BLEU-1 would be exp(1 - 4/3) = 0.7165. */
static void test_bleu_closest_length_tie(void **state)
{
    (void)state;
    row rows[] = {{"a b c", {"a b c d", "a b", NULL}}};
    metrics_result *r = score_rows(rows, 1);
    expect_rel(r->per_image[0].bleu[0], 1.0, SMOOTHING_TOL, "BLEU-1");
    expect_rel(r->per_image[0].bleu[2], 1.0, SMOOTHING_TOL, "BLEU-3");
    expect_rel(r->per_image[0].bleu[3], pow(1e-6, 0.25), SMOOTHING_TOL, "BLEU-4");
    assert_int_equal(r->ref_len, 2);
    assert_int_equal(r->cand_len, 3);
    metrics_free(r);
}

/* Brevity penalty: candidate "a b" against "a b c d". ratio = 2/4 = 0.5, so
 * every BLEU-n is multiplied by exp(1 - 1/0.5) = exp(-1) = 0.36787944117144233.
 * BLEU-1 = 1 * e^-1; BLEU-2 = 1 * e^-1; BLEU-3: no 3-gram, factor 1e-6,
 * (1e-6)^(1/3) * e^-1 = 0.01 * e^-1; BLEU-4 = (1e-12)^(1/4) * e^-1 = 1e-3 * e^-1. */
static void test_bleu_brevity_penalty(void **state)
{
    (void)state;
    row rows[] = {{"a b", {"a b c d", NULL}}};
    metrics_result *r = score_rows(rows, 1);
    const double bp = exp(-1.0);
    expect_rel(r->per_image[0].bleu[0], bp, SMOOTHING_TOL, "BLEU-1");
    expect_rel(r->per_image[0].bleu[1], bp, SMOOTHING_TOL, "BLEU-2");
    expect_rel(r->per_image[0].bleu[2], 0.01 * bp, SMOOTHING_TOL, "BLEU-3");
    expect_rel(r->per_image[0].bleu[3], 1e-3 * bp, SMOOTHING_TOL, "BLEU-4");
    metrics_free(r);
}

/* The corpus score sums counts over images before the ratio (it is not the
 * mean of per-image scores). Image 1: "a b" vs "a b" (2 of 2 unigrams,
 * lengths 2/2); image 2: "x y" vs "p q r s" (0 of 2, lengths 2/4).
 * Corpus: matches 2 of 4 -> 0.5; lengths 4 vs 6: ratio 2/3, penalty
 * exp(1 - 3/2) = exp(-0.5). BLEU-1 = 0.5 * exp(-0.5) = 0.30326532985631671.
 * The mean of the per-image BLEU-1 would be (1 + ~0) / 2 = 0.5. */
static void test_bleu_corpus_sums_counts(void **state)
{
    (void)state;
    row rows[] = {{"a b", {"a b", NULL}}, {"x y", {"p q r s", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    expect_rel(r->corpus.bleu[0], 0.5 * exp(-0.5), SMOOTHING_TOL, "corpus BLEU-1");
    expect_rel(r->per_image[0].bleu[0], 1.0, SMOOTHING_TOL, "image 1 BLEU-1");
    assert_int_equal(r->cand_len, 4);
    assert_int_equal(r->ref_len, 6);
    metrics_free(r);
}

/* An empty candidate: no n-gram, length 0, so ratio = 1e-15 / (2 + 1e-9)
 * and the penalty exp(1 - 2e15) underflows to exactly 0. CIDEr-D: the
 * candidate vector is empty, 0. ROUGE-L: [""] against ["a", "b"], LCS 0: 0. */
static void test_empty_candidate(void **state)
{
    (void)state;
    row rows[] = {{"", {"a b", NULL}}, {"a b", {"a b", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    for (int n = 0; n < METRICS_BLEU_N; n++)
        assert_true(r->per_image[0].bleu[n] == 0.0);
    assert_true(r->per_image[0].cider == 0.0);
    assert_true(r->per_image[0].rouge_l == 0.0);
    metrics_free(r);
}

/* ---- CIDEr-D ---- */

/* Document frequency and idf. N = 2 images, log N = ln 2.
 * Image 1: "a b" vs ref "a b"; image 2: "a c" vs ref "a d".
 * df over references: a: 2 (both images), b, "a b", d, "a d": 1.
 * Weights tf * (ln 2 - ln max(1, df)): a: ln 2 - ln 2 = 0; b, "a b": ln 2;
 * c and "a c" appear in no reference (df 0): full weight ln 2 - ln 1 = ln 2.
 * Image 1, order 1: c = r = {a: 0, b: ln2}, cosine = ln2^2 / (ln2 * ln2) = 1;
 * order 2: {"a b": ln2} both, 1; orders 3, 4: empty vectors, 0. Lengths
 * equal, penalty 1. CIDEr = mean(1, 1, 0, 0) / 1 ref * 10 = 5.
 * Image 2, order 1: c = {a: 0, c: ln2}, r = {a: 0, d: ln2}:
 * min(0, 0) * 0 + min(ln2, 0) * 0 = 0 (the shared "a" weighs nothing); order 2: 0.
 * CIDEr = 0. Corpus = (5 + 0) / 2 = 2.5. */
static void test_cider_document_frequency(void **state)
{
    (void)state;
    row rows[] = {{"a b", {"a b", NULL}}, {"a c", {"a d", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    expect_rel(r->per_image[0].cider, 5.0, 1e-15, "image 1");
    assert_true(r->per_image[1].cider == 0.0);
    expect_rel(r->corpus.cider, 2.5, 1e-15, "corpus");
    metrics_free(r);
}

/* An n-gram in no reference gets the full weight log N. N = 3, L = ln 3.
 * Image 1: "x y" vs ref "x z"; image 2: "p" vs ref "x q"; image 3: "r" vs "s".
 * df: x: 2 (images 1, 2), z, "x z", q, "x q", s: 1. Weights: x: ln3 - ln2 =
 * ln 1.5; z: ln 3; y (df 0): ln 3.
 * Image 1, order 1: c = {x: ln1.5, y: ln3}, r = {x: ln1.5, z: ln3};
 * dot = min(ln1.5, ln1.5) * ln1.5 = ln1.5^2; |c| = |r| = sqrt(ln1.5^2 + ln3^2);
 * cosine = ln1.5^2 / (ln1.5^2 + ln3^2) = 0.16440195389316542 / 1.3713509146 =
 * 0.119883. Order 2: "x y" vs "x z": 0. One bigram each: penalty 1.
 * CIDEr = (cosine + 0 + 0 + 0) / 4 * 10 = 2.5 * cosine = 0.29970779.
 * (With weight 0 for the unseen "y", |c| would be ln 1.5 and the cosine
 * ln1.5 / sqrt(ln1.5^2 + ln3^2) = 0.346.) Images 2, 3 share nothing: 0. */
static void test_cider_unseen_ngram_weight(void **state)
{
    (void)state;
    row rows[] = {{"x y", {"x z", NULL}}, {"p", {"x q", NULL}}, {"r", {"s", NULL}}};
    metrics_result *r = score_rows(rows, 3);
    const double a = log(1.5), b = log(3.0), cosine = a * a / (a * a + b * b);
    expect_rel(r->per_image[0].cider, 2.5 * cosine, 1e-14, "image 1");
    assert_true(r->per_image[1].cider == 0.0 && r->per_image[2].cider == 0.0);
    expect_rel(r->corpus.cider, 2.5 * cosine / 3.0, 1e-14, "corpus");
    metrics_free(r);
}

/* The Gaussian length penalty. N = 2, every n-gram has df <= 1, so every
 * weight is ln 2 and cosines are counts of shared n-grams over norms.
 * Image 1: "a b c d e" vs "a b c". Order 1: 3 shared of 5 and 3:
 * 3 / (sqrt5 sqrt3) = sqrt(15) / 5; order 2: {ab, bc, cd, de} vs {ab, bc}:
 * 2 / (2 sqrt2) = 1/sqrt2; order 3: {abc, bcd, cde} vs {abc}: 1 / sqrt3;
 * order 4: the reference has no 4-gram, norm 0: 0.
 * The "length" is the number of bigrams, 4 and 2: delta = 2, penalty
 * e^(-2^2 / (2 * 6^2)) = e^(-1/18) = 0.94595946890676541.
 * CIDEr = 10 * e^(-1/18) * (sqrt(15)/5 + 1/sqrt2 + 1/sqrt3 + 0) / 4 = 4.8694...
 * Note on the bigram "length" (the reference's quirk, kept): it equals the
 * token count minus one for any non-empty sentence, so the difference of
 * two lengths is the same as with token counts; it differs only when one
 * sentence is empty, and then the similarity is 0 whatever the penalty. */
static void test_cider_length_penalty(void **state)
{
    (void)state;
    row rows[] = {{"a b c d e", {"a b c", NULL}}, {"z", {"y", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    const double expected = 10.0 * exp(-1.0 / 18.0) * (sqrt(15.0) / 5.0 + 1.0 / sqrt(2.0) + 1.0 / sqrt(3.0)) / 4.0;
    expect_rel(r->per_image[0].cider, expected, 1e-14, "image 1");
    metrics_free(r);
}

/* Several references are averaged: "a b" against "a b" (order 1 and 2
 * cosines 1, score 5 as in the df test) and "c d" (0): (5 + 0) / 2 = 2.5.
 * N = 2 with a second image "e" vs "f"; every df is 1 so all weights ln 2. */
static void test_cider_multiple_references(void **state)
{
    (void)state;
    row rows[] = {{"a b", {"a b", "c d", NULL}}, {"e", {"f", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    expect_rel(r->per_image[0].cider, 2.5, 1e-15, "image 1");
    metrics_free(r);
}

/* One image: log N = log 1 = 0 and every reference n-gram has df 1, so
 * every weight is 0 and CIDEr-D is 0 even for a perfect candidate. */
static void test_cider_single_image_corpus(void **state)
{
    (void)state;
    row rows[] = {{"a b c", {"a b c", NULL}}};
    metrics_result *r = score_rows(rows, 1);
    assert_true(r->per_image[0].cider == 0.0);
    assert_true(r->corpus.cider == 0.0);
    metrics_free(r);
}

/* Identical candidate and reference can score 10.000000000000002, as in the
 * reference: image 1 "b c e d" vs itself, image 2's reference "e d" makes
 * df(e) = df(d) = 2 (weight 0) while b and c weigh ln 2. Order 1:
 * dot = 2 ln2^2 but |c| |r| = sqrt(2 ln2^2)^2, which rounds just below
 * 2 ln2^2, so that cosine is one ulp above 1, and so is the mean. The
 * value was confirmed with the Python reference. */
static void test_cider_double_rounding_kept(void **state)
{
    (void)state;
    row rows[] = {{"b c e d", {"b c e d", NULL}}, {"c d d a a e a", {"e d", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    assert_true(r->per_image[0].cider == 10.000000000000002);
    metrics_free(r);
}

/* ---- ROUGE-L ---- */

/* "a b c d" vs "a c d e f": LCS "a c d" = 3; P = 3/4, R = 3/5;
 * score = (1 + 1.44) * 0.75 * 0.6 / (0.6 + 1.44 * 0.75) = 1.098 / 1.68 =
 * 0.65357142857142857. */
static void test_rouge_lcs(void **state)
{
    (void)state;
    row rows[] = {{"a b c d", {"a c d e f", NULL}}};
    metrics_result *r = score_rows(rows, 1);
    expect_rel(r->per_image[0].rouge_l, 1.098 / 1.68, 1e-15, "ROUGE-L");
    metrics_free(r);
}

/* P and R are maximised separately over references: "a b c d" vs "a b"
 * (LCS 2: P = 0.5, R = 1) and "a b c d e f g h" (LCS 4: P = 1, R = 0.5).
 * P = 1, R = 1: score = 2.44 / (1 + 1.44) = 1. A single-reference F per
 * reference would give at most 2.44 * 0.5 / (1 + 0.72) = 0.709. */
static void test_rouge_multiple_references(void **state)
{
    (void)state;
    row rows[] = {{"a b c d", {"a b", "a b c d e f g h", NULL}}};
    metrics_result *r = score_rows(rows, 1);
    expect_rel(r->per_image[0].rouge_l, 1.0, 1e-15, "ROUGE-L");
    metrics_free(r);
}

/* ROUGE-L splits on single spaces and BLEU on runs of whitespace, as the
 * reference does. Candidate "a  b" (two spaces): BLEU sees ["a", "b"], so
 * BLEU-1 = 1 against "a b" (lengths 2 and 2); ROUGE-L sees ["a", "", "b"]:
 * LCS 2, P = 2/3, R = 1, score = 2.44 * (2/3) / (1 + 1.44 * 2/3) =
 * 1.62667 / 1.96 = 0.82993197278911568.
 * Empty against empty: [""] vs [""], LCS 1: P = R = 1, score 1.0. */
static void test_rouge_split_on_single_spaces(void **state)
{
    (void)state;
    row rows[] = {{"a  b", {"a b", NULL}}, {"", {"", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    expect_rel(r->per_image[0].bleu[0], 1.0, SMOOTHING_TOL, "BLEU-1");
    expect_rel(r->per_image[0].rouge_l, 2.44 * (2.0 / 3.0) / (1.0 + 1.44 * (2.0 / 3.0)), 1e-15, "ROUGE-L");
    assert_true(r->per_image[1].rouge_l == 1.0);
    metrics_free(r);
}

/* ---- text as bytes ---- */

/* Tokens are compared as bytes: "Größe" and "größe" differ (no
 * lower-casing), "größe" matches itself. Candidate "größe 2 cm" against
 * "Größe 2 cm": 2 of 3 unigrams (BLEU-1 2/3), bigram "2 cm" 1 of 2
 * (BLEU-2 = sqrt(2/3 * 1/2) = sqrt(1/3)). A no-break space (U+00A0) is
 * whitespace to str.split(), so "2\u00a0cm" is two BLEU tokens: "größe
 * 2\u00a0cm" against "größe 2 cm" matches every 1-, 2- and 3-gram, BLEU-3 = 1. */
static void test_non_ascii_bytes(void **state)
{
    (void)state;
    row rows[] = {{"größe 2 cm", {"Größe 2 cm", NULL}},
                  {"größe 2\xc2\xa0" "cm", {"größe 2 cm", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    expect_rel(r->per_image[0].bleu[0], 2.0 / 3.0, SMOOTHING_TOL, "BLEU-1, case differs");
    expect_rel(r->per_image[0].bleu[1], sqrt(1.0 / 3.0), SMOOTHING_TOL, "BLEU-2, case differs");
    expect_rel(r->per_image[1].bleu[2], 1.0, SMOOTHING_TOL, "BLEU-3 with a no-break space");
    /* ROUGE-L sees "2\u00a0cm" as one token: ["größe", "2\u00a0cm"] vs 3
     * tokens, LCS 1: P = 1/2, R = 1/3: 2.44/6 / (1/3 + 0.72) = 0.38607594936708861. */
    expect_rel(r->per_image[1].rouge_l, (2.44 / 6.0) / (1.0 / 3.0 + 0.72), 1e-15, "ROUGE-L with a no-break space");
    metrics_free(r);
}

/* ---- what the reference crashes on ---- */

/* An image without references is left out: its scores are 0, scored[] is
 * 0, and the corpus is that of the other images alone (same N for CIDEr). */
static void test_image_without_references(void **state)
{
    (void)state;
    row with[] = {{"a b", {"a b", NULL}}, {"nothing", {NULL}}, {"a c", {"a d", NULL}}};
    row without[] = {{"a b", {"a b", NULL}}, {"a c", {"a d", NULL}}};
    metrics_result *r = score_rows(with, 3), *s = score_rows(without, 2);
    assert_int_equal(r->n_scored, 2);
    assert_int_equal(r->scored[1], 0);
    assert_true(r->per_image[1].cider == 0.0 && r->per_image[1].bleu[0] == 0.0 && r->per_image[1].rouge_l == 0.0);
    assert_memory_equal(&r->corpus, &s->corpus, sizeof r->corpus);
    metrics_free(r);
    metrics_free(s);
}

/* References with no token anywhere: df is empty. CIDEr-D 0 for every image.
 * BLEU for "a b" vs "": no match, counts 2,1,0,0, lengths 2 and 0 (no
 * penalty): BLEU-1 = 1e-15 / (2 + 1e-9) = 5e-16. ROUGE-L: "" vs "" is 1.0,
 * "a b" vs "" is 0. Nothing crashes or divides by zero. */
static void test_references_without_tokens(void **state)
{
    (void)state;
    row rows[] = {{"a b", {"", NULL}}, {"", {"", "   ", NULL}}};
    metrics_result *r = score_rows(rows, 2);
    for (int i = 0; i < 2; i++)
        assert_true(r->per_image[i].cider == 0.0);
    assert_true(r->corpus.cider == 0.0);
    expect_rel(r->per_image[0].bleu[0], 1e-15 / 2.0, SMOOTHING_TOL, "BLEU-1");
    assert_true(r->per_image[0].rouge_l == 0.0);
    assert_true(r->per_image[1].rouge_l == 1.0);
    assert_true(isfinite(r->corpus.bleu[3]) && isfinite(r->corpus.rouge_l));
    metrics_free(r);
}

/* No image at all, and no scored image: every corpus score is 0. */
static void test_empty_corpus(void **state)
{
    (void)state;
    rc_error err = {{0}};
    metrics_result *r = metrics_compute(NULL, 0, &err);
    assert_non_null(r);
    assert_int_equal(r->n_scored, 0);
    for (int n = 0; n < METRICS_BLEU_N; n++)
        assert_true(r->corpus.bleu[n] == 0.0);
    assert_true(r->corpus.cider == 0.0 && r->corpus.rouge_l == 0.0);
    metrics_free(r);
    row rows[] = {{"a", {NULL}}};
    r = score_rows(rows, 1);
    assert_int_equal(r->n_scored, 0);
    assert_true(r->corpus.bleu[0] == 0.0 && r->corpus.cider == 0.0);
    metrics_free(r);
}

/* ---- the corpus mean ---- */

/* numpy's summation order. [1e16, 1 x 8]: 9 values, so 8 accumulators:
 * r = {1e16, 1, ..., 1}; ((1e16 + 1) + (1 + 1)) + ((1 + 1) + (1 + 1)):
 * 1e16 + 1 is a tie between 1e16 and 1e16 + 2 (the spacing there is 2),
 * rounding to even: 1e16; + 2 + 4 = 1e16 + 6; then the 9th value: 1e16 + 7
 * ties to 1e16 + 8. Sum 1.0000000000000008e16 (a plain loop gives 1e16).
 * Blocks: 8193 values, x[0] = 1e16, x[4096] = x[8192] = 1, others 0:
 * numpy sums the first 8192 (pairwise: 1e16 + 1 = 1e16), then adds the
 * last block (1e16 + 1 = 1e16): 1e16. Pairwise over all 8193 would give
 * 1e16 + (1 + 1) = 1e16 + 2. Both sums were confirmed with numpy 1.24. */
static void test_mean_numpy_order(void **state)
{
    (void)state;
    double nine[9] = {1e16, 1, 1, 1, 1, 1, 1, 1, 1};
    assert_true(metrics_mean(nine, 9) == 1.0000000000000008e16 / 9.0);
    double *x = calloc(8193, sizeof *x);
    x[0] = 1e16;
    x[4096] = x[8192] = 1.0;
    assert_true(metrics_mean(x, 8193) == 1e16 / 8193.0);
    free(x);
    assert_true(metrics_mean(NULL, 0) == 0.0);
}

/* ---- against the independent Python implementation ---- */

static const char *const vocabulary[] = {
    "a", "the", "mass", "left", "right", "lobe", "of", "in", "with", "axial", "ct", "mri", "-lrb-",
    "arrow", "-rrb-", "t1\\/t2", "2.5-cm", "lesion", "größe", "Größe", "μm", "cyst", "'s", "n't",
    "no", "pneumothorax", "x-ray", "showing", "contrast", "enhanced", "é", "е" /* Cyrillic */,
};
#define VOCAB_N (sizeof vocabulary / sizeof vocabulary[0])

/* A random caption: 0..max_words words, mostly single spaces, sometimes
 * doubled, leading, trailing, a tab or a no-break space. */
static char *random_caption(rng_state *rng, int max_words)
{
    size_t cap = 16 * (size_t)(max_words + 2) + 16, len = 0; /* words are at most 12 bytes, separators 2 */
    char *s = malloc(cap);
    s[0] = '\0';
    int n = (int)(rng_uniform(rng) * (max_words + 1));
    for (int i = 0; i < n; i++) {
        double u = rng_uniform(rng);
        const char *sep = i == 0 ? (u < 0.03 ? " " : "") : u < 0.04 ? "  " : u < 0.06 ? "\t" : u < 0.08 ? "\xc2\xa0" : " ";
        const char *word = vocabulary[rng_next(rng) % (rng_uniform(rng) < 0.7 ? 12 : VOCAB_N)];
        len += (size_t)snprintf(s + len, cap - len, "%s%s", sep, word);
    }
    if (rng_uniform(rng) < 0.03)
        len += (size_t)snprintf(s + len, cap - len, " ");
    return s;
}

static double json_number(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        fail_msg("python output lacks number %s", key);
    return v->valuedouble;
}

/* Compares one set of scores, counting values that agree to the bit. */
static void compare_scores(const metrics_scores *ours, const cJSON *theirs, const char *what, int *exact, int *total)
{
    const cJSON *bleu = cJSON_GetObjectItemCaseSensitive(theirs, "bleu");
    assert_true(cJSON_GetArraySize(bleu) == METRICS_BLEU_N);
    double expected[METRICS_BLEU_N + 2], got[METRICS_BLEU_N + 2];
    for (int n = 0; n < METRICS_BLEU_N; n++) {
        expected[n] = cJSON_GetArrayItem(bleu, n)->valuedouble;
        got[n] = ours->bleu[n];
    }
    expected[4] = json_number(theirs, "cider");
    got[4] = ours->cider;
    expected[5] = json_number(theirs, "rouge_l");
    got[5] = ours->rouge_l;
    for (int k = 0; k < METRICS_BLEU_N + 2; k++) {
        char label[128];
        snprintf(label, sizeof label, "%s, value %d (BLEU-1..4, CIDEr-D, ROUGE-L)", what, k);
        expect_rel(got[k], expected[k], 1e-12, label);
        *exact += got[k] == expected[k];
        (*total)++;
    }
}

/* Scores a random corpus with both implementations. */
static void compare_with_python(rng_state *rng, size_t n_images, int max_refs, int max_words, int *exact, int *total)
{
    char **texts = calloc(n_images * (size_t)(max_refs + 1), sizeof *texts);
    metrics_item *items = calloc(n_images, sizeof *items);
    cJSON *root = cJSON_CreateObject(), *list = cJSON_AddArrayToObject(root, "items");
    for (size_t i = 0; i < n_images; i++) {
        char **t = texts + i * (size_t)(max_refs + 1);
        t[0] = random_caption(rng, max_words);
        size_t n_refs = (size_t)(rng_uniform(rng) < 0.03 ? 0 : 1 + rng_next(rng) % (uint64_t)max_refs);
        cJSON *item = cJSON_CreateObject(), *refs = cJSON_CreateArray();
        cJSON_AddStringToObject(item, "candidate", t[0]);
        for (size_t r = 0; r < n_refs; r++) {
            t[1 + r] = random_caption(rng, max_words);
            cJSON_AddItemToArray(refs, cJSON_CreateString(t[1 + r]));
        }
        cJSON_AddItemToObject(item, "references", refs);
        cJSON_AddItemToArray(list, item);
        items[i] = (metrics_item){t[0], (const char *const *)(t + 1), n_refs};
    }
    char *dir = tu_mkdtemp("metrics");
    assert_non_null(dir);
    char in_path[4200], out_path[4200], cmd[9000];
    snprintf(in_path, sizeof in_path, "%s/in.json", dir);
    snprintf(out_path, sizeof out_path, "%s/out.json", dir);
    char *json = cJSON_PrintUnformatted(root);
    FILE *f = fopen(in_path, "wb");
    assert_non_null(f);
    fputs(json, f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "'%s' tests/reference/coco_metrics_ref.py < '%s' > '%s'", tu_python(), in_path, out_path);
    assert_int_equal(tu_run(cmd), 0);
    char *text = tu_read_file(out_path, NULL);
    assert_non_null(text);
    cJSON *ref = cJSON_Parse(text);
    assert_non_null(ref);

    rc_error err = {{0}};
    metrics_result *ours = metrics_compute(items, n_images, &err);
    if (!ours)
        fail_msg("metrics_compute: %s", err.msg);
    compare_scores(&ours->corpus, ref, "corpus", exact, total);
    const cJSON *per = cJSON_GetObjectItemCaseSensitive(ref, "per_image");
    assert_int_equal(cJSON_GetArraySize(per), n_images);
    for (size_t i = 0; i < n_images; i++) {
        const cJSON *p = cJSON_GetArrayItem(per, (int)i);
        assert_int_equal(ours->scored[i], !cJSON_IsNull(p));
        if (cJSON_IsNull(p))
            continue;
        char what[64];
        snprintf(what, sizeof what, "image %zu", i);
        compare_scores(&ours->per_image[i], p, what, exact, total);
    }
    metrics_free(ours);
    cJSON_Delete(ref);
    free(text);
    free(json);
    cJSON_Delete(root);
    for (size_t i = 0; i < n_images * (size_t)(max_refs + 1); i++)
        free(texts[i]);
    free(texts);
    free(items);
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    tu_run(cmd);
    free(dir);
}

static void test_against_python_reference(void **state)
{
    (void)state;
    if (!tu_python_has("json")) {
        print_message("skipped: %s cannot run (the independent Python implementation needs it)\n", tu_python());
        skip();
    }
    rng_state rng;
    rng_seed(&rng, 20240517);
    int exact = 0, total = 0;
    compare_with_python(&rng, 400, 5, 20, &exact, &total); /* the main check */
    compare_with_python(&rng, 60, 2, 3, &exact, &total);   /* short captions: many empty n-gram orders */
    compare_with_python(&rng, 1, 3, 10, &exact, &total);   /* one image: CIDEr 0 */
    print_message("metrics vs python reference: %d of %d values identical to the bit, all within 1e-12\n", exact, total);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_bleu_clipping),
        cmocka_unit_test(test_bleu_clip_by_single_reference),
        cmocka_unit_test(test_bleu_closest_length_tie),
        cmocka_unit_test(test_bleu_brevity_penalty),
        cmocka_unit_test(test_bleu_corpus_sums_counts),
        cmocka_unit_test(test_empty_candidate),
        cmocka_unit_test(test_cider_document_frequency),
        cmocka_unit_test(test_cider_unseen_ngram_weight),
        cmocka_unit_test(test_cider_length_penalty),
        cmocka_unit_test(test_cider_multiple_references),
        cmocka_unit_test(test_cider_single_image_corpus),
        cmocka_unit_test(test_cider_double_rounding_kept),
        cmocka_unit_test(test_rouge_lcs),
        cmocka_unit_test(test_rouge_multiple_references),
        cmocka_unit_test(test_rouge_split_on_single_spaces),
        cmocka_unit_test(test_non_ascii_bytes),
        cmocka_unit_test(test_image_without_references),
        cmocka_unit_test(test_references_without_tokens),
        cmocka_unit_test(test_empty_corpus),
        cmocka_unit_test(test_mean_numpy_order),
        cmocka_unit_test(test_against_python_reference),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
