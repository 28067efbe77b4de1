/* nhwc.h: the AVX2 transposes between the engine's (C,N,HW) activations and
 * the NHWC chunks oneDNN's fp32 convolutions take, for CPUs without AVX-512
 * (bf16.c has the AVX-512 ones, and the blocked layout, beside them).
 *
 * nhwc_pack_f32_avx2: dst (P, C) fp32 = src (C, ldc), P values per row (src
 * fp32, or bf16 when half: widened exactly), then zero rows up to Ppad.
 * nhwc_unpack_avx2: dst (C, ldc), P values per row, = (add: +=) src (P, C).
 * Both need a CPU with AVX2 and FMA. */
#ifndef MOCO_ENGINE_NHWC_H
#define MOCO_ENGINE_NHWC_H

#include <stddef.h>
#include <stdint.h>

void nhwc_pack_f32_avx2(float *dst, const void *src, int half, int C, size_t ldc, size_t P, size_t Ppad);
void nhwc_unpack_avx2(float *dst, const float *src, int C, size_t ldc, size_t P, int add);

#endif
