#include "file.h"

#include <errno.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

char *rc_read_file(const char *path, size_t max_bytes, const char *what, size_t *len, rc_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return rc_fail(err, "%s: cannot open %s: %s", path, what, strerror(errno)), NULL;
    size_t cap = 1 << 16, used = 0, got;
    char *data = malloc(cap + 1);
    int too_large = 0;
    /* read until a short read; grow by doubling (one realloc per doubling
     * keeps the total copying linear) */
    while (data && !too_large && (got = fread(data + used, 1, cap - used, f)) > 0) {
        used += got;
        too_large = used > max_bytes;
        if (used == cap && !too_large) {
            char *grown = cap <= (SIZE_MAX - 1) / 2 ? realloc(data, cap * 2 + 1) : NULL;
            if (!grown) {
                free(data);
                data = NULL;
            }
            data = grown;
            cap *= 2;
        }
    }
    const int read_error = ferror(f);
    fclose(f);
    if (!data)
        return rc_fail(err, "%s: out of memory reading %s", path, what), NULL;
    if (too_large || read_error) {
        free(data);
        if (too_large)
            return rc_fail(err, "%s: %s is larger than %zu MiB", path, what, max_bytes >> 20), NULL;
        return rc_fail(err, "%s: cannot read %s", path, what), NULL;
    }
    data[used] = '\0';
    *len = used;
    return data;
}
