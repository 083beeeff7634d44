/* radcap eval --perplexity: teacher-forced cross-entropy of the model on a
 * manifest's reference captions.
 *
 * Assumed training setup (the card does not show its training loop): each
 * caption is encoded with the BERT tokenizer to [CLS] ... [SEP] and cut to at
 * most max_len tokens, as tokenizer(..., max_length=80, truncation=True) does
 * (the last kept token becomes [SEP]); the model's inputs are all tokens but
 * the last, its targets all but the first, and the loss is the mean
 * cross-entropy over all target tokens of all captions (CrossEntropyLoss's
 * mean). Perplexity = exp(mean cross-entropy). */
#include "perplexity.h"

#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/encoder.h"
#include "engine/gemm.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/tokenizer.h"
#include "io/image.h"
#include "io/manifest.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static const char usage_text[] =
    "usage: radcap eval --perplexity --manifest FILE --checkpoint FILE --vocab FILE\n"
    "                   [--config FILE] [--batch N] [--threads N] [--json]\n"
    "\n"
    "Runs the model teacher-forced on the manifest's reference captions (the card's\n"
    "training metric): each caption is encoded to [CLS] ... [SEP] and cut to at most\n"
    "max_len (80) tokens, the inputs are all tokens but the last, the targets all but\n"
    "the first. Prints the mean cross-entropy over all target tokens (nats) and the\n"
    "perplexity exp(mean). Entries without captions are skipped; an image that cannot\n"
    "be read is reported and skipped (exit status 1).\n"
    "\n"
    "  --manifest FILE    ROCOv2 CSV, JSON Lines with \"caption\", ... (as radcap run)\n"
    "  --checkpoint FILE  model weights\n"
    "  --vocab FILE       BERT vocabulary\n"
    "  --config FILE      model configuration JSON (default: the model card's)\n"
    "  --batch N          images per encoder batch (default 8)\n"
    "  --threads N        OpenMP threads\n"
    "  --json             {\"images\": n, \"captions\": n, \"tokens\": n, \"cross_entropy\": x,\n"
    "                     \"perplexity\": x} instead of text\n";

/* Totals over the manifest. */
typedef struct ppl_totals {
    long images, captions, failed;
    long long tokens;
    double nll;
} ppl_totals;

/* Encodes one reference to at most max_len tokens ending in [SEP]. */
static int *encode_reference(const tok_vocab *vocab, const char *text, int max_len, int sep, int *n, rc_error *err)
{
    int *ids;
    size_t n_ids;
    if (tok_encode(vocab, text, strlen(text), 1, &ids, &n_ids, err) < 0)
        return NULL;
    if ((int)n_ids > max_len) {
        n_ids = (size_t)max_len;
        ids[n_ids - 1] = sep;
    }
    *n = (int)n_ids;
    return ids;
}

/* Preprocesses and encodes one batch of manifest entries, then scores all
 * their references. */
static int score_batch(const captioner *model, const tok_vocab *vocab, const img_options *img,
                       const manifest_entry *const *entries, int n, float *pixels, float *memory, ppl_totals *tot,
                       rc_error *err)
{
    const cfg_model *c = &model->cfg;
    const size_t image_floats = (size_t)3 * c->image_size * c->image_size;
    rc_error *errors = calloc(n, sizeof *errors);
    int *ok = calloc(n, sizeof *ok), *order = malloc(sizeof(int) * (n ? n : 1));
    if (!errors || !ok || !order) {
        free(errors), free(ok), free(order);
        return rc_fail(err, "out of memory");
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++)
        ok[i] = img_preprocess_file(entries[i]->path, img, pixels + i * image_floats, NULL, &errors[i]) == 0;
    for (int i = 0; i < n; i++)
        if (!ok[i]) {
            fprintf(stderr, "radcap eval: %s\n", errors[i].msg);
            tot->failed++;
        }
    const int n_ok = img_pack_batch(pixels, image_floats, ok, n, order);
    int n_seq = 0;
    for (int j = 0; j < n_ok; j++)
        n_seq += entries[order[j]]->n_refs;
    int rc = 0;
    int **tokens = calloc(n_seq ? n_seq : 1, sizeof *tokens), *n_tokens = calloc(n_seq ? n_seq : 1, sizeof(int));
    int *image = calloc(n_seq ? n_seq : 1, sizeof(int));
    double *nll = calloc(n_seq ? n_seq : 1, sizeof(double));
    if (!tokens || !n_tokens || !image || !nll) {
        rc = rc_fail(err, "out of memory");
        goto done;
    }
    int s = 0;
    for (int j = 0; j < n_ok; j++) {
        const manifest_entry *e = entries[order[j]];
        for (int r = 0; r < e->n_refs; r++, s++) {
            image[s] = j;
            if (!(tokens[s] = encode_reference(vocab, e->refs[r], c->max_len, c->eos_token_id, &n_tokens[s], err))) {
                rc = rc_prefix(err, "%s", e->id);
                goto done;
            }
        }
    }
    if (n_ok > 0 && (enc_forward(model, n_ok, pixels, &(enc_outputs){.memory = memory}, err) < 0 ||
                     gen_teacher_forced(model, n_seq, memory, image, (const int *const *)tokens, n_tokens, nll,
                                        err) < 0)) {
        rc = -1;
        goto done;
    }
    tot->images += n_ok;
    for (s = 0; s < n_seq; s++) {
        tot->captions++;
        tot->tokens += n_tokens[s] - 1;
        tot->nll += nll[s];
    }
done:
    for (s = 0; tokens && s < n_seq; s++)
        free(tokens[s]);
    free(tokens), free(n_tokens), free(image), free(nll), free(errors), free(ok), free(order);
    return rc;
}

int eval_perplexity(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"perplexity", no_argument, 0, 'P'},       {"manifest", required_argument, 0, 'm'},
        {"checkpoint", required_argument, 0, 'k'}, {"vocab", required_argument, 0, 'v'},
        {"config", required_argument, 0, 'c'},     {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'},    {"json", no_argument, 0, 'j'},
        {"help", no_argument, 0, 'h'},             {0, 0, 0, 0},
    };
    const char *manifest_path = NULL, *checkpoint = NULL, *vocab_path = NULL, *config_path = NULL;
    int batch = 8, threads = 0, json = 0, opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'P': break;
        case 'm': manifest_path = optarg; break;
        case 'k': checkpoint = optarg; break;
        case 'v': vocab_path = optarg; break;
        case 'c': config_path = optarg; break;
        case 'b': bad = cli_parse_int(optarg, 1, 4096, &batch); break;
        case 't': bad = cli_parse_int(optarg, 1, 4096, &threads); break;
        case 'j': json = 1; break;
        case 'h': fputs(usage_text, stdout); return EXIT_OK;
        default: fputs(usage_text, stderr); return EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "radcap eval: invalid value '%s' for --%s\n", optarg, cli_option_name(long_options, opt));
            return EXIT_USAGE;
        }
    }
    if (!manifest_path || !checkpoint || !vocab_path || optind != argc) {
        fputs(usage_text, stderr);
        return EXIT_USAGE;
    }
    if (threads > 0)
        omp_set_num_threads(threads);
    gemm_init();
    rc_error err = {{0}};
    cfg_model cfg;
    cfg_default(&cfg);
    captioner model;
    tok_vocab *vocab = NULL;
    manifest *man = NULL;
    int status = EXIT_FATAL;
    if ((config_path && cfg_load(&cfg, config_path, &err) < 0) || img_system_init(argv[0], &err) < 0 ||
        model_load(&model, &cfg, checkpoint, &err) < 0) {
        fprintf(stderr, "radcap eval: %s\n", err.msg);
        return EXIT_FATAL;
    }
    manifest_options mopts;
    manifest_options_default(&mopts);
    if (!(vocab = tok_vocab_load(vocab_path, &err)) || manifest_read(manifest_path, &mopts, &man, &err) < 0) {
        fprintf(stderr, "radcap eval: %s\n", err.msg);
        goto done;
    }
    img_options img;
    img_options_default(&img);
    img.size = cfg.image_size;
    memcpy(img.mean, cfg.image_mean, sizeof img.mean);
    memcpy(img.std, cfg.image_std, sizeof img.std);
    float *pixels = malloc(sizeof(float) * 3 * cfg.image_size * cfg.image_size * batch);
    float *memory = malloc(sizeof(float) * batch * cfg_memory_tokens(&cfg) * cfg.embed_dim);
    const manifest_entry **group = malloc(sizeof *group * batch);
    ppl_totals tot = {0};
    int rc = pixels && memory && group ? 0 : rc_fail(&err, "out of memory");
    size_t next = 0;
    while (rc == 0 && next < man->n_entries) {
        int n = 0;
        for (; next < man->n_entries && n < batch; next++)
            if (man->entries[next].n_refs > 0)
                group[n++] = &man->entries[next];
        rc = score_batch(&model, vocab, &img, group, n, pixels, memory, &tot, &err);
    }
    free(pixels), free(memory), free(group);
    if (rc < 0) {
        fprintf(stderr, "radcap eval: %s\n", err.msg);
        goto done;
    }
    if (tot.tokens == 0) {
        fprintf(stderr, "radcap eval: %s has no reference captions to score\n", manifest_path);
        goto done;
    }
    const double mean = tot.nll / (double)tot.tokens;
    if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "images", (double)tot.images);
        cJSON_AddNumberToObject(o, "captions", (double)tot.captions);
        cJSON_AddNumberToObject(o, "tokens", (double)tot.tokens);
        cJSON_AddNumberToObject(o, "cross_entropy", mean);
        cJSON_AddNumberToObject(o, "perplexity", exp(mean));
        char *text = cJSON_PrintUnformatted(o);
        printf("%s\n", text);
        cJSON_free(text);
        cJSON_Delete(o);
    } else {
        printf("images %ld, captions %ld, target tokens %lld\nmean cross-entropy %.6f nats, perplexity %.4f\n",
               tot.images, tot.captions, tot.tokens, mean, exp(mean));
    }
    status = tot.failed ? EXIT_PARTIAL : EXIT_OK;
done:
    manifest_free(man);
    tok_vocab_free(vocab);
    model_free(&model);
    return status;
}
