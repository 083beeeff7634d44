/* master.c: the run's master: manifest and database, hand-out, results. */
#include "scheduler/master.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "io/sha256.h"
#include "io/store.h"
#include "scheduler/mpi.h"
#include "scheduler/progress.h"
#include "scheduler/signals.h"

/* What the master knows of each manifest entry. */
enum {
    ENTRY_DONE_BEFORE = 0, /* ok in the database when this session started */
    ENTRY_PENDING,         /* to hand out */
    ENTRY_SENT,            /* handed out, no result yet */
    ENTRY_STORED,          /* result stored by this session */
    ENTRY_UNCHANGED,       /* incremental run: captioned before and unchanged since */
};

enum { MAX_PROBLEMS_LOGGED = 20 }; /* manifest problems listed one by one */

#define ERROR_LIMIT_REASON "stopped: too many failed images (max_errors)"

typedef struct master {
    const sched_run_options *o;
    rc_log *log;
    manifest *man;
    store *db;
    int64_t run_id;
    unsigned char *state;     // (man->n_entries) ENTRY_*
    size_t *pending;          // (n_pending) entries to hand out, in manifest order
    size_t n_pending;
    size_t next_pending;      // the next one to hand out
    int batch_items;          // results in the open transaction
    double batch_opened;      // when it was opened
    sched_progress progress;
    double last_status;       // when the progress line was last shown
    int interrupting;         // 1 once stopping was decided
    int signal;               // the signal that stopped the run, if this process got it
    char stop_reason[96];     // why the run stopped, recorded with it
    size_t problems_logged;   // manifest problems listed so far
    char **content_sha256;    // (man->n_entries) with change_by_content: each file's hash, or NULL
    int64_t n_unchanged;      // incremental run: entries left out as unchanged
    int64_t session_errors;   // failed images stored by this session
    int error_limit_hit;      // 1: more than o->max_errors failed: stopping, the run will be marked failed
} master;

/* CPU time (user + system) of this process so far. */
static double cpu_seconds(void)
{
    struct rusage u;
    if (getrusage(RUSAGE_SELF, &u) != 0)
        return 0;
    return (double)(u.ru_utime.tv_sec + u.ru_stime.tv_sec) + 1e-6 * (double)(u.ru_utime.tv_usec + u.ru_stime.tv_usec);
}

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

void sched_run_options_default(sched_run_options *o)
{
    memset(o, 0, sizeof *o);
    o->manifest_kind = MANIFEST_AUTO;
    cfg_default(&o->cfg);
    o->max_pixels = 100000000;
    o->batch = 8;
    o->prefetch = 1;
    o->score = 1;
    o->progress_seconds = 30;
    o->commit_every = 64;
    o->commit_seconds = 2;
    gen_decoding_default(&o->decoding);
    o->max_errors = -1;
}

/* ---- the configuration and its fingerprint ------------------------------ */

/* The decoding options (generate.h) as a JSON object, keys as the fields. */
static cJSON *decoding_json(const gen_decoding *d)
{
    cJSON *o = cJSON_CreateObject();
    if (!o || !cJSON_AddNumberToObject(o, "beam", d->beam) ||
        !cJSON_AddNumberToObject(o, "length_penalty", d->length_penalty) ||
        !cJSON_AddBoolToObject(o, "early_stopping", d->early_stopping) ||
        !cJSON_AddNumberToObject(o, "min_length", d->min_length) ||
        !cJSON_AddNumberToObject(o, "no_repeat_ngram", d->no_repeat_ngram) ||
        !cJSON_AddNumberToObject(o, "repetition_penalty", d->repetition_penalty) ||
        !cJSON_AddBoolToObject(o, "token_scores", d->token_scores)) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

/* The JSON object of what decides the captions (the fingerprint's input). */
static cJSON *identity_json(const sched_run_options *o, rc_error *err)
{
    char manifest_path[PATH_MAX], image_dir[PATH_MAX];
    if (!realpath(o->manifest, manifest_path))
        return rc_fail(err, "%s: cannot resolve the manifest's path", o->manifest), NULL;
    if (o->image_dir && !realpath(o->image_dir, image_dir))
        return rc_fail(err, "%s: cannot resolve the image folder's path", o->image_dir), NULL;
    char *model_text = cfg_to_json(&o->cfg);
    cJSON *id = cJSON_CreateObject(), *model = model_text ? cJSON_Parse(model_text) : NULL;
    free(model_text);
    if (!id || !model) {
        cJSON_Delete(id);
        cJSON_Delete(model);
        return rc_fail(err, "out of memory describing the run's configuration"), NULL;
    }
    cJSON_AddItemToObject(id, "model", model);
    cJSON_AddStringToObject(id, "manifest", manifest_path);
    cJSON_AddStringToObject(id, "manifest_kind", manifest_kind_name(o->manifest_kind));
    if (o->image_dir)
        cJSON_AddStringToObject(id, "image_dir", image_dir);
    else
        cJSON_AddNullToObject(id, "image_dir");
    cJSON_AddNumberToObject(id, "max_pixels", (double)o->max_pixels);
    cJSON_AddBoolToObject(id, "exif_orientation", o->exif_orientation);
    if (o->since_last) /* an incremental run never resumes (nor is resumed by) a full one */
        cJSON_AddStringToObject(id, "since_last", o->change_by_content ? "content" : "stat");
    cJSON *decoding = decoding_json(&o->decoding);
    if (!decoding) {
        cJSON_Delete(id);
        return rc_fail(err, "out of memory describing the run's configuration"), NULL;
    }
    cJSON_AddItemToObject(id, "decoding", decoding);
    if (o->precision != MODEL_FP32) /* absent for fp32, so that earlier runs still resume */
        cJSON_AddStringToObject(id, "precision", model_precision_name(o->precision));
    return id;
}

/* The whole configuration: the identity plus what may change on resuming. */
static char *config_json(const sched_run_options *o, cJSON *identity, int n_ranks)
{
    cJSON *c = cJSON_CreateObject();
    if (!c)
        return NULL;
    cJSON_AddItemReferenceToObject(c, "identity", identity);
    cJSON_AddStringToObject(c, "checkpoint", o->checkpoint);
    cJSON_AddStringToObject(c, "vocab", o->vocab);
    if (o->config_path)
        cJSON_AddStringToObject(c, "config", o->config_path);
    else
        cJSON_AddNullToObject(c, "config");
    cJSON_AddNumberToObject(c, "batch", o->batch);
    cJSON_AddNumberToObject(c, "threads", o->threads);
    cJSON_AddNumberToObject(c, "ranks", n_ranks);
    cJSON_AddBoolToObject(c, "prefetch", o->prefetch);
    cJSON_AddBoolToObject(c, "score", o->score);
    cJSON_AddBoolToObject(c, "drop_brackets", o->ptb.drop_brackets);
    if (o->program_version)
        cJSON_AddStringToObject(c, "radcap_version", o->program_version);
    cJSON *settings = o->settings_json ? cJSON_Parse(o->settings_json) : NULL;
    if (settings)
        cJSON_AddItemToObject(c, "settings", settings);
    char *text = cJSON_PrintUnformatted(c);
    cJSON_Delete(c);
    return text;
}

/* ---- writing results ---------------------------------------------------- */

static int commit_batch(master *m, rc_error *err)
{
    if (!store_in_batch(m->db))
        return 0;
    if (store_commit(m->db, err) < 0)
        return -1;
    log_msg(m->log, LOG_DEBUG, "committed %d results", m->batch_items);
    m->batch_items = 0;
    return 0;
}

static int write_item(master *m, const store_item *item, rc_error *err)
{
    if (!store_in_batch(m->db)) {
        if (store_begin(m->db, err) < 0)
            return -1;
        m->batch_opened = now_seconds();
        m->batch_items = 0;
    }
    if (store_put_item(m->db, m->run_id, item, err) < 0)
        return -1;
    if (++m->batch_items >= m->o->commit_every)
        return commit_batch(m, err);
    return 0;
}

static void show_progress(master *m, double now)
{
    char line[256];
    sched_progress_format(&m->progress, now, line, sizeof line);
    log_status(m->log, "%s", line);
    m->last_status = now;
}

/* What is due with time: a commit, a progress line. */
static int tick(master *m, rc_error *err)
{
    const double now = now_seconds();
    if (store_in_batch(m->db) && now - m->batch_opened >= m->o->commit_seconds && commit_batch(m, err) < 0)
        return -1;
    const double every = m->log->terminal ? 0.5 : m->o->progress_seconds;
    if (now - m->last_status >= every)
        show_progress(m, now);
    return 0;
}

/* Stores one result from a worker (or from this process). */
static int store_result(master *m, const sched_result *r, rc_error *err)
{
    if (r->index < 0 || (uint64_t)r->index >= m->man->n_entries || m->state[r->index] != ENTRY_SENT) {
        log_msg(m->log, LOG_WARN, "rank %d returned a result for image #%lld, which is not in flight: ignored",
                r->rank, (long long)r->index);
        return 0;
    }
    const manifest_entry *e = &m->man->entries[r->index];
    store_item item;
    store_item_init(&item);
    item.image_id = e->id;
    item.path = e->path;
    item.seq = r->index;
    item.file_size = r->file_size;
    item.file_mtime_ns = r->file_mtime_ns;
    item.ok = r->ok;
    item.error = r->error;
    item.caption = r->caption;
    static const int no_tokens[1] = {0};
    item.token_ids = r->ids ? r->ids : no_tokens; /* an empty caption still has its (empty) ids */
    item.n_tokens = r->n_ids;
    item.token_probs = r->token_probs;
    item.mean_logprob = r->mean_logprob;
    item.min_token_prob = r->min_token_prob;
    item.decode_seconds = r->decode_seconds;
    item.infer_seconds = r->infer_seconds;
    item.rank = r->rank;
    item.content_sha256 = m->content_sha256 ? m->content_sha256[r->index] : NULL;
    if (write_item(m, &item, err) < 0)
        return -1;
    m->state[r->index] = ENTRY_STORED;
    sched_progress_add(&m->progress, r->ok);
    if (!r->ok) {
        log_msg(m->log, LOG_WARN, "image %s: %s", e->id, r->error);
        if (++m->session_errors > m->o->max_errors && m->o->max_errors >= 0 && !m->error_limit_hit) {
            m->error_limit_hit = 1;
            log_msg(m->log, LOG_ERROR, "%lld images failed, more than max_errors %lld: stopping the run",
                    (long long)m->session_errors, m->o->max_errors);
        }
    }
    return 0;
}

/* ---- setting up the run ------------------------------------------------- */

static void on_problem(void *user, const manifest_problem *p)
{
    master *m = user;
    if (p->kind == MANIFEST_MISSING)
        return; /* stored as the image's error */
    if (m->problems_logged++ < MAX_PROBLEMS_LOGGED)
        log_msg(m->log, LOG_WARN, "manifest %s: %s%s", manifest_problem_kind_name(p->kind), p->message,
                p->kind == MANIFEST_BAD_UTF8 ? " (kept, with U+FFFD)" : " (row skipped)");
}

/* Stores the manifest's reference captions with the run (one transaction). */
static int store_manifest_references(master *m, rc_error *err)
{
    int any = 0;
    for (size_t i = 0; i < m->man->n_entries && !any; i++)
        any = m->man->entries[i].n_refs > 0;
    if (!any)
        return 0;
    if (store_begin(m->db, err) < 0)
        return -1;
    for (size_t i = 0; i < m->man->n_entries; i++) {
        const manifest_entry *e = &m->man->entries[i];
        if (e->n_refs > 0 && store_put_references(m->db, m->run_id, e->id, e->refs, NULL, e->n_refs, err) < 0) {
            rc_error ignored;
            store_rollback(m->db, &ignored);
            return -1;
        }
    }
    return store_commit(m->db, err);
}

/* Incremental run: leaves out the pending entries whose file is unchanged
 * since it was last captioned ok in a completed run (same size and mtime,
 * or same SHA-256 with change_by_content, whose hashes are kept to be
 * stored with the results). */
static int plan_incremental(master *m, rc_error *err)
{
    const size_t n = m->man->n_entries;
    const int by_content = m->o->change_by_content;
    if (by_content && !(m->content_sha256 = calloc(n ? n : 1, sizeof *m->content_sha256)))
        return rc_fail(err, "out of memory planning %zu images", n);
    manifest_stat_entries(m->man);
    size_t kept = 0;
    for (size_t k = 0; k < m->n_pending; k++) {
        const size_t i = m->pending[k];
        const manifest_entry *e = &m->man->entries[i];
        int unchanged = 0;
        if (e->size >= 0) {
            char hex[SHA256_HEX_SIZE];
            rc_error hash_err;
            /* an unreadable file is never "unchanged": its worker reports why */
            const int hashed = by_content && sha256_file(e->path, hex, &hash_err) == 0 &&
                               (m->content_sha256[i] = strdup(hex)) != NULL;
            if ((!by_content || hashed) &&
                store_file_unchanged(m->db, e->path, e->size, e->mtime_ns, hashed ? hex : NULL, &unchanged, err) < 0)
                return -1;
        }
        if (unchanged) {
            m->state[i] = ENTRY_UNCHANGED;
            m->n_unchanged++;
        } else {
            m->pending[kept++] = i;
        }
    }
    m->n_pending = kept;
    return 0;
}

/* Finds or creates the run, and works out what is left to do. */
static int setup(master *m, int n_ranks, char *const *hosts, sched_run_outcome *out, rc_error *err)
{
    const sched_run_options *o = m->o;
    manifest_options mo;
    manifest_options_default(&mo);
    mo.kind = o->manifest_kind;
    mo.image_dir = o->image_dir;
    mo.on_problem = on_problem;
    mo.user = m;
    if (manifest_read(o->manifest, &mo, &m->man, err) < 0)
        return -1;
    size_t n_problems = manifest_problem_total(m->man) - m->man->n_problems[MANIFEST_MISSING];
    if (n_problems > MAX_PROBLEMS_LOGGED)
        log_msg(m->log, LOG_WARN, "manifest %s: %zu problems in all (the first %d are listed above)", o->manifest,
                n_problems, MAX_PROBLEMS_LOGGED);
    out->n_total = (int64_t)m->man->n_entries;
    if (store_open(o->db, 0, &m->db, err) < 0)
        return -1;

    char ckpt_sha[SHA256_HEX_SIZE], vocab_sha[SHA256_HEX_SIZE], fingerprint[SHA256_HEX_SIZE];
    const double t0 = now_seconds();
    if (sha256_file(o->checkpoint, ckpt_sha, err) < 0 || sha256_file(o->vocab, vocab_sha, err) < 0)
        return -1;
    log_msg(m->log, LOG_DEBUG, "checkpoint SHA-256 %s (%.2f s)", ckpt_sha, now_seconds() - t0);
    cJSON *identity = identity_json(o, err);
    if (!identity)
        return -1;
    char *identity_text = cJSON_PrintUnformatted(identity), *config = config_json(o, identity, n_ranks);
    cJSON_Delete(identity);
    if (!identity_text || !config) {
        free(identity_text);
        free(config);
        return rc_fail(err, "out of memory describing the run's configuration");
    }
    store_fingerprint(identity_text, ckpt_sha, vocab_sha, fingerprint);
    free(identity_text);

    char local_host[256] = "";
    const char *one_host[1] = {local_host};
    if (!hosts)
        gethostname(local_host, sizeof local_host - 1);
    const store_run_info info = {
        .config_json = config,
        .fingerprint = fingerprint,
        .manifest = o->manifest,
        .checkpoint_sha256 = ckpt_sha,
        .vocab_sha256 = vocab_sha,
        .hosts = hosts ? (const char *const *)hosts : one_host,
        .n_hosts = hosts ? n_ranks : 1,
        .n_ranks = n_ranks,
        .n_total = (int64_t)m->man->n_entries,
    };
    int status = 0;
    if (!o->new_run)
        status = store_run_find_resumable(m->db, fingerprint, &m->run_id, err);
    out->resumed = status == 0 && m->run_id != 0;
    if (out->resumed)
        status = store_run_resume(m->db, m->run_id, &info, err);
    else if (status == 0)
        status = store_run_create(m->db, &info, &m->run_id, err);
    free(config);
    if (status < 0)
        return -1;
    out->run_id = m->run_id;

    /* what is left: everything not already ok */
    store_idset done;
    if (store_done_ids(m->db, m->run_id, &done, err) < 0)
        return -1;
    const size_t n = m->man->n_entries;
    m->state = malloc(n ? n : 1);
    m->pending = malloc(sizeof *m->pending * (n ? n : 1));
    if (!m->state || !m->pending) {
        store_idset_free(&done);
        return rc_fail(err, "out of memory planning %zu images", n);
    }
    int64_t n_done = 0;
    for (size_t i = 0; i < n; i++) {
        if (store_idset_contains(&done, m->man->entries[i].id)) {
            m->state[i] = ENTRY_DONE_BEFORE;
            n_done++;
        } else {
            m->state[i] = ENTRY_PENDING;
            if (!m->man->entries[i].missing)
                m->pending[m->n_pending++] = i;
        }
    }
    store_idset_free(&done);
    out->n_skipped = n_done;
    if (o->since_last && plan_incremental(m, err) < 0)
        return -1;
    out->n_unchanged = m->n_unchanged;
    return 0;
}

/* Stores the manifest's missing files as errors (they need no worker). */
static int store_missing(master *m, rc_error *err)
{
    for (size_t i = 0; i < m->man->n_entries; i++) {
        const manifest_entry *e = &m->man->entries[i];
        if (m->state[i] != ENTRY_PENDING || !e->missing)
            continue;
        char reason[4200];
        snprintf(reason, sizeof reason, "%.4096s: no such image file", e->path);
        m->state[i] = ENTRY_SENT;
        const sched_result r = {.index = (int64_t)i, .error = reason, .file_size = -1, .file_mtime_ns = -1,
                                .decode_seconds = 0, .infer_seconds = 0, .rank = 0};
        if (store_result(m, &r, err) < 0)
            return -1;
    }
    return 0;
}

/* The next chunk for one of n_workers workers (0 tasks when none is left):
 * a full batch, or with n_workers > 0 less near the end, so that the last
 * chunks are spread over the workers; its tasks are marked in flight. */
static int next_chunk(master *m, int n_workers, sched_chunk *chunk, rc_error *err)
{
    chunk->tasks = NULL;
    chunk->n = 0;
    const size_t remaining = m->n_pending - m->next_pending;
    if (remaining == 0)
        return 0;
    size_t size = n_workers > 0 ? (remaining + 2 * (size_t)n_workers - 1) / (2 * (size_t)n_workers) : remaining;
    if (size > (size_t)m->o->batch)
        size = (size_t)m->o->batch;
    if (size < 1)
        size = 1;
    if (!(chunk->tasks = calloc(size, sizeof *chunk->tasks)))
        return rc_fail(err, "out of memory for a chunk of %zu images", size);
    for (size_t k = 0; k < size; k++) {
        const size_t i = m->pending[m->next_pending + k];
        chunk->tasks[k].index = (int64_t)i;
        if (!(chunk->tasks[k].path = strdup(m->man->entries[i].path))) {
            sched_chunk_free(chunk);
            return rc_fail(err, "out of memory for a chunk of %zu images", size);
        }
        chunk->n++;
    }
    for (size_t k = 0; k < size; k++)
        m->state[m->pending[m->next_pending + k]] = ENTRY_SENT;
    m->next_pending += size;
    return 0;
}

/* ---- one process: the master captions itself ---------------------------- */

/* Decides to stop: sig is this process's signal, or 0 with the reason
 * in words (a worker's signal). */
static void note_stop(master *m, int sig, const char *reason)
{
    if (m->interrupting)
        return;
    m->interrupting = 1;
    m->signal = sig;
    if (sig)
        snprintf(m->stop_reason, sizeof m->stop_reason, "stopped by %s", sched_signal_name(sig));
    else
        snprintf(m->stop_reason, sizeof m->stop_reason, "%s", reason);
    log_msg(m->log, LOG_INFO, "%s: finishing the batches in flight, then stopping", m->stop_reason);
}

static sched_feed_status local_next(void *ctx, int wait, sched_chunk *chunk, rc_error *err)
{
    (void)wait; /* the next chunk is always ready at once */
    master *m = ctx;
    int sig = sched_signal_received();
    if (sig)
        note_stop(m, sig, NULL);
    if (m->error_limit_hit)
        note_stop(m, 0, ERROR_LIMIT_REASON);
    if (m->interrupting)
        return SCHED_FEED_CANCEL;
    if (next_chunk(m, 0, chunk, err) < 0)
        return SCHED_FEED_ERROR;
    return chunk->n ? SCHED_FEED_CHUNK : SCHED_FEED_END;
}

static int local_deliver(void *ctx, const sched_result *results, int n, rc_error *err)
{
    master *m = ctx;
    for (int i = 0; i < n; i++)
        if (store_result(m, &results[i], err) < 0)
            return -1;
    return tick(m, err);
}

static int run_local(master *m, rc_error *err)
{
    sched_worker_options wo = {
        .checkpoint = m->o->checkpoint,
        .vocab = m->o->vocab,
        .cfg = m->o->cfg,
        .batch = m->o->batch,
        .rank = 0,
        .prefetch = m->o->prefetch,
        .decoding = m->o->decoding,
        .precision = m->o->precision,
    };
    sched_image_options(&m->o->cfg, m->o->max_pixels, m->o->exif_orientation, &wo.img);
    const double t0 = now_seconds();
    sched_worker *w = sched_worker_open(&wo, err);
    if (!w)
        return -1;
    log_msg(m->log, LOG_DEBUG, "model loaded in %.2f s", now_seconds() - t0);
    const sched_feed feed = {local_next, local_deliver, m};
    int status = sched_worker_loop(w, &feed, err);
    sched_worker_close(w);
    return status;
}

/* ---- several ranks: the master dispatches ------------------------------- */

typedef struct dispatch {
    int n_ranks;
    unsigned char *stop_sent; // (n_ranks) a STOP went to the rank
    unsigned char *gone;      // (n_ranks) the rank said DONE
    int alive;                // workers that have not said DONE
    sched_outbox *box;
    sched_buf in;
} dispatch;

static int send_stop(dispatch *d, int rank, sched_stop_mode mode, rc_error *err)
{
    if (d->stop_sent[rank] || d->gone[rank])
        return 0;
    d->stop_sent[rank] = 1;
    const sched_msg stop = {.kind = SCHED_MSG_STOP, .stop = mode};
    return sched_outbox_send(d->box, rank, &stop, err);
}

static int interrupt_all(master *m, dispatch *d, int sig, const char *where, rc_error *err)
{
    note_stop(m, sig, where);
    for (int r = 1; r < d->n_ranks; r++)
        if (send_stop(d, r, SCHED_STOP_NOW, err) < 0)
            return -1;
    return 0;
}

/* Handles one message from a worker; a FATAL one fails the run and asks
 * for the job to be aborted. */
static int handle(master *m, dispatch *d, int from, const sched_msg *msg, sched_run_outcome *out, rc_error *err)
{
    if (from < 1 || from >= d->n_ranks || d->gone[from])
        return rc_fail(err, "a %s message from rank %d, which is not a working rank",
                       sched_msg_kind_name(msg->kind), from);
    switch (msg->kind) {
    case SCHED_MSG_REQUEST: {
        if (d->stop_sent[from])
            return 0; /* crossed our STOP */
        sched_chunk chunk;
        if (next_chunk(m, d->n_ranks - 1, &chunk, err) < 0)
            return -1;
        if (chunk.n == 0)
            return send_stop(d, from, SCHED_STOP_DRAIN, err);
        const sched_msg work = {.kind = SCHED_MSG_WORK, .tasks = chunk.tasks, .n_tasks = chunk.n};
        int status = sched_outbox_send(d->box, from, &work, err);
        log_msg(m->log, LOG_DEBUG, "%d images to rank %d", chunk.n, from);
        sched_chunk_free(&chunk);
        return status;
    }
    case SCHED_MSG_RESULTS:
        for (int i = 0; i < msg->n_results; i++)
            if (store_result(m, &msg->results[i], err) < 0)
                return -1;
        return 0;
    case SCHED_MSG_INTERRUPT: {
        char where[64];
        snprintf(where, sizeof where, "stopped by a signal on rank %d", from);
        return interrupt_all(m, d, 0, where, err);
    }
    case SCHED_MSG_FATAL:
        out->abort_job = 1;
        return rc_fail(err, "rank %d cannot caption: %s", from, msg->text);
    case SCHED_MSG_DONE:
        d->gone[from] = 1;
        d->alive--;
        log_msg(m->log, LOG_DEBUG, "rank %d is done", from);
        return 0;
    default:
        return rc_fail(err, "rank %d sent a %s message, which a worker never sends", from,
                       sched_msg_kind_name(msg->kind));
    }
}

static int run_dispatch(master *m, int n_ranks, sched_run_outcome *out, rc_error *err)
{
    dispatch d = {.n_ranks = n_ranks, .alive = n_ranks - 1};
    d.stop_sent = calloc((size_t)n_ranks, 1);
    d.gone = calloc((size_t)n_ranks, 1);
    d.box = sched_outbox_new(err);
    int status = d.stop_sent && d.gone && d.box ? 0 : rc_fail(err, "out of memory for %d ranks", n_ranks);
    while (status == 0 && d.alive > 0) {
        int sig = sched_signal_received();
        if (sig && !m->interrupting && interrupt_all(m, &d, sig, NULL, err) < 0) {
            status = -1;
            break;
        }
        if (m->error_limit_hit && !m->interrupting && interrupt_all(m, &d, 0, ERROR_LIMIT_REASON, err) < 0) {
            status = -1;
            break;
        }
        sched_msg msg;
        int from, got = sched_mpi_poll(-1, &msg, &from, &d.in, err);
        if (got < 0) {
            status = -1;
        } else if (got == 0) {
            if (sched_outbox_progress(d.box, err) < 0 || tick(m, err) < 0)
                status = -1;
            else
                sched_mpi_pause();
        } else {
            status = handle(m, &d, from, &msg, out, err);
            sched_msg_free(&msg);
            if (status == 0)
                status = tick(m, err);
        }
    }
    if (status < 0)
        out->abort_job = 1; /* the workers may still be running: only an abort ends them */
    rc_error close_err = {{0}};
    if (sched_outbox_close(d.box, status < 0, &close_err) < 0 && status == 0) {
        *err = close_err;
        status = -1;
    }
    free(d.stop_sent);
    free(d.gone);
    sched_buf_free(&d.in);
    return status;
}

/* ---- the whole run ------------------------------------------------------ */

static void release(master *m)
{
    if (m->db) {
        rc_error ignored;
        store_close(m->db, &ignored);
    }
    for (size_t i = 0; m->content_sha256 && i < m->man->n_entries; i++)
        free(m->content_sha256[i]);
    free(m->content_sha256);
    manifest_free(m->man);
    free(m->state);
    free(m->pending);
}

int sched_master_run(const sched_run_options *o, int n_ranks, char *const *hosts, rc_log *log,
                     sched_run_outcome *out, rc_error *err)
{
    memset(out, 0, sizeof *out);
    out->n_ranks = n_ranks;
    out->n_workers = n_ranks > 1 ? n_ranks - 1 : 1;
    out->end = SCHED_RUN_FAILED;
    master m = {.o = o, .log = log};
    if (setup(&m, n_ranks, hosts, out, err) < 0) {
        out->abort_job = n_ranks > 1;
        release(&m);
        return -1;
    }
    char unchanged[64] = "";
    if (o->since_last)
        snprintf(unchanged, sizeof unchanged, ", %lld unchanged since an earlier run", (long long)m.n_unchanged);
    log_msg(log, LOG_INFO, "%s %srun %lld: %lld images in %s, %lld already done%s, %zu to caption on %d %s",
            out->resumed ? "resuming" : "starting", o->since_last ? "incremental " : "", (long long)m.run_id,
            (long long)out->n_total, o->manifest, (long long)out->n_skipped, unchanged, m.n_pending, out->n_workers,
            n_ranks > 1 ? (out->n_workers == 1 ? "worker rank" : "worker ranks") : "process");
    const double t0 = now_seconds(), cpu0 = cpu_seconds();
    sched_progress_start(&m.progress, out->n_total, out->n_skipped + m.n_unchanged, t0);
    m.last_status = t0;
    int status = store_manifest_references(&m, err);
    if (status == 0)
        status = store_missing(&m, err);
    if (status == 0)
        status = n_ranks > 1 ? run_dispatch(&m, n_ranks, out, err) : run_local(&m, err);
    if (status == 0)
        status = commit_batch(&m, err);
    if (status == 0 && m.error_limit_hit)
        status = rc_fail(err, "%lld images failed in this session, more than max_errors (%lld); the results "
                              "so far are stored",
                         (long long)m.session_errors, o->max_errors);
    out->seconds = now_seconds() - t0;
    out->master_cpu_seconds = cpu_seconds() - cpu0;
    out->session_done = m.progress.done;
    out->session_errors = m.progress.errors;
    out->signal = m.signal;
    if (status == 0) {
        show_progress(&m, now_seconds());
        log_status_done(log);
    }

    /* record how the run ended; a failure's message is kept with the run */
    rc_error finish_err = {{0}};
    if (status < 0) {
        rc_error ignored;
        store_rollback(m.db, &ignored);
        if (store_run_finish(m.db, m.run_id, STORE_RUN_FAILED, err->msg, o->since_last ? m.n_unchanged : -1,
                             &finish_err) < 0)
            log_msg(log, LOG_ERROR, "%s", finish_err.msg);
    } else {
        /* a worker that lost results (it never should) leaves the run resumable, not completed */
        size_t lost = 0;
        for (size_t i = 0; !m.interrupting && i < m.man->n_entries; i++)
            lost += m.state[i] == ENTRY_SENT || m.state[i] == ENTRY_PENDING;
        if (lost) {
            log_msg(log, LOG_ERROR, "%zu images were handed out but no result came back", lost);
            note_stop(&m, 0, "stopped: results were lost");
        }
        out->end = m.interrupting ? SCHED_RUN_INTERRUPTED : SCHED_RUN_COMPLETED;
        status = store_run_finish(m.db, m.run_id, m.interrupting ? STORE_RUN_INTERRUPTED : STORE_RUN_COMPLETED,
                                  m.interrupting ? m.stop_reason : NULL, o->since_last ? m.n_unchanged : -1, err);
    }
    store_run_summary summary;
    if (status == 0 && store_run_get(m.db, m.run_id, &summary, err) == 0) {
        out->n_ok = summary.n_ok;
        out->n_error = summary.n_error;
    }
    if (status == 0 && out->end == SCHED_RUN_COMPLETED && o->score) {
        const double t1 = now_seconds();
        status = sched_score_run(m.db, m.run_id, &o->ptb, &out->scores, err);
        out->scored = status == 0 && out->scores.result != NULL;
        if (out->scored)
            log_msg(log, LOG_DEBUG, "scored %zu images in %.2f s", out->scores.result->n_scored,
                    now_seconds() - t1);
    }
    if (status < 0)
        out->end = SCHED_RUN_FAILED;
    release(&m);
    return status;
}
