/* ucd.h: the little Unicode character data the caption tokenizer needs.
 *
 * Character classes and lower-casing as Java sees them (the reference
 * tokenizer is Java's Stanford PTBTokenizer): letters (Character.isLetter),
 * decimal digits (Character.isDigit) and String.toLowerCase. The tables
 * cover the Basic Multilingual Plane's letters and digits of the common
 * scripts (Latin, Greek, Cyrillic, Armenian, Hebrew, Arabic, Indic, Thai,
 * Georgian, Hangul, kana, CJK ideographs, fullwidth forms); case mapping
 * covers Latin (including Extended-A, most of -B and Additional), Greek,
 * Cyrillic, Armenian and fullwidth Latin. Plus UTF-8 decoding and encoding
 * with Java's treatment of malformed input (each bad sequence is U+FFFD).
 */
#ifndef RC_UCD_H
#define RC_UCD_H

#include <stddef.h>
#include <stdint.h>

#define UCD_REPLACEMENT 0xFFFD /* what a malformed UTF-8 sequence decodes to */

/* Decodes one code point from p[0..avail) (avail >= 1) into *cp and returns
 * the bytes used. A malformed or truncated sequence, an overlong form, a
 * surrogate or a value above U+10FFFF gives UCD_REPLACEMENT and uses 1 byte. */
size_t ucd_decode(const unsigned char *p, size_t avail, int32_t *cp);

/* Writes cp as UTF-8 into out (room for 4 bytes); returns the bytes written. */
size_t ucd_encode(int32_t cp, char *out);

/* Java's Character.isLetter / isDigit, for the scripts listed above. */
int ucd_is_letter(int32_t cp);
int ucd_is_digit(int32_t cp);

/* Java's String.toLowerCase of one character: writes 1 or 2 code points to
 * out (U+0130 becomes "i" + U+0307) and returns how many. */
int ucd_to_lower(int32_t cp, int32_t out[2]);

#endif
