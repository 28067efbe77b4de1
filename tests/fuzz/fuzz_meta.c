/* fuzz_meta.c: libFuzzer target for the dataset metadata reader
 * (formats/db.c, moco_db_meta_get). One LMDB environment in a scratch
 * directory (MDB_NOSYNC) holds a "meta" database that each input replaces.
 * Input: a sequence of entries, each: u8 key id (mod the 12 known names),
 * u16 LE value length (clipped to what remains), the value bytes. Then
 * moco_db_meta_get reads it in a read transaction; on success every class
 * name and count is read back. */
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "formats/db.h"
#include "formats/record.h"

static MDB_env *env;
static MDB_dbi dbi;

static const char *const KEYS[] = {"format_version", "count", "unlabelled", "payload_bytes", "skipped", "source",
                                   "source_format", "classes", "class_counts", "encodings", "size_range",
                                   "shuffle_seed"};

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    char dir[] = "/tmp/moco-fuzz-meta-XXXXXX";
    if (!mkdtemp(dir)) abort();
    MDB_txn *t;
    if (mdb_env_create(&env) || mdb_env_set_maxdbs(env, 4) || mdb_env_set_mapsize(env, 64 << 20) ||
        mdb_env_open(env, dir, MDB_NOSYNC | MDB_NOMETASYNC, 0644) || mdb_txn_begin(env, NULL, 0, &t) ||
        mdb_dbi_open(t, MOCO_DB_META, MDB_CREATE, &dbi) || mdb_txn_commit(t))
        abort();
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    MDB_txn *t;
    if (mdb_txn_begin(env, NULL, 0, &t) || mdb_drop(t, dbi, 0)) abort();
    while (size >= 3) {
        const char *k = KEYS[data[0] % (sizeof KEYS / sizeof *KEYS)];
        size_t n = moco_get_le16(data + 1);
        data += 3, size -= 3;
        if (n > size) n = size;
        MDB_val key = {strlen(k), (void *)k}, val = {n, (void *)data};
        if (mdb_put(t, dbi, &key, &val, 0)) abort();
        data += n, size -= n;
    }
    if (mdb_txn_commit(t) || mdb_txn_begin(env, NULL, MDB_RDONLY, &t)) abort();
    moco_db_meta m;
    if (moco_db_meta_get(t, dbi, "fuzz", &m) == 0) {
        volatile size_t s = 0;
        for (uint32_t i = 0; i < m.nclasses; i++) s += strlen(m.class_names[i]) + m.class_counts[i];
        (void)s;
        moco_db_meta_clear(&m);
    }
    mdb_txn_abort(t);
    return 0;
}
