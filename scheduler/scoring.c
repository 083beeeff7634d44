/* scoring.c: scores of a stored run, computed and written back. */
#include "scheduler/scoring.h"

#include <stdlib.h>
#include <string.h>

/* The references of one image, as stored and as tokenised. */
typedef struct ref_group {
    char *image_id;
    char **captions; // (n) in ref_index order
    char **tokens;   // (n) tokenised
    int n;
} ref_group;

/* A captioned image that has references. */
typedef struct scored_image {
    char *id;               // copy of the image id
    char *candidate;        // its caption, tokenised
    const ref_group *refs;  // its references
} scored_image;

/* What the store callbacks collect. */
typedef struct collect {
    ref_group *groups;      // (n_groups) sorted by image id (the store's order)
    size_t n_groups, groups_cap;
    scored_image *scored;   // (n_scored) in manifest order
    size_t n_scored, scored_cap;
    const ptb_options *opt;
    sched_scores *out;
    rc_error *err;
} collect;

static int grow(void **array, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap * 2 : 64;
    while (n < need)
        n *= 2;
    void *grown = realloc(*array, n * size);
    if (!grown)
        return -1;
    *array = grown;
    *cap = n;
    return 0;
}

static int on_reference(void *user, const char *image_id, int ref_index, const char *caption, const char *tokens)
{
    (void)tokens; /* always tokenised again: the tokenizer may have changed since */
    (void)ref_index;
    collect *c = user;
    ref_group *g = c->n_groups ? &c->groups[c->n_groups - 1] : NULL;
    if (!g || strcmp(g->image_id, image_id) != 0) {
        if (grow((void **)&c->groups, &c->groups_cap, c->n_groups + 1, sizeof *c->groups) < 0)
            return rc_fail(c->err, "out of memory reading reference captions");
        g = &c->groups[c->n_groups++];
        memset(g, 0, sizeof *g);
        if (!(g->image_id = strdup(image_id)))
            return rc_fail(c->err, "out of memory reading reference captions");
    }
    char **captions = realloc(g->captions, sizeof *captions * (size_t)(g->n + 1));
    if (captions)
        g->captions = captions;
    char **tokens_list = realloc(g->tokens, sizeof *tokens_list * (size_t)(g->n + 1));
    if (tokens_list)
        g->tokens = tokens_list;
    if (!captions || !tokens_list || !(g->captions[g->n] = strdup(caption)))
        return rc_fail(c->err, "out of memory reading reference captions");
    if (!(g->tokens[g->n] = ptb_tokenize(caption, strlen(caption), c->opt, c->err))) {
        free(g->captions[g->n]);
        return -1;
    }
    g->n++;
    return 0;
}

static const ref_group *find_group(const collect *c, const char *image_id)
{
    size_t lo = 0, hi = c->n_groups;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int cmp = strcmp(c->groups[mid].image_id, image_id);
        if (cmp == 0)
            return &c->groups[mid];
        if (cmp < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

static int on_item(void *user, const store_item_row *row)
{
    collect *c = user;
    c->out->n_items++;
    c->out->n_ok += row->ok;
    const ref_group *g = find_group(c, row->image_id);
    if (!g)
        return 0;
    c->out->n_with_refs++;
    if (!row->ok || !row->caption) {
        c->out->n_failed_with_refs++;
        return 0;
    }
    if (grow((void **)&c->scored, &c->scored_cap, c->n_scored + 1, sizeof *c->scored) < 0)
        return rc_fail(c->err, "out of memory reading the run's captions");
    scored_image *img = &c->scored[c->n_scored];
    if (!(img->id = strdup(row->image_id)))
        return rc_fail(c->err, "out of memory reading the run's captions");
    if (!(img->candidate = ptb_tokenize(row->caption, strlen(row->caption), c->opt, c->err))) {
        free(img->id);
        return -1;
    }
    img->refs = g;
    c->n_scored++;
    return 0;
}

const char *sched_metric_name(int k)
{
    static const char *names[SCHED_N_METRICS] = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l"};
    return k >= 0 && k < SCHED_N_METRICS ? names[k] : "?";
}

double sched_metric_value(const metrics_scores *scores, int k)
{
    return k < METRICS_BLEU_N ? scores->bleu[k] : k == 4 ? scores->cider : scores->rouge_l;
}

static void fill_scores(const metrics_scores *m, store_score out[SCHED_N_METRICS])
{
    for (int k = 0; k < SCHED_N_METRICS; k++)
        out[k] = (store_score){sched_metric_name(k), sched_metric_value(m, k)};
}

/* Writes the references' tokens and the scores in one transaction. */
static int store_scores(store *s, int64_t run_id, const collect *c, const metrics_result *r, rc_error *err)
{
    if (store_begin(s, err) < 0)
        return -1;
    int failed = 0;
    for (size_t g = 0; !failed && g < c->n_groups; g++) {
        const ref_group *group = &c->groups[g];
        failed = store_put_references(s, run_id, group->image_id, (const char *const *)group->captions,
                                      (const char *const *)group->tokens, group->n, err) < 0;
    }
    store_score scores[SCHED_N_METRICS];
    for (size_t i = 0; !failed && i < c->n_scored; i++) {
        fill_scores(&r->per_image[i], scores);
        failed = store_put_item_scores(s, run_id, c->scored[i].id, c->scored[i].candidate, scores, SCHED_N_METRICS,
                                       err) < 0;
    }
    if (!failed) {
        fill_scores(&r->corpus, scores);
        failed = store_put_corpus_scores(s, run_id, scores, SCHED_N_METRICS, (int64_t)r->n_scored, err) < 0;
    }
    if (!failed && store_commit(s, err) == 0)
        return 0;
    rc_error ignored;
    store_rollback(s, &ignored);
    return -1;
}

int sched_score_run(store *s, int64_t run_id, const ptb_options *opt, sched_scores *out, rc_error *err)
{
    memset(out, 0, sizeof *out);
    collect c = {.opt = opt, .out = out, .err = err};
    metrics_item *items = NULL;
    /* references first: the items look theirs up */
    int status = store_foreach_reference(s, run_id, on_reference, &c, err) != 0 ||
                         store_foreach_item(s, run_id, 0, on_item, &c, err) != 0
                     ? -1
                     : 0;
    if (status == 0 && c.n_groups > 0) {
        items = calloc(c.n_scored ? c.n_scored : 1, sizeof *items);
        out->ids = calloc(c.n_scored ? c.n_scored : 1, sizeof *out->ids);
        if (!items || !out->ids)
            status = rc_fail(err, "out of memory scoring run %lld", (long long)run_id);
        for (size_t i = 0; status == 0 && i < c.n_scored; i++) {
            const scored_image *img = &c.scored[i];
            items[i] = (metrics_item){img->candidate, (const char *const *)img->refs->tokens, (size_t)img->refs->n};
        }
        if (status == 0 && !(out->result = metrics_compute(items, c.n_scored, err)))
            status = -1;
        if (status == 0)
            status = store_scores(s, run_id, &c, out->result, err);
        for (size_t i = 0; status == 0 && i < c.n_scored; i++) {
            out->ids[i] = c.scored[i].id; /* kept for the report */
            c.scored[i].id = NULL;
        }
    }
    for (size_t g = 0; g < c.n_groups; g++) {
        for (int k = 0; k < c.groups[g].n; k++) {
            free(c.groups[g].captions[k]);
            free(c.groups[g].tokens[k]);
        }
        free(c.groups[g].captions);
        free(c.groups[g].tokens);
        free(c.groups[g].image_id);
    }
    free(c.groups);
    for (size_t i = 0; i < c.n_scored; i++) {
        free(c.scored[i].id);
        free(c.scored[i].candidate);
    }
    free(c.scored);
    free(items);
    if (status < 0)
        sched_scores_free(out);
    return status;
}

void sched_scores_free(sched_scores *scores)
{
    size_t n = scores->result ? scores->result->n_items : 0;
    for (size_t i = 0; scores->ids && i < n; i++)
        free(scores->ids[i]);
    free(scores->ids);
    metrics_free(scores->result);
    memset(scores, 0, sizeof *scores);
}

void sched_scores_write_json(FILE *out, const sched_scores *scores)
{
    metrics_write_json(out, scores->result, (const char *const *)scores->ids);
}

void sched_scores_write_table(FILE *out, const sched_scores *scores)
{
    const metrics_result *r = scores->result;
    fprintf(out, "images scored: %zu (of %zu in the run, %zu captioned; %zu with references, %zu of them failed)\n",
            r ? r->n_scored : 0, scores->n_items, scores->n_ok, scores->n_with_refs, scores->n_failed_with_refs);
    if (!r)
        return;
    fprintf(out, "%-10s %s\n", "metric", "corpus");
    for (int n = 0; n < METRICS_BLEU_N; n++)
        fprintf(out, "BLEU-%d     %.6f\n", n + 1, r->corpus.bleu[n]);
    fprintf(out, "CIDEr-D    %.6f\nROUGE-L    %.6f\n", r->corpus.cider, r->corpus.rouge_l);
}
