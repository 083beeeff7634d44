#include "testutil.h"

#include "engine/checkpoint.h"
#include "engine/rng.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

static const char *env_or(const char *name, const char *fallback)
{
    const char *v = getenv(name);
    return v && *v ? v : fallback;
}

const char *tu_build_dir(void) { return env_or("RADCAP_BUILD", "build"); }
const char *tu_radcap_bin(void) { return env_or("RADCAP_BIN", "./radcap"); }
const char *tu_python(void) { return env_or("RADCAP_PYTHON", "/usr/bin/python3"); }
const char *tu_shared_dir(void) { return env_or("RADCAP_SHARED_DIR", "../shared"); }
int tu_sanitized(void) { return strcmp(env_or("RADCAP_ASAN", ""), "1") == 0; }

int tu_run(const char *command)
{
    int status = system(command);
    if (status == -1 || !WIFEXITED(status))
        return -1;
    return WEXITSTATUS(status);
}

int tu_python_has(const char *modules)
{
    char cmd[512];
    snprintf(cmd, sizeof cmd, "'%s' -c 'import %s' >/dev/null 2>&1", tu_python(), modules);
    return tu_run(cmd) == 0;
}

int tu_file_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

char *tu_mkdtemp(const char *label)
{
    char *path = malloc(4096);
    if (!path)
        return NULL;
    snprintf(path, 4096, "%s/tmp", tu_build_dir());
    mkdir(path, 0777);
    snprintf(path, 4096, "%s/tmp/%s-XXXXXX", tu_build_dir(), label);
    if (!mkdtemp(path)) {
        free(path);
        return NULL;
    }
    return path;
}

char *tu_mkdtemp_abs(const char *label)
{
    char *relative = tu_mkdtemp(label);
    char *absolute = relative ? realpath(relative, NULL) : NULL;
    free(relative);
    return absolute;
}

char *tu_read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    if (!f)
        return NULL;
    size_t cap = 1 << 16, used = 0, got;
    char *buf = malloc(cap + 1);
    while (buf && (got = fread(buf + used, 1, cap - used, f)) > 0) {
        used += got;
        if (used == cap) {
            char *grown = realloc(buf, cap * 2 + 1);
            if (!grown) {
                free(buf);
                buf = NULL;
                break;
            }
            buf = grown;
            cap *= 2;
        }
    }
    fclose(f);
    if (!buf)
        return NULL;
    buf[used] = '\0';
    if (len)
        *len = used;
    return buf;
}

void tu_max_diff(const float *a, const float *b, size_t n, double *max_diff, double *max_ref)
{
    double d = 0.0, r = 0.0;
    for (size_t i = 0; i < n; i++) {
        double diff = fabs((double)a[i] - (double)b[i]);
        if (isnan(diff))
            diff = INFINITY;
        d = diff > d ? diff : d;
        r = fabs((double)b[i]) > r ? fabs((double)b[i]) : r;
    }
    *max_diff = d;
    *max_ref = r;
}

int tu_write_synthetic_vocab(const char *path, int size)
{
    static const char *const special[] = {[0] = "[PAD]", [100] = "[UNK]", [101] = "[CLS]", [102] = "[SEP]",
                                          [103] = "[MASK]"};
    const int n_special = (int)(sizeof special / sizeof special[0]);
    FILE *f = fopen(path, "w");
    if (!f)
        return -1;
    for (int i = 0; i < size; i++) {
        if (i < n_special && special[i])
            fprintf(f, "%s\n", special[i]);
        else
            fprintf(f, "w%d\n", i);
    }
    return fclose(f) == 0 ? 0 : -1;
}

int tu_tiny_load(tu_tiny *t, int n_random, uint64_t seed, rc_error *err)
{
    memset(t, 0, sizeof *t);
    const char *dir = "tests/fixtures/tiny";
    char path[256];
    snprintf(path, sizeof path, "%s/config.json", dir);
    if (cfg_load(&t->cfg, path, err) < 0)
        return -1;
    snprintf(path, sizeof path, "%s/model.bin", dir);
    if (model_load(&t->model, &t->cfg, path, err) < 0)
        return -1;
    ckpt_file ref;
    snprintf(path, sizeof path, "%s/reference.safetensors", dir);
    if (ckpt_open(&ref, path, err) < 0) {
        model_free(&t->model);
        return -1;
    }
    const ckpt_tensor *mem = ckpt_find(&ref, "memory");
    t->L = cfg_memory_tokens(&t->cfg);
    t->dim = t->cfg.embed_dim;
    const size_t per_image = (size_t)t->L * t->dim;
    const int n_fixture = mem ? (int)mem->shape[0] : 0;
    if (!mem || mem->numel != (int64_t)n_fixture * (int64_t)per_image) {
        ckpt_close(&ref);
        model_free(&t->model);
        return rc_fail(err, "%s: no memory tensor of (n, %d, %d)", path, t->L, t->dim);
    }
    t->n = n_fixture + n_random;
    t->memory = malloc(sizeof(float) * (size_t)t->n * per_image);
    if (!t->memory) {
        ckpt_close(&ref);
        model_free(&t->model);
        return rc_fail(err, "out of memory");
    }
    memcpy(t->memory, mem->data, sizeof(float) * (size_t)n_fixture * per_image);
    ckpt_close(&ref);
    rng_state r;
    rng_seed(&r, seed);
    for (size_t i = (size_t)n_fixture * per_image; i < (size_t)t->n * per_image; i++)
        t->memory[i] = (float)(2.0 * rng_uniform(&r) - 1.0);
    return 0;
}

void tu_tiny_free(tu_tiny *t)
{
    model_free(&t->model);
    free(t->memory);
    t->memory = NULL;
}
