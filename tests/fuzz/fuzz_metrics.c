/* fuzz_metrics.c: libFuzzer target for the JSON-lines readers of a run
 * directory's metrics.jsonl: `moco plot`'s loader with its axis checks
 * (plot_load_check, trainer/plot.c), and what `moco train --resume` reads
 * of it (trainer/train.c): train_best_knn, then train_metrics_rewind to the
 * checkpoint's step. The first 4 input bytes are that step (u32 LE), the
 * rest is the file. The rewind keeps whole lines of the file only, in
 * their order: its result is no longer than the file, and the same file
 * when nothing was dropped. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/plot.h"
#include "trainer/train.h"

static char dir[256], path[300];

static size_t slurp(uint8_t **out)
{
    FILE *f = fopen(path, "rb");
    if (!f) abort();
    size_t cap = 1 << 12, n = 0, got;
    uint8_t *b = malloc(cap);
    while (b && (got = fread(b + n, 1, cap - n, f)) > 0)
        if ((n += got) == cap) b = realloc(b, cap *= 2);
    if (!b) abort();
    fclose(f);
    *out = b;
    return n;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/moco-fuzz-metrics-XXXXXX");
        if (!mkdtemp(dir)) abort();
        snprintf(path, sizeof path, "%s/metrics.jsonl", dir);
    }
    if (size < 4) return 0;
    int64_t step = (int64_t)(data[0] | (uint32_t)data[1] << 8 | (uint32_t)data[2] << 16 | (uint32_t)data[3] << 24);
    data += 4, size -= 4;
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    (void)plot_load_check(path);
    (void)train_best_knn(path);
    int dropped = -1;
    if (train_metrics_rewind(path, step, &dropped) == 0) {
        uint8_t *b;
        size_t n = slurp(&b);
        if (dropped < 0 || n > size || (!dropped && (n != size || memcmp(b, data, n)))) abort();
        /* every line kept is a whole line of the file, in the file's order */
        size_t at = 0; /* where the next kept line is looked for (a line's start) */
        for (size_t k = 0; k < n;) {
            const uint8_t *nl = memchr(b + k, '\n', n - k);
            size_t l = nl ? (size_t)(nl - (b + k)) + 1 : n - k;
            while (at < size && !(at + l <= size && !memcmp(data + at, b + k, l) && (at + l == size || data[at + l - 1] == '\n'))) {
                const uint8_t *e = memchr(data + at, '\n', size - at);
                at = e ? (size_t)(e - data) + 1 : size;
            }
            if (at >= size) abort();
            at += l, k += l;
        }
        free(b);
    }
    return 0;
}
