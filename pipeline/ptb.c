#include "ptb.h"

#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "pipeline/ucd.h"

/* ---- the input ----
 *
 * The Java lexer is a JFlex scanner: at each position every token pattern
 * is tried, the longest match wins (trailing context, written r1/r2 in the
 * grammar, counts towards the length but is not consumed), and among
 * equally long matches the pattern listed first. Each pattern below is a
 * function returning the length of its longest match (0: none) and, for
 * patterns with trailing context, the length of the token text. */

typedef struct lexer {
    int32_t *cp;  // (n) the caption's code points, then a newline: its line end in the reference's input
    size_t n;
    size_t end;   // patterns see cp[0..end): at most PTB_WINDOW past the current token's start
    size_t start; // the current token's start
    size_t word;  // word_run at start (several patterns begin with a word)
} lexer;

/* How far a pattern may look from a token's start. Several patterns scan a
 * run of characters before failing (URLs, e-mail addresses, hyphenated
 * things), so without a bound a pathological caption (one huge run with a
 * token boundary every few characters) would take quadratic time; with it,
 * time is linear and only tokens longer than this are cut, which no real
 * caption has. */
#define PTB_WINDOW 512

static int32_t at(const lexer *lx, size_t i) { return i < lx->end ? lx->cp[i] : -1; }

static int ascii_upper(int32_t c) { return c >= 'A' && c <= 'Z'; }
static int ascii_letter(int32_t c) { return ascii_upper(c) || (c >= 'a' && c <= 'z'); }
static int ascii_digit(int32_t c) { return c >= '0' && c <= '9'; }
static int ascii_alnum(int32_t c) { return ascii_letter(c) || ascii_digit(c); }
static int32_t fold(int32_t c) { return ascii_upper(c) ? c + 32 : c; }
static int one_of(int32_t c, const char *set)
{
    if (c <= 0 || c >= 128)
        return 0;
    for (; *set; set++)
        if (*set == c)
            return 1;
    return 0;
}

/* Classes of the grammar. */
static int is_space(int32_t c) { return c == ' ' || c == '\t' || c == 0xA0 || (c >= 0x2000 && c <= 0x200A) || c == 0x3000; }
static int is_newline(int32_t c)
{
    return c == '\r' || c == '\n' || c == 0x2028 || c == 0x2029 || c == 0x0B || c == 0x0C || c == 0x85;
}
static int is_spacenl(int32_t c) { return is_space(c) || is_newline(c); }
static int is_digit(int32_t c) { return c >= 0 && ucd_is_digit(c); }
static int is_letter(int32_t c) { return c < 0x80 ? ascii_letter(c) : ucd_is_letter(c); }
static int is_alnum(int32_t c) { return is_letter(c) || is_digit(c); }
static int is_insentp(int32_t c) { return c == ',' || c == ';' || c == ':' || c == 0x3001; }
static int is_hyphen(int32_t c) { return c == '-' || c == '_' || c == 0x058A || c == 0x2010 || c == 0x2011; }
static int is_space_or_nbsp(int32_t c) { return c == ' ' || c == 0xA0; }
static int is_dash_space_nbsp(int32_t c) { return c == '-' || c == ' ' || c == 0xA0; }
static int is_date_sep(int32_t c) { return c == '-' || c == '/'; }

/* Marks and modifiers the word pattern accepts besides letters: the soft
 * hyphen, spacing modifiers, combining diacritics, and the combining marks
 * of Hebrew, Arabic, Syriac, Devanagari and Thai. */
static int is_word_extra(int32_t c)
{
    return c == 0xAD || (c >= 0x2C2 && c <= 0x2C5) || (c >= 0x2D2 && c <= 0x2DF) || (c >= 0x2E5 && c <= 0x2FF) ||
           (c >= 0x300 && c <= 0x36F) || c == 0x384 || c == 0x385 || c == 0x3F6 || (c >= 0x483 && c <= 0x487) ||
           (c >= 0x55A && c <= 0x55F) || (c >= 0x591 && c <= 0x5C7 && c != 0x5BE && c != 0x5C0 && c != 0x5C3 && c != 0x5C6) ||
           (c >= 0x610 && c <= 0x61A) || (c >= 0x64B && c <= 0x65F) || c == 0x670 || (c >= 0x6D6 && c <= 0x6ED) ||
           (c >= 0x730 && c <= 0x74A) || (c >= 0x900 && c <= 0x903) || (c >= 0x93A && c <= 0x94F) ||
           (c >= 0x951 && c <= 0x957) || (c >= 0x962 && c <= 0x963) || c == 0xE31 || (c >= 0xE34 && c <= 0xE3A) ||
           (c >= 0xE47 && c <= 0xE4E);
}
static int is_wordchar(int32_t c) { return is_letter(c) || (c >= 0 && is_word_extra(c)); }

/* Symbols that are tokens of their own. */
static int is_misc_symbol(int32_t c)
{
    if (c < 0x80)
        return one_of(c, "+%&~^|\\");
    return c == 0xA6 || c == 0xA7 || c == 0xA8 || c == 0xA9 || c == 0xAC || c == 0xAE || c == 0xAF ||
           (c >= 0xB0 && c <= 0xBA) || c == 0xD7 || c == 0xF7 || c == 0x387 || c == 0x5BE || c == 0x5C0 ||
           c == 0x5C3 || c == 0x5C6 || c == 0x5F3 || c == 0x5F4 || (c >= 0x600 && c <= 0x603) ||
           (c >= 0x606 && c <= 0x60A) || c == 0x60C || c == 0x614 || c == 0x61B || c == 0x61E || c == 0x66A ||
           c == 0x66D || (c >= 0x703 && c <= 0x70D) || (c >= 0x7F6 && c <= 0x7F8) || c == 0x964 || c == 0x965 ||
           c == 0xE4F || c == 0x1FBD || c == 0x2016 || c == 0x2017 || (c >= 0x2020 && c <= 0x2023) ||
           (c >= 0x2030 && c <= 0x2038) || c == 0x203B || (c >= 0x203E && c <= 0x2042) || c == 0x2044 ||
           (c >= 0x207A && c <= 0x207F) || (c >= 0x208A && c <= 0x208E) || (c >= 0x2100 && c <= 0x214F) ||
           (c >= 0x2190 && c <= 0x21FF) || (c >= 0x2200 && c <= 0x2BFF) || c == 0x3012 || c == 0x30FB ||
           (c >= 0xFF01 && c <= 0xFF0F) || (c >= 0xFF1A && c <= 0xFF20) || (c >= 0xFF3B && c <= 0xFF40) ||
           (c >= 0xFF5B && c <= 0xFF65);
}

/* ---- small pattern pieces ---- */

/* Length of the ASCII literal s at i, letters compared ignoring case (the
 * scanner is caseless for literals, not for character classes); 0 if absent. */
static size_t lit(const lexer *lx, size_t i, const char *s)
{
    size_t k = 0;
    for (; s[k]; k++)
        if (fold(at(lx, i + k)) != fold((unsigned char)s[k]))
            return 0;
    return k;
}

/* Longest of a list of literals at i. An entry starting with '!' wants its
 * next character in exactly that case (the grammar's "[A]rk"). */
static size_t lit_longest(const lexer *lx, size_t i, const char *const *list, size_t n)
{
    size_t best = 0;
    for (size_t k = 0; k < n; k++) {
        const char *s = list[k];
        size_t len;
        if (s[0] == '!')
            len = at(lx, i) == (unsigned char)s[1] && lit(lx, i + 1, s + 2) ? strlen(s) - 1 : 0;
        else
            len = lit(lx, i, s);
        best = len > best ? len : best;
    }
    return best;
}
#define LIT_LONGEST(lx, i, list) lit_longest(lx, i, list, sizeof(list) / sizeof((list)[0]))

static size_t run(const lexer *lx, size_t i, int (*pred)(int32_t))
{
    size_t j = i;
    while (pred(at(lx, j)))
        j++;
    return j - i;
}

/* Apostrophe: ' U+0092 U+2019 or &apos; */
static size_t apos(const lexer *lx, size_t i)
{
    int32_t c = at(lx, i);
    if (c == '\'' || c == 0x92 || c == 0x2019)
        return 1;
    return lit(lx, i, "&apos;");
}

/* Apostrophe or a character often typed for one inside words. */
static size_t apos_etc(const lexer *lx, size_t i)
{
    size_t a = apos(lx, i);
    if (a)
        return a;
    int32_t c = at(lx, i);
    return c == 0x91 || c == 0x2018 || c == 0x201B;
}

/* An accented-vowel entity such as &eacute; (part of words). */
static size_t letter_entity(const lexer *lx, size_t i)
{
    if (at(lx, i) != '&' || !one_of(at(lx, i + 1), "aeiouAEIOU"))
        return 0;
    static const char *const accents[] = {"acute;", "grave;", "uml;"};
    size_t k = LIT_LONGEST(lx, i + 2, accents);
    return k ? 2 + k : 0;
}

/* A run of word characters: letters, marks, soft hyphens, letter entities. */
static size_t scan_word(const lexer *lx, size_t i)
{
    size_t j = i;
    for (;;) {
        if (is_wordchar(at(lx, j))) {
            j++;
            continue;
        }
        size_t e = letter_entity(lx, j);
        if (!e)
            return j - i;
        j += e;
    }
}

/* scan_word, remembered for the token's start. */
static size_t word_run(const lexer *lx, size_t i) { return i == lx->start ? lx->word : scan_word(lx, i); }

/* A reduced auxiliary: 's 'm 'd 're 've 'll */
static size_t redaux(const lexer *lx, size_t i)
{
    size_t a = apos(lx, i);
    if (!a)
        return 0;
    int32_t c = fold(at(lx, i + a));
    if (c == 'm' || c == 's' || c == 'd')
        return a + 1;
    if (lit(lx, i + a, "re") || lit(lx, i + a, "ve") || lit(lx, i + a, "ll"))
        return a + 2;
    return 0;
}

/* An acronym: letter (. letter)+; returns its number of letters (0 if under 2). */
static size_t acro_letters(const lexer *lx, size_t i)
{
    if (!ascii_letter(at(lx, i)))
        return 0;
    size_t m = 1;
    while (at(lx, i + 2 * m - 1) == '.' && ascii_letter(at(lx, i + 2 * m)))
        m++;
    return m >= 2 ? m : 0;
}

/* An acronym followed by a period ("e.g.", "U.S.A."): the whole length, or 0. */
static size_t acro_dot(const lexer *lx, size_t i)
{
    size_t m = acro_letters(lx, i);
    if (!m)
        return 0;
    if (at(lx, i + 2 * m - 1) == '.')
        return 2 * m;
    return m >= 3 ? 2 * (m - 1) : 0; /* a shorter acronym is always followed by '.' */
}

/* Sets of match ends, bit k = "a partial match may end k characters after
 * the start", for the few patterns with bounded repetitions. */
typedef uint64_t ends;
#define SPAN 62

static ends step_chars(const lexer *lx, size_t i, ends from, int (*pred)(int32_t), int lo, int hi)
{
    ends to = lo == 0 ? from : 0;
    for (ends left = from; left; left &= left - 1) {
        int k = __builtin_ctzll(left);
        for (int n = 1; n <= hi && k + n <= SPAN && pred(at(lx, i + k + n - 1)); n++)
            if (n >= lo)
                to |= (ends)1 << (k + n);
    }
    return to;
}

static ends step_char(const lexer *lx, size_t i, ends from, int32_t c)
{
    ends to = 0;
    for (ends left = from; left; left &= left - 1) {
        int k = __builtin_ctzll(left);
        if (k < SPAN && at(lx, i + k) == c)
            to |= (ends)1 << (k + 1);
    }
    return to;
}

static size_t longest_end(ends e) { return e ? (size_t)(63 - __builtin_clzll(e)) : 0; }

static int is_ascii_digit_pred(int32_t c) { return ascii_digit(c); }

/* The tail of a URL: chars not in [ \t\n\f\r"<>|()], at least `min` of
 * them, the last one also not in [.!?{},-]; returns its length or 0. */
static size_t url_tail(const lexer *lx, size_t j, size_t min)
{
    size_t n = 0, best = 0;
    for (;;) {
        int32_t c = at(lx, j + n);
        if (c < 0 || one_of(c, " \t\n\f\r\"<>|()"))
            break;
        n++;
        if (n >= min && !one_of(c, ".!?{},-"))
            best = n;
    }
    return best;
}

/* ---- the patterns, in the grammar's order ---- */

typedef size_t (*pattern)(const lexer *lx, size_t i, size_t *text);

static size_t p_cannot(const lexer *lx, size_t i, size_t *text)
{
    if (!lit(lx, i, "cannot"))
        return 0;
    *text = 3; /* "can", then "not" is read again */
    return 6;
}

static size_t p_sgml(const lexer *lx, size_t i, size_t *text)
{
    size_t j = i + 1;
    if (at(lx, i) != '<')
        return 0;
    if (at(lx, j) == '/')
        j++;
    int32_t c = at(lx, j);
    if (!ascii_letter(c) && c != '!' && c != '?')
        return 0;
    for (j++; (c = at(lx, j)) >= 0 && c != '>' && c != '\r' && c != '\n'; j++)
        ;
    if (c != '>')
        return 0;
    return *text = j + 1 - i;
}

static size_t p_dash(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    if (c == 0x96 || c == 0x97 || (c >= 0x2013 && c <= 0x2015))
        return *text = 1;
    if (c != '&')
        return 0;
    static const char *const entities[] = {"&MD;", "&mdash;", "&ndash;"};
    return *text = LIT_LONGEST(lx, i, entities);
}

static size_t p_amp(const lexer *lx, size_t i, size_t *text) { return *text = lit(lx, i, "&amp;"); }

static size_t p_punct_entity(const lexer *lx, size_t i, size_t *text)
{
    static const char *const names[] = {"&HT;", "&TL;", "&UR;", "&LR;", "&QC;", "&QL;", "&QR;", "&odq;", "&cdq;"};
    if (at(lx, i) != '&')
        return 0;
    size_t k = LIT_LONGEST(lx, i, names);
    if (!k && at(lx, i) == '&' && at(lx, i + 1) == '#') {
        size_t d = run(lx, i + 2, is_ascii_digit_pred);
        if (d && at(lx, i + 2 + d) == ';')
            k = d + 3;
    }
    return *text = k;
}

static size_t p_word_redaux(const lexer *lx, size_t i, size_t *text)
{
    size_t w = word_run(lx, i), r = w ? redaux(lx, i + w) : 0;
    if (!r)
        return 0;
    *text = w;
    return w + r;
}

/* A word ending just before "n't" ("do" of "don't"); the word's last letter
 * is not n ("ca" of "can't" is fine: "can" + "'t" is not the pattern). */
static size_t p_word_nt(const lexer *lx, size_t i, size_t *text)
{
    size_t j = i;
    while (ascii_letter(at(lx, j)) || at(lx, j) == 0xAD)
        j++;
    if (j == i || fold(at(lx, j - 1)) != 'n')
        return 0;
    size_t k = j - 1, a = apos_etc(lx, j);
    if (!a || fold(at(lx, j + a)) != 't')
        return 0;
    size_t e = k;
    while (e > i && at(lx, e - 1) == 0xAD)
        e--;
    if (e == i || !ascii_letter(at(lx, e - 1)) || fold(at(lx, e - 1)) == 'n')
        return 0;
    *text = k - i;
    return k - i + 1 + a + 1;
}

static size_t p_word(const lexer *lx, size_t i, size_t *text) { return *text = word_run(lx, i); }

static size_t max_size(size_t a, size_t b) { return a > b ? a : b; }

/* Words with an apostrophe kept inside: o'clock-type, 'n', l', 'em, O'Brien,
 * '90s, 'til, Shi'ite, 'cause, c'mon ... */
static size_t p_apostrophe_word(const lexer *lx, size_t i, size_t *text)
{
    size_t best = 0, a, k;
    int32_t c = at(lx, i);
    /* Every form that starts with a letter has its apostrophe right after
     * the first run of letters. */
    if (is_letter(c) && !apos_etc(lx, i + run(lx, i, is_letter)))
        return 0;
    if ((a = apos(lx, i))) {
        if (fold(at(lx, i + a)) == 'n')
            best = max_size(best, a + 1 + apos(lx, i + a + 1));
        if (lit(lx, i + a, "em"))
            best = max_size(best, a + 2);
        if (at(lx, i + a) >= '2' && at(lx, i + a) <= '9' && at(lx, i + a + 1) == '0' && fold(at(lx, i + a + 2)) == 's')
            best = max_size(best, a + 3);
        if (lit(lx, i + a, "til"))
            best = max_size(best, a + 3 + (fold(at(lx, i + a + 3)) == 'l'));
        if (lit(lx, i + a, "cause"))
            best = max_size(best, a + 5);
    }
    if (one_of(c, "lLdDjJ") && (a = apos(lx, i + 1)))
        best = max_size(best, 1 + a);
    static const char *const clipped[] = {"dunkin", "somethin", "ol"};
    for (size_t w = 0; w < 3; w++)
        if ((k = lit(lx, i, clipped[w])) && (a = apos(lx, i + k)))
            best = max_size(best, k + a);
    if (((c >= 'A' && c <= 'H') || (c >= 'J' && c <= 'X') || c == 'Z' || c == 'n') && (a = apos_etc(lx, i + 1))) {
        size_t l = run(lx, i + 1 + a, is_letter);
        if (l >= 2)
            best = max_size(best, 1 + a + l);
    }
    size_t l = run(lx, i, is_letter);
    if (l >= 2 && one_of(at(lx, i + l - 1), "aeiouyAEIOUY") && (a = apos_etc(lx, i + l))) {
        int32_t d = at(lx, i + l + a);
        if (one_of(d, "aeiou") || ascii_upper(d))
            best = max_size(best, l + a + 1 + run(lx, i + l + a + 1, is_letter));
    }
    if ((k = lit(lx, i, "cont'd")))
        best = max_size(best, k + (at(lx, i + k) == '.'));
    static const char *const words[] = {"'twas", "nor'easter", "c'mon", "e'er", "s'mores", "ev'ry", "li'l", "nat'l"};
    best = max_size(best, LIT_LONGEST(lx, i, words));
    return *text = best;
}

/* y' before a letter (y'all). */
static size_t p_y_apostrophe(const lexer *lx, size_t i, size_t *text)
{
    size_t a;
    if (fold(at(lx, i)) != 'y' || !(a = apos(lx, i + 1)) || !is_letter(at(lx, i + 1 + a)))
        return 0;
    *text = 1 + a;
    return 2 + a;
}

static size_t p_full_url(const lexer *lx, size_t i, size_t *text)
{
    if (!lit(lx, i, "http"))
        return 0;
    size_t j = i + 4;
    if (fold(at(lx, j)) == 's')
        j++;
    if (!lit(lx, j, "://"))
        return 0;
    size_t t = url_tail(lx, j + 3, 2);
    return *text = t ? j + 3 + t - i : 0;
}

/* A URL label: characters other than space, quotes, brackets and .!?,;
 * `no_ascii_range` also excludes ` ' $ and all of ',' .. '_' (digits,
 * capitals and most ASCII punctuation: a quirk of the grammar's class). */
static int url_label_char(int32_t c, int no_ascii_range)
{
    switch (c) {
    case -1: case ' ': case '\t': case '\n': case '\f': case '\r': case '"': case '<': case '>': case '|':
    case '.': case '!': case '?': case '(': case ')': case '{': case '}': case ',':
        return 0;
    case '`': case '\'': case '$':
        return !no_ascii_range;
    default:
        return !no_ascii_range || !(c >= ',' && c <= '_');
    }
}

/* www.host.tld or host.com/net/org/edu, with an optional /path. */
static size_t p_likely_url(const lexer *lx, size_t i, size_t *text)
{
    size_t best = 0;
    if (lit(lx, i, "www.")) { /* labels ending in '.', then 2-4 letters */
        size_t j = i + 4;
        for (;;) {
            size_t l = 0;
            while (url_label_char(at(lx, j + l), 0))
                l++;
            if (!l || at(lx, j + l) != '.')
                break;
            j += l + 1;
            size_t t = run(lx, j, ascii_letter);
            if (t >= 2)
                best = max_size(best, j + (t > 4 ? 4 : t) - i);
        }
    } else {
        size_t j = i;
        static const char *const tlds[] = {"com", "net", "org", "edu"};
        for (;;) {
            size_t l = 0;
            while (url_label_char(at(lx, j + l), 1))
                l++;
            if (!l || at(lx, j + l) != '.')
                break;
            j += l + 1;
            if (LIT_LONGEST(lx, j, tlds))
                best = max_size(best, j + 3 - i);
        }
    }
    if (!best)
        return 0;
    if (at(lx, i + best) == '/') {
        size_t t = url_tail(lx, i + best + 1, 2);
        if (t)
            best += 1 + t;
    }
    return *text = best;
}

static int email_char(int32_t c)
{
    switch (c) {
    case -1: case ' ': case '\t': case '\n': case '\f': case '\r': case '"': case '<': case '>': case '|': case '(':
    case ')': case 0xA0:
        return 0;
    default:
        return 1;
    }
}

/* name@host.domain: the longest stretch of allowed characters starting with
 * a letter or digit, in which an '@' (not the first character) is followed
 * by a domain: non-empty, without "..", not starting or ending with '.'.
 * One right-to-left pass over the stretch: for each domain start s, `best`
 * is the longest allowed end. */
static size_t p_email(const lexer *lx, size_t i, size_t *text)
{
    if (!ascii_alnum(at(lx, i)))
        return 0;
    size_t r = 0, bound, best = 0, longest = 0;
    int at_sign = 0;
    for (int32_t c; email_char(c = at(lx, i + r)); r++)
        at_sign |= c == '@';
    if (!at_sign)
        return 0;
    bound = r;
    for (size_t s = r; s-- > 1;) {
        int32_t c = at(lx, i + s);
        if (c == '.' && s + 1 < r && at(lx, i + s + 1) == '.') {
            bound = s; /* a domain starting before s must end before this ".." */
            best = 0;
        } else if (c != '.' && s < bound && !best) {
            best = s + 1;
        }
        if (s >= 2 && at(lx, i + s - 1) == '@' && c != '.' && best)
            longest = max_size(longest, best);
    }
    return *text = longest;
}

static int twitter_char(int32_t c) { return ascii_alnum(c) || c == '_'; }

static size_t p_twitter(const lexer *lx, size_t i, size_t *text)
{
    if (at(lx, i) == '@' && (ascii_letter(at(lx, i + 1)) || at(lx, i + 1) == '_'))
        return *text = 1 + run(lx, i + 1, twitter_char);
    if (at(lx, i) == '#') {
        size_t w = word_run(lx, i + 1);
        return *text = w ? 1 + w : 0;
    }
    return 0;
}

/* 's etc. not followed by a letter */
static size_t p_redaux_alone(const lexer *lx, size_t i, size_t *text)
{
    size_t r = redaux(lx, i);
    int32_t c = at(lx, i + r);
    if (!r || c < 0 || ascii_letter(c))
        return 0;
    *text = r;
    return r + 1;
}

static size_t p_nt(const lexer *lx, size_t i, size_t *text)
{
    size_t a;
    if (fold(at(lx, i)) != 'n' || !(a = apos_etc(lx, i + 1)) || fold(at(lx, i + 1 + a)) != 't')
        return 0;
    return *text = a + 2;
}

static size_t p_date(const lexer *lx, size_t i, size_t *text)
{
    if (!is_digit(at(lx, i)))
        return 0;
    ends e = step_chars(lx, i, 1, is_digit, 1, 2);
    e = step_chars(lx, i, e, is_date_sep, 1, 1);
    e = step_chars(lx, i, e, is_digit, 1, 2);
    e = step_chars(lx, i, e, is_date_sep, 1, 1);
    e = step_chars(lx, i, e, is_digit, 2, 4);
    return *text = longest_end(e);
}

static int is_number_sep(int32_t c) { return c == '.' || c == ':' || c == ',' || c == 0xAD || c == 0x66B || c == 0x66C; }

/* [-+]? digits, with groups such as .5 ,000 :30 */
static size_t p_number(const lexer *lx, size_t i, size_t *text)
{
    size_t j = i;
    if (at(lx, j) == '-' || at(lx, j) == '+')
        j++;
    size_t d = run(lx, j, is_digit), groups = 0;
    j += d;
    while (is_number_sep(at(lx, j)) && is_digit(at(lx, j + 1))) {
        j += 1 + run(lx, j + 1, is_digit);
        groups++;
    }
    return *text = (d || groups) ? j - i : 0;
}

static int is_superscript_digit(int32_t c) { return c == 0x2070 || c == 0xB9 || c == 0xB2 || c == 0xB3 || (c >= 0x2074 && c <= 0x2079); }
static int is_subscript_digit(int32_t c) { return c >= 0x2080 && c <= 0x2089; }

static size_t p_sup_sub_number(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    size_t j = i + (c == 0x207A || c == 0x207B || c == 0x208A || c == 0x208B);
    size_t n = max_size(run(lx, j, is_superscript_digit), run(lx, j, is_subscript_digit));
    return *text = n ? j + n - i : 0;
}

/* 1/2, 3-1/2, 3 1/2 (the space becomes a no-break space), 12/100 */
static size_t p_fraction(const lexer *lx, size_t i, size_t *text)
{
    if (!is_digit(at(lx, i)))
        return 0;
    ends whole = step_chars(lx, i, 1, is_digit, 1, 4);
    ends e = 1 | step_chars(lx, i, whole, is_dash_space_nbsp, 1, 1);
    e = step_chars(lx, i, e, is_digit, 1, 4);
    ends slash = step_char(lx, i, e, '/') | step_char(lx, i, step_char(lx, i, e, '\\'), '/') | step_char(lx, i, e, 0x2044);
    return *text = longest_end(step_chars(lx, i, slash, is_digit, 1, 4));
}

static size_t p_vulgar_fraction(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    return *text = (c == 0xBC || c == 0xBD || c == 0xBE || (c >= 0x2153 && c <= 0x215E));
}

/* Treebank specials: literal -LRB- etc., pro-, anti-, S&P-500 ... */
static size_t p_treebank_special(const lexer *lx, size_t i, size_t *text)
{
    static const char *const specials[] = {"-RRB-", "-LRB-", "-RCB-", "-LCB-", "-RSB-", "-LSB-", "C.D.s", "pro-",
                                           "anti-", "S&P-500", "S&amp;P-500", "S&Ls", "S&amp;Ls"};
    if (!one_of(fold(at(lx, i)), "-cpas"))
        return 0;
    size_t best = LIT_LONGEST(lx, i, specials), a;
    if (lit(lx, i, "Cap") && (a = apos(lx, i + 3)) && fold(at(lx, i + 3 + a)) == 'n')
        best = max_size(best, 4 + a);
    if (fold(at(lx, i)) == 'c' && (a = apos(lx, i + 1)) && lit(lx, i + 1 + a, "est"))
        best = max_size(best, 4 + a);
    return *text = best;
}

/* alnum+ then at most two "-letters" parts */
static size_t slash_part(const lexer *lx, size_t j)
{
    size_t start = j, k = run(lx, j, ascii_alnum);
    if (!k)
        return 0;
    j += k;
    for (int g = 0; g < 2 && at(lx, j) == '-'; g++) {
        size_t l = run(lx, j + 1, ascii_letter);
        if (!l)
            break;
        j += 1 + l;
    }
    return j - start;
}

/* Slash compounds: T1/T2, and/or, T1/T2-weighted, a/b/c */
static size_t p_slash_compound(const lexer *lx, size_t i, size_t *text)
{
    size_t j = i + slash_part(lx, i), best = 0;
    if (j == i)
        return 0;
    for (int count = 0; count < 2; count++) {
        size_t s = j;
        if (at(lx, s) == '\\')
            s++;
        if (at(lx, s) != '/')
            break;
        size_t k = slash_part(lx, s + 1);
        if (!k)
            break;
        j = s + 1 + k;
        best = j - i;
    }
    return *text = best;
}

static size_t p_dollar(const lexer *lx, size_t i, size_t *text)
{
    size_t u = run(lx, i, ascii_upper);
    if (at(lx, i + u) == '$')
        return *text = u + 1;
    return *text = at(lx, i) == '#';
}

static int is_currency(int32_t c)
{
    return c == 0xA2 || c == 0xA3 || c == 0xA4 || c == 0xA5 || c == 0x80 || c == 0x20A0 || c == 0x20AC || c == 0x60B ||
           c == 0xE3F || c == 0x20A4 || c == 0xFFE0 || c == 0xFFE1 || c == 0xFFE5 || c == 0xFFE6;
}

static size_t p_currency(const lexer *lx, size_t i, size_t *text) { return *text = is_currency(at(lx, i)); }

/* 1 if a '.' comes within the run of ASCII letters and periods at i: no
 * abbreviation can match otherwise (a cheap test before the lists). */
static int dot_ahead(const lexer *lx, size_t i)
{
    for (size_t j = i; ascii_letter(at(lx, j)) || at(lx, j) == '.'; j++)
        if (at(lx, j) == '.')
            return j > i;
    return 0;
}

/* Abbreviations usually followed by a lower-case word: months, days, US
 * states, company words, No., Jr., etc., al. (with their period). */
static size_t p_abbrev_lower(const lexer *lx, size_t i, size_t *text)
{
    static const char *const abbreviations[] = {
        "Jan", "Feb", "Mar", "Apr", "Jun", "Jul", "Aug", "Sep", "Sept", "Oct", "Nov", "Dec", "Mon", "Tue", "Tues",
        "Wed", "Thu", "Thurs", "Fri", "Ala", "Ariz", "!Ark", "Calif", "Colo", "Conn", "Dak", "Del", "Fla", "Ga",
        "!Ill", "Ind", "Kan", "Kans", "Ky", "La", "!Mass", "Md", "Mich", "Minn", "!Miss", "Mo", "Mont", "Neb",
        "Nev", "Okla", "!Ore", "Pa", "Penn", "Tenn", "Tex", "Va", "Vt", "!Wash", "Wis", "Wisc", "Wyo", "Inc",
        "Co", "Cos", "Corp", "Pty", "Ptys", "Ppty", "Pptys", "Ltd", "Plc", "Bancorp", "Dept", "Bhd", "Assn",
        "Univ", "Intl", "Sys", "No", "Nos", "Prop", "Ph", "tel", "est", "ext", "sq", "ft", "Jr", "Sr", "Bros",
        "Ed.D", "Ph.D", "Blvd", "Rd", "Esq", "etc", "al", "seq"};
    if (!dot_ahead(lx, i))
        return 0;
    size_t k = LIT_LONGEST(lx, i, abbreviations);
    return *text = (k && at(lx, i + k) == '.') ? k + 1 : 0;
}

/* Abbreviations usually followed by a capital: one letter, titles, vs.,
 * cf., acronyms (with their period). */
static size_t p_abbrev_upper(const lexer *lx, size_t i, size_t *text)
{
    static const char *const abbreviations[] = {
        "Mr", "Mrs", "Ms", "!Miss", "Dr", "Drs", "Prof", "Profs", "Sen", "Sens", "Rep", "Reps", "Atty", "Attys",
        "Lt", "Col", "Gen", "Messrs", "Gov", "Govs", "Adm", "Rev", "Maj", "Sgt", "Cpl", "Pvt", "Mt", "Capt", "St",
        "Ste", "Ave", "Pres", "Lieut", "Hon", "Brig", "Cmdr", "Comdr", "Pfc", "Spc", "Supt", "Supts", "Det", "vs",
        "Alex", "Wm", "Jos", "Cie", "a.k.a", "cf", "TREAS", "Invt", "Elec", "Natl", "Mfg", "Mtg"};
    if (!dot_ahead(lx, i))
        return 0;
    size_t best = 0, k = LIT_LONGEST(lx, i, abbreviations);
    if (k && at(lx, i + k) == '.')
        best = k + 1;
    if (ascii_letter(at(lx, i)) && at(lx, i + 1) == '.')
        best = max_size(best, 2);
    return *text = max_size(best, acro_dot(lx, i));
}

/* An acronym before a space or line end: e.g */
static size_t p_acronym_space(const lexer *lx, size_t i, size_t *text)
{
    size_t m = acro_letters(lx, i);
    if (!m || !is_spacenl(at(lx, i + 2 * m - 1)))
        return 0;
    *text = 2 * m - 1;
    return 2 * m;
}

/* '90 before a space */
static size_t p_apostrophe_year(const lexer *lx, size_t i, size_t *text)
{
    size_t a = apos(lx, i);
    if (!a || !ascii_digit(at(lx, i + a)) || !ascii_digit(at(lx, i + a + 1)) || !is_spacenl(at(lx, i + a + 2)))
        return 0;
    *text = a + 2;
    return a + 3;
}

/* Adds the period of "X." when , ; or : follows (trailing context). */
static size_t with_dot_before_insentp(const lexer *lx, size_t i, size_t base, size_t *text)
{
    if (!base || at(lx, i + base) != '.' || !is_insentp(at(lx, i + base + 1)))
        return 0;
    *text = base + 1;
    return base + 2;
}

static size_t p_word_dot(const lexer *lx, size_t i, size_t *text)
{
    return with_dot_before_insentp(lx, i, word_run(lx, i), text);
}

static int is_plus(int32_t c) { return c == '+'; }
static int is_dot(int32_t c) { return c == '.'; }

/* Telephone-number shapes: (555) 123-4567, 12 345 6789, 12.345.6789 */
static size_t p_phone(const lexer *lx, size_t i, size_t *text)
{
    if (!ascii_digit(at(lx, i)) && at(lx, i) != '(' && at(lx, i) != '+')
        return 0;
    ends plus = step_chars(lx, i, 1, is_plus, 0, 2);
    ends area = step_char(lx, i, 1, '(');
    area = step_char(lx, i, step_chars(lx, i, area, is_ascii_digit_pred, 2, 3), ')');
    area = step_chars(lx, i, area, is_space_or_nbsp, 0, 1);
    ends groups = plus | step_chars(lx, i, step_chars(lx, i, plus, is_ascii_digit_pred, 2, 4), is_dash_space_nbsp, 1, 1);
    groups = step_chars(lx, i, step_chars(lx, i, groups, is_ascii_digit_pred, 2, 4), is_dash_space_nbsp, 1, 1);
    ends e = step_chars(lx, i, area | groups, is_ascii_digit_pred, 3, 4);
    e = step_chars(lx, i, e, is_dash_space_nbsp, 0, 1);
    e = step_chars(lx, i, e, is_ascii_digit_pred, 3, 5);
    ends dotted = 1 | step_chars(lx, i, step_chars(lx, i, plus, is_ascii_digit_pred, 2, 4), is_dot, 1, 1);
    dotted = step_chars(lx, i, step_chars(lx, i, dotted, is_ascii_digit_pred, 2, 4), is_dot, 1, 1);
    dotted = step_chars(lx, i, step_chars(lx, i, dotted, is_ascii_digit_pred, 3, 4), is_dot, 1, 1);
    dotted = step_chars(lx, i, dotted, is_ascii_digit_pred, 3, 5);
    return *text = longest_end(e | dotted);
}

static size_t double_quote(const lexer *lx, size_t i) { return at(lx, i) == '"' ? 1 : lit(lx, i, "&quot;"); }

/* " before a letter, digit or $: an opening quote */
static size_t p_open_double_quote(const lexer *lx, size_t i, size_t *text)
{
    size_t q = double_quote(lx, i);
    int32_t c = at(lx, i + q);
    if (!q || !(ascii_alnum(c) || c == '$'))
        return 0;
    *text = q;
    return q + 1;
}

static size_t p_double_quote(const lexer *lx, size_t i, size_t *text) { return *text = double_quote(lx, i); }

/* The grammar writes 0x7f meaning DEL but matches the four characters
 * "0x7f", which it then deletes. */
static size_t p_0x7f(const lexer *lx, size_t i, size_t *text) { return *text = lit(lx, i, "0x7f"); }

static size_t p_open_bracket(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    return *text = (c == '<' || c == '[') ? 1 : lit(lx, i, "&lt;");
}

static size_t p_close_bracket(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    return *text = (c == '>' || c == ']') ? 1 : lit(lx, i, "&gt;");
}

static size_t p_open_brace(const lexer *lx, size_t i, size_t *text) { return *text = at(lx, i) == '{'; }
static size_t p_close_brace(const lexer *lx, size_t i, size_t *text) { return *text = at(lx, i) == '}'; }
static size_t p_open_paren(const lexer *lx, size_t i, size_t *text) { return *text = at(lx, i) == '('; }
static size_t p_close_paren(const lexer *lx, size_t i, size_t *text) { return *text = at(lx, i) == ')'; }

static int is_minus(int32_t c) { return c == '-'; }
static size_t p_hyphens(const lexer *lx, size_t i, size_t *text) { return *text = run(lx, i, is_minus); }

static size_t p_ellipsis(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    if (c == 0x85 || c == 0x2026)
        return *text = 1;
    size_t dots = run(lx, i, is_dot), best = dots >= 3 ? (dots > 5 ? 5 : dots) : 0;
    size_t pairs = 0;
    while (pairs < 4 && at(lx, i + 2 * pairs) == '.' && is_space_or_nbsp(at(lx, i + 2 * pairs + 1)))
        pairs++;
    for (; pairs >= 2; pairs--)
        if (at(lx, i + 2 * pairs) == '.') {
            best = max_size(best, 2 * pairs + 1);
            break;
        }
    return *text = best;
}

static int is_at(int32_t c) { return c == '@'; }
static int is_hash(int32_t c) { return c == '#'; }
static int is_underscore(int32_t c) { return c == '_'; }
static int is_asterisk(int32_t c) { return c == '*'; }

static size_t p_footnote_marks(const lexer *lx, size_t i, size_t *text)
{
    return *text = max_size(run(lx, i, is_at), max_size(run(lx, i, is_hash), run(lx, i, is_underscore)));
}

static size_t p_asterisks(const lexer *lx, size_t i, size_t *text)
{
    size_t stars = run(lx, i, is_asterisk), escaped = 0;
    while (escaped < 3 && at(lx, i + 2 * escaped) == '\\' && at(lx, i + 2 * escaped + 1) == '*')
        escaped++;
    return *text = max_size(stars, 2 * escaped);
}

static size_t p_insentp(const lexer *lx, size_t i, size_t *text) { return *text = is_insentp(at(lx, i)); }

static int is_qe(int32_t c) { return c == '?' || c == '!'; }
static size_t p_question_exclaim(const lexer *lx, size_t i, size_t *text) { return *text = run(lx, i, is_qe); }

static size_t p_sentence_end(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    return *text = c == '.' || c == 0xA1 || c == 0xBF || c == 0x37E || c == 0x589 || c == 0x61F || c == 0x6D4 ||
                   (c >= 0x700 && c <= 0x702) || c == 0x7FA || c == 0x3002;
}

static size_t p_equals(const lexer *lx, size_t i, size_t *text) { return *text = at(lx, i) == '='; }
static size_t p_slash(const lexer *lx, size_t i, size_t *text) { return *text = at(lx, i) == '/'; }

static int hthing_head_char(int32_t c) { return ascii_alnum(c) || c == '.' || c == ',' || c == 0xAD; }
static int hthing_part_char(int32_t c) { return ascii_alnum(c) || c == 0xAD; }

/* Hyphenated ASCII words and numbers: 2.5-cm, 3-5, T2-weighted, 1,000-fold */
static size_t hthing(const lexer *lx, size_t i)
{
    if (!ascii_alnum(at(lx, i)))
        return 0;
    size_t j = i + 1 + run(lx, i + 1, hthing_head_char), parts = 0;
    while (at(lx, j) == '-') {
        /* An acronym with its period (-U.S.) is longer than the one letter
         * the other choice would take, after which no '-' can follow. */
        size_t k = acro_dot(lx, j + 1);
        if (!k)
            k = run(lx, j + 1, hthing_part_char);
        if (!k)
            break;
        j += 1 + k;
        parts++;
    }
    return parts ? j - i : 0;
}

static size_t p_hthing_dot(const lexer *lx, size_t i, size_t *text) { return with_dot_before_insentp(lx, i, hthing(lx, i), text); }
static size_t p_hthing(const lexer *lx, size_t i, size_t *text) { return *text = hthing(lx, i); }

/* One part of a thing: alnum+, optionally after d' o' l' and an alnum (o'clock). */
static size_t thing_part(const lexer *lx, size_t j)
{
    size_t a;
    if (one_of(at(lx, j), "dDoOlL") && (a = apos_etc(lx, j + 1)) && is_alnum(at(lx, j + 1 + a)) &&
        is_alnum(at(lx, j + 2 + a)))
        return 2 + a + run(lx, j + 2 + a, is_alnum);
    return run(lx, j, is_alnum);
}

/* Letters and digits, hyphen (or underscore) joined: T1, 10mm, café-au-lait */
static size_t thing(const lexer *lx, size_t i)
{
    size_t j = i + thing_part(lx, i), k;
    if (j == i)
        return 0;
    while (is_hyphen(at(lx, j)) && (k = thing_part(lx, j + 1)))
        j += 1 + k;
    return j - i;
}

static size_t p_thing_dot(const lexer *lx, size_t i, size_t *text) { return with_dot_before_insentp(lx, i, thing(lx, i), text); }
static size_t p_thing(const lexer *lx, size_t i, size_t *text) { return *text = thing(lx, i); }

/* Capitals joined by + or &: AT&T */
static size_t thinga(const lexer *lx, size_t i)
{
    size_t j = i + run(lx, i, ascii_upper), parts = 0;
    if (j == i)
        return 0;
    for (;;) {
        size_t s = (at(lx, j) == '+' || at(lx, j) == '&') ? 1 : lit(lx, j, "&amp;");
        size_t u = s ? run(lx, j + s, ascii_upper) : 0;
        if (!u)
            break;
        j += s + u;
        parts++;
    }
    return parts ? j - i : 0;
}

static size_t p_thinga_dot(const lexer *lx, size_t i, size_t *text) { return with_dot_before_insentp(lx, i, thinga(lx, i), text); }
static size_t p_thinga(const lexer *lx, size_t i, size_t *text) { return *text = thinga(lx, i); }

/* ' before a letter and a non-space: an opening single quote */
static size_t p_open_single_quote(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i + 2);
    if (at(lx, i) != '\'' || !ascii_letter(at(lx, i + 1)) || c < 0 || one_of(c, " \t\n\r") || c == 0xA0)
        return 0;
    *text = 1;
    return 3;
}

static size_t p_redaux(const lexer *lx, size_t i, size_t *text) { return *text = redaux(lx, i); }

static int is_quote_char(int32_t c)
{
    return c == '`' || (c >= 0x2018 && c <= 0x201F) || (c >= 0x91 && c <= 0x94) || c == 0x2039 || c == 0x203A ||
           c == 0xAB || c == 0xBB;
}

static size_t p_quotes(const lexer *lx, size_t i, size_t *text)
{
    size_t q = is_quote_char(at(lx, i)) ? 1 + is_quote_char(at(lx, i + 1)) : 0;
    return *text = max_size(max_size(apos(lx, i), lit(lx, i, "''")), q);
}

static size_t p_duck_feet(const lexer *lx, size_t i, size_t *text)
{
    return *text = (lit(lx, i, "<<") || lit(lx, i, ">>")) ? 2 : 0;
}

static size_t p_misc_symbol(const lexer *lx, size_t i, size_t *text) { return *text = is_misc_symbol(at(lx, i)); }

static size_t p_blank(const lexer *lx, size_t i, size_t *text)
{
    int32_t c = at(lx, i);
    if (c == 0 || c == 0x200B || c == 0x200E || c == 0x200F || c == 0xFEFF)
        return *text = 1;
    return *text = run(lx, i, is_space);
}

static size_t p_newline(const lexer *lx, size_t i, size_t *text)
{
    if (at(lx, i) == '\r' && at(lx, i + 1) == '\n')
        return *text = 2;
    return *text = is_newline(at(lx, i));
}

static size_t p_nbsp_entity(const lexer *lx, size_t i, size_t *text) { return *text = lit(lx, i, "&nbsp;"); }

/* ---- what a match becomes ---- */

typedef enum action {
    KEEP,          // the text as it is
    SOFT_HYPHENS,  // the text without soft hyphens ("-" if nothing is left)
    DASH,          // --
    AMPERSAND,     // &amp; -> &
    OPEN_QUOTE,    // LaTeX quotes, opening: ' -> `, " -> ``
    CLOSE_QUOTE,   // LaTeX quotes, closing: ' -> ', " -> ''
    ESCAPE_SLASH,  // / -> \/
    ESCAPE_URL,    // / -> \/ and * -> \*
    ESCAPE_STAR,   // * -> \*
    FRACTION,      // / -> \/, space -> no-break space
    VULGAR,        // ¼ ½ ¾ ⅓ -> 1\/4 1\/2 3\/4 1\/3
    CURRENCY,      // ¢ -> cents, £ -> #, euro-like -> $
    LRB,           // -LRB-
    RRB,           // -RRB-
    LCB,           // -LCB-
    RCB,           // -RCB-
    HYPHENS,       // 3 or 4 hyphens -> --
    ELLIPSIS,      // ...
    PHONE,         // space -> no-break space, ( ) -> -LRB- -RRB-
    SPACES_NBSP,   // space -> no-break space (SGML tags)
    SKIP,          // whitespace: no token
    DROP,          // untokenizable: no token
} action;

/* What a rule's match may start with: kinds of characters, and ASCII
 * characters listed in `first`. Only the rules that may match at a
 * position are tried there. */
enum { FIRST_LETTER = 1, FIRST_DIGIT = 2, FIRST_NON_ASCII = 4 };

typedef struct rule {
    pattern match;
    action act;
    unsigned first_kinds; // FIRST_* flags
    const char *first;    // ASCII characters a match may also start with
} rule;

/* The grammar's rules in its order (the order breaks ties). */
static const rule rules[] = {
    {p_cannot, KEEP, FIRST_LETTER, ""},
    {p_sgml, SPACES_NBSP, 0, "<"},
    {p_dash, DASH, FIRST_NON_ASCII, "&"},
    {p_amp, AMPERSAND, 0, "&"},
    {p_punct_entity, KEEP, 0, "&"},
    {p_word_redaux, SOFT_HYPHENS, FIRST_LETTER | FIRST_NON_ASCII, "&"},
    {p_word_nt, SOFT_HYPHENS, FIRST_LETTER | FIRST_NON_ASCII, ""},
    {p_word, SOFT_HYPHENS, FIRST_LETTER | FIRST_NON_ASCII, "&"},
    {p_apostrophe_word, KEEP, FIRST_LETTER | FIRST_NON_ASCII, "'&"},
    {p_y_apostrophe, KEEP, FIRST_LETTER, ""},
    {p_full_url, ESCAPE_URL, FIRST_LETTER, ""},
    {p_likely_url, ESCAPE_URL, FIRST_LETTER | FIRST_NON_ASCII,
     "#%&*+~\x7f\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0e\x0f\x10\x11\x12\x13\x14\x15\x16\x17\x18\x19\x1a\x1b\x1c\x1d\x1e\x1f"},
    {p_email, KEEP, FIRST_LETTER | FIRST_DIGIT, ""},
    {p_twitter, KEEP, 0, "@#"},
    {p_redaux_alone, CLOSE_QUOTE, FIRST_NON_ASCII, "'&"},
    {p_nt, CLOSE_QUOTE, FIRST_LETTER, ""},
    {p_date, ESCAPE_SLASH, FIRST_DIGIT | FIRST_NON_ASCII, ""},
    {p_number, SOFT_HYPHENS, FIRST_DIGIT | FIRST_NON_ASCII, "-+.:,"},
    {p_sup_sub_number, KEEP, FIRST_NON_ASCII, ""},
    {p_fraction, FRACTION, FIRST_DIGIT | FIRST_NON_ASCII, ""},
    {p_vulgar_fraction, VULGAR, FIRST_NON_ASCII, ""},
    {p_treebank_special, AMPERSAND, FIRST_LETTER, "-"},
    {p_slash_compound, ESCAPE_SLASH, FIRST_LETTER | FIRST_DIGIT, ""},
    {p_dollar, KEEP, FIRST_LETTER, "$#"},
    {p_currency, CURRENCY, FIRST_NON_ASCII, ""},
    {p_abbrev_lower, KEEP, FIRST_LETTER, ""},
    {p_abbrev_upper, KEEP, FIRST_LETTER, ""},
    {p_acronym_space, KEEP, FIRST_LETTER, ""},
    {p_apostrophe_year, KEEP, FIRST_NON_ASCII, "'&"},
    {p_word_dot, SOFT_HYPHENS, FIRST_LETTER | FIRST_NON_ASCII, "&"},
    {p_phone, PHONE, FIRST_DIGIT, "(+"},
    {p_open_double_quote, OPEN_QUOTE, 0, "\"&"},
    {p_double_quote, CLOSE_QUOTE, 0, "\"&"},
    {p_0x7f, DROP, FIRST_DIGIT, ""},
    {p_open_bracket, LRB, 0, "<[&"},
    {p_close_bracket, RRB, 0, ">]&"},
    {p_open_brace, LCB, 0, "{"},
    {p_close_brace, RCB, 0, "}"},
    {p_open_paren, LRB, 0, "("},
    {p_close_paren, RRB, 0, ")"},
    {p_hyphens, HYPHENS, 0, "-"},
    {p_ellipsis, ELLIPSIS, FIRST_NON_ASCII, "."},
    {p_footnote_marks, KEEP, 0, "@#_"},
    {p_asterisks, ESCAPE_STAR, 0, "*\\"},
    {p_insentp, KEEP, FIRST_NON_ASCII, ",;:"},
    {p_question_exclaim, KEEP, 0, "?!"},
    {p_sentence_end, KEEP, FIRST_NON_ASCII, "."},
    {p_equals, KEEP, 0, "="},
    {p_slash, ESCAPE_SLASH, 0, "/"},
    {p_hthing_dot, SOFT_HYPHENS, FIRST_LETTER | FIRST_DIGIT, ""},
    {p_hthing, SOFT_HYPHENS, FIRST_LETTER | FIRST_DIGIT, ""},
    {p_thing_dot, KEEP, FIRST_LETTER | FIRST_DIGIT | FIRST_NON_ASCII, ""},
    {p_thing, KEEP, FIRST_LETTER | FIRST_DIGIT | FIRST_NON_ASCII, ""},
    {p_thinga_dot, AMPERSAND, FIRST_LETTER, ""},
    {p_thinga, AMPERSAND, FIRST_LETTER, ""},
    {p_open_single_quote, OPEN_QUOTE, 0, "'"},
    {p_redaux, CLOSE_QUOTE, FIRST_NON_ASCII, "'&"},
    {p_quotes, CLOSE_QUOTE, FIRST_NON_ASCII, "'`&"},
    {p_duck_feet, KEEP, 0, "<>"},
    {p_misc_symbol, KEEP, FIRST_NON_ASCII, "+%&~^|\\"},
    {p_blank, SKIP, FIRST_NON_ASCII, " \t"},
    {p_newline, SKIP, FIRST_NON_ASCII, "\r\n\v\f"},
    {p_nbsp_entity, SKIP, 0, "&"},
};
#define N_RULES (sizeof rules / sizeof rules[0])
_Static_assert(sizeof rules / sizeof rules[0] <= 64, "rule sets are 64-bit masks");

/* ---- building tokens ---- */

typedef struct buffer {
    int32_t *cp; // (cap) code points of the token being built
    size_t len, cap;
} buffer;

static int put(buffer *b, int32_t c)
{
    if (b->len == b->cap) {
        size_t cap = b->cap ? b->cap * 2 : 64;
        int32_t *grown = realloc(b->cp, cap * sizeof *grown);
        if (!grown)
            return -1;
        b->cp = grown;
        b->cap = cap;
    }
    b->cp[b->len++] = c;
    return 0;
}

static int put_ascii(buffer *b, const char *s)
{
    for (; *s; s++)
        if (put(b, (unsigned char)*s))
            return -1;
    return 0;
}

/* Case-sensitive ASCII literal at src[0..n) (the Java replacements are). */
static int starts_with(const int32_t *src, size_t n, const char *s)
{
    size_t k = 0;
    for (; s[k]; k++)
        if (k >= n || src[k] != (unsigned char)s[k])
            return 0;
    return 1;
}

/* Writes src[0..n) into b with a backslash before each c not already
 * preceded by one. */
static int put_escaped(buffer *b, const int32_t *src, size_t n, int32_t c)
{
    for (size_t k = 0; k < n; k++) {
        if (src[k] == c && (k == 0 || src[k - 1] != '\\') && put(b, '\\'))
            return -1;
        if (put(b, src[k]))
            return -1;
    }
    return 0;
}

/* The LaTeX-quote mapping of the Java tokenizer. */
static int put_quotes(buffer *b, const int32_t *src, size_t n, int open)
{
    for (size_t k = 0; k < n; k++) {
        int32_t c = src[k];
        int rc;
        if (starts_with(src + k, n - k, "&apos;")) {
            rc = put_ascii(b, open ? "`" : "'");
            k += 5;
        } else if (starts_with(src + k, n - k, "&quot;")) {
            rc = put_ascii(b, open ? "``" : "''");
            k += 5;
        } else if (c == '\'')
            rc = put_ascii(b, open ? "`" : "'");
        else if (c == '"')
            rc = put_ascii(b, open ? "``" : "''");
        else if (c == 0x91 || c == 0x2018 || c == 0x201B || c == 0x2039)
            rc = put_ascii(b, "`");
        else if (c == 0x92 || c == 0x2019 || c == 0x203A)
            rc = put_ascii(b, "'");
        else if (c == 0x93 || c == 0x201C || c == 0xAB)
            rc = put_ascii(b, "``");
        else if (c == 0x94 || c == 0x201D || c == 0xBB)
            rc = put_ascii(b, "''");
        else
            rc = put(b, c);
        if (rc)
            return -1;
    }
    return 0;
}

/* Builds the token for src[0..n) matched by a rule with action act. */
static int build(buffer *b, action act, const int32_t *src, size_t n)
{
    b->len = 0;
    switch (act) {
    case KEEP:
        for (size_t k = 0; k < n; k++)
            if (put(b, src[k]))
                return -1;
        return 0;
    case SOFT_HYPHENS:
        for (size_t k = 0; k < n; k++)
            if (src[k] != 0xAD && put(b, src[k]))
                return -1;
        return b->len ? 0 : put(b, '-');
    case DASH:
        return put_ascii(b, "--");
    case AMPERSAND:
        for (size_t k = 0; k < n; k++) {
            if (n - k >= 5 && fold(src[k]) == '&' && fold(src[k + 1]) == 'a' && fold(src[k + 2]) == 'm' &&
                fold(src[k + 3]) == 'p' && src[k + 4] == ';')
                k += 4;
            if (put(b, src[k]))
                return -1;
        }
        return 0;
    case OPEN_QUOTE:
    case CLOSE_QUOTE:
        return put_quotes(b, src, n, act == OPEN_QUOTE);
    case ESCAPE_SLASH:
        return put_escaped(b, src, n, '/');
    case ESCAPE_URL: {
        buffer slashed = {0};
        int rc = put_escaped(&slashed, src, n, '/') || put_escaped(b, slashed.cp, slashed.len, '*') ? -1 : 0;
        free(slashed.cp);
        return rc;
    }
    case ESCAPE_STAR:
        return put_escaped(b, src, n, '*');
    case FRACTION:
        if (put_escaped(b, src, n, '/'))
            return -1;
        for (size_t k = 0; k < b->len; k++)
            if (b->cp[k] == ' ')
                b->cp[k] = 0xA0;
        return 0;
    case VULGAR:
        switch (src[0]) {
        case 0xBC: return put_ascii(b, "1\\/4");
        case 0xBD: return put_ascii(b, "1\\/2");
        case 0xBE: return put_ascii(b, "3\\/4");
        case 0x2153: return put_ascii(b, "1\\/3");
        default: return put(b, src[0]);
        }
    case CURRENCY:
        switch (src[0]) {
        case 0xA2: return put_ascii(b, "cents");
        case 0xA3: return put_ascii(b, "#");
        case 0x80: case 0xA4: case 0x20A0: case 0x20AC: return put_ascii(b, "$");
        default: return put(b, src[0]);
        }
    case LRB:
        return put_ascii(b, "-LRB-");
    case RRB:
        return put_ascii(b, "-RRB-");
    case LCB:
        return put_ascii(b, "-LCB-");
    case RCB:
        return put_ascii(b, "-RCB-");
    case HYPHENS:
        if (n == 3 || n == 4)
            return put_ascii(b, "--");
        return build(b, KEEP, src, n);
    case ELLIPSIS:
        return put_ascii(b, "...");
    case PHONE:
        for (size_t k = 0; k < n; k++) {
            int rc = src[k] == ' ' ? put(b, 0xA0) : src[k] == '(' ? put_ascii(b, "-LRB-")
                   : src[k] == ')' ? put_ascii(b, "-RRB-") : put(b, src[k]);
            if (rc)
                return -1;
        }
        return 0;
    case SPACES_NBSP:
        for (size_t k = 0; k < n; k++)
            if (put(b, src[k] == ' ' ? 0xA0 : src[k]))
                return -1;
        return 0;
    case SKIP:
    case DROP:
        return 0;
    }
    return 0;
}

/* ---- output ---- */

typedef struct out_text {
    char *s; // (cap) the tokens so far, space separated, NUL-terminated
    size_t len, cap;
} out_text;

static int out_reserve(out_text *o, size_t more)
{
    if (o->len + more + 1 <= o->cap)
        return 0;
    size_t cap = o->cap ? o->cap : 128;
    while (cap < o->len + more + 1)
        cap *= 2;
    char *grown = realloc(o->s, cap);
    if (!grown)
        return -1;
    o->s = grown;
    o->cap = cap;
    return 0;
}

/* pycocoevalcap's removal list, compared with the final (lower-cased) token. */
static int removed(const char *tok, size_t len, const ptb_options *opt)
{
    static const char *const punctuation[] = {"''", "'", "``", "`", "-LRB-", "-RRB-", "-LCB-", "-RCB-", ".",
                                              "?", "!", ",", ":", "-", "--", "...", ";"};
    static const char *const brackets[] = {"-lrb-", "-rrb-", "-lcb-", "-rcb-", "-LRB-", "-RRB-", "-LCB-", "-RCB-"};
    if (len > 5) /* longer than every entry */
        return 0;
    if (!opt->keep_punctuation)
        for (size_t k = 0; k < sizeof punctuation / sizeof punctuation[0]; k++)
            if (strlen(punctuation[k]) == len && memcmp(punctuation[k], tok, len) == 0)
                return 1;
    if (opt->drop_brackets)
        for (size_t k = 0; k < sizeof brackets / sizeof brackets[0]; k++)
            if (strlen(brackets[k]) == len && memcmp(brackets[k], tok, len) == 0)
                return 1;
    return 0;
}

/* Lower-cases the token in b, encodes it, and appends it unless removed. */
static int emit(out_text *o, const buffer *b, const ptb_options *opt)
{
    if (b->len == 0)
        return 0;
    if (out_reserve(o, 1 + 8 * b->len))
        return -1;
    size_t start = o->len + (o->len > 0);
    size_t k = start;
    for (size_t t = 0; t < b->len; t++) {
        int32_t lower[2] = {b->cp[t], 0};
        int n = opt->keep_case ? 1 : ucd_to_lower(b->cp[t], lower);
        for (int m = 0; m < n; m++)
            k += ucd_encode(lower[m], o->s + k);
    }
    if (removed(o->s + start, k - start, opt)) {
        o->s[o->len] = '\0'; /* the token was written past it */
        return 0;
    }
    if (o->len > 0)
        o->s[o->len] = ' ';
    o->len = k;
    o->s[o->len] = '\0';
    return 0;
}

char *ptb_tokenize(const char *text, size_t len, const ptb_options *opt, rc_error *err)
{
    static const ptb_options defaults = {0, 0, 0};
    if (!opt)
        opt = &defaults;
    lexer lx = {0};
    buffer tok = {0};
    out_text out = {0};
    lx.cp = malloc((len + 1) * sizeof *lx.cp);
    if (!lx.cp || out_reserve(&out, len))
        goto oom;
    out.s[0] = '\0';
    const unsigned char *p = (const unsigned char *)text;
    for (size_t k = 0; k < len;) {
        int32_t c;
        k += ucd_decode(p + k, len - k, &c);
        /* The reference joins a caption's lines with spaces; a NUL would end
         * our C-string output, so it is a space too. */
        lx.cp[lx.n++] = c == '\n' || c == 0 ? ' ' : c;
    }
    lx.cp[lx.n++] = '\n';

    /* Per first character, the set of rules whose match may start with it
     * (bit r for rule r), so that only those are tried. */
    uint64_t ascii_rules[128] = {0}, letter_rules = 0, digit_rules = 0, other_rules = 0;
    for (size_t r = 0; r < N_RULES; r++) {
        const uint64_t bit = (uint64_t)1 << r;
        letter_rules |= rules[r].first_kinds & FIRST_LETTER ? bit : 0;
        digit_rules |= rules[r].first_kinds & FIRST_DIGIT ? bit : 0;
        other_rules |= rules[r].first_kinds & FIRST_NON_ASCII ? bit : 0;
        for (const char *f = rules[r].first; *f; f++)
            ascii_rules[(unsigned char)*f] |= bit;
    }

    for (size_t i = 0; i < lx.n;) {
        lx.end = lx.n - i > PTB_WINDOW ? i + PTB_WINDOW : lx.n;
        lx.start = i;
        lx.word = scan_word(&lx, i);
        const int32_t c = lx.cp[i];
        uint64_t candidates = c >= 128 ? other_rules
                            : ascii_rules[c] | (ascii_letter(c) ? letter_rules : ascii_digit(c) ? digit_rules : 0);
        size_t best = 0, best_text = 1;
        action act = DROP;
        for (; candidates; candidates &= candidates - 1) {
            const size_t r = (size_t)__builtin_ctzll(candidates);
            size_t t = 0, m = rules[r].match(&lx, i, &t);
            if (m > best) {
                best = m;
                best_text = t;
                act = rules[r].act;
            }
        }
        if (best_text == 0) /* cannot happen: every pattern's text is at least one character */
            best_text = 1;
        if (act != SKIP && act != DROP) {
            if (build(&tok, act, lx.cp + i, best_text) || emit(&out, &tok, opt))
                goto oom;
        }
        i += best_text;
    }
    free(lx.cp);
    free(tok.cp);
    return out.s;
oom:
    free(lx.cp);
    free(tok.cp);
    free(out.s);
    rc_fail(err, "out of memory tokenising a caption of %zu bytes", len);
    return NULL;
}
