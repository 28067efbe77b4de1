/* resnet.c: builds the op list of a ResNet (resnet.h) once, plans one
 * activation arena (every activation of a train forward, BN statistics, a
 * few recycled gradient slots, the im2col scratch) and runs forward and
 * backward over the op list. The tensor table follows torchvision's
 * state_dict order; the op list follows execution order.
 *
 * Gradient slots: backward walks the ops in reverse; the gradient of an
 * activation lives in a slot from the first op that needs it until the op
 * that produced it has run, so a ResNet needs only 3-4 slots of the largest
 * activation's size rather than a gradient per activation. */
#include "trainer/engine/resnet.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/rng.h"
#include "formats/safetensors.h"
#include "trainer/engine/par.h"
#include "trainer/engine/tune.h"

/* im2col scratch per thread, in floats: 1M (4 MB) by default; the
 * environment variable MOCO_CONV_WORK (floats) overrides it for tuning. */
static size_t work_floats(void)
{
    const char *e = getenv("MOCO_CONV_WORK");
    long v = e ? atol(e) : 0;
    return v > 0 ? (size_t)v : (size_t)1 << 20;
}
#define RN_WORK_FLOATS work_floats()

enum { OP_CONV, OP_BN, OP_MAXPOOL, OP_AVGPOOL, OP_LINEAR, OP_RELU };

struct rn_op {
    int type;
    int in, out, res; /* activation ids; res -1 */
    int relu;
    nn_conv conv;      /* forward */
    nn_conv convb;     /* backward, when its algorithm differs (convb_own), else conv serves */
    int convb_own;
    tune_choice tc[2]; /* the choices of forward and backward (tune.h) */
    nn_bn bn;
    nn_pool pool;
    int tw;            /* tensor index of the weight (conv, linear, BN gamma) */
    int mean, invstd;  /* BN saved statistics (activation ids) */
    int N, C, HW, F, O;
    int zero_in, zero_res; /* zero these gradient slots before this op's backward */
    size_t final_lo;   /* after this op's backward, params [final_lo, nparams) have final gradients */
    nn_lowp *lp;           /* bf16: a linear op's oneDNN state (a conv's is conv.lp) */
};

typedef struct {
    size_t numel, off;
    int slot;  /* gradient slot, planned */
    int grad;  /* needs a gradient */
    int half;  /* bf16 precision: kept in bf16 for the backward (numel uint16); see plan() */
    int scr;   /* half: the gradient slot whose room holds it in fp32 during the forward */
} rn_act;

struct rn_arena {
    float *base;
    size_t bytes;
    int nacts;
    rn_act *acts;
    int nslots;
    size_t slot_floats;
    float *slots;
    float *work;
    float *xtmp;  /* half: per thread, one channel of a BN input restored to fp32 in backward */
    int final_act;
};

/* ------------------------------------------------------------- building */

typedef struct {
    resnet *m;
    rn_arena *a;
    int capt, capo, capa;
    int err;
    int N;
} builder;

static void *grow(void *p, int *cap, int need, size_t elt)
{
    if (need <= *cap) return p;
    int c = *cap ? *cap * 2 : 64;
    while (c < need) c *= 2;
    void *q = realloc(p, (size_t)c * elt);
    if (q) *cap = c;
    return q;
}

static int b_tensor(builder *b, const char *name, const char *suffix, int kind, int ndim, int64_t s0, int64_t s1, int64_t s2, int64_t s3)
{
    resnet *m = b->m;
    rn_tensor *t = grow(m->tensors, &b->capt, m->ntensors + 1, sizeof *t);
    if (!t) return b->err = MOCO_ENOMEM, 0;
    m->tensors = t;
    t += m->ntensors;
    memset(t, 0, sizeof *t);
    snprintf(t->name, sizeof t->name, "%s%s%s", name, *name ? "." : "", suffix);
    t->kind = kind, t->ndim = ndim;
    int64_t s[4] = {s0, s1, s2, s3};
    t->numel = 1;
    for (int i = 0; i < ndim; i++) t->shape[i] = s[i], t->numel *= (size_t)s[i];
    size_t *n = kind == RN_PARAM ? &m->nparams : kind == RN_BUFFER ? &m->nbuffers : &m->ncounts;
    t->off = *n;
    *n += t->numel;
    return m->ntensors++;
}

static int b_act(builder *b, size_t numel, int grad)
{
    rn_arena *a = b->a;
    rn_act *p = grow(a->acts, &b->capa, a->nacts + 1, sizeof *p);
    if (!p) return b->err = MOCO_ENOMEM, 0;
    a->acts = p;
    p[a->nacts] = (rn_act){numel, 0, -1, grad, 0, -1};
    return a->nacts++;
}

static rn_op *b_op(builder *b, int type)
{
    resnet *m = b->m;
    rn_op *o = grow(m->ops, &b->capo, m->nops + 1, sizeof *o);
    if (!o) {
        b->err = MOCO_ENOMEM;
        static rn_op dummy;
        return &dummy;
    }
    m->ops = o;
    o += m->nops++;
    memset(o, 0, sizeof *o);
    o->type = type, o->res = -1;
    return o;
}

static int t_conv(builder *b, const char *name, int co, int ci, int k)
{
    return b_tensor(b, name, "weight", RN_PARAM, 4, co, ci, k, k);
}

static int t_bn(builder *b, const char *name, int c)
{
    int t = b_tensor(b, name, "weight", RN_PARAM, 1, c, 0, 0, 0);
    b_tensor(b, name, "bias", RN_PARAM, 1, c, 0, 0, 0);
    b_tensor(b, name, "running_mean", RN_BUFFER, 1, c, 0, 0, 0);
    b_tensor(b, name, "running_var", RN_BUFFER, 1, c, 0, 0, 0);
    b_tensor(b, name, "num_batches_tracked", RN_COUNT, 0, 0, 0, 0, 0);
    return t;
}

/* conv op: returns the output activation; *H becomes the output size */
static int o_conv(builder *b, int in, int tw, int ci, int co, int k, int s, int p, int *H)
{
    rn_op *o = b_op(b, OP_CONV);
    nn_conv_init(&o->conv, b->N, ci, *H, *H, co, k, s, p, RN_WORK_FLOATS);
    *H = o->conv.Ho;
    o->in = in, o->tw = tw;
    o->out = b_act(b, (size_t)b->N * co * *H * *H, 1);
    b->m->macs += nn_conv_macs(&o->conv);
    return o->out;
}

static int o_bn(builder *b, int in, int tw, int c, int H, int res, int relu)
{
    rn_op *o = b_op(b, OP_BN);
    o->bn = (nn_bn){b->N, c, H * H, b->m->cfg.bn_splits, 1e-5f, 0.1f, 0, 0};
    o->in = in, o->tw = tw, o->res = res, o->relu = relu;
    o->mean = b_act(b, (size_t)c * o->bn.S, 0);
    o->invstd = b_act(b, (size_t)c * o->bn.S, 0);
    o->out = b_act(b, (size_t)b->N * c * H * H, 1);
    return b->m->ops[b->m->nops - 1].out;
}

static int o_linear(builder *b, int in, int tw, int F, int O)
{
    rn_op *o = b_op(b, OP_LINEAR);
    o->in = in, o->tw = tw, o->N = b->N, o->F = F, o->O = O;
    o->out = b_act(b, (size_t)b->N * O, 1);
    b->m->macs += (double)b->N * F * O;
    return b->m->ops[b->m->nops - 1].out;
}

/* One residual block; returns its output. */
static int block(builder *b, const char *pre, int in, int inpl, int planes, int stride, int bottleneck, int *H)
{
    char n[64];
    int exp = bottleneck ? 4 : 1, out = planes * exp;
    int ds = stride != 1 || inpl != out;
    int c1, b1, c2, b2, c3 = 0, b3 = 0, dc = 0, db = 0;
#define NM(s) (snprintf(n, sizeof n, "%s.%s", pre, s), n)
    if (!bottleneck) {
        c1 = t_conv(b, NM("conv1"), planes, inpl, 3), b1 = t_bn(b, NM("bn1"), planes);
        c2 = t_conv(b, NM("conv2"), planes, planes, 3), b2 = t_bn(b, NM("bn2"), planes);
    } else {
        c1 = t_conv(b, NM("conv1"), planes, inpl, 1), b1 = t_bn(b, NM("bn1"), planes);
        c2 = t_conv(b, NM("conv2"), planes, planes, 3), b2 = t_bn(b, NM("bn2"), planes);
        c3 = t_conv(b, NM("conv3"), out, planes, 1), b3 = t_bn(b, NM("bn3"), out);
    }
    if (ds) dc = t_conv(b, NM("downsample.0"), out, inpl, 1), db = t_bn(b, NM("downsample.1"), out);
#undef NM
    int H0 = *H, Hd = *H, x, r = in;
    if (ds) { /* first, so that each conv is right before its BN (bf16 keeps those outputs in bf16) */
        r = o_conv(b, in, dc, inpl, out, 1, stride, 0, &Hd);
        r = o_bn(b, r, db, out, Hd, -1, 0);
    }
    if (!bottleneck) {
        x = o_conv(b, in, c1, inpl, planes, 3, stride, 1, H);
        x = o_bn(b, x, b1, planes, *H, -1, 1);
        x = o_conv(b, x, c2, planes, planes, 3, 1, 1, H);
    } else {
        x = o_conv(b, in, c1, inpl, planes, 1, 1, 0, H);
        x = o_bn(b, x, b1, planes, *H, -1, 1);
        x = o_conv(b, x, c2, planes, planes, 3, stride, 1, H);
        x = o_bn(b, x, b2, planes, *H, -1, 1);
        x = o_conv(b, x, c3, planes, out, 1, 1, 0, H);
    }
    (void)H0;
    return o_bn(b, x, bottleneck ? b3 : b2, out, *H, r, 1);
}

static int build(builder *b)
{
    resnet *m = b->m;
    const rn_cfg *c = &m->cfg;
    const char *a = c->arch;
    int cifar = strstr(a, "-cifar") != NULL, bottleneck, nb[4];
    if (!strcmp(a, "resnet18") || !strcmp(a, "resnet18-cifar")) bottleneck = 0, nb[0] = 2, nb[1] = 2, nb[2] = 2, nb[3] = 2;
    else if (!strcmp(a, "resnet34")) bottleneck = 0, nb[0] = 3, nb[1] = 4, nb[2] = 6, nb[3] = 3;
    else if (!strcmp(a, "resnet50") || !strcmp(a, "resnet50-cifar")) bottleneck = 1, nb[0] = 3, nb[1] = 4, nb[2] = 6, nb[3] = 3;
    else return moco_err(MOCO_EINVAL, "unknown architecture '%s' (resnet18 resnet34 resnet50 resnet18-cifar resnet50-cifar)", a);
    int W = c->width, H = c->size;
    int x = b_act(b, (size_t)b->N * 3 * H * H, 0);
    int tc = t_conv(b, "conv1", W, 3, cifar ? 3 : 7), tb = t_bn(b, "bn1", W);
    x = cifar ? o_conv(b, x, tc, 3, W, 3, 1, 1, &H) : o_conv(b, x, tc, 3, W, 7, 2, 3, &H);
    x = o_bn(b, x, tb, W, H, -1, 1);
    if (!cifar) {
        rn_op *o = b_op(b, OP_MAXPOOL);
        nn_pool_init(&o->pool, b->N, W, H, H, 3, 2, 1);
        H = o->pool.Ho;
        o->in = x;
        o->out = x = b_act(b, (size_t)b->N * W * H * H, 1);
    }
    int inpl = W;
    for (int l = 0; l < 4; l++)
        for (int i = 0; i < nb[l]; i++) {
            char pre[32];
            snprintf(pre, sizeof pre, "layer%d.%d", l + 1, i);
            int planes = W << l;
            x = block(b, pre, x, inpl, planes, i == 0 && l > 0 ? 2 : 1, bottleneck, &H);
            inpl = planes * (bottleneck ? 4 : 1);
        }
    m->features = inpl;
    rn_op *o = b_op(b, OP_AVGPOOL);
    o->in = x, o->N = b->N, o->C = inpl, o->HW = H * H;
    o->out = x = b_act(b, (size_t)b->N * inpl, 1);
    if (c->mlp) {
        int w0 = b_tensor(b, "fc.0", "weight", RN_PARAM, 2, inpl, inpl, 0, 0);
        b_tensor(b, "fc.0", "bias", RN_PARAM, 1, inpl, 0, 0, 0);
        int w2 = b_tensor(b, "fc.2", "weight", RN_PARAM, 2, c->dim, inpl, 0, 0);
        b_tensor(b, "fc.2", "bias", RN_PARAM, 1, c->dim, 0, 0, 0);
        x = o_linear(b, x, w0, inpl, inpl);
        o = b_op(b, OP_RELU);
        o->in = x, o->N = b->N, o->F = inpl;
        o->out = x = b_act(b, (size_t)b->N * inpl, 1);
        x = o_linear(b, x, w2, inpl, c->dim);
    } else {
        int w = b_tensor(b, "fc", "weight", RN_PARAM, 2, c->dim, inpl, 0, 0);
        b_tensor(b, "fc", "bias", RN_PARAM, 1, c->dim, 0, 0, 0);
        x = o_linear(b, x, w, inpl, c->dim);
    }
    b->a->final_act = x;
    m->macs_first = nn_conv_macs(&m->ops[0].conv);
    return b->err;
}

/* A measurement knob (tools/quality/bf16_error.py), not a training option:
 * under bf16, $MOCO_BF16_FP32, a comma list of fwd (every convolution's
 * forward), bwd (every convolution's backward), stem (both passes of the
 * first convolution), linear (the linear layers) and fwdN (the forward of
 * the convolutions with N output channels: one stage of a ResNet), puts
 * those on fp32 kernels (the rule's), to see where bf16's rounding costs
 * accuracy. */
static void fp32_override(const resnet *m, rn_op *o, int i, int grads)
{
    const char *e = getenv("MOCO_BF16_FP32");
    if (!e || !*e) return;
    char buf[128];
    snprintf(buf, sizeof buf, ",%s,", e);
    const int fwd = strstr(buf, ",fwd,") != NULL, bwd = strstr(buf, ",bwd,") != NULL, lin = strstr(buf, ",linear,") != NULL;
    int first = 1;
    for (int k = 0; k < i; k++) first &= m->ops[k].type != OP_CONV;
    const int stem = o->type == OP_CONV && first && strstr(buf, ",stem,") != NULL;
    if (o->type == OP_LINEAR) {
        if (lin) o->tc[0].algo = NN_ALGO_GEMM;
        return;
    }
    char own[24];
    snprintf(own, sizeof own, ",fwd%d,", o->conv.Co);
    const nn_conv *d = &o->conv; /* the rule's fp32 kernel, named as such (--explain: not "auto", not measured) */
    const int rule = nn_conv_rule(d->Ci, d->H, d->W, d->Co, d->k, d->stride, d->pad);
    if (fwd || stem || strstr(buf, own)) o->tc[0].algo = rule, o->tc[0].measured = 0;
    if ((bwd || stem) && grads) o->tc[1].algo = rule, o->tc[1].measured = 0;
}

/* Whether a conv's backward on algo can read its input kept in bf16
 * (nn.h: in_half): oneDNN's kernels (Winograd too), our Winograd, and the 1x1 stride-1 GEMM. */
static int reads_half(const nn_conv *d, int algo)
{
    if (algo == NN_ALGO_AUTO) algo = nn_conv_rule(d->Ci, d->H, d->W, d->Co, d->k, d->stride, d->pad);
    return algo == NN_ALGO_BF16 || algo == NN_ALGO_ONEDNN || algo == NN_ALGO_WINO || algo == NN_ALGO_OWN_WINO || algo == NN_ALGO_OWN_WINO4 || (algo == NN_ALGO_GEMM && d->k == 1 && d->stride == 1 && d->pad == 0);
}

/* The arena on transparent huge pages where the kernel gives them on
 * request (Debian's default, "madvise"): 2 MB aligned, then
 * MADV_HUGEPAGE. Its passes stride across planes megabytes apart (a
 * transpose reads 16 channel rows at once), which on 4 KB pages is a TLB
 * miss per row and step. A refusal leaves ordinary pages. */
static void *arena_alloc(size_t bytes)
{
    const size_t huge = (size_t)2 << 20, n = (bytes + huge - 1) / huge * huge;
    void *p = aligned_alloc(huge, n);
    if (p && !getenv("MOCO_NO_THP")) (void)madvise(p, n, MADV_HUGEPAGE);
    return p;
}

/* Plan gradient slots (reverse liveness) and lay out the arena. */
static int plan(resnet *m, rn_arena *a, int grads)
{
    int *free_ = calloc((size_t)a->nacts + 8, sizeof *free_), nfree = 0;
    if (!free_) return moco_err(MOCO_ENOMEM, "out of memory planning the model");
    a->nslots = 0, a->slot_floats = 0;
    for (int i = 0; i < a->nacts; i++)
        if (a->acts[i].grad && a->acts[i].numel > a->slot_floats) a->slot_floats = a->acts[i].numel;
#define TAKE(id)                                                                                                        \
    (a->acts[id].slot = nfree ? free_[--nfree] : a->nslots++)
    TAKE(a->final_act);
    for (int i = m->nops - 1; i >= 0; i--) {
        rn_op *o = &m->ops[i];
        o->zero_in = o->zero_res = 0;
        if (o->type == OP_BN) o->bn.dx_set = o->bn.dres_set = 0;
        if (a->acts[o->in].grad && a->acts[o->in].slot < 0) TAKE(o->in), o->zero_in = 1;
        if (o->res >= 0 && a->acts[o->res].slot < 0) TAKE(o->res), o->zero_res = 1;
        free_[nfree++] = a->acts[o->out].slot;
    }
#undef TAKE
    free(free_);
    size_t work = 0;
    for (int i = 0; i < m->nops; i++) {
        rn_op *o = &m->ops[i];
        size_t w = 0;
        int rc = 0;
        if (o->type == OP_CONV) { /* each pass on the algorithm measured fastest (tune.h), or the rule */
            nn_conv *d = &o->conv;
            const tune_shape sh = {d->N, d->Ci, d->H, d->W, d->Co, d->k, d->stride, d->pad};
            const int bpass = a->acts[o->in].grad ? TUNE_BWD : TUNE_BWD_W;
            size_t wb = 0;
            o->tc[1].algo = -1;
            if ((rc = tune_conv(&sh, TUNE_FWD, m->cfg.precision, RN_WORK_FLOATS, &o->tc[0])) ||
                (grads && (rc = tune_conv(&sh, bpass, m->cfg.precision, RN_WORK_FLOATS, &o->tc[1]))))
                return rc;
            if (m->cfg.precision == NN_BF16) fp32_override(m, o, i, grads);
            if ((rc = nn_conv_plan(d, sh.N, sh.Ci, sh.H, sh.W, sh.Co, sh.k, sh.stride, sh.pad, o->tc[0].algo, RN_WORK_FLOATS, &w)))
                return rc;
            o->convb_own = grads && o->tc[1].algo != o->tc[0].algo;
            if (o->convb_own &&
                (rc = nn_conv_plan(&o->convb, sh.N, sh.Ci, sh.H, sh.W, sh.Co, sh.k, sh.stride, sh.pad, o->tc[1].algo, RN_WORK_FLOATS, &wb)))
                return rc;
            w = wb > w ? wb : w;
        } else if (o->type == OP_LINEAR) { /* OpenBLAS, or bf16 where measured faster (or by the rule) */
            o->tc[1].algo = -1;
            if (!(rc = tune_linear(o->N, o->F, o->O, grads, m->cfg.precision, &o->tc[0])) && m->cfg.precision == NN_BF16)
                fp32_override(m, o, i, grads);
            if (!rc && o->tc[0].algo == NN_ALGO_BF16)
                rc = nn_linear_bf16(&o->lp, o->N, o->F, o->O, &w);
        }
        if (rc) return rc;
        work = w > work ? w : work;
        /* the first writer of a gradient slot writes it where its kernel
         * can (nn.h), instead of adding into a zeroed slot */
        if (grads && o->type == OP_CONV && o->zero_in) {
            nn_conv *b = o->convb_own ? &o->convb : &o->conv;
            if ((b->dinp_set = nn_conv_sets_dinp(b))) o->zero_in = 0;
        }
        if (grads && o->type == OP_BN) {
            if (o->zero_in) o->bn.dx_set = 1, o->zero_in = 0;
            if (o->zero_res) o->bn.dres_set = 1, o->zero_res = 0;
        }
    }
    /* bf16 storage (rn_act.half), for the largest activations. The fp32
     * value lives in a gradient slot's room during the forward (rn_act.scr:
     * slots are unused then), from the op that writes it to its last
     * reader; the bf16 copy in the arena serves the backward:
     * - a conv output read only by the BN right after it: that BN
     *   normalises the fp32 output, and its backward restores x - mean
     *   from the bf16 copy (centred: nn.h), one channel at a time (xtmp);
     * - a BN output whose readers are convs whose backward runs on oneDNN
     *   or, 1x1 stride 1, on GEMM (the copy serves their weight gradient;
     *   nn.h: in_half): in bf16 (it rounds its
     *   input to bf16 anyway, so nothing changes) or, chosen there by
     *   measurement, in fp32 (its weight gradient then takes the input
     *   rounded to bf16, as the bf16 kernels would: the precision asked
     *   for; their forward reads the fp32 value), and BNs taking it as the residual
     *   (which needs the fp32 value, and only in forward): the output of a
     *   block's inner BNs, and the block's output. BN's backward reads the
     *   copy's signs for the ReLU mask.
     * Slots go to these spans in the order they start, each to a slot free
     * before it (a span's writer may read the one before), as an interval
     * colouring; an activation that finds none stays fp32. */
    size_t off = 0, xconv = 0, xtmp = 0;
    int busy[64]; /* per slot: the last op reading what it holds */
    for (int k = 0; k < 64; k++) busy[k] = -1;
    for (int i = 0; i < a->nacts; i++) a->acts[i].scr = -1;
#define HALF_READER(c) ((c)->type == OP_CONV && reads_half(&(c)->conv, (c)->tc[1].algo))
    /* a measurement knob, not a training option: $MOCO_BF16_STORE=fp32|conv
     * overrides cfg.store (the time and memory of bf16 storage) */
    const char *es = getenv("MOCO_BF16_STORE");
    const int store = es && !strcmp(es, "fp32") ? RN_STORE_FP32 : es && !strcmp(es, "conv") ? RN_STORE_CONV : m->cfg.store;
    for (int i = 0; m->cfg.precision == NN_BF16 && grads && i + 1 < m->nops; i++) {
        rn_op *o = &m->ops[i], *n = &m->ops[i + 1];
        rn_act *y = &a->acts[o->out];
        if (o->out == a->final_act || y->numel > a->slot_floats || (o->type != OP_CONV && o->type != OP_BN)) continue;
        int last = -1, ins = 0, ok = 1;
        for (int k = i + 1; k < m->nops; k++) {
            const rn_op *r = &m->ops[k];
            if (r->in == o->out) ok &= o->type == OP_CONV ? k == i + 1 && r->type == OP_BN : HALF_READER(r), ins++, last = k;
            if (r->res == o->out) ok &= o->type == OP_BN && r->type == OP_BN, last = k;
        }
        if (!ok || !ins || (o->type == OP_CONV && (ins != 1 || n->res == o->out))) continue;
        if (store == RN_STORE_FP32 || (store == RN_STORE_CONV && o->type != OP_CONV)) continue;
        int slot = -1;
        for (int k = 0; k < a->nslots && k < 64 && slot < 0; k++)
            if (busy[k] < i) slot = k;
        if (slot < 0) continue;
        y->half = 1, y->scr = slot, busy[slot] = last;
        if (o->type == OP_CONV) {
            xconv = y->numel > xconv ? y->numel : xconv;
            size_t ch = (size_t)n->bn.N * n->bn.HW;
            xtmp = ch > xtmp ? ch : xtmp;
        } else {
            for (int k = i + 1; k < m->nops; k++)
                if (m->ops[k].in == o->out) (m->ops[k].convb_own ? &m->ops[k].convb : &m->ops[k].conv)->in_half = 1;
        }
    }
#undef HALF_READER
    for (int i = 0; i < a->nacts; i++) {
        size_t f = a->acts[i].half ? (a->acts[i].numel + 1) / 2 : a->acts[i].numel;
        a->acts[i].off = off, off += (f + 15) & ~(size_t)15;
    }
    size_t xtmp_off = off;
    off += (xtmp * (size_t)par_threads() + 15) & ~(size_t)15;
    size_t total = off + (size_t)a->nslots * a->slot_floats + work + 16;
    a->bytes = total * sizeof(float);
    a->base = arena_alloc(a->bytes);
    if (!a->base) return moco_err(MOCO_ENOMEM, "out of memory for %zu MB of activations", a->bytes >> 20);
    a->slots = a->base + off;
    a->work = a->slots + (size_t)a->nslots * a->slot_floats;
    a->xtmp = xconv ? a->base + xtmp_off : NULL;
    return 0;
}

/* A model without gradients (the key encoder, evaluation) never runs
 * backward, so its forward need keep nothing: each activation lives from
 * the op that writes it to the last op that reads it (the head's output and
 * the pooled features to the end), placed first-fit from the start of the
 * arena (nothing there is needed during such a forward: a key forward
 * comes before the query encoder's, or after its backward). The few
 * buffers a forward then cycles through stay in cache, where the arena's
 * own places would stream the whole arena through it; nothing is kept in
 * bf16 either. The same values, bit for bit (only their addresses differ).
 * When they do not all fit, m->fwd_at stays NULL: the arena's places. */
static int plan_compact(resnet *m)
{
    rn_arena *a = m->arena;
    const size_t room = (size_t)(a->work - a->base); /* all but the kernels' scratch */
    int *end = malloc(sizeof(int) * (size_t)a->nacts);
    size_t *lo = malloc(sizeof(size_t) * (size_t)a->nacts * 2), *hi = lo ? lo + a->nacts : NULL;
    float **at = calloc((size_t)a->nacts, sizeof *at);
    int ok = end && lo && at, nlive = 0, *live = ok ? malloc(sizeof(int) * (size_t)a->nacts) : NULL;
    if (!live) {
        free(end), free(lo), free(at);
        return moco_err(MOCO_ENOMEM, "out of memory planning the model");
    }
    for (int i = 0; i < a->nacts; i++) end[i] = -1;
    for (int k = 0; k < m->nops; k++) {
        const rn_op *o = &m->ops[k];
        end[o->in] = k;
        if (o->res >= 0) end[o->res] = k;
    }
    for (int k = 0; k < m->nops; k++) /* rn_pooled reads it after the forward */
        if (m->ops[k].type == OP_AVGPOOL) end[m->ops[k].out] = m->nops;
    end[a->final_act] = m->nops;
    /* op k writes its output (and a BN its statistics); -1: the input copy */
    for (int k = -1; ok && k < m->nops; k++) {
        const rn_op *o = k >= 0 ? &m->ops[k] : NULL;
        int w[3] = {o ? o->out : 0, -1, -1};
        if (o && o->type == OP_BN) w[1] = o->mean, w[2] = o->invstd;
        for (int j = 0; j < 3 && ok && w[j] >= 0; j++) {
            const size_t n = (a->acts[w[j]].numel + 15) & ~(size_t)15;
            size_t off = 0; /* the lowest gap that holds n: live blocks are kept sorted by offset */
            int pos = 0;
            for (; pos < nlive && lo[live[pos]] < off + n; pos++)
                if (hi[live[pos]] > off) off = hi[live[pos]];
            if (off + n > room) ok = 0;
            lo[w[j]] = off, hi[w[j]] = off + n, at[w[j]] = a->base + off;
            memmove(live + pos + 1, live + pos, sizeof(int) * (size_t)(nlive - pos));
            live[pos] = w[j], nlive++;
        }
        for (int i = 0; i < nlive;) /* free what no later op reads */
            if (end[live[i]] <= k) memmove(live + i, live + i + 1, sizeof(int) * (size_t)(--nlive - i));
            else i++;
    }
    free(end), free(lo), free(live);
    if (ok) m->fwd_at = at;
    else free(at);
    return 0;
}

/* For rn_backward_hooked: after each op's backward (ops in reverse), the
 * start of the longest run of parameters at the end of params whose ops
 * have all run. Each parameter tensor belongs to exactly one op. */
static int plan_final(resnet *m)
{
    uint8_t *done = calloc((size_t)m->ntensors + 1, 1);
    if (!done) return moco_err(MOCO_ENOMEM, "out of memory planning the model");
    int t = m->ntensors; /* tensors [t, ntensors) are final or not parameters */
    size_t lo = m->nparams;
    for (int i = m->nops - 1; i >= 0; i--) {
        rn_op *o = &m->ops[i];
        if (o->type == OP_CONV) done[o->tw] = 1;
        if (o->type == OP_BN || o->type == OP_LINEAR) done[o->tw] = done[o->tw + 1] = 1;
        while (t > 0 && (m->tensors[t - 1].kind != RN_PARAM || done[t - 1])) {
            t--;
            if (m->tensors[t].kind == RN_PARAM) lo = m->tensors[t].off;
        }
        o->final_lo = lo;
    }
    free(done);
    if (lo != 0) return moco_err(MOCO_EINVAL, "internal: a parameter of %s is used by no op", m->cfg.arch);
    return 0;
}

static double gauss(moco_rng *r)
{
    double u1 = moco_rng_uniform(r), u2 = moco_rng_uniform(r);
    return sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2);
}

/* PyTorch's default for Conv2d and Linear weights (and Linear biases): U(-bound, bound) */
static void fill_uniform(float *p, size_t n, double bound, moco_rng *r)
{
    for (size_t j = 0; j < n; j++) p[j] = (float)(bound * (2.0 * moco_rng_uniform(r) - 1.0));
}

static void init_params(resnet *m, uint64_t seed)
{
    memset(m->buffers, 0, sizeof(float) * m->nbuffers);
    memset(m->counts, 0, sizeof(int64_t) * m->ncounts);
    for (int i = 0; i < m->ntensors; i++) {
        rn_tensor *t = &m->tensors[i];
        moco_rng r;
        moco_rng_init(&r, seed, 1, (uint64_t)i, 0);
        const char *suf = strrchr(t->name, '.') + 1;
        float *p = rn_data(m, t);
        if (t->kind == RN_BUFFER) {
            float v = !strcmp(suf, "running_var") ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++) p[j] = v;
        } else if (t->kind == RN_PARAM && t->ndim == 4) {
            int dflt = m->cfg.init == RN_INIT_PYTORCH || (m->cfg.init == RN_INIT_DEMO && !strcmp(t->name, "conv1.weight"));
            if (dflt) { /* PyTorch's Conv2d default: U(-1/sqrt(fan_in), 1/sqrt(fan_in)) */
                fill_uniform(p, t->numel, 1.0 / sqrt((double)(t->shape[1] * t->shape[2] * t->shape[3])), &r);
            } else { /* torchvision: Kaiming normal, fan_out, relu */
                double sd = sqrt(2.0 / (double)(t->shape[0] * t->shape[2] * t->shape[3]));
                for (size_t j = 0; j < t->numel; j++) p[j] = (float)(sd * gauss(&r));
            }
        } else if (t->kind == RN_PARAM && !strncmp(t->name, "fc", 2)) { /* Linear: U(-1/sqrt(fan_in), ..) */
            int64_t fan_in = t->ndim == 2 ? t->shape[1] : m->tensors[i - 1].shape[1];
            fill_uniform(p, t->numel, 1.0 / sqrt((double)fan_in), &r);
        } else if (t->kind == RN_PARAM) { /* BN */
            float v = !strcmp(suf, "weight") ? 1.0f : 0.0f;
            for (size_t j = 0; j < t->numel; j++) p[j] = v;
        }
    }
}

static const char *const init_names[] = {"torchvision", "demo", "pytorch"};

int rn_init_parse(const char *name)
{
    for (int i = 0; i < 3; i++)
        if (!strcmp(name, init_names[i])) return i;
    return -1;
}

const char *rn_init_name(int init) { return init >= 0 && init < 3 ? init_names[init] : "?"; }

int rn_new(const rn_cfg *cfg, uint64_t seed, int grads, resnet *share, resnet **out)
{
    *out = NULL;
    if (cfg->init < RN_INIT_TORCHVISION || cfg->init > RN_INIT_PYTORCH)
        return moco_err(MOCO_EINVAL, "bad model configuration: initialisation %d", cfg->init);
    if (cfg->width < 1 || cfg->width > 4096 || cfg->dim < 1 || cfg->bn_splits < 1 || cfg->batch < 1 ||
        cfg->batch % cfg->bn_splits || cfg->size < 1 || cfg->size > 4096)
        return moco_err(MOCO_EINVAL, "bad model configuration: width %d, dim %d, batch %d, bn splits %d, size %d "
                                     "(splits must divide the batch)", cfg->width, cfg->dim, cfg->batch, cfg->bn_splits, cfg->size);
    if (grads && cfg->batch / cfg->bn_splits < 2) /* training BN: evaluation (running statistics) takes batch 1 */
        return moco_err(MOCO_EINVAL, "batch %d over %d BN splits leaves fewer than 2 samples per split", cfg->batch, cfg->bn_splits);
    resnet *m = calloc(1, sizeof *m);
    rn_arena *a = calloc(1, sizeof *a);
    int rc = MOCO_ENOMEM;
    if (!m || !a) {
        free(m), free(a);
        return moco_err(MOCO_ENOMEM, "out of memory");
    }
    m->cfg = *cfg;
    builder b = {m, a, 0, 0, 0, 0, cfg->batch};
    m->arena = a, m->owns_arena = 1;
    if ((rc = build(&b)) || (rc = plan_final(m))) goto fail;
    int H = cfg->size;
    for (int i = 0; i < m->nops; i++) /* every spatial size must stay >= 1 */
        if (m->ops[i].type == OP_AVGPOOL) H = m->ops[i].HW;
    if (H < 1 || (m->ops[0].conv.Ho < 1)) {
        rc = moco_err(MOCO_EINVAL, "input size %d is too small for %s", cfg->size, cfg->arch);
        goto fail;
    }
    for (int i = 0; i < m->nops; i++)
        if ((m->ops[i].type == OP_CONV && m->ops[i].conv.Ho < 1) || (m->ops[i].type == OP_MAXPOOL && m->ops[i].pool.Ho < 1)) {
            rc = moco_err(MOCO_EINVAL, "input size %d is too small for %s", cfg->size, cfg->arch);
            goto fail;
        }
    if (share) {
        if (share->nops != m->nops || share->arena->nacts != a->nacts || share->cfg.batch != cfg->batch) {
            rc = moco_err(MOCO_EINVAL, "shared activations come from a different model");
            goto fail;
        }
        /* keep our op list (same plan), use share's arena */
        free(a->acts);
        free(a);
        m->arena = share->arena, m->owns_arena = 0;
        memcpy(m->ops, share->ops, sizeof *m->ops * (size_t)m->nops);
    } else if ((rc = plan(m, a, grads))) {
        goto fail;
    }
    if (!grads && (rc = plan_compact(m))) goto fail;
    size_t np = m->nparams * (grads ? 3 : 1) + m->nbuffers;
    m->params = malloc(sizeof(float) * np + sizeof(int64_t) * (m->ncounts + 1));
    if (!m->params) {
        rc = moco_err(MOCO_ENOMEM, "out of memory for %zu parameters", m->nparams);
        goto fail;
    }
    m->grads = grads ? m->params + m->nparams : NULL;
    m->momentum = grads ? m->params + 2 * m->nparams : NULL;
    m->buffers = m->params + m->nparams * (grads ? 3 : 1);
    m->counts = (int64_t *)(m->buffers + m->nbuffers);
    if (((uintptr_t)m->counts & 7)) m->counts = (int64_t *)((float *)m->counts + 1);
    if (grads) memset(m->grads, 0, sizeof(float) * 2 * m->nparams);
    init_params(m, seed);
    *out = m;
    return 0;
fail:
    rn_destroy(&m);
    return rc;
}

void rn_destroy(resnet **pm)
{
    resnet *m = pm ? *pm : NULL;
    if (!m) return;
    if (m->owns_arena && m->arena) {
        for (int i = 0; m->ops && i < m->nops; i++) { /* bf16 states belong to the arena's owner */
            nn_conv_free(&m->ops[i].conv);
            if (m->ops[i].convb_own) nn_conv_free(&m->ops[i].convb);
            nn_lowp_free(&m->ops[i].lp);
        }
        free(m->arena->base);
        free(m->arena->acts);
        free(m->arena);
    }
    free(m->params);
    free(m->fwd_at);
    free(m->tensors);
    free(m->ops);
    free(m);
    *pm = NULL;
}

/* ------------------------------------------------------------- running */

#define ACT(id) (a->base + a->acts[id].off)
#define GRAD(id) (a->slots + (size_t)a->acts[id].slot * a->slot_floats)
/* where the forward reads and writes an activation in fp32 (plan(): half ones sit in a slot's room then) */
#define FWD(id) (a->acts[id].half ? a->slots + (size_t)a->acts[id].scr * a->slot_floats : ACT(id))

static float *P(const resnet *m, int t) { return m->params + m->tensors[t].off; }
static float *B(const resnet *m, int t) { return m->buffers + m->tensors[t].off; }

typedef struct { float *f; uint16_t *h; size_t n, per; int to; } conv_job_t;
static void convert_task(void *ctx, int t, int th)
{
    (void)th;
    const conv_job_t *j = ctx;
    size_t lo = (size_t)t * j->per, n = lo + j->per < j->n ? j->per : j->n - lo;
    if (j->to) nn_to_bf16(j->h + lo, j->f + lo, n);
    else nn_from_bf16(j->f + lo, j->h + lo, n);
}

/* to: fp32 f -> bf16 storage h; else back; on the compute threads */
static void convert(float *dst, float *src, size_t n, int to)
{
    conv_job_t j = {to ? src : dst, (uint16_t *)(to ? dst : src), n, (size_t)1 << 16, to};
    par_for((int)((n + j.per - 1) / j.per), convert_task, &j);
}

/* the RN_PROF_ part of an op type's pass */
static int prof_part(int type, int bwd)
{
    int part = type == OP_CONV ? RN_PROF_CONV_FWD : type == OP_BN ? RN_PROF_BN_FWD : RN_PROF_OTHER_FWD;
    return bwd ? part + RN_PROF_CONV_BWD : part;
}

/* the time since *t0 to part; *t0 = now */
static void prof_add(resnet *m, int part, double *t0)
{
    double t = moco_now_s();
    m->prof[part] += t - *t0;
    *t0 = t;
}

const float *rn_forward(resnet *m, const float *x, const uint64_t *perm, int train)
{
    rn_arena *a = m->arena;
    const int N = m->cfg.batch, HW = m->cfg.size * m->cfg.size;
    float *const *at = m->fwd_at; /* a compact forward (plan_compact): keeps nothing */
#define FA(id) (at ? at[id] : FWD(id))
#define AA(id) (at ? at[id] : ACT(id))
    const int keep = train && !at; /* bf16 copies for a backward */
    float *x0 = AA(0);
    double t0 = m->prof ? moco_now_s() : 0;
    for (int i = 0; i < N; i++) {
        const float *src = x + (size_t)(perm ? perm[i] : (uint64_t)i) * 3 * HW;
        for (int c = 0; c < 3; c++) memcpy(x0 + ((size_t)c * N + i) * HW, src + (size_t)c * HW, sizeof(float) * (size_t)HW);
    }
    if (m->prof) prof_add(m, RN_PROF_OTHER_FWD, &t0);
    for (int i = 0; i < m->nops; i++) {
        rn_op *o = &m->ops[i];
        if (i && m->prof) prof_add(m, prof_part(m->ops[i - 1].type, 0), &t0);
        switch (o->type) {
        case OP_CONV: {
            conv2d_forward(FA(o->out), FA(o->in), P(m, o->tw), &o->conv, a->work);
            /* a bf16 copy to keep: the BN right after writes it as it reads the output */
            int bn_next = i + 1 < m->nops && m->ops[i + 1].type == OP_BN && m->ops[i + 1].in == o->out;
            if (keep && a->acts[o->out].half && !bn_next) convert(ACT(o->out), FWD(o->out), a->acts[o->out].numel, 1);
            break;
        }
        case OP_BN: {
            int keep_in = keep && a->acts[o->in].half && i > 0 && m->ops[i - 1].type == OP_CONV && m->ops[i - 1].out == o->in;
            int keep_out = keep && a->acts[o->out].half;
            bn_forward_keep(FA(o->out), keep_out ? (uint16_t *)ACT(o->out) : NULL, AA(o->mean), AA(o->invstd), B(m, o->tw + 2),
                            B(m, o->tw + 3), FA(o->in), keep_in ? (uint16_t *)ACT(o->in) : NULL, o->res >= 0 ? FA(o->res) : NULL,
                            P(m, o->tw), P(m, o->tw + 1), o->relu, train, &o->bn);
            if (train) m->counts[m->tensors[o->tw + 4].off]++;
            break;
        }
        case OP_MAXPOOL: maxpool_forward(AA(o->out), FA(o->in), &o->pool); break;
        case OP_AVGPOOL: avgpool_forward(AA(o->out), FA(o->in), o->N, o->C, o->HW); break;
        case OP_LINEAR:
            if (o->lp) linear_forward_bf16(AA(o->out), AA(o->in), P(m, o->tw), P(m, o->tw + 1), o->lp, a->work);
            else linear_forward(AA(o->out), AA(o->in), P(m, o->tw), P(m, o->tw + 1), o->N, o->F, o->O);
            break;
        case OP_RELU: relu_forward(AA(o->out), AA(o->in), (size_t)o->N * o->F); break;
        }
    }
    if (m->nops && m->prof) prof_add(m, prof_part(m->ops[m->nops - 1].type, 0), &t0);
    return AA(a->final_act);
#undef FA
#undef AA
}

typedef struct { float *p; size_t n, per; } zero_job;
static void zero_task(void *ctx, int t, int th)
{
    (void)th;
    const zero_job *z = ctx;
    size_t a = (size_t)t * z->per, b = a + z->per < z->n ? a + z->per : z->n;
    memset(z->p + a, 0, sizeof(float) * (b - a));
}

/* memset on the compute threads (gradient slots are tens of MB) */
static void zero(float *p, size_t n)
{
    zero_job z = {p, n, ((size_t)1 << 18)};
    par_for((int)((n + z.per - 1) / z.per), zero_task, &z);
}

void rn_backward(resnet *m, const float *dout) { (void)rn_backward_hooked(m, dout, 0, NULL, NULL); }

int rn_backward_hooked(resnet *m, const float *dout, size_t bucket, rn_grad_cb cb, void *ctx)
{
    rn_arena *a = m->arena;
    size_t reported = m->nparams; /* [reported, nparams) went to cb */
    memcpy(GRAD(a->final_act), dout, sizeof(float) * a->acts[a->final_act].numel);
    double t0 = m->prof ? moco_now_s() : 0;
    for (int i = m->nops - 1; i >= 0; i--) {
        rn_op *o = &m->ops[i];
        int gin = a->acts[o->in].grad;
        if (o->zero_in) zero(GRAD(o->in), a->acts[o->in].numel);
        if (o->zero_res) zero(GRAD(o->res), a->acts[o->res].numel);
        if (m->prof) prof_add(m, RN_PROF_OTHER_BWD, &t0);
        float *din = gin ? GRAD(o->in) : NULL;
        float *G = m->grads;
        switch (o->type) {
        case OP_CONV:
            conv2d_backward(din, G + m->tensors[o->tw].off, GRAD(o->out), ACT(o->in), P(m, o->tw), o->convb_own ? &o->convb : &o->conv,
                            a->work);
            break;
        case OP_BN:
            if (a->acts[o->in].half || a->acts[o->out].half) {
                const int hx = a->acts[o->in].half, hy = a->acts[o->out].half;
                bn_backward_h(din, o->res >= 0 ? GRAD(o->res) : NULL, G + m->tensors[o->tw].off, G + m->tensors[o->tw + 1].off,
                              GRAD(o->out), hy ? NULL : ACT(o->out), hy ? (const uint16_t *)ACT(o->out) : NULL, hx ? NULL : ACT(o->in),
                              hx ? (const uint16_t *)ACT(o->in) : NULL, a->xtmp, ACT(o->mean), ACT(o->invstd), P(m, o->tw), o->relu,
                              &o->bn);
            }
            else
                bn_backward(din, o->res >= 0 ? GRAD(o->res) : NULL, G + m->tensors[o->tw].off, G + m->tensors[o->tw + 1].off,
                            GRAD(o->out), ACT(o->out), ACT(o->in), ACT(o->mean), ACT(o->invstd), P(m, o->tw), o->relu, &o->bn);
            break;
        case OP_MAXPOOL: maxpool_backward(din, GRAD(o->out), ACT(o->in), &o->pool); break;
        case OP_AVGPOOL: avgpool_backward(din, GRAD(o->out), o->N, o->C, o->HW); break;
        case OP_LINEAR:
            if (o->lp)
                linear_backward_bf16(din, G + m->tensors[o->tw].off, G + m->tensors[o->tw + 1].off, GRAD(o->out), ACT(o->in), o->lp,
                                     a->work);
            else
                linear_backward(din, G + m->tensors[o->tw].off, G + m->tensors[o->tw + 1].off, GRAD(o->out), ACT(o->in),
                                P(m, o->tw), o->N, o->F, o->O);
            break;
        case OP_RELU: relu_backward(din, GRAD(o->out), ACT(o->out), (size_t)o->N * o->F); break;
        }
        if (m->prof) prof_add(m, prof_part(o->type, 1), &t0);
        if (!cb) continue;
        size_t lo = o->final_lo;
        int send = lo < reported && (reported - lo >= bucket || lo == 0);
        int rc = cb(ctx, m->grads, send ? lo : reported, send ? reported - lo : 0);
        if (send) reported = lo;
        if (rc) return rc;
        if (m->prof) t0 = moco_now_s(); /* the gradient hook is the caller's time */
    }
    return 0;
}

void rn_zero_grad(resnet *m)
{
    if (m->grads) memset(m->grads, 0, sizeof(float) * m->nparams);
}

const rn_tensor *rn_find(const resnet *m, const char *name)
{
    for (int i = 0; i < m->ntensors; i++)
        if (!strcmp(m->tensors[i].name, name)) return &m->tensors[i];
    return NULL;
}

void *rn_data(const resnet *m, const rn_tensor *t)
{
    return t->kind == RN_PARAM ? (void *)(m->params + t->off) : t->kind == RN_BUFFER ? (void *)(m->buffers + t->off)
                                                                                      : (void *)(m->counts + t->off);
}

float *rn_grad(const resnet *m, const rn_tensor *t) { return t->kind == RN_PARAM && m->grads ? m->grads + t->off : NULL; }

size_t rn_arena_bytes(const resnet *m) { return m->arena->bytes; }

int rn_save(const resnet *m, const char *path)
{
    moco_st_entry *e = calloc((size_t)m->ntensors, sizeof *e);
    if (!e) return moco_err(MOCO_ENOMEM, "out of memory");
    for (int i = 0; i < m->ntensors; i++) {
        const rn_tensor *t = &m->tensors[i];
        e[i].name = t->name;
        e[i].dtype = t->kind == RN_COUNT ? MOCO_ST_I64 : MOCO_ST_F32;
        e[i].ndim = t->ndim;
        memcpy(e[i].shape, t->shape, sizeof t->shape);
        e[i].data = rn_data(m, t);
    }
    char meta[160];
    snprintf(meta, sizeof meta, "%s width %d dim %d%s", m->cfg.arch, m->cfg.width, m->cfg.dim, m->cfg.mlp ? " mlp" : "");
    const char *kv[] = {"moco.arch", meta};
    int rc = moco_st_write(path, e, m->ntensors, kv, 1);
    free(e);
    return rc;
}

int rn_load(resnet *m, const char *path)
{
    moco_st *st;
    int rc = moco_st_open(path, &st);
    if (rc) return rc;
    /* check everything first, then copy: never a partial load */
    for (int i = 0; i < m->ntensors && !rc; i++) {
        const rn_tensor *t = &m->tensors[i];
        const moco_st_tensor *f = moco_st_find(st, t->name);
        moco_st_dtype dt = t->kind == RN_COUNT ? MOCO_ST_I64 : MOCO_ST_F32;
        int same = f && f->dtype == dt && f->ndim == t->ndim;
        for (int d = 0; same && d < t->ndim; d++) same = f->shape[d] == t->shape[d];
        if (!same) { /* let moco_st_read word the error */
            rc = moco_st_read(st, t->name, dt, t->ndim, t->shape, NULL);
            char msg[1024];
            snprintf(msg, sizeof msg, "%s", moco_errmsg());
            moco_err(rc, "%s: %s", path, msg);
        }
    }
    for (int i = 0; !rc && i < moco_st_count(st); i++)
        if (!rn_find(m, moco_st_at(st, i)->name))
            rc = moco_err(MOCO_EINVAL, "%s: tensor '%s' is not part of %s", path, moco_st_at(st, i)->name, m->cfg.arch);
    for (int i = 0; i < m->ntensors && !rc; i++) {
        const rn_tensor *t = &m->tensors[i];
        rc = moco_st_read(st, t->name, t->kind == RN_COUNT ? MOCO_ST_I64 : MOCO_ST_F32, t->ndim, t->shape, rn_data(m, t));
    }
    moco_st_destroy(&st);
    return rc;
}

const float *rn_pooled(const resnet *m)
{
    const rn_arena *a = m->arena;
    for (int i = 0; i < m->nops; i++)
        if (m->ops[i].type == OP_AVGPOOL) return m->fwd_at ? m->fwd_at[m->ops[i].out] : ACT(m->ops[i].out);
    return NULL;
}

int rn_conv_count(const resnet *m)
{
    int n = 0;
    for (int i = 0; i < m->nops; i++) n += m->ops[i].type == OP_CONV;
    return n;
}

int rn_linear_count(const resnet *m)
{
    int n = 0;
    for (int i = 0; i < m->nops; i++) n += m->ops[i].type == OP_LINEAR;
    return n;
}

static void layer_get(const resnet *m, int type, int i, rn_conv_info *info)
{
    memset(info, 0, sizeof *info);
    for (int k = 0; k < m->nops; k++) {
        const rn_op *o = &m->ops[k];
        if (o->type != type || i--) continue;
        const nn_conv *d = &o->conv;
        const int sh[8] = {d->N, d->Ci, d->H, d->W, d->Co, d->k, d->stride, d->pad}, lsh[8] = {o->N, o->F, 1, 1, o->O, 1, 1, 0};
        info->name = m->tensors[o->tw].name;
        memcpy(info->shape, type == OP_CONV ? sh : lsh, sizeof sh);
        info->bwd_pass = type == OP_CONV && !m->arena->acts[o->in].grad ? TUNE_BWD_W : TUNE_BWD;
        for (int p = 0; p < 2; p++) {
            info->algo[p] = o->tc[p].algo, info->measured[p] = o->tc[p].measured;
            memcpy(info->ms[p], o->tc[p].ms, sizeof info->ms[p]);
        }
        return;
    }
}

void rn_conv_get(const resnet *m, int i, rn_conv_info *info) { layer_get(m, OP_CONV, i, info); }
void rn_linear_get(const resnet *m, int i, rn_conv_info *info) { layer_get(m, OP_LINEAR, i, info); }
