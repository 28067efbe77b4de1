/* augment.c: recipes, per-view parameter sampling, decoding and
 * augment_pair(), the socket-free core of the augmentation worker
 * (see augment.h for the design and the contract). */
#include "augment/augment.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <turbojpeg.h>
#include <vips/vips.h>

#include "formats/errors.h"
#include "formats/payload.h"
#include "formats/record.h"
#include "formats/rng.h"

/* Bit-identical parameters and pixels on every CPU: no fused multiply-add. */
#pragma GCC optimize("fp-contract=off")

/* ---- recipes ---- */

int augment_recipe_init(augment_recipe *r, const char *name, int size)
{
    memset(r, 0, sizeof *r);
    r->ratio_min = 3.0 / 4.0, r->ratio_max = 4.0 / 3.0;
    r->flip_p = 0.5, r->gray_p = 0.2, r->blur_sigma_min = 0.1, r->blur_sigma_max = 2.0, r->dct_scale = 1;
    r->max_pixels = AUGMENT_MAX_PIXELS;
    r->brightness = r->contrast = r->saturation = 0.4;
    if (!name) name = "v2";
    if (!strcmp(name, "v1")) { /* MoCo v1 / InstDisc */
        r->name = "v1", r->size = 224, r->scale_min = 0.2, r->scale_max = 1.0;
        r->jitter_p = 1.0, r->hue = 0.4, r->gray_first = 1;
    } else if (!strcmp(name, "v2")) { /* MoCo v2, --aug-plus */
        r->name = "v2", r->size = 224, r->scale_min = 0.2, r->scale_max = 1.0;
        r->jitter_p = 0.8, r->hue = 0.1, r->blur_p = 0.5;
    } else if (!strcmp(name, "cifar")) { /* the official MoCo CIFAR-10 demo */
        r->name = "cifar", r->size = 32, r->scale_min = 0.08, r->scale_max = 1.0;
        r->jitter_p = 0.8, r->hue = 0.1;
    } else if (!strcmp(name, "lincls")) { /* main_lincls.py's training views: crop and flip only */
        r->name = "lincls", r->size = 224, r->scale_min = 0.08, r->scale_max = 1.0;
        r->gray_p = 0;
    } else {
        return moco_err(MOCO_EINVAL, "unknown recipe '%s' (v1, v2, cifar or lincls)", name);
    }
    if (size > 0) r->size = size;
    return 0;
}

static int blur_kernel(const augment_recipe *r) { return r->blur_kernel ? r->blur_kernel : 2 * (r->size / 20) + 1; }

int augment_recipe_check(const augment_recipe *r)
{
    const double p[] = {r->flip_p, r->jitter_p, r->gray_p, r->blur_p};
    for (int i = 0; i < 4; i++)
        if (!(p[i] >= 0 && p[i] <= 1)) return moco_err(MOCO_EINVAL, "recipe %s: probability %g outside [0, 1]", r->name, p[i]);
    if (r->size < 1 || r->size > 2048) return moco_err(MOCO_EINVAL, "recipe %s: size %d outside 1..2048", r->name, r->size);
    if (!(r->scale_min > 0 && r->scale_min <= r->scale_max && r->scale_max <= 1))
        return moco_err(MOCO_EINVAL, "recipe %s: need 0 < scale min %g <= max %g <= 1", r->name, r->scale_min, r->scale_max);
    if (!(r->ratio_min > 0 && r->ratio_min <= r->ratio_max && r->ratio_max < 1e6))
        return moco_err(MOCO_EINVAL, "recipe %s: need 0 < ratio min %g <= max %g", r->name, r->ratio_min, r->ratio_max);
    /* bounded: 1e39 is inf as a float, and its NaN pixels were converted to integers */
    if (!(r->brightness >= 0 && r->contrast >= 0 && r->saturation >= 0 && r->brightness <= 1000 && r->contrast <= 1000 &&
          r->saturation <= 1000 && r->hue >= 0 && r->hue <= 0.5))
        return moco_err(MOCO_EINVAL, "recipe %s: jitter strengths must be in [0, 1000] and hue in [0, 0.5]", r->name);
    if (!(r->blur_sigma_min > 0 && r->blur_sigma_min <= r->blur_sigma_max && r->blur_sigma_max <= 1000))
        return moco_err(MOCO_EINVAL, "recipe %s: need 0 < blur sigma min <= max <= 1000", r->name);
    int k = blur_kernel(r);
    if (k < 1 || k > 257 || k % 2 == 0) return moco_err(MOCO_EINVAL, "recipe %s: blur kernel %d must be odd, 1..257", r->name, k);
    if (r->channels != 0 && r->channels != 1 && r->channels != 3)
        return moco_err(MOCO_EINVAL, "recipe %s: channels %d must be 0 (as input), 1 or 3", r->name, r->channels);
    return 0;
}

int augment_flags_opts(augment_flags *f, moco_opt *o)
{
    memset(f, 0, sizeof *f);
    /* shown as the defaults by --help: the v2 values; the named recipe's own
     * values apply to every flag not given */
    f->recipe = "v2", f->size = 224, f->scale_min = 0.2, f->scale_max = 1, f->ratio_min = 0.75, f->ratio_max = 4.0 / 3;
    f->flip_p = 0.5, f->jitter_p = 0.8, f->brightness = f->contrast = f->saturation = 0.4, f->hue = 0.1, f->gray_p = 0.2;
    f->blur_p = 0.5, f->sigma_min = 0.1, f->sigma_max = 2.0, f->max_pixels = AUGMENT_MAX_PIXELS;
    const moco_opt t[AUGMENT_FLAGS_NOPTS] = {
        {"recipe", MOCO_OPT_CHOICE, &f->recipe, "augmentation recipe; the defaults below are v2's", 0, 0, "v1|v2|cifar|lincls"},
        {"size", MOCO_OPT_INT, &f->size, "output side in pixels (cifar: 32)", 1, 2048, NULL},
        {"scale-min", MOCO_OPT_DOUBLE, &f->scale_min, "crop area fraction, low (cifar: 0.08)", 0, 1, NULL},
        {"scale-max", MOCO_OPT_DOUBLE, &f->scale_max, "crop area fraction, high", 0, 1, NULL},
        {"ratio-min", MOCO_OPT_DOUBLE, &f->ratio_min, "crop aspect ratio w/h, low (log-uniform)", 0, 0, NULL},
        {"ratio-max", MOCO_OPT_DOUBLE, &f->ratio_max, "crop aspect ratio w/h, high", 0, 0, NULL},
        {"flip-p", MOCO_OPT_DOUBLE, &f->flip_p, "horizontal flip probability", 0, 1, NULL},
        {"jitter-p", MOCO_OPT_DOUBLE, &f->jitter_p, "colour jitter probability (v1: 1)", 0, 1, NULL},
        {"brightness", MOCO_OPT_DOUBLE, &f->brightness, "jitter brightness strength", 0, 0, NULL},
        {"contrast", MOCO_OPT_DOUBLE, &f->contrast, "jitter contrast strength", 0, 0, NULL},
        {"saturation", MOCO_OPT_DOUBLE, &f->saturation, "jitter saturation strength", 0, 0, NULL},
        {"hue", MOCO_OPT_DOUBLE, &f->hue, "jitter hue strength, <= 0.5 (v1: 0.4)", 0, 0.5, NULL},
        {"gray-p", MOCO_OPT_DOUBLE, &f->gray_p, "random grayscale probability", 0, 1, NULL},
        {"blur-p", MOCO_OPT_DOUBLE, &f->blur_p, "Gaussian blur probability (v1, cifar: 0)", 0, 1, NULL},
        {"blur-sigma-min", MOCO_OPT_DOUBLE, &f->sigma_min, "blur sigma, low", 0, 0, NULL},
        {"blur-sigma-max", MOCO_OPT_DOUBLE, &f->sigma_max, "blur sigma, high", 0, 0, NULL},
        {"blur-kernel", MOCO_OPT_INT, &f->blur_kernel, "blur kernel size, odd; 0: 2*floor(size/20)+1 (23 at 224)", 0, 257, NULL},
        {"channels", MOCO_OPT_INT, &f->channels, "output channels: 0 as the input (1 or 3), 1, or 3", 0, 3, NULL},
        {"seed", MOCO_OPT_U64, &f->seed, "augmentation seed: view = f(seed, epoch, index, view)", 0, 0, NULL},
        {"no-dct", MOCO_OPT_FLAG, &f->no_dct, "never decode JPEG at a reduced DCT scale", 0, 0, NULL},
        {"max-pixels", MOCO_OPT_U64, &f->max_pixels,
         "refuse (as a failed record) an image of more pixels, before decoding it; 0: no limit", 0, 0, NULL},
    };
    memcpy(o, t, sizeof t);
    return AUGMENT_FLAGS_NOPTS;
}

int augment_flags_recipe(const augment_flags *f, const moco_optspec *spec, augment_recipe *r)
{
    int rc = augment_recipe_init(r, f->recipe, moco_opts_seen(spec, "size") ? (int)f->size : 0);
    if (rc) return rc;
#define OVR(flag, field, val) if (moco_opts_seen(spec, flag)) r->field = val
    OVR("scale-min", scale_min, f->scale_min); OVR("scale-max", scale_max, f->scale_max);
    OVR("ratio-min", ratio_min, f->ratio_min); OVR("ratio-max", ratio_max, f->ratio_max);
    OVR("flip-p", flip_p, f->flip_p); OVR("jitter-p", jitter_p, f->jitter_p);
    OVR("brightness", brightness, f->brightness); OVR("contrast", contrast, f->contrast);
    OVR("saturation", saturation, f->saturation); OVR("hue", hue, f->hue);
    OVR("gray-p", gray_p, f->gray_p); OVR("blur-p", blur_p, f->blur_p);
    OVR("blur-sigma-min", blur_sigma_min, f->sigma_min); OVR("blur-sigma-max", blur_sigma_max, f->sigma_max);
    OVR("blur-kernel", blur_kernel, (int)f->blur_kernel); OVR("channels", channels, (int)f->channels);
#undef OVR
    r->seed = f->seed;
    r->dct_scale = !f->no_dct;
    r->max_pixels = f->max_pixels;
    if (r->channels == 2) return moco_err(MOCO_EINVAL, "--channels must be 0, 1 or 3");
    return augment_recipe_check(r);
}

/* ---- parameters ---- */

static double uniform(moco_rng *g, double lo, double hi) { return lo + (hi - lo) * moco_rng_uniform(g); }

void augment_sample_params(const augment_recipe *r, int W, int H, uint64_t epoch, uint64_t index, int view,
                           augment_view_params *p)
{
    moco_rng g;
    moco_rng_init(&g, r->seed, epoch, index, (uint64_t)view);
    memset(p, 0, sizeof *p);
    /* torchvision RandomResizedCrop.get_params */
    double area = (double)W * H, lr0 = log(r->ratio_min), lr1 = log(r->ratio_max);
    int found = 0;
    for (int t = 0; t < 10 && !found; t++) {
        double target = area * uniform(&g, r->scale_min, r->scale_max);
        double ar = exp(uniform(&g, lr0, lr1));
        double w = nearbyint(sqrt(target * ar)), h = nearbyint(sqrt(target / ar)); /* Python round(): half to even */
        if (w > 0 && w <= W && h > 0 && h <= H) {
            p->crop_w = (int)w, p->crop_h = (int)h;
            p->crop_y = (int)moco_rng_below(&g, (uint64_t)(H - p->crop_h + 1));
            p->crop_x = (int)moco_rng_below(&g, (uint64_t)(W - p->crop_w + 1));
            found = 1;
        }
    }
    if (!found) { /* centre-crop fallback */
        double in_ratio = (double)W / H;
        int w = W, h = H;
        if (in_ratio < r->ratio_min) h = (int)nearbyint(W / r->ratio_min);
        else if (in_ratio > r->ratio_max) w = (int)nearbyint(H * r->ratio_max);
        if (h < 1) h = 1;
        if (w < 1) w = 1;
        if (h > H) h = H;
        if (w > W) w = W;
        p->crop_w = w, p->crop_h = h, p->crop_y = (H - h) / 2, p->crop_x = (W - w) / 2, p->crop_fallback = 1;
    }
    p->flip = moco_rng_uniform(&g) < r->flip_p;
    p->jitter = moco_rng_uniform(&g) < r->jitter_p;
    uint64_t perm[4];
    moco_rng_permutation(&g, perm, 4);
    for (int i = 0; i < 4; i++) p->order[i] = (int)perm[i];
    p->brightness = uniform(&g, fmax(0, 1 - r->brightness), 1 + r->brightness);
    p->contrast = uniform(&g, fmax(0, 1 - r->contrast), 1 + r->contrast);
    p->saturation = uniform(&g, fmax(0, 1 - r->saturation), 1 + r->saturation);
    p->hue = uniform(&g, -r->hue, r->hue);
    p->gray = moco_rng_uniform(&g) < r->gray_p;
    p->blur = moco_rng_uniform(&g) < r->blur_p;
    p->sigma = uniform(&g, r->blur_sigma_min, r->blur_sigma_max);
}

/* ---- context ---- */

struct augment_ctx {
    augment_recipe r;
    tjhandle tj;
    uint8_t *dec;       /* decoded pixels (TurboJPEG or a copy) */
    size_t dec_cap;
    void *vips_mem;     /* the last libvips decode (g_free) */
    float *view, *blur_tmp, *rs_tmp;
    size_t rs_cap;
    char what[96];
};

int augment_vips_init(const char *argv0)
{
    static int done;
    if (done) return 0;
    if (VIPS_INIT(argv0 ? argv0 : "moco")) return moco_err(MOCO_EVIPS, "libvips: %s", vips_error_buffer());
    vips_cache_set_max(0);
    vips_cache_set_max_mem(0);
    vips_concurrency_set(1);
    done = 1;
    return 0;
}

const augment_recipe *augment_ctx_recipe(const augment_ctx *ctx) { return &ctx->r; }

size_t augment_view_max_bytes(const augment_recipe *r) { return (size_t)r->size * r->size * 3; }

int augment_ctx_new(const augment_recipe *r, augment_ctx **out)
{
    *out = NULL;
    int rc = augment_recipe_check(r);
    if (rc) return rc;
    if ((rc = augment_vips_init(NULL))) return rc;
    augment_ctx *c = calloc(1, sizeof *c);
    if (!c) return moco_err(MOCO_ENOMEM, "augment: out of memory");
    c->r = *r;
    size_t n = (size_t)r->size * r->size * 3;
    c->view = malloc(n * sizeof(float));
    c->blur_tmp = malloc(n * sizeof(float));
    c->tj = tjInitDecompress();
    if (!c->view || !c->blur_tmp || !c->tj) {
        augment_ctx_destroy(&c);
        return moco_err(MOCO_ENOMEM, "augment: out of memory (or TurboJPEG init failed)");
    }
    *out = c;
    return 0;
}

void augment_ctx_destroy(augment_ctx **pc)
{
    augment_ctx *c = *pc;
    if (!c) return;
    if (c->tj) tjDestroy(c->tj);
    if (c->vips_mem) g_free(c->vips_mem);
    free(c->dec);
    free(c->view);
    free(c->blur_tmp);
    free(c->rs_tmp);
    free(c);
    *pc = NULL;
}

/* ---- decoding ---- */

static int grow(void **buf, size_t *cap, size_t need, size_t elem)
{
    if (need <= *cap) return 0;
    void *p = realloc(*buf, need * elem);
    if (!p) return -1;
    *buf = p, *cap = need;
    return 0;
}

/* Decode through libvips: sRGB or B_W, 8 bits, alpha dropped. A payload
 * whose own header differs from the record header hd (size, channels,
 * encoding) is refused. */
static int decode_vips(augment_ctx *c, const moco_rec_header *hd, const uint8_t *pl, const uint8_t **px, int *w, int *h,
                       int *ch)
{
    size_t n = hd->payload_len;
    VipsImage *im = vips_image_new_from_buffer(pl, n, "", "access", VIPS_ACCESS_SEQUENTIAL, "fail_on",
                                               VIPS_FAIL_ON_TRUNCATED, NULL);
    if (!im) goto fail;
    /* what the payload claims, checked before anything is allocated for it:
     * a few hundred bytes can claim gigapixels (found by fuzz_augment) */
    moco_payload_info claim = {moco_payload_encoding(pl, n), im->Xsize, im->Ysize, im->Bands};
    int bad = moco_rec_check_claims(hd, &claim, c->what);
    if (bad) {
        g_object_unref(im);
        return bad;
    }
    int colour = im->Bands - vips_image_hasalpha(im) >= 3;
    VipsImage *t = NULL;
    if (vips_colourspace(im, &t, colour ? VIPS_INTERPRETATION_sRGB : VIPS_INTERPRETATION_B_W, NULL)) goto fail_im;
    g_object_unref(im), im = t;
    if (im->Bands > (colour ? 3 : 1)) {
        if (vips_extract_band(im, &t, 0, "n", colour ? 3 : 1, NULL)) goto fail_im;
        g_object_unref(im), im = t;
    }
    if (im->BandFmt != VIPS_FORMAT_UCHAR) {
        if (vips_cast_uchar(im, &t, NULL)) goto fail_im;
        g_object_unref(im), im = t;
    }
    size_t sz;
    void *mem = vips_image_write_to_memory(im, &sz);
    if (!mem) goto fail_im;
    *w = im->Xsize, *h = im->Ysize, *ch = im->Bands;
    g_object_unref(im);
    if (c->vips_mem) g_free(c->vips_mem);
    c->vips_mem = mem;
    *px = mem;
    return 0;
fail_im:
    g_object_unref(im);
fail:;
    int rc = moco_err(MOCO_ECORRUPT, "%s: cannot decode payload: %s", c->what, vips_error_buffer());
    vips_error_clear();
    return rc;
}

/* Decode a JPEG with TurboJPEG at scale num/den into c->dec; falls back to
 * libvips (full scale: *num = *den = 1) when TurboJPEG refuses it. */
static int decode_jpeg(augment_ctx *c, const moco_rec_header *hd, const uint8_t *pl, int *num, int *den,
                       const uint8_t **px, int *w, int *h, int *ch)
{
    int jw, jh, ss, cs;
    size_t n = hd->payload_len;
    if (tjDecompressHeader3(c->tj, pl, (unsigned long)n, &jw, &jh, &ss, &cs) == 0 && cs != TJCS_CMYK && cs != TJCS_YCCK) {
        moco_payload_info claim = {moco_payload_encoding(pl, n), jw, jh, moco_payload_jpeg_channels(cs)};
        int rc = moco_rec_check_claims(hd, &claim, c->what); /* before allocating: see decode_vips */
        if (rc) return rc;
        tjscalingfactor sf = {*num, *den};
        int sw = TJSCALED(jw, sf), sh = TJSCALED(jh, sf), pc = cs == TJCS_GRAY ? 1 : 3;
        if (grow((void **)&c->dec, &c->dec_cap, (size_t)sw * sh * pc, 1)) return moco_err(MOCO_ENOMEM, "%s: out of memory", c->what);
        if (tjDecompress2(c->tj, pl, (unsigned long)n, c->dec, sw, 0, sh, pc == 1 ? TJPF_GRAY : TJPF_RGB, 0) == 0) {
            *px = c->dec, *w = sw, *h = sh, *ch = pc;
            return 0;
        }
    }
    *num = *den = 1; /* CMYK, a warning (e.g. truncated) or an error: let libvips judge */
    return decode_vips(c, hd, pl, px, w, h, ch);
}

/* Raw: 1 or 3 channels in place; 2 and 4 lose their alpha. */
static int decode_raw(augment_ctx *c, const moco_rec_header *hd, const uint8_t *pl, const uint8_t **px, int *ch)
{
    size_t np = (size_t)hd->width * hd->height;
    if (hd->channels == 1 || hd->channels == 3) {
        *px = pl, *ch = hd->channels;
        return 0;
    }
    int oc = hd->channels == 2 ? 1 : 3;
    if (grow((void **)&c->dec, &c->dec_cap, np * oc, 1)) return moco_err(MOCO_ENOMEM, "%s: out of memory", c->what);
    for (size_t i = 0; i < np; i++)
        for (int k = 0; k < oc; k++) c->dec[i * oc + k] = pl[i * hd->channels + k];
    *px = c->dec, *ch = oc;
    return 0;
}

static int decode(augment_ctx *c, const moco_rec_header *hd, const uint8_t *pl, int *num, int *den, const uint8_t **px,
                  int *w, int *h, int *ch)
{
    int rc;
    *w = (int)hd->width, *h = (int)hd->height;
    if (hd->encoding == MOCO_ENC_RAW) return decode_raw(c, hd, pl, px, ch);
    if (hd->encoding == MOCO_ENC_JPEG) rc = decode_jpeg(c, hd, pl, num, den, px, w, h, ch);
    else {
        *num = *den = 1;
        rc = decode_vips(c, hd, pl, px, w, h, ch);
    }
    if (rc) return rc;
    int ew = (int)(((uint64_t)hd->width * *num + *den - 1) / *den), eh = (int)(((uint64_t)hd->height * *num + *den - 1) / *den);
    if (*w != ew || *h != eh)
        return moco_err(MOCO_ECORRUPT, "%s: header says %ux%u, payload decodes to %dx%d (at scale %d/%d)", c->what,
                        hd->width, hd->height, *w, *h, *num, *den);
    return 0;
}

static int parse(augment_ctx *c, const uint8_t *rec, size_t len, moco_rec_header *hd, const uint8_t **pl)
{
    int rc = moco_rec_parse(rec, len, 1, c->what, hd, pl);
    if (rc) return rc;
    if (hd->encoding == MOCO_ENC_RAW && hd->payload_len != (uint64_t)hd->width * hd->height * hd->channels)
        return moco_err(MOCO_ECORRUPT, "%s: raw payload of %u bytes, expected %ux%ux%u", c->what, hd->payload_len,
                        hd->width, hd->height, hd->channels);
    /* a decompression bomb (a damaged or forged database: mkdb has its own --max-pixels):
     * refused before any decoder allocates for it or spends seconds on it */
    uint64_t px = (uint64_t)hd->width * hd->height;
    if (c->r.max_pixels && px > c->r.max_pixels)
        return moco_err(MOCO_EINVAL, "%s: %ux%u = %" PRIu64 " pixels, over --max-pixels %" PRIu64 " (not decoded)", c->what,
                        hd->width, hd->height, px, c->r.max_pixels);
    return 0;
}

int augment_decode(augment_ctx *c, const uint8_t *rec, size_t len, uint64_t index, const uint8_t **px, int *w, int *h,
                   int *ch, int32_t *label)
{
    snprintf(c->what, sizeof c->what, "record %llu", (unsigned long long)index);
    moco_rec_header hd;
    const uint8_t *pl;
    int rc = parse(c, rec, len, &hd, &pl), num = 1, den = 1;
    if (rc) return rc;
    *label = hd.label;
    return decode(c, &hd, pl, &num, &den, px, w, h, ch);
}

/* ---- one view ---- */

/* The largest DCT scale down (num/8) at which both crops still cover the
 * output size; 8/8 when none. */
static void dct_scale(const augment_recipe *r, const augment_view_params p[2], int *num, int *den)
{
    *num = 8, *den = 8;
    if (!r->dct_scale) return;
    for (int k = 1; k < 8; k++) {
        int ok = 1;
        for (int v = 0; v < 2; v++)
            if ((int64_t)p[v].crop_w * k < (int64_t)r->size * 8 || (int64_t)p[v].crop_h * k < (int64_t)r->size * 8) ok = 0;
        if (ok) {
            *num = k;
            return;
        }
    }
}

static void apply_op(float *f, size_t n, int c, const augment_view_params *p, int op)
{
    switch (op) {
    case 0: augment_brightness(f, n, c, p->brightness); break;
    case 1: augment_contrast(f, n, c, p->contrast); break;
    case 2: augment_saturation(f, n, c, p->saturation); break;
    default: augment_hue(f, n, c, p->hue); break;
    }
}

static int make_view(augment_ctx *c, const uint8_t *px, int w, int h, int ch, double fx, double fy,
                     const augment_view_params *p, uint8_t *out, int oc)
{
    const augment_recipe *r = &c->r;
    int S = r->size;
    double bx = p->crop_x * fx, by = p->crop_y * fy, bw = p->crop_w * fx, bh = p->crop_h * fy;
    size_t need = augment_resample_tmp(bw, bh, S, S, ch);
    if (grow((void **)&c->rs_tmp, &c->rs_cap, need, sizeof(float))) return moco_err(MOCO_ENOMEM, "%s: out of memory", c->what);
    float *f = c->view;
    if (augment_resample(f, S, S, px, h, w, ch, bx, by, bw, bh, p->flip, c->rs_tmp))
        return moco_err(MOCO_EINVAL, "%s: cannot resample crop %dx%d+%d+%d", c->what, p->crop_w, p->crop_h, p->crop_x, p->crop_y);
    size_t n = (size_t)S * S;
    if (r->gray_first && p->gray) augment_grayscale(f, n, ch);
    if (p->jitter)
        for (int i = 0; i < 4; i++) apply_op(f, n, ch, p, p->order[i]);
    if (!r->gray_first && p->gray) augment_grayscale(f, n, ch);
    if (p->blur) augment_blur(f, S, S, ch, blur_kernel(r), p->sigma, c->blur_tmp);
    augment_quantize(out, f, n, ch, oc);
    return 0;
}

int augment_view(augment_ctx *c, const uint8_t *px, int w, int h, int ch, const augment_view_params *p, uint8_t *out,
                 int oc)
{
    snprintf(c->what, sizeof c->what, "view of a %dx%dx%d image", w, h, ch);
    if ((ch != 1 && ch != 3) || (oc != 1 && oc != 3) || p->crop_x < 0 || p->crop_y < 0 || p->crop_w < 1 || p->crop_h < 1 ||
        p->crop_x + p->crop_w > w || p->crop_y + p->crop_h > h)
        return moco_err(MOCO_EINVAL, "%s: bad channels or crop", c->what);
    return make_view(c, px, w, h, ch, 1.0, 1.0, p, out, oc);
}

int augment_pair(augment_ctx *c, const uint8_t *rec, size_t len, uint32_t epoch, uint64_t index, uint8_t *q, uint8_t *k,
                 augment_info *info)
{
    snprintf(c->what, sizeof c->what, "record %llu (epoch %u)", (unsigned long long)index, epoch);
    augment_info tmp;
    if (!info) info = &tmp;
    memset(info, 0, sizeof *info);
    moco_rec_header hd;
    const uint8_t *pl;
    int rc = parse(c, rec, len, &hd, &pl);
    if (rc) return rc;
    for (int v = 0; v < 2; v++)
        augment_sample_params(&c->r, (int)hd.width, (int)hd.height, epoch, index, v, &info->params[v]);
    int num = 1, den = 1;
    if (hd.encoding == MOCO_ENC_JPEG) dct_scale(&c->r, info->params, &num, &den);
    const uint8_t *px;
    int w, h, ch;
    if ((rc = decode(c, &hd, pl, &num, &den, &px, &w, &h, &ch))) return rc;
    int oc = c->r.channels ? c->r.channels : ch;
    info->label = hd.label, info->height = info->width = c->r.size, info->channels = oc;
    info->src_w = (int)hd.width, info->src_h = (int)hd.height, info->decoded_w = w, info->decoded_h = h;
    double fx = (double)num / den, fy = fx;
    if ((rc = make_view(c, px, w, h, ch, fx, fy, &info->params[0], q, oc))) return rc;
    return make_view(c, px, w, h, ch, fx, fy, &info->params[1], k, oc);
}
