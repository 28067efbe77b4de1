/* rundir.h: one writer per run directory (moco run, moco train --out).
 *
 * Promise: moco_lock_dir takes an advisory lock (flock) on DIR/.lock,
 * creating the file, and writes the holder's pid into it; the lock lasts
 * while the descriptor is open and goes with the process (a kill included),
 * so a stale .lock file never blocks a later run. A second writer is refused
 * with MOCO_EEXIST and a message naming the directory and the holder's pid:
 * two runs on one directory mixed their checkpoints and metrics, and both
 * exited 0. The .lock file is no part of a run's results (the "directory
 * must be empty" check, moco_rundir_check_new, skips it).
 *
 * Also the one home of two rules that moco run, moco train and the
 * evaluation commands share: a checkpoint flag (--resume, --ckpt) may name a
 * run directory, meaning its checkpoint_last.safetensors; and a new run's
 * directory must be empty, with advice that works when it is not. */
#ifndef MOCO_RUNDIR_H
#define MOCO_RUNDIR_H

#include <stddef.h>

#define MOCO_RUNDIR_LOCK ".lock"

/* 0 and *fd (close it to release; it is not inherited by exec), or
 * MOCO_EEXIST (held by another process), or MOCO_EIO naming the path. The
 * directory must exist. */
int moco_lock_dir(const char *dir, int *fd);

#define MOCO_RUNDIR_LAST "checkpoint_last.safetensors"

/* The checkpoint a flag's value names: path itself, or, when path is a
 * directory, path/checkpoint_last.safetensors, which must then exist. Writes
 * it into buf (cap bytes). 0; MOCO_ENOTFOUND for a directory without one
 * (the message names flag, the directory and what to do); MOCO_EINVAL when
 * the result does not fit. A path that is not a directory is only copied:
 * opening it says what is wrong with it. */
int moco_rundir_ckpt(const char *flag, const char *path, char *buf, size_t cap);

/* Whether dir may take a new run (neither --resume nor --overwrite given):
 * it does not exist, or holds nothing but its .lock (and, with logs_ok, the
 * logs moco run writes there before its trainer starts: loader.*,
 * workers.*). Otherwise MOCO_EEXIST, the message naming flag ("--run-dir",
 * "--out"), dir and a file it holds, with advice that works: "--resume dir"
 * only when dir holds checkpoint_last.safetensors, else --overwrite (a run
 * that stopped before its first checkpoint). MOCO_EIO when dir cannot be
 * read. */
int moco_rundir_check_new(const char *dir, const char *flag, int logs_ok);

/* Whether a --resume value (a checkpoint, or a run directory) continues
 * the run in dir: the checkpoint lies in dir itself (or names dir). A run
 * resumed from elsewhere starts a new directory: dir must then pass
 * moco_rundir_check_new (resumed into another run's directory, it replaced
 * that run's checkpoints and rewound its metrics). 0 when either cannot be
 * read. */
int moco_rundir_resumes_in(const char *dir, const char *resume);

/* A run directory this process made, after a run that failed before any
 * of its processes wrote a result (a --serve endpoint the loader could not
 * bind, a trainer that refused its flags, say): removed, with its lock
 * (*lock_fd closed and set to -1), when it holds nothing but the lock,
 * empty files and the files named in spare (a NULL-ended list of names
 * whose content the caller knows to say nothing then, such as the workers'
 * summaries of 0 pairs, or the pipeline's logs of a run that trained
 * nothing); then 1. 0 when it holds anything else or cannot be read: a log
 * with a line in it, which may be the only record of why, is kept. With
 * keep_dir (a directory that was there, empty, before the run): the same
 * files go, the directory and its lock stay (*lock_fd untouched). */
int moco_rundir_drop_empty(const char *dir, const char *const *spare, int *lock_fd, int keep_dir);

#endif
