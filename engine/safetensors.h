/* safetensors.h: the `.safetensors` weight format.
 *
 * Layout: an 8-byte little-endian header length N, N bytes of JSON
 * ({"name": {"dtype": "F32", "shape": [...], "data_offsets": [begin, end]},
 * ..., "__metadata__": {...}}, possibly padded with spaces), then the data;
 * offsets are relative to the first byte after the header.
 *
 * Reading checks what the reference implementation checks: the header lies
 * inside the file and starts with '{', the JSON is an object of well-formed
 * entries, every dtype is known, every tensor's bytes match its shape and
 * dtype, lie inside the data and do not overlap another tensor's. Gaps
 * between tensors are accepted.
 */
#ifndef RC_SAFETENSORS_H
#define RC_SAFETENSORS_H

#include <stdint.h>
#include <stdio.h>

#include "checkpoint.h"

/* 1 if buf starts like a safetensors file (a header length, then '{'). */
int st_looks_like(const uint8_t *buf, size_t size);

/* Parses f->map (f->path names it in messages) into f's tensors, in the
 * header's order. */
int st_read(ckpt_file *f, rc_error *err);

/* Writes tensors (already validated by the caller) to fp; `path` names the
 * file in messages. The header is padded so that the data start at a
 * multiple of 64 bytes; tensors follow each other without gaps, in order. */
int st_write(FILE *fp, const char *path, const ckpt_tensor *tensors, int n, rc_error *err);

#endif
