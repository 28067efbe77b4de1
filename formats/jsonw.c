/* jsonw.c: the JSON line writer (jsonw.h). */
#include "formats/jsonw.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/errors.h"
#include "formats/json.h"

static void put(moco_jw *w, const char *s, size_t n)
{
    if (w->oom) return;
    if (w->len + n + 2 > w->cap) {
        size_t nc = w->cap ? w->cap : 256;
        while (nc < w->len + n + 2) nc *= 2;
        char *p = realloc(w->buf, nc);
        if (!p) { w->oom = 1; return; }
        w->buf = p, w->cap = nc;
    }
    memcpy(w->buf + w->len, s, n);
    w->len += n;
    w->buf[w->len] = 0;
}

static void puts_(moco_jw *w, const char *s) { put(w, s, strlen(s)); }

static void quote(moco_jw *w, const char *s, size_t len)
{
    const unsigned char *p = (const unsigned char *)s;
    put(w, "\"", 1);
    for (size_t i = 0; i < len;) {
        unsigned c = p[i];
        char e[8];
        if (c == '"' || c == '\\') {
            e[0] = '\\', e[1] = (char)c;
            put(w, e, 2);
            i++;
        } else if (c < 0x20) {
            snprintf(e, sizeof e, "\\u%04x", c);
            put(w, e, 6);
            i++;
        } else {
            int k = moco_utf8_len(p + i, len - i);
            if (k) put(w, s + i, (size_t)k), i += (size_t)k;
            else put(w, "\\ufffd", 6), i++;
        }
    }
    put(w, "\"", 1);
}

/* The comma before a member, and its key; NULL: an array element (no key). */
static void key(moco_jw *w, const char *k)
{
    if (w->n++) put(w, ",", 1);
    if (!k) return;
    quote(w, k, strlen(k));
    put(w, ":", 1);
}

void moco_jw_begin(moco_jw *w)
{
    memset(w, 0, sizeof *w);
    put(w, "{", 1);
}

void moco_jw_strn(moco_jw *w, const char *k, const char *v, size_t len)
{
    key(w, k);
    if (v) quote(w, v, len);
    else puts_(w, "null");
}

void moco_jw_str(moco_jw *w, const char *k, const char *v) { moco_jw_strn(w, k, v, v ? strlen(v) : 0); }

void moco_jw_i64(moco_jw *w, const char *k, int64_t v)
{
    char b[32];
    key(w, k);
    snprintf(b, sizeof b, "%" PRId64, v);
    puts_(w, b);
}

void moco_jw_u64(moco_jw *w, const char *k, uint64_t v)
{
    char b[32];
    key(w, k);
    snprintf(b, sizeof b, "%" PRIu64, v);
    puts_(w, b);
}

void moco_jw_num(moco_jw *w, const char *k, double v, int decimals)
{
    char b[512];
    key(w, k);
    if (!isfinite(v)) { puts_(w, "null"); return; }
    snprintf(b, sizeof b, "%.*f", decimals < 0 ? 0 : decimals > 17 ? 17 : decimals, v);
    if (!strcmp(b, "-0") || !strncmp(b, "-0.", 3)) { /* -0.000 is valid JSON but reads badly */
        int zero = 1;
        for (const char *q = b + 1; *q; q++) zero &= *q == '0' || *q == '.';
        if (zero) memmove(b, b + 1, strlen(b));
    }
    puts_(w, b);
}

void moco_jw_g(moco_jw *w, const char *k, double v, int digits)
{
    char b[64];
    key(w, k);
    if (!isfinite(v)) { puts_(w, "null"); return; }
    snprintf(b, sizeof b, "%.*g", digits <= 0 ? 6 : digits > 17 ? 17 : digits, v);
    puts_(w, b); /* %g of a finite number is a JSON number: "1e-05", "-0", "3.5" */
}

void moco_jw_bool(moco_jw *w, const char *k, int v)
{
    key(w, k);
    puts_(w, v ? "true" : "false");
}

void moco_jw_null(moco_jw *w, const char *k)
{
    key(w, k);
    puts_(w, "null");
}

void moco_jw_raw(moco_jw *w, const char *k, const char *json)
{
    key(w, k);
    puts_(w, json && *json ? json : "null");
}

void moco_jw_json(moco_jw *w, const char *k, const char *json)
{
    size_t len = json ? strlen(json) : 0;
    int ok = 0, nt;
    /* every token takes at least one byte: len + 1 tokens always suffice */
    moco_json_tok *t = len ? malloc(sizeof *t * (len + 1)) : NULL;
    if (t) {
        char keep[1024]; /* the parser's error message must not replace the caller's */
        snprintf(keep, sizeof keep, "%s", moco_errmsg());
        ok = moco_json_parse(json, len, "JSON value", t, (int)(len < 1u << 30 ? len + 1 : 1u << 30), &nt) == 0;
        if (!ok) moco_err(MOCO_OK, "%s", keep);
        free(t);
    } else if (len) {
        w->oom = 1;
    }
    moco_jw_raw(w, k, ok ? json : NULL);
}

static void open_(moco_jw *w, const char *k, const char *open, char close)
{
    key(w, k);
    if (w->depth >= MOCO_JW_MAX_DEPTH) { w->oom = 1; return; }
    w->outer_n[w->depth] = w->n;
    w->close[w->depth++] = close;
    w->n = 0;
    put(w, open, 1);
}

void moco_jw_obj(moco_jw *w, const char *k) { open_(w, k, "{", '}'); }
void moco_jw_arr(moco_jw *w, const char *k) { open_(w, k, "[", ']'); }

void moco_jw_close(moco_jw *w)
{
    if (!w->depth) { w->oom = 1; return; } /* nothing open: a bug in the caller */
    w->depth--;
    put(w, &w->close[w->depth], 1);
    w->n = w->outer_n[w->depth];
}

/* MOCO_JSON_AUDIT=FILE: every text ended here is also appended to FILE, a
 * line each, in one write (the test suite parses them all: tests/check_json.py) */
static void audit(const char *s, size_t n)
{
    const char *path = getenv("MOCO_JSON_AUDIT");
    if (!path || !*path) return;
    int fd = open(path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0644);
    if (fd < 0) return;
    char *line = malloc(n + 1);
    if (line) {
        memcpy(line, s, n);
        line[n] = '\n';
        ssize_t wr = write(fd, line, n + 1);
        (void)wr;
        free(line);
    }
    close(fd);
}

const char *moco_jw_end(moco_jw *w)
{
    while (w->depth > 0) moco_jw_close(w);
    put(w, "}", 1);
    if (w->oom) return NULL;
    audit(w->buf, w->len);
    return w->buf;
}

void moco_jw_free(moco_jw *w)
{
    free(w->buf);
    memset(w, 0, sizeof *w);
}

int moco_jw_line(moco_jw *w, FILE *f)
{
    const char *s = moco_jw_end(w);
    int rc = 0;
    if (!s) {
        rc = moco_err(MOCO_ENOMEM, "out of memory for a JSON line");
    } else if (f) {
        flockfile(f); /* the line whole: another thread's stdio writes to f (the loader's log) come before or after */
        int bad = fputs(s, f) < 0 || fputc('\n', f) < 0 || fflush(f);
        funlockfile(f);
        if (bad) rc = moco_err(MOCO_EIO, "cannot write a JSON line: %s", strerror(errno));
    }
    moco_jw_free(w);
    return rc;
}

void moco_jw_log(moco_jw *w, FILE *f, const char *who, const char *path, int *warned)
{
    if (moco_jw_line(w, f) && !*warned) {
        *warned = 1;
        fprintf(stderr, "%s: %s: %s; later lines of this log may be lost (the run goes on)\n", who, path ? path : "its log",
                moco_errmsg());
    }
}

void moco_json_fput(FILE *f, const char *s)
{
    moco_jw w;
    memset(&w, 0, sizeof w);
    quote(&w, s, strlen(s));
    fputs(w.oom ? "null" : w.buf, f);
    moco_jw_free(&w);
}

void moco_json_quote(const char *s, size_t len, char *out, size_t cap)
{
    if (!cap) return;
    for (;;) { /* too long: quote a shorter prefix (on a character boundary) */
        moco_jw w;
        memset(&w, 0, sizeof w);
        quote(&w, s, len);
        if (!w.oom && w.len < cap) {
            memcpy(out, w.buf, w.len + 1);
            moco_jw_free(&w);
            return;
        }
        size_t over = w.oom ? len / 2 + 1 : w.len - cap + 1;
        moco_jw_free(&w);
        if (cap < 3 || len == 0) { out[0] = 0; return; }
        len = over >= len ? 0 : len - over;
        while (len > 0 && ((unsigned char)s[len] & 0xC0) == 0x80) len--;
    }
}
