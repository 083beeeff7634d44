/* csv.h: RFC 4180 comma-separated values, read from memory and written to a
 * stream.
 *
 * The reader walks a buffer record by record. Quoted fields may hold commas,
 * doubled quotes ("") and line breaks; records end at LF or CRLF; a UTF-8
 * byte-order mark at the start is skipped; empty lines are skipped. A quote
 * inside an unquoted field is taken literally, as most CSV writers expect.
 * A malformed record (a quoted field never closed, text after a closing
 * quote) is reported with its line number and skipped, and reading can go
 * on with the next record.
 */
#ifndef RC_CSV_H
#define RC_CSV_H

#include <stddef.h>
#include <stdio.h>

#include "engine/err.h"

typedef struct csv_reader {
    const char *data;    // the whole input (not owned), len bytes
    size_t len;
    size_t pos;          // offset of the next unread byte
    long line;           // 1-based line number at pos
    const char *source;  // name used in messages (a file name)
    char *text;          // unescaped bytes of the current record's fields, each NUL-terminated
    size_t text_cap;
    size_t *offsets;     // (fields_cap) start of each field in text
    size_t *lens;        // (fields_cap) byte length of each field (fields may hold NUL bytes)
    const char **fields; // (fields_cap) pointers into text, valid until the next csv_next
    int n_fields;
    int fields_cap;
    long record_line;    // line on which the current record starts
    long error_line;     // after csv_next returned -1: the line at fault
    const char *error_reason; // after csv_next returned -1: why, without the file and line (static text)
    int out_of_memory;   // 1 when reading stopped for lack of memory
} csv_reader;

/* Prepares to read data[0..len). `source` names the input in messages. */
void csv_init(csv_reader *r, const char *data, size_t len, const char *source);

/* Reads the next record into r->fields / r->lens / r->n_fields (and
 * r->record_line). Returns 1 for a record, 0 at the end of the input, -1 for
 * a malformed record: err then holds "SOURCE:LINE: reason" (the parts also
 * in r->error_line and r->error_reason) and the reader has moved past it, so
 * the caller may call csv_next again. Also -1 when out of memory: then
 * r->out_of_memory is set and the next call returns 0. */
int csv_next(csv_reader *r, rc_error *err);

/* Releases the reader's buffers (not the input). */
void csv_free(csv_reader *r);

/* Writes one field, quoted when it holds a comma, quote, CR or LF (quotes
 * doubled). Returns 0, or -1 if the stream reports a write error. */
int csv_write_field(FILE *out, const char *s, size_t len);

#endif
