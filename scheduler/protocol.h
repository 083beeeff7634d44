/* protocol.h: the messages between the master and the workers of a run.
 *
 * A message is a byte string sent with MPI as MPI_BYTE, its kind doubling
 * as the MPI tag. Layout (all integers little-endian, whatever the host):
 *
 *   u32 magic "RCM2" (0x52434d32: the protocol's version; a rank of another
 *       build is refused), u8 kind, then the kind's payload:
 *   REQUEST, INTERRUPT, DONE: nothing
 *   WORK:    u32 n, then n tasks: i64 index, u32 length, path bytes
 *   RESULTS: u32 n, then n results: i64 index, u8 ok, i32 rank,
 *            f64 decode_seconds, f64 infer_seconds, i64 file_size,
 *            i64 file_mtime_ns, u32 length + error bytes,
 *            u32 length + caption bytes, u32 n_ids, n_ids x i32,
 *            f64 mean_logprob, f64 min_token_prob (NaN when unknown),
 *            u32 n_probs (0 or n_ids), n_probs x f32 token probabilities
 *   STOP:    u8 mode (SCHED_STOP_DRAIN or SCHED_STOP_NOW)
 *   FATAL:   u32 length + text bytes
 *
 * Strings travel without their NUL and may not contain one. Decoding checks
 * every length against the bytes left, so a truncated or corrupt message is
 * an error naming what was wrong, never an overrun. The conversation:
 *
 *   worker                                 master
 *   REQUEST (it holds no chunk in reserve) -> WORK (a chunk), or STOP drain
 *   RESULTS (after each batch)            -> stored
 *   INTERRUPT (it got a signal)           -> STOP now to every worker
 *   FATAL (it cannot load the model)      -> run failed, job aborted
 *   DONE (after a STOP, its last message) -> the worker is gone
 */
#ifndef RC_SCHED_PROTOCOL_H
#define RC_SCHED_PROTOCOL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

#define SCHED_MAGIC 0x52434d32u /* "RCM2" */

/* Decoding refuses more items than this in one message. */
#define SCHED_MAX_ITEMS 65536

typedef enum sched_msg_kind {
    SCHED_MSG_REQUEST = 1, /* worker -> master: send me a chunk */
    SCHED_MSG_WORK,        /* master -> worker: a chunk of tasks */
    SCHED_MSG_RESULTS,     /* worker -> master: the results of one batch */
    SCHED_MSG_STOP,        /* master -> worker: no more work (see sched_stop_mode) */
    SCHED_MSG_INTERRUPT,   /* worker -> master: a signal arrived; please stop the run */
    SCHED_MSG_DONE,        /* worker -> master: its last message before it exits */
    SCHED_MSG_FATAL,       /* worker -> master: it cannot go on (text says why) */
    SCHED_MSG_N_KINDS
} sched_msg_kind;

typedef enum sched_stop_mode {
    SCHED_STOP_DRAIN = 0, /* finish every chunk received, then leave */
    SCHED_STOP_NOW = 1,   /* finish the batch being computed, drop the rest, leave */
} sched_stop_mode;

/* One image to caption. */
typedef struct sched_task {
    int64_t index; // the image's position in the master's manifest
    char *path;    // the image file
} sched_task;

/* What became of one task. */
typedef struct sched_result {
    int64_t index;         // the task's index
    int ok;                // 1: captioned; 0: failed (error says why)
    char *error;           // NULL when ok
    char *caption;         // NULL unless ok
    int *ids;              // (n_ids) generated token ids without [CLS]/[SEP]; NULL if none
    int n_ids;
    double mean_logprob;   // the caption's confidence (generate.h's gen_output); NAN when unknown
    double min_token_prob; // NAN when unknown
    float *token_probs;    // (n_ids) each token's probability, or NULL when not asked for
    double decode_seconds; // reading and preprocessing the image
    double infer_seconds;  // the image's share of the batch's model time
    int64_t file_size;     // bytes, -1 when unknown (the file could not be opened)
    int64_t file_mtime_ns; // modification time in ns since the epoch, -1 when unknown
    int rank;              // the rank that did the work
} sched_result;

/* A message, decoded (owning its strings and arrays) or to encode
 * (borrowing them). Only the fields of its kind are used. */
typedef struct sched_msg {
    sched_msg_kind kind;
    sched_task *tasks;      // WORK: (n_tasks)
    int n_tasks;
    sched_result *results;  // RESULTS: (n_results)
    int n_results;
    sched_stop_mode stop;   // STOP
    char *text;             // FATAL
} sched_msg;

/* A growing byte buffer for encoded messages. Start it zeroed. */
typedef struct sched_buf {
    unsigned char *data; // (len) encoded bytes
    size_t len;
    size_t cap;
} sched_buf;

/* Encodes msg into out (replacing its contents). Fails when memory runs
 * out or a count or length does not fit the layout. */
int sched_encode(const sched_msg *msg, sched_buf *out, rc_error *err);

/* Decodes len bytes into *msg, which then owns everything it points to
 * (release with sched_msg_free, also after a failure). Fails on a wrong
 * magic, an unknown kind, a truncated or oversized field, a NUL inside a
 * string, a count above SCHED_MAX_ITEMS or bytes left over. */
int sched_decode(const void *data, size_t len, sched_msg *msg, rc_error *err);

/* Releases what a decoded message owns and zeroes it. */
void sched_msg_free(sched_msg *msg);

/* Releases the strings and arrays a result owns (as decoded, or as made by
 * the worker) and zeroes them. */
void sched_result_clear(sched_result *result);

/* Releases the buffer's memory. */
void sched_buf_free(sched_buf *buf);

/* "request", "work", "results", "stop", "interrupt", "done", "fatal",
 * or "unknown". */
const char *sched_msg_kind_name(int kind);

#endif
