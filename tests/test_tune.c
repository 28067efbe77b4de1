/* test_tune.c: kernels chosen by measurement (trainer/engine/tune.h).
 *  - nn_conv_plan: every algorithm that says it can run a shape computes
 *    (at the CPU's SIMD level, and at AVX2's on an AVX-512 CPU: oneDNN's
 *    fp32 kernels between the AVX2 transposes there) what the plain reference does (forward, backward with and without the
 *    input gradient), on the stem, 3x3 stride 1 and 2, small planes, 1x1
 *    stride 1 and 2; bf16 against the reference on bf16-rounded operands;
 *    where the kernels read an input kept in bf16 (in_half: oneDNN, the
 *    1x1 stride-1 GEMM), the weight gradient of the rounded input;
 *  - tune_conv measuring: the choice is the fastest candidate timed, every
 *    candidate that can run the shape is timed, and those that cannot are not;
 *  - the wisdom file: saved, found again by a fresh table (nothing timed),
 *    other machines' lines kept, lines that do not parse reported and
 *    dropped, a forged choice that cannot run the shape measured afresh;
 *    other builds' lines kept verbatim even where this build cannot parse
 *    them (an unknown choice, precision, layer); a failed write (full disk)
 *    keeps the old file and is an error naming it;
 *  - TUNE_RULE: nn_conv_init's rule, nothing timed, no file written;
 *  - repeatable: on 2 threads, every algorithm's weight and input
 *    gradients are the same bit for bit in 40 repetitions (per-thread
 *    partial sums over a fixed set of chunks, par_for_fixed). */
#include "tests/testutil.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <sys/resource.h>

#include "formats/errors.h"
#include "formats/rng.h"
#include "trainer/engine/conv3.h"
#include "trainer/engine/nn.h"
#include "trainer/engine/par.h"
#include "trainer/engine/tune.h"
#include "trainer/engine/wino.h"

static float *fz(size_t n) { return test_calloc(n ? n : 1, sizeof(float)); }

static void randu(float *p, size_t n, uint64_t seed)
{
    moco_rng r;
    moco_rng_init(&r, seed, 5, 0, 0);
    for (size_t i = 0; i < n; i++) p[i] = (float)(2.0 * moco_rng_uniform(&r) - 1.0);
}

static void check(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double md = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d;
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    double rel = md / fmax(scale, 1e-3);
    if (!(rel <= tol)) fail_msg("%s: relative difference %g over %g", what, rel, tol);
}

/* N, Ci, H, W, Co, k, stride, pad */
static const int shapes[][8] = {{4, 3, 8, 8, 8, 3, 1, 1},   {5, 8, 8, 8, 16, 3, 1, 1},   {18, 8, 4, 4, 8, 3, 1, 1},
                                {17, 8, 8, 8, 16, 3, 2, 1}, {6, 16, 4, 4, 32, 1, 1, 0}, {6, 16, 8, 8, 32, 1, 2, 0},
                                {3, 16, 6, 6, 32, 3, 1, 1}, {5, 32, 4, 4, 16, 3, 1, 1}}; /* the last two: Winograd too */

static void plan_every_algo(void)
{
    int ran[NN_ALGO_COUNT] = {0}, ran_half = 0, ran_set = 0, want_set = 0;
    par_set_threads(2);
    for (size_t c = 0; c < sizeof shapes / sizeof *shapes; c++)
        for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT; a++) {
            const int *q = shapes[c];
            if (!nn_conv_algo_ok(a, q[1], q[2], q[3], q[4], q[5], q[6], q[7])) continue;
            nn_conv d;
            size_t work = 0;
            memset(&d, 0, sizeof d);
            assert_int_equal(nn_conv_plan(&d, q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], a, 1 << 16, &work), 0);
            /* direct at the CPU's level, direct-avx2 at AVX2's (1) */
            assert_int_equal(d.direct, a == NN_ALGO_DIRECT ? conv3_simd() : a == NN_ALGO_DIRECT_AVX2 ? 1 : 0);
            assert_int_equal(d.lanes, a == NN_ALGO_LANES);
            const int onednn = a == NN_ALGO_BF16 || a == NN_ALGO_ONEDNN || a == NN_ALGO_WINO;
            assert_int_equal(d.lp != NULL, onednn);
            size_t nx = (size_t)q[0] * q[1] * q[2] * q[3], ny = (size_t)q[0] * q[4] * d.Ho * d.Wo, nw = (size_t)q[4] * q[1] * q[5] * q[5];
            float *x = fz(nx), *w = fz(nw), *y = fz(ny), *yr = fz(ny), *dy = fz(ny), *dx = fz(nx), *dxr = fz(nx), *dw = fz(nw),
                  *dwr = fz(nw), *wk = fz(work);
            randu(x, nx, 1 + c), randu(w, nw, 2 + c), randu(dy, ny, 3 + c);
            double tol = 2e-5; /* Winograd too: 0.6-1.2e-6 on the shapes here (the direct sums 0.1-0.6e-6) */
            if (a == NN_ALGO_BF16) { /* products of bf16 operands are exact in fp32: only the order of sums differs */
                nn_bf16_round(x, nx), nn_bf16_round(w, nw), nn_bf16_round(dy, ny);
                tol = 1e-4;
            }
            printf("%s: N %d Ci %d %dx%d Co %d k %d/%d\n", nn_algo_name(a), q[0], q[1], q[2], q[3], q[4], q[5], q[6]);
            conv2d_forward(y, x, w, &d, wk);
            conv2d_forward_ref(yr, x, w, &d);
            check("forward", y, yr, ny, tol);
            conv2d_backward(q[1] < 4 ? NULL : dx, dw, dy, x, w, &d, wk); /* the stem: no input gradient */
            conv2d_backward_ref(q[1] < 4 ? NULL : dxr, dwr, dy, x, w, &d);
            if (q[1] >= 4) check("input gradient", dx, dxr, nx, tol);
            check("weight gradient", dw, dwr, nw, tol);
            /* dinp_set (the first writer of a gradient): where the kernel says it can, dinp is written
             * whatever it held (NaN here), bit for bit what adding into zeros gave; elsewhere it adds */
            if (q[1] >= 4) {
                float *dx2 = fz(nx);
                for (size_t i = 0; i < nx; i++) dx2[i] = nn_conv_sets_dinp(&d) ? NAN : 1.0f;
                d.dinp_set = 1;
                conv2d_backward(dx2, NULL, dy, x, w, &d, wk);
                d.dinp_set = 0;
                for (size_t i = 0; i < nx; i++) /* adding onto 1 rounds on its own way */
                    if (nn_conv_sets_dinp(&d) ? !(dx2[i] == dx[i]) : !(fabsf(dx2[i] - (dx[i] + 1.0f)) <= 1e-5f * (1.0f + fabsf(dx[i]))))
                        fail_msg("dinp_set (%s), element %zu: %g against %g", nn_conv_sets_dinp(&d) ? "written" : "added", i, dx2[i], dx[i]);
                ran_set += nn_conv_sets_dinp(&d);
                want_set += onednn && !(q[5] == 1 && q[6] == 1 && q[7] == 0);
                test_free(dx2);
            }
            /* the input kept in bf16 (in_half: bf16 precision's storage), where the kernels can read it
             * (oneDNN, the 1x1 stride-1 GEMM): the weight gradient of the input rounded to bf16 */
            if (onednn || a == NN_ALGO_OWN_WINO || a == NN_ALGO_OWN_WINO4 || (a == NN_ALGO_GEMM && q[5] == 1 && q[6] == 1 && q[7] == 0)) {
                uint16_t *xh = test_calloc(nx, sizeof(uint16_t));
                float *xr = fz(nx), *dwh = fz(nw);
                nn_to_bf16(xh, x, nx);
                nn_from_bf16(xr, xh, nx);
                memset(dwr, 0, sizeof(float) * nw);
                conv2d_backward_ref(NULL, dwr, dy, xr, w, &d);
                d.in_half = 1;
                conv2d_backward(NULL, dwh, dy, (const float *)xh, w, &d, wk);
                d.in_half = 0;
                check("weight gradient from the bf16 input", dwh, dwr, nw, tol);
                double moved = 0; /* the rounding shows: not the fp32 input's gradient */
                for (size_t i = 0; i < nw; i++) moved = fmax(moved, fabs((double)dwh[i] - dw[i]));
                if (a != NN_ALGO_BF16) assert_true(moved > 0);
                ran_half++;
                test_free(xh), test_free(xr), test_free(dwh);
            }
            nn_conv_free(&d);
            ran[a]++;
            test_free(x), test_free(w), test_free(y), test_free(yr), test_free(dy), test_free(dx), test_free(dxr), test_free(dw),
                test_free(dwr), test_free(wk);
        }
    assert_int_equal(ran[NN_ALGO_GEMM], 8); /* every shape */
    printf("ran: gemm %d, direct %d, direct-avx2 %d, lanes %d, bf16 %d, onednn %d, onednn-wino %d, wino %d, wino4 %d\n",
           ran[NN_ALGO_GEMM], ran[NN_ALGO_DIRECT], ran[NN_ALGO_DIRECT_AVX2], ran[NN_ALGO_LANES], ran[NN_ALGO_BF16], ran[NN_ALGO_ONEDNN],
           ran[NN_ALGO_WINO], ran[NN_ALGO_OWN_WINO], ran[NN_ALGO_OWN_WINO4]);
    /* oneDNN's fp32 kernels run every shape of kernel size > 1 (six above) where they are candidates, and
     * its Winograd kernels the two 3x3 stride-1 ones of 16 and 32 channels (6x6 planes: 16 positions
     * straddle two images in the blocked layout; 4x4: they do not) */
    assert_int_equal(ran[NN_ALGO_ONEDNN], nn_onednn_available() == 0 ? 6 : 0);
    assert_int_equal(ran[NN_ALGO_WINO], nn_onednn_available() == 0 && conv3_simd() == 2 ? 2 : 0); /* nChw16c: AVX-512 */
    /* our Winograd: the 3x3 stride-1 shapes of even planes and channels multiples of 8 (all but the
     * stem); F(4x4, 3x3): those whose sides are multiples of 4 (not 6x6) */
    assert_int_equal(ran[NN_ALGO_OWN_WINO], wino_cpu() ? 4 : 0);
    assert_int_equal(ran[NN_ALGO_OWN_WINO4], wino_cpu() ? 3 : 0);
    /* dinp_set honoured by the oneDNN convolutions, fp32 and bf16, but for the 1x1 stride-1 matmuls */
    assert_int_equal(ran_set, want_set);
    if (nn_onednn_available() == 0) assert_true(ran_set >= 3);
    /* in_half: the 1x1 stride-1 GEMM, every oneDNN run, and our Winograd */
    assert_int_equal(ran_half, 1 + ran[NN_ALGO_BF16] + ran[NN_ALGO_ONEDNN] + ran[NN_ALGO_WINO] + ran[NN_ALGO_OWN_WINO] +
                               ran[NN_ALGO_OWN_WINO4]);
    /* on an AVX-512 CPU both builds of the direct kernels are candidates
     * (the three 3x3 stride-1 shapes above on 8x8 and 6x6: the stem, 8->16, 16->32) */
    if (conv3_simd() == 2) assert_int_equal(ran[NN_ALGO_DIRECT_AVX2], 3);
    else assert_int_equal(ran[NN_ALGO_DIRECT_AVX2], 0);
    /* an algorithm that cannot run a shape is refused with a message */
    nn_conv d;
    size_t work;
    assert_int_equal(nn_conv_algo_ok(NN_ALGO_DIRECT, 16, 4, 4, 32, 1, 1, 0), 0);
    assert_int_equal(nn_conv_plan(&d, 6, 16, 4, 4, 32, 1, 1, 0, NN_ALGO_DIRECT, 1 << 16, &work), MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "direct kernels cannot run it"));
    par_set_threads(1);
}

/* At the CPU's level, and on an AVX-512 CPU again at AVX2's (MOCO_CONV3=1,
 * as on a CPU without AVX-512): oneDNN's fp32 kernels then run between the
 * AVX2 transposes (nhwc.h), and Winograd and bf16 are no candidates. */
static void test_plan_every_algo(void **st)
{
    (void)st;
    const int top = conv3_simd();
    printf("at SIMD level %d\n", top);
    plan_every_algo();
    if (top == 2) {
        conv3_set_simd(1);
        printf("at SIMD level 1 (AVX2)\n");
        assert_int_equal(nn_conv_algo_ok(NN_ALGO_WINO, 16, 8, 8, 16, 3, 1, 1), 0);
        plan_every_algo();
        conv3_set_simd(-1);
    }
}

static char *slurp(const char *path)
{
    FILE *f = fopen(path, "r");
    if (!f) return NULL;
    char *b = test_calloc(1, 1 << 20);
    size_t n = fread(b, 1, (1 << 20) - 1, f);
    b[n] = 0;
    fclose(f);
    return b;
}

static int count_lines(const char *s)
{
    int n = 0;
    for (; s && *s; s++) n += *s == '\n';
    return n;
}

/* Backward on 2 threads, 40 times over the same operands: the weight and
 * input gradients must not change by a bit. With at least 3 chunks a task
 * claimed by another thread changes the order of the weight gradient's
 * partial sums, and so its rounding. */
static void test_repeatable(void **st)
{
    (void)st;
    par_set_threads(2);
    setenv("MOCO_BF16_CHUNK_KB", "16", 1); /* small bf16 chunks: many tasks */
    const int rs[][8] = {{48, 8, 8, 8, 16, 3, 1, 1}, {48, 16, 8, 8, 16, 3, 2, 1}, {48, 16, 4, 4, 32, 1, 1, 0}, {48, 16, 8, 8, 16, 3, 1, 1}};
    int ran = 0, ran_wino = 0;
    for (size_t c = 0; c < sizeof rs / sizeof *rs; c++)
        for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT; a++) {
            const int *q = rs[c];
            if (!nn_conv_algo_ok(a, q[1], q[2], q[3], q[4], q[5], q[6], q[7])) continue;
            nn_conv d;
            size_t work = 0;
            memset(&d, 0, sizeof d);
            assert_int_equal(nn_conv_plan(&d, q[0], q[1], q[2], q[3], q[4], q[5], q[6], q[7], a, 1 << 10, &work), 0);
            const int chunk = d.chunk; /* nn_conv_bf16 sets it too */
            if ((q[0] + chunk - 1) / chunk < 3) fail_msg("%s: chunks of %d images: fewer than 3 tasks", nn_algo_name(a), chunk);
            size_t nx = (size_t)q[0] * q[1] * q[2] * q[3], ny = (size_t)q[0] * q[4] * d.Ho * d.Wo, nw = (size_t)q[4] * q[1] * q[5] * q[5];
            float *x = fz(nx), *w = fz(nw), *dy = fz(ny), *dx = fz(nx), *dw = fz(nw), *dx0 = fz(nx), *dw0 = fz(nw), *wk = fz(work);
            randu(x, nx, 11 + c), randu(w, nw, 12 + c), randu(dy, ny, 13 + c);
            int differ = 0;
            for (int rep = 0; rep < 40; rep++) {
                memset(dx, 0, nx * 4), memset(dw, 0, nw * 4);
                conv2d_backward(dx, dw, dy, x, w, &d, wk);
                if (rep == 0) {
                    memcpy(dx0, dx, nx * 4), memcpy(dw0, dw, nw * 4);
                    continue;
                }
                differ += memcmp(dw, dw0, nw * 4) != 0 || memcmp(dx, dx0, nx * 4) != 0;
            }
            printf("%s: N %d Ci %d %dx%d Co %d k %d/%d, chunks of %d: %d of 39 repetitions differ from the first\n",
                   nn_algo_name(a), q[0], q[1], q[2], q[3], q[4], q[5], q[6], chunk, differ);
            if (differ) fail_msg("%s: gradients differ between repetitions on 2 threads", nn_algo_name(a));
            nn_conv_free(&d);
            ran++, ran_wino += a == NN_ALGO_WINO;
            test_free(x), test_free(w), test_free(dy), test_free(dx), test_free(dw), test_free(dx0), test_free(dw0), test_free(wk);
        }
    assert_true(ran >= 4);
    assert_int_equal(ran_wino, nn_onednn_available() == 0 && conv3_simd() == 2 ? 1 : 0);
    unsetenv("MOCO_BF16_CHUNK_KB");
    par_set_threads(1);
}

/* The wisdom file at path becomes one line of this machine and build: a
 * forward pass of shape (N,Ci,H,W,Co,k,s,p) in precision, said to have
 * chosen `choice` in 0.001 ms; then a fresh process (table) reads it. */
static void forge_line(const char *path, const char *precision, const char *shape, const char *choice)
{
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fprintf(f, "{\"cpu\":\"%s\",\"build\":\"%s\",\"threads\":2,\"precision\":\"%s\",\"pass\":\"fwd\","
               "\"shape\":[%s],\"choice\":\"%s\",\"ms\":{\"%s\":0.001}}\n",
            tune_cpu(), tune_build(), precision, shape, choice, choice);
    fclose(f);
    tune_configure(TUNE_MEASURE, path);
}

static void test_measure_and_wisdom(void **st)
{
    (void)st;
    par_set_threads(2);
    const char *dir = tu_tmpdir("tune");
    char path[4200];
    snprintf(path, sizeof path, "%s/sub/wisdom.jsonl", dir); /* its directory is made */
    const tune_shape s1 = {16, 8, 8, 8, 16, 3, 1, 1}, s2 = {8, 16, 4, 4, 16, 1, 1, 0};
    tune_choice c, c2;
    /* the rule: nothing timed, nothing written */
    tune_configure(TUNE_RULE, path);
    assert_int_equal(tune_conv(&s1, TUNE_FWD, NN_FP32, 1 << 16, &c), 0);
    assert_int_equal(c.algo, nn_conv_rule(8, 8, 8, 16, 3, 1, 1));
    assert_int_equal(c.measured, 0);
    for (int a = 0; a < NN_ALGO_COUNT; a++) assert_true(c.ms[a] < 0);
    assert_int_equal(tune_save(), 0);
    assert_null(slurp(path));

    /* measured: the fastest of the candidates that can run it, and only those */
    tune_configure(TUNE_MEASURE, path);
    for (int p = 0; p < TUNE_PASSES; p++) {
        assert_int_equal(tune_conv(&s1, p, NN_FP32, 1 << 16, &c), 0);
        assert_int_equal(c.measured, 1);
        for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT; a++) {
            int can = a != NN_ALGO_BF16 && nn_conv_algo_ok(a, 8, 8, 8, 16, 3, 1, 1);
            assert_int_equal(c.ms[a] >= 0, can);
            if (can) assert_true(c.ms[c.algo] <= c.ms[a]);
        }
        assert_true(c.ms[c.algo] > 0);
        assert_int_equal(c.ms[NN_ALGO_DIRECT_AVX2] >= 0, conv3_simd() == 2); /* timed where AVX-512 is the CPU's level */
    }
    assert_int_equal(tune_conv(&s2, TUNE_FWD, NN_FP32, 1 << 16, &c2), 0);
    assert_int_equal(c2.algo, NN_ALGO_GEMM); /* the only candidate of a 1x1 */
    assert_true(c2.ms[NN_ALGO_DIRECT] < 0 && c2.ms[NN_ALGO_LANES] < 0);
    /* asked again in this process: the same answer, not timed again */
    tune_choice again;
    assert_int_equal(tune_conv(&s1, TUNE_BWD_W, NN_FP32, 1 << 16, &again), 0);
    assert_int_equal(again.algo, c.algo);
    assert_true(again.ms[c.algo] == c.ms[c.algo]);
    assert_int_equal(tune_save(), 0);
    char *text = slurp(path);
    assert_non_null(text);
    assert_int_equal(count_lines(text), 4);
    assert_non_null(strstr(text, "\"pass\":\"bwd-w\""));
    assert_non_null(strstr(text, "\"shape\":[8,16,4,4,16,1,1,0]"));
    assert_non_null(strstr(text, tune_cpu()));
    test_free(text);

    /* another machine's line, a line that does not parse, and a forged
     * choice for s2 (direct cannot run a 1x1) are added to the file */
    FILE *f = fopen(path, "a");
    assert_non_null(f);
    fprintf(f, "{\"cpu\":\"Other CPU\",\"build\":\"x\",\"threads\":2,\"precision\":\"fp32\",\"pass\":\"fwd\","
               "\"shape\":[1,1,1,1,1,1,1,0],\"choice\":\"gemm\",\"ms\":{\"gemm\":1.0}}\n");
    fprintf(f, "{\"cpu\": not json\n");
    fclose(f);
    text = slurp(path);
    char *p2 = strstr(text, "\"shape\":[8,16,4,4,16,1,1,0],\"choice\":\"gemm\",\"ms\":{\"gemm\":");
    assert_non_null(p2);
    memcpy(p2 + strlen("\"shape\":[8,16,4,4,16,1,1,0],\"choice\":\""), "xxxx", 4); /* "gemm" -> "xxxx": does not parse */
    f = fopen(path, "w");
    fputs(text, f);
    fclose(f);
    test_free(text);

    /* a fresh process (table): found in the file, nothing timed */
    tune_configure(TUNE_MEASURE, path);
    assert_int_equal(tune_conv(&s1, TUNE_BWD_W, NN_FP32, 1 << 16, &again), 0);
    assert_int_equal(again.measured, 0);
    assert_int_equal(again.algo, c.algo);
    const char *note = tune_note();
    assert_non_null(note);
    printf("note: %s\n", note);
    assert_non_null(strstr(note, "2 lines do not parse"));
    assert_null(tune_note()); /* once */
    /* s2's line was spoilt: timed again, and the rewrite keeps the other machine's line and drops the bad ones */
    assert_int_equal(tune_conv(&s2, TUNE_FWD, NN_FP32, 1 << 16, &c2), 0);
    assert_int_equal(c2.measured, 1);
    assert_int_equal(tune_save(), 0);
    text = slurp(path);
    assert_int_equal(count_lines(text), 5);
    assert_non_null(strstr(text, "Other CPU"));
    assert_null(strstr(text, "not json"));
    assert_null(strstr(text, "xxxx"));
    test_free(text);

    /* a forged choice of this machine that parses but cannot run the shape (lanes for a 1x1): measured afresh */
    forge_line(path, "fp32", "8,16,4,4,16,1,1,0", "lanes");
    assert_int_equal(tune_conv(&s2, TUNE_FWD, NN_FP32, 1 << 16, &c2), 0);
    assert_int_equal(c2.measured, 1);
    assert_int_equal(c2.algo, NN_ALGO_GEMM);
    assert_null(tune_note());
    /* an fp32 line of this machine that says bf16 (which can run s1 where the
     * CPU has it): not taken, so an fp32 run never rounds to bf16 */
    forge_line(path, "fp32", "16,8,8,8,16,3,1,1", "bf16");
    assert_int_equal(tune_conv(&s1, TUNE_FWD, NN_FP32, 1 << 16, &c2), 0);
    assert_int_equal(c2.measured, 1);
    assert_int_not_equal(c2.algo, NN_ALGO_BF16);
    assert_true(c2.ms[NN_ALGO_BF16] < 0);
    if (nn_bf16_available() == 0) { /* under bf16 the same line is bf16's own: taken */
        forge_line(path, "bf16", "16,8,8,8,16,3,1,1", "bf16");
        assert_int_equal(tune_conv(&s1, TUNE_FWD, NN_BF16, 1 << 16, &c2), 0);
        assert_int_equal(c2.measured, 0);
        assert_int_equal(c2.algo, NN_ALGO_BF16);
    }

    /* linear layers: fp32 has one candidate (OpenBLAS), untimed; under
     * bf16 both are timed and the faster kept, as a "layer":"linear" line
     * that a convolution of the same numbers does not pick up */
    tune_configure(TUNE_MEASURE, path);
    assert_int_equal(tune_linear(16, 64, 32, 1, NN_FP32, &c), 0);
    assert_int_equal(c.algo, NN_ALGO_GEMM);
    assert_int_equal(c.measured, 0);
    for (int a = 0; a < NN_ALGO_COUNT; a++) assert_true(c.ms[a] < 0);
    if (nn_bf16_available() == 0) {
        assert_int_equal(tune_linear(16, 64, 32, 1, NN_BF16, &c), 0);
        assert_int_equal(c.measured, 1);
        assert_true(c.ms[NN_ALGO_GEMM] > 0 && c.ms[NN_ALGO_BF16] > 0);
        assert_true(c.ms[c.algo] <= c.ms[NN_ALGO_GEMM] && c.ms[c.algo] <= c.ms[NN_ALGO_BF16]);
        assert_true(c.ms[NN_ALGO_DIRECT] < 0 && c.ms[NN_ALGO_LANES] < 0);
        assert_int_equal(tune_linear(16, 64, 32, 0, NN_BF16, &again), 0); /* forward only: its own line */
        assert_int_equal(again.measured, 1);
        assert_int_equal(tune_save(), 0);
        text = slurp(path);
        assert_non_null(strstr(text, "\"layer\":\"linear\",\"pass\":\"bwd\",\"shape\":[16,64,1,1,32,1,1,0]"));
        assert_non_null(strstr(text, "\"layer\":\"linear\",\"pass\":\"fwd\",\"shape\":[16,64,1,1,32,1,1,0]"));
        test_free(text);
        tune_configure(TUNE_MEASURE, path); /* a fresh process: found, not timed */
        assert_int_equal(tune_linear(16, 64, 32, 1, NN_BF16, &again), 0);
        assert_int_equal(again.measured, 0);
        assert_int_equal(again.algo, c.algo);
        const tune_shape as_conv = {16, 64, 1, 1, 32, 1, 1, 0};
        assert_int_equal(tune_conv(&as_conv, TUNE_BWD, NN_BF16, 1 << 16, &again), 0);
        assert_int_equal(again.measured, 1); /* the linear line is not a convolution's */
    }

    /* a file that cannot be written: an error naming it */
    tune_configure(TUNE_MEASURE, "/proc/nonexistent/wisdom.jsonl");
    assert_int_equal(tune_conv(&s2, TUNE_FWD, NN_FP32, 1 << 16, &c2), 0);
    assert_int_equal(tune_save(), MOCO_EIO);
    assert_non_null(strstr(moco_errmsg(), "/proc/nonexistent/wisdom.jsonl"));
    tune_configure(TUNE_RULE, NULL);
    par_set_threads(1);
}

/* Lines of other builds or CPUs are kept verbatim, also those naming a
 * choice or a precision this build does not know (they were dropped); a
 * write that fails (a full disk, made here by RLIMIT_FSIZE) keeps the old
 * file whole and is an error naming it (it was replaced by a cut one). */
static void test_wisdom_kept(void **st)
{
    (void)st;
    par_set_threads(2);
    const char *dir = tu_tmpdir("tune_kept");
    char path[4200];
    snprintf(path, sizeof path, "%s/wisdom.jsonl", dir);
    const tune_shape s2 = {8, 16, 4, 4, 16, 1, 1, 0};
    tune_choice c;
    tune_configure(TUNE_MEASURE, path);
    assert_int_equal(tune_conv(&s2, TUNE_FWD, NN_FP32, 1 << 16, &c), 0); /* tune_cpu, tune_build known */
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    for (int i = 0; i < 200; i++) /* 40 kB: more than a stdio buffer */
        fprintf(f, "{\"cpu\":\"Other CPU %d\",\"build\":\"y\",\"threads\":2,\"precision\":\"fp64\",\"pass\":\"fwd\","
                   "\"shape\":[1,1,1,1,1,1,1,0],\"choice\":\"direct-avx10\",\"ms\":{\"direct-avx10\":1.0}}\n", i);
    fprintf(f, "{\"cpu\":\"%s\",\"build\":\"a later build\",\"threads\":2,\"precision\":\"fp32\",\"layer\":\"attention\","
               "\"pass\":\"fwd\",\"shape\":[8,16,4,4,16,1,1,0],\"choice\":\"direct-avx10\",\"ms\":{\"direct-avx10\":0.5}}\n",
            tune_cpu());
    fclose(f);
    char *old = slurp(path);
    assert_non_null(old);
    tune_configure(TUNE_MEASURE, path); /* a fresh table: the lines are not ours, and not bad */
    assert_int_equal(tune_conv(&s2, TUNE_FWD, NN_FP32, 1 << 16, &c), 0);
    assert_int_equal(c.measured, 1);
    assert_null(tune_note());
    /* a full disk */
    struct rlimit rl0, rl;
    assert_int_equal(getrlimit(RLIMIT_FSIZE, &rl0), 0);
    void (*sig0)(int) = signal(SIGXFSZ, SIG_IGN);
    rl = rl0;
    rl.rlim_cur = 8192;
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl), 0);
    int rc = tune_save();
    assert_int_equal(setrlimit(RLIMIT_FSIZE, &rl0), 0);
    signal(SIGXFSZ, sig0);
    printf("full disk: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_EIO);
    char want[8600];
    snprintf(want, sizeof want, "cannot write the wisdom file %s: %s; it is left as it was", path, strerror(EFBIG));
    assert_string_equal(moco_errmsg(), want);
    char *text = slurp(path);
    assert_non_null(text);
    assert_string_equal(text, old);
    test_free(text);
    assert_int_not_equal(tu_sh("ls '%s' | grep -q 'tmp$'", dir), 0); /* no temporary file left */
    /* room again: the other lines verbatim, first, and ours after them */
    assert_int_equal(tune_save(), 0);
    text = slurp(path);
    assert_non_null(text);
    assert_int_equal(count_lines(text), 202);
    assert_memory_equal(text, old, strlen(old));
    assert_non_null(strstr(text + strlen(old), tune_build()));
    test_free(text);
    test_free(old);
    tune_configure(TUNE_RULE, NULL);
    par_set_threads(1);
}

/* A checkpoint's choices (tune_used_lines) taken over the wisdom file's by
 * tune_pin, as a resume does: the file says one algorithm, the pin another,
 * and the pin runs; the file is not rewritten for it; lines of another CPU
 * and lines that do not parse are passed over, and counted. */
static void test_pin(void **st)
{
    (void)st;
    par_set_threads(2);
    const char *dir = tu_tmpdir("tune_pin");
    char path[4200];
    snprintf(path, sizeof path, "%s/wisdom.jsonl", dir);
    const tune_shape s1 = {16, 8, 8, 8, 16, 3, 1, 1};
    tune_choice c, p;
    int lines = -1;
    tune_configure(TUNE_RULE, path);
    assert_null(tune_used_lines());
    assert_int_equal(tune_pin("{}\n", &lines), 0);
    assert_int_equal(lines, 0);

    tune_configure(TUNE_MEASURE, path);
    assert_null(tune_used_lines()); /* nothing asked yet */
    assert_int_equal(tune_conv(&s1, TUNE_FWD, NN_FP32, 1 << 16, &c), 0);
    assert_int_equal(c.measured, 1);
    char *used = tune_used_lines();
    assert_non_null(used);
    assert_int_equal(count_lines(used), 1);
    char want[64];
    snprintf(want, sizeof want, "\"choice\":\"%s\"", nn_algo_name(c.algo));
    assert_non_null(strstr(used, want));
    free(used);
    assert_int_equal(tune_save(), 0);
    char *file = slurp(path);
    assert_non_null(file);
    /* another candidate the file does not name */
    int other = -1;
    for (int a = NN_ALGO_GEMM; a < NN_ALGO_COUNT && other < 0; a++)
        if (a != c.algo && c.ms[a] >= 0) other = a;
    assert_true(other >= 0);
    char text[2048];
    snprintf(text, sizeof text,
             "{\"cpu\":\"%s\",\"build\":\"an older build\",\"threads\":2,\"precision\":\"fp32\",\"pass\":\"fwd\","
             "\"shape\":[16,8,8,8,16,3,1,1],\"choice\":\"%s\",\"ms\":{\"%s\":9.0}}\n"
             "{\"cpu\":\"Other CPU\",\"build\":\"x\",\"threads\":2,\"precision\":\"fp32\",\"pass\":\"bwd\","
             "\"shape\":[16,8,8,8,16,3,1,1],\"choice\":\"gemm\",\"ms\":{\"gemm\":1.0}}\n"
             "{\"cpu\": not json\n",
             tune_cpu(), nn_algo_name(other), nn_algo_name(other));
    tune_configure(TUNE_MEASURE, path); /* a fresh process, resuming */
    assert_int_equal(tune_pin(text, &lines), 1);
    assert_int_equal(lines, 3);
    assert_int_equal(tune_conv(&s1, TUNE_FWD, NN_FP32, 1 << 16, &p), 0);
    assert_int_equal(p.algo, other); /* the pin, not the file's choice */
    assert_int_equal(p.measured, 0);
    assert_int_equal(tune_conv(&s1, TUNE_BWD, NN_FP32, 1 << 16, &p), 0); /* the other CPU's line: not taken */
    assert_int_equal(p.measured, 1);
    used = tune_used_lines(); /* what this run's checkpoints keep: the pin, and the measured backward */
    assert_non_null(used);
    assert_int_equal(count_lines(used), 2);
    snprintf(want, sizeof want, "\"choice\":\"%s\"", nn_algo_name(other));
    assert_non_null(strstr(used, want));
    free(used);
    assert_int_equal(tune_save(), 0); /* the backward is added; the forward's line stays the file's */
    char *after = slurp(path);
    assert_non_null(after);
    assert_int_equal(count_lines(after), 2);
    assert_memory_equal(after, file, strlen(file));

    /* the evaluation commands' mode: the pin where there is one, else the
     * rule (not the file's line: nothing read, nothing timed, nothing written) */
    tune_configure(TUNE_CHECKPOINT, path);
    assert_int_equal(tune_pin(text, &lines), 1);
    assert_int_equal(tune_conv(&s1, TUNE_FWD, NN_FP32, 1 << 16, &p), 0);
    assert_int_equal(p.algo, other);
    assert_int_equal(p.measured, 0);
    assert_int_equal(tune_conv(&s1, TUNE_BWD, NN_FP32, 1 << 16, &p), 0);
    assert_int_equal(p.algo, nn_conv_rule(8, 8, 8, 16, 3, 1, 1));
    assert_int_equal(p.measured, 0);
    for (int a = 0; a < NN_ALGO_COUNT; a++) assert_true(p.ms[a] < 0); /* the rule's: no times (the file's line has them) */
    used = tune_used_lines(); /* the pins that ran */
    assert_non_null(used);
    assert_int_equal(count_lines(used), 1);
    free(used);
    /* a linear layer's training choice (forward and backward, "bwd") is
     * what an evaluation's forward alone runs on, also where it is not the
     * rule's (bf16 under bf16); with neither line pinned, the rule's */
    char lin[1024];
    snprintf(lin, sizeof lin,
             "{\"cpu\":\"%s\",\"build\":\"x\",\"threads\":2,\"precision\":\"bf16\",\"layer\":\"linear\",\"pass\":\"bwd\","
             "\"shape\":[16,64,1,1,32,1,1,0],\"choice\":\"gemm\",\"ms\":{\"gemm\":0.1,\"bf16\":0.2}}\n",
             tune_cpu());
    tune_configure(TUNE_CHECKPOINT, path);
    assert_int_equal(tune_pin(lin, &lines), 1);
    assert_int_equal(tune_linear(16, 64, 32, 0, NN_BF16, &p), 0);
    assert_int_equal(p.algo, NN_ALGO_GEMM);
    assert_int_equal(p.measured, 0);
    used = tune_used_lines();
    assert_non_null(used);
    assert_non_null(strstr(used, "\"layer\":\"linear\",\"pass\":\"bwd\""));
    free(used);
    assert_int_equal(tune_linear(16, 64, 48, 0, NN_BF16, &p), 0); /* another shape: the rule */
    assert_int_equal(p.algo, NN_ALGO_BF16);
    assert_int_equal(tune_save(), 0);
    char *last = slurp(path);
    assert_non_null(last);
    assert_string_equal(last, after);
    test_free(last);
    test_free(after);
    test_free(file);
    tune_configure(TUNE_RULE, NULL);
    par_set_threads(1);
}

/* Our Winograd, F(2x2, 3x3) and F(4x4, 3x3), on the planes and channel
 * counts of resnet18-cifar's stages (32x32 with 16 channels to 4x4 with
 * 128), over several chunks and a short last one, against the plain
 * references; on a CPU without AVX2 neither is a candidate. */
static void test_own_wino_shapes(void **st)
{
    (void)st;
    par_set_threads(2);
    const int sh[][5] = {{9, 16, 32, 32, 16}, {11, 32, 16, 16, 32}, {13, 64, 8, 8, 64}, {37, 128, 4, 4, 128}, {7, 16, 10, 6, 24}};
    int ran = 0;
    for (size_t c = 0; c < 2 * sizeof sh / sizeof *sh; c++) {
        const int *q = sh[c % 5], algo = c < 5 ? NN_ALGO_OWN_WINO : NN_ALGO_OWN_WINO4;
        if (!nn_conv_algo_ok(algo, q[1], q[2], q[3], q[4], 3, 1, 1)) continue;
        nn_conv d;
        size_t work = 0;
        memset(&d, 0, sizeof d);
        assert_int_equal(nn_conv_plan(&d, q[0], q[1], q[2], q[3], q[4], 3, 1, 1, algo, 1 << 20, &work), 0);
        assert_int_equal(d.wino, algo == NN_ALGO_OWN_WINO ? 2 : 4);
        const size_t nx = (size_t)q[0] * q[1] * q[2] * q[3], ny = (size_t)q[0] * q[4] * q[2] * q[3], nw = (size_t)q[4] * q[1] * 9;
        float *x = fz(nx), *w = fz(nw), *y = fz(ny), *yr = fz(ny), *dy = fz(ny), *dx = fz(nx), *dxr = fz(nx), *dw = fz(nw),
              *dwr = fz(nw), *wk = fz(work);
        randu(x, nx, 31 + c), randu(w, nw, 32 + c), randu(dy, ny, 33 + c);
        printf("%s: N %d Ci %d %dx%d Co %d, chunks of %d\n", nn_algo_name(algo), q[0], q[1], q[2], q[3], q[4], d.chunk);
        assert_true(d.chunk < q[0]); /* more than one chunk */
        conv2d_forward(y, x, w, &d, wk);
        conv2d_forward_ref(yr, x, w, &d);
        check("forward", y, yr, ny, 2e-5);
        conv2d_backward(dx, dw, dy, x, w, &d, wk);
        conv2d_backward_ref(dxr, dwr, dy, x, w, &d);
        check("input gradient", dx, dxr, nx, 2e-5);
        check("weight gradient", dw, dwr, nw, 2e-5);
        nn_conv_free(&d);
        ran++;
        test_free(x), test_free(w), test_free(y), test_free(yr), test_free(dy), test_free(dx), test_free(dxr), test_free(dw),
            test_free(dwr), test_free(wk);
    }
    assert_int_equal(ran, wino_cpu() ? 9 : 0); /* 10x6: not F(4x4, 3x3) */
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pin),
        cmocka_unit_test(test_plan_every_algo),
        cmocka_unit_test(test_measure_and_wisdom),
        cmocka_unit_test(test_wisdom_kept),
        cmocka_unit_test(test_repeatable),
        cmocka_unit_test(test_own_wino_shapes),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
