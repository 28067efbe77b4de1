/* test_nn.c: every layer of trainer/nn.h, forward and backward, against
 * PyTorch's numbers (tests/golden/trainer/layers.safetensors, written by
 * tools/gen_trainer_golden.py), against the plain reference kernels, and
 * against central finite differences. Each comparison prints the largest
 * difference; tolerances are relative to the largest magnitude of the
 * expected tensor: 2e-5 for single layers (float32 rounding; 1e-4 for BN's
 * dx, which cancels), 1e-2 for finite differences (step 2e-3 on float32). */
#include "tests/testutil.h"

#include <math.h>

#include "formats/errors.h"
#include "formats/rng.h"
#include "formats/safetensors.h"
#include "trainer/engine/conv3.h"
#include "trainer/engine/nn.h"
#include "trainer/engine/par.h"

#define GOLDEN "tests/golden/trainer/layers.safetensors"
#define TOL 2e-5

static moco_st *G;

static const float *gt(const char *name, size_t want)
{
    const moco_st_tensor *t = moco_st_find(G, name);
    if (!t) fail_msg("golden tensor %s missing", name);
    if (t->dtype != MOCO_ST_F32 || (t->end - t->begin) / 4 != want)
        fail_msg("golden tensor %s: %llu floats, expected %zu", name, (unsigned long long)(t->end - t->begin) / 4, want);
    return moco_st_data(G, t);
}

static size_t gnumel(const char *name)
{
    const moco_st_tensor *t = moco_st_find(G, name);
    if (!t) fail_msg("golden tensor %s missing", name);
    return (t->end - t->begin) / moco_st_dtype_size(t->dtype);
}

/* Fail unless max|got - want| <= tol * max(max|want|, 1e-3). */
static void check(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double md = 0, scale = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d, at = i; /* NaN sticks */
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    double rel = md / fmax(scale, 1e-3);
    printf("  %-28s n=%-6zu max|diff| %.3g (at %zu, scale %.3g) rel %.3g tol %.0e %s\n", what, n, md, at, scale, rel, tol,
           rel <= tol ? "ok" : "MISMATCH");
    if (!(rel <= tol)) fail_msg("%s: relative difference %g over %g (got %g, want %g at %zu)", what, rel, tol, (double)got[at],
                                (double)want[at], at);
}

static float *fz(size_t n) { return test_calloc(n ? n : 1, sizeof(float)); }

static void randn(float *p, size_t n, uint64_t seed)
{
    moco_rng r;
    moco_rng_init(&r, seed, 99, 0, 0);
    for (size_t i = 0; i < n; i++) p[i] = (float)(2.0 * moco_rng_uniform(&r) - 1.0);
}

static int setup(void **st)
{
    (void)st;
    if (moco_st_open(GOLDEN, &G)) {
        fprintf(stderr, "%s\n", moco_errmsg());
        return -1;
    }
    return 0;
}

static int teardown(void **st)
{
    (void)st;
    moco_st_destroy(&G);
    return 0;
}

static void test_conv_golden(void **st)
{
    (void)st;
    for (int c = 0; c < 6; c++) {
        char nm[64];
        snprintf(nm, sizeof nm, "conv%d.dims", c);
        int64_t dims[7];
        assert_int_equal(moco_st_read(G, nm, MOCO_ST_I64, 1, (int64_t[]){7}, dims), 0);
        int N = (int)dims[0], Ci = (int)dims[1], H = (int)dims[2], Co = (int)dims[3], k = (int)dims[4], s = (int)dims[5], p = (int)dims[6];
        for (int budget = 0; budget < 4; budget++) { /* chunks of one image, then the whole batch; 1 then 2 threads */
            par_set_threads(budget < 2 ? 1 : 2);
            nn_conv d;
            size_t work = nn_conv_init(&d, N, Ci, H, H, Co, k, s, p, budget % 2 ? (size_t)1 << 24 : 1);
            printf("conv%d: N %d Ci %d H %d Co %d k %d s %d p %d, chunk %d, %d threads\n", c, N, Ci, H, Co, k, s, p, d.chunk, d.nthreads);
            size_t nx = (size_t)N * Ci * H * H, ny = (size_t)N * Co * d.Ho * d.Wo, nw = (size_t)Co * Ci * k * k;
#define G_(suf, n) (snprintf(nm, sizeof nm, "conv%d." suf, c), gt(nm, n))
            const float *x = G_("x", nx), *w = G_("w", nw), *y = G_("y", ny), *dy = G_("dy", ny), *dx = G_("dx", nx), *dw = G_("dw", nw);
#undef G_
            float *xc = fz(nx), *yc = fz(ny), *dyc = fz(ny), *dxc = fz(nx), *dwc = fz(nw), *out = fz(ny > nx ? ny : nx), *wk = fz(work);
            nn_nchw_to_cnhw(xc, x, N, Ci, H * H);
            nn_nchw_to_cnhw(dyc, dy, N, Co, d.Ho * d.Wo);
            conv2d_forward(yc, xc, w, &d, wk);
            nn_cnhw_to_nchw(out, yc, N, Co, d.Ho * d.Wo);
            check("conv forward", out, y, ny, TOL);
            conv2d_backward(dxc, dwc, dyc, xc, w, &d, wk);
            nn_cnhw_to_nchw(out, dxc, N, Ci, H * H);
            check("conv backward dx", out, dx, nx, TOL);
            check("conv backward dw", dwc, dw, nw, TOL);
            /* the reference kernels */
            memset(dxc, 0, nx * 4), memset(dwc, 0, nw * 4);
            conv2d_forward_ref(yc, xc, w, &d);
            nn_cnhw_to_nchw(out, yc, N, Co, d.Ho * d.Wo);
            check("conv forward (ref)", out, y, ny, TOL);
            conv2d_backward_ref(dxc, dwc, dyc, xc, w, &d);
            nn_cnhw_to_nchw(out, dxc, N, Ci, H * H);
            check("conv backward dx (ref)", out, dx, nx, TOL);
            check("conv backward dw (ref)", dwc, dw, nw, TOL);
            test_free(xc), test_free(yc), test_free(dyc), test_free(dxc), test_free(dwc), test_free(out), test_free(wk);
        }
    }
    par_set_threads(1);
}

static void test_bn_golden(void **st)
{
    (void)st;
    const int N = 8, C = 3, HW = 9;
    const size_t n = (size_t)N * C * HW;
    for (int S = 1; S <= 4; S *= 2) {
        char nm[64];
#define G_(suf, k) (snprintf(nm, sizeof nm, "bn%d." suf, S), gt(nm, k))
        const float *x = G_("x", n), *gamma = G_("gamma", C), *beta = G_("beta", C), *y = G_("y", n), *dy = G_("dy", n),
                    *dx = G_("dx", n), *dg = G_("dgamma", C), *db = G_("dbeta", C), *ye = G_("y_eval", n), *rm1 = G_("rm1", C),
                    *rv1 = G_("rv1", C), *rm0 = G_("rm0", C), *rv0 = G_("rv0", C);
#undef G_
        printf("batch norm, %d split(s)\n", S);
        nn_bn d = {N, C, HW, S, 1e-5f, 0.1f, 0, 0};
        for (int ref = 0; ref < 2; ref++) {
            float *xc = fz(n), *yc = fz(n), *dyc = fz(n), *dxc = fz(n), *out = fz(n), rm[3], rv[3], mean[12], istd[12], dgc[3] = {0},
                  dbc[3] = {0};
            memcpy(rm, rm0, sizeof rm), memcpy(rv, rv0, sizeof rv);
            nn_nchw_to_cnhw(xc, x, N, C, HW);
            nn_nchw_to_cnhw(dyc, dy, N, C, HW);
            if (ref) bn_forward_ref(yc, mean, istd, rm, rv, xc, gamma, beta, 1, &d);
            else bn_forward(yc, mean, istd, rm, rv, xc, NULL, gamma, beta, 0, 1, &d);
            nn_cnhw_to_nchw(out, yc, N, C, HW);
            check(ref ? "bn train forward (ref)" : "bn train forward", out, y, n, TOL);
            check("bn running_mean", rm, rm1, C, TOL);
            check("bn running_var", rv, rv1, C, TOL);
            if (ref) bn_backward_ref(dxc, dgc, dbc, dyc, xc, mean, istd, gamma, &d);
            else bn_backward(dxc, NULL, dgc, dbc, dyc, yc, xc, mean, istd, gamma, 0, &d);
            nn_cnhw_to_nchw(out, dxc, N, C, HW);
            check("bn backward dx", out, dx, n, 1e-4);
            check("bn backward dgamma", dgc, dg, C, TOL);
            check("bn backward dbeta", dbc, db, C, TOL);
            float rmk[3];
            memcpy(rmk, rm, sizeof rmk);
            if (ref) bn_forward_ref(yc, NULL, NULL, rm, rv, xc, gamma, beta, 0, &d);
            else bn_forward(yc, NULL, NULL, rm, rv, xc, NULL, gamma, beta, 0, 0, &d);
            nn_cnhw_to_nchw(out, yc, N, C, HW);
            check("bn eval forward", out, ye, n, TOL);
            check("bn eval keeps running_mean", rm, rmk, C, 0);
            test_free(xc), test_free(yc), test_free(dyc), test_free(dxc), test_free(out);
        }
    }
}

/* nn_to_bf16: round to nearest even (ties to even both ways), infinities
 * kept, the largest floats round to infinity as the hardware does, NaN stays
 * NaN; nn_from_bf16 is exact */
static void test_bf16_convert(void **st)
{
    (void)st;
    const uint32_t in[] = {0x3F808000u, 0x3F818000u, 0x3F808001u, 0xBFC00000u, 0x7F800000u, 0xFF800000u,
                           0x7F7FFFFFu, 0x00000001u, 0x7F800001u, 0xFFC00000u, 0x3F7FFFFFu};
    const uint16_t want[] = {0x3F80, 0x3F82, 0x3F81, 0xBFC0, 0x7F80, 0xFF80, 0x7F80, 0x0000, 0, 0, 0x3F80};
    const size_t n = sizeof in / sizeof *in;
    float f[16], back[16];
    uint16_t h[16];
    memcpy(f, in, sizeof in);
    nn_to_bf16(h, f, n);
    nn_from_bf16(back, h, n);
    for (size_t i = 0; i < n; i++) {
        if (i == 8 || i == 9) assert_true(isnan(back[i]));
        else assert_int_equal(h[i], want[i]);
        uint32_t u;
        memcpy(&u, &back[i], 4);
        assert_int_equal(u, (uint32_t)h[i] << 16);
    }
    /* long runs (the vector paths: 16 lanes at a time, then the tail) against the rule written
     * out here, bit for bit: random bit patterns, NaNs, infinities, denormals, ties, at odd offsets */
    enum { M = 1000 };
    uint32_t *bits = test_malloc(sizeof(uint32_t) * M);
    float *src = test_malloc(sizeof(float) * M), *rt = test_malloc(sizeof(float) * M);
    uint16_t *got = test_malloc(sizeof(uint16_t) * M);
    uint64_t z = 0x9E3779B97F4A7C15ull;
    for (int i = 0; i < M; i++) {
        z ^= z << 13, z ^= z >> 7, z ^= z << 17;
        bits[i] = (uint32_t)z;
        if (i % 7 == 0) bits[i] = (bits[i] & 0xFFFF0000u) | 0x8000u;            /* a tie */
        if (i % 11 == 0) bits[i] = (bits[i] & 0x807FFFFFu) | 0x7F800000u;       /* NaN or infinity */
        if (i % 13 == 0) bits[i] &= 0x807FFFFFu;                                 /* denormal or zero */
    }
    memcpy(src, bits, sizeof(uint32_t) * M);
    int nans = 0, dens = 0;
    for (int off = 0; off < 3; off++) {
        const int len = M - off - 5 * off;
        nn_to_bf16(got, src + off, (size_t)len);
        nn_from_bf16(rt, got, (size_t)len);
        for (int i = 0; i < len; i++) {
            const uint32_t u = bits[off + i];
            const uint16_t w = (u & 0x7FFFFFFFu) > 0x7F800000u ? (uint16_t)((u >> 16) | 0x40u)
                                                                : (uint16_t)((u + 0x7FFFu + ((u >> 16) & 1u)) >> 16);
            if (got[i] != w) fail_msg("nn_to_bf16 of 0x%08x at %d (offset %d): 0x%04x, want 0x%04x", u, i, off, got[i], w);
            uint32_t b;
            memcpy(&b, &rt[i], 4);
            if (b != (uint32_t)w << 16) fail_msg("nn_from_bf16 of 0x%04x: 0x%08x", w, b);
            nans += off == 0 && (u & 0x7FFFFFFFu) > 0x7F800000u;
            dens += off == 0 && (u & 0x7F800000u) == 0 && (u & 0x007FFFFFu) && (w & 0x7FFF);
        }
    }
    assert_true(nans > 20 && dens > 10); /* the special cases are there, and denormals are kept (not flushed) */
    test_free(bits), test_free(src), test_free(rt), test_free(got);
}

/* fast conv == reference conv on shapes the golden file lacks ("same"
 * 5x5, planes smaller than the kernel, 2 threads) */
static void test_conv_vs_ref(void **st)
{
    (void)st;
    const int cases[][7] = {{3, 2, 7, 3, 5, 1, 2}, {2, 3, 2, 2, 3, 1, 1}, {4, 2, 5, 3, 3, 1, 1}, {2, 2, 6, 2, 5, 2, 2}, {3, 4, 1, 2, 3, 1, 1}};
    for (int t = 1; t <= 2; t++)
        for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
            par_set_threads(t);
            const int *q = cases[c];
            nn_conv d;
            size_t work = nn_conv_init(&d, q[0], q[1], q[2], q[2], q[3], q[4], q[5], q[6], 40);
            size_t nx = (size_t)q[0] * q[1] * q[2] * q[2], ny = (size_t)q[0] * q[3] * d.Ho * d.Wo, nw = (size_t)q[3] * q[1] * q[4] * q[4];
            float *x = fz(nx), *w = fz(nw), *y = fz(ny), *yr = fz(ny), *dy = fz(ny), *dx = fz(nx), *dxr = fz(nx), *dw = fz(nw),
                  *dwr = fz(nw), *wk = fz(work);
            randn(x, nx, 20 + c), randn(w, nw, 30 + c), randn(dy, ny, 40 + c);
            conv2d_forward(y, x, w, &d, wk);
            conv2d_forward_ref(yr, x, w, &d);
            printf("conv N %d Ci %d H %d Co %d k %d s %d p %d, %d thread(s), chunk %d\n", q[0], q[1], q[2], q[3], q[4], q[5], q[6], t, d.chunk);
            check("forward vs ref", y, yr, ny, TOL);
            conv2d_backward(dx, dw, dy, x, w, &d, wk);
            conv2d_backward_ref(dxr, dwr, dy, x, w, &d);
            check("dx vs ref", dx, dxr, nx, TOL);
            check("dw vs ref", dw, dwr, nw, TOL);
            test_free(x), test_free(w), test_free(y), test_free(yr), test_free(dy), test_free(dx), test_free(dxr), test_free(dw),
                test_free(dwr), test_free(wk);
        }
    par_set_threads(1);
}

/* the direct 3x3 kernels (conv3.h) at every SIMD level this CPU has ==
 * the reference: odd and non-square planes, stride 1 and 2, partial groups
 * of 16 images, one image per chunk and many, 1 and 2 threads; dinp and dw
 * add to what is there */
static void test_conv3_vs_ref(void **st)
{
    (void)st;
    /* N, Ci, H, W, Co, stride */
    const int cases[][6] = {{3, 8, 7, 7, 16, 1},  {5, 16, 6, 4, 8, 1},  {2, 8, 9, 5, 8, 1},   {4, 16, 8, 8, 24, 1},
                            {18, 8, 4, 4, 8, 1},  {3, 8, 8, 8, 16, 2},  {17, 4, 9, 7, 8, 2},  {20, 8, 16, 16, 4, 2},
                            {3, 3, 10, 10, 16, 1}, {2, 1, 9, 6, 8, 1}};
    const int top = conv3_simd();
    if (!top) printf("no AVX2/AVX-512 here: the direct kernels are not used\n");
    for (int level = top; level >= 1; level--)
        for (int t = 1; t <= 2; t++)
            for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
                conv3_set_simd(level);
                par_set_threads(t);
                const int *q = cases[c], N = q[0], Ci = q[1], H = q[2], W = q[3], Co = q[4], S = q[5];
                nn_conv d;
                size_t work = nn_conv_init(&d, N, Ci, H, W, Co, 3, S, 1, c % 2 ? (size_t)1 << 20 : 40);
                printf("conv3 level %d: N %d Ci %d %dx%d Co %d stride %d, %d thread(s), chunk %d, direct %d, lanes %d\n", level, N,
                       Ci, H, W, Co, S, t, d.chunk, d.direct, d.lanes);
                if (S == 2) assert_int_equal(d.lanes, level == 2);
                else if (level == 2) assert_true(d.direct == 2 || d.lanes);
                else assert_int_equal(d.direct, (H + 2) * (W + 2) <= 2 * H * W); /* the padded grid: not on tiny planes */
                if (Ci < 4) assert_int_equal(d.direct, level); /* the stem: any input channel count */
                size_t nx = (size_t)N * Ci * H * W, ny = (size_t)N * Co * d.Ho * d.Wo, nw = (size_t)Co * Ci * 9;
                float *x = fz(nx), *w = fz(nw), *y = fz(ny), *yr = fz(ny), *dy = fz(ny), *dx = fz(nx), *dxr = fz(nx), *dw = fz(nw),
                      *dwr = fz(nw), *wk = fz(work);
                randn(x, nx, 50 + c), randn(w, nw, 60 + c), randn(dy, ny, 70 + c), randn(dx, nx, 80 + c), randn(dw, nw, 90 + c);
                memcpy(dxr, dx, nx * 4), memcpy(dwr, dw, nw * 4);
                for (size_t i = 0; i < work; i++) wk[i] = NAN; /* the kernels must not read scratch they did not write */
                conv2d_forward(y, x, w, &d, wk);
                conv2d_forward_ref(yr, x, w, &d);
                check("forward vs ref", y, yr, ny, TOL);
                conv2d_backward(dx, dw, dy, x, w, &d, wk);
                conv2d_backward_ref(dxr, dwr, dy, x, w, &d);
                check("dx vs ref", dx, dxr, nx, TOL);
                check("dw vs ref", dw, dwr, nw, TOL);
                if (d.lanes && t == 1) { /* the plain loops of the lanes kernels (non-AVX-512 builds) */
                    conv3_set_simd(0);
                    randn(dx, nx, 80 + c), randn(dw, nw, 90 + c);
                    conv2d_forward(y, x, w, &d, wk);
                    check("forward, plain loops", y, yr, ny, TOL);
                    conv2d_backward(dx, dw, dy, x, w, &d, wk);
                    check("dx, plain loops", dx, dxr, nx, TOL);
                    check("dw, plain loops", dw, dwr, nw, TOL);
                }
                test_free(x), test_free(w), test_free(y), test_free(yr), test_free(dy), test_free(dx), test_free(dxr), test_free(dw),
                    test_free(dwr), test_free(wk);
            }
    conv3_set_simd(-1);
    par_set_threads(1);
}

/* bn_forward_keep: y and the statistics exactly bn_forward's, and the bf16
 * copies exactly nn_to_bf16's: of y, and of x centred by its split's mean
 * (x - mean, computed in fp32), with BN splits (runs of HW: image n is in
 * split n % S) and without (the whole channel one run) */
static void test_bn_keep(void **st)
{
    (void)st;
    const int N = 6, C = 4, HW = 37;
    const size_t n = (size_t)N * C * HW;
    for (int S = 1; S <= 3; S += 2) {
        nn_bn d = {N, C, HW, S, 1e-5f, 0.1f, 0, 0};
        float *x = fz(n), *res = fz(n), *y = fz(n), *y2 = fz(n);
        uint16_t *xh = calloc(n, 2), *yh = calloc(n, 2), *xw = calloc(n, 2), *yw = calloc(n, 2);
        float g[4] = {1.2f, 0.7f, -0.5f, 1.0f}, b[4] = {0.1f, -0.3f, 0.2f, 0}, rm[4] = {0}, rv[4] = {1, 1, 1, 1},
              rm2[4] = {0}, rv2[4] = {1, 1, 1, 1}, mean[12], is[12], mean2[12], is2[12];
        randn(x, n, 11), randn(res, n, 12);
        for (int relu = 0; relu < 2; relu++) {
            memset(xh, 0xff, n * 2), memset(yh, 0xff, n * 2);
            bn_forward(y, mean, is, rm, rv, x, relu ? res : NULL, g, b, relu, 1, &d);
            bn_forward_keep(y2, yh, mean2, is2, rm2, rv2, x, xh, relu ? res : NULL, g, b, relu, 1, &d);
            assert_memory_equal(y, y2, n * 4);
            assert_memory_equal(mean, mean2, (size_t)S * C * 4);
            assert_memory_equal(is, is2, (size_t)S * C * 4);
            assert_memory_equal(rm, rm2, sizeof rm);
            assert_memory_equal(rv, rv2, sizeof rv);
            float *xc = fz(n);
            for (int c = 0; c < C; c++)
                for (int i = 0; i < N; i++)
                    for (int p = 0; p < HW; p++) {
                        const size_t at = ((size_t)c * N + i) * HW + p;
                        xc[at] = x[at] - mean[(i % S) * C + c];
                    }
            nn_to_bf16(xw, xc, n), nn_to_bf16(yw, y, n);
            test_free(xc);
            assert_memory_equal(xh, xw, n * 2); /* every element written: 0xffff would differ */
            assert_memory_equal(yh, yw, n * 2);
        }
        bn_forward_keep(y2, NULL, mean2, is2, rm2, rv2, x, NULL, NULL, g, b, 0, 1, &d); /* no copies asked: fine */
        test_free(x), test_free(res), test_free(y), test_free(y2);
        free(xh), free(yh), free(xw), free(yw);
    }
}

/* bn_backward_h on the copies bn_forward_keep keeps (x in bf16, centred;
 * y in bf16 for the ReLU mask) against bn_backward on fp32 x and y, for
 * channels whose mean is many standard deviations (a conv output's mean
 * can be 2-3 sigma in training): x - mean keeps 8 bits of x-hat, where x
 * itself rounded to bf16 would lose log2(mean/sigma) of them before the
 * mean is taken off. dy is made to follow x-hat, so that dx depends on
 * x-hat strongly (B x in dx = A dy + B x + C). Bound: 2^-7 of the largest
 * |dx| (the rounding 2^-9 of x-hat times |x-hat| up to ~4); storing x
 * itself misses it by 10x at a mean of 40 sigma. */
static void test_bn_keep_backward(void **st)
{
    (void)st;
    const int N = 8, C = 3, HW = 49, S = 2;
    const size_t n = (size_t)N * C * HW;
    for (int relu = 0; relu < 2; relu++) {
        nn_bn d = {N, C, HW, S, 1e-5f, 0.1f, 0, 0};
        float *x = fz(n), *y = fz(n), *y2 = fz(n), *dy = fz(n), *dy2 = fz(n), *dx = fz(n), *dx2 = fz(n), *noise = fz(n);
        float *xtmp = fz((size_t)N * HW * (size_t)par_threads());
        uint16_t *xh = calloc(n, 2), *yh = calloc(n, 2);
        float g[3] = {1.1f, -0.8f, 0.6f}, b[3] = {0.2f, 0.1f, -0.3f}, rm[3] = {0}, rv[3] = {1, 1, 1}, mean[6], is[6],
              dg[3] = {0}, db[3] = {0}, dg2[3] = {0}, db2[3] = {0};
        const float mu[3] = {40.0f, -25.0f, 3.0f}, sd[3] = {1.0f, 0.5f, 2.0f};
        randn(x, n, 21), randn(noise, n, 22);
        for (int c = 0; c < C; c++)
            for (size_t i = 0; i < (size_t)N * HW; i++) {
                const size_t at = (size_t)c * N * HW + i;
                x[at] = mu[c] + sd[c] * x[at];
                dy[at] = 0.9f * (x[at] - mu[c]) / sd[c] + 0.5f * noise[at];
            }
        memcpy(dy2, dy, n * 4);
        bn_forward(y, mean, is, rm, rv, x, NULL, g, b, relu, 1, &d);
        bn_forward_keep(y2, yh, mean, is, rm, rv, x, xh, NULL, g, b, relu, 1, &d);
        bn_backward(dx, NULL, dg, db, dy, y, x, mean, is, g, relu, &d);
        bn_backward_h(dx2, NULL, dg2, db2, dy2, NULL, yh, NULL, xh, xtmp, mean, is, g, relu, &d);
        float big = 0;
        for (size_t i = 0; i < n; i++) big = fabsf(dx[i]) > big ? fabsf(dx[i]) : big;
        for (size_t i = 0; i < n; i++)
            if (!(fabsf(dx2[i] - dx[i]) <= 0x1p-7f * big))
                fail_msg("relu %d, dx[%zu] from the bf16 copies %g against %g from fp32 (bound %g)", relu, i, dx2[i], dx[i],
                         0x1p-7 * big);
        for (int c = 0; c < C; c++) {
            if (!(fabsf(db2[c] - db[c]) <= 1e-4f * (fabsf(db[c]) + 1))) fail_msg("dbeta[%d] %g against %g", c, db2[c], db[c]);
            if (!(fabsf(dg2[c] - dg[c]) <= 0x1p-7f * (fabsf(dg[c]) + 1))) fail_msg("dgamma[%d] %g against %g", c, dg2[c], dg[c]);
        }
        test_free(x), test_free(y), test_free(y2), test_free(dy), test_free(dy2), test_free(dx), test_free(dx2), test_free(noise),
            test_free(xtmp);
        free(xh), free(yh);
    }
}

/* bn_forward/backward fused with residual add and ReLU == the unfused refs */
static void test_bn_fused(void **st)
{
    (void)st;
    const int N = 6, C = 4, HW = 5, S = 3;
    const size_t n = (size_t)N * C * HW;
    nn_bn d = {N, C, HW, S, 1e-5f, 0.1f, 0, 0};
    float *x = fz(n), *res = fz(n), *y = fz(n), *t = fz(n), *yr = fz(n), *dy = fz(n), *dy2 = fz(n), *dx = fz(n), *dres = fz(n),
          *dt = fz(n), *dxr = fz(n), *dresr = fz(n);
    float g[4] = {1.2f, 0.7f, -0.5f, 1.0f}, b[4] = {0.1f, -0.3f, 0.2f, 0}, rm[4] = {0}, rv[4] = {1, 1, 1, 1}, rm2[4] = {0},
          rv2[4] = {1, 1, 1, 1}, mean[12], is[12], mean2[12], is2[12], dg[4] = {0}, db[4] = {0}, dgr[4] = {0}, dbr[4] = {0};
    randn(x, n, 1), randn(res, n, 2), randn(dy, n, 3);
    memcpy(dy2, dy, n * 4);
    bn_forward(y, mean, is, rm, rv, x, res, g, b, 1, 1, &d);
    bn_forward_ref(t, mean2, is2, rm2, rv2, x, g, b, 1, &d);
    add_forward(t, t, res, n);
    relu_forward(yr, t, n);
    check("fused bn+add+relu forward", y, yr, n, TOL);
    check("fused saved mean", mean, mean2, 12, TOL);
    check("fused saved invstd", is, is2, 12, TOL);
    bn_backward(dx, dres, dg, db, dy, y, x, mean, is, g, 1, &d);
    relu_backward(dt, dy2, yr, n);
    float *dt2 = fz(n);
    add_backward(dt2, dresr, dt, n);
    bn_backward_ref(dxr, dgr, dbr, dt2, x, mean2, is2, g, &d);
    check("fused backward dx", dx, dxr, n, 1e-4);
    check("fused backward dres", dres, dresr, n, TOL);
    check("fused backward dgamma", dg, dgr, 4, TOL);
    check("fused backward dbeta", db, dbr, 4, TOL);
    /* dx_set, dres_set (the first writer of a gradient): written whatever they held (NaN here), equal to
     * the sums into zeros above; dy is masked already, and masking again changes nothing */
    float *dx3 = fz(n), *dres3 = fz(n), dg3[4] = {0}, db3[4] = {0};
    for (size_t i = 0; i < n; i++) dx3[i] = dres3[i] = NAN;
    d.dx_set = d.dres_set = 1;
    bn_backward(dx3, dres3, dg3, db3, dy, y, x, mean, is, g, 1, &d);
    d.dx_set = d.dres_set = 0;
    for (size_t i = 0; i < n; i++)
        if (!(dx3[i] == dx[i] && dres3[i] == dres[i])) fail_msg("dx_set/dres_set, element %zu: %g %g against %g %g", i, dx3[i], dres3[i], dx[i], dres[i]);
    assert_memory_equal(dg3, dg, sizeof dg);
    test_free(dx3), test_free(dres3);
    test_free(x), test_free(res), test_free(y), test_free(t), test_free(yr), test_free(dy), test_free(dy2), test_free(dx),
        test_free(dres), test_free(dt), test_free(dxr), test_free(dresr), test_free(dt2);
}

static void check_top1(const int *right, const float *qs, const float *ks, const float *Q, int N, int D, int K, int expect);

static void test_small_layers_golden(void **st)
{
    (void)st;
    /* max-pool 3/2/1 on ReLU output (ties) */
    nn_pool pd;
    nn_pool_init(&pd, 2, 3, 9, 9, 3, 2, 1);
    size_t nx = 2 * 3 * 81, ny = (size_t)2 * 3 * pd.Ho * pd.Wo;
    float *xc = fz(nx), *yc = fz(ny), *dyc = fz(ny), *dxc = fz(nx), *o = fz(nx);
    nn_nchw_to_cnhw(xc, gt("pool.x", nx), 2, 3, 81);
    nn_nchw_to_cnhw(dyc, gt("pool.dy", ny), 2, 3, pd.Ho * pd.Wo);
    maxpool_forward(yc, xc, &pd);
    nn_cnhw_to_nchw(o, yc, 2, 3, pd.Ho * pd.Wo);
    check("maxpool forward", o, gt("pool.y", ny), ny, 0);
    maxpool_backward(dxc, dyc, xc, &pd);
    nn_cnhw_to_nchw(o, dxc, 2, 3, 81);
    check("maxpool backward (first max wins)", o, gt("pool.dx", nx), nx, TOL);
    test_free(xc), test_free(yc), test_free(dyc), test_free(dxc), test_free(o);
    /* linear */
    const float *x = gt("fc.x", 35), *w = gt("fc.w", 21), *b = gt("fc.b", 3), *dy = gt("fc.dy", 15);
    for (int ref = 0; ref < 2; ref++) {
        float y[15], dx[35] = {0}, dw[21] = {0}, db[3] = {0};
        (ref ? linear_forward_ref : linear_forward)(y, x, w, b, 5, 7, 3);
        check(ref ? "linear forward (ref)" : "linear forward", y, gt("fc.y", 15), 15, TOL);
        (ref ? linear_backward_ref : linear_backward)(dx, dw, db, dy, x, w, 5, 7, 3);
        check("linear dx", dx, gt("fc.dx", 35), 35, TOL);
        check("linear dw", dw, gt("fc.dw", 21), 21, TOL);
        check("linear db", db, gt("fc.db", 3), 3, TOL);
    }
    /* L2 normalise */
    float y[24], dx[24] = {0};
    l2norm_forward(y, gt("l2.x", 24), 4, 6);
    check("l2norm forward", y, gt("l2.y", 24), 24, TOL);
    l2norm_backward(dx, gt("l2.dy", 24), gt("l2.x", 24), 4, 6);
    check("l2norm backward", dx, gt("l2.dx", 24), 24, TOL);
    /* InfoNCE */
    const int N = 6, D = 8, K = 20;
    float T = gt("nce.T", 1)[0], logits[6 * 21], dq[48] = {0};
    int right = -1;
    float loss = infonce_forward_backward(dq, logits, &right, gt("nce.q", 48), gt("nce.k", 48), gt("nce.queue", 160), N, D, K, T);
    check("infonce loss", &loss, gt("nce.loss", 1), 1, TOL);
    /* the top-1 count: the golden rows (none right), then with the keys of
     * rows 1 and 4 made 8 x their queries (those two right), against double */
    check_top1(&right, gt("nce.q", 48), gt("nce.k", 48), gt("nce.queue", 160), N, D, K, 0);
    float k2[48], lg2[6 * 21];
    memcpy(k2, gt("nce.k", 48), sizeof k2);
    for (int i = 0; i < D; i++) k2[1 * D + i] = 8 * gt("nce.q", 48)[1 * D + i], k2[4 * D + i] = 8 * gt("nce.q", 48)[4 * D + i];
    infonce_forward_backward(NULL, lg2, &right, gt("nce.q", 48), k2, gt("nce.queue", 160), N, D, K, T);
    check_top1(&right, gt("nce.q", 48), k2, gt("nce.queue", 160), N, D, K, 2);
    check("infonce dq", dq, gt("nce.dq", 48), 48, TOL);
    assert_int_equal(gnumel("nce.dq"), 48);
}

static void check_top1(const int *right, const float *qs, const float *ks, const float *Q, int N, int D, int K, int expect)
{
    int want = 0;
    for (int n = 0; n < N; n++) {
        const float *q = qs + n * D, *k = ks + n * D;
        double pos = 0, neg = -INFINITY;
        for (int i = 0; i < D; i++) pos += (double)q[i] * k[i];
        for (int c = 0; c < K; c++) {
            double v = 0;
            for (int i = 0; i < D; i++) v += (double)q[i] * Q[i * K + c];
            neg = v > neg ? v : neg;
        }
        want += pos >= neg;
    }
    printf("infonce: %d of %d rows with the positive on top\n", *right, N);
    assert_int_equal(want, expect); /* the data is what the case says */
    assert_int_equal(*right, want);
}

/* nn_row_max / nn_row_expsum (libmvec where the CPU has AVX-512 or AVX2)
 * against plain loops, at every length to 40 (the vector tails) and 4097
 * (a MoCo row), with e written apart and in place, and a NaN skipped by the
 * max; at each SIMD level this CPU has (conv3_set_simd) */
static void softmax_rows_at(int level);
static void test_softmax_rows(void **st)
{
    (void)st;
    for (int level = conv3_simd(); level >= 0; level--) {
        conv3_set_simd(level);
        softmax_rows_at(level);
    }
    conv3_set_simd(-1);
}

static void softmax_rows_at(int level)
{
    enum { L = 4097 };
    float *l = malloc(sizeof(float) * L), *e = malloc(sizeof(float) * L), *c = malloc(sizeof(float) * L);
    assert_non_null(l), assert_non_null(e), assert_non_null(c);
    uint32_t r = 12345;
    for (int i = 0; i < L; i++) r = r * 1664525u + 1013904223u, l[i] = (float)((r >> 8) * (1.0 / 16777216) * 20.0 - 10.0);
    double worst = 0;
    for (int t = 0; t <= 41; t++) {
        const int n = t <= 40 ? t : L;
        float m = -INFINITY;
        for (int i = 0; i < n; i++) m = l[i] > m ? l[i] : m;
        float got = nn_row_max(l, n);
        assert_true(got == m);
        if (!n) continue;
        double want = 0;
        for (int i = 0; i < n; i++) want += exp((double)l[i] - m);
        memcpy(c, l, sizeof(float) * (size_t)n);
        double s1 = nn_row_expsum(e, l, n, m), s2 = nn_row_expsum(c, c, n, m), s3 = nn_row_expsum(NULL, l, n, m);
        assert_true(s1 == s2 && s1 == s3);
        double rel = fabs(s1 - want) / want;
        worst = rel > worst ? rel : worst;
        assert_true(rel < 1e-13);
        for (int i = 0; i < n; i++) {
            float w = (float)exp((double)l[i] - m);
            assert_true(e[i] == c[i]);
            assert_true(fabsf(e[i] - w) <= 1e-6f * w);
        }
    }
    printf("softmax rows, SIMD level %d: largest relative difference of the sum %.2e\n", level, worst);
    l[5] = NAN;
    float m = -INFINITY;
    for (int i = 0; i < L; i++) m = l[i] > m ? l[i] : m;
    assert_true(nn_row_max(l, L) == m && !isnan(m));
    free(l), free(e), free(c);
}

/* ---- finite differences: L = sum(out * r) ---- */

typedef void (*fwd_fn)(float *out, const float *inp, void *ctx);

static double objective(fwd_fn f, void *ctx, float *out, const float *x, const float *r, size_t ny)
{
    f(out, x, ctx);
    double s = 0;
    for (size_t i = 0; i < ny; i++) s += (double)out[i] * r[i];
    return s;
}

/* Compare the analytic dx with central differences at every coordinate. */
static void fd_check(const char *what, fwd_fn f, void *ctx, float *x, size_t nx, size_t ny, const float *r, const float *dx)
{
    float *out = fz(ny), *num = fz(nx);
    const float h = 2e-3f;
    for (size_t i = 0; i < nx; i++) {
        float keep = x[i];
        x[i] = keep + h;
        double a = objective(f, ctx, out, x, r, ny);
        x[i] = keep - h;
        double b = objective(f, ctx, out, x, r, ny);
        x[i] = keep;
        num[i] = (float)((a - b) / (2.0 * h));
    }
    check(what, dx, num, nx, 1e-2);
    test_free(out), test_free(num);
}

typedef struct { nn_conv d; const float *w; float *work; } conv_ctx;
static void conv_fwd(float *out, const float *x, void *c) { conv_ctx *k = c; conv2d_forward(out, x, k->w, &k->d, k->work); }
static void conv_fwd_w(float *out, const float *w, void *c) { conv_ctx *k = c; conv2d_forward(out, k->w, w, &k->d, k->work); }

typedef struct { nn_bn d; const float *g, *b, *res; float rm[8], rv[8], mean[64], is[64]; } bn_ctx;
static void bn_fwd(float *out, const float *x, void *c)
{
    bn_ctx *k = c;
    bn_forward(out, k->mean, k->is, k->rm, k->rv, x, k->res, k->g, k->b, 1, 1, &k->d);
}

typedef struct { int N, F; } l2_ctx;
static void l2_fwd(float *out, const float *x, void *c) { l2_ctx *k = c; l2norm_forward(out, x, k->N, k->F); }

static void test_finite_differences(void **st)
{
    (void)st;
    /* conv 3x3 stride 2 pad 1: dx and dw */
    conv_ctx cc;
    size_t work = nn_conv_init(&cc.d, 2, 3, 5, 5, 4, 3, 2, 1, 64);
    size_t nx = 2 * 3 * 25, nw = 4 * 3 * 9, ny = (size_t)2 * 4 * cc.d.Ho * cc.d.Wo;
    float *x = fz(nx), *w = fz(nw), *r = fz(ny), *dx = fz(nx), *dw = fz(nw), *ry = fz(ny);
    cc.work = fz(work);
    randn(x, nx, 4), randn(w, nw, 5), randn(r, ny, 6);
    cc.w = w;
    conv2d_backward(dx, dw, r, x, w, &cc.d, cc.work);
    fd_check("conv dx vs finite diff", conv_fwd, &cc, x, nx, ny, r, dx);
    cc.w = x;
    fd_check("conv dw vs finite diff", conv_fwd_w, &cc, w, nw, ny, r, dw);
    test_free(x), test_free(w), test_free(r), test_free(dx), test_free(dw), test_free(ry), test_free(cc.work);
    /* BN train, 2 splits, with residual and ReLU */
    bn_ctx bc = {.d = {4, 2, 3, 2, 1e-5f, 0.1f}};
    size_t n = 4 * 2 * 3;
    float g[2] = {1.3f, -0.8f}, b[2] = {0.2f, 0.1f};
    float *bx = fz(n), *res = fz(n), *y = fz(n), *br = fz(n), *bdx = fz(n), *dres = fz(n), dg[2] = {0}, db[2] = {0};
    randn(bx, n, 7), randn(res, n, 8), randn(br, n, 9);
    bc.g = g, bc.b = b, bc.res = res;
    bn_fwd(y, bx, &bc);
    float *dyc = fz(n);
    memcpy(dyc, br, n * 4);
    bn_backward(bdx, dres, dg, db, dyc, y, bx, bc.mean, bc.is, g, 1, &bc.d);
    fd_check("bn(+res, relu) dx vs finite diff", bn_fwd, &bc, bx, n, n, br, bdx);
    test_free(bx), test_free(res), test_free(y), test_free(br), test_free(bdx), test_free(dres), test_free(dyc);
    /* L2 normalise */
    l2_ctx lc = {3, 5};
    float lx[15], lr[15], ldx[15] = {0};
    randn(lx, 15, 10), randn(lr, 15, 11);
    l2norm_backward(ldx, lr, lx, 3, 5);
    fd_check("l2norm dx vs finite diff", l2_fwd, &lc, lx, 15, 15, lr, ldx);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_conv_golden),        cmocka_unit_test(test_conv_vs_ref),
        cmocka_unit_test(test_conv3_vs_ref),       cmocka_unit_test(test_bf16_convert),
        cmocka_unit_test(test_bn_golden),
        cmocka_unit_test(test_bn_fused),           cmocka_unit_test(test_bn_keep), cmocka_unit_test(test_bn_keep_backward),           cmocka_unit_test(test_small_layers_golden),
        cmocka_unit_test(test_softmax_rows),
        cmocka_unit_test(test_finite_differences),
    };
    return cmocka_run_group_tests(tests, setup, teardown);
}
