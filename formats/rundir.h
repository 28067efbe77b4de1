/* rundir.h: one writer per run directory (moco run, moco train --out).
 *
 * Promise: moco_lock_dir takes an advisory lock (flock) on DIR/.lock,
 * creating the file, and writes the holder's pid into it; the lock lasts
 * while the descriptor is open and goes with the process (a kill included),
 * so a stale .lock file never blocks a later run. A second writer is refused
 * with MOCO_EEXIST and a message naming the directory and the holder's pid:
 * two runs on one directory mixed their checkpoints and metrics, and both
 * exited 0. The .lock file is no part of a run's results (the "directory
 * must be empty" checks skip it). */
#ifndef MOCO_RUNDIR_H
#define MOCO_RUNDIR_H

#define MOCO_RUNDIR_LOCK ".lock"

/* 0 and *fd (close it to release; it is not inherited by exec), or
 * MOCO_EEXIST (held by another process), or MOCO_EIO naming the path. The
 * directory must exist. */
int moco_lock_dir(const char *dir, int *fd);

#endif
