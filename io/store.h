/* store.h: the results database (SQLite), one file per archive or project.
 *
 * Everything a run produces goes into one SQLite file that a nightly job, a
 * report or a person with the sqlite3 shell can query: runs (configuration,
 * model and vocabulary SHA-256, hosts, ranks, counts), items (one row per
 * image of a run: status, caption, token ids, error, timings, file size and
 * mtime), reference captions, per-image scores and corpus scores. The schema
 * is described in the README and in the migration steps of store.c.
 *
 * Durability: WAL journal, synchronous=FULL, writes batched in explicit
 * transactions (store_begin ... store_commit). A crash or kill -9 at any
 * moment leaves a database that opens with every committed batch intact and
 * nothing of the uncommitted one.
 *
 * Resuming: one row per (run, image id). store_done_ids lists the images of a
 * run already `ok`; a failed image that is put again replaces its error row
 * (attempts counts the tries), and an `ok` row is never replaced by an error.
 * A new run is a new row of runs; older runs keep their rows.
 *
 * Errors name the database file and the SQL step that failed. Only one
 * process should write at a time (the MPI master); readers may come and go
 * (WAL), and a writer waits up to the busy timeout for another. A store
 * handle belongs to one thread at a time.
 */
#ifndef RC_STORE_H
#define RC_STORE_H

#include <sqlite3.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include "engine/err.h"
#include "io/sha256.h"

typedef struct store store;

/* ---- opening, schema and migrations ------------------------------------- */

enum {
    STORE_READ_ONLY = 1, /* open for queries only: no migration, no writes */
    STORE_NO_CREATE = 2, /* fail when the file does not exist */
};

/* PRAGMA application_id of radcap databases ("RCAP"), so that another
 * program's SQLite file is never taken for ours. */
#define STORE_APPLICATION_ID 0x52434150

/* Opens (creating unless flags say otherwise) the database at path, sets WAL
 * mode, synchronous=FULL, foreign keys and a 30 s busy timeout, and migrates
 * the schema to the current version (read-write opens only). Refuses a file
 * that is not a radcap database or whose schema is newer than this program's. */
int store_open(const char *path, int flags, store **out, rc_error *err);

/* Finalises every statement and closes the file (s may be NULL). A batch
 * still open is rolled back. */
int store_close(store *s, rc_error *err);

/* How long a write waits for another writer's lock before failing. */
int store_set_busy_timeout(store *s, int milliseconds, rc_error *err);

/* The SQLite handle (for ad hoc queries and tests) and the file name. */
sqlite3 *store_db(store *s);
const char *store_path(const store *s);

/* One step of the schema's history. Steps are applied in order, each exactly
 * once; PRAGMA user_version holds the number applied. Never edit a released
 * step: append a new one. */
typedef struct store_migration {
    const char *name; // what the step does, recorded in schema_history
    const char *sql;  // one or more SQL statements
} store_migration;

/* The number of steps of this program's schema (its PRAGMA user_version). */
int store_schema_version(void);

/* Brings db from its user_version to n_steps by applying the missing steps
 * in one IMMEDIATE transaction (all or nothing), recording each in the table
 * schema_history(version, name, applied_at). Fails, changing nothing, when
 * the database is newer than n_steps, belongs to another application, or a
 * step fails (the message names the step). path names the file in messages.
 * store_open calls it with the real steps; tests call it with their own. */
int store_migrate(sqlite3 *db, const char *path, const store_migration *steps, int n_steps, rc_error *err);

/* ---- runs --------------------------------------------------------------- */

typedef struct store_run_info {
    const char *config_json;       // the full effective configuration, a JSON object (required)
    const char *fingerprint;       // identity for resuming, e.g. store_fingerprint() (required)
    const char *manifest;          // manifest path, or NULL
    const char *checkpoint_sha256; // 64 hex digits, or NULL
    const char *vocab_sha256;      // 64 hex digits, or NULL
    const char *const *hosts;      // (n_hosts) host names of the ranks, stored as a JSON array
    int n_hosts;
    int n_ranks;                   // MPI ranks (1 without MPI)
    int64_t n_total;               // entries in the manifest, -1 if unknown
} store_run_info;

typedef enum store_run_status {
    STORE_RUN_RUNNING = 0,
    STORE_RUN_COMPLETED,
    STORE_RUN_INTERRUPTED,
    STORE_RUN_FAILED,
} store_run_status;

/* "running", "completed", "interrupted", "failed". */
const char *store_run_status_name(store_run_status status);

/* The SHA-256 (hex) of the configuration JSON and the two file hashes,
 * separated by NUL bytes: runs with equal fingerprints caption alike. Pass
 * only the configuration that decides the captions (not thread counts or
 * paths of outputs) if those may change between a run and its resumption. */
void store_fingerprint(const char *config_json, const char *checkpoint_sha256, const char *vocab_sha256,
                       char out[SHA256_HEX_SIZE]);

/* Adds a run with status `running` and the start time; *run_id gets its id. */
int store_run_create(store *s, const store_run_info *info, int64_t *run_id, rc_error *err);

/* The latest run with this fingerprint that did not complete (running, as
 * left by a crash, interrupted or failed), or *run_id = 0 when there is none. */
int store_run_find_resumable(store *s, const char *fingerprint, int64_t *run_id, rc_error *err);

/* Marks a run `running` again (clearing its end), records the new hosts,
 * ranks and manifest size (n_total < 0 keeps the old one) and counts the
 * resumption in runs.n_resumes. */
int store_run_resume(store *s, int64_t run_id, const store_run_info *info, rc_error *err);

/* Ends a run: status (completed, interrupted or failed), end time, an
 * optional message (why it failed), n_skipped (images left out as unchanged
 * by an incremental run; < 0 keeps the stored value), and n_ok / n_error
 * counted from its items. */
int store_run_finish(store *s, int64_t run_id, store_run_status status, const char *message, int64_t n_skipped,
                     rc_error *err);

typedef struct store_run_summary {
    int64_t id;
    store_run_status status;
    char started_at[40];   // UTC, ISO 8601 with milliseconds
    char finished_at[40];  // empty while running
    int64_t n_total;       // -1 if unknown
    int64_t n_ok, n_error, n_skipped;
    int n_ranks;
    int n_resumes;
} store_run_summary;

/* Reads one run's summary; fails naming the run when it does not exist. */
int store_run_get(store *s, int64_t run_id, store_run_summary *out, rc_error *err);

/* The most recent run (largest id), or 0 when the database holds none. */
int store_latest_run(store *s, int64_t *run_id, rc_error *err);

/* The most recent completed run, or 0 (for incremental runs). */
int store_last_completed_run(store *s, int64_t *run_id, rc_error *err);

/* ---- writing items in batches ------------------------------------------- */

typedef struct store_item {
    const char *image_id;       // unique within the run (required)
    const char *path;           // image file (required)
    int64_t seq;                // position in the manifest, -1 unknown
    int64_t file_size;          // bytes, -1 unknown
    int64_t file_mtime_ns;      // ns since the epoch, -1 unknown
    const char *content_sha256; // hex digest of the file, or NULL
    int ok;                     // 1: captioned; 0: failed
    const char *error;          // why it failed (when !ok)
    const char *caption;        // the decoded caption (when ok)
    const int *token_ids;       // (n_tokens) generated ids without [CLS]/[SEP], or NULL
    const float *token_probs;   // (n_tokens) each token's probability, or NULL
    int n_tokens;
    double mean_logprob;        // mean token log-probability, NAN unknown
    double min_token_prob;      // smallest token probability, NAN unknown
    double decode_seconds;      // image decoding and preprocessing, NAN unknown
    double infer_seconds;       // model time attributed to the image, NAN unknown
    int rank;                   // MPI rank that did the work, -1 unknown
} store_item;

/* Sets every field to "unknown" (NULL, -1, NAN). */
void store_item_init(store_item *item);

/* Starts a batch: an IMMEDIATE transaction (waits up to the busy timeout for
 * another writer). Puts made before store_commit become durable together. */
int store_begin(store *s, rc_error *err);

/* Commits the batch. */
int store_commit(store *s, rc_error *err);

/* Abandons the batch (after a failed put); harmless when none is open. */
int store_rollback(store *s, rc_error *err);

/* 1 while a batch is open. */
int store_in_batch(const store *s);

/* Inserts or updates the item's row (run_id, image_id). An error row is
 * replaced by the new attempt; an ok row is only replaced by another ok
 * (never lose a caption). Outside a batch the put is its own transaction. */
int store_put_item(store *s, int64_t run_id, const store_item *item, rc_error *err);

/* Puts n items in one transaction of their own (no batch may be open). */
int store_put_items(store *s, int64_t run_id, const store_item *items, size_t n, rc_error *err);

/* Records the ground-truth captions of an image for a run (replacing those
 * with the same index). tokens[k] is the tokenised text used for scoring, or
 * tokens may be NULL (an existing tokenised text is then kept). */
int store_put_references(store *s, int64_t run_id, const char *image_id, const char *const *captions,
                         const char *const *tokens, int n, rc_error *err);

typedef struct store_score {
    const char *metric; // e.g. "bleu_4", "cider", "rouge_l"
    double value;
} store_score;

/* Records an image's scores (replacing earlier values of the same metrics)
 * and, if not NULL, its caption as tokenised for scoring. The item must
 * exist. */
int store_put_item_scores(store *s, int64_t run_id, const char *image_id, const char *caption_tokens,
                          const store_score *scores, int n, rc_error *err);

/* Records corpus scores of a run over n_images images (replacing earlier
 * values of the same metrics). */
int store_put_corpus_scores(store *s, int64_t run_id, const store_score *scores, int n, int64_t n_images,
                            rc_error *err);

/* ---- reading back -------------------------------------------------------- */

/* The image ids of a run whose status is ok, sorted bytewise. */
typedef struct store_idset {
    char *text;        // the ids, each NUL-terminated, one after another
    size_t *offsets;   // (n) start of each id in text, in sorted order
    size_t n;
} store_idset;

int store_done_ids(store *s, int64_t run_id, store_idset *out, rc_error *err);

/* 1 when id is in the set (binary search). */
int store_idset_contains(const store_idset *set, const char *id);

void store_idset_free(store_idset *set);

/* Whether the file at path is unchanged since it was last captioned ok in a
 * completed run: same size and mtime, or, when sha256 is not NULL, the same
 * content hash. *unchanged is 0 for a path never captioned ok. */
int store_file_unchanged(store *s, const char *path, int64_t size, int64_t mtime_ns, const char *sha256,
                         int *unchanged, rc_error *err);

typedef struct store_item_row {
    const char *image_id;
    const char *path;
    int64_t seq;                // -1 when NULL
    int ok;                     // status ok (1) or error (0)
    const char *error;          // NULL when none
    const char *caption;        // NULL when none
    const char *token_ids_json; // JSON array text, NULL when none
    const char *caption_tokens; // tokenised for scoring, NULL when none
    double mean_logprob;        // NAN when NULL
    double min_token_prob;      // NAN when NULL
    double decode_seconds;      // NAN when NULL
    double infer_seconds;       // NAN when NULL
    int rank;                   // -1 when NULL
    int attempts;
    const store_score *scores;  // (n_scores) by metric name, when asked for
    int n_scores;
} store_item_row;

/* Calls fn for every item of a run, in manifest order (seq, then image id),
 * with its scores when with_scores. Strings are valid during the call only.
 * A non-zero return from fn stops the walk and is returned. */
int store_foreach_item(store *s, int64_t run_id, int with_scores,
                       int (*fn)(void *user, const store_item_row *row), void *user, rc_error *err);

/* Calls fn for every reference caption of a run, by image id then index. */
int store_foreach_reference(store *s, int64_t run_id,
                            int (*fn)(void *user, const char *image_id, int ref_index, const char *caption,
                                      const char *tokens),
                            void *user, rc_error *err);

/* Calls fn for every corpus score of a run, by metric name. */
int store_foreach_corpus_score(store *s, int64_t run_id,
                               int (*fn)(void *user, const char *metric, double value, int64_t n_images),
                               void *user, rc_error *err);

/* The distinct metric names of a run's per-image scores, sorted; free with
 * store_free_names. */
int store_run_metric_names(store *s, int64_t run_id, char ***names, int *n, rc_error *err);
void store_free_names(char **names, int n);

#endif
