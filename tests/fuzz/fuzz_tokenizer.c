/* fuzz_tokenizer.c: libFuzzer target for engine/tokenizer.c. Each input is
 * used three ways: as a UTF-8 (or not) text to encode and to split into
 * words with a small built-in vocabulary, as a list of 16-bit ids to decode,
 * and as a vocab.txt to parse (and, when it parses, to encode and decode the
 * same bytes with). Beyond memory errors it checks the tokenizer's promises:
 * encoding never fails, its ids are in the vocabulary and decode, and the
 * words are valid UTF-8 joined by single spaces. */
#include <glib.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

static tok_vocab *builtin;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc;
    (void)argv;
    static const char text[] = "[PAD]\n[UNK]\n[CLS]\n[SEP]\n[MASK]\nthe\nchest\n##s\nx\n##x\n-\n"
                               "ray\n.\n,\n'\ns\n's\nn't\n##a\na\n\xe4\xb8\xad\n\xce\xbf\n"
                               "##\xcf\x83\n\xc2\xa0\n##\n#\n";
    rc_error err;
    builtin = tok_vocab_parse(text, sizeof text - 1, "built-in", &err);
    if (!builtin)
        abort();
    return 0;
}

/* Encodes, checks the ids, decodes them back. */
static void round_trip(const tok_vocab *v, const char *text, size_t len)
{
    rc_error err;
    int *ids;
    size_t n;
    if (tok_encode(v, text, len, tok_special_id(v, TOK_CLS) >= 0 && tok_special_id(v, TOK_SEP) >= 0,
                   &ids, &n, &err) < 0)
        abort();
    for (size_t i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= tok_vocab_size(v))
            abort();
    for (int skip = 0; skip <= 1; skip++) {
        char *decoded = tok_decode(v, ids, n, skip, NULL, &err);
        if (!decoded)
            abort();
        free(decoded);
    }
    free(ids);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    const char *text = (const char *)data;
    rc_error err;
    round_trip(builtin, text, size);

    size_t len;
    char *words = tok_basic_tokenize(builtin, text, size, &len, &err);
    if (!words || !g_utf8_validate(words, (gssize)len, NULL) || strlen(words) != len ||
        (len > 0 && (words[0] == ' ' || words[len - 1] == ' ')) || strstr(words, "  "))
        abort();
    free(words);

    int ids[512];
    size_t n = size / 2 < 512 ? size / 2 : 512;
    for (size_t i = 0; i < n; i++)
        ids[i] = (int)(int16_t)(data[2 * i] | data[2 * i + 1] << 8) % (tok_vocab_size(builtin) + 2);
    for (int skip = 0; skip <= 1; skip++) {
        int in_range = 1;
        for (size_t i = 0; i < n; i++)
            in_range &= ids[i] >= 0 && ids[i] < tok_vocab_size(builtin);
        char *decoded = tok_decode(builtin, ids, n, skip, NULL, &err);
        if ((decoded != NULL) != in_range)
            abort();
        free(decoded);
    }

    tok_vocab *v = tok_vocab_parse(text, size, "input", &err);
    if (v) {
        round_trip(v, text, size);
        tok_vocab_free(v);
    }
    return 0;
}
