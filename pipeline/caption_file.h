/* caption_file.h: files of captions keyed by image id, for `radcap score`.
 *
 * Three formats, detected from the first non-blank character (after a
 * UTF-8 byte-order mark) unless one is asked for:
 * - TSV: one `ID<TAB>CAPTION` per line ('{' or '[' first means JSON).
 *   Everything after the first tab is the caption, further tabs included.
 *   An ID may repeat: each line adds a caption (several references). A
 *   first line that is exactly "id<TAB>caption" (any case) is a header and
 *   skipped; blank lines are skipped; CRLF line ends are accepted.
 * - JSON Lines: one object per line, {"id": ..., "caption": ...}. The id is
 *   a string or a number (written as its decimal text); "image_id" is
 *   accepted in its place, and "path" when neither is present (the
 *   manifest's convention: the id defaults to the path). "caption" is a
 *   string or a list of strings (several references); other keys are
 *   ignored. An id may repeat, adding captions.
 * - JSON: one array of such objects (the COCO results file layout).
 * Every error names the file and the line (or array element) at fault:
 * a line without a tab, an empty id, an id that is not valid UTF-8, a NUL
 * byte, a line that is not a JSON object, a missing or mistyped key.
 * Captions are kept as bytes (NUL-terminated copies).
 */
#ifndef RC_CAPTION_FILE_H
#define RC_CAPTION_FILE_H

#include <stddef.h>

#include "engine/err.h"

typedef enum capfile_format { CAPFILE_AUTO, CAPFILE_TSV, CAPFILE_JSONL, CAPFILE_JSON } capfile_format;

typedef struct capfile_entry {
    char *id;          // the image id (UTF-8, NUL-terminated)
    char **captions;   // (n_captions) its captions in file order
    long *lines;       // (n_captions) line (JSON: array element, from 1) each caption came from
    size_t n_captions; // may be 0 for a JSON entry with an empty caption list
    size_t cap;        // allocated room in captions and lines
} capfile_entry;

typedef struct capfile {
    capfile_entry *entries; // (n_entries) one per distinct id, in order of first appearance
    size_t n_entries;
    size_t entries_cap;
    capfile_format format;  // the format that was read (never CAPFILE_AUTO)
    struct interner *ids;   // id -> index in entries
} capfile;

/* Parses data[0..len) in `format` (CAPFILE_AUTO: detect). `source` names
 * the input in messages. NULL (err filled) on the first error. */
capfile *capfile_parse(const char *data, size_t len, capfile_format format, const char *source, rc_error *err);

/* Reads and parses the file at path. */
capfile *capfile_load(const char *path, capfile_format format, rc_error *err);

/* The entry of image id, or NULL. */
const capfile_entry *capfile_find(const capfile *f, const char *id);

/* Releases everything. NULL is allowed. */
void capfile_free(capfile *f);

/* "auto", "tsv", "jsonl" or "json" to a format: 0, or -1 for another name. */
int capfile_format_from_name(const char *name, capfile_format *out);

/* The name of a format ("tsv", ...). */
const char *capfile_format_name(capfile_format format);

#endif
