/* db.h: a dataset LMDB environment: reading records and metadata, and the
 * metadata encoding shared with the writer (loader/mkdb).
 *
 * Layout (formats/README.md, "Dataset database"): an LMDB environment
 * directory with two named databases: "samples" (key: 8-byte big-endian
 * index 0..count-1, value: a record, see record.h) and "meta" (key: a short
 * ASCII name, value: little-endian integers or UTF-8 text).
 *
 * LMDB caveats that apply here: open the environment after any fork(), never
 * before; keep read transactions short (moco_db_get opens and resets one per
 * call, cheaply); a moco_db handle belongs to one thread at a time.
 *
 * Damaged files (db.c explains how): a truncated data.mdb, a damaged meta
 * page, a page of garbage or a file that shrinks while it is read gives
 * MOCO_ECORRUPT with a message naming DIR/data.mdb, never a signal or an
 * abort. After a read faults, the handle refuses every further read. The
 * reads install process-wide SIGBUS and SIGSEGV handlers (again whenever
 * they find them replaced) that pass every fault outside this module's reads
 * on to the handler they replaced, or to the default action. */
#ifndef MOCO_DB_H
#define MOCO_DB_H

#include <lmdb.h>
#include <stddef.h>
#include <stdint.h>

#include "formats/record.h"

#define MOCO_DB_FORMAT_VERSION 1
#define MOCO_DB_SAMPLES "samples"
#define MOCO_DB_META "meta"
#define MOCO_DB_MAX_CLASSES 100000

typedef struct {
    uint32_t format_version;
    uint64_t count;              /* samples, keyed 0..count-1 */
    uint32_t nclasses;
    char **class_names;          /* nclasses UTF-8 names */
    uint64_t *class_counts;      /* nclasses counts */
    uint64_t unlabelled;         /* samples with label -1 */
    char *source;                /* where the data came from (a path) */
    char *source_format;         /* "folder", "cifar10" or "idx" */
    uint64_t payload_bytes;      /* sum of payload lengths */
    uint64_t enc_counts[MOCO_ENC_COUNT];
    uint32_t min_w, max_w, min_h, max_h;
    uint64_t skipped;            /* inputs rejected at conversion */
    int shuffled;                /* 1 if written in a --shuffle order */
    uint64_t shuffle_seed;
} moco_db_meta;

/* Free what a meta owns (names, counts, strings) and zero it. */
void moco_db_meta_clear(moco_db_meta *m);

/* Write every field of m into the meta database inside txn.
 * Returns 0, MOCO_EINVAL (a class name with a newline or not UTF-8: the
 * reader could not give it back; nothing written), or an LMDB error code
 * (MDB_MAP_FULL included, for the caller's map-growth retry), with a
 * message. */
int moco_db_meta_put(MDB_txn *txn, MDB_dbi meta, const moco_db_meta *m);

/* Read and validate the metadata (fills a zeroed *m; caller clears it).
 * Returns 0, MOCO_ECORRUPT (missing or malformed entry, named), MOCO_EFORMAT
 * (newer format version) or an LMDB error. */
int moco_db_meta_get(MDB_txn *txn, MDB_dbi meta, const char *path, moco_db_meta *m);

typedef struct moco_db moco_db;

/* Open a dataset read-only and read its metadata. Returns 0 or an error
 * naming path: MOCO_ENOTFOUND (no such dataset), MOCO_ECORRUPT (damaged or
 * truncated, or not a moco dataset), MOCO_EFORMAT (newer format version),
 * MOCO_EIO, MOCO_ELMDB, MOCO_ENOMEM. *out is NULL on failure. */
int moco_db_open(const char *path, moco_db **out);

/* Is the directory path a moco dataset: data.mdb passes the checks above,
 * opens as an LMDB environment, and holds the meta database with an 8-byte
 * format_version (any version)? Returns 0, or an error naming path. Reads
 * only; for `moco mkdb --force`, which replaces nothing else. */
int moco_db_probe(const char *path);

/* Close and free; *db becomes NULL. Safe on NULL. */
void moco_db_destroy(moco_db **db);

const moco_db_meta *moco_db_get_meta(const moco_db *db);
const char *moco_db_path(const moco_db *db);

/* Copy the raw value of sample `index` into *buf (grown with realloc as
 * needed; *cap is its capacity) and set *len. The value is not parsed.
 * Returns 0, MOCO_ENOTFOUND, MOCO_ECORRUPT (damaged file), MOCO_ELMDB or
 * MOCO_ENOMEM. */
int moco_db_get(moco_db *db, uint64_t index, uint8_t **buf, size_t *cap, size_t *len);

/* Bracket a run of moco_db_get calls in this thread (the loader's batch):
 * the fault guard's set-up, two sigaction calls and a pthread_sigmask that
 * each read otherwise makes, is done once at begin, and the thread's
 * signal mask is restored at end. Between them the thread must not block
 * SIGBUS or SIGSEGV, nor install handlers for them that it relies on
 * (neither is seen until the next begin). Brackets nest; an end without a
 * begin does nothing. */
void moco_db_reads_begin(void);
void moco_db_reads_end(void);

/* Call fn(ctx, index, value, len) for every sample in key order, inside one
 * read transaction (value: a copy, valid only during the call). Stops early
 * and returns fn's value if it returns non-zero; else 0 or an error as
 * moco_db_get's. */
int moco_db_foreach(moco_db *db, int (*fn)(void *ctx, uint64_t index, const uint8_t *val, size_t len), void *ctx);

#endif
