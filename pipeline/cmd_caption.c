/* radcap caption: caption image files with a checkpoint and print the
 * captions, in the order the images were given. The work is a run's
 * worker (scheduler/worker.h) fed from the command line: the same
 * continuous batching, and images read while the model computes. */
#include <cjson/cJSON.h>
#include <getopt.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/config.h"
#include "engine/gemm.h"
#include "engine/generate.h"
#include "io/image.h"
#include "pipeline/cli.h"
#include "pipeline/commands.h"
#include "scheduler/worker.h"

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
            "  --batch N          images encoded together (default 8); greedy decoding keeps\n"
            "                     up to 2 x N captions in progress, taking in new images as\n"
            "                     others finish\n"
            "  --threads N        OpenMP threads (default: OMP_NUM_THREADS, else all cores)\n"
            "  --gemm NAME        matrix-product kernels: auto (the fastest this CPU runs),\n"
            "                     avx512, avx2, portable or cblas (OpenBLAS); the engine's\n"
            "                     own (all but cblas) give identical captions (default:\n"
            "                     $RADCAP_GEMM if it names one this CPU runs, else auto);\n"
            "                     avx512bf16: avx512, but bf16 weights are multiplied by\n"
            "                     activations rounded to bfloat16 too (VDPBF16PS, CPUs with\n"
            "                     AVX512_BF16: twice the multiply-adds per instruction;\n"
            "                     captions may differ from the other backends' bf16 ones);\n"
            "                     avx512bf16-emulated: the same sums, instruction emulated\n"
            "                     (slow; for testing)\n"
            "  --precision P      fp32 (default); bf16: the decoder's weights rounded to\n"
            "                     bfloat16 at load (half the memory traffic per token; the\n"
            "                     encoder stays fp32); bf16-all: the encoder's too (faster\n"
            "                     only with --gemm avx512bf16; its 50 layers amplify the\n"
            "                     rounding: captions differ from fp32's more often)\n"
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

/* The images of the command line as the worker's feed (scheduler/worker.h),
 * and its results printed in the order the images were given: the worker
 * delivers a chunk when its last caption is finished, which may be after
 * a later chunk's. */
typedef struct caption_feed {
    char **paths;     // the IMAGE arguments
    int n_paths;
    int batch;        // images per chunk
    int next_path;    // the first not yet handed out
    int json;
    char **out_lines; // (n_paths) rendered results not printed yet, NULL until delivered
    char **err_lines; // (n_paths) what goes to standard error with them, or NULL
    int next_print;   // the first result not printed yet
    int failed;       // images that could not be captioned
} caption_feed;

static void add_number_or_null(cJSON *o, const char *key, double v)
{
    if (isnan(v))
        cJSON_AddNullToObject(o, key);
    else
        cJSON_AddNumberToObject(o, key, v);
}

/* One image's line: the caption (an empty line for a failure), or with
 * --json the object `usage` describes. NULL when memory runs out. */
static char *render_result(const caption_feed *f, const char *path, const sched_result *r)
{
    if (!f->json)
        return strdup(r->ok ? r->caption : "");
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "image", path);
    if (!r->ok) {
        cJSON_AddStringToObject(o, "error", r->error ? r->error : "failed");
    } else {
        cJSON_AddStringToObject(o, "caption", r->caption);
        cJSON_AddItemToObject(o, "ids", cJSON_CreateIntArray(r->ids, r->n_ids));
        add_number_or_null(o, "mean_logprob", r->mean_logprob);
        add_number_or_null(o, "min_token_prob", r->min_token_prob);
        if (r->token_probs) {
            cJSON *probs = cJSON_AddArrayToObject(o, "token_probs");
            for (int t = 0; probs && t < r->n_ids; t++)
                cJSON_AddItemToArray(probs, cJSON_CreateNumber(r->token_probs[t]));
        }
    }
    char *printed = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    char *line = printed ? strdup(printed) : NULL;
    cJSON_free(printed);
    return line;
}

static sched_feed_status feed_next(void *ctx, int wait, sched_chunk *chunk, rc_error *err)
{
    (void)wait; /* the whole list is known: never a wait */
    caption_feed *f = ctx;
    if (f->next_path >= f->n_paths)
        return SCHED_FEED_END;
    const int n = f->n_paths - f->next_path < f->batch ? f->n_paths - f->next_path : f->batch;
    chunk->tasks = calloc(n, sizeof *chunk->tasks);
    if (!chunk->tasks)
        return rc_fail(err, "out of memory"), SCHED_FEED_ERROR;
    chunk->n = n;
    for (int i = 0; i < n; i++) {
        chunk->tasks[i].index = f->next_path + i;
        if (!(chunk->tasks[i].path = strdup(f->paths[f->next_path + i]))) {
            sched_chunk_free(chunk);
            return rc_fail(err, "out of memory"), SCHED_FEED_ERROR;
        }
    }
    f->next_path += n;
    return SCHED_FEED_CHUNK;
}

static int feed_deliver(void *ctx, const sched_result *results, int n, rc_error *err)
{
    caption_feed *f = ctx;
    for (int i = 0; i < n; i++) {
        const sched_result *r = &results[i];
        const int at = (int)r->index;
        f->out_lines[at] = render_result(f, f->paths[at], r);
        if (!f->out_lines[at])
            return rc_fail(err, "out of memory printing the result of %s", f->paths[at]);
        if (!r->ok) {
            f->failed++;
            if (!(f->err_lines[at] = strdup(r->error ? r->error : "failed")))
                return rc_fail(err, "out of memory");
        }
    }
    for (; f->next_print < f->n_paths && f->out_lines[f->next_print]; f->next_print++) {
        if (f->err_lines[f->next_print])
            fprintf(stderr, "radcap caption: %s\n", f->err_lines[f->next_print]);
        printf("%s\n", f->out_lines[f->next_print]);
        free(f->out_lines[f->next_print]);
        free(f->err_lines[f->next_print]);
        f->out_lines[f->next_print] = f->err_lines[f->next_print] = NULL;
    }
    fflush(stdout);
    return 0;
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
    model_precision precision = MODEL_FP32;
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
        case 'P': bad = model_precision_parse(optarg, &precision, &err); break;
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
    sched_worker_options wopt = {.checkpoint = checkpoint, .vocab = vocab_path, .cfg = cfg, .batch = batch,
                                 .prefetch = 1, .decoding = decoding, .precision = precision};
    sched_image_options(&cfg, max_pixels, exif, &wopt.img);
    sched_worker *w = sched_worker_open(&wopt, &err);
    if (!w) {
        fprintf(stderr, "radcap caption: %s\n", err.msg);
        img_system_shutdown();
        return EXIT_FATAL;
    }
    caption_feed f = {.paths = argv + optind, .n_paths = argc - optind, .batch = batch, .json = json};
    f.out_lines = calloc(f.n_paths, sizeof *f.out_lines);
    f.err_lines = calloc(f.n_paths, sizeof *f.err_lines);
    int status = EXIT_OK;
    if (!f.out_lines || !f.err_lines) {
        fprintf(stderr, "radcap caption: out of memory for %d images\n", f.n_paths);
        status = EXIT_FATAL;
    } else if (sched_worker_loop(w, &(sched_feed){feed_next, feed_deliver, &f}, &err) < 0) {
        fprintf(stderr, "radcap caption: %s\n", err.msg);
        status = EXIT_FATAL;
    } else if (f.failed) {
        status = EXIT_PARTIAL;
    }
    for (int i = 0; f.out_lines && f.err_lines && i < f.n_paths; i++)
        free(f.out_lines[i]), free(f.err_lines[i]);
    free(f.out_lines);
    free(f.err_lines);
    sched_worker_close(w);
    img_system_shutdown();
    return status;
}
