/* Tests of `radcap score` as a user runs it ($RADCAP_BIN): the JSON object
 * with values computed by hand, agreement with the library on tokenised
 * captions (ids matched, references grouped, numbers printed to the bit),
 * the table, --drop-brackets, and every exit status with its message. */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include <cjson/cJSON.h>

#include "pipeline/metrics.h"
#include "pipeline/ptb.h"
#include "tests/helpers/testutil.h"

typedef struct {
    char *dir;
    char path[8][4400]; // files written by the test, by index
} workspace;

static int setup(void **state)
{
    workspace *w = calloc(1, sizeof *w);
    w->dir = tu_mkdtemp("score-cli");
    *state = w;
    return w->dir ? 0 : -1;
}

static int teardown(void **state)
{
    workspace *w = *state;
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", w->dir);
    tu_run(cmd);
    free(w->dir);
    free(w);
    return 0;
}

static const char *write_file(workspace *w, int slot, const char *name, const char *text)
{
    snprintf(w->path[slot], sizeof w->path[slot], "%s/%s", w->dir, name);
    FILE *f = fopen(w->path[slot], "wb");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
    return w->path[slot];
}

/* Runs radcap score with args; stdout and stderr go to files whose
 * contents are returned (caller frees). Returns the exit status. */
static int run_score(workspace *w, const char *args, char **out, char **errs)
{
    char cmd[16384], out_path[4400], err_path[4400];
    snprintf(out_path, sizeof out_path, "%s/stdout", w->dir);
    snprintf(err_path, sizeof err_path, "%s/stderr", w->dir);
    snprintf(cmd, sizeof cmd, "'%s' score %s > '%s' 2> '%s'", tu_radcap_bin(), args, out_path, err_path);
    int status = tu_run(cmd);
    *out = tu_read_file(out_path, NULL);
    *errs = tu_read_file(err_path, NULL);
    assert_non_null(*out);
    assert_non_null(*errs);
    return status;
}

static void skip_without_binary(void)
{
    if (!tu_file_exists(tu_radcap_bin())) {
        print_message("skipped: %s not built\n", tu_radcap_bin());
        skip();
    }
}

static const cJSON *image_scores(const cJSON *root, const char *id)
{
    const cJSON *s = cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "per_image"), id);
    if (!s)
        fail_msg("per_image lacks %s", id);
    return s;
}

static double number(const cJSON *o, const char *key)
{
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    if (!cJSON_IsNumber(v))
        fail_msg("no number %s", key);
    return v->valuedouble;
}

static double bleu(const cJSON *o, int n) { return cJSON_GetArrayItem(cJSON_GetObjectItemCaseSensitive(o, "bleu"), n)->valuedouble; }

/* Pretokenised TSV: image 1 "a b" vs "a b", image 2 "a c" vs "a d".
 * CIDEr-D (see test_metrics' df test): 5 and 0, corpus 2.5.
 * ROUGE-L: image 1 identical, 1; image 2 LCS 1 of 2 and 2: P = R = 1/2,
 * 2.44 * 0.25 / (0.5 + 0.72) = 0.5; corpus 0.75.
 * BLEU-1 over the corpus: 3 clipped matches of 4, lengths 4 and 4: 0.75
 * (to 1e-8, BLEU's smoothing). */
static void test_json_pretokenized(void **state)
{
    skip_without_binary();
    workspace *w = *state;
    char args[9000], *out, *errs;
    snprintf(args, sizeof args, "--candidates '%s' --references '%s' --pretokenized --json",
             write_file(w, 0, "c.tsv", "img1\ta b\nimg2\ta c\n"), write_file(w, 1, "r.tsv", "img1\ta b\nimg2\ta d\n"));
    assert_int_equal(run_score(w, args, &out, &errs), 0);
    assert_true(strncmp(out, "{\"bleu\": [", 10) == 0);
    cJSON *root = cJSON_Parse(out);
    assert_non_null(root);
    assert_true(fabs(number(root, "cider") - 2.5) < 1e-15);
    assert_true(fabs(number(root, "rouge_l") - 0.75) < 1e-15);
    assert_true(fabs(bleu(root, 0) - 0.75) < 1e-8);
    assert_true(fabs(number(image_scores(root, "img1"), "cider") - 5.0) < 1e-14);
    assert_true(number(image_scores(root, "img2"), "cider") == 0.0);
    assert_true(fabs(number(image_scores(root, "img2"), "rouge_l") - 0.5) < 1e-15);
    cJSON_Delete(root);
    free(out);
    free(errs);
}

/* Real captions, JSON Lines candidates and TSV references with repeated
 * ids: the command's numbers equal, to the bit, the library's on the same
 * texts tokenised by ptb_tokenize (ids matched, references grouped in
 * file order, %.17g round trips). */
static void test_matches_library(void **state)
{
    skip_without_binary();
    workspace *w = *state;
    static const char *const cands[] = {"Axial CT showing a 2.5-cm mass (arrow) in the left lobe.",
                                        "Chest X-ray: no pneumothorax.", "T1/T2-weighted MRI: don't miss it!"};
    static const char *const refs[][2] = {
        {"Axial CT scan shows a mass in the left lobe (arrow).", "A left lobe mass on CT."},
        {"Chest radiograph: no pneumothorax; patient's heart normal.", "No pneumothorax."},
        {"T2-weighted MRI shows the lesion.", "MRI: a small lesion."},
    };
    static const char *const ids[] = {"img \"1\"", "2", "img3"};
    char cand_text[4096] = "", ref_text[4096] = "";
    for (int i = 0; i < 3; i++) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "id", ids[i]);
        cJSON_AddStringToObject(o, "caption", cands[i]);
        char *line = cJSON_PrintUnformatted(o);
        strcat(cand_text, line);
        strcat(cand_text, "\n");
        free(line);
        cJSON_Delete(o);
    }
    for (int k = 0; k < 2; k++) /* references interleaved: each id repeats */
        for (int i = 2; i >= 0; i--)
            snprintf(ref_text + strlen(ref_text), sizeof ref_text - strlen(ref_text), "%s\t%s\n", ids[i], refs[i][k]);
    char args[9000], *out, *errs;
    snprintf(args, sizeof args, "--candidates '%s' --references '%s' --json", write_file(w, 0, "c.jsonl", cand_text),
             write_file(w, 1, "r.tsv", ref_text));
    assert_int_equal(run_score(w, args, &out, &errs), 0);
    cJSON *root = cJSON_Parse(out);
    assert_non_null(root);

    char *tok[9];
    metrics_item items[3];
    rc_error err;
    for (int i = 0; i < 3; i++) {
        tok[3 * i] = ptb_tokenize(cands[i], strlen(cands[i]), NULL, &err);
        for (int k = 0; k < 2; k++)
            tok[3 * i + 1 + k] = ptb_tokenize(refs[i][k], strlen(refs[i][k]), NULL, &err);
        items[i] = (metrics_item){tok[3 * i], (const char *const *)&tok[3 * i + 1], 2};
    }
    metrics_result *r = metrics_compute(items, 3, &err);
    assert_non_null(r);
    for (int n = 0; n < METRICS_BLEU_N; n++)
        assert_true(bleu(root, n) == r->corpus.bleu[n]);
    assert_true(number(root, "cider") == r->corpus.cider && number(root, "rouge_l") == r->corpus.rouge_l);
    for (int i = 0; i < 3; i++) {
        const cJSON *s = image_scores(root, ids[i]);
        for (int n = 0; n < METRICS_BLEU_N; n++)
            assert_true(bleu(s, n) == r->per_image[i].bleu[n]);
        assert_true(number(s, "cider") == r->per_image[i].cider);
        assert_true(number(s, "rouge_l") == r->per_image[i].rouge_l);
    }
    metrics_free(r);
    for (int k = 0; k < 9; k++)
        free(tok[k]);
    cJSON_Delete(root);
    free(out);
    free(errs);
}

/* --drop-brackets: "Mass (arrow)." vs "Mass arrow." Kept, the candidate
 * is "mass -lrb- arrow -rrb-": 2 of 4 unigrams, lengths 4 vs 2 (no
 * penalty), BLEU-1 0.5. Dropped, both are "mass arrow": BLEU-1 1 (to 1e-8). */
static void test_drop_brackets(void **state)
{
    skip_without_binary();
    workspace *w = *state;
    const char *c = write_file(w, 0, "c.tsv", "x\tMass (arrow).\n"), *r = write_file(w, 1, "r.tsv", "x\tMass arrow.\n");
    for (int drop = 0; drop < 2; drop++) {
        char args[9000], *out, *errs;
        snprintf(args, sizeof args, "--candidates '%s' --references '%s' --json%s", c, r, drop ? " --drop-brackets" : "");
        assert_int_equal(run_score(w, args, &out, &errs), 0);
        cJSON *root = cJSON_Parse(out);
        assert_non_null(root);
        assert_true(fabs(bleu(image_scores(root, "x"), 0) - (drop ? 1.0 : 0.5)) < 1e-8);
        cJSON_Delete(root);
        free(out);
        free(errs);
    }
}

static void test_table(void **state)
{
    skip_without_binary();
    workspace *w = *state;
    char args[9000], *out, *errs;
    snprintf(args, sizeof args, "--candidates '%s' --references '%s'", write_file(w, 0, "c.tsv", "a\tA mass.\nb\tA cyst.\n"),
             write_file(w, 1, "r.tsv", "a\tA mass.\nb\tA small cyst.\n"));
    assert_int_equal(run_score(w, args, &out, &errs), 0);
    assert_non_null(strstr(out, "images scored: 2 of 2"));
    assert_non_null(strstr(out, "BLEU-1"));
    assert_non_null(strstr(out, "BLEU-4"));
    assert_non_null(strstr(out, "CIDEr-D"));
    assert_non_null(strstr(out, "ROUGE-L"));
    free(out);
    free(errs);
}

/* Exit statuses and their messages. */
static void test_exit_statuses(void **state)
{
    skip_without_binary();
    workspace *w = *state;
    const char *good = write_file(w, 0, "good.tsv", "img1\ta mass\nimg2\ta cyst\nimg3\tno reference\n");
    const char *refs = write_file(w, 1, "refs.tsv", "img1\ta mass\nimg2\ta cyst\nimg9\tunused\n");
    const char *dup = write_file(w, 2, "dup.tsv", "img1\ta\nimg1\tb\n");
    const char *bad = write_file(w, 3, "bad.tsv", "img1\ta mass\nno tab here\n");
    char args[9000], *out, *errs;

    /* a candidate without references: scored without it, status 1, listed */
    snprintf(args, sizeof args, "--candidates '%s' --references '%s' --json", good, refs);
    assert_int_equal(run_score(w, args, &out, &errs), 1);
    assert_non_null(strstr(errs, "1 candidate(s) without references, not scored: img3"));
    assert_non_null(strstr(errs, "1 reference id(s) without a candidate, ignored: img9"));
    cJSON *root = cJSON_Parse(out);
    assert_non_null(root);
    assert_null(cJSON_GetObjectItemCaseSensitive(cJSON_GetObjectItemCaseSensitive(root, "per_image"), "img3"));
    cJSON_Delete(root);
    free(out);
    free(errs);

    /* two candidates for one image */
    snprintf(args, sizeof args, "--candidates '%s' --references '%s'", dup, refs);
    assert_int_equal(run_score(w, args, &out, &errs), 3);
    assert_non_null(strstr(errs, "image 'img1' has 2 candidate captions (lines 1 and 2...)"));
    free(out);
    free(errs);

    /* a malformed file: its name and line */
    snprintf(args, sizeof args, "--candidates '%s' --references '%s'", good, bad);
    assert_int_equal(run_score(w, args, &out, &errs), 3);
    assert_non_null(strstr(errs, "bad.tsv:2: expected ID<TAB>CAPTION"));
    free(out);
    free(errs);

    /* a missing file */
    snprintf(args, sizeof args, "--candidates '%s/none.tsv' --references '%s'", w->dir, refs);
    assert_int_equal(run_score(w, args, &out, &errs), 3);
    assert_non_null(strstr(errs, "cannot open"));
    free(out);
    free(errs);

    /* usage errors */
    static const char *const usage_errors[] = {"--candidates x", "--candidates x --references y --format csv",
                                               "--candidates x --references y --pretokenized --drop-brackets",
                                               "--candidates x --references y extra", "--bogus"};
    for (size_t k = 0; k < sizeof usage_errors / sizeof usage_errors[0]; k++) {
        assert_int_equal(run_score(w, usage_errors[k], &out, &errs), 2);
        free(out);
        free(errs);
    }
    assert_int_equal(run_score(w, "--help", &out, &errs), 0);
    assert_non_null(strstr(out, "usage: radcap score"));
    free(out);
    free(errs);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_json_pretokenized, setup, teardown),
        cmocka_unit_test_setup_teardown(test_matches_library, setup, teardown),
        cmocka_unit_test_setup_teardown(test_drop_brackets, setup, teardown),
        cmocka_unit_test_setup_teardown(test_table, setup, teardown),
        cmocka_unit_test_setup_teardown(test_exit_statuses, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
