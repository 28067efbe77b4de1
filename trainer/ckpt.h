/* ckpt.h: MoCo training checkpoints as one safetensors file:
 *   encoder_q.<torchvision name>, encoder_k.<torchvision name>  (params, BN
 *       buffers, num_batches_tracked), as torchvision's state_dict;
 *   momentum_buffer.<name>   the SGD momentum of every query parameter;
 *   queue (dim, K) F32, queue_ptr I64[1];
 *   train.epoch, train.step, train.seed I64[1]: where training stands (all
 *       randomness is a function of (seed, step), so this is the RNG state);
 *   pipeline.epoch I64[1], pipeline.delivered U8[ceil(n/8)]: the stream
 *       position (indices of pipeline.epoch already trained on);
 * and the configuration as "__metadata__" strings. Written atomically
 * (temporary file, fsync, rename): a crash leaves the previous file intact.
 * Loading checks every name, dtype and shape against the model before
 * changing anything. */
#ifndef TRAINER_CKPT_H
#define TRAINER_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "trainer/moco.h"

typedef struct {
    int64_t epoch, step;          /* next epoch to train in / steps done */
    int64_t pipe_epoch;           /* stream position */
    const uint8_t *delivered;     /* save: bitmap; load: malloc'd by ckpt_load */
    size_t delivered_bytes;
} ckpt_state;

/* meta: key/value pairs (may be NULL). */
int ckpt_save(const char *path, const moco *mc, const ckpt_state *st, const char *const *meta, int nmeta);

/* Restore mc (built with the same configuration) and fill *st (its
 * delivered bitmap malloc'd, to free()). Returns 0 or an error naming the
 * file and the tensor; mc is unchanged on failure. */
int ckpt_load(const char *path, moco *mc, ckpt_state *st);

/* Load only the query encoder (encoder_q.*) into m, for evaluation. */
int ckpt_load_encoder(const char *path, resnet *m);

#endif
