/* train.h: `moco train` (trainer/train.c) and the pieces its tests use. */
#ifndef TRAINER_TRAIN_H
#define TRAINER_TRAIN_H

#include <stddef.h>
#include <stdint.h>

#include "formats/checkpoint.h"
#include "trainer/engine/moco.h"
#include "trainer/stream.h"

typedef struct dist dist; /* trainer/dist.h: the ranks of an MPI job */

#define TRAIN_MAX_SCHEDULE 16
#define TRAIN_MAX_EPOCHS 1000000 /* --epochs (train, lincls); --schedule epochs too */
#define TRAIN_EPOCHS 200 /* --epochs by default (train, and moco run when it trains or serves): main_moco.py's */

typedef struct {
    const char *connect, *bind, *out, *resume, *knn_train, *knn_test, *arch;
    const char *keys;  /* key directory for tcp endpoints (CURVE) */
    const char *preset; /* --preset, or NULL */
    const char *recipe; /* the augmentation the preset (or --aug-plus) goes with: "v1", "v2", "cifar"; NULL: none said */
    int insecure;      /* tcp without keys */
    int overwrite;     /* --out may hold a run: start afresh (its metrics.jsonl and checkpoints removed) */
    int allow_schedule_change; /* --resume with other --epochs, --lr, --cos, --schedule, --batch-size */
    int width, dim, K, batch, epochs, start_epoch, bn_splits, size, mlp, symmetric, cos, warmup_epochs;
    int schedule[TRAIN_MAX_SCHEDULE], nschedule;
    double lr, momentum, wd, m, T, knn_t, loader_timeout;
    int knn_every, knn_k, log_every, keep, save_every, threads;
    int precision;     /* NN_FP32 (default) or NN_BF16 (--precision bf16: trainer/bf16.c) */
    int init;          /* RN_INIT_*: --init torchvision (default), demo (--preset cifar's), pytorch */
    int kernels;       /* TUNE_MEASURE (default) or TUNE_RULE (--kernels rule): trainer/engine/tune.h */
    const char *wisdom; /* --wisdom FILE (NULL: tune.h's default path) */
    uint64_t seed, count;
    float mean[3], std[3];
    const char *norm;  /* the --normalize that mean and std came from, resolved: "cifar", "imagenet", "none" (NULL: not said) */
    dist *dist;        /* the ranks (mpirun -np R moco train), or NULL: one process */
    int ranks;         /* without dist: the ranks the run will have (moco run --ranks checks a resume before mpirun
                        * starts them); 0: one */
} train_cfg;

/* The learning rate at (epoch, step within it): the official schedule (x0.1
 * at each --schedule epoch passed, or half-cosine over the epochs), after a
 * linear warm-up over warmup_epochs when set. */
double train_lr(const train_cfg *c, int64_t epoch, int64_t step_in_epoch, int64_t steps_per_epoch);

/* "120,160" -> c->schedule. Returns 0 or MOCO_EINVAL naming --schedule and
 * the value (an epoch outside [0, TRAIN_MAX_EPOCHS] too). */
int train_parse_schedule(const char *s, train_cfg *c);

/* One uint8 HWC view (c = 1 or 3 channels, S x S) into row `row` of x, a
 * float NCHW batch with 3 channels, normalised with mean and std (grey is
 * replicated). */
void train_view_to_float(float *x, const uint8_t *v, int row, int S, int c, const float mean[3], const float std[3]);

/* kNN top-1 (percent) of encoder m (eval mode): bank = train_db, queries
 * = test_db (both labelled, neither empty), embedded without augmentation.
 * keep (or NULL): the pair stream kept alive between batches
 * (stream_keepalive). *k_used (k_used may be NULL): the k voted with,
 * min(k, the bank's size). */
int train_knn(resnet *m, const char *train_db, const char *test_db, int k, float t, const float mean[3], const float std[3],
              trainer_stream *keep, double *top1, int *k_used);

/* Parse `moco train` flags into *c: MOCO_OPTS_OK, MOCO_OPTS_HELP (help
 * printed) or MOCO_OPTS_USAGE (error printed). */
int train_parse_args(int argc, char **argv, train_cfg *c);

/* The configuration as checkpoint metadata (the contract, its keys and the
 * config's fields: formats/checkpoint.h; written by its one writer,
 * moco_ckpt_config_write): meta[0..3] = MOCO_CKPT_KEY_FORMAT,
 * MOCO_CKPT_FORMAT, MOCO_CKPT_KEY_CONFIG, the JSON in buf[0..n). Returns
 * the number of key/value pairs: 2; or 1 (format only, buf "") when the
 * config would not fit buf or a reader would refuse it. */
int train_config_meta(const train_cfg *c, char *buf, size_t n, const char **meta);

/* What train_run reads on --resume besides the checkpoint itself, callable
 * alone for tests/fuzz/fuzz_ckpt.c and fuzz_metrics.c (they were static):
 * train_resume_matches: the checkpoint's config kc (of the file resume)
 * against this run's flags c: 0, or MOCO_EINVAL naming resume and what
 * differs. train_metrics_rewind: metrics.jsonl at path keeps its records
 * up to step (a torn last line goes too), rewritten atomically when
 * something is dropped (*dropped: how many); 0, or MOCO_EIO naming path.
 * train_best_knn: the best kNN top-1 among its epoch records, -1 if none. */
int train_resume_matches(const train_cfg *c, const moco_ckpt_config *kc, const char *resume);
int train_metrics_rewind(const char *path, int64_t step, int *dropped);
double train_best_knn(const char *mpath);
/* recover_record's reader, callable alone for tests/fuzz/fuzz_recover.c:
 * whether metrics.jsonl at mpath holds the record of epoch (a line that
 * begins {"type":"epoch","epoch":E, as the trainer writes it): *have 1 or
 * 0. Returns 0, or MOCO_EIO naming mpath (a FIFO is refused, not waited on). */
int train_epoch_recorded(const char *mpath, int64_t epoch, int *have);

/* Train. Before the first step every input is checked (--knn-train and
 * --knn-test opened, --resume loaded, --keys, --out: refused with
 * MOCO_EEXIST when it holds something and neither --resume nor --overwrite
 * is given). A resume with other schedule flags than the checkpoint's is
 * MOCO_EINVAL unless allow_schedule_change. On SIGINT / SIGTERM (the flag
 * train_main's handler sets) it stops before the next step, writes
 * checkpoint_last (the untrained part of a batch left to the stream) and
 * returns MOCO_EINTR. A stream that ends before the last epoch (the
 * loader stopped, or given fewer epochs) is MOCO_EIO, and a loader silent
 * for loader_timeout seconds MOCO_ETIMEOUT; on one process both write
 * checkpoint_last first, as a stop does, and say so. */
int train_run(const train_cfg *c);
/* Exit status: 0, 1 (an error), 2 (usage), 130 (interrupted: the resume
 * command is printed, unless MOCO_RUN_SUPERVISED is set: moco run prints
 * its own). */
int train_main(int argc, char **argv);

/* A --resume of a checkpoint from outside dir (moco_rundir_resumes_in),
 * into a dir that holds a checkpoint_last of another run (another seed,
 * model or dataset): MOCO_EEXIST, the message naming flag ("--out",
 * "--run-dir"), dir and how the two runs differ (before, such a resume
 * replaced that run's checkpoints and rewound its metrics.jsonl into a mix
 * of the two). 0 otherwise: a copy of dir's own run's checkpoint, or a dir
 * without a checkpoint. Or the error reading resume's header. */
int train_resume_into(const char *dir, const char *resume, const char *flag);
/* --out without --resume: 0 when it is new, or (overwrite) once its run
 * files (metrics.jsonl, checkpoint_*.safetensors) are removed; else
 * MOCO_EEXIST with moco_rundir_check_new's advice, or MOCO_EIO. */
int train_check_out_dir(const char *out, int overwrite);
/* The --out this process made, for a run that failed before its first
 * checkpoint: removed when it holds nothing but the lock (*lock_fd closed
 * and set to -1 then). */
void train_drop_made_out(const char *out, int *lock_fd);
/* A run that failed (not a stop): its reason appended to out/metrics.jsonl
 * as {"type":"failed","epoch":E,"error":msg} (no "epoch" when epoch < 0:
 * not known yet), where the run's records are read afterwards (moco run
 * prints it on stderr only). Only into a metrics.jsonl that exists and ends
 * with a whole line (never after a torn one); the caller's moco_errmsg()
 * is kept. Best effort: a write that fails says nothing more. */
void train_note_failure(const char *out, int64_t epoch, const char *msg);
/* SIGINT, SIGTERM and SIGUSR1 (which mpirun forwards to the ranks) set the
 * flag train_run stops on, before its next step. */
void train_catch_signals(void);

/* `moco knn --ckpt CKPT --train DB --test DB`: the kNN protocol on a
 * checkpoint's query encoder; the last line is JSON with knn_top1. */
int train_knn_main(int argc, char **argv);

#endif
