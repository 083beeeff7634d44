/* job.c: run settings from job files and command-line options. */
#include "pipeline/job.h"

#include <errno.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "engine/file.h"
#include "pipeline/cli.h"

static const char *const manifest_kinds[] = {"auto", "csv", "jsonl", "list", "folder", NULL};
static const char *const change_modes[] = {"stat", "content", NULL};
static const char *const log_levels[] = {"error", "warning", "info", "debug", NULL};
static const char *const precisions[] = {"fp32", "bf16", "bf16-all", NULL};

#define RANGE(lo, hi) (double)(lo), (double)(hi)
const job_key job_keys[JK_COUNT] = {
    [JK_MANIFEST] = {"manifest", JOB_PATH, 0, 0, NULL},
    [JK_MANIFEST_KIND] = {"manifest_kind", JOB_WORD, 0, 0, manifest_kinds},
    [JK_IMAGE_DIR] = {"image_dir", JOB_PATH, 0, 0, NULL},
    [JK_DB] = {"db", JOB_PATH, 0, 0, NULL},
    [JK_CHECKPOINT] = {"checkpoint", JOB_PATH, 0, 0, NULL},
    [JK_VOCAB] = {"vocab", JOB_PATH, 0, 0, NULL},
    [JK_CONFIG] = {"config", JOB_PATH, 0, 0, NULL},
    [JK_BATCH] = {"batch", JOB_INT, RANGE(1, 4096), NULL},
    [JK_THREADS] = {"threads", JOB_INT, RANGE(1, 4096), NULL},
    [JK_MAX_PIXELS] = {"max_pixels", JOB_INT, RANGE(1, 1LL << 50), NULL},
    [JK_EXIF_ORIENTATION] = {"exif_orientation", JOB_BOOL, 0, 0, NULL},
    [JK_MAX_LENGTH] = {"max_length", JOB_INT, RANGE(1, 1 << 20), NULL},
    [JK_MIN_LENGTH] = {"min_length", JOB_INT, RANGE(0, 1 << 20), NULL},
    [JK_BEAM] = {"beam", JOB_INT, RANGE(1, 16), NULL},
    [JK_LENGTH_PENALTY] = {"length_penalty", JOB_REAL, RANGE(-100, 100), NULL},
    [JK_EARLY_STOPPING] = {"early_stopping", JOB_BOOL, 0, 0, NULL},
    [JK_NO_REPEAT_NGRAM] = {"no_repeat_ngram", JOB_INT, RANGE(0, 1 << 20), NULL},
    [JK_REPETITION_PENALTY] = {"repetition_penalty", JOB_REAL, RANGE(1e-6, 1e6), NULL},
    [JK_TOKEN_SCORES] = {"token_scores", JOB_BOOL, 0, 0, NULL},
    [JK_PRECISION] = {"precision", JOB_WORD, 0, 0, precisions},
    [JK_SINCE_LAST] = {"since_last", JOB_BOOL, 0, 0, NULL},
    [JK_CHANGE_DETECTION] = {"change_detection", JOB_WORD, 0, 0, change_modes},
    [JK_MAX_ERRORS] = {"max_errors", JOB_INT, RANGE(-1, 1LL << 50), NULL},
    [JK_NEW_RUN] = {"new_run", JOB_BOOL, 0, 0, NULL},
    [JK_EVALUATE] = {"evaluate", JOB_BOOL, 0, 0, NULL},
    [JK_DROP_BRACKETS] = {"drop_brackets", JOB_BOOL, 0, 0, NULL},
    [JK_PREFETCH] = {"prefetch", JOB_BOOL, 0, 0, NULL},
    [JK_PROGRESS_INTERVAL] = {"progress_interval", JOB_INT, RANGE(1, 86400), NULL},
    [JK_LOG_LEVEL] = {"log_level", JOB_WORD, 0, 0, log_levels},
};
#undef RANGE

void job_settings_init(job_settings *s)
{
    memset(s, 0, sizeof *s);
    sched_run_options_default(&s->run);
    s->level = LOG_INFO;
}

void job_settings_free(job_settings *s)
{
    for (size_t i = 0; i < s->n_owned; i++)
        free(s->owned[i]);
    free(s->owned);
    s->owned = NULL;
    s->n_owned = s->cap_owned = 0;
}

/* Keeps text (already allocated) with the settings; NULL when out of memory
 * (text is then freed). */
static char *own(job_settings *s, char *text)
{
    if (!text)
        return NULL;
    if (s->n_owned == s->cap_owned) {
        size_t cap = s->cap_owned ? 2 * s->cap_owned : 16;
        char **grown = realloc(s->owned, cap * sizeof *grown);
        if (!grown) {
            free(text);
            return NULL;
        }
        s->owned = grown;
        s->cap_owned = cap;
    }
    return s->owned[s->n_owned++] = text;
}

int job_key_find(const char *name)
{
    for (int k = 0; k < JK_COUNT; k++)
        if (strcmp(job_keys[k].name, name) == 0)
            return k;
    return -1;
}

void job_option_name(job_key_id key, char out[64])
{
    snprintf(out, 64, "%s", job_keys[key].name);
    for (char *p = out; *p; p++)
        if (*p == '_')
            *p = '-';
}

/* The index of word in the key's list, or -1. */
static int word_index(const job_key *k, const char *word)
{
    for (int i = 0; k->words[i]; i++)
        if (strcmp(k->words[i], word) == 0)
            return i;
    return -1;
}

/* "a, b or c" for messages. */
static void word_list(const job_key *k, char *out, size_t size)
{
    size_t used = 0;
    out[0] = '\0';
    for (int i = 0; k->words[i] && used < size; i++)
        used += (size_t)snprintf(out + used, size - used, "%s%s", i == 0 ? "" : k->words[i + 1] ? ", " : " or ",
                                 k->words[i]);
}

int job_set(job_settings *s, job_key_id key, const job_value *v, rc_error *err)
{
    sched_run_options *o = &s->run;
    const job_key *k = &job_keys[key];
    const char *text = NULL;
    int word = -1;
    if (k->type == JOB_PATH && v->text && !(text = own(s, strdup(v->text))))
        return rc_fail(err, "out of memory");
    if (k->type == JOB_WORD && (word = word_index(k, v->text)) < 0) {
        char words[128];
        word_list(k, words, sizeof words);
        return rc_fail(err, "'%s' is not one of %s", v->text, words);
    }
    switch (key) {
    case JK_MANIFEST: o->manifest = text; break;
    case JK_MANIFEST_KIND: return manifest_kind_parse(v->text, &o->manifest_kind, err);
    case JK_IMAGE_DIR: o->image_dir = text; break;
    case JK_DB: o->db = text; break;
    case JK_CHECKPOINT: o->checkpoint = text; break;
    case JK_VOCAB: o->vocab = text; break;
    case JK_CONFIG: s->config_path = text; break;
    case JK_BATCH: o->batch = (int)v->integer; break;
    case JK_THREADS: o->threads = (int)v->integer; break;
    case JK_MAX_PIXELS: o->max_pixels = v->integer; break;
    case JK_EXIF_ORIENTATION: o->exif_orientation = v->flag; break;
    case JK_MAX_LENGTH: s->max_length = (int)v->integer; break;
    case JK_MIN_LENGTH: o->decoding.min_length = (int)v->integer; break;
    case JK_BEAM: o->decoding.beam = (int)v->integer; break;
    case JK_LENGTH_PENALTY: o->decoding.length_penalty = v->real; break;
    case JK_EARLY_STOPPING: o->decoding.early_stopping = v->flag; break;
    case JK_NO_REPEAT_NGRAM: o->decoding.no_repeat_ngram = (int)v->integer; break;
    case JK_REPETITION_PENALTY: o->decoding.repetition_penalty = v->real; break;
    case JK_TOKEN_SCORES: o->decoding.token_scores = v->flag; break;
    case JK_PRECISION: return model_precision_parse(v->text, &o->precision, err);
    case JK_SINCE_LAST: o->since_last = v->flag; break;
    case JK_CHANGE_DETECTION: o->change_by_content = word == 1; break;
    case JK_MAX_ERRORS: o->max_errors = v->integer; break;
    case JK_NEW_RUN: o->new_run = v->flag; break;
    case JK_EVALUATE: o->score = v->flag; break;
    case JK_DROP_BRACKETS: o->ptb.drop_brackets = v->flag; break;
    case JK_PREFETCH: o->prefetch = v->flag; break;
    case JK_PROGRESS_INTERVAL: o->progress_seconds = (double)v->integer; break;
    case JK_LOG_LEVEL: s->level = (log_level)word; break;
    case JK_COUNT: break;
    }
    return 0;
}

/* "from 1 to 16" for messages. */
static void range_text(const job_key *k, char *out, size_t size)
{
    if (k->type == JOB_INT)
        snprintf(out, size, "an integer from %.0f to %.0f", k->min, k->max);
    else
        snprintf(out, size, "a number from %g to %g", k->min, k->max);
}

int job_set_option(job_settings *s, job_key_id key, const char *text, rc_error *err)
{
    const job_key *k = &job_keys[key];
    job_value v = {.text = text, .flag = 1};
    char name[64], expected[96];
    job_option_name(key, name);
    if (k->type == JOB_INT || k->type == JOB_REAL) {
        int ok;
        if (k->type == JOB_INT) {
            ok = cli_parse_ll(text, (long long)k->min, (long long)k->max, &v.integer) == 0;
        } else {
            char *end;
            errno = 0;
            v.real = strtod(text, &end);
            ok = *text && !*end && errno == 0 && v.real >= k->min && v.real <= k->max;
        }
        if (!ok) {
            range_text(k, expected, sizeof expected);
            return rc_fail(err, "invalid value '%s' for --%s (expected %s)", text, name, expected);
        }
    }
    if (job_set(s, key, &v, err) < 0)
        return rc_prefix(err, "--%s", name);
    return 0;
}

/* ---- environment expansion ---------------------------------------------- */

typedef struct strbuf {
    char *text;
    size_t len, cap;
} strbuf;

static int sb_add(strbuf *b, const char *text, size_t len)
{
    if (b->len + len + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 64;
        while (cap < b->len + len + 1)
            cap *= 2;
        char *grown = realloc(b->text, cap);
        if (!grown)
            return -1;
        b->text = grown;
        b->cap = cap;
    }
    memcpy(b->text + b->len, text, len);
    b->len += len;
    b->text[b->len] = '\0';
    return 0;
}

char *job_expand(const char *text, rc_error *err)
{
    strbuf b = {0};
    int bad = sb_add(&b, "", 0) < 0;
    for (const char *p = text; *p && !bad;) {
        const char *dollar = strchr(p, '$');
        size_t plain = dollar ? (size_t)(dollar - p) : strlen(p);
        bad = sb_add(&b, p, plain) < 0;
        if (!dollar || bad)
            break;
        if (dollar[1] == '$') {
            bad = sb_add(&b, "$", 1) < 0;
            p = dollar + 2;
            continue;
        }
        if (dollar[1] != '{') {
            bad = sb_add(&b, "$", 1) < 0;
            p = dollar + 1;
            continue;
        }
        const char *name = dollar + 2, *close = strchr(name, '}');
        size_t name_len = strcspn(name, ":}");
        if (!close || name_len == 0 || name_len > 255) {
            free(b.text);
            return rc_fail(err, "bad variable reference in '%s' (expected ${NAME} or ${NAME:-default})", text), NULL;
        }
        char var[256];
        memcpy(var, name, name_len);
        var[name_len] = '\0';
        for (size_t i = 0; i < name_len; i++)
            if (!(var[i] == '_' || (var[i] >= 'A' && var[i] <= 'Z') || (var[i] >= 'a' && var[i] <= 'z') ||
                  (i > 0 && var[i] >= '0' && var[i] <= '9'))) {
                free(b.text);
                return rc_fail(err, "bad variable name '%s' in '%s'", var, text), NULL;
            }
        const char *after = name + name_len, *value = getenv(var);
        if (*after == ':') {
            if (after[1] != '-') {
                free(b.text);
                return rc_fail(err, "bad variable reference in '%s' (expected ${NAME} or ${NAME:-default})", text),
                       NULL;
            }
            if (!value || !*value) /* as the shell's :- does, an empty value takes the default */
                bad = sb_add(&b, after + 2, (size_t)(close - after - 2)) < 0;
            else
                bad = sb_add(&b, value, strlen(value)) < 0;
        } else if (!value) {
            free(b.text);
            return rc_fail(err, "environment variable %s is not set", var), NULL;
        } else {
            bad = sb_add(&b, value, strlen(value)) < 0;
        }
        p = close + 1;
    }
    if (bad) {
        free(b.text);
        return rc_fail(err, "out of memory"), NULL;
    }
    return b.text;
}

/* ---- job files ---------------------------------------------------------- */

static const char *json_type_name(const cJSON *item)
{
    if (cJSON_IsBool(item))
        return "a boolean";
    if (cJSON_IsNumber(item))
        return "a number";
    if (cJSON_IsString(item))
        return "a string";
    if (cJSON_IsArray(item))
        return "an array";
    if (cJSON_IsObject(item))
        return "an object";
    return "null";
}

/* Line and column (from 1) of offset in text. */
static void line_column(const char *text, size_t offset, int *line, int *column)
{
    *line = 1;
    *column = 1;
    for (size_t i = 0; i < offset; i++) {
        if (text[i] == '\n') {
            ++*line;
            *column = 1;
        } else {
            ++*column;
        }
    }
}

/* The path as written in the job file, expanded and made relative to dir. */
static char *resolve_path(const char *value, const char *dir, rc_error *err)
{
    char *expanded = job_expand(value, err);
    if (!expanded)
        return NULL;
    if (!*expanded) {
        free(expanded);
        return rc_fail(err, "empty path"), NULL;
    }
    if (expanded[0] == '/' || !dir || strcmp(dir, ".") == 0)
        return expanded;
    size_t n = strlen(dir) + strlen(expanded) + 2;
    char *joined = malloc(n);
    if (joined)
        snprintf(joined, n, "%s/%s", dir, expanded);
    else
        rc_fail(err, "out of memory");
    free(expanded);
    return joined;
}

/* One key of a job file: checks its type and range and sets it (unless
 * skipped). */
static int load_key(job_settings *s, const cJSON *item, const char *dir, int skip, rc_error *err)
{
    const int key = job_key_find(item->string);
    if (key < 0)
        return rc_fail(err, "unknown key (see 'radcap run --help' for the settings)");
    const job_key *k = &job_keys[key];
    if (cJSON_IsNull(item))
        return 0;
    job_value v = {0};
    char expected[96] = "";
    switch (k->type) {
    case JOB_PATH:
    case JOB_WORD:
        if (!cJSON_IsString(item))
            snprintf(expected, sizeof expected, "a string");
        break;
    case JOB_BOOL:
        if (!cJSON_IsBool(item))
            snprintf(expected, sizeof expected, "true or false");
        v.flag = cJSON_IsTrue(item);
        break;
    case JOB_INT:
    case JOB_REAL: {
        const double d = item->valuedouble;
        if (!cJSON_IsNumber(item) || !isfinite(d) || d < k->min || d > k->max ||
            (k->type == JOB_INT && d != floor(d)))
            range_text(k, expected, sizeof expected);
        else
            v.integer = (long long)d; /* in range: exact for integers up to 2^53 */
        v.real = d;
        break;
    }
    }
    if (expected[0]) {
        if (cJSON_IsNumber(item) && (k->type == JOB_INT || k->type == JOB_REAL))
            return rc_fail(err, "expected %s, got %.17g", expected, item->valuedouble);
        return rc_fail(err, "expected %s, got %s", expected, json_type_name(item));
    }
    if (skip)
        return 0;
    char *text = NULL;
    if (k->type == JOB_PATH && !(text = resolve_path(item->valuestring, dir, err)))
        return -1;
    if (k->type == JOB_WORD && !(text = job_expand(item->valuestring, err)))
        return -1;
    v.text = text;
    int status = job_set(s, (job_key_id)key, &v, err);
    free(text);
    return status;
}

int job_load_text(job_settings *s, const char *text, size_t len, const char *name, const char *dir,
                  const unsigned char *skip, rc_error *err)
{
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(text, len, &end, 0);
    if (!root) {
        int line, column;
        size_t offset = end && end >= text && end <= text + len ? (size_t)(end - text) : 0;
        line_column(text, offset, &line, &column);
        return rc_fail(err, "%s:%d:%d: not valid JSON", name, line, column);
    }
    if (!cJSON_IsObject(root)) {
        cJSON_Delete(root);
        return rc_fail(err, "%s: a job file is one JSON object ({\"key\": value, ...})", name);
    }
    int status = 0;
    unsigned char seen[JK_COUNT] = {0};
    for (const cJSON *item = root->child; item && status == 0; item = item->next) {
        if (item->string[0] == '_')
            continue; /* a comment */
        const int key = job_key_find(item->string);
        if (key >= 0 && seen[key]++) {
            status = rc_fail(err, "%s: key '%s' appears twice", name, item->string);
            break;
        }
        if (load_key(s, item, dir, key >= 0 && skip && skip[key], err) < 0)
            status = rc_prefix(err, "%s: key '%s'", name, item->string);
    }
    cJSON_Delete(root);
    return status;
}

int job_load_file(job_settings *s, const char *path, const unsigned char *skip, rc_error *err)
{
    size_t len;
    char *text = rc_read_file(path, (size_t)64 << 20, "the job file", &len, err);
    if (!text)
        return -1;
    char *dir_copy = strdup(path);
    if (!dir_copy) {
        free(text);
        return rc_fail(err, "out of memory");
    }
    char *slash = strrchr(dir_copy, '/');
    const char *dir = ".";
    if (slash == dir_copy)
        dir = "/";
    else if (slash) {
        *slash = '\0';
        dir = dir_copy;
    }
    int status = job_load_text(s, text, len, path, dir, skip, err);
    free(text);
    free(dir_copy);
    if (status == 0)
        s->job_path = own(s, strdup(path));
    return status;
}

/* ---- the effective settings --------------------------------------------- */

static const char *path_value(const job_settings *s, job_key_id key)
{
    const sched_run_options *o = &s->run;
    switch (key) {
    case JK_MANIFEST: return o->manifest;
    case JK_IMAGE_DIR: return o->image_dir;
    case JK_DB: return o->db;
    case JK_CHECKPOINT: return o->checkpoint;
    case JK_VOCAB: return o->vocab;
    case JK_CONFIG: return s->config_path;
    default: return NULL;
    }
}

/* text with every '$' doubled; NULL when out of memory. */
static char *escape_dollars(const char *text)
{
    size_t n = strlen(text) + 1;
    for (const char *p = text; *p; p++)
        n += *p == '$';
    char *out = malloc(n), *q = out;
    for (const char *p = text; out && *p; p++) {
        *q++ = *p;
        if (*p == '$')
            *q++ = '$';
    }
    if (out)
        *q = '\0';
    return out;
}

cJSON *job_settings_json(const job_settings *s)
{
    const sched_run_options *o = &s->run;
    cJSON *obj = cJSON_CreateObject();
    if (!obj)
        return NULL;
    int ok = 1;
    for (int key = 0; key < JK_COUNT && ok; key++) {
        const job_key *k = &job_keys[key];
        cJSON *v = NULL;
        switch ((job_key_id)key) {
        case JK_MANIFEST_KIND: v = cJSON_CreateString(manifest_kind_name(o->manifest_kind)); break;
        case JK_BATCH: v = cJSON_CreateNumber(o->batch); break;
        case JK_THREADS: v = o->threads ? cJSON_CreateNumber(o->threads) : cJSON_CreateNull(); break;
        case JK_MAX_PIXELS: v = cJSON_CreateNumber((double)o->max_pixels); break;
        case JK_EXIF_ORIENTATION: v = cJSON_CreateBool(o->exif_orientation); break;
        case JK_MAX_LENGTH: v = cJSON_CreateNumber(s->max_length ? s->max_length : o->cfg.max_len); break;
        case JK_MIN_LENGTH: v = cJSON_CreateNumber(o->decoding.min_length); break;
        case JK_BEAM: v = cJSON_CreateNumber(o->decoding.beam); break;
        case JK_LENGTH_PENALTY: v = cJSON_CreateNumber(o->decoding.length_penalty); break;
        case JK_EARLY_STOPPING: v = cJSON_CreateBool(o->decoding.early_stopping); break;
        case JK_NO_REPEAT_NGRAM: v = cJSON_CreateNumber(o->decoding.no_repeat_ngram); break;
        case JK_REPETITION_PENALTY: v = cJSON_CreateNumber(o->decoding.repetition_penalty); break;
        case JK_TOKEN_SCORES: v = cJSON_CreateBool(o->decoding.token_scores); break;
        case JK_PRECISION: v = cJSON_CreateString(model_precision_name(o->precision)); break;
        case JK_SINCE_LAST: v = cJSON_CreateBool(o->since_last); break;
        case JK_CHANGE_DETECTION: v = cJSON_CreateString(change_modes[o->change_by_content ? 1 : 0]); break;
        case JK_MAX_ERRORS: v = cJSON_CreateNumber((double)o->max_errors); break;
        case JK_NEW_RUN: v = cJSON_CreateBool(o->new_run); break;
        case JK_EVALUATE: v = cJSON_CreateBool(o->score); break;
        case JK_DROP_BRACKETS: v = cJSON_CreateBool(o->ptb.drop_brackets); break;
        case JK_PREFETCH: v = cJSON_CreateBool(o->prefetch); break;
        case JK_PROGRESS_INTERVAL: v = cJSON_CreateNumber(o->progress_seconds); break;
        case JK_LOG_LEVEL: v = cJSON_CreateString(log_levels[s->level]); break;
        default: {
            /* '$' written as "$$", so that the settings read back as a job file */
            const char *path = path_value(s, (job_key_id)key);
            char *escaped = path ? escape_dollars(path) : NULL;
            v = path ? (escaped ? cJSON_CreateString(escaped) : NULL) : cJSON_CreateNull();
            free(escaped);
        }
        }
        ok = v && cJSON_AddItemToObject(obj, k->name, v);
        if (!ok)
            cJSON_Delete(v);
    }
    char job_abs[PATH_MAX];
    cJSON *job = NULL;
    if (ok)
        job = s->job_path ? cJSON_CreateString(realpath(s->job_path, job_abs) ? job_abs : s->job_path)
                          : cJSON_CreateNull();
    ok = ok && job && cJSON_AddItemToObject(obj, "job_file", job);
    if (!ok) {
        if (job && !cJSON_GetObjectItemCaseSensitive(obj, "job_file"))
            cJSON_Delete(job);
        cJSON_Delete(obj);
        return NULL;
    }
    return obj;
}
