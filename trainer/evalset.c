/* evalset.c: evaluation inputs from a dataset LMDB (see evalset.h).
 *
 * The preprocessing equals torchvision's eval transforms on a PIL image bit
 * for bit (tests/test_evalset.c against tools/gen_eval_golden.py): JPEG
 * through TurboJPEG with libjpeg's defaults (ISLOW IDCT, fancy upsampling),
 * as Pillow decodes it; Pillow's fixed-point bilinear resampling; the
 * truncated long side and round-half-even crop offsets of torchvision;
 * uint8 pixels / 255 in float32, then (x - mean) / std. The view is
 * Resize(R) + CenterCrop(size), R from evalset_resize_side (main_lincls.py's
 * 256 for 224 above 64 px; R = size at CIFAR sizes). */
#include "trainer/evalset.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <vips/vips.h>

#include "formats/db.h"
#include "formats/errors.h"
#include "formats/payload.h"
#include "formats/record.h"

struct evalset {
    moco_db *db;
    int size;
    float mean[3], std[3];
    tjhandle tj;
    uint8_t *rec, *px;
    size_t reccap, pxcap;
    uint8_t *crop; /* (size, size, 3): one image after resize + crop */
    int32_t *map;  /* each of this set's classes as an index of another set's (evalset_classes_of), or NULL */
};

static int open_set(const char *path, int size, const float mean[3], const float std[3], int need_labels, evalset **out)
{
    *out = NULL;
    evalset *e = calloc(1, sizeof *e);
    if (!e) return moco_err(MOCO_ENOMEM, "out of memory");
    int rc = moco_db_open(path, &e->db);
    if (rc) { free(e); return rc; }
    if (need_labels && (moco_db_get_meta(e->db)->unlabelled || moco_db_get_meta(e->db)->nclasses < 1)) {
        rc = moco_err(MOCO_EINVAL, "%s: evaluation needs labels for every sample", path);
        evalset_destroy(&e);
        return rc;
    }
    if (need_labels && moco_db_get_meta(e->db)->count == 0) { /* an accuracy of 0 samples is no accuracy */
        rc = moco_err(MOCO_EINVAL, "%s holds no samples: evaluation needs at least one", path);
        evalset_destroy(&e);
        return rc;
    }
    e->size = size;
    if (size < 1 || !(e->crop = malloc((size_t)size * size * 3))) {
        rc = size < 1 ? moco_err(MOCO_EINVAL, "%s: evaluation size %d", path, size)
                      : moco_err(MOCO_ENOMEM, "out of memory");
        evalset_destroy(&e);
        return rc;
    }
    memcpy(e->mean, mean, sizeof e->mean);
    memcpy(e->std, std, sizeof e->std);
    e->tj = tjInitDecompress();
    *out = e;
    return 0;
}

int evalset_open(const char *path, int size, const float mean[3], const float std[3], evalset **out)
{
    return open_set(path, size, mean, std, 1, out);
}

int evalset_open_any(const char *path, int size, const float mean[3], const float std[3], evalset **out)
{
    return open_set(path, size, mean, std, 0, out);
}

int evalset_labelled(const evalset *e)
{
    return !moco_db_get_meta(e->db)->unlabelled && moco_db_get_meta(e->db)->nclasses >= 1;
}

void evalset_destroy(evalset **pe)
{
    evalset *e = *pe;
    if (!e) return;
    moco_db_destroy(&e->db);
    if (e->tj) tjDestroy(e->tj);
    free(e->rec);
    free(e->px);
    free(e->crop);
    free(e->map);
    free(e);
    *pe = NULL;
}

int evalset_classes_of(evalset *e, const evalset *ref)
{
    const moco_db_meta *a = moco_db_get_meta(e->db), *b = moco_db_get_meta(ref->db);
    int same = a->nclasses <= b->nclasses;
    for (uint32_t i = 0; same && i < a->nclasses; i++) same = !strcmp(a->class_names[i], b->class_names[i]);
    free(e->map);
    e->map = NULL;
    if (same) return 0; /* the same classes at the same indices (or a leading part of them) */
    if (!(e->map = malloc(sizeof *e->map * (a->nclasses ? a->nclasses : 1)))) return moco_err(MOCO_ENOMEM, "out of memory");
    for (uint32_t i = 0; i < a->nclasses; i++) {
        uint32_t j = 0;
        while (j < b->nclasses && strcmp(a->class_names[i], b->class_names[j])) j++;
        if (j == b->nclasses) {
            free(e->map);
            e->map = NULL;
            return moco_err(MOCO_EINVAL, "%s has class '%s', which %s (%u classes: '%s'%s) does not: the two datasets' classes must match by name",
                            moco_db_path(e->db), a->class_names[i], moco_db_path(ref->db), b->nclasses,
                            b->nclasses ? b->class_names[0] : "", b->nclasses > 1 ? ", ..." : "");
        }
        e->map[i] = (int32_t)j;
    }
    return 0;
}

int64_t evalset_count(const evalset *e) { return (int64_t)moco_db_get_meta(e->db)->count; }
int evalset_classes(const evalset *e) { return (int)moco_db_get_meta(e->db)->nclasses; }

static int grow(evalset *e, size_t n)
{
    if (e->pxcap >= n) return 0;
    uint8_t *p = realloc(e->px, n);
    if (!p) return moco_err(MOCO_ENOMEM, "out of memory");
    e->px = p;
    e->pxcap = n;
    return 0;
}

/* The header against what the payload claims of itself (formats/payload.h), before anything is allocated for it. */
static int check_claims(const evalset *e, int64_t i, const moco_rec_header *h, const uint8_t *pl, int pw, int ph, int pc)
{
    char what[4200];
    moco_payload_info p = {moco_payload_encoding(pl, h->payload_len), pw, ph, pc};
    snprintf(what, sizeof what, "%s: record %" PRId64, moco_db_path(e->db), i);
    return moco_rec_check_claims(h, &p, what);
}

/* Decode record i into e->px (h, w, c uint8), c = 1 or 3; the payload's size must be the header's. */
static int decode(evalset *e, int64_t i, const moco_rec_header *h, const uint8_t *pl, int *w, int *hh, int *c)
{
    *w = (int)h->width;
    *hh = (int)h->height;
    if (h->encoding == MOCO_ENC_RAW && (h->channels == 1 || h->channels == 3)) {
        *c = h->channels;
        if (grow(e, h->payload_len)) return MOCO_ENOMEM;
        memcpy(e->px, pl, h->payload_len);
        return 0;
    }
    int jw, jh, ss, cs;
    if (h->encoding == MOCO_ENC_JPEG && e->tj && (h->channels == 1 || h->channels == 3) &&
        tjDecompressHeader3(e->tj, pl, h->payload_len, &jw, &jh, &ss, &cs) == 0 && cs != TJCS_CMYK && cs != TJCS_YCCK) {
        /* TurboJPEG scales to the size it is given, and decodes grey or colour as it is asked: a
         * header that lies about either must not pass */
        int rc = check_claims(e, i, h, pl, jw, jh, moco_payload_jpeg_channels(cs));
        if (rc) return rc;
        *c = h->channels;
        if (grow(e, (size_t)*w * *hh * 3)) return MOCO_ENOMEM;
        if (tjDecompress2(e->tj, pl, h->payload_len, e->px, *w, 0, *hh, *c == 1 ? TJPF_GRAY : TJPF_RGB, 0) == 0 ||
            tjGetErrorCode(e->tj) == TJERR_WARNING)
            return 0;
    }
    /* anything else: libvips, made 8-bit sRGB or grey */
    VipsImage *im = vips_image_new_from_buffer(pl, h->payload_len, "", NULL), *t = NULL;
    if (!im) goto bad;
    int lie = check_claims(e, i, h, pl, vips_image_get_width(im), vips_image_get_height(im), vips_image_get_bands(im));
    if (lie) {
        g_object_unref(im);
        return lie;
    }
    if (vips_image_hasalpha(im)) { /* dropped, as PIL's convert("RGB") drops it (not flattened on black) */
        if (vips_extract_band(im, &t, 0, "n", vips_image_get_bands(im) - 1, NULL)) goto bad;
        g_object_unref(im); im = t; t = NULL;
    }
    int bands = vips_image_get_bands(im);
    if (vips_colourspace(im, &t, bands < 3 ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB, NULL)) goto bad;
    g_object_unref(im); im = t; t = NULL;
    if (vips_cast_uchar(im, &t, NULL)) goto bad;
    g_object_unref(im); im = t; t = NULL;
    size_t n;
    void *mem = vips_image_write_to_memory(im, &n);
    if (!mem) goto bad;
    *w = vips_image_get_width(im);
    *hh = vips_image_get_height(im);
    *c = vips_image_get_bands(im);
    g_object_unref(im);
    int rc = grow(e, n);
    if (!rc) memcpy(e->px, mem, n);
    g_free(mem);
    return rc;
bad:
    if (im) g_object_unref(im);
    vips_error_clear();
    return moco_err(MOCO_ECORRUPT, "%s: record %" PRId64 " cannot be decoded", moco_db_path(e->db), i);
}


/* ---- Resize(size) + CenterCrop(size), as torchvision 0.14 on a PIL image ----
 *
 * torchvision hands a PIL image to Image.resize(..., BILINEAR), which is
 * Pillow's separable convolution (libImaging/Resample.c): for each output
 * index o along an axis of in -> out samples, scale = in / out, the triangle
 * filter's support is max(scale, 1) (antialiased when shrinking), its centre
 * (o + 0.5) * scale, the taps [lo, hi) are the input samples within the
 * support (rounded ends), the weights are the triangle at
 * (j - centre + 0.5) / support, divided by their sum, then turned into
 * 22-bit fixed point (round half up). Each output value is
 * (2^21 + sum pixel * weight) >> 22, clipped to 0..255, so every pass
 * rounds to uint8. The horizontal pass runs first (only when the width
 * changes), then the vertical one (only when the height changes). The crop
 * then copies pixels. Below, the fast kernel computes only the cropped
 * outputs (each output depends only on its own taps, so this is the same as
 * resizing everything first), and the reference does exactly what Pillow
 * does: the whole image, then the crop. */

#define EVAL_PREC 22 /* Pillow's PRECISION_BITS for 8-bit images */

int evalset_resize_side(int size)
{
    return size <= EVALSET_SMALL_SIDE ? size : (int)((int64_t)size * 8 / 7);
}

void evalset_geometry(int h, int w, int size, int *rh, int *rw, int *top, int *left)
{
    /* _compute_resized_output_size: int(R * long / short), a double
     * quotient (both operands exact) truncated */
    const int R = evalset_resize_side(size);
    int shrt = w <= h ? w : h, lng = w <= h ? h : w;
    int nl = (int)((double)((int64_t)R * lng) / (double)shrt);
    *rw = w <= h ? R : nl;
    *rh = w <= h ? nl : R;
    /* center_crop: int(round((h - th) / 2.0)), Python's round: half to even */
    int dy = *rh - size, dx = *rw - size;
    *top = dy / 2 + (dy % 2 && (dy / 2) % 2);
    *left = dx / 2 + (dx % 2 && (dx / 2) % 2);
}

static inline uint8_t clip8(int32_t ss)
{
    int32_t v = ss >> EVAL_PREC;
    return (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
}

/* Pillow's taps for outputs first..first+count-1 of an in -> out axis:
 * lo[i], n[i] and k[i * ksize + t] (fixed point). Returns ksize, or 0 when
 * out of memory. *lo, *n and *k are malloc'd (caller frees). */
static int pil_taps(int in, int out, int first, int count, int **lo, int **n, int32_t **k)
{
    double scale = (double)in / out, fscale = scale < 1.0 ? 1.0 : scale;
    double support = 1.0 * fscale; /* bilinear: support 1 */
    int ksize = (int)ceil(support) * 2 + 1;
    *lo = malloc((size_t)count * sizeof **lo);
    *n = malloc((size_t)count * sizeof **n);
    *k = calloc((size_t)count * ksize, sizeof **k);
    double *w = malloc((size_t)ksize * sizeof *w);
    if (!*lo || !*n || !*k || !w) {
        free(*lo), free(*n), free(*k), free(w);
        *lo = *n = NULL, *k = NULL;
        return 0;
    }
    for (int i = 0; i < count; i++) {
        double centre = 0.0 + (first + i + 0.5) * scale, ss = 1.0 / fscale, sum = 0.0;
        int xmin = (int)(centre - support + 0.5), xmax = (int)(centre + support + 0.5);
        if (xmin < 0) xmin = 0;
        if (xmax > in) xmax = in;
        xmax -= xmin;
        for (int t = 0; t < xmax; t++) {
            double x = fabs((t + xmin - centre + 0.5) * ss);
            w[t] = x < 1.0 ? 1.0 - x : 0.0;
            sum += w[t];
        }
        for (int t = 0; t < xmax; t++) {
            double v = sum != 0.0 ? w[t] / sum : w[t];
            (*k)[(size_t)i * ksize + t] = (int32_t)(v < 0 ? -0.5 + v * (1 << EVAL_PREC) : 0.5 + v * (1 << EVAL_PREC));
        }
        (*lo)[i] = xmin;
        (*n)[i] = xmax;
    }
    free(w);
    return ksize;
}

int evalset_resize_crop(uint8_t *out, int size, const uint8_t *in, int h, int w, int c)
{
    const int S = size;
    int rh, rw, top, left, rc = 0;
    evalset_geometry(h, w, S, &rh, &rw, &top, &left);
    int *xlo = NULL, *xn = NULL, *ylo = NULL, *yn = NULL, kx = 0, ky = 0;
    int32_t *xk = NULL, *yk = NULL;
    uint8_t *tmp = NULL;
    const int horiz = rw != w, vert = rh != h;
    if ((horiz && !(kx = pil_taps(w, rw, left, S, &xlo, &xn, &xk))) ||
        (vert && !(ky = pil_taps(h, rh, top, S, &ylo, &yn, &yk)))) {
        rc = moco_err(MOCO_ENOMEM, "out of memory");
        goto done;
    }
    /* the input rows the vertical pass reads: [y0, y1) */
    int y0 = vert ? ylo[0] : top, y1 = vert ? ylo[S - 1] + yn[S - 1] : top + S;
    /* src: rows y0..y1 of the horizontally resampled (or just shifted) image */
    const uint8_t *src;
    size_t stride;
    if (horiz) {
        if (!(tmp = malloc((size_t)(y1 - y0) * S * c))) {
            rc = moco_err(MOCO_ENOMEM, "out of memory");
            goto done;
        }
        for (int y = y0; y < y1; y++) {
            const uint8_t *row = in + (size_t)y * w * c;
            uint8_t *o = tmp + (size_t)(y - y0) * S * c;
            for (int j = 0; j < S; j++) {
                const int32_t *k = xk + (size_t)j * kx;
                const uint8_t *p = row + (size_t)xlo[j] * c;
                for (int ch = 0; ch < c; ch++) {
                    int32_t ss = 1 << (EVAL_PREC - 1);
                    for (int t = 0; t < xn[j]; t++) ss += p[(size_t)t * c + ch] * k[t];
                    o[(size_t)j * c + ch] = clip8(ss);
                }
            }
        }
        src = tmp;
        stride = (size_t)S * c;
    } else {
        src = in + (size_t)y0 * w * c + (size_t)left * c;
        stride = (size_t)w * c;
    }
    for (int i = 0; i < S; i++) {
        uint8_t *o = out + (size_t)i * S * c;
        if (!vert) {
            memcpy(o, src + (size_t)i * stride, (size_t)S * c);
            continue;
        }
        const int32_t *k = yk + (size_t)i * ky;
        const uint8_t *p = src + (size_t)(ylo[i] - y0) * stride;
        for (int j = 0; j < S * c; j++) {
            int32_t ss = 1 << (EVAL_PREC - 1);
            for (int t = 0; t < yn[i]; t++) ss += p[(size_t)t * stride + j] * k[t];
            o[j] = clip8(ss);
        }
    }
done:
    free(xlo), free(xn), free(xk), free(ylo), free(yn), free(yk), free(tmp);
    return rc;
}

/* Reference: output o of an in -> out axis at p[0], p[step], ..., weights
 * computed on the spot (Pillow's formulas, written out once more). */
static uint8_t ref_sample(const uint8_t *p, size_t step, int in, int out, int o)
{
    double scale = (double)in / out, support = scale > 1.0 ? scale : 1.0;
    double centre = (o + 0.5) * scale;
    int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in) hi = in;
    double sum = 0.0;
    for (int j = lo; j < hi; j++) sum += fmax(0.0, 1.0 - fabs((j - centre + 0.5) * (1.0 / support)));
    int32_t ss = 1 << (EVAL_PREC - 1);
    for (int j = lo; j < hi; j++) {
        double wt = fmax(0.0, 1.0 - fabs((j - centre + 0.5) * (1.0 / support)));
        if (sum != 0.0) wt /= sum;
        ss += p[(size_t)j * step] * (int32_t)(0.5 + wt * (1 << EVAL_PREC));
    }
    return clip8(ss);
}

int evalset_resize_crop_ref(uint8_t *out, int size, const uint8_t *in, int h, int w, int c)
{
    int rh, rw, top, left;
    evalset_geometry(h, w, size, &rh, &rw, &top, &left);
    uint8_t *a = malloc((size_t)h * rw * c), *b = malloc((size_t)rh * rw * c);
    if (!a || !b) {
        free(a), free(b);
        return moco_err(MOCO_ENOMEM, "out of memory");
    }
    /* horizontal pass (h, rw), then vertical (rh, rw), each only when needed */
    for (int y = 0; y < h; y++)
        for (int x = 0; x < rw; x++)
            for (int ch = 0; ch < c; ch++)
                a[((size_t)y * rw + x) * c + ch] = rw == w ? in[((size_t)y * w + x) * c + ch]
                                                           : ref_sample(in + (size_t)y * w * c + ch, (size_t)c, w, rw, x);
    for (int y = 0; y < rh; y++)
        for (int x = 0; x < rw; x++)
            for (int ch = 0; ch < c; ch++)
                b[((size_t)y * rw + x) * c + ch] = rh == h ? a[((size_t)y * rw + x) * c + ch]
                                                           : ref_sample(a + (size_t)x * c + ch, (size_t)rw * c, h, rh, y);
    for (int y = 0; y < size; y++)
        memcpy(out + (size_t)y * size * c, b + ((size_t)(top + y) * rw + left) * c, (size_t)size * c);
    free(a), free(b);
    return 0;
}

/* Record i resized and cropped into e->crop (S, S, 3). */
static int read_one(evalset *e, int64_t i, int32_t *label)
{
    const int S = e->size;
    size_t len;
    int rc = moco_db_get(e->db, (uint64_t)i, &e->rec, &e->reccap, &len);
    if (rc) return rc;
    moco_rec_header h;
    const uint8_t *pl;
    char what[4200]; /* the dataset and the record, for the parser's message */
    snprintf(what, sizeof what, "%s: record %" PRId64, moco_db_path(e->db), i);
    if ((rc = moco_rec_parse(e->rec, len, 1, what, &h, &pl))) return rc;
    int w = 0, hh = 0, c = 3;
    if ((rc = decode(e, i, &h, pl, &w, &hh, &c))) return rc;
    /* a labelled set's label indexes the classifier's rows and the kNN's votes: one outside
     * the classes its metadata names (a damaged header; the CRC covers the payload only) is
     * refused here, for every reader, not used as an index */
    const moco_db_meta *meta = moco_db_get_meta(e->db);
    if (evalset_labelled(e) && (h.label < 0 || (uint64_t)h.label >= meta->nclasses))
        return moco_err(MOCO_ECORRUPT, "%s: record %" PRId64 " has label %d, not one of the dataset's %llu classes [0, %llu)",
                        moco_db_path(e->db), i, (int)h.label, (unsigned long long)meta->nclasses,
                        (unsigned long long)meta->nclasses);
    *label = e->map && h.label >= 0 ? e->map[h.label] : h.label;
    if ((rc = evalset_resize_crop(e->crop, S, e->px, hh, w, c))) return rc;
    if (c == 1) /* grey to RGB (PIL's convert("RGB")), in place from the end */
        for (size_t p = (size_t)S * S; p-- > 0;) e->crop[3 * p] = e->crop[3 * p + 1] = e->crop[3 * p + 2] = e->crop[p];
    return 0;
}

int evalset_read_u8(evalset *e, int64_t start, int n, uint8_t *px, int32_t *labels)
{
    const size_t plane = (size_t)e->size * e->size * 3;
    for (int b = 0; b < n; b++) {
        int rc = read_one(e, start + b, &labels[b]);
        if (rc) return rc;
        memcpy(px + (size_t)b * plane, e->crop, plane);
    }
    return 0;
}

int evalset_read(evalset *e, int64_t start, int n, float *x, int32_t *labels)
{
    const int S = e->size;
    for (int b = 0; b < n; b++) {
        int rc = read_one(e, start + b, &labels[b]);
        if (rc) return rc;
        /* ToTensor (u8 / 255 in float32), then Normalize ((x - mean) / std) */
        float *out = x + (size_t)b * 3 * S * S;
        for (int ch = 0; ch < 3; ch++)
            for (int p = 0; p < S * S; p++)
                out[(size_t)ch * S * S + p] = ((float)e->crop[(size_t)p * 3 + ch] / 255.0f - e->mean[ch]) / e->std[ch];
    }
    return 0;
}
