#include "zip.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

/* Record signatures and fixed sizes (APPNOTE.TXT 4.3). */
enum {
    SIG_LOCAL = 0x04034b50,
    SIG_CENTRAL = 0x02014b50,
    SIG_EOCD = 0x06054b50,
    SIG_EOCD64 = 0x06064b50,
    SIG_EOCD64_LOCATOR = 0x07064b50,
    LOCAL_SIZE = 30,
    CENTRAL_SIZE = 46,
    EOCD_SIZE = 22,
    EOCD64_SIZE = 56,
    LOCATOR_SIZE = 20,
    EXTRA_ZIP64 = 0x0001,
    EXTRA_PADDING = 0x4246, /* "FB", the id PyTorch's writer pads with */
    DATA_ALIGN = 64,
};

#define U16_MAX 0xffffu
#define U32_MAX 0xffffffffu

static uint16_t rd16(const uint8_t *p) { return (uint16_t)(p[0] | p[1] << 8); }
static uint32_t rd32(const uint8_t *p) { return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }
static uint64_t rd64(const uint8_t *p) { return (uint64_t)rd32(p) | (uint64_t)rd32(p + 4) << 32; }

/* ---- CRC-32 ---- */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_CLMUL_PATH 1

/* Multiplies both halves of x by k (x.lo * k.lo ^ x.hi * k.hi): moves 128
 * bits of CRC state forward by the distance k was computed for. */
__attribute__((target("pclmul"))) static __m128i fold(__m128i x, __m128i k)
{
    return _mm_xor_si128(_mm_clmulepi64_si128(x, k, 0x00), _mm_clmulepi64_si128(x, k, 0x11));
}

/* CRC-32 of n bytes (n >= 64, a multiple of 16) from the inverted state
 * `state`, by folding four 128-bit lanes, then one, then a Barrett
 * reduction (Gopal et al., "Fast CRC Computation for Generic Polynomials
 * Using PCLMULQDQ", Intel, 2009; constants are x^k mod P for the bit-
 * reflected zip polynomial 0x104C11DB7). Returns the inverted state. */
__attribute__((target("pclmul"))) static uint32_t crc32_clmul(uint32_t state, const uint8_t *p, size_t n)
{
    const __m128i k_4x128 = _mm_set_epi64x(0x1c6e41596, 0x154442bd4); /* x^(512+-32), x^(512+32) */
    const __m128i k_1x128 = _mm_set_epi64x(0x0ccaa009e, 0x1751997d0); /* x^(128+-32), x^(128+32) */
    const __m128i k_64 = _mm_set_epi64x(0, 0x163cd6124);
    const __m128i barrett = _mm_set_epi64x(0x1f7011641, 0x1db710641); /* mu, P' */
    const __m128i mask32 = _mm_set_epi32(0, 0, 0, -1);
    __m128i x0 = _mm_loadu_si128((const __m128i *)p), x1 = _mm_loadu_si128((const __m128i *)(p + 16));
    __m128i x2 = _mm_loadu_si128((const __m128i *)(p + 32)), x3 = _mm_loadu_si128((const __m128i *)(p + 48));
    x0 = _mm_xor_si128(x0, _mm_cvtsi32_si128((int)state));
    p += 64;
    n -= 64;
    for (; n >= 64; n -= 64, p += 64) {
        x0 = _mm_xor_si128(fold(x0, k_4x128), _mm_loadu_si128((const __m128i *)p));
        x1 = _mm_xor_si128(fold(x1, k_4x128), _mm_loadu_si128((const __m128i *)(p + 16)));
        x2 = _mm_xor_si128(fold(x2, k_4x128), _mm_loadu_si128((const __m128i *)(p + 32)));
        x3 = _mm_xor_si128(fold(x3, k_4x128), _mm_loadu_si128((const __m128i *)(p + 48)));
    }
    __m128i x = _mm_xor_si128(fold(x0, k_1x128), x1);
    x = _mm_xor_si128(fold(x, k_1x128), x2);
    x = _mm_xor_si128(fold(x, k_1x128), x3);
    for (; n >= 16; n -= 16, p += 16)
        x = _mm_xor_si128(fold(x, k_1x128), _mm_loadu_si128((const __m128i *)p));
    /* 128 -> 64 bits (appending 32 zero bits), then 64 -> 32 */
    x = _mm_xor_si128(_mm_clmulepi64_si128(k_1x128, x, 0x01), _mm_srli_si128(x, 8));
    x = _mm_xor_si128(_mm_clmulepi64_si128(_mm_and_si128(x, mask32), k_64, 0x00), _mm_srli_si128(x, 4));
    __m128i t = _mm_clmulepi64_si128(_mm_and_si128(x, mask32), barrett, 0x10);
    t = _mm_clmulepi64_si128(_mm_and_si128(t, mask32), barrett, 0x00);
    return (uint32_t)_mm_cvtsi128_si32(_mm_srli_si128(_mm_xor_si128(t, x), 4));
}
#endif

void zip_crc_init(zip_crc *c)
{
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t crc = n;
        for (int bit = 0; bit < 8; bit++)
            crc = (crc & 1) ? 0xedb88320u ^ (crc >> 1) : crc >> 1;
        c->table[0][n] = crc;
    }
    /* table[k][n] is the CRC of byte n followed by k zero bytes, so eight
     * bytes can be folded in with eight independent lookups. */
    for (int k = 1; k < 8; k++)
        for (int n = 0; n < 256; n++) {
            uint32_t prev = c->table[k - 1][n];
            c->table[k][n] = (prev >> 8) ^ c->table[0][prev & 0xff];
        }
#ifdef HAVE_CLMUL_PATH
    c->use_clmul = __builtin_cpu_supports("pclmul") != 0;
#else
    c->use_clmul = 0;
#endif
}


uint32_t zip_crc32(const zip_crc *c, uint32_t crc, const void *buf, size_t n)
{
    const uint8_t *p = buf;
    const uint32_t(*t)[256] = c->table;
    crc = ~crc;
#ifdef HAVE_CLMUL_PATH
    if (c->use_clmul && n >= 64) {
        size_t bulk = n & ~(size_t)15;
        crc = crc32_clmul(crc, p, bulk);
        p += bulk;
        n -= bulk;
    }
#endif
    for (; n >= 8; n -= 8, p += 8) {
        uint32_t lo = rd32(p) ^ crc, hi = rd32(p + 4);
        crc = t[7][lo & 0xff] ^ t[6][(lo >> 8) & 0xff] ^ t[5][(lo >> 16) & 0xff] ^ t[4][lo >> 24] ^
              t[3][hi & 0xff] ^ t[2][(hi >> 8) & 0xff] ^ t[1][(hi >> 16) & 0xff] ^ t[0][hi >> 24];
    }
    for (; n > 0; n--, p++)
        crc = t[0][(crc ^ *p) & 0xff] ^ (crc >> 8);
    return ~crc;
}

/* ---- reader ---- */

/* Locates the end-of-central-directory record: the last 22 bytes unless the
 * archive has a comment (up to 65535 bytes). Requiring the comment to end
 * exactly at the end of the buffer rejects most truncated files here. */
static int find_eocd(const uint8_t *d, uint64_t size, uint64_t *pos)
{
    if (size < EOCD_SIZE)
        return -1;
    uint64_t lowest = size - EOCD_SIZE > U16_MAX ? size - EOCD_SIZE - U16_MAX : 0;
    for (uint64_t p = size - EOCD_SIZE + 1; p-- > lowest;) {
        if (rd32(d + p) == SIG_EOCD && p + EOCD_SIZE + rd16(d + p + 20) == size) {
            *pos = p;
            return 0;
        }
    }
    return -1;
}

typedef struct cd_info {
    uint64_t n_entries;
    uint64_t cd_offset, cd_size;
    uint64_t cd_limit; /* where the central directory must end */
} cd_info;

static int read_end_records(const uint8_t *d, uint64_t size, const char *name, cd_info *cd, rc_error *err)
{
    uint64_t eocd;
    if (find_eocd(d, size, &eocd) < 0)
        return rc_fail(err, "%s: truncated or not a zip archive (no end-of-central-directory record)", name);
    const uint8_t *e = d + eocd;
    uint32_t n_disk = rd16(e + 4), cd_disk = rd16(e + 6);
    uint64_t n_here = rd16(e + 8), n_total = rd16(e + 10);
    cd->cd_size = rd32(e + 12);
    cd->cd_offset = rd32(e + 16);
    cd->cd_limit = eocd;

    if (eocd >= LOCATOR_SIZE && rd32(d + eocd - LOCATOR_SIZE) == SIG_EOCD64_LOCATOR) {
        const uint8_t *loc = d + eocd - LOCATOR_SIZE;
        uint64_t off = rd64(loc + 8);
        if (rd32(loc + 4) != 0 || rd32(loc + 16) > 1)
            return rc_fail(err, "%s: multi-disk zip archives are not supported", name);
        if (off > eocd - LOCATOR_SIZE || eocd - LOCATOR_SIZE - off < EOCD64_SIZE || rd32(d + off) != SIG_EOCD64)
            return rc_fail(err, "%s: corrupt zip archive (bad zip64 end-of-central-directory record)", name);
        const uint8_t *e64 = d + off;
        n_disk = rd32(e64 + 16);
        cd_disk = rd32(e64 + 20);
        n_here = rd64(e64 + 24);
        n_total = rd64(e64 + 32);
        cd->cd_size = rd64(e64 + 40);
        cd->cd_offset = rd64(e64 + 48);
        cd->cd_limit = off;
    }
    if (n_disk != 0 || cd_disk != 0 || n_here != n_total)
        return rc_fail(err, "%s: multi-disk zip archives are not supported", name);
    if (cd->cd_offset > cd->cd_limit || cd->cd_size > cd->cd_limit - cd->cd_offset)
        return rc_fail(err, "%s: truncated or corrupt zip archive (central directory at %llu, %llu bytes, "
                       "outside the file's %llu bytes)", name, (unsigned long long)cd->cd_offset,
                       (unsigned long long)cd->cd_size, (unsigned long long)size);
    if (n_total > cd->cd_size / CENTRAL_SIZE)
        return rc_fail(err, "%s: corrupt zip archive (%llu entries cannot fit in a %llu-byte central directory)",
                       name, (unsigned long long)n_total, (unsigned long long)cd->cd_size);
    cd->n_entries = n_total;
    return 0;
}

/* Applies a zip64 extended-information field to the values that were
 * saturated at 0xffffffff in the fixed header, in APPNOTE's order. */
static int apply_zip64_extra(const uint8_t *extra, uint32_t len, uint64_t *usize, uint64_t *csize,
                             uint64_t *offset)
{
    uint32_t pos = 0;
    while (pos + 4 <= len) {
        uint32_t id = rd16(extra + pos), n = rd16(extra + pos + 2);
        if (n > len - pos - 4)
            return -1;
        if (id == EXTRA_ZIP64) {
            const uint8_t *f = extra + pos + 4;
            uint32_t used = 0;
            uint64_t *fields[3] = {usize, csize, offset};
            for (int i = 0; i < 3; i++) {
                if (!fields[i] || *fields[i] != U32_MAX)
                    continue;
                if (used + 8 > n)
                    return -1;
                *fields[i] = rd64(f + used);
                used += 8;
            }
            return 0;
        }
        pos += 4 + n;
    }
    return 0;
}

static int compare_entries(const void *a, const void *b)
{
    return strcmp(((const zip_entry *)a)->name, ((const zip_entry *)b)->name);
}

static int fail_entry(rc_error *err, const char *name, const char *entry, const char *what)
{
    return rc_fail(err, "%s: corrupt zip archive (entry '%s': %s)", name, entry, what);
}

/* Reads one central directory header at *p (advanced past it) into e. */
static int read_entry(zip_archive *z, uint64_t *p, const cd_info *cd, zip_entry *e, const char *name,
                      rc_error *err)
{
    const uint8_t *d = z->data;
    uint64_t end = cd->cd_offset + cd->cd_size;
    if (end - *p < CENTRAL_SIZE || rd32(d + *p) != SIG_CENTRAL)
        return rc_fail(err, "%s: corrupt zip archive (bad central directory header at offset %llu)", name,
                       (unsigned long long)*p);
    const uint8_t *h = d + *p;
    uint32_t flags = rd16(h + 8), method = rd16(h + 10);
    uint32_t name_len = rd16(h + 28), extra_len = rd16(h + 30), comment_len = rd16(h + 32);
    uint32_t disk = rd16(h + 34);
    uint64_t csize = rd32(h + 20), usize = rd32(h + 24), offset = rd32(h + 42);
    if (end - *p - CENTRAL_SIZE < (uint64_t)name_len + extra_len + comment_len)
        return rc_fail(err, "%s: corrupt zip archive (central directory header at offset %llu runs past "
                       "the directory)", name, (unsigned long long)*p);
    const uint8_t *entry_name = h + CENTRAL_SIZE;
    if (memchr(entry_name, 0, name_len))
        return rc_fail(err, "%s: corrupt zip archive (an entry name contains a NUL byte)", name);
    e->name = malloc(name_len + 1);
    if (!e->name)
        return rc_fail(err, "%s: out of memory", name);
    memcpy(e->name, entry_name, name_len);
    e->name[name_len] = '\0';
    *p += CENTRAL_SIZE + (uint64_t)name_len + extra_len + comment_len;

    if (apply_zip64_extra(entry_name + name_len, extra_len, &usize, &csize, &offset) < 0)
        return fail_entry(err, name, e->name, "bad zip64 extra field");
    if (disk != 0)
        return rc_fail(err, "%s: multi-disk zip archives are not supported", name);
    if (flags & 1)
        return rc_fail(err, "%s: entry '%s' is encrypted; encrypted entries are not supported", name, e->name);
    if (method != 0)
        return rc_fail(err, "%s: entry '%s' is compressed (method %u%s); compressed entries are not supported "
                       "(save the checkpoint with torch.save, which stores entries uncompressed)", name,
                       e->name, method, method == 8 ? ", deflate" : "");
    if (csize != usize)
        return fail_entry(err, name, e->name, "stored entry with different compressed and uncompressed sizes");

    /* The local header repeats the name and may carry a different extra
     * field (PyTorch's padding): the data start is only known from it. */
    if (offset > cd->cd_offset || cd->cd_offset - offset < LOCAL_SIZE || rd32(d + offset) != SIG_LOCAL)
        return fail_entry(err, name, e->name, "local header missing or outside the file");
    const uint8_t *l = d + offset;
    uint64_t data_offset = offset + LOCAL_SIZE + rd16(l + 26) + rd16(l + 28);
    if (data_offset > cd->cd_offset || usize > cd->cd_offset - data_offset)
        return rc_fail(err, "%s: truncated or corrupt zip archive (entry '%s' of %llu bytes at offset %llu "
                       "runs past the entries' area)", name, e->name, (unsigned long long)usize,
                       (unsigned long long)data_offset);
    if (rd16(l + 26) != name_len || memcmp(l + LOCAL_SIZE, entry_name, name_len) != 0)
        return fail_entry(err, name, e->name, "local header names a different entry");
    if (rd16(l + 8) != method)
        return fail_entry(err, name, e->name, "local header disagrees on the compression method");
    e->data_offset = data_offset;
    e->size = usize;
    e->crc32 = rd32(h + 16);
    return 0;
}

int zip_open_mem(zip_archive *z, const void *data, uint64_t size, const char *name, rc_error *err)
{
    memset(z, 0, sizeof *z);
    z->data = data;
    z->size = size;
    cd_info cd = {0};
    if (read_end_records(z->data, size, name, &cd, err) < 0)
        return -1;
    z->entries = calloc(cd.n_entries ? cd.n_entries : 1, sizeof *z->entries);
    if (!z->entries)
        return rc_fail(err, "%s: out of memory", name);
    uint64_t p = cd.cd_offset;
    for (uint64_t i = 0; i < cd.n_entries; i++) {
        z->n_entries = i + 1; /* so that zip_close frees a partly read name */
        if (read_entry(z, &p, &cd, &z->entries[i], name, err) < 0) {
            zip_close(z);
            return -1;
        }
    }
    qsort(z->entries, z->n_entries, sizeof *z->entries, compare_entries);
    for (size_t i = 1; i < z->n_entries; i++)
        if (strcmp(z->entries[i - 1].name, z->entries[i].name) == 0) {
            rc_fail(err, "%s: corrupt zip archive (entry '%s' appears twice)", name, z->entries[i].name);
            zip_close(z);
            return -1;
        }
    zip_crc_init(&z->crc);
    return 0;
}

void zip_close(zip_archive *z)
{
    for (size_t i = 0; i < z->n_entries; i++)
        free(z->entries[i].name);
    free(z->entries);
    z->entries = NULL;
    z->n_entries = 0;
}

const zip_entry *zip_find(const zip_archive *z, const char *name)
{
    size_t lo = 0, hi = z->n_entries;
    while (lo < hi) {
        size_t mid = lo + (hi - lo) / 2;
        int c = strcmp(z->entries[mid].name, name);
        if (c == 0)
            return &z->entries[mid];
        if (c < 0)
            lo = mid + 1;
        else
            hi = mid;
    }
    return NULL;
}

const uint8_t *zip_entry_data(const zip_archive *z, const zip_entry *e)
{
    return z->data + e->data_offset;
}

int zip_check_crc(const zip_archive *z, const zip_entry *e, const char *name, rc_error *err)
{
    uint32_t crc = zip_crc32(&z->crc, 0, zip_entry_data(z, e), e->size);
    if (crc != e->crc32)
        return rc_fail(err, "%s: corrupt file (CRC-32 mismatch in zip entry '%s': stored %08x, computed %08x)",
                       name, e->name, e->crc32, crc);
    return 0;
}

/* ---- writer ---- */

static uint8_t *put16(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)v;
    p[1] = (uint8_t)(v >> 8);
    return p + 2;
}

static uint8_t *put32(uint8_t *p, uint32_t v)
{
    return put16(put16(p, v & 0xffff), v >> 16);
}

static uint8_t *put64(uint8_t *p, uint64_t v)
{
    return put32(put32(p, (uint32_t)v), (uint32_t)(v >> 32));
}

/* A 32-bit field, or the zip64 marker when the value does not fit. */
static uint32_t field32(uint64_t v, int force)
{
    return force || v >= U32_MAX ? U32_MAX : (uint32_t)v;
}

static int emit(zip_writer *w, const void *buf, size_t n, rc_error *err)
{
    if (n > 0 && fwrite(buf, 1, n, w->fp) != n)
        return rc_fail(err, "%s: write failed: %s", w->path, strerror(errno));
    w->pos += n;
    return 0;
}

void zip_writer_init(zip_writer *w, FILE *fp, const char *path, int force_zip64)
{
    memset(w, 0, sizeof *w);
    w->fp = fp;
    w->path = path;
    w->force_zip64 = force_zip64;
    zip_crc_init(&w->crc);
}

int zip_writer_add(zip_writer *w, const char *name, const void *data, uint64_t size, rc_error *err)
{
    size_t name_len = strlen(name);
    if (name_len == 0 || name_len > U16_MAX)
        return rc_fail(err, "%s: zip entry name of %zu bytes is not allowed", w->path, name_len);
    if (w->n_entries == w->cap_entries) {
        size_t cap = w->cap_entries ? 2 * w->cap_entries : 16;
        zip_written *grown = realloc(w->entries, cap * sizeof *grown);
        if (!grown)
            return rc_fail(err, "%s: out of memory", w->path);
        w->entries = grown;
        w->cap_entries = cap;
    }
    zip_written *e = &w->entries[w->n_entries];
    e->name = strdup(name);
    if (!e->name)
        return rc_fail(err, "%s: out of memory", w->path);
    w->n_entries++;
    e->header_offset = w->pos;
    e->size = size;
    e->crc32 = zip_crc32(&w->crc, 0, data, size);

    int zip64 = w->force_zip64 || size >= U32_MAX;
    uint8_t extra[4 + 16 + 4 + DATA_ALIGN], *x = extra;
    if (zip64) {
        x = put16(put16(x, EXTRA_ZIP64), 16);
        x = put64(put64(x, size), size);
    }
    uint64_t data_start = w->pos + LOCAL_SIZE + name_len + (size_t)(x - extra);
    if (data_start % DATA_ALIGN != 0) {
        uint32_t pad = (uint32_t)((DATA_ALIGN - (data_start + 4) % DATA_ALIGN) % DATA_ALIGN);
        x = put16(put16(x, EXTRA_PADDING), pad);
        memset(x, 'Z', pad);
        x += pad;
    }
    uint8_t h[LOCAL_SIZE], *p = h;
    p = put32(p, SIG_LOCAL);
    p = put16(p, zip64 ? 45 : 20);       /* version needed */
    p = put16(p, 0x0800);                /* names are UTF-8 */
    p = put16(p, 0);                     /* stored */
    p = put16(p, 0);                     /* time */
    p = put16(p, 0x21);                  /* date: 1980-01-01 */
    p = put32(p, e->crc32);
    p = put32(p, field32(size, zip64));  /* compressed size */
    p = put32(p, field32(size, zip64));  /* uncompressed size */
    p = put16(p, (uint32_t)name_len);
    put16(p, (uint32_t)(x - extra));
    if (emit(w, h, sizeof h, err) < 0 || emit(w, name, name_len, err) < 0 ||
        emit(w, extra, (size_t)(x - extra), err) < 0 || emit(w, data, size, err) < 0)
        return -1;
    return 0;
}

static int write_central_header(zip_writer *w, const zip_written *e, rc_error *err)
{
    int force = w->force_zip64;
    int big_size = force || e->size >= U32_MAX, big_offset = force || e->header_offset >= U32_MAX;
    uint8_t extra[4 + 24], *x = extra;
    if (big_size || big_offset) {
        x = put16(put16(x, EXTRA_ZIP64), (uint32_t)(8 * (2 * big_size + big_offset)));
        if (big_size)
            x = put64(put64(x, e->size), e->size);
        if (big_offset)
            x = put64(x, e->header_offset);
    }
    size_t name_len = strlen(e->name);
    uint8_t h[CENTRAL_SIZE], *p = h;
    int version = x > extra ? 45 : 20;
    p = put32(p, SIG_CENTRAL);
    p = put16(p, version);               /* version made by */
    p = put16(p, version);               /* version needed */
    p = put16(p, 0x0800);
    p = put16(p, 0);
    p = put16(p, 0);
    p = put16(p, 0x21);
    p = put32(p, e->crc32);
    p = put32(p, field32(e->size, big_size));
    p = put32(p, field32(e->size, big_size));
    p = put16(p, (uint32_t)name_len);
    p = put16(p, (uint32_t)(x - extra));
    p = put16(p, 0);                     /* comment */
    p = put16(p, 0);                     /* disk */
    p = put16(p, 0);                     /* internal attributes */
    p = put32(p, 0);                     /* external attributes */
    put32(p, field32(e->header_offset, big_offset));
    if (emit(w, h, sizeof h, err) < 0 || emit(w, e->name, name_len, err) < 0 ||
        emit(w, extra, (size_t)(x - extra), err) < 0)
        return -1;
    return 0;
}

int zip_writer_finish(zip_writer *w, rc_error *err)
{
    uint64_t cd_offset = w->pos;
    for (size_t i = 0; i < w->n_entries; i++)
        if (write_central_header(w, &w->entries[i], err) < 0)
            return -1;
    uint64_t cd_size = w->pos - cd_offset, n = w->n_entries;
    int zip64 = w->force_zip64 || n >= U16_MAX || cd_size >= U32_MAX || cd_offset >= U32_MAX;
    if (zip64) {
        uint64_t eocd64_offset = w->pos;
        uint8_t r[EOCD64_SIZE + LOCATOR_SIZE], *p = r;
        p = put32(p, SIG_EOCD64);
        p = put64(p, EOCD64_SIZE - 12);  /* size of the rest of the record */
        p = put16(p, 45);
        p = put16(p, 45);
        p = put32(p, 0);
        p = put32(p, 0);
        p = put64(p, n);
        p = put64(p, n);
        p = put64(p, cd_size);
        p = put64(p, cd_offset);
        p = put32(p, SIG_EOCD64_LOCATOR);
        p = put32(p, 0);
        p = put64(p, eocd64_offset);
        put32(p, 1);
        if (emit(w, r, sizeof r, err) < 0)
            return -1;
    }
    uint8_t r[EOCD_SIZE], *p = r;
    uint32_t count16 = w->force_zip64 || n >= U16_MAX ? U16_MAX : (uint32_t)n;
    p = put32(p, SIG_EOCD);
    p = put16(p, 0);
    p = put16(p, 0);
    p = put16(p, count16);
    p = put16(p, count16);
    p = put32(p, field32(cd_size, w->force_zip64));
    p = put32(p, field32(cd_offset, w->force_zip64));
    put16(p, 0);
    return emit(w, r, sizeof r, err);
}

void zip_writer_free(zip_writer *w)
{
    for (size_t i = 0; i < w->n_entries; i++)
        free(w->entries[i].name);
    free(w->entries);
    w->entries = NULL;
    w->n_entries = w->cap_entries = 0;
}
