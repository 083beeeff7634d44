/* testutil.h: what several cmocka test programs need: paths from the
 * environment `make unit` sets, running python references, comparing float
 * arrays with the project's tolerance rule. */
#ifndef RC_TESTUTIL_H
#define RC_TESTUTIL_H

#include <stddef.h>
#include <stdint.h>

#include "engine/config.h"
#include "engine/model.h"

/* $RADCAP_BUILD (default "build"), $RADCAP_BIN ("./radcap"),
 * $RADCAP_PYTHON ("/usr/bin/python3"), $RADCAP_SHARED_DIR ("../shared"). */
const char *tu_build_dir(void);
const char *tu_radcap_bin(void);
const char *tu_python(void);
const char *tu_shared_dir(void);

/* 1 in the sanitizer build ($RADCAP_ASAN is "1", as `make check-asan` sets
 * it): there tests look for memory errors on fewer inputs, the optimised
 * build running the full sets. */
int tu_sanitized(void);

/* 1 if `python -c "import <modules>"` succeeds (modules: "torch", "PIL, numpy"). */
int tu_python_has(const char *modules);

/* 1 if path exists as a regular file. */
int tu_file_exists(const char *path);

/* Runs a shell command; returns its exit status (-1 if it could not run). */
int tu_run(const char *command);

/* Creates a fresh temporary directory under the build directory and returns
 * its path (static storage per call site is the caller's: copy it). */
char *tu_mkdtemp(const char *label);

/* Like tu_mkdtemp, as an absolute path (for commands run from elsewhere,
 * and manifests whose relative paths are their own folder's). */
char *tu_mkdtemp_abs(const char *label);

/* Reads a whole file into a malloc'd, NUL-terminated buffer; NULL on error. */
char *tu_read_file(const char *path, size_t *len);

/* Writes a vocabulary of size tokens for models with synthetic weights:
 * BERT's special tokens at their ids ([PAD] 0, [UNK] 100, [CLS] 101,
 * [SEP] 102, [MASK] 103) and "w<id>" elsewhere. 0, or -1 when it cannot. */
int tu_write_synthetic_vocab(const char *path, int size);

/* The committed tiny model (tests/fixtures/tiny) with image memories to
 * decode: the fixture's recorded ones, then n_random drawn uniform in
 * [-1, 1] from seed. */
typedef struct tu_tiny {
    cfg_model cfg;
    captioner model;
    int n;          // memories: the fixture's, then the random ones
    int L, dim;     // memory tokens, embed_dim
    float *memory;  // (n, L, dim)
} tu_tiny;

/* Loads it (run from the repository root); -1 with err filled on failure. */
int tu_tiny_load(tu_tiny *t, int n_random, uint64_t seed, rc_error *err);
void tu_tiny_free(tu_tiny *t);

/* Largest |a[i] - b[i]| and largest |b[i]|, over n elements. */
void tu_max_diff(const float *a, const float *b, size_t n, double *max_diff, double *max_ref);

#endif
