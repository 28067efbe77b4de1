/* conv3.h: direct kernels for 3x3 stride-1 pad-1 convolutions (trainer
 * internal; nn.c uses them, nn_ref.c's conv2d_*_ref is their reference).
 *
 * The padded layout: a chunk of n images of one channel is n zero-bordered
 * planes of P = (H+2)*(W+2) floats back to back, then zeros up to the row
 * stride ld (conv3_ld). In it, output (h,w) of image j sits at grid position
 * q = j*P + h*(W+2) + w, and its input tap (kh,kw) at q + kh*(W+2) + kw: a
 * constant offset per tap, so the convolution is 9 shifted products over
 * contiguous runs of q, computed in registers without an im2col. Grid
 * positions outside the images (w >= W, h >= H) are computed and dropped.
 * The data gradient is the same kernel on the padded output gradient with
 * the flipped, transposed weights; the weight gradient is 9 shifted dot
 * products over the grid (padding positions of the gradient are zero). */
#ifndef TRAINER_CONV3_H
#define TRAINER_CONV3_H

#include <stddef.h>

/* Instruction sets of the kernels: 0 none (use the GEMM lowering), 1 AVX2 +
 * FMA, 2 AVX-512F. conv3_simd() is what this CPU has, lowered by
 * conv3_set_simd (tests, benchmarks) or MOCO_CONV3=0|1|2 in the environment. */
int conv3_simd(void);
/* 1 when conv3_simd() is below what this CPU has (MOCO_CONV3 or conv3_set_simd
 * capped it): the wisdom keys its build by the level then (tune.c). */
int conv3_simd_capped(void);
void conv3_set_simd(int level);

/* Floats per channel row of the padded layout of n images of H x W. */
size_t conv3_ld(int n, int H, int W);

/* dst (C, ld): the padded layout of images n0..n0+n of src (C,N,H,W). */
void conv3_pad(float *dst, size_t ld, const float *src, int C, int N, int n0, int n, int H, int W);
/* dst (C,N,H,W) images n0.. = (add: +=) the valid positions of src (C, ld). */
void conv3_unpad(float *dst, const float *src, size_t ld, int C, int N, int n0, int n, int H, int W, int add);

/* Weights w (Co,Ci,3,3) rearranged for the kernels: fwd (Ci,9,Co); bwd
 * (Co,9,Ci), flipped (the data gradient's weights) when flip. */
void conv3_weights_fwd(float *wr, const float *w, int Co, int Ci);
void conv3_weights_bwd(float *wr, const float *w, int Co, int Ci, int flip);

/* out (Cout, ld) grid positions 0..n*P: out[co][q] = sum over ci, t of
 * wr[ci][t][co] * in[ci][q + off(t)]; in (Cin, ld) padded. Cout % 8 == 0. */
void conv3_forward(int simd, float *out, const float *in, const float *wr, int Cin, int Cout, size_t ld, int n, int H, int W);
/* dw (Co,Ci,3,3) += sum over the grid of dy[co][q] * x[ci][q + off(t)];
 * dy, x (C, ld) padded. Ci % 4 == 0, Co % 4 == 0. */
void conv3_dweight(int simd, float *dw, const float *dy, const float *x, int Co, int Ci, size_t ld, int n, int H, int W);

/* ---- the image-lanes layout (AVX-512 only) ----
 * For small planes and stride 2: 16 images sit in the 16 lanes of a vector.
 * A chunk of n images of one channel is ceil(n/16) groups of Hs x Ws
 * positions of 16 floats (lanes past n are zero); the plane has a border of
 * p zeros (Hs = H + 2p). Every tap of every output position is then one
 * aligned vector, for stride 1 or 2, with no grid positions wasted. */

/* Floats per channel of n images in the lanes layout of Hs x Ws planes. */
size_t conv3l_ld(int n, int Hs, int Ws);
/* dst (C, ld) = images n0..n0+n of src (C,N,H,W) in the lanes layout, border p. */
void conv3l_pack(float *dst, size_t ld, const float *src, int C, int N, int n0, int n, int H, int W, int p);
/* dst (C,N,H,W) images n0.. = (add: +=) the interior of src (C, ld), border p. */
void conv3l_unpack(float *dst, const float *src, size_t ld, int C, int N, int n0, int n, int H, int W, int p, int add);
/* out (Cout, ldo) unpadded Ho x Wo: out[co][h,w] = sum over ci, kh, kw of
 * wr[ci][kh*3+kw][co] * in[ci][s*h+kh, s*w+kw]; in (Cin, ldi) with border 1
 * (Hp x Wp); G groups; Cout % 4 == 0, Wo % 4 == 0. */
void conv3l_forward(float *out, size_t ldo, const float *in, size_t ldi, const float *wr, int Cin, int Cout, int G, int Ho,
                    int Wo, int Hp, int Wp, int s);
/* dw (Co,Ci,3,3) += sum of dy[co][h,w] * x[ci][s*h+kh, s*w+kw]; dy (Co, ldy)
 * Ho x Wo with border pd (0 or 1), x (Ci, ldx) border 1. Co % 4 == 0,
 * Ci % 4 == 0. */
void conv3l_dweight(float *dw, const float *dy, size_t ldy, const float *x, size_t ldx, int Co, int Ci, int G, int Ho, int Wo,
                    int Hp, int Wp, int s, int pd);
/* dx (Ci, ldx) border 1 (zeroed by the caller) += at [s*h+kh, s*w+kw] the
 * sum over co of wb[co][kh*3+kw][ci] * dy[co][h,w] (wb: conv3_weights_bwd
 * unflipped); dy (Co, ldy) unpadded. Ci % 4 == 0, Wo % 4 == 0. */
void conv3l_dinput(float *dx, size_t ldx, const float *dy, size_t ldy, const float *wb, int Co, int Ci, int G, int Ho, int Wo,
                   int Hp, int Wp, int s);

#endif
