/* tokenizer.h: the BERT uncased WordPiece tokenizer, as Hugging Face's slow
 * `BertTokenizer` (do_lower_case=True, tokenize_chinese_chars=True,
 * strip_accents=None) encodes and decodes, over a `vocab.txt`.
 *
 * The reference is transformers 4.x as of the versions that NFC-normalise
 * in BasicTokenizer (NFC changes no result here: NFD follows it) and skip
 * special tokens by id and by text when decoding.
 *
 * Encoding, step by step (each step is HF's; order matters):
 *  1. The special tokens written literally in the text ([CLS] [SEP] [MASK]
 *     [UNK] [PAD], exactly that case, anywhere, even inside a word) are split
 *     out and kept as single tokens. One the vocabulary lacks encodes as
 *     [UNK], the fallback of HF's vocabulary lookup (BERT vocabularies have
 *     all five).
 *  2. Cleaning: U+0000, U+FFFD and every character of a category C* (Cc, Cf,
 *     Cs, Co, Cn) except \t \n \r are dropped; \t \n \r, space and Zs become
 *     word breaks, and so do U+2028/U+2029, which Python's str.split() treats
 *     as whitespace.
 *  3. Each CJK ideograph (U+4E00-9FFF, 3400-4DBF, 20000-2A6DF, 2A700-2B73F,
 *     2B740-2B81F, 2B820-2CEAF, F900-FAFF, 2F800-2FA1F) is a word of its own.
 *  4. Lower-casing with Python's str.lower() applied one character at a time
 *     (HF lower-cases the text character by character before splitting out
 *     special tokens, so U+03A3 always becomes U+03C3, never final sigma),
 *     then NFD and removal of the Mn (non-spacing mark) characters.
 *  5. Punctuation (ASCII 33-47, 58-64, 91-96, 123-126, and categories P*)
 *     becomes one-character words.
 *  6. WordPiece: greedy longest-match-first with "##" on continuation
 *     pieces; a word of more than TOK_MAX_WORD_CHARS code points, or one that
 *     cannot be covered by vocabulary pieces, becomes a single [UNK].
 *
 * Input is length-delimited UTF-8 and may contain NUL. Invalid UTF-8 is not an
 * error: each invalid byte is read as U+FFFD, which cleaning drops, exactly as
 * Python's bytes.decode("utf-8", "replace") followed by BertTokenizer would
 * do. Texts are never truncated. Encoding takes time linear in the text.
 *
 * Unicode data comes from GLib (categories, decompositions, combining
 * classes, simple lower-case mappings), completed where Python's str.lower()
 * differs (U+0130 and the letter-like symbols U+2160-216F, U+24B6-24CF).
 * Known divergence: code points that GLib's Unicode version assigns but the
 * Python running HF does not (GLib 2.74 has Unicode 15.0, Python 3.11 has
 * 14.0: 4,489 code points) are category Cn for HF, so HF drops them and we
 * keep them (new marks of category Mn excepted: stripped either way). With
 * Python >= 3.12 (Unicode 15.0) the two agree.
 *
 * Decoding is HF's decode(ids, skip_special_tokens=True): special tokens
 * dropped, tokens joined with spaces, " ##" removed, Python strip(), then
 * clean_up_tokenization's plain replaces, in this order: " ." -> ".",
 * " ?" -> "?", " !" -> "!", " ," -> ",", " ' " -> "'", " n't" -> "n't",
 * " 'm" -> "'m", " 's" -> "'s", " 've" -> "'ve", " 're" -> "'re".
 *
 * Vocabulary file rules (HF's load_vocab): UTF-8 (an invalid byte is an
 * error naming the line), one token per line, lines end in \n, \r\n or a
 * lone \r (Python's universal newlines), the last line may lack its end,
 * id = 0-based line number. A token that appears on several lines maps to
 * the id of its LAST line (HF fills a dict in line order), and the ids of its
 * earlier lines decode as "[UNK]" (HF's ids_to_tokens is built from that
 * dict, so they are missing from it and fall back to the unknown token).
 * A byte-order mark is kept as part of the first token, as Python's "utf-8"
 * codec does.
 *
 * A tok_vocab is immutable once built: encoding and decoding from several
 * threads at once is safe.
 */
#ifndef RC_TOKENIZER_H
#define RC_TOKENIZER_H

#include "err.h"

#include <stddef.h>

/* A word longer than this (in code points, after normalisation) is [UNK]
 * (HF's max_input_chars_per_word). */
#define TOK_MAX_WORD_CHARS 100

typedef struct tok_vocab tok_vocab;

/* The special tokens, looked up by name in the vocabulary. */
typedef enum { TOK_PAD, TOK_UNK, TOK_CLS, TOK_SEP, TOK_MASK, TOK_N_SPECIAL } tok_special;

/* Reads a vocab.txt file (see the rules above). Fails if the file cannot be
 * read, is not UTF-8, has more than INT_MAX / 2 lines, or lacks "[UNK]". */
tok_vocab *tok_vocab_load(const char *path, rc_error *err);

/* Same from a buffer of len bytes; `name` names it in error messages. */
tok_vocab *tok_vocab_parse(const char *buf, size_t len, const char *name, rc_error *err);

/* Frees v (NULL is fine). */
void tok_vocab_free(tok_vocab *v);

/* Number of ids: lines of the file (duplicates included). */
int tok_vocab_size(const tok_vocab *v);

/* The id of a NUL-terminated token string, or -1 if the vocabulary lacks it.
 * (For a duplicated token, the id of its last line.) */
int tok_id(const tok_vocab *v, const char *token);

/* The text of line `id` of the vocabulary and its length in *len (it may
 * contain NUL bytes; it is also NUL-terminated), or NULL if id is out of range.
 * len may be NULL. */
const char *tok_token(const tok_vocab *v, int id, size_t *len);

/* The id of a special token, or -1 if the vocabulary lacks it (never -1 for
 * TOK_UNK, which tok_vocab_parse requires). */
int tok_special_id(const tok_vocab *v, tok_special which);

/* The name of a special token: "[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]". */
const char *tok_special_name(tok_special which);

/* Encodes len bytes of UTF-8 text. On success *ids is a malloc'd array of
 * *n_ids ids (free it; never NULL, even when empty), with [CLS] first and
 * [SEP] last when add_special is non-zero. Fails only when memory runs out,
 * or when add_special is asked of a vocabulary without [CLS] or [SEP]. */
int tok_encode(const tok_vocab *v, const char *text, size_t len, int add_special, int **ids,
               size_t *n_ids, rc_error *err);

/* The words of steps 1-5 above (HF's BasicTokenizer output, special tokens
 * included as their names), joined by single spaces, in a malloc'd
 * NUL-terminated string of *out_len bytes (out_len may be NULL). Words never
 * contain whitespace, so the joined form is unambiguous. For debugging and
 * for comparing normalisation with an independent implementation. */
char *tok_basic_tokenize(const tok_vocab *v, const char *text, size_t len, size_t *out_len,
                         rc_error *err);

/* Decodes n ids to a malloc'd NUL-terminated UTF-8 string of *len bytes (len
 * may be NULL; the text contains NUL only if a vocabulary line does). With
 * skip_special non-zero, the special tokens are left out as HF's
 * skip_special_tokens=True does (by id, and by text for a token spelled like
 * one). An id outside 0..tok_vocab_size()-1 is an error naming it and its
 * 0-based index. */
char *tok_decode(const tok_vocab *v, const int *ids, size_t n, int skip_special, size_t *len,
                 rc_error *err);

#endif
