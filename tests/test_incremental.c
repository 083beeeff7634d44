/* Incremental runs (`radcap run --since-last`) and the failed-image limit
 * (--max-errors), end to end through the program with the tiny model:
 *  - a second run captions exactly the new and the changed files (size or
 *    mtime; or content with --change-detection content) and leaves the
 *    others out, counting them in runs.n_skipped;
 *  - what it captions is what the files now hold: a file overwritten with
 *    another image's bytes gets that image's earlier caption;
 *  - view latest_items gives each file's newest caption;
 *  - --max-errors stops the run after that many failures, keeps the
 *    results stored so far and marks the run failed; without the limit
 *    the same command continues it.
 */
#include <fcntl.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "tests/helpers/testutil.h"

typedef struct fixture {
    char dir[4200];
    char images[4300]; /* the archive: a folder of images */
    char vocab[4300];
    char db[4300];
    char model[4300], config[4300];
} fixture;

static fixture F;

static int setup(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp_abs("incremental");
    snprintf(F.dir, sizeof F.dir, "%s", dir);
    free(dir);
    char cwd[4096];
    if (!getcwd(cwd, sizeof cwd))
        return -1;
    snprintf(F.model, sizeof F.model, "%s/tests/fixtures/tiny/model.bin", cwd);
    snprintf(F.config, sizeof F.config, "%s/tests/fixtures/tiny/config.json", cwd);
    snprintf(F.vocab, sizeof F.vocab, "%s/vocab.txt", F.dir);
    if (tu_write_synthetic_vocab(F.vocab, 400) < 0)
        return -1;
    char cmd[40000];
    snprintf(cmd, sizeof cmd, "%s synth --out %s/arch --count 8 --seed 11 >/dev/null", tu_radcap_bin(), F.dir);
    if (tu_run(cmd) != 0)
        return -1;
    snprintf(F.images, sizeof F.images, "%s/arch/valid", F.dir);
    snprintf(F.db, sizeof F.db, "%s/nightly.db", F.dir);
    return 0;
}

/* radcap run over the archive folder into F.db with extra options; returns
 * the exit status. */
static int run(const char *extra)
{
    char cmd[40000];
    snprintf(cmd, sizeof cmd,
             "%s run --manifest %s --db %s --checkpoint %s --config %s --vocab %s --threads 1 --batch 3 "
             "--quiet %s >%s/run.out 2>%s/run.err",
             tu_radcap_bin(), F.images, F.db, F.model, F.config, F.vocab, extra, F.dir, F.dir);
    return tu_run(cmd);
}

/* The output of one SQL query on db (rows on lines, columns split by |). */
static char *query(const char *db, const char *sql)
{
    char cmd[9000], out[4300];
    snprintf(out, sizeof out, "%s/query.txt", F.dir);
    snprintf(cmd, sizeof cmd, "sqlite3 %s \"%s\" > %s", db, sql, out);
    assert_int_equal(tu_run(cmd), 0);
    char *text = tu_read_file(out, NULL);
    assert_non_null(text);
    return text;
}

static void expect_query(const char *db, const char *sql, const char *expected)
{
    char *got = query(db, sql);
    if (strcmp(got, expected) != 0)
        fail_msg("%s\ngave:\n%s\nexpected:\n%s", sql, got, expected);
    free(got);
}

static void image_path(const char *name, char out[4400])
{
    snprintf(out, 4400, "%s/%s", F.images, name);
}

static void copy_file(const char *from_name, const char *to_name)
{
    char from[4400], to[4400];
    image_path(from_name, from);
    image_path(to_name, to);
    size_t len;
    char *bytes = tu_read_file(from, &len);
    assert_non_null(bytes);
    FILE *f = fopen(to, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(bytes, 1, len, f), len);
    fclose(f);
    free(bytes);
}

/* Sets a file's modification time `seconds` ahead of its current one. */
static void shift_mtime(const char *name, int seconds)
{
    char path[4400];
    image_path(name, path);
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    struct timespec times[2] = {st.st_atim, st.st_mtim};
    times[1].tv_sec += seconds;
    assert_int_equal(utimensat(AT_FDCWD, path, times, 0), 0);
}

#define IMG(n) "ROCOv2_2023_valid_00000" #n ".jpg"

static void test_since_last(void **state)
{
    (void)state;
    assert_int_equal(run("--since-last"), 0);
    expect_query(F.db, "SELECT id, status, n_total, n_ok, n_skipped FROM runs", "1|completed|8|8|0\n");

    /* a new file (image 1's bytes), a changed one (image 2 now holds image
     * 3's bytes), one touched only (image 4); the other five unchanged */
    copy_file(IMG(1), "new_scan.jpg");
    copy_file(IMG(3), IMG(2));
    shift_mtime(IMG(4), 10);
    assert_int_equal(run("--since-last"), 0);
    expect_query(F.db, "SELECT id, status, n_total, n_ok, n_skipped FROM runs WHERE id = 2", "2|completed|9|3|6\n");
    expect_query(F.db, "SELECT image_id FROM items WHERE run_id = 2 ORDER BY image_id",
                 IMG(2) "\n" IMG(4) "\nnew_scan.jpg\n");
    /* each caption is that of the bytes the file now holds */
    expect_query(F.db,
                 "SELECT a.image_id, a.token_ids = b.token_ids FROM items a JOIN items b ON b.run_id = 1 AND "
                 "b.image_id = CASE a.image_id WHEN 'new_scan.jpg' THEN '" IMG(1) "' WHEN '" IMG(2) "' THEN '" IMG(
                     3) "' ELSE a.image_id END WHERE a.run_id = 2 ORDER BY a.image_id",
                 IMG(2) "|1\n" IMG(4) "|1\nnew_scan.jpg|1\n");
    /* the newest caption of every file */
    expect_query(F.db, "SELECT image_id, run_id FROM latest_items ORDER BY image_id",
                 IMG(1) "|1\n" IMG(2) "|2\n" IMG(3) "|1\n" IMG(4) "|2\n" IMG(5) "|1\n" IMG(6) "|1\n" IMG(
                     7) "|1\n" IMG(8) "|1\nnew_scan.jpg|2\n");

    /* nothing changed: a completed run with no item */
    assert_int_equal(run("--since-last"), 0);
    expect_query(F.db, "SELECT n_total, n_ok, n_error, n_skipped, (SELECT count(*) FROM items WHERE run_id = 3) "
                       "FROM runs WHERE id = 3",
                 "9|0|0|9|0\n");

    /* by content: the earlier runs stored no hashes, so the first content
     * run captions (and hashes) every file once; then a touch is no change
     * and new bytes are */
    assert_int_equal(run("--since-last --change-detection content"), 0);
    expect_query(F.db, "SELECT n_ok, n_skipped, (SELECT count(*) FROM items WHERE run_id = 4 AND "
                       "length(content_sha256) = 64) FROM runs WHERE id = 4",
                 "9|0|9\n");
    shift_mtime(IMG(5), 20);
    copy_file(IMG(8), IMG(6));
    assert_int_equal(run("--since-last --change-detection content"), 0);
    expect_query(F.db, "SELECT image_id FROM items WHERE run_id = 5", IMG(6) "\n");
    expect_query(F.db, "SELECT n_skipped FROM runs WHERE id = 5", "8\n");
    /* a plain run is not incremental: every file */
    assert_int_equal(run(""), 0);
    expect_query(F.db, "SELECT count(*) FROM items WHERE run_id = 6", "9\n");
}

static void test_max_errors(void **state)
{
    (void)state;
    char list[4400], db[4400], cmd[40000];
    snprintf(list, sizeof list, "%s/broken.txt", F.dir);
    snprintf(db, sizeof db, "%s/broken.db", F.dir);
    FILE *f = fopen(list, "w");
    assert_non_null(f);
    for (int i = 0; i < 6; i++) {
        char path[4400];
        snprintf(path, sizeof path, "%s/empty%d.png", F.dir, i);
        FILE *e = fopen(path, "w"); /* empty: not an image */
        assert_non_null(e);
        fclose(e);
        fprintf(f, "%s\n", path);
    }
    fclose(f);
    const char *common = "run --manifest-kind list --threads 1 --batch 1";
    snprintf(cmd, sizeof cmd, "%s %s --manifest %s --db %s --checkpoint %s --config %s --vocab %s --max-errors 2 "
             ">%s/max.out 2>%s/max.err",
             tu_radcap_bin(), common, list, db, F.model, F.config, F.vocab, F.dir, F.dir);
    assert_int_equal(tu_run(cmd), 3);
    char path[4400];
    snprintf(path, sizeof path, "%s/max.err", F.dir);
    char *err_text = tu_read_file(path, NULL);
    assert_non_null(strstr(err_text, "3 images failed in this session, more than max_errors (2)"));
    free(err_text);
    /* one image per batch: the third failure stops the run, all three stored */
    expect_query(db, "SELECT status, n_error, message LIKE '%max_errors%' FROM runs", "failed|3|1\n");
    /* without the limit the same command continues the run */
    snprintf(cmd, sizeof cmd, "%s %s --manifest %s --db %s --checkpoint %s --config %s --vocab %s >/dev/null 2>&1",
             tu_radcap_bin(), common, list, db, F.model, F.config, F.vocab);
    assert_int_equal(tu_run(cmd), 1);
    expect_query(db, "SELECT id, status, n_error, n_resumes FROM runs", "1|completed|6|1\n");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_since_last),
        cmocka_unit_test(test_max_errors),
    };
    return cmocka_run_group_tests(tests, setup, NULL);
}
