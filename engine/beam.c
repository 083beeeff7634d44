#include "beam.h"

#include <math.h>
#include <omp.h>
#include <stdlib.h>
#include <string.h>

#include "decoder.h"
#include "logits_process.h"
#include "ops.h"

/* Hugging Face's initial score of the beams other than the first. */
#define BEAM_SCORE_UNUSED -1e9

/* A (beam, token) pair: scores are summed processed log-probabilities. */
typedef struct candidate {
    double score;   // the beam's score + the token's processed log-probability
    double raw;     // the token's raw log-probability (confidence)
    int beam;       // 0..k-1 within the image
    int token;
} candidate;

/* 1 when a ranks before b: higher score, then lower beam, then lower token
 * (the order of the flattened (beam, token) index). */
static int ranks_before(const candidate *a, const candidate *b)
{
    if (a->score != b->score)
        return a->score > b->score;
    if (a->beam != b->beam)
        return a->beam < b->beam;
    return a->token < b->token;
}

/* Inserts c into best[0..*count) (sorted, at most cap) if it ranks high
 * enough. */
static void keep_best(candidate *best, int *count, int cap, const candidate *c)
{
    if (*count == cap && !ranks_before(c, &best[cap - 1]))
        return;
    int at = *count < cap ? (*count)++ : cap - 1;
    while (at > 0 && ranks_before(c, &best[at - 1])) {
        best[at] = best[at - 1];
        at--;
    }
    best[at] = *c;
}

/* The top `cap` tokens of one row of scores (beam and score filled by the
 * caller), by score then lower token. NaN scores are never kept. */
static int top_tokens(const float *scores, int vocab, int cap, candidate *best)
{
    int count = 0;
    for (int v = 0; v < vocab; v++) {
        if (count == cap && !(scores[v] > best[cap - 1].score))
            continue;
        if (scores[v] != scores[v])
            continue;
        const candidate c = {.score = scores[v], .token = v};
        keep_best(best, &count, cap, &c);
    }
    return count;
}

/* One image's finished hypotheses, in the order they were added. */
typedef struct hyp_list {
    int count;          // kept, at most k
    double worst;       // Hugging Face's worst_score (1e9 while empty)
    int *entry_buf;     // (k + 1) buffer of each kept hypothesis
    double *entry_score;// (k + 1) normalised score of each
} hyp_list;

/* Everything a search holds, sized for n images of k beams. */
typedef struct beam_state {
    int n, k, max_len, vocab, cap; // cap = 2k candidates per image
    const gen_decoding *d;
    int *seq;            // (n*k, max_len + 1) each beam's bos + tokens
    double *lp;          // (n*k, max_len) each beam's raw token log-probabilities
    double *score;       // (n*k) each beam's summed processed log-probabilities (float values)
    int *seq_tmp;        // like seq, for reordering
    double *lp_tmp;      // like lp
    hyp_list *hyps;      // (n)
    int *hyp_ids;        // (n, k + 1, max_len) finished hypotheses' tokens
    int *hyp_len;        // (n, k + 1)
    double *hyp_lp;      // (n, k + 1, max_len) their raw log-probabilities
    int *buf_ints;       // (n, k + 1) entry_buf storage
    double *buf_doubles; // (n, k + 1) entry_score storage
} beam_state;

static int *hyp_ids_at(const beam_state *s, int image, int buf)
{
    return s->hyp_ids + ((size_t)image * (s->k + 1) + buf) * s->max_len;
}

static double *hyp_lp_at(const beam_state *s, int image, int buf)
{
    return s->hyp_lp + ((size_t)image * (s->k + 1) + buf) * s->max_len;
}

/* Offers a finished hypothesis: tokens[0..len) with raw log-probabilities
 * lp, summed score sum over generated_len tokens (BeamHypotheses.add). */
static void hyp_add(beam_state *s, int image, const int *tokens, const double *lp, int len, double sum,
                    int generated_len)
{
    hyp_list *h = &s->hyps[image];
    const double normalised = sum / pow((double)generated_len, s->d->length_penalty);
    if (h->count == s->k && !(normalised > h->worst))
        return;
    /* a buffer no kept hypothesis uses (there are k + 1) */
    int buf;
    for (buf = 0; buf <= s->k; buf++) {
        int used = 0;
        for (int e = 0; e < h->count && !used; e++)
            used = h->entry_buf[e] == buf;
        if (!used)
            break;
    }
    memcpy(hyp_ids_at(s, image, buf), tokens, sizeof(int) * len);
    memcpy(hyp_lp_at(s, image, buf), lp, sizeof(double) * len);
    s->hyp_len[(size_t)image * (s->k + 1) + buf] = len;
    h->entry_buf[h->count] = buf;
    h->entry_score[h->count] = normalised;
    h->count++;
    if (h->count <= s->k) {
        h->worst = normalised < h->worst ? normalised : h->worst;
        return;
    }
    /* one too many: drop the lowest (the earliest among equals); the worst
     * becomes the second lowest */
    int lowest = 0, second = -1;
    for (int e = 1; e < h->count; e++)
        if (h->entry_score[e] < h->entry_score[lowest]) {
            second = lowest;
            lowest = e;
        } else if (second < 0 || h->entry_score[e] < h->entry_score[second]) {
            second = e;
        }
    h->worst = h->entry_score[second];
    for (int e = lowest; e + 1 < h->count; e++) {
        h->entry_buf[e] = h->entry_buf[e + 1];
        h->entry_score[e] = h->entry_score[e + 1];
    }
    h->count--;
}

static void state_free(beam_state *s)
{
    free(s->seq), free(s->lp), free(s->score), free(s->seq_tmp), free(s->lp_tmp), free(s->hyps);
    free(s->hyp_ids), free(s->hyp_len), free(s->hyp_lp), free(s->buf_ints), free(s->buf_doubles);
}

static int state_build(beam_state *s, int n, int k, int max_len, int vocab, const gen_decoding *d)
{
    *s = (beam_state){.n = n, .k = k, .max_len = max_len, .vocab = vocab, .cap = 2 * k, .d = d};
    const size_t beams = (size_t)n * k, stored = (size_t)n * (k + 1);
    s->seq = malloc(sizeof(int) * beams * (max_len + 1));
    s->seq_tmp = malloc(sizeof(int) * beams * (max_len + 1));
    s->lp = malloc(sizeof(double) * beams * max_len);
    s->lp_tmp = malloc(sizeof(double) * beams * max_len);
    s->score = malloc(sizeof(double) * beams);
    s->hyps = calloc(n, sizeof(hyp_list));
    s->hyp_ids = malloc(sizeof(int) * stored * max_len);
    s->hyp_lp = malloc(sizeof(double) * stored * max_len);
    s->hyp_len = malloc(sizeof(int) * stored);
    s->buf_ints = malloc(sizeof(int) * stored);
    s->buf_doubles = malloc(sizeof(double) * stored);
    if (!s->seq || !s->seq_tmp || !s->lp || !s->lp_tmp || !s->score || !s->hyps || !s->hyp_ids || !s->hyp_lp ||
        !s->hyp_len || !s->buf_ints || !s->buf_doubles) {
        state_free(s);
        return -1;
    }
    for (int i = 0; i < n; i++)
        s->hyps[i] = (hyp_list){.worst = 1e9,
                                .entry_buf = s->buf_ints + (size_t)i * (k + 1),
                                .entry_score = s->buf_doubles + (size_t)i * (k + 1)};
    return 0;
}

/* The best hypothesis of an image: the highest score, the latest added
 * among equals (Python's stable sort, then pop()). */
static int best_entry(const hyp_list *h)
{
    int best = 0;
    for (int e = 1; e < h->count; e++)
        if (h->entry_score[e] >= h->entry_score[best])
            best = e;
    return best;
}

/* The candidates of every fed row: the 2k best tokens by processed
 * log-probability, in cand + row * cap, each with its raw log-probability.
 * seq_of_row[r] is the row's sequence so far (step + 1 tokens). */
static void rank_rows(const beam_state *s, int n_rows, int step, const float *logits, int *const *seq_of_row,
                      int eos, float *scratch, candidate *cand, int *n_cand)
{
    const int V = s->vocab, process = lp_active(s->d);
#pragma omp parallel for schedule(dynamic, 1)
    for (int r = 0; r < n_rows; r++) {
        const float *row = logits + (size_t)r * V;
        const float lse = ops_logsumexp_fast(row, V);
        candidate *best = cand + (size_t)r * s->cap;
        if (process) {
            /* Hugging Face's beam search processes log-probabilities */
            float *scores = scratch + (size_t)omp_get_thread_num() * V;
            for (int v = 0; v < V; v++)
                scores[v] = row[v] - lse;
            lp_apply(s->d, eos, seq_of_row[r], step + 1, scores);
            n_cand[r] = top_tokens(scores, V, s->cap, best);
        } else {
            n_cand[r] = top_tokens(row, V, s->cap, best);
            for (int c = 0; c < n_cand[r]; c++)
                best[c].score = (double)(row[best[c].token] - lse);
        }
        for (int c = 0; c < n_cand[r]; c++)
            best[c].raw = (double)row[best[c].token] - lse;
    }
}

/* The working memory of a search besides beam_state. */
typedef struct beam_work {
    int *slots, *tokens, *positions; // (n*k) the rows fed to the decoder
    int **seq_of_row;                // (n*k) each fed row's sequence so far
    int *active;                     // (n) images still searching
    int *children, *parents;         // (k) slots of the next beams and of their parents
    int *n_cand;                     // (n*k) candidates found per row
    candidate *cand;                 // (n*k, 2k) each row's best tokens
    candidate *pairs;                // (2k) an image's best (beam, token) pairs
    candidate *next;                 // (k) its next beams
    float *logits;                   // (n*k, vocab)
    float *scratch;                  // (threads, vocab) processed log-probabilities
} beam_work;

static void work_free(beam_work *w)
{
    free(w->slots), free(w->tokens), free(w->positions), free(w->seq_of_row), free(w->active);
    free(w->children), free(w->parents), free(w->n_cand), free(w->cand), free(w->pairs), free(w->next);
    free(w->logits), free(w->scratch);
}

static int work_build(beam_work *w, int n, int k, int vocab)
{
    const size_t rows = (size_t)n * k;
    *w = (beam_work){
        .slots = malloc(sizeof(int) * rows),
        .tokens = malloc(sizeof(int) * rows),
        .positions = malloc(sizeof(int) * rows),
        .seq_of_row = malloc(sizeof(int *) * rows),
        .active = malloc(sizeof(int) * n),
        .children = malloc(sizeof(int) * k),
        .parents = malloc(sizeof(int) * k),
        .n_cand = malloc(sizeof(int) * rows),
        .cand = malloc(sizeof(candidate) * rows * 2 * k),
        .pairs = malloc(sizeof(candidate) * 2 * k),
        .next = malloc(sizeof(candidate) * k),
        .logits = malloc(sizeof(float) * rows * vocab),
        .scratch = malloc(sizeof(float) * (size_t)omp_get_max_threads() * vocab),
    };
    if (!w->slots || !w->tokens || !w->positions || !w->seq_of_row || !w->active || !w->children || !w->parents ||
        !w->n_cand || !w->cand || !w->pairs || !w->next || !w->logits || !w->scratch) {
        work_free(w);
        return -1;
    }
    return 0;
}

/* The decoding steps; returns the number of images still searching after
 * max_len steps (their ids in w->active), or -1. */
static int search(const captioner *m, dec_cache *cache, beam_state *s, beam_work *w, rc_error *err)
{
    const int k = s->k, max_len = s->max_len, eos = m->cfg.eos_token_id;
    const size_t row_len = (size_t)max_len + 1;
    int n_active = s->n;
    for (int i = 0; i < s->n; i++)
        w->active[i] = i;
    for (int step = 0; step < max_len && n_active > 0; step++) {
        /* at step 0 the k beams of an image are one prefix: feed it once */
        const int fed = step == 0 ? 1 : k;
        int n_rows = 0;
        for (int a = 0; a < n_active; a++)
            for (int j = 0; j < fed; j++) {
                const int slot = w->active[a] * k + j;
                w->slots[n_rows] = slot;
                w->seq_of_row[n_rows] = s->seq + (size_t)slot * row_len;
                w->tokens[n_rows] = s->seq[(size_t)slot * row_len + step];
                w->positions[n_rows++] = step;
            }
        dec_step(m, cache, n_rows, w->slots, w->tokens, w->positions, w->logits);
        rank_rows(s, n_rows, step, w->logits, w->seq_of_row, eos, w->scratch, w->cand, w->n_cand);

        int kept = 0;
        for (int a = 0; a < n_active; a++) {
            const int image = w->active[a], base = image * k;
            /* the image's 2k best (beam, token) pairs */
            int n_pairs = 0;
            for (int j = 0; j < k; j++) {
                const int r = a * fed + (step == 0 ? 0 : j);
                for (int t = 0; t < w->n_cand[r]; t++) {
                    candidate p = w->cand[(size_t)r * 2 * k + t];
                    p.beam = j;
                    /* in float, as Hugging Face's float32 scores: the sums then round alike */
                    p.score = (double)((float)s->score[base + j] + (float)p.score);
                    keep_best(w->pairs, &n_pairs, 2 * k, &p);
                }
            }
            int n_next = 0;
            for (int rank = 0; rank < n_pairs && n_next < k; rank++) {
                const candidate *p = &w->pairs[rank];
                const int slot = base + p->beam;
                if (p->token != eos)
                    w->next[n_next++] = *p;
                else if (rank < k)
                    hyp_add(s, image, s->seq + (size_t)slot * row_len + 1, s->lp + (size_t)slot * max_len, step,
                            p->score, step + 1);
            }
            if (n_next < k)
                return rc_fail(err, "beam search found %d continuations for %d beams at step %d", n_next, k, step);
            const hyp_list *h = &s->hyps[image];
            if (h->count == k &&
                (s->d->early_stopping ||
                 h->worst >= w->pairs[0].score / pow((double)(step + 1), s->d->length_penalty)))
                continue; /* done */
            /* the next beams continue their parents: token histories are
             * copied, the decoder's keys and values are followed by row */
            for (int j = 0; j < k; j++) {
                const int parent = base + (step == 0 ? 0 : w->next[j].beam);
                w->parents[j] = parent;
                w->children[j] = base + j;
                memcpy(s->seq_tmp + (size_t)j * row_len, s->seq + (size_t)parent * row_len,
                       sizeof(int) * (step + 1));
                memcpy(s->lp_tmp + (size_t)j * max_len, s->lp + (size_t)parent * max_len, sizeof(double) * step);
            }
            for (int j = 0; j < k; j++) {
                int *seq = s->seq + (size_t)(base + j) * row_len;
                double *lp = s->lp + (size_t)(base + j) * max_len;
                memcpy(seq, s->seq_tmp + (size_t)j * row_len, sizeof(int) * (step + 1));
                memcpy(lp, s->lp_tmp + (size_t)j * max_len, sizeof(double) * step);
                seq[step + 1] = w->next[j].token;
                lp[step] = w->next[j].raw;
                s->score[base + j] = w->next[j].score;
            }
            dec_follow(cache, k, w->children, w->parents, step + 1);
            w->active[kept++] = image;
        }
        n_active = kept;
    }
    return n_active;
}

int gen_beam_search(const captioner *m, int n, const float *memory, const gen_decoding *d,
                    const gen_options *options, const gen_output *out, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    if (gen_decoding_check(d, err) < 0)
        return -1;
    const int max_len = gen_max_len(m, options, err);
    if (max_len < 0)
        return -1;
    if (n <= 0)
        return 0;
    const int k = d->beam, V = c->vocab_size, L = cfg_memory_tokens(c);
    if (V < 2 * k)
        return rc_fail(err, "beam %d needs a vocabulary of at least %d tokens, the model has %d", k, 2 * k, V);
    dec_cache cache;
    if (dec_cache_build_beams(&cache, m, n * k, n, max_len, err) < 0)
        return -1;
    beam_state s;
    beam_work w;
    float *memory_scratch = malloc(sizeof(float) * (size_t)n * L * 2 * c->embed_dim);
    const int state_ok = state_build(&s, n, k, max_len, V, d) == 0, work_ok = work_build(&w, n, k, V) == 0;
    if (!state_ok || !work_ok || !memory_scratch) {
        if (state_ok)
            state_free(&s);
        if (work_ok)
            work_free(&w);
        free(memory_scratch);
        dec_cache_free(&cache);
        return rc_fail(err, "out of memory for a beam search of %d images x %d beams", n, k);
    }
    const size_t row_len = (size_t)max_len + 1;
    for (int i = 0; i < n; i++) {
        for (int j = 0; j < k; j++) {
            cache.memory_of[i * k + j] = i;
            s.seq[(size_t)(i * k + j) * row_len] = c->bos_token_id;
            s.score[i * k + j] = j == 0 ? 0.0 : BEAM_SCORE_UNUSED;
        }
        w.slots[i] = i;
    }
    dec_set_memory(m, &cache, n, w.slots, memory, memory_scratch);
    const int n_open = search(m, &cache, &s, &w, err);
    /* images still searching after max_len steps offer their live beams */
    for (int a = 0; a < n_open; a++)
        for (int j = 0; j < k; j++) {
            const int slot = w.active[a] * k + j;
            hyp_add(&s, w.active[a], s.seq + (size_t)slot * row_len + 1, s.lp + (size_t)slot * max_len, max_len,
                    s.score[slot], max_len);
        }
    for (int i = 0; i < n && n_open >= 0; i++) {
        const hyp_list *h = &s.hyps[i];
        const int e = best_entry(h), buf = h->entry_buf[e];
        const int len = s.hyp_len[(size_t)i * (k + 1) + buf];
        memcpy(out->ids + (size_t)i * max_len, hyp_ids_at(&s, i, buf), sizeof(int) * len);
        out->lens[i] = len;
        if (out->score)
            out->score[i] = h->entry_score[e];
        gen_confidence(hyp_lp_at(&s, i, buf), len, out->token_probs ? out->token_probs + (size_t)i * max_len : NULL,
                       out->mean_logprob ? out->mean_logprob + i : NULL,
                       out->min_token_prob ? out->min_token_prob + i : NULL);
    }
    state_free(&s);
    work_free(&w);
    free(memory_scratch);
    dec_cache_free(&cache);
    return n_open < 0 ? -1 : 0;
}
