/* bench_engine.c: the engine's speed on the full model, for `make bench`.
 *
 * On the model card's configuration (or --config), with the weights of
 * --checkpoint (a random-weights file from `radcap init-model`; without it a
 * random model is drawn in memory and the load time is not measured), it
 * times, on the images it draws itself (smooth random fields, normalised):
 *   encoder      images/s at batch 1, 8, 32 (ResNet, vis_proj, graph layer);
 *   decoder      tokens/s at batch 1, 32, 128: 40 decoding steps with forced
 *                (random) tokens, after the cross-attention keys/values are
 *                set, which are not timed (they count as the encoder's side);
 *                at batch 32 and 128 one more run is timed part by part
 *                (dec_profile: ms per step in decoder_b32_fc_out_ms, ...);
 *   end to end   images/s at batch 32, encoder + cross keys/values + 40
 *                greedy steps that never stop ("forced 40 tokens"), and with
 *                the card's natural stopping (eos or max_len);
 *   latency      seconds for one image alone, 40 tokens;
 *   memory       peak RSS (VmHWM) at batch 32, model load included;
 *   load         model_load of --checkpoint, best of 3 (page cache warm);
 *   GFLOP/s      the model's FLOPs counted from its configuration over the
 *                measured time, next to an AVX-512 (else AVX2) FMA loop on
 *                the same threads.
 * Every figure is the median of repeated runs (an untimed warm-up, then at
 * least 3, for about --seconds in all), "best" is the fastest run: on a
 * shared machine the median says what a job sees, the best what the cores
 * can do undisturbed.
 *
 * Prints a table and one JSON line (keys as in build/bench.json), also
 * written to --json FILE. --images-out FILE writes the 32 batch images
 * (float32, (32, 3, S, S)) so that the PyTorch side (torch_bench.py) runs on
 * the same inputs.
 *
 * usage: bench_engine [--checkpoint FILE] [--config FILE] [--threads N]
 *                     [--seconds S] [--json FILE] [--images-out FILE]
 *                     [--only e2e,latency,encoder,decoder] [--precision fp32|bf16|bf16-all]
 * (--only: those sections alone, for profiling.)
 */
#include <immintrin.h>
#include <math.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "engine/decoder.h"
#include "engine/encoder.h"
#include "engine/gemm.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/ops.h"
#include "engine/random_model.h"
#include "engine/rng.h"
#include "tests/bench/bench_common.h"

enum { FORCED_TOKENS = 40, E2E_BATCH = 32, MAX_BATCH = 128 };

/* ---- the machine ------------------------------------------------------- */

/* FMA peak in GFLOP/s over `threads` threads (bench_common.h). */
static double fma_peak(int threads)
{
    const int avx512 = gemm_backend_supported("avx512");
    return bench_fma_peak(threads, avx512, avx512 ? 150000 : 300000, 300, 5000);
}

/* VmRSS or VmHWM ("VmRSS:", "VmHWM:") of this process in MB, -1 if unknown. */
static double status_mb(const char *field)
{
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    double mb = -1;
    while (f && fgets(line, sizeof line, f))
        if (strncmp(line, field, strlen(field)) == 0)
            mb = atof(line + strlen(field)) / 1024.0;
    if (f)
        fclose(f);
    return mb;
}

/* Resets VmHWM to the current RSS (Linux >= 4.0), so that the peak is the
 * model's and not that of drawing a random one. */
static void reset_peak_rss(void)
{
    FILE *f = fopen("/proc/self/clear_refs", "w");
    if (f) {
        fputs("5", f);
        fclose(f);
    }
}

/* ---- FLOPs of the model, from its configuration ------------------------- */

static double conv_flops(const conv_layer *cv, int out_side)
{
    return 2.0 * out_side * out_side * cv->gemm.n_out * cv->gemm.n_in;
}

/* ResNet of one image. */
static double resnet_flops(const captioner *m)
{
    int side = ops_conv_out(m->cfg.image_size, 7, 2, 3);
    double flops = conv_flops(&m->stem, side);
    side = ops_conv_out(side, 3, 2, 1);
    for (int b = 0; b < m->n_blocks; b++) {
        const bottleneck *blk = &m->blocks[b];
        const int out_side = ops_conv_out(side, 3, blk->spatial.stride, 1);
        flops += conv_flops(&blk->reduce, side) + conv_flops(&blk->spatial, out_side) +
                 conv_flops(&blk->expand, out_side) + (blk->has_shortcut ? conv_flops(&blk->shortcut, out_side) : 0);
        side = out_side;
    }
    return flops;
}

/* vis_proj and the graph steps of one image (the rest of enc_forward). */
static double memory_flops(const captioner *m)
{
    const double L = cfg_memory_tokens(&m->cfg), dim = m->cfg.embed_dim;
    return 2.0 * L * ((double)m->vis_proj.n_out * m->vis_proj.n_in + m->cfg.graph_steps * dim * dim);
}

/* The cross-attention keys and values of one image's memory tokens. */
static double cross_kv_flops(const captioner *m)
{
    const double L = cfg_memory_tokens(&m->cfg), dim = m->cfg.embed_dim;
    return 2.0 * L * m->cfg.num_layers * 2.0 * dim * dim;
}

/* One decoding step of one sequence at `position` (0-based): the products,
 * both attentions (q.k and p.v) and fc_out. */
static double token_flops(const captioner *m, int position)
{
    const cfg_model *c = &m->cfg;
    const double d = c->embed_dim, L = cfg_memory_tokens(c);
    const double per_layer = 2.0 * (6 * d * d + 2 * d * c->ffn_dim) + 4.0 * d * (position + 1) + 4.0 * d * L;
    return c->num_layers * per_layer + 2.0 * c->vocab_size * d;
}

static double caption_flops(const captioner *m, int tokens)
{
    double flops = resnet_flops(m) + memory_flops(m) + cross_kv_flops(m);
    for (int t = 0; t < tokens; t++)
        flops += token_flops(m, t);
    return flops;
}

/* ---- timing ------------------------------------------------------------ */

typedef struct timing {
    double median, best; /* seconds per run */
    int runs;
} timing;

static int compare_doubles(const void *a, const void *b)
{
    const double x = *(const double *)a, y = *(const double *)b;
    return x < y ? -1 : x > y;
}

/* Runs fn(ctx) once untimed (it warms caches and page tables, and at
 * batch 32 it is a run of its own: a budget of two runs used to keep it in
 * the median), then timed until `seconds` have passed and at least 3 times
 * (at most 200; 2 when they take 4 times the budget: a loaded machine).
 * fn returns -1 on failure. */
static int time_runs(int (*fn)(void *), void *ctx, double seconds, timing *out)
{
    if (fn(ctx) < 0)
        return -1;
    double times[200];
    int n = 0;
    const double start = bench_now();
    while (n < 200 && (n < 3 || bench_now() - start < seconds) && !(n >= 2 && bench_now() - start > 4 * seconds)) {
        const double t0 = bench_now();
        if (fn(ctx) < 0)
            return -1;
        times[n++] = bench_now() - t0;
    }
    qsort(times, n, sizeof times[0], compare_doubles);
    out->median = n % 2 ? times[n / 2] : (times[n / 2 - 1] + times[n / 2]) / 2;
    out->best = times[0];
    out->runs = n;
    return 0;
}

/* ---- what is timed ----------------------------------------------------- */

typedef struct bench_ctx {
    const captioner *m;
    int batch;
    const float *images; /* (batch, 3, S, S) */
    enc_workspace *encoder; /* made once, as the worker does */
    float *memory;       /* (MAX_BATCH, L, dim) */
    float *scratch;      /* (MAX_BATCH, L, 2 * dim) for dec_set_memory */
    float *logits;       /* (MAX_BATCH, vocab) */
    int *ids, *lens;     /* (MAX_BATCH, max_len), (MAX_BATCH) */
    const int *forced;   /* (FORCED_TOKENS, MAX_BATCH) decoder inputs */
    dec_cache *cache;    /* for run_decoder: MAX_BATCH slots, memory set */
    int natural;         /* run_caption: 1 stop at eos/max_len, 0 forced FORCED_TOKENS steps */
    long tokens;         /* run_caption: tokens generated by the last run */
    rc_error err;
} bench_ctx;

static int run_encoder(void *p)
{
    bench_ctx *b = p;
    enc_forward_with(b->m, b->encoder, b->batch, b->images, &(enc_outputs){.memory = b->memory});
    return 0;
}

static int run_decoder(void *p)
{
    bench_ctx *b = p;
    int slots[MAX_BATCH], positions[MAX_BATCH];
    for (int i = 0; i < b->batch; i++)
        slots[i] = i;
    for (int step = 0; step < FORCED_TOKENS; step++) {
        for (int i = 0; i < b->batch; i++)
            positions[i] = step;
        dec_step(b->m, b->cache, b->batch, slots, b->forced + step * MAX_BATCH, positions, b->logits);
    }
    return 0;
}

/* Greedy steps that never stop: every image takes FORCED_TOKENS steps,
 * argmax included, as a caption of that length costs. */
static int forced_greedy(bench_ctx *b)
{
    const captioner *m = b->m;
    dec_cache cache;
    if (dec_cache_build(&cache, m, b->batch, FORCED_TOKENS, &b->err) < 0)
        return -1;
    int slots[MAX_BATCH], positions[MAX_BATCH], tokens[MAX_BATCH];
    for (int i = 0; i < b->batch; i++)
        slots[i] = i, tokens[i] = m->cfg.bos_token_id;
    dec_set_memory(m, &cache, b->batch, slots, b->memory, b->scratch);
    for (int step = 0; step < FORCED_TOKENS; step++) {
        for (int i = 0; i < b->batch; i++)
            positions[i] = step;
        dec_step(m, &cache, b->batch, slots, tokens, positions, b->logits);
        for (int i = 0; i < b->batch; i++)
            tokens[i] = ops_argmax(b->logits + (size_t)i * m->cfg.vocab_size, m->cfg.vocab_size);
    }
    dec_cache_free(&cache);
    b->tokens = (long)b->batch * FORCED_TOKENS;
    return 0;
}

/* Image to caption: the encoder, then greedy decoding, forced or natural. */
static int run_caption(void *p)
{
    bench_ctx *b = p;
    if (run_encoder(b) < 0)
        return -1;
    if (!b->natural)
        return forced_greedy(b);
    if (gen_greedy(b->m, b->batch, b->memory, NULL, b->ids, b->lens, &b->err) < 0)
        return -1;
    b->tokens = 0;
    for (int i = 0; i < b->batch; i++)
        b->tokens += b->lens[i] + (b->lens[i] < b->m->cfg.max_len); /* the step that chose eos */
    return 0;
}

/* ---- inputs -------------------------------------------------------------- */

/* Smooth random fields with noise, normalised like real inputs (zero mean,
 * unit scale); images: (n, 3, S, S). */
static void draw_images(int n, int side, uint64_t seed, float *images)
{
    rng_state r;
    rng_seed(&r, seed);
    for (int b = 0; b < n; b++)
        for (int c = 0; c < 3; c++) {
            const double fx = 1 + 5 * rng_uniform(&r), fy = 1 + 5 * rng_uniform(&r), phase = 6.3 * rng_uniform(&r);
            for (int y = 0; y < side; y++)
                for (int x = 0; x < side; x++)
                    images[(((size_t)b * 3 + c) * side + y) * side + x] =
                        (float)(sin(6.283 * (fx * x + fy * y) / side + phase) + 0.3 * rng_normal(&r));
        }
}

/* ---- the run ------------------------------------------------------------- */

typedef struct figures {
    FILE *json[2]; /* stdout's JSON line and --json's file (or NULL) */
    int n_keys;
} figures;

static void put(figures *f, const char *key, double value)
{
    for (int i = 0; i < 2; i++)
        if (f->json[i])
            fprintf(f->json[i], "%s\"%s\": %.6g", f->n_keys ? ", " : "{", key, value);
    f->n_keys++;
}

static void put_text(figures *f, const char *key, const char *value)
{
    for (int i = 0; i < 2; i++)
        if (f->json[i])
            fprintf(f->json[i], "%s\"%s\": \"%s\"", f->n_keys ? ", " : "{", key, value);
    f->n_keys++;
}

/* Whether section `name` is in the comma-separated list `only` (NULL: all). */
static int wanted(const char *only, const char *name)
{
    const size_t len = strlen(name);
    for (const char *at = only; at; at = strchr(at, ',') ? strchr(at, ',') + 1 : NULL)
        if (strncmp(at, name, len) == 0 && (at[len] == ',' || at[len] == '\0'))
            return 1;
    return !only;
}

static void usage(void)
{
    fprintf(stderr, "usage: bench_engine [--checkpoint FILE] [--config FILE] [--threads N] [--seconds S]\n"
                    "                    [--json FILE] [--images-out FILE] [--only e2e,latency,encoder,decoder]\n"
                    "                    [--precision fp32|bf16|bf16-all]  (as radcap's option)\n");
}

static int fail(const char *what, const rc_error *err)
{
    fprintf(stderr, "bench_engine: %s: %s\n", what, err->msg);
    return 1;
}

int main(int argc, char **argv)
{
    const char *checkpoint = NULL, *config = NULL, *json_path = NULL, *images_out = NULL, *only = NULL;
    double seconds = 1.5;
    int threads = 0;
    model_precision precision = MODEL_FP32;
    rc_error err = {{0}};
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i], *val = i + 1 < argc ? argv[i + 1] : NULL;
        if (!val) {
            usage();
            return 2;
        }
        if (strcmp(arg, "--checkpoint") == 0)
            checkpoint = val;
        else if (strcmp(arg, "--config") == 0)
            config = val;
        else if (strcmp(arg, "--json") == 0)
            json_path = val;
        else if (strcmp(arg, "--images-out") == 0)
            images_out = val;
        else if (strcmp(arg, "--seconds") == 0)
            seconds = atof(val);
        else if (strcmp(arg, "--threads") == 0)
            threads = atoi(val);
        else if (strcmp(arg, "--only") == 0)
            only = val;
        else if (strcmp(arg, "--precision") == 0) {
            if (model_precision_parse(val, &precision, &err) < 0)
                return fail("--precision", &err);
        }
        else {
            usage();
            return 2;
        }
        i++;
    }
    gemm_init();
    if (threads > 0)
        omp_set_num_threads(threads);
    threads = omp_get_max_threads();
    cfg_model cfg;
    cfg_default(&cfg);
    if (config && cfg_load(&cfg, config, &err) < 0)
        return fail("configuration", &err);

    /* the model: from the file (load timed), or drawn here */
    const model_options model_opts = model_precision_options(precision);
    captioner m;
    double load_s = -1;
    random_model rm = {0};
    if (checkpoint) {
        for (int i = 0; i < 3; i++) {
            if (i)
                model_free(&m);
            const double t0 = bench_now();
            if (model_load_with(&m, &cfg, checkpoint, &model_opts, &err) < 0)
                return fail("loading the model", &err);
            const double t = bench_now() - t0;
            load_s = load_s < 0 || t < load_s ? t : load_s;
        }
    } else {
        ckpt_file view;
        if (random_model_build(&rm, &cfg, 1, &err) < 0 ||
            ckpt_view(&view, rm.tensors, rm.n_tensors, "random", &err) < 0 ||
            model_build_with(&m, &cfg, &view, &model_opts, &err) < 0)
            return fail("drawing a random model", &err);
        reset_peak_rss(); /* the drawing's peak is not the engine's */
        printf("(no --checkpoint: the random model's tensors stay in memory and count in RSS)\n");
    }
    const double rss_loaded = status_mb("VmRSS:");

    const int S = cfg.image_size, L = cfg_memory_tokens(&cfg), dim = cfg.embed_dim, V = cfg.vocab_size;
    const size_t image_floats = (size_t)3 * S * S;
    float *images = malloc(sizeof(float) * image_floats * E2E_BATCH);
    float *memory = malloc(sizeof(float) * (size_t)MAX_BATCH * L * dim);
    float *scratch = malloc(sizeof(float) * (size_t)MAX_BATCH * L * 2 * dim);
    float *logits = malloc(sizeof(float) * (size_t)MAX_BATCH * V);
    int *ids = malloc(sizeof(int) * (size_t)MAX_BATCH * cfg.max_len), *lens = malloc(sizeof(int) * MAX_BATCH);
    int *forced = malloc(sizeof(int) * FORCED_TOKENS * MAX_BATCH);
    if (!images || !memory || !scratch || !logits || !ids || !lens || !forced) {
        fprintf(stderr, "bench_engine: out of memory\n");
        return 1;
    }
    draw_images(E2E_BATCH, S, 2026, images);
    if (images_out) {
        FILE *f = fopen(images_out, "wb");
        if (!f || fwrite(images, sizeof(float), image_floats * E2E_BATCH, f) != image_floats * E2E_BATCH) {
            fprintf(stderr, "bench_engine: cannot write %s\n", images_out);
            return 1;
        }
        fclose(f);
    }
    rng_state r;
    rng_seed(&r, 99);
    for (int i = 0; i < FORCED_TOKENS * MAX_BATCH; i++)
        forced[i] = 1000 + (int)(rng_next(&r) % (uint64_t)(V - 1000));

    const double peak = fma_peak(threads);
    printf("radcap engine, full model, %d thread(s), gemm backend %s, precision %s; FMA peak %.1f GFLOP/s "
           "(%.1f per thread)\n",
           threads, gemm_backend_name(), model_precision_name(precision), peak, peak / threads);
    printf("figures: median of runs of ~%.1f s in all (best run in brackets)\n\n", seconds);
    const double flop_image40 = caption_flops(&m, FORCED_TOKENS);
    printf("model: %.2f GFLOP ResNet + %.2f GFLOP vis_proj/graph/cross keys-values + %.1f MFLOP per token "
           "(at position 20) = %.2f GFLOP for a %d-token caption\n\n",
           resnet_flops(&m) / 1e9, (memory_flops(&m) + cross_kv_flops(&m)) / 1e9, token_flops(&m, 20) / 1e6,
           flop_image40 / 1e9, FORCED_TOKENS);

    enc_workspace encoder;
    if (enc_workspace_build(&encoder, &m, MAX_BATCH, &err) < 0) {
        fprintf(stderr, "bench_engine: %s\n", err.msg);
        return 1;
    }
    bench_ctx b = {.m = &m,
                   .images = images,
                   .encoder = &encoder,
                   .memory = memory,
                   .scratch = scratch,
                   .logits = logits,
                   .ids = ids,
                   .lens = lens,
                   .forced = forced};
    figures f = {{stdout, json_path ? fopen(json_path, "w") : NULL}, 0};
    if (json_path && !f.json[1]) {
        fprintf(stderr, "bench_engine: cannot write %s\n", json_path);
        return 1;
    }
    /* The JSON line goes out last, in one piece, so table lines come first:
     * gather it in memory. */
    char *json_text = NULL;
    size_t json_len = 0;
    f.json[0] = open_memstream(&json_text, &json_len);
    put_text(&f, "backend", gemm_backend_name());
    put_text(&f, "precision", model_precision_name(precision));
    put(&f, "threads", threads);
    put(&f, "peak_gflops", peak);
    put(&f, "peak_gflops_per_thread", peak / threads);
    put(&f, "load_s", load_s);
    put(&f, "rss_after_load_mb", rss_loaded);
    timing t;

    /* end to end at batch 32 first: the peak RSS is that of a batch-32 job */
    b.batch = E2E_BATCH;
    b.natural = 0;
    if (wanted(only, "e2e")) {
        if (time_runs(run_caption, &b, seconds, &t) < 0)
            return fail("end to end", &b.err);
        printf("%-44s %9.2f images/s  [%.2f]  %.1f GFLOP/s = %.0f%% of peak\n", "end to end, batch 32, 40 tokens",
               E2E_BATCH / t.median, E2E_BATCH / t.best, flop_image40 * E2E_BATCH / t.median / 1e9,
               100 * flop_image40 * E2E_BATCH / t.median / 1e9 / peak);
        put(&f, "e2e_img_per_s", E2E_BATCH / t.median);
        put(&f, "e2e_img_per_s_best", E2E_BATCH / t.best);
        put(&f, "e2e_gflops", flop_image40 * E2E_BATCH / t.median / 1e9);
        put(&f, "e2e_pct_peak", 100 * flop_image40 * E2E_BATCH / t.median / 1e9 / peak);
        b.natural = 1;
        if (time_runs(run_caption, &b, seconds, &t) < 0)
            return fail("end to end", &b.err);
        printf("%-44s %9.2f images/s  [%.2f]  %.1f tokens per caption\n", "end to end, batch 32, natural stopping",
               E2E_BATCH / t.median, E2E_BATCH / t.best, (double)b.tokens / E2E_BATCH);
        put(&f, "e2e_natural_img_per_s", E2E_BATCH / t.median);
        put(&f, "e2e_natural_img_per_s_best", E2E_BATCH / t.best);
        put(&f, "e2e_natural_tokens_per_image", (double)b.tokens / E2E_BATCH);
        const double peak_rss = status_mb("VmHWM:");
        printf("%-44s %9.0f MB  (after load %.0f MB)\n", "peak RSS, batch 32", peak_rss, rss_loaded);
        put(&f, "peak_rss_mb", peak_rss);
    }

    b.batch = 1;
    b.natural = 0;
    if (wanted(only, "latency")) {
        if (time_runs(run_caption, &b, seconds, &t) < 0)
            return fail("latency", &b.err);
        printf("%-44s %9.3f s  [%.3f]\n", "latency, 1 image, 40 tokens", t.median, t.best);
        put(&f, "latency_s_b1", t.median);
        put(&f, "latency_s_b1_best", t.best);
    }

    static const int enc_batches[] = {1, 8, 32};
    for (int i = 0; i < 3 && wanted(only, "encoder"); i++) {
        b.batch = enc_batches[i];
        if (time_runs(run_encoder, &b, seconds, &t) < 0)
            return fail("encoder", &b.err);
        const double gflops = (resnet_flops(&m) + memory_flops(&m)) * b.batch / t.median / 1e9;
        char label[64], key[64];
        snprintf(label, sizeof label, "encoder, batch %d", b.batch);
        printf("%-44s %9.2f images/s  [%.2f]  %.1f GFLOP/s = %.0f%% of peak\n", label, b.batch / t.median,
               b.batch / t.best, gflops, 100 * gflops / peak);
        snprintf(key, sizeof key, "encoder_img_per_s_b%d", b.batch);
        put(&f, key, b.batch / t.median);
        snprintf(key, sizeof key, "encoder_img_per_s_b%d_best", b.batch);
        put(&f, key, b.batch / t.best);
        snprintf(key, sizeof key, "encoder_gflops_b%d", b.batch);
        put(&f, key, gflops);
    }

    /* decoder: memory of the 32 images, repeated up to 128 sequences */
    if (wanted(only, "decoder")) {
        b.batch = E2E_BATCH;
        if (run_encoder(&b) < 0)
            return fail("encoder", &b.err);
        for (int i = 1; i < MAX_BATCH / E2E_BATCH; i++)
            memcpy(memory + (size_t)i * E2E_BATCH * L * dim, memory, sizeof(float) * E2E_BATCH * L * dim);
        dec_cache cache;
        if (dec_cache_build(&cache, &m, MAX_BATCH, FORCED_TOKENS, &err) < 0)
            return fail("decoder cache", &err);
        int slots[MAX_BATCH];
        for (int i = 0; i < MAX_BATCH; i++)
            slots[i] = i;
        dec_set_memory(&m, &cache, MAX_BATCH, slots, memory, scratch);
        b.cache = &cache;
        double step_flops = 0;
        for (int p = 0; p < FORCED_TOKENS; p++)
            step_flops += token_flops(&m, p);
        static const int dec_batches[] = {1, 32, 128};
        for (int i = 0; i < 3; i++) {
            b.batch = dec_batches[i];
            if (time_runs(run_decoder, &b, seconds, &t) < 0)
                return fail("decoder", &b.err);
            const double tokens = (double)b.batch * FORCED_TOKENS, gflops = step_flops * b.batch / t.median / 1e9;
            char label[64], key[64];
            snprintf(label, sizeof label, "decoder, batch %d, 40 forced tokens", b.batch);
            printf("%-44s %9.0f tokens/s  [%.0f]  %.1f GFLOP/s = %.0f%% of peak\n", label, tokens / t.median,
                   tokens / t.best, gflops, 100 * gflops / peak);
            snprintf(key, sizeof key, "decoder_tok_per_s_b%d", b.batch);
            put(&f, key, tokens / t.median);
            snprintf(key, sizeof key, "decoder_tok_per_s_b%d_best", b.batch);
            put(&f, key, tokens / t.best);
            snprintf(key, sizeof key, "decoder_gflops_b%d", b.batch);
            put(&f, key, gflops);
            if (b.batch > 1) { /* where a step's time goes: one more run, timed part by part */
                dec_profile profile = {0};
                cache.profile = &profile;
                run_decoder(&b);
                cache.profile = NULL;
                double total = 0;
                for (int part = 0; part < DEC_N_PARTS; part++)
                    total += profile.seconds[part];
                printf("  a step at batch %d, %.1f ms:", b.batch, total / FORCED_TOKENS * 1e3);
                for (int part = 0; part < DEC_N_PARTS; part++) {
                    printf(" %s %.0f%%", dec_part_name(part), 100 * profile.seconds[part] / total);
                    snprintf(key, sizeof key, "decoder_b%d_%s_ms", b.batch, dec_part_name(part));
                    put(&f, key, profile.seconds[part] / FORCED_TOKENS * 1e3);
                }
                printf("\n");
            }
        }
        dec_cache_free(&cache);
    }
    put(&f, "peak_rss_all_mb", status_mb("VmHWM:"));
    if (load_s >= 0)
        printf("%-44s %9.3f s  (best of 3, file in the page cache)\n", "model load", load_s);
    for (int i = 0; i < 2; i++)
        if (f.json[i])
            fputs("}\n", f.json[i]);
    fclose(f.json[0]);
    printf("\n%s", json_text);
    free(json_text);
    if (f.json[1])
        fclose(f.json[1]);

    free(images), free(memory), free(scratch), free(logits), free(ids), free(lens), free(forced);
    enc_workspace_free(&encoder);
    model_free(&m);
    random_model_free(&rm);
    return 0;
}
