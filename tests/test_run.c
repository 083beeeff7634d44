/* `radcap run` end to end, through the program and mpirun: every manifest
 * entry stored exactly once, captions and token ids equal to `radcap
 * caption --json` on the same files, per-image errors, identical results
 * with 1 and 3 ranks, resumption after kill -9 and after a signal, a rank
 * that cannot load the model, and the scores stored at the end equal to
 * `radcap score --json` on the exported captions and the manifest's
 * references (and to `radcap eval`).
 *
 * Uses the committed tiny model (tests/fixtures/tiny) and archives made by
 * `radcap synth`. The vocabulary is synthetic (400 tokens): ids the tiny
 * model emits most often on the test archive carry words of the archive's
 * reference captions, so that the scores are not all zero. The MPI tests
 * skip with a message when mpirun is missing.
 */
#include <cjson/cJSON.h>
#include <ctype.h>
#include <dirent.h>
#include <math.h>
#include <setjmp.h>
#include <signal.h>
#include <spawn.h>
#include <sqlite3.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>
#include <cmocka.h>

#include "io/manifest.h"
#include "tests/helpers/testutil.h"

#define MODEL "tests/fixtures/tiny/model.bin"
#define CONFIG "tests/fixtures/tiny/config.json"
#define VOCAB_SIZE 400
/* The archives' sizes (smaller in the sanitizer build, which runs the
 * tiny model some 30 times slower). */
#define N_IMAGES (S.asan ? 40 : 200) /* intact images of the main archive */
#define N_BROKEN (S.asan ? 2 : 10)   /* its broken rows (5%) */
#define N_BIG (S.asan ? 90 : 400)    /* images of the archive the interruption tests stop half way */
#define CMD 24000      /* room for a command line of several paths */

extern char **environ;

typedef struct expected {
    const char *id;   /* manifest id */
    int ok;           /* `radcap caption --json` captioned it */
    int *ids;         /* (n_ids) its token ids */
    int n_ids;
} expected;

typedef struct setup {
    int asan;                /* RADCAP_ASAN: the sanitizer build */
    char *dir;
    char model[4200];        /* copies of the tiny model's files: a test run must not see them change */
    char config[4200];
    char vocab[4200];        /* the synthetic vocabulary the runs use */
    char tokens[VOCAB_SIZE][64];
    char csv[4200];          /* main archive: N_IMAGES + N_BROKEN rows */
    char big_csv[4200];      /* N_BIG rows, no broken one */
    manifest *man;           /* the main archive's manifest */
    expected *exp;           /* (man->n_entries) */
    char single_db[4200];    /* the single-process run of the main archive */
    int single_done;         /* 1 once that run passed its checks */
    int have_mpi;
    char mpi_env[256];       /* prefix for mpirun commands */
} setup;

static setup S;

/* ---- small helpers ------------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static const char *special_token(int i)
{
    switch (i) {
    case 0: return "[PAD]";
    case 100: return "[UNK]";
    case 101: return "[CLS]";
    case 102: return "[SEP]";
    case 103: return "[MASK]";
    default: return NULL;
    }
}

static void write_vocab(const char *path, char tokens[][64])
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < VOCAB_SIZE; i++)
        fprintf(f, "%s\n", tokens[i]);
    fclose(f);
}

/* The common options of a run on archive csv into db. */
static void run_args(char *out, size_t size, const char *csv, const char *db, const char *extra)
{
    snprintf(out, size, "%s run --manifest %s --db %s --checkpoint %s --config %s --vocab %s %s", tu_radcap_bin(),
             csv, db, S.model, S.config, S.vocab, extra);
}

/* Runs a shell command with stdout and stderr into files of the temporary
 * directory named after label; returns the exit status and the stderr text. */
static int run_logged(const char *label, const char *command, char **err_text)
{
    char cmd[CMD + 9000], out_path[4300], err_path[4300];
    snprintf(out_path, sizeof out_path, "%s/%s.out", S.dir, label);
    snprintf(err_path, sizeof err_path, "%s/%s.err", S.dir, label);
    snprintf(cmd, sizeof cmd, "%s >%s 2>%s", command, out_path, err_path);
    int status = tu_run(cmd);
    if (err_text)
        *err_text = tu_read_file(err_path, NULL);
    return status;
}

/* Starts a shell command in a process group of its own; returns its pid. */
static pid_t spawn_group(const char *command)
{
    posix_spawnattr_t attr;
    posix_spawnattr_init(&attr);
    posix_spawnattr_setflags(&attr, POSIX_SPAWN_SETPGROUP);
    posix_spawnattr_setpgroup(&attr, 0);
    char *argv[] = {"/bin/sh", "-c", (char *)command, NULL};
    pid_t pid;
    int rc = posix_spawn(&pid, "/bin/sh", NULL, &attr, argv, environ);
    posix_spawnattr_destroy(&attr);
    assert_int_equal(rc, 0);
    return pid;
}

/* The children of process `parent` (read from /proc); at most cap. */
static int children_of(pid_t parent, pid_t *out, int cap)
{
    int n = 0;
    DIR *proc = opendir("/proc");
    for (struct dirent *e; proc && (e = readdir(proc)) && n < cap;) {
        if (!isdigit((unsigned char)e->d_name[0]))
            continue;
        char path[300], text[1024];
        snprintf(path, sizeof path, "/proc/%s/stat", e->d_name);
        FILE *f = fopen(path, "r");
        if (!f)
            continue;
        size_t len = fread(text, 1, sizeof text - 1, f);
        fclose(f);
        text[len] = '\0';
        /* pid (comm) state ppid ...: comm may hold spaces, so start after its ')' */
        const char *close = strrchr(text, ')');
        int ppid;
        char state;
        if (close && sscanf(close + 1, " %c %d", &state, &ppid) == 2 && ppid == parent)
            out[n++] = (pid_t)atoi(e->d_name);
    }
    if (proc)
        closedir(proc);
    return n;
}

/* kill -9 of a whole job: the process, its group, and every descendant
 * (Open MPI puts each rank in a process group of its own, as a batch
 * system's cgroup would not care). */
static void kill_job(pid_t pid)
{
    pid_t found[256];
    int n = 0;
    found[n++] = pid;
    for (int i = 0; i < n; i++) /* breadth-first over the descendants */
        n += children_of(found[i], found + n, 256 - n);
    for (int i = n - 1; i >= 0; i--)
        kill(found[i], SIGKILL);
    killpg(pid, SIGKILL);
}

static int wait_status(pid_t pid)
{
    int status;
    assert_int_equal(waitpid(pid, &status, 0), pid);
    return WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
}

static sqlite3 *open_db(const char *path)
{
    sqlite3 *db;
    assert_int_equal(sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL), SQLITE_OK);
    sqlite3_busy_timeout(db, 5000);
    return db;
}

/* The first column of the first row of a query, as an integer (-1 on error). */
static long long query_int(sqlite3 *db, const char *sql)
{
    sqlite3_stmt *st;
    long long v = -1;
    if (sqlite3_prepare_v2(db, sql, -1, &st, NULL) != SQLITE_OK)
        return -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        v = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    return v;
}

/* Items committed so far in a database being written (0 while it does not
 * exist or has no table yet). */
static long long committed_items(const char *path)
{
    if (!tu_file_exists(path))
        return 0;
    sqlite3 *db;
    if (sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY, NULL) != SQLITE_OK) {
        sqlite3_close(db);
        return 0;
    }
    sqlite3_busy_timeout(db, 1000);
    long long n = query_int(db, "SELECT count(*) FROM items");
    sqlite3_close(db);
    return n < 0 ? 0 : n;
}

/* Waits until a database holds at least `at_least` items; fails the test
 * if the process ends first or after 60 s. */
static void wait_for_items(pid_t pid, const char *db, long long at_least)
{
    const double deadline = now_seconds() + 60;
    for (;;) {
        if (committed_items(db) >= at_least)
            return;
        int status;
        if (waitpid(pid, &status, WNOHANG) == pid)
            fail_msg("the run ended before %lld images were committed", at_least);
        if (now_seconds() > deadline)
            fail_msg("no %lld images committed after 60 s", at_least);
        usleep(5000);
    }
}

/* Checks that every entry of the big archive appears exactly once in the
 * database's only run, which is completed and was resumed once. */
static void check_complete_once(const char *db_path, long long n_entries)
{
    sqlite3 *db = open_db(db_path);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "PRAGMA integrity_check", -1, &st, NULL), SQLITE_OK);
    assert_int_equal(sqlite3_step(st), SQLITE_ROW);
    assert_string_equal((const char *)sqlite3_column_text(st, 0), "ok");
    sqlite3_finalize(st);
    assert_int_equal(query_int(db, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(query_int(db, "SELECT status = 'completed' AND n_resumes = 1 FROM runs"), 1);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), n_entries);
    assert_int_equal(query_int(db, "SELECT count(DISTINCT image_id) FROM items"), n_entries);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE status = 'ok'"), n_entries);
    assert_int_equal(query_int(db, "SELECT n_ok FROM runs"), n_entries);
    sqlite3_close(db);
}

/* ---- set-up -------------------------------------------------------------- */

typedef struct word_count {
    char word[64];
    int count;
} word_count;

static int by_count(const void *a, const void *b)
{
    const word_count *x = a, *y = b;
    return x->count != y->count ? y->count - x->count : strcmp(x->word, y->word);
}

typedef struct id_count {
    int id, count;
} id_count;

static int by_id_count(const void *a, const void *b)
{
    const id_count *x = a, *y = b;
    return x->count != y->count ? y->count - x->count : x->id - y->id;
}

/* Lower-case alphabetic words of the references, most frequent first. */
static int reference_words(const manifest *m, word_count *words, int cap)
{
    int n = 0;
    for (size_t i = 0; i < m->n_entries; i++)
        for (int r = 0; r < m->entries[i].n_refs; r++)
            for (const char *p = m->entries[i].refs[r]; *p;) {
                if (!isalpha((unsigned char)*p)) {
                    p++;
                    continue;
                }
                char w[64];
                int len = 0;
                while (isalpha((unsigned char)*p)) {
                    if (len < 63)
                        w[len++] = (char)tolower((unsigned char)*p);
                    p++;
                }
                w[len] = '\0';
                int k = 0;
                while (k < n && strcmp(words[k].word, w) != 0)
                    k++;
                if (k == n && n < cap)
                    snprintf(words[n++].word, 64, "%s", w);
                if (k < n)
                    words[k].count++;
            }
    qsort(words, (size_t)n, sizeof *words, by_count);
    return n;
}

static int group_setup(void **state)
{
    (void)state;
    S.asan = tu_sanitized();
    S.dir = tu_mkdtemp("run");
    if (!S.dir)
        return -1;
    char cmd[CMD];
    snprintf(S.model, sizeof S.model, "%s/model.bin", S.dir);
    snprintf(S.config, sizeof S.config, "%s/config.json", S.dir);
    snprintf(cmd, sizeof cmd, "cp " MODEL " %s && cp " CONFIG " %s", S.model, S.config);
    if (tu_run(cmd) != 0)
        return -1;
    S.have_mpi = tu_run("command -v mpirun >/dev/null 2>&1") == 0;
    /* Open MPI refuses root without these. In the sanitizer build, leak
     * checking is off under mpirun: Open MPI leaves the memory of its
     * unloaded components at exit (the single-process runs keep it on). */
    setenv("OMPI_ALLOW_RUN_AS_ROOT", "1", 1);
    setenv("OMPI_ALLOW_RUN_AS_ROOT_CONFIRM", "1", 1);
    snprintf(S.mpi_env, sizeof S.mpi_env, "%smpirun --oversubscribe -np",
             S.asan ? "env ASAN_OPTIONS=detect_leaks=0 " : "");

    snprintf(cmd, sizeof cmd, "%s synth --out %s/archive --count %d --seed 5 --size 96x96 --broken %d >/dev/null",
             tu_radcap_bin(), S.dir, N_IMAGES, N_BROKEN);
    if (tu_run(cmd) != 0)
        return -1;
    snprintf(cmd, sizeof cmd, "%s synth --out %s/big --count %d --seed 11 --size 96x96 >/dev/null", tu_radcap_bin(),
             S.dir, N_BIG);
    if (tu_run(cmd) != 0)
        return -1;
    snprintf(S.csv, sizeof S.csv, "%s/archive/valid_captions.csv", S.dir);
    snprintf(S.big_csv, sizeof S.big_csv, "%s/big/valid_captions.csv", S.dir);
    manifest_options mo;
    manifest_options_default(&mo);
    rc_error err;
    if (manifest_read(S.csv, &mo, &S.man, &err) < 0 || S.man->n_entries != (size_t)(N_IMAGES + N_BROKEN)) {
        fprintf(stderr, "manifest: %s\n", err.msg);
        return -1;
    }

    /* Token ids from `radcap caption --json` with a plain vocabulary (ids
     * do not depend on the vocabulary's text). */
    for (int i = 0; i < VOCAB_SIZE; i++)
        snprintf(S.tokens[i], 64, "%s", special_token(i) ? special_token(i) : "");
    for (int i = 0; i < VOCAB_SIZE; i++)
        if (!special_token(i))
            snprintf(S.tokens[i], 64, "word%d", i);
    snprintf(S.vocab, sizeof S.vocab, "%s/plain-vocab.txt", S.dir);
    write_vocab(S.vocab, S.tokens);
    char list[4300];
    snprintf(list, sizeof list, "%s/files.txt", S.dir);
    FILE *f = fopen(list, "w");
    for (size_t i = 0; i < S.man->n_entries; i++)
        if (!S.man->entries[i].missing)
            fprintf(f, "%s\n", S.man->entries[i].path);
    fclose(f);
    char out_path[4300];
    snprintf(out_path, sizeof out_path, "%s/caption.jsonl", S.dir);
    snprintf(cmd, sizeof cmd,
             "xargs %s caption --checkpoint %s --config %s --vocab %s --json --batch 8 --threads 1 <%s >%s 2>/dev/null",
             tu_radcap_bin(), S.model, S.config, S.vocab, list, out_path);
    if (tu_run(cmd) != 123) /* xargs: the command exited 1 (the broken files) */
        return -1;
    S.exp = calloc(S.man->n_entries, sizeof *S.exp);
    id_count counts[VOCAB_SIZE];
    for (int i = 0; i < VOCAB_SIZE; i++)
        counts[i] = (id_count){i, 0};
    char *text = tu_read_file(out_path, NULL);
    if (!text || !S.exp)
        return -1;
    size_t line_no = 0;
    for (char *line = strtok(text, "\n"); line; line = strtok(NULL, "\n")) {
        cJSON *o = cJSON_Parse(line);
        while (line_no < S.man->n_entries && S.man->entries[line_no].missing)
            line_no++;
        if (!o || line_no >= S.man->n_entries ||
            strcmp(cJSON_GetObjectItem(o, "image")->valuestring, S.man->entries[line_no].path) != 0)
            return -1;
        expected *e = &S.exp[line_no++];
        const cJSON *ids = cJSON_GetObjectItem(o, "ids");
        e->ok = ids != NULL;
        e->n_ids = ids ? cJSON_GetArraySize(ids) : 0;
        e->ids = malloc(sizeof(int) * (size_t)(e->n_ids + 1));
        for (int k = 0; k < e->n_ids; k++) {
            e->ids[k] = cJSON_GetArrayItem(ids, k)->valueint;
            if (e->ids[k] >= 0 && e->ids[k] < VOCAB_SIZE)
                counts[e->ids[k]].count++;
        }
        cJSON_Delete(o);
    }
    free(text);
    for (size_t i = 0; i < S.man->n_entries; i++)
        S.exp[i].id = S.man->entries[i].id;

    /* The vocabulary of the runs: the most frequent ids carry the most
     * frequent reference words. */
    word_count words[512] = {{"", 0}};
    int n_words = reference_words(S.man, words, 512);
    qsort(counts, VOCAB_SIZE, sizeof *counts, by_id_count);
    for (int k = 0, w = 0; k < VOCAB_SIZE && w < n_words; k++)
        if (!special_token(counts[k].id))
            snprintf(S.tokens[counts[k].id], 64, "%s", words[w++].word);
    snprintf(S.vocab, sizeof S.vocab, "%s/vocab.txt", S.dir);
    write_vocab(S.vocab, S.tokens);
    snprintf(S.single_db, sizeof S.single_db, "%s/single.db", S.dir);
    return 0;
}

static int group_teardown(void **state)
{
    (void)state;
    for (size_t i = 0; S.exp && i < S.man->n_entries; i++)
        free(S.exp[i].ids);
    free(S.exp);
    manifest_free(S.man);
    free(S.dir);
    return 0;
}

/* The caption the synthetic vocabulary gives ids: their tokens joined by
 * spaces, special tokens left out (none of the words needs WordPiece
 * joining or punctuation clean-up). */
static void expected_caption(const int *ids, int n, char *out, size_t size)
{
    out[0] = '\0';
    for (int k = 0; k < n; k++) {
        if (special_token(ids[k]))
            continue;
        size_t used = strlen(out);
        snprintf(out + used, size - used, "%s%s", used ? " " : "", S.tokens[ids[k]]);
    }
}

/* The ids of a JSON array text. */
static int *parse_ids(const char *json, int *n)
{
    cJSON *a = cJSON_Parse(json);
    assert_true(cJSON_IsArray(a));
    *n = cJSON_GetArraySize(a);
    int *ids = malloc(sizeof(int) * (size_t)(*n + 1));
    for (int k = 0; k < *n; k++)
        ids[k] = cJSON_GetArrayItem(a, k)->valueint;
    cJSON_Delete(a);
    return ids;
}

/* ---- tests --------------------------------------------------------------- */

/* One process: every manifest entry has exactly one row; the broken ones
 * are errors whose reason names the file, the others carry the ids `radcap
 * caption --json` gave and the text those ids decode to; exit status 1. */
static void test_single_process(void **state)
{
    (void)state;
    char cmd[CMD];
    run_args(cmd, sizeof cmd, S.csv, S.single_db, "--batch 8 --threads 2");
    char *err_text;
    assert_int_equal(run_logged("single", cmd, &err_text), 1);
    assert_non_null(strstr(err_text, "rank 0 WARN"));
    free(err_text);

    sqlite3 *db = open_db(S.single_db);
    assert_int_equal(query_int(db, "SELECT count(*) FROM runs"), 1);
    assert_int_equal(query_int(db, "SELECT status = 'completed' FROM runs"), 1);
    assert_int_equal(query_int(db, "SELECT n_ok FROM runs"), N_IMAGES);
    assert_int_equal(query_int(db, "SELECT n_error FROM runs"), N_BROKEN);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), (long long)S.man->n_entries);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT status, caption, token_ids, error, path, worker_rank, seq "
                                            "FROM items WHERE image_id = ?1",
                                        -1, &st, NULL),
                     SQLITE_OK);
    int n_errors = 0;
    for (size_t i = 0; i < S.man->n_entries; i++) {
        const expected *e = &S.exp[i];
        sqlite3_bind_text(st, 1, e->id, -1, SQLITE_STATIC);
        assert_int_equal(sqlite3_step(st), SQLITE_ROW);
        const char *status = (const char *)sqlite3_column_text(st, 0);
        assert_int_equal(sqlite3_column_int64(st, 6), (long long)i);
        if (!e->ok) {
            n_errors++;
            assert_string_equal(status, "error");
            const char *reason = (const char *)sqlite3_column_text(st, 3);
            assert_non_null(reason);
            assert_non_null(strstr(reason, e->id)); /* the path, which holds the id */
            assert_int_equal(sqlite3_column_type(st, 1), SQLITE_NULL);
        } else {
            assert_string_equal(status, "ok");
            assert_int_equal(sqlite3_column_int(st, 5), 0);
            int n_ids;
            int *ids = parse_ids((const char *)sqlite3_column_text(st, 2), &n_ids);
            assert_int_equal(n_ids, e->n_ids);
            assert_memory_equal(ids, e->ids, sizeof(int) * (size_t)n_ids);
            char caption[8192];
            expected_caption(ids, n_ids, caption, sizeof caption);
            assert_string_equal((const char *)sqlite3_column_text(st, 1), caption);
            free(ids);
        }
        assert_int_equal(sqlite3_step(st), SQLITE_DONE);
        sqlite3_reset(st);
    }
    assert_int_equal(n_errors, N_BROKEN);
    sqlite3_finalize(st);
    sqlite3_close(db);
    S.single_done = 1;
}

/* Compares the items of two databases' first runs row by row. */
static void assert_same_items(const char *a, const char *b)
{
    char sql[4400];
    sqlite3 *db = open_db(a);
    snprintf(sql, sizeof sql, "ATTACH '%s' AS other", b);
    /* ATTACH needs a writable connection only for writing; read-only is fine */
    assert_int_equal(sqlite3_exec(db, sql, NULL, NULL, NULL), SQLITE_OK);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items"), query_int(db, "SELECT count(*) FROM other.items"));
    long long differing = query_int(db, "SELECT count(*) FROM items x LEFT JOIN other.items y USING (image_id) "
                                        "WHERE y.image_id IS NULL OR x.status IS NOT y.status "
                                        "OR x.caption IS NOT y.caption OR x.token_ids IS NOT y.token_ids "
                                        "OR x.error IS NOT y.error OR x.seq IS NOT y.seq");
    assert_int_equal(differing, 0);
    sqlite3_close(db);
}

/* mpirun -np 3 (a dispatching master and two workers of 1 thread, with the
 * chunks shrinking at the end): the same rows and captions as one process
 * with 2 threads and full batches. */
static void test_mpi_same_as_single(void **state)
{
    (void)state;
    if (!S.have_mpi)
        skip(); /* mpirun is not installed: MPI runs untested */
    assert_true(S.single_done);
    char db[4300], args[CMD], cmd[CMD + 600];
    snprintf(db, sizeof db, "%s/mpi3.db", S.dir);
    run_args(args, sizeof args, S.csv, db, "--batch 8 --threads 1");
    snprintf(cmd, sizeof cmd, "%s 3 %s", S.mpi_env, args);
    char *err_text;
    assert_int_equal(run_logged("mpi3", cmd, &err_text), 1);
    free(err_text);
    assert_same_items(S.single_db, db);
    sqlite3 *h = open_db(db);
    assert_int_equal(query_int(h, "SELECT n_ranks FROM runs"), 3);
    assert_int_equal(query_int(h, "SELECT count(*) FROM items WHERE status = 'ok' AND worker_rank NOT IN (1, 2)"), 0);
    sqlite3_close(h);
}

/* Scores of a database: per image (id -> 6 values) and the corpus. */
typedef struct stored_scores {
    char (*ids)[64];
    double (*values)[6];
    int n;
    double corpus[6];
    long long corpus_images;
} stored_scores;

static const char *metric_names[6] = {"bleu_1", "bleu_2", "bleu_3", "bleu_4", "cider", "rouge_l"};

static void read_scores(const char *path, stored_scores *out)
{
    sqlite3 *db = open_db(path);
    memset(out, 0, sizeof *out);
    out->ids = calloc(S.man->n_entries, sizeof *out->ids);
    out->values = calloc(S.man->n_entries, sizeof *out->values);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT image_id, metric, value FROM item_scores ORDER BY image_id, metric",
                                        -1, &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW) {
        const char *id = (const char *)sqlite3_column_text(st, 0), *metric = (const char *)sqlite3_column_text(st, 1);
        if (out->n == 0 || strcmp(out->ids[out->n - 1], id) != 0)
            snprintf(out->ids[out->n++], 64, "%s", id);
        for (int k = 0; k < 6; k++)
            if (strcmp(metric, metric_names[k]) == 0)
                out->values[out->n - 1][k] = sqlite3_column_double(st, 2);
    }
    sqlite3_finalize(st);
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT metric, value, n_images FROM corpus_scores", -1, &st, NULL),
                     SQLITE_OK);
    int n_metrics = 0;
    while (sqlite3_step(st) == SQLITE_ROW) {
        for (int k = 0; k < 6; k++)
            if (strcmp((const char *)sqlite3_column_text(st, 0), metric_names[k]) == 0)
                out->corpus[k] = sqlite3_column_double(st, 1);
        out->corpus_images = sqlite3_column_int64(st, 2);
        n_metrics++;
    }
    assert_int_equal(n_metrics, 6);
    sqlite3_finalize(st);
    sqlite3_close(db);
}

static void free_scores(stored_scores *s)
{
    free(s->ids);
    free(s->values);
}

/* Compares stored scores with a `radcap score --json` / `radcap eval
 * --json` object, exactly (17 significant digits give the double back). */
static void assert_scores_equal_json(const stored_scores *s, const char *json_text)
{
    cJSON *o = cJSON_Parse(json_text);
    assert_non_null(o);
    const cJSON *bleu = cJSON_GetObjectItem(o, "bleu");
    for (int k = 0; k < 4; k++)
        assert_true(cJSON_GetArrayItem(bleu, k)->valuedouble == s->corpus[k]);
    assert_true(cJSON_GetObjectItem(o, "cider")->valuedouble == s->corpus[4]);
    assert_true(cJSON_GetObjectItem(o, "rouge_l")->valuedouble == s->corpus[5]);
    const cJSON *per = cJSON_GetObjectItem(o, "per_image");
    assert_int_equal(cJSON_GetArraySize(per), s->n);
    for (int i = 0; i < s->n; i++) {
        const cJSON *img = cJSON_GetObjectItem(per, s->ids[i]);
        assert_non_null(img);
        for (int k = 0; k < 4; k++)
            assert_true(cJSON_GetArrayItem(cJSON_GetObjectItem(img, "bleu"), k)->valuedouble == s->values[i][k]);
        assert_true(cJSON_GetObjectItem(img, "cider")->valuedouble == s->values[i][4]);
        assert_true(cJSON_GetObjectItem(img, "rouge_l")->valuedouble == s->values[i][5]);
    }
    cJSON_Delete(o);
}

/* Writes one JSON Lines record {"id": id, "caption": text}. */
static void write_record(FILE *f, const char *id, const char *caption)
{
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "id", id);
    cJSON_AddStringToObject(o, "caption", caption);
    char *line = cJSON_PrintUnformatted(o);
    fprintf(f, "%s\n", line);
    cJSON_free(line);
    cJSON_Delete(o);
}

/* The run stored the references and scored its 200 captioned images; the
 * numbers equal `radcap score --json` on the captions read back from the
 * database and the references read from the manifest, and are not all 0. */
static void test_scores_stored(void **state)
{
    (void)state;
    assert_true(S.single_done);
    char cands[4300], refs[4300];
    snprintf(cands, sizeof cands, "%s/candidates.jsonl", S.dir);
    snprintf(refs, sizeof refs, "%s/references.jsonl", S.dir);
    FILE *f = fopen(refs, "w");
    for (size_t i = 0; i < S.man->n_entries; i++)
        for (int r = 0; r < S.man->entries[i].n_refs; r++)
            write_record(f, S.man->entries[i].id, S.man->entries[i].refs[r]);
    fclose(f);
    f = fopen(cands, "w");
    sqlite3 *db = open_db(S.single_db);
    sqlite3_stmt *st;
    assert_int_equal(sqlite3_prepare_v2(db, "SELECT image_id, caption FROM items WHERE status = 'ok' ORDER BY seq", -1,
                                        &st, NULL),
                     SQLITE_OK);
    while (sqlite3_step(st) == SQLITE_ROW)
        write_record(f, (const char *)sqlite3_column_text(st, 0), (const char *)sqlite3_column_text(st, 1));
    sqlite3_finalize(st);
    fclose(f);
    /* the references and tokenised texts are stored too */
    assert_int_equal(query_int(db, "SELECT count(*) FROM reference_captions WHERE tokens IS NOT NULL"),
                     (long long)S.man->n_entries);
    assert_int_equal(query_int(db, "SELECT count(*) FROM items WHERE caption_tokens IS NOT NULL"), N_IMAGES);
    sqlite3_close(db);

    stored_scores s;
    read_scores(S.single_db, &s);
    assert_int_equal(s.n, N_IMAGES);
    assert_int_equal(s.corpus_images, N_IMAGES);
    assert_true(s.corpus[0] > 0.01 && s.corpus[4] > 0 && s.corpus[5] > 0.01); /* the vocabulary makes them non-zero */

    char cmd[CMD];
    snprintf(cmd, sizeof cmd, "%s score --candidates %s --references %s --json", tu_radcap_bin(), cands, refs);
    assert_int_equal(run_logged("score", cmd, NULL), 0);
    char out_path[4300];
    snprintf(out_path, sizeof out_path, "%s/score.out", S.dir);
    char *json = tu_read_file(out_path, NULL);
    assert_non_null(json);
    assert_scores_equal_json(&s, json);
    free(json);
    free_scores(&s);
}

/* radcap eval recomputes the same numbers, prints them as radcap score
 * does, stores them again unchanged, and exits 1 because images with
 * references failed. */
static void test_eval_rescores(void **state)
{
    (void)state;
    assert_true(S.single_done);
    stored_scores before, after;
    read_scores(S.single_db, &before);
    char cmd[CMD];
    snprintf(cmd, sizeof cmd, "%s eval --db %s --json", tu_radcap_bin(), S.single_db);
    char *err_text;
    assert_int_equal(run_logged("eval", cmd, &err_text), 1);
    char expected_message[128];
    snprintf(expected_message, sizeof expected_message, "%d image(s) with references have no caption", N_BROKEN);
    assert_non_null(strstr(err_text, expected_message));
    free(err_text);
    char out_path[4300];
    snprintf(out_path, sizeof out_path, "%s/eval.out", S.dir);
    char *json = tu_read_file(out_path, NULL);
    assert_non_null(json);
    assert_scores_equal_json(&before, json);
    free(json);
    read_scores(S.single_db, &after);
    assert_int_equal(after.n, before.n);
    assert_memory_equal(after.values, before.values, sizeof *before.values * (size_t)before.n);
    assert_memory_equal(after.corpus, before.corpus, sizeof before.corpus);
    free_scores(&before);
    free_scores(&after);
    /* a database without the run is an error naming it */
    snprintf(cmd, sizeof cmd, "%s eval --db %s --run 7", tu_radcap_bin(), S.single_db);
    assert_int_equal(run_logged("eval-missing", cmd, &err_text), 3);
    assert_non_null(strstr(err_text, "7"));
    free(err_text);
}

/* kill -9 of the whole MPI job half way, then the same command again: the
 * run completes, every image exactly once, one run row (resumed), the
 * database intact. Without mpirun, the same with one process. */
static void test_kill9_resume(void **state)
{
    (void)state;
    char db[4300], args[CMD], cmd[CMD + 600];
    snprintf(db, sizeof db, "%s/kill9.db", S.dir);
    run_args(args, sizeof args, S.big_csv, db, "--batch 4 --threads 1 --quiet --no-score");
    if (S.have_mpi)
        snprintf(cmd, sizeof cmd, "exec %s 3 %s >/dev/null 2>&1", S.mpi_env, args);
    else
        snprintf(cmd, sizeof cmd, "exec %s >/dev/null 2>&1", args);
    pid_t pid = spawn_group(cmd);
    wait_for_items(pid, db, N_BIG / 3);
    kill_job(pid);
    assert_int_equal(wait_status(pid), 128 + SIGKILL);
    usleep(200000); /* let the killed ranks' exit complete */
    long long kept = committed_items(db);
    assert_true(kept >= N_BIG / 3 && kept < N_BIG);

    snprintf(cmd, sizeof cmd, "%s%s%s", S.have_mpi ? S.mpi_env : "", S.have_mpi ? " 3 " : "", args);
    assert_int_equal(run_logged("kill9-resume", cmd, NULL), 0);
    check_complete_once(db, N_BIG);
}

/* SIGTERM to a single-process run half way: exit status 4, the run marked
 * interrupted with the reason, the batch in flight stored; the same
 * command completes it. */
static void test_sigterm_resume(void **state)
{
    (void)state;
    char db[4300], args[CMD], cmd[CMD + 600];
    snprintf(db, sizeof db, "%s/sigterm.db", S.dir);
    run_args(args, sizeof args, S.big_csv, db, "--batch 4 --threads 1 --no-score");
    snprintf(cmd, sizeof cmd, "exec %s >%s/sigterm.out 2>%s/sigterm.err", args, S.dir, S.dir);
    pid_t pid = spawn_group(cmd);
    wait_for_items(pid, db, N_BIG / 3);
    assert_int_equal(kill(pid, SIGTERM), 0);
    assert_int_equal(wait_status(pid), 4);
    sqlite3 *h = open_db(db);
    assert_int_equal(query_int(h, "SELECT status = 'interrupted' AND message = 'stopped by SIGTERM' FROM runs"), 1);
    long long kept = query_int(h, "SELECT count(*) FROM items");
    assert_int_equal(query_int(h, "SELECT n_ok FROM runs"), kept);
    assert_true(kept < N_BIG);
    sqlite3_close(h);
    char out_path[4300];
    snprintf(out_path, sizeof out_path, "%s/sigterm.out", S.dir);
    char *out = tu_read_file(out_path, NULL);
    assert_non_null(strstr(out, "interrupted"));
    free(out);

    assert_int_equal(run_logged("sigterm-resume", args, NULL), 0);
    check_complete_once(db, N_BIG);
}

/* Under mpirun a signal reaches the ranks (mpirun forwards SIGUSR1; srun
 * and Slurm signal every task): the run is interrupted, exit status 4, what
 * was stored is counted in the run, and resuming captions every image
 * exactly once. (How many images were done by then depends on the
 * machine's speed: the workers finish the chunks and the decoding session
 * they hold, so a fast run may have stored them all.) */
static void test_mpi_signal(void **state)
{
    (void)state;
    if (!S.have_mpi)
        skip();
    char db[4300], args[CMD], cmd[CMD + 600];
    snprintf(db, sizeof db, "%s/usr1.db", S.dir);
    run_args(args, sizeof args, S.big_csv, db, "--batch 4 --threads 1 --no-score");
    snprintf(cmd, sizeof cmd, "exec %s 3 %s >%s/usr1.out 2>%s/usr1.err", S.mpi_env, args, S.dir, S.dir);
    pid_t pid = spawn_group(cmd);
    /* early: mpirun takes a few hundred ms to pass the signal on, and the
     * workers finish the images they hold (up to 2 chunks and a full
     * decoding session each) */
    wait_for_items(pid, db, N_BIG / 6);
    assert_int_equal(kill(pid, SIGUSR1), 0);
    assert_int_equal(wait_status(pid), 4);
    sqlite3 *h = open_db(db);
    assert_int_equal(query_int(h, "SELECT status = 'interrupted' FROM runs"), 1);
    assert_int_equal(query_int(h, "SELECT n_ok FROM runs"), query_int(h, "SELECT count(*) FROM items"));
    sqlite3_close(h);
    assert_int_equal(run_logged("usr1-resume", args, NULL), 0);
    check_complete_once(db, N_BIG);
}

/* A checkpoint that rank 0 can hash but no worker can load: the job ends
 * quickly with a message from the master naming the file; the run is
 * marked failed. One process: exit status 3 with the same message. */
static void test_worker_cannot_load(void **state)
{
    (void)state;
    char bad[4300], cmd[CMD], db[4300];
    snprintf(bad, sizeof bad, "%s/truncated-model.bin", S.dir);
    snprintf(cmd, sizeof cmd, "head -c 100000 %s >%s", S.model, bad);
    assert_int_equal(tu_run(cmd), 0);
    snprintf(db, sizeof db, "%s/fatal.db", S.dir);
    char *err_text;
    for (int mpi = 0; mpi <= S.have_mpi; mpi++) {
        snprintf(cmd, sizeof cmd,
                 "%s%s%s run --manifest %s --db %s --checkpoint %s --config %s --vocab %s --threads 1",
                 mpi ? S.mpi_env : "", mpi ? " 3 " : "", tu_radcap_bin(), S.csv, db, bad, S.config, S.vocab);
        const double t0 = now_seconds();
        assert_int_equal(run_logged("fatal", cmd, &err_text), 3);
        assert_true(now_seconds() - t0 < 30);
        assert_non_null(strstr(err_text, "truncated-model.bin"));
        if (mpi)
            assert_non_null(strstr(err_text, "rank 0 ERROR rank "));
        free(err_text);
    }
    sqlite3 *h = open_db(db);
    assert_int_equal(query_int(h, "SELECT count(*) FROM runs WHERE status = 'failed'"), 1);
    assert_int_equal(query_int(h, "SELECT count(*) FROM items WHERE status = 'ok'"), 0);
    sqlite3_close(h);
}

/* Usage errors: exit status 2 and a message. */
static void test_usage(void **state)
{
    (void)state;
    char cmd[4300];
    snprintf(cmd, sizeof cmd, "%s run --manifest x.csv", tu_radcap_bin());
    assert_int_equal(run_logged("usage", cmd, NULL), 2);
    snprintf(cmd, sizeof cmd, "%s run --help", tu_radcap_bin());
    assert_int_equal(run_logged("help", cmd, NULL), 0);
    snprintf(cmd, sizeof cmd, "%s eval", tu_radcap_bin());
    assert_int_equal(run_logged("usage-eval", cmd, NULL), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_usage),
        cmocka_unit_test(test_single_process),
        cmocka_unit_test(test_mpi_same_as_single),
        cmocka_unit_test(test_scores_stored),
        cmocka_unit_test(test_eval_rescores),
        cmocka_unit_test(test_kill9_resume),
        cmocka_unit_test(test_sigterm_resume),
        cmocka_unit_test(test_mpi_signal),
        cmocka_unit_test(test_worker_cannot_load),
    };
    return cmocka_run_group_tests(tests, group_setup, group_teardown);
}
