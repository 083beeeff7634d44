/* Tests of pipeline/caption_file.h, the reader of `radcap score`'s
 * candidate and reference files: each format, detection, the conventions
 * (header, BOM, CRLF, repeated ids, id fallbacks) and each error message
 * with its file and line. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <cmocka.h>

#include "pipeline/caption_file.h"

static capfile *parse_ok(const char *text, capfile_format format)
{
    rc_error err = {{0}};
    capfile *f = capfile_parse(text, strlen(text), format, "t.txt", &err);
    if (!f)
        fail_msg("unexpected error: %s", err.msg);
    return f;
}

static void expect_error(const char *text, size_t len, capfile_format format, const char *message)
{
    rc_error err = {{0}};
    capfile *f = capfile_parse(text, len, format, "t.txt", &err);
    if (f)
        fail_msg("expected an error for [%s]", text);
    if (!strstr(err.msg, message))
        fail_msg("message [%s] lacks [%s]", err.msg, message);
}

static void expect_error_text(const char *text, capfile_format format, const char *message)
{
    expect_error(text, strlen(text), format, message);
}

static void expect_entry(const capfile *f, const char *id, size_t n, const char *const *captions)
{
    const capfile_entry *e = capfile_find(f, id);
    if (!e)
        fail_msg("no entry %s", id);
    assert_int_equal(e->n_captions, n);
    for (size_t k = 0; k < n; k++)
        assert_string_equal(e->captions[k], captions[k]);
}

static void test_tsv(void **state)
{
    (void)state;
    /* BOM, header, CRLF, a repeated id, a tab inside a caption, blank lines,
     * an empty caption */
    const char *text = "\xEF\xBB\xBFID\tCaption\r\nimg1\tA mass.\r\n\r\nimg2\tNo\tpneumothorax.\n   \nimg1\tA lesion.\nimg3\t\n";
    capfile *f = parse_ok(text, CAPFILE_AUTO);
    assert_int_equal(f->format, CAPFILE_TSV);
    assert_int_equal(f->n_entries, 3);
    assert_string_equal(f->entries[0].id, "img1");
    assert_string_equal(f->entries[1].id, "img2");
    expect_entry(f, "img1", 2, (const char *[]){"A mass.", "A lesion."});
    expect_entry(f, "img2", 1, (const char *[]){"No\tpneumothorax."});
    expect_entry(f, "img3", 1, (const char *[]){""});
    assert_int_equal(capfile_find(f, "img1")->lines[1], 6);
    assert_null(capfile_find(f, "ID"));
    capfile_free(f);
    /* "id<TAB>caption" is a header only on the first line */
    f = parse_ok("a\tb\nid\tcaption\n", CAPFILE_TSV);
    expect_entry(f, "id", 1, (const char *[]){"caption"});
    capfile_free(f);
}

static void test_jsonl(void **state)
{
    (void)state;
    const char *text = "{\"id\": \"img1\", \"caption\": \"A mass.\", \"path\": \"x.png\"}\n"
                       "\n"
                       "{\"image_id\": 42, \"caption\": [\"one\", \"two\"]}\n"
                       "{\"path\": \"dir/y.png\", \"caption\": []}\n"
                       "{\"id\": \"img1\", \"caption\": \"Again.\"}\n"
                       "{\"id\": 1.5, \"caption\": \"x\"}\n";
    capfile *f = parse_ok(text, CAPFILE_AUTO);
    assert_int_equal(f->format, CAPFILE_JSONL);
    assert_int_equal(f->n_entries, 4);
    expect_entry(f, "img1", 2, (const char *[]){"A mass.", "Again."});
    expect_entry(f, "42", 2, (const char *[]){"one", "two"});
    expect_entry(f, "dir/y.png", 0, NULL);
    expect_entry(f, "1.5", 1, (const char *[]){"x"});
    assert_int_equal(capfile_find(f, "img1")->lines[1], 5);
    capfile_free(f);
}

static void test_json_array(void **state)
{
    (void)state;
    capfile *f = parse_ok("  [{\"image_id\": 7, \"caption\": \"a\"}, {\"id\": \"7\", \"caption\": [\"b\"]}]", CAPFILE_AUTO);
    assert_int_equal(f->format, CAPFILE_JSON);
    expect_entry(f, "7", 2, (const char *[]){"a", "b"});
    capfile_free(f);
    f = parse_ok("", CAPFILE_AUTO);
    assert_int_equal(f->n_entries, 0);
    capfile_free(f);
}

static void test_errors(void **state)
{
    (void)state;
    expect_error_text("img1\tok\nimg2 no tab\n", CAPFILE_TSV, "t.txt:2: expected ID<TAB>CAPTION");
    expect_error_text("\tcaption\n", CAPFILE_TSV, "t.txt:1: empty image id");
    expect_error_text("im\xff\tcaption\n", CAPFILE_TSV, "t.txt:1: the image id is not valid UTF-8");
    expect_error("img\tcap\0tion\n", 12, CAPFILE_TSV, "t.txt:1: the caption contains a NUL byte");
    expect_error_text("{\"id\": \"a\", \"caption\": \"x\"}\n{\"id\": \"b\"\n", CAPFILE_JSONL, "t.txt:2: not valid JSON");
    expect_error_text("{\"id\": \"a\"}\n", CAPFILE_JSONL, "t.txt:1: no \"caption\" key");
    expect_error_text("{\"caption\": \"a\"}\n", CAPFILE_JSONL, "t.txt:1: no \"id\"");
    expect_error_text("{\"id\": true, \"caption\": \"a\"}\n", CAPFILE_JSONL, "\"id\" must be a string or a number");
    expect_error_text("{\"path\": 3, \"caption\": \"a\"}\n", CAPFILE_JSONL, "\"path\" must be a string");
    expect_error_text("{\"id\": \"a\", \"caption\": 3}\n", CAPFILE_JSONL, "\"caption\" must be a string or a list");
    expect_error_text("{\"id\": \"a\", \"caption\": [\"x\", 3]}\n", CAPFILE_JSONL, "\"caption\" must be a string or a list");
    expect_error_text("[1, 2]", CAPFILE_JSON, "t.txt: array element 1: expected a JSON object");
    expect_error_text("[{\"id\": \"a\", \"caption\": \"x\"}, {\"id\": \"\", \"caption\": \"y\"}]", CAPFILE_JSON,
                 "array element 2: empty image id");
    expect_error_text("{\"id\": \"a\"}", CAPFILE_JSON, "expected a JSON array");
    expect_error_text("[", CAPFILE_JSON, "not valid JSON");
    rc_error err = {{0}};
    assert_null(capfile_load("/nonexistent/refs.tsv", CAPFILE_AUTO, &err));
    assert_non_null(strstr(err.msg, "/nonexistent/refs.tsv: cannot open the caption file"));
}

static void test_format_names(void **state)
{
    (void)state;
    capfile_format f;
    assert_int_equal(capfile_format_from_name("jsonl", &f), 0);
    assert_int_equal(f, CAPFILE_JSONL);
    assert_string_equal(capfile_format_name(f), "jsonl");
    assert_int_equal(capfile_format_from_name("csv", &f), -1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_tsv),        cmocka_unit_test(test_jsonl),        cmocka_unit_test(test_json_array),
        cmocka_unit_test(test_errors),     cmocka_unit_test(test_format_names),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
