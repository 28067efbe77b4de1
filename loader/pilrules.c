/* pilrules.c: files PIL refuses and libvips reads, and Netpbm samples as
 * PIL scales them (see pilrules.h), for `moco mkdb`. Measured against
 * Pillow 9.4 by tests/cli_mkdb_pil.sh; zlib inflates, as it does for PIL,
 * and libvips decodes. */
#include "loader/pilrules.h"
#include "formats/json.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <zlib.h>

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* PngImagePlugin's _safe_zlib_decompress, as CPython's decompressobj()
 * .decompress(data, MAX_TEXT_CHUNK) runs it: inflate (Z_SYNC_FLUSH) into at
 * most PIL_MAX_TEXT_CHUNK bytes of out; "too large" when the stream has not
 * ended and input is left over (its unconsumed_tail). Returns 0 (*olen
 * bytes in out), 1 too large, -1 a zlib error (PIL then drops the chunk). */
static int pil_inflate(const uint8_t *in, size_t n, uint8_t *out, size_t *olen)
{
    z_stream z = {0};
    if (inflateInit(&z) != Z_OK) return -1;
    z.next_in = (Bytef *)in;
    z.avail_in = (uInt)n;
    z.next_out = out;
    z.avail_out = (uInt)PIL_MAX_TEXT_CHUNK;
    int err;
    do {
        err = inflate(&z, Z_SYNC_FLUSH);
    } while (err == Z_OK && z.avail_in > 0 && z.avail_out > 0);
    int r = err == Z_STREAM_END ? 0 : err != Z_OK && err != Z_BUF_ERROR ? -1 : z.avail_in > 0 ? 1 : 0;
    *olen = PIL_MAX_TEXT_CHUNK - z.avail_out;
    inflateEnd(&z);
    return r;
}

/* The number of code points of s if it is UTF-8 (Python's strict decoder), else -1. */
static long utf8_chars(const uint8_t *s, size_t n)
{
    long c = 0;
    for (size_t i = 0; i < n; c++) {
        int k = moco_utf8_len(s + i, n - i);
        if (!k) return -1;
        i += (size_t)k;
    }
    return c;
}

/* "PNG <type> chunk at byte <at>: <what>" (malloc'd); what is a format of one size_t */
static char *why(const char *what, const char *type, size_t at, size_t v)
{
    char tail[256], *m = NULL;
    snprintf(tail, sizeof tail, what, v);
    return asprintf(&m, "PNG %s chunk at byte %zu: %s", type, at, tail) < 0 ? NULL : m;
}

char *pil_png_refusal(const uint8_t *f, size_t n)
{
    uint8_t *buf = NULL;
    size_t memory = 0, p = 8;
    char *m = NULL;
    while (!m && n - p >= 12) {
        size_t len = be32(f + p), at = p;
        const uint8_t *d = f + p + 8;
        char type[5] = {0};
        memcpy(type, f + p + 4, 4);
        if (len > n - p - 12) break;
        p += 12 + len;
        if (!strcmp(type, "IEND")) break;
        int itxt = !strcmp(type, "iTXt"), ztxt = !strcmp(type, "zTXt"), iccp = !strcmp(type, "iCCP");
        if (!strcmp(type, "tEXt")) { /* key\0text, counted when the key is not empty */
            const uint8_t *nul = memchr(d, 0, len);
            size_t kl = nul ? (size_t)(nul - d) : len;
            if (kl) memory += nul ? len - kl - 1 : 0;
        } else if (iccp || ztxt || itxt) {
            const uint8_t *nul = memchr(d, 0, len), *z = NULL;
            size_t kl = nul ? (size_t)(nul - d) : len, zl = 0;
            int count = kl > 0; /* text counted in PIL's text memory */
            if (iccp) { /* PIL reads the method at the separator's place: without one, the last byte */
                if (!nul) {
                    m = why("no name separator: PIL refuses it (Unknown compression method)", type, at, 0);
                    break;
                }
                z = nul + 2 <= d + len ? nul + 2 : d + len, zl = (size_t)(d + len - z), count = 0;
            } else if (ztxt) {
                if (nul && kl + 1 < len && d[kl + 1] != 0) {
                    m = why("compression method %zu: PIL refuses it (Unknown compression method)", type, at, d[kl + 1]);
                    break;
                }
                z = nul && kl + 2 <= len ? d + kl + 2 : d + len, zl = (size_t)(d + len - z);
            } else { /* iTXt: key\0 flag method lang\0 translated\0 text */
                if (!nul || len - kl - 1 < 2) continue;
                int cf = d[kl + 1], cm = d[kl + 2];
                const uint8_t *lang = d + kl + 3, *e = d + len;
                const uint8_t *n1 = memchr(lang, 0, (size_t)(e - lang));
                const uint8_t *n2 = n1 ? memchr(n1 + 1, 0, (size_t)(e - n1 - 1)) : NULL;
                if (!n2 || (cf && cm)) continue;
                if (utf8_chars(lang, (size_t)(n1 - lang)) < 0 || utf8_chars(n1 + 1, (size_t)(n2 - n1 - 1)) < 0) count = 0;
                z = n2 + 1, zl = (size_t)(e - z);
                if (!cf) { /* stored as it is */
                    long c = count ? utf8_chars(z, zl) : -1;
                    if (c >= 0) memory += (size_t)c;
                    z = NULL;
                }
            }
            if (z) {
                size_t ol = 0;
                if (!buf && !(buf = malloc(PIL_MAX_TEXT_CHUNK))) break;
                int r = pil_inflate(z, zl, buf, &ol);
                if (r == 1) {
                    m = why("inflates past %zu bytes: PIL refuses it (Decompressed Data Too Large)", type, at, PIL_MAX_TEXT_CHUNK);
                    break;
                }
                if (r < 0) ol = 0, count = count && ztxt; /* PIL: a zTXt's text is then empty, an iTXt dropped */
                if (count && itxt) {
                    long c = utf8_chars(buf, ol);
                    count = c >= 0, ol = c >= 0 ? (size_t)c : 0;
                }
                if (count) memory += ol;
            }
        }
        if (memory > PIL_MAX_TEXT_MEMORY)
            m = why("brings its text chunks past %zu bytes: PIL refuses it (Too much memory used in text chunks)", type, at,
                    PIL_MAX_TEXT_MEMORY);
    }
    free(buf);
    return m;
}

static char *vips_why(const char *what)
{
    char *e = vips_error_buffer_copy(), *m = NULL;
    size_t l = e ? strlen(e) : 0;
    while (l && (e[l - 1] == '\n' || e[l - 1] == ' ')) e[--l] = 0;
    if (asprintf(&m, "%s%s%s", what, l ? ": " : "", l ? e : "") < 0) m = NULL;
    g_free(e);
    return m;
}

/* round(q) as Python rounds a float: half to even (the default rounding mode) */
static double py_round(double q) { return nearbyint(q); }

int pil_pnm_load(const uint8_t *file, size_t n, VipsImage **out, char **why)
{
    char kind = file[1];
    int plain = kind >= '1' && kind <= '3', bitonal = kind == '1' || kind == '4';
    VipsSource *src = vips_source_new_from_memory(file, n);
    VipsImage *raw = NULL, *lut = NULL;
    int maxval = 0, rc = -1;
    *out = NULL;
    if (!src) return *why = vips_why("not a readable image"), -1;
    if (vips_ppmload_source(src, &raw, "fail_on", VIPS_FAIL_ON_ERROR, NULL)) {
        *why = vips_why("not a readable image");
        goto done;
    }
    if (bitonal) { /* 0 and 255 already, as PIL's mode "1" converts */
        *out = raw, raw = NULL, rc = 0;
        goto done;
    }
    int bands = vips_image_get_bands(raw), grey = bands == 1;
    VipsBandFormat fmt = vips_image_get_format(raw);
    if (vips_image_get_int(raw, "ppm-max-value", &maxval) || maxval < 1 || maxval > 65535 || (bands != 1 && bands != 3) ||
        (fmt != VIPS_FORMAT_UCHAR && fmt != VIPS_FORMAT_USHORT)) {
        *why = vips_why("a PGM or PPM libvips reads otherwise than as 8- or 16-bit samples under a maxval of 1..65535");
        goto done;
    }
    if (plain) { /* PIL's plain decoder: "Channel value too large for this mode" */
        double mx = 0;
        if (vips_max(raw, &mx, NULL)) { *why = vips_why("corrupt or truncated image data"); goto done; }
        if (mx > maxval) {
            if (asprintf(why, "a sample %.0f over the maxval %d: PIL refuses it (Channel value too large)", mx, maxval) < 0)
                *why = strdup("a sample over the maxval: PIL refuses it");
            goto done;
        }
    }
    size_t entries = fmt == VIPS_FORMAT_UCHAR ? 256 : 65536;
    uint8_t *t = malloc(entries);
    if (!t) { *why = strdup("out of memory"); goto done; }
    /* PIL: mode "I" (a PGM over 255) holds 0..65535, clipped by convert(); else 0..255 */
    double top = grey && maxval > 255 ? 65535.0 : 255.0;
    for (size_t v = 0; v < entries; v++) {
        double q = py_round((double)v / (double)maxval * top);
        t[v] = (uint8_t)(q > 255.0 ? 255.0 : q);
    }
    lut = vips_image_new_from_memory_copy(t, entries, (int)entries, 1, 1, VIPS_FORMAT_UCHAR);
    free(t);
    VipsImage *mapped = NULL;
    if (!lut || vips_maplut(raw, &mapped, lut, NULL) ||
        vips_copy(mapped, out, "interpretation", grey ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB, NULL)) {
        *why = vips_why("cannot scale the samples as PIL does");
        if (mapped) g_object_unref(mapped);
        goto done;
    }
    g_object_unref(mapped);
    rc = 0;
done:
    if (lut) g_object_unref(lut);
    if (raw) g_object_unref(raw);
    g_object_unref(src);
    return rc;
}
