/* csv.c: RFC 4180 reader over a memory buffer, and a field writer. */
#include "io/csv.h"

#include <stdlib.h>
#include <string.h>

void csv_init(csv_reader *r, const char *data, size_t len, const char *source)
{
    memset(r, 0, sizeof *r);
    r->data = data;
    r->len = len;
    r->line = 1;
    r->source = source ? source : "<csv>";
    if (len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0)
        r->pos = 3;
}

void csv_free(csv_reader *r)
{
    free(r->text);
    free(r->offsets);
    free(r->lens);
    free(r->fields);
    r->text = NULL;
    r->offsets = r->lens = NULL;
    r->fields = NULL;
    r->text_cap = 0;
    r->fields_cap = 0;
}

/* Appends bytes to the current record's text; -1 when out of memory. */
static int text_append(csv_reader *r, size_t *used, const char *s, size_t n)
{
    if (*used + n + 1 > r->text_cap) {
        size_t cap = r->text_cap ? r->text_cap : 256;
        while (cap < *used + n + 1)
            cap *= 2;
        char *grown = realloc(r->text, cap);
        if (!grown)
            return -1;
        r->text = grown;
        r->text_cap = cap;
    }
    memcpy(r->text + *used, s, n);
    *used += n;
    return 0;
}

/* Starts a new field at text offset `start`; -1 when out of memory. */
static int field_begin(csv_reader *r, size_t start)
{
    if (r->n_fields == r->fields_cap) {
        int cap = r->fields_cap ? 2 * r->fields_cap : 8;
        size_t *offsets = realloc(r->offsets, (size_t)cap * sizeof *offsets);
        if (!offsets)
            return -1;
        r->offsets = offsets;
        size_t *lens = realloc(r->lens, (size_t)cap * sizeof *lens);
        if (!lens)
            return -1;
        r->lens = lens;
        const char **fields = realloc(r->fields, (size_t)cap * sizeof *fields);
        if (!fields)
            return -1;
        r->fields = fields;
        r->fields_cap = cap;
    }
    r->offsets[r->n_fields] = start;
    r->lens[r->n_fields] = 0;
    r->n_fields++;
    return 0;
}

/* Moves the reader to the start of the line after `from`, counting lines. */
static void skip_to_next_line(csv_reader *r, size_t from)
{
    const char *nl = memchr(r->data + from, '\n', r->len - from);
    r->pos = nl ? (size_t)(nl - r->data) + 1 : r->len;
}

/* Records why a record is malformed; returns -1. */
static int malformed(csv_reader *r, long line, const char *reason, rc_error *err)
{
    r->error_line = line;
    r->error_reason = reason;
    return rc_fail(err, "%s:%ld: %s", r->source, line, reason);
}

static int out_of_memory(csv_reader *r, rc_error *err)
{
    r->pos = r->len;
    r->out_of_memory = 1;
    return malformed(r, r->record_line, "out of memory reading a record", err);
}

int csv_next(csv_reader *r, rc_error *err)
{
    const char *d = r->data;
    size_t n = r->len;
    /* Empty lines separate nothing: skip them. */
    while (r->pos < n && (d[r->pos] == '\n' || (d[r->pos] == '\r' && r->pos + 1 < n && d[r->pos + 1] == '\n'))) {
        r->pos += d[r->pos] == '\r' ? 2 : 1;
        r->line++;
    }
    if (r->pos >= n)
        return 0;

    r->record_line = r->line;
    r->n_fields = 0;
    size_t used = 0;
    size_t p = r->pos;
    long line = r->line;
    for (;;) {
        if (field_begin(r, used) < 0)
            return out_of_memory(r, err);
        size_t field_start = used;
        if (p < n && d[p] == '"') {
            /* Quoted field: runs to the matching quote; "" is a literal quote. */
            p++;
            for (;;) {
                const char *q = p < n ? memchr(d + p, '"', n - p) : NULL;
                if (!q) {
                    /* Never closed: report the record's first line and resume
                     * after it, so one stray quote does not swallow the rest
                     * of the file. */
                    long bad_line = r->record_line;
                    r->line = bad_line + 1;
                    skip_to_next_line(r, r->pos);
                    return malformed(r, bad_line, "quoted field is never closed (unterminated quote)", err);
                }
                size_t chunk = (size_t)(q - (d + p));
                for (size_t i = p; i < p + chunk; i++)
                    line += d[i] == '\n';
                if (text_append(r, &used, d + p, chunk) < 0)
                    return out_of_memory(r, err);
                p += chunk + 1;
                if (p < n && d[p] == '"') {
                    if (text_append(r, &used, "\"", 1) < 0)
                        return out_of_memory(r, err);
                    p++;
                    continue;
                }
                break;
            }
            if (p < n && d[p] != ',' && d[p] != '\n' && !(d[p] == '\r' && p + 1 < n && d[p + 1] == '\n')) {
                long bad_line = line;
                r->line = line + 1;
                skip_to_next_line(r, p);
                return malformed(r, bad_line,
                                 "unexpected text after a closing quote (a quote inside a quoted field must be doubled)",
                                 err);
            }
        } else {
            size_t start = p;
            while (p < n && d[p] != ',' && d[p] != '\n' && !(d[p] == '\r' && p + 1 < n && d[p + 1] == '\n'))
                p++;
            if (text_append(r, &used, d + start, p - start) < 0)
                return out_of_memory(r, err);
        }
        r->lens[r->n_fields - 1] = used - field_start;
        if (text_append(r, &used, "", 1) < 0) /* NUL terminator */
            return out_of_memory(r, err);
        if (p < n && d[p] == ',') {
            p++;
            continue;
        }
        /* End of record: LF, CRLF or end of input. */
        if (p < n)
            p += d[p] == '\r' ? 2 : 1;
        line++;
        break;
    }
    r->pos = p;
    r->line = line;
    for (int i = 0; i < r->n_fields; i++)
        r->fields[i] = r->text + r->offsets[i];
    return 1;
}

int csv_write_field(FILE *out, const char *s, size_t len)
{
    int needs_quotes = 0;
    for (size_t i = 0; i < len && !needs_quotes; i++)
        needs_quotes = s[i] == ',' || s[i] == '"' || s[i] == '\r' || s[i] == '\n';
    if (!needs_quotes) {
        if (len > 0 && fwrite(s, 1, len, out) != len)
            return -1;
        return ferror(out) ? -1 : 0;
    }
    putc('"', out);
    size_t start = 0;
    for (size_t i = 0; i < len; i++) {
        if (s[i] != '"')
            continue;
        /* Write through the quote, then write it again to double it. */
        if (fwrite(s + start, 1, i + 1 - start, out) != i + 1 - start)
            return -1;
        start = i;
    }
    if (len > start && fwrite(s + start, 1, len - start, out) != len - start)
        return -1;
    putc('"', out);
    return ferror(out) ? -1 : 0;
}
