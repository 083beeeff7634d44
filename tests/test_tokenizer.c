/* Tests of the BERT WordPiece tokenizer (engine/tokenizer.h) and of
 * `radcap tokenize`.
 *
 * Three kinds of reference:
 *  - a small vocabulary built here, whose expected ids are worked out by hand
 *    in the comments;
 *  - the real bert-base-uncased vocabulary (RADCAP_SHARED_DIR), with expected
 *    ids found by looking each expected token up in the file (grep -nxF,
 *    minus 1), written next to the tokens;
 *  - an independent Python re-statement of Hugging Face's slow BertTokenizer
 *    (the PYTHON REFERENCE block at the end of this file, using Python's own
 *    unicodedata, str.lower and str.split as HF does), run over every code
 *    point and over thousands of random texts and id lists.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <cmocka.h>

#include <glib.h>

#include "engine/tokenizer.h"
#include "tests/helpers/testutil.h"

/* ---- the small vocabulary ------------------------------------------------ */

static const char *const small_tokens[] = {
    "[PAD]",     /* 0 */
    "[UNK]",     /* 1 */
    "[CLS]",     /* 2 */
    "[SEP]",     /* 3 */
    "[MASK]",    /* 4 */
    "the",       /* 5 */
    "chest",     /* 6 */
    "x",         /* 7 */
    "-",         /* 8 */
    "ray",       /* 9 */
    "un",        /* 10 */
    "##aff",     /* 11 */
    "##able",    /* 12 */
    "##s",       /* 13 */
    ".",         /* 14 */
    ",",         /* 15 */
    "'",         /* 16 */
    "cafe",      /* 17 */
    "naive",     /* 18 */
    "resume",    /* 19 */
    "a",         /* 20 */
    "##a",       /* 21 */
    "中",        /* 22 */
    "!",         /* 23 */
    "?",         /* 24 */
    "n't",       /* 25 */
    "'m",        /* 26 */
    "'s",        /* 27 */
    "'ve",       /* 28 */
    "'re",       /* 29 */
    "ο",         /* 30: GREEK SMALL LETTER OMICRON */
    "##σ",       /* 31: GREEK SMALL LETTER SIGMA */
    "##ς",       /* 32: GREEK SMALL LETTER FINAL SIGMA */
    "i",         /* 33 */
    "##stanbul", /* 34 */
    "ab",        /* 35 */
    "##ab",      /* 36 */
    "[",         /* 37 */
    "]",         /* 38 */
    "(",         /* 39 */
    ")",         /* 40 */
    "\"",        /* 41 */
    "\xc2\xa0",  /* 42: NO-BREAK SPACE, which Python's str.strip() removes */
    "##x",       /* 43 */
    ":",         /* 44 */
};
#define N_SMALL ((int)(sizeof small_tokens / sizeof small_tokens[0]))

/* The small vocabulary as vocab.txt text (malloc'd). */
static char *small_vocab_text(size_t *len)
{
    size_t total = 0;
    for (int i = 0; i < N_SMALL; i++)
        total += strlen(small_tokens[i]) + 1;
    char *text = malloc(total + 1), *p = text;
    for (int i = 0; i < N_SMALL; i++)
        p += sprintf(p, "%s\n", small_tokens[i]);
    *len = total;
    return text;
}

static tok_vocab *parse_or_fail(const char *text, size_t len)
{
    rc_error err = {{0}};
    tok_vocab *v = tok_vocab_parse(text, len, "test vocab", &err);
    if (!v)
        fail_msg("tok_vocab_parse: %s", err.msg);
    return v;
}

static tok_vocab *small_vocab(void)
{
    size_t len;
    char *text = small_vocab_text(&len);
    tok_vocab *v = parse_or_fail(text, len);
    free(text);
    return v;
}

/* ---- helpers ------------------------------------------------------------- */

static void print_ids(const char *label, const int *ids, size_t n)
{
    fprintf(stderr, "%s (%zu):", label, n);
    for (size_t i = 0; i < n; i++)
        fprintf(stderr, " %d", ids[i]);
    fprintf(stderr, "\n");
}

/* Encodes len bytes of text and checks the ids exactly. */
static void expect_ids_n(const tok_vocab *v, const char *text, size_t len, int add_special,
                         const int *want, size_t n_want)
{
    rc_error err = {{0}};
    int *ids;
    size_t n;
    if (tok_encode(v, text, len, add_special, &ids, &n, &err) < 0)
        fail_msg("tok_encode: %s", err.msg);
    assert_non_null(ids);
    if (n != n_want || memcmp(ids, want, n * sizeof *ids) != 0) {
        print_ids("got ", ids, n);
        print_ids("want", want, n_want);
        free(ids);
        fail_msg("wrong ids for \"%.*s\"", (int)len, text);
    }
    free(ids);
}

#define EXPECT_IDS(v, text, add_special, ...)                                                   \
    do {                                                                                        \
        static const int want_[] = {__VA_ARGS__};                                               \
        expect_ids_n(v, text, strlen(text), add_special, want_, sizeof want_ / sizeof *want_); \
    } while (0)

/* For texts containing NUL: the length is the literal's size minus its NUL. */
#define EXPECT_IDS_LIT(v, literal, ...)                                                       \
    do {                                                                                      \
        static const int want_[] = {__VA_ARGS__};                                             \
        expect_ids_n(v, literal, sizeof literal - 1, 0, want_, sizeof want_ / sizeof *want_); \
    } while (0)

static void expect_text(const tok_vocab *v, const int *ids, size_t n, int skip_special,
                        const char *want, size_t want_len)
{
    rc_error err = {{0}};
    size_t len;
    char *text = tok_decode(v, ids, n, skip_special, &len, &err);
    if (!text)
        fail_msg("tok_decode: %s", err.msg);
    if (len != want_len || memcmp(text, want, len) != 0 || text[len] != '\0') {
        print_ids("ids", ids, n);
        fail_msg("decoded \"%s\", expected \"%s\"", text, want);
    }
    free(text);
}

#define EXPECT_TEXT(v, skip_special, want, ...)                                       \
    do {                                                                              \
        static const int ids_[] = {__VA_ARGS__};                                      \
        expect_text(v, ids_, sizeof ids_ / sizeof *ids_, skip_special, want, strlen(want)); \
    } while (0)

/* ---- vocabulary files ------------------------------------------------------ */

/* Lines end in \n, \r\n or a lone \r (Python's universal newlines); the last
 * line may lack an end; an empty line is a token (the empty string). */
static void test_vocab_line_ends(void **state)
{
    (void)state;
    static const char crlf[] = "[UNK]\r\nab\r\ncd";
    tok_vocab *v = parse_or_fail(crlf, sizeof crlf - 1);
    assert_int_equal(tok_vocab_size(v), 3);
    assert_int_equal(tok_id(v, "ab"), 1);
    assert_int_equal(tok_id(v, "cd"), 2);
    assert_int_equal(tok_id(v, "ab\r"), -1);
    tok_vocab_free(v);

    static const char cr[] = "[UNK]\rab\rcd\n";
    v = parse_or_fail(cr, sizeof cr - 1);
    assert_int_equal(tok_vocab_size(v), 3);
    assert_int_equal(tok_id(v, "cd"), 2);
    tok_vocab_free(v);

    /* "a\r\r\nb": \r ends "a", \r\n ends an empty line, then "b" */
    static const char mixed[] = "[UNK]\na\r\r\nb\n\n";
    v = parse_or_fail(mixed, sizeof mixed - 1);
    assert_int_equal(tok_vocab_size(v), 5);
    size_t len = 99;
    assert_string_equal(tok_token(v, 2, &len), "");
    assert_int_equal(len, 0);
    assert_int_equal(tok_id(v, "b"), 3);
    assert_int_equal(tok_id(v, ""), 4); /* the later of the two empty lines */
    assert_null(tok_token(v, 5, NULL));
    assert_null(tok_token(v, -1, NULL));
    tok_vocab_free(v);
}

/* HF's load_vocab fills a dict in line order: a repeated token maps to its
 * last line, and the earlier line's id is missing from ids_to_tokens, so it
 * decodes as "[UNK]" (then skipped as a special token). */
static void test_vocab_duplicates(void **state)
{
    (void)state;
    static const char text[] = "[UNK]\nx\n[CLS]\nx\n[SEP]\n";
    tok_vocab *v = parse_or_fail(text, sizeof text - 1);
    assert_int_equal(tok_vocab_size(v), 5);
    assert_int_equal(tok_id(v, "x"), 3);
    assert_string_equal(tok_token(v, 1, NULL), "x");
    EXPECT_IDS(v, "x x", 1, 2, 3, 3, 4);
    EXPECT_TEXT(v, 1, "x", 1, 3);
    EXPECT_TEXT(v, 0, "[UNK] x", 1, 3);
    tok_vocab_free(v);
}

static void test_vocab_errors(void **state)
{
    (void)state;
    rc_error err = {{0}};
    static const char bad_utf8[] = "[UNK]\nok\nbad\xff\n";
    assert_null(tok_vocab_parse(bad_utf8, sizeof bad_utf8 - 1, "v.txt", &err));
    assert_non_null(strstr(err.msg, "v.txt: line 3 is not valid UTF-8"));

    /* a UTF-8-encoded surrogate is not UTF-8 either (Python refuses it) */
    static const char surrogate[] = "[UNK]\n\xed\xa0\x80\n";
    assert_null(tok_vocab_parse(surrogate, sizeof surrogate - 1, "v.txt", &err));
    assert_non_null(strstr(err.msg, "line 2"));

    static const char no_unk[] = "[CLS]\n[SEP]\n[unk]\n";
    assert_null(tok_vocab_parse(no_unk, sizeof no_unk - 1, "v.txt", &err));
    assert_non_null(strstr(err.msg, "[UNK]"));

    assert_null(tok_vocab_parse("", 0, "empty.txt", &err));
    assert_non_null(strstr(err.msg, "empty.txt"));

    assert_null(tok_vocab_load("/nonexistent/vocab.txt", &err));
    assert_non_null(strstr(err.msg, "/nonexistent/vocab.txt"));
}

/* A byte-order mark stays part of the first token (Python's "utf-8" codec);
 * a NUL byte is part of its token. */
static void test_vocab_bom_and_nul(void **state)
{
    (void)state;
    static const char text[] = "\xef\xbb\xbfx\n[UNK]\na\0b\n";
    tok_vocab *v = parse_or_fail(text, sizeof text - 1);
    assert_int_equal(tok_id(v, "x"), -1);
    assert_int_equal(tok_id(v, "\xef\xbb\xbfx"), 0);
    size_t len;
    const char *t = tok_token(v, 2, &len);
    assert_int_equal(len, 3);
    assert_memory_equal(t, "a\0b", 3);
    assert_int_equal(tok_special_id(v, TOK_UNK), 1);
    assert_int_equal(tok_special_id(v, TOK_CLS), -1);
    /* decoding keeps the NUL: the length tells */
    static const int ids[] = {2};
    expect_text(v, ids, 1, 1, "a\0b", 3);
    tok_vocab_free(v);
}

/* ---- encoding, small vocabulary ---------------------------------------- */

static void test_encode_words(void **state)
{
    (void)state;
    tok_vocab *v = small_vocab();
    assert_int_equal(tok_special_id(v, TOK_PAD), 0);
    assert_int_equal(tok_special_id(v, TOK_MASK), 4);
    /* the chest x - ray . with [CLS] ... [SEP] */
    EXPECT_IDS(v, "The chest X-ray.", 1, 2, 5, 6, 7, 8, 9, 14, 3);
    EXPECT_IDS(v, "The chest X-ray.", 0, 5, 6, 7, 8, 9, 14);
    /* ASCII "$" is BERT punctuation although Unicode calls it a symbol; EM
     * DASH U+2014 is Pd: each is a word of its own, [UNK] here */
    EXPECT_IDS(v, "x$x", 0, 7, 1, 7);
    EXPECT_IDS(v, "x\xe2\x80\x94x!?", 0, 7, 1, 7, 23, 24);
    EXPECT_IDS(v, "(x)", 0, 39, 7, 40);
    /* nothing at all */
    EXPECT_IDS(v, "", 1, 2, 3);
    rc_error err = {{0}};
    int *ids;
    size_t n = 99;
    assert_int_equal(tok_encode(v, " \t\n", 3, 0, &ids, &n, &err), 0);
    assert_non_null(ids);
    assert_int_equal(n, 0);
    free(ids);
    tok_vocab_free(v);
}

static void test_encode_wordpiece(void **state)
{
    (void)state;
    tok_vocab *v = small_vocab();
    /* longest match first: "un" (no "una"...), then "##aff" (no
     * "##affable"...), then "##able", then "##s" */
    EXPECT_IDS(v, "unaffable", 0, 10, 11, 12);
    EXPECT_IDS(v, "Unaffables", 0, 10, 11, 12, 13);
    /* "z" has no piece: the whole word is one [UNK], not un ##aff ##able [UNK] */
    EXPECT_IDS(v, "chest unaffablez.", 0, 6, 1, 14);

    /* 100 code points is the limit; 101 is [UNK] */
    char word[512];
    memset(word, 'a', 100);
    word[100] = '\0';
    int want[100];
    want[0] = 20; /* a */
    for (int i = 1; i < 100; i++)
        want[i] = 21; /* ##a */
    expect_ids_n(v, word, 100, 0, want, 100);
    memset(word, 'a', 101);
    static const int unk[] = {1};
    expect_ids_n(v, word, 101, 0, unk, 1);
    /* "ab" * 50 = ab ##ab x 49; one more "a" makes 101 characters */
    for (int i = 0; i < 50; i++)
        memcpy(word + 2 * i, "ab", 2);
    want[0] = 35;
    for (int i = 1; i < 50; i++)
        want[i] = 36;
    expect_ids_n(v, word, 100, 0, want, 50);
    word[100] = 'a';
    expect_ids_n(v, word, 101, 0, unk, 1);
    /* the limit counts code points after accents are stripped: 100 x U+00E1
     * (200 bytes) is "a" * 100, and 101 x ("a" + U+0301) is 101 characters */
    for (int i = 0; i < 100; i++)
        memcpy(word + 2 * i, "\xc3\xa1", 2);
    want[0] = 20;
    for (int i = 1; i < 100; i++)
        want[i] = 21;
    expect_ids_n(v, word, 200, 0, want, 100);
    for (int i = 0; i < 101; i++)
        memcpy(word + 3 * i, "a\xcc\x81", 3);
    expect_ids_n(v, word, 303, 0, unk, 1);
    tok_vocab_free(v);
}

static void test_encode_specials(void **state)
{
    (void)state;
    tok_vocab *v = small_vocab();
    /* written literally, anywhere, they stay whole and are not lower-cased */
    EXPECT_IDS(v, "[CLS]chest[MASK] [SEP]x", 0, 2, 6, 4, 3, 7);
    EXPECT_IDS(v, "x[SEP]x", 1, 2, 7, 3, 7, 3);
    EXPECT_IDS(v, "[UNK][PAD]", 0, 1, 0);
    /* other spellings are text: "[" "cls" "]" with "cls" unknown */
    EXPECT_IDS(v, "[cls]", 0, 37, 1, 38);
    EXPECT_IDS(v, "[Mask]", 0, 37, 1, 38);
    EXPECT_IDS(v, "[CLS", 0, 37, 1);
    tok_vocab_free(v);

    /* a vocabulary without [CLS], [SEP], [MASK], [PAD]: a literal special
     * token encodes as [UNK] (HF's convert_tokens_to_ids), and adding
     * [CLS]/[SEP] is an error */
    static const char text[] = "[UNK]\nx\n";
    v = parse_or_fail(text, sizeof text - 1);
    EXPECT_IDS(v, "[MASK]x [PAD]", 0, 0, 1, 0);
    rc_error err = {{0}};
    int *ids;
    size_t n;
    assert_int_equal(tok_encode(v, "x", 1, 1, &ids, &n, &err), -1);
    assert_non_null(strstr(err.msg, "[CLS]"));
    tok_vocab_free(v);
}

static void test_encode_cleaning(void **state)
{
    (void)state;
    tok_vocab *v = small_vocab();
    /* NUL is dropped without breaking the word */
    EXPECT_IDS_LIT(v, "ch\0est", 6);
    EXPECT_IDS_LIT(v, "x\0", 7);
    /* so "[CL\0S]" is not a special token: "[" "cls" "]" */
    EXPECT_IDS_LIT(v, "[CL\0S]", 37, 1, 38);
    /* control (Cc) and format (Cf: U+200B ZERO WIDTH SPACE) characters are
     * dropped, also inside words */
    EXPECT_IDS(v, "\x01" "chest\x7f \xe2\x80\x8bthe\x1b", 0, 6, 5);
    EXPECT_IDS(v, "ch\xe2\x80\x8b" "est", 0, 6);
    /* U+0085 is Cc: dropped before Python's split() could see whitespace */
    EXPECT_IDS(v, "x\xc2\x85x", 0, 7, 43);
    /* tab, newline, CR, NO-BREAK SPACE, IDEOGRAPHIC SPACE (Zs) and the line
     * and paragraph separators U+2028/U+2029 break words */
    EXPECT_IDS(v, "chest\tthe\nx\r\xc2\xa0ray\xe3\x80\x80the\xe2\x80\xa8" "chest\xe2\x80\xa9x", 0,
               6, 5, 7, 9, 5, 6, 7);
    /* invalid UTF-8 reads as U+FFFD, which is dropped: a stray byte, a
     * truncated sequence before ASCII, a surrogate, an overlong "/", a code
     * point above U+10FFFF */
    EXPECT_IDS(v, "ch\xff" "est", 0, 6);
    EXPECT_IDS(v, "che\xe2\x82st", 0, 6);
    EXPECT_IDS(v, "c\xed\xa0\x80hest", 0, 6);
    EXPECT_IDS(v, "ches\xc0\xaft", 0, 6);
    EXPECT_IDS(v, "x\xf4\x90\x80\x80", 0, 7);
    EXPECT_IDS(v, "x\xe2\x82", 0, 7);
    /* and U+FFFD itself */
    EXPECT_IDS(v, "ch\xef\xbf\xbd" "est", 0, 6);
    tok_vocab_free(v);
}

static void test_encode_unicode(void **state)
{
    (void)state;
    tok_vocab *v = small_vocab();
    /* accents stripped (NFD, then Mn removed), composed or not */
    EXPECT_IDS(v, "Caf\xc3\xa9 na\xc3\xafve R\xc3\x89SUM\xc3\x89", 0, 17, 18, 19);
    EXPECT_IDS(v, "Cafe\xcc\x81", 0, 17);
    /* CJK ideographs are words of their own, even inside a word */
    EXPECT_IDS(v, "the\xe4\xb8\xad" "chest", 0, 5, 22, 6);
    EXPECT_IDS(v, "\xe4\xb8\xad\xe4\xb8\xad", 0, 22, 22);
    /* HF lower-cases one character at a time, so capital sigma becomes
     * U+03C3 even at the end of a word: "ΟΣ" -> ο ##σ; a final sigma typed
     * as such stays: "ος" -> ο ##ς */
    EXPECT_IDS(v, "\xce\x9f\xce\xa3", 0, 30, 31);
    EXPECT_IDS(v, "\xce\xbf\xcf\x82", 0, 30, 32);
    /* U+0130 lower-cases to "i" + U+0307, whose mark is then stripped */
    EXPECT_IDS(v, "\xc4\xb0stanbul", 0, 33, 34);
    tok_vocab_free(v);
}

/* ---- decoding, small vocabulary ------------------------------------------ */

/* Each of clean_up_tokenization's replaces on its own. */
static void test_decode_cleanup_rules(void **state)
{
    (void)state;
    tok_vocab *v = small_vocab();
    EXPECT_TEXT(v, 1, "chest.", 6, 14);          /* " ." */
    EXPECT_TEXT(v, 1, "chest?", 6, 24);          /* " ?" */
    EXPECT_TEXT(v, 1, "chest!", 6, 23);          /* " !" */
    EXPECT_TEXT(v, 1, "chest, the", 6, 15, 5);   /* " ," */
    EXPECT_TEXT(v, 1, "a'the", 20, 16, 5);       /* " ' " */
    EXPECT_TEXT(v, 1, "an't", 20, 25);           /* " n't" */
    EXPECT_TEXT(v, 1, "a'm", 20, 26);            /* " 'm" */
    EXPECT_TEXT(v, 1, "a's", 20, 27);            /* " 's" */
    EXPECT_TEXT(v, 1, "a've", 20, 28);           /* " 've" */
    EXPECT_TEXT(v, 1, "a're", 20, 29);           /* " 're" */
    /* " ' " runs before " 's": "a ' 's" -> "a''s" (the other order would
     * give "a ''s") */
    EXPECT_TEXT(v, 1, "a''s", 20, 16, 27);
    /* matches do not overlap and are not searched again: ". . ." -> "..." */
    EXPECT_TEXT(v, 1, "...", 14, 14, 14);
    /* what the rules leave alone: "( x )", " :" and " -" */
    EXPECT_TEXT(v, 1, "( x ) : x - ray", 39, 7, 40, 44, 7, 8, 9);
    tok_vocab_free(v);
}

static void test_decode_joins_and_specials(void **state)
{
    (void)state;
    tok_vocab *v = small_vocab();
    /* " ##" joins; a leading "##" has no space before it and stays */
    EXPECT_TEXT(v, 1, "unaffables", 10, 11, 12, 13);
    EXPECT_TEXT(v, 1, "##s", 13);
    EXPECT_TEXT(v, 1, "##ss", 13, 13);
    /* special tokens skipped, or kept */
    EXPECT_TEXT(v, 1, "chest", 2, 6, 3, 0, 4, 1);
    EXPECT_TEXT(v, 0, "[CLS] chest [SEP]", 2, 6, 3);
    /* Python's strip() removes NO-BREAK SPACE at both ends */
    EXPECT_TEXT(v, 1, "chest", 42, 6, 42);
    EXPECT_TEXT(v, 1, "\" x \"", 41, 7, 41);
    expect_text(v, NULL, 0, 1, "", 0);
    /* an id outside the vocabulary is an error naming it and its index */
    rc_error err = {{0}};
    static const int outside[] = {6, N_SMALL};
    assert_null(tok_decode(v, outside, 2, 1, NULL, &err));
    assert_non_null(strstr(err.msg, "token id 45 (index 1)"));
    static const int negative[] = {-1};
    assert_null(tok_decode(v, negative, 1, 1, NULL, &err));
    assert_non_null(strstr(err.msg, "token id -1"));
    tok_vocab_free(v);
}

/* ---- the real vocabulary ------------------------------------------------- */

static tok_vocab *real_vocab(void)
{
    char path[4096];
    snprintf(path, sizeof path, "%s/vocab/bert-base-uncased-vocab.txt", tu_shared_dir());
    if (!tu_file_exists(path)) {
        fprintf(stderr, "skipped: %s not found (set RADCAP_SHARED_DIR)\n", path);
        return NULL;
    }
    rc_error err = {{0}};
    tok_vocab *v = tok_vocab_load(path, &err);
    if (!v)
        fail_msg("%s", err.msg);
    return v;
}

static const char card_sample[] =
    "radiograph of the abdomen showing the presence of a large, well - defined, oval, calcified, "
    "and calcifications in the distal part of the right lower quadrant ( arrows ).";

static void test_real_vocab(void **state)
{
    (void)state;
    tok_vocab *v = real_vocab();
    if (!v)
        skip();
    assert_int_equal(tok_vocab_size(v), 30522);
    assert_int_equal(tok_special_id(v, TOK_PAD), 0);
    assert_int_equal(tok_special_id(v, TOK_UNK), 100);
    assert_int_equal(tok_special_id(v, TOK_CLS), 101);
    assert_int_equal(tok_special_id(v, TOK_SEP), 102);
    assert_int_equal(tok_special_id(v, TOK_MASK), 103);

    /* [CLS] radio ##graph of the abdomen showing the presence of a large ,
     * well - defined , oval , cal ##ci ##fied , and cal ##ci ##fication ##s
     * in the distal part of the right lower quadrant ( arrows ) . [SEP] */
    EXPECT_IDS(v, card_sample, 1, 101, 2557, 14413, 1997, 1996, 13878, 4760, 1996, 3739, 1997,
               1037, 2312, 1010, 2092, 1011, 4225, 1010, 9242, 1010, 10250, 6895, 10451, 1010,
               1998, 10250, 6895, 10803, 2015, 1999, 1996, 29333, 2112, 1997, 1996, 2157, 2896,
               29371, 1006, 12563, 1007, 1012, 102);
    /* the card's ground truth: [CLS] figure 1 : pic ##c outlined by the
     * arrows . [SEP] */
    EXPECT_IDS(v, "Figure 1: PICC outlined by the arrows.", 1, 101, 3275, 1015, 1024, 27263,
               2278, 14801, 2011, 1996, 12563, 1012, 102);
    /* cafe naive resume */
    EXPECT_IDS(v, "Caf\xc3\xa9 na\xc3\xafve r\xc3\xa9sum\xc3\xa9", 0, 7668, 15743, 13746);
    /* 肺 部 ct 扫 描: 部 is in the vocabulary, 肺 扫 描 are not */
    EXPECT_IDS(v, "\xe8\x82\xba\xe9\x83\xa8" "CT\xe6\x89\xab\xe6\x8f\x8f", 0, 100, 1960, 14931, 100,
               100);
    /* hello , world ! ! it ' s the patient ' s x - ray ? */
    EXPECT_IDS(v, "Hello, WORLD!! It's the patient's X-ray?", 0, 7592, 1010, 2088, 999, 999, 2009,
               1005, 1055, 1996, 5776, 1005, 1055, 1060, 1011, 4097, 1029);
    /* ΟΔΟΣ -> οδοσ (sigma, not final sigma) -> ο ##δ ##ο ##σ */
    EXPECT_IDS(v, "\xce\x9f\xce\x94\xce\x9f\xce\xa3", 0, 1169, 29722, 29730, 29733);
    /* 한 (U+D55C) -> NFD -> U+1112 U+1161 U+11AB -> ᄒ ##ᅡ ##ᆫ */
    EXPECT_IDS(v, "\xed\x95\x9c", 0, 1469, 30006, 30021);
    /* SNOWMAN is not in the vocabulary; a 101-letter word is [UNK] */
    EXPECT_IDS(v, "\xe2\x98\x83", 0, 100);
    char longword[102];
    memset(longword, 'a', 101);
    longword[101] = '\0';
    EXPECT_IDS(v, longword, 0, 100);
    /* [CLS] [CLS] chest [MASK] x - ray [SEP] [SEP] */
    EXPECT_IDS(v, "[CLS] chest [MASK] x-ray[SEP]", 1, 101, 101, 3108, 103, 1060, 1011, 4097, 102,
               102);
    /* NUL dropped inside a word: "chestx" -> chest ##x, then - ray */
    EXPECT_IDS_LIT(v, "chest\0x-ray", 3108, 2595, 1011, 4097);
    /* controls dropped, whitespace of every kind: pl ##eur ##al e ##ff
     * ##usion . left lung */
    EXPECT_IDS(v, "\x01pleural\x7f effusion\xe2\x80\x8b.\tleft\xc2\xa0lung", 0, 20228, 11236, 2389,
               1041, 4246, 14499, 1012, 2187, 11192);

    /* decode(encode(sample)) is the sample: " ," and " ." close up, while
     * "well - defined" and "( arrows )" keep their spaces */
    rc_error err = {{0}};
    int *ids;
    size_t n;
    assert_int_equal(tok_encode(v, card_sample, strlen(card_sample), 1, &ids, &n, &err), 0);
    char *text = tok_decode(v, ids, n, 1, NULL, &err);
    assert_non_null(text);
    assert_string_equal(text, card_sample);
    free(text);
    free(ids);
    EXPECT_TEXT(v, 1, "figure 1 : picc outlined by the arrows.", 101, 3275, 1015, 1024, 27263,
                2278, 14801, 2011, 1996, 12563, 1012, 102);
    /* don ' t -> "don't" needs no rule: " ' " closes up both sides */
    EXPECT_TEXT(v, 1, "don't", 2123, 1005, 1056);
    tok_vocab_free(v);
}

/* ---- speed ------------------------------------------------------------------ */

/* CPU time of this process: encoding is single-threaded, and CPU time does
 * not grow when other jobs share the machine. */
static double cpu_seconds(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

#if defined(__SANITIZE_ADDRESS__)
#define SANITIZED 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define SANITIZED 1
#endif
#endif
#ifndef SANITIZED
#define SANITIZED 0
#endif

/* Encodes 1 MB made of `unit` repeated, and checks it takes well under a
 * second: at most 0.5 s of CPU (about 5x what it takes on the 2-core Zen 5
 * machine this was written on; not checked under sanitizers, which slow
 * everything down). */
static void time_encoding(const tok_vocab *v, const char *label, const char *unit, size_t unit_len)
{
    const size_t size = 1 << 20;
    char *text = malloc(size);
    for (size_t i = 0; i < size; i++)
        text[i] = unit[i % unit_len];
    rc_error err = {{0}};
    int *ids;
    size_t n;
    double t0 = cpu_seconds();
    assert_int_equal(tok_encode(v, text, size, 1, &ids, &n, &err), 0);
    double seconds = cpu_seconds() - t0;
    fprintf(stderr, "  1 MB of %s: %zu ids in %.3f s\n", label, n, seconds);
    if (!SANITIZED && seconds > 0.5)
        fail_msg("encoding 1 MB of %s took %.3f s", label, seconds);
    free(ids);
    free(text);
}

static void test_speed(void **state)
{
    (void)state;
    tok_vocab *v = real_vocab();
    if (!v)
        v = small_vocab();
    static const char prose[] = "Caf\xc3\xa9 na\xc3\xafve \xe4\xb8\xad\xe5\x9b\xbd \xce\x9f\xce\x94"
                                "\xce\x9f\xce\xa3 unaffable [CLS] ";
    char *mixed = malloc(sizeof card_sample + sizeof prose);
    strcpy(mixed, card_sample);
    strcat(mixed, " ");
    strcat(mixed, prose);
    time_encoding(v, "captions", mixed, strlen(mixed));
    free(mixed);
    /* adversarial shapes: one huge word, all punctuation, 100-letter words
     * that WordPiece cuts letter by letter, almost-special tokens, and marks
     * of alternating combining class that NFD must reorder */
    time_encoding(v, "one word", "a", 1);
    time_encoding(v, "punctuation", ".,;", 3);
    char hundred[101];
    memset(hundred, 'q', 100);
    hundred[100] = ' ';
    time_encoding(v, "100-letter words", hundred, 101);
    time_encoding(v, "[CLS fragments", "[CLS", 4);
    time_encoding(v, "reordered marks", "\xf0\x9d\x85\xad\xf0\x9d\x85\xa5", 8);
    tok_vocab_free(v);
}

/* ---- the Python reference ------------------------------------------------ */

/* Writes the PYTHON REFERENCE block of this file to dir/ref.py. */
static int write_reference(const char *dir, char *path, size_t path_size)
{
    char *source = tu_read_file(__FILE__, NULL);
    if (!source)
        return -1;
    const char *begin = strstr(source, "PYTHON REFERENCE BEGIN\n");
    const char *end = begin ? strstr(begin, "PYTHON REFERENCE END") : NULL;
    if (!end) {
        free(source);
        return -1;
    }
    begin += strlen("PYTHON REFERENCE BEGIN\n");
    snprintf(path, path_size, "%s/ref.py", dir);
    FILE *f = fopen(path, "w");
    int ok = f && fwrite(begin, 1, (size_t)(end - begin), f) == (size_t)(end - begin);
    if (f)
        ok = fclose(f) == 0 && ok;
    free(source);
    return ok ? 0 : -1;
}

/* Sets up the reference in a fresh directory; NULL (and a message) when
 * Python or this file's source cannot be found. */
static char *reference_dir(char *script, size_t script_size)
{
    if (!tu_python_has("unicodedata, re, random")) {
        fprintf(stderr, "skipped: %s cannot run (set RADCAP_PYTHON)\n", tu_python());
        return NULL;
    }
    char *dir = tu_mkdtemp("tokenizer");
    assert_non_null(dir);
    if (write_reference(dir, script, script_size) < 0) {
        fprintf(stderr, "skipped: cannot read the reference from %s (run from the repository "
                        "root)\n", __FILE__);
        free(dir);
        return NULL;
    }
    return dir;
}

static size_t unhex(const char *hex, size_t n, char *out)
{
    size_t k = 0;
    for (size_t i = 0; i + 1 < n; i += 2) {
        unsigned byte;
        sscanf(hex + i, "%2x", &byte);
        out[k++] = (char)byte;
    }
    return k;
}

/* Runs the reference with args, output to dir/name; returns the file opened. */
static FILE *run_reference(const char *script, const char *dir, const char *name, const char *args)
{
    char out[4096], command[8192];
    snprintf(out, sizeof out, "%s/%s", dir, name);
    snprintf(command, sizeof command, "'%s' '%s' %s > '%s'", tu_python(), script, args, out);
    if (tu_run(command) != 0)
        fail_msg("the Python reference failed: %s", command);
    FILE *f = fopen(out, "r");
    assert_non_null(f);
    return f;
}

/* Every code point (all of planes 0-3, the tags and variation selectors,
 * and samples of the private-use planes) in "Q" c "q" c c " " c U+0301: the
 * words must equal Python's, except for code points that GLib's Unicode
 * assigns and Python's does not (Python says Cn and drops them). */
static void test_python_every_code_point(void **state)
{
    (void)state;
    char script[4096];
    char *dir = reference_dir(script, sizeof script);
    if (!dir)
        skip();
    tok_vocab *v = small_vocab();
    FILE *f = run_reference(script, dir, "sweep.txt", "sweep");
    char *line = NULL, text[256], want[1024];
    size_t cap = 0;
    long n_lines = 0, n_newer = 0, n_bad = 0;
    while (getline(&line, &cap, f) > 0) {
        char *tab1 = strchr(line, '\t'), *tab2 = tab1 ? strchr(tab1 + 1, '\t') : NULL;
        assert_non_null(tab2);
        size_t text_len = unhex(line, (size_t)(tab1 - line), text);
        size_t want_len = unhex(tab1 + 1, (size_t)(tab2 - tab1 - 1), want);
        rc_error err = {{0}};
        size_t got_len;
        char *got = tok_basic_tokenize(v, text, text_len, &got_len, &err);
        assert_non_null(got);
        n_lines++;
        if (got_len != want_len || memcmp(got, want, want_len) != 0) {
            gunichar cp = g_utf8_get_char(text + 1);
            if (strncmp(tab2 + 1, "Cn", 2) == 0 && g_unichar_type(cp) != G_UNICODE_UNASSIGNED) {
                n_newer++;
            } else {
                if (n_bad < 20)
                    fprintf(stderr, "U+%04X: got \"%s\", Python \"%.*s\"\n", (unsigned)cp, got,
                            (int)want_len, want);
                n_bad++;
            }
        }
        free(got);
    }
    free(line);
    fclose(f);
    fprintf(stderr, "  %ld code points, %ld differ only by Unicode version\n", n_lines, n_newer);
    assert_true(n_lines > 200000);
    assert_int_equal(n_bad, 0);
    tok_vocab_free(v);
    free(dir);
}

/* Random texts and id lists through the reference and through us, over the
 * vocabulary at vocab_path. */
static void compare_random(const char *script, const char *dir, const tok_vocab *v,
                           const char *vocab_path, int seed)
{
    char args[4200];
    snprintf(args, sizeof args, "encode '%s' %d 3000", vocab_path, seed);
    FILE *f = run_reference(script, dir, "encode.txt", args);
    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long n_bad = 0, n_lines = 0;
    while ((got = getline(&line, &cap, f)) > 0) {
        line[got - 1] = '\0';
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        char *text = malloc((size_t)(tab - line) / 2 + 1);
        size_t len = unhex(line, (size_t)(tab - line), text);
        rc_error err = {{0}};
        int *ids;
        size_t n;
        assert_int_equal(tok_encode(v, text, len, 1, &ids, &n, &err), 0);
        const char *p = tab + 1;
        size_t k = 0;
        int same = 1;
        for (; *p && same; k++) {
            char *next;
            long want = strtol(p, &next, 10);
            same = k < n && ids[k] == want;
            p = *next == ',' ? next + 1 : next;
        }
        if (!same || k != n) {
            if (n_bad < 10) {
                fprintf(stderr, "text (hex) %.*s\n  Python: %s\n", (int)(tab - line), line,
                        tab + 1);
                print_ids("  ours", ids, n);
            }
            n_bad++;
        }
        n_lines++;
        free(ids);
        free(text);
    }
    fclose(f);
    assert_int_equal(n_lines, 3000);
    assert_int_equal(n_bad, 0);

    snprintf(args, sizeof args, "decode '%s' %d 3000", vocab_path, seed);
    f = run_reference(script, dir, "decode.txt", args);
    n_lines = 0;
    while ((got = getline(&line, &cap, f)) > 0) {
        line[got - 1] = '\0';
        char *tab = strchr(line, '\t');
        assert_non_null(tab);
        int ids[64];
        size_t n = 0;
        for (char *p = line; p < tab && n < 64; n++) {
            ids[n] = (int)strtol(p, &p, 10);
            if (*p == ',')
                p++;
        }
        char *want = malloc(strlen(tab + 1) / 2 + 1);
        size_t want_len = unhex(tab + 1, strlen(tab + 1), want);
        rc_error err = {{0}};
        size_t len;
        char *text = tok_decode(v, ids, n, 1, &len, &err);
        if (!text)
            fail_msg("tok_decode: %s", err.msg);
        if (len != want_len || memcmp(text, want, len) != 0) {
            if (n_bad < 10)
                fprintf(stderr, "ids %.*s: ours \"%s\", Python \"%.*s\"\n", (int)(tab - line),
                        line, text, (int)want_len, want);
            n_bad++;
        }
        n_lines++;
        free(text);
        free(want);
    }
    free(line);
    fclose(f);
    assert_int_equal(n_lines, 3000);
    assert_int_equal(n_bad, 0);
}

static void test_python_random_texts(void **state)
{
    (void)state;
    char script[4096];
    char *dir = reference_dir(script, sizeof script);
    if (!dir)
        skip();
    char path[4200];
    snprintf(path, sizeof path, "%s/small-vocab.txt", dir);
    size_t len;
    char *text = small_vocab_text(&len);
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    fclose(f);
    free(text);
    tok_vocab *v = small_vocab();
    compare_random(script, dir, v, path, 1);
    tok_vocab_free(v);

    v = real_vocab();
    if (v) {
        snprintf(path, sizeof path, "%s/vocab/bert-base-uncased-vocab.txt", tu_shared_dir());
        compare_random(script, dir, v, path, 2);
        tok_vocab_free(v);
    }
    free(dir);
}

/* ---- radcap tokenize ------------------------------------------------------- */

static void write_file(const char *path, const char *text, size_t len)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(text, 1, len, f), len);
    assert_int_equal(fclose(f), 0);
}

/* Runs `radcap tokenize ARGS < input`; returns the exit status and the
 * standard output and error (malloc'd). */
static int run_tokenize(const char *dir, const char *args, const char *input, size_t input_len,
                        char **out, char **err_text)
{
    char in_path[4200], out_path[4200], err_path[4200], command[16384];
    snprintf(in_path, sizeof in_path, "%s/in.jsonl", dir);
    snprintf(out_path, sizeof out_path, "%s/out.jsonl", dir);
    snprintf(err_path, sizeof err_path, "%s/err.txt", dir);
    write_file(in_path, input, input_len);
    snprintf(command, sizeof command, "'%s' tokenize %s < '%s' > '%s' 2> '%s'", tu_radcap_bin(),
             args, in_path, out_path, err_path);
    int status = tu_run(command);
    *out = tu_read_file(out_path, NULL);
    *err_text = tu_read_file(err_path, NULL);
    assert_non_null(*out);
    assert_non_null(*err_text);
    return status;
}

static void test_cli(void **state)
{
    (void)state;
    if (!tu_file_exists(tu_radcap_bin())) {
        fprintf(stderr, "skipped: %s not built (set RADCAP_BIN)\n", tu_radcap_bin());
        skip();
    }
    char *dir = tu_mkdtemp("tokenize-cli");
    assert_non_null(dir);
    char vocab[4200], args[8400];
    snprintf(vocab, sizeof vocab, "%s/vocab.txt", dir);
    size_t len;
    char *text = small_vocab_text(&len);
    write_file(vocab, text, len);
    free(text);
    char *out, *err;

    /* encode: a good line, a bad one in the middle of each kind, a blank
     * line, a NUL escape (dropped, not cutting the text short), an escaped
     * backslash before "u0000" (a real backslash, then "u0000") */
    static const char input[] = "{\"text\": \"The chest X-ray.\"}\n"
                                "not json\n"
                                "{\"text\": 5}\n"
                                "{\"ids\": [1]}\n"
                                "\n"
                                "{\"text\": \"ch\\u0000est unaffable\", \"id\": \"other keys ignored\"}\n"
                                "[\"text\"]\n"
                                "{\"text\": \"x\\\\u0000\"}\n"
                                "{\"text\": \"\"}";
    snprintf(args, sizeof args, "--vocab '%s'", vocab);
    int status = run_tokenize(dir, args, input, sizeof input - 1, &out, &err);
    assert_int_equal(status, 1);
    static const char want[] = "{\"ids\": [2, 5, 6, 7, 8, 9, 14, 3]}\n"
                               "{\"error\": \"line 2: not valid JSON\"}\n"
                               "{\"error\": \"line 3: \\\"text\\\" must be a string\"}\n"
                               "{\"error\": \"line 4: no \\\"text\\\" key\"}\n"
                               "\n"
                               "{\"ids\": [2, 6, 10, 11, 12, 3]}\n"
                               "{\"error\": \"line 7: expected a JSON object with a \\\"text\\\" key\"}\n"
                               /* x \ u0000: "\" is punctuation, "u0000" unknown */
                               "{\"ids\": [2, 7, 1, 1, 3]}\n"
                               "{\"ids\": [2, 3]}\n";
    assert_string_equal(out, want);
    assert_non_null(strstr(err, "line 2: not valid JSON"));
    assert_non_null(strstr(err, "4 of 9 lines were bad"));
    free(out);
    free(err);

    /* --no-special */
    snprintf(args, sizeof args, "--vocab '%s' --no-special", vocab);
    static const char plain[] = "{\"text\": \"unaffable\"}\n";
    assert_int_equal(run_tokenize(dir, args, plain, sizeof plain - 1, &out, &err), 0);
    assert_string_equal(out, "{\"ids\": [10, 11, 12]}\n");
    free(out);
    free(err);

    /* decode, with an id outside the vocabulary and a non-integer between
     * good lines; quotes in the text are escaped */
    static const char ids_input[] = "{\"ids\": [2, 6, 13, 14, 3]}\n"
                                    "{\"ids\": [6, 999]}\n"
                                    "{\"ids\": [1.5]}\n"
                                    "{\"ids\": \"6\"}\n"
                                    "{\"ids\": [41, 7, 41, 42]}\n"
                                    "{\"ids\": []}\n";
    snprintf(args, sizeof args, "--vocab '%s' --decode", vocab);
    assert_int_equal(run_tokenize(dir, args, ids_input, sizeof ids_input - 1, &out, &err), 1);
    static const char want_text[] =
        "{\"text\": \"chests.\"}\n"
        "{\"error\": \"line 2: token id 999 (index 1) is outside the vocabulary (ids 0 to 44)\"}\n"
        "{\"error\": \"line 3: \\\"ids\\\" element 0 (0-based) is not an integer\"}\n"
        "{\"error\": \"line 4: \\\"ids\\\" must be an array of integers\"}\n"
        "{\"text\": \"\\\" x \\\"\"}\n"
        "{\"text\": \"\"}\n";
    assert_string_equal(out, want_text);
    free(out);
    free(err);

    /* --keep-special */
    snprintf(args, sizeof args, "--vocab '%s' --decode --keep-special", vocab);
    static const char keep[] = "{\"ids\": [2, 6, 3]}\n";
    assert_int_equal(run_tokenize(dir, args, keep, sizeof keep - 1, &out, &err), 0);
    assert_string_equal(out, "{\"text\": \"[CLS] chest [SEP]\"}\n");
    free(out);
    free(err);

    /* usage errors, a missing vocabulary, --help */
    assert_int_equal(run_tokenize(dir, "", "", 0, &out, &err), 2);
    assert_non_null(strstr(err, "--vocab"));
    free(out);
    free(err);
    snprintf(args, sizeof args, "--vocab '%s' --decode --no-special", vocab);
    assert_int_equal(run_tokenize(dir, args, "", 0, &out, &err), 2);
    free(out);
    free(err);
    assert_int_equal(run_tokenize(dir, "--vocab /nonexistent/v.txt", "", 0, &out, &err), 3);
    assert_non_null(strstr(err, "/nonexistent/v.txt"));
    free(out);
    free(err);
    assert_int_equal(run_tokenize(dir, "--help", "", 0, &out, &err), 0);
    assert_non_null(strstr(out, "usage: radcap tokenize"));
    free(out);
    free(err);
    free(dir);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_vocab_line_ends),
        cmocka_unit_test(test_vocab_duplicates),
        cmocka_unit_test(test_vocab_errors),
        cmocka_unit_test(test_vocab_bom_and_nul),
        cmocka_unit_test(test_encode_words),
        cmocka_unit_test(test_encode_wordpiece),
        cmocka_unit_test(test_encode_specials),
        cmocka_unit_test(test_encode_cleaning),
        cmocka_unit_test(test_encode_unicode),
        cmocka_unit_test(test_decode_cleanup_rules),
        cmocka_unit_test(test_decode_joins_and_specials),
        cmocka_unit_test(test_real_vocab),
        cmocka_unit_test(test_speed),
        cmocka_unit_test(test_python_every_code_point),
        cmocka_unit_test(test_python_random_texts),
        cmocka_unit_test(test_cli),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}

/* The reference, extracted from this file by write_reference(); usage:
 *   ref.py sweep                      one line per code point: text, words, category
 *   ref.py encode VOCAB SEED N        N random texts: text, ids with [CLS]/[SEP]
 *   ref.py decode VOCAB SEED N        N random id lists: ids, decoded text
 * Texts are written as hex of their UTF-8 so that NUL and newlines survive.

PYTHON REFERENCE BEGIN
# Hugging Face's slow BertTokenizer (uncased), re-stated with Python's own
# unicodedata, str.lower and str.split, as HF runs them.
import random, re, sys, unicodedata

SPECIALS = ["[UNK]", "[SEP]", "[PAD]", "[CLS]", "[MASK]"]
SPECIAL_RE = "|".join(re.escape(s) for s in SPECIALS)


def load_vocab(path):
    vocab = {}
    with open(path, "r", encoding="utf-8") as f:
        for index, token in enumerate(f.readlines()):
            vocab[token.rstrip("\n")] = index
    return vocab, {i: t for t, i in vocab.items()}


def is_control(c):
    return c not in "\t\n\r" and unicodedata.category(c).startswith("C")


def is_whitespace(c):
    return c in " \t\n\r" or unicodedata.category(c) == "Zs"


def is_punct(c):
    cp = ord(c)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(c).startswith("P")


def is_cjk(cp):
    return (0x4E00 <= cp <= 0x9FFF or 0x3400 <= cp <= 0x4DBF or 0x20000 <= cp <= 0x2A6DF
            or 0x2A700 <= cp <= 0x2B73F or 0x2B740 <= cp <= 0x2B81F or 0x2B820 <= cp <= 0x2CEAF
            or 0xF900 <= cp <= 0xFAFF or 0x2F800 <= cp <= 0x2FA1F)


def split_punct(token):
    out, new_word = [], True
    for c in token:
        if is_punct(c):
            out.append([c])
            new_word = True
        else:
            if new_word:
                out.append([])
            new_word = False
            out[-1].append(c)
    return ["".join(x) for x in out]


def basic(text):
    # BasicTokenizer.tokenize: clean, space out CJK, NFC, split, lower,
    # NFD and drop Mn, split punctuation
    text = "".join(" " if is_whitespace(c) else c for c in text
                   if not (ord(c) == 0 or ord(c) == 0xFFFD or is_control(c)))
    text = "".join(" %s " % c if is_cjk(ord(c)) else c for c in text)
    text = unicodedata.normalize("NFC", text)
    words = []
    for token in text.strip().split():
        token = unicodedata.normalize("NFD", token.lower())
        token = "".join(c for c in token if unicodedata.category(c) != "Mn")
        words.extend(split_punct(token))
    return " ".join(words).strip().split()


def words(text):
    # PreTrainedTokenizer.tokenize: lower-case all but the special tokens one
    # character at a time, split the special tokens out, BasicTokenizer the rest
    text = re.sub("(" + SPECIAL_RE + ")|(.+?)", lambda m: m.group(1) or m.group(2).lower(), text)
    out = []
    for part in re.split("(" + SPECIAL_RE + ")", text):
        if part in SPECIALS:
            out.append(part)
        elif part:
            out.extend(basic(part))
    return out


def wordpiece(word, vocab):
    if len(word) > 100:
        return ["[UNK]"]
    pieces, start = [], 0
    while start < len(word):
        end = len(word)
        while end > start:
            sub = ("##" if start > 0 else "") + word[start:end]
            if sub in vocab:
                break
            end -= 1
        if end == start:
            return ["[UNK]"]
        pieces.append(sub)
        start = end
    return pieces


def encode(text, vocab):
    tokens = []
    for w in words(text):
        tokens.extend([w] if w in SPECIALS else wordpiece(w, vocab))
    unk = vocab["[UNK]"]
    return [vocab.get(t, unk) for t in ["[CLS]"] + tokens + ["[SEP]"]]


def decode(ids, vocab, id_to_token):
    # decode(ids, skip_special_tokens=True), clean_up_tokenization_spaces=True
    unk = vocab["[UNK]"]
    special_ids = {vocab.get(s, unk) for s in SPECIALS}
    tokens = [id_to_token.get(i, "[UNK]") for i in ids if i not in special_ids]
    text = " ".join(t for t in tokens if t not in SPECIALS).replace(" ##", "").strip()
    for a, b in [(" .", "."), (" ?", "?"), (" !", "!"), (" ,", ","), (" ' ", "'"),
                 (" n't", "n't"), (" 'm", "'m"), (" 's", "'s"), (" 've", "'ve"), (" 're", "'re")]:
        text = text.replace(a, b)
    return text


def hexs(s):
    return s.encode("utf-8").hex()


PIECES = ["radiograph", "Chest", "CT", "scan", "of", "the", "abdomen", "PICC", "well", "-",
          "defined", "calcified", "arrows", "Caf\u00e9", "na\u00efve", "R\u00c9SUM\u00c9",
          "don't", "it's", "[CLS]", "[SEP]", "[MASK]", "[UNK]", "[PAD]", "[cls]", "[CLS", "##",
          "##ing", "n't", "unaffable", "\u039f\u0394\u039f\u03a3", "\u03c3\u03bf\u03c6\u03cc\u03c2",
          "\u041f\u0440\u0438\u0432\u0435\u0442", "\u0645\u0631\u062d\u0628\u0627",
          "\u0928\u092e\u0938\u094d\u0924\u0947", "\u0e20\u0e32\u0e29\u0e32",
          "\u80ba\u90e8\u626b\u63cf", "\ud55c\uad6d\uc5b4", "\u1112\u1161\u11ab", "\uf900",
          "\U00020000", "\U0001f600", "\ue000", "\u0378", "\u2026", "\u2014", "\u201c", "\u201d",
          "\u00bf", "\u00a1", "\u00ab", "\u00bb", "\u0130stanbul", "\u2160\u2161", "\u24b6\u24b7",
          "\u00c5\u212b", "\ufb01", "\u00df", "\u1e9e", "e\u0301", "c\u0327",
          "\U0001d16d\U0001d165", "a\u0301\u0327", "x\u0315\u0300", "\u037e", "\u1fef",
          "<\u0338", "a" * 101, "ab" * 50, "x" * 100, "Ab" * 60]
SINGLES = (list(" \t\n\r!\"#$%&'()*+,-./:;<=>?@[\\]^_`{|}~0123456789AZaz") +
           ["\x00", "\x01", "\x1f", "\x7f", "\x85", "\xa0", "\u200b", "\u2028", "\u2029",
            "\u3000", "\ufffd", "\ufeff", "\u00ad", "\u0301", "\u0345"])


def random_text(rng):
    parts = []
    for _ in range(rng.randint(0, 12)):
        r = rng.random()
        if r < 0.45:
            parts.append(rng.choice(PIECES))
        elif r < 0.8:
            parts.append(rng.choice(SINGLES))
        else:
            # any code point Python knows (those it does not, GLib may)
            top = rng.choice([0x3000, 0x10000, 0x30000])
            while True:
                cp = rng.randint(0xA0, top)
                if not 0xD800 <= cp <= 0xDFFF and unicodedata.category(chr(cp)) != "Cn":
                    break
            parts.append(chr(cp))
        if rng.random() < 0.5:
            parts.append(" ")
    return "".join(parts)


def main():
    mode = sys.argv[1]
    out = sys.stdout
    if mode == "sweep":
        # texts are tokenized 512 at a time, joined by a marker word that
        # nothing crosses, to keep the cost per code point low
        marker = " 7qq7 "
        ranges = [(0, 0x323AF), (0xE0000, 0xE01EF), (0xF0000, 0xF00FF), (0x10FF00, 0x10FFFF)]
        cps = [cp for lo, hi in ranges for cp in range(lo, hi + 1) if not 0xD800 <= cp <= 0xDFFF]
        for b in range(0, len(cps), 512):
            batch = cps[b:b + 512]
            texts = ["Q%sq%s%s %s\u0301" % ((chr(cp),) * 4) for cp in batch]
            results = " ".join(words(marker.join(texts))).split(marker.strip())
            assert len(results) == len(batch)
            for cp, text, result in zip(batch, texts, results):
                out.write("%s\t%s\t%s\n" % (hexs(text), hexs(result.strip()),
                                            unicodedata.category(chr(cp))))
        return
    vocab, id_to_token = load_vocab(sys.argv[2])
    rng = random.Random(int(sys.argv[3]))
    n = int(sys.argv[4])
    if mode == "encode":
        for _ in range(n):
            text = random_text(rng)
            out.write("%s\t%s\n" % (hexs(text), ",".join(map(str, encode(text, vocab)))))
    elif mode == "decode":
        common = [vocab[t] for t in [".", ",", "?", "!", "'", "s", "t", "m", "ve", "re", "n",
                                     "n't", "'s", "##s", "[CLS]", "[SEP]", "[PAD]", "[UNK]"]
                  if t in vocab]
        for _ in range(n):
            ids = [rng.choice(common) if rng.random() < 0.5 else rng.randrange(len(id_to_token))
                   for _ in range(rng.randint(0, 15))]
            out.write("%s\t%s\n" % (",".join(map(str, ids)), hexs(decode(ids, vocab, id_to_token))))


main()
PYTHON REFERENCE END
 */
