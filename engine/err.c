#include "err.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

int rc_fail(rc_error *err, const char *fmt, ...)
{
    if (err) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err->msg, sizeof err->msg, fmt, ap);
        va_end(ap);
    }
    return -1;
}

int rc_prefix(rc_error *err, const char *fmt, ...)
{
    if (!err)
        return -1;
    char prefix[256];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(prefix, sizeof prefix, fmt, ap);
    va_end(ap);
    char old[sizeof err->msg];
    memcpy(old, err->msg, sizeof old);
    /* the old message is cut first if the two do not fit */
    snprintf(err->msg, sizeof err->msg, "%s: %.*s", prefix, (int)(sizeof err->msg - sizeof prefix - 3), old);
    return -1;
}

void rc_clear(rc_error *err)
{
    if (err)
        err->msg[0] = '\0';
}
