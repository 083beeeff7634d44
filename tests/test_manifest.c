/* test_manifest.c: the RFC 4180 reader and writer, and the four manifest
 * kinds (ROCOv2 CSV + image folder, JSON Lines, list, folder) with their
 * problem reports. Expected entries and messages are written out by hand
 * from the inputs below; the UTF-8 replacements follow Unicode's "maximal
 * subpart" practice, which Python's bytes.decode('utf-8', 'replace') also
 * follows (checked by hand: b'\xed\xa0\x80' gives three U+FFFD). */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "io/csv.h"
#include "io/manifest.h"
#include "tests/helpers/testutil.h"

/* ---- helpers ------------------------------------------------------------- */

/* Writes len bytes (strlen when len is (size_t)-1) to dir/name, creating
 * the parent folders of name. */
static void write_file(const char *dir, const char *name, const char *data, size_t len)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    for (char *slash = strchr(path + strlen(dir) + 1, '/'); slash; slash = strchr(slash + 1, '/')) {
        *slash = '\0';
        mkdir(path, 0777);
        *slash = '/';
    }
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    if (len == (size_t)-1)
        len = strlen(data);
    assert_int_equal(fwrite(data, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

static char *join(const char *dir, const char *name)
{
    size_t n = strlen(dir) + strlen(name) + 2;
    char *p = malloc(n);
    assert_non_null(p);
    snprintf(p, n, "%s/%s", dir, name);
    return p;
}

/* A fresh temporary folder under the build folder, as an absolute path
 * (symbolic links and absolute-path rows need one). */
static char *make_tmpdir(const char *label)
{
    char *dir = tu_mkdtemp(label);
    assert_non_null(dir);
    char *absolute = realpath(dir, NULL);
    assert_non_null(absolute);
    free(dir);
    return absolute;
}

static void remove_tree(char *dir)
{
    char cmd[4200];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", dir);
    assert_int_equal(tu_run(cmd), 0);
    free(dir);
}

/* Checks one entry: id, path (relative to dir, or absolute when dir is
 * NULL), line, missing flag and references (NULL-terminated list). */
static void check_entry(const manifest_entry *e, const char *id, const char *dir, const char *rel_path, long line,
                        int missing, const char *const *refs)
{
    assert_string_equal(e->id, id);
    if (dir) {
        char *path = join(dir, rel_path);
        assert_string_equal(e->path, path);
        free(path);
    } else {
        assert_string_equal(e->path, rel_path);
    }
    assert_int_equal(e->line, line);
    assert_int_equal(e->missing, missing);
    int n = 0;
    while (refs && refs[n])
        n++;
    assert_int_equal(e->n_refs, n);
    for (int k = 0; k < n; k++)
        assert_string_equal(e->refs[k], refs[k]);
}

/* Checks collected problem i: kind and exact message. */
static void check_problem(const manifest *m, size_t i, manifest_problem_kind kind, long line, const char *message)
{
    assert_true(i < m->n_collected);
    assert_int_equal(m->problems[i].kind, kind);
    assert_int_equal(m->problems[i].line, line);
    assert_string_equal(m->problems[i].message, message);
}

static manifest_options options(int check_files)
{
    manifest_options o;
    manifest_options_default(&o);
    o.check_files = check_files;
    return o;
}

/* ---- CSV reader / writer ------------------------------------------------- */

static void test_csv_reader_quoting(void **state)
{
    (void)state;
    /* BOM; a quoted field with a comma, doubled quotes and a CRLF inside;
     * an empty line; an empty last field; a stray quote inside an unquoted
     * field (literal); no newline at the end. */
    const char text[] = "\xEF\xBB\xBFID,Caption\r\n"
                        "a,\"x, \"\"y\"\"\r\nz\"\r\n"
                        "\n"
                        "b,\r\n"
                        "c,5\"6\n"
                        "d,\"\"";
    csv_reader r;
    rc_error err = {{0}};
    csv_init(&r, text, sizeof text - 1, "t.csv");
    assert_int_equal(csv_next(&r, &err), 1);
    assert_int_equal(r.record_line, 1);
    assert_int_equal(r.n_fields, 2);
    assert_string_equal(r.fields[0], "ID");
    assert_string_equal(r.fields[1], "Caption");
    assert_int_equal(csv_next(&r, &err), 1);
    assert_int_equal(r.record_line, 2);
    assert_string_equal(r.fields[0], "a");
    assert_string_equal(r.fields[1], "x, \"y\"\r\nz");
    assert_int_equal(r.lens[1], 9);
    assert_int_equal(csv_next(&r, &err), 1);
    assert_int_equal(r.record_line, 5); /* lines 2-3 were record a, line 4 empty */
    assert_int_equal(r.n_fields, 2);
    assert_string_equal(r.fields[1], "");
    assert_int_equal(csv_next(&r, &err), 1);
    assert_int_equal(r.record_line, 6);
    assert_string_equal(r.fields[1], "5\"6");
    assert_int_equal(csv_next(&r, &err), 1);
    assert_int_equal(r.record_line, 7);
    assert_string_equal(r.fields[0], "d");
    assert_string_equal(r.fields[1], "");
    assert_int_equal(csv_next(&r, &err), 0);
    csv_free(&r);
}

static void test_csv_reader_errors_and_recovery(void **state)
{
    (void)state;
    const char text[] = "a,1\n"              /* line 1 */
                        "b,\"2\"x\n"         /* line 2: text after the closing quote */
                        "c,3\n"              /* line 3 */
                        "d,\"never closed\n" /* line 4: the quote runs to the end */
                        "e,5\n";             /* line 5: reading resumes here */
    csv_reader r;
    rc_error err = {{0}};
    csv_init(&r, text, sizeof text - 1, "t.csv");
    assert_int_equal(csv_next(&r, &err), 1);
    assert_string_equal(r.fields[0], "a");
    assert_int_equal(csv_next(&r, &err), -1);
    assert_string_equal(err.msg, "t.csv:2: unexpected text after a closing quote (a quote inside a quoted field must "
                                 "be doubled)");
    assert_int_equal(r.error_line, 2);
    assert_int_equal(csv_next(&r, &err), 1);
    assert_string_equal(r.fields[0], "c");
    assert_int_equal(r.record_line, 3);
    assert_int_equal(csv_next(&r, &err), -1);
    assert_string_equal(err.msg, "t.csv:4: quoted field is never closed (unterminated quote)");
    assert_int_equal(csv_next(&r, &err), 1);
    assert_string_equal(r.fields[0], "e");
    assert_string_equal(r.fields[1], "5");
    assert_int_equal(r.record_line, 5);
    assert_int_equal(csv_next(&r, &err), 0);
    csv_free(&r);
}

static void test_csv_writer(void **state)
{
    (void)state;
    char *buf = NULL;
    size_t len = 0;
    FILE *out = open_memstream(&buf, &len);
    assert_non_null(out);
    const char *fields[] = {"plain", "a,b", "say \"hi\"", "two\nlines", "", "cr\r"};
    for (size_t i = 0; i < sizeof fields / sizeof fields[0]; i++) {
        assert_int_equal(csv_write_field(out, fields[i], strlen(fields[i])), 0);
        fputc('|', out);
    }
    fclose(out);
    assert_string_equal(buf, "plain|\"a,b\"|\"say \"\"hi\"\"\"|\"two\nlines\"||\"cr\r\"|");
    free(buf);
}

/* ---- ROCOv2 CSV ----------------------------------------------------------- */

static void test_csv_rocov2_layout(void **state)
{
    (void)state;
    char *dir = make_tmpdir("manifest-csv");
    /* valid_captions.csv finds valid/ by name. */
    const char csv[] = "ID,Caption\r\n"
                       "ROCOv2_2023_valid_000001,\"Chest X-ray showing a \"\"small\"\" nodule, right lung.\n"
                       "No effusion.\"\r\n"                          /* lines 2-3 */
                       "ROCOv2_2023_valid_000002,CT of the abdomen\r\n" /* line 4 */
                       "ROCOv2_2023_valid_000003,\"MRI, T1\\/T2\"\r\n"  /* line 5: no image */
                       "ROCOv2_2023_valid_000004,Ultrasound\r\n"        /* line 6: .PNG */
                       "ROCOv2_2023_valid_000002,duplicate row\r\n"     /* line 7 */
                       "ROCOv2_2023_valid_000005.tif,named with extension\r\n"; /* line 8 */
    write_file(dir, "valid_captions.csv", csv, (size_t)-1);
    write_file(dir, "valid/ROCOv2_2023_valid_000001.jpg", "1", (size_t)-1);
    write_file(dir, "valid/ROCOv2_2023_valid_000002.png", "22", (size_t)-1);
    write_file(dir, "valid/ROCOv2_2023_valid_000002.jpeg", "2", (size_t)-1); /* .jpeg is preferred to .png */
    write_file(dir, "valid/ROCOv2_2023_valid_000004.PNG", "4", (size_t)-1);
    write_file(dir, "valid/ROCOv2_2023_valid_000005.tif", "5", (size_t)-1);
    write_file(dir, "valid/ROCOv2_2023_valid_000003.txt", "not an image", (size_t)-1);
    write_file(dir, "valid/.ROCOv2_2023_valid_000003.jpg", "hidden", (size_t)-1);

    char *csv_path = join(dir, "valid_captions.csv");
    char *images = join(dir, "valid");
    manifest *m = NULL;
    rc_error err = {{0}};
    assert_int_equal(manifest_read(csv_path, NULL, &m, &err), 0);
    assert_int_equal(m->kind, MANIFEST_CSV);
    assert_int_equal(m->n_entries, 5);
    const char *r1[] = {"Chest X-ray showing a \"small\" nodule, right lung.\nNo effusion.", NULL};
    const char *r2[] = {"CT of the abdomen", NULL};
    const char *r3[] = {"MRI, T1\\/T2", NULL};
    const char *r4[] = {"Ultrasound", NULL};
    const char *r5[] = {"named with extension", NULL};
    check_entry(&m->entries[0], "ROCOv2_2023_valid_000001", images, "ROCOv2_2023_valid_000001.jpg", 2, 0, r1);
    check_entry(&m->entries[1], "ROCOv2_2023_valid_000002", images, "ROCOv2_2023_valid_000002.jpeg", 4, 0, r2);
    check_entry(&m->entries[2], "ROCOv2_2023_valid_000003", images, "ROCOv2_2023_valid_000003", 5, 1, r3);
    check_entry(&m->entries[3], "ROCOv2_2023_valid_000004", images, "ROCOv2_2023_valid_000004.PNG", 6, 0, r4);
    check_entry(&m->entries[4], "ROCOv2_2023_valid_000005.tif", images, "ROCOv2_2023_valid_000005.tif", 8, 0, r5);
    assert_int_equal(m->n_problems[MANIFEST_MISSING], 1);
    assert_int_equal(m->n_problems[MANIFEST_DUPLICATE], 1);
    assert_int_equal(manifest_problem_total(m), 2);
    char expected[8192];
    snprintf(expected, sizeof expected,
             "%s:5: no image for ID 'ROCOv2_2023_valid_000003' in %s (looked for .jpg .jpeg .png .tif .tiff .webp .gif)",
             csv_path, images);
    check_problem(m, 0, MANIFEST_MISSING, 5, expected);
    snprintf(expected, sizeof expected,
             "%s:7: duplicate id 'ROCOv2_2023_valid_000002' (first on line 4); row skipped", csv_path);
    check_problem(m, 1, MANIFEST_DUPLICATE, 7, expected);

    /* Sizes and times are read only when asked for (one stat each). */
    assert_int_equal(m->entries[1].size, -1);
    manifest_stat_entries(m);
    assert_int_equal(m->entries[0].size, 1);
    assert_int_equal(m->entries[1].size, 1);
    assert_int_equal(m->entries[2].size, -1); /* missing */
    struct stat st;
    assert_int_equal(stat(m->entries[3].path, &st), 0);
    assert_true(m->entries[3].mtime_ns == (int64_t)st.st_mtim.tv_sec * 1000000000 + st.st_mtim.tv_nsec);
    manifest_free(m);

    /* The image folder can be given; a CSV named otherwise uses its own
     * folder when no folder is named like it. */
    write_file(dir, "other.csv", "ID,Caption\nROCOv2_2023_valid_000004,x\n", (size_t)-1);
    char *other = join(dir, "other.csv");
    assert_int_equal(manifest_read(other, NULL, &m, &err), 0);
    assert_int_equal(m->n_entries, 1);
    check_entry(&m->entries[0], "ROCOv2_2023_valid_000004", dir, "ROCOv2_2023_valid_000004", 2, 1,
                (const char *[]){"x", NULL});
    manifest_free(m);
    manifest_options o = options(1);
    o.image_dir = images;
    assert_int_equal(manifest_read(other, &o, &m, &err), 0);
    check_entry(&m->entries[0], "ROCOv2_2023_valid_000004", images, "ROCOv2_2023_valid_000004.PNG", 2, 0,
                (const char *[]){"x", NULL});
    assert_int_equal(manifest_problem_total(m), 0);
    manifest_free(m);

    /* A missing image folder is fatal when files are checked. */
    o.image_dir = "/nonexistent/radcap-images";
    assert_int_equal(manifest_read(other, &o, &m, &err), -1);
    assert_null(m);
    snprintf(expected, sizeof expected,
             "CSV manifest %s: cannot list image folder /nonexistent/radcap-images: No such file or directory", other);
    assert_string_equal(err.msg, expected);
    free(other);
    free(images);
    free(csv_path);
    remove_tree(dir);
}

static void test_csv_malformed_rows(void **state)
{
    (void)state;
    const char csv[] = "ID,Caption\n"            /* 1 */
                       "a,one\n"                 /* 2 */
                       "b,two,extra\n"           /* 3: three fields */
                       ",empty id\n"             /* 4 */
                       "c,\"bad \"quote\" here\"\n" /* 5: text after a closing quote */
                       "d,\"unterminated\n"      /* 6: never closed */
                       "e,five\n";               /* 7 */
    manifest_options o = options(0);
    manifest *m = NULL;
    rc_error err = {{0}};
    assert_int_equal(manifest_parse(csv, sizeof csv - 1, MANIFEST_CSV, "m.csv", &o, &m, &err), 0);
    assert_int_equal(m->n_entries, 2);
    check_entry(&m->entries[0], "a", NULL, "a", 2, 0, (const char *[]){"one", NULL});
    check_entry(&m->entries[1], "e", NULL, "e", 7, 0, (const char *[]){"five", NULL});
    assert_int_equal(m->n_problems[MANIFEST_MALFORMED], 4);
    assert_int_equal(manifest_problem_total(m), 4);
    check_problem(m, 0, MANIFEST_MALFORMED, 3, "m.csv:3: expected 2 fields as in the header, found 3; row skipped");
    check_problem(m, 1, MANIFEST_MALFORMED, 4, "m.csv:4: empty ID; row skipped");
    check_problem(m, 2, MANIFEST_MALFORMED, 5,
                  "m.csv:5: unexpected text after a closing quote (a quote inside a quoted field must be doubled); "
                  "row skipped");
    check_problem(m, 3, MANIFEST_MALFORMED, 6, "m.csv:6: quoted field is never closed (unterminated quote); row skipped");
    manifest_free(m);

    /* Strict mode: the same problems make the read fail, naming the first. */
    o.strict = 1;
    assert_int_equal(manifest_parse(csv, sizeof csv - 1, MANIFEST_CSV, "m.csv", &o, &m, &err), -1);
    assert_null(m);
    assert_string_equal(err.msg, "4 problems in manifest m.csv (strict mode); the first: m.csv:3: expected 2 fields "
                                 "as in the header, found 3; row skipped");

    /* A header without an ID column, or no header at all, is fatal. */
    o.strict = 0;
    const char no_id[] = "path,caption\nx.png,y\n";
    assert_int_equal(manifest_parse(no_id, sizeof no_id - 1, MANIFEST_CSV, "p.csv", &o, &m, &err), -1);
    assert_string_equal(err.msg, "p.csv:1: the header must name an ID column (ROCOv2: ID,Caption); found 'path'");
    assert_int_equal(manifest_parse("", 0, MANIFEST_CSV, "e.csv", &o, &m, &err), -1);
    assert_string_equal(err.msg, "CSV manifest e.csv is empty: a header line ID,Caption is expected");

    /* ROCOv2's test split has IDs only: no captions, no problem. More
     * columns are allowed, in any order. */
    const char ids_only[] = "ID\nx1\nx2\n";
    assert_int_equal(manifest_parse(ids_only, sizeof ids_only - 1, MANIFEST_CSV, "i.csv", &o, &m, &err), 0);
    assert_int_equal(m->n_entries, 2);
    check_entry(&m->entries[1], "x2", NULL, "x2", 3, 0, NULL);
    manifest_free(m);
    const char reordered[] = "CUIs, caption ,id\nC1,first,x1\n";
    assert_int_equal(manifest_parse(reordered, sizeof reordered - 1, MANIFEST_CSV, "r.csv", &o, &m, &err), 0);
    check_entry(&m->entries[0], "x1", NULL, "x1", 2, 0, (const char *[]){"first", NULL});
    manifest_free(m);
}

/* ---- JSON Lines ----------------------------------------------------------- */

static void test_jsonl(void **state)
{
    (void)state;
    char *dir = make_tmpdir("manifest-jsonl");
    const char jsonl[] = "{\"path\": \"img/a.png\", \"caption\": \"A chest film.\"}\n"                     /* 1 */
                         "{\"path\": \"img/b.jpg\", \"id\": \"case-b\", \"caption\": [\"first ref\", \"second ref\"]}\n" /* 2 */
                         "\n"                                                                              /* 3 */
                         "{\"path\": \"img/c.gif\", \"id\": 42, \"extra\": {\"ignored\": true}}\n"           /* 4 */
                         "{\"path\": \"img/a.png\", \"caption\": \"dup\"}\n"                               /* 5 */
                         "{\"path\": \"\", \"caption\": \"x\"}\n"                                          /* 6 */
                         "{\"caption\": \"no path\"}\n"                                                    /* 7 */
                         "{\"path\": \"img/d.png\", \"caption\": 5}\n"                                     /* 8 */
                         "{\"path\": \"img/e.png\" \"caption\": \"x\"}\n"                                  /* 9 */
                         "[\"img/f.png\"]\n"                                                               /* 10 */
                         "{\"path\": \"img/g.png\"} trailing\n"                                            /* 11 */
                         "{\"path\": \"/nonexistent/radcap/missing.png\"}\r\n"                             /* 12 */
                         "{\"path\": \"img/h.png\", \"caption\": \"\", \"id\": null}\n"                    /* 13 */
                         "{\"path\": \"img/i.png\", \"caption\": [\"ok\", 7]}\n";                          /* 14 */
    write_file(dir, "set/manifest.jsonl", jsonl, (size_t)-1);
    for (const char *const *name = (const char *const[]){"set/img/a.png", "set/img/b.jpg", "set/img/c.gif",
                                                          "set/img/h.png", NULL};
         *name; name++)
        write_file(dir, *name, "x", 1);
    char *path = join(dir, "set/manifest.jsonl");
    char *set = join(dir, "set");
    manifest *m = NULL;
    rc_error err = {{0}};
    assert_int_equal(manifest_read(path, NULL, &m, &err), 0);
    assert_int_equal(m->kind, MANIFEST_JSONL);
    assert_int_equal(m->n_entries, 5);
    check_entry(&m->entries[0], "img/a.png", set, "img/a.png", 1, 0, (const char *[]){"A chest film.", NULL});
    check_entry(&m->entries[1], "case-b", set, "img/b.jpg", 2, 0, (const char *[]){"first ref", "second ref", NULL});
    check_entry(&m->entries[2], "42", set, "img/c.gif", 4, 0, NULL);
    check_entry(&m->entries[3], "/nonexistent/radcap/missing.png", NULL, "/nonexistent/radcap/missing.png", 12, 1,
                NULL);
    check_entry(&m->entries[4], "img/h.png", set, "img/h.png", 13, 0, NULL);
    /* Files found by a stat have their size and time. */
    assert_int_equal(m->entries[0].size, 1);
    assert_true(m->entries[0].mtime_ns > 0);
    assert_int_equal(m->entries[3].size, -1);

    assert_int_equal(m->n_problems[MANIFEST_MALFORMED], 7);
    assert_int_equal(m->n_problems[MANIFEST_DUPLICATE], 1);
    assert_int_equal(m->n_problems[MANIFEST_MISSING], 1);
    assert_int_equal(m->n_collected, 9);
    char expected[8192];
    const struct {
        manifest_problem_kind kind;
        long line;
        const char *text;
    } want[] = {
        {MANIFEST_DUPLICATE, 5, "duplicate id 'img/a.png' (first on line 1); row skipped"},
        {MANIFEST_MALFORMED, 6, "empty path; line skipped"},
        {MANIFEST_MALFORMED, 7, "no \"path\" key; line skipped"},
        {MANIFEST_MALFORMED, 8, "\"caption\" must be a string or a list of strings; line skipped"},
        {MANIFEST_MALFORMED, 9, NULL}, /* bad JSON: column checked below */
        {MANIFEST_MALFORMED, 10, "a JSON object is expected; line skipped"},
        {MANIFEST_MALFORMED, 11, "text after the JSON object at column 23; line skipped"},
        {MANIFEST_MISSING, 12, "image file /nonexistent/radcap/missing.png not found"},
        {MANIFEST_MALFORMED, 14, "\"caption\" must be a string or a list of strings; line skipped"},
    };
    for (size_t i = 0; i < sizeof want / sizeof want[0]; i++) {
        if (!want[i].text) {
            snprintf(expected, sizeof expected, "%s:9: bad JSON near column ", path);
            assert_int_equal(m->problems[i].line, 9);
            assert_memory_equal(m->problems[i].message, expected, strlen(expected));
            continue;
        }
        snprintf(expected, sizeof expected, "%s:%ld: %s", path, want[i].line, want[i].text);
        check_problem(m, i, want[i].kind, want[i].line, expected);
    }
    manifest_free(m);

    /* base_dir overrides the manifest's folder. */
    manifest_options o = options(0);
    o.base_dir = "/data/archive";
    assert_int_equal(manifest_read(path, &o, &m, &err), 0);
    check_entry(&m->entries[0], "img/a.png", NULL, "/data/archive/img/a.png", 1, 0,
                (const char *[]){"A chest film.", NULL});
    assert_int_equal(m->n_problems[MANIFEST_MISSING], 0); /* not checked */
    manifest_free(m);
    free(set);
    free(path);
    remove_tree(dir);
}

/* ---- list and folder ------------------------------------------------------ */

static void test_list(void **state)
{
    (void)state;
    char *dir = make_tmpdir("manifest-list");
    write_file(dir, "img/a.png", "aa", 2);
    write_file(dir, "img/b.jpg", "b", 1);
    write_file(dir, "img/c.tif", "c", 1);
    char *abs_c = join(dir, "img/c.tif");
    char list[8192];
    snprintf(list, sizeof list,
             "img/a.png\r\n"           /* 1 */
             "/nonexistent/x.png\n"    /* 2: missing */
             "\n"                      /* 3: blank, skipped */
             "   \n"                   /* 4: white space only */
             "%s\n"                    /* 5: absolute */
             "img/a.png\n"             /* 6: duplicate */
             "img/b.jpg",              /* 7: no final newline */
             abs_c);
    write_file(dir, "list.txt", list, (size_t)-1);
    char *path = join(dir, "list.txt");
    manifest *m = NULL;
    rc_error err = {{0}};
    assert_int_equal(manifest_read(path, NULL, &m, &err), 0);
    assert_int_equal(m->kind, MANIFEST_LIST);
    assert_int_equal(m->n_entries, 4);
    check_entry(&m->entries[0], "img/a.png", dir, "img/a.png", 1, 0, NULL);
    check_entry(&m->entries[1], "/nonexistent/x.png", NULL, "/nonexistent/x.png", 2, 1, NULL);
    check_entry(&m->entries[2], abs_c, NULL, abs_c, 5, 0, NULL);
    check_entry(&m->entries[3], "img/b.jpg", dir, "img/b.jpg", 7, 0, NULL);
    assert_int_equal(m->entries[0].size, 2);
    char expected[8192];
    snprintf(expected, sizeof expected, "%s:2: image file /nonexistent/x.png not found", path);
    check_problem(m, 0, MANIFEST_MISSING, 2, expected);
    snprintf(expected, sizeof expected, "%s:4: empty path (only white space); line skipped", path);
    check_problem(m, 1, MANIFEST_MALFORMED, 4, expected);
    snprintf(expected, sizeof expected, "%s:6: duplicate id 'img/a.png' (first on line 1); row skipped", path);
    check_problem(m, 2, MANIFEST_DUPLICATE, 6, expected);
    assert_int_equal(m->n_collected, 3);
    manifest_free(m);

    /* Strict mode fails on the same file and names the first problem. */
    manifest_options o = options(1);
    o.strict = 1;
    assert_int_equal(manifest_read(path, &o, &m, &err), -1);
    assert_null(m);
    snprintf(expected, sizeof expected,
             "3 problems in manifest %s (strict mode); the first: %s:2: image file /nonexistent/x.png not found", path,
             path);
    assert_string_equal(err.msg, expected);

    /* An empty list is an empty manifest. */
    write_file(dir, "empty.txt", "", 0);
    char *empty = join(dir, "empty.txt");
    assert_int_equal(manifest_read(empty, NULL, &m, &err), 0);
    assert_int_equal(m->n_entries, 0);
    manifest_free(m);
    free(empty);
    free(abs_c);
    free(path);
    remove_tree(dir);
}

static void test_folder(void **state)
{
    (void)state;
    char *dir = make_tmpdir("manifest-folder");
    char *root = join(dir, "archive");
    write_file(dir, "archive/z.tiff", "z", 1);
    write_file(dir, "archive/a.jpg", "a", 1);
    write_file(dir, "archive/b/c.PNG", "c", 1);
    write_file(dir, "archive/b/d.txt", "d", 1);
    write_file(dir, "archive/b/.e.jpg", "e", 1);
    write_file(dir, "archive/.hidden/f.jpg", "f", 1);
    write_file(dir, "archive/b/sub/g.webp", "g", 1);
    write_file(dir, "archive/b/sub/deeper/h.GIF", "h", 1);
    char *b = join(root, "b"), *link_dir = join(root, "link_dir");
    char *a = join(root, "a.jpg"), *link_file = join(root, "link_file.gif");
    assert_int_equal(symlink(b, link_dir), 0);    /* not followed: no cycles, no doubles */
    assert_int_equal(symlink(a, link_file), 0);   /* followed */
    manifest *m = NULL;
    rc_error err = {{0}};
    assert_int_equal(manifest_read(root, NULL, &m, &err), 0);
    assert_int_equal(m->kind, MANIFEST_FOLDER);
    /* Sorted bytewise by relative path. */
    const char *want[] = {"a.jpg", "b/c.PNG", "b/sub/deeper/h.GIF", "b/sub/g.webp", "link_file.gif", "z.tiff"};
    assert_int_equal(m->n_entries, 6);
    for (int i = 0; i < 6; i++)
        check_entry(&m->entries[i], want[i], root, want[i], 0, 0, NULL);
    assert_int_equal(manifest_problem_total(m), 0);
    manifest_free(m);

    /* A trailing slash changes nothing. */
    char *root_slash = join(root, "");
    assert_int_equal(manifest_read(root_slash, NULL, &m, &err), 0);
    check_entry(&m->entries[0], "a.jpg", root, "a.jpg", 0, 0, NULL);
    manifest_free(m);

    /* An unreadable sub-folder is reported, not fatal (root ignores modes,
     * so this part only runs as another user). */
    if (geteuid() != 0) {
        char *sub = join(root, "b/sub");
        assert_int_equal(chmod(sub, 0), 0);
        assert_int_equal(manifest_read(root, NULL, &m, &err), 0);
        assert_int_equal(m->n_problems[MANIFEST_UNREADABLE], 1);
        assert_int_equal(m->n_entries, 4);
        manifest_free(m);
        chmod(sub, 0755);
        free(sub);
    }
    manifest_options o = options(1);
    o.kind = MANIFEST_FOLDER;
    assert_int_equal(manifest_read("/nonexistent/radcap-folder", &o, &m, &err), -1);
    assert_string_equal(err.msg, "cannot read folder /nonexistent/radcap-folder: No such file or directory");
    free(root_slash);
    free(a), free(b), free(link_dir), free(link_file);
    free(root);
    remove_tree(dir);
}

/* ---- UTF-8, callbacks, detection ------------------------------------------ */

static void test_invalid_utf8(void **state)
{
    (void)state;
    const char csv[] = "ID,Caption\n"
                       "x1,caf\xC3\xA9 ok\n"                  /* 2: valid */
                       "x2,bad \xFF byte \xE2\x82\n"          /* 3: a stray byte, a truncated sequence */
                       "x\xC0y,z\n"                           /* 4: in the id */
                       "x3,\xED\xA0\x80 \xC0\xAF \xF4\x90\x80\x80\n"; /* 5: surrogate, overlong, > U+10FFFF */
    manifest_options o = options(0);
    manifest *m = NULL;
    rc_error err = {{0}};
    assert_int_equal(manifest_parse(csv, sizeof csv - 1, MANIFEST_CSV, "u.csv", &o, &m, &err), 0);
    assert_int_equal(m->n_entries, 4);
    check_entry(&m->entries[0], "x1", NULL, "x1", 2, 0, (const char *[]){"caf\xC3\xA9 ok", NULL});
    check_entry(&m->entries[1], "x2", NULL, "x2", 3, 0,
                (const char *[]){"bad \xEF\xBF\xBD byte \xEF\xBF\xBD", NULL});
    /* The CSV image path is the ID as written; the id itself is repaired. */
    check_entry(&m->entries[2], "x\xEF\xBF\xBDy", NULL, "x\xC0y", 4, 0, (const char *[]){"z", NULL});
    check_entry(&m->entries[3], "x3", NULL, "x3", 5, 0,
                (const char *[]){"\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD \xEF\xBF\xBD\xEF\xBF\xBD "
                                 "\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD\xEF\xBF\xBD",
                                 NULL});
    assert_int_equal(m->n_problems[MANIFEST_BAD_UTF8], 3);
    check_problem(m, 0, MANIFEST_BAD_UTF8, 3,
                  "u.csv:3: invalid UTF-8 (or a NUL byte) in caption 1 at byte 4; replaced with U+FFFD");
    check_problem(m, 1, MANIFEST_BAD_UTF8, 4, "u.csv:4: invalid UTF-8 in id at byte 1; replaced with U+FFFD");
    check_problem(m, 2, MANIFEST_BAD_UTF8, 5,
                  "u.csv:5: invalid UTF-8 (or a NUL byte) in caption 1 at byte 0; replaced with U+FFFD");
    manifest_free(m);

    /* A list path keeps its bytes (it opens the file); the id is repaired. */
    const char list[] = "dir/\xFFname.png\n";
    assert_int_equal(manifest_parse(list, sizeof list - 1, MANIFEST_LIST, "u.txt", &o, &m, &err), 0);
    check_entry(&m->entries[0], "dir/\xEF\xBF\xBDname.png", NULL, "dir/\xFFname.png", 1, 0, NULL);
    check_problem(m, 0, MANIFEST_BAD_UTF8, 1, "u.txt:1: invalid UTF-8 in id at byte 4; replaced with U+FFFD");
    manifest_free(m);

    /* With an explicit id, a bad path is still reported (kept as is). */
    const char jsonl[] = "{\"path\": \"p\xFF.png\", \"id\": \"p1\"}\n";
    assert_int_equal(manifest_parse(jsonl, sizeof jsonl - 1, MANIFEST_JSONL, "u.jsonl", &o, &m, &err), 0);
    check_entry(&m->entries[0], "p1", NULL, "p\xFF.png", 1, 0, NULL);
    check_problem(m, 0, MANIFEST_BAD_UTF8, 1, "u.jsonl:1: invalid UTF-8 in path (kept as is)");
    manifest_free(m);

    /* Strict mode makes bad UTF-8 fatal too. */
    o.strict = 1;
    assert_int_equal(manifest_parse(list, sizeof list - 1, MANIFEST_LIST, "u.txt", &o, &m, &err), -1);
    assert_string_equal(err.msg, "1 problem in manifest u.txt (strict mode); the first: u.txt:1: invalid UTF-8 in id "
                                 "at byte 4; replaced with U+FFFD");
}

typedef struct seen {
    int n;
    manifest_problem_kind kinds[8];
    long lines[8];
    char first[256];
} seen;

static void on_problem(void *user, const manifest_problem *p)
{
    seen *s = user;
    if (s->n == 0)
        snprintf(s->first, sizeof s->first, "%s", p->message);
    if (s->n < 8) {
        s->kinds[s->n] = p->kind;
        s->lines[s->n] = p->line;
    }
    s->n++;
}

static void test_problem_callback(void **state)
{
    (void)state;
    const char list[] = "a.png\n\t\nb.png\na.png\n";
    seen s = {0};
    manifest_options o = options(0);
    o.on_problem = on_problem;
    o.user = &s;
    manifest *m = NULL;
    rc_error err = {{0}};
    assert_int_equal(manifest_parse(list, sizeof list - 1, MANIFEST_LIST, "cb.txt", &o, &m, &err), 0);
    assert_int_equal(s.n, 2);
    assert_int_equal(s.kinds[0], MANIFEST_MALFORMED);
    assert_int_equal(s.lines[0], 2);
    assert_int_equal(s.kinds[1], MANIFEST_DUPLICATE);
    assert_int_equal(s.lines[1], 4);
    assert_string_equal(s.first, "cb.txt:2: empty path (only white space); line skipped");
    assert_int_equal(m->n_collected, 0); /* delivered, not collected */
    assert_int_equal(manifest_problem_total(m), 2);
    assert_int_equal(m->n_entries, 2);
    manifest_free(m);
}

static void test_detect(void **state)
{
    (void)state;
    char *dir = make_tmpdir("manifest-detect");
    const struct {
        const char *name;
        const char *content;
        manifest_kind kind;
    } cases[] = {
        {"a.csv", "ID,Caption\n", MANIFEST_CSV},
        {"b.CSV", "ID,Caption\n", MANIFEST_CSV},
        {"c.jsonl", "{}\n", MANIFEST_JSONL},
        {"d.json", "{}\n", MANIFEST_JSONL},
        {"e.ndjson", "{}\n", MANIFEST_JSONL},
        {"f.txt", "\xEF\xBB\xBF\n  {\"path\": \"x\"}\n", MANIFEST_JSONL},
        {"g.txt", "images/x.png\n", MANIFEST_LIST},
        {"h", "", MANIFEST_LIST},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        write_file(dir, cases[i].name, cases[i].content, (size_t)-1);
        char *path = join(dir, cases[i].name);
        manifest_kind kind = MANIFEST_AUTO;
        rc_error err = {{0}};
        assert_int_equal(manifest_detect(path, &kind, &err), 0);
        assert_int_equal(kind, cases[i].kind);
        free(path);
    }
    manifest_kind kind = MANIFEST_AUTO;
    rc_error err = {{0}};
    assert_int_equal(manifest_detect(dir, &kind, &err), 0);
    assert_int_equal(kind, MANIFEST_FOLDER);
    assert_int_equal(manifest_detect("/nonexistent/m.csv", &kind, &err), -1);
    assert_string_equal(err.msg, "cannot read manifest /nonexistent/m.csv: No such file or directory");

    /* Names of kinds round-trip; an unknown one is refused. */
    for (manifest_kind k = MANIFEST_AUTO; k <= MANIFEST_FOLDER; k++) {
        manifest_kind parsed;
        assert_int_equal(manifest_kind_parse(manifest_kind_name(k), &parsed, &err), 0);
        assert_int_equal(parsed, k);
    }
    assert_int_equal(manifest_kind_parse("xml", &kind, &err), -1);
    assert_string_equal(err.msg, "unknown manifest kind 'xml' (expected auto, csv, jsonl, list or folder)");
    assert_true(manifest_is_image_name("x.JPEG"));
    assert_true(manifest_is_image_name("x.webp"));
    assert_false(manifest_is_image_name("x.bmp"));
    assert_false(manifest_is_image_name(".jpg"));
    remove_tree(dir);
}

/* ---- a million entries ---------------------------------------------------- */

static double now_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

static long max_rss_mb(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_maxrss / 1024;
}

static void count_problem(void *user, const manifest_problem *p)
{
    (void)p;
    (*(size_t *)user)++;
}

/* Reads a generated manifest and prints the time it took (not asserted:
 * the machine is shared). */
static manifest *timed_read(const char *path, const manifest_options *o, const char *label)
{
    manifest *m = NULL;
    rc_error err = {{0}};
    double t0 = now_seconds();
    assert_int_equal(manifest_read(path, o, &m, &err), 0);
    double seconds = now_seconds() - t0;
    printf("    %-44s %zu entries in %.2f s (peak RSS so far %ld MB)\n", label, m->n_entries, seconds, max_rss_mb());
    return m;
}

/* Sanitizer builds (make check-asan) run ten times slower: a tenth of the
 * entries shows the same. */
#if defined(__SANITIZE_ADDRESS__)
#define BIG_MANIFEST 100000
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define BIG_MANIFEST 100000
#endif
#endif
#ifndef BIG_MANIFEST
#define BIG_MANIFEST 1000000
#endif

static void test_million_entries(void **state)
{
    (void)state;
    enum { N = BIG_MANIFEST, N_IMAGES = 10000 };
    char dir[] = "/tmp/radcap-manifest-XXXXXX";
    assert_non_null(mkdtemp(dir));
    char *list = join(dir, "list.txt"), *jsonl = join(dir, "m.jsonl"), *csv = join(dir, "valid_captions.csv");
    FILE *fl = fopen(list, "w"), *fj = fopen(jsonl, "w"), *fc = fopen(csv, "w");
    assert_true(fl && fj && fc);
    fputs("ID,Caption\n", fc);
    for (int i = 0; i < N; i++) {
        fprintf(fl, "/archive/2024/%02d/img_%07d.png\n", i % 12, i);
        fprintf(fj, "{\"path\": \"/archive/img_%07d.png\", \"caption\": [\"Axial CT at level %d shows a 1.5-cm "
                    "lesion.\", \"second, \\\"quoted\\\" reference\"]}\n",
                i, i % 40);
        fprintf(fc, "img_%07d,\"Chest radiograph %d: no \"\"acute\"\" findings, heart size normal.\"\n", i, i % 97);
    }
    assert_int_equal(fclose(fl), 0);
    assert_int_equal(fclose(fj), 0);
    assert_int_equal(fclose(fc), 0);
    char *valid = join(dir, "valid");
    assert_int_equal(mkdir(valid, 0777), 0);
    for (int i = 0; i < N_IMAGES; i++) {
        char name[64];
        snprintf(name, sizeof name, "valid/img_%07d.%s", i * (N / N_IMAGES), i % 2 ? "jpg" : "png");
        write_file(dir, name, "", 0);
    }

    manifest_options o = options(0);
    manifest *m = timed_read(list, &o, "list, paths, files not checked:");
    assert_int_equal(m->n_entries, N);
    char last[64];
    snprintf(last, sizeof last, "/archive/2024/%02d/img_%07d.png", (N - 1) % 12, N - 1);
    assert_string_equal(m->entries[N - 1].id, last);
    manifest_free(m);

    m = timed_read(jsonl, &o, "JSON Lines, 2 captions each:");
    assert_int_equal(m->n_entries, N);
    assert_int_equal(m->entries[123].n_refs, 2);
    assert_string_equal(m->entries[123].refs[1], "second, \"quoted\" reference");
    manifest_free(m);

    size_t n_problems = 0;
    manifest_options checked = options(1);
    checked.on_problem = count_problem;
    checked.user = &n_problems;
    m = timed_read(csv, &checked, "ROCOv2 CSV, folder of 10k images:");
    assert_int_equal(m->n_entries, N);
    assert_int_equal(n_problems, N - N_IMAGES); /* the others are missing */
    /* Image 1 of the folder is entry N / N_IMAGES, a .jpg. */
    const manifest_entry *e = &m->entries[N / N_IMAGES];
    assert_int_equal(e->missing, 0);
    char name[64];
    snprintf(name, sizeof name, "img_%07d.jpg", N / N_IMAGES);
    char *expected = join(valid, name);
    assert_string_equal(e->path, expected);
    snprintf(name, sizeof name, "Chest radiograph %d: no \"acute\" findings, heart size normal.", (N / N_IMAGES) % 97);
    assert_string_equal(e->refs[0], name);
    free(expected);
    manifest_free(m);

    n_problems = 0;
    m = timed_read(list, &checked, "list, each path checked with stat:");
    assert_int_equal(n_problems, N);
    manifest_free(m);

    free(valid);
    free(list), free(jsonl), free(csv);
    remove_tree(strdup(dir));
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_csv_reader_quoting),
        cmocka_unit_test(test_csv_reader_errors_and_recovery),
        cmocka_unit_test(test_csv_writer),
        cmocka_unit_test(test_csv_rocov2_layout),
        cmocka_unit_test(test_csv_malformed_rows),
        cmocka_unit_test(test_jsonl),
        cmocka_unit_test(test_list),
        cmocka_unit_test(test_folder),
        cmocka_unit_test(test_invalid_utf8),
        cmocka_unit_test(test_problem_callback),
        cmocka_unit_test(test_detect),
        cmocka_unit_test(test_million_entries),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
