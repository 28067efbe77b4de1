/* evalset.c: evaluation inputs from a dataset LMDB (see evalset.h). */
#include "trainer/evalset.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <vips/vips.h>

#include "formats/db.h"
#include "formats/errors.h"
#include "formats/record.h"

struct evalset {
    moco_db *db;
    int size;
    float mean[3], std[3];
    tjhandle tj;
    uint8_t *rec, *px;
    size_t reccap, pxcap;
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
    e->size = size;
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
    free(e);
    *pe = NULL;
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

/* Decode record i into e->px (h, w, c uint8), c = 1 or 3. */
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
    if (h->encoding == MOCO_ENC_JPEG && e->tj && (h->channels == 1 || h->channels == 3)) {
        *c = h->channels;
        if (grow(e, (size_t)*w * *hh * 3)) return MOCO_ENOMEM;
        if (tjDecompress2(e->tj, pl, h->payload_len, e->px, *w, 0, *hh, *c == 1 ? TJPF_GRAY : TJPF_RGB, 0) == 0 ||
            tjGetErrorCode(e->tj) == TJERR_WARNING)
            return 0;
    }
    /* anything else: libvips, flattened to 8-bit sRGB or grey */
    VipsImage *im = vips_image_new_from_buffer(pl, h->payload_len, "", NULL), *t = NULL;
    if (!im) goto bad;
    if (vips_image_hasalpha(im)) {
        if (vips_flatten(im, &t, NULL)) goto bad;
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

/* Bilinear sample with the antialiasing support of a downscale (Pillow's
 * triangle filter) along one axis: weights for output o. */
static int taps(int in, int out, int o, double scale_off, int *first, float *wts, int maxw)
{
    double scale = (double)in / out, support = scale > 1 ? scale : 1.0;
    double centre = (o + 0.5) * scale + scale_off;
    int lo = (int)(centre - support + 0.5), hi = (int)(centre + support + 0.5);
    if (lo < 0) lo = 0;
    if (hi > in) hi = in;
    if (hi - lo > maxw) hi = lo + maxw;
    double sum = 0;
    for (int j = lo; j < hi; j++) {
        double x = (j + 0.5 - centre) / support;
        double wv = x < 0 ? 1 + x : 1 - x;
        wts[j - lo] = (float)(wv > 0 ? wv : 0);
        sum += wts[j - lo];
    }
    for (int j = lo; j < hi; j++) wts[j - lo] = sum > 0 ? (float)(wts[j - lo] / sum) : 0;
    *first = lo;
    return hi - lo;
}

int evalset_read(evalset *e, int64_t start, int n, float *x, int32_t *labels)
{
    const int S = e->size;
    for (int b = 0; b < n; b++) {
        int64_t i = start + b;
        size_t len;
        int rc = moco_db_get(e->db, (uint64_t)i, &e->rec, &e->reccap, &len);
        if (rc) return rc;
        moco_rec_header h;
        const uint8_t *pl;
        char what[64];
        snprintf(what, sizeof what, "record %" PRId64, i);
        if ((rc = moco_rec_parse(e->rec, len, 1, what, &h, &pl))) return rc;
        int w = 0, hh = 0, c = 3;
        if ((rc = decode(e, i, &h, pl, &w, &hh, &c))) return rc;
        labels[b] = h.label;
        /* Resize(S): shorter side to S; CenterCrop(S) */
        int rw = w <= hh ? S : (int)((double)w * S / hh + 0.5), rh = w <= hh ? (int)((double)hh * S / w + 0.5) : S;
        if (w == S && hh == S) rw = rh = S;
        int ox = (rw - S) / 2, oy = (rh - S) / 2;
        float *out = x + (size_t)b * 3 * S * S;
        enum { MAXW = 512 };
        float wy[MAXW], wx[MAXW];
        for (int oyi = 0; oyi < S; oyi++) {
            int fy, ny = taps(hh, rh, oyi + oy, 0, &fy, wy, MAXW);
            for (int oxi = 0; oxi < S; oxi++) {
                int fx, nx = taps(w, rw, oxi + ox, 0, &fx, wx, MAXW);
                float acc[3] = {0, 0, 0};
                for (int a = 0; a < ny; a++)
                    for (int q = 0; q < nx; q++) {
                        const uint8_t *p = e->px + ((size_t)(fy + a) * w + (fx + q)) * c;
                        float wt = wy[a] * wx[q];
                        for (int ch = 0; ch < 3; ch++) acc[ch] += wt * p[c == 1 ? 0 : ch];
                    }
                for (int ch = 0; ch < 3; ch++)
                    out[((size_t)ch * S + oyi) * S + oxi] = (acc[ch] / 255.0f - e->mean[ch]) / e->std[ch];
            }
        }
    }
    return 0;
}
