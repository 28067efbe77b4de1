/* tune.h: convolution kernels chosen by measurement, kept as wisdom (as
 * FFTW keeps its plans).
 *
 * Promise: for each convolution shape, pass (forward; backward; backward
 * without the input gradient, the stem's) and precision, tune_conv returns
 * the algorithm (nn.h's NN_ALGO_*) that ran it fastest on this machine:
 * every algorithm that can run the shape is timed once, on synthetic data,
 * with the compute pool as it is set (par.h), at the scratch budget the
 * model gives it, and the fastest is kept (a oneDNN candidate the library
 * declines on this machine is left out). The candidates are the GEMM
 * lowering, the direct 3x3 kernels (on an AVX-512 CPU both their AVX-512
 * and their AVX2 builds), the image-lanes kernels and oneDNN's fp32
 * primitives, direct and Winograd (nn.h); under bf16
 * precision also oneDNN's bf16 primitives (an fp32 kernel may win a layer:
 * it is then both faster and exact). The choice never changes the result
 * beyond the rounding of the kernels, each of which is tested against the
 * plain references (nn_ref.c).
 *
 * The wisdom file holds one JSON line per choice:
 *   {"cpu":"AMD EPYC 9B45","build":"1234567-1764410000","threads":2,
 *    "precision":"fp32","pass":"fwd","shape":[256,64,32,32,64,3,1,1],
 *    "choice":"direct","ms":{"gemm":21.3,"direct":9.8}}
 * shape is N, Ci, H, W, Co, k, stride, pad. A line counts only for the CPU
 * model, build (size and time of the running executable, OpenBLAS's kernel
 * set, DNNL_MAX_CPU_ISA where set) and thread count
 * that wrote it; other lines are kept as they are (also those naming a
 * choice or precision this build does not know: only cpu, build and
 * threads need to parse). So a run finds the
 * choices its machine made before, and a rebuilt binary or another CPU
 * measures afresh. Lines of this key (or of none) that do not parse are
 * reported (tune_note) and dropped at the next write; a line whose choice is not a candidate (one
 * that cannot run the shape here, or bf16 on an fp32 line) is measured
 * afresh and replaced. A path that is not a regular file (/dev/null, a
 * FIFO) is neither read nor replaced (formats/replace.h): a warning, and
 * the kernels are timed in every run; a symbolic link is written through. Writes are whole-file (temporary file and
 * rename, under an flock), so concurrent runs lose at most a choice, never
 * the file. */
#ifndef TRAINER_TUNE_H
#define TRAINER_TUNE_H

#include <stddef.h>

#include "trainer/engine/nn.h"

enum { TUNE_RULE = 0, TUNE_MEASURE = 1, TUNE_CHECKPOINT = 2 };
enum { TUNE_CONV = 0, TUNE_LINEAR = 1 };
enum { TUNE_FWD = 0, TUNE_BWD = 1, TUNE_BWD_W = 2, TUNE_PASSES = 3 };

/* TUNE_RULE (the default): nn_conv_init's fixed rule, or bf16 everywhere
 * under bf16 precision; nothing is timed or read. TUNE_MEASURE: the wisdom
 * at path (NULL: $MOCO_WISDOM, else $XDG_CACHE_HOME/moco/wisdom.jsonl, else
 * $HOME/.cache/moco/wisdom.jsonl), measured where it has no answer.
 * TUNE_CHECKPOINT (the evaluation commands): the choices tune_pin took from
 * a checkpoint, else the rule; nothing timed, the file neither read nor
 * written. Call before the models are made. Returns 0. */
int tune_configure(int mode, const char *path);
int tune_mode(void);
const char *tune_path(void);
/* The wisdom key of this process: the CPU model and the build ("" before the first tune_conv in TUNE_MEASURE). */
const char *tune_cpu(void);
const char *tune_build(void);

typedef struct {
    int N, Ci, H, W, Co, k, stride, pad;
} tune_shape;

typedef struct {
    int algo;                 /* the choice */
    int measured;             /* 1: timed by this process; 0: from the wisdom or the rule */
    double ms[NN_ALGO_COUNT]; /* time of each candidate in ms; < 0: not a candidate (or not timed: the rule) */
} tune_choice;

/* The algorithm for one shape, pass and precision (NN_FP32, NN_BF16), at
 * `budget` scratch floats per thread (nn_conv_init's work_floats).
 * Returns 0, or MOCO_ENOMEM (the synthetic data), or a kernel set-up error. */
int tune_conv(const tune_shape *s, int pass, int precision, size_t budget, tune_choice *out);

/* The kernels of a linear layer (N,F) -> (N,O), forward only (grads 0)
 * or forward and backward together (grads 1, as one choice: the bf16
 * backward reuses the forward's bf16 weights): under bf16 precision the
 * faster of OpenBLAS (NN_ALGO_GEMM) and oneDNN bf16 (NN_ALGO_BF16), timed
 * on synthetic data and kept in the wisdom file as a line with
 * "layer":"linear", shape [N,F,1,1,O,1,1,0] and pass "fwd" (grads 0) or
 * "bwd" (grads 1); under fp32 OpenBLAS, the only candidate, untimed; under
 * TUNE_RULE bf16 under bf16; under TUNE_CHECKPOINT a forward alone with
 * no "fwd" line pinned takes the layer's "bwd" line (a training run's
 * choice, which its forwards ran on). Returns 0, MOCO_ENOMEM, or nn_linear_bf16's
 * error. */
int tune_linear(int N, int F, int O, int grads, int precision, tune_choice *out);

/* Write the choices measured since the last save to the wisdom file
 * (every write checked, fsync, rename, fsync of the directory). Returns 0
 * (also when there is nothing new), or MOCO_EIO with a message naming the
 * file, which is then left as it was (a full disk): a run goes on without
 * it and measures again next time. */
int tune_save(void);

/* A warning about the wisdom file read (lines that did not parse), or
 * NULL; it is returned once. */
const char *tune_note(void);

/* What a command does once its model is built: tune_note's warning, and
 * tune_save with its failure as a warning ("the kernels will be timed
 * again next run"), both on stderr as "moco: warning: ..."; the run goes on
 * either way. */
void tune_keep(void);

/* The choices tune_conv and tune_linear have returned so far (TUNE_MEASURE;
 * under TUNE_CHECKPOINT those of tune_pin's that ran), as lines of the
 * wisdom file: malloc'd (free it), NULL under TUNE_RULE or with none. A checkpoint keeps them (formats/checkpoint.h
 * MOCO_CKPT_KEY_KERNELS) for tune_pin. */
char *tune_used_lines(void);

/* Before the models are made (TUNE_MEASURE, TUNE_CHECKPOINT; under
 * TUNE_RULE nothing): take the choices in text (tune_used_lines' lines) over
 * the wisdom file's (or the rule's), so
 * that a resumed run runs the kernels its first part ran and ends
 * byte-identical to an uninterrupted run, whatever the file holds by then.
 * A line of another CPU model or thread count, or one that does not parse,
 * is passed over (that layer takes the file's choice, or is measured); a
 * choice that cannot run its shape here is measured. The file is not
 * rewritten for them. Returns how many were taken over; *lines: how many
 * text holds. */
int tune_pin(const char *text, int *lines);

/* Read the wisdom file now, as the first tune_conv after tune_configure
 * does (once; TUNE_MEASURE), for tests/fuzz/fuzz_wisdom.c. Returns the
 * number of choices of this process's key held (tune_note: the lines that
 * did not parse). */
int tune_load(void);

/* For explanations: the pass's name ("fwd" "bwd" "bwd-w"). */
const char *tune_pass_name(int pass);

#endif
