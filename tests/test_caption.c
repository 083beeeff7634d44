/* `radcap caption` end to end: synthetic images through the program, token
 * ids checked against the PyTorch reference on the same input tensors, the
 * decoded text against the vocabulary, batching, per-image errors, exit
 * statuses. Uses the committed tiny model (tests/fixtures/tiny). */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "tests/helpers/testutil.h"

#define MODEL "tests/fixtures/tiny/model.bin"
#define CONFIG "tests/fixtures/tiny/config.json"
#define N_IMAGES 5
#define VOCAB_SIZE 400

typedef struct setup {
    char *dir;                    /* temporary directory */
    char vocab[4200];             /* synthetic vocabulary file */
    char images[N_IMAGES][4200];  /* generated images, sorted */
    char broken[4200];            /* a text file named .jpg */
} setup;

static setup S;

/* Token i of the synthetic vocabulary: BERT's special ids, plain words
 * elsewhere (no "##" pieces or punctuation, so a decoded caption is just
 * the words joined by spaces). */
static void token_text(int i, char *out, size_t size)
{
    static const char *special[] = {[0] = "[PAD]", [100] = "[UNK]", [101] = "[CLS]", [102] = "[SEP]", [103] = "[MASK]"};
    if (i < 104 && special[i])
        snprintf(out, size, "%s", special[i]);
    else
        snprintf(out, size, "word%d", i);
}

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

static int group_setup(void **state)
{
    (void)state;
    S.dir = tu_mkdtemp("caption");
    snprintf(S.vocab, sizeof S.vocab, "%s/vocab.txt", S.dir);
    FILE *f = fopen(S.vocab, "w");
    for (int i = 0; i < VOCAB_SIZE; i++) {
        char t[32];
        token_text(i, t, sizeof t);
        fprintf(f, "%s\n", t);
    }
    fclose(f);
    char cmd[9000];
    snprintf(cmd, sizeof cmd, "%s synth --out %s/archive --count %d --seed 3 --size 120x100 >/dev/null",
             tu_radcap_bin(), S.dir, N_IMAGES);
    if (tu_run(cmd) != 0)
        return -1;
    char folder[4096];
    snprintf(folder, sizeof folder, "%s/archive/valid", S.dir);
    DIR *d = opendir(folder);
    char *names[64];
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) && n < 64;)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    if (d)
        closedir(d);
    if (n != N_IMAGES)
        return -1;
    qsort(names, n, sizeof *names, cmp_str);
    for (int i = 0; i < n; i++) {
        snprintf(S.images[i], sizeof S.images[i], "%.3800s/%.390s", folder, names[i]);
        free(names[i]);
    }
    snprintf(S.broken, sizeof S.broken, "%s/broken.jpg", S.dir);
    f = fopen(S.broken, "w");
    fputs("<html>404 not found</html>\n", f);
    fclose(f);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    free(S.dir);
    return 0;
}

/* Runs radcap caption on the given paths; stdout and stderr go to files in
 * the temporary directory, whose contents are returned (malloc'd). */
static int run_caption(const char *options, const char **paths, int n, char **out, char **err)
{
    char cmd[65536], out_path[4300], err_path[4300];
    snprintf(out_path, sizeof out_path, "%s/out.txt", S.dir);
    snprintf(err_path, sizeof err_path, "%s/err.txt", S.dir);
    int used = snprintf(cmd, sizeof cmd, "%s caption --checkpoint %s --config %s --vocab %s %s", tu_radcap_bin(),
                        MODEL, CONFIG, S.vocab, options);
    for (int i = 0; i < n; i++)
        used += snprintf(cmd + used, sizeof cmd - used, " '%s'", paths[i]);
    snprintf(cmd + used, sizeof cmd - used, " >%s 2>%s", out_path, err_path);
    int status = tu_run(cmd);
    *out = tu_read_file(out_path, NULL);
    *err = tu_read_file(err_path, NULL);
    assert_non_null(*out);
    assert_non_null(*err);
    return status;
}

/* The JSON lines of out, parsed (n_lines of them). */
static cJSON **parse_lines(char *out, int *n_lines)
{
    cJSON **lines = calloc(256, sizeof *lines);
    int n = 0;
    for (char *line = strtok(out, "\n"); line && n < 256; line = strtok(NULL, "\n")) {
        lines[n] = cJSON_Parse(line);
        if (!lines[n])
            fail_msg("not JSON: %s", line);
        n++;
    }
    *n_lines = n;
    return lines;
}

static void free_lines(cJSON **lines, int n)
{
    for (int i = 0; i < n; i++)
        cJSON_Delete(lines[i]);
    free(lines);
}

/* ids of a result line, as a malloc'd array. */
static int *line_ids(const cJSON *line, int *n)
{
    const cJSON *ids = cJSON_GetObjectItem(line, "ids");
    assert_true(cJSON_IsArray(ids));
    *n = cJSON_GetArraySize(ids);
    int *out = malloc(sizeof(int) * (*n + 1)), i = 0;
    const cJSON *id;
    cJSON_ArrayForEach(id, ids) out[i++] = id->valueint;
    return out;
}

/* A broken file among good ones: the good ones are captioned, the broken
 * one is an error naming it, the exit status is 1; the caption text is the
 * vocabulary's tokens of the ids joined by spaces. */
static void test_json_output_and_errors(void **state)
{
    (void)state;
    const char *paths[N_IMAGES + 1] = {S.images[0], S.broken};
    for (int i = 1; i < N_IMAGES; i++)
        paths[i + 1] = S.images[i];
    char *out, *err;
    assert_int_equal(run_caption("--json --batch 2", paths, N_IMAGES + 1, &out, &err), 1);
    int n;
    cJSON **lines = parse_lines(out, &n);
    assert_int_equal(n, N_IMAGES + 1);
    for (int i = 0; i < n; i++) {
        assert_string_equal(cJSON_GetObjectItem(lines[i], "image")->valuestring, paths[i]);
        const cJSON *error = cJSON_GetObjectItem(lines[i], "error");
        if (i == 1) {
            assert_true(cJSON_IsString(error));
            assert_non_null(strstr(error->valuestring, "broken.jpg"));
            assert_null(cJSON_GetObjectItem(lines[i], "caption"));
            continue;
        }
        assert_null(error);
        int n_ids;
        int *ids = line_ids(lines[i], &n_ids);
        char expected[8192] = "", word[32];
        for (int k = 0; k < n_ids; k++) {
            assert_true(ids[k] >= 0 && ids[k] < VOCAB_SIZE && ids[k] != 101 && ids[k] != 102);
            token_text(ids[k], word, sizeof word);
            if (ids[k] == 0 || (ids[k] >= 100 && ids[k] <= 103))
                continue; /* special tokens are skipped in the text */
            snprintf(expected + strlen(expected), sizeof expected - strlen(expected), "%s%s", expected[0] ? " " : "",
                     word);
        }
        assert_string_equal(cJSON_GetObjectItem(lines[i], "caption")->valuestring, expected);
        free(ids);
    }
    assert_non_null(strstr(err, "broken.jpg"));
    free_lines(lines, n);
    free(out), free(err);
}

/* Batch size does not change any caption; plain output is one caption per
 * line, in order. */
static void test_batch_sizes_agree(void **state)
{
    (void)state;
    const char *paths[N_IMAGES];
    for (int i = 0; i < N_IMAGES; i++)
        paths[i] = S.images[i];
    char *out1, *err1, *out4, *err4, *plain, *err_plain;
    assert_int_equal(run_caption("--json --batch 1", paths, N_IMAGES, &out1, &err1), 0);
    assert_int_equal(run_caption("--json --batch 4 --threads 2", paths, N_IMAGES, &out4, &err4), 0);
    assert_string_equal(out1, out4);
    assert_int_equal(run_caption("--batch 3", paths, N_IMAGES, &plain, &err_plain), 0);
    int n;
    cJSON **lines = parse_lines(out1, &n);
    char *line = strtok(plain, "\n");
    int distinct = 0;
    assert_int_equal(n, N_IMAGES);
    for (int i = 0; i < n; i++) {
        /* in the order given, although with 2 captions in progress a short one
         * finishes before a long one given earlier */
        assert_string_equal(cJSON_GetObjectItem(lines[i], "image")->valuestring, paths[i]);
        const char *caption = cJSON_GetObjectItem(lines[i], "caption")->valuestring;
        if (caption[0]) {
            assert_non_null(line);
            assert_string_equal(line, caption);
            line = strtok(NULL, "\n");
        }
        int seen = 0;
        for (int k = 0; k < i; k++)
            seen |= strcmp(cJSON_GetObjectItem(lines[k], "caption")->valuestring, caption) == 0;
        distinct += !seen;
    }
    assert_true(distinct >= 2); /* the images really are captioned differently */
    free_lines(lines, n);
    free(out1), free(err1), free(out4), free(err4), free(plain), free(err_plain);
}

/* The program's ids equal the PyTorch reference's (the card's greedy loop)
 * on the very tensors the program decodes from these files. */
static void test_matches_pytorch(void **state)
{
    (void)state;
    if (!tu_python_has("torch, numpy")) {
        printf("SKIP: %s cannot import torch and numpy (apt-get install python3-torch)\n", tu_python());
        skip();
    }
    const char *paths[N_IMAGES];
    char cmd[65536], tensors[N_IMAGES][4300];
    int used = snprintf(cmd, sizeof cmd, "cd tests/reference && %s caption_tensors.py ../../%s ../../%s", tu_python(),
                        CONFIG, MODEL);
    for (int i = 0; i < N_IMAGES; i++) {
        paths[i] = S.images[i];
        snprintf(tensors[i], sizeof tensors[i], "%s/input%d.f32", S.dir, i);
        char pre[32768];
        snprintf(pre, sizeof pre, "%s preprocess '%s' --out '%s' --size 96", tu_radcap_bin(), S.images[i], tensors[i]);
        assert_int_equal(tu_run(pre), 0);
        used += snprintf(cmd + used, sizeof cmd - used, " '%s%s'", tensors[i][0] == '/' ? "" : "../../", tensors[i]);
    }
    char ref_path[4300];
    snprintf(ref_path, sizeof ref_path, "%s/reference_ids.txt", S.dir);
    snprintf(cmd + used, sizeof cmd - used, " > '%s%s'", ref_path[0] == '/' ? "" : "../../", ref_path);
    assert_int_equal(tu_run(cmd), 0);
    char *ref = tu_read_file(ref_path, NULL), *out, *err;
    assert_non_null(ref);
    assert_int_equal(run_caption("--json --batch 5", paths, N_IMAGES, &out, &err), 0);
    int n;
    cJSON **lines = parse_lines(out, &n);
    char *save = NULL, *ref_line = strtok_r(ref, "\n", &save);
    for (int i = 0; i < n; i++, ref_line = strtok_r(NULL, "\n", &save)) {
        assert_non_null(ref_line);
        cJSON *ref_ids = cJSON_Parse(ref_line);
        int n_ids;
        int *ids = line_ids(lines[i], &n_ids);
        printf("  %s: %d tokens\n", strrchr(paths[i], '/') + 1, n_ids);
        assert_int_equal(n_ids, cJSON_GetArraySize(ref_ids));
        for (int k = 0; k < n_ids; k++)
            assert_int_equal(ids[k], cJSON_GetArrayItem(ref_ids, k)->valueint);
        cJSON_Delete(ref_ids);
        free(ids);
    }
    free_lines(lines, n);
    free(ref), free(out), free(err);
}

static void test_fatal_errors(void **state)
{
    (void)state;
    char cmd[32768], *text;
    snprintf(cmd, sizeof cmd,
             "%s caption --checkpoint %s/nope.bin --config %s --vocab %s '%s' 2>%s/fatal.txt >/dev/null",
             tu_radcap_bin(), S.dir, CONFIG, S.vocab, S.images[0], S.dir);
    assert_int_equal(tu_run(cmd), 3);
    snprintf(cmd, sizeof cmd, "%s/fatal.txt", S.dir);
    text = tu_read_file(cmd, NULL);
    assert_non_null(strstr(text, "nope.bin"));
    free(text);
    /* the tiny checkpoint under the card's configuration: names what differs */
    snprintf(cmd, sizeof cmd, "%s caption --checkpoint %s --vocab %s '%s' 2>%s/fatal.txt >/dev/null", tu_radcap_bin(),
             MODEL, S.vocab, S.images[0], S.dir);
    assert_int_equal(tu_run(cmd), 3);
    snprintf(cmd, sizeof cmd, "%s/fatal.txt", S.dir);
    text = tu_read_file(cmd, NULL);
    assert_non_null(strstr(text, "does not match the model configuration"));
    free(text);
    snprintf(cmd, sizeof cmd, "%s caption --checkpoint %s --vocab %s >/dev/null 2>&1", tu_radcap_bin(), MODEL, S.vocab);
    assert_int_equal(tu_run(cmd), 2); /* no image */
    snprintf(cmd, sizeof cmd, "%s caption --help >/dev/null", tu_radcap_bin());
    assert_int_equal(tu_run(cmd), 0);
    snprintf(cmd, sizeof cmd, "%s caption --batch 0 --checkpoint %s --vocab %s x.jpg >/dev/null 2>&1", tu_radcap_bin(),
             MODEL, S.vocab);
    assert_int_equal(tu_run(cmd), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_json_output_and_errors),
        cmocka_unit_test(test_batch_sizes_agree),
        cmocka_unit_test(test_matches_pytorch),
        cmocka_unit_test(test_fatal_errors),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
