/* fuzz_ptb.c: the PTB caption tokenizer over arbitrary bytes with each
 * combination of options. Beyond "no crash, no leak", it checks what the
 * tokenizer promises: the output is valid UTF-8, tokens are separated by
 * single spaces (none leading or trailing, no empty token), no token of
 * pycocoevalcap's removal list survives unless punctuation is kept, no
 * bracket token survives --drop-brackets, and no ASCII capital survives
 * lower-casing. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/ptb.h"
#include "pipeline/ucd.h"

static int is_one_of(const char *tok, size_t len, const char *const *list, size_t n)
{
    for (size_t k = 0; k < n; k++)
        if (strlen(list[k]) == len && memcmp(list[k], tok, len) == 0)
            return 1;
    return 0;
}

static void check(const char *out, const ptb_options *opt)
{
    static const char *const punctuation[] = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".",
                                              "?", "!", ",", ":", "-", "--", "...", ";"};
    static const char *const brackets[] = {"-lrb-", "-rrb-", "-lcb-", "-rcb-"};
    size_t len = strlen(out);
    for (size_t k = 0; k < len;) {
        int32_t cp;
        size_t used = ucd_decode((const unsigned char *)out + k, len - k, &cp);
        if (cp == UCD_REPLACEMENT && used == 1)
            abort();
        if (!opt->keep_case && cp >= 'A' && cp <= 'Z')
            abort();
        k += used;
    }
    if (len && (out[0] == ' ' || out[len - 1] == ' '))
        abort();
    for (const char *tok = out; len && tok <= out + len;) {
        const char *end = strchr(tok, ' ');
        size_t n = end ? (size_t)(end - tok) : strlen(tok);
        if (n == 0)
            abort();
        if (!opt->keep_punctuation && is_one_of(tok, n, punctuation, sizeof punctuation / sizeof *punctuation))
            abort();
        if (opt->drop_brackets && is_one_of(tok, n, brackets, 4))
            abort();
        if (!end)
            break;
        tok = end + 1;
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int mode = 0; mode < 8; mode++) {
        ptb_options opt = {mode & 1, (mode >> 1) & 1, (mode >> 2) & 1};
        rc_error err;
        char *out = ptb_tokenize((const char *)data, size, &opt, &err);
        if (!out)
            abort();
        check(out, &opt);
        free(out);
    }
    return 0;
}
