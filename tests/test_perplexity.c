/* `radcap eval --perplexity` against the PyTorch reference: the card's own
 * forward pass (all positions at once, causal mask) and CrossEntropyLoss on
 * the same input tensors and token ids, including a caption cut to max_len. */
#include <cjson/cJSON.h>
#include <dirent.h>
#include <math.h>
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
#define N_IMAGES 3
#define MAX_LEN 80 /* the tiny configuration's max_len */

static int cmp_str(const void *a, const void *b)
{
    return strcmp(*(char *const *)a, *(char *const *)b);
}

/* Reference i of image k: words "word<id>" of a synthetic vocabulary, so
 * that the expected ids are known without a tokenizer. The last caption is
 * longer than max_len and must be cut to [CLS] + 78 words + [SEP]. */
static int caption_ids(int k, int r, int *ids)
{
    int n = 0;
    ids[n++] = 101;
    const int words = (k == N_IMAGES - 1 && r == 1) ? 100 : 3 + k + r;
    for (int w = 0; w < words; w++)
        ids[n++] = 104 + (k * 37 + r * 11 + w * 7) % 290;
    ids[n++] = 102;
    if (n > MAX_LEN) {
        n = MAX_LEN;
        ids[n - 1] = 102;
    }
    return n;
}

static void test_perplexity_matches_pytorch(void **state)
{
    (void)state;
    if (!tu_python_has("torch, numpy")) {
        printf("SKIP: %s cannot import torch and numpy (apt-get install python3-torch)\n", tu_python());
        skip();
    }
    /* absolute: the manifest's relative paths would be taken from its own folder */
    char *tmp = tu_mkdtemp("perplexity"), *dir = realpath(tmp, NULL), cmd[65536], path[8192];
    free(tmp);
    assert_non_null(dir);
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    FILE *f = fopen(path, "w");
    for (int i = 0; i < 400; i++) {
        if (i == 0 || (i >= 100 && i <= 103)) {
            static const char *special[] = {"[UNK]", "[CLS]", "[SEP]", "[MASK]"};
            fprintf(f, "%s\n", i == 0 ? "[PAD]" : special[i - 100]);
        } else {
            fprintf(f, "word%d\n", i);
        }
    }
    fclose(f);
    snprintf(cmd, sizeof cmd, "%s synth --out %s/arch --count %d --seed 4 --size 90x110 >/dev/null", tu_radcap_bin(),
             dir, N_IMAGES);
    assert_int_equal(tu_run(cmd), 0);
    snprintf(path, sizeof path, "%s/arch/valid", dir);
    DIR *d = opendir(path);
    char *names[16];
    int n = 0;
    for (struct dirent *e; d && (e = readdir(d)) && n < 16;)
        if (e->d_name[0] != '.')
            names[n++] = strdup(e->d_name);
    closedir(d);
    assert_int_equal(n, N_IMAGES);
    qsort(names, n, sizeof *names, cmp_str);

    /* the manifest (captions as words) and the reference's input (tensors + ids) */
    char manifest[8192], pairs[8192];
    snprintf(manifest, sizeof manifest, "%s/manifest.jsonl", dir);
    snprintf(pairs, sizeof pairs, "%s/pairs.jsonl", dir);
    FILE *fm = fopen(manifest, "w"), *fp = fopen(pairs, "w");
    for (int k = 0; k < n; k++) {
        char image[8192], tensor[8192];
        snprintf(image, sizeof image, "%s/arch/valid/%s", dir, names[k]);
        snprintf(tensor, sizeof tensor, "%s/input%d.f32", dir, k);
        snprintf(cmd, sizeof cmd, "%s preprocess '%s' --out '%s' --size 96", tu_radcap_bin(), image, tensor);
        assert_int_equal(tu_run(cmd), 0);
        cJSON *entry = cJSON_CreateObject(), *caps = cJSON_CreateArray();
        cJSON_AddStringToObject(entry, "path", image);
        for (int r = 0; r < 2; r++) {
            int ids[128], len = caption_ids(k, r, ids);
            char text[4096] = "";
            const int words = (k == N_IMAGES - 1 && r == 1) ? 100 : 3 + k + r;
            for (int w = 0; w < words; w++)
                snprintf(text + strlen(text), sizeof text - strlen(text), "%sWord%d", w ? " " : "",
                         104 + (k * 37 + r * 11 + w * 7) % 290); /* capitalised: the tokenizer lower-cases */
            cJSON_AddItemToArray(caps, cJSON_CreateString(text));
            cJSON *pair = cJSON_CreateObject();
            cJSON_AddStringToObject(pair, "tensor", tensor);
            cJSON_AddItemToObject(pair, "ids", cJSON_CreateIntArray(ids, len));
            char *line = cJSON_PrintUnformatted(pair);
            fprintf(fp, "%s\n", line);
            cJSON_free(line);
            cJSON_Delete(pair);
        }
        cJSON_AddItemToObject(entry, "caption", caps);
        char *line = cJSON_PrintUnformatted(entry);
        fprintf(fm, "%s\n", line);
        cJSON_free(line);
        cJSON_Delete(entry);
        free(names[k]);
    }
    fclose(fm);
    fclose(fp);

    char ours_path[8192], ref_path[8192];
    snprintf(ours_path, sizeof ours_path, "%s/ours.json", dir);
    snprintf(ref_path, sizeof ref_path, "%s/ref.json", dir);
    snprintf(cmd, sizeof cmd,
             "%s eval --perplexity --manifest %s --checkpoint %s --config %s --vocab %s/vocab.txt --batch 2 --json > %s",
             tu_radcap_bin(), manifest, MODEL, CONFIG, dir, ours_path);
    assert_int_equal(tu_run(cmd), 0);
    snprintf(cmd, sizeof cmd, "cd tests/reference && %s perplexity_ref.py ../../%s ../../%s < '%s%s' > '%s%s'",
             tu_python(), CONFIG, MODEL, pairs[0] == '/' ? "" : "../../", pairs, ref_path[0] == '/' ? "" : "../../",
             ref_path);
    assert_int_equal(tu_run(cmd), 0);
    char *ours_text = tu_read_file(ours_path, NULL), *ref_text = tu_read_file(ref_path, NULL);
    cJSON *ours = cJSON_Parse(ours_text), *ref = cJSON_Parse(ref_text);
    assert_non_null(ours);
    assert_non_null(ref);
    const double ce = cJSON_GetObjectItem(ours, "cross_entropy")->valuedouble;
    const double ce_ref = cJSON_GetObjectItem(ref, "cross_entropy")->valuedouble;
    printf("  radcap: %s\n  torch:  %s\n", ours_text, ref_text);
    /* 2 captions x 3 images; targets: (4 + 5) + (5 + 6) + (6 + 79) = 105 */
    assert_int_equal(cJSON_GetObjectItem(ours, "tokens")->valueint, 105);
    assert_int_equal(cJSON_GetObjectItem(ref, "tokens")->valueint, 105);
    assert_int_equal(cJSON_GetObjectItem(ours, "captions")->valueint, 6);
    assert_true(fabs(ce - ce_ref) <= 1e-4 * fabs(ce_ref));
    assert_true(fabs(cJSON_GetObjectItem(ours, "perplexity")->valuedouble - exp(ce_ref)) <= 1e-3 * exp(ce_ref));
    cJSON_Delete(ours);
    cJSON_Delete(ref);
    free(ours_text), free(ref_text), free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_perplexity_matches_pytorch)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
