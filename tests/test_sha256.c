/* test_sha256.c: SHA-256 against the FIPS 180-2 / NIST example vectors and
 * against coreutils' sha256sum (an independent implementation) on files of
 * lengths around the padding boundaries. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "io/sha256.h"
#include "tests/helpers/testutil.h"

static void test_fips_vectors(void **state)
{
    (void)state;
    char hex[SHA256_HEX_SIZE];
    /* FIPS 180-2 appendix B.1 ("abc"), B.2 (448 bits), the empty message,
     * and the 896-bit message of the NIST examples. */
    sha256_hex("abc", 3, hex);
    assert_string_equal(hex, "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    const char *b2 = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    sha256_hex(b2, strlen(b2), hex);
    assert_string_equal(hex, "248d6a61d20638b8e5c026930c3e6039a33ce45964ff2167f6ecedd419db06c1");
    sha256_hex(NULL, 0, hex);
    assert_string_equal(hex, "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
    const char *b896 = "abcdefghbcdefghicdefghijdefghijkefghijklfghijklmghijklmnhijklmnoijklmnopjklmnopqklmnopqrlmnopqrs"
                       "mnopqrstnopqrstu";
    sha256_hex(b896, strlen(b896), hex);
    assert_string_equal(hex, "cf5b16a778af8380036ce59e7b0492370b249b11e8f07a51afac45037afee9d1");
}

static void test_million_a_streamed(void **state)
{
    (void)state;
    /* FIPS 180-2 appendix B.3: one million 'a', fed in uneven pieces so that
     * partial blocks are joined across calls. */
    char chunk[997];
    memset(chunk, 'a', sizeof chunk);
    sha256_ctx ctx;
    sha256_init(&ctx);
    size_t left = 1000000, piece = 1;
    while (left > 0) {
        size_t n = piece < left ? piece : left;
        sha256_update(&ctx, chunk, n);
        left -= n;
        piece = (piece * 7 + 3) % sizeof chunk + 1; /* 1..997 */
    }
    uint8_t digest[SHA256_DIGEST_SIZE];
    sha256_final(&ctx, digest);
    char hex[SHA256_HEX_SIZE];
    sha256_to_hex(digest, hex);
    assert_string_equal(hex, "cdc76e5c9914fb9281a1c7e284d73e67f1809a48a497200e046d39ccc7112cd0");
}

static void test_files_match_sha256sum(void **state)
{
    (void)state;
    if (tu_run("sha256sum --version >/dev/null 2>&1") != 0)
        skip();
    char *dir = tu_mkdtemp("sha256");
    assert_non_null(dir);
    /* Lengths around one and two blocks (55/56 is where the length no longer
     * fits the last block) and a file larger than the read buffer. */
    const size_t lengths[] = {0, 1, 55, 56, 63, 64, 65, 119, 120, 128, 200000};
    for (size_t i = 0; i < sizeof lengths / sizeof lengths[0]; i++) {
        char path[4200], cmd[8600];
        snprintf(path, sizeof path, "%s/f%zu", dir, lengths[i]);
        FILE *f = fopen(path, "wb");
        assert_non_null(f);
        for (size_t k = 0; k < lengths[i]; k++)
            fputc((int)((k * 131 + 7) & 0xff), f);
        assert_int_equal(fclose(f), 0);
        char hex[SHA256_HEX_SIZE];
        rc_error err = {{0}};
        assert_int_equal(sha256_file(path, hex, &err), 0);
        snprintf(cmd, sizeof cmd, "sha256sum '%s' > '%s.sum'", path, path);
        assert_int_equal(tu_run(cmd), 0);
        snprintf(cmd, sizeof cmd, "%s.sum", path);
        char *sum = tu_read_file(cmd, NULL);
        assert_non_null(sum);
        sum[64] = '\0';
        assert_string_equal(hex, sum);
        free(sum);
    }
    char hex[SHA256_HEX_SIZE];
    rc_error err = {{0}};
    assert_int_equal(sha256_file("/nonexistent/radcap.bin", hex, &err), -1);
    assert_string_equal(err.msg, "cannot open /nonexistent/radcap.bin for hashing: No such file or directory");
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    tu_run(cmd);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_fips_vectors),
        cmocka_unit_test(test_million_a_streamed),
        cmocka_unit_test(test_files_match_sha256sum),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
