/* manifest.c: reading CSV (ROCOv2), JSON Lines, list and folder manifests. */
#include "io/manifest.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#include "io/csv.h"

/* In order of preference when one ID has several files (a.jpg and a.png). */
static const char *const image_extensions[] = {".jpg", ".jpeg", ".png", ".tif", ".tiff", ".webp", ".gif"};
#define N_IMAGE_EXTENSIONS (int)(sizeof image_extensions / sizeof image_extensions[0])

/* ---- arena: every string of a manifest, freed at once ------------------- */

/* Blocks grow from 4 KiB to 1 MiB: small manifests stay small. */
#define ARENA_FIRST_BLOCK ((size_t)1 << 12)
#define ARENA_BLOCK_SIZE ((size_t)1 << 20)

typedef struct arena_block {
    struct arena_block *next; // previously filled block
    size_t used;              // bytes handed out from data
    size_t cap;               // bytes in data
    _Alignas(max_align_t) char data[];
} arena_block;

struct manifest_arena {
    arena_block *head;  // block being filled
    size_t next_block;  // size of the next regular block
};

/* n bytes aligned to align (a power of two no larger than max_align_t's). */
static void *arena_alloc(struct manifest_arena *a, size_t n, size_t align)
{
    arena_block *b = a->head;
    size_t start = b ? (b->used + align - 1) & ~(align - 1) : 0;
    if (!b || start > b->cap || b->cap - start < n) {
        /* A large allocation gets a block of its own, linked behind the
         * current block so that the current block's free space stays usable. */
        int own_block = n > ARENA_BLOCK_SIZE / 4;
        size_t cap = a->next_block > n ? a->next_block : n;
        b = malloc(sizeof *b + cap);
        if (!b)
            return NULL;
        b->cap = cap;
        b->used = 0;
        start = 0;
        if (own_block && a->head) {
            b->next = a->head->next;
            a->head->next = b;
        } else {
            b->next = a->head;
            a->head = b;
            if (a->next_block < ARENA_BLOCK_SIZE)
                a->next_block *= 2;
        }
    }
    void *p = b->data + start;
    b->used = start + n;
    return p;
}

static char *arena_strndup(struct manifest_arena *a, const char *s, size_t len)
{
    char *p = arena_alloc(a, len + 1, 1);
    if (p) {
        memcpy(p, s, len);
        p[len] = '\0';
    }
    return p;
}

static void arena_free(struct manifest_arena *a)
{
    if (!a)
        return;
    for (arena_block *b = a->head; b;) {
        arena_block *next = b->next;
        free(b);
        b = next;
    }
    free(a);
}

/* ---- UTF-8 ------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (1..4), or minus the number
 * of bytes that form its longest ill-formed prefix (replaced by one U+FFFD,
 * as Unicode recommends). NUL counts as ill-formed: texts become C strings. */
static int utf8_step(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    if (c >= 0x01 && c < 0x80)
        return 1;
    int need;
    unsigned lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF)
        need = 1;
    else if (c == 0xE0)
        need = 2, lo = 0xA0; /* no overlong forms */
    else if ((c >= 0xE1 && c <= 0xEC) || c == 0xEE || c == 0xEF)
        need = 2;
    else if (c == 0xED)
        need = 2, hi = 0x9F; /* no surrogates */
    else if (c == 0xF0)
        need = 3, lo = 0x90;
    else if (c >= 0xF1 && c <= 0xF3)
        need = 3;
    else if (c == 0xF4)
        need = 3, hi = 0x8F; /* nothing above U+10FFFF */
    else
        return -1;
    for (int i = 1; i <= need; i++) {
        if ((size_t)i >= n || s[i] < lo || s[i] > hi)
            return -i;
        lo = 0x80;
        hi = 0xBF;
    }
    return need + 1;
}

/* Copies s[0..len) into the arena with each ill-formed sequence replaced by
 * U+FFFD; *bad_offset is the offset of the first one, or -1. */
static char *arena_utf8_copy(struct manifest_arena *a, const char *s, size_t len, long *bad_offset)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t out_len = 0;
    *bad_offset = -1;
    for (size_t i = 0; i < len;) {
        int step = utf8_step(u + i, len - i);
        if (step > 0) {
            out_len += (size_t)step;
            i += (size_t)step;
        } else {
            if (*bad_offset < 0)
                *bad_offset = (long)i;
            out_len += 3;
            i += (size_t)-step;
        }
    }
    if (*bad_offset < 0)
        return arena_strndup(a, s, len);
    char *out = arena_alloc(a, out_len + 1, 1);
    if (!out)
        return NULL;
    size_t o = 0;
    for (size_t i = 0; i < len;) {
        int step = utf8_step(u + i, len - i);
        if (step > 0) {
            memcpy(out + o, s + i, (size_t)step);
            o += (size_t)step;
            i += (size_t)step;
        } else {
            memcpy(out + o, "\xEF\xBF\xBD", 3);
            o += 3;
            i += (size_t)-step;
        }
    }
    out[o] = '\0';
    return out;
}

static int utf8_valid(const char *s, size_t len)
{
    for (size_t i = 0; i < len;) {
        int step = utf8_step((const unsigned char *)s + i, len - i);
        if (step < 0)
            return 0;
        i += (size_t)step;
    }
    return 1;
}

/* ---- names and paths ---------------------------------------------------- */

/* Index of the image extension name ends with (case-insensitive), or -1. */
static int image_extension_index(const char *name, size_t len)
{
    for (int k = 0; k < N_IMAGE_EXTENSIONS; k++) {
        size_t ext_len = strlen(image_extensions[k]);
        if (len > ext_len && strncasecmp(name + len - ext_len, image_extensions[k], ext_len) == 0)
            return k;
    }
    return -1;
}

int manifest_is_image_name(const char *name)
{
    return image_extension_index(name, strlen(name)) >= 0;
}

/* A growable byte buffer for building paths. */
typedef struct path_buf {
    char *s;    // NUL-terminated
    size_t len; // bytes before the NUL
    size_t cap;
} path_buf;

static int path_set(path_buf *p, size_t keep, const char *part, size_t part_len)
{
    if (keep + part_len + 1 > p->cap) {
        size_t cap = p->cap ? p->cap : 256;
        while (cap < keep + part_len + 1)
            cap *= 2;
        char *grown = realloc(p->s, cap);
        if (!grown)
            return -1;
        p->s = grown;
        p->cap = cap;
    }
    memcpy(p->s + keep, part, part_len);
    p->len = keep + part_len;
    p->s[p->len] = '\0';
    return 0;
}

/* p = dir "/" name; a NULL or "." dir, or an absolute name, leaves name as
 * it is. */
static int path_join(path_buf *p, const char *dir, const char *name, size_t name_len)
{
    if (!dir || !*dir || strcmp(dir, ".") == 0 || (name_len > 0 && name[0] == '/'))
        return path_set(p, 0, name, name_len);
    size_t dir_len = strlen(dir);
    while (dir_len > 1 && dir[dir_len - 1] == '/')
        dir_len--;
    if (path_set(p, 0, dir, dir_len) < 0)
        return -1;
    if (!(dir_len == 1 && dir[0] == '/') && path_set(p, p->len, "/", 1) < 0)
        return -1;
    return path_set(p, p->len, name, name_len);
}

/* ---- the image folder of a CSV manifest --------------------------------- */

typedef struct folder_file {
    const char *name; // file name in the folder (in the reader's arena)
    size_t stem_len;  // bytes before the image extension
    int ext_rank;     // index in image_extensions
} folder_file;

typedef struct folder_map {
    folder_file *files; // (n_files) sorted by stem, then extension rank, then name
    size_t n_files;
} folder_map;

static int folder_file_cmp(const void *pa, const void *pb)
{
    const folder_file *a = pa, *b = pb;
    size_t n = a->stem_len < b->stem_len ? a->stem_len : b->stem_len;
    int c = memcmp(a->name, b->name, n);
    if (c)
        return c;
    if (a->stem_len != b->stem_len)
        return a->stem_len < b->stem_len ? -1 : 1;
    if (a->ext_rank != b->ext_rank)
        return a->ext_rank - b->ext_rank;
    return strcmp(a->name, b->name);
}

/* Lists dir once (not recursively) into a map from stem to file name. */
static int folder_map_build(folder_map *map, const char *dir, struct manifest_arena *arena, rc_error *err)
{
    DIR *d = opendir(dir);
    if (!d)
        return rc_fail(err, "cannot list image folder %s: %s", dir, strerror(errno));
    size_t cap = 0;
    struct dirent *de;
    errno = 0;
    while ((de = readdir(d)) != NULL) {
        size_t len = strlen(de->d_name);
        int rank = image_extension_index(de->d_name, len);
        if (rank < 0 || de->d_name[0] == '.' || de->d_type == DT_DIR)
            continue;
        if (map->n_files == cap) {
            cap = cap ? 2 * cap : 1024;
            folder_file *grown = realloc(map->files, cap * sizeof *grown);
            if (!grown) {
                closedir(d);
                return rc_fail(err, "out of memory listing image folder %s", dir);
            }
            map->files = grown;
        }
        const char *name = arena_strndup(arena, de->d_name, len);
        if (!name) {
            closedir(d);
            return rc_fail(err, "out of memory listing image folder %s", dir);
        }
        size_t ext_len = strlen(image_extensions[rank]);
        map->files[map->n_files++] = (folder_file){name, len - ext_len, rank};
        errno = 0;
    }
    int read_errno = errno;
    closedir(d);
    if (read_errno)
        return rc_fail(err, "cannot list image folder %s: %s", dir, strerror(read_errno));
    if (map->n_files > 1)
        qsort(map->files, map->n_files, sizeof *map->files, folder_file_cmp);
    return 0;
}

/* First file whose stem is key[0..len) (the preferred extension), or NULL. */
static const folder_file *folder_map_find_stem(const folder_map *map, const char *key, size_t len)
{
    size_t lo = 0, hi = map->n_files;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        const folder_file *f = &map->files[mid];
        size_t n = f->stem_len < len ? f->stem_len : len;
        int c = memcmp(f->name, key, n);
        if (c == 0)
            c = f->stem_len < len ? -1 : f->stem_len > len ? 1 : 0;
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    if (lo < map->n_files && map->files[lo].stem_len == len && memcmp(map->files[lo].name, key, len) == 0)
        return &map->files[lo];
    return NULL;
}

/* The file for an ID: ID plus an image extension, or the ID itself when it
 * already names a file with an image extension. */
static const char *folder_map_lookup(const folder_map *map, const char *id, size_t len)
{
    const folder_file *f = folder_map_find_stem(map, id, len);
    if (f)
        return f->name;
    int rank = image_extension_index(id, len);
    if (rank < 0)
        return NULL;
    size_t stem_len = len - strlen(image_extensions[rank]);
    for (f = folder_map_find_stem(map, id, stem_len); f && f < map->files + map->n_files; f++) {
        if (f->stem_len != stem_len || memcmp(f->name, id, stem_len) != 0)
            break;
        if (strlen(f->name) == len && memcmp(f->name, id, len) == 0)
            return f->name;
    }
    return NULL;
}

/* ---- the reader --------------------------------------------------------- */

typedef struct reader {
    manifest *m;
    const manifest_options *opts;
    const char *dir;       // folder relative paths (CSV: image names) start from, or NULL
    folder_map map;        // CSV image folder listing
    int have_map;
    uint32_t *slots;       // (slot_mask + 1) id hash set: entry index + 1, 0 when empty
    size_t slot_mask;
    size_t entries_cap;
    path_buf path;         // scratch for joined paths
    char first_problem[1024]; // message of the first problem, for strict mode
    rc_error *err;
} reader;

static uint64_t hash_bytes(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull; /* FNV-1a */
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

/* Slot holding id, or the empty slot where it would go. */
static size_t id_slot(const reader *r, const char *id)
{
    size_t i = (size_t)hash_bytes(id, strlen(id)) & r->slot_mask;
    while (r->slots[i] && strcmp(r->m->entries[r->slots[i] - 1].id, id) != 0)
        i = (i + 1) & r->slot_mask;
    return i;
}

/* Keeps the hash set at most half full. */
static int id_set_reserve(reader *r, size_t n_entries)
{
    if (r->slots && 2 * (n_entries + 1) <= r->slot_mask + 1)
        return 0;
    size_t n_slots = r->slots ? 2 * (r->slot_mask + 1) : 128;
    while (2 * (n_entries + 1) > n_slots)
        n_slots *= 2;
    uint32_t *old = r->slots;
    size_t old_n = old ? r->slot_mask + 1 : 0;
    r->slots = calloc(n_slots, sizeof *r->slots);
    if (!r->slots) {
        r->slots = old;
        return -1;
    }
    r->slot_mask = n_slots - 1;
    for (size_t i = 0; i < old_n; i++)
        if (old[i])
            r->slots[id_slot(r, r->m->entries[old[i] - 1].id)] = old[i];
    free(old);
    return 0;
}

static int out_of_memory(reader *r)
{
    return rc_fail(r->err, "out of memory reading manifest %s (%zu entries so far)", r->m->source,
                   r->m->n_entries);
}

/* Reports one problem: counts it, then calls the callback or collects it.
 * Returns -1 only when out of memory. */
__attribute__((format(printf, 4, 5))) static int report(reader *r, manifest_problem_kind kind, long line,
                                                        const char *fmt, ...)
{
    char text[768];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(text, sizeof text, fmt, ap);
    va_end(ap);
    char message[1024];
    if (line > 0)
        snprintf(message, sizeof message, "%s:%ld: %s", r->m->source, line, text);
    else
        snprintf(message, sizeof message, "%s: %s", r->m->source, text);
    if (manifest_problem_total(r->m) == 0)
        snprintf(r->first_problem, sizeof r->first_problem, "%s", message);
    r->m->n_problems[kind]++;
    manifest_problem problem = {kind, r->m->source, line, message};
    if (r->opts->on_problem) {
        r->opts->on_problem(r->opts->user, &problem);
        return 0;
    }
    if (r->m->n_collected == r->m->collected_cap) {
        size_t cap = r->m->collected_cap ? 2 * r->m->collected_cap : 16;
        manifest_problem *grown = realloc(r->m->problems, cap * sizeof *grown);
        if (!grown)
            return out_of_memory(r);
        r->m->problems = grown;
        r->m->collected_cap = cap;
    }
    problem.message = arena_strndup(r->m->arena, message, strlen(message));
    if (!problem.message)
        return out_of_memory(r);
    r->m->problems[r->m->n_collected++] = problem;
    return 0;
}

/* A row as a parser found it; lengths because fields may hold NUL bytes. */
typedef struct row {
    long line;
    const char *id;       // NULL: the id is the path as written
    size_t id_len;
    const char *path;     // as written (LIST/JSONL) or the ID (CSV)
    size_t path_len;
    const char **refs;    // (n_refs) captions
    size_t *ref_lens;
    int n_refs;
} row;

static const char *clip(const char *s, size_t len, char *buf, size_t cap)
{
    size_t n = len < cap - 1 ? len : cap - 1;
    memcpy(buf, s, n);
    buf[n] = '\0';
    for (size_t i = 0; i < n; i++)
        if (buf[i] == '\n' || buf[i] == '\r' || buf[i] == '\0')
            buf[i] = ' ';
    return buf;
}

/* Resolves a row's image path into r->path; *exists is 1 or 0 when known
 * without a stat, -1 when a stat must tell. */
static int resolve_path(reader *r, const row *rw, int *exists)
{
    *exists = r->opts->check_files ? -1 : 1;
    if (r->m->kind != MANIFEST_CSV)
        return path_join(&r->path, r->dir, rw->path, rw->path_len);
    if (!r->have_map)
        return path_join(&r->path, r->dir, rw->path, rw->path_len);
    const char *name = folder_map_lookup(&r->map, rw->path, rw->path_len);
    if (name) {
        *exists = 1;
        return path_join(&r->path, r->dir, name, strlen(name));
    }
    *exists = r->opts->check_files ? 0 : 1;
    return path_join(&r->path, r->dir, rw->path, rw->path_len);
}

/* Turns a well-formed row into an entry, reporting bad UTF-8, duplicates and
 * missing files. */
static int add_row(reader *r, const row *rw)
{
    manifest *m = r->m;
    char shown[160];
    if (memchr(rw->path, '\0', rw->path_len) || (rw->id && memchr(rw->id, '\0', rw->id_len)))
        return report(r, MANIFEST_MALFORMED, rw->line, "NUL byte in %s; row skipped",
                      m->kind == MANIFEST_CSV ? "ID" : rw->id && memchr(rw->id, '\0', rw->id_len) ? "id" : "path");

    const char *raw_id = rw->id ? rw->id : rw->path;
    size_t raw_id_len = rw->id ? rw->id_len : rw->path_len;
    long bad = -1;
    char *id = arena_utf8_copy(m->arena, raw_id, raw_id_len, &bad);
    if (!id)
        return out_of_memory(r);
    int utf8_reported = 0;
    if (bad >= 0) {
        if (report(r, MANIFEST_BAD_UTF8, rw->line, "invalid UTF-8 in id at byte %ld; replaced with U+FFFD", bad) < 0)
            return -1;
        utf8_reported = 1;
    }

    if (id_set_reserve(r, m->n_entries) < 0)
        return out_of_memory(r);
    size_t slot = id_slot(r, id);
    if (r->slots[slot]) {
        const manifest_entry *first = &m->entries[r->slots[slot] - 1];
        if (first->line > 0)
            return report(r, MANIFEST_DUPLICATE, rw->line, "duplicate id '%s' (first on line %ld); row skipped",
                          clip(id, strlen(id), shown, sizeof shown), first->line);
        return report(r, MANIFEST_DUPLICATE, rw->line, "duplicate id '%s'; skipped",
                      clip(id, strlen(id), shown, sizeof shown));
    }

    if (!utf8_reported && rw->id && !utf8_valid(rw->path, rw->path_len)) {
        /* Kept byte for byte: it is what opens the file. */
        if (report(r, MANIFEST_BAD_UTF8, rw->line, "invalid UTF-8 in path (kept as is)") < 0)
            return -1;
        utf8_reported = 1;
    }

    manifest_entry e = {.id = id, .line = rw->line, .size = -1, .mtime_ns = -1};
    int exists;
    if (resolve_path(r, rw, &exists) < 0)
        return out_of_memory(r);
    /* A path that reads like the id shares its copy. */
    e.path = strcmp(id, r->path.s) == 0 ? id : arena_strndup(m->arena, r->path.s, r->path.len);
    if (!e.path)
        return out_of_memory(r);

    const char **refs = NULL;
    if (rw->n_refs > 0 && !(refs = arena_alloc(m->arena, (size_t)rw->n_refs * sizeof *refs, _Alignof(const char *))))
        return out_of_memory(r);
    for (int k = 0; k < rw->n_refs; k++) {
        if (rw->ref_lens[k] == 0)
            continue; /* an empty caption is no caption */
        char *ref = arena_utf8_copy(m->arena, rw->refs[k], rw->ref_lens[k], &bad);
        if (!ref)
            return out_of_memory(r);
        if (bad >= 0 && !utf8_reported) {
            if (report(r, MANIFEST_BAD_UTF8, rw->line,
                       "invalid UTF-8 (or a NUL byte) in caption %d at byte %ld; replaced with U+FFFD", k + 1,
                       bad) < 0)
                return -1;
            utf8_reported = 1;
        }
        refs[e.n_refs++] = ref;
    }
    e.refs = refs;

    if (exists < 0) {
        struct stat st;
        if (stat(e.path, &st) == 0 && S_ISREG(st.st_mode)) {
            e.size = (int64_t)st.st_size;
            e.mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
            exists = 1;
        } else {
            exists = 0;
        }
    }
    if (!exists) {
        e.missing = 1;
        int status = m->kind == MANIFEST_CSV
                         ? report(r, MANIFEST_MISSING, rw->line,
                                  "no image for ID '%s' in %s (looked for .jpg .jpeg .png .tif .tiff .webp .gif)",
                                  clip(id, strlen(id), shown, sizeof shown), r->dir ? r->dir : ".")
                         : report(r, MANIFEST_MISSING, rw->line, "image file %s not found",
                                  clip(e.path, strlen(e.path), shown, sizeof shown));
        if (status < 0)
            return -1;
    }

    if (m->n_entries == r->entries_cap) {
        size_t cap = r->entries_cap ? 2 * r->entries_cap : 64;
        manifest_entry *grown = realloc(m->entries, cap * sizeof *grown);
        if (!grown)
            return out_of_memory(r);
        m->entries = grown;
        r->entries_cap = cap;
    }
    if (m->n_entries >= UINT32_MAX - 1)
        return rc_fail(r->err, "manifest %s has more than %u entries", m->source, UINT32_MAX - 2);
    m->entries[m->n_entries++] = e;
    r->slots[slot] = (uint32_t)m->n_entries;
    return 0;
}

/* ---- line-based kinds --------------------------------------------------- */

/* Calls fn for each line of data (without its LF or CRLF), numbering lines
 * from 1; a UTF-8 byte-order mark before the first line is skipped. */
static int for_each_line(reader *r, const char *data, size_t len,
                         int (*fn)(reader *r, const char *line, size_t line_len, long line_no))
{
    size_t pos = len >= 3 && memcmp(data, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    for (long line_no = 1; pos < len; line_no++) {
        const char *nl = memchr(data + pos, '\n', len - pos);
        size_t end = nl ? (size_t)(nl - data) : len;
        size_t line_len = end - pos;
        if (line_len > 0 && data[pos + line_len - 1] == '\r')
            line_len--;
        if (fn(r, data + pos, line_len, line_no) < 0)
            return -1;
        pos = end + 1;
    }
    return 0;
}

static int is_blank(const char *s, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (s[i] != ' ' && s[i] != '\t' && s[i] != '\r' && s[i] != '\f' && s[i] != '\v')
            return 0;
    return 1;
}

static int list_line(reader *r, const char *line, size_t len, long line_no)
{
    if (len == 0)
        return 0;
    if (is_blank(line, len))
        return report(r, MANIFEST_MALFORMED, line_no, "empty path (only white space); line skipped");
    row rw = {.line = line_no, .path = line, .path_len = len};
    return add_row(r, &rw);
}

static int jsonl_line(reader *r, const char *line, size_t len, long line_no)
{
    if (is_blank(line, len))
        return 0;
    const char *end = NULL;
    cJSON *obj = cJSON_ParseWithLengthOpts(line, len, &end, 0);
    if (!obj) {
        long column = end && end >= line && end <= line + len ? (long)(end - line) + 1 : 1;
        return report(r, MANIFEST_MALFORMED, line_no, "bad JSON near column %ld; line skipped", column);
    }
    if (end && !is_blank(end, len - (size_t)(end - line))) {
        while (*end == ' ' || *end == '\t')
            end++;
        cJSON_Delete(obj);
        return report(r, MANIFEST_MALFORMED, line_no, "text after the JSON object at column %ld; line skipped",
                      (long)(end - line) + 1);
    }
    const char *problem = NULL;
    row rw = {.line = line_no};
    char id_number[32];
    const char *refs_small[8];
    size_t lens_small[8];
    const char **refs = refs_small;
    size_t *lens = lens_small;
    const cJSON *path = cJSON_GetObjectItemCaseSensitive(obj, "path");
    const cJSON *id = cJSON_GetObjectItemCaseSensitive(obj, "id");
    const cJSON *caption = cJSON_GetObjectItemCaseSensitive(obj, "caption");
    if (!cJSON_IsObject(obj))
        problem = "a JSON object is expected";
    else if (!path)
        problem = "no \"path\" key";
    else if (!cJSON_IsString(path))
        problem = "\"path\" must be a string";
    else if (path->valuestring[0] == '\0')
        problem = "empty path";
    else if (id && !cJSON_IsNull(id)) {
        if (cJSON_IsString(id) && id->valuestring[0] != '\0') {
            rw.id = id->valuestring;
        } else if (cJSON_IsNumber(id) && id->valuedouble == (double)(long long)id->valuedouble &&
                   id->valuedouble > -9007199254740992.0 && id->valuedouble < 9007199254740992.0) {
            snprintf(id_number, sizeof id_number, "%lld", (long long)id->valuedouble);
            rw.id = id_number;
        } else {
            problem = "\"id\" must be a non-empty string or an integer";
        }
        if (rw.id)
            rw.id_len = strlen(rw.id);
    }
    if (!problem && caption && !cJSON_IsNull(caption)) {
        if (cJSON_IsString(caption)) {
            refs[0] = caption->valuestring;
            lens[0] = strlen(caption->valuestring);
            rw.n_refs = 1;
        } else if (cJSON_IsArray(caption)) {
            int n = cJSON_GetArraySize(caption);
            if (n > (int)(sizeof refs_small / sizeof refs_small[0])) {
                refs = malloc((size_t)n * sizeof *refs);
                lens = malloc((size_t)n * sizeof *lens);
                if (!refs || !lens) {
                    free(refs);
                    free(lens);
                    cJSON_Delete(obj);
                    return out_of_memory(r);
                }
            }
            const cJSON *item;
            cJSON_ArrayForEach(item, caption) {
                if (!cJSON_IsString(item)) {
                    problem = "\"caption\" must be a string or a list of strings";
                    break;
                }
                refs[rw.n_refs] = item->valuestring;
                lens[rw.n_refs] = strlen(item->valuestring);
                rw.n_refs++;
            }
        } else {
            problem = "\"caption\" must be a string or a list of strings";
        }
    }
    int rc;
    if (problem) {
        rc = report(r, MANIFEST_MALFORMED, line_no, "%s; line skipped", problem);
    } else {
        rw.path = path->valuestring;
        rw.path_len = strlen(path->valuestring);
        rw.refs = refs;
        rw.ref_lens = lens;
        rc = add_row(r, &rw);
    }
    if (refs != refs_small) {
        free(refs);
        free(lens);
    }
    cJSON_Delete(obj);
    return rc;
}

/* ---- CSV ---------------------------------------------------------------- */

static int header_is(const char *field, size_t len, const char *name)
{
    while (len > 0 && (*field == ' ' || *field == '\t'))
        field++, len--;
    while (len > 0 && (field[len - 1] == ' ' || field[len - 1] == '\t'))
        len--;
    return len == strlen(name) && strncasecmp(field, name, len) == 0;
}

static int parse_csv(reader *r, const char *data, size_t len)
{
    csv_reader cr;
    csv_init(&cr, data, len, r->m->source);
    rc_error row_err;
    int rc = csv_next(&cr, &row_err);
    if (rc <= 0) {
        csv_free(&cr);
        if (rc == 0)
            return rc_fail(r->err, "CSV manifest %s is empty: a header line ID,Caption is expected", r->m->source);
        return rc_fail(r->err, "%s (in the header line)", row_err.msg);
    }
    int n_columns = cr.n_fields, id_col = -1, caption_col = -1;
    for (int i = 0; i < n_columns; i++) {
        if (id_col < 0 && header_is(cr.fields[i], cr.lens[i], "id"))
            id_col = i;
        else if (caption_col < 0 && header_is(cr.fields[i], cr.lens[i], "caption"))
            caption_col = i;
    }
    if (id_col < 0) {
        char shown[160];
        rc_fail(r->err, "%s:%ld: the header must name an ID column (ROCOv2: ID,Caption); found '%s'", r->m->source,
                cr.record_line, clip(cr.fields[0], cr.lens[0], shown, sizeof shown));
        csv_free(&cr);
        return -1;
    }
    int status = 0;
    while (status == 0 && (rc = csv_next(&cr, &row_err)) != 0) {
        if (rc < 0) {
            if (cr.out_of_memory) {
                csv_free(&cr);
                return rc_fail(r->err, "%s", row_err.msg);
            }
            status = report(r, MANIFEST_MALFORMED, cr.error_line, "%s; row skipped", cr.error_reason);
            continue;
        }
        if (cr.n_fields != n_columns) {
            status = report(r, MANIFEST_MALFORMED, cr.record_line, "expected %d field%s as in the header, found %d; row skipped",
                            n_columns, n_columns == 1 ? "" : "s", cr.n_fields);
            continue;
        }
        if (cr.lens[id_col] == 0) {
            status = report(r, MANIFEST_MALFORMED, cr.record_line, "empty ID; row skipped");
            continue;
        }
        const char *ref = caption_col >= 0 ? cr.fields[caption_col] : NULL;
        size_t ref_len = caption_col >= 0 ? cr.lens[caption_col] : 0;
        row rw = {.line = cr.record_line,
                  .id = cr.fields[id_col],
                  .id_len = cr.lens[id_col],
                  .path = cr.fields[id_col],
                  .path_len = cr.lens[id_col],
                  .refs = &ref,
                  .ref_lens = &ref_len,
                  .n_refs = caption_col >= 0 ? 1 : 0};
        status = add_row(r, &rw);
    }
    csv_free(&cr);
    return status;
}

/* ---- FOLDER ------------------------------------------------------------- */

typedef struct walk_list {
    const char **rel; // (n) paths relative to the root, in the arena
    size_t n;
    size_t cap;
} walk_list;

/* Lists the folder root/rel (rel is p->s[root_len+1 ..]) recursively. */
static int walk_folder(reader *r, path_buf *p, size_t root_len, walk_list *out, int depth)
{
    DIR *d = opendir(p->s);
    if (!d) {
        if (depth == 0)
            return rc_fail(r->err, "cannot read folder %s: %s", p->s, strerror(errno));
        return report(r, MANIFEST_UNREADABLE, 0, "cannot read folder %s: %s; skipped", p->s, strerror(errno));
    }
    size_t dir_len = p->len;
    int status = 0;
    struct dirent *de;
    while (status == 0 && (de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.')
            continue;
        size_t name_len = strlen(de->d_name);
        if (path_set(p, dir_len, "/", 1) < 0 || path_set(p, dir_len + 1, de->d_name, name_len) < 0) {
            status = out_of_memory(r);
            break;
        }
        int is_dir = de->d_type == DT_DIR, is_file = de->d_type == DT_REG;
        if (de->d_type == DT_LNK || de->d_type == DT_UNKNOWN) {
            struct stat st;
            if (lstat(p->s, &st) == 0) {
                is_dir = S_ISDIR(st.st_mode); /* a link to a folder is not followed */
                is_file = S_ISREG(st.st_mode) || (S_ISLNK(st.st_mode) && stat(p->s, &st) == 0 && S_ISREG(st.st_mode));
            }
        }
        if (is_dir) {
            status = walk_folder(r, p, root_len, out, depth + 1);
        } else if (is_file && image_extension_index(de->d_name, name_len) >= 0) {
            if (out->n == out->cap) {
                size_t cap = out->cap ? 2 * out->cap : 1024;
                const char **grown = realloc(out->rel, cap * sizeof *grown);
                if (!grown) {
                    status = out_of_memory(r);
                    break;
                }
                out->rel = grown;
                out->cap = cap;
            }
            const char *rel = arena_strndup(r->m->arena, p->s + root_len + 1, p->len - root_len - 1);
            if (!rel) {
                status = out_of_memory(r);
                break;
            }
            out->rel[out->n++] = rel;
        }
    }
    closedir(d);
    p->len = dir_len;
    p->s[dir_len] = '\0';
    return status;
}

static int cmp_strings(const void *a, const void *b)
{
    return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int read_folder(reader *r, const char *root)
{
    path_buf p = {0};
    size_t root_len = strlen(root);
    while (root_len > 1 && root[root_len - 1] == '/')
        root_len--;
    walk_list files = {0};
    int status = path_set(&p, 0, root, root_len) < 0 ? out_of_memory(r) : walk_folder(r, &p, root_len, &files, 0);
    if (status == 0) {
        if (files.n > 1)
            qsort(files.rel, files.n, sizeof *files.rel, cmp_strings);
        r->dir = p.s;
        for (size_t i = 0; i < files.n && status == 0; i++) {
            row rw = {.path = files.rel[i], .path_len = strlen(files.rel[i])};
            status = add_row(r, &rw);
        }
        r->dir = NULL;
    }
    free(files.rel);
    free(p.s);
    return status;
}

/* ---- public ------------------------------------------------------------- */

void manifest_options_default(manifest_options *opts)
{
    memset(opts, 0, sizeof *opts);
    opts->kind = MANIFEST_AUTO;
    opts->check_files = 1;
}

const char *manifest_kind_name(manifest_kind kind)
{
    switch (kind) {
    case MANIFEST_AUTO: return "auto";
    case MANIFEST_CSV: return "csv";
    case MANIFEST_JSONL: return "jsonl";
    case MANIFEST_LIST: return "list";
    case MANIFEST_FOLDER: return "folder";
    }
    return "unknown";
}

int manifest_kind_parse(const char *name, manifest_kind *kind, rc_error *err)
{
    for (manifest_kind k = MANIFEST_AUTO; k <= MANIFEST_FOLDER; k++) {
        if (strcmp(name, manifest_kind_name(k)) == 0) {
            *kind = k;
            return 0;
        }
    }
    return rc_fail(err, "unknown manifest kind '%s' (expected auto, csv, jsonl, list or folder)", name);
}

const char *manifest_problem_kind_name(manifest_problem_kind kind)
{
    static const char *const names[MANIFEST_N_PROBLEM_KINDS] = {"malformed", "duplicate", "missing", "bad_utf8",
                                                                "unreadable"};
    return kind >= 0 && kind < MANIFEST_N_PROBLEM_KINDS ? names[kind] : "unknown";
}

size_t manifest_problem_total(const manifest *m)
{
    size_t total = 0;
    for (int k = 0; k < MANIFEST_N_PROBLEM_KINDS; k++)
        total += m->n_problems[k];
    return total;
}

void manifest_free(manifest *m)
{
    if (!m)
        return;
    free(m->entries);
    free(m->problems);
    free(m->source);
    arena_free(m->arena);
    free(m);
}

static int has_suffix_ci(const char *s, const char *suffix)
{
    size_t n = strlen(s), k = strlen(suffix);
    return n >= k && strcasecmp(s + n - k, suffix) == 0;
}

int manifest_detect(const char *path, manifest_kind *kind, rc_error *err)
{
    struct stat st;
    if (stat(path, &st) != 0)
        return rc_fail(err, "cannot read manifest %s: %s", path, strerror(errno));
    if (S_ISDIR(st.st_mode)) {
        *kind = MANIFEST_FOLDER;
        return 0;
    }
    if (has_suffix_ci(path, ".csv")) {
        *kind = MANIFEST_CSV;
        return 0;
    }
    if (has_suffix_ci(path, ".jsonl") || has_suffix_ci(path, ".ndjson") || has_suffix_ci(path, ".json")) {
        *kind = MANIFEST_JSONL;
        return 0;
    }
    FILE *f = fopen(path, "rb");
    if (!f)
        return rc_fail(err, "cannot read manifest %s: %s", path, strerror(errno));
    char head[4096];
    size_t n = fread(head, 1, sizeof head, f);
    fclose(f);
    size_t i = n >= 3 && memcmp(head, "\xEF\xBB\xBF", 3) == 0 ? 3 : 0;
    while (i < n && (head[i] == ' ' || head[i] == '\t' || head[i] == '\r' || head[i] == '\n'))
        i++;
    *kind = i < n && head[i] == '{' ? MANIFEST_JSONL : MANIFEST_LIST;
    return 0;
}

static manifest *manifest_new(manifest_kind kind, const char *source)
{
    manifest *m = calloc(1, sizeof *m);
    if (!m)
        return NULL;
    m->kind = kind;
    m->source = strdup(source ? source : "<manifest>");
    m->arena = calloc(1, sizeof *m->arena);
    if (!m->source || !m->arena) {
        manifest_free(m);
        return NULL;
    }
    m->arena->next_block = ARENA_FIRST_BLOCK;
    return m;
}

/* Parses in-memory text of a line-based or CSV kind into r->m. */
static int parse_text(reader *r, const char *data, size_t len)
{
    switch (r->m->kind) {
    case MANIFEST_CSV: return parse_csv(r, data, len);
    case MANIFEST_JSONL: return for_each_line(r, data, len, jsonl_line);
    case MANIFEST_LIST: return for_each_line(r, data, len, list_line);
    default: return rc_fail(r->err, "manifest %s: kind %s cannot be parsed from text", r->m->source,
                            manifest_kind_name(r->m->kind));
    }
}

/* Ends a read: the strict-mode verdict, then hands over or frees m. */
static int finish(reader *r, int status, manifest **out)
{
    size_t total = manifest_problem_total(r->m);
    if (status == 0 && r->opts->strict && total > 0)
        status = rc_fail(r->err, "%zu problem%s in manifest %s (strict mode); the first: %s", total,
                         total == 1 ? "" : "s", r->m->source, r->first_problem);
    free(r->slots);
    free(r->map.files);
    free(r->path.s);
    if (status < 0) {
        manifest_free(r->m);
        *out = NULL;
        return -1;
    }
    *out = r->m;
    return 0;
}

static int reader_start(reader *r, manifest_kind kind, const char *source, const manifest_options *opts,
                        const manifest_options *defaults, rc_error *err)
{
    memset(r, 0, sizeof *r);
    r->opts = opts ? opts : defaults;
    r->err = err;
    r->m = manifest_new(kind, source);
    if (!r->m)
        return rc_fail(err, "out of memory reading manifest %s", source ? source : "<manifest>");
    return 0;
}

/* Lists the CSV image folder when files are checked (or when it exists). */
static int reader_map_images(reader *r, const char *image_dir)
{
    r->dir = image_dir;
    struct stat st;
    if (!r->opts->check_files && (stat(image_dir, &st) != 0 || !S_ISDIR(st.st_mode)))
        return 0; /* trusting the manifest: paths are image_dir/ID */
    if (folder_map_build(&r->map, image_dir, r->m->arena, r->err) < 0)
        return rc_prefix(r->err, "CSV manifest %s", r->m->source);
    r->have_map = 1;
    return 0;
}

int manifest_parse(const char *data, size_t len, manifest_kind kind, const char *source,
                   const manifest_options *opts, manifest **out, rc_error *err)
{
    *out = NULL;
    if (kind != MANIFEST_CSV && kind != MANIFEST_JSONL && kind != MANIFEST_LIST)
        return rc_fail(err, "manifest %s: only csv, jsonl and list manifests can be parsed from memory",
                       source ? source : "<manifest>");
    manifest_options defaults;
    manifest_options_default(&defaults);
    reader r;
    if (reader_start(&r, kind, source, opts, &defaults, err) < 0)
        return -1;
    int status = 0;
    if (kind == MANIFEST_CSV)
        status = r.opts->image_dir || r.opts->check_files ? reader_map_images(&r, r.opts->image_dir ? r.opts->image_dir : ".") : 0;
    else
        r.dir = r.opts->base_dir;
    if (status == 0)
        status = parse_text(&r, data, len);
    return finish(&r, status, out);
}

/* The default image folder of a CSV manifest (see manifest_read); malloc'd. */
static char *csv_default_image_dir(const char *csv_path)
{
    const char *slash = strrchr(csv_path, '/');
    size_t dir_len = slash ? (size_t)(slash - csv_path) : 0;
    const char *base = slash ? slash + 1 : csv_path;
    size_t stem_len = strlen(base);
    const char *dot = strrchr(base, '.');
    if (dot && dot != base)
        stem_len = (size_t)(dot - base);
    if (stem_len > 9 && strncasecmp(base + stem_len - 9, "_captions", 9) == 0)
        stem_len -= 9;
    size_t cap = dir_len + stem_len + 3;
    char *dir = malloc(cap);
    if (!dir)
        return NULL;
    if (slash)
        snprintf(dir, cap, "%.*s/%.*s", (int)dir_len, csv_path, (int)stem_len, base);
    else
        snprintf(dir, cap, "%.*s", (int)stem_len, base);
    struct stat st;
    if (stem_len > 0 && stat(dir, &st) == 0 && S_ISDIR(st.st_mode))
        return dir;
    if (slash)
        snprintf(dir, cap, "%.*s", dir_len ? (int)dir_len : 1, dir_len ? csv_path : "/");
    else
        snprintf(dir, cap, ".");
    return dir;
}

static char *dirname_of(const char *path)
{
    const char *slash = strrchr(path, '/');
    if (!slash)
        return strdup(".");
    if (slash == path)
        return strdup("/");
    return strndup(path, (size_t)(slash - path));
}

int manifest_read(const char *path, const manifest_options *opts, manifest **out, rc_error *err)
{
    *out = NULL;
    manifest_options defaults;
    manifest_options_default(&defaults);
    const manifest_options *o = opts ? opts : &defaults;
    manifest_kind kind = o->kind;
    if (kind == MANIFEST_AUTO && manifest_detect(path, &kind, err) < 0)
        return -1;
    reader r;
    if (reader_start(&r, kind, path, o, &defaults, err) < 0)
        return -1;
    if (kind == MANIFEST_FOLDER)
        return finish(&r, read_folder(&r, path), out);

    int status = 0;
    char *dir = NULL;
    const char *data = NULL;
    size_t len = 0;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    struct stat st;
    if (fd < 0 || fstat(fd, &st) != 0) {
        status = rc_fail(err, "cannot read manifest %s: %s", path, strerror(errno));
    } else if (S_ISDIR(st.st_mode)) {
        status = rc_fail(err, "manifest %s is a folder, not a %s file", path, manifest_kind_name(kind));
    } else if (st.st_size > 0) {
        len = (size_t)st.st_size;
        data = mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0);
        if (data == MAP_FAILED) {
            data = NULL;
            status = rc_fail(err, "cannot map manifest %s: %s", path, strerror(errno));
        } else {
            madvise((void *)data, len, MADV_SEQUENTIAL);
        }
    }
    if (fd >= 0)
        close(fd);
    if (status == 0) {
        if (kind == MANIFEST_CSV)
            dir = o->image_dir ? strdup(o->image_dir) : csv_default_image_dir(path);
        else
            dir = o->base_dir ? strdup(o->base_dir) : dirname_of(path);
        if (!dir)
            status = rc_fail(err, "out of memory reading manifest %s", path);
    }
    if (status == 0) {
        if (kind == MANIFEST_CSV)
            status = reader_map_images(&r, dir);
        else
            r.dir = dir;
    }
    if (status == 0)
        status = parse_text(&r, data ? data : "", len);
    if (data)
        munmap((void *)data, len);
    status = finish(&r, status, out);
    free(dir);
    return status;
}

void manifest_stat_entries(manifest *m)
{
    for (size_t i = 0; i < m->n_entries; i++) {
        manifest_entry *e = &m->entries[i];
        struct stat st;
        if (e->missing || e->size >= 0 || stat(e->path, &st) != 0)
            continue;
        e->size = (int64_t)st.st_size;
        e->mtime_ns = (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec;
    }
}
