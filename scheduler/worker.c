/* worker.c: batches of image files to captions, with the next batch
 * preprocessed while the current one is computed. */
#include "scheduler/worker.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine/encoder.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

/* One batch on its way through the worker: preprocessed, then computed. */
typedef struct stage {
    const sched_task *tasks; // (n) borrowed from the chunk
    int n;
    float *pixels;           // (batch, 3, size, size) model inputs; packed before encoding
    int *ok;                 // (batch) 1 when the image was decoded
    rc_error *errors;        // (batch) why it was not
    double *decode_seconds;  // (batch)
    int64_t *file_size;      // (batch) -1 unknown
    int64_t *file_mtime_ns;  // (batch) -1 unknown
} stage;

struct sched_worker {
    sched_worker_options opt;
    captioner model;
    int model_loaded;
    tok_vocab *vocab;
    size_t image_floats;     // 3 * size * size
    stage stages[2];         // the batch being computed and the one being preprocessed
    float *memory;           // (batch, memory_tokens, embed_dim) encoder output
    int *ids;                // (batch, max_len) generated tokens
    int *lens;               // (batch)
    float *token_probs;      // (batch, max_len) each token's probability, when decoding.token_scores
    double *mean_logprob;    // (batch) each caption's confidence
    double *min_token_prob;  // (batch)
    int *order;              // (batch) task index of each packed image
    sched_result *results;   // (batch) results of the batch being delivered
};

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void sched_image_options(const cfg_model *cfg, long long max_pixels, int exif_orientation, img_options *out)
{
    img_options_default(out);
    out->size = cfg->image_size;
    memcpy(out->mean, cfg->image_mean, sizeof out->mean);
    memcpy(out->std, cfg->image_std, sizeof out->std);
    out->max_pixels = max_pixels;
    out->apply_exif_orientation = exif_orientation;
}

void sched_chunk_free(sched_chunk *chunk)
{
    for (int i = 0; chunk->tasks && i < chunk->n; i++)
        free(chunk->tasks[i].path);
    free(chunk->tasks);
    chunk->tasks = NULL;
    chunk->n = 0;
}

void sched_worker_close(sched_worker *w)
{
    if (!w)
        return;
    if (w->model_loaded)
        model_free(&w->model);
    tok_vocab_free(w->vocab);
    for (int s = 0; s < 2; s++) {
        free(w->stages[s].pixels);
        free(w->stages[s].ok);
        free(w->stages[s].errors);
        free(w->stages[s].decode_seconds);
        free(w->stages[s].file_size);
        free(w->stages[s].file_mtime_ns);
    }
    free(w->memory);
    free(w->ids);
    free(w->lens);
    free(w->token_probs);
    free(w->mean_logprob);
    free(w->min_token_prob);
    free(w->order);
    free(w->results);
    free(w);
}

sched_worker *sched_worker_open(const sched_worker_options *options, rc_error *err)
{
    if (options->batch < 1)
        return rc_fail(err, "a worker needs a batch of at least 1 image"), NULL;
    if (gen_decoding_check(&options->decoding, err) < 0)
        return NULL;
    sched_worker *w = calloc(1, sizeof *w);
    if (!w)
        return rc_fail(err, "out of memory starting a worker"), NULL;
    w->opt = *options;
    const cfg_model *cfg = &w->opt.cfg;
    if (model_load(&w->model, cfg, options->checkpoint, err) < 0) {
        sched_worker_close(w);
        return NULL;
    }
    w->model_loaded = 1;
    if (!(w->vocab = tok_vocab_load(options->vocab, err))) {
        sched_worker_close(w);
        return NULL;
    }
    if (tok_vocab_size(w->vocab) < cfg->vocab_size) {
        rc_fail(err, "%s has %d tokens but the model predicts %d classes", options->vocab,
                tok_vocab_size(w->vocab), cfg->vocab_size);
        sched_worker_close(w);
        return NULL;
    }
    const size_t batch = (size_t)options->batch;
    w->image_floats = (size_t)3 * cfg->image_size * cfg->image_size;
    int failed = 0;
    for (int s = 0; s < 2; s++) {
        stage *st = &w->stages[s];
        failed |= !(st->pixels = malloc(sizeof(float) * w->image_floats * batch));
        failed |= !(st->ok = calloc(batch, sizeof *st->ok));
        failed |= !(st->errors = calloc(batch, sizeof *st->errors));
        failed |= !(st->decode_seconds = calloc(batch, sizeof *st->decode_seconds));
        failed |= !(st->file_size = calloc(batch, sizeof *st->file_size));
        failed |= !(st->file_mtime_ns = calloc(batch, sizeof *st->file_mtime_ns));
    }
    failed |= !(w->memory = malloc(sizeof(float) * batch * (size_t)cfg_memory_tokens(cfg) * cfg->embed_dim));
    failed |= !(w->ids = malloc(sizeof(int) * batch * (size_t)cfg->max_len));
    failed |= !(w->lens = malloc(sizeof(int) * batch));
    if (options->decoding.token_scores)
        failed |= !(w->token_probs = malloc(sizeof(float) * batch * (size_t)cfg->max_len));
    failed |= !(w->mean_logprob = malloc(sizeof(double) * batch));
    failed |= !(w->min_token_prob = malloc(sizeof(double) * batch));
    failed |= !(w->order = malloc(sizeof(int) * batch));
    failed |= !(w->results = calloc(batch, sizeof *w->results));
    if (failed) {
        rc_fail(err, "out of memory for the buffers of a batch of %d images", options->batch);
        sched_worker_close(w);
        return NULL;
    }
    return w;
}

/* Decodes and preprocesses image i of the stage. */
static void prepare_image(const sched_worker *w, stage *st, int i)
{
    double t0 = now_seconds();
    rc_clear(&st->errors[i]);
    /* size and time for incremental runs, read where the file is opened anyway */
    struct stat info;
    int known = stat(st->tasks[i].path, &info) == 0;
    st->file_size[i] = known ? (int64_t)info.st_size : -1;
    st->file_mtime_ns[i] = known ? (int64_t)info.st_mtim.tv_sec * 1000000000 + info.st_mtim.tv_nsec : -1;
    st->ok[i] = img_preprocess_file(st->tasks[i].path, &w->opt.img, st->pixels + (size_t)i * w->image_floats, NULL,
                                    &st->errors[i]) == 0;
    st->decode_seconds[i] = now_seconds() - t0;
}

/* Preprocesses the stage's images with all OpenMP threads. */
static void stage_prepare(const sched_worker *w, stage *st)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < st->n; i++)
        prepare_image(w, st, i);
}

/* The helper thread: the same, one image after another, with no OpenMP
 * construct (the engine's OpenMP threads have the cores meanwhile). */
static void *prepare_thread(void *arg)
{
    void **args = arg;
    stage *st = args[1];
    for (int i = 0; i < st->n; i++)
        prepare_image(args[0], st, i);
    return NULL;
}

/* A per-image failure (err's text, or a fallback if it is empty). */
static void fail_result(sched_result *r, const char *message)
{
    r->ok = 0;
    r->error = strdup(message && *message ? message : "failed for an unknown reason");
}

/* Encodes and decodes the stage's decoded images; fills w->results[0..n). */
static void stage_compute(sched_worker *w, stage *st)
{
    const size_t max_len = (size_t)w->opt.cfg.max_len;
    for (int i = 0; i < st->n; i++) {
        sched_result *r = &w->results[i];
        memset(r, 0, sizeof *r);
        r->index = st->tasks[i].index;
        r->rank = w->opt.rank;
        r->decode_seconds = st->decode_seconds[i];
        r->file_size = st->file_size[i];
        r->file_mtime_ns = st->file_mtime_ns[i];
        r->mean_logprob = r->min_token_prob = NAN;
        if (!st->ok[i])
            fail_result(r, st->errors[i].msg);
    }
    const int n_ok = img_pack_batch(st->pixels, w->image_floats, st->ok, st->n, w->order);
    if (n_ok == 0)
        return;
    rc_error err = {{0}};
    double t0 = now_seconds();
    const enc_outputs out = {.memory = w->memory};
    const gen_output captions = {.ids = w->ids,
                                 .lens = w->lens,
                                 .token_probs = w->token_probs,
                                 .mean_logprob = w->mean_logprob,
                                 .min_token_prob = w->min_token_prob};
    int model_failed = enc_forward(&w->model, n_ok, st->pixels, &out, &err) < 0 ||
                       gen_decode(&w->model, n_ok, w->memory, &w->opt.decoding, NULL, &captions, &err) < 0;
    const double per_image = (now_seconds() - t0) / n_ok;
    for (int j = 0; j < n_ok; j++) {
        sched_result *r = &w->results[w->order[j]];
        r->infer_seconds = per_image;
        if (model_failed) {
            fail_result(r, err.msg);
            continue;
        }
        const int *seq = w->ids + (size_t)j * max_len;
        rc_error decode_err = {{0}};
        char *text = tok_decode(w->vocab, seq, (size_t)w->lens[j], 1, NULL, &decode_err);
        const size_t n_ids = w->lens[j] ? (size_t)w->lens[j] : 1;
        int *ids = malloc(sizeof(int) * n_ids);
        float *probs = w->token_probs ? malloc(sizeof(float) * n_ids) : NULL;
        if (!text || !ids || (w->token_probs && !probs)) {
            free(text);
            free(ids);
            free(probs);
            fail_result(r, text ? "out of memory keeping a caption's token ids" : decode_err.msg);
            continue;
        }
        memcpy(ids, seq, sizeof(int) * (size_t)w->lens[j]);
        if (probs)
            memcpy(probs, w->token_probs + (size_t)j * max_len, sizeof(float) * (size_t)w->lens[j]);
        r->ok = 1;
        r->caption = text;
        r->ids = ids;
        r->n_ids = w->lens[j];
        r->token_probs = probs;
        r->mean_logprob = w->mean_logprob[j];
        r->min_token_prob = w->min_token_prob[j];
    }
}

static int check_chunk(const sched_worker *w, const sched_chunk *chunk, rc_error *err)
{
    if (chunk->n < 1 || chunk->n > w->opt.batch)
        return rc_fail(err, "received a chunk of %d images; this worker takes 1 to %d (--batch)", chunk->n,
                       w->opt.batch);
    return 0;
}

static void stage_load(stage *st, const sched_chunk *chunk)
{
    st->tasks = chunk->tasks;
    st->n = chunk->n;
}

int sched_worker_loop(sched_worker *w, const sched_feed *feed, rc_error *err)
{
    sched_chunk cur = {0}, next = {0};
    sched_feed_status status = feed->next(feed->ctx, 1, &cur, err);
    if (status != SCHED_FEED_CHUNK)
        return status == SCHED_FEED_ERROR ? -1 : 0;
    int failed = check_chunk(w, &cur, err) < 0, s = 0;
    if (!failed) {
        stage_load(&w->stages[s], &cur);
        stage_prepare(w, &w->stages[s]);
    }
    while (!failed) {
        status = feed->next(feed->ctx, 0, &next, err);
        if (status == SCHED_FEED_ERROR || status == SCHED_FEED_CANCEL) {
            failed = status == SCHED_FEED_ERROR;
            break;
        }
        const int have_next = status == SCHED_FEED_CHUNK;
        if (have_next && check_chunk(w, &next, err) < 0) {
            failed = 1;
            break;
        }
        stage *later = &w->stages[1 - s];
        pthread_t helper;
        void *args[2] = {w, later};
        int helping = 0;
        if (have_next) {
            stage_load(later, &next);
            helping = w->opt.prefetch && pthread_create(&helper, NULL, prepare_thread, args) == 0;
        }
        stage_compute(w, &w->stages[s]);
        failed = feed->deliver(feed->ctx, w->results, cur.n, err) < 0;
        for (int i = 0; i < cur.n; i++)
            sched_result_clear(&w->results[i]);
        if (helping)
            pthread_join(helper, NULL);
        sched_chunk_free(&cur);
        if (failed)
            break;
        if (!have_next) {
            status = feed->next(feed->ctx, 1, &next, err);
            if (status != SCHED_FEED_CHUNK) {
                failed = status == SCHED_FEED_ERROR;
                break;
            }
            if (check_chunk(w, &next, err) < 0) {
                failed = 1;
                break;
            }
            stage_load(later, &next);
        }
        if (!helping)
            stage_prepare(w, later);
        cur = next;
        next = (sched_chunk){0};
        s = 1 - s;
    }
    sched_chunk_free(&cur);
    sched_chunk_free(&next);
    return failed ? -1 : 0;
}
