/* Job files and run settings (pipeline/job.h): every key's value reaches the
 * run's options, errors name the file and the key (or the line and column),
 * environment expansion and path resolution, the effective settings as JSON
 * read back to the same settings, and through `radcap run`: command-line
 * options override a job file, the settings are stored with the run, and
 * --help names every setting. */
#include <cjson/cJSON.h>
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "pipeline/job.h"
#include "tests/helpers/testutil.h"

/* Loads text as a job file in folder dir; returns the status, err filled. */
static int load(job_settings *s, const char *text, const char *dir, rc_error *err)
{
    job_settings_init(s);
    return job_load_text(s, text, strlen(text), "test.json", dir, NULL, err);
}

/* A job file that must fail: the message must contain every fragment. */
static void expect_error(const char *text, ...)
{
    job_settings s;
    rc_error err = {{0}};
    assert_int_equal(load(&s, text, "/jobs", &err), -1);
    va_list ap;
    va_start(ap, text);
    for (const char *frag; (frag = va_arg(ap, const char *));) {
        if (!strstr(err.msg, frag))
            fail_msg("job %s: message '%s' lacks '%s'", text, err.msg, frag);
    }
    va_end(ap);
    job_settings_free(&s);
}

static void test_every_key_reaches_the_options(void **state)
{
    (void)state;
    const char *text = "{\"manifest\": \"m.csv\", \"manifest_kind\": \"csv\", \"image_dir\": \"imgs\",\n"
                       " \"db\": \"/abs/r.db\", \"checkpoint\": \"c.bin\", \"vocab\": \"v.txt\", \"config\": \"cfg.json\",\n"
                       " \"batch\": 12, \"threads\": 3, \"max_pixels\": 5000000, \"exif_orientation\": true,\n"
                       " \"max_length\": 40, \"min_length\": 2, \"beam\": 4, \"length_penalty\": 0.5,\n"
                       " \"early_stopping\": true, \"no_repeat_ngram\": 3, \"repetition_penalty\": 1.25,\n"
                       " \"token_scores\": true, \"precision\": \"bf16\", \"since_last\": true,\n"
                       " \"change_detection\": \"content\",\n"
                       " \"max_errors\": 7, \"new_run\": true, \"evaluate\": false, \"drop_brackets\": true,\n"
                       " \"prefetch\": false, \"progress_interval\": 5, \"log_level\": \"debug\"}";
    job_settings s;
    rc_error err = {{0}};
    assert_int_equal(load(&s, text, "/jobs", &err), 0);
    const sched_run_options *o = &s.run;
    assert_string_equal(o->manifest, "/jobs/m.csv");
    assert_int_equal(o->manifest_kind, MANIFEST_CSV);
    assert_string_equal(o->image_dir, "/jobs/imgs");
    assert_string_equal(o->db, "/abs/r.db");
    assert_string_equal(o->checkpoint, "/jobs/c.bin");
    assert_string_equal(o->vocab, "/jobs/v.txt");
    assert_string_equal(s.config_path, "/jobs/cfg.json");
    assert_int_equal(o->batch, 12);
    assert_int_equal(o->threads, 3);
    assert_true(o->max_pixels == 5000000);
    assert_int_equal(o->exif_orientation, 1);
    assert_int_equal(s.max_length, 40);
    assert_int_equal(o->decoding.min_length, 2);
    assert_int_equal(o->decoding.beam, 4);
    assert_true(o->decoding.length_penalty == 0.5);
    assert_int_equal(o->decoding.early_stopping, 1);
    assert_int_equal(o->decoding.no_repeat_ngram, 3);
    assert_true(o->decoding.repetition_penalty == 1.25);
    assert_int_equal(o->decoding.token_scores, 1);
    assert_int_equal(o->precision, MODEL_BF16);
    assert_int_equal(o->since_last, 1);
    assert_int_equal(o->change_by_content, 1);
    assert_true(o->max_errors == 7);
    assert_int_equal(o->new_run, 1);
    assert_int_equal(o->score, 0);
    assert_int_equal(o->ptb.drop_brackets, 1);
    assert_int_equal(o->prefetch, 0);
    assert_true(o->progress_seconds == 5);
    assert_int_equal(s.level, LOG_DEBUG);
    job_settings_free(&s);
}

static void test_defaults_and_null(void **state)
{
    (void)state;
    job_settings s;
    rc_error err = {{0}};
    assert_int_equal(load(&s, "{\"batch\": null, \"config\": null, \"_comment\": [\"any\"], \"_beam\": 4}", NULL, &err), 0);
    sched_run_options d;
    sched_run_options_default(&d);
    assert_int_equal(s.run.batch, d.batch);
    assert_null(s.config_path);
    assert_int_equal(s.run.decoding.beam, 1);
    assert_true(s.run.max_errors == -1);
    assert_int_equal(s.level, LOG_INFO);
    job_settings_free(&s);
}

static void test_errors_name_file_and_key(void **state)
{
    (void)state;
    expect_error("{\"bacth\": 8}", "test.json", "'bacth'", "unknown key", NULL);
    expect_error("{\"batch\": \"8\"}", "test.json", "'batch'", "expected an integer from 1 to 4096, got a string",
                 NULL);
    expect_error("{\"batch\": 0}", "'batch'", "got 0", NULL);
    expect_error("{\"batch\": 2.5}", "'batch'", "got 2.5", NULL);
    expect_error("{\"beam\": 17}", "'beam'", "from 1 to 16", NULL);
    expect_error("{\"length_penalty\": true}", "'length_penalty'", "a number from", "got a boolean", NULL);
    expect_error("{\"since_last\": 1}", "'since_last'", "expected true or false, got a number", NULL);
    expect_error("{\"manifest\": [\"a\", \"b\"]}", "'manifest'", "expected a string, got an array", NULL);
    expect_error("{\"change_detection\": \"mtime\"}", "'change_detection'", "'mtime' is not one of stat or content",
                 NULL);
    expect_error("{\"log_level\": \"loud\"}", "'log_level'", "error, warning, info or debug", NULL);
    expect_error("{\"manifest\": \"\"}", "'manifest'", "empty path", NULL);
    expect_error("{\"batch\": 4, \"batch\": 5}", "'batch' appears twice", NULL);
    expect_error("[1, 2]", "test.json", "one JSON object", NULL);
    /* the stray comma before } is found at the }: line 4, column 1 */
    expect_error("{\n  \"batch\": 4,\n  \"beam\": 2,\n}", "test.json:4:1", "not valid JSON", NULL);
    expect_error("{\"batch\": 4 \"beam\": 2}", "test.json:1:13", NULL);
}

static void test_environment_expansion(void **state)
{
    (void)state;
    setenv("RC_TEST_DIR", "/scratch/x", 1);
    setenv("RC_TEST_EMPTY", "", 1);
    unsetenv("RC_TEST_UNSET");
    rc_error err = {{0}};
    struct {
        const char *in, *out;
    } cases[] = {
        {"${RC_TEST_DIR}/a.db", "/scratch/x/a.db"},
        {"${RC_TEST_UNSET:-/def}/a", "/def/a"},
        {"${RC_TEST_EMPTY:-fallback}", "fallback"}, /* as the shell's :- */
        {"${RC_TEST_DIR:-unused}", "/scratch/x"},
        {"cost $$5 and $HOME", "cost $5 and $HOME"}, /* only ${...} expands */
        {"plain", "plain"},
        {"", ""},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        char *got = job_expand(cases[i].in, &err);
        assert_non_null(got);
        assert_string_equal(got, cases[i].out);
        free(got);
    }
    assert_null(job_expand("${RC_TEST_UNSET}/x", &err));
    assert_non_null(strstr(err.msg, "environment variable RC_TEST_UNSET is not set"));
    assert_null(job_expand("${RC_TEST_DIR", &err));
    assert_non_null(strstr(err.msg, "bad variable reference"));
    assert_null(job_expand("${1BAD}", &err));
    assert_non_null(strstr(err.msg, "bad variable name '1BAD'"));
    assert_null(job_expand("${RC_TEST_DIR:+x}", &err));
    expect_error("{\"db\": \"${RC_TEST_UNSET}/r.db\"}", "test.json", "'db'", "RC_TEST_UNSET is not set", NULL);

    /* an expanded relative path is relative to the job file's folder */
    job_settings s;
    setenv("RC_TEST_REL", "sub/m.csv", 1);
    assert_int_equal(load(&s, "{\"manifest\": \"${RC_TEST_REL}\", \"db\": \"${RC_TEST_DIR}/r.db\"}", "jobs", &err), 0);
    assert_string_equal(s.run.manifest, "jobs/sub/m.csv");
    assert_string_equal(s.run.db, "/scratch/x/r.db");
    job_settings_free(&s);
}

static void test_skipped_keys_are_type_checked_only(void **state)
{
    (void)state;
    unsetenv("RC_TEST_UNSET");
    unsigned char skip[JK_COUNT] = {0};
    skip[JK_DB] = skip[JK_BATCH] = 1;
    job_settings s;
    job_settings_init(&s);
    rc_error err = {{0}};
    const char *ok = "{\"db\": \"${RC_TEST_UNSET}\", \"batch\": 3, \"beam\": 2}";
    assert_int_equal(job_load_text(&s, ok, strlen(ok), "j.json", ".", skip, &err), 0);
    assert_null(s.run.db);
    assert_int_equal(s.run.batch, 8); /* left for the command line */
    assert_int_equal(s.run.decoding.beam, 2);
    const char *bad = "{\"batch\": \"x\"}";
    assert_int_equal(job_load_text(&s, bad, strlen(bad), "j.json", ".", skip, &err), -1);
    assert_non_null(strstr(err.msg, "'batch'"));
    job_settings_free(&s);
}

static void test_options_use_the_same_checks(void **state)
{
    (void)state;
    job_settings s;
    job_settings_init(&s);
    rc_error err = {{0}};
    assert_int_equal(job_set_option(&s, JK_MAX_PIXELS, "123456", &err), 0);
    assert_true(s.run.max_pixels == 123456);
    assert_int_equal(job_set_option(&s, JK_REPETITION_PENALTY, "1.5", &err), 0);
    assert_true(s.run.decoding.repetition_penalty == 1.5);
    assert_int_equal(job_set_option(&s, JK_BEAM, "0", &err), -1);
    assert_string_equal(err.msg, "invalid value '0' for --beam (expected an integer from 1 to 16)");
    assert_int_equal(job_set_option(&s, JK_LENGTH_PENALTY, "1.0x", &err), -1);
    assert_non_null(strstr(err.msg, "--length-penalty"));
    assert_int_equal(job_set_option(&s, JK_CHANGE_DETECTION, "hash", &err), -1);
    assert_string_equal(err.msg, "--change-detection: 'hash' is not one of stat or content");
    char name[64];
    job_option_name(JK_NO_REPEAT_NGRAM, name);
    assert_string_equal(name, "no-repeat-ngram");
    assert_int_equal(job_key_find("no_repeat_ngram"), JK_NO_REPEAT_NGRAM);
    assert_int_equal(job_key_find("no-repeat-ngram"), -1);
    job_settings_free(&s);
}

/* The effective settings, loaded back as a job file, give the same
 * settings: every key is both written and read, with the same meaning. */
static void test_settings_json_round_trip(void **state)
{
    (void)state;
    const char *text = "{\"manifest\": \"/a/m.jsonl\", \"manifest_kind\": \"jsonl\", \"db\": \"/a/r.db\",\n"
                       " \"checkpoint\": \"/a/c.bin\", \"vocab\": \"/a/v.txt\", \"batch\": 5, \"threads\": 2,\n"
                       " \"max_length\": 33, \"beam\": 3, \"length_penalty\": -0.25, \"no_repeat_ngram\": 2,\n"
                       " \"repetition_penalty\": 0.75, \"since_last\": true, \"max_errors\": 0, \"evaluate\": false,\n"
                       " \"prefetch\": false, \"progress_interval\": 9, \"log_level\": \"error\"}";
    job_settings a, b;
    rc_error err = {{0}};
    assert_int_equal(load(&a, text, "/", &err), 0);
    cJSON *ja = job_settings_json(&a);
    assert_non_null(ja);
    assert_true(cJSON_IsNull(cJSON_GetObjectItemCaseSensitive(ja, "job_file")));
    cJSON_DeleteItemFromObjectCaseSensitive(ja, "job_file");
    assert_int_equal(cJSON_GetArraySize(ja), JK_COUNT); /* every setting, defaults included */
    char *ta = cJSON_PrintUnformatted(ja);
    assert_int_equal(load(&b, ta, "/elsewhere", &err), 0);
    cJSON *jb = job_settings_json(&b);
    cJSON_DeleteItemFromObjectCaseSensitive(jb, "job_file");
    char *tb = cJSON_PrintUnformatted(jb);
    assert_string_equal(ta, tb);
    assert_int_equal(memcmp(&a.run.decoding, &b.run.decoding, sizeof a.run.decoding), 0);
    free(ta);
    free(tb);
    cJSON_Delete(ja);
    cJSON_Delete(jb);
    job_settings_free(&a);
    job_settings_free(&b);
}

/* The shipped presets load, with the settings their comments promise. */
static void test_presets(void **state)
{
    (void)state;
    setenv("ROCOV2_DIR", "/data/rocov2", 1);
    setenv("RADCAP_ARCHIVE", "/archive/scans", 1);
    setenv("RADCAP_DB", "/scratch/r.db", 1);
    setenv("RADCAP_CHECKPOINT", "/models/roco_best_model.bin", 1);
    setenv("RADCAP_VOCAB", "/models/vocab.txt", 1);
    unsetenv("RADCAP_DEMO_DIR");
    job_settings s;
    rc_error err = {{0}};

    job_settings_init(&s);
    assert_int_equal(job_load_file(&s, "jobs/rocov2-validation.json", NULL, &err), 0);
    assert_string_equal(s.run.manifest, "/data/rocov2/valid_captions.csv");
    assert_int_equal(s.run.manifest_kind, MANIFEST_CSV);
    assert_null(s.run.image_dir); /* valid/ beside valid_captions.csv, the manifest's default */
    assert_string_equal(s.run.checkpoint, "/models/roco_best_model.bin");
    assert_int_equal(s.run.score, 1);
    assert_int_equal(s.run.since_last, 0);
    job_settings_free(&s);

    job_settings_init(&s);
    assert_int_equal(job_load_file(&s, "jobs/archive.json", NULL, &err), 0);
    assert_string_equal(s.run.manifest, "/archive/scans");
    assert_string_equal(s.run.db, "/scratch/r.db");
    assert_int_equal(s.run.score, 0);
    assert_int_equal(s.run.since_last, 0);
    job_settings_free(&s);

    job_settings_init(&s);
    assert_int_equal(job_load_file(&s, "jobs/nightly.json", NULL, &err), 0);
    assert_string_equal(s.run.manifest, "/archive/scans");
    assert_int_equal(s.run.since_last, 1);
    assert_int_equal(s.run.change_by_content, 0);
    assert_true(s.run.max_errors == 1000);
    job_settings_free(&s);

    job_settings_init(&s);
    assert_int_equal(job_load_file(&s, "jobs/demo.json", NULL, &err), 0);
    assert_string_equal(s.run.manifest, "jobs/../demo/archive/valid_captions.csv");
    assert_string_equal(s.run.checkpoint, "jobs/../demo/model.bin");
    assert_string_equal(s.run.vocab, "/models/vocab.txt");
    assert_int_equal(s.run.score, 1);
    job_settings_free(&s);

    /* without the variables, the message names the key and the variable */
    unsetenv("ROCOV2_DIR");
    job_settings_init(&s);
    assert_int_equal(job_load_file(&s, "jobs/rocov2-validation.json", NULL, &err), -1);
    assert_string_equal(err.msg, "jobs/rocov2-validation.json: key 'manifest': environment variable ROCOV2_DIR is not set");
    job_settings_free(&s);
}

/* ---- through `radcap run` ------------------------------------------------ */

static void test_help_names_every_setting(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("job-help"), cmd[4400], path[4300];
    snprintf(path, sizeof path, "%s/help.txt", dir);
    snprintf(cmd, sizeof cmd, "%s run --help > %s", tu_radcap_bin(), path);
    assert_int_equal(tu_run(cmd), 0);
    char *help = tu_read_file(path, NULL);
    assert_non_null(help);
    for (int k = 0; k < JK_COUNT; k++) {
        char name[64], option[80], negated[80];
        job_option_name((job_key_id)k, name);
        snprintf(option, sizeof option, "--%s ", name);
        snprintf(negated, sizeof negated, "--no-%s ", name); /* e.g. --no-prefetch, for a default of true */
        if (!strstr(help, option) && !(job_keys[k].type == JOB_BOOL && strstr(help, negated)))
            fail_msg("radcap run --help does not describe %s(the job key '%s')", option, job_keys[k].name);
    }
    free(help);
    free(dir);
}

/* Runs radcap with args; returns the exit status, stderr in *err_text. */
static int radcap(const char *dir, const char *args, char **err_text)
{
    char cmd[50000], err_path[4300];
    snprintf(err_path, sizeof err_path, "%s/stderr.txt", dir);
    snprintf(cmd, sizeof cmd, "%s %s >%s/stdout.txt 2>%s", tu_radcap_bin(), args, dir, err_path);
    int status = tu_run(cmd);
    *err_text = tu_read_file(err_path, NULL);
    return status;
}

static void write_text(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs(text, f);
    fclose(f);
}

/* radcap --version names the checkout it was built from: git's description
 * of HEAD ("-dirty" after it when tracked files had changes), or "unknown"
 * built outside git. */
static void test_version_names_the_checkout(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp_abs("version"), cmd[8400], path[4300], *err_text = NULL;
    assert_int_equal(radcap(dir, "--version", &err_text), 0);
    free(err_text);
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    char *version = tu_read_file(path, NULL);
    snprintf(cmd, sizeof cmd, "git describe --always --tags > %s/describe.txt 2>/dev/null", dir);
    const int in_git = tu_run(cmd) == 0;
    snprintf(path, sizeof path, "%s/describe.txt", dir);
    char *described = in_git ? tu_read_file(path, NULL) : NULL;
    assert_non_null(version);
    if (!described) {
        assert_string_equal(version, "radcap unknown\n");
    } else {
        described[strcspn(described, "\n")] = '\0';
        char clean[512], dirty[512];
        snprintf(clean, sizeof clean, "radcap %s\n", described);
        snprintf(dirty, sizeof dirty, "radcap %s-dirty\n", described);
        if (strcmp(version, clean) != 0 && strcmp(version, dirty) != 0)
            fail_msg("radcap --version printed '%s', git describes the checkout as '%s'", version, described);
    }
    free(described);
    free(version);
    free(dir);
}

static void test_run_with_a_job_file(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp_abs("job-run"), args[8800], path[4300], job[4300], *err_text = NULL;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    assert_int_equal(tu_write_synthetic_vocab(path, 400), 0);
    snprintf(args, sizeof args, "synth --out %s/arch --count 3 --seed 5", dir);
    assert_int_equal(radcap(dir, args, &err_text), 0);
    free(err_text);
    snprintf(job, sizeof job, "%s/job.json", dir);
    char text[9000];
    snprintf(text, sizeof text,
             "{\"manifest\": \"arch/valid_captions.csv\", \"db\": \"${RC_JOB_DB:-first.db}\",\n"
             " \"checkpoint\": \"%s/tests/fixtures/tiny/model.bin\", \"config\": \"%s/tests/fixtures/tiny/config.json\",\n"
             " \"vocab\": \"vocab.txt\", \"batch\": 2, \"max_length\": 7, \"evaluate\": false}\n",
             cwd, cwd);
    write_text(job, text);

    /* --check: the effective settings, nothing run */
    snprintf(args, sizeof args, "run --job %s --check --beam 3", job);
    assert_int_equal(radcap(dir, args, &err_text), 0);
    free(err_text);
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    char *printed = tu_read_file(path, NULL);
    cJSON *checked = cJSON_Parse(printed);
    assert_non_null(checked);
    char expected_vocab[4400];
    snprintf(expected_vocab, sizeof expected_vocab, "%s/vocab.txt", dir);
    assert_string_equal(cJSON_GetObjectItem(checked, "vocab")->valuestring, expected_vocab);
    assert_int_equal(cJSON_GetObjectItem(checked, "beam")->valueint, 3);
    assert_int_equal(cJSON_GetObjectItem(checked, "batch")->valueint, 2);
    cJSON_Delete(checked);
    free(printed);
    snprintf(path, sizeof path, "%s/first.db", dir);
    assert_false(tu_file_exists(path));
    snprintf(args, sizeof args, "run --job %s --check --checkpoint %s/none.bin", job, dir);
    assert_int_equal(radcap(dir, args, &err_text), 3);
    snprintf(expected_vocab, sizeof expected_vocab, "checkpoint %s/none.bin: No such file or directory", dir);
    assert_non_null(strstr(err_text, expected_vocab));
    free(err_text);

    /* from another folder: the job's relative paths are its own folder's */
    snprintf(args, sizeof args, "run --job %s --threads 1 --batch 3 --evaluate", job);
    char cmd[9400];
    char *radcap_abs = realpath(tu_radcap_bin(), NULL);
    assert_non_null(radcap_abs);
    snprintf(cmd, sizeof cmd, "cd / && %s %s >%s/stdout.txt 2>%s/stderr.txt", radcap_abs, args, dir, dir);
    free(radcap_abs);
    assert_int_equal(tu_run(cmd), 0);
    char db[4300];
    snprintf(db, sizeof db, "%s/first.db", dir);
    assert_true(tu_file_exists(db));
    /* the stored settings: the command line's batch and evaluate, the job's max_length, absolute job path */
    snprintf(cmd, sizeof cmd,
             "sqlite3 %s \"SELECT json_extract(config_json, '$.settings.batch'), "
             "json_extract(config_json, '$.settings.max_length'), json_extract(config_json, '$.settings.evaluate'), "
             "json_extract(config_json, '$.settings.job_file') FROM runs\" > %s/q.txt",
             db, dir);
    assert_int_equal(tu_run(cmd), 0);
    snprintf(path, sizeof path, "%s/q.txt", dir);
    char *q = tu_read_file(path, NULL), expected[4400];
    snprintf(expected, sizeof expected, "3|7|1|%s\n", job);
    assert_non_null(q);
    assert_string_equal(q, expected);
    free(q);
    /* the build that made the run is stored with it: what radcap --version names */
    assert_int_equal(radcap(dir, "--version", &err_text), 0);
    free(err_text);
    snprintf(path, sizeof path, "%s/stdout.txt", dir);
    char *version = tu_read_file(path, NULL);
    assert_non_null(version);
    assert_true(strncmp(version, "radcap ", 7) == 0);
    snprintf(cmd, sizeof cmd, "sqlite3 %s \"SELECT 'radcap ' || json_extract(config_json, '$.radcap_version') FROM runs\" > %s/q.txt",
             db, dir);
    assert_int_equal(tu_run(cmd), 0);
    snprintf(path, sizeof path, "%s/q.txt", dir);
    q = tu_read_file(path, NULL);
    assert_non_null(q);
    assert_string_equal(q, version);
    free(q);
    free(version);
    /* max_length 7 held: the same images without it give longer captions */
    snprintf(args, sizeof args, "run --job %s --threads 1 --max-length 80 --db %s/full.db", job, dir);
    assert_int_equal(radcap(dir, args, &err_text), 0);
    free(err_text);
    snprintf(cmd, sizeof cmd,
             "sqlite3 %s/first.db \"ATTACH '%s/full.db' AS f; SELECT count(*), max(json_array_length(a.token_ids)), "
             "max(json_array_length(b.token_ids)) > 7, sum(b.token_ids = a.token_ids OR "
             "substr(a.token_ids, 1, length(a.token_ids) - 1) || ',' = substr(b.token_ids, 1, length(a.token_ids))) FROM items a JOIN f.items b USING (image_id) "
             "WHERE a.status = 'ok'\" > %s/q.txt",
             dir, dir, dir);
    assert_int_equal(tu_run(cmd), 0);
    q = tu_read_file(path, NULL);
    assert_string_equal(q, "3|7|1|3\n"); /* 3 images, at most 7 tokens, each a prefix of its full caption */
    free(q);

    /* an unset variable is an error naming it, unless the option overrides the key */
    snprintf(text, sizeof text, "{\"manifest\": \"arch/valid_captions.csv\", \"db\": \"${RC_JOB_UNSET_DB}\"}");
    write_text(job, text);
    unsetenv("RC_JOB_UNSET_DB");
    snprintf(args, sizeof args, "run --job %s --checkpoint x --vocab y", job);
    assert_int_equal(radcap(dir, args, &err_text), 3);
    assert_non_null(strstr(err_text, "key 'db': environment variable RC_JOB_UNSET_DB is not set"));
    assert_non_null(strstr(err_text, job));
    free(err_text);
    snprintf(args, sizeof args, "run --job %s --db %s/x.db", job, dir);
    assert_int_equal(radcap(dir, args, &err_text), 3);
    assert_non_null(strstr(err_text, "missing: checkpoint vocab"));
    free(err_text);

    /* a bad key, a missing job file, a bad option value */
    write_text(job, "{\"manifest\": \"m.csv\", \"batches\": 4}");
    snprintf(args, sizeof args, "run --job %s", job);
    assert_int_equal(radcap(dir, args, &err_text), 3);
    assert_non_null(strstr(err_text, "key 'batches': unknown key"));
    free(err_text);
    snprintf(args, sizeof args, "run --job %s/nope.json", dir);
    assert_int_equal(radcap(dir, args, &err_text), 3);
    assert_non_null(strstr(err_text, "nope.json: cannot open the job file"));
    free(err_text);
    snprintf(args, sizeof args, "run --manifest m --db d --checkpoint c --vocab v --beam 99");
    assert_int_equal(radcap(dir, args, &err_text), 2);
    assert_non_null(strstr(err_text, "invalid value '99' for --beam"));
    free(err_text);
    free(dir);
}

/* Decoding options reach the workers through radcap run, and each item's
 * confidence is stored: the same tokens, mean log-probability, smallest
 * and per-token probabilities as `radcap caption --json` with the same
 * options on the same files. */
static void check_run_matches_caption(const char *decoding, const char *expected_settings, char **caption_json)
{
    char *dir = tu_mkdtemp_abs("job-decoding"), args[40000], path[4300], *err_text = NULL;
    char cwd[4096];
    assert_non_null(getcwd(cwd, sizeof cwd));
    snprintf(path, sizeof path, "%s/vocab.txt", dir);
    assert_int_equal(tu_write_synthetic_vocab(path, 400), 0);
    snprintf(args, sizeof args, "synth --out %s/arch --count 4 --seed 9", dir);
    assert_int_equal(radcap(dir, args, &err_text), 0);
    free(err_text);
    snprintf(args, sizeof args,
             "run --manifest %s/arch/valid_captions.csv --db %s/r.db --checkpoint %s/tests/fixtures/tiny/model.bin "
             "--config %s/tests/fixtures/tiny/config.json --vocab %s --threads 1 --batch 3 --no-evaluate %s",
             dir, dir, cwd, cwd, path, decoding);
    assert_int_equal(radcap(dir, args, &err_text), 0);
    free(err_text);
    snprintf(args, sizeof args,
             "caption --json --checkpoint %s/tests/fixtures/tiny/model.bin --config %s/tests/fixtures/tiny/config.json "
             "--vocab %s --threads 1 %s %s/arch/valid/*.jpg",
             cwd, cwd, path, decoding, dir);
    assert_int_equal(radcap(dir, args, &err_text), 0);
    free(err_text);

    /* the database's rows, as JSON lines in image order */
    char cmd[9400], rows_path[4400], json_path[4400];
    snprintf(rows_path, sizeof rows_path, "%s/rows.txt", dir);
    snprintf(cmd, sizeof cmd,
             "sqlite3 %s/r.db \"SELECT json_object('ids', json(token_ids), 'mean', mean_logprob, 'min', min_token_prob, "
             "'probs', json(token_probs)) FROM items WHERE status = 'ok' ORDER BY path\" > %s",
             dir, rows_path);
    assert_int_equal(tu_run(cmd), 0);
    snprintf(json_path, sizeof json_path, "%s/stdout.txt", dir);
    char *rows = tu_read_file(rows_path, NULL), *lines = tu_read_file(json_path, NULL);
    assert_non_null(rows);
    assert_non_null(lines);
    char *row_save = NULL, *line_save = NULL, *row = strtok_r(rows, "\n", &row_save);
    char *line = strtok_r(lines, "\n", &line_save);
    int n = 0;
    for (; row && line; row = strtok_r(NULL, "\n", &row_save), line = strtok_r(NULL, "\n", &line_save), n++) {
        cJSON *stored = cJSON_Parse(row), *printed = cJSON_Parse(line);
        assert_non_null(stored);
        assert_non_null(printed);
        char *a = cJSON_PrintUnformatted(cJSON_GetObjectItem(stored, "ids"));
        char *b = cJSON_PrintUnformatted(cJSON_GetObjectItem(printed, "ids"));
        assert_string_equal(a, b);
        free(a);
        free(b);
        if (cJSON_GetArraySize(cJSON_GetObjectItem(stored, "ids")) == 0) {
            /* an empty caption has no confidence */
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(stored, "mean")));
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(stored, "min")));
            assert_true(cJSON_IsNull(cJSON_GetObjectItem(printed, "mean_logprob")));
            cJSON_Delete(stored);
            cJSON_Delete(printed);
            continue;
        }
        const double mean = cJSON_GetObjectItem(stored, "mean")->valuedouble;
        assert_true(fabs(mean - cJSON_GetObjectItem(printed, "mean_logprob")->valuedouble) <= 1e-6 * fabs(mean));
        const double min = cJSON_GetObjectItem(stored, "min")->valuedouble;
        assert_true(fabs(min - cJSON_GetObjectItem(printed, "min_token_prob")->valuedouble) <= 1e-6 * min);
        /* the stored probabilities are the caption's: one per token, their
         * log mean and minimum the stored confidence */
        const cJSON *probs = cJSON_GetObjectItem(stored, "probs"), *ids = cJSON_GetObjectItem(stored, "ids");
        const cJSON *printed_probs = cJSON_GetObjectItem(printed, "token_probs");
        assert_int_equal(cJSON_GetArraySize(probs), cJSON_GetArraySize(ids));
        assert_int_equal(cJSON_GetArraySize(printed_probs), cJSON_GetArraySize(ids));
        double sum_log = 0, smallest = 1;
        for (int k = 0; k < cJSON_GetArraySize(probs); k++) {
            const double p = cJSON_GetArrayItem(probs, k)->valuedouble;
            assert_true(fabs(p - cJSON_GetArrayItem(printed_probs, k)->valuedouble) <= 1e-6);
            sum_log += log(p);
            smallest = p < smallest ? p : smallest;
        }
        assert_true(fabs(sum_log / cJSON_GetArraySize(probs) - mean) <= 1e-5 * fabs(mean));
        assert_true(fabs(smallest - min) <= 1e-6 * min);
        cJSON_Delete(stored);
        cJSON_Delete(printed);
    }
    assert_int_equal(n, 4);
    assert_null(row);
    assert_null(line);
    free(rows);
    free(lines);
    /* the decoding options are recorded with the run */
    snprintf(cmd, sizeof cmd,
             "sqlite3 %s/r.db \"SELECT json_extract(config_json, '$.settings.beam'), "
             "json_extract(config_json, '$.settings.no_repeat_ngram'), json_extract(config_json, '$.settings.token_scores'), "
             "json_extract(config_json, '$.settings.precision') FROM runs\" > %s",
             dir, rows_path);
    assert_int_equal(tu_run(cmd), 0);
    rows = tu_read_file(rows_path, NULL);
    assert_string_equal(rows, expected_settings);
    free(rows);
    *caption_json = tu_read_file(json_path, NULL);
    free(dir);
}

static void test_run_decoding_and_confidence(void **state)
{
    (void)state;
    char *printed = NULL;
    check_run_matches_caption("--beam 3 --no-repeat-ngram 2 --length-penalty 0.5 --max-length 12 --token-scores",
                              "3|2|1|fp32\n", &printed);
    free(printed);
}

/* The "token_probs" arrays of radcap caption --json lines, one after
 * another (the lines' paths left out). */
static char *token_probs_of(const char *json_lines)
{
    assert_non_null(json_lines);
    char *copy = strdup(json_lines), *save = NULL, *out = calloc(1, 1);
    size_t len = 0;
    for (char *line = strtok_r(copy, "\n", &save); line; line = strtok_r(NULL, "\n", &save)) {
        cJSON *obj = cJSON_Parse(line);
        assert_non_null(obj);
        char *probs = cJSON_PrintUnformatted(cJSON_GetObjectItem(obj, "token_probs"));
        out = realloc(out, len + strlen(probs) + 1);
        memcpy(out + len, probs, strlen(probs) + 1);
        len += strlen(probs);
        free(probs);
        cJSON_Delete(obj);
    }
    free(copy);
    return out;
}

/* --precision reaches the workers: radcap run stores what radcap caption
 * gives with the same precision, and each precision's token probabilities
 * differ from the others' (bf16 rounds the decoder's weights, bf16-all the
 * encoder's too). */
static void test_run_precision(void **state)
{
    (void)state;
    static const char *const names[] = {"fp32", "bf16", "bf16-all"};
    char *probs[3];
    for (int p = 0; p < 3; p++) {
        char flags[128], settings[64], *printed = NULL;
        snprintf(flags, sizeof flags, "--precision %s --max-length 12 --token-scores", names[p]);
        snprintf(settings, sizeof settings, "1|0|1|%s\n", names[p]);
        check_run_matches_caption(flags, settings, &printed);
        /* the same images (synth's seed): only the weights' precision differs */
        probs[p] = token_probs_of(printed);
        assert_true(strlen(probs[p]) > 10);
        free(printed);
    }
    for (int p = 0; p < 3; p++)
        for (int q = p + 1; q < 3; q++)
            if (strcmp(probs[p], probs[q]) == 0)
                fail_msg("--precision %s and %s gave the same token probabilities", names[p], names[q]);
    for (int p = 0; p < 3; p++)
        free(probs[p]);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_every_key_reaches_the_options),
        cmocka_unit_test(test_defaults_and_null),
        cmocka_unit_test(test_errors_name_file_and_key),
        cmocka_unit_test(test_environment_expansion),
        cmocka_unit_test(test_skipped_keys_are_type_checked_only),
        cmocka_unit_test(test_options_use_the_same_checks),
        cmocka_unit_test(test_settings_json_round_trip),
        cmocka_unit_test(test_presets),
        cmocka_unit_test(test_help_names_every_setting),
        cmocka_unit_test(test_version_names_the_checkout), cmocka_unit_test(test_run_with_a_job_file),
        cmocka_unit_test(test_run_decoding_and_confidence),
        cmocka_unit_test(test_run_precision),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
