/* safetensors.c: the reader and writer of safetensors.h. The reader copies
 * the file, tokenises the header with formats/json.c, validates every entry
 * and the tiling of the data area before it hands out anything. */
#include "formats/safetensors.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

#include "formats/errors.h"
#include "formats/json.h"
#include "formats/replace.h"

struct moco_st {
    uint8_t *buf;      /* the whole file */
    size_t len;
    size_t data_off;   /* 8 + header length */
    int n;
    moco_st_tensor *t;
};

static const struct { const char *name; size_t size; } dtypes[MOCO_ST_NDTYPES] = {
    {"F32", 4}, {"F64", 8}, {"F16", 2}, {"BF16", 2}, {"I64", 8}, {"I32", 4},
    {"I16", 2}, {"I8", 1}, {"U8", 1}, {"BOOL", 1}, {"U16", 2}, {"U32", 4}, {"U64", 8},
};

const char *moco_st_dtype_name(moco_st_dtype d) { return (unsigned)d < MOCO_ST_NDTYPES ? dtypes[d].name : "?"; }
size_t moco_st_dtype_size(moco_st_dtype d) { return (unsigned)d < MOCO_ST_NDTYPES ? dtypes[d].size : 0; }

static int by_begin(const void *a, const void *b)
{
    const moco_st_tensor *x = *(moco_st_tensor *const *)a, *y = *(moco_st_tensor *const *)b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

static int by_name(const void *a, const void *b)
{
    return strcmp((*(moco_st_tensor *const *)a)->name, (*(moco_st_tensor *const *)b)->name);
}

/* Validate one header entry (key token k, value token v) into *t. */
static int parse_entry(const char *h, const moco_json_tok *tk, int k, int v, const char *what, uint64_t data_len, moco_st_tensor *t)
{
    if (moco_json_str(h, &tk[k], t->name, sizeof t->name))
        return moco_err(MOCO_ECORRUPT, "%s: a tensor name is longer than %d bytes or malformed", what, MOCO_ST_MAX_NAME);
    if (!t->name[0]) return moco_err(MOCO_ECORRUPT, "%s: a tensor has an empty name", what);
    const char *nm = t->name;
    if (tk[v].type != MOCO_JSON_OBJ) return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': entry is not an object", what, nm);
    if (tk[v].size != 3) return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': entry must have exactly dtype, shape, data_offsets", what, nm);
    int d = moco_json_get(h, tk, v, "dtype"), s = moco_json_get(h, tk, v, "shape"), o = moco_json_get(h, tk, v, "data_offsets");
    if (d < 0 || s < 0 || o < 0) return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': dtype, shape or data_offsets missing", what, nm);
    int found = 0;
    for (int i = 0; i < MOCO_ST_NDTYPES; i++)
        if (moco_json_streq(h, &tk[d], dtypes[i].name)) t->dtype = (moco_st_dtype)i, found = 1;
    if (!found) return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': unknown dtype", what, nm);
    if (tk[s].type != MOCO_JSON_ARR || tk[s].size > MOCO_ST_MAX_DIMS)
        return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': shape must be an array of at most %d integers", what, nm, MOCO_ST_MAX_DIMS);
    t->ndim = tk[s].size;
    uint64_t count = 1;
    int overflow = 0;
    for (int i = 0; i < t->ndim; i++) {
        uint64_t x;
        if (moco_json_u64(h, &tk[s + 1 + i], &x) || x > (uint64_t)INT64_MAX)
            return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': shape[%d] is not a non-negative integer", what, nm, i);
        t->shape[i] = (int64_t)x;
        if (x && count > UINT64_MAX / x) overflow = 1;
        count *= x;
    }
    size_t es = dtypes[t->dtype].size;
    if (overflow || count > UINT64_MAX / es) return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': shape too large", what, nm);
    if (tk[o].type != MOCO_JSON_ARR || tk[o].size != 2 || moco_json_u64(h, &tk[o + 1], &t->begin) || moco_json_u64(h, &tk[o + 2], &t->end))
        return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': data_offsets must be [begin, end]", what, nm);
    if (t->begin > t->end || t->end > data_len)
        return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': data_offsets [%llu, %llu] outside the %llu data bytes", what, nm,
                        (unsigned long long)t->begin, (unsigned long long)t->end, (unsigned long long)data_len);
    if (t->end - t->begin != count * es)
        return moco_err(MOCO_ECORRUPT, "%s: tensor '%s': %llu bytes for %llu %s elements", what, nm,
                        (unsigned long long)(t->end - t->begin), (unsigned long long)count, dtypes[t->dtype].name);
    return 0;
}

int moco_st_header_len(const uint8_t *b, size_t n, uint64_t file_len, const char *what, uint64_t *hl)
{
    uint64_t h = 0;
    for (int i = 7; i >= 0; i--) h = h << 8 | b[i];
    *hl = h;
    if (h < 2 || h > MOCO_ST_MAX_HEADER || (n > 8 && b[8] != '{')) /* another kind of file: an .npy, a data.mdb */
        return moco_err(MOCO_ECORRUPT, "%s: not a safetensors checkpoint (its first 8 bytes give a header length of %llu, "
                        "and no JSON header follows)", what, (unsigned long long)h);
    if (h > file_len - 8)
        return moco_err(MOCO_ECORRUPT, "%s: header length %llu does not fit the file (%llu bytes): truncated?", what,
                        (unsigned long long)h, (unsigned long long)file_len);
    return 0;
}

static int parse_owned(uint8_t *buf, size_t len, const char *what, moco_st **out)
{
    int rc = MOCO_ECORRUPT;
    moco_json_tok *tk = NULL;
    moco_st_tensor **order = NULL;
    moco_st *st = calloc(1, sizeof *st);
    if (!st) {
        free(buf);
        return moco_err(MOCO_ENOMEM, "%s: out of memory", what);
    }
    st->buf = buf, st->len = len;
    if (len < 8) {
        rc = moco_err(MOCO_ECORRUPT, "%s: truncated: %zu bytes, no header length", what, len);
        goto fail;
    }
    uint64_t hl = 0;
    if ((rc = moco_st_header_len(buf, len, len, what, &hl))) goto fail;
    const char *h = (const char *)buf + 8;
    /* the spec allows trailing spaces as padding; JSON whitespace covers it */
    int maxtok = (int)(hl / 2 + 2), nt;
    tk = malloc(sizeof *tk * (size_t)maxtok);
    if (!tk) {
        rc = moco_err(MOCO_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    if ((rc = moco_json_parse(h, hl, what, tk, maxtok, &nt))) goto fail;
    rc = MOCO_ECORRUPT;
    if (tk[0].type != MOCO_JSON_OBJ) {
        rc = moco_err(MOCO_ECORRUPT, "%s: header is not a JSON object", what);
        goto fail;
    }
    st->data_off = 8 + hl;
    uint64_t data_len = len - st->data_off;
    st->t = calloc((size_t)tk[0].size + 1, sizeof *st->t);
    order = calloc((size_t)tk[0].size + 1, sizeof *order);
    if (!st->t || !order) {
        rc = moco_err(MOCO_ENOMEM, "%s: out of memory", what);
        goto fail;
    }
    int k = 1, nmeta = 0;
    for (int p = 0; p < tk[0].size; p++) {
        int v = k + 1;
        if (moco_json_streq(h, &tk[k], "__metadata__")) {
            if (nmeta++ || tk[v].type != MOCO_JSON_OBJ) {
                rc = moco_err(MOCO_ECORRUPT, "%s: __metadata__ repeated or not an object", what);
                goto fail;
            }
            for (int q = v + 2; q < tk[v].end; q = tk[q].end + 1)
                if (tk[q].type != MOCO_JSON_STR) {
                    rc = moco_err(MOCO_ECORRUPT, "%s: __metadata__ values must be strings", what);
                    goto fail;
                }
        } else {
            moco_st_tensor *t = &st->t[st->n];
            if ((rc = parse_entry(h, tk, k, v, what, data_len, t))) goto fail;
            order[st->n++] = t;
        }
        k = tk[v].end;
    }
    /* unique names */
    qsort(order, (size_t)st->n, sizeof *order, by_name);
    for (int i = 1; i < st->n; i++)
        if (!strcmp(order[i - 1]->name, order[i]->name)) {
            rc = moco_err(MOCO_ECORRUPT, "%s: tensor '%s' appears twice", what, order[i]->name);
            goto fail;
        }
    /* the tensors tile [0, data_len) */
    qsort(order, (size_t)st->n, sizeof *order, by_begin);
    uint64_t at = 0;
    for (int i = 0; i < st->n; i++) {
        if (order[i]->begin != at) {
            rc = moco_err(MOCO_ECORRUPT, "%s: tensor '%s' starts at byte %llu of the data, expected %llu (overlap or hole)", what,
                          order[i]->name, (unsigned long long)order[i]->begin, (unsigned long long)at);
            goto fail;
        }
        at = order[i]->end;
    }
    if (at != data_len) {
        rc = moco_err(MOCO_ECORRUPT, "%s: %llu data bytes but the tensors cover %llu (truncated or trailing bytes)", what,
                      (unsigned long long)data_len, (unsigned long long)at);
        goto fail;
    }
    free(tk);
    free(order);
    *out = st;
    return 0;
fail:
    free(tk);
    free(order);
    moco_st_destroy(&st);
    return rc;
}

int moco_st_parse(const void *buf, size_t len, const char *what, moco_st **out)
{
    uint8_t *copy = malloc(len ? len : 1);
    if (!copy) return moco_err(MOCO_ENOMEM, "%s: out of memory", what);
    if (len) memcpy(copy, buf, len);
    return parse_owned(copy, len, what, out);
}

int moco_st_open(const char *path, moco_st **out)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK); /* a FIFO must not block the open: refused below */
    if (fd < 0) return moco_err(MOCO_EIO, "open %s: %s", path, strerror(errno));
    struct stat sb;
    if (fstat(fd, &sb) || !S_ISREG(sb.st_mode)) {
        close(fd);
        return moco_err(MOCO_EIO, "%s: not a regular file", path);
    }
    size_t len = (size_t)sb.st_size, got = 0;
    uint8_t *buf = malloc(len ? len : 1);
    if (!buf) {
        close(fd);
        return moco_err(MOCO_ENOMEM, "%s: out of memory for %zu bytes", path, len);
    }
    while (got < len) {
        ssize_t r = read(fd, buf + got, len - got);
        if (r < 0 && errno == EINTR) continue;
        if (r <= 0) {
            int e = errno;
            free(buf);
            close(fd);
            return moco_err(MOCO_EIO, "read %s: %s", path, r ? strerror(e) : "file shrank while reading");
        }
        got += (size_t)r;
    }
    close(fd);
    return parse_owned(buf, len, path, out);
}

void moco_st_destroy(moco_st **p)
{
    if (!p || !*p) return;
    free((*p)->buf);
    free((*p)->t);
    free(*p);
    *p = NULL;
}

int moco_st_count(const moco_st *st) { return st->n; }
const moco_st_tensor *moco_st_at(const moco_st *st, int i) { return i >= 0 && i < st->n ? &st->t[i] : NULL; }

const moco_st_tensor *moco_st_find(const moco_st *st, const char *name)
{
    for (int i = 0; i < st->n; i++)
        if (!strcmp(st->t[i].name, name)) return &st->t[i];
    return NULL;
}

const void *moco_st_data(const moco_st *st, const moco_st_tensor *t) { return st->buf + st->data_off + t->begin; }

static void fmt_shape(char *b, size_t cap, int ndim, const int64_t *s)
{
    size_t n = (size_t)snprintf(b, cap, "[");
    for (int i = 0; i < ndim && n < cap; i++) n += (size_t)snprintf(b + n, cap - n, i ? ", %lld" : "%lld", (long long)s[i]);
    if (n < cap) snprintf(b + n, cap - n, "]");
}

int moco_st_read(const moco_st *st, const char *name, moco_st_dtype dtype, int ndim, const int64_t *shape, void *dst)
{
    const moco_st_tensor *t = moco_st_find(st, name);
    if (!t) return moco_err(MOCO_ENOTFOUND, "tensor '%s' is missing from the file", name);
    if (t->dtype != dtype)
        return moco_err(MOCO_EFORMAT, "tensor '%s' is %s, expected %s", name, dtypes[t->dtype].name, moco_st_dtype_name(dtype));
    int same = t->ndim == ndim;
    for (int i = 0; same && i < ndim; i++) same = t->shape[i] == shape[i];
    if (!same) {
        char a[160], b[160];
        fmt_shape(a, sizeof a, t->ndim, t->shape);
        fmt_shape(b, sizeof b, ndim, shape);
        return moco_err(MOCO_EINVAL, "tensor '%s' has shape %s, expected %s", name, a, b);
    }
    memcpy(dst, moco_st_data(st, t), t->end - t->begin);
    return 0;
}

/* Append printf output to a growing buffer. */
typedef struct { char *p; size_t n, cap; int oom; } sbuf;
static void sb_put(sbuf *b, const char *s, size_t n)
{
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t c = (b->cap ? b->cap * 2 : 4096) + n;
        char *q = realloc(b->p, c);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q, b->cap = c;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
}
static void sb_str(sbuf *b, const char *s)
{
    sb_put(b, "\"", 1);
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        char e[8];
        if (*p == '"' || *p == '\\') e[0] = '\\', e[1] = (char)*p, sb_put(b, e, 2);
        else if (*p < 0x20) snprintf(e, sizeof e, "\\u%04x", *p), sb_put(b, e, 6);
        else sb_put(b, (const char *)p, 1);
    }
    sb_put(b, "\"", 1);
}

const char MOCO_ST_HEADER_CRC[] = "00000000";

uint32_t moco_st_header_crc(const char *h, size_t hl, size_t at)
{
    static const char zeros[8] = "00000000";
    uLong c = crc32_z(0L, Z_NULL, 0);
    c = crc32_z(c, (const Bytef *)h, at);
    c = crc32_z(c, (const Bytef *)zeros, 8);
    c = crc32_z(c, (const Bytef *)h + at + 8, hl - at - 8);
    return (uint32_t)c;
}

int moco_st_write(const char *path, const moco_st_entry *e, int n, const char *const *meta, int nmeta)
{
    sbuf h = {0};
    char num[96];
    uint64_t off = 0;
    size_t self_crc = 0; /* where the header's own CRC goes (0: none) */
    sb_put(&h, "{", 1);
    if (nmeta > 0) {
        sb_str(&h, "__metadata__");
        sb_put(&h, ":{", 2);
        for (int i = 0; i < nmeta; i++) {
            if (i) sb_put(&h, ",", 1);
            sb_str(&h, meta[2 * i]);
            sb_put(&h, ":", 1);
            if (meta[2 * i + 1] == MOCO_ST_HEADER_CRC && !self_crc) self_crc = h.n + 1; /* after the quote */
            sb_str(&h, meta[2 * i + 1]);
        }
        sb_put(&h, "}", 1);
    }
    for (int i = 0; i < n; i++) {
        if ((unsigned)e[i].dtype >= MOCO_ST_NDTYPES || e[i].ndim < 0 || e[i].ndim > MOCO_ST_MAX_DIMS || !e[i].name ||
            !e[i].name[0] || strlen(e[i].name) > MOCO_ST_MAX_NAME) {
            free(h.p);
            return moco_err(MOCO_EINVAL, "%s: tensor '%s': bad name, dtype or rank", path, e[i].name ? e[i].name : "(null)");
        }
        uint64_t bytes = dtypes[e[i].dtype].size;
        if (i || nmeta > 0) sb_put(&h, ",", 1);
        sb_str(&h, e[i].name);
        int k = snprintf(num, sizeof num, ":{\"dtype\":\"%s\",\"shape\":[", dtypes[e[i].dtype].name);
        sb_put(&h, num, (size_t)k);
        for (int d = 0; d < e[i].ndim; d++) {
            if (e[i].shape[d] < 0) {
                free(h.p);
                return moco_err(MOCO_EINVAL, "%s: tensor '%s': negative dimension", path, e[i].name);
            }
            bytes *= (uint64_t)e[i].shape[d];
            k = snprintf(num, sizeof num, d ? ",%lld" : "%lld", (long long)e[i].shape[d]);
            sb_put(&h, num, (size_t)k);
        }
        k = snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off, (unsigned long long)(off + bytes));
        sb_put(&h, num, (size_t)k);
        off += bytes;
    }
    sb_put(&h, "}", 1);
    while (!h.oom && (h.n + 8) % 8) sb_put(&h, " ", 1);
    if (h.oom) {
        free(h.p);
        return moco_err(MOCO_ENOMEM, "%s: out of memory for the header", path);
    }
    if (self_crc) {
        char hex[9];
        snprintf(hex, sizeof hex, "%08x", (unsigned)moco_st_header_crc(h.p, h.n, self_crc));
        memcpy(h.p + self_crc, hex, 8);
    }
    char target[4096], tmp[4200];
    int trc = moco_replace_target(path, target, sizeof target); /* never renamed onto /dev/null or a directory */
    if (trc) {
        free(h.p);
        return trc;
    }
    snprintf(tmp, sizeof tmp, "%s.tmp", target);
    FILE *f = moco_create_tmp(tmp, path); /* never through a link planted at the temporary name */
    if (!f) {
        free(h.p);
        return MOCO_EIO;
    }
    uint8_t hl[8];
    for (int i = 0; i < 8; i++) hl[i] = (uint8_t)((uint64_t)h.n >> (8 * i));
    int ok = fwrite(hl, 1, 8, f) == 8 && fwrite(h.p, 1, h.n, f) == h.n;
    free(h.p);
    for (int i = 0; ok && i < n; i++) {
        size_t bytes = dtypes[e[i].dtype].size;
        for (int d = 0; d < e[i].ndim; d++) bytes *= (size_t)e[i].shape[d];
        ok = bytes == 0 || fwrite(e[i].data, 1, bytes, f) == bytes;
    }
    if (!ok) {
        int e2 = errno ? errno : EIO;
        fclose(f);
        unlink(tmp);
        return moco_err(MOCO_EIO, "write %s: %s", path, strerror(e2));
    }
    /* ferror, fflush, fsync, rename, and the directory's fsync (the rename durable) */
    return moco_commit_tmp(f, tmp, target, path);
}
