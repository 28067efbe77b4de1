/* nn.h: the layers of the trainer, as llm.c writes them: free functions
 * x_forward(out, ..., inp, ..., dims) and x_backward(dinp, dweight, ...,
 * dout, ..., dims). Backward ADDS into every gradient it is given (dinp
 * included), so zeroing is one memset; a NULL gradient pointer is skipped.
 * Where the caller asks (nn_conv.dinp_set, nn_bn.dx_set/dres_set) and the
 * kernel can, the input gradients are written instead, which spares the
 * first writer of a gradient its memset and its read.
 *
 * Layout: image activations are channel-major over the batch, (C,N,H,W):
 * channel c of the whole batch is one contiguous run of N*H*W floats, so a
 * convolution over a chunk of images is one GEMM with the weights and BN
 * statistics are single passes. Vectors are (N,F) row-major. PyTorch's
 * (N,C,H,W) converts with nn_nchw_to_cnhw / nn_cnhw_to_nchw.
 * Letters: N batch, C/Ci/Co channels, H,W input and Ho,Wo output size,
 * k kernel size, F features, O outputs, S batch-norm splits.
 *
 * Each fast kernel has a plain reference beside it (suffix _ref), in the
 * NCHW-free (C,N,H,W) layout too, which the tests compare it with. */
#ifndef TRAINER_NN_H
#define TRAINER_NN_H

#include <stddef.h>
#include <stdint.h>

void nn_nchw_to_cnhw(float *out, const float *inp, int N, int C, int HW);
void nn_cnhw_to_nchw(float *out, const float *inp, int N, int C, int HW);

/* Precision of the convolutions and linear layers: fp32, or bf16 operands
 * with fp32 accumulation (trainer/bf16.c, on oneDNN). */
enum { NN_FP32 = 0, NN_BF16 = 1 };
typedef struct nn_lowp nn_lowp; /* the oneDNN state of one bf16 layer */

/* Activations kept in bf16 for backward (resnet.c under bf16): dst = src
 * rounded to nearest even (NaN stays NaN), and back (exact). */
void nn_to_bf16(uint16_t *dst, const float *src, size_t n);
void nn_from_bf16(float *dst, const uint16_t *src, size_t n);

/* ---- 2-D convolution, no bias ---- */
typedef struct {
    int N, Ci, H, W, Co, k, stride, pad, Ho, Wo;
    int chunk;       /* images per lowered GEMM (set by nn_conv_init) */
    int nthreads;    /* par_threads() at nn_conv_init: chunks run side by side */
    size_t work_per; /* scratch floats per thread */
    int direct;      /* 3x3 stride 1 pad 1 on the direct kernels (conv3.h): their SIMD level, else 0 */
    int lanes;       /* 3x3 pad 1 on the image-lanes kernels (conv3.h, AVX-512) */
    size_t ld;       /* direct: floats per channel of a chunk in the padded layout */
    nn_lowp *lp;      /* bf16 (nn_conv_bf16), else NULL: conv2d_* run in bf16 when set */
    int in_half;      /* bf16 precision only: conv2d_backward's inp is kept in bf16 (uint16_t in the float buffer);
                       * the oneDNN kernels and the 1x1 stride-1 GEMM read it so */
    int dinp_set;     /* conv2d_backward writes dinp instead of adding into it (the caller's first
                       * writer of that gradient; only where nn_conv_sets_dinp) */
    int wino;         /* 3x3 stride 1 pad 1 on our Winograd kernels (wino.h): their output tile, 2 or 4; else 0 */
} nn_conv;

/* Fill Ho, Wo, chunk and the threading; work_floats is the im2col budget
 * per thread (the chunk is the most images whose im2col fits, at least 1,
 * at most N / threads). Returns the scratch floats the calls need:
 * per thread, the chunk's im2col and a private weight gradient.
 * 3x3 stride-1 pad-1 convolutions whose channel counts are multiples of 8
 * (4 with AVX2 only) run on the direct kernels of conv3.h instead, with
 * chunks of padded images sized for the L2 cache (MOCO_CONV3=0 turns them
 * off); the scratch then holds the padded chunks and the rearranged weights.
 * So does a stem with fewer input channels (RGB), whose input gradient then
 * runs in plain loops (slow; training never asks for it).
 * With AVX-512, 3x3 pad-1 convolutions of stride 2, and of stride 1 on
 * planes of 8x8 or less, run on the image-lanes kernels (channels multiples
 * of 4, output width a multiple of 4; chunks of 16 images). */
size_t nn_conv_init(nn_conv *d, int N, int Ci, int H, int W, int Co, int k, int stride, int pad, size_t work_floats);
/* The algorithms of a convolution, chosen per layer and pass by
 * measurement (tune.h) or by nn_conv_init's rule (AUTO): the GEMM lowering
 * (im2col + OpenBLAS; 1x1 stride 1 straight on the rows), the direct 3x3
 * kernels (at each SIMD level the CPU has), the image-lanes kernels,
 * bf16 on oneDNN (nn_conv_bf16), and fp32 on oneDNN (nn_conv_onednn:
 * convolutions of kernel size > 1 on AVX-512 CPUs; oneDNN's fp32 kernels,
 * the ones PyTorch runs, beat ours on some CPUs). */
enum { NN_ALGO_AUTO = 0, NN_ALGO_GEMM, NN_ALGO_DIRECT, NN_ALGO_DIRECT_AVX2, NN_ALGO_LANES, NN_ALGO_BF16, NN_ALGO_ONEDNN,
       NN_ALGO_WINO, NN_ALGO_OWN_WINO, NN_ALGO_OWN_WINO4, NN_ALGO_COUNT };
/* "auto" "gemm" "direct" "direct-avx2" "lanes" "bf16" "onednn" "onednn-wino" "wino" "wino4".
 * wino, wino4: our own Winograd F(2x2, 3x3) and F(4x4, 3x3) in AVX2
 * (wino.h): 3x3 stride-1 pad-1 convolutions of planes whose sides are
 * multiples of 2 (4) and channel counts multiples of 8, on any CPU with
 * AVX2 and FMA (where oneDNN has no Winograd of its own).
 * onednn-wino: fp32 on oneDNN's Winograd F(4x4, 3x3) (nn_conv_onednn_wino),
 * 3x3 stride-1 pad-1 convolutions with channel counts multiples of 16, on
 * an AVX-512 CPU (nn_onednn_wino_available); it rounds differently from a direct sum (the transforms:
 * 0.6-1.2e-6 of the largest output in tests/test_tune.c, against 0.1-0.6e-6
 * for the direct sums; the test holds every kernel to 2e-5). direct runs the
 * direct kernels at this CPU's best level (conv3_simd); direct-avx2, a
 * candidate only where that is AVX-512, runs their AVX2 build, which a
 * CPU with AVX-512 may still run faster (narrower vectors, lower clocks). */
const char *nn_algo_name(int algo);
/* Whether conv2d_backward on d's planned algorithm honours d->dinp_set
 * (the oneDNN convolutions); the others always add. */
int nn_conv_sets_dinp(const nn_conv *d);
/* Whether algo can run this shape on this CPU and build. */
int nn_conv_algo_ok(int algo, int Ci, int H, int W, int Co, int k, int stride, int pad);
/* The rule without measurement (NN_ALGO_AUTO): lanes, else direct, else GEMM. */
int nn_conv_rule(int Ci, int H, int W, int Co, int k, int stride, int pad);
/* nn_conv_init with the algorithm given (NN_ALGO_BF16: then nn_conv_bf16);
 * *work_floats is the scratch its calls need. d must hold no bf16 state
 * (nn_conv_free first). Returns 0, or MOCO_EINVAL when algo cannot run it,
 * or nn_conv_bf16's error. */
int nn_conv_plan(nn_conv *d, int N, int Ci, int H, int W, int Co, int k, int stride, int pad, int algo, size_t budget,
                 size_t *work_floats);
/* Multiply-adds of one forward pass. */
double nn_conv_macs(const nn_conv *d);

/* out (Co,N,Ho,Wo) = conv(inp (Ci,N,H,W), w (Co,Ci,k,k)); work as sized above */
void conv2d_forward(float *out, const float *inp, const float *w, const nn_conv *d, float *work);
/* dinp (Ci,N,H,W) += ..., dw (Co,Ci,k,k) += ... from dout (Co,N,Ho,Wo) */
void conv2d_backward(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d, float *work);
/* bf16 mixed precision (trainer/bf16.c). nn_bf16_available: 0, or
 * MOCO_EINVAL with a message saying why not (built without oneDNN, or no
 * AVX512_BF16 in this CPU; MOCO_BF16_EMULATE=1, a test knob, allows
 * oneDNN's emulation on an AVX-512 CPU without it, and nn_bf16_emulated()
 * is then 1). nn_conv_bf16, after nn_conv_init: make the
 * oneDNN primitives of this convolution, so that conv2d_forward and
 * conv2d_backward take bf16 operands and accumulate in fp32 (same buffers,
 * same add-into semantics); it sets the chunking and returns in
 * *work_floats the scratch the calls then need (instead of nn_conv_init's).
 * nn_conv_free releases them (nn_conv_init would forget them). */
int nn_bf16_available(void);
int nn_bf16_emulated(void);
int nn_conv_bf16(nn_conv *d, size_t *work_floats);
/* The same on oneDNN in fp32 (operands and sums in fp32, as the other fp32
 * kernels). nn_onednn_available: 0, or MOCO_EINVAL and why not (built
 * without oneDNN, no AVX2 and FMA, or MOCO_CONV3=0). The transposes around
 * them run in AVX-512, or in AVX2 (nhwc.h) on a CPU without it or under
 * MOCO_CONV3=1. */
int nn_onednn_available(void);
int nn_conv_onednn(nn_conv *d, size_t *work_floats);
/* Whether oneDNN's Winograd kernels can run here: 0, or MOCO_EINVAL and why
 * not (nn_onednn_available's reasons, or no AVX-512: its nChw16c layout has
 * AVX-512 transposes only; MOCO_CONV3=1 caps them at AVX2). */
int nn_onednn_wino_available(void);
/* The same on oneDNN's Winograd algorithm (its blocked nChw16c layout:
 * the chunks are transposed into it instead of NHWC; AVX-512 only). */
int nn_conv_onednn_wino(nn_conv *d, size_t *work_floats);
void nn_conv_free(nn_conv *d);
void nn_lowp_free(nn_lowp **lp);
/* x rounded to bf16 in place (round to nearest even; what the bf16 layers
 * do to their operands). Only after nn_bf16_available() == 0. */
void nn_bf16_round(float *x, size_t n);
/* the bf16 halves of conv2d_forward / conv2d_backward (they dispatch here) */
void conv2d_forward_bf16(float *out, const float *inp, const float *w, const nn_conv *d, float *work);
void conv2d_backward_bf16(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d, float *work);
void conv2d_forward_ref(float *out, const float *inp, const float *w, const nn_conv *d);
void conv2d_backward_ref(float *dinp, float *dw, const float *dout, const float *inp, const float *w, const nn_conv *d);

/* ---- batch normalisation, fused with an optional residual add and ReLU ----
 * train: y = relu?( (x - mean_s) * invstd_s * gamma + beta + res? ) with the
 * statistics of split s = {n : n % S == s} (PyTorch's SplitBatchNorm view),
 * biased variance, eps; running_mean/var (C) updated with momentum as
 * PyTorch does, unbiased variance, averaged over the splits.
 * mean/invstd (S,C) are saved for backward.
 * eval (train == 0): running statistics are used and not changed. */
typedef struct {
    int N, C, HW, S;
    float eps, momentum;
    int dx_set, dres_set; /* bn_backward* write dx, dres instead of adding into them (0: add) */
} nn_bn;

/* y,x,res (C,N,HW); gamma,beta,rmean,rvar (C); mean,invstd (S,C). res may be NULL. */
void bn_forward(float *y, float *mean, float *invstd, float *rmean, float *rvar, const float *x, const float *res,
                const float *gamma, const float *beta, int relu, int train, const nn_bn *d);
/* The same, also writing bf16 copies (nn_to_bf16, bit for bit) of x
 * centred by its split's mean (x - mean, in fp32, then rounded) into xh
 * and of y into yh (either may be NULL) while each run is in cache: the
 * kept activations of bf16 training, without a pass of their own. */
void bn_forward_keep(float *y, uint16_t *yh, float *mean, float *invstd, float *rmean, float *rvar, const float *x, uint16_t *xh,
                     const float *res, const float *gamma, const float *beta, int relu, int train, const nn_bn *d);
/* dout (C,N,HW) is the gradient of y (it is overwritten: the ReLU mask is
 * applied in place); dx, dres (may be NULL) (C,N,HW), dgamma, dbeta (C) += ...
 * (dx, dres: = when d->dx_set, d->dres_set)
 * y is the forward output (for the mask), x the input. Train mode only. */
void bn_backward(float *dx, float *dres, float *dgamma, float *dbeta, float *dout, const float *y, const float *x,
                 const float *mean, const float *invstd, const float *gamma, int relu, const nn_bn *d);
/* bn_backward with x kept in bf16 (xh, centred as bn_forward_keep writes
 * it, same layout; each channel is restored into xtmp, N*HW floats per
 * compute thread, par.h) and/or the
 * output y kept in bf16 (yh: only its sign is read, for the ReLU mask);
 * a NULL xh or yh reads x or y. */
void bn_backward_h(float *dx, float *dres, float *dgamma, float *dbeta, float *dout, const float *y, const uint16_t *yh,
                   const float *x, const uint16_t *xh, float *xtmp, const float *mean, const float *invstd, const float *gamma,
                   int relu, const nn_bn *d);
/* Unfused references: y = bn(x) (no add, no ReLU) */
void bn_forward_ref(float *y, float *mean, float *invstd, float *rmean, float *rvar, const float *x, const float *gamma,
                    const float *beta, int train, const nn_bn *d);
void bn_backward_ref(float *dx, float *dgamma, float *dbeta, const float *dout, const float *x, const float *mean,
                     const float *invstd, const float *gamma, const nn_bn *d);

/* ---- element-wise ---- n elements */
void relu_forward(float *out, const float *inp, size_t n);
void relu_backward(float *dinp, const float *dout, const float *out, size_t n);
void add_forward(float *out, const float *a, const float *b, size_t n);
void add_backward(float *da, float *db, const float *dout, size_t n);

/* ---- max-pool (k, stride, pad; PyTorch's first-max tie rule) ---- */
typedef struct { int N, C, H, W, k, stride, pad, Ho, Wo; } nn_pool;
void nn_pool_init(nn_pool *d, int N, int C, int H, int W, int k, int stride, int pad);
/* out (C,N,Ho,Wo), inp (C,N,H,W) */
void maxpool_forward(float *out, const float *inp, const nn_pool *d);
void maxpool_backward(float *dinp, const float *dout, const float *inp, const nn_pool *d);

/* ---- global average pool: out (N,C) = mean over HW of inp (C,N,HW) ---- */
void avgpool_forward(float *out, const float *inp, int N, int C, int HW);
void avgpool_backward(float *dinp, const float *dout, int N, int C, int HW);

/* ---- fully connected: out (N,O) = inp (N,F) w^T + b; w (O,F), b (O) ---- */
void linear_forward(float *out, const float *inp, const float *w, const float *b, int N, int F, int O);
void linear_backward(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N, int F, int O);
/* bf16: nn_linear_bf16 makes the state of one (N,F) -> (N,O) layer and
 * returns the scratch floats its calls need; forward keeps the bf16 copy of
 * w in the state for the backward that follows it. */
int nn_linear_bf16(nn_lowp **lp, int N, int F, int O, size_t *work_floats);
void linear_forward_bf16(float *out, const float *inp, const float *w, const float *b, const nn_lowp *lp, float *work);
void linear_backward_bf16(float *dinp, float *dw, float *db, const float *dout, const float *inp, const nn_lowp *lp, float *work);
void linear_forward_ref(float *out, const float *inp, const float *w, const float *b, int N, int F, int O);
void linear_backward_ref(float *dinp, float *dw, float *db, const float *dout, const float *inp, const float *w, int N, int F, int O);

/* ---- L2 normalisation of rows: out (N,F) = inp / max(|inp|, 1e-12) ---- */
void l2norm_forward(float *out, const float *inp, int N, int F);
void l2norm_backward(float *dinp, const float *dout, const float *inp, int N, int F);

/* ---- rows of a softmax: the largest of l[0..n) (NaNs skipped; -inf when
 * n is 0), and the sum of exp((double)l[i] - mx), with e != NULL also
 * e[i] = (float) each term (e may be l). Vectorised on glibc's libmvec
 * where the CPU has AVX-512 or AVX2 (its exp within 4 ulp, as the scalar
 * exp's 1); the sum's order is fixed per CPU path, not per thread count. */
float nn_row_max(const float *l, int n);
double nn_row_expsum(float *e, const float *l, int n, float mx);
/* One row of InfoNCE's backward: e (L) holds the row's exp terms, se their
 * sum; e becomes d loss / d logits of the mean over N rows (e / (se N),
 * 1/N taken off the positive at 0), and dq (D) += its positive term's
 * share, e[0] / T * k (D). The forward-backward here and moco.c's backward
 * half both end a row with it. */
void nn_infonce_grad_row(float *e, double se, float *dq, const float *k, int N, int D, int L, float T);

/* ---- InfoNCE: logits (N,1+K) = [q.k, q.queue] / T, cross-entropy with the
 * positive at 0, mean over N. q,k (N,D); queue (D,K); logits is scratch
 * (N,1+K). Returns the loss; with dq != NULL also dq (N,D) += dloss/dq;
 * with right != NULL, *right = the rows whose positive logit is >= every
 * negative one (the contrastive top-1 accuracy's count). */
float infonce_forward_backward(float *dq, float *logits, int *right, const float *q, const float *k, const float *queue, int N,
                               int D, int K, float T);

#endif
