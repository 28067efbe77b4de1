/* augment.h: MoCo's two-view augmentation of one sample record, independent
 * of any socket (the worker, the preview, the benchmark and the pipeline all
 * call augment_pair()).
 *
 * Design. A record is decoded once (TurboJPEG for JPEG, with DCT scaling
 * when both crops allow it; libvips for PNG and for any JPEG TurboJPEG
 * refuses; raw pixels used in place). Each view's random parameters are drawn
 * from its own stream, moco_rng(seed, epoch, index, view) with view 0 =
 * query, 1 = key, so a view is a pure function of (recipe, seed, epoch,
 * index, view, record bytes): bit-identical whichever process computes it.
 * Each view is then made by one fused chain over float pixels (0..255 scale):
 * crop + antialiased bilinear resize + flip (one separable resample), the
 * colour ops in the recipe's order, optional blur, and one final rounding.
 *
 * Semantics follow torchvision (RandomResizedCrop, ColorJitter,
 * RandomGrayscale, GaussianBlur, RandomHorizontalFlip); the deviations are
 * listed in augment/README.md. Every function returns 0 or a MOCO_E* code
 * with a message naming the record (moco_errmsg()). */
#ifndef AUGMENT_AUGMENT_H
#define AUGMENT_AUGMENT_H

#include <stddef.h>
#include <stdint.h>

#include "formats/opts.h"

/* One recipe: every parameter of the chain. */
typedef struct {
    const char *name;           /* "v1", "v2", "cifar" or "lincls" */
    int size;                   /* output side (square views) */
    double scale_min, scale_max; /* RandomResizedCrop area fraction */
    double ratio_min, ratio_max; /* aspect ratio range (sampled log-uniformly) */
    double flip_p;              /* RandomHorizontalFlip */
    double jitter_p;            /* RandomApply(ColorJitter) probability */
    double brightness, contrast, saturation, hue; /* ColorJitter strengths */
    double gray_p;              /* RandomGrayscale */
    int gray_first;             /* 1: grayscale before jitter (v1), 0: after */
    double blur_p;              /* RandomApply(GaussianBlur) probability */
    double blur_sigma_min, blur_sigma_max;
    int blur_kernel;            /* odd kernel size; 0: 2*floor(size/20)+1 (23 at 224) */
    int channels;               /* output channels: 0 = as the input (1 or 3), 1, 3 */
    uint64_t seed;
    int dct_scale;              /* 1: let TurboJPEG decode at 1/2..1/8 when both crops allow */
    uint64_t max_pixels;        /* a record whose header claims more is refused, not decoded (0: no limit) */
} augment_recipe;

/* The default of max_pixels: PIL's DecompressionBombError threshold (twice
 * Image.MAX_IMAGE_PIXELS), which torchvision's readers inherit. Above
 * mkdb's default --max-pixels, so a database made with defaults never meets it. */
#define AUGMENT_MAX_PIXELS 178956970ull

/* Fill r with the named recipe at output side `size` (0: the recipe's
 * default, 224, or 32 for cifar). Returns 0 or MOCO_EINVAL. */
int augment_recipe_init(augment_recipe *r, const char *name, int size);

/* Check ranges (probabilities in [0,1], 0 < scale_min <= scale_max <= 1,
 * 0 < ratio_min <= ratio_max, hue <= 0.5, odd kernel, ...). */
int augment_recipe_check(const augment_recipe *r);

/* Command-line flags of a recipe, shared by `moco augment`, `moco preview`
 * and `moco bench augment`: augment_flags_opts() writes its entries into
 * opts (room for AUGMENT_FLAGS_NOPTS) and returns how many it wrote; after
 * parsing, augment_flags_recipe() builds the recipe: the named recipe, then
 * every flag the user gave overrides its parameter. */
#define AUGMENT_FLAGS_NOPTS 21
typedef struct {
    const char *recipe;
    long size, blur_kernel, channels;
    double scale_min, scale_max, ratio_min, ratio_max, flip_p, jitter_p;
    double brightness, contrast, saturation, hue, gray_p, blur_p, sigma_min, sigma_max;
    uint64_t seed, max_pixels;
    int no_dct;
} augment_flags;
int augment_flags_opts(augment_flags *f, moco_opt *opts);
int augment_flags_recipe(const augment_flags *f, const moco_optspec *spec, augment_recipe *r);

/* The random parameters of one view (all drawn, even for ops not applied). */
typedef struct {
    int crop_x, crop_y, crop_w, crop_h; /* in the source image, torchvision's (j, i, w, h) */
    int crop_fallback;                  /* 1 if the 10 tries failed and the centre crop was used */
    int flip;
    int jitter;                         /* ColorJitter applied */
    int order[4];                       /* 0 brightness, 1 contrast, 2 saturation, 3 hue */
    double brightness, contrast, saturation, hue;
    int gray;
    int blur;
    double sigma;
} augment_view_params;

/* Draw the parameters of view `view` of sample (epoch, index) for a source
 * of src_w x src_h. Draw order (the contract): up to 10 x (area u, log-ratio
 * u [, y below, x below]); flip u; jitter u, permutation of 4, b, c, s, h;
 * gray u; blur u, sigma. Never fails. */
void augment_sample_params(const augment_recipe *r, int src_w, int src_h, uint64_t epoch, uint64_t index, int view,
                           augment_view_params *p);

typedef struct augment_ctx augment_ctx;

/* A context owns the decoder handles and scratch buffers of one thread.
 * Returns 0, MOCO_EINVAL (bad recipe) or MOCO_ENOMEM; *out NULL on failure. */
int augment_ctx_new(const augment_recipe *r, augment_ctx **out);
void augment_ctx_destroy(augment_ctx **ctx);
const augment_recipe *augment_ctx_recipe(const augment_ctx *ctx);

/* Largest view, in bytes: size * size * 3. */
size_t augment_view_max_bytes(const augment_recipe *r);

typedef struct {
    int32_t label;
    int height, width, channels;    /* of each view */
    int src_w, src_h;               /* the record's image */
    int decoded_w, decoded_h;       /* after DCT scaling */
    augment_view_params params[2];
} augment_info;

/* Augment one record value (the LMDB value, header included): parse and
 * check it (CRC included), decode once, write the query view into q and the
 * key view into k (each augment_view_max_bytes() long; HWC uint8; the first
 * height*width*channels bytes are used). Returns 0 or MOCO_ECORRUPT (bad
 * header, CRC mismatch, undecodable or truncated payload, size mismatch),
 * MOCO_EFORMAT (unknown encoding or version), MOCO_EVIPS, MOCO_ENOMEM; the
 * message names "record <index> (epoch <epoch>)". */
int augment_pair(augment_ctx *ctx, const uint8_t *rec, size_t len, uint32_t epoch, uint64_t index, uint8_t *q,
                 uint8_t *k, augment_info *info);

/* Make one view of decoded pixels px (h, w, ch) HWC with the given
 * parameters (as augment_pair does, without DCT scaling) into out (oc
 * channels). For tests and tools that choose the parameters themselves.
 * Returns 0 or MOCO_EINVAL (crop outside the image, bad channels). */
int augment_view(augment_ctx *ctx, const uint8_t *px, int w, int h, int ch, const augment_view_params *p, uint8_t *out,
                 int oc);

/* Decode a record at full resolution (no augmentation), for the preview and
 * the decode benchmark. *px points into ctx (valid until the next call) or
 * into rec; channels is 1 or 3. */
int augment_decode(augment_ctx *ctx, const uint8_t *rec, size_t len, uint64_t index, const uint8_t **px, int *w,
                   int *h, int *channels, int32_t *label);

/* Set up libvips for a worker: operation cache off, one thread. Returns 0
 * or MOCO_EVIPS. Idempotent. */
int augment_vips_init(const char *argv0);

/* ---- pixel kernels (augment/pixels.c), exposed for the tests ----
 * Float images are PLANAR (c planes of h*w, values on the 0..255 scale),
 * so that every colour op is a contiguous, vectorisable loop; the caller
 * interleaves to HWC when it rounds to uint8. */

/* Antialiased bilinear resample of the box (bx, by, bw, bh) (in source
 * pixels, may be fractional) of src (sh, sw, c) uint8 HWC into dst (c, dh,
 * dw) planar float, with Pillow's / torchvision's filter (triangle support
 * scaled by the shrink factor, taps clamped to the box, as torchvision
 * crops first), flipped horizontally if flip. tmp holds
 * augment_resample_tmp(bw, bh, dh, dw, c) floats (rows, taps and
 * weights: no static state). Returns 0, or -1 for an empty box. */
size_t augment_resample_tmp(double bw, double bh, int dh, int dw, int c);
int augment_resample(float *dst, int dh, int dw, const uint8_t *src, int sh, int sw, int c, double bx, double by,
                     double bw, double bh, int flip, float *tmp);

/* Colour ops in place on a planar float image of n pixels per plane
 * (c = 1 or 3), with torchvision's formulas and clamping to [0, 255]:
 * brightness x*f; contrast f*x + (1-f)*mean(gray); saturation
 * f*x + (1-f)*gray; hue: rotate H in HSV by f (|f| <= 0.5); gray uses
 * 0.299, 0.587, 0.114. Saturation, hue and grayscale are no-ops when c=1. */
void augment_brightness(float *img, size_t n, int c, double f);
void augment_contrast(float *img, size_t n, int c, double f);
void augment_saturation(float *img, size_t n, int c, double f);
void augment_hue(float *img, size_t n, int c, double f);
void augment_grayscale(float *img, size_t n, int c);

/* Gaussian blur of a planar (c, h, w) image in place: torchvision's kernel
 * (ksize odd <= AUGMENT_BLUR_KMAX, sigma) with reflect padding; outer taps
 * whose total weight is below 0.02/255 per side are skipped.
 * augment_blur_radius() writes the ksize weights into k and returns the
 * radius used. tmp holds h*w floats; w <= 2048 (a wider image is left as is). */
#define AUGMENT_BLUR_KMAX 257
int augment_blur_radius(int ksize, double sigma, float *k);
void augment_blur(float *img, int h, int w, int c, int ksize, double sigma, float *tmp);

/* Round planar float (c planes of n pixels) to uint8 HWC with oc channels:
 * as is, grey replicated (c 1, oc 3) or made grey (c 3, oc 1, ITU-R 601
 * weights); values clamped to [0, 255] and rounded half up. */
void augment_quantize(uint8_t *out, const float *f, size_t n, int c, int oc);

#endif
