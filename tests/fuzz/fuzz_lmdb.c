/* fuzz_lmdb.c: libFuzzer target for damaged dataset files (formats/db.c:
 * the checks moco_db_open makes of data.mdb before LMDB maps it, then
 * moco_db_foreach and moco_db_get under the fault guard). Input: the bytes
 * of data.mdb, written into a scratch directory (lock.mdb is LMDB's, kept
 * there). The dataset is opened, walked, and every record read and parsed;
 * errors are expected, crashes and aborts are not. Seeds: small valid
 * datasets, 4 KB pages (tests/fuzz/corpus/fuzz_lmdb/). */
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "formats/db.h"
#include "formats/errors.h"
#include "formats/record.h"

static char dir[64], file[96];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof dir, "/tmp/moco-fuzz-lmdb-XXXXXX");
    if (!mkdtemp(dir)) abort();
    snprintf(file, sizeof file, "%s/data.mdb", dir);
    return 0;
}

static int walk(void *ctx, uint64_t index, const uint8_t *val, size_t len)
{
    moco_rec_header h;
    const uint8_t *pl;
    (void)index;
    *(uint64_t *)ctx += moco_rec_parse(val, len, 1, "fuzz", &h, &pl) == 0;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    int fd = open(file, O_WRONLY | O_CREAT | O_TRUNC, 0644);
    if (fd < 0 || write(fd, data, size) != (ssize_t)size || close(fd) != 0) abort();
    moco_db *db;
    if (moco_db_open(dir, &db) != 0) {
        if (!strstr(moco_errmsg(), dir)) abort(); /* every error names the dataset */
        return 0;
    }
    uint64_t good = 0, count = moco_db_get_meta(db)->count;
    if (moco_db_foreach(db, walk, &good) != 0 && !strstr(moco_errmsg(), dir)) abort();
    uint8_t *buf = NULL;
    size_t cap = 0, len;
    for (uint64_t i = 0; i < count && i < 64; i++)
        if (moco_db_get(db, i, &buf, &cap, &len) != 0 && !strstr(moco_errmsg(), dir)) abort();
    free(buf);
    moco_db_destroy(&db);
    return 0;
}
