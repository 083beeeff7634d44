/* store.c: the SQLite results database. */
#include "io/store.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---- schema ------------------------------------------------------------- */

#define NOW "strftime('%Y-%m-%dT%H:%M:%fZ', 'now')"

/* The schema's history: append, never edit (see store_migrate). */
static const store_migration schema_steps[] = {
    {"initial schema: runs, items, reference captions, per-image and corpus scores",
     "CREATE TABLE runs (\n"
     "  id                INTEGER PRIMARY KEY,\n"
     "  started_at        TEXT NOT NULL,      -- UTC, ISO 8601\n"
     "  updated_at        TEXT NOT NULL,      -- last start, resumption or end\n"
     "  finished_at       TEXT,               -- NULL while running (or after a crash)\n"
     "  status            TEXT NOT NULL CHECK (status IN ('running','completed','interrupted','failed')),\n"
     "  fingerprint       TEXT NOT NULL,      -- identity of the configuration, for resuming\n"
     "  config_json       TEXT NOT NULL CHECK (json_valid(config_json)),\n"
     "  manifest          TEXT,\n"
     "  checkpoint_sha256 TEXT,\n"
     "  vocab_sha256      TEXT,\n"
     "  hosts             TEXT,               -- JSON array of host names\n"
     "  n_ranks           INTEGER,\n"
     "  n_total           INTEGER,            -- entries in the manifest\n"
     "  n_ok              INTEGER NOT NULL DEFAULT 0,\n"
     "  n_error           INTEGER NOT NULL DEFAULT 0,\n"
     "  n_skipped         INTEGER NOT NULL DEFAULT 0, -- left out as unchanged (incremental runs)\n"
     "  n_resumes         INTEGER NOT NULL DEFAULT 0,\n"
     "  message           TEXT                -- why the run failed or stopped\n"
     ");\n"
     "CREATE INDEX runs_by_fingerprint ON runs(fingerprint, status);\n"
     "CREATE TABLE items (\n"
     "  run_id         INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
     "  image_id       TEXT NOT NULL,\n"
     "  path           TEXT NOT NULL,\n"
     "  seq            INTEGER,              -- position in the manifest\n"
     "  file_size      INTEGER,\n"
     "  file_mtime_ns  INTEGER,\n"
     "  content_sha256 TEXT,\n"
     "  status         TEXT NOT NULL CHECK (status IN ('ok','error')),\n"
     "  error          TEXT,\n"
     "  caption        TEXT,\n"
     "  token_ids      TEXT,                 -- JSON array, without [CLS] and [SEP]\n"
     "  caption_tokens TEXT,                 -- the caption as tokenised for scoring\n"
     "  mean_logprob   REAL,\n"
     "  min_token_prob REAL,\n"
     "  token_probs    TEXT,                 -- JSON array, when asked for\n"
     "  decode_seconds REAL,\n"
     "  infer_seconds  REAL,\n"
     "  worker_rank    INTEGER,\n"
     "  attempts       INTEGER NOT NULL DEFAULT 1,\n"
     "  updated_at     TEXT NOT NULL,\n"
     "  UNIQUE (run_id, image_id)\n"
     ");\n"
     "CREATE INDEX items_by_status ON items(run_id, status);\n"
     "CREATE INDEX items_by_seq ON items(run_id, seq);\n"
     "CREATE INDEX items_by_path ON items(path);\n"
     "CREATE INDEX items_by_image ON items(image_id);\n"
     "CREATE TABLE reference_captions (\n"
     "  run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
     "  image_id  TEXT NOT NULL,\n"
     "  ref_index INTEGER NOT NULL,\n"
     "  caption   TEXT NOT NULL,\n"
     "  tokens    TEXT,                      -- tokenised for scoring\n"
     "  PRIMARY KEY (run_id, image_id, ref_index)\n"
     ");\n"
     "CREATE TABLE item_scores (\n"
     "  run_id   INTEGER NOT NULL,\n"
     "  image_id TEXT NOT NULL,\n"
     "  metric   TEXT NOT NULL,\n"
     "  value    REAL,\n"
     "  PRIMARY KEY (run_id, image_id, metric),\n"
     "  FOREIGN KEY (run_id, image_id) REFERENCES items(run_id, image_id) ON DELETE CASCADE\n"
     ");\n"
     "CREATE INDEX item_scores_by_metric ON item_scores(run_id, metric, value);\n"
     "CREATE TABLE corpus_scores (\n"
     "  run_id    INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,\n"
     "  metric    TEXT NOT NULL,\n"
     "  value     REAL,\n"
     "  n_images  INTEGER,\n"
     "  scored_at TEXT NOT NULL,\n"
     "  PRIMARY KEY (run_id, metric)\n"
     ");\n"},
    {"view latest_items: the newest caption of every image file, over completed runs",
     "CREATE VIEW latest_items AS\n"
     "SELECT i.* FROM items i JOIN runs r ON r.id = i.run_id\n"
     "WHERE i.status = 'ok' AND r.status = 'completed' AND i.run_id = (\n"
     "  SELECT MAX(j.run_id) FROM items j JOIN runs q ON q.id = j.run_id\n"
     "  WHERE j.path = i.path AND j.status = 'ok' AND q.status = 'completed');\n"},
};
#define N_SCHEMA_STEPS (int)(sizeof schema_steps / sizeof schema_steps[0])

int store_schema_version(void) { return N_SCHEMA_STEPS; }

/* ---- SQL helpers (a handle and a file name, for store_migrate too) ------ */

static int db_fail(sqlite3 *db, const char *path, const char *step, rc_error *err)
{
    return rc_fail(err, "results database %s: %s: %s", path, step, db ? sqlite3_errmsg(db) : "out of memory");
}

static int db_exec(sqlite3 *db, const char *path, const char *sql, const char *step, rc_error *err)
{
    char *message = NULL;
    int rc = sqlite3_exec(db, sql, NULL, NULL, &message);
    if (rc == SQLITE_OK)
        return 0;
    rc_fail(err, "results database %s: %s: %s", path, step, message ? message : sqlite3_errstr(rc));
    sqlite3_free(message);
    return -1;
}

/* Runs a query whose first row's first column is an integer (0 if no row). */
static int db_query_int(sqlite3 *db, const char *path, const char *sql, const char *step, int64_t *out,
                        rc_error *err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        return db_fail(db, path, step, err);
    int rc = sqlite3_step(stmt);
    *out = rc == SQLITE_ROW ? sqlite3_column_int64(stmt, 0) : 0;
    if (rc != SQLITE_ROW && rc != SQLITE_DONE) {
        db_fail(db, path, step, err);
        sqlite3_finalize(stmt);
        return -1;
    }
    if (sqlite3_finalize(stmt) != SQLITE_OK)
        return db_fail(db, path, step, err);
    return 0;
}

/* Rolls back after a failure that err already describes; returns -1. */
static int db_abandon(sqlite3 *db, const char *path, rc_error *err)
{
    if (!sqlite3_get_autocommit(db)) {
        rc_error rollback_err;
        if (db_exec(db, path, "ROLLBACK", "rolling back", &rollback_err) < 0)
            rc_prefix(err, "%s; then", rollback_err.msg);
    }
    return -1;
}

int store_migrate(sqlite3 *db, const char *path, const store_migration *steps, int n_steps, rc_error *err)
{
    int64_t version, app_id, n_objects;
    if (db_query_int(db, path, "PRAGMA user_version", "reading the schema version", &version, err) < 0 ||
        db_query_int(db, path, "PRAGMA application_id", "reading the application id", &app_id, err) < 0)
        return -1;
    if (version == n_steps && app_id == STORE_APPLICATION_ID)
        return 0;
    if (db_exec(db, path, "BEGIN IMMEDIATE", "starting the schema migration", err) < 0)
        return -1;
    /* Read again under the write lock: another process may have migrated. */
    if (db_query_int(db, path, "PRAGMA user_version", "reading the schema version", &version, err) < 0 ||
        db_query_int(db, path, "PRAGMA application_id", "reading the application id", &app_id, err) < 0 ||
        db_query_int(db, path, "SELECT count(*) FROM sqlite_schema", "listing the schema", &n_objects, err) < 0)
        return db_abandon(db, path, err);
    if (app_id != 0 && app_id != STORE_APPLICATION_ID) {
        rc_fail(err, "results database %s belongs to another application (application_id 0x%08llx)", path,
                (unsigned long long)app_id);
        return db_abandon(db, path, err);
    }
    if (app_id == 0 && version == 0 && n_objects > 0) {
        rc_fail(err, "%s is not a radcap results database: it already holds other tables", path);
        return db_abandon(db, path, err);
    }
    if (version > n_steps) {
        rc_fail(err, "results database %s has schema version %lld, newer than this radcap's %d: use a newer radcap",
                path, (long long)version, n_steps);
        return db_abandon(db, path, err);
    }
    if (db_exec(db, path,
                "CREATE TABLE IF NOT EXISTS schema_history (version INTEGER PRIMARY KEY, name TEXT NOT NULL, "
                "applied_at TEXT NOT NULL)",
                "creating schema_history", err) < 0)
        return db_abandon(db, path, err);
    for (int v = (int)version; v < n_steps; v++) {
        char step[256];
        snprintf(step, sizeof step, "migration step %d (%s)", v + 1, steps[v].name);
        if (db_exec(db, path, steps[v].sql, step, err) < 0)
            return db_abandon(db, path, err);
        sqlite3_stmt *stmt = NULL;
        if (sqlite3_prepare_v2(db, "INSERT INTO schema_history (version, name, applied_at) VALUES (?1, ?2, " NOW ")",
                               -1, &stmt, NULL) != SQLITE_OK ||
            sqlite3_bind_int(stmt, 1, v + 1) != SQLITE_OK ||
            sqlite3_bind_text(stmt, 2, steps[v].name, -1, SQLITE_STATIC) != SQLITE_OK ||
            sqlite3_step(stmt) != SQLITE_DONE) {
            db_fail(db, path, "recording a migration step in schema_history", err);
            sqlite3_finalize(stmt);
            return db_abandon(db, path, err);
        }
        if (sqlite3_finalize(stmt) != SQLITE_OK) {
            db_fail(db, path, "recording a migration step in schema_history", err);
            return db_abandon(db, path, err);
        }
    }
    char pragmas[128];
    snprintf(pragmas, sizeof pragmas, "PRAGMA user_version = %d; PRAGMA application_id = %d", n_steps,
             STORE_APPLICATION_ID);
    if (db_exec(db, path, pragmas, "setting the schema version", err) < 0)
        return db_abandon(db, path, err);
    if (db_exec(db, path, "COMMIT", "committing the schema migration", err) < 0)
        return db_abandon(db, path, err);
    return 0;
}

/* ---- the store ---------------------------------------------------------- */

/* Statements used per item, prepared once. */
typedef enum stmt_id {
    ST_PUT_ITEM,
    ST_PUT_REFERENCE,
    ST_PUT_ITEM_SCORE,
    ST_SET_CAPTION_TOKENS,
    ST_PUT_CORPUS_SCORE,
    ST_LAST_OK_FILE,
    ST_ITEM_SCORES,
    N_STMTS
} stmt_id;

static const struct {
    const char *sql;
    const char *step; // for messages
} statements[N_STMTS] = {
    [ST_PUT_ITEM] = {"INSERT INTO items (run_id, image_id, path, seq, file_size, file_mtime_ns, content_sha256, "
                     "status, error, caption, token_ids, token_probs, mean_logprob, min_token_prob, decode_seconds, "
                     "infer_seconds, worker_rank, updated_at) "
                     "VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, " NOW ") "
                     "ON CONFLICT (run_id, image_id) DO UPDATE SET path = excluded.path, seq = excluded.seq, "
                     "file_size = excluded.file_size, file_mtime_ns = excluded.file_mtime_ns, "
                     "content_sha256 = excluded.content_sha256, status = excluded.status, error = excluded.error, "
                     "caption = excluded.caption, token_ids = excluded.token_ids, "
                     "token_probs = excluded.token_probs, caption_tokens = NULL, "
                     "mean_logprob = excluded.mean_logprob, min_token_prob = excluded.min_token_prob, "
                     "decode_seconds = excluded.decode_seconds, infer_seconds = excluded.infer_seconds, "
                     "worker_rank = excluded.worker_rank, attempts = items.attempts + 1, "
                     "updated_at = excluded.updated_at "
                     "WHERE items.status <> 'ok' OR excluded.status = 'ok'",
                     "storing an item"},
    [ST_PUT_REFERENCE] = {"INSERT INTO reference_captions (run_id, image_id, ref_index, caption, tokens) "
                          "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (run_id, image_id, ref_index) DO UPDATE SET "
                          "caption = excluded.caption, tokens = coalesce(excluded.tokens, tokens)",
                          "storing a reference caption"},
    [ST_PUT_ITEM_SCORE] = {"INSERT INTO item_scores (run_id, image_id, metric, value) VALUES (?1, ?2, ?3, ?4) "
                           "ON CONFLICT (run_id, image_id, metric) DO UPDATE SET value = excluded.value",
                           "storing an image score"},
    [ST_SET_CAPTION_TOKENS] = {"UPDATE items SET caption_tokens = ?3 WHERE run_id = ?1 AND image_id = ?2",
                               "storing a tokenised caption"},
    [ST_PUT_CORPUS_SCORE] = {"INSERT INTO corpus_scores (run_id, metric, value, n_images, scored_at) "
                             "VALUES (?1, ?2, ?3, ?4, " NOW ") ON CONFLICT (run_id, metric) DO UPDATE SET "
                             "value = excluded.value, n_images = excluded.n_images, scored_at = excluded.scored_at",
                             "storing a corpus score"},
    [ST_LAST_OK_FILE] = {"SELECT i.file_size, i.file_mtime_ns, i.content_sha256 FROM items i "
                         "JOIN runs r ON r.id = i.run_id "
                         "WHERE i.path = ?1 AND i.status = 'ok' AND r.status = 'completed' "
                         "ORDER BY i.run_id DESC LIMIT 1",
                         "looking up a file's last result"},
    [ST_ITEM_SCORES] = {"SELECT metric, value FROM item_scores WHERE run_id = ?1 AND image_id = ?2 ORDER BY metric",
                        "reading an image's scores"},
};

struct store {
    sqlite3 *db;                    // the connection
    char *path;                     // the file name, for messages
    int read_only;
    int in_batch;                   // 1 between store_begin and store_commit / store_rollback
    sqlite3_stmt *stmts[N_STMTS];   // prepared on first use
    char *json;                     // scratch for JSON arrays of token ids / probabilities
    size_t json_cap;
};

static int fail(store *s, const char *step, rc_error *err) { return db_fail(s->db, s->path, step, err); }

static int exec(store *s, const char *sql, const char *step, rc_error *err)
{
    return db_exec(s->db, s->path, sql, step, err);
}

static sqlite3_stmt *stmt_get(store *s, stmt_id id, rc_error *err)
{
    if (!s->stmts[id] && sqlite3_prepare_v3(s->db, statements[id].sql, -1, SQLITE_PREPARE_PERSISTENT,
                                            &s->stmts[id], NULL) != SQLITE_OK) {
        fail(s, statements[id].step, err);
        return NULL;
    }
    return s->stmts[id];
}

/* Makes a cached statement ready for its next use. */
static int stmt_done(store *s, sqlite3_stmt *stmt, const char *step, rc_error *err)
{
    if (sqlite3_reset(stmt) != SQLITE_OK || sqlite3_clear_bindings(stmt) != SQLITE_OK)
        return fail(s, step, err);
    return 0;
}

/* Steps a cached statement that returns no rows, then resets it. */
static int stmt_run(store *s, sqlite3_stmt *stmt, const char *step, rc_error *err)
{
    if (sqlite3_step(stmt) != SQLITE_DONE) {
        fail(s, step, err);
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        return -1;
    }
    return stmt_done(s, stmt, step, err);
}

/* Binds parameters 1, 2, ... in order; the first failure sticks in rc. */
typedef struct binder {
    sqlite3_stmt *stmt;
    int index; // parameter bound last
    int rc;    // SQLITE_OK until a bind fails
} binder;

static void bind_text(binder *b, const char *text)
{
    b->index++;
    if (b->rc == SQLITE_OK)
        b->rc = text ? sqlite3_bind_text(b->stmt, b->index, text, -1, SQLITE_TRANSIENT)
                     : sqlite3_bind_null(b->stmt, b->index);
}

static void bind_int64(binder *b, int64_t value)
{
    b->index++;
    if (b->rc == SQLITE_OK)
        b->rc = sqlite3_bind_int64(b->stmt, b->index, value);
}

/* Negative values stand for "unknown" and become NULL. */
static void bind_count(binder *b, int64_t value)
{
    b->index++;
    if (b->rc == SQLITE_OK)
        b->rc = value >= 0 ? sqlite3_bind_int64(b->stmt, b->index, value) : sqlite3_bind_null(b->stmt, b->index);
}

/* NAN stands for "unknown" and becomes NULL. */
static void bind_real(binder *b, double value)
{
    b->index++;
    if (b->rc == SQLITE_OK)
        b->rc = isnan(value) ? sqlite3_bind_null(b->stmt, b->index) : sqlite3_bind_double(b->stmt, b->index, value);
}

static int bound(store *s, const binder *b, const char *step, rc_error *err)
{
    if (b->rc == SQLITE_OK)
        return 0;
    rc_fail(err, "results database %s: %s: binding parameter %d: %s", s->path, step, b->index, sqlite3_errstr(b->rc));
    sqlite3_reset(b->stmt);
    sqlite3_clear_bindings(b->stmt);
    return -1;
}

/* Binds run_id to ?1 of a statement that takes nothing else: 0, or -1 with
 * err set (the statement reset, as bound leaves it). */
static int bind_run_id(store *s, sqlite3_stmt *stmt, int64_t run_id, const char *step, rc_error *err)
{
    binder b = {stmt, 0, SQLITE_OK};
    bind_int64(&b, run_id);
    return bound(s, &b, step, err);
}

/* Prepares a one-off statement. */
static sqlite3_stmt *prepare(store *s, const char *sql, const char *step, rc_error *err)
{
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(s->db, sql, -1, &stmt, NULL) != SQLITE_OK) {
        fail(s, step, err);
        sqlite3_finalize(stmt);
        return NULL;
    }
    return stmt;
}

/* Finalises a one-off statement; status is the caller's result so far. */
static int finalize(store *s, sqlite3_stmt *stmt, int status, const char *step, rc_error *err)
{
    int rc = sqlite3_finalize(stmt);
    if (status == 0 && rc != SQLITE_OK)
        return fail(s, step, err);
    return status;
}

const char *store_path(const store *s) { return s->path; }
sqlite3 *store_db(store *s) { return s->db; }

int store_set_busy_timeout(store *s, int milliseconds, rc_error *err)
{
    if (sqlite3_busy_timeout(s->db, milliseconds) != SQLITE_OK)
        return fail(s, "setting the busy timeout", err);
    return 0;
}

/* Read-only opens cannot migrate: the schema must already be ours. */
static int check_schema_read_only(store *s, rc_error *err)
{
    int64_t version, app_id;
    if (db_query_int(s->db, s->path, "PRAGMA user_version", "reading the schema version", &version, err) < 0 ||
        db_query_int(s->db, s->path, "PRAGMA application_id", "reading the application id", &app_id, err) < 0)
        return -1;
    if (app_id != STORE_APPLICATION_ID)
        return rc_fail(err, "%s is not a radcap results database", s->path);
    if (version > N_SCHEMA_STEPS)
        return rc_fail(err, "results database %s has schema version %lld, newer than this radcap's %d: use a newer "
                       "radcap", s->path, (long long)version, N_SCHEMA_STEPS);
    if (version < N_SCHEMA_STEPS)
        return rc_fail(err, "results database %s has the older schema version %lld (this radcap writes %d); open it "
                       "once for writing (e.g. radcap eval) to migrate it", s->path, (long long)version,
                       N_SCHEMA_STEPS);
    return 0;
}

int store_open(const char *path, int flags, store **out, rc_error *err)
{
    *out = NULL;
    store *s = calloc(1, sizeof *s);
    if (!s || !(s->path = strdup(path))) {
        free(s);
        return rc_fail(err, "out of memory opening results database %s", path);
    }
    s->read_only = (flags & STORE_READ_ONLY) != 0;
    struct stat st;
    if ((s->read_only || (flags & STORE_NO_CREATE)) && stat(path, &st) != 0) {
        rc_fail(err, "results database %s: %s", path, strerror(errno));
        store_close(s, NULL);
        return -1;
    }
    int open_flags = s->read_only ? SQLITE_OPEN_READONLY
                                  : SQLITE_OPEN_READWRITE | ((flags & STORE_NO_CREATE) ? 0 : SQLITE_OPEN_CREATE);
    int status = 0;
    if (sqlite3_open_v2(path, &s->db, open_flags | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK)
        status = fail(s, "opening", err);
    if (status == 0 && sqlite3_extended_result_codes(s->db, 1) != SQLITE_OK)
        status = fail(s, "enabling extended result codes", err);
    if (status == 0)
        status = store_set_busy_timeout(s, 30000, err);
    if (status == 0)
        status = exec(s, "PRAGMA foreign_keys = ON", "enabling foreign keys", err);
    if (status == 0 && !s->read_only) {
        /* journal_mode answers with the mode in force, which is not WAL on
         * file systems that cannot share memory between processes. */
        sqlite3_stmt *stmt = prepare(s, "PRAGMA journal_mode = WAL", "setting WAL journal mode", err);
        status = stmt ? 0 : -1;
        if (stmt) {
            int rc = sqlite3_step(stmt);
            if (rc != SQLITE_ROW)
                status = fail(s, "setting WAL journal mode", err);
            else if (strcmp((const char *)sqlite3_column_text(stmt, 0), "wal") != 0 && strcmp(path, ":memory:") != 0)
                status = rc_fail(err, "results database %s: setting WAL journal mode: the file system allows only "
                                 "'%s'", path, (const char *)sqlite3_column_text(stmt, 0));
            status = finalize(s, stmt, status, "setting WAL journal mode", err);
        }
        if (status == 0)
            status = exec(s, "PRAGMA synchronous = FULL", "setting synchronous = FULL", err);
        if (status == 0)
            status = store_migrate(s->db, s->path, schema_steps, N_SCHEMA_STEPS, err);
    } else if (status == 0) {
        status = check_schema_read_only(s, err);
    }
    if (status < 0) {
        store_close(s, NULL);
        return -1;
    }
    *out = s;
    return 0;
}

int store_close(store *s, rc_error *err)
{
    if (!s)
        return 0;
    int status = 0;
    if (s->db && !sqlite3_get_autocommit(s->db))
        status = exec(s, "ROLLBACK", "rolling back an unfinished batch", err);
    for (int i = 0; i < N_STMTS; i++)
        if (s->stmts[i] && sqlite3_finalize(s->stmts[i]) != SQLITE_OK && status == 0)
            status = fail(s, "finalising a statement", err);
    if (s->db && sqlite3_close(s->db) != SQLITE_OK && status == 0)
        status = fail(s, "closing", err);
    free(s->json);
    free(s->path);
    free(s);
    return status;
}

/* ---- runs --------------------------------------------------------------- */

const char *store_run_status_name(store_run_status status)
{
    switch (status) {
    case STORE_RUN_RUNNING: return "running";
    case STORE_RUN_COMPLETED: return "completed";
    case STORE_RUN_INTERRUPTED: return "interrupted";
    case STORE_RUN_FAILED: return "failed";
    }
    return "unknown";
}

static store_run_status run_status_parse(const char *name)
{
    for (store_run_status st = STORE_RUN_RUNNING; st <= STORE_RUN_FAILED; st++)
        if (name && strcmp(name, store_run_status_name(st)) == 0)
            return st;
    return STORE_RUN_FAILED;
}

void store_fingerprint(const char *config_json, const char *checkpoint_sha256, const char *vocab_sha256,
                       char out[SHA256_HEX_SIZE])
{
    const char *parts[3] = {config_json, checkpoint_sha256, vocab_sha256};
    sha256_ctx ctx;
    sha256_init(&ctx);
    for (int i = 0; i < 3; i++) {
        const char *part = parts[i] ? parts[i] : "";
        sha256_update(&ctx, part, strlen(part) + 1); /* with its NUL: parts cannot run together */
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_final(&ctx, digest);
    sha256_to_hex(digest, out);
}

/* The hosts as a JSON array (malloc'd), or NULL when there are none. */
static char *hosts_json(const store_run_info *info, int *failed)
{
    *failed = 0;
    if (!info->hosts || info->n_hosts <= 0)
        return NULL;
    cJSON *array = cJSON_CreateArray();
    for (int i = 0; array && i < info->n_hosts; i++) {
        cJSON *host = cJSON_CreateString(info->hosts[i] ? info->hosts[i] : "");
        if (!host || !cJSON_AddItemToArray(array, host)) {
            cJSON_Delete(host);
            cJSON_Delete(array);
            array = NULL;
        }
    }
    char *text = array ? cJSON_PrintUnformatted(array) : NULL;
    cJSON_Delete(array);
    *failed = text == NULL;
    return text;
}

int store_run_create(store *s, const store_run_info *info, int64_t *run_id, rc_error *err)
{
    *run_id = 0;
    if (!info->config_json || !info->fingerprint)
        return rc_fail(err, "results database %s: a run needs its configuration JSON and fingerprint", s->path);
    int failed;
    char *hosts = hosts_json(info, &failed);
    if (failed)
        return rc_fail(err, "results database %s: out of memory recording the hosts of a run", s->path);
    const char *step = "creating a run";
    sqlite3_stmt *stmt = prepare(s,
                                 "INSERT INTO runs (started_at, updated_at, status, fingerprint, config_json, manifest, "
                                 "checkpoint_sha256, vocab_sha256, hosts, n_ranks, n_total) "
                                 "VALUES (" NOW ", " NOW ", 'running', ?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)",
                                 step, err);
    int status = stmt ? 0 : -1;
    if (stmt) {
        binder b = {stmt, 0, SQLITE_OK};
        bind_text(&b, info->fingerprint);
        bind_text(&b, info->config_json);
        bind_text(&b, info->manifest);
        bind_text(&b, info->checkpoint_sha256);
        bind_text(&b, info->vocab_sha256);
        bind_text(&b, hosts);
        bind_count(&b, info->n_ranks);
        bind_count(&b, info->n_total);
        status = bound(s, &b, step, err);
        if (status == 0 && sqlite3_step(stmt) != SQLITE_DONE)
            status = sqlite3_extended_errcode(s->db) == SQLITE_CONSTRAINT_CHECK
                         ? rc_fail(err, "results database %s: %s: the configuration is not valid JSON", s->path, step)
                         : fail(s, step, err);
        status = finalize(s, stmt, status, step, err);
    }
    free(hosts);
    if (status == 0)
        *run_id = sqlite3_last_insert_rowid(s->db);
    return status;
}

int store_run_find_resumable(store *s, const char *fingerprint, int64_t *run_id, rc_error *err)
{
    *run_id = 0;
    const char *step = "looking for a run to resume";
    sqlite3_stmt *stmt = prepare(s,
                                 "SELECT id FROM runs WHERE fingerprint = ?1 AND status <> 'completed' "
                                 "ORDER BY id DESC LIMIT 1",
                                 step, err);
    if (!stmt)
        return -1;
    binder b = {stmt, 0, SQLITE_OK};
    bind_text(&b, fingerprint);
    int status = bound(s, &b, step, err);
    if (status == 0) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW)
            *run_id = sqlite3_column_int64(stmt, 0);
        else if (rc != SQLITE_DONE)
            status = fail(s, step, err);
    }
    return finalize(s, stmt, status, step, err);
}

/* Runs a one-off UPDATE that must change exactly one run. */
static int update_one_run(store *s, sqlite3_stmt *stmt, binder *b, int64_t run_id, const char *step, rc_error *err)
{
    int status = bound(s, b, step, err);
    if (status == 0 && sqlite3_step(stmt) != SQLITE_DONE)
        status = fail(s, step, err);
    if (status == 0 && sqlite3_changes(s->db) != 1)
        status = rc_fail(err, "results database %s: %s: there is no run %lld", s->path, step, (long long)run_id);
    return finalize(s, stmt, status, step, err);
}

int store_run_resume(store *s, int64_t run_id, const store_run_info *info, rc_error *err)
{
    int failed;
    char *hosts = hosts_json(info, &failed);
    if (failed)
        return rc_fail(err, "results database %s: out of memory recording the hosts of a run", s->path);
    const char *step = "resuming a run";
    sqlite3_stmt *stmt = prepare(s,
                                 "UPDATE runs SET status = 'running', finished_at = NULL, updated_at = " NOW ", "
                                 "message = NULL, hosts = coalesce(?1, hosts), n_ranks = coalesce(?2, n_ranks), "
                                 "n_total = coalesce(?3, n_total), n_resumes = n_resumes + 1 WHERE id = ?4",
                                 step, err);
    int status = -1;
    if (stmt) {
        binder b = {stmt, 0, SQLITE_OK};
        bind_text(&b, hosts);
        bind_count(&b, info->n_ranks > 0 ? info->n_ranks : -1);
        bind_count(&b, info->n_total);
        bind_int64(&b, run_id);
        status = update_one_run(s, stmt, &b, run_id, step, err);
    }
    free(hosts);
    return status;
}

int store_run_finish(store *s, int64_t run_id, store_run_status run_status, const char *message, int64_t n_skipped,
                     rc_error *err)
{
    if (run_status == STORE_RUN_RUNNING)
        return rc_fail(err, "results database %s: a run cannot finish with status 'running'", s->path);
    const char *step = "finishing a run";
    sqlite3_stmt *stmt = prepare(s,
                                 "UPDATE runs SET status = ?1, message = ?2, finished_at = " NOW ", updated_at = " NOW
                                 ", n_skipped = coalesce(?3, n_skipped), "
                                 "n_ok = (SELECT count(*) FROM items WHERE run_id = runs.id AND status = 'ok'), "
                                 "n_error = (SELECT count(*) FROM items WHERE run_id = runs.id AND status = 'error') "
                                 "WHERE id = ?4",
                                 step, err);
    if (!stmt)
        return -1;
    binder b = {stmt, 0, SQLITE_OK};
    bind_text(&b, store_run_status_name(run_status));
    bind_text(&b, message);
    bind_count(&b, n_skipped);
    bind_int64(&b, run_id);
    return update_one_run(s, stmt, &b, run_id, step, err);
}

static void copy_column_text(sqlite3_stmt *stmt, int col, char *out, size_t cap)
{
    const char *text = (const char *)sqlite3_column_text(stmt, col);
    snprintf(out, cap, "%s", text ? text : "");
}

int store_run_get(store *s, int64_t run_id, store_run_summary *out, rc_error *err)
{
    memset(out, 0, sizeof *out);
    const char *step = "reading a run";
    sqlite3_stmt *stmt = prepare(s,
                                 "SELECT id, status, started_at, finished_at, n_total, n_ok, n_error, n_skipped, "
                                 "n_ranks, n_resumes FROM runs WHERE id = ?1",
                                 step, err);
    if (!stmt)
        return -1;
    int status = bind_run_id(s, stmt, run_id, step, err);
    if (status == 0) {
        int rc = sqlite3_step(stmt);
        if (rc == SQLITE_ROW) {
            out->id = sqlite3_column_int64(stmt, 0);
            out->status = run_status_parse((const char *)sqlite3_column_text(stmt, 1));
            copy_column_text(stmt, 2, out->started_at, sizeof out->started_at);
            copy_column_text(stmt, 3, out->finished_at, sizeof out->finished_at);
            out->n_total = sqlite3_column_type(stmt, 4) == SQLITE_NULL ? -1 : sqlite3_column_int64(stmt, 4);
            out->n_ok = sqlite3_column_int64(stmt, 5);
            out->n_error = sqlite3_column_int64(stmt, 6);
            out->n_skipped = sqlite3_column_int64(stmt, 7);
            out->n_ranks = sqlite3_column_int(stmt, 8);
            out->n_resumes = sqlite3_column_int(stmt, 9);
        } else if (rc == SQLITE_DONE) {
            status = rc_fail(err, "results database %s holds no run %lld", s->path, (long long)run_id);
        } else {
            status = fail(s, step, err);
        }
    }
    return finalize(s, stmt, status, step, err);
}

int store_latest_run(store *s, int64_t *run_id, rc_error *err)
{
    return db_query_int(s->db, s->path, "SELECT coalesce(max(id), 0) FROM runs", "finding the latest run", run_id,
                        err);
}

int store_last_completed_run(store *s, int64_t *run_id, rc_error *err)
{
    return db_query_int(s->db, s->path, "SELECT coalesce(max(id), 0) FROM runs WHERE status = 'completed'",
                        "finding the last completed run", run_id, err);
}

/* ---- writing ------------------------------------------------------------ */

void store_item_init(store_item *item)
{
    memset(item, 0, sizeof *item);
    item->seq = item->file_size = item->file_mtime_ns = -1;
    item->mean_logprob = item->min_token_prob = NAN;
    item->decode_seconds = item->infer_seconds = NAN;
    item->rank = -1;
}

int store_begin(store *s, rc_error *err)
{
    if (s->in_batch)
        return rc_fail(err, "results database %s: a batch is already open", s->path);
    if (exec(s, "BEGIN IMMEDIATE", "starting a batch", err) < 0)
        return -1;
    s->in_batch = 1;
    return 0;
}

int store_commit(store *s, rc_error *err)
{
    if (!s->in_batch)
        return rc_fail(err, "results database %s: committing: no batch is open", s->path);
    if (exec(s, "COMMIT", "committing a batch", err) < 0)
        return -1; /* still open: the caller may retry or roll back */
    s->in_batch = 0;
    return 0;
}

int store_rollback(store *s, rc_error *err)
{
    s->in_batch = 0;
    if (sqlite3_get_autocommit(s->db))
        return 0;
    return exec(s, "ROLLBACK", "rolling back a batch", err);
}

int store_in_batch(const store *s) { return s->in_batch; }

/* Appends text to the JSON scratch buffer. */
static int json_append(store *s, size_t *used, const char *text, size_t len)
{
    if (*used + len + 1 > s->json_cap) {
        size_t cap = s->json_cap ? s->json_cap : 1024;
        while (cap < *used + len + 1)
            cap *= 2;
        char *grown = realloc(s->json, cap);
        if (!grown)
            return -1;
        s->json = grown;
        s->json_cap = cap;
    }
    memcpy(s->json + *used, text, len);
    *used += len;
    s->json[*used] = '\0';
    return 0;
}

/* A JSON array of n numbers (ints or floats) in s->json; NULL when out of
 * memory. Floats keep 9 significant digits: enough to give back the float. */
static const char *json_numbers(store *s, const int *ints, const float *floats, int n)
{
    size_t used = 0;
    if (json_append(s, &used, "[", 1) < 0)
        return NULL;
    for (int i = 0; i < n; i++) {
        char number[32];
        int len = ints ? snprintf(number, sizeof number, "%s%d", i ? "," : "", ints[i])
                       : snprintf(number, sizeof number, "%s%.9g", i ? "," : "", (double)floats[i]);
        if (json_append(s, &used, number, (size_t)len) < 0)
            return NULL;
    }
    return json_append(s, &used, "]", 1) < 0 ? NULL : s->json;
}

int store_put_item(store *s, int64_t run_id, const store_item *item, rc_error *err)
{
    const char *step = statements[ST_PUT_ITEM].step;
    if (!item->image_id || !item->path)
        return rc_fail(err, "results database %s: %s: an item needs an image id and a path", s->path, step);
    if (!item->ok && !item->error)
        return rc_fail(err, "results database %s: %s: failed item %s has no error text", s->path, step,
                       item->image_id);
    sqlite3_stmt *stmt = stmt_get(s, ST_PUT_ITEM, err);
    if (!stmt)
        return -1;
    binder b = {stmt, 0, SQLITE_OK};
    bind_int64(&b, run_id);
    bind_text(&b, item->image_id);
    bind_text(&b, item->path);
    bind_count(&b, item->seq);
    bind_count(&b, item->file_size);
    bind_count(&b, item->file_mtime_ns);
    bind_text(&b, item->content_sha256);
    bind_text(&b, item->ok ? "ok" : "error");
    bind_text(&b, item->ok ? NULL : item->error);
    bind_text(&b, item->ok ? item->caption : NULL);
    const char *ids = NULL, *probs = NULL;
    if (item->ok && item->token_ids && !(ids = json_numbers(s, item->token_ids, NULL, item->n_tokens)))
        b.rc = SQLITE_NOMEM;
    bind_text(&b, ids); /* bind_text copies, so the scratch buffer can be reused */
    if (item->ok && item->token_probs && !(probs = json_numbers(s, NULL, item->token_probs, item->n_tokens)))
        b.rc = SQLITE_NOMEM;
    bind_text(&b, probs);
    bind_real(&b, item->mean_logprob);
    bind_real(&b, item->min_token_prob);
    bind_real(&b, item->decode_seconds);
    bind_real(&b, item->infer_seconds);
    bind_count(&b, item->rank);
    if (bound(s, &b, step, err) < 0)
        return -1;
    if (stmt_run(s, stmt, step, err) < 0)
        return rc_prefix(err, "image %s", item->image_id);
    return 0;
}

int store_put_items(store *s, int64_t run_id, const store_item *items, size_t n, rc_error *err)
{
    if (store_begin(s, err) < 0)
        return -1;
    for (size_t i = 0; i < n; i++) {
        if (store_put_item(s, run_id, &items[i], err) < 0) {
            rc_error ignored;
            store_rollback(s, &ignored);
            return -1;
        }
    }
    if (store_commit(s, err) < 0) {
        rc_error ignored;
        store_rollback(s, &ignored);
        return -1;
    }
    return 0;
}

int store_put_references(store *s, int64_t run_id, const char *image_id, const char *const *captions,
                         const char *const *tokens, int n, rc_error *err)
{
    const char *step = statements[ST_PUT_REFERENCE].step;
    sqlite3_stmt *stmt = stmt_get(s, ST_PUT_REFERENCE, err);
    if (!stmt)
        return -1;
    for (int k = 0; k < n; k++) {
        binder b = {stmt, 0, SQLITE_OK};
        bind_int64(&b, run_id);
        bind_text(&b, image_id);
        bind_int64(&b, k);
        bind_text(&b, captions[k]);
        bind_text(&b, tokens ? tokens[k] : NULL);
        if (bound(s, &b, step, err) < 0 || stmt_run(s, stmt, step, err) < 0)
            return rc_prefix(err, "image %s", image_id);
    }
    return 0;
}

int store_put_item_scores(store *s, int64_t run_id, const char *image_id, const char *caption_tokens,
                          const store_score *scores, int n, rc_error *err)
{
    if (caption_tokens) {
        const char *step = statements[ST_SET_CAPTION_TOKENS].step;
        sqlite3_stmt *stmt = stmt_get(s, ST_SET_CAPTION_TOKENS, err);
        if (!stmt)
            return -1;
        binder b = {stmt, 0, SQLITE_OK};
        bind_int64(&b, run_id);
        bind_text(&b, image_id);
        bind_text(&b, caption_tokens);
        if (bound(s, &b, step, err) < 0 || stmt_run(s, stmt, step, err) < 0)
            return rc_prefix(err, "image %s", image_id);
    }
    const char *step = statements[ST_PUT_ITEM_SCORE].step;
    sqlite3_stmt *stmt = stmt_get(s, ST_PUT_ITEM_SCORE, err);
    if (!stmt)
        return -1;
    for (int k = 0; k < n; k++) {
        binder b = {stmt, 0, SQLITE_OK};
        bind_int64(&b, run_id);
        bind_text(&b, image_id);
        bind_text(&b, scores[k].metric);
        bind_real(&b, scores[k].value);
        if (bound(s, &b, step, err) < 0 || stmt_run(s, stmt, step, err) < 0)
            return rc_prefix(err, "image %s, metric %s", image_id, scores[k].metric);
    }
    return 0;
}

int store_put_corpus_scores(store *s, int64_t run_id, const store_score *scores, int n, int64_t n_images,
                            rc_error *err)
{
    const char *step = statements[ST_PUT_CORPUS_SCORE].step;
    sqlite3_stmt *stmt = stmt_get(s, ST_PUT_CORPUS_SCORE, err);
    if (!stmt)
        return -1;
    for (int k = 0; k < n; k++) {
        binder b = {stmt, 0, SQLITE_OK};
        bind_int64(&b, run_id);
        bind_text(&b, scores[k].metric);
        bind_real(&b, scores[k].value);
        bind_count(&b, n_images);
        if (bound(s, &b, step, err) < 0 || stmt_run(s, stmt, step, err) < 0)
            return rc_prefix(err, "metric %s", scores[k].metric);
    }
    return 0;
}

/* ---- reading ------------------------------------------------------------ */

int store_done_ids(store *s, int64_t run_id, store_idset *out, rc_error *err)
{
    memset(out, 0, sizeof *out);
    const char *step = "listing the images already done";
    /* The UNIQUE (run_id, image_id) index yields them in BINARY collation
     * order, which is strcmp's order for NUL-free strings. */
    sqlite3_stmt *stmt = prepare(s,
                                 "SELECT image_id FROM items WHERE run_id = ?1 AND status = 'ok' "
                                 "ORDER BY image_id",
                                 step, err);
    if (!stmt)
        return -1;
    int status = bind_run_id(s, stmt, run_id, step, err);
    size_t used = 0, text_cap = 0, offsets_cap = 0;
    int rc;
    while (status == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(stmt, 0);
        size_t len = (size_t)sqlite3_column_bytes(stmt, 0);
        if (used + len + 1 > text_cap) {
            size_t cap = text_cap ? 2 * text_cap : 4096;
            while (cap < used + len + 1)
                cap *= 2;
            char *grown = realloc(out->text, cap);
            if (!grown) {
                status = rc_fail(err, "results database %s: %s: out of memory", s->path, step);
                break;
            }
            out->text = grown;
            text_cap = cap;
        }
        if (out->n == offsets_cap) {
            size_t cap = offsets_cap ? 2 * offsets_cap : 1024;
            size_t *grown = realloc(out->offsets, cap * sizeof *grown);
            if (!grown) {
                status = rc_fail(err, "results database %s: %s: out of memory", s->path, step);
                break;
            }
            out->offsets = grown;
            offsets_cap = cap;
        }
        memcpy(out->text + used, id ? id : "", len);
        out->text[used + len] = '\0';
        out->offsets[out->n++] = used;
        used += len + 1;
    }
    if (status == 0 && rc != SQLITE_DONE)
        status = fail(s, step, err);
    status = finalize(s, stmt, status, step, err);
    if (status < 0)
        store_idset_free(out);
    return status;
}

int store_idset_contains(const store_idset *set, const char *id)
{
    size_t lo = 0, hi = set->n;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(set->text + set->offsets[mid], id);
        if (c == 0)
            return 1;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return 0;
}

void store_idset_free(store_idset *set)
{
    free(set->text);
    free(set->offsets);
    memset(set, 0, sizeof *set);
}

int store_file_unchanged(store *s, const char *path, int64_t size, int64_t mtime_ns, const char *sha256,
                         int *unchanged, rc_error *err)
{
    *unchanged = 0;
    const char *step = statements[ST_LAST_OK_FILE].step;
    sqlite3_stmt *stmt = stmt_get(s, ST_LAST_OK_FILE, err);
    if (!stmt)
        return -1;
    binder b = {stmt, 0, SQLITE_OK};
    bind_text(&b, path);
    if (bound(s, &b, step, err) < 0)
        return -1;
    int rc = sqlite3_step(stmt);
    if (rc == SQLITE_ROW) {
        if (sha256) {
            const char *stored = (const char *)sqlite3_column_text(stmt, 2);
            *unchanged = stored && strcmp(stored, sha256) == 0;
        } else {
            *unchanged = sqlite3_column_type(stmt, 0) != SQLITE_NULL && sqlite3_column_type(stmt, 1) != SQLITE_NULL &&
                         sqlite3_column_int64(stmt, 0) == size && sqlite3_column_int64(stmt, 1) == mtime_ns;
        }
    } else if (rc != SQLITE_DONE) {
        fail(s, step, err);
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        return -1;
    }
    return stmt_done(s, stmt, step, err);
}

static double column_real(sqlite3_stmt *stmt, int col)
{
    return sqlite3_column_type(stmt, col) == SQLITE_NULL ? NAN : sqlite3_column_double(stmt, col);
}

/* One item's scores, kept until the next item. */
typedef struct score_buf {
    store_score *scores;   // (n) metric names point into names once loaded
    size_t *name_offsets;  // (n) where each metric name starts in names
    int n, cap;
    char *names;           // metric names, NUL-terminated, one after another
    size_t names_used, names_cap;
} score_buf;

/* Appends one score; -1 when out of memory. */
static int score_buf_add(score_buf *buf, const char *metric, size_t len, double value)
{
    if (buf->n == buf->cap) {
        int cap = buf->cap ? 2 * buf->cap : 8;
        store_score *scores = realloc(buf->scores, (size_t)cap * sizeof *scores);
        if (!scores)
            return -1;
        buf->scores = scores;
        size_t *offsets = realloc(buf->name_offsets, (size_t)cap * sizeof *offsets);
        if (!offsets)
            return -1;
        buf->name_offsets = offsets;
        buf->cap = cap;
    }
    if (buf->names_used + len + 1 > buf->names_cap) {
        size_t cap = buf->names_cap ? 2 * buf->names_cap : 256;
        while (cap < buf->names_used + len + 1)
            cap *= 2;
        char *grown = realloc(buf->names, cap);
        if (!grown)
            return -1;
        buf->names = grown;
        buf->names_cap = cap;
    }
    memcpy(buf->names + buf->names_used, metric ? metric : "", len);
    buf->names[buf->names_used + len] = '\0';
    buf->name_offsets[buf->n] = buf->names_used;
    buf->names_used += len + 1;
    buf->scores[buf->n++].value = value;
    return 0;
}

static void score_buf_free(score_buf *buf)
{
    free(buf->scores);
    free(buf->name_offsets);
    free(buf->names);
}

static int load_item_scores(store *s, int64_t run_id, const char *image_id, score_buf *buf, rc_error *err)
{
    const char *step = statements[ST_ITEM_SCORES].step;
    sqlite3_stmt *stmt = stmt_get(s, ST_ITEM_SCORES, err);
    if (!stmt)
        return -1;
    binder b = {stmt, 0, SQLITE_OK};
    bind_int64(&b, run_id);
    bind_text(&b, image_id);
    if (bound(s, &b, step, err) < 0)
        return -1;
    buf->n = 0;
    buf->names_used = 0;
    int rc, status = 0;
    while ((rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (score_buf_add(buf, (const char *)sqlite3_column_text(stmt, 0), (size_t)sqlite3_column_bytes(stmt, 0),
                          column_real(stmt, 1)) < 0) {
            status = rc_fail(err, "results database %s: %s: out of memory", s->path, step);
            break;
        }
    }
    if (status == 0 && rc != SQLITE_DONE)
        status = fail(s, step, err);
    if (status < 0) {
        sqlite3_reset(stmt);
        sqlite3_clear_bindings(stmt);
        return -1;
    }
    for (int k = 0; k < buf->n; k++)
        buf->scores[k].metric = buf->names + buf->name_offsets[k];
    return stmt_done(s, stmt, step, err);
}

int store_foreach_item(store *s, int64_t run_id, int with_scores,
                       int (*fn)(void *user, const store_item_row *row), void *user, rc_error *err)
{
    const char *step = "reading the items of a run";
    sqlite3_stmt *stmt = prepare(s,
                                 "SELECT image_id, path, seq, status, error, caption, token_ids, caption_tokens, "
                                 "mean_logprob, min_token_prob, decode_seconds, infer_seconds, worker_rank, attempts "
                                 "FROM items WHERE run_id = ?1 ORDER BY seq IS NULL, seq, image_id",
                                 step, err);
    if (!stmt)
        return -1;
    int status = bind_run_id(s, stmt, run_id, step, err);
    score_buf scores = {0};
    int rc = SQLITE_DONE;
    while (status == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        store_item_row row = {
            .image_id = (const char *)sqlite3_column_text(stmt, 0),
            .path = (const char *)sqlite3_column_text(stmt, 1),
            .seq = sqlite3_column_type(stmt, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(stmt, 2),
            .error = (const char *)sqlite3_column_text(stmt, 4),
            .caption = (const char *)sqlite3_column_text(stmt, 5),
            .token_ids_json = (const char *)sqlite3_column_text(stmt, 6),
            .caption_tokens = (const char *)sqlite3_column_text(stmt, 7),
            .mean_logprob = column_real(stmt, 8),
            .min_token_prob = column_real(stmt, 9),
            .decode_seconds = column_real(stmt, 10),
            .infer_seconds = column_real(stmt, 11),
            .rank = sqlite3_column_type(stmt, 12) == SQLITE_NULL ? -1 : sqlite3_column_int(stmt, 12),
            .attempts = sqlite3_column_int(stmt, 13),
        };
        const char *item_status = (const char *)sqlite3_column_text(stmt, 3);
        row.ok = item_status && strcmp(item_status, "ok") == 0;
        if (with_scores) {
            if (load_item_scores(s, run_id, row.image_id, &scores, err) < 0) {
                status = -1;
                break;
            }
            row.scores = scores.scores;
            row.n_scores = scores.n;
        }
        status = fn(user, &row);
    }
    if (status == 0 && rc != SQLITE_DONE)
        status = fail(s, step, err);
    score_buf_free(&scores);
    return finalize(s, stmt, status, step, err);
}

int store_foreach_reference(store *s, int64_t run_id,
                            int (*fn)(void *user, const char *image_id, int ref_index, const char *caption,
                                      const char *tokens),
                            void *user, rc_error *err)
{
    const char *step = "reading the reference captions of a run";
    sqlite3_stmt *stmt = prepare(s,
                                 "SELECT image_id, ref_index, caption, tokens FROM reference_captions "
                                 "WHERE run_id = ?1 ORDER BY image_id, ref_index",
                                 step, err);
    if (!stmt)
        return -1;
    int status = bind_run_id(s, stmt, run_id, step, err);
    int rc = SQLITE_DONE;
    while (status == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW)
        status = fn(user, (const char *)sqlite3_column_text(stmt, 0), sqlite3_column_int(stmt, 1),
                    (const char *)sqlite3_column_text(stmt, 2), (const char *)sqlite3_column_text(stmt, 3));
    if (status == 0 && rc != SQLITE_DONE)
        status = fail(s, step, err);
    return finalize(s, stmt, status, step, err);
}

int store_foreach_corpus_score(store *s, int64_t run_id,
                               int (*fn)(void *user, const char *metric, double value, int64_t n_images),
                               void *user, rc_error *err)
{
    const char *step = "reading the corpus scores of a run";
    sqlite3_stmt *stmt = prepare(s,
                                 "SELECT metric, value, n_images FROM corpus_scores WHERE run_id = ?1 ORDER BY metric",
                                 step, err);
    if (!stmt)
        return -1;
    int status = bind_run_id(s, stmt, run_id, step, err);
    int rc = SQLITE_DONE;
    while (status == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW)
        status = fn(user, (const char *)sqlite3_column_text(stmt, 0), column_real(stmt, 1),
                    sqlite3_column_type(stmt, 2) == SQLITE_NULL ? -1 : sqlite3_column_int64(stmt, 2));
    if (status == 0 && rc != SQLITE_DONE)
        status = fail(s, step, err);
    return finalize(s, stmt, status, step, err);
}

void store_free_names(char **names, int n)
{
    for (int i = 0; names && i < n; i++)
        free(names[i]);
    free(names);
}

int store_run_metric_names(store *s, int64_t run_id, char ***names, int *n, rc_error *err)
{
    *names = NULL;
    *n = 0;
    const char *step = "listing the metrics of a run";
    sqlite3_stmt *stmt = prepare(s, "SELECT DISTINCT metric FROM item_scores WHERE run_id = ?1 ORDER BY metric", step,
                                 err);
    if (!stmt)
        return -1;
    int status = bind_run_id(s, stmt, run_id, step, err);
    int rc = SQLITE_DONE, cap = 0;
    while (status == 0 && (rc = sqlite3_step(stmt)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 8;
            char **grown = realloc(*names, (size_t)cap * sizeof *grown);
            if (!grown) {
                status = rc_fail(err, "results database %s: %s: out of memory", s->path, step);
                break;
            }
            *names = grown;
        }
        const char *metric = (const char *)sqlite3_column_text(stmt, 0);
        if (!((*names)[*n] = strdup(metric ? metric : ""))) {
            status = rc_fail(err, "results database %s: %s: out of memory", s->path, step);
            break;
        }
        (*n)++;
    }
    if (status == 0 && rc != SQLITE_DONE)
        status = fail(s, step, err);
    status = finalize(s, stmt, status, step, err);
    if (status < 0) {
        store_free_names(*names, *n);
        *names = NULL;
        *n = 0;
    }
    return status;
}
