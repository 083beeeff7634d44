#include "interner.h"

#include <stdlib.h>
#include <string.h>

struct interner {
    char *bytes;        // (bytes_cap) every key's bytes, each followed by a NUL
    size_t bytes_len;   // bytes used
    size_t bytes_cap;
    size_t *offset;     // (keys_cap) start of key id in bytes
    uint32_t *length;   // (keys_cap) byte length of key id
    uint32_t *hash;     // (keys_cap) hash of key id, kept so that growing needs no rehashing of bytes
    size_t n_keys;
    size_t keys_cap;
    uint32_t *slots;    // (slot_mask + 1) key id + 1, or 0 for an empty slot
    size_t slot_mask;
};

/* A 64-bit multiply-xorshift hash over 8-byte words; keys here are short
 * (words, n-grams of 4-byte ids, image ids). */
static uint64_t hash_bytes(const unsigned char *p, size_t n)
{
    uint64_t h = 0x9e3779b97f4a7c15ull ^ ((uint64_t)n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ w) * 0xbf58476d1ce4e5b9ull;
        h ^= h >> 31;
        p += 8;
        n -= 8;
    }
    uint64_t tail = 0;
    if (n)
        memcpy(&tail, p, n);
    h = (h ^ tail) * 0x94d049bb133111ebull;
    h ^= h >> 29;
    h *= 0xbf58476d1ce4e5b9ull;
    h ^= h >> 32;
    return h;
}

interner *interner_new(size_t expected, rc_error *err)
{
    interner *in = calloc(1, sizeof *in);
    if (!in) {
        rc_fail(err, "out of memory creating a string table");
        return NULL;
    }
    size_t slots = 64;
    while (slots < expected * 2 && slots < ((size_t)1 << 40))
        slots *= 2;
    in->slots = calloc(slots, sizeof *in->slots);
    if (!in->slots) {
        free(in);
        rc_fail(err, "out of memory creating a string table");
        return NULL;
    }
    in->slot_mask = slots - 1;
    return in;
}

void interner_free(interner *in)
{
    if (!in)
        return;
    free(in->bytes);
    free(in->offset);
    free(in->length);
    free(in->hash);
    free(in->slots);
    free(in);
}

size_t interner_count(const interner *in) { return in->n_keys; }

const char *interner_key(const interner *in, uint32_t id, size_t *len)
{
    if (len)
        *len = in->length[id];
    return in->bytes + in->offset[id];
}

/* The slot holding key[0..len) with hash h, or the empty slot where it would go. */
static size_t probe(const interner *in, const void *key, size_t len, uint32_t h)
{
    size_t i = h & in->slot_mask;
    for (;;) {
        uint32_t s = in->slots[i];
        if (s == 0)
            return i;
        uint32_t id = s - 1;
        if (in->hash[id] == h && in->length[id] == len &&
            (len == 0 || memcmp(in->bytes + in->offset[id], key, len) == 0))
            return i;
        i = (i + 1) & in->slot_mask;
    }
}

int interner_find(const interner *in, const void *key, size_t len, uint32_t *id)
{
    uint32_t h = (uint32_t)hash_bytes(key, len);
    uint32_t s = in->slots[probe(in, key, len, h)];
    if (s == 0)
        return 0;
    *id = s - 1;
    return 1;
}

static int grow_slots(interner *in)
{
    size_t n_slots = (in->slot_mask + 1) * 2;
    uint32_t *slots = calloc(n_slots, sizeof *slots);
    if (!slots)
        return -1;
    for (size_t id = 0; id < in->n_keys; id++) {
        size_t i = in->hash[id] & (n_slots - 1);
        while (slots[i])
            i = (i + 1) & (n_slots - 1);
        slots[i] = (uint32_t)id + 1;
    }
    free(in->slots);
    in->slots = slots;
    in->slot_mask = n_slots - 1;
    return 0;
}

static int grow_keys(interner *in)
{
    size_t cap = in->keys_cap ? in->keys_cap * 2 : 256;
    size_t *offset = realloc(in->offset, cap * sizeof *offset);
    if (!offset)
        return -1;
    in->offset = offset;
    uint32_t *length = realloc(in->length, cap * sizeof *length);
    if (!length)
        return -1;
    in->length = length;
    uint32_t *hash = realloc(in->hash, cap * sizeof *hash);
    if (!hash)
        return -1;
    in->hash = hash;
    in->keys_cap = cap;
    return 0;
}

static int grow_bytes(interner *in, size_t need)
{
    size_t cap = in->bytes_cap ? in->bytes_cap : 4096;
    while (cap < need) {
        if (cap > SIZE_MAX / 2)
            return -1;
        cap *= 2;
    }
    char *bytes = realloc(in->bytes, cap);
    if (!bytes)
        return -1;
    in->bytes = bytes;
    in->bytes_cap = cap;
    return 0;
}

int interner_intern(interner *in, const void *key, size_t len, uint32_t *id, rc_error *err)
{
    uint32_t h = (uint32_t)hash_bytes(key, len);
    size_t slot = probe(in, key, len, h);
    if (in->slots[slot]) {
        *id = in->slots[slot] - 1;
        return 0;
    }
    if (in->n_keys >= UINT32_MAX - 1 || len > UINT32_MAX)
        return rc_fail(err, "string table full (%zu keys)", in->n_keys);
    if ((in->n_keys == in->keys_cap && grow_keys(in) != 0) ||
        (in->bytes_len + len + 1 > in->bytes_cap && grow_bytes(in, in->bytes_len + len + 1) != 0))
        return rc_fail(err, "out of memory in a string table of %zu keys", in->n_keys);
    size_t new_id = in->n_keys++;
    in->offset[new_id] = in->bytes_len;
    in->length[new_id] = (uint32_t)len;
    in->hash[new_id] = h;
    if (len)
        memcpy(in->bytes + in->bytes_len, key, len);
    in->bytes[in->bytes_len + len] = '\0';
    in->bytes_len += len + 1;
    in->slots[slot] = (uint32_t)new_id + 1;
    if (in->n_keys * 2 > in->slot_mask + 1 && grow_slots(in) != 0) {
        /* The key is in; the table is just fuller than planned. It stays
         * usable as long as one slot is empty, which a full-table check
         * guarantees. */
        if (in->n_keys >= in->slot_mask)
            return rc_fail(err, "out of memory growing a string table of %zu keys", in->n_keys);
    }
    *id = (uint32_t)new_id;
    return 1;
}
