/* ckpt.h: MoCo training checkpoints as one safetensors file:
 *   encoder_q.<torchvision name>, encoder_k.<torchvision name>  (params, BN
 *       buffers, num_batches_tracked), as torchvision's state_dict;
 *   momentum_buffer.<name>   the SGD momentum of every query parameter;
 *   queue (dim, K) F32, queue_ptr I64[1];
 *   train.epoch, train.step, train.seed I64[1]: where training stands (all
 *       randomness is a function of (seed, step), so this is the RNG state);
 *   pipeline.epoch I64[1], pipeline.delivered U8[ceil(n/8)]: the stream
 *       position (indices of pipeline.epoch already trained on);
 * and the "__metadata__" strings of formats/checkpoint.h (the metadata
 * contract's one home: "format", "config", "data_crc32", "config_crc32";
 * the config JSON is written and read there, not here). Written atomically (temporary
 * file, fsync, rename): a crash leaves the previous file intact.
 *
 * Every load (ckpt_open, ckpt_read_config and what uses them) checks the
 * CRC-32s when the file has them (files written before them have none;
 * MOCO_ECORRUPT naming the file) and refuses NaN or infinite values in any F32 tensor
 * (MOCO_ENUMERIC naming the tensor and the element) and a "format" other
 * than MOCO_CKPT_FORMAT (MOCO_EFORMAT; none at all is read). Loading into a model
 * checks every name, dtype and shape before changing anything, and refuses
 * (MOCO_EINVAL naming it) a model tensor (encoder_q., encoder_k.,
 * momentum_buffer.) the model lacks; ckpt_load also epochs outside
 * [0, 2^32 - 1) and steps outside [0, 2^53) (MOCO_ECORRUPT naming the tensor). */
#ifndef TRAINER_CKPT_H
#define TRAINER_CKPT_H

#include <stddef.h>
#include <stdint.h>

#include "formats/checkpoint.h"
#include "formats/safetensors.h"
#include "trainer/engine/moco.h"

/* train.step is below this (2^53: exact in a double) */
#define CKPT_MAX_STEP ((int64_t)1 << 53)

typedef struct {
    int64_t epoch, step;          /* next epoch to train in / steps done */
    int64_t pipe_epoch;           /* stream position */
    const uint8_t *delivered;     /* save: bitmap; load: malloc'd by ckpt_load */
    size_t delivered_bytes;
} ckpt_state;

/* meta: key/value pairs (may be NULL); "data_crc32" and, with a "config",
 * "config_crc32" are added here. */
int ckpt_save(const char *path, const moco *mc, const ckpt_state *st, const char *const *meta, int nmeta);

/* Open and check a checkpoint (CRC-32, finite F32 tensors; see above) and
 * read its config into *cfg (may be NULL). Returns 0 and *f (moco_st_destroy
 * it), or MOCO_EIO / MOCO_ECORRUPT / MOCO_ENUMERIC / MOCO_ENOMEM naming the
 * file; *f NULL on failure. */
int ckpt_open(const char *path, moco_st **f, moco_ckpt_config *cfg);

/* Only the config (the header is read, not the tensors). Returns 0 (also
 * when the file has no config: cfg->has_config 0), or MOCO_EIO /
 * MOCO_ECORRUPT naming the file. */
int ckpt_read_config(const char *path, moco_ckpt_config *cfg);

/* The kernel choices saved with the run (MOCO_CKPT_KEY_KERNELS): *out
 * malloc'd (free it), or NULL when it has none (or one too long or not a
 * string: a hint, ignored). Returns 0, or MOCO_EIO / MOCO_ECORRUPT naming
 * the file. */
int ckpt_read_kernels(const char *path, char **out);

/* Restore mc (built with the same configuration) and fill *st (its
 * delivered bitmap malloc'd, to free()). Returns 0 or an error naming the
 * file and the tensor; mc is unchanged on failure. */
int ckpt_load(const char *path, moco *mc, ckpt_state *st);

/* Where the run stands: train.epoch, the next epoch to train (what
 * ckpt_load would restore), after the checks of ckpt_open and its range's
 * (MOCO_ECORRUPT naming the file). No model is built: moco run compares it
 * with --epochs before it starts anything. */
int ckpt_read_epoch(const char *path, int64_t *epoch);

/* Load only the query encoder (encoder_q.*) into m, for evaluation. */
int ckpt_load_encoder(const char *path, resnet *m);

/* What ckpt_load_encoder checks, for f (from ckpt_open) and the encoder
 * under prefix ("encoder_q." or "encoder_k."): every tensor of m there with
 * its dtype and shape, and no model tensor m lacks. Nothing is copied.
 * Returns 0 or an error naming path and the tensor. */
int ckpt_check_encoder(const moco_st *f, const char *path, resnet *m, const char *prefix);

#endif
