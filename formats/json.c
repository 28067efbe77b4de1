/* json.c: the strict JSON tokeniser of json.h. One pass, an explicit stack
 * of open containers, every read bounds-checked against len. */
#include "formats/json.h"

#include <stdint.h>
#include <string.h>

#include "formats/errors.h"

static size_t skip_ws(const char *s, size_t len, size_t i)
{
    while (i < len && (s[i] == ' ' || s[i] == '\t' || s[i] == '\n' || s[i] == '\r')) i++;
    return i;
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

int moco_utf8_len(const unsigned char *s, size_t n)
{
    unsigned c = s[0];
    int k = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : (c & 0xF8) == 0xF0 ? 4 : 0;
    if (!k || (size_t)k > n) return 0;
    for (int i = 1; i < k; i++)
        if ((s[i] & 0xC0) != 0x80) return 0;
    uint32_t cp = k == 1 ? c : k == 2 ? c & 0x1F : k == 3 ? c & 0x0F : c & 0x07;
    for (int i = 1; i < k; i++) cp = cp << 6 | (s[i] & 0x3F);
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    if (cp < least[k] || cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF)) return 0;
    return k;
}

/* s[i] is the opening quote; on success *j is just past the closing quote.
 * -1: a bad string; -2: bytes that are not UTF-8 (RFC 8259 8.1), at *j. */
static int scan_string(const char *s, size_t len, size_t i, size_t *j)
{
    i++;
    while (i < len) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"') {
            *j = i + 1;
            return 0;
        }
        if (c < 0x20) return -1;
        if (c == '\\') {
            if (i + 1 >= len) return -1;
            char e = s[i + 1];
            if (e == 'u') {
                if (i + 5 >= len) return -1;
                for (int k = 2; k < 6; k++)
                    if (hexval(s[i + k]) < 0) return -1;
                i += 6;
            } else if (strchr("\"\\/bfnrt", e) && e) {
                i += 2;
            } else {
                return -1;
            }
        } else if (c < 0x80) {
            i++;
        } else {
            int k = moco_utf8_len((const unsigned char *)s + i, len - i);
            if (!k) {
                *j = i;
                return -2;
            }
            i += (size_t)k;
        }
    }
    return -1;
}

static int scan_number(const char *s, size_t len, size_t i, size_t *j)
{
    if (i < len && s[i] == '-') i++;
    if (i >= len) return -1;
    if (s[i] == '0') i++;
    else if (s[i] >= '1' && s[i] <= '9') while (i < len && s[i] >= '0' && s[i] <= '9') i++;
    else return -1;
    if (i < len && s[i] == '.') {
        i++;
        if (i >= len || s[i] < '0' || s[i] > '9') return -1;
        while (i < len && s[i] >= '0' && s[i] <= '9') i++;
    }
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-')) i++;
        if (i >= len || s[i] < '0' || s[i] > '9') return -1;
        while (i < len && s[i] >= '0' && s[i] <= '9') i++;
    }
    *j = i;
    return 0;
}

int moco_json_parse(const char *s, size_t len, const char *what, moco_json_tok *toks, int maxtoks, int *ntoks)
{
    int stack[MOCO_JSON_MAX_DEPTH];
    int depth = 0, n = 0;
    size_t i = skip_ws(s, len, 0);
    /* state: after a container opens or a comma, a value (or key) is expected */
    for (;;) {
        if (i >= len) return moco_err(MOCO_ECORRUPT, "%s: JSON ends early at byte %zu", what, i);
        int parent = depth ? stack[depth - 1] : -1;
        int in_obj = parent >= 0 && toks[parent].type == MOCO_JSON_OBJ;
        /* an empty container closes right away */
        if (parent >= 0 && toks[parent].size == 0 && n == parent + 1 &&
            ((in_obj && s[i] == '}') || (!in_obj && s[i] == ']'))) {
            goto close;
        }
        if (in_obj) { /* a key, a colon */
            if (s[i] != '"') return moco_err(MOCO_ECORRUPT, "%s: JSON key expected at byte %zu", what, i);
            size_t j;
            int bad;
            if ((bad = scan_string(s, len, i, &j)))
                return bad == -2 ? moco_err(MOCO_ECORRUPT, "%s: a JSON string is not UTF-8 at byte %zu", what, j)
                                 : moco_err(MOCO_ECORRUPT, "%s: bad JSON string at byte %zu", what, i);
            if (n >= maxtoks) return moco_err(MOCO_ECORRUPT, "%s: JSON has too many values (over %d)", what, maxtoks);
            toks[n] = (moco_json_tok){MOCO_JSON_STR, i + 1, j - i - 2, 0, n + 1};
            n++;
            i = skip_ws(s, len, j);
            if (i >= len || s[i] != ':') return moco_err(MOCO_ECORRUPT, "%s: ':' expected at byte %zu", what, i);
            i = skip_ws(s, len, i + 1);
            if (i >= len) return moco_err(MOCO_ECORRUPT, "%s: JSON ends early at byte %zu", what, i);
        }
        if (n >= maxtoks) return moco_err(MOCO_ECORRUPT, "%s: JSON has too many values (over %d)", what, maxtoks);
        size_t j = i;
        char c = s[i];
        if (c == '{' || c == '[') {
            if (depth >= MOCO_JSON_MAX_DEPTH) return moco_err(MOCO_ECORRUPT, "%s: JSON nested deeper than %d", what, MOCO_JSON_MAX_DEPTH);
            toks[n] = (moco_json_tok){c == '{' ? MOCO_JSON_OBJ : MOCO_JSON_ARR, i, 0, 0, 0};
            stack[depth++] = n++;
            if (parent >= 0) toks[parent].size++;
            i = skip_ws(s, len, i + 1);
            continue;
        }
        moco_json_type t;
        int bad = 0;
        if (c == '"') {
            t = MOCO_JSON_STR;
            bad = scan_string(s, len, i, &j);
        } else if (c == '-' || (c >= '0' && c <= '9')) {
            t = MOCO_JSON_NUM;
            bad = scan_number(s, len, i, &j);
        } else if (len - i >= 4 && !memcmp(s + i, "true", 4)) {
            t = MOCO_JSON_BOOL, j = i + 4;
        } else if (len - i >= 5 && !memcmp(s + i, "false", 5)) {
            t = MOCO_JSON_BOOL, j = i + 5;
        } else if (len - i >= 4 && !memcmp(s + i, "null", 4)) {
            t = MOCO_JSON_NULL, j = i + 4;
        } else {
            bad = 1;
        }
        if (bad == -2) return moco_err(MOCO_ECORRUPT, "%s: a JSON string is not UTF-8 at byte %zu", what, j);
        if (bad) return moco_err(MOCO_ECORRUPT, "%s: bad JSON value at byte %zu", what, i);
        toks[n] = t == MOCO_JSON_STR ? (moco_json_tok){t, i + 1, j - i - 2, 0, n + 1}
                                     : (moco_json_tok){t, i, j - i, 0, n + 1};
        n++;
        if (parent >= 0) toks[parent].size++;
        i = skip_ws(s, len, j);
        /* after a value: a comma, a closing bracket, or the end */
        for (;;) {
            if (depth == 0) {
                if (i != len) return moco_err(MOCO_ECORRUPT, "%s: trailing bytes after JSON at byte %zu", what, i);
                *ntoks = n;
                return 0;
            }
            if (i >= len) return moco_err(MOCO_ECORRUPT, "%s: JSON ends early at byte %zu", what, i);
            parent = stack[depth - 1];
            in_obj = toks[parent].type == MOCO_JSON_OBJ;
            if (s[i] == ',') {
                i = skip_ws(s, len, i + 1);
                break;
            }
            if ((in_obj && s[i] == '}') || (!in_obj && s[i] == ']')) {
            close:
                parent = stack[--depth];
                toks[parent].len = i + 1 - toks[parent].start;
                toks[parent].end = n;
                i = skip_ws(s, len, i + 1);
                continue;
            }
            return moco_err(MOCO_ECORRUPT, "%s: ',' or closing bracket expected at byte %zu", what, i);
        }
    }
}

/* Decode string token t; writes at most cap bytes (no NUL); returns the
 * decoded length or -1 on a \u0000 or bad surrogate. */
static long decode(const char *s, const moco_json_tok *t, char *buf, size_t cap)
{
    const char *p = s + t->start, *e = p + t->len;
    size_t n = 0;
    while (p < e) {
        unsigned long cp;
        if (*p != '\\') {
            if (n < cap) buf[n] = *p;
            n++, p++;
            continue;
        }
        char c = p[1];
        p += 2;
        if (c != 'u') {
            char o = c == 'b' ? '\b' : c == 'f' ? '\f' : c == 'n' ? '\n' : c == 'r' ? '\r' : c == 't' ? '\t' : c;
            if (n < cap) buf[n] = o;
            n++;
            continue;
        }
        cp = (unsigned long)(hexval(p[0]) << 12 | hexval(p[1]) << 8 | hexval(p[2]) << 4 | hexval(p[3]));
        p += 4;
        if (cp >= 0xD800 && cp <= 0xDBFF) {
            if (e - p < 6 || p[0] != '\\' || p[1] != 'u') return -1;
            unsigned long lo = (unsigned long)(hexval(p[2]) << 12 | hexval(p[3]) << 8 | hexval(p[4]) << 4 | hexval(p[5]));
            if (lo < 0xDC00 || lo > 0xDFFF) return -1;
            cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
            p += 6;
        } else if (cp >= 0xDC00 && cp <= 0xDFFF) {
            return -1;
        }
        if (cp == 0) return -1;
        unsigned char u[4];
        int k;
        if (cp < 0x80) u[0] = (unsigned char)cp, k = 1;
        else if (cp < 0x800) u[0] = (unsigned char)(0xC0 | cp >> 6), u[1] = (unsigned char)(0x80 | (cp & 63)), k = 2;
        else if (cp < 0x10000)
            u[0] = (unsigned char)(0xE0 | cp >> 12), u[1] = (unsigned char)(0x80 | ((cp >> 6) & 63)),
            u[2] = (unsigned char)(0x80 | (cp & 63)), k = 3;
        else
            u[0] = (unsigned char)(0xF0 | cp >> 18), u[1] = (unsigned char)(0x80 | ((cp >> 12) & 63)),
            u[2] = (unsigned char)(0x80 | ((cp >> 6) & 63)), u[3] = (unsigned char)(0x80 | (cp & 63)), k = 4;
        for (int i = 0; i < k; i++, n++)
            if (n < cap) buf[n] = (char)u[i];
    }
    return (long)n;
}

int moco_json_str(const char *s, const moco_json_tok *t, char *buf, size_t cap)
{
    if (t->type != MOCO_JSON_STR || cap == 0) return moco_err(MOCO_ECORRUPT, "JSON string expected");
    long n = decode(s, t, buf, cap - 1);
    if (n < 0) return moco_err(MOCO_ECORRUPT, "JSON string holds a NUL or a bad surrogate");
    if ((size_t)n >= cap) return moco_err(MOCO_ECORRUPT, "JSON string longer than %zu bytes", cap - 1);
    buf[n] = 0;
    return 0;
}

int moco_json_streq(const char *s, const moco_json_tok *t, const char *key)
{
    if (t->type != MOCO_JSON_STR) return 0;
    size_t kl = strlen(key);
    if (t->len == kl && !memcmp(s + t->start, key, kl)) return 1;
    if (t->len < kl || !memchr(s + t->start, '\\', t->len)) return 0;
    char buf[512];
    if (kl >= sizeof buf) return 0;
    long n = decode(s, t, buf, sizeof buf);
    return n == (long)kl && !memcmp(buf, key, kl);
}

int moco_json_get(const char *s, const moco_json_tok *toks, int obj, const char *key)
{
    if (toks[obj].type != MOCO_JSON_OBJ) return -1;
    int i = obj + 1;
    for (int k = 0; k < toks[obj].size; k++) {
        if (moco_json_streq(s, &toks[i], key)) return i + 1;
        i = toks[i + 1].end;
    }
    return -1;
}

int moco_json_u64(const char *s, const moco_json_tok *t, uint64_t *v)
{
    if (t->type != MOCO_JSON_NUM || t->len == 0 || t->len > 20) return moco_err(MOCO_ECORRUPT, "JSON non-negative integer expected");
    uint64_t x = 0;
    for (size_t i = 0; i < t->len; i++) {
        char c = s[t->start + i];
        if (c < '0' || c > '9') return moco_err(MOCO_ECORRUPT, "JSON non-negative integer expected");
        uint64_t d = (uint64_t)(c - '0');
        if (x > (UINT64_MAX - d) / 10) return moco_err(MOCO_ECORRUPT, "JSON integer overflows 64 bits");
        x = x * 10 + d;
    }
    *v = x;
    return 0;
}
