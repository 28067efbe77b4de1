/* fuzz_recover.c: libFuzzer target for what `moco train --resume` reads of
 * metrics.jsonl before it re-evaluates a missing epoch record
 * (train_epoch_recorded, trainer/train.c, under recover_record): whether the
 * file holds the record of an epoch. Input: u32 LE the epoch, then the
 * file. Checked against a scan of the bytes: the record is there exactly
 * when a whole line of the file (ending in a newline) begins
 * {"type":"epoch","epoch":E, (the writer's form), and the file is left as
 * it was. */
#include <inttypes.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "trainer/train.h"

static char dir[256], path[300];

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/moco-fuzz-recover-XXXXXX");
        if (!mkdtemp(dir)) abort();
        snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    }
    if (size < 4) return 0;
    int64_t epoch = (int64_t)(data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24);
    data += 4, size -= 4;
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    int have = -1;
    if (train_epoch_recorded(path, epoch, &have)) abort(); /* a regular file that is there: always read */
    char want[64];
    size_t wl = (size_t)snprintf(want, sizeof want, "{\"type\":\"epoch\",\"epoch\":%" PRId64 ",", epoch);
    int expect = 0;
    for (size_t at = 0; at < size && !expect;) { /* a whole line: a torn last one is no record */
        const uint8_t *nl = memchr(data + at, '\n', size - at);
        expect = nl && (size_t)(nl - data) - at >= wl && !memcmp(data + at, want, wl);
        at = nl ? (size_t)(nl - data) + 1 : size;
    }
    if (have != expect) abort();
    /* read only: the file is the input */
    f = fopen(path, "rb");
    if (!f) abort();
    uint8_t *b = malloc(size + 1);
    if (!b || fread(b, 1, size + 1, f) != size || (size && memcmp(b, data, size))) abort();
    free(b);
    fclose(f);
    return 0;
}
