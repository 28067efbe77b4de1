/* test_evalset.c: evaluation preprocessing (trainer/evalset.h) against
 * torchvision's eval transforms, bit for bit: tools/gen_eval_golden.py ran
 * Resize(R), CenterCrop(size), ToTensor(), Normalize(mean, std) (R = size at
 * 32 px, main_lincls.py's ratio 256 / 224 at 96 px: 109) (torchvision
 * 0.14 on Pillow 9.4) on non-square JPEGs (4:2:0, 4:4:4, progressive, grey)
 * and a PNG stored in tests/golden/eval/. Here the same files are packed
 * with `moco mkdb` (stored as they are) and read back through evalset: the
 * uint8 pixels after resize + crop must be identical, the normalised floats
 * within 1e-6. Also: the fast resize kernel against its plain reference on
 * seeded random images (up- and downscaling, 1 and 3 channels), and the
 * geometry (the resize side, truncated long side, round-half-even crop
 * offsets; a 256 px image at 224 is its central 224 px, as main_lincls.py's
 * Resize(256) + CenterCrop(224) makes it); alpha dropped, as PIL drops it. */
#include "tests/testutil.h"

#include <math.h>
#include <vips/vips.h>

#include "formats/errors.h"
#include "formats/normalize.h"
#include "formats/rng.h"
#include "trainer/evalmodel.h"
#include "trainer/evalset.h"

#define GOLDEN "tests/golden/eval/"
#define SEED 20261129u

/* sorted by name, so that mkdb's class index (sorted folders) is the index */
static const char *SOURCES[] = {"e1_formica.jpg", "e2_ant1.jpg",   "e3_antphotos.jpg",
                                "e4_wide.jpg",    "e5_grey.jpg",   "e6_synth.png"};
enum { NSRC = sizeof SOURCES / sizeof *SOURCES };

typedef struct {
    uint32_t size, src_w, src_h, rw, rh, top, left;
    float mean[3], std[3];
    uint8_t *crop; /* (size, size, 3) */
    float *x;      /* (3, size, size) */
} golden;

static void golden_load(const char *src, int size, golden *g)
{
    char path[512], stem[128];
    snprintf(stem, sizeof stem, "%s", src);
    *strrchr(stem, '.') = 0;
    snprintf(path, sizeof path, GOLDEN "%s_s%d.bin", stem, size);
    FILE *f = fopen(path, "rb");
    if (!f) fail_msg("cannot open %s (run /usr/bin/python3 tools/gen_eval_golden.py)", path);
    char magic[4];
    uint32_t hd[8];
    assert_int_equal(fread(magic, 1, 4, f), 4);
    assert_memory_equal(magic, "MEVG", 4);
    assert_int_equal(fread(hd, 4, 8, f), 8);
    assert_int_equal(hd[0], 1);
    g->size = hd[1], g->src_w = hd[2], g->src_h = hd[3], g->rw = hd[4], g->rh = hd[5], g->top = hd[6], g->left = hd[7];
    assert_int_equal(g->size, size);
    assert_int_equal(fread(g->mean, 4, 3, f), 3);
    assert_int_equal(fread(g->std, 4, 3, f), 3);
    size_t n = (size_t)size * size * 3;
    g->crop = malloc(n);
    g->x = malloc(n * sizeof(float));
    assert_int_equal(fread(g->crop, 1, n, f), n);
    assert_int_equal(fread(g->x, sizeof(float), n, f), n);
    fclose(f);
}

/* tests/golden/eval/<src> into <dir>/src/<stem>/<src>, one class each, then
 * `moco mkdb` into <dir>/db. */
static void make_db(const char *dir)
{
    for (int i = 0; i < NSRC; i++) {
        char stem[128];
        snprintf(stem, sizeof stem, "%s", SOURCES[i]);
        *strrchr(stem, '.') = 0;
        assert_int_equal(tu_sh("mkdir -p %s/src/%s && cp " GOLDEN "%s %s/src/%s/", dir, stem, SOURCES[i], dir, stem), 0);
    }
    if (tu_sh("%s mkdb %s/src %s/db --quiet >%s/mkdb.txt 2>&1", tu_moco(), dir, dir, dir) != 0) {
        tu_sh("cat %s/mkdb.txt", dir);
        fail_msg("moco mkdb failed (MOCO=%s)", tu_moco());
    }
}

static void test_golden_torchvision(void **st)
{
    (void)st;
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("evalset_golden"));
    make_db(dir);
    char db[4200];
    snprintf(db, sizeof db, "%s/db", dir);
    const int sizes[2] = {32, 96};
    int bad = 0;
    for (int si = 0; si < 2; si++) {
        const int S = sizes[si];
        golden g[NSRC];
        for (int i = 0; i < NSRC; i++) golden_load(SOURCES[i], S, &g[i]);
        /* the documented constants, as the commands take them: --normalize
         * auto at 96 px and imagenet at 32 px are torchvision's ImageNet
         * mean and std, the golden file's Normalize */
        float mean[3], std[3];
        evalmodel_norm(S > 64 ? "auto" : "imagenet", S, mean, std);
        for (int c = 0; c < 3; c++) {
            assert_true(mean[c] == g[0].mean[c]);
            assert_true(std[c] == g[0].std[c]);
        }
        evalset *e = NULL;
        int rc = evalset_open(db, S, mean, std, &e);
        if (rc) fail_msg("evalset_open %s: %s", db, moco_errmsg());
        assert_int_equal(evalset_count(e), NSRC);
        size_t n = (size_t)S * S * 3;
        uint8_t *px = malloc(n * NSRC);
        float *x = malloc(n * NSRC * sizeof(float));
        int32_t lab[NSRC], lab2[NSRC];
        if ((rc = evalset_read_u8(e, 0, NSRC, px, lab)) || (rc = evalset_read(e, 0, NSRC, x, lab2)))
            fail_msg("evalset_read: %s", moco_errmsg());
        for (int i = 0; i < NSRC; i++) {
            assert_int_equal(lab[i], i);
            assert_int_equal(lab2[i], i);
            int rh, rw, top, left;
            evalset_geometry((int)g[i].src_h, (int)g[i].src_w, S, &rh, &rw, &top, &left);
            int geo_ok = rh == (int)g[i].rh && rw == (int)g[i].rw && top == (int)g[i].top && left == (int)g[i].left;
            int maxd = 0;
            size_t ndiff = 0;
            for (size_t j = 0; j < n; j++) {
                int d = abs((int)px[i * n + j] - (int)g[i].crop[j]);
                if (d > maxd) maxd = d;
                ndiff += d != 0;
            }
            double fmax = 0;
            for (size_t j = 0; j < n; j++) {
                double d = fabs((double)x[i * n + j] - g[i].x[j]);
                if (!(d <= fmax)) fmax = d; /* NaN counts as worst */
            }
            printf("  %-17s size %2d: %3dx%-3d -> %3dx%-3d crop (%2d,%2d) %s | uint8 max diff %3d, %5zu of %zu differ"
                   " | float max |diff| %.3g (tol 1e-6)\n",
                   SOURCES[i], S, g[i].src_w, g[i].src_h, g[i].rw, g[i].rh, g[i].top, g[i].left,
                   geo_ok ? "geometry ok" : "GEOMETRY DIFFERS", maxd, ndiff, n, fmax);
            if (!geo_ok)
                printf("    ours: %dx%d crop (%d,%d)\n", rw, rh, top, left);
            bad += !geo_ok || ndiff != 0 || !(fmax <= 1e-6);
        }
        free(px), free(x);
        for (int i = 0; i < NSRC; i++) free(g[i].crop), free(g[i].x);
        evalset_destroy(&e);
    }
    /* and the CIFAR-10 recipe's (--normalize auto at 32 px): the official
     * MoCo CIFAR-10 demo's Normalize, formats/normalize.h's cifar constants
     * (their one home; tools/python/tests/test_constants.py compares them
     * with the demo's numbers in the Python tools) */
    const float cm[3] = MOCO_NORM_CIFAR_MEAN, cs[3] = MOCO_NORM_CIFAR_STD;
    float m32[3], s32[3];
    evalmodel_norm("auto", 32, m32, s32);
    for (int c = 0; c < 3; c++) {
        assert_true(m32[c] == cm[c]);
        assert_true(s32[c] == cs[c]);
    }
    if (bad) fail_msg("%d of %d golden cases differ from torchvision", bad, 2 * NSRC);
}

/* The fast kernel (crop region only, precomputed fixed-point taps) against
 * the plain reference (whole image resized, then cropped). */
static void test_kernel_vs_reference(void **st)
{
    (void)st;
    moco_rng r;
    moco_rng_init(&r, SEED, 0, 0, 0);
    printf("  seed %u\n", SEED);
    int cases = 0;
    size_t values = 0;
    for (int t = 0; t < 300; t++) {
        int S = 1 + (int)moco_rng_below(&r, t < 150 ? 40 : 120);
        int h = 1 + (int)moco_rng_below(&r, t % 3 == 0 ? 4 * S + 8 : 300);
        int w = 1 + (int)moco_rng_below(&r, t % 5 == 0 ? S + 3 : 300);
        int c = t % 4 == 0 ? 1 : 3;
        size_t ni = (size_t)h * w * c, no = (size_t)S * S * c;
        uint8_t *in = malloc(ni), *a = malloc(no), *b = malloc(no);
        /* smooth plus noise, with saturated patches for the clipping */
        for (size_t j = 0; j < ni; j++) {
            size_t p = j / c;
            int v = (int)((p % w) * 255 / w + (p / w) * 97 / h) + (int)moco_rng_below(&r, 64) - 32;
            in[j] = (uint8_t)(v < 0 ? 0 : v > 255 ? 255 : v);
        }
        assert_int_equal(evalset_resize_crop(a, S, in, h, w, c), 0);
        assert_int_equal(evalset_resize_crop_ref(b, S, in, h, w, c), 0);
        size_t diff = 0;
        for (size_t j = 0; j < no; j++) diff += a[j] != b[j];
        if (diff) fail_msg("case %d: %dx%dx%d to %d: %zu of %zu values differ from the reference", t, w, h, c, S, diff, no);
        cases++;
        values += no;
        free(in), free(a), free(b);
    }
    printf("  %d random images (%zu values): fast kernel == reference\n", cases, values);
}

static void test_geometry(void **st)
{
    (void)st;
    int rh, rw, top, left;
    /* torchvision: long side int(size * long / short), not rounded */
    evalset_geometry(130, 193, 32, &rh, &rw, &top, &left); /* 32 * 193 / 130 = 47.5 */
    assert_int_equal(rh, 32), assert_int_equal(rw, 47), assert_int_equal(top, 0), assert_int_equal(left, 8);
    evalset_geometry(272, 199, 32, &rh, &rw, &top, &left); /* 43.7 -> 43; (43 - 32) / 2 = 5.5 -> 6 */
    assert_int_equal(rh, 43), assert_int_equal(rw, 32), assert_int_equal(top, 6), assert_int_equal(left, 0);
    /* the resize side: the size itself at CIFAR sizes, main_lincls.py's 256 / 224 above 64 px (floor) */
    assert_int_equal(evalset_resize_side(32), 32), assert_int_equal(evalset_resize_side(64), 64);
    assert_int_equal(evalset_resize_side(65), 74), assert_int_equal(evalset_resize_side(96), 109);
    assert_int_equal(evalset_resize_side(224), 256), assert_int_equal(evalset_resize_side(4096), 4681);
    evalset_geometry(131, 96, 96, &rh, &rw, &top, &left); /* 109 x int(148.7); 26, 6.5 -> 6 (half to even) */
    assert_int_equal(rh, 148), assert_int_equal(rw, 109), assert_int_equal(top, 26), assert_int_equal(left, 6);
    evalset_geometry(100, 125, 96, &rh, &rw, &top, &left); /* int(136.25) x 109; 20, 6.5 -> 6 */
    assert_int_equal(rw, 136), assert_int_equal(rh, 109), assert_int_equal(left, 20), assert_int_equal(top, 6);
    evalset_geometry(10, 15, 96, &rh, &rw, &top, &left); /* upscale: int(163.5); 33.5 -> 34 (half to even) */
    assert_int_equal(rh, 109), assert_int_equal(rw, 163), assert_int_equal(left, 34);
    evalset_geometry(375, 500, 224, &rh, &rw, &top, &left); /* ImageNet: 256 x int(341.3); 16, 58.5 -> 58 */
    assert_int_equal(rh, 256), assert_int_equal(rw, 341), assert_int_equal(top, 16), assert_int_equal(left, 58);
    evalset_geometry(256, 256, 224, &rh, &rw, &top, &left); /* no resize: the central 224 px */
    assert_int_equal(rh, 256), assert_int_equal(rw, 256), assert_int_equal(top, 16), assert_int_equal(left, 16);
    /* and the pixels: a 256 x 256 image's view at 224 is its centre, as main_lincls.py's
     * Resize(256) + CenterCrop(224) (before: the whole image shrunk to 224) */
    uint8_t *big = malloc(256 * 256 * 3), *v = malloc(224 * 224 * 3);
    for (int i = 0; i < 256 * 256 * 3; i++) big[i] = (uint8_t)(i * 131 + i / 768);
    assert_int_equal(evalset_resize_crop(v, 224, big, 256, 256, 3), 0);
    for (int y = 0; y < 224; y++) assert_memory_equal(v + (size_t)y * 224 * 3, big + ((size_t)(y + 16) * 256 + 16) * 3, 224 * 3);
    free(big), free(v);
    evalset_geometry(50, 55, 32, &rh, &rw, &top, &left); /* 35.2 -> 35; 1.5 -> 2 */
    assert_int_equal(rw, 35), assert_int_equal(left, 2);
    evalset_geometry(50, 57, 32, &rh, &rw, &top, &left); /* 36.48 -> 36; 2 */
    assert_int_equal(rw, 36), assert_int_equal(left, 2);
    evalset_geometry(50, 59, 32, &rh, &rw, &top, &left); /* 37.76 -> 37; 2.5 -> 2 (half to even) */
    assert_int_equal(rw, 37), assert_int_equal(left, 2);
    evalset_geometry(32, 32, 32, &rh, &rw, &top, &left);
    assert_int_equal(rh, 32), assert_int_equal(rw, 32), assert_int_equal(top, 0), assert_int_equal(left, 0);
}

/* Alpha is dropped, as PIL's convert("RGB") drops it (torchvision's loader;
 * Pillow's rgba2rgb and la2rgb copy the colour, whatever the alpha): an
 * RGBA and a grey + alpha PNG of random values, stored by mkdb as they are
 * (4 and 2 channels), read through evalset at their own size (no resize)
 * give their colour bytes. Checked against PIL too where python3-pil is
 * installed. Before: flattened on black (colour * alpha / 255). */
static void test_alpha_dropped_as_pil(void **st)
{
    (void)st;
    enum { S = 32 };
    char dir[4096], p[4300];
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("evalset_alpha"));
    uint8_t src[2][S * S * 4], want[2][S * S * 3];
    moco_rng r;
    moco_rng_init(&r, SEED, 7, 0, 0);
    for (int k = 0; k < 2; k++) { /* 0: RGBA, 1: grey + alpha */
        int bands = k ? 2 : 4;
        for (int i = 0; i < S * S * bands; i++) src[k][i] = (uint8_t)(moco_rng_u64(&r) >> 56);
        for (int i = 0; i < S * S; i++)
            for (int c = 0; c < 3; c++) want[k][i * 3 + c] = src[k][i * bands + (k ? 0 : c)];
        VipsImage *im = vips_image_new_from_memory_copy(src[k], (size_t)S * S * bands, S, S, bands, VIPS_FORMAT_UCHAR);
        assert_non_null(im);
        im->Type = k ? VIPS_INTERPRETATION_B_W : VIPS_INTERPRETATION_sRGB;
        assert_int_equal(tu_sh("mkdir -p %s/src/%c", dir, 'a' + k), 0);
        snprintf(p, sizeof p, "%s/src/%c/x.png", dir, 'a' + k);
        if (vips_image_write_to_file(im, p, NULL)) fail_msg("cannot write %s: %s", p, vips_error_buffer());
        g_object_unref(im);
        if (tu_sh("/usr/bin/python3 -c 'import PIL' 2>/dev/null") == 0) { /* PIL's reading, where it is installed */
            snprintf(p, sizeof p, "%s/pil%d.rgb", dir, k);
            assert_int_equal(tu_sh("/usr/bin/python3 -c \"import sys; from PIL import Image; im = Image.open(sys.argv[1]); "
                                   "assert im.mode == sys.argv[3], im.mode; open(sys.argv[2], 'wb').write(im.convert('RGB').tobytes())\" "
                                   "%s/src/%c/x.png %s %s", dir, 'a' + k, p, k ? "LA" : "RGBA"), 0);
            size_t n;
            uint8_t *pil = tu_read_file(p, &n);
            assert_int_equal(n, sizeof want[k]);
            assert_memory_equal(pil, want[k], n);
            free(pil);
        }
    }
    if (tu_sh("%s mkdb %s/src %s/db --quiet >%s/mkdb.txt 2>&1", tu_moco(), dir, dir, dir) != 0) fail_msg("moco mkdb failed");
    snprintf(p, sizeof p, "%s/db", dir);
    evalset *e = NULL;
    const float mean[3] = {0, 0, 0}, sd[3] = {1, 1, 1};
    if (evalset_open(p, S, mean, sd, &e)) fail_msg("evalset_open %s: %s", p, moco_errmsg());
    uint8_t px[2][S * S * 3];
    int32_t lab[2];
    if (evalset_read_u8(e, 0, 2, px[0], lab)) fail_msg("evalset_read_u8: %s", moco_errmsg());
    for (int k = 0; k < 2; k++) {
        assert_int_equal(lab[k], k);
        int nd = 0;
        for (int i = 0; i < S * S * 3; i++) nd += px[k][i] != want[k][i];
        if (nd) fail_msg("%s: %d of %d bytes are not the colour with its alpha dropped", k ? "grey + alpha" : "RGBA", nd, S * S * 3);
    }
    printf("alpha: an RGBA and a grey + alpha PNG read by evalset with their alpha dropped, as PIL's convert(\"RGB\")\n");
    evalset_destroy(&e);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_geometry), cmocka_unit_test(test_kernel_vs_reference),
                                       cmocka_unit_test(test_golden_torchvision), cmocka_unit_test(test_alpha_dropped_as_pil)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
