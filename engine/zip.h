/* zip.h: the zip archives PyTorch checkpoints are made of.
 *
 * Reading: an archive held in memory (an mmap'd file) is indexed from its
 * central directory (zip64 records and extra fields understood). Only
 * stored (uncompressed) entries are accepted, since their bytes can be used
 * in place; a compressed entry is an error. Every offset and size read from
 * the archive is checked against the buffer before use.
 *
 * Writing: a small writer for stored entries whose data start at 64-byte
 * aligned offsets (as PyTorch writes them, so that readers can map tensors
 * in place), with zip64 records only where a size, offset or count needs
 * them.
 *
 * CRC-32 (the zip polynomial) is computed with tables owned by the caller
 * (zip_crc), so there is no global state.
 */
#ifndef RC_ZIP_H
#define RC_ZIP_H

#include <stdint.h>
#include <stdio.h>

#include "err.h"

/* CRC-32 state shared by calls: slice-by-8 lookup tables, and whether the
 * CPU can fold with carry-less multiplication (x86-64 PCLMULQDQ, about ten
 * times faster than the tables on large buffers). */
typedef struct zip_crc {
    uint32_t table[8][256];
    int use_clmul;          /* 1 when PCLMULQDQ is available */
} zip_crc;

/* Fills the tables (about 2,000 operations) and probes the CPU. */
void zip_crc_init(zip_crc *c);

/* Continues a CRC-32 over n more bytes: crc = 0 to start; the result of one
 * call is the `crc` of the next. */
uint32_t zip_crc32(const zip_crc *c, uint32_t crc, const void *buf, size_t n);

typedef struct zip_entry {
    char *name;             /* NUL-terminated copy of the entry's name */
    uint64_t data_offset;   /* first byte of the entry's data in the archive */
    uint64_t size;          /* bytes of data (stored: compressed = uncompressed) */
    uint32_t crc32;         /* CRC-32 from the central directory */
} zip_entry;

typedef struct zip_archive {
    const uint8_t *data;    /* the whole archive (not owned) */
    uint64_t size;          /* bytes in data */
    zip_entry *entries;     /* (n_entries) sorted by name, for zip_find */
    size_t n_entries;
    zip_crc crc;            /* tables for zip_check_crc */
} zip_archive;

/* Indexes the archive in data[0..size). `name` names it in messages. Fails
 * (and leaves *z empty, safe to zip_close) on anything malformed: no
 * end-of-central-directory record, records or entries outside the buffer,
 * bad signatures, multi-disk archives, encrypted or compressed entries,
 * duplicate names, names with NUL bytes. */
int zip_open_mem(zip_archive *z, const void *data, uint64_t size, const char *name, rc_error *err);

/* Frees the index (not the data). */
void zip_close(zip_archive *z);

/* The entry called `name`, or NULL (binary search). */
const zip_entry *zip_find(const zip_archive *z, const char *name);

/* The entry's bytes (inside z->data). */
const uint8_t *zip_entry_data(const zip_archive *z, const zip_entry *e);

/* Checks the entry's bytes against its CRC-32; -1 naming the entry and the
 * archive on a mismatch. */
int zip_check_crc(const zip_archive *z, const zip_entry *e, const char *name, rc_error *err);

/* Writer. Entries are appended one at a time to an open stream positioned
 * at its start; zip_writer_finish writes the central directory. */
typedef struct zip_written {
    char *name;             /* entry name */
    uint64_t header_offset; /* of its local header */
    uint64_t size;          /* bytes of data */
    uint32_t crc32;
} zip_written;

typedef struct zip_writer {
    FILE *fp;               /* output stream (not owned) */
    const char *path;       /* for messages */
    uint64_t pos;           /* bytes written so far */
    int force_zip64;        /* write zip64 records even where not needed */
    zip_written *entries;   /* (n_entries) */
    size_t n_entries, cap_entries;
    zip_crc crc;
} zip_writer;

/* Starts an archive on fp (`path` names it in messages). force_zip64 makes
 * every entry and the end record use zip64 fields, which lets tests cover
 * readers' zip64 paths without writing 4 GB. */
void zip_writer_init(zip_writer *w, FILE *fp, const char *path, int force_zip64);

/* Appends a stored entry whose data start at a multiple of 64 bytes. */
int zip_writer_add(zip_writer *w, const char *name, const void *data, uint64_t size, rc_error *err);

/* Writes the central directory and end records. The stream is not closed. */
int zip_writer_finish(zip_writer *w, rc_error *err);

/* Frees the writer's bookkeeping (after finish, or to abandon). */
void zip_writer_free(zip_writer *w);

#endif
