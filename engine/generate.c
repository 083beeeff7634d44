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

/* Greedy decoding (Hugging Face's greedy_search): the processors see the
 * raw logits; the argmax (first on ties) is the next token. */
static int greedy(const captioner *m, int n, const float *memory, const gen_decoding *d, const gen_options *options,
                  const gen_output *out, rc_error *err)
{
    const cfg_model *c = &m->cfg;
    const int max_len = gen_max_len(m, options, err);
    if (max_len < 0)
        return -1;
    if (n <= 0)
        return 0;
    const int confidence = out->token_probs || out->mean_logprob || out->min_token_prob;
    const int process = lp_active(d);
    dec_cache cache;
    if (dec_cache_build(&cache, m, n, max_len, err) < 0)
        return -1;
    const int L = cfg_memory_tokens(c), V = c->vocab_size;
    int *slots = malloc(sizeof(int) * n), *tokens = malloc(sizeof(int) * n), *positions = malloc(sizeof(int) * n);
    int *seq = malloc(sizeof(int) * (size_t)n * (max_len + 1)); /* bos, then the caption */
    float *logits = malloc(sizeof(float) * (size_t)n * V), *processed = malloc(sizeof(float) * V);
    float *lse = malloc(sizeof(float) * n);
    double *logprobs = malloc(sizeof(double) * (size_t)n * max_len);
    float *scratch = malloc(sizeof(float) * (size_t)n * L * 2 * c->embed_dim);
    if (!slots || !tokens || !positions || !seq || !logits || !processed || !lse || !logprobs || !scratch) {
        free(slots), free(tokens), free(positions), free(seq), free(logits), free(processed), free(lse);
        free(logprobs), free(scratch);
        dec_cache_free(&cache);
        return rc_fail(err, "out of memory for decoding %d images", n);
    }
    int *lens = out->lens;
    for (int i = 0; i < n; i++) {
        slots[i] = i;
        tokens[i] = c->bos_token_id;
        seq[(size_t)i * (max_len + 1)] = c->bos_token_id;
        lens[i] = 0;
    }
    dec_set_memory(m, &cache, n, slots, memory, scratch);
    int n_active = n;
    for (int step = 0; step < max_len && n_active > 0; step++) {
        for (int i = 0; i < n_active; i++)
            positions[i] = step;
        dec_step(m, &cache, n_active, slots, tokens, positions, logits);
        if (confidence) {
#pragma omp parallel for schedule(static)
            for (int i = 0; i < n_active; i++)
                lse[i] = ops_logsumexp_fast(logits + (size_t)i * V, V);
        }
        int kept = 0;
        for (int i = 0; i < n_active; i++) {
            const int image = slots[i];
            const float *row = logits + (size_t)i * V;
            if (options && options->on_logits)
                options->on_logits(options->ctx, image, step, row, V);
            int *image_seq = seq + (size_t)image * (max_len + 1);
            const float *scores = row;
            if (process) {
                memcpy(processed, row, sizeof(float) * V);
                lp_apply(d, c->eos_token_id, image_seq, lens[image] + 1, processed);
                scores = processed;
            }
            const int next = ops_argmax(scores, V);
            if (next == c->eos_token_id)
                continue;
            if (confidence)
                logprobs[(size_t)image * max_len + lens[image]] = (double)row[next] - lse[i];
            image_seq[1 + lens[image]] = next;
            out->ids[(size_t)image * max_len + lens[image]++] = next;
            if (lens[image] == max_len)
                continue;
            slots[kept] = image;
            tokens[kept] = next;
            kept++;
        }
        n_active = kept;
    }
    for (int i = 0; i < n; i++) {
        if (confidence)
            gen_confidence(logprobs + (size_t)i * max_len, lens[i],
                           out->token_probs ? out->token_probs + (size_t)i * max_len : NULL,
                           out->mean_logprob ? out->mean_logprob + i : NULL,
                           out->min_token_prob ? out->min_token_prob + i : NULL);
        if (out->score)
            out->score[i] = NAN;
    }
    free(slots), free(tokens), free(positions), free(seq), free(logits), free(processed), free(lse);
    free(logprobs), free(scratch);
    dec_cache_free(&cache);
    return 0;
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
    dec_cache cache;
    if (dec_cache_build(&cache, m, n, longest, err) < 0)
        return -1;
    int *slots = malloc(sizeof(int) * n), *inputs = malloc(sizeof(int) * n), *positions = malloc(sizeof(int) * n);
    int *rows = malloc(sizeof(int) * n);
    float *logits = malloc(sizeof(float) * (size_t)n * V);
    float *scratch = malloc(sizeof(float) * (size_t)L * 2 * dim);
    if (!slots || !inputs || !positions || !rows || !logits || !scratch) {
        free(slots), free(inputs), free(positions), free(rows), free(logits), free(scratch);
        dec_cache_free(&cache);
        return rc_fail(err, "out of memory for teacher forcing %d sequences", n);
    }
    /* each sequence's slot gets its own image's cross-attention keys/values */
    for (int i = 0; i < n; i++)
        dec_set_memory(m, &cache, 1, &i, memory + (size_t)image[i] * L * dim, scratch);
    for (int step = 0; step < longest; step++) {
        int active = 0;
        for (int i = 0; i < n; i++)
            if (step < n_tokens[i] - 1) {
                slots[active] = i;
                inputs[active] = tokens[i][step];
                positions[active] = step;
                rows[active++] = i;
            }
        dec_step(m, &cache, active, slots, inputs, positions, logits);
        for (int a = 0; a < active; a++) {
            const int i = rows[a];
            const float *row = logits + (size_t)a * V;
            nll[i] += (double)ops_logsumexp(row, V) - (double)row[tokens[i][step + 1]];
        }
    }
    free(slots), free(inputs), free(positions), free(rows), free(logits), free(scratch);
    dec_cache_free(&cache);
    return 0;
}
