/* bench_bf16.c: how much faster the model runs with bfloat16 weights, for
 * `make bench`. Not a test: it checks nothing, it prints (and with --json
 * writes) numbers.
 *
 * On the card's configuration with random weights, the same model is built
 * three times: fp32; bf16 in the decoder (what `radcap --precision bf16`
 * does); bf16 in the encoder too. Each workload below is run in turns, one
 * run of each model after the other, for about --seconds per model: on a
 * machine shared with other jobs, whatever slows one turn down slows its
 * neighbours about as much, so the ratio of the medians is what bf16 changes,
 * where separate benchmark runs minutes apart differ by more than that.
 *   latency     1 image: encoder, cross-attention keys/values, 40 decoding steps
 *   e2e b32     32 images, the same (images/s)
 *   encoder b8  8 images through the encoder (images/s)
 *   decoder bN  40 decoding steps of N sequences (tokens/s), keys/values set
 * Decoding steps are fed random tokens (forced), so every run does the same
 * work whatever the weights predict.
 *
 * usage: bench_bf16 [--threads N] [--seconds S] [--json FILE]
 */
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/decoder.h"
#include "engine/encoder.h"
#include "engine/gemm.h"
#include "engine/model.h"
#include "engine/random_model.h"
#include "engine/rng.h"
#include "tests/bench/bench_common.h"

enum { TOKENS = 40, MAX_BATCH = 32, N_MODELS = 3, MAX_RUNS = 4096 };

static const char *const model_names[N_MODELS] = {"fp32", "bf16 decoder", "bf16 all"};
static const char *const model_keys[N_MODELS] = {"", "_bf16", "_bf16_all"}; /* JSON key suffixes */

typedef struct workload {
    const char *name;
    const char *key;  /* JSON key (then a model's suffix) */
    int batch;  /* images or sequences */
    int encode; /* 1: run the encoder and set the cross keys/values */
    int decode; /* 1: TOKENS decoding steps */
    const char *unit; /* what the rate counts */
} workload;

static const workload workloads[] = {
    {"latency, 1 image, 40 tokens", "latency_s_b1", 1, 1, 1, "s"},
    {"end to end, batch 32, 40 tokens", "e2e_img_per_s", 32, 1, 1, "images/s"},
    {"encoder, batch 8", "encoder_img_per_s_b8", 8, 1, 0, "images/s"},
    {"decoder, batch 1, 40 tokens", "decoder_tok_per_s_b1", 1, 0, 1, "tokens/s"},
    {"decoder, batch 32, 40 tokens", "decoder_tok_per_s_b32", 32, 0, 1, "tokens/s"},
};

typedef struct buffers {
    float *images;  /* (MAX_BATCH, 3, S, S) */
    float *memory;  /* (MAX_BATCH, L, dim) */
    float *scratch; /* (MAX_BATCH, L, 2 * dim) */
    float *logits;  /* (MAX_BATCH, vocab) */
    int *tokens;    /* (TOKENS, MAX_BATCH) forced tokens */
    int slots[MAX_BATCH], positions[MAX_BATCH];
    dec_cache cache[N_MODELS];
} buffers;

/* One run of workload w on model m; returns its seconds. */
static double run(const captioner *m, dec_cache *cache, const workload *w, buffers *b)
{
    rc_error err = {{0}};
    const double t0 = bench_now();
    if (w->encode) {
        if (enc_forward(m, w->batch, b->images, &(enc_outputs){.memory = b->memory}, &err) < 0) {
            fprintf(stderr, "bench_bf16: %s\n", err.msg);
            exit(1);
        }
        dec_set_memory(m, cache, w->batch, b->slots, b->memory, b->scratch);
    }
    for (int step = 0; w->decode && step < TOKENS; step++) {
        for (int i = 0; i < w->batch; i++)
            b->positions[i] = step;
        dec_step(m, cache, w->batch, b->slots, b->tokens + (size_t)step * MAX_BATCH, b->positions, b->logits);
    }
    return bench_now() - t0;
}

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* A run's seconds as the workload's rate. */
static double rate(const workload *w, double seconds)
{
    if (strcmp(w->unit, "s") == 0)
        return seconds;
    return (w->decode && !w->encode ? (double)w->batch * TOKENS : w->batch) / seconds;
}

int main(int argc, char **argv)
{
    double seconds = 3.0;
    const char *json_path = NULL;
    for (int i = 1; i < argc; i++) {
        const char *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (strcmp(argv[i], "--threads") == 0 && val)
            omp_set_num_threads(atoi(val)), i++;
        else if (strcmp(argv[i], "--seconds") == 0 && val)
            seconds = atof(val), i++;
        else if (strcmp(argv[i], "--json") == 0 && val)
            json_path = val, i++;
        else {
            fprintf(stderr, "usage: bench_bf16 [--threads N] [--seconds S] [--json FILE]\n");
            return 2;
        }
    }
    gemm_init();
    cfg_model cfg;
    cfg_default(&cfg);
    rc_error err = {{0}};
    random_model rm;
    if (random_model_build(&rm, &cfg, 1, &err) < 0) {
        fprintf(stderr, "bench_bf16: %s\n", err.msg);
        return 1;
    }
    const model_options options[N_MODELS] = {
        {0}, {.decoder_precision = GEMM_BF16}, {.encoder_precision = GEMM_BF16, .decoder_precision = GEMM_BF16}};
    captioner models[N_MODELS];
    buffers b = {0};
    for (int k = 0; k < N_MODELS; k++) {
        ckpt_file view;
        if (ckpt_view(&view, rm.tensors, rm.n_tensors, "random", &err) < 0 ||
            model_build_with(&models[k], &cfg, &view, &options[k], &err) < 0 ||
            dec_cache_build(&b.cache[k], &models[k], MAX_BATCH, TOKENS, &err) < 0) {
            fprintf(stderr, "bench_bf16: %s\n", err.msg);
            return 1;
        }
    }
    const int S = cfg.image_size, L = cfg_memory_tokens(&cfg), D = cfg.embed_dim;
    b.images = malloc(sizeof(float) * MAX_BATCH * 3 * S * S);
    b.memory = malloc(sizeof(float) * MAX_BATCH * L * D);
    b.scratch = malloc(sizeof(float) * MAX_BATCH * L * 2 * D);
    b.logits = malloc(sizeof(float) * MAX_BATCH * cfg.vocab_size);
    b.tokens = malloc(sizeof(int) * TOKENS * MAX_BATCH);
    double *times = malloc(sizeof(double) * N_MODELS * MAX_RUNS);
    if (!b.images || !b.memory || !b.scratch || !b.logits || !b.tokens || !times) {
        fprintf(stderr, "bench_bf16: out of memory\n");
        return 1;
    }
    rng_state r;
    rng_seed(&r, 3);
    for (size_t i = 0; i < (size_t)MAX_BATCH * 3 * S * S; i++)
        b.images[i] = (float)rng_normal(&r);
    for (int i = 0; i < TOKENS * MAX_BATCH; i++)
        b.tokens[i] = (int)(rng_next(&r) % (uint64_t)cfg.vocab_size);
    for (int i = 0; i < MAX_BATCH; i++)
        b.slots[i] = i;
    /* the decoder-only workloads read keys/values set once, here */
    for (int k = 0; k < N_MODELS; k++) {
        if (enc_forward(&models[k], MAX_BATCH, b.images, &(enc_outputs){.memory = b.memory}, &err) < 0) {
            fprintf(stderr, "bench_bf16: %s\n", err.msg);
            return 1;
        }
        dec_set_memory(&models[k], &b.cache[k], MAX_BATCH, b.slots, b.memory, b.scratch);
    }

    printf("bf16 weights against fp32, card configuration, random weights, %d thread(s), gemm backend %s\n"
           "runs taken in turns (fp32, bf16 decoder, bf16 all) for ~%.1f s per model; median [best]\n\n",
           omp_get_max_threads(), gemm_backend_name(), seconds);
    printf("%-34s %-9s %18s %18s %18s %9s %9s\n", "", "", model_names[0], model_names[1], model_names[2],
           "dec/fp32", "all/fp32");
    FILE *json = json_path ? fopen(json_path, "w") : NULL;
    char line[4096];
    int used = snprintf(line, sizeof line, "{\"threads\": %d", omp_get_max_threads());
    for (size_t w = 0; w < sizeof workloads / sizeof *workloads; w++) {
        const workload *wl = &workloads[w];
        int runs = 0;
        for (int k = 0; k < N_MODELS; k++)
            run(&models[k], &b.cache[k], wl, &b); /* warm-up */
        const double start = bench_now();
        do {
            for (int k = 0; k < N_MODELS; k++)
                times[k * MAX_RUNS + runs] = run(&models[k], &b.cache[k], wl, &b);
            runs++;
        } while (runs < 3 || (bench_now() - start < seconds * N_MODELS && runs < MAX_RUNS));
        double median[N_MODELS], best[N_MODELS];
        for (int k = 0; k < N_MODELS; k++) {
            qsort(times + k * MAX_RUNS, runs, sizeof(double), compare_doubles);
            median[k] = rate(wl, times[k * MAX_RUNS + runs / 2]);
            best[k] = rate(wl, times[k * MAX_RUNS]);
        }
        /* a speed-up is fp32 time over bf16 time, whichever way the unit goes */
        const int is_time = strcmp(wl->unit, "s") == 0;
        const double up_dec = is_time ? median[0] / median[1] : median[1] / median[0];
        const double up_all = is_time ? median[0] / median[2] : median[2] / median[0];
        printf("%-34s %-9s", wl->name, wl->unit);
        for (int k = 0; k < N_MODELS; k++)
            printf(" %9.4g [%6.4g]", median[k], best[k]);
        printf(" %8.2fx %8.2fx   (%d runs each)\n", up_dec, up_all, runs);
        fflush(stdout);
        for (int k = 0; k < N_MODELS && used < (int)sizeof line; k++)
            used += snprintf(line + used, sizeof line - used, ", \"%s%s\": %.4g", wl->key, model_keys[k], median[k]);
    }
    if (used < (int)sizeof line)
        snprintf(line + used, sizeof line - used, "}");
    printf("\n%s\n", line);
    if (json) {
        fprintf(json, "%s\n", line);
        fclose(json);
    }
    for (int k = 0; k < N_MODELS; k++) {
        dec_cache_free(&b.cache[k]);
        model_free(&models[k]);
    }
    random_model_free(&rm);
    free(b.images), free(b.memory), free(b.scratch), free(b.logits), free(b.tokens), free(times);
    return 0;
}
