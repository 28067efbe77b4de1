/* moco.h: the MoCo training step (He et al. 2020; the official code and
 * its CIFAR-10 demo), on two ResNet encoders of resnet.h.
 *
 * One step, exactly as the official code orders it:
 *   1. key encoder: theta_k = m theta_k + (1 - m) theta_q (parameters only;
 *      its BN running statistics come from its own forward passes);
 *   2. for (x_q, x_k) = (x1, x2) [and then (x2, x1) when symmetric]:
 *      q = normalize(f_q(x_q)); k = normalize(f_k(x_k[perm]))[perm^-1]
 *      (shuffle BN: the key batch is permuted before f_k and un-permuted
 *      after, with bn_splits sub-batches), logits = [q.k, q.queue] / T,
 *      cross-entropy with the positive at 0, backward through f_q only;
 *   3. SGD as torch.optim.SGD(momentum, weight_decay, dampening 0, no
 *      Nesterov) on every query parameter;
 *   4. the keys (k of x1, then k of x2 when symmetric) enter the FIFO queue
 *      (dim, K), which starts as L2-normalised Gaussian columns.
 * Loss: the sum over directions (the demo's loss_12 + loss_21).
 * A non-finite loss returns MOCO_ENUMERIC before step 3: the query weights,
 * their momentum and the queue are left unchanged (step 1 and the BN running
 * statistics have happened; training is meant to stop there).
 * No allocation happens inside moco_step.
 *
 * Data parallel (moco_set_comm, as PyTorch DDP with the official
 * main_moco.py): R processes ("ranks") each run the step on their own N
 * pairs with their own BN statistics (shuffle BN within the rank, on its
 * own permutation); the step then differs only in that
 *   - rank r draws its key permutations from (seed, 2, step, dir + 2r):
 *     rank 0 keeps the single-process stream;
 *   - after the last direction's forward, the keys and local losses of all
 *     ranks are all-gathered (a non-finite loss on any rank stops every
 *     rank with MOCO_ENUMERIC, before the gradients are exchanged);
 *   - the last direction's backward hands each finished bucket of
 *     gradients to the comm (comm->grad_ready), which averages it over the
 *     ranks while backward goes on; SGD waits for all (grad_wait). The
 *     average is the mean of the ranks' gradients of their local mean
 *     losses, i.e. the gradient of the mean loss over the R x N pairs;
 *   - every rank enqueues the keys of all ranks, direction-major: [x1-keys
 *     of ranks 0..R-1, then x2-keys of ranks 0..R-1], so the queue advances
 *     by R x N x dirs (K must be a multiple of it, as the official code
 *     asserts): 2 ranks at batch B enqueue what 1 process at 2B does;
 *   - after the step the BN running statistics and counters of both
 *     encoders are broadcast from rank 0 (DDP's broadcast_buffers).
 * So the whole state (weights, momentum, BN buffers, queue, pointer) is
 * bit-identical on every rank after every step, given a comm whose average
 * is bit-identical on every rank. The key encoder's momentum update needs
 * no communication. */
#ifndef TRAINER_MOCO_H
#define TRAINER_MOCO_H

#include <stdint.h>

#include "trainer/engine/resnet.h"

typedef struct {
    rn_cfg enc;     /* encoder; enc.batch is the batch size N */
    int K;          /* queue length, a multiple of N (2N when symmetric) */
    float m;        /* key encoder momentum, 0.99 in the demo, 0.999 official */
    float T;        /* temperature */
    int symmetric;
    float lr, sgd_momentum, weight_decay;
    uint64_t seed;  /* weights (seed,1,..), key permutations (seed,2,step,dir), queue (seed,3) */
} moco_cfg;

struct moco;

/* What moco_step needs from the processes it trains with (trainer/dist.h
 * implements it over MPI; the engine itself knows nothing of MPI). Every
 * function returns 0 or a MOCO_E* code with a message, and is called by
 * every rank in the same order (they are collective). */
typedef struct moco_comm {
    int rank, size; /* this process, and how many train together */
    void *ctx;
    /* grads[off, off+n) of the query encoder are final for this step: start
     * averaging them across ranks (non-blocking). n == 0: nothing new, a
     * chance to progress the averages already started. */
    int (*grad_ready)(void *ctx, float *grads, size_t off, size_t n);
    /* Wait for all started averages; after it, the ranges handed over hold
     * the mean over ranks, bit-identical on every rank. */
    int (*grad_wait)(void *ctx);
    /* all[r*n .. r*n+n) = rank r's local[0..n), in rank order. */
    int (*allgather)(void *ctx, const float *local, float *all, size_t n);
    /* buf[0..bytes) of rank 0 onto every rank. */
    int (*bcast)(void *ctx, void *buf, size_t bytes);
    /* Optional (NULL: none): called by moco_step at the end of every
     * successful step, e.g. to check that the ranks still agree. */
    int (*step_done)(void *ctx, const struct moco *mc);
} moco_comm;

/* What one step reports. Without a comm, loss_all == loss and acc_all == acc. */
typedef struct {
    float loss;     /* this rank's loss: the mean over its N pairs, summed over directions */
    float acc;      /* contrastive top-1 %: queries whose positive logit is >= every
                     * negative one, over N, averaged over directions */
    float loss_all; /* mean of loss over the ranks (added in rank order; the same on every rank) */
    float acc_all;  /* mean of acc over the ranks */
} moco_stats;

typedef struct moco {
    moco_cfg cfg;
    resnet *q, *k;
    float *queue;     /* (dim, K) */
    int64_t ptr;      /* next queue column */
    int64_t steps;    /* steps done */
    void *buf;        /* one allocation, carved below (trainer/carve.h) */
    float *qn, *kn, *keys, *dq, *dqraw, *logits;
    uint64_t *perm;   /* (N) */
    /* data parallel (moco_set_comm); ranks == 1 and rank == 0 without */
    int ranks, rank;
    moco_comm comm;
    size_t bucket_floats; /* gradient bucket size, RN_BUCKET_FLOATS unless changed */
    void *cbuf;           /* one allocation for the comm, carved below */
    float *gsend, *gall;  /* (gstride), (ranks, gstride): keys, loss, acc per rank */
    size_t gstride;
    void *bstage;         /* BN buffers and counters of both encoders, for the broadcast */
    size_t bbytes;
    double *prof;         /* NULL, or MOCO_PROF_N sums of seconds that moco_step adds to */
} moco;

/* Where a step goes (moco.prof; the encoders' own parts: resnet.prof):
 * the key encoder's momentum update, the key and query forwards (with
 * their L2 normalisation and the key shuffle), the InfoNCE loss and its
 * gradient (with the key gather under ranks), the query backward (with the
 * gradient average under ranks), SGD, and the enqueue with the rest (the
 * BN broadcast under ranks). */
enum { MOCO_PROF_MOMENTUM, MOCO_PROF_KEY_FWD, MOCO_PROF_QUERY_FWD, MOCO_PROF_LOSS, MOCO_PROF_QUERY_BWD, MOCO_PROF_SGD, MOCO_PROF_ENQUEUE,
       MOCO_PROF_N };
/* the names of the MOCO_PROF_ and RN_PROF_ parts, for reports */
extern const char *const moco_prof_names[MOCO_PROF_N];
extern const char *const rn_prof_names[RN_PROF_N];

/* Build both encoders (the key encoder a copy of the query encoder) and the
 * queue. Returns 0, MOCO_EINVAL with a message, or MOCO_ENOMEM. */
int moco_new(const moco_cfg *cfg, moco **out);
void moco_destroy(moco **mc);

/* Train together with other processes through c (copied; c->ctx must
 * outlive mc), or alone again with c == NULL (a comm of size 1 is the same
 * as NULL). Allocates the comm's buffers here, none in moco_step. Returns 0,
 * or MOCO_EINVAL when K is not a multiple of ranks x N x directions or c
 * is malformed (both with a message), or MOCO_ENOMEM. */
int moco_set_comm(moco *mc, const moco_comm *c);

/* One step on x1, x2 (N,3,size,size) NCHW: this rank's pairs. perm: the
 * key permutations, N entries per direction (2N when symmetric), or NULL
 * to draw them from the seeded stream (moco_key_perm). lr: this step's
 * learning rate. *st: the step's loss and contrastive accuracy (set also
 * on failure; a non-finite loss shows there). Returns 0, MOCO_ENUMERIC (see
 * above; with a comm on every rank, naming the rank), or an error of the
 * comm. */
int moco_step(moco *mc, const float *x1, const float *x2, const uint64_t *perm, float lr, moco_stats *st);

/* The key permutation (N entries) that moco_step draws for this rank at
 * step `step`, direction dir (0: keys from x2; 1: keys from x1). */
void moco_key_perm(const moco *mc, int64_t step, int dir, uint64_t *perm);

/* Multiply-adds of one step (forward, backward of f_q and forward of f_k,
 * per direction); FLOPs are twice this. */
double moco_step_macs(const moco *mc);

#endif
