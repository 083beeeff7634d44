/* err.h: how errors travel in radcap.
 *
 * Functions that can fail take a caller-owned `rc_error *err` as their last
 * argument and return -1 (or NULL) after filling it with one readable
 * sentence that names the file, key or line at fault. Nothing below main()
 * prints errors or exits: the caller decides whether to report and go on.
 */
#ifndef RC_ERR_H
#define RC_ERR_H

#include <stddef.h>

typedef struct rc_error {
    char msg[1024]; /* NUL-terminated message; empty when no error */
} rc_error;

/* Writes a printf-style message into err (if err is not NULL); returns -1 so
 * that `return rc_fail(err, "...")` reads naturally. */
int rc_fail(rc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Prepends "prefix: " to an existing message, for adding context (a file
 * name, an image path) as an error travels up. Returns -1. */
int rc_prefix(rc_error *err, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* Clears the message. */
void rc_clear(rc_error *err);

#endif
