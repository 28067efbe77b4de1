/* dbwriter.h: writes a dataset LMDB atomically, growing the map as needed.
 *
 * The database is built in a temporary directory beside the output
 * (OUT.tmp-PID) and renamed to OUT only by dbw_finish(), after the metadata
 * is written and the environment synced: an interrupted or failed run never
 * leaves anything at OUT that looks like a finished database. Records are
 * committed in batches; a batch that hits MDB_MAP_FULL is aborted, the map
 * doubled, and the batch retried, so the user never guesses a map size. */
#ifndef LOADER_DBWRITER_H
#define LOADER_DBWRITER_H

#include <stddef.h>
#include <stdint.h>

#include "formats/db.h"

typedef struct dbw dbw;

/* Start writing a dataset that will appear at out. Fails with MOCO_EEXIST if
 * out exists and !force, or if force and out is anything but a moco dataset
 * (a directory holding only data.mdb and lock.mdb, opening as a dataset) or
 * an empty directory: --force never deletes anything else. Removes stale
 * OUT.tmp-PID directories of dead processes (their LMDB files only).
 * initial_map: starting map size in bytes (0: 64 MiB). */
int dbw_open(const char *out, int force, size_t initial_map, dbw **w);

/* Write n records as samples first..first+n-1 in one transaction (retrying
 * after growing the map on MDB_MAP_FULL). recs[i] is a whole record value. */
int dbw_put_batch(dbw *w, uint64_t first, uint8_t *const *recs, const size_t *lens, size_t n);

/* Write the metadata, sync, close, and rename the database into place
 * (replacing an old one when force, after checking it again as dbw_open
 * does). Frees w and sets *w to NULL. */
int dbw_finish(dbw **w, const moco_db_meta *m);

/* Give up: close and delete the temporary directory. Safe on NULL. */
void dbw_abort(dbw **w);

/* How many times the map was grown (for tests and the summary). */
unsigned dbw_grow_count(const dbw *w);

#endif
