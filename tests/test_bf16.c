/* test_bf16.c: bf16 mixed precision (trainer/bf16.c, --precision bf16)
 * against fp32 references, layer by layer and pass by pass, against
 * PyTorch's bf16 autocast (four convolutions and a linear layer:
 * tools/gen_bf16_golden.py), and over a few MoCo steps.
 * On an AVX-512 CPU without AVX512_BF16 it runs on oneDNN's emulation
 * (MOCO_BF16_EMULATE=1, set here: the same bounds hold, the products of
 * bf16 numbers being exact in fp32 there too), so that the bf16 path is
 * tested on such machines as well. Skips (exit 77) when bf16 is
 * unavailable even so: moco built without oneDNN, or a CPU without
 * AVX-512.
 *
 * Tolerances, per element (u = 2^-8, the unit roundoff of bf16's 8-bit
 * significand; K the reduction length of that output; S = sum over the
 * reduction of |a_i| |b_i|, computed with the same reference on |a|, |b|):
 * - against the fp32 reference on the bf16-ROUNDED operands: the products
 *   of two bf16 numbers are exact in fp32, so only fp32 summation order
 *   differs (ours in fp32, the reference's dinp too): |d| <= 2 K 2^-24 S
 *   (plus 2 K 2^-24 of the value the result was added to);
 * - against the fp32 reference on the original operands: each operand
 *   rounding moves a product by at most u relative, so
 *   |d| <= ((1+u)^2 - 1 + 2 K 2^-24) S, the bf16 error bound; and the
 *   largest |d| / S must exceed u/64, or the bf16 path did not run;
 * - against PyTorch (autocast rounds its outputs and gradients to bf16):
 *   |d| <= u |torch| + 2 K 2^-24 S (+ u |b| for the linear bias, which
 *   autocast rounds and we add in fp32).
 * MoCo steps: see moco_trio (bf16 is held to what fp32 itself does when
 * its images and weights move by a bf16 rounding: small ResNets at
 * initialisation are chaotic). */
#include "tests/testutil.h"

#include <math.h>

#include "formats/errors.h"
#include "formats/rng.h"
#include "formats/safetensors.h"
#include "trainer/engine/moco.h"
#include "trainer/engine/nn.h"
#include "trainer/engine/par.h"
#include "trainer/engine/resnet.h"

#define U 0.00390625 /* 2^-8 */
#define GOLDEN "tests/golden/trainer/bf16_conv.safetensors"

static float *fz(size_t n) { return test_calloc(n ? n : 1, sizeof(float)); }

static void randu(float *p, size_t n, uint64_t seed, float scale)
{
    moco_rng r;
    moco_rng_init(&r, seed, 77, 0, 0);
    for (size_t i = 0; i < n; i++) p[i] = (float)((2.0 * moco_rng_uniform(&r) - 1.0) * scale);
}

static float *absdup(const float *x, size_t n)
{
    float *a = fz(n);
    for (size_t i = 0; i < n; i++) a[i] = fabsf(x[i]);
    return a;
}

static float *rounddup(const float *x, size_t n)
{
    float *a = fz(n);
    memcpy(a, x, sizeof(float) * n);
    nn_bf16_round(a, n);
    return a;
}

/* Fail unless |got - want| <= rel * S + g |base| element-wise (base: what
 * the result was added to, or NULL). Returns the largest |got - want| / S. */
static double bound(const char *what, const float *got, const float *want, const float *S, const float *base, size_t n,
                    double rel, double g)
{
    double worst = 0, wr = 0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]), lim = rel * S[i] + (base ? g * fabs(base[i]) : 0) + 1e-30;
        if (isnan(d)) {
            worst = INFINITY, at = i;
            break;
        }
        if (d / lim > worst) worst = d / lim, at = i;
        if (S[i] > 0 && d / S[i] > wr) wr = d / S[i];
    }
    printf("  %-40s n=%-6zu max |d|/S %.3g (bound %.3g) %s\n", what, n, wr, rel, worst <= 1 ? "ok" : "OUT OF BOUND");
    if (!(worst <= 1))
        fail_msg("%s: |%g - %g| = %g over the bound %g at %zu (S %g)", what, (double)got[at], (double)want[at],
                 fabs((double)got[at] - want[at]), rel * S[at] + (base ? g * fabs(base[at]) : 0), at, (double)S[at]);
    return wr;
}

static int bf16_or_skip(void)
{
    if (nn_bf16_available()) {
        printf("SKIP: %s\n", moco_errmsg());
        return 0;
    }
    return 1;
}

/* One convolution shape in bf16 against the references, all three passes. */
static void conv_case(int N, int Ci, int H, int W, int Co, int k, int s, int p, int threads, uint64_t seed)
{
    par_set_threads(threads);
    nn_conv d, dr;
    nn_conv_init(&d, N, Ci, H, W, Co, k, s, p, 1 << 16);
    nn_conv_init(&dr, N, Ci, H, W, Co, k, s, p, 1 << 16);
    size_t work = 0;
    int rc = nn_conv_bf16(&d, &work);
    if (rc) fail_msg("nn_conv_bf16: %s", moco_errmsg());
    printf("conv N %d Ci %d %dx%d Co %d k %d s %d p %d, %d thread(s): chunk %d\n", N, Ci, H, W, Co, k, s, p, threads, d.chunk);
    const size_t nx = (size_t)N * Ci * H * W, ny = (size_t)N * Co * d.Ho * d.Wo, nw = (size_t)Co * Ci * k * k;
    float *x = fz(nx), *w = fz(nw), *dy = fz(ny), *wk = fz(work);
    randu(x, nx, seed, 2.0f), randu(w, nw, seed + 1, 0.3f), randu(dy, ny, seed + 2, 1.0f);
    float *xr = rounddup(x, nx), *wr = rounddup(w, nw), *dyr = rounddup(dy, ny);
    float *xa = absdup(x, nx), *wa = absdup(w, nw), *dya = absdup(dy, ny);
    /* forward */
    float *y = fz(ny), *yref = fz(ny), *yrr = fz(ny), *Sy = fz(ny);
    conv2d_forward(y, x, w, &d, wk);
    conv2d_forward_ref(yref, x, w, &dr);
    conv2d_forward_ref(yrr, xr, wr, &dr);
    conv2d_forward_ref(Sy, xa, wa, &dr);
    const double g_f = 2.0 * Ci * k * k * ldexp(1, -24), g_d = 2.0 * Co * k * k * ldexp(1, -24), g_w = 2.0 * N * d.Ho * d.Wo * ldexp(1, -24);
    bound("forward vs rounded-operand ref", y, yrr, Sy, NULL, ny, g_f, 0);
    double e = bound("forward vs fp32 ref", y, yref, Sy, NULL, ny, 2 * U + U * U + g_f, 0);
    if (!(e > U / 64)) fail_msg("forward: largest error %g of S, no bf16 rounding visible: is the bf16 path running?", e);
    /* backward: adds into dinp and dw, which start non-zero */
    float *dx = fz(nx), *dxref = fz(nx), *dxrr = fz(nx), *Sdx = fz(nx), *dx0 = fz(nx);
    float *dw = fz(nw), *dwref = fz(nw), *dwrr = fz(nw), *Sdw = fz(nw), *dw0 = fz(nw);
    randu(dx0, nx, seed + 3, 0.5f), randu(dw0, nw, seed + 4, 0.5f);
    memcpy(dx, dx0, sizeof(float) * nx), memcpy(dxref, dx0, sizeof(float) * nx), memcpy(dxrr, dx0, sizeof(float) * nx);
    memcpy(dw, dw0, sizeof(float) * nw), memcpy(dwref, dw0, sizeof(float) * nw), memcpy(dwrr, dw0, sizeof(float) * nw);
    conv2d_backward(dx, dw, dy, x, w, &d, wk);
    conv2d_backward_ref(dxref, dwref, dy, x, w, &dr);
    conv2d_backward_ref(dxrr, dwrr, dyr, xr, wr, &dr);
    conv2d_backward_ref(Sdx, Sdw, dya, xa, wa, &dr);
    bound("backward-data vs rounded-operand ref", dx, dxrr, Sdx, dx0, nx, g_d, g_d);
    e = bound("backward-data vs fp32 ref", dx, dxref, Sdx, dx0, nx, 2 * U + U * U + g_d, g_d);
    if (!(e > U / 64)) fail_msg("backward-data: no bf16 rounding visible (%g)", e);
    bound("backward-weights vs rounded-operand ref", dw, dwrr, Sdw, dw0, nw, g_w, g_w);
    e = bound("backward-weights vs fp32 ref", dw, dwref, Sdw, dw0, nw, 2 * U + U * U + g_w, g_w);
    if (!(e > U / 64)) fail_msg("backward-weights: no bf16 rounding visible (%g)", e);
    /* weights only (no input gradient: the stem), and input gradient only */
    memcpy(dw, dw0, sizeof(float) * nw);
    conv2d_backward(NULL, dw, dy, x, w, &d, wk);
    bound("backward-weights alone", dw, dwrr, Sdw, dw0, nw, g_w, g_w);
    memcpy(dx, dx0, sizeof(float) * nx);
    conv2d_backward(dx, NULL, dy, x, w, &d, wk);
    bound("backward-data alone", dx, dxrr, Sdx, dx0, nx, g_d, g_d);
    nn_conv_free(&d);
    if (d.lp) fail_msg("nn_conv_free left the state");
    float *fs[] = {x, w, dy, wk, xr, wr, dyr, xa, wa, dya, y, yref, yrr, Sy, dx, dxref, dxrr, Sdx, dx0, dw, dwref, dwrr, Sdw, dw0};
    for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) test_free(fs[i]);
    par_set_threads(1);
}

/* nn_bf16_round against vcvtneps2bf16's rule as Intel defines it, bit by
 * bit: ties to even, a NaN made quiet, a subnormal flushed to a zero of its
 * sign, overflow to infinity; the hardware's on a CPU with AVX512_BF16, the
 * integer emulation's (MOCO_BF16_EMULATE) on one without. */
static void test_round_rule(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    const uint32_t in[] = {0x3F808000u, 0x3F818000u, 0x3F808001u, 0x3F807FFFu, 0xBF808000u, 0x00000001u, 0x807FFFFFu,
                           0x00800000u, 0x7F800001u, 0xFFC12345u, 0x7F800000u, 0xFF800000u, 0x7F7FFFFFu, 0x80000000u,
                           0x00000000u, 0x4049FFFFu, 0x3EAAAAABu};
    const uint32_t want[] = {0x3F800000u, 0x3F820000u, 0x3F810000u, 0x3F800000u, 0xBF800000u, 0x00000000u, 0x80000000u,
                             0x00800000u, 0x7FC00000u, 0xFFC10000u, 0x7F800000u, 0xFF800000u, 0x7F800000u, 0x80000000u,
                             0x00000000u, 0x404A0000u, 0x3EAB0000u};
    enum { NV = sizeof in / sizeof *in };
    float x[40];
    for (int i = 0; i < 40; i++) memcpy(&x[i], &in[i % NV], 4); /* 40: two whole vectors and a masked tail */
    nn_bf16_round(x, 40);
    for (int i = 0; i < 40; i++) {
        uint32_t got;
        memcpy(&got, &x[i], 4);
        if (got != want[i % NV]) fail_msg("bf16 rounding of 0x%08x: got 0x%08x, want 0x%08x (%s)", in[i % NV], got, want[i % NV],
                                         nn_bf16_emulated() ? "emulated" : "AVX512_BF16");
    }
}

static void test_conv_bf16(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    /* N Ci H W Co k s p threads */
    const int cases[][9] = {
        {6, 16, 8, 8, 32, 3, 1, 1, 1},   /* 3x3 stride 1 */
        {7, 16, 9, 7, 16, 3, 1, 1, 2},   /* odd, non-square planes, batch not a multiple of the chunk, 2 threads */
        {5, 32, 8, 8, 48, 3, 2, 1, 2},   /* stride 2 */
        {4, 24, 6, 6, 40, 1, 1, 0, 1},   /* 1x1 (matmuls on the rows), channels not multiples of 16 */
        {7, 16, 5, 5, 24, 1, 1, 0, 2},   /* 1x1, a shorter last chunk */
        {6, 16, 8, 8, 32, 1, 2, 0, 2},   /* 1x1 stride 2 (downsample) */
        {4, 3, 12, 12, 8, 3, 1, 1, 2},   /* the CIFAR stem: RGB in, 8 out */
        {3, 3, 16, 16, 16, 7, 2, 3, 1},  /* the ImageNet stem: 7x7 stride 2 */
        {3, 64, 4, 4, 64, 3, 1, 1, 2},   /* small planes, a reduction of 576 */
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int *q = cases[c];
        conv_case(q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], q[8], 100 + 10 * c);
    }
}

/* the same chunking over many chunks: a budget of one image per chunk */
static void test_conv_bf16_small_chunks(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    setenv("MOCO_BF16_CHUNK_KB", "1", 1);
    conv_case(9, 16, 8, 8, 16, 3, 1, 1, 2, 900);
    conv_case(5, 16, 8, 8, 32, 3, 2, 1, 1, 910);
    conv_case(5, 16, 4, 4, 32, 1, 1, 0, 2, 920);
    unsetenv("MOCO_BF16_CHUNK_KB");
}

static void test_linear_bf16(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    const int cases[][4] = {{8, 64, 32, 1}, {5, 40, 24, 2}, {16, 128, 128, 2}};
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        const int N = cases[c][0], F = cases[c][1], O = cases[c][2];
        par_set_threads(cases[c][3]);
        nn_lowp *lp = NULL;
        size_t work = 0;
        if (nn_linear_bf16(&lp, N, F, O, &work)) fail_msg("nn_linear_bf16: %s", moco_errmsg());
        printf("linear N %d F %d O %d, %d thread(s)\n", N, F, O, cases[c][3]);
        const size_t nx = (size_t)N * F, ny = (size_t)N * O, nw = (size_t)O * F;
        float *x = fz(nx), *w = fz(nw), *b = fz(O), *dy = fz(ny), *wk = fz(work), *z = fz(O);
        randu(x, nx, 500 + c, 1.5f), randu(w, nw, 510 + c, 0.2f), randu(b, O, 520 + c, 0.1f), randu(dy, ny, 530 + c, 1.0f);
        float *xr = rounddup(x, nx), *wr = rounddup(w, nw), *dyr = rounddup(dy, ny), *xa = absdup(x, nx), *wa = absdup(w, nw),
              *dya = absdup(dy, ny);
        float *y = fz(ny), *yref = fz(ny), *yrr = fz(ny), *Sy = fz(ny);
        linear_forward_bf16(y, x, w, b, lp, wk);
        linear_forward_ref(yref, x, w, b, N, F, O);
        linear_forward_ref(yrr, xr, wr, b, N, F, O);
        linear_forward_ref(Sy, xa, wa, z, N, F, O);
        const double g_f = 2.0 * F * ldexp(1, -24), g_d = 2.0 * O * ldexp(1, -24), g_w = 2.0 * N * ldexp(1, -24);
        bound("linear forward vs rounded-operand ref", y, yrr, Sy, yref, ny, g_f, 2 * ldexp(1, -24));
        double e = bound("linear forward vs fp32 ref", y, yref, Sy, yref, ny, 2 * U + U * U + g_f, 2 * ldexp(1, -24));
        if (!(e > U / 64)) fail_msg("linear forward: no bf16 rounding visible (%g)", e);
        float *dx = fz(nx), *dxref = fz(nx), *dxrr = fz(nx), *Sdx = fz(nx), *dx0 = fz(nx);
        float *dw = fz(nw), *dwref = fz(nw), *dwrr = fz(nw), *Sdw = fz(nw), *dw0 = fz(nw);
        float *db = fz(O), *dbref = fz(O), *dbS = fz(O);
        randu(dx0, nx, 540 + c, 0.5f), randu(dw0, nw, 550 + c, 0.5f);
        memcpy(dx, dx0, sizeof(float) * nx), memcpy(dxref, dx0, sizeof(float) * nx), memcpy(dxrr, dx0, sizeof(float) * nx);
        memcpy(dw, dw0, sizeof(float) * nw), memcpy(dwref, dw0, sizeof(float) * nw), memcpy(dwrr, dw0, sizeof(float) * nw);
        linear_backward_bf16(dx, dw, db, dy, x, lp, wk);
        linear_backward_ref(dxref, dwref, dbref, dy, x, w, N, F, O);
        linear_backward_ref(dxrr, dwrr, NULL, dyr, xr, wr, N, F, O);
        linear_backward_ref(Sdx, Sdw, dbS, dya, xa, wa, N, F, O);
        bound("linear backward-data vs rounded ref", dx, dxrr, Sdx, dx0, nx, g_d, g_d);
        bound("linear backward-data vs fp32 ref", dx, dxref, Sdx, dx0, nx, 2 * U + U * U + g_d, g_d);
        bound("linear backward-weights vs rounded ref", dw, dwrr, Sdw, dw0, nw, g_w, g_w);
        bound("linear backward-weights vs fp32 ref", dw, dwref, Sdw, dw0, nw, 2 * U + U * U + g_w, g_w);
        bound("linear bias gradient (fp32) vs ref", db, dbref, dbS, NULL, O, g_w, 0);
        nn_lowp_free(&lp);
        float *fs[] = {x, w, b, dy, wk, z, xr, wr, dyr, xa, wa, dya, y, yref, yrr, Sy, dx, dxref, dxrr, Sdx, dx0, dw, dwref, dwrr, Sdw, dw0, db, dbref, dbS};
        for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) test_free(fs[i]);
    }
    par_set_threads(1);
}

/* A few MoCo steps (shuffle BN, MLP head, both loss forms) in bf16 beside
 * the same steps in fp32 from the same weights, images and permutations,
 * and beside fp32 with its images and initial weights perturbed by up to
 * 2^-9 relative (the size of a bf16 rounding). A small ResNet's gradients
 * are chaotic at initialisation: fp32 itself, so perturbed, moves its
 * weights by half their update within 5 steps (measured; trainer/README.md
 * on ill-conditioned gradients), so after step 0 bf16 is held to what fp32
 * does under that perturbation, not to fp32 to the last digit:
 * step 0 (same weights, only the forward's rounding): |dL| <= 1% of L
 * (observed 0.2-0.4%); step s >= 1: |dL| / L <= 2% + 3x the perturbed fp32
 * run's largest relative loss difference so far (observed at most 1.2%
 * against 2.3-5%); weights after the steps: within 3x the perturbed run's
 * difference plus 1% of the update. The per-layer tests above are the
 * sharp ones; this one catches a step that goes wrong as a whole. */
static void moco_trio(int symmetric)
{
    enum { STEPS = 4, N = 32, S = 32 };
    float L[3][STEPS];
    float *P[3] = {NULL, NULL, NULL}, *p0 = NULL;
    size_t np = 0;
    const size_t nx = (size_t)N * 3 * S * S;
    float *x = fz(2 * nx), *xp = fz(2 * nx), *e = fz(2 * nx);
    randu(x, 2 * nx, 4242, 2.0f);
    randu(e, 2 * nx, 4343, (float)(U / 2));
    for (size_t i = 0; i < 2 * nx; i++) xp[i] = x[i] * (1.0f + e[i]);
    for (int v = 0; v < 3; v++) { /* fp32, fp32 on perturbed images, bf16 */
        moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 16, .mlp = 1, .dim = 32, .bn_splits = 2, .batch = N, .size = S,
                                .precision = v == 2 ? NN_BF16 : NN_FP32},
                        .K = 4 * N, .m = 0.99f, .T = 0.1f, .symmetric = symmetric, .lr = 0.06f, .sgd_momentum = 0.9f,
                        .weight_decay = 5e-4f, .seed = 7};
        moco *mc;
        if (moco_new(&cfg, &mc)) fail_msg("moco_new: %s", moco_errmsg());
        np = mc->q->nparams;
        if (!p0) {
            p0 = fz(np);
            memcpy(p0, mc->q->params, sizeof(float) * np);
        }
        if (v == 1) { /* the weights too, as bf16 rounds them in every layer */
            float *ew = fz(np);
            randu(ew, np, 4444, (float)(U / 2));
            for (size_t i = 0; i < np; i++) mc->q->params[i] *= 1.0f + ew[i];
            memcpy(mc->k->params, mc->q->params, sizeof(float) * np);
            test_free(ew);
        }
        const float *in = v == 1 ? xp : x;
        for (int s = 0; s < STEPS; s++) {
            moco_stats st;
            if (moco_step(mc, in, in + nx, NULL, 0.06f, &st)) fail_msg("moco_step: %s", moco_errmsg());
            L[v][s] = st.loss;
        }
        P[v] = fz(np);
        memcpy(P[v], mc->q->params, sizeof(float) * np);
        moco_destroy(&mc);
    }
    double upd = 0, dpert = 0, dbf = 0, worst_pert = 0;
    for (size_t i = 0; i < np; i++) {
        upd = fmax(upd, fabs((double)P[0][i] - p0[i]));
        dpert = fmax(dpert, fabs((double)P[1][i] - P[0][i]));
        dbf = fmax(dbf, fabs((double)P[2][i] - P[0][i]));
    }
    int differ = 0;
    for (int s = 0; s < STEPS; s++) {
        double rp = fabs((double)L[1][s] - L[0][s]) / fabs((double)L[0][s]), rb = fabs((double)L[2][s] - L[0][s]) / fabs((double)L[0][s]);
        if (s) worst_pert = fmax(worst_pert, rp);
        double tol = s ? 0.02 + 3 * worst_pert : 0.01;
        printf("  %s step %d: loss fp32 %.6f, fp32 perturbed %.6f (%.2g), bf16 %.6f (%.2g, tolerance %.2g)\n",
               symmetric ? "symmetric" : "asymmetric", s, (double)L[0][s], (double)L[1][s], rp, (double)L[2][s], rb, tol);
        if (!(rb <= tol)) fail_msg("step %d: the bf16 loss is %g relative from fp32 (tolerance %g)", s, rb, tol);
        differ |= L[2][s] != L[0][s];
    }
    printf("  query weights after %d steps: fp32 update %.3g; from fp32: perturbed %.3g, bf16 %.3g\n", STEPS, upd, dpert, dbf);
    if (!differ) fail_msg("bf16 losses equal the fp32 ones bit for bit: is the bf16 path running?");
    if (!(dbf <= 3 * dpert + 0.01 * upd)) fail_msg("bf16 weights %g from fp32, over 3x the perturbed run's %g + 1%% of the update", dbf, dpert);
    for (int v = 0; v < 3; v++) test_free(P[v]);
    test_free(p0), test_free(x), test_free(xp), test_free(e);
}

/* Under bf16 the conv outputs that only their BN reads, and the BN outputs
 * that only bf16 convs and residual adds read, are kept in bf16 (resnet.c):
 * the arena is under 74% of fp32's at resnet18-cifar width 8 (64%; 75%
 * with the conv outputs alone); a
 * train forward only writes those copies (two forwards of one input give
 * the same output, bit for bit), and backward, which reads them, fills
 * every gradient with finite values. How close bf16 training stays to fp32
 * with them is test_moco_bf16's bound. */
static void test_half_storage(void **st)
{
    (void)st;
    par_set_threads(2);
    rn_cfg c16 = {.arch = "resnet18-cifar", .width = 8, .dim = 16, .bn_splits = 2, .batch = 8, .size = 16, .precision = NN_BF16};
    rn_cfg c32 = c16;
    c32.precision = NN_FP32;
    resnet *a = NULL, *b = NULL;
    assert_int_equal(rn_new(&c16, 3, 1, NULL, &a), 0);
    assert_int_equal(rn_new(&c32, 3, 1, NULL, &b), 0);
    double ra = (double)rn_arena_bytes(a), rb = (double)rn_arena_bytes(b);
    printf("  arena: bf16 storage %.2f MB, fp32 %.2f MB (%.0f%%)\n", ra / 1048576, rb / 1048576, 100 * ra / rb);
    assert_true(ra < 0.74 * rb);
    /* two train forwards from the same input give the same output (the
     * bf16 copies are written, never read, by forward) and one backward
     * fills every gradient with finite values */
    size_t n = (size_t)8 * 3 * 16 * 16;
    float *x = fz(n), *d = fz((size_t)8 * 16);
    randu(x, n, 5, 1.0f), randu(d, (size_t)8 * 16, 6, 1.0f);
    float *y1 = fz((size_t)8 * 16);
    memcpy(y1, rn_forward(a, x, NULL, 1), sizeof(float) * 8 * 16);
    const float *y2 = rn_forward(a, x, NULL, 1);
    for (int i = 0; i < 8 * 16; i++) assert_true(y1[i] == y2[i]);
    rn_zero_grad(a);
    rn_backward(a, d);
    double g = 0;
    for (size_t i = 0; i < a->nparams; i++) {
        assert_true(isfinite(a->grads[i]));
        g += fabs(a->grads[i]);
    }
    assert_true(g > 0);
    rn_destroy(&a), rn_destroy(&b);
    test_free(x), test_free(d), test_free(y1);
    par_set_threads(1);
}

/* One train forward and backward of two models of one shape (batch 8,
 * 16x16 px, 16 outputs) on the same random input and output gradient
 * (seed): their outputs must be equal bit for bit; the gradients are left
 * in a->grads and b->grads. */
static void forward_backward_pair(resnet *a, resnet *b, const char *what, uint64_t seed)
{
    size_t n = (size_t)8 * 3 * 16 * 16;
    float *x = fz(n), *d = fz((size_t)8 * 16), *ya = fz((size_t)8 * 16);
    randu(x, n, seed, 1.0f), randu(d, (size_t)8 * 16, seed + 1, 1.0f);
    memcpy(ya, rn_forward(a, x, NULL, 1), sizeof(float) * 8 * 16);
    const float *yb = rn_forward(b, x, NULL, 1);
    for (int i = 0; i < 8 * 16; i++)
        if (ya[i] != yb[i]) fail_msg("%s: forward output %d differs: %.9g against %.9g", what, i, (double)ya[i], (double)yb[i]);
    rn_zero_grad(a), rn_zero_grad(b);
    rn_backward(a, d), rn_backward(b, d);
    test_free(x), test_free(d), test_free(ya);
}

/* Keeping BN outputs in bf16 (the inner BNs' and the blocks' outputs,
 * which bf16 convs and residual adds read) changes nothing: the forward
 * reads the fp32 values from the slots' room, and the backward needs only
 * what the bf16 copy holds (the convs round their input to bf16; the ReLU
 * mask is a sign). So against a model keeping only the conv outputs in
 * bf16, forward outputs and every gradient are equal bit for bit, in a
 * basic-block and a bottleneck ResNet, and the arena is smaller. */
static void test_half_storage_exact(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    par_set_threads(2);
    const char *archs[] = {"resnet18-cifar", "resnet50-cifar"};
    for (int t = 0; t < 2; t++) {
        rn_cfg ca = {.arch = archs[t], .width = 8, .dim = 16, .bn_splits = 2, .batch = 8, .size = 16, .precision = NN_BF16};
        rn_cfg cb = ca;
        cb.store = RN_STORE_CONV;
        resnet *a = NULL, *b = NULL;
        assert_int_equal(rn_new(&ca, 3, 1, NULL, &a), 0);
        assert_int_equal(rn_new(&cb, 3, 1, NULL, &b), 0);
        double ra = (double)rn_arena_bytes(a), rb = (double)rn_arena_bytes(b);
        printf("  %s: arena %.2f MB with BN outputs in bf16, %.2f MB without (%.0f%%)\n", archs[t], ra / 1048576, rb / 1048576,
               100 * ra / rb);
        assert_true(ra < 0.9 * rb);
        forward_backward_pair(a, b, archs[t], 7);
        double g = 0;
        for (size_t i = 0; i < a->nparams; i++) {
            if (a->grads[i] != b->grads[i])
                fail_msg("%s: gradient %zu differs: %.9g against %.9g", archs[t], i, (double)a->grads[i], (double)b->grads[i]);
            g += fabs(a->grads[i]);
        }
        assert_true(g > 0);
        rn_destroy(&a), rn_destroy(&b);
    }
    par_set_threads(1);
}

/* Where the backward of a conv reading a BN output runs an fp32 kernel that
 * can read a bf16 input (the 1x1 stride-1 GEMM here, with every backward
 * on fp32 kernels through MOCO_BF16_FP32=bwd; oneDNN fp32 where measured
 * fastest), that BN output is kept in bf16 too: the arena is smaller than
 * with the conv outputs alone, the forward is the same bit for bit, and
 * the gradients move only by the input's rounding for those weight
 * gradients (bf16 precision's contract): some differ, all within 1%
 * in norm. */
static void test_half_storage_fp32_kernels(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    par_set_threads(2);
    setenv("MOCO_BF16_FP32", "bwd", 1);
    rn_cfg ca = {.arch = "resnet50-cifar", .width = 8, .dim = 16, .bn_splits = 2, .batch = 8, .size = 16, .precision = NN_BF16};
    rn_cfg cb = ca;
    cb.store = RN_STORE_CONV;
    resnet *a = NULL, *b = NULL;
    assert_int_equal(rn_new(&ca, 3, 1, NULL, &a), 0);
    assert_int_equal(rn_new(&cb, 3, 1, NULL, &b), 0);
    unsetenv("MOCO_BF16_FP32");
    double ra = (double)rn_arena_bytes(a), rb = (double)rn_arena_bytes(b);
    printf("  backward on fp32 kernels: arena %.2f MB with BN outputs in bf16, %.2f MB without (%.0f%%)\n", ra / 1048576,
           rb / 1048576, 100 * ra / rb);
    assert_true(ra < 0.95 * rb);
    forward_backward_pair(a, b, "resnet50-cifar", 9);
    double dd = 0, nb = 0;
    size_t differ = 0;
    for (size_t i = 0; i < a->nparams; i++) {
        assert_true(isfinite(a->grads[i]));
        double e = (double)a->grads[i] - b->grads[i];
        dd += e * e, nb += (double)b->grads[i] * b->grads[i], differ += e != 0;
    }
    printf("  gradients: %zu of %zu differ, relative difference %.3g in norm\n", differ, a->nparams, sqrt(dd / nb));
    assert_true(differ > 0 && nb > 0);
    assert_true(sqrt(dd / nb) < 0.01);
    rn_destroy(&a), rn_destroy(&b);
    par_set_threads(1);
}

static void test_moco_bf16(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    par_set_threads(2);
    moco_trio(0);
    moco_trio(1);
    par_set_threads(1);
}

/* ---- against PyTorch's bf16 autocast (tools/gen_bf16_golden.py) ---- */

static moco_st *G;

static const float *gt(const char *name, size_t want)
{
    const moco_st_tensor *t = moco_st_find(G, name);
    if (!t) fail_msg("golden tensor %s missing", name);
    if (t->dtype != MOCO_ST_F32 || (t->end - t->begin) / 4 != want)
        fail_msg("golden tensor %s: %llu bytes, expected %zu floats", name, (unsigned long long)(t->end - t->begin), want);
    return moco_st_data(G, t);
}

static const int64_t *gdims(const char *name, size_t want)
{
    const moco_st_tensor *t = moco_st_find(G, name);
    if (!t || t->dtype != MOCO_ST_I64 || (t->end - t->begin) / 8 != want) fail_msg("golden tensor %s missing or malformed", name);
    return moco_st_data(G, t);
}

/* PyTorch rounded its result to bf16 (at most u relative), after the same
 * exact products summed in another order: |ours - torch| <= u |torch| + g S
 * (+ extra[i]: autocast also rounds a linear layer's bias to bf16, which we
 * add in fp32: u |b| more). */
static void vs_torch(const char *what, const float *ours, const float *torch_, const float *S, const float *extra, size_t n, double g)
{
    double worst = 0;
    size_t at = 0;
    int rounded_away = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)ours[i] - torch_[i]), l = U * fabs((double)torch_[i]) + g * S[i] + (extra ? extra[i] : 0) + 1e-30;
        if (!(d / l <= worst)) worst = d / l, at = i;
        rounded_away |= ours[i] != torch_[i];
    }
    printf("  %-28s n=%-6zu max |d| / (u|torch| + g S) = %.3g %s\n", what, n, worst, worst <= 1 ? "ok" : "OUT OF BOUND");
    if (!(worst <= 1)) fail_msg("%s: ours %g, torch %g at %zu", what, (double)ours[at], (double)torch_[at], at);
    if (!rounded_away) fail_msg("%s: equal to PyTorch's bf16 values everywhere: were ours rounded to bf16?", what);
}

static void test_vs_torch(void **st)
{
    (void)st;
    if (!bf16_or_skip()) skip();
    if (moco_st_open(GOLDEN, &G)) fail_msg("%s", moco_errmsg());
    par_set_threads(2);
    char nm[64];
#define GT(suf, n) (snprintf(nm, sizeof nm, "conv%d." suf, c), gt(nm, n))
    for (int c = 0; c < 4; c++) {
        snprintf(nm, sizeof nm, "conv%d.dims", c);
        const int64_t *q = gdims(nm, 8);
        const int N = (int)q[0], Ci = (int)q[1], H = (int)q[2], W = (int)q[3], Co = (int)q[4], k = (int)q[5], s = (int)q[6], p = (int)q[7];
        nn_conv d, dr;
        nn_conv_init(&d, N, Ci, H, W, Co, k, s, p, 1 << 16);
        nn_conv_init(&dr, N, Ci, H, W, Co, k, s, p, 1 << 16);
        size_t work = 0;
        if (nn_conv_bf16(&d, &work)) fail_msg("%s", moco_errmsg());
        printf("conv%d: N %d Ci %d %dx%d Co %d k %d s %d p %d\n", c, N, Ci, H, W, Co, k, s, p);
        const size_t nx = (size_t)N * Ci * H * W, ny = (size_t)N * Co * d.Ho * d.Wo, nw = (size_t)Co * Ci * k * k;
        const int HWi = H * W, HWo = d.Ho * d.Wo;
        float *x = fz(nx), *dy = fz(ny), *y = fz(ny), *dx = fz(nx), *dw = fz(nw), *wk = fz(work), *out = fz(nx > ny ? nx : ny);
        nn_nchw_to_cnhw(x, GT("x", nx), N, Ci, HWi);
        nn_nchw_to_cnhw(dy, GT("dy", ny), N, Co, HWo);
        const float *w = GT("w", nw);
        float *xa = absdup(x, nx), *wa = absdup(w, nw), *dya = absdup(dy, ny), *Sy = fz(ny), *Sdx = fz(nx), *Sdw = fz(nw);
        conv2d_forward_ref(Sy, xa, wa, &dr);
        conv2d_backward_ref(Sdx, Sdw, dya, xa, wa, &dr);
        float *Sy_n = fz(ny), *Sdx_n = fz(nx);
        nn_cnhw_to_nchw(Sy_n, Sy, N, Co, HWo);
        nn_cnhw_to_nchw(Sdx_n, Sdx, N, Ci, HWi);
        conv2d_forward(y, x, w, &d, wk);
        nn_cnhw_to_nchw(out, y, N, Co, HWo);
        vs_torch("forward", out, GT("y", ny), Sy_n, NULL, ny, 2.0 * Ci * k * k * ldexp(1, -24));
        conv2d_backward(dx, dw, dy, x, w, &d, wk);
        nn_cnhw_to_nchw(out, dx, N, Ci, HWi);
        vs_torch("backward-data", out, GT("dx", nx), Sdx_n, NULL, nx, 2.0 * Co * k * k * ldexp(1, -24));
        vs_torch("backward-weights", dw, GT("dw", nw), Sdw, NULL, nw, 2.0 * N * HWo * ldexp(1, -24));
        nn_conv_free(&d);
        float *fs[] = {x, dy, y, dx, dw, wk, out, xa, wa, dya, Sy, Sdx, Sdw, Sy_n, Sdx_n};
        for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) test_free(fs[i]);
    }
#undef GT
    {
        const int64_t *q = gdims("lin.dims", 3);
        const int N = (int)q[0], F = (int)q[1], O = (int)q[2];
        printf("linear: N %d F %d O %d\n", N, F, O);
        nn_lowp *lp;
        size_t work = 0;
        if (nn_linear_bf16(&lp, N, F, O, &work)) fail_msg("%s", moco_errmsg());
        const float *x = gt("lin.x", (size_t)N * F), *w = gt("lin.w", (size_t)O * F), *b = gt("lin.b", O), *dy = gt("lin.dy", (size_t)N * O);
        float *y = fz((size_t)N * O), *dx = fz((size_t)N * F), *dw = fz((size_t)O * F), *db = fz(O), *wk = fz(work), *z = fz((size_t)N * O);
        float *xa = absdup(x, (size_t)N * F), *wa = absdup(w, (size_t)O * F), *dya = absdup(dy, (size_t)N * O);
        float *Sy = fz((size_t)N * O), *Sdx = fz((size_t)N * F), *Sdw = fz((size_t)O * F), *Sdb = fz(O);
        linear_forward_ref(Sy, xa, wa, NULL, N, F, O);
        for (int n = 0; n < N; n++)
            for (int o = 0; o < O; o++) Sy[(size_t)n * O + o] += fabsf(b[o]), z[(size_t)n * O + o] = (float)(U * fabs(b[o]));
        linear_backward_ref(Sdx, Sdw, Sdb, dya, xa, wa, N, F, O);
        linear_forward_bf16(y, x, w, b, lp, wk);
        vs_torch("linear forward", y, gt("lin.y", (size_t)N * O), Sy, z, (size_t)N * O, 2.0 * (F + 1) * ldexp(1, -24));
        linear_backward_bf16(dx, dw, db, dy, x, lp, wk);
        vs_torch("linear backward-data", dx, gt("lin.dx", (size_t)N * F), Sdx, NULL, (size_t)N * F, 2.0 * O * ldexp(1, -24));
        vs_torch("linear backward-weights", dw, gt("lin.dw", (size_t)O * F), Sdw, NULL, (size_t)O * F, 2.0 * N * ldexp(1, -24));
        vs_torch("linear bias gradient", db, gt("lin.db", O), Sdb, NULL, O, 2.0 * N * ldexp(1, -24));
        nn_lowp_free(&lp);
        float *fs[] = {y, dx, dw, db, wk, z, xa, wa, dya, Sy, Sdx, Sdw, Sdb};
        for (size_t i = 0; i < sizeof fs / sizeof *fs; i++) test_free(fs[i]);
    }
    moco_st_destroy(&G);
    par_set_threads(1);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_rule),
        cmocka_unit_test(test_conv_bf16),
        cmocka_unit_test(test_conv_bf16_small_chunks),
        cmocka_unit_test(test_linear_bf16),
        cmocka_unit_test(test_vs_torch),
        cmocka_unit_test(test_moco_bf16),
        cmocka_unit_test(test_half_storage),
        cmocka_unit_test(test_half_storage_exact),
        cmocka_unit_test(test_half_storage_fp32_kernels),
    };
    if (nn_bf16_available()) {
        setenv("MOCO_BF16_EMULATE", "1", 1);
        if (nn_bf16_available()) {
            printf("bf16 unavailable: %s\n", moco_errmsg());
            return TEST_SKIP_STATUS;
        }
        printf("no AVX512_BF16 here: bf16 on oneDNN's emulation (MOCO_BF16_EMULATE=1)\n");
    }
    return cmocka_run_group_tests(tests, NULL, NULL);
}
