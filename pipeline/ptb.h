/* ptb.h: caption tokenisation as the COCO caption evaluation code does it.
 *
 * pycocoevalcap runs the Stanford PTBTokenizer (CoreNLP 3.4.1, options
 * -preserveLines -lowerCase) over the captions, then drops the tokens
 * '' ' `` ` -LRB- -RRB- -LCB- -RCB- . ? ! , : - -- ... ; and joins the rest
 * with single spaces. This module is a C tokenizer that follows the Java
 * tokenizer's rules (longest match over its token patterns, ties to the
 * earlier pattern) for what captions hold: words, hyphenated words and
 * numbers kept whole ("well-defined", "2.5-cm", "3-5"), decimal numbers
 * ("2.5", "1,000", "9:30"), slash compounds and fractions with the slash
 * escaped ("t1\/t2", "1\/2"), contractions split ("do n't", "patient 's",
 * "ca n't", "can not"), brackets as -LRB- -RRB- -LCB- -RCB- ("[" and "<" are
 * -LRB- too), quotes as `` '' ` ', dashes as --, ellipses as ..., the known
 * abbreviations keeping their period ("dr.", "e.g.", "vs.", "no.", "a."),
 * URLs, e-mail addresses, and symbols (%, °, ±, ×, ≥ ...) as tokens.
 *
 * Two facts of the reference pipeline matter for radiology text and are
 * kept by default: it lower-cases after turning brackets into -LRB-/-RRB-
 * while its removal list holds only the upper-case forms, so "-lrb-" and
 * "-rrb-" (and "-lcb-", "-rcb-") stay in the scored text; and slashes stay,
 * escaped, as in "t1\/t2". ptb_options.drop_brackets removes the bracket
 * tokens instead.
 *
 * Where this tokenizer may differ from the Java one:
 * - British spellings are kept ("tumour", "colour"). Some older CoreNLP
 *   releases "americanize" by default (tumour -> tumor); 3.4.1's default
 *   could not be checked here. If it does, scores on British-spelled text
 *   differ.
 * - Character classes come from pipeline/ucd.h: letters and digits of the
 *   common scripts; letters of rarer scripts are dropped as untokenizable
 *   where Java would keep them. Lower-casing covers Latin, Greek, Cyrillic,
 *   Armenian and fullwidth Latin (Java: all of Unicode; and Java writes a
 *   word-final capital sigma as final sigma, we write sigma).
 * - Characters outside the BMP (emoji) are dropped, as Java 3.4.1 drops
 *   each half of their surrogate pair; other unknown symbols are dropped
 *   likewise (the "untokenizable" characters, deleted by default in Java).
 * - Rare special forms are not recognised: "non-U.S"-type acronyms and
 *   SGML/HTML character entities other than &amp; &lt; &gt; &quot; &apos;
 *   &nbsp; &mdash; &ndash; &MD; &#N; and accented-vowel entities.
 * - A token is at most 512 characters (longer runs are cut; Java has no
 *   limit): this keeps the time linear on pathological input.
 * - A NUL character is a space (Java keeps it inside some tokens).
 * - Each caption is tokenised alone; the Java tokenizer sees all captions
 *   joined by newlines, and a few rules look one character past a caption's
 *   end. Only the period after a sentence-final abbreviation depends on
 *   that, and that period is removed either way. A carriage return inside
 *   a caption is a space here; in the reference it breaks the line and
 *   misaligns every later caption (a known bug of its pipeline).
 * - The 3.4.1 lexer maps only 1/4, 1/2, 3/4 and 1/3 of the vulgar
 *   fractions to "1\/4"-style text (a bug keeps 2/3 and the rest as they
 *   are); we do the same.
 */
#ifndef RC_PTB_H
#define RC_PTB_H

#include <stddef.h>

#include "engine/err.h"

typedef struct ptb_options {
    int keep_case;        // 1: do not lower-case (pycocoevalcap lower-cases: 0)
    int keep_punctuation; // 1: keep the tokens pycocoevalcap removes (0: remove them)
    int drop_brackets;    // 1: also remove -lrb- -rrb- -lcb- -rcb- (pycocoevalcap keeps them: 0)
} ptb_options;

/* Tokenises the caption text[0..len) (UTF-8; a newline counts as a space,
 * NUL bytes as spaces, malformed bytes are dropped as the Java tokenizer
 * drops U+FFFD) as pycocoevalcap does, with the options opt (NULL: all 0,
 * pycocoevalcap's behaviour). Returns a malloc'd NUL-terminated string of
 * the tokens separated by single spaces ("" when none is left), or NULL
 * (err filled) when memory runs out. */
char *ptb_tokenize(const char *text, size_t len, const ptb_options *opt, rc_error *err);

#endif
