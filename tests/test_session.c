/* The greedy decoding session (generate.h's gen_session: continuous
 * batching) on the committed tiny model.
 *
 * The property: an image's caption and confidence do not depend on when it
 * joined the session, on the other sequences decoded beside it or on the
 * number of slots. Each image decoded alone by gen_decode is the reference
 * (exact equality: the engine's matrix products compute each row the same
 * way whatever the number of rows), and gen_decode alone is itself checked
 * against a plain greedy loop written here on dec_step (one sequence, the
 * processors of logits_process.h, exact log-sum-exp), which is how the
 * model card's generate_caption decodes. test_parity checks gen_decode
 * against PyTorch.
 *
 * Inputs are memory tokens: the 20 images of the tiny fixture (computed by
 * PyTorch) and 12 random ones, uniform in [-1, 1].
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include <cmocka.h>

#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/decoder.h"
#include "engine/generate.h"
#include "engine/logits_process.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/rng.h"
#include "tests/helpers/testutil.h"

#define TINY "tests/fixtures/tiny"
#define N_RANDOM 12

typedef tu_tiny tiny;

static void load_tiny(tiny *t)
{
    rc_error err = {{0}};
    if (tu_tiny_load(t, N_RANDOM, 20261130, &err) < 0)
        fail_msg("%s", err.msg);
}

static void free_tiny(tiny *t) { tu_tiny_free(t); }

static const float *memory_of(const tiny *t, int image)
{
    return t->memory + (size_t)image * t->L * t->dim;
}

/* One image's caption, owned. */
typedef struct caption {
    int len;
    int ids[128];
    float probs[128];
    double mean_logprob, min_token_prob;
} caption;

/* gen_decode on one image alone. */
static void decode_alone(const tiny *t, int image, const gen_decoding *d, int max_len, caption *out)
{
    int lens[1];
    double mean[1], lowest[1];
    const gen_output o = {out->ids, lens, out->probs, mean, lowest, NULL};
    rc_error err = {{0}};
    assert_true(max_len <= 128);
    if (gen_decode(&t->model, 1, memory_of(t, image), d, &(gen_options){.max_len = max_len}, &o, &err) < 0)
        fail_msg("%s", err.msg);
    out->len = lens[0];
    out->mean_logprob = mean[0];
    out->min_token_prob = lowest[0];
}

/* The reference: greedy decoding of one image written on dec_step alone. */
static void decode_by_hand(const tiny *t, int image, const gen_decoding *d, int max_len, caption *out)
{
    const cfg_model *c = &t->cfg;
    const int V = c->vocab_size;
    rc_error err = {{0}};
    dec_cache cache;
    if (dec_cache_build(&cache, &t->model, 1, max_len, &err) < 0)
        fail_msg("%s", err.msg);
    float *scratch = malloc(sizeof(float) * t->L * 2 * t->dim);
    float *logits = malloc(sizeof(float) * V), *scores = malloc(sizeof(float) * V);
    int slot = 0, seq[129] = {c->bos_token_id};
    double total = 0, lowest = INFINITY;
    dec_set_memory(&t->model, &cache, 1, &slot, memory_of(t, image), scratch);
    out->len = 0;
    for (int step = 0; step < max_len; step++) {
        dec_step(&t->model, &cache, 1, &slot, &seq[step], &step, logits);
        memcpy(scores, logits, sizeof(float) * V);
        lp_apply(d, c->eos_token_id, seq, step + 1, scores);
        int next = 0;
        for (int v = 1; v < V; v++)
            next = scores[v] > scores[next] ? v : next;
        if (next == c->eos_token_id)
            break;
        const double logprob = (double)logits[next] - ops_logsumexp(logits, V);
        total += logprob;
        lowest = logprob < lowest ? logprob : lowest;
        out->probs[out->len] = (float)exp(logprob);
        out->ids[out->len++] = seq[step + 1] = next;
    }
    out->mean_logprob = out->len ? total / out->len : NAN;
    out->min_token_prob = out->len ? exp(lowest) : NAN;
    free(scratch), free(logits), free(scores);
    dec_cache_free(&cache);
}

static void expect_same_caption(const caption *got, const caption *want, int exact, const char *what, int image)
{
    if (got->len != want->len)
        fail_msg("%s: image %d has %d tokens, expected %d", what, image, got->len, want->len);
    for (int k = 0; k < got->len; k++) {
        if (got->ids[k] != want->ids[k])
            fail_msg("%s: image %d token %d is %d, expected %d", what, image, k, got->ids[k], want->ids[k]);
        if (exact ? got->probs[k] != want->probs[k] : fabsf(got->probs[k] - want->probs[k]) > 1e-5f)
            fail_msg("%s: image %d token %d has probability %.9g, expected %.9g", what, image, k, got->probs[k],
                     want->probs[k]);
    }
    const double tolerance = exact ? 0 : 1e-5;
    if (got->len == 0) {
        assert_true(isnan(got->mean_logprob) && isnan(got->min_token_prob));
        return;
    }
    if (!(fabs(got->mean_logprob - want->mean_logprob) <= tolerance) ||
        !(fabs(got->min_token_prob - want->min_token_prob) <= tolerance))
        fail_msg("%s: image %d confidence %.9g / %.9g, expected %.9g / %.9g", what, image, got->mean_logprob,
                 got->min_token_prob, want->mean_logprob, want->min_token_prob);
}

/* The decodings tried: the card's, and every logits processor. */
static gen_decoding decoding_case(int k)
{
    gen_decoding d;
    gen_decoding_default(&d);
    if (k == 1) {
        d.no_repeat_ngram = 3;
        d.repetition_penalty = 1.3;
        d.min_length = 5;
    } else if (k == 2) {
        d.no_repeat_ngram = 1;
        d.min_length = 90; /* beyond max_len: no caption may end early */
    } else if (k == 3) {
        d.repetition_penalty = 0.7;
    }
    return d;
}
#define N_DECODINGS 4

/* gen_decode alone is plain greedy decoding (the reference for the
 * session tests below). */
static void test_alone_is_plain_greedy(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t);
    int lengths[2] = {0, 0}; /* captions ended by [SEP] / cut at max_len */
    for (int k = 0; k < N_DECODINGS; k++) {
        const gen_decoding d = decoding_case(k);
        for (int i = 0; i < t.n; i += 3) {
            caption ours, ref;
            decode_alone(&t, i, &d, t.cfg.max_len, &ours);
            decode_by_hand(&t, i, &d, t.cfg.max_len, &ref);
            expect_same_caption(&ours, &ref, 0, "gen_decode vs a plain greedy loop", i);
            lengths[ours.len == t.cfg.max_len]++;
        }
    }
    printf("  %d captions ended by [SEP], %d cut at max_len\n", lengths[0], lengths[1]);
    /* both ways of finishing must be exercised */
    assert_true(lengths[0] > 0 && lengths[1] > 0);
    free_tiny(&t);
}

/* Runs a session of n_slots over all images: they join in order, a few at
 * a time (1..3, at random), whenever there is room and a coin says so, so
 * that images join at many different steps beside sequences of every age.
 * Checks each caption against the image decoded alone. */
static void run_schedule(const tiny *t, const caption *alone, const gen_decoding *d, int max_len, int n_slots,
                         uint64_t seed)
{
    rc_error err = {{0}};
    gen_session *s = gen_session_new(&t->model, n_slots, d, &(gen_options){.max_len = max_len}, 1, &err);
    if (!s)
        fail_msg("%s", err.msg);
    assert_int_equal(gen_session_free_slots(s), n_slots);
    assert_int_equal(gen_session_max_len(s), max_len);
    rng_state r;
    rng_seed(&r, seed);
    int *done = calloc(t->n, sizeof *done);
    gen_caption *finished = malloc(sizeof *finished * n_slots);
    int next = 0, n_done = 0, joined_late = 0, steps = 0;
    while (n_done < t->n) {
        const int want = 1 + (int)(rng_next(&r) % 3);
        int count = want < t->n - next ? want : t->n - next;
        if (count > gen_session_free_slots(s))
            count = gen_session_free_slots(s);
        if (count > 0 && (gen_session_active(s) == 0 || rng_uniform(&r) < 0.5)) {
            int tags[3];
            for (int j = 0; j < count; j++)
                tags[j] = 1000 + next + j;
            if (gen_session_add(s, count, memory_of(t, next), tags, &err) < 0)
                fail_msg("%s", err.msg);
            joined_late += gen_session_active(s) > count;
            next += count;
        }
        const int active = gen_session_active(s);
        const int ended = gen_session_step(s);
        steps++;
        assert_true(ended <= active);
        assert_int_equal(gen_session_active(s), active - ended);
        const int k = gen_session_take_finished(s, finished, n_slots);
        assert_int_equal(k, ended);
        for (int j = 0; j < k; j++) {
            const int image = finished[j].tag - 1000;
            assert_true(image >= 0 && image < next && !done[image]);
            done[image] = 1;
            n_done++;
            caption got = {.len = finished[j].len,
                           .mean_logprob = finished[j].mean_logprob,
                           .min_token_prob = finished[j].min_token_prob};
            memcpy(got.ids, finished[j].ids, sizeof(int) * got.len);
            memcpy(got.probs, finished[j].token_probs, sizeof(float) * got.len);
            char what[96];
            snprintf(what, sizeof what, "session of %d slots, max_len %d", n_slots, max_len);
            expect_same_caption(&got, &alone[image], 1, what, image);
        }
        assert_int_equal(gen_session_free_slots(s), n_slots - gen_session_active(s));
    }
    assert_int_equal(gen_session_active(s), 0);
    assert_int_equal(gen_session_step(s), 0);
    assert_int_equal(gen_session_take_finished(s, finished, n_slots), 0);
    /* images must have joined beside running sequences for the test to mean anything */
    if (n_slots > 1)
        assert_true(joined_late > 0);
    free(done), free(finished);
    gen_session_free(s);
}

static void test_joining_at_any_step(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t);
    const int slot_counts[] = {1, 3, 40};
    const int max_lens[] = {80, 17};
    caption *alone = malloc(sizeof *alone * t.n);
    for (int k = 0; k < N_DECODINGS; k++) {
        const gen_decoding d = decoding_case(k);
        /* a shorter max_len with the card's decoding: more captions cut, at other steps */
        for (int m = 0; m < (k == 0 ? 2 : 1); m++) {
            for (int i = 0; i < t.n; i++)
                decode_alone(&t, i, &d, max_lens[m], &alone[i]);
            for (size_t c = 0; c < sizeof slot_counts / sizeof slot_counts[0]; c++)
                run_schedule(&t, alone, &d, max_lens[m], slot_counts[c], 77 + 13 * k + 5 * m + c);
        }
    }
    free(alone);
    free_tiny(&t);
}

/* Without confidence the tokens are the same and the confidence is NAN. */
static void test_without_confidence(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t);
    rc_error err = {{0}};
    const gen_decoding d = decoding_case(1);
    gen_session *s = gen_session_new(&t.model, 4, &d, NULL, 0, &err);
    assert_non_null(s);
    const int tags[4] = {0, 1, 2, 3};
    assert_int_equal(gen_session_add(s, 4, t.memory, tags, &err), 0);
    gen_caption finished[4];
    int n_done = 0;
    while (gen_session_active(s) > 0) {
        gen_session_step(s);
        const int k = gen_session_take_finished(s, finished, 4);
        for (int j = 0; j < k; j++, n_done++) {
            caption want;
            decode_alone(&t, finished[j].tag, &d, t.cfg.max_len, &want);
            assert_int_equal(finished[j].len, want.len);
            assert_memory_equal(finished[j].ids, want.ids, sizeof(int) * want.len);
            assert_null(finished[j].token_probs);
            assert_true(isnan(finished[j].mean_logprob) && isnan(finished[j].min_token_prob));
        }
    }
    assert_int_equal(n_done, 4);
    gen_session_free(s);
    free_tiny(&t);
}

/* on_logits sees each sequence's tag and its own step numbers, 0, 1, ...,
 * once per generated token plus the step that chose [SEP]. */
typedef struct step_log {
    int next_step[64]; // per tag: the step expected next
    int calls;
} step_log;

static void log_step(void *ctx, int image, int step, const float *logits, int vocab_size)
{
    step_log *log = ctx;
    (void)logits;
    assert_int_equal(vocab_size, 400);
    assert_true(image >= 0 && image < 64);
    assert_int_equal(step, log->next_step[image]);
    log->next_step[image]++;
    log->calls++;
}

static void test_logits_callback(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t);
    rc_error err = {{0}};
    step_log log = {{0}, 0};
    gen_session *s = gen_session_new(&t.model, 3, NULL, &(gen_options){.on_logits = log_step, .ctx = &log}, 1, &err);
    assert_non_null(s);
    int lens[64] = {0}, added = 0;
    gen_caption finished[3];
    while (added < 6 || gen_session_active(s) > 0) {
        if (added < 6 && gen_session_free_slots(s) > 0) {
            const int tag = 10 * added;
            assert_int_equal(gen_session_add(s, 1, memory_of(&t, added), &tag, &err), 0);
            added++;
        }
        gen_session_step(s);
        const int k = gen_session_take_finished(s, finished, 3);
        for (int j = 0; j < k; j++)
            lens[finished[j].tag] = finished[j].len;
    }
    int expected_calls = 0;
    for (int i = 0; i < 6; i++) {
        const int tag = 10 * i, len = lens[tag];
        /* a caption cut at max_len had no [SEP] step */
        const int calls = len == t.cfg.max_len ? len : len + 1;
        assert_int_equal(log.next_step[tag], calls);
        expected_calls += calls;
    }
    assert_int_equal(log.calls, expected_calls);
    gen_session_free(s);
    free_tiny(&t);
}

/* max_len 0: every caption is empty at once. */
static void test_max_len_zero(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t);
    rc_error err = {{0}};
    t.model.cfg.max_len = 0; /* gen_options' 0 means the configuration's */
    gen_session *s = gen_session_new(&t.model, 2, NULL, NULL, 1, &err);
    assert_non_null(s);
    const int tags[2] = {7, 8};
    assert_int_equal(gen_session_add(s, 2, t.memory, tags, &err), 0);
    assert_int_equal(gen_session_active(s), 0);
    assert_int_equal(gen_session_free_slots(s), 0);
    gen_caption finished[2];
    assert_int_equal(gen_session_take_finished(s, finished, 2), 2);
    assert_int_equal(finished[0].tag, 7);
    assert_int_equal(finished[1].tag, 8);
    assert_int_equal(finished[0].len, 0);
    assert_true(isnan(finished[1].mean_logprob));
    assert_int_equal(gen_session_free_slots(s), 2);
    gen_session_free(s);
    free_tiny(&t);
}

static void test_errors_name_the_cause(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t);
    rc_error err = {{0}};
    gen_decoding beam;
    gen_decoding_default(&beam);
    beam.beam = 2;
    assert_null(gen_session_new(&t.model, 4, &beam, NULL, 1, &err));
    assert_non_null(strstr(err.msg, "beam"));
    assert_null(gen_session_new(&t.model, 0, NULL, NULL, 1, &err));
    assert_non_null(strstr(err.msg, "slot"));
    assert_null(gen_session_new(&t.model, 4, NULL, &(gen_options){.max_len = t.cfg.max_positions + 1}, 1, &err));
    assert_non_null(strstr(err.msg, "max_len"));
    gen_decoding bad;
    gen_decoding_default(&bad);
    bad.min_length = -1;
    assert_null(gen_session_new(&t.model, 4, &bad, NULL, 1, &err));
    assert_non_null(strstr(err.msg, "min_length"));
    gen_session *s = gen_session_new(&t.model, 2, NULL, NULL, 1, &err);
    assert_non_null(s);
    const int tags[3] = {0, 1, 2};
    assert_int_equal(gen_session_add(s, 3, t.memory, tags, &err), -1);
    assert_non_null(strstr(err.msg, "2 free slots"));
    assert_int_equal(gen_session_active(s), 0); /* nothing joined */
    gen_session_free(s);
    gen_session_free(NULL);
    free_tiny(&t);
}

/* dec_step timed part by part (dec_profile) computes the same logits, and
 * every part's time is there: more than nothing, and all of them together
 * no more than the steps took. */
static void test_step_profile(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t);
    enum { SLOTS = 4, STEPS = 6 };
    const int V = t.cfg.vocab_size;
    rc_error err = {{0}};
    float *scratch = malloc(sizeof(float) * SLOTS * t.L * 2 * t.dim);
    float *logits[2] = {malloc(sizeof(float) * SLOTS * V), malloc(sizeof(float) * SLOTS * V)};
    assert_true(scratch && logits[0] && logits[1]);
    const int slots[SLOTS] = {0, 1, 2, 3};
    int tokens[SLOTS];
    for (int i = 0; i < SLOTS; i++)
        tokens[i] = (t.cfg.bos_token_id + 37 * i) % V; /* any tokens the model has */
    dec_profile profile = {0};
    double elapsed = 0;
    for (int profiled = 0; profiled < 2; profiled++) {
        dec_cache cache;
        if (dec_cache_build(&cache, &t.model, SLOTS, STEPS, &err) < 0)
            fail_msg("%s", err.msg);
        dec_set_memory(&t.model, &cache, SLOTS, slots, t.memory, scratch);
        cache.profile = profiled ? &profile : NULL;
        const double start = omp_get_wtime();
        for (int step = 0; step < STEPS; step++) {
            const int positions[SLOTS] = {step, step, step, step};
            dec_step(&t.model, &cache, SLOTS, slots, tokens, positions, logits[profiled]);
        }
        elapsed = omp_get_wtime() - start;
        dec_cache_free(&cache);
    }
    assert_memory_equal(logits[0], logits[1], sizeof(float) * SLOTS * V);
    double total = 0;
    for (int part = 0; part < DEC_N_PARTS; part++) {
        if (!(profile.seconds[part] > 0))
            fail_msg("part %s: %g s", dec_part_name(part), profile.seconds[part]);
        total += profile.seconds[part];
    }
    assert_true(total <= elapsed);
    assert_string_equal(dec_part_name(DEC_FC_OUT), "fc_out");
    assert_string_equal(dec_part_name(DEC_N_PARTS), "?");
    free(scratch), free(logits[0]), free(logits[1]);
    free_tiny(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_alone_is_plain_greedy), cmocka_unit_test(test_joining_at_any_step),
        cmocka_unit_test(test_without_confidence),    cmocka_unit_test(test_logits_callback),
        cmocka_unit_test(test_max_len_zero),          cmocka_unit_test(test_errors_name_the_cause),
        cmocka_unit_test(test_step_profile),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
