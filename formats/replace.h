/* replace.h: reading and replacing files at paths a user names, without
 * blocking on a FIFO or replacing a device.
 *
 * Where a file written by "a temporary file beside it, then a
 * rename" may land, so that the rename never replaces what is not a regular
 * file of ours.
 *
 * Promise: moco_replace_target gives the path to write the temporary file
 * beside and to rename onto: the path itself (a regular file, or nothing yet),
 * or, for a symbolic link, the regular file it names, so that the link stays a
 * link. Anything else there (a device such as /dev/null, a directory, a FIFO,
 * a socket, a link to one of those or to nothing) is refused with MOCO_EIO and
 * a message naming the path: as root, a rename onto /dev/null would put a
 * plain file in its place.
 *
 * moco_commit_tmp and moco_write_replace finish such a write durably (every
 * write checked, fsync, rename, fsync of the directory) or leave the old
 * file in place. */
#ifndef MOCO_REPLACE_H
#define MOCO_REPLACE_H

#include <stddef.h>
#include <stdio.h>

/* 0 and target (cap bytes) set, or MOCO_EIO (not a regular file, or the path
 * cannot be examined), or MOCO_EINVAL (the resolved path does not fit). */
int moco_replace_target(const char *path, char *target, size_t cap);

/* The temporary file beside a target, made new for writing ("wb"): a stale
 * one (a crashed writer's) is removed first, and the file is created
 * exclusively without following a symbolic link, so that a link planted at
 * the temporary name (in /tmp, say) never sends the write to the file it
 * names. NULL with errno set and a message naming name, the path the user
 * gave (moco_err_output), not tmp. */
FILE *moco_create_tmp(const char *tmp, const char *name);

/* The error of an output that cannot be made at path (the path the user
 * gave; errno e): MOCO_EIO, "cannot VERB PATH: directory D does not exist"
 * when e is ENOENT and path's directory is missing, else "cannot VERB PATH:
 * strerror(e)". verb: "write", "create". */
int moco_err_output(const char *verb, const char *path, int e);

/* fopen(path, "r") of a regular file only, without ever blocking in the
 * open (a FIFO is refused, not waited on): the stream, or NULL with errno
 * set (EINVAL for what is not a regular file) and a message naming path. */
FILE *moco_fopen_regular(const char *path);

/* Make a rename in the directory of path durable: fsync that directory
 * (opened O_DIRECTORY). 0, or -1 with errno set. */
int moco_fsync_dir(const char *path);

/* Finish f, a temporary file from moco_create_tmp at tmp: every write
 * checked (ferror: a failed write may leave fflush nothing to report),
 * flushed, fsync'ed, closed, renamed onto target (moco_replace_target's),
 * and the directory fsync'ed. f is closed either way. 0, or MOCO_EIO with a
 * message naming name (the path the user gave) and tmp removed: target is
 * then as it was (unless only the directory's fsync failed). */
int moco_commit_tmp(FILE *f, const char *tmp, const char *target, const char *name);
/* moco_commit_tmp in two halves, for several files that go together: all
 * finished first (written, fsync'ed, closed: where the disk is full, this
 * is where it says so), then all renamed. moco_finish_tmp: 0, or MOCO_EIO
 * naming name with tmp removed; f is closed either way. moco_rename_tmp:
 * the rename and the directory's fsync; 0, or MOCO_EIO naming name (tmp
 * removed when the rename failed). Test hook: $MOCO_TEST_FAIL_FSYNC, a
 * suffix: moco_finish_tmp of a tmp whose name ends with it fails with
 * ENOSPC, as a full disk's fsync does. */
int moco_finish_tmp(FILE *f, const char *tmp, const char *name);
int moco_rename_tmp(const char *tmp, const char *target, const char *name);

/* path made to hold exactly data[0..len) that way: the target checked
 * (moco_replace_target: never a FIFO, a device, a dangling link), a
 * temporary file beside it, moco_commit_tmp. 0, or MOCO_EIO / MOCO_EINVAL
 * naming path; what was at path is then unchanged. */
int moco_write_replace(const char *path, const void *data, size_t len);

#endif
