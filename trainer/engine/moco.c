/* moco.c: the MoCo step of moco.h: momentum update, shuffled key forward,
 * query forward, InfoNCE, backward, SGD, enqueue; alone or with other
 * ranks through a moco_comm (gradient buckets averaged while backward runs,
 * keys all-gathered, BN buffers broadcast from rank 0). */
#include "trainer/engine/moco.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/rng.h"
#include "trainer/engine/carve.h"
#include "trainer/engine/par.h"

/* The step's buffers, each 64-byte aligned (moco_carve). */
static void layout(moco *mc, moco_carve *c)
{
    const moco_cfg *cfg = &mc->cfg;
    const size_t N = (size_t)cfg->enc.batch, D = (size_t)cfg->enc.dim, keys = N * (cfg->symmetric ? 2 : 1);
    mc->queue = moco_carve_take(c, sizeof(float) * D * (size_t)cfg->K);
    mc->qn = moco_carve_take(c, sizeof(float) * N * D);
    mc->kn = moco_carve_take(c, sizeof(float) * N * D);
    mc->keys = moco_carve_take(c, sizeof(float) * keys * D);
    mc->dq = moco_carve_take(c, sizeof(float) * N * D);
    mc->dqraw = moco_carve_take(c, sizeof(float) * N * D);
    mc->logits = moco_carve_take(c, sizeof(float) * N * ((size_t)cfg->K + 1));
    mc->perm = moco_carve_take(c, sizeof(uint64_t) * N);
}

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
    mc->ranks = 1;
    mc->bucket_floats = RN_BUCKET_FLOATS;
    int rc = rn_new(&cfg->enc, cfg->seed, 1, NULL, &mc->q);
    if (!rc) rc = rn_new(&cfg->enc, cfg->seed, 0, mc->q, &mc->k);
    if (rc) goto fail;
    memcpy(mc->k->params, mc->q->params, sizeof(float) * mc->q->nparams);
    moco_carve c = {0};
    layout(mc, &c);
    if (!(c.base = moco_carve_alloc(&c))) {
        rc = moco_err(MOCO_ENOMEM, "out of memory for the queue (%d x %d)", D, cfg->K);
        goto fail;
    }
    mc->buf = c.base;
    c.used = 0;
    layout(mc, &c);
    /* queue: Gaussian columns, each L2-normalised */
    moco_rng r;
    moco_rng_init(&r, cfg->seed, 3, 0, 0);
    for (size_t i = 0; i < (size_t)D * cfg->K; i++) {
        double u1 = moco_rng_uniform(&r), u2 = moco_rng_uniform(&r);
        mc->queue[i] = (float)(sqrt(-2.0 * log(1.0 - u1)) * cos(2.0 * M_PI * u2));
    }
    /* Row by row (the queue is D x K, row-major): each column's sum of
     * squares gathers in the order d = 0..D-1, as a column walk would, but
     * memory is read in sequence (a column walk strides K floats, one page
     * per read: 74 s under ASan for K = 65536). */
    double *ss = calloc((size_t)cfg->K, sizeof *ss);
    if (!ss) {
        rc = moco_err(MOCO_ENOMEM, "out of memory for the queue's norms (%d columns)", cfg->K);
        goto fail;
    }
    for (int d = 0; d < D; d++) {
        const float *row = mc->queue + (size_t)d * cfg->K;
        for (int j = 0; j < cfg->K; j++) ss[j] += (double)row[j] * row[j];
    }
    for (int j = 0; j < cfg->K; j++) ss[j] = (float)(1.0 / fmax(sqrt(ss[j]), 1e-12));
    for (int d = 0; d < D; d++) {
        float *row = mc->queue + (size_t)d * cfg->K;
        for (int j = 0; j < cfg->K; j++) row[j] *= (float)ss[j];
    }
    free(ss);
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
    free(mc->cbuf);
    free(mc);
    *pmc = NULL;
}

/* The comm's buffers: the all-gather of keys + loss + acc (a stride of
 * whole cache lines per rank), and the staging of the BN broadcast. */
static void comm_layout(moco *mc, moco_carve *c)
{
    mc->gsend = moco_carve_take(c, sizeof(float) * mc->gstride);
    mc->gall = moco_carve_take(c, sizeof(float) * mc->gstride * (size_t)mc->ranks);
    mc->bstage = moco_carve_take(c, mc->bbytes);
}

int moco_set_comm(moco *mc, const moco_comm *c)
{
    if (c && (c->size < 1 || c->rank < 0 || c->rank >= c->size))
        return moco_err(MOCO_EINVAL, "bad comm: rank %d of %d", c->rank, c->size);
    if (c && c->size > 1 && (!c->grad_ready || !c->grad_wait || !c->allgather || !c->bcast))
        return moco_err(MOCO_EINVAL, "bad comm: rank %d of %d lacks a function", c->rank, c->size);
    const int N = mc->cfg.enc.batch, D = mc->cfg.enc.dim, dirs = mc->cfg.symmetric ? 2 : 1, R = c ? c->size : 1;
    if (mc->cfg.K % ((int64_t)R * N * dirs))
        return moco_err(MOCO_EINVAL,
                        "queue length K=%d must be a multiple of ranks x batch x directions = %d x %d x %d = %lld "
                        "(every step enqueues the keys of all ranks)",
                        mc->cfg.K, R, N, dirs, (long long)R * N * dirs);
    free(mc->cbuf);
    mc->cbuf = NULL;
    mc->gsend = mc->gall = NULL;
    mc->bstage = NULL;
    memset(&mc->comm, 0, sizeof mc->comm);
    mc->ranks = 1, mc->rank = 0;
    if (!c || c->size == 1) return 0;
    mc->ranks = c->size, mc->rank = c->rank;
    mc->gstride = ((size_t)dirs * N * D + 2 + 15) & ~(size_t)15;
    mc->bbytes = sizeof(float) * (mc->q->nbuffers + mc->k->nbuffers) + sizeof(int64_t) * (mc->q->ncounts + mc->k->ncounts);
    moco_carve cv = {0};
    comm_layout(mc, &cv);
    if (!(cv.base = moco_carve_alloc(&cv))) {
        mc->ranks = 1, mc->rank = 0;
        return moco_err(MOCO_ENOMEM, "out of memory for the keys of %d ranks", R);
    }
    mc->cbuf = cv.base;
    cv.used = 0;
    comm_layout(mc, &cv);
    mc->comm = *c;
    return 0;
}

void moco_key_perm(const moco *mc, int64_t step, int dir, uint64_t *perm)
{
    moco_rng r;
    moco_rng_init(&r, mc->cfg.seed, 2, (uint64_t)step, (uint64_t)dir + 2 * (uint64_t)mc->rank);
    moco_rng_permutation(&r, perm, (uint64_t)mc->cfg.enc.batch);
}

double moco_step_macs(const moco *mc)
{
    double f = mc->q->macs;
    return (mc->cfg.symmetric ? 2 : 1) * (f + (2 * f - mc->q->macs_first) + f);
}

/* The backward half of infonce_forward_backward (loss.c), on the logits its
 * forward left (called with dq NULL, so that a non-finite loss stops the
 * step before any gradient): logits (N, 1+K) becomes d loss / d logits (softmax / N, 1/N
 * taken off the positive) and dq (N,D) += d loss / d q. k (N,D), queue (D,K). */
typedef struct { float *dq, *logits; const float *k; int N, D, L; float T; } ib_job;

#define IB_ROWS 8 /* rows per task */

static void infonce_backward_rows(void *ctx, int t, int th)
{
    (void)th;
    const ib_job *j = ctx;
    const int N = j->N, D = j->D, L = j->L;
    for (int n = t * IB_ROWS; n < N && n < (t + 1) * IB_ROWS; n++) {
        float *l = j->logits + (size_t)n * L;
        const double se = nn_row_expsum(l, l, L, nn_row_max(l, L));
        nn_infonce_grad_row(l, se, j->dq + (size_t)n * D, j->k + (size_t)n * D, N, D, L, j->T);
    }
}

static void infonce_backward(float *dq, float *logits, const float *k, const float *queue, int N, int D, int K, float T)
{
    const int L = K + 1;
    ib_job j = {dq, logits, k, N, D, L, T};
    par_for((N + IB_ROWS - 1) / IB_ROWS, infonce_backward_rows, &j); /* rows apart: the same on any threads */
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, N, D, K, 1.0f / T, logits + 1, L, queue, K, 1.0f, dq, D);
}

/* With a comm: every rank's keys, loss and accuracy to every rank; the
 * means over ranks into st; a non-finite loss anywhere stops all ranks. */
static int gather_keys(moco *mc, float loss, float acc, moco_stats *st)
{
    const int R = mc->ranks, nkd = (mc->cfg.symmetric ? 2 : 1) * mc->cfg.enc.batch * mc->cfg.enc.dim;
    memcpy(mc->gsend, mc->keys, sizeof(float) * (size_t)nkd);
    mc->gsend[nkd] = loss, mc->gsend[nkd + 1] = acc;
    int rc = mc->comm.allgather(mc->comm.ctx, mc->gsend, mc->gall, mc->gstride);
    if (rc) return rc;
    float ls = 0, as = 0;
    for (int r = 0; r < R; r++) { /* rank order: the same sums on every rank */
        const float *g = mc->gall + (size_t)r * mc->gstride;
        if (!isfinite(g[nkd]))
            return moco_err(MOCO_ENUMERIC, "loss is %g on rank %d of %d at step %lld: training stopped on every rank, weights not updated",
                            (double)g[nkd], r, R, (long long)mc->steps);
        ls += g[nkd], as += g[nkd + 1];
    }
    st->loss_all = ls / (float)R, st->acc_all = as / (float)R;
    return 0;
}

/* With a comm, after the step: rank 0's BN running statistics and
 * counters of both encoders on every rank. */
static int bcast_buffers(moco *mc)
{
    resnet *q = mc->q, *k = mc->k;
    char *p = mc->bstage;
    const size_t fq = sizeof(float) * q->nbuffers, fk = sizeof(float) * k->nbuffers;
    const size_t cq = sizeof(int64_t) * q->ncounts, ck = sizeof(int64_t) * k->ncounts;
    if (mc->rank == 0) {
        memcpy(p, q->buffers, fq), memcpy(p + fq, k->buffers, fk);
        memcpy(p + fq + fk, q->counts, cq), memcpy(p + fq + fk + cq, k->counts, ck);
    }
    int rc = mc->comm.bcast(mc->comm.ctx, p, mc->bbytes);
    if (rc || mc->rank == 0) return rc;
    memcpy(q->buffers, p, fq), memcpy(k->buffers, p + fq, fk);
    memcpy(q->counts, p + fq + fk, cq), memcpy(k->counts, p + fq + fk + cq, ck);
    return 0;
}

const char *const moco_prof_names[MOCO_PROF_N] = {"momentum_update", "key_forward", "query_forward", "loss",
                                                   "query_backward", "sgd", "enqueue"};
const char *const rn_prof_names[RN_PROF_N] = {"conv_forward", "bn_forward", "other_forward",
                                              "conv_backward", "bn_backward", "other_backward"};

/* the time since *t0 to part of mc->prof (when set); *t0 = now */
static void lap(moco *mc, int part, double *t0)
{
    if (!mc->prof) return;
    double t = moco_now_s();
    mc->prof[part] += t - *t0;
    *t0 = t;
}

int moco_step(moco *mc, const float *x1, const float *x2, const uint64_t *perm, float lr, moco_stats *st)
{
    const moco_cfg *c = &mc->cfg;
    const int N = c->enc.batch, D = c->enc.dim, K = c->K, dirs = c->symmetric ? 2 : 1, R = mc->ranks;
    resnet *q = mc->q, *k = mc->k;
    int rc = 0;
    memset(st, 0, sizeof *st);
    double t0 = mc->prof ? moco_now_s() : 0;
    /* 1. momentum update of the key encoder (parameters only) */
    const float m = c->m, m1 = 1.0f - c->m;
    for (size_t i = 0; i < q->nparams; i++) k->params[i] = k->params[i] * m + q->params[i] * m1;
    rn_zero_grad(q);
    lap(mc, MOCO_PROF_MOMENTUM, &t0);
    float total = 0, acc = 0;
    for (int dir = 0; dir < dirs; dir++) {
        const float *xq = dir ? x2 : x1, *xk = dir ? x1 : x2;
        const int last = dir == dirs - 1;
        /* 2a. keys, shuffled through f_k and back */
        const uint64_t *p = perm ? perm + (size_t)dir * N : mc->perm;
        if (!perm) moco_key_perm(mc, mc->steps, dir, mc->perm);
        const float *kraw = rn_forward(k, xk, p, 1);
        l2norm_forward(mc->kn, kraw, N, D);
        /* keys of x1 go first in the enqueue order: direction 1 (x_k = x1) fills slot 0 */
        float *kd = mc->keys + (size_t)(dirs == 2 ? (dir == 1 ? 0 : N) : 0) * D;
        for (int i = 0; i < N; i++) memcpy(kd + (size_t)p[i] * D, mc->kn + (size_t)i * D, sizeof(float) * (size_t)D);
        lap(mc, MOCO_PROF_KEY_FWD, &t0);
        /* 2b. queries, loss (logits kept for the accuracy), backward */
        const float *qraw = rn_forward(q, xq, NULL, 1);
        l2norm_forward(mc->qn, qraw, N, D);
        lap(mc, MOCO_PROF_QUERY_FWD, &t0);
        int right = 0;
        float l = infonce_forward_backward(NULL, mc->logits, &right, mc->qn, kd, mc->queue, N, D, K, c->T);
        acc += 100.0f * (float)right / (float)N / (float)dirs;
        total += l;
        st->loss = st->loss_all = total, st->acc = st->acc_all = acc;
        if (R == 1 && !isfinite(l))
            return moco_err(MOCO_ENUMERIC, "loss is %g at step %lld (direction %d): training stopped, weights not updated", (double)l,
                            (long long)mc->steps, dir + 1);
        /* with ranks, everyone learns of a non-finite loss before any gradient is exchanged */
        if (R > 1 && last && (rc = gather_keys(mc, total, acc, st))) return rc;
        if (!isfinite(total)) continue; /* (ranks, first direction) the gather stops it */
        memset(mc->dq, 0, sizeof(float) * (size_t)N * D);
        infonce_backward(mc->dq, mc->logits, kd, mc->queue, N, D, K, c->T);
        /* qraw is still in the arena: rn_forward(q) was the last forward */
        memset(mc->dqraw, 0, sizeof(float) * (size_t)N * D);
        l2norm_backward(mc->dqraw, mc->dq, qraw, N, D);
        lap(mc, MOCO_PROF_LOSS, &t0);
        if (R > 1 && last) { /* the last direction finishes the gradients: average them bucket by bucket */
            if ((rc = rn_backward_hooked(q, mc->dqraw, mc->bucket_floats, mc->comm.grad_ready, mc->comm.ctx)) ||
                (rc = mc->comm.grad_wait(mc->comm.ctx)))
                return rc;
        } else {
            rn_backward(q, mc->dqraw);
        }
        lap(mc, MOCO_PROF_QUERY_BWD, &t0);
    }
    /* 3. SGD with momentum and weight decay, as torch.optim.SGD */
    const float wd = c->weight_decay, mom = c->sgd_momentum;
    float *P = q->params, *G = q->grads, *B = q->momentum;
    for (size_t i = 0; i < q->nparams; i++) {
        float g = G[i] + wd * P[i];
        B[i] = mc->steps ? mom * B[i] + g : g;
        P[i] -= lr * B[i];
    }
    lap(mc, MOCO_PROF_SGD, &t0);
    /* 4. enqueue: queue[:, ptr + j] = key j, j over [direction][rank][pair]
     * (columns wrap at K: ptr may come from a checkpoint of another R) */
    for (int s = 0; s < dirs; s++)
        for (int r = 0; r < R; r++) {
            const float *src = (R > 1 ? mc->gall + (size_t)r * mc->gstride : mc->keys) + (size_t)s * N * D;
            for (int i = 0; i < N; i++) {
                size_t col = (size_t)((mc->ptr + ((int64_t)s * R + r) * N + i) % K);
                for (int d = 0; d < D; d++) mc->queue[(size_t)d * K + col] = src[(size_t)i * D + d];
            }
        }
    mc->ptr = (mc->ptr + (int64_t)R * N * dirs) % K;
    mc->steps++;
    if (R > 1 && (rc = bcast_buffers(mc))) return rc;
    if (R > 1 && mc->comm.step_done && (rc = mc->comm.step_done(mc->comm.ctx, mc))) return rc;
    lap(mc, MOCO_PROF_ENQUEUE, &t0);
    return 0;
}
