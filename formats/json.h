/* json.h: a small, strict, bounds-checked JSON reader (RFC 8259) for headers
 * that come from files: the safetensors header, checkpoints.
 *
 * It tokenises a buffer into a flat array of tokens (no allocation, no
 * recursion): every value is one token; an array or object token is followed
 * by its children (for an object: key token, value token, key, value, ...).
 * Strings are validated (escapes, control characters, UTF-8: bytes that
 * are not, overlong forms, surrogates are refused) but not decoded until
 * asked. Numbers are validated against the
 * JSON grammar. Anything else (trailing garbage, unbalanced brackets, depth
 * over MOCO_JSON_MAX_DEPTH, more tokens than given) is MOCO_ECORRUPT.
 * The tokens point into the caller's buffer, which must outlive them. */
#ifndef MOCO_JSON_H
#define MOCO_JSON_H

#include <stddef.h>
#include <stdint.h>

#define MOCO_JSON_MAX_DEPTH 64

typedef enum { MOCO_JSON_NULL, MOCO_JSON_BOOL, MOCO_JSON_NUM, MOCO_JSON_STR, MOCO_JSON_ARR, MOCO_JSON_OBJ } moco_json_type;

typedef struct {
    moco_json_type type;
    size_t start, len; /* STR: the bytes between the quotes; others: the raw text */
    int size;          /* ARR: elements; OBJ: key/value pairs */
    int end;           /* index of the first token after this value's subtree */
} moco_json_tok;

/* Tokenise s[0..len) (one value, optional surrounding whitespace) into
 * toks[0..maxtoks). Returns 0 and the count in *ntoks, MOCO_ECORRUPT with a
 * message (naming `what` and the byte offset) when malformed or when maxtoks
 * is too small. */
int moco_json_parse(const char *s, size_t len, const char *what, moco_json_tok *toks, int maxtoks, int *ntoks);

/* The index of the value of key `key` in object token obj, or -1. */
int moco_json_get(const char *s, const moco_json_tok *toks, int obj, const char *key);

/* Decode string token t into buf (NUL-terminated, cap bytes with the NUL).
 * Returns 0, or MOCO_ECORRUPT when it does not fit or holds a \u0000. */
int moco_json_str(const char *s, const moco_json_tok *t, char *buf, size_t cap);

/* Whether string token t decodes to exactly key. */
int moco_json_streq(const char *s, const moco_json_tok *t, const char *key);

/* A non-negative integer token (no sign, fraction or exponent) that fits in
 * uint64_t. Returns 0, or MOCO_ECORRUPT. */
int moco_json_u64(const char *s, const moco_json_tok *t, uint64_t *v);

/* The length of a valid UTF-8 sequence at s (n >= 1 bytes left), or 0:
 * no overlong forms, surrogates or code points over U+10FFFF. The parser
 * refuses strings that are not UTF-8; the writer (jsonw.c) replaces them. */
int moco_utf8_len(const unsigned char *s, size_t n);

#endif
