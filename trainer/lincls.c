/* lincls.c: `moco lincls`, the linear-evaluation protocol of MoCo
 * (main_lincls.py): a linear classifier trained on the frozen backbone's
 * pooled features (the head dropped, BN in evaluation mode), reported as
 * test top-1 and top-5 accuracy.
 *
 * As the official script: weights initialised N(0, 0.01), bias 0; SGD with
 * momentum 0.9, no weight decay, lr 30 divided by 10 at epochs 60 and 80 of
 * 100, batch 256, the last partial batch kept; cross-entropy. Training
 * images come in one of two ways:
 * - streamed (the default; `moco lincls` starts a loader and augmentation
 *   workers with the "lincls" recipe, cli/run.c): every epoch each image
 *   arrives as a new random-resized crop (scale 0.08-1) with a random flip,
 *   and goes through the frozen encoder;
 * - --cached-features: the features of each image's evaluation view
 *   (resize + centre crop) computed once, no augmentation (fast on a CPU).
 * Test images: resize + centre crop, always: main_lincls.py's Resize(256) +
 * CenterCrop(224) at its ratio above 64 px, the image as it is at CIFAR
 * sizes (trainer/evalset.h). The encoder's parameters and
 * BN buffers are compared with a copy taken before training: a change is
 * an error naming the tensor. */
#include <cblas.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/opts.h"
#include "formats/replace.h"
#include "formats/rng.h"
#include "trainer/engine/ckpt.h"
#include "trainer/evalmodel.h"
#include "trainer/evalset.h"
#include "trainer/lincls.h"
#include "trainer/stream.h"
#include "trainer/train.h"

/* pooled features of every sample of es */
static int features(resnet *m, evalset *es, float **feat, int32_t **labels, int64_t *n)
{
    int N = m->cfg.batch, S = m->cfg.size, F = m->features;
    *n = evalset_count(es);
    float *x = malloc(sizeof *x * (size_t)N * 3 * S * S);
    *feat = malloc(sizeof **feat * (size_t)*n * F);
    *labels = malloc(sizeof **labels * (size_t)(*n + N));
    if (!x || !*feat || !*labels) { free(x); return moco_err(MOCO_ENOMEM, "out of memory for %lld features", (long long)*n); }
    int rc = 0;
    for (int64_t s = 0; s < *n && !rc; s += N) {
        int cnt = (int)(*n - s < N ? *n - s : N);
        if (cnt < N) memset(x, 0, sizeof *x * (size_t)N * 3 * S * S);
        if ((rc = evalset_read(es, s, cnt, x, *labels + s))) break;
        rn_forward(m, x, NULL, 0);
        memcpy(*feat + (size_t)s * F, rn_pooled(m), sizeof **feat * (size_t)cnt * F);
    }
    free(x);
    return rc;
}

/* Softmax cross-entropy on one batch; writes the gradient into gw (C, F),
 * gb (C); returns the mean loss. logits (B, C) is scratch. */
static double ce_batch(const float *x, const int32_t *y, int B, int F, int C, const float *w, const float *b, float *logits,
                       float *gw, float *gb)
{
    memset(gw, 0, sizeof *gw * (size_t)C * F);
    memset(gb, 0, sizeof *gb * (size_t)C);
    for (int i = 0; i < B; i++) memcpy(logits + (size_t)i * C, b, sizeof *b * (size_t)C);
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, C, F, 1.0f, x, F, w, F, 1.0f, logits, C);
    double loss = 0;
    for (int i = 0; i < B; i++) {
        float *l = logits + (size_t)i * C, mx = l[0];
        for (int c = 1; c < C; c++) mx = l[c] > mx ? l[c] : mx;
        double se = 0;
        for (int c = 0; c < C; c++) se += exp((double)l[c] - mx);
        loss += log(se) + mx - l[y[i]];
        for (int c = 0; c < C; c++) l[c] = (float)(exp((double)l[c] - mx) / se / B);
        l[y[i]] -= 1.0f / (float)B;
        for (int c = 0; c < C; c++) gb[c] += l[c];
    }
    cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, C, F, B, 1.0f, logits, C, x, F, 1.0f, gw, F);
    return loss / B;
}

/* the classifier and its SGD state */
typedef struct {
    int F, C, batch;
    float *w, *b, *gw, *gb, *vw, *vb, *logits;
} cls;

static void cls_free(cls *k)
{
    free(k->w); free(k->b); free(k->gw); free(k->gb); free(k->vw); free(k->vb); free(k->logits);
    memset(k, 0, sizeof *k);
}

static int cls_init(cls *k, int F, int C, int batch, uint64_t seed)
{
    size_t nw = (size_t)C * F, nl = (size_t)(batch > 1024 ? batch : 1024) * C;
    *k = (cls){.F = F, .C = C, .batch = batch, .w = malloc(sizeof *k->w * nw), .b = calloc((size_t)C, sizeof *k->b),
               .gw = malloc(sizeof *k->gw * nw), .gb = malloc(sizeof *k->gb * (size_t)C), .vw = calloc(nw, sizeof *k->vw),
               .vb = calloc((size_t)C, sizeof *k->vb), .logits = malloc(sizeof *k->logits * nl)};
    if (!k->w || !k->b || !k->gw || !k->gb || !k->vw || !k->vb || !k->logits) {
        cls_free(k);
        return moco_err(MOCO_ENOMEM, "out of memory for a %d x %d classifier", C, F);
    }
    moco_rng r;
    moco_rng_init(&r, seed, 0x6c696e, 0, 0);
    for (size_t i = 0; i < nw; i++) { /* N(0, 0.01), Box-Muller */
        double u1 = moco_rng_uniform(&r), u2 = moco_rng_uniform(&r);
        k->w[i] = (float)(0.01 * sqrt(-2 * log(1 - u1)) * cos(2 * M_PI * u2));
    }
    return 0;
}

static double cls_lr(const lincls_cfg *c, int epoch)
{
    double lr = c->lr;
    for (int i = 0; i < c->nschedule; i++)
        if (epoch >= c->schedule[i]) lr *= 0.1;
    return lr;
}

/* one SGD step (torch.optim.SGD: momentum, weight decay) on B <= batch rows */
static int cls_step(cls *k, const float *x, const int32_t *y, int B, const lincls_cfg *c, int epoch, double *loss)
{
    size_t nw = (size_t)k->C * k->F;
    float lr = (float)cls_lr(c, epoch), mom = (float)c->momentum, wd = (float)c->wd;
    *loss = ce_batch(x, y, B, k->F, k->C, k->w, k->b, k->logits, k->gw, k->gb);
    if (!isfinite(*loss)) return moco_err(MOCO_ENUMERIC, "linear classifier: the loss became %g at epoch %d", *loss, epoch);
    for (size_t i = 0; i < nw; i++) {
        k->vw[i] = mom * k->vw[i] + k->gw[i] + wd * k->w[i];
        k->w[i] -= lr * k->vw[i];
    }
    for (int i = 0; i < k->C; i++) {
        k->vb[i] = mom * k->vb[i] + k->gb[i] + wd * k->b[i];
        k->b[i] -= lr * k->vb[i];
    }
    return 0;
}

/* top-1 and top-5 (percent) on n rows */
static void cls_eval(cls *k, const float *x, const int32_t *y, int64_t n, double *top1, double *top5)
{
    int64_t r1 = 0, r5 = 0;
    for (int64_t s = 0; s < n; s += 1024) {
        int B = (int)(n - s < 1024 ? n - s : 1024), C = k->C;
        for (int i = 0; i < B; i++) memcpy(k->logits + (size_t)i * C, k->b, sizeof *k->b * (size_t)C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, C, k->F, 1.0f, x + (size_t)s * k->F, k->F, k->w, k->F, 1.0f,
                    k->logits, C);
        for (int i = 0; i < B; i++) {
            const float *l = k->logits + (size_t)i * C;
            int truth = y[s + i], above = 0; /* classes scored above the truth (ties: the lower index first) */
            for (int c = 0; c < C; c++) above += l[c] > l[truth] || (l[c] == l[truth] && c < truth);
            r1 += above == 0;
            r5 += above < 5;
        }
    }
    *top1 = 100.0 * (double)r1 / (double)(n ? n : 1);
    /* fewer than 5 classes: every sample's truth is in its top 5; main_lincls.py's
     * accuracy(topk=(1, 5)) cannot compute it either. NaN: null in the JSON line */
    *top5 = k->C < 5 ? NAN : 100.0 * (double)r5 / (double)(n ? n : 1);
}

int lincls_train_eval(const float *xtr, const int32_t *ytr, int64_t ntr, const float *xte, const int32_t *yte, int64_t nte,
                      int F, int C, const lincls_cfg *c, double *top1, double *top5)
{
    cls k;
    float *xb = malloc(sizeof *xb * (size_t)c->batch * F);
    int32_t *yb = malloc(sizeof *yb * (size_t)c->batch);
    uint64_t *perm = malloc(sizeof *perm * (size_t)(ntr ? ntr : 1));
    int rc = 0;
    if (!xb || !yb || !perm) { free(xb); free(yb); free(perm); return moco_err(MOCO_ENOMEM, "out of memory"); }
    if ((rc = cls_init(&k, F, C, c->batch, c->seed))) goto out;
    for (int e = 0; e < c->epochs && !rc; e++) {
        moco_rng r;
        moco_rng_init(&r, c->seed, 0x6c696e, (uint64_t)e + 1, 0);
        moco_rng_permutation(&r, perm, (uint64_t)ntr);
        for (int64_t s = 0; s < ntr && !rc; s += c->batch) {
            int B = (int)(ntr - s < c->batch ? ntr - s : c->batch);
            for (int i = 0; i < B; i++) {
                memcpy(xb + (size_t)i * F, xtr + (size_t)perm[s + i] * F, sizeof *xb * (size_t)F);
                yb[i] = ytr[perm[s + i]];
            }
            double loss;
            rc = cls_step(&k, xb, yb, B, c, e, &loss);
        }
    }
    if (!rc) cls_eval(&k, xte, yte, nte, top1, top5);
out:
    cls_free(&k);
    free(xb); free(yb); free(perm);
    return rc;
}

/* Streamed training: every pair's query view (a random-resized crop and
 * flip, the "lincls" recipe) with its label, through the frozen encoder,
 * one classifier step per batch; the last partial batch of an epoch kept. */
static int streamed(resnet *m, cls *k, const lincls_cfg *c, const char *connect, const char *bind, uint64_t count,
                    const float mean[3], const float std[3], int64_t *seen)
{
    int N = m->cfg.batch, S = m->cfg.size, epoch = 0, nb = 0;
    float *x = calloc((size_t)N * 3 * S * S, sizeof *x);
    int32_t *y = malloc(sizeof *y * (size_t)N);
    trainer_stream *s = NULL;
    int rc = 0;
    double loss_sum = 0;
    int64_t steps = 0;
    if (!x || !y) { rc = moco_err(MOCO_ENOMEM, "out of memory for a batch of %d", N); goto out; }
    stream_cfg sc = {.pairs_ep = bind, .ctl_ep = connect, .resume_epoch = STREAM_NO_EPOCH, .count = count, .loader_timeout = 120,
                    .size = S, .classes = k->C}; /* other pairs are dropped and counted there */
    if ((rc = stream_open(&sc, &s))) goto out;
    for (;;) {
        stream_event ev;
        rc = stream_next(s, 1000, &ev);
        if (!rc && ev.kind == STREAM_NONE) continue;
        if (rc) goto out;
        if (ev.kind == STREAM_PAIR) {
            if (ev.pair.height != S || ev.pair.width != S) { /* never: the stream drops them (.size, .classes) */
                rc = moco_err(MOCO_EINVAL, "pair (epoch %u, index %" PRIu64 ") has %ux%u views; the model takes %dx%d (--size)",
                              ev.pair.epoch, ev.pair.index, ev.pair.height, ev.pair.width, S, S);
                goto out;
            }
            if (ev.pair.label < 0 || ev.pair.label >= k->C) {
                rc = moco_err(MOCO_EINVAL, "record %" PRIu64 " has label %d; linear evaluation needs a class in [0, %d)",
                              ev.pair.index, ev.pair.label, k->C);
                goto out;
            }
            train_view_to_float(x, ev.q, nb, S, ev.pair.channels, mean, std);
            y[nb++] = ev.pair.label;
            (*seen)++;
        }
        int last = ev.kind != STREAM_PAIR;
        if (nb == N || (last && nb > 0)) { /* the encoder runs on N rows; the classifier takes the first nb */
            rn_forward(m, x, NULL, 0);
            double loss;
            if ((rc = cls_step(k, rn_pooled(m), y, nb, c, epoch, &loss))) goto out;
            loss_sum += loss, steps++;
            nb = 0;
        }
        if (ev.kind == STREAM_EPOCH_END) {
            fprintf(stderr, "moco lincls: epoch %d: loss %.4f, lr %g\n", epoch, steps ? loss_sum / steps : 0, cls_lr(c, epoch));
            loss_sum = 0, steps = 0;
            if (++epoch >= c->epochs) break;
        }
        if (ev.kind == STREAM_END) break;
    }
    if (epoch < c->epochs) rc = moco_err(MOCO_EIO, "the stream ended after %d of %d epochs", epoch, c->epochs);
out:
    stream_destroy(&s);
    free(x); free(y);
    return rc;
}

/* every parameter and BN buffer of m, to compare after training */
static float *snapshot(const resnet *m)
{
    float *p = malloc(sizeof *p * (m->nparams + m->nbuffers + 1));
    if (p) {
        memcpy(p, m->params, sizeof *p * m->nparams);
        memcpy(p + m->nparams, m->buffers, sizeof *p * m->nbuffers);
    }
    return p;
}

static int unchanged(const resnet *m, const float *snap)
{
    for (int i = 0; i < m->ntensors; i++) {
        const rn_tensor *t = &m->tensors[i];
        if (t->kind == RN_COUNT) continue;
        const float *was = snap + (t->kind == RN_BUFFER ? m->nparams : 0) + t->off;
        if (memcmp(was, rn_data(m, t), sizeof *was * t->numel))
            return moco_err(MOCO_EINVAL, "the frozen encoder changed during linear evaluation: tensor %s", t->name);
    }
    return 0;
}

/* The command; check_only: parse and check the flags, then return (0 or 2) */
static int lincls_run(int argc, char **argv, int check_only)
{
    const char *trdb = NULL, *tedb = NULL, *schedule = "60,80", *connect = NULL, *bind = NULL, *out = NULL;
    long epochs = 100, batch = 256;
    uint64_t seed = 0, count = 0;
    double lr = 30, momentum = 0.9, wd = 0;
    int cached = 0;
    evalmodel_flags ef;
    moco_opt opts[EVALMODEL_NOPTS + 18];
    int n = evalmodel_opts(&ef, opts, "forward-batch");
    opts[n++] = (moco_opt){"train", MOCO_OPT_STR, &trdb, "labelled LMDB to train the classifier on", 0, 0, NULL};
    opts[n++] = (moco_opt){"test", MOCO_OPT_STR, &tedb, "labelled LMDB to measure it on", 0, 0, NULL};
    opts[n++] = (moco_opt){"cached-features", MOCO_OPT_FLAG, &cached,
                           "features of the centre-crop views computed once, no augmentation (fast)", 0, 0, NULL};
    opts[n++] = (moco_opt){"epochs", MOCO_OPT_INT, &epochs, "epochs of the classifier", 1, TRAIN_MAX_EPOCHS, NULL};
    opts[n++] = (moco_opt){"lr", MOCO_OPT_DOUBLE, &lr, "learning rate (official: 30)", 0, 1e4, NULL};
    opts[n++] = (moco_opt){"schedule", MOCO_OPT_STR, &schedule, "epochs at which the lr is multiplied by 0.1", 0, 0, NULL};
    opts[n++] = (moco_opt){"momentum", MOCO_OPT_DOUBLE, &momentum, "SGD momentum", 0, 1, NULL};
    opts[n++] = (moco_opt){"wd", MOCO_OPT_DOUBLE, &wd, "weight decay", 0, 1, NULL};
    opts[n++] = (moco_opt){"batch-size|-b", MOCO_OPT_INT, &batch, "classifier batch (streamed: also the encoder's)", 1, 1e6, NULL};
    opts[n++] = (moco_opt){"seed", MOCO_OPT_U64, &seed, "seed of the classifier's init and order (and of the crops)", 0, 0, NULL};
    opts[n++] = (moco_opt){"connect", MOCO_OPT_STR, &connect, "streamed: the loader's control endpoint (set by moco lincls)", 0, 0, NULL};
    opts[n++] = (moco_opt){"bind", MOCO_OPT_STR, &bind, "streamed: endpoint the workers push views to (set by moco lincls)", 0, 0, NULL};
    opts[n++] = (moco_opt){"count", MOCO_OPT_U64, &count, "streamed: samples in the training set (set by moco lincls)", 0, 0, NULL};
    opts[n++] = (moco_opt){"out", MOCO_OPT_STR, &out, "streamed: the run directory; lincls.json is written there", 0, 0, NULL};
    opts[n] = (moco_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    const moco_optspec spec = {"moco lincls", "--ckpt CKPT --train DB --test DB [options]",
                               "Linear evaluation (MoCo's main_lincls.py): a linear classifier on the frozen backbone\n"
                               "features of a checkpoint's query encoder. By default each epoch sees new random-resized\n"
                               "crops and flips, made by a loader and --workers augmentation workers (the flags of moco run\n"
                               "apply); --cached-features trains on the centre-crop features computed once. The last line\n"
                               "is a JSON object with lincls_top1 and lincls_top5.",
                               opts, 0, 0, NULL};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    train_cfg tc;
    int have = (ef.ckpt || ef.init_seed >= 0) && trdb && tedb;
    if (!have || train_parse_schedule(schedule, &tc)) {
        fprintf(stderr, "moco lincls: %s\n", !have ? "--ckpt (or --random-init), --train and --test are required" : moco_errmsg());
        return 2;
    }
    if (check_only) { /* the datasets too, before moco lincls starts a pipeline (before: a test set of other
                       * classes failed the started run, and left a run directory of its logs) */
        evalset *a = NULL, *b = NULL;
        const float mean[3] = {0, 0, 0}, std[3] = {1, 1, 1};
        rc = evalset_open(trdb, 32, mean, std, &a);
        if (!rc) rc = evalset_open(tedb, 32, mean, std, &b);
        if (!rc) rc = evalset_classes_of(b, a);
        if (rc) fprintf(stderr, "moco lincls: %s\n", moco_errmsg());
        evalset_destroy(&a);
        evalset_destroy(&b);
        return rc ? 2 : 0;
    }
    struct stat ost; /* before hours of features, not after them */
    if (out && (stat(out, &ost) || !S_ISDIR(ost.st_mode))) {
        fprintf(stderr, "moco lincls: --out %s: %s; lincls.json is written into an existing directory\n", out,
                errno == ENOENT ? "no such directory" : "not a directory");
        return 2;
    }
    if (!cached && (!connect || !bind)) {
        fprintf(stderr, "moco lincls: streamed training needs --connect and --bind (moco lincls without --cached-features sets them)\n");
        return 2;
    }
    if (!cached) ef.batch = batch; /* one forward per classifier step */
    lincls_cfg lc = {.epochs = (int)epochs, .batch = (int)batch, .lr = lr, .momentum = momentum, .wd = wd, .seed = seed,
                     .nschedule = tc.nschedule};
    memcpy(lc.schedule, tc.schedule, sizeof lc.schedule);
    resnet *m = NULL;
    evalset *tr = NULL, *te = NULL;
    float *xtr = NULL, *xte = NULL, *snap = NULL, mean[3], std[3];
    int32_t *ytr = NULL, *yte = NULL;
    int64_t ntr = 0, nte = 0;
    double top1 = 0, top5 = 0;
    cls k = {0};
    if ((rc = evalmodel_open(&ef, &m, mean, std)) || (rc = evalset_open(trdb, (int)ef.size, mean, std, &tr)) ||
        (rc = evalset_open(tedb, (int)ef.size, mean, std, &te)) || (rc = evalset_classes_of(te, tr)))
        goto out;
    if (ef.note[0]) fprintf(stderr, "moco lincls: %s\n", ef.note);
    if (!(snap = snapshot(m))) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    int C = evalset_classes(tr); /* the test set's labels are the training set's indices (evalset_classes_of) */
    if (cached) {
        if ((rc = features(m, tr, &xtr, &ytr, &ntr)) || (rc = features(m, te, &xte, &yte, &nte))) goto out;
        rc = lincls_train_eval(xtr, ytr, ntr, xte, yte, nte, m->features, C, &lc, &top1, &top5);
    } else {
        if ((rc = cls_init(&k, m->features, C, (int)batch, seed)) ||
            (rc = streamed(m, &k, &lc, connect, bind, count ? count : (uint64_t)evalset_count(tr), mean, std, &ntr)) ||
            (rc = features(m, te, &xte, &yte, &nte)))
            goto out;
        cls_eval(&k, xte, yte, nte, &top1, &top5);
    }
    if (rc) goto out;
    if (getenv("MOCO_TEST_LINCLS_TOUCH")) m->buffers[0] += 1; /* test hook: the check below must see it */
    rc = unchanged(m, snap);
out:
    if (rc) {
        fprintf(stderr, "moco lincls: %s\n", moco_errmsg());
    } else {
        moco_jw w; /* formats/jsonw: a NaN accuracy is null, never "nan" */
        moco_jw_begin(&w);
        moco_jw_num(&w, "lincls_top1", top1, 2);
        moco_jw_num(&w, "lincls_top5", top5, 2);
        moco_jw_i64(&w, "features", m->features);
        moco_jw_i64(&w, "epochs", lc.epochs);
        moco_jw_bool(&w, "augmented", !cached);
        moco_jw_i64(&w, "train_views", ntr);
        moco_jw_i64(&w, "test", nte);
        moco_jw_bool(&w, "encoder_unchanged", 1);
        moco_jw_i64(&w, "size", ef.size); /* the input side of both sets (the checkpoint's training size unless --size) */
        moco_jw_str(&w, "normalize", evalmodel_norm_name(ef.norm, (int)ef.size));
        moco_jw_str(&w, "precision", ef.bf16 ? "bf16" : "fp32"); /* the frozen encoder's forward */
        const char *js = moco_jw_end(&w);
        char line[512];
        snprintf(line, sizeof line, "%s\n", js ? js : "{}");
        moco_jw_free(&w);
        fputs(line, stdout);
        fflush(stdout);
        if (out) { /* whole or not at all: a temporary file, checked writes, fsync, rename */
            char path[1200];
            snprintf(path, sizeof path, "%s/lincls.json", out);
            if ((rc = moco_write_replace(path, line, strlen(line)))) fprintf(stderr, "moco lincls: %s\n", moco_errmsg());
        }
    }
    cls_free(&k);
    rn_destroy(&m);
    evalset_destroy(&tr);
    evalset_destroy(&te);
    free(xtr); free(xte); free(ytr); free(yte); free(snap);
    return rc ? 1 : 0;
}

int lincls_main(int argc, char **argv) { return lincls_run(argc, argv, 0); }
int lincls_check_args(int argc, char **argv) { return lincls_run(argc, argv, 1); }
