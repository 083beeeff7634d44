/* sha256.h: SHA-256 (FIPS 180-4) for checkpoint and vocabulary fingerprints
 * and for content hashes of images.
 *
 * Streaming use: sha256_init, sha256_update any number of times, then
 * sha256_final. One-shot helpers hash a buffer or a whole file.
 */
#ifndef RC_SHA256_H
#define RC_SHA256_H

#include <stddef.h>
#include <stdint.h>

#include "engine/err.h"

#define SHA256_DIGEST_SIZE 32
#define SHA256_HEX_SIZE 65 /* 64 lowercase hex digits and a NUL */

typedef struct sha256_ctx {
    uint32_t state[8];  // running hash value H0..H7
    uint64_t n_bytes;   // message bytes consumed so far
    uint8_t block[64];  // partial block awaiting compression
    size_t block_len;   // bytes used in block (0..63)
} sha256_ctx;

/* Starts a new hash. */
void sha256_init(sha256_ctx *ctx);

/* Feeds len bytes of data (data may be NULL when len is 0). */
void sha256_update(sha256_ctx *ctx, const void *data, size_t len);

/* Pads, finishes and writes the 32-byte digest. The context must be
 * re-initialised before further use. */
void sha256_final(sha256_ctx *ctx, uint8_t digest[SHA256_DIGEST_SIZE]);

/* Writes the digest as 64 lowercase hex digits and a NUL. */
void sha256_to_hex(const uint8_t digest[SHA256_DIGEST_SIZE], char hex[SHA256_HEX_SIZE]);

/* Hashes one buffer; writes the hex digest. */
void sha256_hex(const void *data, size_t len, char hex[SHA256_HEX_SIZE]);

/* Hashes the contents of a file, read in blocks (a checkpoint of hundreds of
 * megabytes is never held in memory at once); writes the hex digest.
 * Fails with a message naming the file when it cannot be opened or read. */
int sha256_file(const char *path, char hex[SHA256_HEX_SIZE], rc_error *err);

#endif
