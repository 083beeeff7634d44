/* job.h: the settings of `radcap run`, from a job file and the command line.
 *
 * A job file (a .json file, e.g. the presets in jobs/) is one JSON object
 * whose keys are the settings of a run; every setting is also an option of
 * `radcap run` (key max_pixels is --max-pixels; a true/false key K is --K
 * and --no-K), and an option given on
 * the command line overrides the job file's value of that key. Both go
 * through one table (job_keys) and one setter, so they cannot drift apart.
 *
 * In a job file:
 *  - a key that is not a setting, or a value of the wrong JSON type or out of
 *    range, is an error naming the key and the file; JSON syntax errors name
 *    the line and column;
 *  - null leaves a setting at its default; keys starting with '_' are
 *    comments ("_comment": "...") and are ignored;
 *  - strings may use ${NAME} (the environment variable; an error naming the
 *    key when it is not set) and ${NAME:-default}; "$$" is a literal "$";
 *  - relative paths (after expansion) are relative to the job file's folder,
 *    so a job file works from any current directory. Paths given on the
 *    command line are relative to the current directory, as usual.
 *
 * The effective settings (every key with the value in force, defaults
 * included) are written as JSON with job_settings_json and stored with the
 * run in the results database (runs.config_json, key "settings").
 */
#ifndef RC_JOB_H
#define RC_JOB_H

#include <cjson/cJSON.h>
#include <stddef.h>

#include "engine/err.h"
#include "pipeline/log.h"
#include "scheduler/master.h"

typedef enum job_type {
    JOB_PATH = 0, /* a file or folder name (resolved against a job file's folder) */
    JOB_WORD,     /* one of a fixed set of words */
    JOB_INT,      /* an integer in [min, max] */
    JOB_REAL,     /* a number in [min, max] */
    JOB_BOOL,     /* true or false */
} job_type;

/* The settings; the order of job_keys. */
typedef enum job_key_id {
    JK_MANIFEST = 0,
    JK_MANIFEST_KIND,
    JK_IMAGE_DIR,
    JK_DB,
    JK_CHECKPOINT,
    JK_VOCAB,
    JK_CONFIG,
    JK_BATCH,
    JK_THREADS,
    JK_MAX_PIXELS,
    JK_EXIF_ORIENTATION,
    JK_MAX_LENGTH,
    JK_MIN_LENGTH,
    JK_BEAM,
    JK_LENGTH_PENALTY,
    JK_EARLY_STOPPING,
    JK_NO_REPEAT_NGRAM,
    JK_REPETITION_PENALTY,
    JK_TOKEN_SCORES,
    JK_PRECISION,
    JK_SINCE_LAST,
    JK_CHANGE_DETECTION,
    JK_MAX_ERRORS,
    JK_NEW_RUN,
    JK_EVALUATE,
    JK_DROP_BRACKETS,
    JK_PREFETCH,
    JK_PROGRESS_INTERVAL,
    JK_LOG_LEVEL,
    JK_COUNT
} job_key_id;

typedef struct job_key {
    const char *name;          // key in a job file (the option is --name with '-' for '_')
    job_type type;
    double min, max;           // JOB_INT and JOB_REAL: the allowed range
    const char *const *words;  // JOB_WORD: the allowed words, NULL-terminated
} job_key;

/* The table of settings, indexed by job_key_id. */
extern const job_key job_keys[JK_COUNT];

/* Everything `radcap run` needs, with the strings it owns. */
typedef struct job_settings {
    sched_run_options run;     // what the master and the workers get
    const char *config_path;   // model configuration file, or NULL for the card's
    int max_length;            // generated tokens at most; 0: the configuration's
    log_level level;           // log lines above this level are dropped
    const char *job_path;      // the job file, or NULL
    char **owned;              // (n_owned) strings allocated for the settings
    size_t n_owned, cap_owned;
} job_settings;

/* The defaults of a run (sched_run_options_default, INFO logging). */
void job_settings_init(job_settings *s);

/* Frees the strings the settings own (not s itself). */
void job_settings_free(job_settings *s);

/* A value for one setting. */
typedef struct job_value {
    const char *text; // JOB_PATH and JOB_WORD
    long long integer;// JOB_INT
    double real;      // JOB_REAL
    int flag;         // JOB_BOOL
} job_value;

/* Sets one setting (copying text). The value must already be of the key's
 * type and within its range (job_parse_option and the job file reader
 * check that). Fails only when out of memory or a word is unknown. */
int job_set(job_settings *s, job_key_id key, const job_value *value, rc_error *err);

/* Converts command-line text to a value of key's type and sets it; fails
 * with "invalid value 'X' for --name (...)". */
int job_set_option(job_settings *s, job_key_id key, const char *text, rc_error *err);

/* The key named name (a job file key), or -1. */
int job_key_find(const char *name);

/* The option name of a key, e.g. "max-pixels" (at most 63 bytes). */
void job_option_name(job_key_id key, char out[64]);

/* Reads a job file into s. Keys whose skip[key] is non-zero are checked
 * for type only (the command line overrides them, so their environment
 * variables need not be set); skip may be NULL. Errors name the file and
 * the key, or the line and column of a syntax error. */
int job_load_file(job_settings *s, const char *path, const unsigned char *skip, rc_error *err);

/* Like job_load_file on a text in memory: name is used in messages and dir
 * is the folder relative paths are resolved against ("." when NULL). */
int job_load_text(job_settings *s, const char *text, size_t len, const char *name, const char *dir,
                  const unsigned char *skip, rc_error *err);

/* Expands ${NAME}, ${NAME:-default} and $$ in text. Returns a new string,
 * or NULL with err naming the variable (unset) or the bad syntax. */
char *job_expand(const char *text, rc_error *err);

/* The effective settings as a JSON object: every key with its value (null
 * for an unset path), plus "job_file" (absolute path or null). NULL when
 * out of memory. */
cJSON *job_settings_json(const job_settings *s);

#endif
