/* tokenizer.c: BERT uncased WordPiece, as Hugging Face's slow BertTokenizer.
 * See tokenizer.h for the exact rules; comments here say why the code is
 * shaped the way it is. */
#include "tokenizer.h"

#include <errno.h>
#include <glib.h>
#include <limits.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const special_names[TOK_N_SPECIAL] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]",
                                                          "[MASK]"};

/* One entry of the vocabulary's hash table. */
typedef struct {
    int32_t id;   /* token id, -1 when the slot is empty */
    uint32_t tag; /* high bits of the token's hash: most mismatches stop here */
} vocab_slot;

struct tok_vocab {
    char *text;              /* every token, NUL-terminated, in id order */
    size_t *start;           /* (n_tokens) offset of each token in text */
    size_t *length;          /* (n_tokens) bytes of each token, without its NUL */
    unsigned char *shadowed; /* (n_tokens) 1 where a later line repeats the token */
    int n_tokens;            /* ids are 0 .. n_tokens-1 */
    vocab_slot *slots;       /* (n_slots) open-addressing hash set of ids */
    size_t n_slots;          /* power of two, at least twice n_tokens */
    size_t max_length;       /* bytes of the longest token */
    size_t max_piece[2][256]; /* bytes of the longest word-initial [0] or "##" [1] piece
                                 by first byte (without the "##"): bounds WordPiece */
    int special[TOK_N_SPECIAL]; /* id of each special token, -1 when absent */
};

/* ---- growable arrays ---------------------------------------------------- */

/* Makes room for `need` elements of `size` bytes in *data (capacity *cap).
 * Returns -1 when memory runs out, leaving *data as it was. */
static int grow(void **data, size_t *cap, size_t need, size_t size)
{
    if (need <= *cap)
        return 0;
    size_t n = *cap ? *cap : 16;
    while (n < need) {
        if (n > SIZE_MAX / 2 / size)
            return -1;
        n *= 2;
    }
    void *p = realloc(*data, n * size);
    if (!p)
        return -1;
    *data = p;
    *cap = n;
    return 0;
}

/* A byte string under construction. */
typedef struct {
    char *data; /* (cap) bytes, data[len] kept 0 once finished */
    size_t len; /* bytes used */
    size_t cap; /* bytes allocated */
    int oom;    /* an append failed: the content is incomplete */
} strbuf;

static void sb_append(strbuf *sb, const char *bytes, size_t n)
{
    if (sb->oom || grow((void **)&sb->data, &sb->cap, sb->len + n + 1, 1) < 0) {
        sb->oom = 1;
        return;
    }
    memcpy(sb->data + sb->len, bytes, n);
    sb->len += n;
    sb->data[sb->len] = '\0';
}

/* ---- UTF-8 --------------------------------------------------------------- */

/* Decodes the code point at s[*i] (n bytes in s) and advances *i. Returns -1
 * for an invalid sequence (overlong, surrogate, above U+10FFFF, truncated, or
 * a stray continuation byte) after advancing by one byte only: a maximal
 * invalid subpart is a lead byte plus continuation bytes, and continuation
 * bytes are invalid alone, so skipping byte by byte never swallows a valid
 * character that Python's decoder would have kept. */
static int32_t utf8_next(const unsigned char *s, size_t n, size_t *i)
{
    size_t at = *i;
    unsigned c = s[at];
    *i = at + 1;
    if (c < 0x80)
        return (int32_t)c;
    int extra;
    uint32_t cp, min;
    if (c >= 0xC2 && c <= 0xDF)
        extra = 1, cp = c & 0x1F, min = 0x80;
    else if (c >= 0xE0 && c <= 0xEF)
        extra = 2, cp = c & 0x0F, min = 0x800;
    else if (c >= 0xF0 && c <= 0xF4)
        extra = 3, cp = c & 0x07, min = 0x10000;
    else
        return -1;
    if (n - at - 1 < (size_t)extra)
        return -1;
    for (int k = 1; k <= extra; k++) {
        unsigned cc = s[at + k];
        if ((cc & 0xC0) != 0x80)
            return -1;
        cp = (cp << 6) | (cc & 0x3F);
    }
    if (cp < min || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
        return -1;
    *i = at + 1 + (size_t)extra;
    return (int32_t)cp;
}

/* Writes cp as UTF-8 into out (4 bytes at most); returns the byte count. */
static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- character classes (HF's _is_control, _is_whitespace, ...) ---------- */

/* Python's str.isspace(): what str.split() and str.strip() treat as
 * whitespace (bidirectional class WS, B or S, or category Zs). */
static int py_isspace(uint32_t cp)
{
    if (cp < 0x80)
        return cp == ' ' || (cp >= 0x09 && cp <= 0x0D) || (cp >= 0x1C && cp <= 0x1F);
    return cp == 0x85 || cp == 0xA0 || cp == 0x1680 || (cp >= 0x2000 && cp <= 0x200A) ||
           cp == 0x2028 || cp == 0x2029 || cp == 0x202F || cp == 0x205F || cp == 0x3000;
}

/* HF's _clean_text drops these: NUL, U+FFFD, and every category C* except
 * tab, newline and carriage return. */
static int is_dropped(uint32_t cp)
{
    if (cp < 0x80)
        return (cp < 0x20 && cp != '\t' && cp != '\n' && cp != '\r') || cp == 0x7F;
    if (cp == 0xFFFD)
        return 1;
    switch (g_unichar_type(cp)) {
    case G_UNICODE_CONTROL:
    case G_UNICODE_FORMAT:
    case G_UNICODE_UNASSIGNED:
    case G_UNICODE_PRIVATE_USE:
    case G_UNICODE_SURROGATE:
        return 1;
    default:
        return 0;
    }
}

/* A word break once cleaning has run: HF turns \t \n \r and Zs into spaces,
 * then str.split() also breaks at U+2028/U+2029 (categories Zl, Zp, which
 * cleaning keeps). The other characters Python calls whitespace are Cc and
 * were dropped already. */
static int is_break(uint32_t cp)
{
    if (cp < 0x80)
        return cp == ' ' || cp == '\t' || cp == '\n' || cp == '\r';
    return py_isspace(cp) || g_unichar_type(cp) == G_UNICODE_SPACE_SEPARATOR;
}

/* The CJK Unified Ideographs blocks BERT puts spaces around. */
static int is_cjk(uint32_t cp)
{
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) ||
           (cp >= 0x20000 && cp <= 0x2A6DF) || (cp >= 0x2A700 && cp <= 0x2B73F) ||
           (cp >= 0x2B740 && cp <= 0x2B81F) || (cp >= 0x2B820 && cp <= 0x2CEAF) ||
           (cp >= 0xF900 && cp <= 0xFAFF) || (cp >= 0x2F800 && cp <= 0x2FA1F);
}

/* BERT's punctuation: all non-alphanumeric printable ASCII (so "$", "+",
 * "^" and "`" count although Unicode files them as symbols) and P*. */
static int is_punct(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 33 && cp <= 47) || (cp >= 58 && cp <= 64) || (cp >= 91 && cp <= 96) ||
               (cp >= 123 && cp <= 126);
    switch (g_unichar_type(cp)) {
    case G_UNICODE_CONNECT_PUNCTUATION:
    case G_UNICODE_DASH_PUNCTUATION:
    case G_UNICODE_OPEN_PUNCTUATION:
    case G_UNICODE_CLOSE_PUNCTUATION:
    case G_UNICODE_INITIAL_PUNCTUATION:
    case G_UNICODE_FINAL_PUNCTUATION:
    case G_UNICODE_OTHER_PUNCTUATION:
        return 1;
    default:
        return 0;
    }
}

/* Python's str.lower() of the one-character string chr(cp), into out;
 * returns the number of code points (1 or 2). GLib lower-cases only letters
 * of categories Lu and Lt, with simple mappings; Python applies every
 * Lowercase_Mapping, which differs for U+0130 (full mapping "i" + U+0307)
 * and for the Roman numerals (Nl) and circled letters (So) below. A
 * comparison over all code points found no other difference. */
static int py_lower(uint32_t cp, uint32_t out[2])
{
    if (cp < 0x80) {
        out[0] = cp >= 'A' && cp <= 'Z' ? cp + 32 : cp;
        return 1;
    }
    if (cp == 0x130) {
        out[0] = 'i';
        out[1] = 0x307;
        return 2;
    }
    if (cp >= 0x2160 && cp <= 0x216F)
        out[0] = cp + 0x10;
    else if (cp >= 0x24B6 && cp <= 0x24CF)
        out[0] = cp + 0x1A;
    else
        out[0] = g_unichar_tolower(cp);
    return 1;
}

/* ---- the vocabulary ---------------------------------------------------- */

/* FNV-1a, extended by n more bytes: hashing "##" then a piece equals
 * hashing the token "##piece", and WordPiece extends one hash code point by
 * code point instead of rehashing every candidate. */
#define HASH_START 0xcbf29ce484222325ull
static uint64_t hash_extend(uint64_t h, const char *bytes, size_t n)
{
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)bytes[i]) * 0x100000001b3ull;
    return h;
}

/* The slot holding the token prefix + bytes (whose hash is h), or the empty
 * slot where it would go. The table is never full (n_slots >= 2 * n_tokens). */
static size_t find_slot(const tok_vocab *v, uint64_t h, const char *prefix, size_t prefix_len,
                        const char *bytes, size_t n)
{
    size_t mask = v->n_slots - 1;
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t s = (size_t)h & mask;; s = (s + 1) & mask) {
        int32_t id = v->slots[s].id;
        if (id < 0)
            return s;
        if (v->slots[s].tag != tag || v->length[id] != prefix_len + n)
            continue;
        const char *t = v->text + v->start[id];
        if (memcmp(t, prefix, prefix_len) == 0 && memcmp(t + prefix_len, bytes, n) == 0)
            return s;
    }
}

/* The id of the token prefix + bytes, or -1. */
static int lookup(const tok_vocab *v, const char *prefix, size_t prefix_len, const char *bytes,
                  size_t n)
{
    if (prefix_len + n > v->max_length)
        return -1;
    uint64_t h = hash_extend(hash_extend(HASH_START, prefix, prefix_len), bytes, n);
    return v->slots[find_slot(v, h, prefix, prefix_len, bytes, n)].id;
}

void tok_vocab_free(tok_vocab *v)
{
    if (!v)
        return;
    free(v->text);
    free(v->start);
    free(v->length);
    free(v->shadowed);
    free(v->slots);
    free(v);
}

/* Length of the line starting at buf[at] (up to len) and, in *next, where
 * the following line starts: Python's universal newlines end a line at \n,
 * \r\n or a lone \r. */
static size_t line_length(const char *buf, size_t len, size_t at, size_t *next)
{
    size_t end = at;
    while (end < len && buf[end] != '\n' && buf[end] != '\r')
        end++;
    *next = end;
    if (end < len)
        *next = end + (buf[end] == '\r' && end + 1 < len && buf[end + 1] == '\n' ? 2 : 1);
    return end - at;
}

tok_vocab *tok_vocab_parse(const char *buf, size_t len, const char *name, rc_error *err)
{
    size_t n_lines = 0;
    for (size_t at = 0; at < len; n_lines++)
        line_length(buf, len, at, &at);
    if (n_lines > INT_MAX / 2) {
        rc_fail(err, "%s: too many lines for a vocabulary (%zu)", name, n_lines);
        return NULL;
    }
    tok_vocab *v = calloc(1, sizeof *v);
    if (!v) {
        rc_fail(err, "%s: out of memory", name);
        return NULL;
    }
    v->n_tokens = (int)n_lines;
    v->n_slots = 16;
    while (v->n_slots < 2 * n_lines)
        v->n_slots *= 2;
    v->text = malloc(len + n_lines + 1);
    v->start = malloc((n_lines + 1) * sizeof *v->start);
    v->length = malloc((n_lines + 1) * sizeof *v->length);
    v->shadowed = calloc(n_lines + 1, 1);
    v->slots = malloc(v->n_slots * sizeof *v->slots);
    if (!v->text || !v->start || !v->length || !v->shadowed || !v->slots) {
        rc_fail(err, "%s: out of memory for %zu tokens", name, n_lines);
        tok_vocab_free(v);
        return NULL;
    }
    for (size_t s = 0; s < v->n_slots; s++)
        v->slots[s] = (vocab_slot){-1, 0};

    size_t used = 0, at = 0;
    for (int id = 0; id < v->n_tokens; id++) {
        size_t next, n = line_length(buf, len, at, &next);
        const char *line = buf + at;
        for (size_t i = 0; i < n;) {
            size_t was = i;
            if (utf8_next((const unsigned char *)line, n, &i) < 0) {
                rc_fail(err, "%s: line %d is not valid UTF-8 (byte %zu of the line is 0x%02X)",
                        name, id + 1, was + 1, (unsigned)(unsigned char)line[was]);
                tok_vocab_free(v);
                return NULL;
            }
        }
        memcpy(v->text + used, line, n);
        v->text[used + n] = '\0';
        v->start[id] = used;
        v->length[id] = n;
        used += n + 1;
        if (n > v->max_length)
            v->max_length = n;
        if (n > 0 && n > v->max_piece[0][(unsigned char)line[0]])
            v->max_piece[0][(unsigned char)line[0]] = n;
        if (n > 2 && memcmp(line, "##", 2) == 0 && n - 2 > v->max_piece[1][(unsigned char)line[2]])
            v->max_piece[1][(unsigned char)line[2]] = n - 2;
        /* As HF's dict: a repeated token takes the later id. */
        uint64_t h = hash_extend(HASH_START, line, n);
        size_t s = find_slot(v, h, "", 0, line, n);
        if (v->slots[s].id >= 0)
            v->shadowed[v->slots[s].id] = 1;
        v->slots[s] = (vocab_slot){id, (uint32_t)(h >> 32)};
        at = next;
    }
    for (int k = 0; k < TOK_N_SPECIAL; k++)
        v->special[k] = tok_id(v, special_names[k]);
    if (v->special[TOK_UNK] < 0) {
        rc_fail(err, "%s: the vocabulary has no \"[UNK]\" token", name);
        tok_vocab_free(v);
        return NULL;
    }
    return v;
}

tok_vocab *tok_vocab_load(const char *path, rc_error *err)
{
    FILE *f = fopen(path, "rb");
    if (!f) {
        rc_fail(err, "%s: cannot open the vocabulary: %s", path, strerror(errno));
        return NULL;
    }
    char *buf = NULL;
    size_t len = 0, cap = 0;
    int failed = 0;
    for (;;) {
        if (grow((void **)&buf, &cap, len + 65536, 1) < 0) {
            failed = ENOMEM;
            break;
        }
        size_t got = fread(buf + len, 1, cap - len, f);
        len += got;
        if (got == 0) {
            if (ferror(f))
                failed = errno ? errno : EIO;
            break;
        }
    }
    fclose(f);
    if (failed) {
        rc_fail(err, "%s: cannot read the vocabulary: %s", path, strerror(failed));
        free(buf);
        return NULL;
    }
    tok_vocab *v = tok_vocab_parse(buf, len, path, err);
    free(buf);
    return v;
}

int tok_vocab_size(const tok_vocab *v) { return v->n_tokens; }

int tok_id(const tok_vocab *v, const char *token)
{
    return lookup(v, "", 0, token, strlen(token));
}

const char *tok_token(const tok_vocab *v, int id, size_t *len)
{
    if (id < 0 || id >= v->n_tokens)
        return NULL;
    if (len)
        *len = v->length[id];
    return v->text + v->start[id];
}

int tok_special_id(const tok_vocab *v, tok_special which)
{
    return (unsigned)which < TOK_N_SPECIAL ? v->special[which] : -1;
}

const char *tok_special_name(tok_special which)
{
    return (unsigned)which < TOK_N_SPECIAL ? special_names[which] : "";
}

/* ---- encoding ----------------------------------------------------------- */

/* A combining mark waiting for canonical ordering. */
typedef struct {
    uint32_t cp;  /* the mark */
    uint32_t ccc; /* its canonical combining class (non-zero) */
    size_t seq;   /* arrival order, so that sorting is stable */
} pending_mark;

typedef struct {
    const tok_vocab *vocab;
    int words_mode;           /* 1: collect words as text (tok_basic_tokenize), 0: ids */
    /* the word being built: normalised, free of punctuation and whitespace */
    strbuf word;              /* its UTF-8 bytes */
    size_t word_chars;        /* its length in code points */
    size_t cut[TOK_MAX_WORD_CHARS + 2]; /* byte offset of each of its first code points */
    uint64_t hashes[TOK_MAX_WORD_CHARS + 2]; /* WordPiece's candidate hashes, by end */
    /* NFD's canonical ordering: a run of marks of non-zero class since the
     * last starter, held until the next starter (marks of category Mn are
     * dropped on arrival: removing elements does not change a stable sort
     * of the rest) */
    pending_mark *marks;      /* (marks_cap) the run */
    size_t n_marks, marks_cap;
    /* output */
    int *ids;                 /* (ids_cap) ids so far, in words_mode unused */
    size_t n_ids, ids_cap;
    strbuf words;             /* in words_mode: the words joined by spaces */
    int oom;                  /* memory ran out: output incomplete */
} encoder;

static void emit_id(encoder *e, int id)
{
    if (e->oom || grow((void **)&e->ids, &e->ids_cap, e->n_ids + 1, sizeof *e->ids) < 0) {
        e->oom = 1;
        return;
    }
    e->ids[e->n_ids++] = id;
}

/* Greedy longest-match-first WordPiece over the current word, as HF's
 * WordpieceTokenizer: at each start, the longest vocabulary piece (with
 * "##" after the first) wins; a start with no piece makes the whole word
 * [UNK]. Only candidates no longer than the longest piece with the same
 * first byte are examined, and their hashes are built by extension, so the
 * cost per start is bounded by the vocabulary, not by the word. */
static void wordpiece(encoder *e)
{
    const tok_vocab *v = e->vocab;
    int unk = v->special[TOK_UNK];
    size_t n = e->word_chars;
    if (n > TOK_MAX_WORD_CHARS) {
        emit_id(e, unk);
        return;
    }
    e->cut[n] = e->word.len;
    size_t first = e->n_ids;
    for (size_t start = 0, end; start < n; start = end) {
        int id = -1;
        size_t prefix_len = start > 0 ? 2 : 0;
        const char *piece = e->word.data + e->cut[start];
        size_t longest = v->max_piece[start > 0][(unsigned char)piece[0]];
        uint64_t h = hash_extend(HASH_START, "##", prefix_len);
        size_t last = start;
        while (last < n && e->cut[last + 1] - e->cut[start] <= longest) {
            h = hash_extend(h, e->word.data + e->cut[last], e->cut[last + 1] - e->cut[last]);
            e->hashes[++last] = h;
        }
        for (end = last; end > start; end--) {
            size_t s = find_slot(v, e->hashes[end], "##", prefix_len, piece,
                                 e->cut[end] - e->cut[start]);
            if ((id = v->slots[s].id) >= 0)
                break;
        }
        if (id < 0) {
            e->n_ids = first;
            emit_id(e, unk);
            return;
        }
        emit_id(e, id);
    }
}

static void emit_word(encoder *e, const char *bytes, size_t n)
{
    if (e->words.len > 0)
        sb_append(&e->words, " ", 1);
    sb_append(&e->words, bytes, n);
}

/* Ends the current word (if any) and passes it on. */
static void end_word(encoder *e)
{
    if (e->word_chars == 0)
        return;
    if (e->word.oom)
        e->oom = 1;
    else if (e->words_mode)
        emit_word(e, e->word.data, e->word.len);
    else
        wordpiece(e);
    e->word.len = 0;
    e->word_chars = 0;
}

/* Adds one normalised code point to the output: punctuation is a word of
 * its own, anything else extends the current word. */
static void put_char(encoder *e, uint32_t cp)
{
    int punct = is_punct(cp);
    if (punct)
        end_word(e);
    if (e->word_chars <= TOK_MAX_WORD_CHARS)
        e->cut[e->word_chars] = e->word.len;
    char utf8[4];
    sb_append(&e->word, utf8, utf8_put(cp, utf8));
    e->word_chars++;
    if (punct)
        end_word(e);
}

static int by_class(const void *a, const void *b)
{
    const pending_mark *x = a, *y = b;
    if (x->ccc != y->ccc)
        return x->ccc < y->ccc ? -1 : 1;
    return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/* Releases the run of marks in canonical order. */
static void flush_marks(encoder *e)
{
    if (e->n_marks > 1)
        qsort(e->marks, e->n_marks, sizeof *e->marks, by_class);
    for (size_t i = 0; i < e->n_marks; i++)
        put_char(e, e->marks[i].cp);
    e->n_marks = 0;
}

/* Ends a whitespace-delimited token of HF's BasicTokenizer. */
static void end_token(encoder *e)
{
    flush_marks(e);
    end_word(e);
}

/* Adds one cleaned, lower-cased code point: NFD, then Mn removal. Canonical
 * decomposition is recursive and already in canonical order within one
 * character; marks from neighbouring characters are ordered by flush_marks. */
static void add_char(encoder *e, uint32_t cp)
{
    gunichar parts[G_UNICHAR_MAX_DECOMPOSITION_LENGTH];
    size_t n = 1;
    parts[0] = cp;
    if (cp >= 0xC0)
        n = g_unichar_fully_decompose(cp, FALSE, parts, G_UNICHAR_MAX_DECOMPOSITION_LENGTH);
    for (size_t k = 0; k < n; k++) {
        uint32_t c = parts[k];
        uint32_t ccc = c < 0x300 ? 0 : (uint32_t)g_unichar_combining_class(c);
        int mn = c >= 0x300 && g_unichar_type(c) == G_UNICODE_NON_SPACING_MARK;
        if (ccc == 0) {
            flush_marks(e);
            if (!mn)
                put_char(e, c);
        } else if (!mn) {
            if (grow((void **)&e->marks, &e->marks_cap, e->n_marks + 1, sizeof *e->marks) < 0) {
                e->oom = 1;
                return;
            }
            e->marks[e->n_marks] = (pending_mark){c, ccc, e->n_marks};
            e->n_marks++;
        }
    }
}

/* The special token whose name starts text (n bytes), or -1. */
static int special_at(const char *text, size_t n)
{
    for (int k = 0; k < TOK_N_SPECIAL; k++) {
        size_t len = strlen(special_names[k]);
        if (n >= len && memcmp(text, special_names[k], len) == 0)
            return k;
    }
    return -1;
}

static void emit_special(encoder *e, int which)
{
    if (e->words_mode) {
        emit_word(e, special_names[which], strlen(special_names[which]));
        return;
    }
    /* HF's convert_tokens_to_ids maps a token missing from the vocabulary,
     * special or not, to [UNK]. */
    int id = e->vocab->special[which];
    emit_id(e, id >= 0 ? id : e->vocab->special[TOK_UNK]);
}

/* Runs the whole pipeline over text; the output lands in e->ids or e->words. */
static void run_encoder(encoder *e, const char *text, size_t len)
{
    const unsigned char *s = (const unsigned char *)text;
    for (size_t i = 0; i < len && !e->oom;) {
        if (s[i] == '[') {
            int which = special_at(text + i, len - i);
            if (which >= 0) {
                end_token(e);
                emit_special(e, which);
                i += strlen(special_names[which]);
                continue;
            }
        }
        int32_t got = utf8_next(s, len, &i);
        uint32_t cp = got < 0 ? 0xFFFD : (uint32_t)got;
        if (is_dropped(cp))
            continue;
        if (is_break(cp)) {
            end_token(e);
            continue;
        }
        int cjk = is_cjk(cp);
        if (cjk)
            end_token(e);
        uint32_t lower[2];
        int n_lower = py_lower(cp, lower);
        for (int k = 0; k < n_lower; k++)
            add_char(e, lower[k]);
        if (cjk)
            end_token(e);
    }
    end_token(e);
    if (e->word.oom || e->words.oom)
        e->oom = 1;
}

static void encoder_free(encoder *e)
{
    free(e->word.data);
    free(e->marks);
    free(e->ids);
    free(e->words.data);
}

int tok_encode(const tok_vocab *v, const char *text, size_t len, int add_special, int **ids,
               size_t *n_ids, rc_error *err)
{
    *ids = NULL;
    *n_ids = 0;
    if (add_special && (v->special[TOK_CLS] < 0 || v->special[TOK_SEP] < 0))
        return rc_fail(err, "the vocabulary has no \"%s\" token to add",
                       v->special[TOK_CLS] < 0 ? "[CLS]" : "[SEP]");
    encoder e = {.vocab = v};
    /* allocated up front so that *ids is never NULL, even for no ids */
    if (grow((void **)&e.ids, &e.ids_cap, 1, sizeof *e.ids) < 0)
        e.oom = 1;
    if (add_special)
        emit_id(&e, v->special[TOK_CLS]);
    run_encoder(&e, text, len);
    if (add_special)
        emit_id(&e, v->special[TOK_SEP]);
    if (e.oom) {
        encoder_free(&e);
        return rc_fail(err, "out of memory encoding a text of %zu bytes", len);
    }
    *ids = e.ids;
    *n_ids = e.n_ids;
    e.ids = NULL;
    encoder_free(&e);
    return 0;
}

char *tok_basic_tokenize(const tok_vocab *v, const char *text, size_t len, size_t *out_len,
                         rc_error *err)
{
    encoder e = {.vocab = v, .words_mode = 1};
    run_encoder(&e, text, len);
    sb_append(&e.words, "", 0); /* allocates the terminator of an empty result */
    if (e.oom) {
        encoder_free(&e);
        rc_fail(err, "out of memory tokenizing a text of %zu bytes", len);
        return NULL;
    }
    char *out = e.words.data;
    if (out_len)
        *out_len = e.words.len;
    e.words.data = NULL;
    encoder_free(&e);
    return out;
}

/* ---- decoding ----------------------------------------------------------- */

/* Python's s.replace(from, to) in place, for len(to) <= len(from): matches
 * are found left to right, do not overlap, and replaced text is not
 * searched again. Returns the new length. */
static size_t replace_all(char *s, size_t len, const char *from, const char *to)
{
    size_t from_len = strlen(from), to_len = strlen(to), r = 0, w = 0;
    while (r < len) {
        if (len - r >= from_len && memcmp(s + r, from, from_len) == 0) {
            memmove(s + w, to, to_len);
            w += to_len;
            r += from_len;
        } else {
            s[w++] = s[r++];
        }
    }
    return w;
}

/* Python's str.strip() of valid UTF-8 s (len bytes), in place. */
static size_t py_strip(char *s, size_t len)
{
    const unsigned char *u = (const unsigned char *)s;
    size_t begin = 0, end = len;
    while (begin < end) {
        size_t next = begin;
        if (!py_isspace((uint32_t)utf8_next(u, end, &next)))
            break;
        begin = next;
    }
    while (end > begin) {
        size_t last = end - 1, probe;
        while (last > begin && (u[last] & 0xC0) == 0x80)
            last--;
        probe = last;
        if (!py_isspace((uint32_t)utf8_next(u, end, &probe)))
            break;
        end = last;
    }
    memmove(s, s + begin, end - begin);
    return end - begin;
}

/* 1 if the n bytes of text spell a special token's name exactly. */
static int is_special_text(const char *text, size_t n)
{
    int which = special_at(text, n);
    return which >= 0 && strlen(special_names[which]) == n;
}

static int is_special_id(const tok_vocab *v, int id)
{
    for (int k = 0; k < TOK_N_SPECIAL; k++)
        if (v->special[k] == id)
            return 1;
    return 0;
}

char *tok_decode(const tok_vocab *v, const int *ids, size_t n, int skip_special, size_t *len,
                 rc_error *err)
{
    /* HF's clean_up_tokenization, in its order. */
    static const char *const cleanup[][2] = {
        {" .", "."},   {" ?", "?"},     {" !", "!"},     {" ,", ","},     {" ' ", "'"},
        {" n't", "n't"}, {" 'm", "'m"}, {" 's", "'s"}, {" 've", "'ve"}, {" 're", "'re"},
    };
    strbuf out = {0};
    sb_append(&out, "", 0);
    int first = 1;
    for (size_t k = 0; k < n; k++) {
        int id = ids[k];
        if (id < 0 || id >= v->n_tokens) {
            free(out.data);
            rc_fail(err, "token id %d (index %zu) is outside the vocabulary (ids 0 to %d)", id, k,
                    v->n_tokens - 1);
            return NULL;
        }
        const char *text = v->text + v->start[id];
        size_t text_len = v->length[id];
        if (v->shadowed[id]) {
            text = special_names[TOK_UNK];
            text_len = strlen(text);
        }
        /* HF skips by id, then again by text: with skip_special_tokens a
         * token spelled "[CLS]" is dropped whatever its id. Missing
         * specials count as [UNK], whose id is always present. */
        if (skip_special && (is_special_id(v, id) || is_special_text(text, text_len)))
            continue;
        if (!first)
            sb_append(&out, " ", 1);
        sb_append(&out, text, text_len);
        first = 0;
    }
    if (out.oom) {
        free(out.data);
        rc_fail(err, "out of memory decoding %zu ids", n);
        return NULL;
    }
    size_t used = replace_all(out.data, out.len, " ##", "");
    used = py_strip(out.data, used);
    for (size_t r = 0; r < sizeof cleanup / sizeof cleanup[0]; r++)
        used = replace_all(out.data, used, cleanup[r][0], cleanup[r][1]);
    out.data[used] = '\0';
    if (len)
        *len = used;
    return out.data;
}
