/* Checkpoint reading and writing (engine/checkpoint.h, zip.h, pickle.h,
 * safetensors.h).
 *
 * References:
 *  - PyTorch itself (tests/reference/checkpoint_cases.py, when /usr/bin/python3
 *    has torch): files written by torch.save must read back in C with exactly
 *    the values torch printed, and files written in C must torch.load with
 *    exactly the values C holds. The safetensors files written in C are read
 *    back by a small independent Python parser.
 *  - IEEE 754 for the float16/bfloat16 conversions (values worked out in
 *    the comments), and hand-assembled pickles / zips / safetensors headers
 *    for the error paths, each checked for its own message.
 *  - Robustness: every truncation and single-byte corruption of a checkpoint
 *    fails cleanly (or, outside the checked bytes, reads identical tensors);
 *    `make check-asan` runs these under AddressSanitizer.
 */
#include <math.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine/checkpoint.h"
#include "engine/pickle.h"
#include "engine/zip.h"
#include "tests/helpers/testutil.h"

#define CASES_SCRIPT "tests/reference/checkpoint_cases.py"

/* ---- shared state: a temporary directory, and the torch-written cases ---- */

typedef struct suite {
    char *dir;          /* temporary directory for this run */
    int have_torch;     /* python could import torch and wrote the cases */
} suite;

static int suite_setup(void **state)
{
    suite *s = calloc(1, sizeof *s);
    s->dir = tu_mkdtemp("checkpoint");
    assert_non_null(s->dir);
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "'%s' " CASES_SCRIPT " write '%s'", tu_python(), s->dir);
    int rc = tu_run(cmd);
    s->have_torch = rc == 0;
    *state = s;
    if (rc != 0 && rc != 77 && tu_python_has("torch")) {
        fprintf(stderr, "%s failed (exit %d) although torch imports\n", cmd, rc);
        return -1;
    }
    return 0;
}

static int suite_teardown(void **state)
{
    suite *s = *state;
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", s->dir);
    tu_run(cmd);
    free(s->dir);
    free(s);
    return 0;
}

static void need_torch(const suite *s)
{
    if (!s->have_torch) {
        fprintf(stderr, "skipped: %s cannot import torch (PyTorch reference unavailable)\n", tu_python());
        skip();
    }
}

static char *path_in(const suite *s, const char *name)
{
    char *p = malloc(strlen(s->dir) + strlen(name) + 2);
    sprintf(p, "%s/%s", s->dir, name);
    return p;
}

static void assert_contains(const char *text, const char *part)
{
    if (!strstr(text, part))
        fail_msg("message \"%s\" lacks \"%s\"", text, part);
}

/* ---- tensors built in C ---- */

static const float k_f32[6] = {1.5f, -2.25f, 0.0f, 1e-40f /* subnormal */, 1e30f, -0.0f};
/* float16 bits: 1, -2, 65504 (max), 2^-24 (smallest subnormal), +inf */
static const uint16_t k_f16[5] = {0x3c00, 0xc000, 0x7bff, 0x0001, 0x7c00};
/* bfloat16 bits: 1, -5, 3.140625, 0 */
static const uint16_t k_bf16[4] = {0x3f80, 0xc0a0, 0x4049, 0x0000};
static const double k_f64[3] = {0.1, -1e300, 5e-324};
static const int64_t k_i64 = 1234567890123;
static const int32_t k_i32[2] = {-7, 2147483647};
static const int16_t k_i16[2] = {-32768, 12345};
static const int8_t k_i8[3] = {-128, 127, -1};
static const uint8_t k_u8[3] = {0, 200, 255};
static const uint8_t k_bool[2] = {1, 0};
static const float k_conv[4] = {0.25f, -0.5f, 0.75f, -1.0f};

/* One tensor of every dtype, a scalar, an empty tensor and a 4-d one. */
static int make_tensors(ckpt_tensor *t)
{
    static const struct {
        const char *name;
        ckpt_dtype dtype;
        int ndim;
        int64_t shape[4];
        const void *data;
    } spec[] = {
        {"enc.weight", CKPT_F32, 2, {2, 3}, k_f32},
        {"half", CKPT_F16, 1, {5}, k_f16},
        {"bf", CKPT_BF16, 2, {2, 2}, k_bf16},
        {"dbl", CKPT_F64, 1, {3}, k_f64},
        {"bn.num_batches_tracked", CKPT_I64, 0, {0}, &k_i64},
        {"ints", CKPT_I32, 1, {2}, k_i32},
        {"shorts", CKPT_I16, 2, {1, 2}, k_i16},
        {"chars", CKPT_I8, 1, {3}, k_i8},
        {"bytes", CKPT_U8, 1, {3}, k_u8},
        {"flags", CKPT_BOOL, 1, {2}, k_bool},
        {"empty", CKPT_F32, 2, {0, 4}, k_f32},
        {"conv", CKPT_F32, 4, {2, 1, 1, 2}, k_conv},
    };
    int n = (int)(sizeof spec / sizeof spec[0]);
    for (int i = 0; i < n; i++) {
        memset(&t[i], 0, sizeof t[i]);
        t[i].name = (char *)spec[i].name;
        t[i].dtype = spec[i].dtype;
        t[i].ndim = spec[i].ndim;
        t[i].numel = 1;
        for (int d = 0; d < spec[i].ndim; d++) {
            t[i].shape[d] = spec[i].shape[d];
            t[i].numel *= spec[i].shape[d];
        }
        t[i].data = spec[i].data;
    }
    return n;
}

static size_t nbytes(const ckpt_tensor *t)
{
    return (size_t)t->numel * ckpt_dtype_size(t->dtype);
}

static void assert_same_tensors(const ckpt_tensor *want, int n, const ckpt_file *f)
{
    assert_int_equal(f->n_tensors, n);
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *got = &f->tensors[i];
        assert_string_equal(got->name, want[i].name);
        assert_int_equal(got->dtype, want[i].dtype);
        assert_int_equal(got->ndim, want[i].ndim);
        for (int d = 0; d < want[i].ndim; d++)
            assert_int_equal(got->shape[d], want[i].shape[d]);
        assert_int_equal(got->numel, want[i].numel);
        assert_non_null(got->data);
        assert_memory_equal(got->data, want[i].data, nbytes(&want[i]));
        assert_ptr_equal(ckpt_find(f, want[i].name), got);
    }
    assert_null(ckpt_find(f, "no.such.key"));
}

static int inside_map(const ckpt_file *f, const void *p)
{
    const uint8_t *b = p;
    return b >= f->map && b <= f->map + f->map_size;
}

/* ---- .expect files of checkpoint_cases.py ---- */

typedef struct expect_line {
    char *key, *dtype, *shape, *values;
} expect_line;

/* Splits the file into lines of four tab-separated fields (kept in *text). */
static int read_expect(const char *path, char **text, char **class_name, expect_line *lines, int max)
{
    *text = tu_read_file(path, NULL);
    if (!*text)
        fail_msg("cannot read %s", path);
    char *p = *text, *nl = strchr(p, '\n');
    assert_non_null(nl);
    *nl = '\0';
    *class_name = p;
    p = nl + 1;
    int n = 0;
    while (*p) {
        assert_true(n < max);
        nl = strchr(p, '\n');
        assert_non_null(nl);
        *nl = '\0';
        char *fields[4];
        for (int k = 0; k < 4; k++) {
            fields[k] = p;
            char *tab = strchr(p, '\t');
            if (k < 3) {
                assert_non_null(tab);
                *tab = '\0';
                p = tab + 1;
            }
        }
        lines[n++] = (expect_line){fields[0], fields[1], fields[2], fields[3]};
        p = nl + 1;
    }
    return n;
}

static int64_t int_at(const ckpt_tensor *t, int64_t i)
{
    const uint8_t *p = (const uint8_t *)t->data + (size_t)i * ckpt_dtype_size(t->dtype);
    int64_t v64;
    int32_t v32;
    int16_t v16;
    switch (t->dtype) {
    case CKPT_I64: memcpy(&v64, p, 8); return v64;
    case CKPT_I32: memcpy(&v32, p, 4); return v32;
    case CKPT_I16: memcpy(&v16, p, 2); return v16;
    case CKPT_I8: return (int8_t)*p;
    default: return *p;
    }
}

/* Exact equality including the sign of zero. */
static void assert_same_double(double got, double want, const char *key, int64_t i)
{
    if (!(got == want && signbit(got) == signbit(want)) && !(isnan(got) && isnan(want)))
        fail_msg("%s[%lld] = %a, PyTorch has %a", key, (long long)i, got, want);
}

/* Every tensor of `tensors` equals the line PyTorch wrote for it, in order. */
static void assert_matches_expect(const ckpt_tensor *tensors, int n, const char *expect_path)
{
    char *text, *class_name;
    expect_line lines[64];
    int n_lines = read_expect(expect_path, &text, &class_name, lines, 64);
    assert_string_equal(class_name, "OrderedDict");
    assert_int_equal(n, n_lines);
    for (int i = 0; i < n; i++) {
        const ckpt_tensor *t = &tensors[i];
        assert_string_equal(t->name, lines[i].key);
        assert_string_equal(ckpt_dtype_name(t->dtype), lines[i].dtype);
        char shape[256] = "";
        for (int d = 0; d < t->ndim; d++)
            snprintf(shape + strlen(shape), sizeof shape - strlen(shape), "%s%lld", d ? "," : "",
                     (long long)t->shape[d]);
        assert_string_equal(shape, lines[i].shape);
        float *as_f32 = malloc(((size_t)t->numel + 1) * sizeof *as_f32);
        int is_float = t->dtype == CKPT_F32 || t->dtype == CKPT_F16 || t->dtype == CKPT_BF16;
        if (is_float) {
            rc_error err;
            assert_int_equal(ckpt_to_f32(t, as_f32, &err), 0);
        }
        char *p = lines[i].values, *end;
        for (int64_t k = 0; k < t->numel; k++) {
            if (t->dtype == CKPT_F64 || is_float) {
                double want = strtod(p, &end);
                double got;
                if (is_float)
                    got = as_f32[k];
                else
                    memcpy(&got, (const uint8_t *)t->data + 8 * k, 8);
                assert_true(end != p);
                assert_same_double(got, want, t->name, k);
            } else {
                long long want = strtoll(p, &end, 10);
                assert_true(end != p);
                if (int_at(t, k) != want)
                    fail_msg("%s[%lld] = %lld, PyTorch has %lld", t->name, (long long)k, (long long)int_at(t, k),
                             want);
            }
            p = end;
        }
        while (*p == ' ')
            p++;
        assert_string_equal(p, ""); /* no values left over */
        free(as_f32);
    }
    free(text);
}

/* ---- float16 / bfloat16 ---- */

static void test_to_f32_conversions(void **state)
{
    (void)state;
    ckpt_tensor t = {.name = "half", .dtype = CKPT_F16, .ndim = 1, .shape = {5}, .numel = 5, .data = k_f16};
    float out[8];
    rc_error err;
    assert_int_equal(ckpt_to_f32(&t, out, &err), 0);
    assert_true(out[0] == 1.0f);
    assert_true(out[1] == -2.0f);
    assert_true(out[2] == 65504.0f);          /* (2 - 2^-10) * 2^15 */
    assert_true(out[3] == 0x1p-24f);          /* 1 * 2^-14 * 2^-10 */
    assert_true(isinf(out[4]) && out[4] > 0);
    /* 0x3555: exponent 13 -> 2^-2, mantissa 0x155 = 341: 0.25 * (1 + 341/1024) */
    /* 0x8000: -0; 0x03ff: largest subnormal 1023 * 2^-24; 0xfe00: NaN */
    const uint16_t more[4] = {0x3555, 0x8000, 0x03ff, 0xfe00};
    t.data = more;
    t.numel = t.shape[0] = 4;
    assert_int_equal(ckpt_to_f32(&t, out, &err), 0);
    assert_true(out[0] == 0.333251953125f);
    assert_true(out[1] == 0.0f && signbit(out[1]));
    assert_true(out[2] == 1023.0f * 0x1p-24f);
    assert_true(isnan(out[3]));

    /* bfloat16 is the top half of a float32: 0x3f80 -> 0x3f800000 = 1,
     * 0xc0a0 -> -5, 0x4049 -> 0x40490000 = 3.140625, 0 -> 0 */
    t = (ckpt_tensor){.name = "bf", .dtype = CKPT_BF16, .ndim = 2, .shape = {2, 2}, .numel = 4, .data = k_bf16};
    assert_int_equal(ckpt_to_f32(&t, out, &err), 0);
    assert_true(out[0] == 1.0f && out[1] == -5.0f && out[2] == 3.140625f && out[3] == 0.0f);

    t = (ckpt_tensor){.name = "dbl", .dtype = CKPT_F64, .ndim = 1, .shape = {3}, .numel = 3, .data = k_f64};
    assert_int_equal(ckpt_to_f32(&t, out, &err), 0);
    assert_true(out[0] == 0.1f && isinf(out[1]) && out[1] < 0 && out[2] == 0.0f);

    t = (ckpt_tensor){.name = "ints", .dtype = CKPT_I32, .ndim = 1, .shape = {2}, .numel = 2, .data = k_i32};
    assert_int_equal(ckpt_to_f32(&t, out, &err), -1);
    assert_contains(err.msg, "ints");
    assert_contains(err.msg, "int32");
}

static void test_dtype_names(void **state)
{
    (void)state;
    assert_string_equal(ckpt_dtype_name(CKPT_BF16), "bfloat16");
    assert_int_equal(ckpt_dtype_size(CKPT_F64), 8);
    assert_int_equal(ckpt_dtype_size(CKPT_BOOL), 1);
    ckpt_dtype d;
    assert_int_equal(ckpt_dtype_from_safetensors("BF16", &d), 0);
    assert_int_equal(d, CKPT_BF16);
    assert_int_equal(ckpt_dtype_from_safetensors("U16", &d), -1);
}

/* ---- CRC-32 ---- */

/* The standard check value of CRC-32 (zip, PNG, Ethernet) is
 * crc("123456789") = 0xcbf43926; the carry-less-multiply path must agree
 * with the table path (written from the bitwise definition) for every
 * length, alignment and starting value. */
static void test_crc32(void **state)
{
    (void)state;
    zip_crc fast, table;
    zip_crc_init(&fast);
    zip_crc_init(&table);
    table.use_clmul = 0;
    assert_int_equal(zip_crc32(&fast, 0, "123456789", 9), 0xcbf43926u);
    assert_int_equal(zip_crc32(&table, 0, "123456789", 9), 0xcbf43926u);
    /* continuing a CRC: crc("12345") then "6789" */
    assert_int_equal(zip_crc32(&table, zip_crc32(&table, 0, "12345", 5), "6789", 4), 0xcbf43926u);
    size_t n = 3000;
    uint8_t *buf = malloc(n);
    for (size_t i = 0; i < n; i++)
        buf[i] = (uint8_t)(i * 131 + (i >> 7));
    for (size_t len = 0; len < 1100; len++)
        for (size_t off = 0; off < 4; off++) {
            uint32_t start = (uint32_t)(len * 2654435761u);
            assert_int_equal(zip_crc32(&fast, start, buf + off, len), zip_crc32(&table, start, buf + off, len));
        }
    assert_int_equal(zip_crc32(&fast, 0, buf, n), zip_crc32(&table, 0, buf, n));
    free(buf);
}

/* ---- round trips through both writers ---- */

static void roundtrip(const suite *s, const char *file, int format, unsigned flags)
{
    ckpt_tensor t[16];
    int n = make_tensors(t);
    char *path = path_in(s, file);
    rc_error err = {{0}};
    int rc = format == 0 ? ckpt_write_torch_flags(path, t, n, NULL, flags, &err)
                         : ckpt_write_safetensors(path, t, n, &err);
    if (rc != 0)
        fail_msg("write: %s", err.msg);
    ckpt_file f;
    if (ckpt_open(&f, path, &err) != 0)
        fail_msg("read back: %s", err.msg);
    assert_same_tensors(t, n, &f);
    if (format == 0) { /* every storage is 64-byte aligned: nothing copied */
        for (int i = 0; i < n; i++)
            assert_true(inside_map(&f, f.tensors[i].data));
        assert_int_equal(f.n_owned, 0);
    }
    ckpt_close(&f);
    /* no temporary file left behind */
    char cmd[8192];
    snprintf(cmd, sizeof cmd, "ls '%s' | grep -q '%s.tmp'", s->dir, file);
    assert_int_not_equal(tu_run(cmd), 0);
    free(path);
}

static void test_roundtrip_torch(void **state)
{
    roundtrip(*state, "c_written.pt", 0, 0);
}

static void test_roundtrip_torch_zip64(void **state)
{
    roundtrip(*state, "c_zip64.pt", 0, CKPT_WRITE_ZIP64);
}

static void test_roundtrip_safetensors(void **state)
{
    roundtrip(*state, "c_written.safetensors", 1, 0);
}

/* The archive folder is what the caller names; a second write replaces the
 * first file whole. */
static void test_archive_name_and_overwrite(void **state)
{
    suite *s = *state;
    ckpt_tensor t[16];
    int n = make_tensors(t);
    char *path = path_in(s, "roco_best_model.bin");
    rc_error err;
    assert_int_equal(ckpt_write_torch(path, t, n, "roco_best_model", &err), 0);
    assert_int_equal(ckpt_write_torch(path, t, 2, "roco_best_model", &err), 0);
    size_t len;
    char *bytes = tu_read_file(path, &len);
    assert_non_null(bytes);
    assert_memory_equal(bytes + 30, "roco_best_model/data.pkl", 24); /* first local header's name */
    ckpt_file f;
    assert_int_equal(ckpt_parse(&f, bytes, len, "roco_best_model.bin", &err), 0);
    assert_same_tensors(t, 2, &f);
    ckpt_close(&f);
    free(bytes);
    free(path);
}

static void test_writer_errors(void **state)
{
    suite *s = *state;
    ckpt_tensor t[16];
    int n = make_tensors(t);
    rc_error err;
    assert_int_equal(ckpt_write_torch("/nonexistent-dir/x.pt", t, n, NULL, &err), -1);
    assert_contains(err.msg, "/nonexistent-dir/x.pt");
    assert_contains(err.msg, "cannot create");

    char *path = path_in(s, "bad.pt");
    t[1].numel = 7; /* shape says 5 */
    assert_int_equal(ckpt_write_safetensors(path, t, n, &err), -1);
    assert_contains(err.msg, "'half' has numel 7");
    t[1].numel = 5;
    t[2].name = "half";
    assert_int_equal(ckpt_write_torch(path, t, n, NULL, &err), -1);
    assert_contains(err.msg, "'half' given twice");
    t[2].name = "bf";
    assert_int_equal(ckpt_write_torch(path, t, n, "a/b", &err), -1);
    assert_contains(err.msg, "invalid archive folder name");
    assert_false(tu_file_exists(path));
    free(path);
}

/* ---- files written by PyTorch ---- */

static void check_torch_case(const suite *s, const char *file, int expect_copies)
{
    need_torch(s);
    char *path = path_in(s, file), expect[8192];
    snprintf(expect, sizeof expect, "%s.expect", path);
    ckpt_file f;
    rc_error err;
    if (ckpt_open(&f, path, &err) != 0)
        fail_msg("%s", err.msg);
    assert_matches_expect(f.tensors, f.n_tensors, expect);
    if (expect_copies == 0)
        for (int i = 0; i < f.n_tensors; i++)
            assert_true(inside_map(&f, f.tensors[i].data));
    else
        assert_true(f.n_owned >= expect_copies);
    ckpt_close(&f);
    free(path);
}

static void test_torch_dtypes(void **state) { check_torch_case(*state, "dtypes.pt", 0); }
static void test_torch_param(void **state) { check_torch_case(*state, "param.pt", 0); }
static void test_torch_module_metadata(void **state) { check_torch_case(*state, "module.pt", 0); }
static void test_torch_renamed_archive(void **state) { check_torch_case(*state, "renamed_model.bin", 0); }
/* transposed, every_other and expanded are strided: copied; shared_a/b point in place */
static void test_torch_views(void **state) { check_torch_case(*state, "views.pt", 3); }
static void test_torch_protocol4(void **state) { check_torch_case(*state, "proto4.pt", 3); }
/* every storage byte-swapped on load */
static void test_torch_big_endian(void **state) { check_torch_case(*state, "bigendian.pt", 11); }

static void test_torch_deflated(void **state)
{
    suite *s = *state;
    need_torch(s);
    char *path = path_in(s, "deflated.pt");
    ckpt_file f;
    rc_error err;
    assert_int_equal(ckpt_open(&f, path, &err), -1);
    assert_contains(err.msg, path);
    assert_contains(err.msg, "compressed entries are not supported");
    assert_int_equal(f.n_tensors, 0);
    ckpt_close(&f);
    free(path);
}

/* PyTorch loads what the C writers wrote, with identical values. */
static void test_python_reads_c_files(void **state)
{
    suite *s = *state;
    need_torch(s);
    ckpt_tensor t[16];
    int n = make_tensors(t);
    const char *files[] = {"for_torch.pt", "for_torch_zip64.pt", "for_python.safetensors"};
    char *paths[3];
    rc_error err;
    for (int i = 0; i < 3; i++)
        paths[i] = path_in(s, files[i]);
    assert_int_equal(ckpt_write_torch(paths[0], t, n, NULL, &err), 0);
    assert_int_equal(ckpt_write_torch_flags(paths[1], t, n, "other_name", CKPT_WRITE_ZIP64, &err), 0);
    assert_int_equal(ckpt_write_safetensors(paths[2], t, n, &err), 0);
    char cmd[16384];
    snprintf(cmd, sizeof cmd, "'%s' " CASES_SCRIPT " read '%s' '%s' '%s' && '%s' " CASES_SCRIPT " read_st '%s' '%s'",
             tu_python(), s->dir, paths[0], paths[1], tu_python(), s->dir, paths[2]);
    assert_int_equal(tu_run(cmd), 0);
    for (int i = 0; i < 3; i++) {
        char expect[8192];
        snprintf(expect, sizeof expect, "%s.expect", paths[i]);
        assert_matches_expect(t, n, expect);
        free(paths[i]);
    }
}

/* ---- damaged files ---- */

static char *write_reference_file(const suite *s, const char *file, size_t *len)
{
    ckpt_tensor t[16];
    int n = make_tensors(t);
    char *path = path_in(s, file);
    rc_error err;
    assert_int_equal(ckpt_write_torch(path, t, n, NULL, &err), 0);
    char *bytes = tu_read_file(path, len);
    assert_non_null(bytes);
    free(path);
    return bytes;
}

/* Every prefix of a checkpoint fails with a message naming the file. */
static void assert_every_cut_fails(const char *bytes, size_t len, const char *name, size_t truncated_from)
{
    for (size_t cut = 0; cut < len; cut++) {
        char *copy = malloc(cut + 1); /* exact size, so ASan sees reads past the cut */
        memcpy(copy, bytes, cut);
        ckpt_file f;
        rc_error err = {{0}};
        if (ckpt_parse(&f, copy, cut, name, &err) != -1)
            fail_msg("%s cut at %zu of %zu bytes was accepted", name, cut, len);
        assert_contains(err.msg, name);
        if (cut >= truncated_from)
            assert_contains(err.msg, "truncated");
        if (cut == 0)
            assert_contains(err.msg, "empty");
        ckpt_close(&f);
        free(copy);
    }
}

static void test_truncated_torch(void **state)
{
    suite *s = *state;
    size_t len;
    char *bytes = write_reference_file(s, "cut.pt", &len);
    /* Cuts at 4 bytes and more still start like a zip: all are reported as
     * truncated, whether they end inside a storage, data.pkl or the central
     * directory (every prefix is tried). */
    assert_every_cut_fails(bytes, len, "cut.pt", 4);
    free(bytes);
    if (s->have_torch) {
        char *path = path_in(s, "dtypes.pt");
        bytes = tu_read_file(path, &len);
        assert_every_cut_fails(bytes, len, "dtypes.pt", 4);
        free(bytes);
        free(path);
    }
}

static void test_truncated_safetensors(void **state)
{
    suite *s = *state;
    ckpt_tensor t[16];
    int n = make_tensors(t);
    char *path = path_in(s, "cut.safetensors");
    rc_error err;
    assert_int_equal(ckpt_write_safetensors(path, t, n, &err), 0);
    size_t len;
    char *bytes = tu_read_file(path, &len);
    assert_every_cut_fails(bytes, len, "cut.safetensors", 9);
    free(bytes);
    free(path);
}

/* The byte ranges covered by CRC-32: data.pkl and every storage. */
static int in_checked_entry(const zip_archive *z, size_t pos)
{
    for (size_t i = 0; i < z->n_entries; i++) {
        const zip_entry *e = &z->entries[i];
        if (!strstr(e->name, "/version") && pos >= e->data_offset && pos < e->data_offset + e->size)
            return 1;
    }
    return 0;
}

/* Every single-byte corruption either fails with a message naming the file
 * or (for bytes no reader looks at: padding, the version record) reads the
 * very same tensors. Bytes inside data.pkl or a storage always fail. */
static void test_corrupted_every_byte(void **state)
{
    suite *s = *state;
    size_t len;
    char *bytes = write_reference_file(s, "flip.pt", &len);
    ckpt_tensor t[16];
    int n = make_tensors(t);
    zip_archive z;
    rc_error err;
    assert_int_equal(zip_open_mem(&z, bytes, len, "flip.pt", &err), 0);
    static const uint8_t masks[] = {0x01, 0x80, 0xff};
    char *copy = malloc(len);
    int checked_failures = 0;
    for (size_t pos = 0; pos < len; pos++)
        for (size_t m = 0; m < sizeof masks; m++) {
            memcpy(copy, bytes, len);
            copy[pos] ^= (char)masks[m];
            ckpt_file f;
            err.msg[0] = '\0';
            int rc = ckpt_parse(&f, copy, len, "flip.pt", &err);
            if (rc == 0) {
                if (in_checked_entry(&z, pos))
                    fail_msg("flipping byte %zu with %02x went unnoticed", pos, masks[m]);
                assert_same_tensors(t, n, &f);
            } else {
                assert_contains(err.msg, "flip.pt");
                checked_failures += in_checked_entry(&z, pos);
            }
            ckpt_close(&f);
            /* without CRC checks the pickle and zip parsers see the damage raw */
            rc = ckpt_parse_flags(&f, copy, len, "flip.pt", CKPT_NO_CRC, &err);
            if (rc < 0)
                assert_contains(err.msg, "flip.pt");
            ckpt_close(&f);
        }
    assert_true(checked_failures > 100);
    free(copy);
    zip_close(&z);
    free(bytes);
}

static size_t find_last(const char *hay, size_t len, const char *needle, size_t n)
{
    for (size_t i = len - n + 1; i-- > 0;)
        if (memcmp(hay + i, needle, n) == 0)
            return i;
    fail_msg("signature not found");
    return 0;
}

static uint32_t le32(const char *p)
{
    const uint8_t *u = (const uint8_t *)p;
    return (uint32_t)u[0] | (uint32_t)u[1] << 8 | (uint32_t)u[2] << 16 | (uint32_t)u[3] << 24;
}

static void expect_damage(const char *bytes, size_t len, size_t pos, uint8_t value, unsigned flags,
                          const char *message)
{
    char *copy = malloc(len);
    memcpy(copy, bytes, len);
    copy[pos] = (char)value;
    ckpt_file f;
    rc_error err;
    assert_int_equal(ckpt_parse_flags(&f, copy, len, "bad.pt", flags, &err), -1);
    assert_contains(err.msg, "bad.pt");
    assert_contains(err.msg, message);
    ckpt_close(&f);
    free(copy);
}

/* Chosen corruptions, each with its own message. Offsets come from the zip
 * records themselves (APPNOTE layout): the end record, the central headers
 * (data.pkl, data/0 ... data/11, version), their local headers. */
static void test_corrupted_messages(void **state)
{
    suite *s = *state;
    size_t len;
    char *bytes = write_reference_file(s, "bad.pt", &len);
    size_t eocd = find_last(bytes, len, "PK\x05\x06", 4);
    size_t central = le32(bytes + eocd + 16);                   /* data.pkl's central header */
    size_t central1 = central + 46 + 16;                        /* data/0's: after "archive/data.pkl" */
    size_t last_central = find_last(bytes, len, "PK\x01\x02", 4); /* archive/version */
    size_t local1 = le32(bytes + central1 + 42);
    size_t storage0 = local1 + 30 + (uint8_t)bytes[local1 + 26] + (uint8_t)bytes[local1 + 28];
    assert_memory_equal(bytes + central1 + 46, "archive/data/0", 14);
    assert_memory_equal(bytes + storage0, k_f32, sizeof k_f32);

    expect_damage(bytes, len, eocd, 'X', 0, "truncated or not a zip archive (no end-of-central-directory record)");
    expect_damage(bytes, len, central1, 'X', 0, "bad central directory header at offset");
    expect_damage(bytes, len, local1, 'X', 0, "entry 'archive/data/0': local header missing");
    expect_damage(bytes, len, local1 + 30 + 8, 'X', 0, "entry 'archive/data/0': local header names a different entry");
    expect_damage(bytes, len, 64 + 10, 0xee, 0, "CRC-32 mismatch in zip entry 'archive/data.pkl'");
    expect_damage(bytes, len, storage0 + 5, 0x42, 0, "CRC-32 mismatch in zip entry 'archive/data/0'");
    expect_damage(bytes, len, 64, 0xff, CKPT_NO_CRC, "(archive/data.pkl): bad pickle at offset 0: unknown opcode 0xff");
    expect_damage(bytes, len, 64 + 2, 'I', CKPT_NO_CRC, "bad pickle at offset 2 (INT): opcode 0x49 is not supported");
    expect_damage(bytes, len, last_central + 10, 8, 0,
                  "entry 'archive/version' is compressed (method 8, deflate); compressed entries are not supported");
    expect_damage(bytes, len, last_central + 8, 1, 0, "entry 'archive/version' is encrypted");
    expect_damage(bytes, len, central + 20, 0x7f, 0, "stored entry with different compressed and uncompressed sizes");
    free(bytes);
}

static void test_not_a_checkpoint(void **state)
{
    suite *s = *state;
    struct {
        const char *bytes;
        size_t len;
        const char *message;
    } cases[] = {
        {"", 0, "empty file"},
        {"hello, world\n", 13, "not a PyTorch checkpoint (zip) or a safetensors file (it starts with bytes 68 65 6c 6c)"},
        {"\x89PNG\r\n\x1a\n\0\0", 10, "not a PyTorch checkpoint"},
        {"\x80\x02\x8a\x0alp", 6, "legacy PyTorch checkpoint"},
        {"PK\x03\x04 not really a zip", 22, "truncated or not a zip archive"},
        {"PK\x05\x06\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0", 22, "without a <folder>/data.pkl"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        ckpt_file f;
        rc_error err;
        assert_int_equal(ckpt_parse(&f, cases[i].bytes, cases[i].len, "weird.bin", &err), -1);
        assert_contains(err.msg, "weird.bin");
        assert_contains(err.msg, cases[i].message);
        ckpt_close(&f);
    }
    /* the same through files */
    ckpt_file f;
    rc_error err;
    char *path = path_in(s, "empty.pt");
    FILE *fp = fopen(path, "wb");
    fclose(fp);
    assert_int_equal(ckpt_open(&f, path, &err), -1);
    assert_contains(err.msg, path);
    assert_contains(err.msg, "empty file");
    ckpt_close(&f);
    assert_int_equal(ckpt_open(&f, s->dir, &err), -1);
    assert_contains(err.msg, "not a regular file");
    free(path);
    path = path_in(s, "missing.pt");
    assert_int_equal(ckpt_open(&f, path, &err), -1);
    assert_contains(err.msg, "missing.pt: cannot open");
    ckpt_close(&f);
    free(path);
}

/* ---- hand-made state dicts ---- */

typedef struct storage_spec {
    const char *name;       /* entry under "t/" */
    const void *data;
    size_t size;
} storage_spec;

/* A zip with t/data.pkl = the pickle and the given other entries, in memory. */
static char *make_archive(const pk_writer *pickle, const storage_spec *entries, int n, size_t *len)
{
    char *buf = NULL;
    FILE *fp = open_memstream(&buf, len);
    zip_writer w;
    rc_error err;
    zip_writer_init(&w, fp, "memory", 0);
    assert_int_equal(zip_writer_add(&w, "t/data.pkl", pickle->buf, pickle->len, &err), 0);
    for (int i = 0; i < n; i++) {
        char name[256];
        snprintf(name, sizeof name, "t/%s", entries[i].name);
        assert_int_equal(zip_writer_add(&w, name, entries[i].data, entries[i].size, &err), 0);
    }
    assert_int_equal(zip_writer_finish(&w, &err), 0);
    zip_writer_free(&w);
    fclose(fp);
    return buf;
}

static void put_dims(pk_writer *w, const int64_t *v, int n)
{
    pk_write_op(w, PK_OP_MARK);
    for (int i = 0; i < n; i++)
        pk_write_int(w, v[i]);
    pk_write_op(w, PK_OP_TUPLE);
}

/* _rebuild_tensor_v2(('storage', torch.<type>, key, 'cpu', numel), offset, shape, stride, False, {}) */
static void put_tensor_value(pk_writer *w, const char *storage_type, const char *storage_key, int64_t storage_numel,
                             int64_t offset, int ndim, const int64_t *shape, const int64_t *stride)
{
    pk_write_global(w, "torch._utils", "_rebuild_tensor_v2");
    pk_write_op(w, PK_OP_MARK);
    pk_write_op(w, PK_OP_MARK);
    pk_write_str(w, "storage");
    pk_write_global(w, "torch", storage_type);
    pk_write_str(w, storage_key);
    pk_write_str(w, "cpu");
    pk_write_int(w, storage_numel);
    pk_write_op(w, PK_OP_TUPLE);
    pk_write_op(w, PK_OP_BINPERSID);
    pk_write_int(w, offset);
    put_dims(w, shape, ndim);
    put_dims(w, stride, ndim);
    pk_write_op(w, PK_OP_NEWFALSE);
    pk_write_op(w, PK_OP_EMPTY_DICT);
    pk_write_op(w, PK_OP_TUPLE);
    pk_write_op(w, PK_OP_REDUCE);
}

/* key: tensor, as one item of a state dict */
static void put_tensor(pk_writer *w, const char *key, const char *storage_type, const char *storage_key,
                       int64_t storage_numel, int64_t offset, int ndim, const int64_t *shape, const int64_t *stride)
{
    pk_write_str(w, key);
    put_tensor_value(w, storage_type, storage_key, storage_numel, offset, ndim, shape, stride);
}

static void begin_state_dict(pk_writer *w)
{
    pk_writer_init(w);
    pk_write_proto(w, 2);
    pk_write_global(w, "collections", "OrderedDict");
    pk_write_op(w, PK_OP_EMPTY_TUPLE);
    pk_write_op(w, PK_OP_REDUCE);
    pk_write_op(w, PK_OP_MARK);
}

static void end_state_dict(pk_writer *w)
{
    pk_write_op(w, PK_OP_SETITEMS);
    pk_write_op(w, PK_OP_STOP);
}

static const float k_six[6] = {0, 1, 2, 3, 4, 5};

/* Parses the archive; returns the rc, leaves the message in err. */
static int parse_archive(const pk_writer *pickle, const storage_spec *entries, int n, ckpt_file *f, rc_error *err)
{
    size_t len;
    char *buf = make_archive(pickle, entries, n, &len);
    int rc = ckpt_parse(f, buf, len, "crafted.pt", err);
    /* the tensors may point into buf: copy what the tests look at first */
    if (rc == 0) {
        for (int i = 0; i < f->n_tensors; i++)
            if (inside_map(f, f->tensors[i].data)) {
                size_t bytes = nbytes(&f->tensors[i]);
                void *copy = ckpt_alloc_owned(f, bytes, err);
                memcpy(copy, f->tensors[i].data, bytes);
                f->tensors[i].data = copy;
            }
    }
    f->map = NULL;
    free(buf);
    return rc;
}

static void test_crafted_views(void **state)
{
    (void)state;
    pk_writer w;
    begin_state_dict(&w);
    /* storage 0..5; "t" = shape (3, 2) strides (1, 3): element [i][j] = 3j + i,
     * so row-major: 0 3 1 4 2 5. "e" = shape (2, 3) strides (0, 1) at offset 3:
     * 3 4 5 3 4 5. "s" = shape (2) strides (2) at offset 1: 1 3. */
    put_tensor(&w, "t", "FloatStorage", "0", 6, 0, 2, (int64_t[]){3, 2}, (int64_t[]){1, 3});
    put_tensor(&w, "e", "FloatStorage", "0", 6, 3, 2, (int64_t[]){2, 3}, (int64_t[]){0, 1});
    put_tensor(&w, "s", "FloatStorage", "0", 6, 1, 1, (int64_t[]){2}, (int64_t[]){2});
    put_tensor(&w, "plain", "FloatStorage", "0", 6, 2, 1, (int64_t[]){4}, (int64_t[]){1});
    end_state_dict(&w);
    ckpt_file f;
    rc_error err;
    storage_spec st[] = {{"data/0", k_six, sizeof k_six}};
    if (parse_archive(&w, st, 1, &f, &err) != 0)
        fail_msg("%s", err.msg);
    const float want_t[6] = {0, 3, 1, 4, 2, 5}, want_e[6] = {3, 4, 5, 3, 4, 5}, want_s[2] = {1, 3},
                want_plain[4] = {2, 3, 4, 5};
    assert_memory_equal(ckpt_find(&f, "t")->data, want_t, sizeof want_t);
    assert_memory_equal(ckpt_find(&f, "e")->data, want_e, sizeof want_e);
    assert_memory_equal(ckpt_find(&f, "s")->data, want_s, sizeof want_s);
    assert_memory_equal(ckpt_find(&f, "plain")->data, want_plain, sizeof want_plain);
    ckpt_close(&f);
    pk_writer_free(&w);
}

static void test_crafted_big_endian(void **state)
{
    (void)state;
    /* 1.0f = 0x3f800000, -2.5f = 0xc0200000, stored most significant byte first */
    static const uint8_t be[8] = {0x3f, 0x80, 0, 0, 0xc0, 0x20, 0, 0};
    pk_writer w;
    begin_state_dict(&w);
    put_tensor(&w, "x", "FloatStorage", "0", 2, 0, 1, (int64_t[]){2}, (int64_t[]){1});
    end_state_dict(&w);
    ckpt_file f;
    rc_error err;
    storage_spec st[] = {{"data/0", be, 8}, {"byteorder", "big", 3}};
    assert_int_equal(parse_archive(&w, st, 2, &f, &err), 0);
    const float want[2] = {1.0f, -2.5f};
    assert_memory_equal(f.tensors[0].data, want, sizeof want);
    ckpt_close(&f);
    st[1].data = "middle";
    st[1].size = 6;
    assert_int_equal(parse_archive(&w, st, 2, &f, &err), -1);
    assert_contains(err.msg, "crafted.pt: entry 't/byteorder' names an unknown byte order");
    st[1].data = "little\n";
    st[1].size = 7;
    assert_int_equal(parse_archive(&w, st, 2, &f, &err), 0);
    assert_memory_equal(f.tensors[0].data, be, 8);
    ckpt_close(&f);
    pk_writer_free(&w);
}

/* The pickle of malformed state dict number i (see test_crafted_errors). */
static void build_bad_state_dict(pk_writer *w, int i)
{
    const int64_t one[1] = {1}, big[2] = {(int64_t)1 << 40, (int64_t)1 << 40};
    const int64_t nine[9] = {1, 1, 1, 1, 1, 1, 1, 1, 1};
    if (i == 10) { /* not a dict at all */
        pk_writer_init(w);
        pk_write_op(w, PK_OP_EMPTY_LIST);
        pk_write_op(w, PK_OP_STOP);
        return;
    }
    begin_state_dict(w);
    switch (i) {
    case 0:
        put_tensor(w, "w", "FloatStorage", "0", 4, 0, 1, (int64_t[]){4}, one);
        put_tensor(w, "w", "FloatStorage", "0", 4, 0, 1, (int64_t[]){2}, one);
        break;
    case 1: put_tensor(w, "w", "FloatStorage", "0", 4, 2, 1, (int64_t[]){3}, one); break;
    case 2: put_tensor(w, "w", "FloatStorage", "0", 5, 0, 1, (int64_t[]){4}, one); break;
    case 3: put_tensor(w, "w", "FloatStorage", "9", 4, 0, 1, (int64_t[]){4}, one); break;
    case 4:
        pk_write_str(w, "x");
        pk_write_int(w, 5);
        break;
    case 5: put_tensor(w, "w", "ComplexFloatStorage", "0", 2, 0, 1, (int64_t[]){2}, one); break;
    case 6: put_tensor(w, "w", "FloatStorage", "0", 4, 0, 2, big, (int64_t[]){(int64_t)1 << 40, 1}); break;
    case 7: put_tensor(w, "w", "FloatStorage", "0", 4, 0, 1, (int64_t[]){-1}, one); break;
    case 8: put_tensor(w, "w", "FloatStorage", "0", 4, 0, 9, nine, nine); break;
    case 9: put_tensor(w, "w", "FloatStorage", "0", 4, 3, 1, (int64_t[]){2}, (int64_t[]){-1}); break;
    case 11: put_tensor(w, "w", "FloatStorage", "0", 4, -1, 1, (int64_t[]){2}, one); break;
    case 12: /* rows overlapping by 3 elements: the last one is element 6 of 4 */
        put_tensor(w, "w", "FloatStorage", "0", 4, 0, 2, (int64_t[]){4, 4}, (int64_t[]){1, 1});
        break;
    case 13: /* 2^40 copies of one element (stride 0): 4 TiB to copy from a 16-byte storage */
        put_tensor(w, "w", "FloatStorage", "0", 4, 0, 2, (int64_t[]){1 << 20, 1 << 20}, (int64_t[]){0, 0});
        break;
    }
    end_state_dict(w);
}

/* Each malformed state dict gives its own message. */
static void test_crafted_errors(void **state)
{
    (void)state;
    static const float four[4] = {1, 2, 3, 4};
    storage_spec st[] = {{"data/0", four, 16}};
    static const char *const messages[] = {
        "crafted.pt: key 'w' appears twice",
        "crafted.pt: key 'w' (shape of 3 elements at storage offset 2) extends past its storage 't/data/0' of 4 elements",
        "crafted.pt: key 'w': storage 't/data/0' holds 16 bytes but its header says 5 elements of float32",
        "crafted.pt: key 'w': its storage 't/data/9' is missing from the archive",
        "crafted.pt: key 'x' is not a tensor (it is int 5)",
        "crafted.pt: key 'w' has an unsupported storage type (global torch.ComplexFloatStorage)",
        "crafted.pt: tensor 'w' is too large",
        "crafted.pt: tensor 'w' has a negative dimension (-1)",
        "crafted.pt: key 'w': malformed tensor arguments",
        "crafted.pt: key 'w' has a negative stride",
        "crafted.pt: the pickle holds list of 0, not a state dict",
        "crafted.pt: key 'w' has a negative storage offset",
        "crafted.pt: key 'w' (shape of 16 elements at storage offset 0) extends past its storage",
        "crafted.pt: key 'w' is a strided view of 4398046511104 bytes over a storage of 16 bytes: too large to copy",
    };
    for (int i = 0; i < (int)(sizeof messages / sizeof messages[0]); i++) {
        pk_writer w;
        build_bad_state_dict(&w, i);
        ckpt_file f;
        rc_error err;
        assert_int_equal(parse_archive(&w, st, 1, &f, &err), -1);
        assert_contains(err.msg, messages[i]);
        ckpt_close(&f);
        pk_writer_free(&w);
    }
}

static void test_crafted_accepted_forms(void **state)
{
    (void)state;
    static const float four[4] = {1, 2, 3, 4};
    storage_spec st[] = {{"data/0", four, 16}, {"version", "3\n", 2}};
    /* a plain dict holding an nn.Parameter (_rebuild_parameter(tensor, True,
     * {})) over elements 1..3, and an empty (0, 5) tensor at the storage's end */
    pk_writer w;
    pk_writer_init(&w);
    pk_write_proto(&w, 2);
    pk_write_op(&w, PK_OP_EMPTY_DICT);
    pk_write_op(&w, PK_OP_MARK);
    pk_write_str(&w, "p");
    pk_write_global(&w, "torch._utils", "_rebuild_parameter");
    pk_write_op(&w, PK_OP_MARK);
    put_tensor_value(&w, "FloatStorage", "0", 4, 1, 1, (int64_t[]){3}, (int64_t[]){1});
    pk_write_op(&w, PK_OP_NEWTRUE);
    pk_write_op(&w, PK_OP_EMPTY_DICT);
    pk_write_op(&w, PK_OP_TUPLE);
    pk_write_op(&w, PK_OP_REDUCE);
    put_tensor(&w, "none", "FloatStorage", "0", 4, 4, 2, (int64_t[]){0, 5}, (int64_t[]){5, 1});
    pk_write_op(&w, PK_OP_SETITEMS);
    pk_write_op(&w, PK_OP_STOP);
    ckpt_file f;
    rc_error err;
    if (parse_archive(&w, st, 2, &f, &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(f.n_tensors, 2);
    assert_string_equal(f.tensors[0].name, "p");
    const float want[3] = {2, 3, 4};
    assert_memory_equal(f.tensors[0].data, want, sizeof want);
    assert_int_equal(f.tensors[1].numel, 0);
    assert_int_equal(f.tensors[1].ndim, 2);
    ckpt_close(&f);
    pk_writer_free(&w);
}

/* ---- safetensors ---- */

/* header length (or `claimed` when non-zero), header, data. */
static char *st_buffer(const char *header, const void *data, size_t data_len, uint64_t claimed, size_t *len)
{
    size_t h = strlen(header);
    *len = 8 + h + data_len;
    char *buf = malloc(*len);
    uint64_t n = claimed ? claimed : h;
    for (int i = 0; i < 8; i++)
        buf[i] = (char)(n >> (8 * i));
    memcpy(buf + 8, header, h);
    memcpy(buf + 8 + h, data, data_len);
    return buf;
}

static void test_safetensors_good(void **state)
{
    (void)state;
    /* a: float32 [1.5, -2], b: int64 scalar 7, c: bf16 [1] (0x3f80), padded header */
    uint8_t data[18];
    const float a[2] = {1.5f, -2.0f};
    const int64_t b = 7;
    memcpy(data, a, 8);
    memcpy(data + 8, &b, 8);
    data[16] = 0x80;
    data[17] = 0x3f;
    size_t len;
    char *buf = st_buffer("{\"__metadata__\":{\"format\":\"pt\"},\"a\":{\"dtype\":\"F32\",\"shape\":[2],"
                          "\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[8,16]},"
                          "\"c\":{\"dtype\":\"BF16\",\"shape\":[1,1],\"data_offsets\":[16,18]}}   ",
                          data, sizeof data, 0, &len);
    ckpt_file f;
    rc_error err;
    if (ckpt_parse(&f, buf, len, "good.safetensors", &err) != 0)
        fail_msg("%s", err.msg);
    assert_int_equal(f.n_tensors, 3);
    assert_string_equal(f.tensors[0].name, "a");
    assert_memory_equal(f.tensors[0].data, a, 8);
    assert_int_equal(f.tensors[1].ndim, 0);
    assert_int_equal(f.tensors[1].numel, 1);
    assert_memory_equal(f.tensors[1].data, &b, 8);
    float c;
    assert_int_equal(ckpt_to_f32(&f.tensors[2], &c, &err), 0);
    assert_true(c == 1.0f);
    ckpt_close(&f);
    free(buf);
}

static void test_safetensors_errors(void **state)
{
    (void)state;
    static const uint8_t data[16] = {0};
    struct {
        const char *header;
        uint64_t claimed;     /* header length to claim instead of the real one */
        size_t data_len;
        const char *message;
    } cases[] = {
        {"{", 0, 0, "safetensors header of 1 bytes is too short"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}", 1000, 16,
         "truncated or corrupt safetensors file (header of 1000 bytes runs past the end of the"},
        {"{}", (uint64_t)1 << 62, 0, "header of 4611686018427387904 bytes runs past the end"},
        {"{\"a\": }", 0, 0, "safetensors header is not a valid JSON object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} x", 0, 16, "has bytes after its JSON object"},
        {"{\"a\":{\"dtype\":\"U16\",\"shape\":[2],\"data_offsets\":[0,4]}}", 0, 16, "tensor 'a' has unsupported dtype 'U16'"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,100]}}", 0, 16,
         "tensor 'a' has data_offsets [0, 100] outside the 16 bytes of data"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}", 0, 16, "outside the 16 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[3],\"data_offsets\":[0,8]}}", 0, 16,
         "tensor 'a' has data_offsets [0, 8] (8 bytes) but its shape and dtype float32 need 12 bytes"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[2],"
         "\"data_offsets\":[4,12]}}", 0, 16, "tensors 'a' and 'b' overlap"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[-1],\"data_offsets\":[0,0]}}", 0, 16, "not a non-negative integer"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1.5],\"data_offsets\":[0,4]}}", 0, 16, "not a non-negative integer"},
        {"{\"a\":{\"shape\":[1],\"data_offsets\":[0,4]}}", 0, 16, "tensor 'a' lacks a string \"dtype\""},
        {"{\"a\":5}", 0, 16, "entry 'a' is not an object"},
        {"{\"__metadata__\":[1]}", 0, 0, "\"__metadata__\" is not an object"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0]}}", 0, 16, "not two non-negative integers"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]},\"a\":{\"dtype\":\"F32\",\"shape\":[1],"
         "\"data_offsets\":[4,8]}}", 0, 16, "key 'a' appears twice"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,1],\"data_offsets\":[0,4]}}", 0, 16, "9 dimensions"},
        {"{\"a\":{\"dtype\":\"F32\",\"shape\":[4294967296,4294967296,4294967296],\"data_offsets\":[0,4]}}", 0, 16,
         "too large"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        size_t len;
        char *buf = st_buffer(cases[i].header, data, cases[i].data_len, cases[i].claimed, &len);
        ckpt_file f;
        rc_error err;
        assert_int_equal(ckpt_parse(&f, buf, len, "bad.safetensors", &err), -1);
        assert_contains(err.msg, "bad.safetensors");
        assert_contains(err.msg, cases[i].message);
        ckpt_close(&f);
        free(buf);
    }
}

/* ---- the pickle machine alone ---- */

static pk_value *load_ok(pk_doc *doc, const char *bytes, size_t len)
{
    rc_error err;
    if (pk_load(doc, bytes, len, NULL, "p.pkl", &err) != 0)
        fail_msg("%s", err.msg);
    return doc->root;
}

static void test_pickle_values(void **state)
{
    (void)state;
    pk_doc doc;
    /* MARK, BININT -1, BININT1 5, BININT2 256, LONG1 2 bytes 00 80 (-32768),
     * LONG1 0 bytes (0), NEWTRUE, NONE, BINFLOAT 1.5 (big-endian 3ff8...),
     * BINUNICODE "abc", SHORT_BINUNICODE "hi", SHORT_BINBYTES "z", TUPLE, STOP */
    static const char p1[] = "\x80\x02(J\xff\xff\xff\xffK\x05M\x00\x01\x8a\x02\x00\x80\x8a\x00\x88NG\x3f\xf8\0\0\0\0\0\0"
                             "X\x03\0\0\0abc\x8c\x02hiC\x01zt.";
    pk_value *v = load_ok(&doc, p1, sizeof p1 - 1);
    assert_int_equal(v->kind, PK_TUPLE);
    assert_int_equal(v->items.n, 11);
    const int64_t ints[5] = {-1, 5, 256, -32768, 0};
    for (int i = 0; i < 5; i++) {
        assert_int_equal(v->items.v[i]->kind, PK_INT);
        assert_int_equal(v->items.v[i]->i, ints[i]);
    }
    assert_int_equal(v->items.v[5]->kind, PK_BOOL);
    assert_int_equal(v->items.v[5]->i, 1);
    assert_int_equal(v->items.v[6]->kind, PK_NONE);
    assert_true(v->items.v[7]->kind == PK_FLOAT && v->items.v[7]->f == 1.5);
    assert_true(pk_is_str(v->items.v[8], "abc"));
    assert_true(pk_is_str(v->items.v[9], "hi"));
    assert_true(v->items.v[10]->kind == PK_BYTES && v->items.v[10]->len == 1 && v->items.v[10]->str[0] == 'z');
    assert_int_equal(v->depth, 1);
    pk_free(&doc);

    /* a list that contains itself through the memo: EMPTY_LIST BINPUT 0 BINGET 0 APPEND */
    v = load_ok(&doc, "]q\x00h\x00" "a.", 7);
    assert_int_equal(v->kind, PK_LIST);
    assert_ptr_equal(v->items.v[0], v);
    pk_free(&doc);

    /* protocol 4: SHORT_BINUNICODE + MEMOIZE (indices 0, 1), STACK_GLOBAL, BINGET 0 */
    static const char p2[] = "\x80\x04\x95\x12\0\0\0\0\0\0\0\x8c\x03mod\x94\x8c\x04name\x94\x93h\x00\x86.";
    v = load_ok(&doc, p2, sizeof p2 - 1);
    assert_int_equal(v->kind, PK_TUPLE);
    assert_true(pk_is_global(v->items.v[0], "mod", "name"));
    assert_true(pk_is_str(v->items.v[1], "mod"));
    pk_free(&doc);

    /* OrderedDict() REDUCE, SETITEMS, BUILD with a state: the shape of a state dict */
    static const char p3[] = "\x80\x02\x63\x63ollections\nOrderedDict\n)R(X\x01\0\0\0kK\x07u}b.";
    v = load_ok(&doc, p3, sizeof p3 - 1);
    assert_true(pk_is_call(v, "collections", "OrderedDict"));
    assert_int_equal(v->entries.n, 2);
    assert_true(pk_is_str(v->entries.v[0], "k"));
    assert_int_equal(v->entries.v[1]->i, 7);
    assert_int_equal(v->state->kind, PK_DICT);
    char text[64];
    assert_string_equal(pk_describe(v, text, sizeof text), "collections.OrderedDict(...)");
    pk_free(&doc);
}

static void test_pickle_writer_ints(void **state)
{
    (void)state;
    const int64_t values[] = {0, 255, 256, 65535, 65536, -1, INT32_MIN, INT32_MAX, (int64_t)INT32_MAX + 1,
                              -((int64_t)1 << 40), INT64_MIN, INT64_MAX, 128, -128, 32768};
    const size_t n = sizeof values / sizeof values[0];
    pk_writer w;
    pk_writer_init(&w);
    pk_write_proto(&w, 2);
    pk_write_op(&w, PK_OP_MARK);
    for (size_t i = 0; i < n; i++)
        pk_write_int(&w, values[i]);
    pk_write_op(&w, PK_OP_TUPLE);
    pk_write_op(&w, PK_OP_STOP);
    assert_false(w.failed);
    pk_doc doc;
    pk_value *v = load_ok(&doc, (const char *)w.buf, w.len);
    assert_int_equal(v->items.n, n);
    for (size_t i = 0; i < n; i++)
        assert_int_equal(v->items.v[i]->i, values[i]);
    pk_free(&doc);
    /* LONG1 encodings are minimal, as Python writes them: 2^31 is 00 00 00 80 00 */
    pk_writer_free(&w);
    pk_writer_init(&w);
    pk_write_int(&w, (int64_t)INT32_MAX + 1);
    assert_int_equal(w.len, 7);
    assert_memory_equal(w.buf, "\x8a\x05\x00\x00\x00\x80\x00", 7);
    pk_writer_free(&w);
}

static void test_pickle_errors(void **state)
{
    (void)state;
    char deep[256];
    memcpy(deep, "K\x00", 2);
    memset(deep + 2, 0x85, 150); /* TUPLE1 150 times */
    deep[152] = '.';
    struct {
        const char *bytes;
        size_t len;
        const char *message;
    } cases[] = {
        {"\x80\x02h\x05.", 5, "p.pkl: bad pickle at offset 2 (BINGET): memo index 5 was never set"},
        {"\x80\x02\xff", 3, "p.pkl: bad pickle at offset 2: unknown opcode 0xff"},
        {"\x80\x02I1\n.", 6, "bad pickle at offset 2 (INT): opcode 0x49 is not supported"},
        {"\x80\x02\x82\x01", 4, "(EXT1): opcode 0x82 is not supported"},
        {"X\x10\0\0\0ab", 7, "bad pickle at offset 0 (BINUNICODE): truncated: needs 16 bytes, 2 left"},
        {"K\x01", 2, "p.pkl: truncated pickle (no STOP opcode in its 2 bytes)"},
        {"0", 1, "(POP): stack is empty"},
        {".", 1, "(STOP): stack is empty"},
        {deep, 153, "values nest deeper than 100 levels"},
        {"N\x72\xff\xff\xff\x7f.", 7, "(LONG_BINPUT): memo index 2147483647 exceeds the limit"},
        {"X\x01\0\0\0\xff.", 7, "(BINUNICODE): string is not valid UTF-8"},
        {"X\x02\0\0\0\xc0\x80.", 8, "not valid UTF-8"}, /* overlong NUL */
        {")K\x01K\x02s.", 7, "(SETITEM): sets items on a tuple"},
        {"K\x01t.", 4, "(TUPLE): no MARK to close"},
        {"K\x01(\x85.", 5, "(TUPLE1): needs 1 values above the MARK"},
        {"(K\x01u.", 5, "(SETITEMS): nothing below the MARK"},
        {"}(K\x01u.", 6, "(SETITEMS): odd number of values"},
        {"](K\x01K\x02u.", 8, "(SETITEMS): sets items on a list of 0"},
        {"\x80\x06.", 3, "unsupported pickle protocol 6"},
        {"\x95\xff\0\0\0\0\0\0\0N.", 11, "(FRAME): truncated: frame of 255 bytes, 2 left"},
        {"K\x01K\x02\x93.", 6, "(STACK_GLOBAL): module and name are not strings"},
        {"\x8a\x09\0\0\0\0\0\0\0\0\x01.", 12, "(LONG1): integer of 9 bytes does not fit in 64 bits"},
        {"\x8b\xff\xff\xff\xff.", 6, "(LONG4): negative length"},
        {"K\x01Nb.", 5, "(BUILD): sets the state of a int 1"},
        {"cmod\n", 5, "(GLOBAL): truncated: no newline after the name"},
        {"\x97.", 2, "(NEXT_BUFFER): opcode 0x97 is not supported"},
        {"(10", 3, "(POP): stack is empty"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        pk_doc doc;
        rc_error err;
        if (pk_load(&doc, cases[i].bytes, cases[i].len, NULL, "p.pkl", &err) != -1)
            fail_msg("case %zu was accepted", i);
        assert_contains(err.msg, cases[i].message);
        assert_null(doc.root);
        pk_free(&doc);
    }
    /* limits */
    pk_limits lim;
    pk_default_limits(&lim);
    lim.max_values = 10;
    pk_doc doc;
    rc_error err;
    assert_int_equal(pk_load(&doc, "(NNNNNNNNNNNNNNNNt.", 19, &lim, "p.pkl", &err), -1);
    assert_contains(err.msg, "(NONE): more than 10 values and container slots");
    pk_default_limits(&lim);
    lim.max_str = 3;
    assert_int_equal(pk_load(&doc, "X\x04\0\0\0abcd.", 10, &lim, "p.pkl", &err), -1);
    assert_contains(err.msg, "string of 4 bytes exceeds the limit of 3");
    pk_default_limits(&lim);
    lim.max_stack = 4;
    assert_int_equal(pk_load(&doc, "NNNNN", 5, &lim, "p.pkl", &err), -1);
    assert_contains(err.msg, "(NONE): stack deeper than 4");
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_to_f32_conversions),
        cmocka_unit_test(test_dtype_names),
        cmocka_unit_test(test_crc32),
        cmocka_unit_test(test_roundtrip_torch),
        cmocka_unit_test(test_roundtrip_torch_zip64),
        cmocka_unit_test(test_roundtrip_safetensors),
        cmocka_unit_test(test_archive_name_and_overwrite),
        cmocka_unit_test(test_writer_errors),
        cmocka_unit_test(test_torch_dtypes),
        cmocka_unit_test(test_torch_param),
        cmocka_unit_test(test_torch_module_metadata),
        cmocka_unit_test(test_torch_renamed_archive),
        cmocka_unit_test(test_torch_views),
        cmocka_unit_test(test_torch_protocol4),
        cmocka_unit_test(test_torch_big_endian),
        cmocka_unit_test(test_torch_deflated),
        cmocka_unit_test(test_python_reads_c_files),
        cmocka_unit_test(test_truncated_torch),
        cmocka_unit_test(test_truncated_safetensors),
        cmocka_unit_test(test_corrupted_every_byte),
        cmocka_unit_test(test_corrupted_messages),
        cmocka_unit_test(test_not_a_checkpoint),
        cmocka_unit_test(test_crafted_views),
        cmocka_unit_test(test_crafted_big_endian),
        cmocka_unit_test(test_crafted_errors),
        cmocka_unit_test(test_crafted_accepted_forms),
        cmocka_unit_test(test_safetensors_good),
        cmocka_unit_test(test_safetensors_errors),
        cmocka_unit_test(test_pickle_values),
        cmocka_unit_test(test_pickle_writer_ints),
        cmocka_unit_test(test_pickle_errors),
    };
    return cmocka_run_group_tests(tests, suite_setup, suite_teardown);
}
