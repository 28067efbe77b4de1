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
 * No allocation happens inside moco_step. */
#ifndef TRAINER_MOCO_H
#define TRAINER_MOCO_H

#include <stdint.h>

#include "trainer/resnet.h"

typedef struct {
    rn_cfg enc;     /* encoder; enc.batch is the batch size N */
    int K;          /* queue length, a multiple of N (2N when symmetric) */
    float m;        /* key encoder momentum, 0.99 in the demo, 0.999 official */
    float T;        /* temperature */
    int symmetric;
    float lr, sgd_momentum, weight_decay;
    uint64_t seed;  /* weights (seed,1,..), key permutations (seed,2,step,dir), queue (seed,3) */
} moco_cfg;

typedef struct {
    moco_cfg cfg;
    resnet *q, *k;
    float *queue;     /* (dim, K) */
    int64_t ptr;      /* next queue column */
    int64_t steps;    /* steps done */
    float *buf;       /* one allocation, carved below */
    float *qn, *kn, *keys, *dq, *dqraw, *logits;
    uint64_t *perm;   /* (N) */
} moco;

/* Build both encoders (the key encoder a copy of the query encoder) and the
 * queue. Returns 0, MOCO_EINVAL with a message, or MOCO_ENOMEM. */
int moco_new(const moco_cfg *cfg, moco **out);
void moco_destroy(moco **mc);

/* One step on x1, x2 (N,3,size,size) NCHW. perm: the key permutations,
 * N entries per direction (2N when symmetric), or NULL to draw them from
 * the seeded stream. lr: this step's learning rate. *loss: the step's loss.
 * Returns 0 or MOCO_ENUMERIC (see above). */
int moco_step(moco *mc, const float *x1, const float *x2, const uint64_t *perm, float lr, float *loss);

/* Multiply-adds of one step (forward, backward of f_q and forward of f_k,
 * per direction); FLOPs are twice this. */
double moco_step_macs(const moco *mc);

#endif
