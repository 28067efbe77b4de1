/* fuzz_sink.c: libFuzzer target for `moco sink --resume-indices FILE`'s
 * reader (trainer/sink.c, sink_load_indices: fscanf "%llu" into a bitmap).
 * The first 2 input bytes (u16 LE, plus 1) are --count; the rest is written as
 * the index file. Accepted: a bitmap with no bit at or above count. Refused:
 * MOCO_EINVAL with a message naming the file. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/errors.h"
#include "trainer/stream.h"

static char dir[256], path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof dir, "/tmp/moco-fuzz-sink-XXXXXX");
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/indices.txt", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 2) return 0;
    uint64_t count = 1 + ((uint64_t)data[0] | (uint64_t)data[1] << 8);
    data += 2, size -= 2;
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    uint8_t *bm = NULL;
    int rc = sink_load_indices(path, count, &bm);
    if (!bm) abort(); /* a regular file: the bitmap is there, error or not */
    if (rc) {
        if (rc != MOCO_EINVAL || !strstr(moco_errmsg(), path)) abort();
    } else {
        for (uint64_t i = count; i < (count + 7) / 8 * 8; i++)
            if (bm[i >> 3] >> (i & 7) & 1) abort();
    }
    free(bm);
    return 0;
}
