/* lincls.c: `moco lincls`, the linear-evaluation protocol of MoCo
 * (main_lincls.py): a linear classifier trained on the frozen backbone's
 * pooled features (the head dropped), reported as test top-1 accuracy.
 *
 * As the official script: weights initialised N(0, 0.01), bias 0; SGD with
 * momentum 0.9, no weight decay, lr 30 divided by 10 at epochs 60 and 80 of
 * 100, batch 256; cross-entropy. Deviation, for speed on a CPU: the features
 * are computed once, on the evaluation view of each image (resize + centre
 * crop), instead of through a random crop and flip at every epoch; so the
 * classifier sees no augmentation. */
#include <cblas.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/rng.h"
#include "trainer/ckpt.h"
#include "trainer/evalmodel.h"
#include "trainer/evalset.h"
#include "trainer/lincls.h"
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

/* Softmax cross-entropy on one batch; adds the gradient into gw (C, F), gb (C);
 * returns the mean loss. logits (B, C) is scratch. */
static double ce_batch(const float *x, const int32_t *y, int B, int F, int C, const float *w, const float *b, float *logits,
                       float *gw, float *gb)
{
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

int lincls_train_eval(const float *xtr, const int32_t *ytr, int64_t ntr, const float *xte, const int32_t *yte, int64_t nte,
                      int F, int C, const lincls_cfg *c, double *top1)
{
    size_t nw = (size_t)C * F;
    float *w = malloc(sizeof *w * nw), *b = calloc((size_t)C, sizeof *b), *gw = malloc(sizeof *gw * nw),
          *gb = malloc(sizeof *gb * (size_t)C), *vw = calloc(nw, sizeof *vw), *vb = calloc((size_t)C, sizeof *vb),
          *xb = malloc(sizeof *xb * (size_t)c->batch * F), *logits = malloc(sizeof *logits * (size_t)(c->batch > 1024 ? c->batch : 1024) * C);
    int32_t *yb = malloc(sizeof *yb * (size_t)c->batch);
    uint64_t *perm = malloc(sizeof *perm * (size_t)ntr);
    int rc = 0;
    if (!w || !b || !gw || !gb || !vw || !vb || !xb || !logits || !yb || !perm) { rc = moco_err(MOCO_ENOMEM, "out of memory"); goto out; }
    moco_rng r;
    moco_rng_init(&r, c->seed, 0x6c696e, 0, 0);
    for (size_t i = 0; i < nw; i++) { /* N(0, 0.01), Box-Muller */
        double u1 = moco_rng_uniform(&r), u2 = moco_rng_uniform(&r);
        w[i] = (float)(0.01 * sqrt(-2 * log(1 - u1)) * cos(2 * M_PI * u2));
    }
    for (int e = 0; e < c->epochs; e++) {
        double lr = c->lr;
        for (int k = 0; k < c->nschedule; k++)
            if (e >= c->schedule[k]) lr *= 0.1;
        moco_rng_init(&r, c->seed, 0x6c696e, (uint64_t)e + 1, 0);
        moco_rng_permutation(&r, perm, (uint64_t)ntr);
        for (int64_t s = 0; s + c->batch <= ntr || (s < ntr && s == 0); s += c->batch) {
            int B = (int)(ntr - s < c->batch ? ntr - s : c->batch);
            for (int i = 0; i < B; i++) {
                memcpy(xb + (size_t)i * F, xtr + (size_t)perm[s + i] * F, sizeof *xb * (size_t)F);
                yb[i] = ytr[perm[s + i]];
            }
            memset(gw, 0, sizeof *gw * nw);
            memset(gb, 0, sizeof *gb * (size_t)C);
            double loss = ce_batch(xb, yb, B, F, C, w, b, logits, gw, gb);
            if (!isfinite(loss)) { rc = moco_err(MOCO_ENUMERIC, "linear classifier: the loss became %g at epoch %d", loss, e); goto out; }
            for (size_t i = 0; i < nw; i++) { /* torch.optim.SGD */
                float g = gw[i] + (float)c->wd * w[i];
                vw[i] = (float)c->momentum * vw[i] + g;
                w[i] -= (float)lr * vw[i];
            }
            for (int i = 0; i < C; i++) {
                vb[i] = (float)c->momentum * vb[i] + gb[i] + (float)c->wd * b[i];
                b[i] -= (float)lr * vb[i];
            }
        }
    }
    int64_t right = 0;
    for (int64_t s = 0; s < nte; s += 1024) {
        int B = (int)(nte - s < 1024 ? nte - s : 1024);
        for (int i = 0; i < B; i++) memcpy(logits + (size_t)i * C, b, sizeof *b * (size_t)C);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, B, C, F, 1.0f, xte + (size_t)s * F, F, w, F, 1.0f, logits, C);
        for (int i = 0; i < B; i++) {
            int best = 0;
            for (int k = 1; k < C; k++)
                if (logits[(size_t)i * C + k] > logits[(size_t)i * C + best]) best = k;
            right += best == yte[s + i];
        }
    }
    *top1 = 100.0 * (double)right / (double)(nte ? nte : 1);
out:
    free(w); free(b); free(gw); free(gb); free(vw); free(vb); free(xb); free(logits); free(yb); free(perm);
    return rc;
}

int lincls_main(int argc, char **argv)
{
    const char *trdb = NULL, *tedb = NULL, *schedule = "60,80";
    long epochs = 100, batch = 256;
    uint64_t seed = 0;
    double lr = 30, momentum = 0.9, wd = 0;
    evalmodel_flags ef;
    moco_opt opts[EVALMODEL_NOPTS + 12];
    int n = evalmodel_opts(&ef, opts, "forward-batch");
    opts[n++] = (moco_opt){"train", MOCO_OPT_STR, &trdb, "labelled LMDB to train the classifier on", 0, 0, NULL};
    opts[n++] = (moco_opt){"test", MOCO_OPT_STR, &tedb, "labelled LMDB to measure it on", 0, 0, NULL};
    opts[n++] = (moco_opt){"epochs", MOCO_OPT_INT, &epochs, "epochs of the classifier", 1, 1e6, NULL};
    opts[n++] = (moco_opt){"lr", MOCO_OPT_DOUBLE, &lr, "learning rate (official: 30)", 0, 1e4, NULL};
    opts[n++] = (moco_opt){"schedule", MOCO_OPT_STR, &schedule, "epochs at which the lr is multiplied by 0.1", 0, 0, NULL};
    opts[n++] = (moco_opt){"momentum", MOCO_OPT_DOUBLE, &momentum, "SGD momentum", 0, 1, NULL};
    opts[n++] = (moco_opt){"wd", MOCO_OPT_DOUBLE, &wd, "weight decay", 0, 1, NULL};
    opts[n++] = (moco_opt){"batch-size", MOCO_OPT_INT, &batch, "classifier batch", 1, 1e6, NULL};
    opts[n++] = (moco_opt){"seed", MOCO_OPT_U64, &seed, "seed of the classifier's init and order", 0, 0, NULL};
    opts[n] = (moco_opt){NULL, 0, NULL, NULL, 0, 0, NULL};
    const moco_optspec spec = {"moco lincls", "--ckpt CKPT --train DB --test DB [options]",
                               "Linear evaluation: a linear classifier on the frozen backbone features of a checkpoint's\n"
                               "query encoder (MoCo's main_lincls.py, on precomputed centre-crop features).",
                               opts, 0, 0};
    char *pos[1];
    int np, rc = moco_opts_parse(&spec, argc, argv, pos, &np);
    if (rc) return rc == MOCO_OPTS_HELP ? 0 : 2;
    train_cfg tc;
    int have = (ef.ckpt || ef.init_seed >= 0) && trdb && tedb;
    if (!have || train_parse_schedule(schedule, &tc)) {
        fprintf(stderr, "moco lincls: %s\n", !have ? "--ckpt (or --random-init), --train and --test are required" : moco_errmsg());
        return 2;
    }
    lincls_cfg lc = {.epochs = (int)epochs, .batch = (int)batch, .lr = lr, .momentum = momentum, .wd = wd, .seed = seed,
                     .nschedule = tc.nschedule};
    memcpy(lc.schedule, tc.schedule, sizeof lc.schedule);
    resnet *m = NULL;
    evalset *tr = NULL, *te = NULL;
    float *xtr = NULL, *xte = NULL, mean[3], std[3];
    int32_t *ytr = NULL, *yte = NULL;
    int64_t ntr = 0, nte = 0;
    double top1 = 0;
    if ((rc = evalmodel_open(&ef, &m, mean, std)) || (rc = evalset_open(trdb, (int)ef.size, mean, std, &tr)) ||
        (rc = evalset_open(tedb, (int)ef.size, mean, std, &te)) || (rc = features(m, tr, &xtr, &ytr, &ntr)) ||
        (rc = features(m, te, &xte, &yte, &nte)))
        goto out;
    int C = evalset_classes(tr) > evalset_classes(te) ? evalset_classes(tr) : evalset_classes(te);
    rc = lincls_train_eval(xtr, ytr, ntr, xte, yte, nte, m->features, C, &lc, &top1);
out:
    if (rc) fprintf(stderr, "moco lincls: %s\n", moco_errmsg());
    else printf("{\"lincls_top1\":%.2f,\"features\":%d,\"epochs\":%d,\"train\":%lld,\"test\":%lld}\n", top1, m->features, lc.epochs,
                (long long)ntr, (long long)nte);
    rn_destroy(&m);
    evalset_destroy(&tr);
    evalset_destroy(&te);
    free(xtr); free(xte); free(ytr); free(yte);
    return rc ? 1 : 0;
}
