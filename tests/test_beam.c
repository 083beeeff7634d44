/* Beam search, repetition control and confidence (engine/beam.h,
 * engine/logits_process.h, gen_decode) against an independent PyTorch
 * implementation (tests/reference/beam_ref.py: the card's full forward pass
 * on every prefix, Hugging Face's algorithm in float32 tensors) on the
 * committed tiny model, plus properties that need no reference.
 *
 * Inputs are memory tokens, what the encoder hands the decoder: the 20
 * images of the tiny fixture (computed by PyTorch) and 12 random ones
 * (uniform in [-1, 1], the range of the graph layer's Hardtanh).
 */
#include <cjson/cJSON.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "engine/beam.h"
#include "engine/checkpoint.h"
#include "engine/config.h"
#include "engine/generate.h"
#include "engine/logits_process.h"
#include "engine/model.h"
#include "engine/rng.h"
#include "tests/helpers/testutil.h"

#define TINY "tests/fixtures/tiny"
#define N_RANDOM 12
#define TOLERANCE 1e-4
#define COMPARED_MAX_LEN 40 /* test_matches_pytorch's captions: see there */

typedef tu_tiny tiny;

static void load_tiny(tiny *t, int n_random)
{
    rc_error err = {{0}};
    if (tu_tiny_load(t, n_random, 20260801, &err) < 0)
        fail_msg("%s", err.msg);
}

static void free_tiny(tiny *t) { tu_tiny_free(t); }

/* Decoding results of n images, owned. */
typedef struct decoded {
    int max_len;
    int *ids, *lens;
    float *token_probs;
    double *mean_logprob, *min_token_prob, *score;
} decoded;

/* max_len 0: the model's. */
static void decode(const tiny *t, int n, const float *memory, const gen_decoding *d, int use_beam_search, int max_len,
                   decoded *out)
{
    out->max_len = max_len > 0 ? max_len : t->cfg.max_len;
    const gen_options options = {.max_len = out->max_len};
    out->ids = malloc(sizeof(int) * n * out->max_len);
    out->lens = malloc(sizeof(int) * n);
    out->token_probs = malloc(sizeof(float) * n * out->max_len);
    out->mean_logprob = malloc(sizeof(double) * n);
    out->min_token_prob = malloc(sizeof(double) * n);
    out->score = malloc(sizeof(double) * n);
    const gen_output o = {out->ids, out->lens, out->token_probs, out->mean_logprob, out->min_token_prob, out->score};
    rc_error err = {{0}};
    const int rc = use_beam_search ? gen_beam_search(&t->model, n, memory, d, &options, &o, &err)
                                   : gen_decode(&t->model, n, memory, d, &options, &o, &err);
    if (rc < 0)
        fail_msg("%s", err.msg);
}

static void free_decoded(decoded *o)
{
    free(o->ids), free(o->lens), free(o->token_probs), free(o->mean_logprob), free(o->min_token_prob), free(o->score);
}

static void expect_same_tokens(const decoded *a, const decoded *b, int n, const char *what)
{
    for (int i = 0; i < n; i++) {
        if (a->lens[i] != b->lens[i])
            fail_msg("%s: image %d has %d tokens, expected %d", what, i, a->lens[i], b->lens[i]);
        for (int t = 0; t < a->lens[i]; t++)
            if (a->ids[i * a->max_len + t] != b->ids[i * b->max_len + t])
                fail_msg("%s: image %d token %d is %d, expected %d", what, i, t, a->ids[i * a->max_len + t],
                         b->ids[i * b->max_len + t]);
    }
}

static gen_decoding decoding(int beam)
{
    gen_decoding d;
    gen_decoding_default(&d);
    d.beam = beam;
    return d;
}

/* ---- the processors on hand-made rows ------------------------------------ */

static void test_processors_by_hand(void **state)
{
    (void)state;
    const int eos = 2;
    /* sequence bos=0, then 3 4 3: distinct tokens 0, 3, 4 */
    const int seq[] = {0, 3, 4, 3};
    float row[6] = {1.0f, -1.0f, 0.5f, 2.0f, -4.0f, 0.0f};
    gen_decoding d = decoding(1);
    d.repetition_penalty = 2.0;
    lp_apply(&d, eos, seq, 4, row);
    /* 0: 1/2; 3: 2/2 (once, though 3 occurs twice); 4: -4*2; others as they were */
    const float penalised[6] = {0.5f, -1.0f, 0.5f, 1.0f, -8.0f, 0.0f};
    assert_memory_equal(row, penalised, sizeof row);

    /* no-repeat 2: the tail is (3); 3 was followed by 4 before, so 4 is banned */
    float row2[6] = {0};
    d = decoding(1);
    d.no_repeat_ngram = 2;
    lp_apply(&d, eos, seq, 4, row2);
    for (int v = 0; v < 6; v++)
        assert_true(v == 4 ? isinf(row2[v]) && row2[v] < 0 : row2[v] == 0.0f);
    /* no-repeat 3: the tail (4, 3) never occurred before: nothing banned;
     * after 3 4 3 4 the tail (3, 4) did, followed by 3 */
    float row3[6] = {0};
    d.no_repeat_ngram = 3;
    lp_apply(&d, eos, seq, 4, row3);
    for (int v = 0; v < 6; v++)
        assert_true(row3[v] == 0.0f);
    const int seq4[] = {0, 3, 4, 3, 4};
    lp_apply(&d, eos, seq4, 5, row3);
    for (int v = 0; v < 6; v++)
        assert_true(v == 3 ? isinf(row3[v]) : row3[v] == 0.0f);
    /* no-repeat 1: every token of the sequence, bos included */
    float row4[6] = {0};
    d.no_repeat_ngram = 1;
    lp_apply(&d, eos, seq, 4, row4);
    for (int v = 0; v < 6; v++)
        assert_true((v == 0 || v == 3 || v == 4) ? isinf(row4[v]) : row4[v] == 0.0f);
    /* sequences shorter than n - 1 tokens ban nothing */
    float row5[6] = {0};
    d.no_repeat_ngram = 6;
    lp_apply(&d, eos, seq, 4, row5);
    for (int v = 0; v < 6; v++)
        assert_true(row5[v] == 0.0f);

    /* min length 3: 3 tokens generated after bos: eos allowed; with 2 not */
    float row6[6] = {0};
    d = decoding(1);
    d.min_length = 3;
    lp_apply(&d, eos, seq, 4, row6);
    assert_true(row6[eos] == 0.0f);
    lp_apply(&d, eos, seq, 3, row6);
    assert_true(isinf(row6[eos]));
    assert_true(lp_active(&d));
    d = decoding(4);
    assert_false(lp_active(&d));
}

static void test_decoding_check_names_the_field(void **state)
{
    (void)state;
    rc_error err = {{0}};
    gen_decoding d = decoding(1);
    assert_int_equal(gen_decoding_check(&d, &err), 0);
    d.beam = 17;
    assert_int_equal(gen_decoding_check(&d, &err), -1);
    assert_non_null(strstr(err.msg, "beam"));
    d = decoding(0);
    assert_int_equal(gen_decoding_check(&d, &err), -1);
    d = decoding(16);
    assert_int_equal(gen_decoding_check(&d, &err), 0);
    /* each case spoils the field it names */
    static const char *const fields[] = {"min_length", "no_repeat_ngram", "repetition_penalty", "length_penalty",
                                         "early_stopping"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        d = decoding(2);
        switch (i) {
        case 0: d.min_length = -1; break;
        case 1: d.no_repeat_ngram = -2; break;
        case 2: d.repetition_penalty = 0.0; break;
        case 3: d.length_penalty = NAN; break;
        default: d.early_stopping = 2; break;
        }
        rc_clear(&err);
        assert_int_equal(gen_decoding_check(&d, &err), -1);
        if (!strstr(err.msg, fields[i]))
            fail_msg("message '%s' does not name %s", err.msg, fields[i]);
    }
    d = decoding(2);
    d.repetition_penalty = -1.0;
    assert_int_equal(gen_decoding_check(&d, &err), -1);
}

/* ---- against PyTorch ----------------------------------------------------- */

typedef struct run_case {
    int beam;
    double length_penalty;
    int early_stopping, min_length, no_repeat_ngram;
    double repetition_penalty;
} run_case;

static const run_case RUNS[] = {
    {1, 1.0, 0, 0, 0, 1.0},  {1, 1.0, 0, 0, 3, 1.0},  {1, 1.0, 0, 0, 0, 1.3},  {1, 1.0, 0, 4, 2, 1.2},
    {2, 1.0, 0, 0, 0, 1.0},  {2, 0.0, 0, 0, 0, 1.0},  {2, 2.0, 0, 0, 0, 1.0},  {2, 1.0, 0, 0, 3, 1.0},
    {2, 1.0, 0, 0, 0, 1.5},  {2, 1.0, 1, 3, 2, 1.2},  {4, 1.0, 0, 0, 0, 1.0},  {4, 0.0, 0, 0, 0, 1.0},
    {4, -1.0, 0, 0, 0, 1.0}, {4, 1.0, 0, 0, 3, 1.0},  {4, 1.0, 0, 0, 0, 1.5},  {4, 1.0, 1, 0, 0, 1.0},
    {4, 2.0, 0, 5, 1, 1.0},  {4, 0.5, 1, 2, 4, 0.8},
};
#define N_RUNS (int)(sizeof RUNS / sizeof RUNS[0])

static gen_decoding run_decoding(const run_case *r)
{
    gen_decoding d = decoding(r->beam);
    d.length_penalty = r->length_penalty;
    d.early_stopping = r->early_stopping;
    d.min_length = r->min_length;
    d.no_repeat_ngram = r->no_repeat_ngram;
    d.repetition_penalty = r->repetition_penalty;
    return d;
}

static double number_or_nan(const cJSON *obj, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(obj, key);
    return cJSON_IsNumber(v) ? v->valuedouble : NAN;
}

/* Within TOLERANCE, relative to |theirs| when that is above 1: sequence
 * scores without length normalisation (alpha <= 0) reach thousands, where
 * float32 sums (both sides sum in float32, as Hugging Face does) carry
 * 1e-3 of rounding. Probabilities and mean log-probabilities are small. */
static void expect_near(double ours, double theirs, const char *what, int run, int image)
{
    if (isnan(theirs) && isnan(ours))
        return;
    if (!(fabs(ours - theirs) <= TOLERANCE * fmax(1.0, fabs(theirs))))
        fail_msg("run %d image %d: %s %.8g, PyTorch %.8g", run, image, what, ours, theirs);
}

static void test_matches_pytorch(void **state)
{
    (void)state;
    if (!tu_python_has("torch, numpy")) {
        printf("SKIP: %s cannot import torch and numpy (apt-get install python3-torch)\n", tu_python());
        skip();
    }
    tiny t;
    load_tiny(&t, N_RANDOM);
    char *dir = tu_mkdtemp("beam");
    char mem_path[4096], runs_path[4096], out_path[4096], cmd[16384];
    snprintf(mem_path, sizeof mem_path, "%s/memory.f32", dir);
    snprintf(runs_path, sizeof runs_path, "%s/runs.json", dir);
    snprintf(out_path, sizeof out_path, "%s/out.json", dir);
    FILE *f = fopen(mem_path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(t.memory, sizeof(float) * t.L * t.dim, t.n, f), t.n);
    fclose(f);
    /* The reference re-runs the model on every prefix, so its time grows
     * with the square of the length: captions of at most COMPARED_MAX_LEN
     * tokens (the model's 80 took most of a minute and a half; the cut
     * still ends many of them, in both runs, at max_len). The sanitizer
     * build is there for memory errors; the optimised build compares every
     * setting: there, every third keeps the run short. */
    const int stride = tu_sanitized() ? 3 : 1;
    int chosen[N_RUNS], n_chosen = 0;
    for (int r = 0; r < N_RUNS; r += stride)
        chosen[n_chosen++] = r;
    f = fopen(runs_path, "w");
    assert_non_null(f);
    fputc('[', f);
    for (int c = 0; c < n_chosen; c++) {
        const int r = chosen[c];
        fprintf(f, "%s{\"beam\":%d,\"length_penalty\":%.17g,\"early_stopping\":%d,\"min_length\":%d,"
                   "\"no_repeat_ngram\":%d,\"repetition_penalty\":%.17g,\"max_len\":%d}",
                c ? "," : "", RUNS[r].beam, RUNS[r].length_penalty, RUNS[r].early_stopping, RUNS[r].min_length,
                RUNS[r].no_repeat_ngram, RUNS[r].repetition_penalty, COMPARED_MAX_LEN);
    }
    fputs("]\n", f);
    fclose(f);
    snprintf(cmd, sizeof cmd, "cd tests/reference && %s beam_ref.py %s%s %s%s %s%s %d < %s%s > %s%s", tu_python(),
             "../../", TINY "/config.json", "../../", TINY "/model.bin", mem_path[0] == '/' ? "" : "../../",
             mem_path, t.n, runs_path[0] == '/' ? "" : "../../", runs_path, out_path[0] == '/' ? "" : "../../",
             out_path);
    assert_int_equal(tu_run(cmd), 0);
    char *text = tu_read_file(out_path, NULL);
    assert_non_null(text);
    cJSON *all = cJSON_Parse(text);
    assert_true(cJSON_IsArray(all) && cJSON_GetArraySize(all) == n_chosen);

    for (int c = 0; c < n_chosen; c++) {
        const int r = chosen[c];
        const gen_decoding d = run_decoding(&RUNS[r]);
        decoded ours;
        decode(&t, t.n, t.memory, &d, 0, COMPARED_MAX_LEN, &ours);
        const cJSON *images = cJSON_GetArrayItem(all, c);
        assert_int_equal(cJSON_GetArraySize(images), t.n);
        int distinct = 0, total_tokens = 0, ended = 0;
        double worst_score = 0, worst_conf = 0;
        for (int i = 0; i < t.n; i++) {
            const cJSON *ref = cJSON_GetArrayItem(images, i);
            const cJSON *ids = cJSON_GetObjectItemCaseSensitive(ref, "ids");
            const int n_ref = cJSON_GetArraySize(ids);
            if (ours.lens[i] != n_ref)
                fail_msg("run %d image %d: %d tokens, PyTorch %d", r, i, ours.lens[i], n_ref);
            for (int k = 0; k < n_ref; k++)
                if (ours.ids[i * ours.max_len + k] != cJSON_GetArrayItem(ids, k)->valueint)
                    fail_msg("run %d image %d token %d: %d, PyTorch %d", r, i, k, ours.ids[i * ours.max_len + k],
                             cJSON_GetArrayItem(ids, k)->valueint);
            if (d.beam > 1) {
                expect_near(ours.score[i], number_or_nan(ref, "score"), "score", r, i);
                const double ref_score = number_or_nan(ref, "score");
                worst_score = fmax(worst_score, fabs(ours.score[i] - ref_score) / fmax(1.0, fabs(ref_score)));
            } else {
                assert_true(isnan(ours.score[i]));
            }
            expect_near(ours.mean_logprob[i], number_or_nan(ref, "mean_logprob"), "mean_logprob", r, i);
            expect_near(ours.min_token_prob[i], number_or_nan(ref, "min_token_prob"), "min_token_prob", r, i);
            if (n_ref > 0)
                worst_conf = fmax(worst_conf, fabs(ours.mean_logprob[i] - number_or_nan(ref, "mean_logprob")));
            const cJSON *probs = cJSON_GetObjectItemCaseSensitive(ref, "token_probs");
            for (int k = 0; k < n_ref; k++)
                expect_near(ours.token_probs[i * ours.max_len + k], cJSON_GetArrayItem(probs, k)->valuedouble,
                            "token probability", r, i);
            int seen = 0;
            for (int a = 0; a < i && !seen; a++)
                seen = ours.lens[a] == ours.lens[i] &&
                       memcmp(ours.ids + a * ours.max_len, ours.ids + i * ours.max_len, sizeof(int) * ours.lens[i]) == 0;
            distinct += !seen;
            total_tokens += ours.lens[i];
            ended += ours.lens[i] < ours.max_len;
        }
        printf("  run %2d: beam %d alpha %4.1f early %d min %d ngram %d rep %.1f: %d images identical "
               "(%d distinct, %d ended by [SEP], mean %.1f tokens); max score diff %.2g (relative above 1), |mean_logprob diff| %.2g\n",
               r, d.beam, d.length_penalty, d.early_stopping, d.min_length, d.no_repeat_ngram, d.repetition_penalty,
               t.n, distinct, ended, (double)total_tokens / t.n, worst_score, worst_conf);
        /* inputs that all get one caption would prove little (without
         * length normalisation, beam search favours short captions) */
        assert_true(distinct >= t.n / 3);
        free_decoded(&ours);
    }
    cJSON_Delete(all);
    free(text);
    free(dir);
    free_tiny(&t);
}

/* ---- properties ---------------------------------------------------------- */

static void test_width_one_is_greedy(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t, tu_sanitized() ? 40 : 200);
    const run_case variants[] = {{1, 1.0, 0, 0, 0, 1.0}, {1, 1.0, 0, 0, 3, 1.0}, {1, 1.0, 0, 6, 2, 1.0},
                                 {1, 0.0, 1, 0, 0, 1.0}};
    for (size_t v = 0; v < sizeof variants / sizeof variants[0]; v++) {
        const gen_decoding d = run_decoding(&variants[v]);
        decoded greedy, beam;
        decode(&t, t.n, t.memory, &d, 0, 0, &greedy);
        decode(&t, t.n, t.memory, &d, 1, 0, &beam);
        expect_same_tokens(&beam, &greedy, t.n, "one-beam search vs greedy");
        /* the confidence of the same tokens is the same */
        for (int i = 0; i < t.n; i++)
            if (greedy.lens[i] > 0)
                assert_true(fabs(beam.mean_logprob[i] - greedy.mean_logprob[i]) < 1e-9);
        free_decoded(&greedy), free_decoded(&beam);
    }
    /* gen_greedy is gen_decode with the defaults */
    decoded defaults;
    const gen_decoding d = decoding(1);
    decode(&t, t.n, t.memory, &d, 0, 0, &defaults);
    int *ids = malloc(sizeof(int) * t.n * t.cfg.max_len), *lens = malloc(sizeof(int) * t.n);
    rc_error err = {{0}};
    assert_int_equal(gen_greedy(&t.model, t.n, t.memory, NULL, ids, lens, &err), 0);
    const decoded plain = {.max_len = t.cfg.max_len, .ids = ids, .lens = lens};
    expect_same_tokens(&defaults, &plain, t.n, "gen_decode defaults vs gen_greedy");
    free(ids), free(lens), free_decoded(&defaults);
    free_tiny(&t);
}

static int repeats_ngram(const int *ids, int len, int n)
{
    for (int a = 0; a + n <= len; a++)
        for (int b = a + 1; b + n <= len; b++)
            if (memcmp(ids + a, ids + b, sizeof(int) * n) == 0)
                return 1;
    return 0;
}

static void test_no_repeated_trigram(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t, tu_sanitized() ? 60 : 300);
    for (int beam = 1; beam <= 4; beam += 3) {
        gen_decoding d = decoding(beam);
        decoded plain, controlled;
        decode(&t, t.n, t.memory, &d, 0, 0, &plain);
        d.no_repeat_ngram = 3;
        decode(&t, t.n, t.memory, &d, 0, 0, &controlled);
        int repeating = 0, long_captions = 0;
        for (int i = 0; i < t.n; i++) {
            repeating += repeats_ngram(plain.ids + i * plain.max_len, plain.lens[i], 3);
            long_captions += controlled.lens[i] >= 10;
            if (repeats_ngram(controlled.ids + i * controlled.max_len, controlled.lens[i], 3))
                fail_msg("beam %d image %d repeats a trigram with no_repeat_ngram 3", beam, i);
        }
        printf("  beam %d: %d of %d captions repeat a trigram without the option, none with it "
               "(%d captions of 10+ tokens)\n", beam, repeating, t.n, long_captions);
        /* the option must have had something to prevent */
        assert_true(repeating > 0);
        free_decoded(&plain), free_decoded(&controlled);
    }
    free_tiny(&t);
}

/* An image's beam search does not depend on the other images of its batch. */
static void test_batch_independent(void **state)
{
    (void)state;
    tiny t;
    load_tiny(&t, 0);
    gen_decoding d = decoding(4);
    d.no_repeat_ngram = 2;
    decoded together;
    decode(&t, t.n, t.memory, &d, 0, 0, &together);
    for (int i = 0; i < t.n; i++) {
        decoded alone;
        decode(&t, 1, t.memory + (size_t)i * t.L * t.dim, &d, 0, 0, &alone);
        assert_int_equal(alone.lens[0], together.lens[i]);
        assert_memory_equal(alone.ids, together.ids + i * together.max_len, sizeof(int) * alone.lens[0]);
        assert_true(fabs(alone.score[0] - together.score[i]) < 1e-6);
        free_decoded(&alone);
    }
    free_decoded(&together);
    free_tiny(&t);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_processors_by_hand),     cmocka_unit_test(test_decoding_check_names_the_field),
        cmocka_unit_test(test_width_one_is_greedy),    cmocka_unit_test(test_no_repeated_trigram),
        cmocka_unit_test(test_batch_independent),      cmocka_unit_test(test_matches_pytorch),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
