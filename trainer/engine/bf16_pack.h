/* bf16_pack.h: private to trainer/engine (bf16.c): the conversions to
 * bf16 and the layout transposes of a convolution chunk, in AVX-512 (only
 * once the CPU has been checked: nn_bf16_available, nn_onednn_available).
 * Built with oneDNN only (MOCO_HAVE_DNNL). */
#ifndef MOCO_ENGINE_BF16_PACK_H
#define MOCO_ENGINE_BF16_PACK_H

#include <stddef.h>
#include <stdint.h>

/* dst[i] = src[i] rounded to bf16 (nearest even; emu: the integer form of
 * vcvtneps2bf16's rule, for CPUs without AVX512_BF16) */
void bf16_convert(uint16_t *dst, const float *src, size_t n, int emu);
/* x[i] = x[i] rounded to bf16, kept as fp32 */
void bf16_round(float *x, size_t n, int emu);

/* what bf16_pack writes */
typedef enum { BF16_TO_BF16, BF16_TO_BF16_EMU, BF16_TO_F32 } bf16_pack_to;
/* dst (P, C) = src (C, ldc) fp32 (or bf16: half), P values per row, then
 * zero rows up to Ppad; bhw > 0: dst is nChw16c (bhw positions per plane,
 * C a multiple of 16) */
void bf16_pack(void *dst, const void *src, int half, int C, size_t ldc, size_t P, size_t Ppad, size_t bhw, bf16_pack_to to);
/* dst (C, ldc) fp32, P values per row, = (add: +=) src (P, C) fp32 (bhw > 0: nChw16c) */
void bf16_unpack(float *dst, const float *src, int C, size_t ldc, size_t P, int add, size_t bhw);

#endif
