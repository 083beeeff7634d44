/* test_store.c: the SQLite results store: schema and migrations, run
 * lifecycle and resume semantics, batched commits, read-back, `radcap
 * export` byte for byte, and a kill -9 crash test.
 *
 * Expected values are written by hand from the data each test puts in;
 * other checks go through plain SQL on the file (a second connection), not
 * through the store's own read functions. */
#include <errno.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "io/csv.h"
#include "io/store.h"
#include "pipeline/commands.h"
#include "tests/helpers/testutil.h"

/* ---- helpers ------------------------------------------------------------- */

typedef struct fixture {
    char *dir;     // temporary folder
    char db[4200]; // dir/results.db
} fixture;

static int setup(void **state)
{
    fixture *f = calloc(1, sizeof *f);
    f->dir = tu_mkdtemp("store");
    if (!f->dir)
        return -1;
    snprintf(f->db, sizeof f->db, "%s/results.db", f->dir);
    *state = f;
    return 0;
}

static int teardown(void **state)
{
    fixture *f = *state;
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", f->dir);
    tu_run(cmd);
    free(f->dir);
    free(f);
    return 0;
}

/* First column of the first row of sql on a fresh connection to path, as
 * malloc'd text ("NULL" for NULL, "" for no row). */
static char *sql_text(const char *path, const char *sql)
{
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_stmt *stmt = NULL;
    if (sqlite3_prepare_v2(db, sql, -1, &stmt, NULL) != SQLITE_OK)
        fail_msg("%s: %s", sql, sqlite3_errmsg(db));
    int rc = sqlite3_step(stmt);
    char *out;
    if (rc == SQLITE_ROW) {
        const char *text = (const char *)sqlite3_column_text(stmt, 0);
        out = strdup(text ? text : "NULL");
    } else {
        assert_int_equal(rc, SQLITE_DONE);
        out = strdup("");
    }
    assert_int_equal(sqlite3_finalize(stmt), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    return out;
}

static void assert_sql(const char *path, const char *sql, const char *expected)
{
    char *got = sql_text(path, sql);
    if (strcmp(got, expected) != 0)
        fail_msg("%s\n  got      '%s'\n  expected '%s'", sql, got, expected);
    free(got);
}

static int64_t sql_int(const char *path, const char *sql)
{
    char *text = sql_text(path, sql);
    int64_t v = strtoll(text, NULL, 10);
    free(text);
    return v;
}

static store *open_store(const char *path)
{
    store *s = NULL;
    rc_error err = {{0}};
    if (store_open(path, 0, &s, &err) < 0)
        fail_msg("%s", err.msg);
    return s;
}

static void close_store(store *s)
{
    rc_error err = {{0}};
    if (store_close(s, &err) < 0)
        fail_msg("%s", err.msg);
}

static store_run_info run_info(const char *fingerprint)
{
    static const char *const hosts[] = {"node1", "node2"};
    store_run_info info = {
        .config_json = "{\"batch\": 8, \"beam\": 1}",
        .fingerprint = fingerprint,
        .manifest = "/data/valid_captions.csv",
        .checkpoint_sha256 = "ab12",
        .vocab_sha256 = "cd34",
        .hosts = hosts,
        .n_hosts = 2,
        .n_ranks = 3,
        .n_total = 3,
    };
    return info;
}

static int64_t create_run(store *s, const char *fingerprint)
{
    store_run_info info = run_info(fingerprint);
    int64_t id = 0;
    rc_error err = {{0}};
    if (store_run_create(s, &info, &id, &err) < 0)
        fail_msg("%s", err.msg);
    return id;
}

static store_item ok_item(const char *id, const char *path, int64_t seq, const char *caption)
{
    store_item item;
    store_item_init(&item);
    item.image_id = id;
    item.path = path;
    item.seq = seq;
    item.ok = 1;
    item.caption = caption;
    return item;
}

static store_item error_item(const char *id, const char *path, int64_t seq, const char *error)
{
    store_item item = ok_item(id, path, seq, NULL);
    item.ok = 0;
    item.error = error;
    return item;
}

static void put(store *s, int64_t run, const store_item *item)
{
    rc_error err = {{0}};
    if (store_put_item(s, run, item, &err) < 0)
        fail_msg("%s", err.msg);
}

/* ---- schema and migrations ----------------------------------------------- */

static void test_schema_created(void **state)
{
    fixture *f = *state;
    store *s = open_store(f->db);
    close_store(s);
    char expected[64];
    snprintf(expected, sizeof expected, "%d", store_schema_version());
    assert_sql(f->db, "PRAGMA user_version", expected);
    assert_sql(f->db, "PRAGMA application_id", "1380139344"); /* 0x52434150, "RCAP" */
    assert_sql(f->db, "PRAGMA journal_mode", "wal");
    assert_sql(f->db,
               "SELECT group_concat(name, ' ') FROM (SELECT name FROM sqlite_schema WHERE type = 'table' ORDER BY name)",
               "corpus_scores item_scores items reference_captions runs schema_history");
    assert_sql(f->db, "SELECT group_concat(version || ':' || (applied_at LIKE '20__-__-__T__:__:__.___Z'), ' ') "
                      "FROM schema_history", "1:1 2:1");
    assert_sql(f->db, "SELECT group_concat(name, ' ') FROM sqlite_schema WHERE type = 'view'", "latest_items");
    /* Opening again applies nothing twice. */
    s = open_store(f->db);
    close_store(s);
    assert_sql(f->db, "SELECT count(*) FROM schema_history", expected);
}

static const store_migration synthetic_steps[] = {
    {"create t", "CREATE TABLE t (a INTEGER)"},
    {"add column b", "ALTER TABLE t ADD COLUMN b INTEGER"},
    {"first row", "INSERT INTO t VALUES (1, 2)"},
    {"second row", "INSERT INTO t VALUES (3, 4)"},
    {"broken step", "INSERT INTO no_such_table VALUES (1)"},
};

static void test_migration_mechanism(void **state)
{
    fixture *f = *state;
    char path[4300];
    snprintf(path, sizeof path, "%s/synthetic.db", f->dir);
    sqlite3 *db = NULL;
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    rc_error err = {{0}};

    /* Version 2 first, as an older program would have left it. */
    assert_int_equal(store_migrate(db, path, synthetic_steps, 2, &err), 0);
    assert_sql(path, "PRAGMA user_version", "2");
    assert_sql(path, "SELECT count(*) FROM t", "0");
    /* The newer program applies only step 3 (re-running step 1 would fail:
     * the table exists). */
    assert_int_equal(store_migrate(db, path, synthetic_steps, 3, &err), 0);
    assert_sql(path, "PRAGMA user_version", "3");
    assert_sql(path, "SELECT group_concat(a || '-' || b) FROM t", "1-2");
    assert_sql(path, "SELECT group_concat(version || ' ' || name, '; ') FROM schema_history",
               "1 create t; 2 add column b; 3 first row");
    /* Up to date: nothing happens. */
    assert_int_equal(store_migrate(db, path, synthetic_steps, 3, &err), 0);
    assert_sql(path, "SELECT count(*) FROM t", "1");

    /* A failing step undoes the whole migration, the steps before it too. */
    assert_int_equal(store_migrate(db, path, synthetic_steps, 5, &err), -1);
    char expected[8700];
    snprintf(expected, sizeof expected,
             "results database %s: migration step 5 (broken step): no such table: no_such_table", path);
    assert_string_equal(err.msg, expected);
    assert_sql(path, "PRAGMA user_version", "3");
    assert_sql(path, "SELECT count(*) FROM t", "1");
    assert_sql(path, "SELECT count(*) FROM schema_history", "3");
    assert_int_equal(sqlite3_get_autocommit(db), 1); /* no transaction left open */

    /* A database newer than the program is refused. */
    assert_int_equal(store_migrate(db, path, synthetic_steps, 2, &err), -1);
    snprintf(expected, sizeof expected,
             "results database %s has schema version 3, newer than this radcap's 2: use a newer radcap", path);
    assert_string_equal(err.msg, expected);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);

    /* So is another program's database, and a file that is not SQLite. */
    snprintf(path, sizeof path, "%s/foreign.db", f->dir);
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "CREATE TABLE patients (name TEXT)", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    store *s = NULL;
    assert_int_equal(store_open(path, 0, &s, &err), -1);
    assert_null(s);
    snprintf(expected, sizeof expected, "%s is not a radcap results database: it already holds other tables", path);
    assert_string_equal(err.msg, expected);
    assert_sql(path, "PRAGMA user_version", "0"); /* untouched */
    assert_int_equal(sqlite3_open(path, &db), SQLITE_OK);
    assert_int_equal(sqlite3_exec(db, "PRAGMA application_id = 42", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(db), SQLITE_OK);
    assert_int_equal(store_open(path, 0, &s, &err), -1);
    snprintf(expected, sizeof expected, "results database %s belongs to another application (application_id 0x0000002a)",
             path);
    assert_string_equal(err.msg, expected);

    snprintf(path, sizeof path, "%s/not-a-db.txt", f->dir);
    FILE *text = fopen(path, "w");
    fputs("this is a text file, long enough to fill SQLite's 100-byte header............................................\n",
          text);
    fclose(text);
    assert_int_equal(store_open(path, 0, &s, &err), -1);
    snprintf(expected, sizeof expected, "results database %s: setting WAL journal mode: file is not a database", path);
    assert_string_equal(err.msg, expected);

    /* Read-only opens never create a file. */
    snprintf(path, sizeof path, "%s/absent.db", f->dir);
    assert_int_equal(store_open(path, STORE_READ_ONLY, &s, &err), -1);
    snprintf(expected, sizeof expected, "results database %s: No such file or directory", path);
    assert_string_equal(err.msg, expected);
    assert_false(tu_file_exists(path));
}

/* ---- runs and resuming ----------------------------------------------------- */

static void test_run_lifecycle_and_resume(void **state)
{
    fixture *f = *state;
    store *s = open_store(f->db);
    rc_error err = {{0}};
    int64_t run = create_run(s, "F");
    assert_int_equal(run, 1);
    assert_sql(f->db, "SELECT status || ' ' || hosts || ' ' || n_ranks || ' ' || config_json || ' ' || "
                      "checkpoint_sha256 || ' ' || vocab_sha256 || ' ' || manifest || ' ' || (finished_at IS NULL) "
                      "FROM runs WHERE id = 1",
               "running [\"node1\",\"node2\"] 3 {\"batch\": 8, \"beam\": 1} ab12 cd34 /data/valid_captions.csv 1");

    /* First attempt: a and c succeed, b fails. */
    const int ids_a[] = {2023, 1012};
    const float probs_a[] = {0.5f, 0.25f};
    store_item items[3] = {ok_item("a", "/d/a.png", 0, "caption a"),
                           error_item("b", "/d/b.png", 1, "cannot decode /d/b.png: truncated file"),
                           ok_item("c", "/d/c.png", 2, "caption c")};
    items[0].token_ids = ids_a;
    items[0].token_probs = probs_a;
    items[0].n_tokens = 2;
    items[0].file_size = 10;
    items[0].file_mtime_ns = 1000;
    items[0].rank = 2;
    items[0].decode_seconds = 0.25;
    if (store_put_items(s, run, items, 3, &err) < 0)
        fail_msg("%s", err.msg);
    assert_sql(f->db, "SELECT token_ids || ' ' || token_probs || ' ' || worker_rank || ' ' || decode_seconds || ' ' || "
                      "(infer_seconds IS NULL) FROM items WHERE image_id = 'a'",
               "[2023,1012] [0.5,0.25] 2 0.25 1");

    store_idset done;
    assert_int_equal(store_done_ids(s, run, &done, &err), 0);
    assert_int_equal(done.n, 2);
    assert_true(store_idset_contains(&done, "a"));
    assert_false(store_idset_contains(&done, "b"));
    assert_true(store_idset_contains(&done, "c"));
    assert_false(store_idset_contains(&done, ""));
    store_idset_free(&done);

    /* Interrupted: the same fingerprint finds it, another does not. */
    assert_int_equal(store_run_finish(s, run, STORE_RUN_INTERRUPTED, "SIGTERM", -1, &err), 0);
    int64_t found = -1;
    assert_int_equal(store_run_find_resumable(s, "F", &found, &err), 0);
    assert_int_equal(found, run);
    assert_int_equal(store_run_find_resumable(s, "G", &found, &err), 0);
    assert_int_equal(found, 0);
    store_run_summary summary;
    assert_int_equal(store_run_get(s, run, &summary, &err), 0);
    assert_int_equal(summary.status, STORE_RUN_INTERRUPTED);
    assert_int_equal(summary.n_ok, 2);
    assert_int_equal(summary.n_error, 1);
    assert_true(summary.finished_at[0] != '\0');

    /* Resumed on one host: b is retried and its error row replaced; a late
     * error for a (say, a duplicate hand-out) never replaces its caption. */
    store_run_info info = run_info("F");
    info.n_hosts = 1;
    info.n_ranks = 1;
    info.n_total = -1;
    assert_int_equal(store_run_resume(s, run, &info, &err), 0);
    assert_sql(f->db, "SELECT status || ' ' || hosts || ' ' || n_ranks || ' ' || n_total || ' ' || n_resumes || ' ' || "
                      "(finished_at IS NULL) || ' ' || (message IS NULL) FROM runs WHERE id = 1",
               "running [\"node1\"] 1 3 1 1 1");
    assert_int_equal(store_begin(s, &err), 0);
    store_item retry = ok_item("b", "/d/b.png", 1, "caption b");
    put(s, run, &retry);
    store_item late = error_item("a", "/d/a.png", 0, "late failure");
    put(s, run, &late);
    assert_int_equal(store_commit(s, &err), 0);
    assert_sql(f->db,
               "SELECT group_concat(image_id || ':' || status || ':' || coalesce(caption, '-') || ':' || "
               "coalesce(error, '-') || ':' || attempts, ' ') FROM (SELECT * FROM items WHERE run_id = 1 ORDER BY seq)",
               "a:ok:caption a:-:1 b:ok:caption b:-:2 c:ok:caption c:-:1");

    assert_int_equal(store_run_finish(s, run, STORE_RUN_COMPLETED, NULL, 0, &err), 0);
    assert_int_equal(store_run_get(s, run, &summary, &err), 0);
    assert_int_equal(summary.status, STORE_RUN_COMPLETED);
    assert_int_equal(summary.n_ok, 3);
    assert_int_equal(summary.n_error, 0);
    assert_int_equal(summary.n_total, 3);
    assert_int_equal(summary.n_resumes, 1);
    assert_int_equal(summary.n_ranks, 1);
    assert_int_equal(store_run_find_resumable(s, "F", &found, &err), 0);
    assert_int_equal(found, 0); /* completed runs are not resumed */

    /* A new run is a new row; the old one keeps its items. */
    int64_t run2 = create_run(s, "F");
    assert_int_equal(run2, 2);
    assert_int_equal(store_done_ids(s, run2, &done, &err), 0);
    assert_int_equal(done.n, 0);
    store_idset_free(&done);
    assert_sql(f->db, "SELECT count(*) FROM items WHERE run_id = 1", "3");
    int64_t latest, completed;
    assert_int_equal(store_latest_run(s, &latest, &err), 0);
    assert_int_equal(store_last_completed_run(s, &completed, &err), 0);
    assert_int_equal(latest, 2);
    assert_int_equal(completed, 1);

    /* Incremental runs: a (10 bytes, mtime 1000) was captioned in the
     * completed run 1. b and c have no size or time recorded. */
    int unchanged = -1;
    assert_int_equal(store_file_unchanged(s, "/d/a.png", 10, 1000, NULL, &unchanged, &err), 0);
    assert_int_equal(unchanged, 1);
    assert_int_equal(store_file_unchanged(s, "/d/a.png", 10, 1001, NULL, &unchanged, &err), 0);
    assert_int_equal(unchanged, 0);
    assert_int_equal(store_file_unchanged(s, "/d/a.png", 11, 1000, NULL, &unchanged, &err), 0);
    assert_int_equal(unchanged, 0);
    assert_int_equal(store_file_unchanged(s, "/d/b.png", -1, -1, NULL, &unchanged, &err), 0);
    assert_int_equal(unchanged, 0);
    assert_int_equal(store_file_unchanged(s, "/d/new.png", 10, 1000, NULL, &unchanged, &err), 0);
    assert_int_equal(unchanged, 0);
    /* Content hashes, when asked for, decide alone; only ok items of
     * completed runs count (run 2 is still running). */
    store_item hashed = ok_item("h", "/d/h.png", 3, "caption h");
    hashed.content_sha256 = "0a0b";
    put(s, run2, &hashed);
    assert_int_equal(store_file_unchanged(s, "/d/h.png", 1, 1, "0a0b", &unchanged, &err), 0);
    assert_int_equal(unchanged, 0);
    assert_int_equal(store_run_finish(s, run2, STORE_RUN_COMPLETED, NULL, 2, &err), 0);
    assert_int_equal(store_file_unchanged(s, "/d/h.png", 1, 1, "0a0b", &unchanged, &err), 0);
    assert_int_equal(unchanged, 1);
    assert_int_equal(store_file_unchanged(s, "/d/h.png", 1, 1, "ffff", &unchanged, &err), 0);
    assert_int_equal(unchanged, 0);
    assert_sql(f->db, "SELECT n_skipped FROM runs WHERE id = 2", "2");

    /* Errors name the file and the step. */
    char expected[8700];
    assert_int_equal(store_run_finish(s, 99, STORE_RUN_FAILED, "x", -1, &err), -1);
    snprintf(expected, sizeof expected, "results database %s: finishing a run: there is no run 99", f->db);
    assert_string_equal(err.msg, expected);
    assert_int_equal(store_run_get(s, 99, &summary, &err), -1);
    snprintf(expected, sizeof expected, "results database %s holds no run 99", f->db);
    assert_string_equal(err.msg, expected);
    info.config_json = "{not json";
    assert_int_equal(store_run_create(s, &info, &found, &err), -1);
    snprintf(expected, sizeof expected, "results database %s: creating a run: the configuration is not valid JSON",
             f->db);
    assert_string_equal(err.msg, expected);
    store_item orphan = ok_item("x", "/d/x.png", 0, "x");
    assert_int_equal(store_put_item(s, 77, &orphan, &err), -1);
    snprintf(expected, sizeof expected, "image x: results database %s: storing an item: FOREIGN KEY constraint failed",
             f->db);
    assert_string_equal(err.msg, expected);
    store_item no_reason = error_item("y", "/d/y.png", 0, NULL);
    assert_int_equal(store_put_item(s, run, &no_reason, &err), -1);
    snprintf(expected, sizeof expected, "results database %s: storing an item: failed item y has no error text", f->db);
    assert_string_equal(err.msg, expected);
    close_store(s);
}

/* ---- batches ---------------------------------------------------------------- */

static void test_batched_commit(void **state)
{
    fixture *f = *state;
    store *s = open_store(f->db);
    rc_error err = {{0}};
    int64_t run = create_run(s, "F");
    char expected[8700];

    assert_int_equal(store_begin(s, &err), 0);
    assert_true(store_in_batch(s));
    assert_int_equal(store_begin(s, &err), -1);
    snprintf(expected, sizeof expected, "results database %s: a batch is already open", f->db);
    assert_string_equal(err.msg, expected);
    char id[16];
    for (int i = 0; i < 3; i++) {
        snprintf(id, sizeof id, "i%d", i);
        store_item item = ok_item(id, "/p", i, "c");
        put(s, run, &item);
    }
    /* Another connection sees nothing before the commit ... */
    assert_sql(f->db, "SELECT count(*) FROM items", "0");
    assert_int_equal(store_commit(s, &err), 0);
    /* ... and the whole batch after it. */
    assert_sql(f->db, "SELECT count(*) FROM items", "3");
    assert_false(store_in_batch(s));

    /* A rolled-back batch leaves nothing. */
    assert_int_equal(store_begin(s, &err), 0);
    store_item item = ok_item("lost", "/p", 9, "c");
    put(s, run, &item);
    assert_int_equal(store_rollback(s, &err), 0);
    assert_sql(f->db, "SELECT count(*) FROM items", "3");
    assert_int_equal(store_commit(s, &err), -1);
    snprintf(expected, sizeof expected, "results database %s: committing: no batch is open", f->db);
    assert_string_equal(err.msg, expected);

    /* Another writer holding the lock: begin waits for the busy timeout,
     * then fails naming the step. */
    sqlite3 *other = NULL;
    assert_int_equal(sqlite3_open(f->db, &other), SQLITE_OK);
    assert_int_equal(sqlite3_exec(other, "BEGIN IMMEDIATE", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(store_set_busy_timeout(s, 100, &err), 0);
    struct timespec t0, t1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    assert_int_equal(store_begin(s, &err), -1);
    clock_gettime(CLOCK_MONOTONIC, &t1);
    double waited = (double)(t1.tv_sec - t0.tv_sec) + 1e-9 * (double)(t1.tv_nsec - t0.tv_nsec);
    assert_true(waited >= 0.09);
    snprintf(expected, sizeof expected, "results database %s: starting a batch: database is locked", f->db);
    assert_string_equal(err.msg, expected);
    assert_int_equal(sqlite3_exec(other, "COMMIT", NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_close(other), SQLITE_OK);
    assert_int_equal(store_begin(s, &err), 0);
    assert_int_equal(store_commit(s, &err), 0);
    close_store(s);
}

/* ---- scores, references, export ---------------------------------------------- */

/* The hand-made run of the export tests: three images, put out of manifest
 * order; img-1's caption holds quotes, a comma and a new line; img-2
 * failed; img-3 has confidence values and no rouge_l score. */
static int64_t make_scored_run(store *s)
{
    rc_error err = {{0}};
    int64_t run = create_run(s, "F");
    store_item one = ok_item("img-1", "/data/img-1.png", 0, "a \"quoted\" word, then\na new line");
    store_item two = error_item("img-2", "/data/img-2.png", 1, "cannot decode /data/img-2.png: truncated file");
    store_item three = ok_item("img-3", "/data/img-3.png", 2, "plain caption");
    three.mean_logprob = -0.5;
    three.min_token_prob = 0.125;
    assert_int_equal(store_begin(s, &err), 0);
    put(s, run, &three);
    put(s, run, &one);
    put(s, run, &two);
    const store_score scores_one[] = {{"rouge_l", 0.5}, {"bleu_4", 0.25}, {"cider", 1.5}};
    const store_score scores_three[] = {{"cider", 2.0}, {"bleu_4", 0.1}};
    if (store_put_item_scores(s, run, "img-1", "a quoted word then a new line", scores_one, 3, &err) < 0 ||
        store_put_item_scores(s, run, "img-3", NULL, scores_three, 2, &err) < 0)
        fail_msg("%s", err.msg);
    const char *refs_one[] = {"A \"quoted\" word.", "Second reference."};
    const char *tokens_one[] = {"a quoted word", "second reference"};
    const char *refs_three[] = {"Plain."};
    if (store_put_references(s, run, "img-1", refs_one, tokens_one, 2, &err) < 0 ||
        store_put_references(s, run, "img-3", refs_three, NULL, 1, &err) < 0)
        fail_msg("%s", err.msg);
    const store_score corpus[] = {{"bleu_4", 0.175}, {"cider", 1.75}};
    if (store_put_corpus_scores(s, run, corpus, 2, 2, &err) < 0)
        fail_msg("%s", err.msg);
    assert_int_equal(store_commit(s, &err), 0);
    return run;
}

typedef struct collected {
    char text[2048];
} collected;

static int collect_item(void *user, const store_item_row *row)
{
    collected *c = user;
    size_t used = strlen(c->text);
    used += (size_t)snprintf(c->text + used, sizeof c->text - used, "%s|%lld|%s|%s|", row->image_id,
                             (long long)row->seq, row->ok ? "ok" : "error", row->caption_tokens ? row->caption_tokens : "-");
    for (int k = 0; k < row->n_scores; k++)
        used += (size_t)snprintf(c->text + used, sizeof c->text - used, "%s=%g,", row->scores[k].metric,
                                 row->scores[k].value);
    snprintf(c->text + used, sizeof c->text - used, ";");
    return 0;
}

static int collect_reference(void *user, const char *image_id, int index, const char *caption, const char *tokens)
{
    collected *c = user;
    size_t used = strlen(c->text);
    snprintf(c->text + used, sizeof c->text - used, "%s#%d=%s/%s;", image_id, index, caption, tokens ? tokens : "-");
    return 0;
}

static int collect_corpus(void *user, const char *metric, double value, int64_t n_images)
{
    collected *c = user;
    size_t used = strlen(c->text);
    snprintf(c->text + used, sizeof c->text - used, "%s=%g/%lld;", metric, value, (long long)n_images);
    return 0;
}

static int stop_after_first(void *user, const store_item_row *row)
{
    (void)row;
    (*(int *)user)++;
    return 7;
}

static void test_scores_and_read_back(void **state)
{
    fixture *f = *state;
    store *s = open_store(f->db);
    rc_error err = {{0}};
    int64_t run = make_scored_run(s);
    collected c = {""};
    assert_int_equal(store_foreach_item(s, run, 1, collect_item, &c, &err), 0);
    assert_string_equal(c.text, "img-1|0|ok|a quoted word then a new line|bleu_4=0.25,cider=1.5,rouge_l=0.5,;"
                                "img-2|1|error|-|;"
                                "img-3|2|ok|-|bleu_4=0.1,cider=2,;");
    c.text[0] = '\0';
    assert_int_equal(store_foreach_reference(s, run, collect_reference, &c, &err), 0);
    assert_string_equal(c.text, "img-1#0=A \"quoted\" word./a quoted word;img-1#1=Second reference./second reference;"
                                "img-3#0=Plain./-;");
    c.text[0] = '\0';
    assert_int_equal(store_foreach_corpus_score(s, run, collect_corpus, &c, &err), 0);
    assert_string_equal(c.text, "bleu_4=0.175/2;cider=1.75/2;");
    char **names;
    int n;
    assert_int_equal(store_run_metric_names(s, run, &names, &n, &err), 0);
    assert_int_equal(n, 3);
    assert_string_equal(names[0], "bleu_4");
    assert_string_equal(names[2], "rouge_l");
    store_free_names(names, n);

    /* Re-scoring replaces values; tokens put as NULL keep the old ones. */
    const store_score rescored[] = {{"cider", 3.0}};
    assert_int_equal(store_put_item_scores(s, run, "img-3", NULL, rescored, 1, &err), 0);
    const char *refs_one[] = {"A \"quoted\" word.", "Second reference."};
    assert_int_equal(store_put_references(s, run, "img-1", refs_one, NULL, 2, &err), 0);
    assert_sql(f->db, "SELECT value FROM item_scores WHERE image_id = 'img-3' AND metric = 'cider'", "3.0");
    assert_sql(f->db, "SELECT count(*) FROM item_scores", "5");
    assert_sql(f->db, "SELECT tokens FROM reference_captions WHERE image_id = 'img-1' AND ref_index = 1",
               "second reference");
    /* A re-captioned image loses its stale tokenised caption. */
    store_item again = ok_item("img-1", "/data/img-1.png", 0, "new caption");
    put(s, run, &again);
    assert_sql(f->db, "SELECT caption || '/' || coalesce(caption_tokens, 'NULL') FROM items WHERE image_id = 'img-1'",
               "new caption/NULL");

    /* A callback's non-zero answer stops the walk and is returned. */
    int calls = 0;
    assert_int_equal(store_foreach_item(s, run, 0, stop_after_first, &calls, &err), 7);
    assert_int_equal(calls, 1);

    /* Scores need their item. */
    assert_int_equal(store_put_item_scores(s, run, "nope", NULL, rescored, 1, &err), -1);
    char expected[8700];
    snprintf(expected, sizeof expected,
             "image nope, metric cider: results database %s: storing an image score: FOREIGN KEY constraint failed",
             f->db);
    assert_string_equal(err.msg, expected);
    close_store(s);
}

static int run_export(const char *db, const char *run, const char *format, const char *out)
{
    char *argv[10];
    int argc = 0;
    argv[argc++] = "export";
    argv[argc++] = "--db";
    argv[argc++] = (char *)db;
    if (run) {
        argv[argc++] = "--run";
        argv[argc++] = (char *)run;
    }
    if (format) {
        argv[argc++] = "--format";
        argv[argc++] = (char *)format;
    }
    if (out) {
        argv[argc++] = "--out";
        argv[argc++] = (char *)out;
    }
    argv[argc] = NULL;
    return cmd_export(argc, argv);
}

static void assert_file(const char *path, const char *expected)
{
    size_t len = 0;
    char *text = tu_read_file(path, &len);
    assert_non_null(text);
    if (len != strlen(expected) || memcmp(text, expected, len) != 0)
        fail_msg("%s:\n--- got\n%s\n--- expected\n%s", path, text, expected);
    free(text);
}

static void test_export(void **state)
{
    fixture *f = *state;
    store *s = open_store(f->db);
    int64_t run = make_scored_run(s);
    assert_int_equal(run, 1);
    close_store(s);
    char out[4300];
    snprintf(out, sizeof out, "%s/export.out", f->dir);

    /* RFC 4180: CRLF after each record; the caption with a quote, a comma
     * and a new line is quoted with its quotes doubled; missing values are
     * empty; metric columns in name order. */
    assert_int_equal(run_export(f->db, "1", "csv", out), EXIT_OK);
    assert_file(out, "id,path,status,caption,error,mean_logprob,min_token_prob,bleu_4,cider,rouge_l\r\n"
                     "img-1,/data/img-1.png,ok,\"a \"\"quoted\"\" word, then\na new line\",,,,0.25,1.5,0.5\r\n"
                     "img-2,/data/img-2.png,error,,cannot decode /data/img-2.png: truncated file,,,,,\r\n"
                     "img-3,/data/img-3.png,ok,plain caption,,-0.5,0.125,0.1,2,\r\n");

    /* The CSV reads back into the same fields. */
    size_t len;
    char *text = tu_read_file(out, &len);
    csv_reader r;
    rc_error err = {{0}};
    csv_init(&r, text, len, out);
    assert_int_equal(csv_next(&r, &err), 1);
    assert_int_equal(csv_next(&r, &err), 1);
    assert_int_equal(r.n_fields, 10);
    assert_string_equal(r.fields[3], "a \"quoted\" word, then\na new line");
    csv_free(&r);
    free(text);

    assert_int_equal(run_export(f->db, "1", "jsonl", out), EXIT_OK);
    assert_file(out,
                "{\"id\":\"img-1\",\"path\":\"/data/img-1.png\",\"status\":\"ok\","
                "\"caption\":\"a \\\"quoted\\\" word, then\\na new line\",\"error\":null,"
                "\"bleu_4\":0.25,\"cider\":1.5,\"rouge_l\":0.5}\n"
                "{\"id\":\"img-2\",\"path\":\"/data/img-2.png\",\"status\":\"error\",\"caption\":null,"
                "\"error\":\"cannot decode /data/img-2.png: truncated file\"}\n"
                "{\"id\":\"img-3\",\"path\":\"/data/img-3.png\",\"status\":\"ok\",\"caption\":\"plain caption\","
                "\"error\":null,\"mean_logprob\":-0.5,\"min_token_prob\":0.125,\"bleu_4\":0.1,\"cider\":2}\n");

    /* Without --run, the latest run: here a new, empty one. */
    s = open_store(f->db);
    assert_int_equal(create_run(s, "G"), 2);
    close_store(s);
    assert_int_equal(run_export(f->db, NULL, "csv", out), EXIT_OK);
    assert_file(out, "id,path,status,caption,error,mean_logprob,min_token_prob\r\n");

    /* Failures leave no output file behind and create no database. */
    remove(out);
    assert_int_equal(run_export(f->db, "9", "csv", out), EXIT_FATAL);
    assert_false(tu_file_exists(out));
    char absent[4300];
    snprintf(absent, sizeof absent, "%s/absent.db", f->dir);
    assert_int_equal(run_export(absent, NULL, "csv", out), EXIT_FATAL);
    assert_false(tu_file_exists(absent));
    assert_int_equal(run_export(f->db, NULL, NULL, out), EXIT_USAGE);
    assert_int_equal(run_export(f->db, NULL, "xml", out), EXIT_USAGE);
    assert_int_equal(run_export(f->db, "0", "csv", out), EXIT_USAGE);
}

/* ---- crash test -------------------------------------------------------------- */

enum { CRASH_BATCH = 40 };

/* The writer process: resumes (or starts) the run with fingerprint "crash"
 * and commits batches of CRASH_BATCH items forever, writing "c N" to fd
 * before each COMMIT and "d N" after it (N: items of the run once it
 * commits). Never returns. */
static void crash_writer(const char *path, int fd)
{
    store *s = NULL;
    rc_error err;
    int64_t run = 0;
    if (store_open(path, 0, &s, &err) < 0 || store_run_find_resumable(s, "crash", &run, &err) < 0)
        _exit(2);
    if (!run) {
        store_run_info info = {.config_json = "{}", .fingerprint = "crash", .n_ranks = 1, .n_total = -1};
        if (store_run_create(s, &info, &run, &err) < 0)
            _exit(3);
    }
    store_idset done;
    if (store_done_ids(s, run, &done, &err) < 0)
        _exit(4);
    int64_t n = (int64_t)done.n;
    store_idset_free(&done);
    char caption[300];
    for (;;) {
        if (store_begin(s, &err) < 0)
            _exit(5);
        for (int i = 0; i < CRASH_BATCH; i++, n++) {
            char id[32];
            snprintf(id, sizeof id, "img-%08lld", (long long)n);
            snprintf(caption, sizeof caption, "caption of image %lld: %0200lld", (long long)n, (long long)n);
            store_item item;
            store_item_init(&item);
            item.image_id = id;
            item.path = id;
            item.seq = n;
            item.ok = 1;
            item.caption = caption;
            if (store_put_item(s, run, &item, &err) < 0)
                _exit(6);
        }
        char line[64];
        int len = snprintf(line, sizeof line, "c %lld\n", (long long)n);
        if (write(fd, line, (size_t)len) != len)
            _exit(7);
        if (store_commit(s, &err) < 0)
            _exit(8);
        len = snprintf(line, sizeof line, "d %lld\n", (long long)n);
        if (write(fd, line, (size_t)len) != len)
            _exit(9);
    }
}

static void test_kill_9_crash(void **state)
{
    fixture *f = *state;
    unsigned seed = (unsigned)time(NULL) ^ (unsigned)getpid();
    printf("    crash test seed %u\n", seed);
    srand(seed);
    int64_t previous = 0;
    for (int round = 0; round < 12; round++) {
        int fds[2];
        assert_int_equal(pipe(fds), 0);
        pid_t pid = fork();
        assert_true(pid >= 0);
        if (pid == 0) {
            close(fds[0]);
            crash_writer(f->db, fds[1]);
        }
        close(fds[1]);
        /* Round 0 kills at once (maybe while the schema is created); the
         * others after 1..8 commits and a random extra delay, so that the
         * kill lands anywhere: mid-batch, in COMMIT, between batches. */
        int wait_commits = round == 0 ? 0 : 1 + rand() % 8;
        int delay_us = rand() % 3000;
        char buf[65536];
        size_t used = 0;
        int commits = 0;
        while (commits < wait_commits) {
            ssize_t got = read(fds[0], buf + used, sizeof buf - 1 - used);
            if (got <= 0)
                break;
            for (ssize_t i = 0; i < got; i++)
                commits += buf[used + (size_t)i] == 'd';
            used += (size_t)got;
        }
        usleep((useconds_t)delay_us);
        assert_int_equal(kill(pid, SIGKILL), 0);
        int status;
        assert_int_equal(waitpid(pid, &status, 0), pid);
        if (!WIFSIGNALED(status))
            fail_msg("the writer exited with status %d before the kill", WEXITSTATUS(status));
        ssize_t got;
        while ((got = read(fds[0], buf + used, sizeof buf - 1 - used)) > 0)
            used += (size_t)got;
        close(fds[0]);
        buf[used] = '\0';
        /* The last "d N" is committed for sure; a "c N" after it may or may
         * not have committed before the kill. */
        long long committed = previous, committing = -1;
        for (char *line = strtok(buf, "\n"); line; line = strtok(NULL, "\n")) {
            if (line[0] == 'd')
                committed = atoll(line + 2), committing = -1;
            else if (line[0] == 'c')
                committing = atoll(line + 2);
        }

        if (!tu_file_exists(f->db)) {
            assert_int_equal(round, 0);
            continue;
        }
        store *s = open_store(f->db); /* opens: recovery from the WAL */
        close_store(s);
        assert_sql(f->db, "PRAGMA integrity_check", "ok");
        int64_t count = sql_int(f->db, "SELECT count(*) FROM items");
        printf("    round %2d: killed after %d commits + %4d us: %lld items (last reported committed %lld%s)\n",
               round, wait_commits, delay_us, (long long)count, committed,
               committing >= 0 ? ", one more batch was committing" : "");
        assert_int_equal(count % CRASH_BATCH, 0);
        if (!(count == committed || (committing >= 0 && count == committing)))
            fail_msg("%lld items after the crash; the writer reported %lld committed (%lld committing)",
                     (long long)count, committed, committing);
        /* Every committed item is intact and none is duplicated. */
        char expected[64];
        snprintf(expected, sizeof expected, "%lld %lld %lld", (long long)count, (long long)count,
                 (long long)(count - 1));
        assert_sql(f->db,
                   count ? "SELECT count(*) || ' ' || count(DISTINCT image_id) || ' ' || max(seq) FROM items "
                           "WHERE caption = 'caption of image ' || seq || ': ' || printf('%0200d', seq)"
                         : "SELECT '0 0 -1'",
                   expected);
        assert_true(count >= previous);
        previous = count;
    }
    assert_true(previous > 0);
    /* All rounds resumed one run. */
    assert_sql(f->db, "SELECT count(*) || ' ' || status FROM runs", "1 running");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test_setup_teardown(test_schema_created, setup, teardown),
        cmocka_unit_test_setup_teardown(test_migration_mechanism, setup, teardown),
        cmocka_unit_test_setup_teardown(test_run_lifecycle_and_resume, setup, teardown),
        cmocka_unit_test_setup_teardown(test_batched_commit, setup, teardown),
        cmocka_unit_test_setup_teardown(test_scores_and_read_back, setup, teardown),
        cmocka_unit_test_setup_teardown(test_export, setup, teardown),
        cmocka_unit_test_setup_teardown(test_kill_9_crash, setup, teardown),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
