/* mkdb.c: `moco mkdb SRC OUT`: pack a dataset into a dataset LMDB.
 *
 * How it works: the source is enumerated (loader/sources.c) into items, in
 * a seeded random order with --shuffle. A pool of threads prepares items in
 * parallel (read the file, check the dimensions its header claims against
 * --max-pixels before decoding anything, decode it fully with TurboJPEG or
 * libvips to prove it is a sane image, re-encode it when it must be:
 * --max-side, formats other than JPEG/PNG, non-8-bit pixels, CMYK (made
 * RGB byte for byte as PIL's convert("RGB"), stored as PNG), a JPEG whose
 * header has a recoverable warning (stored as PNG); only loaders
 * whose pixels match PIL's are accepted, a PNG PIL refuses (an iCCP or
 * text chunk past its limits: loader/pilrules.c) is refused, a TIFF's orientation is applied
 * as PIL applies it, a GIF's transparency as PIL's convert("RGB")
 * gives it, and a PGM's or PPM's samples as PIL scales them), into a
 * bounded window of result slots. The
 * main thread consumes the slots in item order, gives the valid records
 * consecutive indices, and commits them in batches through loader/dbwriter.c,
 * which writes to a temporary directory and renames it to OUT at the end.
 *
 * Promises: the output is complete or absent; the indices are dense; every
 * rejected input is named on stderr and counted; the run fails only when
 * nothing valid was found, or on the first bad input with --strict; memory
 * is bounded by the window, not by the dataset size; SIGINT or SIGTERM
 * ends it within about a second (status 1, nothing at OUT), even with a
 * thread stuck in a read that never returns (a hung file system). */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>
#include <turbojpeg.h>
#include <vips/vips.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/pipeline.h"
#include "formats/record.h"
#include "formats/replace.h"
#include "formats/rng.h"
#include "loader/cmd.h"
#include "loader/dbwriter.h"
#include "loader/pilrules.h"
#include "loader/sources.h"

#define WINDOW 2048 /* items prepared ahead of the writer */

typedef struct {
    uint8_t *rec; /* whole record, or NULL when skipped */
    size_t len;
    char *why;    /* reason for skipping (malloc'd) */
    int ready;
} slot;

typedef struct {
    const mk_source *src;
    const size_t *order; /* item order to write in */
    size_t n;
    long max_side;
    uint64_t max_pixels; /* 0: no limit */
    slot slots[WINDOW];
    size_t next, consumed; /* claimed by workers / consumed by the writer */
    int stop;
    pthread_mutex_t mu;
    pthread_cond_t ready_cv, space_cv;
} job;

static volatile sig_atomic_t interrupted;

/* libvips also logs decode problems as GLib warnings; we report each bad
 * input once, with its name, so drop those. */
static void quiet_log(const gchar *dom, GLogLevelFlags lvl, const gchar *msg, gpointer u)
{
    (void)dom; (void)lvl; (void)msg; (void)u;
}
static void on_signal(int sig) { (void)sig; interrupted = 1; }

/* Wait on cv for at most 100 ms: a signal handler cannot signal a condition
 * variable, and glibc resumes the wait after it, so a writer waiting for a
 * worker stuck in a read (a hung file system) never saw the interrupt. */
static void wait_tick(pthread_cond_t *cv, pthread_mutex_t *mu)
{
    struct timespec t;
    clock_gettime(CLOCK_REALTIME, &t);
    t.tv_nsec += 100000000L;
    if (t.tv_nsec >= 1000000000L) t.tv_sec++, t.tv_nsec -= 1000000000L;
    pthread_cond_timedwait(cv, mu, &t);
}

static char *vips_reason(const char *what)
{
    char *e = vips_error_buffer_copy();
    char *msg = NULL;
    size_t l = e ? strlen(e) : 0;
    while (l && (e[l - 1] == '\n' || e[l - 1] == ' ')) e[--l] = 0;
    if (asprintf(&msg, "%s%s%s", what, e && *e ? ": " : "", e ? e : "") < 0) msg = NULL;
    g_free(e);
    return msg;
}

static char *reason(const char *fmt, const char *a)
{
    char *m = NULL;
    if (asprintf(&m, fmt, a) < 0) m = NULL;
    return m;
}

/* NULL if a w x h image is within --max-pixels, else the reason to skip it
 * (a decompression bomb: a small file whose header claims a huge image). */
static char *too_many_pixels(int w, int h, uint64_t max_pixels)
{
    char *m = NULL;
    uint64_t px = (uint64_t)w * (uint64_t)h;
    if (!max_pixels || px <= max_pixels) return NULL;
    if (asprintf(&m, "%dx%d = %" PRIu64 " pixels, over --max-pixels %" PRIu64 " (not decoded)", w, h, px, max_pixels) < 0)
        m = NULL;
    return m ? m : reason("%s", "too many pixels");
}

/* Does a libjpeg warning mean missing data (a truncated file or segment)? */
static int truncation_warning(const char *msg) { return strcasestr(msg, "premature end") != NULL; }

/* Did tjDecompressHeader3, which failed, read the whole header with only a
 * recoverable warning (junk bytes before a marker, say)? TurboJPEG sets the
 * size only once libjpeg has read the header to its end: an error stops it
 * before (and then tjGetErrorCode may still say TJERR_WARNING, when a
 * warning came first: a file cut in its header warns "premature end" and
 * fails on the marker the cut left). The message is the first warning's
 * only; a truncation after it fails the header or comes later, in the data,
 * where libvips (fail_on error) refuses it. */
static int header_warning_only(tjhandle tj, const char *msg, int w, int h)
{
    return w >= 1 && h >= 1 && tjGetErrorCode(tj) == TJERR_WARNING && !truncation_warning(msg);
}

/* 1 if a JPEG's header reads only with a recoverable warning: it is then
 * stored as a PNG of its pixels (check_image), so that no decoder
 * downstream meets the warning (TurboJPEG refuses such a header: the
 * workers and the evaluation reader would fall back to libvips, which logs
 * the warning at every decode). */
static int jpeg_header_warns(tjhandle tj, const uint8_t *file, size_t flen)
{
    int w = 0, h = 0, sub, cs;
    if (!tj || flen > 0xFFFFFFFFu || tjDecompressHeader3(tj, file, (unsigned long)flen, &w, &h, &sub, &cs) == 0) return 0;
    return header_warning_only(tj, tjGetErrorStr2(tj), w, h);
}

static int read_file(const char *path, uint8_t **buf, size_t *len, char **why)
{
    /* never blocking in the open: a file that became a FIFO since the folder was listed hung mkdb for good */
    FILE *f = moco_fopen_regular(path);
    if (!f) return *why = errno == EINVAL ? reason("%s", "not a regular file (it changed since the folder was listed)")
                                          : reason("cannot open: %s", strerror(errno)), -1;
    size_t cap = 1 << 16, n = 0;
    uint8_t *b = malloc(cap);
    while (b) {
        if (n == cap) {
            uint8_t *nb = cap >= MOCO_MAX_PAYLOAD ? NULL : realloc(b, cap * 2);
            if (!nb) { free(b); b = NULL; break; }
            b = nb;
            cap *= 2;
        }
        size_t r = fread(b + n, 1, cap - n, f);
        n += r;
        if (r == 0) break;
    }
    int err = ferror(f);
    fclose(f);
    if (!b) return *why = reason("%s", "too large or out of memory"), -1;
    if (err) { free(b); return *why = reason("%s", "read error"), -1; }
    *buf = b;
    *len = n;
    return 0;
}

/* CMYK to RGB exactly as PIL's convert("RGB") (torchvision's loader), not
 * through a colour profile: Pillow's cmyk2rgb (Convert.c), with its integer
 * rounding MULDIV255, on the inks as PIL reads them: a JPEG's stored values
 * inverted (Pillow's raw mode "CMYK;I", Adobe marker or not), a TIFF's as
 * stored. Checked byte for byte against Pillow 9.4 in tests/cli_datasets.sh. */
static uint8_t pil_ink(unsigned ink, unsigned nk)
{
    unsigned t = ink * nk + 128;
    return (uint8_t)(nk - (((t >> 8) + t) >> 8));
}

static void pil_cmyk_to_rgb(const uint8_t *cmyk, uint8_t *rgb, size_t npix, int inverted)
{
    unsigned inv = inverted ? 255 : 0;
    for (size_t i = 0; i < npix; i++, cmyk += 4, rgb += 3) {
        unsigned nk = 255 - (cmyk[3] ^ inv);
        for (int k = 0; k < 3; k++) rgb[k] = pil_ink(cmyk[k] ^ inv, nk);
    }
}

static void release_px(VipsImage *im, gpointer px)
{
    (void)im;
    g_free(px); /* malloc'd or g_malloc'd: the same allocator (GLib >= 2.46) */
}

/* An 8-bit RGB libvips image made from a w x h CMYK buffer as PIL converts
 * it, or NULL with *why set. It takes cmyk (malloc'd), converts it in place
 * and wraps it without a copy (freed when the image closes): one 4-byte
 * buffer per pixel at the peak, not that and two 3-byte copies (an 8000 x
 * 8000 CMYK JPEG held 671 MB at the peak, now 351: /usr/bin/time -v). */
static VipsImage *pil_rgb_image(uint8_t *cmyk, int w, int h, int inverted, char **why)
{
    size_t np = (size_t)w * (size_t)h;
    pil_cmyk_to_rgb(cmyk, cmyk, np, inverted); /* pixel i's RGB lands on bytes already read */
    VipsImage *im = vips_image_new_from_memory(cmyk, np * 3, w, h, 3, VIPS_FORMAT_UCHAR);
    if (!im) {
        g_free(cmyk);
        return *why = vips_reason("cannot convert CMYK to RGB"), NULL;
    }
    g_signal_connect(im, "postclose", G_CALLBACK(release_px), cmyk);
    im->Type = VIPS_INTERPRETATION_sRGB;
    return im;
}

/* A CMYK JPEG's pixels as PIL converts them: TurboJPEG gives the stored
 * values (TJPF_CMYK: no colour profile, no inversion; YCCK made CMYK as
 * libjpeg does for PIL; a recoverable warning decoded through, as PIL
 * does). The caller has proven that the file decodes. */
static VipsImage *pil_rgb_from_cmyk_jpeg(const uint8_t *file, size_t flen, int w, int h, char **why)
{
    tjhandle tj = tjInitDecompress();
    uint8_t *cmyk = malloc((size_t)w * (size_t)h * 4);
    VipsImage *im = NULL;
    if (!cmyk || !tj)
        *why = reason("%s", "out of memory decoding a CMYK JPEG");
    else if (tjDecompress2(tj, file, (unsigned long)flen, cmyk, w, 0, h, TJPF_CMYK, 0) != 0 && tjGetErrorCode(tj) == TJERR_FATAL)
        *why = reason("corrupt CMYK JPEG data: %s", tjGetErrorStr2(tj));
    else
        im = pil_rgb_image(cmyk, w, h, 1, why), cmyk = NULL; /* taken */
    free(cmyk);
    if (tj) tjDestroy(tj);
    return im;
}

/* An image saved as lossless PNG: *out (g_free) or *why. */
static int save_png(VipsImage *im, void **out, size_t *olen, char **why)
{
    if (vips_pngsave_buffer(im, out, olen, "compression", 6, NULL)) return *why = vips_reason("cannot encode PNG"), -1;
    return 0;
}

/* JPEG fast path: decode fully with TurboJPEG (the decoder libvips uses
 * underneath, without libvips' per-image setup). Returns 1 if the JPEG is
 * sane and filled h; 0 if it is corrupt, truncated or over max_pixels (*why
 * set); -1 if this path does not apply (libvips decides, as for a header
 * read with a recoverable warning). The decode stops at the first warning:
 * missing data (a premature end of the file or of a segment) is refused;
 * any other warning is recoverable, as in libvips, but TurboJPEG reports
 * only the first warning, which could hide a truncation after it, so
 * libvips decides those (it refuses a premature end wherever it comes). */
static int check_jpeg_tj(tjhandle tj, const uint8_t *file, size_t flen, uint64_t max_pixels, moco_rec_header *h,
                         uint8_t **payload, size_t *plen, char **why)
{
    int w = 0, hh = 0, sub, cs;
    if (!tj || flen > 0xFFFFFFFFu) return -1;
    if (tjDecompressHeader3(tj, file, (unsigned long)flen, &w, &hh, &sub, &cs) != 0) {
        const char *msg = tjGetErrorStr2(tj);
        if (header_warning_only(tj, msg, w, hh)) return -1;
        return *why = reason("corrupt or truncated JPEG header: %s", msg), 0;
    }
    if (w < 1 || hh < 1) /* tables only: the file ends before its frame */
        return *why = reason("corrupt or truncated JPEG header: no image in it (%s)", tjGetErrorStr2(tj)), 0;
    if (w < 1 || hh < 1 || w > (int)MOCO_MAX_SIDE || hh > (int)MOCO_MAX_SIDE)
        return *why = reason("image size out of range (%s)", "1..65535"), 0;
    if ((*why = too_many_pixels(w, hh, max_pixels))) return 0;
    int ch = cs == TJCS_GRAY ? 1 : cs == TJCS_CMYK || cs == TJCS_YCCK ? 4 : 3;
    int pf = ch == 1 ? TJPF_GRAY : ch == 4 ? TJPF_CMYK : TJPF_RGB;
    if ((uint64_t)w * (uint64_t)hh > ((uint64_t)1 << 28)) return -1; /* huge: let libvips stream it */
    uint8_t *px = malloc((size_t)w * (size_t)hh * (size_t)ch);
    if (!px) return -1;
    int r = tjDecompress2(tj, file, (unsigned long)flen, px, w, 0, hh, pf, TJFLAG_STOPONWARNING), ok = 1;
    if (r != 0) {
        const char *msg = tjGetErrorStr2(tj);
        if (tjGetErrorCode(tj) == TJERR_FATAL || truncation_warning(msg)) {
            *why = reason("corrupt or truncated JPEG data: %s", msg);
            ok = 0;
        } else {
            ok = -1; /* a recoverable warning: libvips decodes it to the end */
        }
    }
    if (ok == 1 && ch == 4) { /* CMYK: stored as PIL converts it, lossless, so no decoder sees CMYK */
        VipsImage *rgb = pil_rgb_image(px, w, hh, 1, why);
        void *out = NULL;
        px = NULL; /* taken */
        if (!rgb || save_png(rgb, &out, plen, why)) {
            ok = 0;
        } else {
            *payload = out;
            h->encoding = MOCO_ENC_PNG;
            h->channels = 3;
        }
        if (rgb) g_object_unref(rgb);
    } else if (ok == 1) {
        h->encoding = MOCO_ENC_JPEG;
        h->channels = (uint8_t)ch;
    }
    free(px);
    if (ok == 1) {
        h->width = (uint32_t)w;
        h->height = (uint32_t)hh;
    }
    return ok;
}

/* What PIL reads from a GIF's first frame and libvips does not give: the
 * colour table (the frame's own, else the global one), the transparent
 * index (-1: none) and the frame's rectangle on the screen. */
typedef struct {
    const uint8_t *table; /* ncolours RGB triplets, or NULL */
    int ncolours, trans, x, y, w, h;
} gif_frame0;

static int le16(const uint8_t *p) { return p[0] | p[1] << 8; }

/* Parse a GIF up to its first image descriptor: 0, or -1 if it ends or
 * breaks before. As Pillow 9.4: a graphic control extension's transparent
 * index counts when its flag is set, the last such before the image wins. */
static int gif_first_frame(const uint8_t *f, size_t n, gif_frame0 *g)
{
    *g = (gif_frame0){.trans = -1};
    if (n < 13 || memcmp(f, "GIF8", 4)) return -1;
    size_t p = 13;
    if (f[10] & 0x80) {
        g->ncolours = 2 << (f[10] & 7);
        if (n - p < (size_t)g->ncolours * 3) return -1;
        g->table = f + p;
        p += (size_t)g->ncolours * 3;
    }
    while (p < n) {
        uint8_t b = f[p++];
        if (b == 0x21) { /* an extension: its label, then sub-blocks up to an empty one */
            if (p >= n) return -1;
            if (f[p++] == 0xF9 && p < n && f[p] >= 4 && n - p > 4 && (f[p + 1] & 1)) g->trans = f[p + 4];
            while (p < n && f[p]) p += 1 + (size_t)f[p];
            if (p++ >= n) return -1;
        } else if (b == 0x2C) { /* the first image: its rectangle, its own colour table */
            if (n - p < 9) return -1;
            g->x = le16(f + p), g->y = le16(f + p + 2), g->w = le16(f + p + 4), g->h = le16(f + p + 6);
            if (f[p + 8] & 0x80) {
                int nc = 2 << (f[p + 8] & 7);
                if (n - p - 9 < (size_t)nc * 3) return -1;
                g->table = f + p + 9, g->ncolours = nc;
            }
            return 0;
        } else {
            return -1;
        }
    }
    return -1;
}

/* A GIF's first frame (cur: 8-bit, 3 or 4 bands, from libvips) as PIL's
 * convert("RGB") gives it, or NULL with *why set. libvips makes a
 * transparent pixel (0, 0, 0, 0), and the screen outside the frame
 * transparent or black; PIL gives there the colour of an index: the
 * transparent one, or 0 without one (Pillow fills the first frame's canvas
 * with it); an index past the colour table is grey (i, i, i), as Pillow pads
 * its palette. Alpha is dropped, as by convert("RGB"). */
static VipsImage *gif_as_pil(VipsImage *cur, const gif_frame0 *g, char **why)
{
    int w = vips_image_get_width(cur), h = vips_image_get_height(cur), bands = vips_image_get_bands(cur);
    int k = g->trans >= 0 ? g->trans : 0;
    uint8_t fill[3] = {(uint8_t)k, (uint8_t)k, (uint8_t)k};
    if (k < g->ncolours) memcpy(fill, g->table + 3 * k, 3);
    if ((bands != 3 && bands != 4) || vips_image_get_format(cur) != VIPS_FORMAT_UCHAR)
        return *why = reason("%s", "a GIF libvips decodes to other than 8-bit RGB or RGBA"), NULL;
    size_t sz = 0;
    uint8_t *mem = vips_image_write_to_memory(cur, &sz), *rgb = mem ? malloc((size_t)w * h * 3) : NULL;
    VipsImage *im = NULL;
    if (!mem) {
        *why = vips_reason("corrupt or truncated image data");
    } else if (!rgb) {
        *why = reason("%s", "out of memory");
    } else {
        for (int y = 0; y < h; y++)
            for (int x = 0; x < w; x++) {
                const uint8_t *s = mem + ((size_t)y * w + x) * bands;
                int inside = x >= g->x && x - g->x < g->w && y >= g->y && y - g->y < g->h;
                memcpy(rgb + ((size_t)y * w + x) * 3, !inside || (bands == 4 && s[3] == 0) ? fill : s, 3);
            }
        if ((im = vips_image_new_from_memory_copy(rgb, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR)))
            im->Type = VIPS_INTERPRETATION_sRGB;
        else
            *why = vips_reason("cannot convert the GIF to RGB");
    }
    free(rgb);
    g_free(mem);
    return im;
}

/* The libvips loader (nickname) for file if its decoded pixels are known to
 * match PIL's (torchvision's loader), else NULL with *why set. Through
 * ImageMagick only BMP, which was compared, and Netpbm (PBM/PGM/PPM),
 * which check_image then reads with libvips' ppmload (pil_pnm_load); it
 * flips bottom-up TGA, inverts XBM and takes an ICO's first size, and
 * pdfload/svgload rasterise documents: those are refused, named. */
static const char *verified_loader(const uint8_t *file, size_t flen, char **why)
{
    static const char *const ok[] = {"jpegload_buffer", "pngload_buffer", "webpload_buffer", "tiffload_buffer",
                                     "gifload_buffer", "jp2kload_buffer", NULL};
    const char *name = vips_foreign_find_load_buffer(file, flen);
    GType t = name ? vips_type_find("VipsForeignLoad", name) : 0;
    const char *nick = t ? vips_nickname_find(t) : NULL;
    if (!nick) return *why = vips_reason("not a readable image"), NULL;
    for (int i = 0; ok[i]; i++)
        if (!strcmp(nick, ok[i])) return nick;
    int bmp = flen >= 2 && file[0] == 'B' && file[1] == 'M';
    int pnm = flen >= 2 && file[0] == 'P' && file[1] >= '1' && file[1] <= '6';
    if (!strcmp(nick, "magickload_buffer") && (bmp || pnm)) return nick;
    char *m = NULL;
    if (asprintf(&m, "not an accepted format: libvips reads it with %.*s, whose pixels are not known to match PIL's "
                 "(accepted: JPEG, PNG, WebP, TIFF, GIF, BMP, PBM/PGM/PPM, JPEG 2000)",
                 (int)(strlen(nick) - (strstr(nick, "_buffer") ? 7 : 0)), nick) < 0)
        m = NULL;
    *why = m ? m : reason("%s", "a format not accepted");
    return NULL;
}

/* Decode fully, check dimensions, re-encode if needed. On success returns 0
 * with *payload (maybe == file) and the header fields filled. tj: the
 * thread's TurboJPEG handle (or NULL), to look for header warnings. */
static int check_image(const uint8_t *file, size_t flen, long max_side, uint64_t max_pixels, tjhandle tj,
                       moco_rec_header *h, uint8_t **payload, size_t *plen, char **why)
{
    static const uint8_t JPG[3] = {0xFF, 0xD8, 0xFF}, PNGSIG[8] = {0x89, 'P', 'N', 'G', 0x0D, 0x0A, 0x1A, 0x0A};
    int enc = flen >= 3 && !memcmp(file, JPG, 3) ? MOCO_ENC_JPEG : flen >= 8 && !memcmp(file, PNGSIG, 8) ? MOCO_ENC_PNG : -1;
    /* a JPEG whose header warns (junk bytes before a marker) is not stored as it is */
    int hdr_warn = enc == MOCO_ENC_JPEG && jpeg_header_warns(tj, file, flen);
    /* a PNG whose iCCP, zTXt or iTXt chunk PIL refuses (libvips warns and reads it) */
    if (enc == MOCO_ENC_PNG && (*why = pil_png_refusal(file, flen))) return -1;
    const char *loader = verified_loader(file, flen, why);
    if (!loader) return -1;
    /* PIL applies a TIFF's Orientation tag (not JPEG's, PNG's or WebP's):
     * so does mkdb, with vips_autorot, which needs random access. */
    int tiff = !strcmp(loader, "tiffload_buffer"), gif = !strcmp(loader, "gifload_buffer");
    int pnm = !strcmp(loader, "magickload_buffer") && file[0] == 'P' && file[1] >= '1' && file[1] <= '6';
    gif_frame0 g0 = {.trans = -1};
    if (gif && gif_first_frame(file, flen, &g0)) return *why = reason("%s", "corrupt or truncated GIF header"), -1;
    if (gif && !g0.table) /* PIL reads its indices as grey levels; libvips through a palette of its own */
        return *why = reason("%s", "a GIF without a colour table (its colours are not defined)"), -1;
    /* fail_on error (which includes truncated): a file cut short is refused,
     * not padded with grey. Opening reads only the header, so the pixel
     * limit comes before any decoding. */
    VipsImage *im = NULL;
    if (pnm) { /* libvips' own loader, PIL's scaling of a maxval other than 255 */
        if (pil_pnm_load(file, flen, &im, why)) return -1;
    } else if (!(im = vips_image_new_from_buffer(file, flen, "", "fail_on", VIPS_FAIL_ON_ERROR, "access",
                                                 tiff ? VIPS_ACCESS_RANDOM : VIPS_ACCESS_SEQUENTIAL, NULL))) {
        return *why = vips_reason("not a readable image"), -1;
    }
    int rc = -1, w = vips_image_get_width(im), hh = vips_image_get_height(im), bands = vips_image_get_bands(im);
    VipsImage *t = NULL;
    double avg;
    void *out = NULL;
    size_t olen = 0;
    if (w < 1 || hh < 1 || w > (int)MOCO_MAX_SIDE || hh > (int)MOCO_MAX_SIDE) {
        *why = reason("image size out of range (%s)", "1..65535");
        goto done;
    }
    if ((*why = too_many_pixels(w, hh, max_pixels))) goto done;
    if (bands < 1 || bands > 4) {
        *why = reason("unsupported number of bands (%s)", "1-4 accepted");
        goto done;
    }
    int eightbit = vips_image_get_format(im) == VIPS_FORMAT_UCHAR;
    int shrink = max_side > 0 && (w > max_side || hh > max_side);
    /* CMYK (a JPEG's or a TIFF's) is never stored: PIL's conversion to RGB is */
    int cmyk = bands == 4 && vips_image_get_interpretation(im) == VIPS_INTERPRETATION_CMYK;
    if (enc >= 0 && eightbit && !shrink && !cmyk && !hdr_warn) {
        /* stored as it is: prove the whole file decodes */
        if (vips_avg(im, &avg, NULL)) { *why = vips_reason("corrupt or truncated image data"); goto done; }
        h->encoding = (uint8_t)enc;
        h->channels = (uint8_t)bands;
        h->width = (uint32_t)w;
        h->height = (uint32_t)hh;
        rc = 0;
        goto done;
    }
    /* re-encode: 8-bit, shrunk, lossless PNG unless the source was a JPEG
     * shrunk (a CMYK JPEG or one whose header warns, at its size, is stored
     * as PNG: libvips' pixels, which are PIL's, tests/cli_datasets.sh) */
    int as_jpeg = enc == MOCO_ENC_JPEG && (shrink || (!cmyk && !hdr_warn));
    VipsImage *cur = NULL;
    if (cmyk && !strcmp(loader, "jpegload_buffer")) {
        /* libvips inverts the inks only after an Adobe marker: the values come from TurboJPEG,
         * once libvips (fail_on error) has proven that the whole file decodes */
        if (vips_avg(im, &avg, NULL)) { *why = vips_reason("corrupt or truncated image data"); goto done; }
        if (!(cur = pil_rgb_from_cmyk_jpeg(file, flen, w, hh, why))) goto done;
    } else {
        cur = im;
        g_object_ref(cur);
    }
    if (!eightbit) {
        /* 16-bit CMYK (Pillow: "CMYK;16L") keeps the high byte of each ink; the rest goes through libvips */
        VipsInterpretation want = bands <= 2 ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
        if ((cmyk && vips_image_get_format(cur) == VIPS_FORMAT_USHORT ? vips_rshift_const1(cur, &t, 8, NULL)
                                                                      : vips_colourspace(cur, &t, want, NULL)) ||
            (g_object_unref(cur), cur = t, t = NULL, vips_cast_uchar(cur, &t, NULL))) {
            g_object_unref(cur);
            *why = vips_reason("cannot convert to 8-bit");
            goto done;
        }
        g_object_unref(cur);
        cur = t;
        t = NULL;
    }
    if (tiff) { /* before the conversion below, which keeps no orientation tag */
        if (vips_autorot(cur, &t, NULL)) { g_object_unref(cur); *why = vips_reason("cannot apply the TIFF orientation"); goto done; }
        g_object_unref(cur);
        cur = t;
        t = NULL;
    }
    if (gif) { /* transparency and the screen outside the frame as PIL gives them */
        VipsImage *rgb = gif_as_pil(cur, &g0, why);
        g_object_unref(cur);
        if (!(cur = rgb)) goto done;
    }
    if (vips_image_get_bands(cur) == 4 && vips_image_get_interpretation(cur) == VIPS_INTERPRETATION_CMYK &&
        vips_image_get_format(cur) == VIPS_FORMAT_UCHAR) {
        /* a TIFF's inks, as stored (no profile), converted as PIL does; here, not inside the
         * PNG writer: the header then gives the 3 channels saved, not 4 */
        size_t sz = 0;
        void *mem = vips_image_write_to_memory(cur, &sz);
        int cw = vips_image_get_width(cur), ch = vips_image_get_height(cur);
        g_object_unref(cur);
        if (!mem) { *why = vips_reason("corrupt or truncated image data"); goto done; }
        if (!(cur = pil_rgb_image(mem, cw, ch, 0, why))) goto done; /* mem taken */
    }
    if (shrink) {
        double s = (double)max_side / (double)(w > hh ? w : hh);
        if (vips_resize(cur, &t, s, NULL)) { g_object_unref(cur); *why = vips_reason("cannot resize"); goto done; }
        g_object_unref(cur);
        cur = t;
        t = NULL;
    }
    int r = as_jpeg ? vips_jpegsave_buffer(cur, &out, &olen, "Q", 95, NULL)
                    : vips_pngsave_buffer(cur, &out, &olen, "compression", 6, NULL);
    if (r) {
        g_object_unref(cur);
        *why = vips_reason("corrupt or truncated image data");
        goto done;
    }
    h->encoding = as_jpeg ? MOCO_ENC_JPEG : MOCO_ENC_PNG;
    h->channels = (uint8_t)vips_image_get_bands(cur);
    h->width = (uint32_t)vips_image_get_width(cur);
    h->height = (uint32_t)vips_image_get_height(cur);
    g_object_unref(cur);
    *payload = out;
    *plen = olen;
    rc = 0;
done:
    g_object_unref(im);
    /* libvips leaves a recoverable JPEG warning in its error buffer, which is
     * global: cleared once the file is stored, it does not become part of the
     * next refused file's reason (in this thread, or most likely another) */
    if (rc == 0) vips_error_clear();
    return rc;
}

/* libvips' error buffer is one for the whole process: a thread whose decode
 * failed read it while others appended to it or cleared it, and a skipped
 * file's reason carried another file's text (a second line), or none.
 * Decodes share this lock; a failed one is decoded again holding it alone,
 * from a clear buffer, and its reason is its own. Writers go first, so the
 * retry does not wait behind a stream of decodes. */
static pthread_rwlock_t vips_lock;
static pthread_once_t vips_lock_once = PTHREAD_ONCE_INIT;

static void vips_lock_init(void)
{
    pthread_rwlockattr_t la;
    pthread_rwlockattr_init(&la);
    pthread_rwlockattr_setkind_np(&la, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&vips_lock, &la);
    pthread_rwlockattr_destroy(&la);
}

/* 1 if the file is taken (h, *payload or the file itself), else 0 with *why. */
static int decode(const job *j, const uint8_t *file, size_t flen, tjhandle *tj, moco_rec_header *h, uint8_t **payload,
                  size_t *plen, char **why)
{
    static const uint8_t JPG[3] = {0xFF, 0xD8, 0xFF};
    int fast = j->max_side == 0 && flen >= 3 && !memcmp(file, JPG, 3)
                   ? check_jpeg_tj(*tj, file, flen, j->max_pixels, h, payload, plen, why) : -1;
    int ok = fast == 1 || (fast < 0 && check_image(file, flen, j->max_side, j->max_pixels, *tj, h, payload, plen, why) == 0);
    if (!ok && *tj) { /* a handle is not reliable after an error (check_image reads JPEG headers too): start afresh */
        tjDestroy(*tj);
        *tj = tjInitDecompress();
    }
    return ok;
}

static void prepare(const job *j, size_t i, slot *s, tjhandle *tj)
{
    const mk_item *it = &j->src->items[j->order[i]];
    moco_rec_header h = {.label = it->label};
    if (it->pixels) { /* CIFAR / IDX: already validated */
        h.encoding = MOCO_ENC_RAW;
        h.channels = (uint8_t)it->c;
        h.width = it->w;
        h.height = it->h;
        s->rec = moco_rec_build(&h, it->pixels, it->w * it->h * it->c, &s->len);
        if (!s->rec) s->why = reason("%s", "out of memory");
        return;
    }
    if (it->skip) { /* not a file (a broken link, a FIFO): named and counted */
        s->why = reason("%s", it->skip);
        return;
    }
    uint8_t *file = NULL, *payload = NULL;
    size_t flen = 0, plen = 0;
    if (read_file(it->path, &file, &flen, &s->why)) return;
    if (flen == 0) {
        s->why = reason("%s", "empty file");
    } else {
        const moco_rec_header h0 = h;
        pthread_rwlock_rdlock(&vips_lock);
        int ok = decode(j, file, flen, tj, &h, &payload, &plen, &s->why);
        pthread_rwlock_unlock(&vips_lock);
        if (!ok) { /* again, alone: the reason read from libvips is this file's */
            free(s->why);
            s->why = NULL;
            if (payload) g_free(payload);
            payload = NULL, plen = 0, h = h0;
            pthread_rwlock_wrlock(&vips_lock);
            vips_error_clear();
            ok = decode(j, file, flen, tj, &h, &payload, &plen, &s->why);
            vips_error_clear();
            pthread_rwlock_unlock(&vips_lock);
        }
        if (ok) {
        const uint8_t *p = payload ? payload : file;
        size_t n = payload ? plen : flen;
        if (n + MOCO_REC_HEADER_SIZE > MOCO_RECORD_WIRE_MAX) /* the loader would fail it every epoch */
            s->why = reason("%s", "larger than the 64 MiB a record may take on the stream (formats/pipeline.h)");
        else if (!(s->rec = moco_rec_build(&h, p, (uint32_t)n, &s->len))) s->why = reason("%s", "out of memory");
        }
    }
    if (payload) g_free(payload);
    free(file);
}

static void *worker(void *arg)
{
    job *j = arg;
    tjhandle tj = tjInitDecompress();
    for (;;) {
        pthread_mutex_lock(&j->mu);
        while (!j->stop && !interrupted && j->next < j->n && j->next >= j->consumed + WINDOW) wait_tick(&j->space_cv, &j->mu);
        if (j->stop || interrupted || j->next >= j->n) {
            pthread_mutex_unlock(&j->mu);
            break;
        }
        size_t i = j->next++;
        pthread_mutex_unlock(&j->mu);
        slot s = {0};
        prepare(j, i, &s, &tj);
        pthread_mutex_lock(&j->mu);
        s.ready = 1;
        j->slots[i % WINDOW] = s;
        pthread_cond_broadcast(&j->ready_cv);
        pthread_mutex_unlock(&j->mu);
    }
    if (tj) tjDestroy(tj);
    vips_thread_shutdown();
    return NULL;
}

static void progress(size_t done, size_t n, double t0, int final)
{
    double el = moco_now_s() - t0, rate = el > 0 ? (double)done / el : 0;
    double eta = rate > 0 ? (double)(n - done) / rate : 0;
    fprintf(stderr, "\r  %zu/%zu  %3.0f%%  %.0f/s  ETA %.0fs   %s", done, n, n ? 100.0 * (double)done / (double)n : 100.0,
            rate, eta, final ? "\n" : "");
}

typedef struct {
    const char *format, *split;
    int shuffle, strict, force, quiet;
    uint64_t seed, map_size, max_pixels;
    long max_side, threads, batch;
    uint64_t limit;
} mk_opts;

/* The writer loop: consume slots in order, batch, commit, count. */
static int write_all(job *j, dbw *w, const mk_opts *o, moco_db_meta *m, int show)
{
    uint8_t **recs = calloc((size_t)o->batch, sizeof *recs);
    size_t *lens = calloc((size_t)o->batch, sizeof *lens), nb = 0;
    uint64_t written = 0;
    long kill_after = getenv("MOCO_MKDB_TEST_KILL_AFTER") ? atol(getenv("MOCO_MKDB_TEST_KILL_AFTER")) : -1;
    long batches = 0;
    double t0 = moco_now_s(), last = 0;
    int rc = 0;
    if (!recs || !lens) rc = moco_err(MOCO_ENOMEM, "out of memory");
    for (size_t i = 0; i < j->n && !rc; i++) {
        pthread_mutex_lock(&j->mu);
        while (!j->slots[i % WINDOW].ready && !interrupted) wait_tick(&j->ready_cv, &j->mu);
        slot s = j->slots[i % WINDOW];
        memset(&j->slots[i % WINDOW], 0, sizeof s);
        if (s.ready) j->consumed = i + 1;
        pthread_cond_broadcast(&j->space_cv);
        pthread_mutex_unlock(&j->mu);
        if (interrupted) {
            free(s.rec);
            free(s.why);
            rc = moco_err(MOCO_EINTR, "interrupted");
            break;
        }
        const mk_item *it = &j->src->items[j->order[i]];
        if (!s.rec) {
            char ep[8192]; /* the path escaped: a newline in a name printed a line of its own */
            mk_escape_name(it->path, ep, sizeof ep);
            if (show) fputc('\n', stderr);
            if (it->pixels) fprintf(stderr, "moco mkdb: skipping %s at offset %" PRIu64 ": %s\n", ep, it->offset, s.why ? s.why : "?");
            else fprintf(stderr, "moco mkdb: skipping %s: %s\n", ep, s.why ? s.why : "?");
            m->skipped++;
            if (o->strict) rc = moco_err(MOCO_ECORRUPT, "%s: %s (--strict stops at the first bad input)", it->path, s.why ? s.why : "?");
            free(s.why);
            continue;
        }
        moco_rec_header h;
        const uint8_t *pl;
        moco_rec_parse(s.rec, s.len, 0, it->path, &h, &pl); /* built by us: valid */
        if (h.label >= 0) m->class_counts[h.label]++;
        else m->unlabelled++;
        m->payload_bytes += h.payload_len;
        m->enc_counts[h.encoding]++;
        if (!m->count || h.width < m->min_w) m->min_w = h.width;
        if (!m->count || h.height < m->min_h) m->min_h = h.height;
        if (h.width > m->max_w) m->max_w = h.width;
        if (h.height > m->max_h) m->max_h = h.height;
        m->count++;
        recs[nb] = s.rec;
        lens[nb++] = s.len;
        if (nb == (size_t)o->batch || i + 1 == j->n) {
            rc = dbw_put_batch(w, written, recs, lens, nb);
            for (size_t k = 0; k < nb; k++) free(recs[k]);
            written += nb;
            nb = 0;
            if (++batches == kill_after) raise(SIGKILL); /* test hook: die midway */
        }
        if (show && (moco_now_s() - last > 0.25 || i + 1 == j->n)) {
            last = moco_now_s();
            progress(i + 1, j->n, t0, i + 1 == j->n);
        }
    }
    if (!rc && nb) rc = dbw_put_batch(w, written, recs, lens, nb); /* the last item was skipped */
    for (size_t k = 0; k < nb; k++) free(recs[k]);
    free(recs);
    free(lens);
    return rc;
}

int loader_mkdb_main(int argc, char **argv)
{
    mk_opts o = {.format = "auto", .map_size = 64u << 20, .max_pixels = 64000000, .threads = 0, .batch = 1024};
    const moco_opt opts[] = {
        {"format", MOCO_OPT_CHOICE, &o.format, "source format", 0, 0, "auto|folder|cifar10|idx"},
        {"split", MOCO_OPT_STR, &o.split, "split to convert when SRC holds several (train, test, val, ...)", 0, 0, NULL},
        {"shuffle", MOCO_OPT_FLAG, &o.shuffle, "write the samples in a seeded random order", 0, 0, NULL},
        {"seed", MOCO_OPT_U64, &o.seed, "seed of --shuffle", 0, 0, NULL},
        {"max-side", MOCO_OPT_INT, &o.max_side, "shrink images whose longer side exceeds N and re-encode (0: keep)", 0, 65535, NULL},
        {"max-pixels", MOCO_OPT_U64, &o.max_pixels,
         "skip, undecoded, images whose header claims over N pixels (0: no limit)", 0,
         4294836225.0 /* 65535^2 */, NULL},
        {"strict", MOCO_OPT_FLAG, &o.strict, "fail on the first corrupt, truncated or non-image input", 0, 0, NULL},
        {"force", MOCO_OPT_FLAG, &o.force,
         "replace OUT if it is a moco dataset (never anything else), once the new one is complete", 0, 0, NULL},
        {"threads", MOCO_OPT_INT, &o.threads, "threads preparing images (0: one per core)", 0, 256, NULL},
        {"batch", MOCO_OPT_INT, &o.batch, "records per LMDB transaction", 1, 1000000, NULL},
        {"map-size", MOCO_OPT_U64, &o.map_size, "initial LMDB map size in bytes (grown automatically)", 4096, 1e15, NULL},
        {"limit", MOCO_OPT_U64, &o.limit, "convert only the first N inputs (after --shuffle; 0: all)", 0, 0, NULL},
        {"quiet", MOCO_OPT_FLAG, &o.quiet, "no progress bar", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {
        "moco mkdb", "SRC OUT [options]",
        "Pack a dataset into a dataset LMDB at OUT (see formats/README.md). SRC is one of:\n"
        "  an image folder SRC/<class>/<image>, or SRC/<split>/<class>/<image>: JPEG and\n"
        "    PNG stored as they are; WebP, TIFF (its orientation applied, as PIL does),\n"
        "    GIF (first frame), BMP, PBM/PGM/PPM and JPEG 2000 stored as lossless PNG;\n"
        "    CMYK (JPEG, TIFF) made RGB as PIL's convert(\"RGB\") does, stored as PNG;\n"
        "    a JPEG whose header warns (junk bytes before a marker) stored as PNG too;\n"
        "    any other file is skipped. Classes and files in byte order of their names,\n"
        "    subfolders and symbolic links followed. Unlike torchvision's ImageFolder:\n"
        "    hidden entries (.name, e.g. .ipynb_checkpoints) are skipped, an empty class\n"
        "    folder is kept as a class of 0 samples, files are chosen by content, not by\n"
        "    extension. A class name must be UTF-8 without a newline (else exit 2).\n"
        "    OUT inside SRC (and mkdb's OUT.tmp-PID beside it) is never an input;\n"
        "  a CIFAR-10 binary directory (data_batch_*.bin, test_batch.bin);\n"
        "  an IDX directory (MNIST / Fashion-MNIST, plain or .gz), e.g.\n"
        "    /usr/share/datasets/fashion-mnist from the Debian package dataset-fashion-mnist.\n"
        "Bad inputs (unreadable, corrupt, truncated, over --max-pixels, another format,\n"
        "files PIL refuses such as a PNG whose iCCP or text chunk inflates past 1 MiB,\n"
        "broken links, FIFOs) are named on stderr with the reason, skipped and counted.\n"
        "OUT appears only when complete.",
        opts, 2, 2, NULL};
    char *pos[2];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    const char *srcp = pos[0], *out = pos[1];
    if (o.threads == 0) o.threads = sysconf(_SC_NPROCESSORS_ONLN) > 0 ? sysconf(_SC_NPROCESSORS_ONLN) : 1;
    int show = !o.quiet && isatty(STDERR_FILENO);

    if (VIPS_INIT("moco")) {
        fprintf(stderr, "moco mkdb: cannot start libvips\n");
        return 1;
    }
    vips_cache_set_max(0);
    vips_concurrency_set(1);
    g_log_set_handler("VIPS", G_LOG_LEVEL_WARNING, quiet_log, NULL);
    pthread_once(&vips_lock_once, vips_lock_init);

    mk_source src;
    moco_db_meta m = {0};
    dbw *w = NULL;
    size_t *order = NULL;
    job *j = NULL;
    pthread_t *th = NULL;
    long started = 0, stuck = 0;
    double t0 = moco_now_s();
    struct sigaction sa = {.sa_handler = on_signal}, old_int, old_term;
    if ((rc = mk_source_open_out(srcp, o.format, o.split, out, &src))) {
        fprintf(stderr, "moco mkdb: %s\n", moco_errmsg());
        return rc == MOCO_EINVAL ? 2 : 1;
    }
    if (src.n == 0) {
        fprintf(stderr, "moco mkdb: %s: no input files\n", src.root);
        mk_source_free(&src);
        return 1;
    }
    if ((rc = dbw_open(out, o.force, (size_t)o.map_size, &w))) {
        fprintf(stderr, "moco mkdb: %s\n", moco_errmsg());
        mk_source_free(&src);
        return 1;
    }
    sigaction(SIGINT, &sa, &old_int);
    sigaction(SIGTERM, &sa, &old_term);
    order = malloc(src.n * sizeof *order);
    j = calloc(1, sizeof *j);
    m.nclasses = src.nclasses;
    m.class_names = src.classes;
    m.class_counts = calloc(src.nclasses ? src.nclasses : 1, sizeof *m.class_counts);
    th = calloc((size_t)o.threads, sizeof *th);
    if (!order || !j || !m.class_counts || !th) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto done; }
    if (o.shuffle) {
        moco_rng r;
        moco_rng_init(&r, o.seed, 0x6d6b6462 /* "mkdb" */, 0, 0);
        moco_rng_permutation(&r, (uint64_t *)order, src.n); /* size_t is 64-bit here */
    } else {
        for (size_t i = 0; i < src.n; i++) order[i] = i;
    }
    j->src = &src;
    j->order = order;
    j->n = o.limit && o.limit < src.n ? (size_t)o.limit : src.n;
    j->max_side = o.max_side;
    j->max_pixels = o.max_pixels;
    pthread_mutex_init(&j->mu, NULL);
    pthread_cond_init(&j->ready_cv, NULL);
    pthread_cond_init(&j->space_cv, NULL);
    for (; started < o.threads; started++)
        if (pthread_create(&th[started], NULL, worker, j)) break;
    if (!started) { rc = moco_err(MOCO_EIO, "cannot start threads"); goto done; }
    rc = write_all(j, w, &o, &m, show);
    pthread_mutex_lock(&j->mu);
    j->stop = 1;
    pthread_cond_broadcast(&j->space_cv);
    pthread_mutex_unlock(&j->mu);
    /* interrupted: the threads still inside a read or a decode get 1 s, then
     * are left to the process's exit, with what they use (not freed) */
    struct timespec dl;
    clock_gettime(CLOCK_REALTIME, &dl);
    dl.tv_sec += 1;
    for (long t = 0; t < started; t++)
        if (interrupted ? pthread_timedjoin_np(th[t], NULL, &dl) != 0 : pthread_join(th[t], NULL) != 0) stuck++;
    if (stuck) {
        fprintf(stderr, "moco mkdb: %ld thread%s still reading or decoding an input: not waited for\n", stuck, stuck > 1 ? "s" : "");
        if (!rc) rc = moco_err(MOCO_EINTR, "interrupted");
        goto done;
    }
    for (size_t i = 0; i < WINDOW; i++) { free(j->slots[i].rec); free(j->slots[i].why); }
    if (!rc && m.count == 0) rc = moco_err(MOCO_ECORRUPT, "%s: no valid images among %zu inputs", src.root, src.n);
    if (!rc) {
        unsigned grows = dbw_grow_count(w);
        m.source = src.root;
        m.source_format = (char *)src.format;
        m.shuffled = o.shuffle;
        m.shuffle_seed = o.seed;
        rc = dbw_finish(&w, &m);
        m.source = NULL;
        m.source_format = NULL;
        if (!rc) {
            double el = moco_now_s() - t0;
            printf("moco mkdb: wrote %" PRIu64 " samples in %u classes to %s in %.1f s (%.0f samples/s, %ld threads)",
                   m.count, m.nclasses, out, el, (double)m.count / (el > 0 ? el : 1), started);
            printf("; skipped %" PRIu64 "; %.1f MB of payload%s", m.skipped, (double)m.payload_bytes / 1e6,
                   grows ? "" : "\n");
            if (grows) printf("; map grown %u times\n", grows);
        }
    }
done:
    if (rc) fprintf(stderr, "moco mkdb: %s; nothing written to %s\n", moco_errmsg(), out);
    dbw_abort(&w);
    sigaction(SIGINT, &old_int, NULL);
    sigaction(SIGTERM, &old_term, NULL);
    if (stuck) return 1; /* the threads left use j, src, order and libvips: not freed, the exit ends them */
    if (j) {
        pthread_mutex_destroy(&j->mu);
        pthread_cond_destroy(&j->ready_cv);
        pthread_cond_destroy(&j->space_cv);
    }
    free(j);
    free(th);
    free(order);
    free(m.class_counts);
    m.class_names = NULL;
    mk_source_free(&src);
    vips_shutdown();
    return rc ? 1 : 0;
}
