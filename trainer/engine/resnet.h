/* resnet.h: ResNet encoders as torchvision defines them, with a projection
 * head, built on the layers of nn.h.
 *
 * Architectures: resnet18, resnet34 (BasicBlock), resnet50 (Bottleneck,
 * stride on the 3x3 conv as torchvision), each with the 7x7/2 stem and a
 * 3x3/2 max-pool; resnet18-cifar and resnet50-cifar with a 3x3/1 stem and
 * no max-pool (the official MoCo CIFAR-10 demo). `width` is the base width
 * (64 in torchvision): layers have width, 2w, 4w, 8w planes. The head is
 * fc: Linear(features, dim), or with mlp: fc.0 Linear(features, features),
 * fc.1 ReLU, fc.2 Linear(features, dim). BN layers compute their batch
 * statistics over `bn_splits` interleaved sub-batches (n % S), exactly as
 * the demo's SplitBatchNorm does; 1 is plain BatchNorm2d.
 *
 * Memory: parameters, their gradients and momentum buffer, the BN buffers
 * and the activations are each one allocation, made by rn_new; nothing is
 * allocated by forward or backward. A key encoder can share the activation
 * arena of the query encoder (rn_new's `share`): the two never need their
 * activations at the same time in the MoCo step. A model without gradients
 * (the key encoder, evaluation) keeps nothing for a backward: its forward
 * cycles through a few buffers at the start of the arena, which stay in
 * cache (fwd_at; the same values bit for bit).
 *
 * Tensor names and shapes are those of torchvision's state_dict, in its
 * order ("conv1.weight", "bn1.running_mean", "bn1.num_batches_tracked",
 * "layer1.0.downsample.1.weight", "fc.weight" / "fc.0.weight", ...). */
#ifndef TRAINER_RESNET_H
#define TRAINER_RESNET_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/engine/nn.h"

typedef struct {
    const char *arch; /* resnet18 resnet34 resnet50 resnet18-cifar resnet50-cifar */
    int width;        /* base width, 64 in torchvision */
    int mlp;          /* MoCo v2 MLP head */
    int dim;          /* output features */
    int bn_splits;    /* >= 1, divides batch */
    int batch;        /* N the buffers are sized for */
    int size;         /* input height = width */
    int precision;    /* NN_FP32 (0, the default) or NN_BF16: convolutions and linear layers take bf16
                         operands and accumulate in fp32 (trainer/bf16.c); all else stays fp32 */
    int init;         /* RN_INIT_TORCHVISION (0, the default), RN_INIT_DEMO or RN_INIT_PYTORCH */
    int store;        /* bf16: RN_STORE_ALL (0, the default) keeps the activations resnet.c's plan() lists in
                       * bf16; RN_STORE_CONV only the conv outputs; RN_STORE_FP32 none (for tests) */
} rn_cfg;
enum { RN_STORE_ALL = 0, RN_STORE_CONV = 1, RN_STORE_FP32 = 2 };

/* Initialisations (BN is 1/0 and Linear layers PyTorch's default in all):
 * torchvision: every conv Kaiming-normal, fan_out, relu (torchvision's ResNet);
 * demo: torchvision's, then conv1 at PyTorch's Conv2d default, as the official
 *       CIFAR-10 demo, which replaces the stem after building the model;
 * pytorch: PyTorch's Conv2d default in every conv, U(-b, b) with b = 1/sqrt(fan_in)
 *       (kaiming_uniform, a = sqrt 5). */
enum { RN_INIT_TORCHVISION = 0, RN_INIT_DEMO = 1, RN_INIT_PYTORCH = 2 };
int rn_init_parse(const char *name); /* -1 when unknown */
const char *rn_init_name(int init);

enum { RN_PARAM, RN_BUFFER, RN_COUNT }; /* float param, float buffer, int64 counter */

typedef struct {
    char name[64];
    int kind;
    size_t off; /* into params, buffers or counts */
    size_t numel;
    int ndim;
    int64_t shape[4];
} rn_tensor;

typedef struct rn_op rn_op;
typedef struct rn_arena rn_arena;

typedef struct {
    rn_cfg cfg;
    int ntensors;
    rn_tensor *tensors;  /* state_dict order */
    size_t nparams, nbuffers, ncounts;
    float *params;       /* all trainable floats */
    float *grads;        /* same size (NULL without grads) */
    float *momentum;     /* SGD momentum buffer (NULL without grads) */
    float *buffers;      /* BN running mean / var */
    int64_t *counts;     /* BN num_batches_tracked */
    int nops;
    rn_op *ops;
    rn_arena *arena;
    int owns_arena;
    int features;        /* before the head */
    double macs;         /* multiply-adds of one forward of the batch (convs, linears) */
    double macs_first;   /* of the first conv (no input gradient is computed) */
    double *prof;        /* NULL, or RN_PROF_N sums of seconds that rn_forward and rn_backward add to */
    float **fwd_at;      /* a model without gradients: where its forward puts each activation (resnet.c
                          * plan_compact), or NULL: their places in the arena */
} resnet;

/* Where an encoder's passes go (resnet.prof): convolutions, batch norm (with
 * its residual add and ReLU), the rest (input copy, pooling, linear layers,
 * bf16 copies, gradient zeroing), forward and backward. */
enum { RN_PROF_CONV_FWD, RN_PROF_BN_FWD, RN_PROF_OTHER_FWD, RN_PROF_CONV_BWD, RN_PROF_BN_BWD, RN_PROF_OTHER_BWD, RN_PROF_N };

/* Build a model with parameters initialised as torchvision does (Kaiming
 * normal fan_out for convs, BN 1/0, Linear's default uniform) from stream
 * (seed, 1, tensor index). grads != 0 allocates gradients and the momentum
 * buffer. share != NULL: use share's activations (same cfg required).
 * Returns 0, MOCO_EINVAL (unknown arch, bad width/dim, batch not divisible
 * by bn_splits, size too small; NN_BF16 where nn_bf16_available() says
 * no) or MOCO_ENOMEM. */
int rn_new(const rn_cfg *cfg, uint64_t seed, int grads, resnet *share, resnet **out);
void rn_destroy(resnet **m);

/* Forward x (N,3,size,size), NCHW as PyTorch, row perm[i] of x as batch
 * row i when perm != NULL. train: batch statistics and running-average
 * updates; else running statistics. Returns the head output (N,dim),
 * valid until the next call on a model sharing the arena. */
const float *rn_forward(resnet *m, const float *x, const uint64_t *perm, int train);

/* After a train forward: add the gradients of dout (N,dim) to m->grads. */
void rn_backward(resnet *m, const float *dout);

/* rn_backward that reports gradients as they become final, so that their
 * communication overlaps the rest of backward (as DDP's buckets). A
 * parameter's gradient is final once the one op that uses it has run;
 * backward finishes them roughly from the end of m->params towards the
 * start. cb(ctx, m->grads, off, n) says m->grads[off, off+n) is final:
 * contiguous ranges of whole tensors, reported from the end towards 0,
 * together covering [0, nparams) exactly once, each at least `bucket`
 * floats except the last (a tensor larger than bucket is one range).
 * Between ops cb is also called with n == 0 (off = the start of the last
 * range): nothing new, a chance to progress communication. A non-zero
 * return from cb stops backward there (gradients incomplete) and is
 * returned; else 0. */
typedef int (*rn_grad_cb)(void *ctx, float *grads, size_t off, size_t n);
#define RN_BUCKET_FLOATS ((size_t)1 << 20)
int rn_backward_hooked(resnet *m, const float *dout, size_t bucket, rn_grad_cb cb, void *ctx);

void rn_zero_grad(resnet *m);

/* Tensor by state_dict name, or NULL; its data pointer (float or int64). */
const rn_tensor *rn_find(const resnet *m, const char *name);
void *rn_data(const resnet *m, const rn_tensor *t);
/* The gradient of a parameter tensor (NULL for buffers or without grads). */
float *rn_grad(const resnet *m, const rn_tensor *t);

/* Save / load every tensor of the state_dict as safetensors. Loading checks
 * every name, dtype and shape first (messages name the tensor) and changes
 * nothing unless all are right; tensors in the file that the model lacks
 * are an error too. */
int rn_save(const resnet *m, const char *path);
int rn_load(resnet *m, const char *path);

/* The backbone's features, the global-average-pool output (N, features),
 * of the last forward (valid until the next call on the arena): what the
 * linear-evaluation protocol classifies. */
const float *rn_pooled(const resnet *m);

/* The convolutions in execution order and the algorithms their passes run
 * on (tune.h), for explanations: i in [0, rn_conv_count). name is the
 * weight tensor's ("layer1.0.conv1.weight"); shape N, Ci, H, W, Co, k,
 * stride, pad; algo/ms of forward [0] and backward [1] (algo -1: no
 * backward, a model without gradients); bwd_pass TUNE_BWD or TUNE_BWD_W. */
typedef struct {
    const char *name;
    int shape[8];
    int algo[2], bwd_pass, measured[2];
    double ms[2][NN_ALGO_COUNT];
} rn_conv_info;
int rn_conv_count(const resnet *m);
void rn_conv_get(const resnet *m, int i, rn_conv_info *info);
/* The same of the linear layers (tune_linear): shape N, F, 1, 1, O, 1, 1,
 * 0; algo[0] covers the forward, and the backward too when the model has
 * gradients (ms[0] then times both); algo[1] is -1. */
int rn_linear_count(const resnet *m);
void rn_linear_get(const resnet *m, int i, rn_conv_info *info);

/* Bytes of the activation arena (for reports). */
size_t rn_arena_bytes(const resnet *m);

#endif
