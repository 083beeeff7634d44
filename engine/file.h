/* file.h: reading a small file whole (configurations, job files, caption
 * files), with the one set of error messages they share.
 */
#ifndef RC_FILE_H
#define RC_FILE_H

#include <stddef.h>

#include "err.h"

/* Reads the file at path into a new buffer, which the caller frees; it
 * ends with a NUL that *len does not count. `what` names the file's role in
 * messages ("the job file"); a file over max_bytes is refused rather than
 * read. NULL, with err naming path, when the file cannot be opened or read,
 * is too large, or memory runs out. */
char *rc_read_file(const char *path, size_t max_bytes, const char *what, size_t *len, rc_error *err);

#endif
