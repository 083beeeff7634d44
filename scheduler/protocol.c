/* protocol.c: encoding and decoding the master/worker messages. */
#include "scheduler/protocol.h"

#include <stdlib.h>
#include <string.h>

/* ---- writing ------------------------------------------------------------ */

/* Appends n bytes; on failure the buffer is left as it was and -1 returned. */
static int put_bytes(sched_buf *b, const void *bytes, size_t n)
{
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n)
            cap *= 2;
        unsigned char *grown = realloc(b->data, cap);
        if (!grown)
            return -1;
        b->data = grown;
        b->cap = cap;
    }
    if (n)
        memcpy(b->data + b->len, bytes, n);
    b->len += n;
    return 0;
}

static int put_u64(sched_buf *b, uint64_t v, int n_bytes)
{
    unsigned char bytes[8];
    for (int i = 0; i < n_bytes; i++)
        bytes[i] = (unsigned char)(v >> (8 * i));
    return put_bytes(b, bytes, (size_t)n_bytes);
}

static int put_f64(sched_buf *b, double v)
{
    uint64_t bits;
    memcpy(&bits, &v, sizeof bits);
    return put_u64(b, bits, 8);
}

/* A string as u32 length + bytes; NULL is the empty string. */
static int put_string(sched_buf *b, const char *s)
{
    size_t n = s ? strlen(s) : 0;
    if (n > UINT32_MAX)
        return -1;
    return put_u64(b, n, 4) < 0 || put_bytes(b, s, n) < 0 ? -1 : 0;
}

static int put_result(sched_buf *b, const sched_result *r)
{
    if (r->n_ids < 0 || (r->n_ids > 0 && !r->ids))
        return -1;
    if (put_u64(b, (uint64_t)r->index, 8) < 0 || put_u64(b, r->ok ? 1 : 0, 1) < 0 ||
        put_u64(b, (uint32_t)r->rank, 4) < 0 || put_f64(b, r->decode_seconds) < 0 ||
        put_f64(b, r->infer_seconds) < 0 || put_u64(b, (uint64_t)r->file_size, 8) < 0 ||
        put_u64(b, (uint64_t)r->file_mtime_ns, 8) < 0 || put_string(b, r->error) < 0 || put_string(b, r->caption) < 0 ||
        put_u64(b, (uint64_t)r->n_ids, 4) < 0)
        return -1;
    for (int k = 0; k < r->n_ids; k++)
        if (put_u64(b, (uint32_t)r->ids[k], 4) < 0)
            return -1;
    const int n_probs = r->token_probs ? r->n_ids : 0;
    if (put_f64(b, r->mean_logprob) < 0 || put_f64(b, r->min_token_prob) < 0 || put_u64(b, (uint64_t)n_probs, 4) < 0)
        return -1;
    for (int k = 0; k < n_probs; k++) {
        uint32_t bits;
        memcpy(&bits, &r->token_probs[k], sizeof bits);
        if (put_u64(b, bits, 4) < 0)
            return -1;
    }
    return 0;
}

int sched_encode(const sched_msg *msg, sched_buf *out, rc_error *err)
{
    out->len = 0;
    if (msg->kind < SCHED_MSG_REQUEST || msg->kind >= SCHED_MSG_N_KINDS)
        return rc_fail(err, "cannot encode a message of unknown kind %d", (int)msg->kind);
    int failed = put_u64(out, SCHED_MAGIC, 4) < 0 || put_u64(out, (uint64_t)msg->kind, 1) < 0;
    switch (msg->kind) {
    case SCHED_MSG_WORK:
        if (msg->n_tasks < 0 || msg->n_tasks > SCHED_MAX_ITEMS)
            return rc_fail(err, "cannot encode a chunk of %d tasks (at most %d)", msg->n_tasks, SCHED_MAX_ITEMS);
        failed = failed || put_u64(out, (uint64_t)msg->n_tasks, 4) < 0;
        for (int i = 0; !failed && i < msg->n_tasks; i++)
            failed = put_u64(out, (uint64_t)msg->tasks[i].index, 8) < 0 || put_string(out, msg->tasks[i].path) < 0;
        break;
    case SCHED_MSG_RESULTS:
        if (msg->n_results < 0 || msg->n_results > SCHED_MAX_ITEMS)
            return rc_fail(err, "cannot encode %d results (at most %d)", msg->n_results, SCHED_MAX_ITEMS);
        failed = failed || put_u64(out, (uint64_t)msg->n_results, 4) < 0;
        for (int i = 0; !failed && i < msg->n_results; i++)
            failed = put_result(out, &msg->results[i]) < 0;
        break;
    case SCHED_MSG_STOP:
        failed = failed || put_u64(out, msg->stop == SCHED_STOP_NOW ? 1 : 0, 1) < 0;
        break;
    case SCHED_MSG_FATAL:
        failed = failed || put_string(out, msg->text) < 0;
        break;
    default:
        break;
    }
    if (failed)
        return rc_fail(err, "cannot encode a %s message: out of memory or a field too long",
                       sched_msg_kind_name(msg->kind));
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

typedef struct reader {
    const unsigned char *p; // next byte
    size_t left;            // bytes after p
    const char *what;       // the message kind, for errors
    rc_error *err;
} reader;

static int truncated(reader *r, const char *field)
{
    return rc_fail(r->err, "%s message truncated or corrupt at its %s (%zu bytes left)", r->what, field, r->left);
}

static int get_u64(reader *r, int n_bytes, const char *field, uint64_t *out)
{
    *out = 0;
    if (r->left < (size_t)n_bytes)
        return truncated(r, field);
    uint64_t v = 0;
    for (int i = 0; i < n_bytes; i++)
        v |= (uint64_t)r->p[i] << (8 * i);
    r->p += n_bytes;
    r->left -= (size_t)n_bytes;
    *out = v;
    return 0;
}

static int get_i32(reader *r, const char *field, int *out)
{
    uint64_t v;
    if (get_u64(r, 4, field, &v) < 0)
        return -1;
    *out = (int)(int32_t)(uint32_t)v;
    return 0;
}

static int get_f64(reader *r, const char *field, double *out)
{
    uint64_t bits;
    if (get_u64(r, 8, field, &bits) < 0)
        return -1;
    memcpy(out, &bits, sizeof *out);
    return 0;
}

/* A length-prefixed string as a malloc'd C string; *out stays NULL for an
 * empty string when empty_is_null. */
static int get_string(reader *r, const char *field, int empty_is_null, char **out)
{
    uint64_t n;
    if (get_u64(r, 4, field, &n) < 0)
        return -1;
    if (n > r->left)
        return truncated(r, field);
    if (memchr(r->p, '\0', n))
        return rc_fail(r->err, "%s message: its %s contains a NUL byte", r->what, field);
    if (n == 0 && empty_is_null) {
        *out = NULL;
        return 0;
    }
    if (!(*out = malloc(n + 1)))
        return rc_fail(r->err, "out of memory decoding a %s message", r->what);
    memcpy(*out, r->p, n);
    (*out)[n] = '\0';
    r->p += n;
    r->left -= n;
    return 0;
}

/* A count of items, each needing at least min_item_bytes. */
static int get_count(reader *r, size_t min_item_bytes, int *out)
{
    uint64_t n;
    if (get_u64(r, 4, "count", &n) < 0)
        return -1;
    if (n > SCHED_MAX_ITEMS || n * min_item_bytes > r->left)
        return rc_fail(r->err, "%s message: count %llu does not fit its %zu bytes (or exceeds %d)", r->what,
                       (unsigned long long)n, r->left, SCHED_MAX_ITEMS);
    *out = (int)n;
    return 0;
}

static int get_result(reader *r, sched_result *res)
{
    uint64_t index, ok, n_ids, size, mtime;
    if (get_u64(r, 8, "index", &index) < 0 || get_u64(r, 1, "status", &ok) < 0)
        return -1;
    res->index = (int64_t)index;
    if (ok > 1)
        return rc_fail(r->err, "%s message: status byte %llu is neither 0 nor 1", r->what, (unsigned long long)ok);
    res->ok = (int)ok;
    if (get_i32(r, "rank", &res->rank) < 0 || get_f64(r, "decode time", &res->decode_seconds) < 0 ||
        get_f64(r, "inference time", &res->infer_seconds) < 0 || get_u64(r, 8, "file size", &size) < 0 ||
        get_u64(r, 8, "file time", &mtime) < 0 || get_string(r, "error", 1, &res->error) < 0 ||
        get_string(r, "caption", 0, &res->caption) < 0 || get_u64(r, 4, "token count", &n_ids) < 0)
        return -1;
    res->file_size = (int64_t)size;
    res->file_mtime_ns = (int64_t)mtime;
    if (n_ids > r->left / 4)
        return truncated(r, "token ids");
    res->n_ids = (int)n_ids;
    if (n_ids && !(res->ids = malloc(sizeof(int) * n_ids)))
        return rc_fail(r->err, "out of memory decoding a %s message", r->what);
    for (uint64_t k = 0; k < n_ids; k++)
        if (get_i32(r, "token ids", &res->ids[k]) < 0)
            return -1;
    uint64_t n_probs;
    if (get_f64(r, "mean log-probability", &res->mean_logprob) < 0 ||
        get_f64(r, "minimum token probability", &res->min_token_prob) < 0 ||
        get_u64(r, 4, "probability count", &n_probs) < 0)
        return -1;
    if (n_probs != 0 && n_probs != n_ids)
        return rc_fail(r->err, "%s message: image %lld has %llu token probabilities for %llu tokens", r->what,
                       (long long)res->index, (unsigned long long)n_probs, (unsigned long long)n_ids);
    if (n_probs > r->left / 4)
        return truncated(r, "token probabilities");
    if (n_probs && !(res->token_probs = malloc(sizeof(float) * n_probs)))
        return rc_fail(r->err, "out of memory decoding a %s message", r->what);
    for (uint64_t k = 0; k < n_probs; k++) {
        uint64_t bits;
        get_u64(r, 4, "token probabilities", &bits); /* cannot fail: the length was checked */
        const uint32_t bits32 = (uint32_t)bits;
        memcpy(&res->token_probs[k], &bits32, sizeof(float));
    }
    /* a failed image has no caption, a captioned one no error */
    if (res->ok ? res->error != NULL : (res->caption[0] != '\0' || n_ids > 0 || !res->error))
        return rc_fail(r->err, "%s message: result of image %lld is inconsistent (%s)", r->what,
                       (long long)res->index, res->ok ? "ok with an error text" : "failed with a caption or no error");
    if (!res->ok) {
        free(res->caption);
        res->caption = NULL;
    }
    return 0;
}

int sched_decode(const void *data, size_t len, sched_msg *msg, rc_error *err)
{
    memset(msg, 0, sizeof *msg);
    reader r = {data, len, "a", err};
    uint64_t magic, kind;
    if (get_u64(&r, 4, "magic number", &magic) < 0)
        return -1;
    if (magic != SCHED_MAGIC)
        return rc_fail(err, "message with magic number 0x%08llx instead of 0x%08x: another radcap version on "
                            "another rank?",
                       (unsigned long long)magic, SCHED_MAGIC);
    if (get_u64(&r, 1, "kind", &kind) < 0)
        return -1;
    if (kind < SCHED_MSG_REQUEST || kind >= SCHED_MSG_N_KINDS)
        return rc_fail(err, "message of unknown kind %llu", (unsigned long long)kind);
    msg->kind = (sched_msg_kind)kind;
    r.what = sched_msg_kind_name((int)kind);
    uint64_t stop;
    switch (msg->kind) {
    case SCHED_MSG_WORK:
        /* each task: index (8) + path length (4) */
        if (get_count(&r, 12, &msg->n_tasks) < 0)
            return -1;
        if (msg->n_tasks && !(msg->tasks = calloc((size_t)msg->n_tasks, sizeof *msg->tasks)))
            return rc_fail(err, "out of memory decoding a work message");
        for (int i = 0; i < msg->n_tasks; i++) {
            uint64_t index;
            if (get_u64(&r, 8, "index", &index) < 0 || get_string(&r, "path", 0, &msg->tasks[i].path) < 0)
                return -1;
            msg->tasks[i].index = (int64_t)index;
        }
        break;
    case SCHED_MSG_RESULTS:
        /* each result: 8 + 1 + 4 + 8 + 8 + 8 + 8 + 4 + 4 + 4 bytes at least */
        if (get_count(&r, 77, &msg->n_results) < 0)
            return -1;
        if (msg->n_results && !(msg->results = calloc((size_t)msg->n_results, sizeof *msg->results)))
            return rc_fail(err, "out of memory decoding a results message");
        for (int i = 0; i < msg->n_results; i++)
            if (get_result(&r, &msg->results[i]) < 0)
                return -1;
        break;
    case SCHED_MSG_STOP:
        if (get_u64(&r, 1, "stop mode", &stop) < 0)
            return -1;
        if (stop > SCHED_STOP_NOW)
            return rc_fail(err, "stop message with unknown mode %llu", (unsigned long long)stop);
        msg->stop = (sched_stop_mode)stop;
        break;
    case SCHED_MSG_FATAL:
        if (get_string(&r, "text", 0, &msg->text) < 0)
            return -1;
        break;
    default:
        break;
    }
    if (r.left)
        return rc_fail(err, "%s message has %zu bytes left over after its fields", r.what, r.left);
    return 0;
}

/* ---- releasing ---------------------------------------------------------- */

void sched_result_clear(sched_result *result)
{
    free(result->error);
    free(result->caption);
    free(result->ids);
    free(result->token_probs);
    result->error = result->caption = NULL;
    result->ids = NULL;
    result->token_probs = NULL;
    result->n_ids = 0;
}

void sched_msg_free(sched_msg *msg)
{
    for (int i = 0; msg->tasks && i < msg->n_tasks; i++)
        free(msg->tasks[i].path);
    for (int i = 0; msg->results && i < msg->n_results; i++)
        sched_result_clear(&msg->results[i]);
    free(msg->tasks);
    free(msg->results);
    free(msg->text);
    memset(msg, 0, sizeof *msg);
}

void sched_buf_free(sched_buf *buf)
{
    free(buf->data);
    memset(buf, 0, sizeof *buf);
}

const char *sched_msg_kind_name(int kind)
{
    static const char *names[SCHED_MSG_N_KINDS] = {
        [SCHED_MSG_REQUEST] = "request", [SCHED_MSG_WORK] = "work",   [SCHED_MSG_RESULTS] = "results",
        [SCHED_MSG_STOP] = "stop",       [SCHED_MSG_INTERRUPT] = "interrupt", [SCHED_MSG_DONE] = "done",
        [SCHED_MSG_FATAL] = "fatal",
    };
    return kind > 0 && kind < SCHED_MSG_N_KINDS ? names[kind] : "unknown";
}
