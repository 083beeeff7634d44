/* bench_bf16.c: how much faster the model runs with bfloat16 weights, for
 * `make bench`. Not a test: it checks nothing, it prints (and with --json
 * writes) numbers.
 *
 * On the card's configuration with random weights, the same model is built
 * three times: fp32; bf16 in the decoder (what `radcap --precision bf16`
 * does); bf16 in the encoder too; and, on a CPU with AVX512_BF16, twice
 * more with the dot-product kernel (`--gemm avx512bf16`: x rounded too,
 * twice the multiply-adds per instruction), each model run on the backend
 * it was packed for. Each workload below is run in turns, one
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

enum { TOKENS = 40, MAX_BATCH = 32, N_MODELS = 5, MAX_RUNS = 4096 };

typedef struct model_spec {
    const char *name;
    const char *key;       /* JSON key suffix */
    model_options options;
    const char *backend;   /* packed for and run on */
} model_spec;

/* fp32 first: the others' speed-ups are against it. The dot-product ones
 * only where the CPU has the instruction (emulated, they would time the
 * emulation). */
static const model_spec specs[N_MODELS] = {
    {"fp32", "", {0}, "auto"},
    {"bf16 decoder", "_bf16", {.decoder_precision = GEMM_BF16}, "auto"},
    {"bf16 all", "_bf16_all", {.encoder_precision = GEMM_BF16, .decoder_precision = GEMM_BF16}, "auto"},
    {"dot decoder", "_bf16_dot", {.decoder_precision = GEMM_BF16}, "avx512bf16"},
    {"dot all", "_bf16_dot_all", {.encoder_precision = GEMM_BF16, .decoder_precision = GEMM_BF16}, "avx512bf16"},
};

static void use_backend(const char *name)
{
    rc_error err = {{0}};
    if (gemm_set_backend(name, &err) < 0) {
        fprintf(stderr, "bench_bf16: %s\n", err.msg);
        exit(1);
    }
}

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

/* One run of workload w on model k; returns its seconds. */
static double run(const captioner *models, int k, const workload *w, buffers *b)
{
    const captioner *m = &models[k];
    dec_cache *cache = &b->cache[k];
    rc_error err = {{0}};
    use_backend(specs[k].backend);
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
    int n_models = 0;
    while (n_models < N_MODELS && gemm_backend_supported(specs[n_models].backend))
        n_models++;
    captioner models[N_MODELS];
    buffers b = {0};
    for (int k = 0; k < n_models; k++) {
        ckpt_file view;
        use_backend(specs[k].backend); /* its panels' layout */
        if (ckpt_view(&view, rm.tensors, rm.n_tensors, "random", &err) < 0 ||
            model_build_with(&models[k], &cfg, &view, &specs[k].options, &err) < 0 ||
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
    for (int k = 0; k < n_models; k++) {
        use_backend(specs[k].backend);
        if (enc_forward(&models[k], MAX_BATCH, b.images, &(enc_outputs){.memory = b.memory}, &err) < 0) {
            fprintf(stderr, "bench_bf16: %s\n", err.msg);
            return 1;
        }
        dec_set_memory(&models[k], &b.cache[k], MAX_BATCH, b.slots, b.memory, b.scratch);
    }

    use_backend("auto");
    printf("bf16 weights against fp32, card configuration, random weights, %d thread(s), gemm backend %s%s\n"
           "runs taken in turns, one model after the other, for ~%.1f s per model; median [best], and each\n"
           "model's speed-up over fp32\n\n",
           omp_get_max_threads(), gemm_backend_name(),
           n_models < N_MODELS ? " (no AVX512_BF16: no dot-product models)" : " (dot models: avx512bf16)", seconds);
    printf("%-34s %-9s", "", "");
    for (int k = 0; k < n_models; k++)
        printf(" %18s", specs[k].name);
    for (int k = 1; k < n_models; k++)
        printf(" %12s", specs[k].name);
    printf("\n");
    FILE *json = json_path ? fopen(json_path, "w") : NULL;
    char line[4096];
    int used = snprintf(line, sizeof line, "{\"threads\": %d", omp_get_max_threads());
    for (size_t w = 0; w < sizeof workloads / sizeof *workloads; w++) {
        const workload *wl = &workloads[w];
        int runs = 0;
        for (int k = 0; k < n_models; k++)
            run(models, k, wl, &b); /* warm-up */
        const double start = bench_now();
        do {
            for (int k = 0; k < n_models; k++)
                times[k * MAX_RUNS + runs] = run(models, k, wl, &b);
            runs++;
        } while (runs < 3 || (bench_now() - start < seconds * n_models && runs < MAX_RUNS));
        double median[N_MODELS], best[N_MODELS];
        for (int k = 0; k < n_models; k++) {
            qsort(times + k * MAX_RUNS, runs, sizeof(double), compare_doubles);
            median[k] = rate(wl, times[k * MAX_RUNS + runs / 2]);
            best[k] = rate(wl, times[k * MAX_RUNS]);
        }
        /* a speed-up is fp32 time over bf16 time, whichever way the unit goes */
        const int is_time = strcmp(wl->unit, "s") == 0;
        printf("%-34s %-9s", wl->name, wl->unit);
        for (int k = 0; k < n_models; k++)
            printf(" %9.4g [%6.4g]", median[k], best[k]);
        for (int k = 1; k < n_models; k++)
            printf(" %11.2fx", is_time ? median[0] / median[k] : median[k] / median[0]);
        printf("   (%d runs each)\n", runs);
        fflush(stdout);
        for (int k = 0; k < n_models && used < (int)sizeof line; k++)
            used += snprintf(line + used, sizeof line - used, ", \"%s%s\": %.4g", wl->key, specs[k].key, median[k]);
    }
    if (used < (int)sizeof line)
        snprintf(line + used, sizeof line - used, "}");
    printf("\n%s\n", line);
    if (json) {
        fprintf(json, "%s\n", line);
        fclose(json);
    }
    for (int k = 0; k < n_models; k++) {
        dec_cache_free(&b.cache[k]);
        model_free(&models[k]);
    }
    random_model_free(&rm);
    free(b.images), free(b.memory), free(b.scratch), free(b.logits), free(b.tokens), free(times);
    return 0;
}
