/* moco.c: the MoCo step of moco.h: momentum update, shuffled key forward,
 * query forward, InfoNCE, backward, SGD, enqueue. */
#include "trainer/moco.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"
#include "formats/rng.h"

int moco_new(const moco_cfg *cfg, moco **out)
{
    *out = NULL;
    const int N = cfg->enc.batch, D = cfg->enc.dim, keys = N * (cfg->symmetric ? 2 : 1);
    if (cfg->K < 1 || cfg->K % keys)
        return moco_err(MOCO_EINVAL, "queue length K=%d must be a positive multiple of the %d keys a step enqueues", cfg->K, keys);
    if (!(cfg->T > 0) || !(cfg->m >= 0 && cfg->m <= 1) || !(cfg->lr >= 0) || !(cfg->weight_decay >= 0) ||
        !(cfg->sgd_momentum >= 0))
        return moco_err(MOCO_EINVAL, "bad MoCo settings: T=%g m=%g lr=%g wd=%g momentum=%g", cfg->T, cfg->m, cfg->lr,
                        cfg->weight_decay, cfg->sgd_momentum);
    moco *mc = calloc(1, sizeof *mc);
    if (!mc) return moco_err(MOCO_ENOMEM, "out of memory");
    mc->cfg = *cfg;
    int rc = rn_new(&cfg->enc, cfg->seed, 1, NULL, &mc->q);
    if (!rc) rc = rn_new(&cfg->enc, cfg->seed, 0, mc->q, &mc->k);
    if (rc) goto fail;
    memcpy(mc->k->params, mc->q->params, sizeof(float) * mc->q->nparams);
    size_t nd = (size_t)N * D;
    size_t total = (size_t)D * cfg->K + 2 * nd + (size_t)keys * D + 2 * nd + (size_t)N * (cfg->K + 1);
    mc->buf = malloc(sizeof(float) * total + sizeof(uint64_t) * (size_t)N);
    if (!mc->buf) {
        rc = moco_err(MOCO_ENOMEM, "out of memory for the queue (%d x %d)", D, cfg->K);
        goto fail;
    }
    float *p = mc->buf;
    mc->queue = p, p += (size_t)D * cfg->K;
    mc->qn = p, p += nd;
    mc->kn = p, p += nd;
    mc->keys = p, p += (size_t)keys * D;
    mc->dq = p, p += nd;
    mc->dqraw = p, p += nd;
    mc->logits = p, p += (size_t)N * (cfg->K + 1);
    mc->perm = (uint64_t *)p;
    /* queue: Gaussian columns, each L2-normalised */
    moco_rng r;
    moco_rng_init(&r, cfg->seed, 3, 0, 0);
    for (size_t i = 0; i < (size_t)D * cfg->K; i++) {
        double u1 = moco_rng_uniform(&r), u2 = moco_rng_uniform(&r);
        mc->queue[i] = (float)(sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2));
    }
    for (int j = 0; j < cfg->K; j++) {
        double s = 0;
        for (int d = 0; d < D; d++) s += (double)mc->queue[(size_t)d * cfg->K + j] * mc->queue[(size_t)d * cfg->K + j];
        float inv = (float)(1.0 / fmax(sqrt(s), 1e-12));
        for (int d = 0; d < D; d++) mc->queue[(size_t)d * cfg->K + j] *= inv;
    }
    *out = mc;
    return 0;
fail:
    moco_destroy(&mc);
    return rc;
}

void moco_destroy(moco **pmc)
{
    moco *mc = pmc ? *pmc : NULL;
    if (!mc) return;
    rn_destroy(&mc->k);
    rn_destroy(&mc->q);
    free(mc->buf);
    free(mc);
    *pmc = NULL;
}

double moco_step_macs(const moco *mc)
{
    double f = mc->q->macs;
    return (mc->cfg.symmetric ? 2 : 1) * (f + (2 * f - mc->q->macs_first) + f);
}

int moco_step(moco *mc, const float *x1, const float *x2, const uint64_t *perm, float lr, float *loss)
{
    const moco_cfg *c = &mc->cfg;
    const int N = c->enc.batch, D = c->enc.dim, K = c->K, dirs = c->symmetric ? 2 : 1;
    resnet *q = mc->q, *k = mc->k;
    /* 1. momentum update of the key encoder (parameters only) */
    const float m = c->m, m1 = 1.0f - c->m;
    for (size_t i = 0; i < q->nparams; i++) k->params[i] = k->params[i] * m + q->params[i] * m1;
    rn_zero_grad(q);
    double total = 0;
    for (int dir = 0; dir < dirs; dir++) {
        const float *xq = dir ? x2 : x1, *xk = dir ? x1 : x2;
        /* 2a. keys, shuffled through f_k and back */
        const uint64_t *p = perm ? perm + (size_t)dir * N : mc->perm;
        if (!perm) {
            moco_rng r;
            moco_rng_init(&r, c->seed, 2, (uint64_t)mc->steps, (uint64_t)dir);
            moco_rng_permutation(&r, mc->perm, (uint64_t)N);
        }
        const float *kraw = rn_forward(k, xk, p, 1);
        l2norm_forward(mc->kn, kraw, N, D);
        /* keys of x1 go first in the enqueue order: direction 1 (x_k = x1) fills slot 0 */
        float *kd = mc->keys + (size_t)(dirs == 2 ? (dir == 1 ? 0 : N) : 0) * D;
        for (int i = 0; i < N; i++) memcpy(kd + (size_t)p[i] * D, mc->kn + (size_t)i * D, sizeof(float) * (size_t)D);
        /* 2b. queries, loss, backward */
        const float *qraw = rn_forward(q, xq, NULL, 1);
        l2norm_forward(mc->qn, qraw, N, D);
        memset(mc->dq, 0, sizeof(float) * (size_t)N * D);
        float l = infonce_forward_backward(mc->dq, mc->logits, mc->qn, kd, mc->queue, N, D, K, c->T);
        if (!isfinite(l))
            return moco_err(MOCO_ENUMERIC, "loss is %g at step %lld (direction %d): training stopped, weights not updated", (double)l,
                            (long long)mc->steps, dir + 1);
        total += l;
        /* qraw is still in the arena: rn_forward(q) was the last forward */
        memset(mc->dqraw, 0, sizeof(float) * (size_t)N * D);
        l2norm_backward(mc->dqraw, mc->dq, qraw, N, D);
        rn_backward(q, mc->dqraw);
    }
    /* 3. SGD with momentum and weight decay, as torch.optim.SGD */
    const float wd = c->weight_decay, mom = c->sgd_momentum;
    float *P = q->params, *G = q->grads, *B = q->momentum;
    for (size_t i = 0; i < q->nparams; i++) {
        float g = G[i] + wd * P[i];
        B[i] = mc->steps ? mom * B[i] + g : g;
        P[i] -= lr * B[i];
    }
    /* 4. enqueue: queue[:, ptr:ptr+keys] = keys^T */
    const int nk = N * dirs;
    for (int j = 0; j < nk; j++)
        for (int d = 0; d < D; d++) mc->queue[(size_t)d * K + (size_t)mc->ptr + (size_t)j] = mc->keys[(size_t)j * D + d];
    mc->ptr = (mc->ptr + nk) % K;
    mc->steps++;
    *loss = (float)total;
    return 0;
}
