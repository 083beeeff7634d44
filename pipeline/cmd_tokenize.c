/* cmd_tokenize.c: `radcap tokenize`, BERT WordPiece encoding and decoding of
 * JSON Lines, for scripts and debugging. One output line per input line, so
 * that line numbers stay aligned even when a line is bad. */
#include "pipeline/commands.h"

#include <cjson/cJSON.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "engine/tokenizer.h"

static void usage(FILE *out)
{
    fprintf(out,
            "usage: radcap tokenize --vocab FILE [--no-special]\n"
            "       radcap tokenize --vocab FILE --decode [--keep-special]\n"
            "\n"
            "Reads JSON Lines on standard input and writes one line per input line, in\n"
            "order, with the BERT uncased WordPiece tokenizer over the vocabulary FILE\n"
            "(vocab.txt, one token per line, id = line number - 1), as Hugging Face's\n"
            "BertTokenizer does.\n"
            "\n"
            "  encode (default): {\"text\": \"...\"}  ->  {\"ids\": [101, ..., 102]}\n"
            "  decode:           {\"ids\": [...]}    ->  {\"text\": \"...\"}\n"
            "\n"
            "Other keys of an input object are ignored. A line that is not a JSON object\n"
            "with the key of the right type, or whose ids are not integers of the\n"
            "vocabulary, gives {\"error\": \"line N: reason\"} on standard output and the\n"
            "same message on standard error, and the command goes on. A blank line gives\n"
            "a blank line. A NUL in a text (raw or \\u0000) is dropped like every other\n"
            "control character.\n"
            "\n"
            "options:\n"
            "  --vocab FILE      the vocabulary (required)\n"
            "  --decode          decode ids instead of encoding texts\n"
            "  --no-special      encode without adding [CLS] first and [SEP] last\n"
            "  --keep-special    decode special tokens too (default: skipped, as\n"
            "                    decode(ids, skip_special_tokens=True))\n"
            "  --help            this text\n"
            "\n"
            "exit status: 0 every line done, 1 some lines were bad, 2 usage error,\n"
            "3 the vocabulary could not be read or the output not written.\n");
}

/* Writes n bytes of s as a JSON string literal (UTF-8 passes through). */
static void put_json_string(FILE *out, const char *s, size_t n)
{
    fputc('"', out);
    for (size_t i = 0; i < n; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\')
            fprintf(out, "\\%c", c);
        else if (c == '\n')
            fputs("\\n", out);
        else if (c == '\t')
            fputs("\\t", out);
        else if (c == '\r')
            fputs("\\r", out);
        else if (c < 0x20)
            fprintf(out, "\\u%04x", c);
        else
            fputc(c, out);
    }
    fputc('"', out);
}

/* cJSON's strings end at the first NUL, so a NUL inside a text would cut it
 * short. The tokenizer drops U+0000 and U+0001 alike (both are control
 * characters), so turning each raw NUL byte and each \u0000 escape into
 * U+0001 leaves the encoding unchanged and the text whole. Escapes are two
 * characters long, so stepping over each one keeps "\\u0000" (an escaped
 * backslash) intact. */
static void hide_nul(char *line, size_t len)
{
    for (size_t i = 0; i < len; i++) {
        if (line[i] == '\0') {
            line[i] = '\x01';
        } else if (line[i] == '\\' && i + 1 < len) {
            if (line[i + 1] == 'u' && i + 5 < len && memcmp(line + i + 2, "0000", 4) == 0)
                line[i + 5] = '1';
            i++;
        }
    }
}

/* The member `key` of a JSON object, or an error naming what is wrong. */
static const cJSON *member(const cJSON *root, const char *key, rc_error *err)
{
    if (!cJSON_IsObject(root)) {
        rc_fail(err, "expected a JSON object with a \"%s\" key", key);
        return NULL;
    }
    const cJSON *item = cJSON_GetObjectItemCaseSensitive(root, key);
    if (!item)
        rc_fail(err, "no \"%s\" key", key);
    return item;
}

static int encode_line(const tok_vocab *vocab, const cJSON *root, int add_special, FILE *out,
                       rc_error *err)
{
    const cJSON *text = member(root, "text", err);
    if (!text)
        return -1;
    if (!cJSON_IsString(text))
        return rc_fail(err, "\"text\" must be a string");
    int *ids;
    size_t n;
    if (tok_encode(vocab, text->valuestring, strlen(text->valuestring), add_special, &ids, &n,
                   err) < 0)
        return -1;
    fputs("{\"ids\": [", out);
    for (size_t i = 0; i < n; i++)
        fprintf(out, i ? ", %d" : "%d", ids[i]);
    fputs("]}\n", out);
    free(ids);
    return 0;
}

static int decode_line(const tok_vocab *vocab, const cJSON *root, int skip_special, FILE *out,
                       rc_error *err)
{
    const cJSON *array = member(root, "ids", err);
    if (!array)
        return -1;
    if (!cJSON_IsArray(array))
        return rc_fail(err, "\"ids\" must be an array of integers");
    int n = cJSON_GetArraySize(array);
    int *ids = malloc((size_t)(n > 0 ? n : 1) * sizeof *ids);
    if (!ids)
        return rc_fail(err, "out of memory for %d ids", n);
    int i = 0;
    const cJSON *item;
    cJSON_ArrayForEach(item, array)
    {
        if (!cJSON_IsNumber(item) || item->valuedouble != floor(item->valuedouble) ||
            item->valuedouble < INT_MIN || item->valuedouble > INT_MAX) {
            free(ids);
            return rc_fail(err, "\"ids\" element %d (0-based) is not an integer", i);
        }
        ids[i++] = (int)item->valuedouble;
    }
    size_t len;
    char *text = tok_decode(vocab, ids, (size_t)n, skip_special, &len, err);
    free(ids);
    if (!text)
        return -1;
    fputs("{\"text\": ", out);
    put_json_string(out, text, len);
    fputs("}\n", out);
    free(text);
    return 0;
}

static int is_blank(const char *line, size_t len)
{
    for (size_t i = 0; i < len; i++)
        if (!strchr(" \t\r\n", line[i]) || line[i] == '\0')
            return 0;
    return 1;
}

int cmd_tokenize(int argc, char **argv)
{
    const char *vocab_path = NULL;
    int decode = 0, no_special = 0, keep_special = 0;
    for (int i = 1; i < argc; i++) {
        const char *arg = argv[i];
        if (strcmp(arg, "--help") == 0 || strcmp(arg, "-h") == 0) {
            usage(stdout);
            return EXIT_OK;
        } else if (strcmp(arg, "--vocab") == 0 && i + 1 < argc) {
            vocab_path = argv[++i];
        } else if (strcmp(arg, "--decode") == 0) {
            decode = 1;
        } else if (strcmp(arg, "--no-special") == 0) {
            no_special = 1;
        } else if (strcmp(arg, "--keep-special") == 0) {
            keep_special = 1;
        } else {
            fprintf(stderr, "radcap %s: unknown option or missing value: '%s'\n", argv[0], arg);
            usage(stderr);
            return EXIT_USAGE;
        }
    }
    if (!vocab_path) {
        fprintf(stderr, "radcap %s: --vocab FILE is required\n", argv[0]);
        usage(stderr);
        return EXIT_USAGE;
    }
    if ((decode && no_special) || (!decode && keep_special)) {
        fprintf(stderr, "radcap %s: %s only applies %s\n", argv[0],
                decode ? "--no-special" : "--keep-special",
                decode ? "when encoding" : "with --decode");
        return EXIT_USAGE;
    }
    rc_error err = {{0}};
    tok_vocab *vocab = tok_vocab_load(vocab_path, &err);
    if (!vocab) {
        fprintf(stderr, "radcap %s: %s\n", argv[0], err.msg);
        return EXIT_FATAL;
    }

    char *line = NULL;
    size_t cap = 0;
    ssize_t got;
    long line_no = 0, n_bad = 0;
    while ((got = getline(&line, &cap, stdin)) >= 0) {
        size_t len = (size_t)got;
        line_no++;
        if (is_blank(line, len)) {
            fputc('\n', stdout);
            continue;
        }
        if (!decode)
            hide_nul(line, len);
        rc_clear(&err);
        int rc = -1;
        cJSON *root = cJSON_ParseWithLength(line, len);
        if (!root)
            rc_fail(&err, "not valid JSON");
        else if (decode)
            rc = decode_line(vocab, root, !keep_special, stdout, &err);
        else
            rc = encode_line(vocab, root, !no_special, stdout, &err);
        cJSON_Delete(root);
        if (rc < 0) {
            n_bad++;
            rc_prefix(&err, "line %ld", line_no);
            fprintf(stderr, "radcap %s: %s\n", argv[0], err.msg);
            fputs("{\"error\": ", stdout);
            put_json_string(stdout, err.msg, strlen(err.msg));
            fputs("}\n", stdout);
        }
    }
    int read_failed = ferror(stdin);
    free(line);
    tok_vocab_free(vocab);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "radcap %s: cannot write the output\n", argv[0]);
        return EXIT_FATAL;
    }
    if (read_failed) {
        fprintf(stderr, "radcap %s: error reading standard input after line %ld\n", argv[0],
                line_no);
        return EXIT_FATAL;
    }
    if (n_bad > 0) {
        fprintf(stderr, "radcap %s: %ld of %ld lines were bad\n", argv[0], n_bad, line_no);
        return EXIT_PARTIAL;
    }
    return EXIT_OK;
}
