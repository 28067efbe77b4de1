/* wino.h: 3x3 stride-1 pad-1 convolutions on our own Winograd kernels,
 * F(2x2, 3x3) and F(4x4, 3x3) (m = 2, 4: the output tile), in AVX2 + FMA
 * (so also on CPUs without AVX-512, where oneDNN has no Winograd), for the
 * engine's (C,N,H,W) activations. A chunk of n images is transposed to
 * NHWC with a border of zeros (nhwc.h); each (m+2)^2 input tile becomes
 * B'dB, each 3x3 filter GgG'; the (m+2)^2 products over the channels are
 * as many GEMMs (OpenBLAS, one thread per chunk); A'MA gives each m x m
 * output tile. 2.25x (m 2) or 4x (m 4) fewer multiply-adds than a direct
 * sum; the transforms round differently from a direct sum, m 4 more than
 * m 2 (tests/test_tune.c holds every kernel, these too, to 2e-5 of the
 * largest value against the plain references).
 *
 * The backward runs the data gradient as the same forward on the output
 * gradient with the flipped, transposed filters, and the weight gradient
 * as the forward's adjoint: dU = sum over tiles of (A dY A') x (B'xB),
 * dW = G' dU G.
 *
 * Needs H and W multiples of m, Ci and Co multiples of 8 (wino_ok), and on
 * x86-64 AVX2 and FMA (wino_cpu); other CPUs (Arm) run the transforms on
 * GCC's generic vectors. */
#ifndef MOCO_ENGINE_WINO_H
#define MOCO_ENGINE_WINO_H

#include <stddef.h>

/* 1 where this CPU runs the kernels: x86-64 with AVX2 and FMA (and not
 * capped below them: MOCO_CONV3=0), or a CPU of another kind */
int wino_cpu(void);
int wino_ok(int m, int Ci, int H, int W, int Co, int k, int stride, int pad);

/* Scratch floats one chunk of n images needs (per thread; without dU). */
size_t wino_chunk_floats(int m, int n, int H, int W, int Ci, int Co);
/* Floats of the transformed filters, and of dU: (m+2)^2 * Ci * Co. */
size_t wino_filter_floats(int m, int Ci, int Co);

/* U ((m+2)^2, in, out) = G g G' of w (Co,Ci,3,3): in = Ci, out = Co; flip:
 * the data gradient's filters, in = Co, out = Ci, each flipped. Runs on
 * the compute pool (par.h). */
void wino_filters(int m, float *U, const float *w, int Co, int Ci, int flip);

/* out (Co, N*H*W) images n0..n0+n = conv(inp (Ci, N*H*W)) with the filters
 * U (wino_filters, flip 0). */
void wino_forward(int m, float *out, const float *inp, const float *U, int N, int n0, int n, int H, int W, int Ci, int Co, float *work);

/* For images n0..n0+n of dout (Co, N*H*W): dinp (Ci, ...) += the
 * data gradient (Uf: wino_filters flip 1; dinp NULL: skipped), and dU
 * ((m+2)^2, Ci, Co) += the transformed weight gradient (dU NULL: skipped)
 * from inp (bf16 when half); wino_dweight then adds it to dw (Co,Ci,3,3). */
void wino_backward(int m, float *dinp, float *dU, const float *dout, const void *inp, int half, const float *Uf, int N,
                   int n0, int n, int H, int W, int Ci, int Co, float *work);
void wino_dweight(int m, float *dw, const float *dU, int Co, int Ci);

#endif
