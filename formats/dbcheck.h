/* dbcheck.h: layer 1 of formats/db.c's defence against damaged files,
 * in formats/dbcheck.c (formats/db.c's own; no process folder calls it). */
#ifndef MOCO_FORMATS_DBCHECK_H
#define MOCO_FORMATS_DBCHECK_H

#include <stdint.h>

/* Check DIR/data.mdb before LMDB maps it: its meta pages and the B-trees of
 * the one LMDB will read. Sets *data_end to the extent of the pages LMDB
 * will read and *ino to the file's inode. Returns 0, MOCO_ENOTFOUND (no
 * dataset there: the message says whether DIR looks like an image folder),
 * MOCO_EIO or MOCO_ECORRUPT, with a message naming the file. */
int moco_db_check_file(const char *dir, uint64_t *data_end, uint64_t *ino);

#endif
