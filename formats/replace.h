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
 * plain file in its place. */
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
 * names. NULL with errno set and a message naming tmp. */
FILE *moco_create_tmp(const char *tmp);

/* fopen(path, "r") of a regular file only, without ever blocking in the
 * open (a FIFO is refused, not waited on): the stream, or NULL with errno
 * set (EINVAL for what is not a regular file) and a message naming path. */
FILE *moco_fopen_regular(const char *path);

#endif
