/* jsonw.h: the one JSON writer of the project: every JSON line a moco
 * process prints or logs is built with it, so that every line parses
 * (RFC 8259), whatever bytes a path, a peer or a library message holds.
 *
 *   moco_jw w;
 *   moco_jw_begin(&w);
 *   moco_jw_str(&w, "event", "failed");
 *   moco_jw_u64(&w, "index", i);
 *   moco_jw_str(&w, "reason", vips_error_buffer());   (newlines, quotes: escaped)
 *   moco_jw_line(&w, log);                            ("}\n", written, flushed, freed)
 *
 * Strings are escaped ("\"", "\\", control characters as \u00XX) and
 * invalid UTF-8 becomes U+FFFD. Non-finite numbers are written as null.
 * The builder grows its buffer; on allocation failure the line is dropped
 * and moco_jw_line returns MOCO_ENOMEM (a log line is not worth a crash). */
#ifndef MOCO_JSONW_H
#define MOCO_JSONW_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#define MOCO_JW_MAX_DEPTH 16 /* objects and arrays open at once, the outer object included */

typedef struct {
    char *buf;
    size_t len, cap;
    int n;    /* members so far in the innermost open value (a comma before the next) */
    int oom;  /* an allocation failed (or nesting too deep): the line is lost */
    int depth;                      /* objects and arrays open inside the outer object */
    int outer_n[MOCO_JW_MAX_DEPTH]; /* n of each enclosing value */
    char close[MOCO_JW_MAX_DEPTH];  /* '}' or ']' for each open value */
} moco_jw;

void moco_jw_begin(moco_jw *w);
void moco_jw_str(moco_jw *w, const char *key, const char *val);              /* NULL: null */
void moco_jw_strn(moco_jw *w, const char *key, const char *val, size_t len);
void moco_jw_i64(moco_jw *w, const char *key, int64_t v);
void moco_jw_u64(moco_jw *w, const char *key, uint64_t v);
void moco_jw_num(moco_jw *w, const char *key, double v, int decimals);     /* fixed-point; NaN, inf: null */
/* printf's %g with digits significant digits (0: 6, as plain %g): 0.03, 1e-05,
 * 4096; NaN, inf: null. */
void moco_jw_g(moco_jw *w, const char *key, double v, int digits);
void moco_jw_bool(moco_jw *w, const char *key, int v);
void moco_jw_null(moco_jw *w, const char *key);
/* A value that is already JSON (a nested object or array built by another
 * moco_jw, or a literal); NULL or "" writes null. */
void moco_jw_raw(moco_jw *w, const char *key, const char *json);
/* JSON text from elsewhere (a file another process wrote): written as is
 * when it is exactly one valid JSON value, else null. */
void moco_jw_json(moco_jw *w, const char *key, const char *json);

/* Nested values: moco_jw_obj / moco_jw_arr open an object or an array as the
 * member key, moco_jw_close closes the innermost one. Inside an array every
 * value is an element: pass key NULL (to any moco_jw_* call). moco_jw_end
 * closes whatever is still open.
 *
 *   moco_jw_arr(&w, "per_epoch");
 *   for (...) { moco_jw_obj(&w, NULL); moco_jw_u64(&w, "epoch", e); moco_jw_close(&w); }
 *   moco_jw_close(&w);                                        "per_epoch":[{"epoch":0},...] */
void moco_jw_obj(moco_jw *w, const char *key);
void moco_jw_arr(moco_jw *w, const char *key);
void moco_jw_close(moco_jw *w);

/* Close the object; the text (NUL-terminated) stays owned by w until
 * moco_jw_free. NULL if an allocation failed. With MOCO_JSON_AUDIT=FILE in
 * the environment, the text is also appended to FILE as one line (the test
 * suite sets it and parses every line: tests/check_json.py). */
const char *moco_jw_end(moco_jw *w);
void moco_jw_free(moco_jw *w);

/* End, write the line and a newline to f, flush, free. 0, MOCO_ENOMEM or MOCO_EIO.
 * f stays locked (flockfile) for the whole line: lines that threads write
 * to one FILE (the loader's log and its ZAP handler's) do not mix. */
int moco_jw_line(moco_jw *w, FILE *f);

/* A line of a process's own log (the loader's, a worker's, the sink's
 * statistics): moco_jw_line, and a failed write (a full disk) said once on
 * stderr, naming who and path, through *warned; the process goes on: its
 * log is for people, and the stream is not held up by it. */
void moco_jw_log(moco_jw *w, FILE *f, const char *who, const char *path, int *warned);

/* Write s (NUL-terminated) to f as a JSON string, quotes included. */
void moco_json_fput(FILE *f, const char *s);

/* Escape s (len bytes) as a JSON string, quotes included, into a buffer of
 * cap bytes (NUL-terminated, truncated at a character boundary if needed). */
void moco_json_quote(const char *s, size_t len, char *out, size_t cap);

#endif
