#include "generate.h"

#include <stdlib.h>

#include <math.h>
#include <string.h>

#include "beam.h"
#include "decoder.h"
#include "logits_process.h"
#include "ops.h"

void gen_decoding_default(gen_decoding *d)
{
    d->beam = 1;
    d->length_penalty = 1.0;
    d->early_stopping = 0;
    d->min_length = 0;
    d->no_repeat_ngram = 0;
    d->repetition_penalty = 1.0;
    d->token_scores = 0;
}

int gen_decoding_check(const gen_decoding *d, rc_error *err)
{
    if (d->beam < 1 || d->beam > GEN_MAX_BEAM)
        return rc_fail(err, "beam is %d; it must be from 1 to %d", d->beam, GEN_MAX_BEAM);
    if (!isfinite(d->length_penalty))
        return rc_fail(err, "length_penalty must be a finite number");
    if (d->early_stopping != 0 && d->early_stopping != 1)
        return rc_fail(err, "early_stopping is %d; it must be 0 or 1", d->early_stopping);
    if (d->min_length < 0)
        return rc_fail(err, "min_length is %d; it must not be negative", d->min_length);
    if (d->no_repeat_ngram < 0)
        return rc_fail(err, "no_repeat_ngram is %d; it must not be negative (0 is off)", d->no_repeat_ngram);
    if (!(d->repetition_penalty > 0) || !isfinite(d->repetition_penalty))
        return rc_fail(err, "repetition_penalty is %g; it must be a finite number above 0 (1 is off)",
                       d->repetition_penalty);
    if (d->token_scores != 0 && d->token_scores != 1)
        return rc_fail(err, "token_scores is %d; it must be 0 or 1", d->token_scores);
    return 0;
}

void gen_confidence(const double *logprobs, int n, float *token_probs, double *mean_logprob,
                    double *min_token_prob)
{
    double total = 0.0, lowest = INFINITY;
    for (int t = 0; t < n; t++) {
        total += logprobs[t];
        lowest = logprobs[t] < lowest ? logprobs[t] : lowest;
        if (token_probs)
            token_probs[t] = (float)exp(logprobs[t]);
    }
    if (mean_logprob)
        *mean_logprob = n > 0 ? total / n : NAN;
    if (min_token_prob)
        *min_token_prob = n > 0 ? exp(lowest) : NAN;
}

int gen_max_len(const captioner *m, const gen_options *options, rc_error *err)
{
    const int max_len = options && options->max_len > 0 ? options->max_len : m->cfg.max_len;
    if (max_len > m->cfg.max_positions)
        return rc_fail(err, "max_len %d exceeds the model's %d positions", max_len, m->cfg.max_positions);
    return max_len;
}

/* ---- the greedy decoding session ---------------------------------------- */

/* Images whose cross-attention keys and values are computed together when
 * they join a session: bounds the scratch memory of gen_session_add. */
#define SESSION_MEMORY_GROUP 8

struct gen_session {
    const captioner *m;
    gen_decoding d;
    int process;             // d asks for logits processors
    int confidence;          // compute each token's log-probability
    gen_logits_fn on_logits; // may be NULL
    void *ctx;
    int max_len;             // generated tokens at most
    int max_slots;
    dec_cache cache;         // (max_slots) sequences of max_len positions
    /* per slot */
    int *tag;                // (max_slots) the caller's tag
    int *len;                // (max_slots) tokens generated so far
    int *seq;                // (max_slots, max_len + 1) bos, then the caption
    double *logprobs;        // (max_slots, max_len) each token's log-probability, with confidence
    float *token_probs;      // (max_slots, max_len) handed out by gen_session_take_finished
    /* bookkeeping */
    int *active;             // (max_slots) slots being decoded, in the order they joined
    int n_active;
    int *vacant;             // (max_slots) a stack of free slots
    int n_vacant;
    int *done;               // (max_slots) a ring of finished slots not yet taken, oldest first
    int done_head, n_done;
    /* step scratch */
    int *tokens, *positions; // (max_slots) the active sequences' inputs
    float *logits;           // (max_slots, vocab_size)
    float *processed;        // (vocab_size) one row through the logits processors
    float *lse;              // (max_slots) log-sum-exp of each row of logits
    float *memory_scratch;   // (SESSION_MEMORY_GROUP, memory_tokens, 2 * embed_dim) for dec_set_memory
};

void gen_session_free(gen_session *s)
{
    if (!s)
        return;
    dec_cache_free(&s->cache);
    free(s->tag), free(s->len), free(s->seq), free(s->logprobs), free(s->token_probs);
    free(s->active), free(s->vacant), free(s->done), free(s->tokens), free(s->positions);
    free(s->logits), free(s->processed), free(s->lse), free(s->memory_scratch);
    free(s);
}

gen_session *gen_session_new(const captioner *m, int max_slots, const gen_decoding *d, const gen_options *options,
                             int confidence, rc_error *err)
{
    gen_decoding defaults;
    if (!d) {
        gen_decoding_default(&defaults);
        d = &defaults;
    }
    if (gen_decoding_check(d, err) < 0)
        return NULL;
    if (d->beam != 1)
        return rc_fail(err, "a decoding session is greedy; beam search (beam %d) decodes whole batches", d->beam),
               NULL;
    if (max_slots < 1)
        return rc_fail(err, "a decoding session needs at least 1 slot, not %d", max_slots), NULL;
    const int max_len = gen_max_len(m, options, err);
    if (max_len < 0)
        return NULL;
    gen_session *s = calloc(1, sizeof *s);
    if (!s)
        return rc_fail(err, "out of memory for a decoding session of %d sequences", max_slots), NULL;
    const cfg_model *c = &m->cfg;
    const size_t slots = (size_t)max_slots, V = (size_t)c->vocab_size;
    const int group = max_slots < SESSION_MEMORY_GROUP ? max_slots : SESSION_MEMORY_GROUP;
    s->m = m;
    s->d = *d;
    s->process = lp_active(d);
    s->confidence = confidence != 0;
    s->on_logits = options ? options->on_logits : NULL;
    s->ctx = options ? options->ctx : NULL;
    s->max_len = max_len;
    s->max_slots = max_slots;
    /* a cache of at least one position, so that max_len 0 needs no special allocation */
    if (dec_cache_build(&s->cache, m, max_slots, max_len > 0 ? max_len : 1, err) < 0) {
        free(s);
        return NULL;
    }
    s->tag = calloc(slots, sizeof *s->tag);
    s->len = calloc(slots, sizeof *s->len);
    s->seq = malloc(sizeof *s->seq * slots * (size_t)(max_len + 1));
    s->logprobs = malloc(sizeof *s->logprobs * slots * (size_t)(max_len > 0 ? max_len : 1));
    s->token_probs = malloc(sizeof *s->token_probs * slots * (size_t)(max_len > 0 ? max_len : 1));
    s->active = malloc(sizeof *s->active * slots);
    s->vacant = malloc(sizeof *s->vacant * slots);
    s->done = malloc(sizeof *s->done * slots);
    s->tokens = malloc(sizeof *s->tokens * slots);
    s->positions = malloc(sizeof *s->positions * slots);
    s->logits = malloc(sizeof *s->logits * slots * V);
    s->processed = malloc(sizeof *s->processed * V);
    s->lse = malloc(sizeof *s->lse * slots);
    s->memory_scratch = malloc(sizeof(float) * (size_t)group * cfg_memory_tokens(c) * 2 * c->embed_dim);
    if (!s->tag || !s->len || !s->seq || !s->logprobs || !s->token_probs || !s->active || !s->vacant ||
        !s->done || !s->tokens || !s->positions || !s->logits || !s->processed || !s->lse || !s->memory_scratch) {
        gen_session_free(s);
        return rc_fail(err, "out of memory for a decoding session of %d sequences", max_slots), NULL;
    }
    /* popped lowest first, so that images added together take slots in order */
    for (int k = 0; k < max_slots; k++)
        s->vacant[k] = max_slots - 1 - k;
    s->n_vacant = max_slots;
    return s;
}

int gen_session_active(const gen_session *s)
{
    return s->n_active;
}

int gen_session_free_slots(const gen_session *s)
{
    return s->n_vacant;
}

int gen_session_max_len(const gen_session *s)
{
    return s->max_len;
}

static void session_finish(gen_session *s, int slot)
{
    s->done[(s->done_head + s->n_done++) % s->max_slots] = slot;
}

int gen_session_add(gen_session *s, int n, const float *memory, const int *tags, rc_error *err)
{
    if (n > s->n_vacant)
        return rc_fail(err, "%d images cannot join a decoding session with %d free slots", n, s->n_vacant);
    const cfg_model *c = &s->m->cfg;
    const size_t per_image = (size_t)cfg_memory_tokens(c) * c->embed_dim;
    for (int first = 0; first < n; first += SESSION_MEMORY_GROUP) {
        const int count = n - first < SESSION_MEMORY_GROUP ? n - first : SESSION_MEMORY_GROUP;
        int group[SESSION_MEMORY_GROUP];
        for (int i = 0; i < count; i++) {
            const int slot = s->vacant[--s->n_vacant];
            group[i] = slot;
            s->tag[slot] = tags[first + i];
            s->len[slot] = 0;
            s->seq[(size_t)slot * (s->max_len + 1)] = c->bos_token_id;
            if (s->max_len == 0)
                session_finish(s, slot);
            else
                s->active[s->n_active++] = slot;
        }
        if (s->max_len > 0)
            dec_set_memory(s->m, &s->cache, count, group, memory + first * per_image, s->memory_scratch);
    }
    return 0;
}

/* Greedy decoding (Hugging Face's greedy_search): the processors see the
 * raw logits; the argmax (first on ties) is the next token. */
int gen_session_step(gen_session *s)
{
    const int n = s->n_active;
    if (n == 0)
        return 0;
    const cfg_model *c = &s->m->cfg;
    const int V = c->vocab_size, stride = s->max_len + 1;
    for (int i = 0; i < n; i++) {
        const int slot = s->active[i];
        s->tokens[i] = s->seq[(size_t)slot * stride + s->len[slot]];
        s->positions[i] = s->len[slot];
    }
    dec_step(s->m, &s->cache, n, s->active, s->tokens, s->positions, s->logits);
    if (s->confidence) {
#pragma omp parallel for schedule(static) if (n > 1)
        for (int i = 0; i < n; i++)
            s->lse[i] = ops_logsumexp_fast(s->logits + (size_t)i * V, V);
    }
    int kept = 0, finished = 0;
    for (int i = 0; i < n; i++) {
        const int slot = s->active[i];
        const float *row = s->logits + (size_t)i * V;
        if (s->on_logits)
            s->on_logits(s->ctx, s->tag[slot], s->len[slot], row, V);
        int *seq = s->seq + (size_t)slot * stride;
        const float *scores = row;
        if (s->process) {
            memcpy(s->processed, row, sizeof(float) * V);
            lp_apply(&s->d, c->eos_token_id, seq, s->len[slot] + 1, s->processed);
            scores = s->processed;
        }
        const int next = ops_argmax(scores, V);
        if (next != c->eos_token_id) {
            if (s->confidence)
                s->logprobs[(size_t)slot * s->max_len + s->len[slot]] = (double)row[next] - s->lse[i];
            seq[1 + s->len[slot]++] = next;
        }
        if (next == c->eos_token_id || s->len[slot] == s->max_len) {
            session_finish(s, slot);
            finished++;
        } else {
            s->active[kept++] = slot;
        }
    }
    s->n_active = kept;
    return finished;
}

int gen_session_take_finished(gen_session *s, gen_caption *out, int max)
{
    int taken = 0;
    for (; taken < max && s->n_done > 0; taken++) {
        const int slot = s->done[s->done_head];
        s->done_head = (s->done_head + 1) % s->max_slots;
        s->n_done--;
        gen_caption *cap = &out[taken];
        cap->tag = s->tag[slot];
        cap->len = s->len[slot];
        cap->ids = s->seq + (size_t)slot * (s->max_len + 1) + 1;
        cap->token_probs = NULL;
        cap->mean_logprob = cap->min_token_prob = NAN;
        if (s->confidence) {
            float *probs = s->token_probs + (size_t)slot * s->max_len;
            gen_confidence(s->logprobs + (size_t)slot * s->max_len, cap->len, probs, &cap->mean_logprob,
                           &cap->min_token_prob);
            cap->token_probs = probs;
        }
        s->vacant[s->n_vacant++] = slot;
    }
    return taken;
}

/* gen_decode's greedy decoding: one session holding all n images. */
static int greedy(const captioner *m, int n, const float *memory, const gen_decoding *d, const gen_options *options,
                  const gen_output *out, rc_error *err)
{
    const int max_len = gen_max_len(m, options, err);
    if (max_len < 0)
        return -1;
    if (n <= 0)
        return 0;
    const int confidence = out->token_probs || out->mean_logprob || out->min_token_prob;
    gen_session *s = gen_session_new(m, n, d, options, confidence, err);
    int *tags = malloc(sizeof(int) * n);
    gen_caption *finished = malloc(sizeof *finished * n);
    if (!s || !tags || !finished) {
        if (s)
            rc_fail(err, "out of memory for decoding %d images", n);
        gen_session_free(s), free(tags), free(finished);
        return -1;
    }
    for (int i = 0; i < n; i++)
        tags[i] = i;
    int status = gen_session_add(s, n, memory, tags, err);
    while (status == 0) {
        const int k = gen_session_take_finished(s, finished, n);
        for (int j = 0; j < k; j++) {
            const gen_caption *cap = &finished[j];
            const int i = cap->tag;
            out->lens[i] = cap->len;
            memcpy(out->ids + (size_t)i * max_len, cap->ids, sizeof(int) * cap->len);
            if (out->token_probs)
                memcpy(out->token_probs + (size_t)i * max_len, cap->token_probs, sizeof(float) * cap->len);
            if (out->mean_logprob)
                out->mean_logprob[i] = cap->mean_logprob;
            if (out->min_token_prob)
                out->min_token_prob[i] = cap->min_token_prob;
            if (out->score)
                out->score[i] = NAN;
        }
        if (gen_session_active(s) == 0)
            break;
        gen_session_step(s);
    }
    gen_session_free(s), free(tags), free(finished);
    return status;
}

int gen_decode(const captioner *m, int n, const float *memory, const gen_decoding *d, const gen_options *options,
               const gen_output *out, rc_error *err)
{
    gen_decoding defaults;
    if (!d) {
        gen_decoding_default(&defaults);
        d = &defaults;
    }
    if (gen_decoding_check(d, err) < 0)
        return -1;
    if (d->beam > 1)
        return gen_beam_search(m, n, memory, d, options, out, err);
    return greedy(m, n, memory, d, options, out, err);
}

int gen_greedy(const captioner *m, int n, const float *memory, const gen_options *options, int *ids, int *lens,
               rc_error *err)
{
    return gen_decode(m, n, memory, NULL, options, &(gen_output){.ids = ids, .lens = lens}, err);
}

int gen_teacher_forced(const captioner *m, int n, const float *memory, const int *image, const int *const *tokens,
                       const int *n_tokens, double *nll, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    const int L = cfg_memory_tokens(c), V = c->vocab_size, dim = c->embed_dim;
    int longest = 0;
    for (int i = 0; i < n; i++) {
        nll[i] = 0.0;
        if (image[i] < 0)
            return rc_fail(err, "sequence %d names image %d", i, image[i]);
        if (n_tokens[i] - 1 > c->max_positions)
            return rc_fail(err, "sequence %d has %d tokens; the model has %d positions", i, n_tokens[i],
                           c->max_positions);
        for (int t = 0; t < n_tokens[i]; t++)
            if (tokens[i][t] < 0 || tokens[i][t] >= V)
                return rc_fail(err, "sequence %d token %d is id %d, outside the model's %d classes", i, t,
                               tokens[i][t], V);
        longest = n_tokens[i] - 1 > longest ? n_tokens[i] - 1 : longest;
    }
    if (n <= 0 || longest <= 0)
        return 0;
    /* the sequences of one image (its reference captions) share its
     * cross-attention keys and values, computed once: memory row r of the
     * cache holds those of the r-th distinct image */
    int n_images = 0, largest = 0;
    for (int i = 0; i < n; i++)
        largest = image[i] > largest ? image[i] : largest;
    int *row_of_image = malloc(sizeof(int) * ((size_t)largest + 1));
    int *slots = malloc(sizeof(int) * n), *inputs = malloc(sizeof(int) * n), *positions = malloc(sizeof(int) * n);
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    float *scratch = malloc(sizeof(float) * (size_t)L * 2 * dim);
    dec_cache cache = {0};
    int failed = !row_of_image || !slots || !inputs || !positions || !logits || !scratch;
    if (!failed) {
        for (int j = 0; j <= largest; j++)
            row_of_image[j] = -1;
        for (int i = 0; i < n; i++)
            if (row_of_image[image[i]] < 0)
                row_of_image[image[i]] = n_images++;
        failed = dec_cache_build_beams(&cache, m, n, n_images, longest, err) < 0 ? -1 : 0;
    }
    if (failed) {
        free(row_of_image), free(slots), free(inputs), free(positions), free(logits), free(scratch);
        dec_cache_free(&cache);
        return failed < 0 ? -1 : rc_fail(err, "out of memory for teacher forcing %d sequences", n);
    }
    for (int j = 0; j <= largest; j++)
        if (row_of_image[j] >= 0)
            dec_set_memory(m, &cache, 1, &row_of_image[j], memory + (size_t)j * L * dim, scratch);
    for (int i = 0; i < n; i++)
        cache.memory_of[i] = row_of_image[image[i]];
    for (int step = 0; step < longest; step++) {
        int active = 0;
        for (int i = 0; i < n; i++)
            if (step < n_tokens[i] - 1) {
                slots[active] = i;
                inputs[active] = tokens[i][step];
                positions[active++] = step;
            }
        dec_step(m, &cache, active, slots, inputs, positions, logits);
        for (int a = 0; a < active; a++) {
            const int i = slots[a]; /* each sequence has the slot of its number */
            const float *row = logits + (size_t)a * V;
            nll[i] += (double)ops_logsumexp(row, V) - (double)row[tokens[i][step + 1]];
        }
    }
    free(row_of_image), free(slots), free(inputs), free(positions), free(logits), free(scratch);
    dec_cache_free(&cache);
    return 0;
}
