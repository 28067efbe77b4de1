/* corrupt_db.c: damage records of a dataset LMDB on purpose, for the soak
 * (tests/soak/soak.sh). Not part of moco: built by the script.
 *   corrupt_db DB SEED K   damage K distinct records chosen from SEED and
 *                          print "index kind" for each, kind one of
 *     crc      payload bytes overwritten, the header's CRC left as it was
 *              (the worker's CRC check must catch it)
 *     garbage  payload overwritten with random bytes and the CRC recomputed
 *              (a valid record of undecodable image bytes: the decoder must
 *              catch it)
 *     header   the record's magic broken (the header parser must catch it)
 * Exit 0, or 1 with a message. */
#include <lmdb.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

static uint64_t rng(uint64_t *s)
{
    *s += 0x9E3779B97F4A7C15ull;
    uint64_t z = *s;
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

#define CHECK(x)                                                                                       \
    do {                                                                                               \
        int rc_ = (x);                                                                                 \
        if (rc_) { fprintf(stderr, "corrupt_db: %s: %s\n", #x, mdb_strerror(rc_)); return 1; }       \
    } while (0)

int main(int argc, char **argv)
{
    if (argc != 4) { fprintf(stderr, "usage: corrupt_db DB SEED K\n"); return 2; }
    uint64_t seed = strtoull(argv[2], NULL, 10);
    int k = atoi(argv[3]);
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi meta, smp;
    CHECK(mdb_env_create(&env));
    CHECK(mdb_env_set_maxdbs(env, 4));
    CHECK(mdb_env_open(env, argv[1], 0, 0644));
    CHECK(mdb_txn_begin(env, NULL, 0, &t));
    CHECK(mdb_dbi_open(t, "meta", 0, &meta));
    CHECK(mdb_dbi_open(t, "samples", 0, &smp));
    MDB_val key = {5, "count"}, v;
    CHECK(mdb_get(t, meta, &key, &v));
    if (v.mv_size != 8) { fprintf(stderr, "corrupt_db: bad count\n"); return 1; }
    uint64_t n = 0;
    for (int i = 7; i >= 0; i--) n = n << 8 | ((uint8_t *)v.mv_data)[i];
    if (n < (uint64_t)k * 4) { fprintf(stderr, "corrupt_db: %llu records, too few\n", (unsigned long long)n); return 1; }
    uint64_t *done = calloc((size_t)k, sizeof *done);
    static const char *const kinds[] = {"crc", "garbage", "header"};
    for (int j = 0; j < k; j++) {
        uint64_t idx;
        int again;
        do {
            idx = rng(&seed) % n;
            again = 0;
            for (int i = 0; i < j; i++) again |= done[i] == idx;
        } while (again);
        done[j] = idx;
        uint8_t kb[8];
        for (int i = 0; i < 8; i++) kb[i] = (uint8_t)(idx >> (8 * (7 - i)));
        MDB_val kk = {8, kb};
        CHECK(mdb_get(t, smp, &kk, &v));
        if (v.mv_size < 40) { fprintf(stderr, "corrupt_db: record %llu too short\n", (unsigned long long)idx); return 1; }
        uint8_t *r = malloc(v.mv_size);
        memcpy(r, v.mv_data, v.mv_size);
        int kind = j % 3;
        size_t pl = v.mv_size - 32;
        if (kind == 0) {
            for (size_t i = pl / 2; i < pl; i++) r[32 + i] ^= 0x5A; /* CRC no longer matches */
        } else if (kind == 1) {
            for (size_t i = 0; i < pl; i++) r[32 + i] = (uint8_t)rng(&seed);
            uint32_t c = (uint32_t)crc32(0, r + 32, (uInt)pl);
            for (int i = 0; i < 4; i++) r[24 + i] = (uint8_t)(c >> (8 * i));
        } else {
            memcpy(r, "XXXX", 4);
        }
        MDB_val nv = {v.mv_size, r};
        CHECK(mdb_put(t, smp, &kk, &nv, 0));
        free(r);
        printf("%llu %s\n", (unsigned long long)idx, kinds[kind]);
    }
    CHECK(mdb_txn_commit(t));
    mdb_env_close(env);
    free(done);
    return 0;
}
