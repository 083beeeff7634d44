/* worker.c: chunks of image files to captions.
 *
 * A chunk goes through two stages (two staging areas, so that one chunk is
 * prepared while another waits or is computed): loaded (its tasks are
 * here), prepared (its images read and preprocessed, by the helper thread
 * when the engine has work meanwhile, else with all OpenMP threads), then
 * admitted to the engine. With greedy decoding the engine is a continuous
 * batch (gen_session of 2 x batch sequences): a chunk is encoded and its
 * images join the session as soon as there are slots for all of them, the
 * session steps every sequence one token at a time, and a chunk's results
 * are delivered when its last caption is finished ("in flight" until
 * then). So the decoder keeps decoding about batch to 2 x batch sequences
 * while long captions finish. Beam search computes a chunk at once. */
#include "scheduler/worker.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#include "engine/encoder.h"
#include "engine/generate.h"
#include "engine/model.h"
#include "engine/tokenizer.h"

typedef enum stage_state {
    STAGE_EMPTY,     /* no chunk */
    STAGE_LOADED,    /* a chunk not yet prepared */
    STAGE_PREPARING, /* the helper thread is preparing it */
    STAGE_READY,     /* prepared: waiting to be admitted to the engine */
} stage_state;

/* One chunk on its way to the engine. */
typedef struct stage {
    stage_state state;
    long long serial;        // arrival number of the chunk: chunks are admitted oldest first
    sched_chunk chunk;       // owned while not empty
    const sched_worker *w;   // for the helper thread
    pthread_t helper;        // while STAGE_PREPARING
    atomic_int prepared;     // the helper has finished (it is joined then)
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
    stage stages[2];
    enc_workspace encoder;   // the encoder's scratch, kept from chunk to chunk
    float *memory;           // (batch, memory_tokens, embed_dim) encoder output
    int *order;              // (batch) task index of each packed image
    /* beam search's whole-chunk outputs */
    int *ids;                // (batch, max_len) generated tokens
    int *lens;               // (batch)
    float *token_probs;      // (batch, max_len) each token's probability, when decoding.token_scores
    double *mean_logprob;    // (batch) each caption's confidence
    double *min_token_prob;  // (batch)
    sched_result *results;   // (batch) results of the chunk being delivered
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
    enc_workspace_free(&w->encoder);
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
    const model_options model_opts = model_precision_options(options->precision);
    if (model_load_with(&w->model, cfg, options->checkpoint, &model_opts, err) < 0) {
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
    if (enc_workspace_build(&w->encoder, &w->model, options->batch, err) < 0) {
        sched_worker_close(w);
        return NULL;
    }
    return w;
}

/* Decodes and preprocesses image i of the stage. */
static void prepare_image(const sched_worker *w, stage *st, int i)
{
    double t0 = now_seconds();
    const char *path = st->chunk.tasks[i].path;
    rc_clear(&st->errors[i]);
    /* size and time for incremental runs, read where the file is opened anyway */
    struct stat info;
    int known = stat(path, &info) == 0;
    st->file_size[i] = known ? (int64_t)info.st_size : -1;
    st->file_mtime_ns[i] = known ? (int64_t)info.st_mtim.tv_sec * 1000000000 + info.st_mtim.tv_nsec : -1;
    st->ok[i] = img_preprocess_file(path, &w->opt.img, st->pixels + (size_t)i * w->image_floats, NULL,
                                    &st->errors[i]) == 0;
    st->decode_seconds[i] = now_seconds() - t0;
}

/* Prepares the stage's images with all OpenMP threads. */
static void stage_prepare(const sched_worker *w, stage *st)
{
#pragma omp parallel for schedule(dynamic, 1)
    for (int i = 0; i < st->chunk.n; i++)
        prepare_image(w, st, i);
    st->state = STAGE_READY;
}

/* The helper thread: the same, one image after another, with no OpenMP
 * construct (the engine's OpenMP threads have the cores meanwhile). */
static void *prepare_thread(void *arg)
{
    stage *st = arg;
    for (int i = 0; i < st->chunk.n; i++)
        prepare_image(st->w, st, i);
    atomic_store(&st->prepared, 1);
    return NULL;
}

/* Prepares the stage in the helper thread; with all threads at once if
 * the thread cannot be started. */
static void stage_prepare_behind(const sched_worker *w, stage *st)
{
    st->w = w;
    atomic_store(&st->prepared, 0);
    if (pthread_create(&st->helper, NULL, prepare_thread, st) == 0)
        st->state = STAGE_PREPARING;
    else
        stage_prepare(w, st);
}

/* Waits for the helper to finish the stage. */
static void stage_join(stage *st)
{
    pthread_join(st->helper, NULL);
    st->state = STAGE_READY;
}

/* Drops the stage's chunk (after its helper, if any, has finished). */
static void stage_drop(stage *st)
{
    if (st->state == STAGE_PREPARING)
        pthread_join(st->helper, NULL);
    sched_chunk_free(&st->chunk);
    st->state = STAGE_EMPTY;
}

/* The stage in the given state that holds the oldest chunk, or NULL. */
static stage *oldest_stage(sched_worker *w, stage_state state)
{
    stage *found = NULL;
    for (int s = 0; s < 2; s++)
        if (w->stages[s].state == state && (!found || w->stages[s].serial < found->serial))
            found = &w->stages[s];
    return found;
}

/* A per-image failure (err's text, or a fallback if it is empty). */
static void fail_result(sched_result *r, const char *message)
{
    r->ok = 0;
    r->error = strdup(message && *message ? message : "failed for an unknown reason");
}

/* Starts the results of the stage's chunk: what is known before the model
 * runs, and the failures of images that could not be decoded. */
static void start_results(const sched_worker *w, const stage *st, sched_result *results)
{
    for (int i = 0; i < st->chunk.n; i++) {
        sched_result *r = &results[i];
        memset(r, 0, sizeof *r);
        r->index = st->chunk.tasks[i].index;
        r->rank = w->opt.rank;
        r->decode_seconds = st->decode_seconds[i];
        r->file_size = st->file_size[i];
        r->file_mtime_ns = st->file_mtime_ns[i];
        r->mean_logprob = r->min_token_prob = NAN;
        if (!st->ok[i])
            fail_result(r, st->errors[i].msg);
    }
}

/* Fills a result with a caption: its text, token ids, probabilities (when
 * asked for: probs not NULL) and confidence. */
static void caption_result(const sched_worker *w, sched_result *r, const int *seq, int len, const float *probs,
                           double mean_logprob, double min_token_prob)
{
    rc_error decode_err = {{0}};
    char *text = tok_decode(w->vocab, seq, (size_t)len, 1, NULL, &decode_err);
    const size_t n_ids = len ? (size_t)len : 1;
    int *ids = malloc(sizeof(int) * n_ids);
    float *kept_probs = probs ? malloc(sizeof(float) * n_ids) : NULL;
    if (!text || !ids || (probs && !kept_probs)) {
        free(text);
        free(ids);
        free(kept_probs);
        fail_result(r, text ? "out of memory keeping a caption's token ids" : decode_err.msg);
        return;
    }
    memcpy(ids, seq, sizeof(int) * (size_t)len);
    if (kept_probs)
        memcpy(kept_probs, probs, sizeof(float) * (size_t)len);
    r->ok = 1;
    r->caption = text;
    r->ids = ids;
    r->n_ids = len;
    r->token_probs = kept_probs;
    r->mean_logprob = mean_logprob;
    r->min_token_prob = min_token_prob;
}

/* Packs the stage's decoded images (w->order) and encodes them into
 * w->memory (cannot fail: the encoder's workspace is the worker's);
 * returns their number. */
static int stage_encode(sched_worker *w, stage *st)
{
    const int n_ok = img_pack_batch(st->pixels, w->image_floats, st->ok, st->chunk.n, w->order);
    if (n_ok > 0)
        enc_forward_with(&w->model, &w->encoder, n_ok, st->pixels, &(enc_outputs){.memory = w->memory});
    return n_ok;
}

static int check_chunk(const sched_worker *w, const sched_chunk *chunk, rc_error *err)
{
    if (chunk->n < 1 || chunk->n > w->opt.batch)
        return rc_fail(err, "received a chunk of %d images; this worker takes 1 to %d (--batch)", chunk->n,
                       w->opt.batch);
    return 0;
}

/* Hands results[0..n) to the feed and releases them. */
static int deliver(const sched_feed *feed, sched_result *results, int n, rc_error *err)
{
    const int status = feed->deliver(feed->ctx, results, n, err);
    for (int i = 0; i < n; i++)
        sched_result_clear(&results[i]);
    return status;
}

/* ---- the loop ------------------------------------------------------------ */

/* A chunk whose images are being decoded in the session. */
typedef struct flight {
    sched_chunk chunk;       // owned; no tasks: the flight is free
    sched_result *results;   // (chunk.n)
    int pending;             // captions not finished yet
    double joined;           // the loop's decode_clock when its images joined the session
} flight;

typedef struct loop {
    sched_worker *w;
    const sched_feed *feed;
    gen_session *session;    // greedy decoding; NULL for beam search (a chunk at once)
    flight *flights;         // (n_flights) chunks in flight: each has an image in the session (or
                             //   none decoded, and is delivered at once)
    int n_flights;           // the session's slots
    gen_caption *finished;   // (n_flights) captions taken after a step
    int *tags;               // (batch) the tags of a chunk's images joining the session
    double decode_clock;     // the sum over steps of step seconds / sequences stepped: an image's share
                             //   of decoding is the clock's advance while it is in the session
    long long serial;        // chunks received so far
    int feed_open;           // the feed has neither ended nor cancelled
} loop;

static void loop_release(loop *lp)
{
    for (int f = 0; f < lp->n_flights; f++) {
        flight *fl = &lp->flights[f];
        for (int i = 0; fl->results && i < fl->chunk.n; i++)
            sched_result_clear(&fl->results[i]);
        free(fl->results);
        sched_chunk_free(&fl->chunk);
    }
    free(lp->flights);
    free(lp->finished);
    free(lp->tags);
    gen_session_free(lp->session);
    for (int s = 0; s < 2; s++)
        stage_drop(&lp->w->stages[s]);
}

static int loop_start(loop *lp, sched_worker *w, const sched_feed *feed, rc_error *err)
{
    memset(lp, 0, sizeof *lp);
    lp->w = w;
    lp->feed = feed;
    lp->feed_open = 1;
    if (w->opt.decoding.beam > 1)
        return 0;
    /* 2 x batch: a new chunk joins while the previous one's long captions finish */
    const int slots = 2 * w->opt.batch;
    const int confidence = 1;
    if (!(lp->session = gen_session_new(&w->model, slots, &w->opt.decoding, NULL, confidence, err)))
        return -1;
    lp->n_flights = slots;
    lp->flights = calloc((size_t)slots, sizeof *lp->flights);
    lp->finished = malloc(sizeof *lp->finished * (size_t)slots);
    lp->tags = malloc(sizeof *lp->tags * (size_t)w->opt.batch);
    if (!lp->flights || !lp->finished || !lp->tags)
        return rc_fail(err, "out of memory for %d decoding slots", slots);
    return 0;
}

static int session_active(const loop *lp)
{
    return lp->session ? gen_session_active(lp->session) : 0;
}

/* A flight not in use, or NULL. */
static flight *free_flight(const loop *lp)
{
    for (int f = 0; f < lp->n_flights; f++)
        if (!lp->flights[f].chunk.tasks)
            return &lp->flights[f];
    return NULL;
}

/* Can the stage's chunk be admitted now? It needs slots for its decoded
 * images and a flight (even with none decoded: its results are delivered
 * from there). */
static int has_room(const loop *lp, const stage *st)
{
    if (!lp->session)
        return 1;
    int n_ok = 0;
    for (int i = 0; i < st->chunk.n; i++)
        n_ok += st->ok[i];
    return n_ok <= gen_session_free_slots(lp->session) && free_flight(lp);
}

/* Beam search: encodes and decodes the whole chunk and delivers it. */
static int admit_whole(loop *lp, stage *st, rc_error *err)
{
    sched_worker *w = lp->w;
    const size_t max_len = (size_t)w->opt.cfg.max_len;
    start_results(w, st, w->results);
    rc_error model_err = {{0}};
    const double t0 = now_seconds();
    const gen_output captions = {.ids = w->ids,
                                 .lens = w->lens,
                                 .token_probs = w->token_probs,
                                 .mean_logprob = w->mean_logprob,
                                 .min_token_prob = w->min_token_prob};
    const int n_ok = stage_encode(w, st);
    const int model_failed =
        gen_decode(&w->model, n_ok, w->memory, &w->opt.decoding, NULL, &captions, &model_err) < 0;
    const double per_image = n_ok ? (now_seconds() - t0) / n_ok : 0;
    for (int j = 0; j < n_ok; j++) {
        sched_result *r = &w->results[w->order[j]];
        r->infer_seconds = per_image;
        if (model_failed)
            fail_result(r, model_err.msg);
        else
            caption_result(w, r, w->ids + (size_t)j * max_len, w->lens[j],
                           w->token_probs ? w->token_probs + (size_t)j * max_len : NULL, w->mean_logprob[j],
                           w->min_token_prob[j]);
    }
    const int n = st->chunk.n;
    sched_chunk_free(&st->chunk);
    st->state = STAGE_EMPTY;
    return deliver(lp->feed, w->results, n, err);
}

/* Delivers a flight whose captions are all finished and frees it. */
static int land(loop *lp, flight *fl, rc_error *err)
{
    const int status = deliver(lp->feed, fl->results, fl->chunk.n, err);
    free(fl->results);
    fl->results = NULL;
    sched_chunk_free(&fl->chunk);
    return status;
}

/* Greedy decoding: encodes the chunk and lets its images join the session
 * (has_room said there are slots); a chunk with nothing to decode is
 * delivered at once. */
static int admit_to_session(loop *lp, stage *st, rc_error *err)
{
    sched_worker *w = lp->w;
    flight *fl = free_flight(lp);
    if (!fl) /* cannot happen: has_room said there is one */
        return rc_fail(err, "no room for another chunk in flight");
    if (!(fl->results = calloc((size_t)st->chunk.n, sizeof *fl->results)))
        return rc_fail(err, "out of memory for the results of %d images", st->chunk.n);
    start_results(w, st, fl->results);
    rc_error model_err = {{0}};
    const double t0 = now_seconds();
    const int n_ok = stage_encode(w, st);
    fl->chunk = st->chunk;
    st->chunk = (sched_chunk){0};
    st->state = STAGE_EMPTY;
    /* a tag says where the caption goes: the flight and the task's place in its chunk */
    const int first_tag = (int)(fl - lp->flights) * w->opt.batch;
    for (int j = 0; j < n_ok; j++)
        lp->tags[j] = first_tag + w->order[j];
    const int model_failed = gen_session_add(lp->session, n_ok, w->memory, lp->tags, &model_err) < 0;
    const double per_image = n_ok ? (now_seconds() - t0) / n_ok : 0;
    fl->pending = model_failed ? 0 : n_ok;
    fl->joined = lp->decode_clock;
    for (int j = 0; j < n_ok; j++) {
        sched_result *r = &fl->results[w->order[j]];
        r->infer_seconds = per_image;
        if (model_failed)
            fail_result(r, model_err.msg);
    }
    return fl->pending ? 0 : land(lp, fl, err);
}

/* One token for every sequence of the session; the finished captions go to
 * their results, and chunks whose captions are all finished are delivered. */
static int step_session(loop *lp, rc_error *err)
{
    const sched_worker *w = lp->w;
    const int n = gen_session_active(lp->session);
    const double t0 = now_seconds();
    gen_session_step(lp->session);
    lp->decode_clock += (now_seconds() - t0) / n;
    const int k = gen_session_take_finished(lp->session, lp->finished, lp->n_flights);
    for (int j = 0; j < k; j++) {
        const gen_caption *cap = &lp->finished[j];
        flight *fl = &lp->flights[cap->tag / w->opt.batch];
        sched_result *r = &fl->results[cap->tag % w->opt.batch];
        r->infer_seconds += lp->decode_clock - fl->joined;
        caption_result(w, r, cap->ids, cap->len, w->opt.decoding.token_scores ? cap->token_probs : NULL,
                       cap->mean_logprob, cap->min_token_prob);
        if (--fl->pending == 0 && land(lp, fl, err) < 0)
            return -1;
    }
    return 0;
}

/* Takes chunks from the feed while a stage is empty; waits for one only
 * when the worker has nothing else to do. */
static int fetch(loop *lp, rc_error *err)
{
    sched_worker *w = lp->w;
    stage *empty;
    while (lp->feed_open && (empty = oldest_stage(w, STAGE_EMPTY))) {
        const int idle = w->stages[0].state == STAGE_EMPTY && w->stages[1].state == STAGE_EMPTY &&
                         session_active(lp) == 0;
        sched_chunk chunk = {0};
        switch (lp->feed->next(lp->feed->ctx, idle, &chunk, err)) {
        case SCHED_FEED_CHUNK:
            if (check_chunk(w, &chunk, err) < 0) {
                sched_chunk_free(&chunk);
                return -1;
            }
            empty->chunk = chunk;
            empty->serial = lp->serial++;
            empty->state = STAGE_LOADED;
            break;
        case SCHED_FEED_EMPTY:
            return 0;
        case SCHED_FEED_END:
            lp->feed_open = 0;
            break;
        case SCHED_FEED_CANCEL:
            /* chunks not admitted are dropped; captions being decoded are
             * finished (at most max_len more steps) */
            lp->feed_open = 0;
            for (int s = 0; s < 2; s++)
                stage_drop(&w->stages[s]);
            break;
        default:
            return -1;
        }
    }
    return 0;
}

/* Gets loaded chunks prepared: in the helper thread when the engine has
 * work meanwhile (one helper at a time), else at once with all threads. */
static void prepare(loop *lp)
{
    sched_worker *w = lp->w;
    for (int s = 0; s < 2; s++)
        if (w->stages[s].state == STAGE_PREPARING && atomic_load(&w->stages[s].prepared))
            stage_join(&w->stages[s]);
    stage *loaded;
    while (!oldest_stage(w, STAGE_PREPARING) && (loaded = oldest_stage(w, STAGE_LOADED))) {
        const int engine_busy = session_active(lp) > 0 || oldest_stage(w, STAGE_READY) != NULL;
        if (w->opt.prefetch && engine_busy)
            stage_prepare_behind(w, loaded);
        else
            stage_prepare(w, loaded);
    }
}

int sched_worker_loop(sched_worker *w, const sched_feed *feed, rc_error *err)
{
    loop lp;
    int failed = loop_start(&lp, w, feed, err) < 0;
    while (!failed) {
        if (fetch(&lp, err) < 0) {
            failed = 1;
            break;
        }
        prepare(&lp);
        stage *ready;
        while (!failed && (ready = oldest_stage(w, STAGE_READY)) && has_room(&lp, ready))
            failed = (lp.session ? admit_to_session(&lp, ready, err) : admit_whole(&lp, ready, err)) < 0;
        if (failed)
            break;
        stage *preparing = oldest_stage(w, STAGE_PREPARING);
        if (session_active(&lp) > 0)
            failed = step_session(&lp, err) < 0;
        else if (preparing)
            stage_join(preparing); /* nothing to compute meanwhile */
        else if (!lp.feed_open && !oldest_stage(w, STAGE_LOADED) && !oldest_stage(w, STAGE_READY))
            break; /* everything is delivered */
    }
    loop_release(&lp);
    return failed ? -1 : 0;
}
