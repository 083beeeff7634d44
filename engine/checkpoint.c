/* checkpoint.c: format detection, the PyTorch state-dict reader and writer,
 * and what both formats share (tensor list, data placement, conversions). */
#include "checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pickle.h"
#include "safetensors.h"
#include "zip.h"

/* ---- element types ---- */

typedef struct dtype_info {
    size_t size;
    const char *name;          /* PyTorch's ("float32") */
    const char *storage;       /* torch.<storage> class in state-dict pickles */
    const char *safetensors;   /* safetensors "dtype" */
} dtype_info;

static const dtype_info dtypes[] = {
    [CKPT_F32] = {4, "float32", "FloatStorage", "F32"},
    [CKPT_F16] = {2, "float16", "HalfStorage", "F16"},
    [CKPT_BF16] = {2, "bfloat16", "BFloat16Storage", "BF16"},
    [CKPT_F64] = {8, "float64", "DoubleStorage", "F64"},
    [CKPT_I64] = {8, "int64", "LongStorage", "I64"},
    [CKPT_I32] = {4, "int32", "IntStorage", "I32"},
    [CKPT_I16] = {2, "int16", "ShortStorage", "I16"},
    [CKPT_I8] = {1, "int8", "CharStorage", "I8"},
    [CKPT_U8] = {1, "uint8", "ByteStorage", "U8"},
    [CKPT_BOOL] = {1, "bool", "BoolStorage", "BOOL"},
};
#define N_DTYPES ((int)(sizeof dtypes / sizeof dtypes[0]))

static int valid_dtype(ckpt_dtype d)
{
    return (int)d >= 0 && (int)d < N_DTYPES;
}

size_t ckpt_dtype_size(ckpt_dtype dtype)
{
    return valid_dtype(dtype) ? dtypes[dtype].size : 0;
}

const char *ckpt_dtype_name(ckpt_dtype dtype)
{
    return valid_dtype(dtype) ? dtypes[dtype].name : "unknown";
}

const char *ckpt_dtype_safetensors_name(ckpt_dtype dtype)
{
    return valid_dtype(dtype) ? dtypes[dtype].safetensors : "unknown";
}

int ckpt_dtype_from_safetensors(const char *name, ckpt_dtype *dtype)
{
    for (int i = 0; i < N_DTYPES; i++)
        if (strcmp(name, dtypes[i].safetensors) == 0) {
            *dtype = (ckpt_dtype)i;
            return 0;
        }
    return -1;
}

/* ---- building a ckpt_file ---- */

ckpt_tensor *ckpt_add_tensor(ckpt_file *f, const char *name, size_t name_len, ckpt_dtype dtype, int ndim,
                             const int64_t *shape, rc_error *err)
{
    if (memchr(name, 0, name_len))
        return rc_fail(err, "%s: a tensor name contains a NUL byte", f->path), NULL;
    if (ndim < 0 || ndim > CKPT_MAX_DIMS)
        return rc_fail(err, "%s: tensor '%.*s' has %d dimensions (at most %d supported)", f->path, (int)name_len,
                       name, ndim, CKPT_MAX_DIMS), NULL;
    int64_t numel = 1;
    for (int d = 0; d < ndim; d++) {
        if (shape[d] < 0)
            return rc_fail(err, "%s: tensor '%.*s' has a negative dimension (%lld)", f->path, (int)name_len, name,
                           (long long)shape[d]), NULL;
        if (__builtin_mul_overflow(numel, shape[d], &numel))
            numel = INT64_MAX;
    }
    int64_t bytes;
    if (__builtin_mul_overflow(numel, (int64_t)ckpt_dtype_size(dtype), &bytes) || (uint64_t)bytes > SIZE_MAX)
        return rc_fail(err, "%s: tensor '%.*s' is too large (its shape's product overflows)", f->path,
                       (int)name_len, name), NULL;
    if (f->n_tensors == f->cap_tensors) {
        if (f->cap_tensors > (1 << 28))
            return rc_fail(err, "%s: too many tensors", f->path), NULL;
        int cap = f->cap_tensors ? 2 * f->cap_tensors : 64;
        ckpt_tensor *grown = realloc(f->tensors, (size_t)cap * sizeof *grown);
        if (!grown)
            return rc_fail(err, "%s: out of memory", f->path), NULL;
        f->tensors = grown;
        f->cap_tensors = cap;
    }
    ckpt_tensor *t = &f->tensors[f->n_tensors];
    memset(t, 0, sizeof *t);
    t->name = strndup(name, name_len);
    if (!t->name)
        return rc_fail(err, "%s: out of memory", f->path), NULL;
    f->n_tensors++;
    t->dtype = dtype;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->numel = numel;
    return t;
}

void *ckpt_alloc_owned(ckpt_file *f, size_t bytes, rc_error *err)
{
    if (f->n_owned == f->cap_owned) {
        int cap = f->cap_owned ? 2 * f->cap_owned : 16;
        void **grown = realloc(f->owned, (size_t)cap * sizeof *grown);
        if (!grown)
            return rc_fail(err, "%s: out of memory", f->path), NULL;
        f->owned = grown;
        f->cap_owned = cap;
    }
    void *p = NULL;
    if (posix_memalign(&p, 64, bytes ? bytes : 1) != 0)
        return rc_fail(err, "%s: out of memory (%zu bytes)", f->path, bytes), NULL;
    f->owned[f->n_owned++] = p;
    return p;
}

static size_t tensor_bytes(const ckpt_tensor *t)
{
    return (size_t)t->numel * ckpt_dtype_size(t->dtype);
}

int ckpt_set_data(ckpt_file *f, ckpt_tensor *t, const uint8_t *bytes, rc_error *err)
{
    if ((uintptr_t)bytes % ckpt_dtype_size(t->dtype) == 0) {
        t->data = bytes;
        return 0;
    }
    void *copy = ckpt_alloc_owned(f, tensor_bytes(t), err);
    if (!copy)
        return -1;
    memcpy(copy, bytes, tensor_bytes(t));
    t->data = copy;
    return 0;
}

static int compare_names(const void *a, const void *b, void *tensors)
{
    const ckpt_tensor *t = tensors;
    return strcmp(t[*(const int *)a].name, t[*(const int *)b].name);
}

/* Sorts names for ckpt_find; a name twice is an error. */
static int index_names(ckpt_file *f, rc_error *err)
{
    f->by_name = malloc(((size_t)f->n_tensors + 1) * sizeof *f->by_name);
    if (!f->by_name)
        return rc_fail(err, "%s: out of memory", f->path);
    for (int i = 0; i < f->n_tensors; i++)
        f->by_name[i] = i;
    qsort_r(f->by_name, (size_t)f->n_tensors, sizeof *f->by_name, compare_names, f->tensors);
    for (int i = 1; i < f->n_tensors; i++) {
        const char *name = f->tensors[f->by_name[i]].name;
        if (strcmp(f->tensors[f->by_name[i - 1]].name, name) == 0)
            return rc_fail(err, "%s: key '%s' appears twice", f->path, name);
    }
    return 0;
}

const ckpt_tensor *ckpt_find(const ckpt_file *f, const char *name)
{
    int lo = 0, hi = f->by_name ? f->n_tensors : 0;
    while (lo < hi) {
        int mid = lo + (hi - lo) / 2;
        const ckpt_tensor *t = &f->tensors[f->by_name[mid]];
        int c = strcmp(t->name, name);
        if (c == 0)
            return t;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

void ckpt_close(ckpt_file *f)
{
    for (int i = 0; i < f->n_tensors; i++)
        free(f->tensors[i].name);
    free(f->tensors);
    for (int i = 0; i < f->n_owned; i++)
        free(f->owned[i]);
    free(f->owned);
    free(f->by_name);
    if (f->owns_map && f->map)
        munmap((void *)f->map, f->map_size);
    free(f->path);
    memset(f, 0, sizeof *f);
}

/* ---- PyTorch state dicts ---- */

/* What the reader of one torch.save archive keeps at hand. */
typedef struct torch_reader {
    ckpt_file *f;
    zip_archive zip;
    const char *prefix;        /* the folder holding data.pkl */
    size_t prefix_len;
    int big_endian;            /* the archive's byteorder entry says "big" */
    unsigned char *used;       /* (zip.n_entries) 1 for each storage a tensor uses */
} torch_reader;

static int tuple_item(const pk_value *tuple, size_t i, pk_kind kind, const pk_value **out)
{
    if (!tuple || tuple->kind != PK_TUPLE || i >= tuple->items.n || tuple->items.v[i]->kind != kind)
        return -1;
    *out = tuple->items.v[i];
    return 0;
}

/* A shape or stride: a tuple (or list) of at most CKPT_MAX_DIMS ints. */
static int read_dims(const pk_value *v, int64_t *dims, int *ndim)
{
    if (!v || (v->kind != PK_TUPLE && v->kind != PK_LIST) || v->items.n > CKPT_MAX_DIMS)
        return -1;
    for (size_t i = 0; i < v->items.n; i++) {
        if (v->items.v[i]->kind != PK_INT)
            return -1;
        dims[i] = v->items.v[i]->i;
    }
    *ndim = (int)v->items.n;
    return 0;
}

/* The storage named by persistent id ('storage', torch.XStorage, key,
 * location, numel): its dtype, zip entry and element count. */
static int read_storage(torch_reader *r, const char *key, const pk_value *pid, ckpt_dtype *dtype,
                        const zip_entry **entry, int64_t *numel, rc_error *err)
{
    const char *path = r->f->path;
    const pk_value *id = pid->args, *type, *storage_key, *location, *count;
    char what[96];
    if (tuple_item(id, 1, PK_GLOBAL, &type) < 0 || tuple_item(id, 2, PK_STR, &storage_key) < 0 ||
        tuple_item(id, 3, PK_STR, &location) < 0 || tuple_item(id, 4, PK_INT, &count) < 0 ||
        id->items.n != 5 || !pk_is_str(id->items.v[0], "storage"))
        return rc_fail(err, "%s: key '%s': the storage reference is not ('storage', type, key, location, numel) "
                       "(it is %s)", path, key, pk_describe(id, what, sizeof what));
    int found = -1;
    for (int i = 0; i < N_DTYPES && found < 0; i++)
        if (pk_is_global(type, "torch", dtypes[i].storage))
            found = i;
    if (found < 0)
        return rc_fail(err, "%s: key '%s' has an unsupported storage type (%s)", path, key,
                       pk_describe(type, what, sizeof what));
    *dtype = (ckpt_dtype)found;
    if (count->i < 0)
        return rc_fail(err, "%s: key '%s': storage of %lld elements", path, key, (long long)count->i);
    *numel = count->i;

    char *name = NULL;
    if (asprintf(&name, "%.*s/data/%.*s", (int)r->prefix_len, r->prefix, (int)storage_key->len,
                 storage_key->str) < 0)
        return rc_fail(err, "%s: out of memory", path);
    *entry = zip_find(&r->zip, name);
    if (!*entry) {
        rc_fail(err, "%s: key '%s': its storage '%s' is missing from the archive", path, key, name);
        free(name);
        return -1;
    }
    free(name);
    int64_t bytes;
    if (__builtin_mul_overflow(*numel, (int64_t)dtypes[found].size, &bytes) || (uint64_t)bytes != (*entry)->size)
        return rc_fail(err, "%s: key '%s': storage '%s' holds %llu bytes but its header says %lld elements of %s",
                       path, key, (*entry)->name, (unsigned long long)(*entry)->size, (long long)*numel,
                       dtypes[found].name);
    r->used[*entry - r->zip.entries] = 1;
    return 0;
}

/* Copies a strided view to contiguous memory, element by element. */
static void gather(uint8_t *dst, const uint8_t *src, size_t elem, int ndim, const int64_t *shape,
                   const int64_t *stride, int64_t numel)
{
    int64_t index[CKPT_MAX_DIMS] = {0};
    int64_t offset = 0;
    for (int64_t i = 0; i < numel; i++) {
        memcpy(dst + (size_t)i * elem, src + (size_t)offset * elem, elem);
        for (int d = ndim - 1; d >= 0; d--) {
            offset += stride[d];
            if (++index[d] < shape[d])
                break;
            offset -= stride[d] * shape[d];
            index[d] = 0;
        }
    }
}

static void swap_bytes(uint8_t *p, size_t elem, int64_t numel)
{
    for (int64_t i = 0; i < numel; i++, p += elem)
        for (size_t a = 0, b = elem - 1; a < b; a++, b--) {
            uint8_t tmp = p[a];
            p[a] = p[b];
            p[b] = tmp;
        }
}

/* _rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad,
 * backward_hooks[, metadata]) for key `key`. */
static int read_tensor_v2(torch_reader *r, const char *key, const pk_value *call, rc_error *err)
{
    const char *path = r->f->path;
    const pk_value *args = call->args, *pid, *offset;
    char what[96];
    int64_t shape[CKPT_MAX_DIMS], stride[CKPT_MAX_DIMS];
    int ndim, n_stride;
    if (!args || args->kind != PK_TUPLE || args->items.n < 6 || args->items.v[0]->kind != PK_PERSID)
        return rc_fail(err, "%s: key '%s': _rebuild_tensor_v2 called with %s instead of (storage, offset, size, "
                       "stride, requires_grad, hooks)", path, key, pk_describe(args, what, sizeof what));
    if (args->items.n > 7 || tuple_item(args, 1, PK_INT, &offset) < 0 ||
        read_dims(args->items.v[2], shape, &ndim) < 0 || read_dims(args->items.v[3], stride, &n_stride) < 0 ||
        n_stride != ndim)
        return rc_fail(err, "%s: key '%s': malformed tensor arguments (offset, size and stride must be ints and "
                       "tuples of at most %d ints of equal length)", path, key, CKPT_MAX_DIMS);
    pid = args->items.v[0];
    ckpt_dtype dtype = CKPT_F32;
    const zip_entry *entry = NULL;
    int64_t storage_numel = 0;
    if (read_storage(r, key, pid, &dtype, &entry, &storage_numel, err) < 0)
        return -1;
    ckpt_tensor *t = ckpt_add_tensor(r->f, key, strlen(key), dtype, ndim, shape, err);
    if (!t)
        return -1;

    /* The last element the view touches must lie inside the storage. */
    int64_t start = offset->i, last = start, expect = 1;
    int overflow = 0, contiguous = 1;
    if (start < 0)
        return rc_fail(err, "%s: key '%s' has a negative storage offset", path, key);
    for (int d = ndim - 1; d >= 0; d--) {
        int64_t step;
        if (stride[d] < 0)
            return rc_fail(err, "%s: key '%s' has a negative stride", path, key);
        if (shape[d] > 0 && (__builtin_mul_overflow(shape[d] - 1, stride[d], &step) ||
                             __builtin_add_overflow(last, step, &last)))
            overflow = 1;
        if (shape[d] != 1 && stride[d] != expect)
            contiguous = 0;
        if (__builtin_mul_overflow(expect, shape[d], &expect))
            expect = INT64_MAX;
    }
    int inside = t->numel == 0 ? start <= storage_numel : last < storage_numel;
    if (overflow || !inside)
        return rc_fail(err, "%s: key '%s' (shape of %lld elements at storage offset %lld) extends past its storage "
                       "'%s' of %lld elements", path, key, (long long)t->numel, (long long)start, entry->name,
                       (long long)storage_numel);

    size_t elem = dtypes[dtype].size;
    const uint8_t *base = zip_entry_data(&r->zip, entry) + (size_t)start * elem;
    if (contiguous && !r->big_endian)
        return ckpt_set_data(r->f, t, base, err);
    /* A view with zero strides can describe far more elements than its
     * storage holds; copying it must not let a small file claim gigabytes. */
    if (tensor_bytes(t) > 2 * r->f->map_size + ((size_t)64 << 20))
        return rc_fail(err, "%s: key '%s' is a strided view of %zu bytes over a storage of %llu bytes: too large "
                       "to copy", path, key, tensor_bytes(t), (unsigned long long)entry->size);
    uint8_t *copy = ckpt_alloc_owned(r->f, tensor_bytes(t), err);
    if (!copy)
        return -1;
    gather(copy, base, elem, ndim, shape, stride, t->numel);
    if (r->big_endian)
        swap_bytes(copy, elem, t->numel);
    t->data = copy;
    return 0;
}

/* A state-dict value: a tensor, possibly wrapped as an nn.Parameter. */
static int read_value(torch_reader *r, const char *key, const pk_value *v, rc_error *err)
{
    for (int wraps = 0; wraps < 4; wraps++) {
        if (pk_is_call(v, "torch._utils", "_rebuild_tensor_v2"))
            return read_tensor_v2(r, key, v, err);
        if (!pk_is_call(v, "torch._utils", "_rebuild_parameter") &&
            !pk_is_call(v, "torch._utils", "_rebuild_parameter_with_state"))
            break;
        if (!v->args || v->args->kind != PK_TUPLE || v->args->items.n < 1)
            break;
        v = v->args->items.v[0];
    }
    char what[96];
    return rc_fail(err, "%s: key '%s' is not a tensor (it is %s)", r->f->path, key, pk_describe(v, what, sizeof what));
}

/* The state dict: an OrderedDict (REDUCE + SETITEMS, maybe BUILD with
 * `_metadata`, which is ignored) or a plain dict. */
static int read_state_dict(torch_reader *r, const pk_value *root, rc_error *err)
{
    char what[96];
    int is_ordered = pk_is_call(root, "collections", "OrderedDict") && root->items.n == 0;
    if (!is_ordered && !(root && root->kind == PK_DICT))
        return rc_fail(err, "%s: the pickle holds %s, not a state dict (a dict of tensors)", r->f->path,
                       pk_describe(root, what, sizeof what));
    for (size_t i = 0; i + 1 < root->entries.n; i += 2) {
        const pk_value *k = root->entries.v[i];
        if (k->kind != PK_STR)
            return rc_fail(err, "%s: a state-dict key is %s, not a string", r->f->path, pk_describe(k, what, sizeof what));
        char *key = strndup(k->str, k->len);
        if (!key)
            return rc_fail(err, "%s: out of memory", r->f->path);
        int rc = memchr(k->str, 0, k->len) ? rc_fail(err, "%s: a state-dict key contains a NUL byte", r->f->path)
                                           : read_value(r, key, root->entries.v[i + 1], err);
        free(key);
        if (rc < 0)
            return -1;
    }
    return 0;
}

/* PyTorch names the archive's top folder after the file; data.pkl says
 * which folder that is. */
static int find_data_pkl(torch_reader *r, const zip_entry **pkl, rc_error *err)
{
    int count = 0;
    for (size_t i = 0; i < r->zip.n_entries; i++) {
        const char *name = r->zip.entries[i].name;
        const char *slash = strchr(name, '/');
        if (slash && slash > name && strcmp(slash, "/data.pkl") == 0) {
            *pkl = &r->zip.entries[i];
            r->prefix = name;
            r->prefix_len = (size_t)(slash - name);
            count++;
        }
    }
    if (count == 0)
        return rc_fail(err, "%s: zip archive without a <folder>/data.pkl entry: not a PyTorch checkpoint", r->f->path);
    if (count > 1)
        return rc_fail(err, "%s: zip archive with %d data.pkl entries (expected one)", r->f->path, count);
    return 0;
}

static int read_byteorder(torch_reader *r, unsigned flags, rc_error *err)
{
    char *name = NULL;
    if (asprintf(&name, "%.*s/byteorder", (int)r->prefix_len, r->prefix) < 0)
        return rc_fail(err, "%s: out of memory", r->f->path);
    const zip_entry *e = zip_find(&r->zip, name);
    free(name);
    if (!e)
        return 0; /* PyTorch before 2.1 writes none: little-endian */
    if (!(flags & CKPT_NO_CRC) && zip_check_crc(&r->zip, e, r->f->path, err) < 0)
        return -1;
    const char *text = (const char *)zip_entry_data(&r->zip, e);
    size_t n = (size_t)e->size;
    while (n > 0 && (text[n - 1] == '\n' || text[n - 1] == '\r' || text[n - 1] == ' '))
        n--;
    if (n == 6 && memcmp(text, "little", 6) == 0)
        return 0;
    if (n == 3 && memcmp(text, "big", 3) == 0) {
        r->big_endian = 1;
        return 0;
    }
    return rc_fail(err, "%s: entry '%s' names an unknown byte order", r->f->path, e->name);
}

/* CRC-32 of every storage in use, in parallel over entries. */
static int check_storages(torch_reader *r, rc_error *err)
{
    long n = (long)r->zip.n_entries, bad = -1;
    uint32_t *computed = malloc(((size_t)n + 1) * sizeof *computed);
    if (!computed)
        return rc_fail(err, "%s: out of memory", r->f->path);
#pragma omp parallel for schedule(dynamic, 1)
    for (long i = 0; i < n; i++) {
        const zip_entry *e = &r->zip.entries[i];
        computed[i] = r->used[i] ? zip_crc32(&r->zip.crc, 0, zip_entry_data(&r->zip, e), e->size) : e->crc32;
    }
    for (long i = 0; i < n && bad < 0; i++)
        if (computed[i] != r->zip.entries[i].crc32)
            bad = i;
    free(computed);
    return bad < 0 ? 0 : zip_check_crc(&r->zip, &r->zip.entries[bad], r->f->path, err);
}

static int read_torch(ckpt_file *f, unsigned flags, rc_error *err)
{
    torch_reader r = {.f = f};
    const zip_entry *pkl = NULL;
    pk_doc doc = {0};
    int rc = -1;
    if (zip_open_mem(&r.zip, f->map, f->map_size, f->path, err) < 0)
        return -1;
    r.used = calloc(r.zip.n_entries + 1, 1);
    if (!r.used) {
        rc_fail(err, "%s: out of memory", f->path);
        goto done;
    }
    if (find_data_pkl(&r, &pkl, err) < 0 || read_byteorder(&r, flags, err) < 0)
        goto done;
    if (!(flags & CKPT_NO_CRC) && zip_check_crc(&r.zip, pkl, f->path, err) < 0)
        goto done;
    char pkl_name[1200];
    snprintf(pkl_name, sizeof pkl_name, "%s (%s)", f->path, pkl->name);
    if (pk_load(&doc, zip_entry_data(&r.zip, pkl), (size_t)pkl->size, NULL, pkl_name, err) < 0)
        goto done;
    if (read_state_dict(&r, doc.root, err) < 0)
        goto done;
    if (!(flags & CKPT_NO_CRC) && check_storages(&r, err) < 0)
        goto done;
    rc = 0;
done:
    pk_free(&doc);
    free(r.used);
    zip_close(&r.zip);
    return rc;
}

/* ---- opening ---- */

int ckpt_parse_flags(ckpt_file *f, const void *buf, size_t size, const char *name, unsigned flags,
                     rc_error *err)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(name);
    if (!f->path)
        return rc_fail(err, "%s: out of memory", name);
    f->map = buf;
    f->map_size = size;
    const uint8_t *b = buf;
    int rc;
    if (size == 0)
        rc = rc_fail(err, "%s: empty file (0 bytes): not a checkpoint", name);
    else if (size >= 4 && b[0] == 'P' && b[1] == 'K' && ((b[2] == 3 && b[3] == 4) || (b[2] == 5 && b[3] == 6)))
        rc = read_torch(f, flags, err);
    else if (size >= 2 && b[0] == PK_OP_PROTO && b[1] >= 2 && b[1] <= 5)
        rc = rc_fail(err, "%s: legacy PyTorch checkpoint (a bare pickle, from before PyTorch 1.6); re-save it with "
                     "torch.save from PyTorch 1.6 or later", name);
    else if (st_looks_like(b, size))
        rc = st_read(f, err);
    else
        rc = rc_fail(err, "%s: not a PyTorch checkpoint (zip) or a safetensors file (it starts with bytes "
                     "%02x %02x %02x %02x)", name, b[0], size > 1 ? b[1] : 0, size > 2 ? b[2] : 0,
                     size > 3 ? b[3] : 0);
    if (rc == 0)
        rc = index_names(f, err);
    if (rc < 0) {
        ckpt_close(f);
        return -1;
    }
    return 0;
}

int ckpt_view(ckpt_file *f, const ckpt_tensor *tensors, int n, const char *name, rc_error *err)
{
    memset(f, 0, sizeof *f);
    f->path = strdup(name);
    if (!f->path)
        return rc_fail(err, "%s: out of memory", name);
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *src = &tensors[i];
        ckpt_tensor *t = ckpt_add_tensor(f, src->name, strlen(src->name), src->dtype, src->ndim, src->shape, err);
        if (!t || !valid_dtype(src->dtype)) {
            if (t)
                rc_fail(err, "%s: tensor '%s' has an unknown dtype", name, src->name);
            ckpt_close(f);
            return -1;
        }
        t->data = src->data;
    }
    if (index_names(f, err) < 0) {
        ckpt_close(f);
        return -1;
    }
    return 0;
}

int ckpt_parse(ckpt_file *f, const void *buf, size_t size, const char *name, rc_error *err)
{
    return ckpt_parse_flags(f, buf, size, name, 0, err);
}

int ckpt_open_flags(ckpt_file *f, const char *path, unsigned flags, rc_error *err)
{
    memset(f, 0, sizeof *f);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0)
        return rc_fail(err, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return rc_fail(err, "%s: not a regular file", path);
    }
    if (st.st_size == 0) {
        close(fd);
        return rc_fail(err, "%s: empty file (0 bytes): not a checkpoint", path);
    }
    void *map = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    int map_errno = errno;
    close(fd);
    if (map == MAP_FAILED)
        return rc_fail(err, "%s: cannot map: %s", path, strerror(map_errno));
    if (ckpt_parse_flags(f, map, (size_t)st.st_size, path, flags, err) < 0) {
        munmap(map, (size_t)st.st_size);
        return -1;
    }
    f->owns_map = 1;
    return 0;
}

int ckpt_open(ckpt_file *f, const char *path, rc_error *err)
{
    return ckpt_open_flags(f, path, 0, err);
}

/* ---- conversion ---- */

static float f16_to_f32(uint16_t h)
{
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, mant = h & 0x3ff, bits;
    if (exp == 0) {
        /* zero or subnormal: mant * 2^-24, exact in float */
        float v = (float)mant * 0x1p-24f;
        memcpy(&bits, &v, sizeof bits);
        bits |= sign;
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | mant << 13;
    } else {
        bits = sign | (exp + 112) << 23 | mant << 13;
    }
    float out;
    memcpy(&out, &bits, sizeof out);
    return out;
}

int ckpt_to_f32(const ckpt_tensor *t, float *out, rc_error *err)
{
    const uint8_t *p = t->data;
    int64_t n = t->numel;
    switch (t->dtype) {
    case CKPT_F32:
        memcpy(out, p, (size_t)n * 4);
        return 0;
    case CKPT_F16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            out[i] = f16_to_f32(h);
        }
        return 0;
    case CKPT_BF16:
        for (int64_t i = 0; i < n; i++) {
            uint16_t h;
            memcpy(&h, p + 2 * i, 2);
            uint32_t bits = (uint32_t)h << 16;
            memcpy(&out[i], &bits, 4);
        }
        return 0;
    case CKPT_F64:
        for (int64_t i = 0; i < n; i++) {
            double d;
            memcpy(&d, p + 8 * i, 8);
            out[i] = (float)d;
        }
        return 0;
    default:
        return rc_fail(err, "tensor '%s' has dtype %s, which does not convert to float32", t->name,
                       ckpt_dtype_name(t->dtype));
    }
}

/* ---- writing ---- */

static int compare_str_ptrs(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int check_tensors(const char *path, const ckpt_tensor *tensors, int n, rc_error *err)
{
    if (n < 0 || (n > 0 && !tensors))
        return rc_fail(err, "%s: invalid tensor list", path);
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *t = &tensors[i];
        if (!t->name || !t->name[0] || strlen(t->name) > 4096)
            return rc_fail(err, "%s: tensor %d has no name or a name over 4096 bytes", path, i);
        if (!valid_dtype(t->dtype) || t->ndim < 0 || t->ndim > CKPT_MAX_DIMS)
            return rc_fail(err, "%s: tensor '%s' has an invalid dtype or number of dimensions", path, t->name);
        int64_t numel = 1, bytes;
        for (int d = 0; d < t->ndim; d++)
            if (t->shape[d] < 0 || __builtin_mul_overflow(numel, t->shape[d], &numel))
                return rc_fail(err, "%s: tensor '%s' has an invalid shape", path, t->name);
        if (__builtin_mul_overflow(numel, (int64_t)ckpt_dtype_size(t->dtype), &bytes))
            return rc_fail(err, "%s: tensor '%s' has an invalid shape", path, t->name);
        if (numel != t->numel)
            return rc_fail(err, "%s: tensor '%s' has numel %lld but its shape holds %lld", path, t->name,
                           (long long)t->numel, (long long)numel);
        if (numel > 0 && !t->data)
            return rc_fail(err, "%s: tensor '%s' has no data", path, t->name);
    }
    const char **names = malloc(((size_t)n + 1) * sizeof *names);
    if (!names)
        return rc_fail(err, "%s: out of memory", path);
    for (int i = 0; i < n; i++)
        names[i] = tensors[i].name;
    qsort(names, (size_t)n, sizeof *names, compare_str_ptrs);
    int rc = 0;
    for (int i = 1; i < n && rc == 0; i++)
        if (strcmp(names[i - 1], names[i]) == 0)
            rc = rc_fail(err, "%s: tensor name '%s' given twice", path, names[i]);
    free(names);
    return rc;
}

/* A file written under a temporary name next to its destination and renamed
 * over it only once complete, so readers never see half a checkpoint. */
typedef struct atomic_file {
    char *tmp;      /* the temporary name */
    FILE *fp;
} atomic_file;

static int atomic_begin(atomic_file *a, const char *path, rc_error *err)
{
    a->fp = NULL;
    if (asprintf(&a->tmp, "%s.tmp.XXXXXX", path) < 0)
        return rc_fail(err, "%s: out of memory", path);
    int fd = mkstemp(a->tmp);
    if (fd < 0) {
        rc_fail(err, "%s: cannot create a temporary file next to it: %s", path, strerror(errno));
        free(a->tmp);
        return -1;
    }
    (void)fchmod(fd, 0644); /* mkstemp's 0600 would surprise whoever shares the model */
    a->fp = fdopen(fd, "wb");
    if (!a->fp) {
        rc_fail(err, "%s: cannot open for writing: %s", path, strerror(errno));
        close(fd);
        unlink(a->tmp);
        free(a->tmp);
        return -1;
    }
    return 0;
}

/* Closes the file and renames it over `path` if ok, else removes it. */
static int atomic_end(atomic_file *a, int ok, const char *path, rc_error *err)
{
    if (ok && (fflush(a->fp) != 0 || fsync(fileno(a->fp)) != 0)) {
        rc_fail(err, "%s: write failed: %s", path, strerror(errno));
        ok = 0;
    }
    if (fclose(a->fp) != 0 && ok) {
        rc_fail(err, "%s: write failed: %s", path, strerror(errno));
        ok = 0;
    }
    if (ok && rename(a->tmp, path) != 0) {
        rc_fail(err, "%s: cannot rename the temporary file into place: %s", path, strerror(errno));
        ok = 0;
    }
    if (!ok)
        unlink(a->tmp);
    free(a->tmp);
    return ok ? 0 : -1;
}

/* The pickle writer with a small memo of the globals and strings that
 * repeat for every tensor, as Python's pickler memoizes them. */
typedef struct torch_pickler {
    pk_writer pk;
    struct {
        char key[96];       /* "module\nname" or "\nstring" */
        uint32_t index;
    } memo[16];
    int n_memo;
} torch_pickler;

/* GLOBAL module.name, or the string `name` when module is NULL: written the
 * first time, fetched from the memo afterwards. */
static void write_memoized(torch_pickler *w, const char *module, const char *name)
{
    char key[96];
    snprintf(key, sizeof key, "%s\n%s", module ? module : "", name);
    for (int i = 0; i < w->n_memo; i++)
        if (strcmp(w->memo[i].key, key) == 0) {
            pk_write_get(&w->pk, w->memo[i].index);
            return;
        }
    if (module)
        pk_write_global(&w->pk, module, name);
    else
        pk_write_str(&w->pk, name);
    uint32_t index = pk_write_memoize(&w->pk);
    if (w->n_memo < (int)(sizeof w->memo / sizeof w->memo[0])) {
        snprintf(w->memo[w->n_memo].key, sizeof w->memo[0].key, "%s", key);
        w->memo[w->n_memo++].index = index;
    }
}

static void write_int_tuple(pk_writer *pk, const int64_t *v, int n)
{
    if (n == 0) {
        pk_write_op(pk, PK_OP_EMPTY_TUPLE);
        return;
    }
    if (n > 3)
        pk_write_op(pk, PK_OP_MARK);
    for (int i = 0; i < n; i++)
        pk_write_int(pk, v[i]);
    pk_write_op(pk, n > 3 ? PK_OP_TUPLE : PK_OP_TUPLE1 + n - 1);
    pk_write_memoize(pk);
}

/* The pickle torch.save writes for an OrderedDict of tensors: tensor i is
 * _rebuild_tensor_v2(storage "i", 0, shape, contiguous strides, False,
 * OrderedDict()). */
static void write_state_dict_pickle(torch_pickler *w, const ckpt_tensor *tensors, int n)
{
    pk_writer *pk = &w->pk;
    pk_write_proto(pk, 2);
    write_memoized(w, "collections", "OrderedDict");
    pk_write_op(pk, PK_OP_EMPTY_TUPLE);
    pk_write_op(pk, PK_OP_REDUCE);
    pk_write_memoize(pk);
    pk_write_op(pk, PK_OP_MARK);
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *t = &tensors[i];
        char key[32];
        int64_t stride[CKPT_MAX_DIMS], step = 1;
        for (int d = t->ndim - 1; d >= 0; d--) {
            stride[d] = step;
            step *= t->shape[d];
        }
        pk_write_str(pk, t->name);
        pk_write_memoize(pk);
        write_memoized(w, "torch._utils", "_rebuild_tensor_v2");
        pk_write_op(pk, PK_OP_MARK);
        pk_write_op(pk, PK_OP_MARK);
        write_memoized(w, NULL, "storage");
        write_memoized(w, "torch", dtypes[t->dtype].storage);
        snprintf(key, sizeof key, "%d", i);
        pk_write_str(pk, key);
        pk_write_memoize(pk);
        write_memoized(w, NULL, "cpu");
        pk_write_int(pk, t->numel);
        pk_write_op(pk, PK_OP_TUPLE);
        pk_write_memoize(pk);
        pk_write_op(pk, PK_OP_BINPERSID);
        pk_write_int(pk, 0);
        write_int_tuple(pk, t->shape, t->ndim);
        write_int_tuple(pk, stride, t->ndim);
        pk_write_op(pk, PK_OP_NEWFALSE);
        write_memoized(w, "collections", "OrderedDict");
        pk_write_op(pk, PK_OP_EMPTY_TUPLE);
        pk_write_op(pk, PK_OP_REDUCE);
        pk_write_memoize(pk);
        pk_write_op(pk, PK_OP_TUPLE);
        pk_write_memoize(pk);
        pk_write_op(pk, PK_OP_REDUCE);
        pk_write_memoize(pk);
    }
    pk_write_op(pk, PK_OP_SETITEMS);
    pk_write_op(pk, PK_OP_STOP);
}

static int write_torch_archive(FILE *fp, const char *path, const ckpt_tensor *tensors, int n,
                               const char *archive, unsigned flags, rc_error *err)
{
    torch_pickler w = {0};
    zip_writer zw;
    char name[1100];
    int rc = -1;
    pk_writer_init(&w.pk);
    zip_writer_init(&zw, fp, path, (flags & CKPT_WRITE_ZIP64) != 0);
    write_state_dict_pickle(&w, tensors, n);
    if (w.pk.failed) {
        rc_fail(err, "%s: out of memory writing the pickle", path);
        goto done;
    }
    snprintf(name, sizeof name, "%s/data.pkl", archive);
    if (zip_writer_add(&zw, name, w.pk.buf, w.pk.len, err) < 0)
        goto done;
    for (int i = 0; i < n; i++) {
        snprintf(name, sizeof name, "%s/data/%d", archive, i);
        if (zip_writer_add(&zw, name, tensors[i].data, tensor_bytes(&tensors[i]), err) < 0)
            goto done;
    }
    snprintf(name, sizeof name, "%s/version", archive);
    if (zip_writer_add(&zw, name, "3\n", 2, err) < 0 || zip_writer_finish(&zw, err) < 0)
        goto done;
    rc = 0;
done:
    zip_writer_free(&zw);
    pk_writer_free(&w.pk);
    return rc;
}

int ckpt_write_torch_flags(const char *path, const ckpt_tensor *tensors, int n, const char *archive,
                           unsigned flags, rc_error *err)
{
    if (!archive)
        archive = "archive";
    if (!archive[0] || strlen(archive) > 1000 || strchr(archive, '/') || strchr(archive, '\\'))
        return rc_fail(err, "%s: invalid archive folder name '%.100s'", path, archive);
    if (check_tensors(path, tensors, n, err) < 0)
        return -1;
    atomic_file a;
    if (atomic_begin(&a, path, err) < 0)
        return -1;
    int ok = write_torch_archive(a.fp, path, tensors, n, archive, flags, err) == 0;
    return atomic_end(&a, ok, path, err);
}

int ckpt_write_torch(const char *path, const ckpt_tensor *tensors, int n, const char *archive, rc_error *err)
{
    return ckpt_write_torch_flags(path, tensors, n, archive, 0, err);
}

int ckpt_write_safetensors(const char *path, const ckpt_tensor *tensors, int n, rc_error *err)
{
    if (check_tensors(path, tensors, n, err) < 0)
        return -1;
    atomic_file a;
    if (atomic_begin(&a, path, err) < 0)
        return -1;
    int ok = st_write(a.fp, path, tensors, n, err) == 0;
    return atomic_end(&a, ok, path, err);
}
