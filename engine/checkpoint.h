/* checkpoint.h: reading and writing model weights.
 *
 * Two formats are read:
 *  - PyTorch's `torch.save(state_dict)` files (what `roco_best_model.bin` is):
 *    a zip archive (stored entries, zip64 allowed) holding `<prefix>/data.pkl`,
 *    a pickle (protocols 2..5, only the subset state dicts use) that names
 *    each tensor's storage `<prefix>/data/<key>`, offset, shape and strides;
 *  - `.safetensors`: 8-byte little-endian header length, a JSON header, data.
 * The format is chosen from the file's first bytes, not its name.
 *
 * The file is mmap'd; a tensor whose bytes are contiguous and aligned in the
 * file points straight into the mapping. Anything else (strided views,
 * misaligned data, storages of a big-endian `byteorder`) is copied once into
 * memory owned by the ckpt_file.
 *
 * Every offset, size and count read from the file is checked against the
 * file's size before use: a truncated, corrupt or hostile file gives an error
 * naming the file and what is wrong, never a crash or a read outside it.
 * The zip entries a PyTorch checkpoint uses are checked against their CRC-32
 * (unless CKPT_NO_CRC), so a flipped bit in the weights is an error too;
 * safetensors has no checksum. Keys must be unique; no model-specific check
 * (which keys, which shapes) happens here.
 */
#ifndef RC_CHECKPOINT_H
#define RC_CHECKPOINT_H

#include <stddef.h>
#include <stdint.h>

#include "err.h"

#define CKPT_MAX_DIMS 8

typedef enum ckpt_dtype {
    CKPT_F32,
    CKPT_F16,
    CKPT_BF16,
    CKPT_F64,
    CKPT_I64,
    CKPT_I32,
    CKPT_I16,
    CKPT_I8,
    CKPT_U8,
    CKPT_BOOL,
} ckpt_dtype;

typedef struct ckpt_tensor {
    char *name;                     /* state-dict key, e.g. "fc_out.bias" */
    ckpt_dtype dtype;               /* element type as stored */
    int ndim;                       /* 0 for a scalar */
    int64_t shape[CKPT_MAX_DIMS];   /* (ndim) */
    int64_t numel;                  /* product of shape (1 for a scalar) */
    const void *data;               /* numel elements, contiguous, row-major, little-endian,
                                       aligned for the dtype; valid until ckpt_close */
} ckpt_tensor;

typedef struct ckpt_file {
    char *path;                     /* file name, for messages */
    const uint8_t *map;             /* the whole file, mmap'd (or the caller's buffer) */
    size_t map_size;                /* bytes in map */
    int owns_map;                   /* 1 if map must be munmap'd */
    ckpt_tensor *tensors;           /* (n_tensors) in the file's order */
    int n_tensors;
    int cap_tensors;                /* allocated length of tensors */
    void **owned;                   /* (n_owned) buffers allocated for copied tensors */
    int n_owned;
    int cap_owned;                  /* allocated length of owned */
    int *by_name;                   /* (n_tensors) indices into tensors sorted by name, for ckpt_find */
} ckpt_file;

/* Flags of ckpt_open_flags / ckpt_parse_flags. */
enum {
    /* Skip the CRC-32 check of the zip entries a PyTorch checkpoint uses
     * (data.pkl, byteorder and every referenced storage). The check is on by
     * default: it is what turns a flipped bit in the weights into an error;
     * it reads every byte once, in parallel over entries (OpenMP). */
    CKPT_NO_CRC = 1,
};

/* Maps and parses a checkpoint file (either format). On failure *f is left
 * empty and safe to ckpt_close. Same as ckpt_open_flags(f, path, 0, err). */
int ckpt_open(ckpt_file *f, const char *path, rc_error *err);
int ckpt_open_flags(ckpt_file *f, const char *path, unsigned flags, rc_error *err);

/* Parses a checkpoint held in memory (not copied: buf must outlive f).
 * `name` is used in messages. This is the fuzzing entry point.
 * Same as ckpt_parse_flags(f, buf, size, name, 0, err). */
int ckpt_parse(ckpt_file *f, const void *buf, size_t size, const char *name, rc_error *err);
int ckpt_parse_flags(ckpt_file *f, const void *buf, size_t size, const char *name, unsigned flags,
                     rc_error *err);

/* Makes f a checkpoint over n tensors the caller holds in memory (names
 * copied, data borrowed: it must outlive f), as if read from a file called
 * `name`; for running a model that was built in memory, such as a random
 * one being calibrated. Duplicate names are an error. */
int ckpt_view(ckpt_file *f, const ckpt_tensor *tensors, int n, const char *name, rc_error *err);

/* Releases everything ckpt_open / ckpt_parse acquired. */
void ckpt_close(ckpt_file *f);

/* The tensor called `name`, or NULL. */
const ckpt_tensor *ckpt_find(const ckpt_file *f, const char *name);

/* Bytes per element of a dtype, and its PyTorch-style name ("float32"...). */
size_t ckpt_dtype_size(ckpt_dtype dtype);
const char *ckpt_dtype_name(ckpt_dtype dtype);

/* Converts t's elements to float32 into out (numel floats). Floating types
 * only (f32, f16, bf16, f64); returns -1 for integer types. */
int ckpt_to_f32(const ckpt_tensor *t, float *out, rc_error *err);

/* Writers, used by `radcap init-model` and tests. Each writes the tensors in
 * the given order (data as described by each ckpt_tensor) and fails cleanly
 * on I/O errors; the file is written to a temporary name and renamed, so a
 * failed write never leaves a half file under `path`.
 * ckpt_write_torch writes exactly what `torch.save(state_dict)` of PyTorch
 * 1.13 writes (zip of `<archive>/data.pkl`, `<archive>/data/<i>`,
 * `<archive>/version`), loadable by `torch.load`; `archive` is the zip's
 * top folder name (PyTorch uses the file's base name; NULL means "archive"). */
int ckpt_write_torch(const char *path, const ckpt_tensor *tensors, int n, const char *archive,
                     rc_error *err);
int ckpt_write_safetensors(const char *path, const ckpt_tensor *tensors, int n, rc_error *err);

/* Flags of ckpt_write_torch_flags. */
enum {
    /* Write zip64 records for every entry and the archive end even though
     * nothing needs them (they are otherwise written only past 4 GiB or
     * 65535 entries): lets tests cover the zip64 paths of readers. */
    CKPT_WRITE_ZIP64 = 1,
};

/* ckpt_write_torch with flags (ckpt_write_torch passes 0). */
int ckpt_write_torch_flags(const char *path, const ckpt_tensor *tensors, int n, const char *archive,
                           unsigned flags, rc_error *err);

/* ---- for the format readers (checkpoint.c, safetensors.c) ---- */

/* Element type from a safetensors dtype name ("F32", "BF16"...): 0, or -1
 * for a name outside ckpt_dtype. */
int ckpt_dtype_from_safetensors(const char *name, ckpt_dtype *dtype);
const char *ckpt_dtype_safetensors_name(ckpt_dtype dtype);

/* Appends a tensor named name[0..name_len) (no NUL bytes) of the given dtype
 * and shape, checking that ndim <= CKPT_MAX_DIMS, dims are non-negative and
 * numel * element size fits in int64 and size_t. Its data is unset. Returns
 * NULL with a message naming f->path and the key on failure. */
ckpt_tensor *ckpt_add_tensor(ckpt_file *f, const char *name, size_t name_len, ckpt_dtype dtype, int ndim,
                             const int64_t *shape, rc_error *err);

/* A buffer of `bytes` bytes (64-byte aligned) freed by ckpt_close. */
void *ckpt_alloc_owned(ckpt_file *f, size_t bytes, rc_error *err);

/* Sets t->data to `bytes` (numel contiguous little-endian elements inside
 * f->map): in place when aligned for the dtype, else a copy owned by f. */
int ckpt_set_data(ckpt_file *f, ckpt_tensor *t, const uint8_t *bytes, rc_error *err);

#endif
