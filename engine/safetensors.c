#include "safetensors.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* The reference implementation refuses larger headers too. */
#define ST_MAX_HEADER ((uint64_t)100 << 20)
/* Integers above 2^53 do not survive cJSON's doubles. */
#define ST_MAX_JSON_INT 9007199254740992.0
#define ST_DATA_ALIGN 64

int st_looks_like(const uint8_t *buf, size_t size)
{
    return size >= 9 && buf[8] == '{';
}

static int json_uint(const cJSON *v, uint64_t *out)
{
    if (!cJSON_IsNumber(v) || !(v->valuedouble >= 0) || v->valuedouble > ST_MAX_JSON_INT ||
        v->valuedouble != floor(v->valuedouble))
        return -1;
    *out = (uint64_t)v->valuedouble;
    return 0;
}

typedef struct span {
    uint64_t begin, end;
    const char *name;
} span;

static int compare_spans(const void *a, const void *b)
{
    uint64_t x = ((const span *)a)->begin, y = ((const span *)b)->begin;
    return x < y ? -1 : x > y;
}

/* Reads one header entry into a tensor; its byte range goes to *s. */
static int read_entry(ckpt_file *f, const cJSON *item, const uint8_t *data, uint64_t data_len, span *s,
                      rc_error *err)
{
    const char *name = item->string;
    if (!cJSON_IsObject(item))
        return rc_fail(err, "%s: safetensors header entry '%s' is not an object", f->path, name);
    const cJSON *dtype_item = cJSON_GetObjectItemCaseSensitive(item, "dtype");
    const cJSON *shape_item = cJSON_GetObjectItemCaseSensitive(item, "shape");
    const cJSON *offsets = cJSON_GetObjectItemCaseSensitive(item, "data_offsets");
    if (!cJSON_IsString(dtype_item) || !cJSON_IsArray(shape_item) || !cJSON_IsArray(offsets))
        return rc_fail(err, "%s: safetensors tensor '%s' lacks a string \"dtype\", an array \"shape\" or an "
                       "array \"data_offsets\"", f->path, name);
    ckpt_dtype dtype;
    if (ckpt_dtype_from_safetensors(dtype_item->valuestring, &dtype) < 0)
        return rc_fail(err, "%s: safetensors tensor '%s' has unsupported dtype '%.40s'", f->path, name,
                       dtype_item->valuestring);
    int ndim = cJSON_GetArraySize(shape_item);
    if (ndim > CKPT_MAX_DIMS)
        return rc_fail(err, "%s: safetensors tensor '%s' has %d dimensions (at most %d supported)", f->path, name,
                       ndim, CKPT_MAX_DIMS);
    int64_t shape[CKPT_MAX_DIMS];
    int d = 0;
    const cJSON *dim;
    cJSON_ArrayForEach(dim, shape_item) {
        uint64_t u;
        if (json_uint(dim, &u) < 0)
            return rc_fail(err, "%s: safetensors tensor '%s' has a shape entry that is not a non-negative integer",
                           f->path, name);
        shape[d++] = (int64_t)u;
    }
    uint64_t begin, end;
    if (cJSON_GetArraySize(offsets) != 2 || json_uint(cJSON_GetArrayItem(offsets, 0), &begin) < 0 ||
        json_uint(cJSON_GetArrayItem(offsets, 1), &end) < 0)
        return rc_fail(err, "%s: safetensors tensor '%s' has data_offsets that are not two non-negative integers",
                       f->path, name);
    ckpt_tensor *t = ckpt_add_tensor(f, name, strlen(name), dtype, ndim, shape, err);
    if (!t)
        return -1;
    if (begin > end || end > data_len)
        return rc_fail(err, "%s: safetensors tensor '%s' has data_offsets [%llu, %llu] outside the %llu bytes of "
                       "data (truncated or corrupt file)", f->path, name, (unsigned long long)begin,
                       (unsigned long long)end, (unsigned long long)data_len);
    uint64_t need = (uint64_t)t->numel * ckpt_dtype_size(dtype);
    if (end - begin != need)
        return rc_fail(err, "%s: safetensors tensor '%s' has data_offsets [%llu, %llu] (%llu bytes) but its "
                       "shape and dtype %s need %llu bytes", f->path, name, (unsigned long long)begin,
                       (unsigned long long)end, (unsigned long long)(end - begin), ckpt_dtype_name(dtype),
                       (unsigned long long)need);
    s->begin = begin;
    s->end = end;
    s->name = t->name;
    return ckpt_set_data(f, t, data + begin, err);
}

static int read_header(ckpt_file *f, const cJSON *root, const uint8_t *data, uint64_t data_len, rc_error *err)
{
    int n = cJSON_GetArraySize(root);
    span *spans = calloc((size_t)n + 1, sizeof *spans);
    if (!spans)
        return rc_fail(err, "%s: out of memory", f->path);
    int n_spans = 0, rc = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, root) {
        if (strcmp(item->string, "__metadata__") == 0) {
            if (!cJSON_IsObject(item)) {
                rc = rc_fail(err, "%s: safetensors \"__metadata__\" is not an object", f->path);
                break;
            }
            continue;
        }
        if ((rc = read_entry(f, item, data, data_len, &spans[n_spans], err)) < 0)
            break;
        if (spans[n_spans].end > spans[n_spans].begin)
            n_spans++;
    }
    if (rc == 0) {
        qsort(spans, (size_t)n_spans, sizeof *spans, compare_spans);
        for (int i = 1; i < n_spans && rc == 0; i++)
            if (spans[i].begin < spans[i - 1].end)
                rc = rc_fail(err, "%s: safetensors tensors '%s' and '%s' overlap in the data", f->path,
                             spans[i - 1].name, spans[i].name);
    }
    free(spans);
    return rc;
}

int st_read(ckpt_file *f, rc_error *err)
{
    const uint8_t *map = f->map;
    size_t size = f->map_size;
    if (size < 8)
        return rc_fail(err, "%s: truncated safetensors file (%zu bytes)", f->path, size);
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--)
        n = n << 8 | map[i];
    if (n > ST_MAX_HEADER && n <= size - 8)
        return rc_fail(err, "%s: safetensors header of %llu bytes exceeds the 100 MiB limit", f->path,
                       (unsigned long long)n);
    if (n > size - 8)
        return rc_fail(err, "%s: truncated or corrupt safetensors file (header of %llu bytes runs past the end of "
                       "the %zu-byte file)", f->path, (unsigned long long)n, size);
    const char *header = (const char *)map + 8;
    if (n < 2)
        return rc_fail(err, "%s: safetensors header of %llu bytes is too short", f->path, (unsigned long long)n);
    if (header[0] != '{')
        return rc_fail(err, "%s: safetensors header does not start with '{'", f->path);
    const char *end = NULL;
    cJSON *root = cJSON_ParseWithLengthOpts(header, (size_t)n, &end, 0);
    if (!root || !cJSON_IsObject(root)) {
        size_t at = end && end >= header ? (size_t)(end - header) : 0;
        cJSON_Delete(root);
        return rc_fail(err, "%s: safetensors header is not a valid JSON object (error near byte %zu of the header)",
                       f->path, at);
    }
    for (const char *p = end; p < header + n; p++)
        if (*p != ' ' && *p != '\t' && *p != '\n' && *p != '\r') {
            cJSON_Delete(root);
            return rc_fail(err, "%s: safetensors header has bytes after its JSON object (at byte %zu)", f->path,
                           (size_t)(p - header));
        }
    int rc = read_header(f, root, map + 8 + n, size - 8 - n, err);
    cJSON_Delete(root);
    return rc;
}

static void put_json_string(FILE *out, const char *s)
{
    fputc('"', out);
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* The JSON header, padded with spaces so the data start 64-byte aligned. */
static char *make_header(const ckpt_tensor *tensors, int n, size_t *len)
{
    char *text = NULL;
    size_t text_len = 0;
    FILE *out = open_memstream(&text, &text_len);
    if (!out)
        return NULL;
    fputs("{\"__metadata__\":{\"format\":\"pt\"}", out);
    uint64_t offset = 0;
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *t = &tensors[i];
        uint64_t bytes = (uint64_t)t->numel * ckpt_dtype_size(t->dtype);
        fputc(',', out);
        put_json_string(out, t->name);
        fprintf(out, ":{\"dtype\":\"%s\",\"shape\":[", ckpt_dtype_safetensors_name(t->dtype));
        for (int d = 0; d < t->ndim; d++)
            fprintf(out, "%s%lld", d ? "," : "", (long long)t->shape[d]);
        fprintf(out, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)offset,
                (unsigned long long)(offset + bytes));
        offset += bytes;
    }
    fputc('}', out);
    while ((8 + ftell(out)) % ST_DATA_ALIGN != 0)
        fputc(' ', out);
    if (fclose(out) != 0) {
        free(text);
        return NULL;
    }
    *len = text_len;
    return text;
}

int st_write(FILE *fp, const char *path, const ckpt_tensor *tensors, int n, rc_error *err)
{
    size_t len;
    char *header = make_header(tensors, n, &len);
    if (!header)
        return rc_fail(err, "%s: out of memory writing the safetensors header", path);
    uint8_t len_bytes[8];
    for (int i = 0; i < 8; i++)
        len_bytes[i] = (uint8_t)((uint64_t)len >> (8 * i));
    int ok = fwrite(len_bytes, 1, 8, fp) == 8 && fwrite(header, 1, len, fp) == len;
    free(header);
    for (int i = 0; ok && i < n; i++) {
        size_t bytes = (size_t)tensors[i].numel * ckpt_dtype_size(tensors[i].dtype);
        ok = bytes == 0 || fwrite(tensors[i].data, 1, bytes, fp) == bytes;
    }
    if (!ok)
        return rc_fail(err, "%s: write failed: %s", path, strerror(errno));
    return 0;
}
