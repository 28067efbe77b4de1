/* test_trainer.c: whole encoders and the MoCo step against PyTorch
 * (tests/golden/trainer/, from tools/gen_trainer_golden.py): resnet18-cifar
 * width 8 and resnet50 width 4 (7x7 stem, max-pool, Bottleneck, MLP head):
 * outputs in train and eval mode, every parameter gradient, BN running
 * statistics; MoCo steps (shuffle BN with 2 splits, queue, InfoNCE, SGD with
 * momentum and weight decay, momentum update of the key encoder, symmetric
 * loss): losses, weights of both encoders, the queue. Weights are loaded
 * from safetensors files with torchvision's names. Plus: parameter counts
 * of torchvision's resnet18/34/50, save/load round trip, refused loads,
 * and a NaN loss. Model references are float64 results stored as float32
 * (see tools/gen_trainer_golden.py). Tolerances (relative to the largest magnitude of the
 * expected tensor) are stated at each check; each prints its largest
 * difference. */
#include "tests/testutil.h"

#include <math.h>
#include <sys/mman.h>

#include "formats/errors.h"
#include "formats/rng.h"
#include "formats/safetensors.h"
#include "trainer/engine/moco.h"
#include "trainer/engine/par.h"

#define DIR "tests/golden/trainer/"

static int nfail;

static void check(const char *what, const float *got, const float *want, size_t n, double tol)
{
    double md = 0, scale = 0;

    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d;
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    double rel = md / fmax(scale, 1e-3);
    int ok = rel <= tol;
    if (!ok || getenv("VERBOSE"))
        printf("  %-44s n=%-7zu max|diff| %.3g (scale %.3g) rel %.3g tol %.0e %s\n", what, n, md, scale, rel, tol,
               ok ? "ok" : "MISMATCH");
    if (!ok) nfail++;
}

/* Largest relative difference over a group, printed once. */
typedef struct { double worst; const char *where; char buf[96]; } worst_t;
static void track(worst_t *w, const char *name, const float *got, const float *want, size_t n)
{
    double md = 0, scale = 0;
    for (size_t i = 0; i < n; i++) {
        double d = fabs((double)got[i] - want[i]);
        if (!(d <= md)) md = d;
        if (fabs(want[i]) > scale) scale = fabs(want[i]);
    }
    double rel = md / fmax(scale, 1e-3);
    if (!(rel <= w->worst)) w->worst = rel, snprintf(w->buf, sizeof w->buf, "%s", name), w->where = w->buf;
}

static const float *gf(moco_st *st, const char *name, size_t n)
{
    const moco_st_tensor *t = moco_st_find(st, name);
    if (!t) fail_msg("golden tensor %s missing", name);
    if (t->dtype != MOCO_ST_F32 || (t->end - t->begin) / 4 != n) fail_msg("golden tensor %s has the wrong size", name);
    return moco_st_data(st, t);
}

/* Write the tensors of st named PREFIX<name> as a file of <name>s: a
 * torchvision-named state_dict, as PyTorch would save it. */
static const char *extract(moco_st *st, const char *prefix, const char *file)
{
    static char path[512];
    snprintf(path, sizeof path, "%s/%s", tu_tmpdir(file), "w.safetensors");
    moco_st_entry e[1024];
    int n = 0;
    size_t pl = strlen(prefix);
    for (int i = 0; i < moco_st_count(st); i++) {
        const moco_st_tensor *t = moco_st_at(st, i);
        if (strncmp(t->name, prefix, pl)) continue;
        assert_true(n < 1024);
        e[n] = (moco_st_entry){t->name + pl, t->dtype, t->ndim, {0}, moco_st_data(st, t)};
        memcpy(e[n].shape, t->shape, sizeof t->shape);
        n++;
    }
    assert_int_equal(moco_st_write(path, e, n, NULL, 0), 0);
    return path;
}

static void model_case(const char *file, const char *arch, int width, int mlp, int N, int size, int splits, int dim, double tol)
{
    moco_st *st;
    char path[256];
    snprintf(path, sizeof path, DIR "%s", file);
    if (moco_st_open(path, &st)) fail_msg("%s", moco_errmsg());
    rn_cfg cfg = {.arch = arch, .width = width, .mlp = mlp, .dim = dim, .bn_splits = splits, .batch = N, .size = size};
    resnet *m;
    assert_int_equal(rn_new(&cfg, 7, 1, NULL, &m), 0);
    const char *w = extract(st, "init.", file);
    if (rn_load(m, w)) fail_msg("load: %s", moco_errmsg());
    printf("%s: %s width %d%s, batch %d, %dx%d, %d BN splits, %zu parameters\n", file, arch, width, mlp ? " mlp" : "", N, size,
           size, splits, m->nparams);
    const float *x = gf(st, "x", (size_t)N * 3 * size * size);
    const float *out = rn_forward(m, x, NULL, 1);
    nfail = 0;
    check("train-mode output", out, gf(st, "out", (size_t)N * dim), (size_t)N * dim, tol);
    rn_backward(m, gf(st, "dout", (size_t)N * dim));
    worst_t wg = {0, "", ""}, wb = {0, "", ""};
    int ng = 0;
    for (int i = 0; i < m->ntensors; i++) {
        const rn_tensor *t = &m->tensors[i];
        char nm[128];
        if (t->kind == RN_PARAM) {
            snprintf(nm, sizeof nm, "grad.%s", t->name);
            const float *want = gf(st, nm, t->numel);
            check(nm, rn_grad(m, t), want, t->numel, tol);
            track(&wg, nm, rn_grad(m, t), want, t->numel);
            ng++;
        } else if (t->kind == RN_BUFFER) {
            snprintf(nm, sizeof nm, "after.%s", t->name);
            const float *want = gf(st, nm, t->numel);
            check(nm, rn_data(m, t), want, t->numel, tol);
            track(&wb, nm, rn_data(m, t), want, t->numel);
        } else {
            snprintf(nm, sizeof nm, "after.%s", t->name);
            int64_t c;
            assert_int_equal(moco_st_read(st, nm, MOCO_ST_I64, 0, NULL, &c), 0);
            assert_int_equal(*(int64_t *)rn_data(m, t), c);
        }
    }
    float tf32, probe;
    assert_int_equal(moco_st_read(st, "torch_f32_err", MOCO_ST_F32, 1, (int64_t[]){1}, &tf32), 0);
    /* the generator keeps only cases whose exact gradients move by less than
     * 5e-4 under float32-sized noise (tools/gen_trainer_golden.py) */
    assert_int_equal(moco_st_read(st, "f64_perturb_err", MOCO_ST_F32, 1, (int64_t[]){1}, &probe), 0);
    assert_true(probe < 5e-4f);
    printf("  %d parameter gradients: largest relative difference %.3g (%s), tol %.0e; PyTorch's own float32: %.3g;"
           " float64 under float32-sized noise: %.3g\n", ng, wg.worst, wg.where, tol, (double)tf32, (double)probe);
    printf("  BN running statistics: largest relative difference %.3g (%s)\n", wb.worst, wb.where);
    out = rn_forward(m, x, NULL, 0);
    check("eval-mode output (running stats)", out, gf(st, "out_eval", (size_t)N * dim), (size_t)N * dim, tol);
    rn_destroy(&m);
    moco_st_destroy(&st);
    if (nfail) fail_msg("%s: %d mismatches", file, nfail);
}

static void test_resnet18_cifar_w8(void **s)
{
    (void)s;
    par_set_threads(1);
    model_case("r18c_w8.safetensors", "resnet18-cifar", 8, 0, 4, 16, 1, 32, 2e-4);
    printf("again with 2 compute threads\n");
    par_set_threads(2);
    model_case("r18c_w8.safetensors", "resnet18-cifar", 8, 0, 4, 16, 1, 32, 2e-4);
}

static void test_resnet50_w4_mlp(void **s)
{
    (void)s;
    model_case("r50_w4.safetensors", "resnet50", 4, 1, 16, 48, 1, 16, 2e-3);
}

static void moco_case(const char *file, double tol)
{
    moco_st *st;
    char path[256];
    snprintf(path, sizeof path, DIR "%s", file);
    if (moco_st_open(path, &st)) fail_msg("%s", moco_errmsg());
    int64_t c[8];
    float cf[4];
    assert_int_equal(moco_st_read(st, "cfg", MOCO_ST_I64, 1, (int64_t[]){8}, c), 0);
    assert_int_equal(moco_st_read(st, "cfgf", MOCO_ST_F32, 1, (int64_t[]){4}, cf), 0);
    int N = (int)c[0], size = (int)c[1], K = (int)c[2], dim = (int)c[3], steps = (int)c[7];
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = (int)c[6], .dim = dim, .bn_splits = (int)c[4], .batch = N, .size = size},
                    .K = K, .m = cf[1], .T = cf[0], .symmetric = (int)c[5], .lr = cf[2], .sgd_momentum = 0.9f, .weight_decay = cf[3], .seed = 5};
    moco *mc;
    if (moco_new(&cfg, &mc)) fail_msg("%s", moco_errmsg());
    const char *w = extract(st, "init.", file);
    if (rn_load(mc->q, w) || rn_load(mc->k, w)) fail_msg("load: %s", moco_errmsg());
    printf("%s: resnet18-cifar width 4%s, N %d, %dx%d, K %d, dim %d, %lld BN splits%s, %d steps\n", file, c[6] ? " mlp" : "", N,
           size, size, K, dim, (long long)c[4], c[5] ? ", symmetric" : "", steps);
    memcpy(mc->queue, gf(st, "queue0", (size_t)dim * K), sizeof(float) * (size_t)dim * K);
    float *init = malloc(sizeof(float) * mc->q->nparams);
    memcpy(init, mc->q->params, sizeof(float) * mc->q->nparams);
    nfail = 0;
    int dirs = c[5] ? 2 : 1;
    for (int s = 0; s < steps; s++) {
        char nm[64];
        size_t nx = (size_t)N * 3 * size * size;
        snprintf(nm, sizeof nm, "step%d.x1", s);
        const float *x1 = gf(st, nm, nx);
        snprintf(nm, sizeof nm, "step%d.x2", s);
        const float *x2 = gf(st, nm, nx);
        int64_t perm[64];
        snprintf(nm, sizeof nm, "step%d.perm", s);
        assert_int_equal(moco_st_read(st, nm, MOCO_ST_I64, 1, (int64_t[]){(int64_t)N * dirs}, perm), 0);
        moco_stats ms;
        assert_int_equal(moco_step(mc, x1, x2, (const uint64_t *)perm, cf[2], &ms), 0);
        float loss = ms.loss;
        snprintf(nm, sizeof nm, "step%d.loss", s);
        const float *want = gf(st, nm, 1);
        printf("  step %d: loss %.6f, PyTorch %.6f\n", s, (double)loss, (double)want[0]);
        check(nm, &loss, want, 1, 1e-5);
    }
    /* weights: compare the change from the initial weights, so that small
     * SGD steps are not hidden by the weights' own magnitude */
    worst_t wq = {0, "", ""}, wk = {0, "", ""}, wbuf = {0, "", ""};
    for (int e = 0; e < 2; e++) {
        resnet *m = e ? mc->k : mc->q;
        for (int i = 0; i < m->ntensors; i++) {
            const rn_tensor *t = &m->tensors[i];
            char nm[128];
            snprintf(nm, sizeof nm, "%s.%s", e ? "k" : "q", t->name);
            if (t->kind == RN_COUNT) {
                int64_t v;
                assert_int_equal(moco_st_read(st, nm, MOCO_ST_I64, 0, NULL, &v), 0);
                assert_int_equal(*(int64_t *)rn_data(m, t), v);
                continue;
            }
            const float *want = gf(st, nm, t->numel), *got = rn_data(m, t);
            if (t->kind == RN_BUFFER) {
                check(nm, got, want, t->numel, tol);
                track(&wbuf, nm, got, want, t->numel);
                continue;
            }
            float *dg = malloc(sizeof(float) * t->numel), *dw = malloc(sizeof(float) * t->numel);
            for (size_t j = 0; j < t->numel; j++) dg[j] = got[j] - init[t->off + j], dw[j] = want[j] - init[t->off + j];
            char lbl[140];
            snprintf(lbl, sizeof lbl, "%s (change)", nm);
            check(lbl, dg, dw, t->numel, tol);
            track(e ? &wk : &wq, nm, dg, dw, t->numel);
            free(dg), free(dw);
        }
    }
    printf("  query weights after the steps (change from init): largest relative difference %.3g (%s), tol %.0e\n", wq.worst,
           wq.where, tol);
    printf("  key weights after the steps (change from init): largest relative difference %.3g (%s)\n", wk.worst, wk.where);
    printf("  BN running statistics of both encoders: largest relative difference %.3g (%s)\n", wbuf.worst, wbuf.where);
    check("queue", mc->queue, gf(st, "queue", (size_t)dim * K), (size_t)dim * K, tol);
    int64_t ptr;
    assert_int_equal(moco_st_read(st, "ptr", MOCO_ST_I64, 1, (int64_t[]){1}, &ptr), 0);
    assert_int_equal(mc->ptr, ptr);
    free(init);
    moco_destroy(&mc);
    moco_st_destroy(&st);
    if (nfail) fail_msg("%s: %d mismatches", file, nfail);
}

static void test_moco_steps(void **s)
{
    (void)s;
    moco_case("moco_a.safetensors", 1e-3);
}

static void test_moco_symmetric_mlp(void **s)
{
    (void)s;
    moco_case("moco_b.safetensors", 1e-3);
}

static void test_torchvision_shapes(void **s)
{
    (void)s;
    /* parameter counts of torchvision.models.resnetXX(num_classes=1000) */
    const struct { const char *arch; size_t params; } want[] = {
        {"resnet18", 11689512}, {"resnet34", 21797672}, {"resnet50", 25557032}};
    for (int i = 0; i < 3; i++) {
        rn_cfg cfg = {.arch = want[i].arch, .width = 64, .mlp = 0, .dim = 1000, .bn_splits = 1, .batch = 2, .size = 32};
        resnet *m;
        assert_int_equal(rn_new(&cfg, 1, 0, NULL, &m), 0);
        printf("%s: %zu parameters (torchvision %zu), %d tensors\n", want[i].arch, m->nparams, want[i].params, m->ntensors);
        assert_int_equal(m->nparams, want[i].params);
        assert_non_null(rn_find(m, "conv1.weight"));
        assert_non_null(rn_find(m, "bn1.running_mean"));
        assert_int_equal(rn_find(m, "bn1.num_batches_tracked")->kind, RN_COUNT);
        assert_non_null(rn_find(m, "layer2.0.downsample.1.weight"));
        assert_non_null(rn_find(m, "fc.weight"));
        if (i == 2) {
            assert_non_null(rn_find(m, "layer1.0.downsample.1.weight"));
            assert_int_equal(rn_find(m, "layer4.2.conv3.weight")->shape[0], 2048);
        }
        rn_destroy(&m);
    }
    rn_cfg bad = {.arch = "resnet19", .width = 64, .mlp = 0, .dim = 128, .bn_splits = 1, .batch = 2, .size = 32};
    resnet *m = NULL;
    assert_int_equal(rn_new(&bad, 1, 0, NULL, &m), MOCO_EINVAL);
    bad.arch = "resnet18", bad.bn_splits = 3;
    assert_int_equal(rn_new(&bad, 1, 0, NULL, &m), MOCO_EINVAL);
    bad.bn_splits = 1, bad.size = 0;
    assert_int_equal(rn_new(&bad, 1, 0, NULL, &m), MOCO_EINVAL);
    assert_null(m);
}

/* max |w| and std of one tensor */
static void wstats(const resnet *m, const char *name, double *maxabs, double *sd)
{
    const rn_tensor *t = rn_find(m, name);
    assert_non_null(t);
    const float *p = m->params + t->off;
    double s = 0, s2 = 0, mx = 0;
    for (size_t i = 0; i < t->numel; i++) s += p[i], s2 += (double)p[i] * p[i], mx = fmax(mx, fabs(p[i]));
    *maxabs = mx, *sd = sqrt(s2 / t->numel - (s / t->numel) * (s / t->numel));
}

/* --init: torchvision's Kaiming-normal fan-out, the demo's (conv1 at PyTorch's
 * Conv2d default), PyTorch's default (U(-1/sqrt(fan_in), 1/sqrt(fan_in))) */
static void test_init_kinds(void **s)
{
    (void)s;
    rn_cfg cfg = {.arch = "resnet18-cifar", .width = 16, .dim = 128, .bn_splits = 1, .batch = 2, .size = 32};
    const double b1 = 1.0 / sqrt(27.0), bl = 1.0 / sqrt(16.0 * 9), sd1 = sqrt(2.0 / (16 * 9)), sdl = sqrt(2.0 / (16 * 9));
    for (int init = 0; init < 3; init++) {
        cfg.init = init;
        resnet *m;
        assert_int_equal(rn_new(&cfg, 5, 0, NULL, &m), 0);
        double mx1, s1, mxl, sl, mxd, sdd;
        wstats(m, "conv1.weight", &mx1, &s1);            /* 16x3x3x3: fan_in 27, fan_out 144 */
        wstats(m, "layer1.0.conv1.weight", &mxl, &sl);   /* 16x16x3x3: fan_in = fan_out = 144 */
        wstats(m, "layer2.0.downsample.0.weight", &mxd, &sdd); /* 32x16x1x1: fan_in 16, fan_out 32 */
        printf("init %s: conv1 max %.4f sd %.4f, layer1.0.conv1 max %.4f sd %.4f, downsample sd %.4f\n",
               rn_init_name(init), mx1, s1, mxl, sl, sdd);
        if (init == RN_INIT_TORCHVISION) { /* normal: some |w| beyond 2 sd */
            assert_true(fabs(s1 - sd1) < 0.1 * sd1 && mx1 > 2 * sd1);
        } else { /* uniform: all within the bound, sd = bound / sqrt 3 */
            assert_true(mx1 <= b1 && mx1 > 0.95 * b1 && fabs(s1 - b1 / sqrt(3.0)) < 0.1 * b1 / sqrt(3.0));
        }
        if (init == RN_INIT_PYTORCH) {
            assert_true(mxl <= bl && fabs(sl - bl / sqrt(3.0)) < 0.05 * bl / sqrt(3.0));
            assert_true(fabs(sdd - 0.25 / sqrt(3.0)) < 0.1 * 0.25 / sqrt(3.0));
        } else {
            assert_true(fabs(sl - sdl) < 0.05 * sdl && mxl > 3 * sdl);
            assert_true(fabs(sdd - sqrt(2.0 / 32)) < 0.1 * sqrt(2.0 / 32));
        }
        rn_destroy(&m);
    }
    cfg.init = 3;
    resnet *m = NULL;
    assert_int_equal(rn_new(&cfg, 5, 0, NULL, &m), MOCO_EINVAL);
    assert_null(m);
    assert_int_equal(rn_init_parse("demo"), RN_INIT_DEMO);
    assert_int_equal(rn_init_parse("kaiming"), -1);
}

/* A model without gradients runs its forward in the compact places
 * (resnet.c plan_compact): the key encoder on the query encoder's arena,
 * and a model of its own; both give the query encoder's forward bit for
 * bit (output, pooled features, BN running statistics), in train and
 * eval mode. */
static void compact_case(const char *arch, int width, int mlp, int N, int size, int splits, int precision)
{
    rn_cfg cfg = {.arch = arch, .width = width, .mlp = mlp, .dim = 16, .bn_splits = splits, .batch = N, .size = size,
                  .precision = precision};
    resnet *q, *k, *e;
    assert_int_equal(rn_new(&cfg, 3, 1, NULL, &q), 0);
    assert_int_equal(rn_new(&cfg, 4, 0, q, &k), 0);
    assert_int_equal(rn_new(&cfg, 5, 0, NULL, &e), 0);
    assert_null(q->fwd_at); /* a model with gradients keeps its activations */
    assert_non_null(k->fwd_at);
    assert_non_null(e->fwd_at);
    for (int i = 0; i < 2; i++) {
        resnet *o = i ? e : k;
        memcpy(o->params, q->params, sizeof(float) * q->nparams);
        memcpy(o->buffers, q->buffers, sizeof(float) * q->nbuffers);
    }
    const size_t nx = (size_t)N * 3 * size * size, D = (size_t)cfg.dim, F = (size_t)q->features;
    float *x = malloc(sizeof(float) * nx), *want = malloc(sizeof(float) * N * (D + F));
    uint64_t *perm = malloc(sizeof(uint64_t) * N);
    moco_rng r;
    moco_rng_init(&r, 11, 0, 0, 0);
    for (size_t i = 0; i < nx; i++) x[i] = (float)(moco_rng_uniform(&r) * 2 - 1);
    for (int i = 0; i < N; i++) perm[i] = (uint64_t)(N - 1 - i);
    for (int train = 1; train >= 0; train--) {
        memcpy(want, rn_forward(q, x, perm, train), sizeof(float) * N * D);
        memcpy(want + N * D, rn_pooled(q), sizeof(float) * N * F);
        for (int i = 0; i < 2; i++) {
            resnet *o = i ? e : k;
            const float *out = rn_forward(o, x, perm, train);
            assert_memory_equal(out, want, sizeof(float) * N * D);
            assert_memory_equal(rn_pooled(o), want + N * D, sizeof(float) * N * F);
            assert_memory_equal(o->buffers, q->buffers, sizeof(float) * q->nbuffers);
        }
    }
    printf("%s width %d%s, batch %d, %dx%d, %s: compact forwards equal the kept one bit for bit\n", arch, width,
           mlp ? " mlp" : "", N, size, size, precision == NN_BF16 ? "bf16" : "fp32");
    free(x), free(want), free(perm);
    rn_destroy(&e), rn_destroy(&k), rn_destroy(&q);
}

static void test_compact_forward(void **s)
{
    (void)s;
    compact_case("resnet18-cifar", 8, 0, 8, 16, 2, NN_FP32);
    compact_case("resnet50", 4, 1, 4, 32, 2, NN_FP32);
    if (nn_bf16_available() == 0) compact_case("resnet18-cifar", 16, 1, 8, 16, 2, NN_BF16);
    else printf("bf16: %s (skipped)\n", moco_errmsg());
}

/* The VmFlags line of the mapping that holds address p in
 * /proc/self/smaps into out (empty when none) */
static void vmflags_of(uintptr_t p, char *out, size_t n)
{
    FILE *f = fopen("/proc/self/smaps", "r");
    assert_non_null(f);
    char line[512];
    int in = 0;
    out[0] = 0;
    while (fgets(line, sizeof line, f)) {
        unsigned long lo, hi;
        if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2 && strchr(line, '-') < strchr(line, ' ')) in = p >= lo && p < hi;
        else if (in && !strncmp(line, "VmFlags:", 8)) {
            snprintf(out, n, "%s", line);
            in = 0;
        }
    }
    fclose(f);
}

/* The activation arena asks for transparent huge pages (resnet.c
 * arena_alloc): the mapping that holds a forward's output carries
 * MADV_HUGEPAGE ("hg" in its VmFlags), whether or not the kernel then
 * gives huge pages. Where a mapping of the test's own, madvised the same
 * way, does not show "hg" either (qemu-user: madvise is not passed on, the
 * flags are made up), nothing can be read: skipped. */
static void test_arena_huge_pages(void **s)
{
    (void)s;
    if (access("/sys/kernel/mm/transparent_hugepage/enabled", R_OK)) { /* a kernel built without them */
        printf("skipped: this kernel has no transparent huge pages\n");
        skip();
    }
    char flags[512];
    const size_t len = (size_t)8 << 20;
    void *own = mmap(NULL, len, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    assert_true(own != MAP_FAILED);
    assert_int_equal(madvise(own, len, MADV_HUGEPAGE), 0);
    vmflags_of((uintptr_t)own, flags, sizeof flags);
    munmap(own, len);
    assert_true(flags[0]);
    if (!strstr(flags, " hg")) {
        printf("skipped: a mapping of this test's own, with MADV_HUGEPAGE, shows %s", flags);
        skip();
    }
    rn_cfg cfg = {.arch = "resnet18-cifar", .width = 8, .mlp = 0, .dim = 16, .bn_splits = 2, .batch = 8, .size = 16};
    resnet *q, *e;
    assert_int_equal(rn_new(&cfg, 3, 1, NULL, &q), 0);
    assert_int_equal(rn_new(&cfg, 3, 0, NULL, &e), 0);
    float *x = calloc((size_t)8 * 3 * 16 * 16, sizeof(float));
    assert_non_null(x);
    for (int i = 0; i < 2; i++) {
        vmflags_of((uintptr_t)rn_forward(i ? e : q, x, NULL, 1), flags, sizeof flags);
        printf("%s model: the arena's mapping: %s", i ? "evaluation" : "query", flags);
        assert_true(flags[0]);
        assert_non_null(strstr(flags, " hg"));
    }
    free(x);
    rn_destroy(&e), rn_destroy(&q);
}

static void test_save_load(void **s)
{
    (void)s;
    const char *dir = tu_tmpdir("trainer_save_load");
    char p[600], q[600];
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    rn_cfg cfg = {.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 16, .bn_splits = 1, .batch = 2, .size = 8};
    resnet *a, *b;
    assert_int_equal(rn_new(&cfg, 1, 0, NULL, &a), 0);
    assert_int_equal(rn_new(&cfg, 2, 0, NULL, &b), 0);
    assert_non_null(rn_find(a, "fc.0.weight"));
    assert_non_null(rn_find(a, "fc.2.bias"));
    assert_null(rn_find(a, "fc.weight"));
    a->counts[3] = 42;
    assert_int_equal(rn_save(a, p), 0);
    assert_int_equal(rn_load(b, p), 0);
    assert_memory_equal(a->params, b->params, sizeof(float) * a->nparams);
    assert_memory_equal(a->buffers, b->buffers, sizeof(float) * a->nbuffers);
    assert_memory_equal(a->counts, b->counts, sizeof(int64_t) * a->ncounts);
    /* wrong architecture: refused, naming the tensor, nothing changed */
    rn_cfg c2 = cfg;
    c2.mlp = 0;
    resnet *c;
    assert_int_equal(rn_new(&c2, 3, 0, NULL, &c), 0);
    float keep = c->params[0];
    int rc = rn_load(c, p);
    printf("fc head file into an MLP-less model: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_ENOTFOUND);
    assert_non_null(strstr(moco_errmsg(), "fc.weight"));
    assert_true(c->params[0] == keep);
    c2 = cfg, c2.width = 8;
    rn_destroy(&c);
    assert_int_equal(rn_new(&c2, 3, 0, NULL, &c), 0);
    rc = rn_load(c, p);
    printf("width 4 file into width 8: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "conv1.weight"));
    rn_destroy(&c);
    /* a file with a float num_batches_tracked, and one with an extra tensor */
    moco_st *st;
    assert_int_equal(moco_st_open(p, &st), 0);
    moco_st_entry e[200];
    int n = moco_st_count(st);
    for (int i = 0; i < n; i++) {
        const moco_st_tensor *t = moco_st_at(st, i);
        e[i] = (moco_st_entry){t->name, t->dtype, t->ndim, {0}, moco_st_data(st, t)};
        memcpy(e[i].shape, t->shape, sizeof t->shape);
    }
    snprintf(q, sizeof q, "%s/b.safetensors", dir);
    int64_t extra = 0;
    e[n] = (moco_st_entry){"projector.weight", MOCO_ST_I64, 1, {1}, &extra};
    assert_int_equal(moco_st_write(q, e, n + 1, NULL, 0), 0);
    rc = rn_load(b, q);
    printf("extra tensor: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_EINVAL);
    assert_non_null(strstr(moco_errmsg(), "projector.weight"));
    for (int i = 0; i < n; i++)
        if (strstr(e[i].name, "num_batches_tracked")) e[i].dtype = MOCO_ST_F64;
    assert_int_equal(moco_st_write(q, e, n, NULL, 0), 0);
    rc = rn_load(b, q);
    printf("F64 counter: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_EFORMAT);
    assert_non_null(strstr(moco_errmsg(), "bn1.num_batches_tracked"));
    moco_st_destroy(&st);
    rn_destroy(&a);
    rn_destroy(&b);
}

static void test_nan_loss(void **s)
{
    (void)s;
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = 0, .dim = 8, .bn_splits = 2, .batch = 4, .size = 8},
                    .K = 16, .m = 0.99f, .T = 0.1f, .symmetric = 0, .lr = 0.06f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 3};
    moco *mc;
    assert_int_equal(moco_new(&cfg, &mc), 0);
    size_t nx = 4 * 3 * 8 * 8;
    float *x = calloc(2 * nx, sizeof(float));
    for (size_t i = 0; i < 2 * nx; i++) x[i] = (float)((i * 7919) % 13) / 13.0f - 0.5f;
    moco_stats ms;
    assert_int_equal(moco_step(mc, x, x + nx, NULL, 0.06f, &ms), 0);
    assert_true(isfinite(ms.loss));
    float *before = malloc(sizeof(float) * mc->q->nparams), *qb = malloc(sizeof(float) * 8 * 16);
    memcpy(before, mc->q->params, sizeof(float) * mc->q->nparams);
    memcpy(qb, mc->queue, sizeof(float) * 8 * 16);
    x[5] = NAN;
    int rc = moco_step(mc, x, x + nx, NULL, 0.06f, &ms);
    printf("NaN input: %s\n", moco_errmsg());
    assert_int_equal(rc, MOCO_ENUMERIC);
    assert_false(isfinite(ms.loss));
    assert_memory_equal(before, mc->q->params, sizeof(float) * mc->q->nparams);
    assert_memory_equal(qb, mc->queue, sizeof(float) * 8 * 16);
    assert_int_equal(mc->steps, 1);
    cfg.K = 6; /* not a multiple of the batch */
    moco *bad = NULL;
    assert_int_equal(moco_new(&cfg, &bad), MOCO_EINVAL);
    free(x), free(before), free(qb);
    moco_destroy(&mc);
}

/* moco_step's contrastive accuracy is read off the logits before they
 * become gradients: recompute the logits here (lr 0 and m 1 leave both
 * encoders as they were; train-mode outputs do not depend on the BN
 * running statistics the step changed) and count the queries whose
 * positive is at least every negative. Near-ties (within 1e-4) may go
 * either way, so the count must lie between the sure and the possible. */
/* Three MoCo steps on 2 compute threads, three times from the same seed:
 * losses, query and key weights, BN statistics and the queue equal bit for
 * bit (fp32, and bf16 where the CPU has it). The weight gradients are sums
 * of per-thread partial sums over chunks of images; par_for_fixed keeps the
 * chunks' threads, and so the order of those sums, the same in every run. */
static void moco_run3(int precision, float *loss, float **params, float **queue, size_t *np)
{
    enum { N = 48, D = 16, K = 192, S = 16 };
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 8, .dim = D, .bn_splits = 4, .batch = N, .size = S, .precision = precision},
                    .K = K, .m = 0.99f, .T = 0.2f, .lr = 0.05f, .sgd_momentum = 0.9f, .weight_decay = 5e-4f, .seed = 21};
    moco *mc;
    assert_int_equal(moco_new(&cfg, &mc), 0);
    const size_t nx = (size_t)N * 3 * S * S;
    float *x = malloc(sizeof(float) * 2 * nx);
    moco_rng r;
    moco_rng_init(&r, 21, 98, 0, 0);
    for (int step = 0; step < 3; step++) {
        for (size_t i = 0; i < 2 * nx; i++) x[i] = (float)(moco_rng_uniform(&r) * 2 - 1);
        moco_stats ms;
        assert_int_equal(moco_step(mc, x, x + nx, NULL, 0.05f, &ms), 0);
        loss[step] = ms.loss;
    }
    *np = mc->q->nparams + mc->k->nparams;
    *params = malloc(sizeof(float) * *np);
    memcpy(*params, mc->q->params, sizeof(float) * mc->q->nparams);
    memcpy(*params + mc->q->nparams, mc->k->params, sizeof(float) * mc->k->nparams);
    *queue = malloc(sizeof(float) * D * K);
    memcpy(*queue, mc->queue, sizeof(float) * D * K);
    free(x);
    moco_destroy(&mc);
}

static void test_moco_repeatable(void **s)
{
    (void)s;
    par_set_threads(2);
    for (int precision = NN_FP32; precision <= NN_BF16; precision++) {
        if (precision == NN_BF16 && nn_bf16_available()) {
            printf("bf16: %s; skipped\n", moco_errmsg());
            continue;
        }
        float loss0[3], *p0, *q0;
        size_t np;
        moco_run3(precision, loss0, &p0, &q0, &np);
        for (int run = 1; run < 3; run++) {
            float loss[3], *p, *q;
            size_t n;
            moco_run3(precision, loss, &p, &q, &n);
            printf("%s, run %d: losses %.9g %.9g %.9g (first run %.9g %.9g %.9g)\n", precision ? "bf16" : "fp32", run + 1,
                   (double)loss[0], (double)loss[1], (double)loss[2], (double)loss0[0], (double)loss0[1], (double)loss0[2]);
            assert_int_equal(n, np);
            if (memcmp(loss, loss0, sizeof loss)) fail_msg("%s: the losses differ between runs", precision ? "bf16" : "fp32");
            for (size_t i = 0; i < np; i++)
                if (p[i] != p0[i]) fail_msg("%s: weight %zu differs between runs: %.9g against %.9g", precision ? "bf16" : "fp32", i,
                                            (double)p[i], (double)p0[i]);
            if (memcmp(q, q0, sizeof(float) * 16 * 192)) fail_msg("%s: the queues differ between runs", precision ? "bf16" : "fp32");
            free(p), free(q);
        }
        free(p0), free(q0);
    }
    par_set_threads(1);
}

/* A step remembers nothing of the step before it but the state it hands on
 * (weights, queue): from the same state and batch, a step run after a step
 * on other data gives the same loss and gradient, bit for bit, in fp32 and
 * in bf16 (small bf16 chunks, a short last one: no scratch, padding or kept
 * copy left from before is read). lr 0, and the state put back in between. */
static void test_step_no_memory(void **s)
{
    (void)s;
    enum { N = 44, D = 16, K = 176, S = 16 };
    par_set_threads(2);
    setenv("MOCO_BF16_CHUNK_KB", "1", 1);
    for (int precision = NN_FP32; precision <= NN_BF16; precision++) {
        if (precision == NN_BF16 && nn_bf16_available()) {
            printf("bf16: %s; skipped\n", moco_errmsg());
            continue;
        }
        moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 8, .dim = D, .bn_splits = 4, .batch = N, .size = S, .precision = precision},
                        .K = K, .m = 0.99f, .T = 0.2f, .lr = 0.0f, .sgd_momentum = 0.9f, .weight_decay = 0.0f, .seed = 23};
        moco *mc;
        assert_int_equal(moco_new(&cfg, &mc), 0);
        const size_t nx = (size_t)N * 3 * S * S, nq = mc->q->nparams, nk = mc->k->nparams, ng = mc->q->nparams;
        float *x = malloc(sizeof(float) * 4 * nx), *q0 = malloc(sizeof(float) * nq), *k0 = malloc(sizeof(float) * nk);
        float *queue0 = malloc(sizeof(float) * D * K), *g[3];
        moco_rng r;
        moco_rng_init(&r, 23, 97, 0, 0);
        for (size_t i = 0; i < 4 * nx; i++) x[i] = (float)(moco_rng_uniform(&r) * 2 - 1);
        uint64_t perm[2][N];
        moco_rng_permutation(&r, perm[0], N), moco_rng_permutation(&r, perm[1], N);
        memcpy(q0, mc->q->params, sizeof(float) * nq), memcpy(k0, mc->k->params, sizeof(float) * nk);
        memcpy(queue0, mc->queue, sizeof(float) * D * K);
        const int64_t ptr0 = mc->ptr;
        float loss[3];
        for (int run = 0; run < 3; run++) { /* batch A, batch B, batch A again */
            const float *xa = x + (run == 1 ? 2 * nx : 0);
            memcpy(mc->q->params, q0, sizeof(float) * nq), memcpy(mc->k->params, k0, sizeof(float) * nk);
            memcpy(mc->queue, queue0, sizeof(float) * D * K), mc->ptr = ptr0;
            moco_stats ms;
            assert_int_equal(moco_step(mc, xa, xa + nx, perm[run == 1], 0.0f, &ms), 0);
            loss[run] = ms.loss;
            g[run] = malloc(sizeof(float) * ng);
            memcpy(g[run], mc->q->grads, sizeof(float) * ng);
        }
        const char *pn = precision ? "bf16" : "fp32";
        printf("%s: losses A %.9g, B %.9g, A again %.9g\n", pn, (double)loss[0], (double)loss[1], (double)loss[2]);
        if (loss[1] == loss[0] || !memcmp(g[1], g[0], sizeof(float) * ng)) fail_msg("%s: batch B gave batch A's step", pn);
        if (loss[2] != loss[0]) fail_msg("%s: batch A's loss after batch B: %.9g, from the start %.9g", pn, (double)loss[2], (double)loss[0]);
        for (size_t i = 0; i < ng; i++)
            if (g[2][i] != g[0][i]) fail_msg("%s: gradient %zu of batch A after batch B: %.9g, from the start %.9g", pn, i, (double)g[2][i], (double)g[0][i]);
        for (int run = 0; run < 3; run++) free(g[run]);
        free(x), free(q0), free(k0), free(queue0);
        moco_destroy(&mc);
    }
    unsetenv("MOCO_BF16_CHUNK_KB");
    par_set_threads(1);
}

static void test_step_accuracy(void **s)
{
    (void)s;
    enum { N = 8, D = 8, K = 32, S = 8 };
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = 4, .mlp = 0, .dim = D, .bn_splits = 2, .batch = N, .size = S},
                    .K = K, .m = 1.0f, .T = 0.2f, .symmetric = 1, .lr = 0.0f, .sgd_momentum = 0.9f, .weight_decay = 0.0f, .seed = 11};
    moco *mc;
    assert_int_equal(moco_new(&cfg, &mc), 0);
    const size_t nx = (size_t)N * 3 * S * S;
    float *x = malloc(sizeof(float) * 2 * nx), *queue0 = malloc(sizeof(float) * D * K);
    moco_rng r;
    moco_rng_init(&r, 11, 99, 0, 0);
    /* x2 = x1 plus a little noise: positives are often, not always, the best */
    for (size_t i = 0; i < nx; i++) x[i] = (float)(moco_rng_uniform(&r) * 2 - 1);
    for (size_t i = 0; i < nx; i++) x[nx + i] = x[i] + (float)(moco_rng_uniform(&r) * 1.6 - 0.8);
    uint64_t perm[2 * N];
    moco_rng_permutation(&r, perm, N), moco_rng_permutation(&r, perm + N, N);
    memcpy(queue0, mc->queue, sizeof(float) * D * K);
    moco_stats ms;
    assert_int_equal(moco_step(mc, x, x + nx, perm, 0.0f, &ms), 0);
    int sure = 0, possible = 0;
    for (int dir = 0; dir < 2; dir++) {
        float kn[N * D], key[N * D], qn[N * D];
        l2norm_forward(kn, rn_forward(mc->k, dir ? x : x + nx, perm + dir * N, 1), N, D);
        for (int i = 0; i < N; i++) memcpy(key + perm[dir * N + i] * D, kn + i * D, sizeof(float) * D);
        l2norm_forward(qn, rn_forward(mc->q, dir ? x + nx : x, NULL, 1), N, D);
        for (int n = 0; n < N; n++) {
            double pos = 0, mx = -1e30;
            for (int d = 0; d < D; d++) pos += (double)qn[n * D + d] * key[n * D + d];
            for (int j = 0; j < K; j++) {
                double v = 0;
                for (int d = 0; d < D; d++) v += (double)qn[n * D + d] * queue0[d * K + j];
                mx = v > mx ? v : mx;
            }
            sure += (pos - mx) / 0.2 > 1e-4, possible += (pos - mx) / 0.2 > -1e-4;
        }
    }
    printf("step accuracy %.2f%%, loss %.4f; recomputed: %d to %d of %d right\n", (double)ms.acc, (double)ms.loss, sure, possible,
           2 * N);
    double lo = 100.0 * sure / N / 2, hi = 100.0 * possible / N / 2;
    assert_true(ms.acc >= lo - 1e-3 && ms.acc <= hi + 1e-3);
    assert_true(ms.acc > 0 && ms.acc < 100); /* the case tells right from wrong */
    assert_true(ms.acc_all == ms.acc && ms.loss_all == ms.loss);
    free(x), free(queue0);
    moco_destroy(&mc);
}

/* rn_backward_hooked reports contiguous ranges of whole tensors, from the
 * end of params to 0, each at least the bucket (but the last), each holding
 * its final gradients when reported, with pokes (n == 0) between; the
 * gradients equal rn_backward's; an error from the callback stops it. */
typedef struct {
    const resnet *m;
    float *snap;
    size_t next_end;
    int ranges, pokes, fail_at, bad;
} hook_rec;

static int hook_cb(void *ctx, float *g, size_t off, size_t n)
{
    hook_rec *h = ctx;
    if (g != h->m->grads) h->bad |= 1;
    if (!n) {
        h->pokes++;
        return 0;
    }
    if (off + n != h->next_end) h->bad |= 2; /* contiguous, descending */
    int starts = 0;
    for (int i = 0; i < h->m->ntensors; i++) starts |= h->m->tensors[i].kind == RN_PARAM && h->m->tensors[i].off == off;
    if (!starts) h->bad |= 4; /* whole tensors */
    memcpy(h->snap + off, g + off, sizeof(float) * n);
    h->next_end = off;
    if (++h->ranges == h->fail_at) return MOCO_EINTR;
    return 0;
}

static void test_backward_hooked(void **s)
{
    (void)s;
    rn_cfg cfg = {.arch = "resnet18-cifar", .width = 4, .mlp = 1, .dim = 16, .bn_splits = 2, .batch = 4, .size = 8};
    resnet *m;
    assert_int_equal(rn_new(&cfg, 5, 1, NULL, &m), 0);
    size_t nx = 4 * 3 * 8 * 8, P = m->nparams;
    float *x = malloc(sizeof(float) * nx), dout[4 * 16], *g0 = malloc(sizeof(float) * P), *snap = malloc(sizeof(float) * P);
    moco_rng r;
    moco_rng_init(&r, 5, 98, 0, 0);
    for (size_t i = 0; i < nx; i++) x[i] = (float)(moco_rng_uniform(&r) * 2 - 1);
    for (int i = 0; i < 4 * 16; i++) dout[i] = (float)(moco_rng_uniform(&r) * 2 - 1);
    rn_forward(m, x, NULL, 1);
    rn_zero_grad(m);
    rn_backward(m, dout);
    memcpy(g0, m->grads, sizeof(float) * P);
    const size_t bucket = 4000;
    hook_rec h = {m, snap, P, 0, 0, 0, 0};
    rn_forward(m, x, NULL, 1);
    rn_zero_grad(m);
    memset(snap, 0xff, sizeof(float) * P);
    assert_int_equal(rn_backward_hooked(m, dout, bucket, hook_cb, &h), 0);
    printf("%zu parameters, bucket %zu: %d ranges, %d pokes, flags %d\n", P, bucket, h.ranges, h.pokes, h.bad);
    assert_int_equal(h.bad, 0);
    assert_int_equal(h.next_end, 0);
    assert_true(h.ranges >= 3 && h.pokes > 0);
    assert_memory_equal(snap, m->grads, sizeof(float) * P); /* final when reported */
    double md = 0;
    for (size_t i = 0; i < P; i++) md = fmax(md, fabs((double)g0[i] - m->grads[i]));
    printf("largest difference from rn_backward: %.3g\n", md);
    assert_true(md == 0);
    /* one range of everything when the bucket is larger than the model */
    hook_rec h2 = {m, snap, P, 0, 0, 0, 0};
    rn_forward(m, x, NULL, 1);
    rn_zero_grad(m);
    assert_int_equal(rn_backward_hooked(m, dout, RN_BUCKET_FLOATS, hook_cb, &h2), 0);
    assert_int_equal(h2.ranges, 1);
    assert_int_equal(h2.bad, 0);
    /* an error from the callback stops backward and comes back */
    hook_rec h3 = {m, snap, P, 0, 0, 2, 0};
    rn_forward(m, x, NULL, 1);
    assert_int_equal(rn_backward_hooked(m, dout, bucket, hook_cb, &h3), MOCO_EINTR);
    assert_int_equal(h3.ranges, 2);
    free(x), free(g0), free(snap);
    rn_destroy(&m);
}

/* `moco bench train`: runs a tiny configuration and ends with its JSON
 * line; bad settings are usage errors (exit 2). */
static void test_bench_cli(void **s)
{
    (void)s;
    const char *dir = tu_tmpdir("trainer_bench");
    int rc = tu_sh("%s bench train --width 4 --batch-size 8 --size 8 --K 16 --steps 1 --warmup 0 --bn-splits 2 --mlp --symmetric "
                   "> %s/out.txt 2>&1", tu_moco(), dir);
    assert_int_equal(rc, 0);
    assert_int_equal(tu_sh("tail -n 1 %s/out.txt | grep -q '^{\"bench\":\"train\".*\"pairs_per_s\":.*\"step_ms\":.*"
                           "\"gflop_per_s\":.*\"peak_rss_mb\":'", dir), 0);
    assert_int_equal(tu_sh("%s bench train --K 12 --batch-size 8 --width 4 --size 8 > /dev/null 2>&1", tu_moco()), 2);
    assert_int_equal(tu_sh("%s bench train --arch resnet101 > /dev/null 2>&1", tu_moco()), 2);
    assert_int_equal(tu_sh("%s bench train --width 4 --batch-size 8 --size 8 --bn-splits 3 > /dev/null 2>&1", tu_moco()), 2);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_resnet18_cifar_w8), cmocka_unit_test(test_resnet50_w4_mlp),
        cmocka_unit_test(test_moco_steps),        cmocka_unit_test(test_moco_symmetric_mlp),
        cmocka_unit_test(test_torchvision_shapes), cmocka_unit_test(test_save_load), cmocka_unit_test(test_init_kinds),
        cmocka_unit_test(test_nan_loss),          cmocka_unit_test(test_bench_cli),
        cmocka_unit_test(test_step_accuracy),     cmocka_unit_test(test_backward_hooked),
        cmocka_unit_test(test_moco_repeatable),   cmocka_unit_test(test_step_no_memory),   cmocka_unit_test(test_compact_forward),
        cmocka_unit_test(test_arena_huge_pages),
    };
    par_set_threads(2); /* chunks of images side by side, as the benchmark runs */
    return cmocka_run_group_tests(tests, NULL, NULL);
}
