/* interner.h: dense integer ids for byte strings.
 *
 * An interner gives each distinct byte string it is shown an id: 0, 1, 2, ...
 * in order of first appearance, and keeps one copy of the bytes. Lookups are
 * one hash probe sequence (open addressing, the table kept at most half
 * full), so interning is cheap enough for every word and n-gram of a corpus.
 * The metrics intern words and n-grams (an n-gram's key is the bytes of its
 * word ids); the caption file reader interns image ids. Keys may hold any
 * bytes, NUL included; the empty string is a key like any other.
 */
#ifndef RC_INTERNER_H
#define RC_INTERNER_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

typedef struct interner interner;

/* A new, empty interner sized for about `expected` keys (0 for a default).
 * NULL (err filled) when memory runs out. */
interner *interner_new(size_t expected, rc_error *err);

/* Frees the interner and its copies of the keys. NULL is allowed. */
void interner_free(interner *in);

/* Finds key[0..len) or adds it. Sets *id and returns 1 if the key is new, 0
 * if it was already there; -1 (err filled) when memory runs out or the
 * interner already holds 2^32 - 1 keys. */
int interner_intern(interner *in, const void *key, size_t len, uint32_t *id, rc_error *err);

/* Looks key[0..len) up without adding it: 1 and *id if present, else 0. */
int interner_find(const interner *in, const void *key, size_t len, uint32_t *id);

/* Number of distinct keys interned so far (the next new key's id). */
size_t interner_count(const interner *in);

/* The bytes of key `id` (< interner_count), NUL-terminated for convenience,
 * and their length in *len (if len is not NULL). Valid until the next
 * interner_intern. */
const char *interner_key(const interner *in, uint32_t id, size_t *len);

#endif
