/* manifest.h: the list of images of a run, with ground-truth captions where
 * known.
 *
 * Four kinds of manifest are read:
 *   CSV    ROCOv2's layout: a CSV file with header `ID,Caption` (RFC 4180
 *          quoting; more columns are allowed and ignored) and a folder of
 *          images named by ID with any supported extension
 *          (ROCOv2_2023_valid_000001.jpg). The folder is listed once.
 *   JSONL  one JSON object per line: "path" (required), "id" (a string or an
 *          integer; default: the path as written), "caption" (optional: a
 *          string, or a list of strings for several references).
 *   LIST   one image path per line; the id is the path as written.
 *   FOLDER a folder walked recursively for files with a supported extension
 *          (.jpg .jpeg .png .tif .tiff .webp .gif, any case), sorted bytewise
 *          by path; the id is the path relative to the folder. Hidden names
 *          (starting with '.') are skipped, symbolic links to files are
 *          followed, symbolic links to folders are not (no cycles).
 *
 * Relative paths in LIST and JSONL manifests are taken relative to the
 * manifest's own folder (so a manifest travels with its images) unless
 * options.base_dir says otherwise. Empty lines are skipped; an empty caption
 * counts as no caption.
 *
 * Problems do not stop the reading; each is reported once, through the
 * caller's callback or collected in the manifest, and counted:
 *   MALFORMED   a row that cannot be read (bad quoting, wrong column count,
 *               bad JSON, empty path or ID): skipped, with file and line.
 *   DUPLICATE   an ID seen before: the later row is skipped.
 *   MISSING     the image file does not exist: the entry is kept, marked
 *               `missing`, so the run records it as a per-image error.
 *   BAD_UTF8    invalid UTF-8 in an ID or caption: the invalid bytes become
 *               U+FFFD in the entry (a path is kept byte for byte, as the
 *               file system needs it).
 *   UNREADABLE  a sub-folder of a FOLDER manifest that cannot be listed.
 * With options.strict, any problem makes the read fail (after all problems
 * have been reported).
 *
 * Memory: the entries live in one arena (strings) and one array; the file is
 * mapped, not copied. The library never prints.
 */
#ifndef RC_MANIFEST_H
#define RC_MANIFEST_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

typedef enum manifest_kind {
    MANIFEST_AUTO = 0, /* detect (manifest_detect) */
    MANIFEST_CSV,
    MANIFEST_JSONL,
    MANIFEST_LIST,
    MANIFEST_FOLDER,
} manifest_kind;

typedef enum manifest_problem_kind {
    MANIFEST_MALFORMED = 0,
    MANIFEST_DUPLICATE,
    MANIFEST_MISSING,
    MANIFEST_BAD_UTF8,
    MANIFEST_UNREADABLE,
    MANIFEST_N_PROBLEM_KINDS
} manifest_problem_kind;

typedef struct manifest_problem {
    manifest_problem_kind kind;
    const char *source;  // the manifest file or folder
    long line;           // 1-based line of the row, 0 when not line-based
    const char *message; // one sentence starting with "SOURCE:LINE: " (or "SOURCE: ")
} manifest_problem;

/* Called once per problem; the problem and its strings are valid only during
 * the call. */
typedef void (*manifest_problem_fn)(void *user, const manifest_problem *problem);

typedef struct manifest_options {
    manifest_kind kind;          // MANIFEST_AUTO (default) or a forced kind
    const char *image_dir;       // CSV: folder of the images; NULL: see manifest_read
    const char *base_dir;        // LIST/JSONL: folder relative paths start from; NULL: the manifest's folder
    int check_files;             // 1 (default): look for every image file; 0: trust the manifest
    int strict;                  // 1: any problem is fatal (default 0)
    manifest_problem_fn on_problem; // NULL (default): problems are collected in manifest.problems
    void *user;                  // passed to on_problem
} manifest_options;

typedef struct manifest_entry {
    const char *id;           // unique image id (valid UTF-8)
    const char *path;         // image file path (bytes as the file system needs them)
    const char *const *refs;  // (n_refs) reference captions, valid UTF-8
    int n_refs;
    int missing;              // 1 when check_files found no such file
    long line;                // 1-based line in the manifest, 0 for a FOLDER
    int64_t size;             // file size in bytes, -1 until known (manifest_stat_entries)
    int64_t mtime_ns;         // modification time, ns since the epoch, -1 until known
} manifest_entry;

struct manifest_arena;

typedef struct manifest {
    manifest_kind kind;            // the kind that was read
    char *source;                  // the manifest's file or folder name
    manifest_entry *entries;       // (n_entries) in manifest order
    size_t n_entries;
    size_t n_problems[MANIFEST_N_PROBLEM_KINDS]; // problems counted by kind
    manifest_problem *problems;    // (n_collected) when no callback was given
    size_t n_collected;
    size_t collected_cap;
    struct manifest_arena *arena;  // owns every string above
} manifest;

/* Fills opts with the defaults: AUTO kind, check_files on, not strict,
 * problems collected. */
void manifest_options_default(manifest_options *opts);

/* Decides the kind of the manifest at path: a folder is FOLDER; a file
 * ending in .csv is CSV; .jsonl, .ndjson or .json is JSONL; any other file
 * is JSONL when its first non-blank byte is '{', else LIST. */
int manifest_detect(const char *path, manifest_kind *kind, rc_error *err);

/* Reads the manifest at path into *out (freed with manifest_free). For a CSV
 * manifest without options.image_dir, the image folder is the folder beside
 * the CSV named like it without its extension and a trailing "_captions"
 * (valid_captions.csv -> valid/), else the CSV's own folder. Fails (-1) on a
 * file or folder that cannot be read, a CSV header without ID and Caption
 * columns, a missing CSV image folder (when checking files), running out of
 * memory, or any problem in strict mode. */
int manifest_read(const char *path, const manifest_options *opts, manifest **out, rc_error *err);

/* Parses a CSV, JSONL or LIST manifest held in memory (data[0..len), need not
 * be NUL-terminated). `source` names it in messages. Relative paths join
 * options.base_dir (CSV: options.image_dir) when given, else stay as they
 * are. Same results and failures as manifest_read. */
int manifest_parse(const char *data, size_t len, manifest_kind kind, const char *source,
                   const manifest_options *opts, manifest **out, rc_error *err);

/* Fills size and mtime_ns of every entry whose file exists and whose values
 * are not yet known (one stat each), for incremental runs. Entries whose
 * file is missing keep -1. */
void manifest_stat_entries(manifest *m);

/* Total number of problems of all kinds. */
size_t manifest_problem_total(const manifest *m);

/* Frees the manifest and everything it owns (NULL is allowed). */
void manifest_free(manifest *m);

/* "auto", "csv", "jsonl", "list", "folder". */
const char *manifest_kind_name(manifest_kind kind);

/* Parses a kind name as above (for a --manifest-kind option). */
int manifest_kind_parse(const char *name, manifest_kind *kind, rc_error *err);

/* "malformed", "duplicate", "missing", "bad_utf8", "unreadable". */
const char *manifest_problem_kind_name(manifest_problem_kind kind);

/* 1 when name ends with a supported image extension (case-insensitive). */
int manifest_is_image_name(const char *name);

#endif
