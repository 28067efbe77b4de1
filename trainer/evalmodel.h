/* evalmodel.h: what the evaluation commands (knn, lincls, embed) share: the
 * flags that describe the encoder a checkpoint holds, the input
 * normalisation, and loading the query encoder for evaluation.
 *
 * Checkpoints describe themselves: arch, width, head (mlp or not), dim and
 * the training --size come from their "config" metadata, so the flags are
 * needed only for --random-init or for checkpoints without a config. A flag
 * given that contradicts the checkpoint is an error (--size may differ: it
 * is the evaluation's input side). So is the input normalisation: --normalize
 * auto is the checkpoint's "normalize" (checkpoints since 2026-12-02; older
 * ones and --random-init: the size rule of evalmodel_norm at the evaluation
 * size), and another --normalize contradicts it.
 * --ckpt may name a run directory: its checkpoint_last (formats/rundir.h), as
 * moco train --resume takes it. */
#ifndef TRAINER_EVALMODEL_H
#define TRAINER_EVALMODEL_H

#include "formats/checkpoint.h"
#include "formats/opts.h"
#include "trainer/engine/resnet.h"

typedef struct {
    const char *ckpt, *arch, *norm;
    const char *kernels, *wisdom; /* --kernels checkpoint|rule|measure, --wisdom FILE (trainer/engine/tune.h) */
    const char *precision;        /* --precision checkpoint|fp32|bf16 */
    int bf16;                     /* evalmodel_open: the forward runs in bf16 */
    char note[600];               /* evalmodel_open: a bf16 checkpoint's forward put on fp32 here, and why ("": none) */
    long width, dim, size, batch, threads, init_seed; /* init_seed < 0: load f->ckpt; batch 0: the checkpoint's, else 256 */
    int mlp;
    int pinned, pins; /* --kernels checkpoint: the checkpoint's choices (shape and pass) that ran; the lines it holds */
    char arch_buf[32]; /* the checkpoint's arch, when f->arch comes from it */
    char ckpt_buf[4200]; /* --ckpt resolved (a run directory: its checkpoint_last), when f->ckpt points here */
    /* not given: arch NULL, width / dim / size 0, mlp 0; evalmodel_open
     * fills them in (from the checkpoint, else resnet18-cifar, 64, 128, 32) */
} evalmodel_flags;

#define EVALMODEL_NOPTS 14

/* Set defaults in f and write its option entries (--ckpt, --arch, --width,
 * --mlp, --moco-dim, --size, --normalize, batch_flag, --threads,
 * --random-init, --kernels, --wisdom, --precision) into opts;
 * returns how many. */
int evalmodel_opts(evalmodel_flags *f, moco_opt *opts, const char *batch_flag);

/* The input mean and std: "cifar", "imagenet", "none", or "auto" (CIFAR's
 * for size <= EVALSET_SMALL_SIDE (64), ImageNet's above). */
void evalmodel_norm(const char *norm, int size, float mean[3], float std[3]);
/* The name norm resolves to at this size: "cifar", "imagenet" or "none"
 * (static strings), NULL for a name that is none of those nor "auto". */
const char *evalmodel_norm_name(const char *norm, int size);

/* The name of what evalmodel_norm chooses: "cifar", "imagenet" or "none". */
const char *evalmodel_norm_name(const char *norm, int size);

/* f->ckpt made the checkpoint's path (a run directory: its checkpoint_last;
 * f->ckpt then points to f->ckpt_buf). 0, or MOCO_ENOTFOUND naming --ckpt. */
int evalmodel_resolve(evalmodel_flags *f);

/* The training size ckpt (a file or a run directory) records; 32 when it
 * records none. 0, or an error naming the file (MOCO_ECORRUPT for a config
 * evalmodel_describe refuses as one no flags could describe). */
int evalmodel_ckpt_size(const char *ckpt, long *size);

/* The encoder's description in f resolved against the config c of the
 * checkpoint f->ckpt (evalmodel_open's first step, after ckpt_read_config):
 * a flag that contradicts c is MOCO_EINVAL; an encoder the flags could not
 * describe (an arch not among --arch's, a width, dim or size above
 * --width's, --moco-dim's or --size's largest) or a normalize c does not
 * know MOCO_ECORRUPT; its mean and std not this build's MOCO_EFORMAT, each naming
 * f->ckpt; else what f leaves open (arch, width, mlp, dim, size) is taken
 * from c and f->norm becomes c's normalize (when c has one). */
int evalmodel_describe(evalmodel_flags *f, const moco_ckpt_config *c);

/* Set the BLAS threads, start libvips, resolve the encoder's description
 * into f (see above; MOCO_EINVAL when a flag contradicts the checkpoint),
 * build it (no gradients: the forward's kernels as the checkpoint's run
 * chose them where it kept them for this batch and thread count (--kernels
 * checkpoint, the default: the training monitor's kNN to the digit), else
 * on the fixed rule; under --kernels rule the rule; under --kernels measure
 * timed here or read from the wisdom file, and the new choices saved
 * there; a wisdom file that cannot be written is a warning), in the precision
 * --precision names (checkpoint, the default: the one the checkpoint's run
 * trained in, so that its monitor's figures come out to the digit; a bf16
 * checkpoint on a CPU or build without bf16 runs in fp32, and f->note says
 * so; bf16 asked for there is an error saying why), and load encoder_q from
 * f->ckpt (or keep the seeded initialisation). Returns 0 or an error naming the file and the
 * tensor (MOCO_ECORRUPT: checksum; MOCO_ENUMERIC: NaN or infinite weights);
 * *m NULL on failure. */
int evalmodel_open(evalmodel_flags *f, resnet **m, float mean[3], float std[3]);

#endif
