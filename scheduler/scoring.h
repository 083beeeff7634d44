/* scoring.h: BLEU-1..4, CIDEr-D and ROUGE-L of a stored run, written back
 * into the results database (the end of `radcap run`, and `radcap eval`).
 *
 * The candidates are the run's captioned items, the references the run's
 * reference_captions rows (radcap run stores the manifest's ground truth
 * when it starts). Both are tokenised as pycocoevalcap does (ptb.h) and
 * scored with metrics.h. The corpus is the captioned images that have
 * references; an image whose captioning failed is not scored (counted in
 * n_failed_with_refs), nor is a captioned image without references.
 *
 * Stored, in one transaction: each reference's tokenised text, each scored
 * image's tokenised caption and its scores (metric names bleu_1 .. bleu_4,
 * cider, rouge_l), and the corpus scores over n_scored images. Scoring the
 * same run again gives and stores the same numbers.
 */
#ifndef RC_SCHED_SCORING_H
#define RC_SCHED_SCORING_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/err.h"
#include "io/store.h"
#include "pipeline/metrics.h"
#include "pipeline/ptb.h"

#define SCHED_N_METRICS 6 /* bleu_1..bleu_4, cider, rouge_l */

typedef struct sched_scores {
    metrics_result *result;    // over the scored images (NULL when none was scored)
    char **ids;                // (result->n_items) the scored images' ids, in manifest order
    size_t n_items;            // items of the run
    size_t n_ok;               // captioned items
    size_t n_with_refs;        // images with at least one reference caption
    size_t n_failed_with_refs; // images with references whose captioning failed
} sched_scores;

/* Scores run run_id of s and stores the scores (see above); opt are the
 * tokenizer options (NULL: pycocoevalcap's). No batch may be open on s.
 * When the run has no reference captions nothing is stored and
 * out->result is NULL. Fails on a database error or when memory runs out. */
int sched_score_run(store *s, int64_t run_id, const ptb_options *opt, sched_scores *out, rc_error *err);

/* Releases what sched_score_run allocated. */
void sched_scores_free(sched_scores *scores);

/* The metric names in store order and the value of metric k of a score
 * set: "bleu_1".."bleu_4", "cider", "rouge_l". */
const char *sched_metric_name(int k);
double sched_metric_value(const metrics_scores *scores, int k);

/* Writes the scores as one JSON object, in `radcap score --json`'s layout:
 * {"bleu": [b1, b2, b3, b4], "cider": x, "rouge_l": x, "per_image":
 * {"ID": {...}, ...}}, every number with 17 significant digits. */
void sched_scores_write_json(FILE *out, const sched_scores *scores);

/* Writes a small table of the corpus scores, with the counts. */
void sched_scores_write_table(FILE *out, const sched_scores *scores);

#endif
