/* fuzz_manifest.c: the CSV, JSON Lines and list manifest parsers over
 * arbitrary bytes, from memory, with file checks off. Beyond "no crash, no
 * leak", it checks what the parsers promise: every entry has a non-empty id
 * that is valid UTF-8 without NUL, a non-empty path, and ids are unique. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "io/manifest.h"

static int valid_utf8(const unsigned char *s)
{
    while (*s) {
        int n = *s < 0x80 ? 1 : (*s & 0xE0) == 0xC0 ? 2 : (*s & 0xF0) == 0xE0 ? 3 : (*s & 0xF8) == 0xF0 ? 4 : 0;
        if (n == 0 || (n == 2 && *s < 0xC2))
            return 0;
        for (int i = 1; i < n; i++)
            if ((s[i] & 0xC0) != 0x80)
                return 0;
        s += n;
    }
    return 1;
}

static int compare_ids(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static void check(const manifest *m)
{
    const char **ids = malloc((m->n_entries + 1) * sizeof *ids);
    if (!ids)
        return;
    for (size_t i = 0; i < m->n_entries; i++) {
        const manifest_entry *e = &m->entries[i];
        if (!e->id[0] || !e->path[0] || !valid_utf8((const unsigned char *)e->id) || e->n_refs < 0)
            abort();
        for (int k = 0; k < e->n_refs; k++)
            if (!e->refs[k][0] || !valid_utf8((const unsigned char *)e->refs[k]))
                abort();
        ids[i] = e->id;
    }
    qsort(ids, m->n_entries, sizeof *ids, compare_ids);
    for (size_t i = 1; i < m->n_entries; i++)
        if (strcmp(ids[i - 1], ids[i]) == 0)
            abort();
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    static const manifest_kind kinds[] = {MANIFEST_CSV, MANIFEST_JSONL, MANIFEST_LIST};
    manifest_options opts;
    manifest_options_default(&opts);
    opts.check_files = 0;
    for (size_t k = 0; k < sizeof kinds / sizeof kinds[0]; k++) {
        manifest *m = NULL;
        rc_error err;
        if (manifest_parse((const char *)data, size, kinds[k], "fuzz", &opts, &m, &err) == 0) {
            check(m);
            manifest_free(m);
        }
    }
    return 0;
}
