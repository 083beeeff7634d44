/* Tests of engine/file.h: a file read whole, byte for byte, across the
 * buffer's growth (sizes around 64 KiB and its doubling, NUL bytes inside),
 * the size limit, and the messages for a missing file and a folder. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <cmocka.h>

#include "engine/file.h"
#include "tests/helpers/testutil.h"

static char *write_bytes(const char *dir, size_t n, unsigned seed)
{
    char *path = malloc(strlen(dir) + 32);
    assert_non_null(path);
    sprintf(path, "%s/f%zu", dir, n);
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    for (size_t i = 0; i < n; i++)
        fputc((int)((i * 2654435761u + seed) >> 13 & 0xFF), f); /* every byte value, NUL among them */
    assert_int_equal(fclose(f), 0);
    return path;
}

static void test_whole_file_exactly(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("file");
    const size_t sizes[] = {0, 1, 65535, 65536, 65537, 131072, 300001};
    for (size_t s = 0; s < sizeof sizes / sizeof *sizes; s++) {
        char *path = write_bytes(dir, sizes[s], (unsigned)s);
        size_t len = 12345;
        rc_error err = {{0}};
        char *data = rc_read_file(path, (size_t)1 << 20, "the test file", &len, &err);
        if (!data)
            fail_msg("%s", err.msg);
        assert_int_equal(len, sizes[s]);
        assert_int_equal(data[len], '\0');
        for (size_t i = 0; i < len; i++)
            if ((unsigned char)data[i] != (unsigned char)((i * 2654435761u + (unsigned)s) >> 13 & 0xFF))
                fail_msg("size %zu: byte %zu differs", sizes[s], i);
        free(data);
        unlink(path);
        free(path);
    }
    rmdir(dir);
    free(dir);
}

static void test_limit_and_errors(void **state)
{
    (void)state;
    char *dir = tu_mkdtemp("file");
    char *path = write_bytes(dir, ((size_t)1 << 20) + 1, 7);
    size_t len;
    rc_error err = {{0}};
    assert_null(rc_read_file(path, (size_t)1 << 20, "the test file", &len, &err));
    char want[512];
    snprintf(want, sizeof want, "%s: the test file is larger than 1 MiB", path);
    assert_string_equal(err.msg, want);
    /* exactly at the limit is fine */
    rc_clear(&err);
    char *data = rc_read_file(path, ((size_t)1 << 20) + 1, "the test file", &len, &err);
    assert_non_null(data);
    assert_int_equal(len, ((size_t)1 << 20) + 1);
    free(data);
    unlink(path);
    free(path);

    assert_null(rc_read_file("/nonexistent/x.json", 1 << 20, "the job file", &len, &err));
    assert_string_equal(err.msg, "/nonexistent/x.json: cannot open the job file: No such file or directory");
    assert_null(rc_read_file(dir, 1 << 20, "the job file", &len, &err)); /* a folder opens, but cannot be read */
    snprintf(want, sizeof want, "%s: cannot read the job file", dir);
    assert_string_equal(err.msg, want);
    rmdir(dir);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_whole_file_exactly),
        cmocka_unit_test(test_limit_and_errors),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
