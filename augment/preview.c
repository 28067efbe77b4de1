/* preview.c: `moco preview DB --recipe R --n N --out grid.png`: a PNG
 * contact sheet that shows what a recipe does: for each of n samples, spread
 * evenly over the dataset, the original (fitted into the view size) | the
 * query view | the key view, exactly as a worker makes them for --epoch.
 * Small views (CIFAR) are enlarged by an integer factor, nearest neighbour,
 * so that a person can see them. A record that fails shows as a red tile.
 * The PNG is written whole or not at all (formats/replace.h); --out must end
 * in .png. */
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <vips/vips.h>

#include "augment/augment.h"
#include "augment/cmd.h"
#include "formats/db.h"
#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/replace.h"

#define GAP 4
#define BG 40
#define HEAD 22 /* the band of column headings at the top */

/* Draw str in light ink at (x, y) of a memory image. */
static int heading(VipsImage *im, const char *str, int x, int y)
{
    VipsImage *t;
    double ink[3] = {235, 235, 235};
    if (vips_text(&t, str, "font", "sans 11", "dpi", 72, NULL)) return -1;
    int r = vips_draw_mask(im, ink, 3, t, x, y, NULL);
    g_object_unref(t);
    return r;
}

/* Put a (h, w, c) uint8 HWC tile, enlarged z times, at (x0, y0) of an RGB
 * canvas of width cw. */
static void blit(uint8_t *canvas, int cw, int x0, int y0, const uint8_t *t, int w, int h, int c, int z)
{
    for (int y = 0; y < h * z; y++)
        for (int x = 0; x < w * z; x++) {
            const uint8_t *s = t + ((size_t)(y / z) * w + x / z) * c;
            uint8_t *d = canvas + ((size_t)(y0 + y) * cw + x0 + x) * 3;
            d[0] = s[0], d[1] = s[c == 3 ? 1 : 0], d[2] = s[c == 3 ? 2 : 0];
        }
}

/* The original fitted into S x S (aspect kept), as HWC uint8 in out. */
static int fit_original(const uint8_t *px, int w, int h, int c, int S, uint8_t *out, int *ow, int *oh)
{
    *ow = w >= h ? S : (int)((double)S * w / h + 0.5), *oh = w >= h ? (int)((double)S * h / w + 0.5) : S;
    if (*ow < 1) *ow = 1;
    if (*oh < 1) *oh = 1;
    size_t n = (size_t)*ow * *oh;
    float *f = malloc(n * c * sizeof(float)), *tmp = malloc(augment_resample_tmp(w, h, *oh, *ow, c) * sizeof(float));
    int rc = f && tmp ? augment_resample(f, *oh, *ow, px, h, w, c, 0, 0, w, h, 0, tmp) : -1;
    if (!rc)
        for (size_t i = 0; i < n; i++)
            for (int k = 0; k < c; k++) {
                float v = f[k * n + i];
                out[i * c + k] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : (int)(v + 0.5f));
            }
    free(f), free(tmp);
    return rc;
}

int augment_preview_main(int argc, char **argv)
{
    const char *out = NULL;
    long n = 16, epoch = 0;
    augment_flags f;
    moco_opt opts[AUGMENT_FLAGS_NOPTS + 6];
    int no = augment_flags_opts(&f, opts);
    moco_opt extra[] = {
        {"out", MOCO_OPT_STR, &out, "output PNG", 0, 0, NULL},
        {"n", MOCO_OPT_INT, &n, "samples to show, spread over the dataset", 1, 256, NULL},
        {"epoch", MOCO_OPT_INT, &epoch, "epoch whose views to show", 0, 4294967295.0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    memcpy(opts + no, extra, sizeof extra);
    const moco_optspec spec = {"moco preview", "DB --out grid.png [options]",
                               "Write a PNG contact sheet: for each of n samples, original | query view | key view,\n"
                               "made exactly as `moco augment` makes them (same recipe flags, seed and epoch).",
                               opts, 1, 1, "out"};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    if (!moco_opts_suffix(&spec, "out", out, ".png", "the sheet is written as a PNG")) return 2;
    augment_recipe r;
    if (augment_flags_recipe(&f, &spec, &r)) {
        fprintf(stderr, "moco preview: %s\n", moco_errmsg());
        return 2;
    }
    moco_db *db = NULL;
    augment_ctx *ctx = NULL;
    uint8_t *canvas = NULL, *buf = NULL, *q = NULL, *k = NULL, *orig = NULL;
    size_t cap = 0, len;
    if (augment_vips_init(argv[0]) || moco_db_open(pos[0], &db) || augment_ctx_new(&r, &ctx)) goto fail;
    uint64_t count = moco_db_get_meta(db)->count;
    if (count == 0) {
        moco_err(MOCO_EINVAL, "%s holds no samples", pos[0]);
        goto fail;
    }
    if ((uint64_t)n > count) n = (long)count;
    int S = r.size, z = S < 96 ? (96 + S - 1) / S : 1, T = S * z; /* tile side on the sheet */
    int cols = n >= 8 ? 2 : 1, rows = (int)((n + cols - 1) / cols);
    int cellw = 3 * T + 2 * GAP, cw = cols * cellw + (cols + 1) * 3 * GAP, ch = HEAD + rows * (T + GAP) + GAP;
    size_t vb = augment_view_max_bytes(&r);
    canvas = malloc((size_t)cw * ch * 3), q = malloc(vb), k = malloc(vb), orig = malloc(vb);
    if (!canvas || !q || !k || !orig) {
        moco_err(MOCO_ENOMEM, "preview: out of memory");
        goto fail;
    }
    memset(canvas, BG, (size_t)cw * ch * 3);
    int failed = 0;
    for (long i = 0; i < n; i++) {
        uint64_t index = (uint64_t)i * count / (uint64_t)n;
        int x0 = 3 * GAP + (int)(i % cols) * (cellw + 3 * GAP), y0 = HEAD + GAP + (int)(i / cols) * (T + GAP);
        const uint8_t *px;
        int w, h, c, ow, oh;
        int32_t label;
        augment_info info;
        if ((rc = moco_db_get(db, index, &buf, &cap, &len)) ||
            (rc = augment_decode(ctx, buf, len, index, &px, &w, &h, &c, &label)) ||
            (rc = fit_original(px, w, h, c, S, orig, &ow, &oh) ? MOCO_EINVAL : 0) ||
            (rc = augment_pair(ctx, buf, len, (uint32_t)epoch, index, q, k, &info))) {
            fprintf(stderr, "moco preview: %s\n", moco_errmsg());
            failed++;
            for (int y = 0; y < T; y++)
                for (int x = 0; x < T; x++) memcpy(canvas + ((size_t)(y0 + y) * cw + x0 + x) * 3, "\xc0\x20\x20", 3);
            continue;
        }
        blit(canvas, cw, x0 + (T - ow * z) / 2, y0 + (T - oh * z) / 2, orig, ow, oh, c, z);
        blit(canvas, cw, x0 + T + GAP, y0, q, S, S, info.channels, z);
        blit(canvas, cw, x0 + 2 * (T + GAP), y0, k, S, S, info.channels, z);
    }
    VipsImage *im = vips_image_new_from_memory(canvas, (size_t)cw * ch * 3, cw, ch, 3, VIPS_FORMAT_UCHAR), *mem = NULL;
    if (im) { /* the headings, over each column of each group */
        mem = vips_image_copy_memory(im);
        g_object_unref(im);
        im = mem;
        static const char *const names[3] = {"original", "query", "key"};
        for (int g = 0; im && g < cols; g++)
            for (int j = 0; j < 3; j++)
                if (heading(im, names[j], 3 * GAP + g * (cellw + 3 * GAP) + j * (T + GAP) + 2, 4)) {
                    g_object_unref(im);
                    im = NULL;
                }
    }
    void *png = NULL;
    size_t npng = 0;
    if (!im || vips_pngsave_buffer(im, &png, &npng, NULL)) { /* libvips's message, on one line */
        if (im) g_object_unref(im);
        char why[512];
        snprintf(why, sizeof why, "%s", vips_error_buffer());
        for (char *c = why; *c; c++) if (*c == '\n') *c = *(c + 1) ? ';' : 0;
        vips_error_clear();
        moco_err(MOCO_EVIPS, "cannot encode the sheet as PNG: %s", why);
        goto fail;
    }
    g_object_unref(im);
    rc = moco_write_replace(out, png, npng); /* whole or not at all; its errors name out (and a missing directory) */
    g_free(png);
    if (rc) goto fail;
    printf("moco preview: wrote %s (%dx%d): %ld samples of %s, recipe %s, size %d, seed %" PRIu64 ", epoch %ld; "
           "columns: original | query | key%s\n",
           out, cw, ch, n, pos[0], r.name, S, r.seed, epoch, failed ? " (failed records in red)" : "");
    free(canvas), free(buf), free(q), free(k), free(orig);
    augment_ctx_destroy(&ctx);
    moco_db_destroy(&db);
    return failed ? 1 : 0;
fail:
    fprintf(stderr, "moco preview: %s\n", moco_errmsg());
    free(canvas), free(buf), free(q), free(k), free(orig);
    augment_ctx_destroy(&ctx);
    moco_db_destroy(&db);
    return 1;
}
