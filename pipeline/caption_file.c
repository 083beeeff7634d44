#include "caption_file.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "engine/file.h"
#include "pipeline/interner.h"
#include "pipeline/ucd.h"

int capfile_format_from_name(const char *name, capfile_format *out)
{
    static const char *const names[] = {"auto", "tsv", "jsonl", "json"};
    for (int k = 0; k < 4; k++)
        if (strcmp(name, names[k]) == 0) {
            *out = (capfile_format)k;
            return 0;
        }
    return -1;
}

const char *capfile_format_name(capfile_format format)
{
    switch (format) {
    case CAPFILE_TSV: return "tsv";
    case CAPFILE_JSONL: return "jsonl";
    case CAPFILE_JSON: return "json";
    default: return "auto";
    }
}

void capfile_free(capfile *f)
{
    if (!f)
        return;
    for (size_t i = 0; i < f->n_entries; i++) {
        capfile_entry *e = &f->entries[i];
        free(e->id);
        for (size_t k = 0; k < e->n_captions; k++)
            free(e->captions[k]);
        free(e->captions);
        free(e->lines);
    }
    free(f->entries);
    interner_free(f->ids);
    free(f);
}

const capfile_entry *capfile_find(const capfile *f, const char *id)
{
    uint32_t index;
    if (!interner_find(f->ids, id, strlen(id), &index))
        return NULL;
    return &f->entries[index];
}

static char *copy_bytes(const char *s, size_t len)
{
    char *c = malloc(len + 1);
    if (c) {
        memcpy(c, s, len);
        c[len] = '\0';
    }
    return c;
}

static int valid_utf8(const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    for (size_t k = 0; k < len;) {
        int32_t cp;
        size_t used = ucd_decode(p + k, len - k, &cp);
        if (cp == UCD_REPLACEMENT && !(used == 3 && p[k] == 0xEF && p[k + 1] == 0xBF && p[k + 2] == 0xBD))
            return 0;
        k += used;
    }
    return 1;
}

/* The entry for id (created if new); NULL (err filled) on failure. */
static capfile_entry *entry_for(capfile *f, const char *id, size_t id_len, const char *place, rc_error *err)
{
    if (id_len == 0) {
        rc_fail(err, "%s: empty image id", place);
        return NULL;
    }
    if (memchr(id, '\0', id_len) || !valid_utf8(id, id_len)) {
        rc_fail(err, "%s: the image id is not valid UTF-8 text", place);
        return NULL;
    }
    uint32_t index;
    int added = interner_intern(f->ids, id, id_len, &index, err);
    if (added < 0)
        return NULL;
    if (!added)
        return &f->entries[index];
    if (f->n_entries == f->entries_cap) {
        size_t cap = f->entries_cap ? f->entries_cap * 2 : 64;
        capfile_entry *grown = realloc(f->entries, cap * sizeof *grown);
        if (!grown)
            goto oom;
        f->entries = grown;
        f->entries_cap = cap;
    }
    capfile_entry *e = &f->entries[f->n_entries];
    memset(e, 0, sizeof *e);
    if (!(e->id = copy_bytes(id, id_len)))
        goto oom;
    f->n_entries++;
    return e;
oom:
    rc_fail(err, "%s: out of memory", place);
    return NULL;
}

static int add_caption(capfile_entry *e, const char *text, size_t len, long line, const char *place, rc_error *err)
{
    if (memchr(text, '\0', len))
        return rc_fail(err, "%s: the caption contains a NUL byte", place);
    if (e->n_captions == e->cap) {
        size_t cap = e->cap ? e->cap * 2 : 2;
        char **captions = realloc(e->captions, cap * sizeof *captions);
        if (!captions)
            return rc_fail(err, "%s: out of memory", place);
        e->captions = captions;
        long *lines = realloc(e->lines, cap * sizeof *lines);
        if (!lines)
            return rc_fail(err, "%s: out of memory", place);
        e->lines = lines;
        e->cap = cap;
    }
    if (!(e->captions[e->n_captions] = copy_bytes(text, len)))
        return rc_fail(err, "%s: out of memory", place);
    e->lines[e->n_captions++] = line;
    return 0;
}

/* Calls fn on each line of data (without its line end), with its number. */
typedef int (*line_fn)(capfile *f, const char *line, size_t len, long number, const char *source, rc_error *err);

static int for_each_line(capfile *f, const char *data, size_t len, line_fn fn, const char *source, rc_error *err)
{
    long number = 0;
    for (size_t pos = 0; pos < len;) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len, n = end - pos;
        number++;
        if (n > 0 && data[pos + n - 1] == '\r')
            n--;
        size_t blank = 0;
        while (blank < n && (data[pos + blank] == ' ' || data[pos + blank] == '\t'))
            blank++;
        if (blank < n && fn(f, data + pos, n, number, source, err))
            return -1;
        pos = end + 1;
    }
    return 0;
}

static int tsv_line(capfile *f, const char *line, size_t len, long number, const char *source, rc_error *err)
{
    char place[1200];
    snprintf(place, sizeof place, "%s:%ld", source, number);
    const char *tab = memchr(line, '\t', len);
    if (!tab)
        return rc_fail(err, "%s: expected ID<TAB>CAPTION (no tab on the line)", place);
    size_t id_len = (size_t)(tab - line);
    if (number == 1 && id_len == 2 && strncasecmp(line, "id", 2) == 0 && len - id_len - 1 == 7 &&
        strncasecmp(tab + 1, "caption", 7) == 0)
        return 0; /* header */
    capfile_entry *e = entry_for(f, line, id_len, place, err);
    if (!e)
        return -1;
    return add_caption(e, tab + 1, len - id_len - 1, number, place, err);
}

/* Adds one JSON object's id and captions. `line` is the line (JSON Lines)
 * or the array element (JSON), `place` says which in messages. */
static int json_object(capfile *f, const cJSON *obj, long line, const char *place, rc_error *err)
{
    if (!cJSON_IsObject(obj))
        return rc_fail(err, "%s: expected a JSON object", place);
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
    const char *key = "id";
    if (!id) {
        id = cJSON_GetObjectItemCaseSensitive(obj, "image_id");
        key = "image_id";
    }
    if (!id) {
        id = cJSON_GetObjectItemCaseSensitive(obj, "path");
        key = "path";
    }
    if (!id)
        return rc_fail(err, "%s: no \"id\" (nor \"image_id\" or \"path\") key", place);
    char number[64];
    const char *id_text;
    if (cJSON_IsString(id) && id->valuestring) {
        id_text = id->valuestring;
    } else if (cJSON_IsNumber(id) && strcmp(key, "path") != 0) {
        double v = id->valuedouble;
        if (v == floor(v) && fabs(v) < 9007199254740992.0)
            snprintf(number, sizeof number, "%.0f", v);
        else
            snprintf(number, sizeof number, "%.17g", v);
        id_text = number;
    } else {
        return rc_fail(err, "%s: \"%s\" must be a string%s", place, key, strcmp(key, "path") != 0 ? " or a number" : "");
    }
    const cJSON *caption = cJSON_GetObjectItemCaseSensitive(obj, "caption");
    if (!caption)
        return rc_fail(err, "%s: no \"caption\" key", place);
    if (!cJSON_IsString(caption) && !cJSON_IsArray(caption))
        return rc_fail(err, "%s: \"caption\" must be a string or a list of strings", place);
    capfile_entry *e = entry_for(f, id_text, strlen(id_text), place, err);
    if (!e)
        return -1;
    if (cJSON_IsString(caption))
        return add_caption(e, caption->valuestring, strlen(caption->valuestring), line, place, err);
    const cJSON *item;
    cJSON_ArrayForEach(item, caption) {
        if (!cJSON_IsString(item))
            return rc_fail(err, "%s: \"caption\" must be a string or a list of strings", place);
        if (add_caption(e, item->valuestring, strlen(item->valuestring), line, place, err))
            return -1;
    }
    return 0;
}

static int jsonl_line(capfile *f, const char *line, size_t len, long number, const char *source, rc_error *err)
{
    char place[1200];
    snprintf(place, sizeof place, "%s:%ld", source, number);
    cJSON *obj = cJSON_ParseWithLength(line, len);
    if (!obj)
        return rc_fail(err, "%s: not valid JSON", place);
    int rc = json_object(f, obj, number, place, err);
    cJSON_Delete(obj);
    return rc;
}

static int json_array(capfile *f, const char *data, size_t len, const char *source, rc_error *err)
{
    cJSON *root = cJSON_ParseWithLength(data, len);
    if (!root)
        return rc_fail(err, "%s: not valid JSON", source);
    int rc = 0;
    if (!cJSON_IsArray(root)) {
        rc = rc_fail(err, "%s: expected a JSON array of {\"id\", \"caption\"} objects", source);
    } else {
        long element = 0;
        const cJSON *item;
        cJSON_ArrayForEach(item, root) {
            char place[1200];
            snprintf(place, sizeof place, "%s: array element %ld", source, ++element);
            if ((rc = json_object(f, item, element, place, err)) != 0)
                break;
        }
    }
    cJSON_Delete(root);
    return rc;
}

capfile *capfile_parse(const char *data, size_t len, capfile_format format, const char *source, rc_error *err)
{
    capfile *f = calloc(1, sizeof *f);
    if (!f) {
        rc_fail(err, "%s: out of memory", source);
        return NULL;
    }
    if (!(f->ids = interner_new(1024, err))) {
        free(f);
        return NULL;
    }
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0) {
        data += 3;
        len -= 3;
    }
    if (format == CAPFILE_AUTO) {
        size_t k = 0;
        while (k < len && (data[k] == ' ' || data[k] == '\t' || data[k] == '\r' || data[k] == '\n'))
            k++;
        format = k < len && data[k] == '{' ? CAPFILE_JSONL : k < len && data[k] == '[' ? CAPFILE_JSON : CAPFILE_TSV;
    }
    f->format = format;
    int rc = format == CAPFILE_JSON ? json_array(f, data, len, source, err)
                                    : for_each_line(f, data, len, format == CAPFILE_TSV ? tsv_line : jsonl_line, source, err);
    if (rc) {
        capfile_free(f);
        return NULL;
    }
    return f;
}

capfile *capfile_load(const char *path, capfile_format format, rc_error *err)
{
    size_t len;
    char *data = rc_read_file(path, (size_t)1 << 30, "the caption file", &len, err);
    if (!data)
        return NULL;
    capfile *f = capfile_parse(data, len, format, path, err);
    free(data);
    return f;
}
