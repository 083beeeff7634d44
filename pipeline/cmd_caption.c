/* radcap caption: caption image files with a checkpoint and print the
 * captions, in the order the images were given. */
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
#include "pipeline/cli.h"
#include "pipeline/commands.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: radcap caption --checkpoint FILE --vocab FILE [OPTIONS] IMAGE...\n"
            "\n"
            "Captions each IMAGE (JPEG, PNG, TIFF, WebP, GIF) with the model and prints one\n"
            "line per image, in the order given: the caption, or with --json an object\n"
            "  {\"image\": PATH, \"caption\": TEXT, \"ids\": [token ids without [CLS]/[SEP]],\n"
            "   \"mean_logprob\": M, \"min_token_prob\": P}\n"
            "where, over the caption's tokens (not the closing [SEP]), M is the mean natural\n"
            "log of each token's probability (the softmax of the model's raw logits at its\n"
            "step) and P the smallest; both are null for an empty caption. With\n"
            "--token-scores the object also has \"token_probs\": [each token's probability].\n"
            "An image that cannot be read is reported on standard error (and, with --json,\n"
            "as {\"image\": PATH, \"error\": REASON}; without --json as an empty line), and\n"
            "the other images are still captioned; the exit status is then 1.\n"
            "\n"
            "  --checkpoint FILE  model weights: torch.save state dict (roco_best_model.bin)\n"
            "                     or .safetensors\n"
            "  --vocab FILE       BERT vocabulary (bert-base-uncased vocab.txt)\n"
            "  --config FILE      model configuration JSON (default: the model card's values)\n"
            "  --batch N          images encoded and decoded together (default 8)\n"
            "  --threads N        OpenMP threads (default: OMP_NUM_THREADS, else all cores)\n"
            "  --gemm NAME        matrix-product kernels: auto (the fastest this CPU runs),\n"
            "                     avx512, avx2, portable or cblas (OpenBLAS); the engine's\n"
            "                     own (all but cblas) give identical captions (default:\n"
            "                     $RADCAP_GEMM if it names one this CPU runs, else auto)\n"
            "  --precision P      fp32 (default) or bf16: the decoder's weights rounded to\n"
            "                     bfloat16 at load (half the memory traffic per token; the\n"
            "                     encoder stays fp32)\n"
            "  --max-len N, --max-length N\n"
            "                     generated tokens at most, [SEP] included (default: the\n"
            "                     configuration's, 80)\n"
            "\n"
            "Decoding (greedy, the model card's, by default; as Hugging Face's generate):\n"
            "  --beam K           beam search with K beams per image, 1 to 16 (default 1:\n"
            "                     greedy); the caption is the best finished hypothesis\n"
            "  --length-penalty A beam search ranks hypotheses by summed log-probability /\n"
            "                     length^A, the length counting [SEP] (default 1.0; 0 sums,\n"
            "                     A < 0 favours short captions)\n"
            "  --early-stopping   beam search stops an image as soon as K hypotheses are\n"
            "                     finished (default: when no live beam is likely to beat them)\n"
            "  --min-length N     [SEP] is forbidden before N tokens (default 0)\n"
            "  --no-repeat-ngram N\n"
            "                     no N tokens in a row occur twice in a caption (default 0: off)\n"
            "  --repetition-penalty P\n"
            "                     the score of every token already in the caption is divided\n"
            "                     by P if positive, multiplied by P if negative (greedy: the\n"
            "                     logits; beam search: the log-probabilities); default 1: off\n"
            "  --token-scores     --json also prints every token's probability\n"
            "\n"
            "  --max-pixels N     refuse larger images before decoding (default 100000000)\n"
            "  --exif-orientation apply the EXIF orientation first (PIL does not by default)\n"
            "  --json             one JSON object per line\n"
            "\n"
            "Exit status: 0 all captioned, 1 some images failed, 2 usage error, 3 the model,\n"
            "vocabulary or configuration could not be loaded.\n");
}

typedef struct caption_job {
    const cfg_model *cfg;
    const captioner *model;
    const tok_vocab *vocab;
    const img_options *img;
    const gen_decoding *decoding;
    int max_len;
    int json;
} caption_job;

/* The decoder's outputs for a batch. */
typedef struct caption_buffers {
    float *pixels;          // (batch, 3, size, size)
    float *memory;          // (batch, memory_tokens, embed_dim)
    int *ids;               // (batch, max_len)
    int *lens;              // (batch)
    float *token_probs;     // (batch, max_len), with --token-scores
    double *mean_logprob;   // (batch)
    double *min_token_prob; // (batch)
} caption_buffers;

/* A caption and its confidence, as printed. */
typedef struct caption_line {
    const char *caption;
    const int *ids;
    int n_ids;
    const float *token_probs; // (n_ids) or NULL
    double mean_logprob, min_token_prob;
} caption_line;

static void add_number_or_null(cJSON *o, const char *key, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, v);
}

static void print_result(const caption_job *job, const char *path, const caption_line *shown, const char *error)
{
    if (!job->json) {
        printf("%s\n", error ? "" : shown->caption);
        return;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", path);
    if (error) {
        cJSON_AddStringToObject(o, "error", error);
    } else {
        cJSON_AddStringToObject(o, "caption", shown->caption);
        cJSON_AddItemToObject(o, "ids", cJSON_CreateIntArray(shown->ids, shown->n_ids));
        add_number_or_null(o, "mean_logprob", shown->mean_logprob);
        add_number_or_null(o, "min_token_prob", shown->min_token_prob);
        if (shown->token_probs) {
            cJSON *probs = cJSON_AddArrayToObject(o, "token_probs");
            for (int t = 0; probs && t < shown->n_ids; t++)
                cJSON_AddItemToArray(probs, cJSON_CreateNumber(shown->token_probs[t]));
        }
    }
    char *line = cJSON_PrintUnformatted(o);
    printf("%s\n", line ? line : "{}");
    cJSON_free(line);
    cJSON_Delete(o);
}

/* Preprocesses, encodes and decodes one batch of paths; returns the number
 * of images that failed. */
static int caption_batch(const caption_job *job, char **paths, int n, const caption_buffers *b)
{
    float *pixels = b->pixels;
    const cfg_model *c = job->cfg;
    const size_t image_floats = (size_t)3 * c->image_size * c->image_size;
    rc_error *errors = calloc(n, sizeof *errors);
    int *ok = calloc(n, sizeof *ok), *order = malloc(sizeof(int) * n);
    if (!errors || !ok || !order) {
        free(errors), free(ok), free(order);
        for (int i = 0; i < n; i++)
            print_result(job, paths[i], NULL, "out of memory");
        return n;
    }
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < n; i++)
        ok[i] = img_preprocess_file(paths[i], job->img, pixels + i * image_floats, NULL, &errors[i]) == 0;
    int n_ok = img_pack_batch(pixels, image_floats, ok, n, order);
    rc_error err = {{0}};
    int failed = n - n_ok;
    const enc_outputs out = {.memory = b->memory};
    const gen_output captions = {b->ids, b->lens, b->token_probs, b->mean_logprob, b->min_token_prob, NULL};
    if (n_ok > 0 && (enc_forward(job->model, n_ok, pixels, &out, &err) < 0 ||
                     gen_decode(job->model, n_ok, b->memory, job->decoding, &(gen_options){.max_len = job->max_len},
                                &captions, &err) < 0)) {
        for (int j = 0; j < n_ok; j++) {
            ok[order[j]] = 0;
            snprintf(errors[order[j]].msg, sizeof errors[0].msg, "%s", err.msg);
        }
        failed = n;
        n_ok = 0;
    }
    for (int i = 0, j = 0; i < n; i++) {
        if (!ok[i]) {
            fprintf(stderr, "radcap caption: %s\n", errors[i].msg);
            print_result(job, paths[i], NULL, errors[i].msg);
            continue;
        }
        const size_t at = (size_t)j * job->max_len;
        char *text = tok_decode(job->vocab, b->ids + at, b->lens[j], 1, NULL, &err);
        if (!text) {
            fprintf(stderr, "radcap caption: %s: %s\n", paths[i], err.msg);
            print_result(job, paths[i], NULL, err.msg);
            failed++;
        } else {
            const caption_line line = {text, b->ids + at, b->lens[j], b->token_probs ? b->token_probs + at : NULL,
                                       b->mean_logprob[j], b->min_token_prob[j]};
            print_result(job, paths[i], &line, NULL);
            free(text);
        }
        j++;
    }
    fflush(stdout);
    free(errors), free(ok), free(order);
    return failed;
}

int cmd_caption(int argc, char **argv)
{
    static const struct option long_options[] = {
        {"checkpoint", required_argument, 0, 'k'}, {"vocab", required_argument, 0, 'v'},
        {"config", required_argument, 0, 'c'},     {"batch", required_argument, 0, 'b'},
        {"threads", required_argument, 0, 't'},    {"max-len", required_argument, 0, 'l'},
        {"max-pixels", required_argument, 0, 'p'}, {"exif-orientation", no_argument, 0, 'e'},
        {"json", no_argument, 0, 'j'},             {"gemm", required_argument, 0, 'g'},
        {"max-length", required_argument, 0, 'l'}, {"beam", required_argument, 0, 'B'},
        {"length-penalty", required_argument, 0, 'A'}, {"early-stopping", no_argument, 0, 'E'},
        {"min-length", required_argument, 0, 'm'}, {"no-repeat-ngram", required_argument, 0, 'n'},
        {"repetition-penalty", required_argument, 0, 'r'}, {"token-scores", no_argument, 0, 's'},
        {"precision", required_argument, 0, 'P'},
        {"help", no_argument, 0, 'h'},
        {0, 0, 0, 0},
    };
    const char *checkpoint = NULL, *vocab_path = NULL, *config_path = NULL, *gemm = NULL;
    int batch = 8, threads = 0, max_len = 0, json = 0, exif = 0;
    long long max_pixels = 100000000;
    gen_decoding decoding;
    gen_decoding_default(&decoding);
    model_options model_opts = {0};
    rc_error err = {{0}};
    int opt;
    optind = 1;
    while ((opt = getopt_long(argc, argv, "", long_options, NULL)) != -1) {
        int bad = 0;
        switch (opt) {
        case 'k': checkpoint = optarg; break;
        case 'v': vocab_path = optarg; break;
        case 'c': config_path = optarg; break;
        case 'b': bad = cli_parse_int(optarg, 1, 4096, &batch); break;
        case 't': bad = cli_parse_int(optarg, 1, 4096, &threads); break;
        case 'l': bad = cli_parse_int(optarg, 1, 1 << 20, &max_len); break;
        case 'p': bad = cli_parse_ll(optarg, 1, (long long)1 << 50, &max_pixels); break;
        case 'e': exif = 1; break;
        case 'j': json = 1; break;
        case 'g': gemm = optarg; break;
        case 'B': bad = cli_parse_int(optarg, 1, GEN_MAX_BEAM, &decoding.beam); break;
        case 'A': bad = cli_parse_double(optarg, -1e6, 1e6, &decoding.length_penalty); break;
        case 'E': decoding.early_stopping = 1; break;
        case 'm': bad = cli_parse_int(optarg, 0, 1 << 20, &decoding.min_length); break;
        case 'n': bad = cli_parse_int(optarg, 0, 1 << 20, &decoding.no_repeat_ngram); break;
        case 'r': bad = cli_parse_double(optarg, 1e-6, 1e6, &decoding.repetition_penalty); break;
        case 's': decoding.token_scores = 1; break;
        case 'P': bad = gemm_precision_parse(optarg, &model_opts.decoder_precision, &err); break;
        case 'h': usage(stdout); return EXIT_OK;
        default: usage(stderr); return EXIT_USAGE;
        }
        if (bad) {
            fprintf(stderr, "radcap caption: invalid value '%s' for --%s\n", optarg,
                    cli_option_name(long_options, opt));
            return EXIT_USAGE;
        }
    }
    if (!checkpoint || !vocab_path || optind >= argc) {
        fprintf(stderr, "radcap caption: --checkpoint, --vocab and at least one IMAGE are required\n");
        usage(stderr);
        return EXIT_USAGE;
    }
    if (gen_decoding_check(&decoding, &err) < 0) {
        fprintf(stderr, "radcap caption: %s\n", err.msg);
        return EXIT_USAGE;
    }
    if (threads > 0)
        omp_set_num_threads(threads);
    gemm_init();

    if (gemm && gemm_set_backend(gemm, &err) < 0) {
        fprintf(stderr, "radcap caption: --gemm: %s\n", err.msg);
        return EXIT_USAGE;
    }
    cfg_model cfg;
    cfg_default(&cfg);
    if (config_path && cfg_load(&cfg, config_path, &err) < 0) {
        fprintf(stderr, "radcap caption: %s\n", err.msg);
        return EXIT_FATAL;
    }
    if (max_len > 0) {
        if (max_len > cfg.max_positions) {
            fprintf(stderr, "radcap caption: --max-len %d exceeds the model's %d positions\n", max_len,
                    cfg.max_positions);
            return EXIT_USAGE;
        }
        cfg.max_len = max_len;
    }
    if (img_system_init(argv[0], &err) < 0) {
        fprintf(stderr, "radcap caption: %s\n", err.msg);
        return EXIT_FATAL;
    }
    captioner model;
    if (model_load_with(&model, &cfg, checkpoint, &model_opts, &err) < 0) {
        fprintf(stderr, "radcap caption: %s\n", err.msg);
        return EXIT_FATAL;
    }
    tok_vocab *vocab = tok_vocab_load(vocab_path, &err);
    if (!vocab) {
        fprintf(stderr, "radcap caption: %s\n", err.msg);
        model_free(&model);
        return EXIT_FATAL;
    }
    if (tok_vocab_size(vocab) < cfg.vocab_size) {
        fprintf(stderr, "radcap caption: %s has %d tokens but the model predicts %d classes\n", vocab_path,
                tok_vocab_size(vocab), cfg.vocab_size);
        tok_vocab_free(vocab);
        model_free(&model);
        return EXIT_FATAL;
    }
    img_options img;
    img_options_default(&img);
    img.size = cfg.image_size;
    memcpy(img.mean, cfg.image_mean, sizeof img.mean);
    memcpy(img.std, cfg.image_std, sizeof img.std);
    img.max_pixels = max_pixels;
    img.apply_exif_orientation = exif;

    const caption_job job = {&cfg, &model, vocab, &img, &decoding, cfg.max_len, json};
    const size_t image_floats = (size_t)3 * cfg.image_size * cfg.image_size, rows = (size_t)batch;
    const caption_buffers b = {
        .pixels = malloc(sizeof(float) * image_floats * rows),
        .memory = malloc(sizeof(float) * rows * cfg_memory_tokens(&cfg) * cfg.embed_dim),
        .ids = malloc(sizeof(int) * rows * cfg.max_len),
        .lens = malloc(sizeof(int) * rows),
        .token_probs = decoding.token_scores ? malloc(sizeof(float) * rows * cfg.max_len) : NULL,
        .mean_logprob = malloc(sizeof(double) * rows),
        .min_token_prob = malloc(sizeof(double) * rows),
    };
    int failed = 0, status = EXIT_OK;
    if (!b.pixels || !b.memory || !b.ids || !b.lens || (decoding.token_scores && !b.token_probs) ||
        !b.mean_logprob || !b.min_token_prob) {
        fprintf(stderr, "radcap caption: out of memory for a batch of %d images\n", batch);
        status = EXIT_FATAL;
    } else {
        for (int first = optind; first < argc; first += batch) {
            const int n = argc - first < batch ? argc - first : batch;
            failed += caption_batch(&job, argv + first, n, &b);
        }
        if (failed)
            status = EXIT_PARTIAL;
    }
    free(b.pixels), free(b.memory), free(b.ids), free(b.lens), free(b.token_probs), free(b.mean_logprob);
    free(b.min_token_prob);
    model_free(&model);
    tok_vocab_free(vocab);
    img_system_shutdown();
    return status;
}
