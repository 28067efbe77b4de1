/* fuzz_sources.c: libFuzzer target for the CIFAR-10 and IDX readers
 * (loader/sources.c, mk_source_open on a directory). The first input byte
 * picks the layout; the rest is written to files in a scratch directory:
 *   0: CIFAR   test_batch.bin (all of it)
 *   1: IDX     t10k-images-idx3-ubyte and t10k-labels-idx1-ubyte: the next
 *              2 bytes give the length of the image file, the rest is labels
 *   2: IDX, the same, gzipped names (files written raw: gzread passes them
 *              through), to reach the .gz path
 *   3: CIFAR   with class names: the next 2 bytes (u16 LE) give the length of
 *              batches.meta.txt (cifar_classes), the rest is test_batch.bin
 * Every item returned must have its pixels inside an owned blob; a CIFAR
 * source opened has 10 class names, each a non-empty line without its
 * line end. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include "loader/sources.h"

static char dir[256];

static void put(const char *name, const uint8_t *d, size_t n)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    FILE *f = fopen(p, "wb");
    if (!f) abort();
    if (n && fwrite(d, 1, n, f) != n) abort();
    fclose(f);
}

static void rm(const char *name)
{
    char p[512];
    snprintf(p, sizeof p, "%s/%s", dir, name);
    unlink(p);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (!dir[0]) {
        snprintf(dir, sizeof dir, "/tmp/moco-fuzz-sources-XXXXXX");
        if (!mkdtemp(dir)) abort();
    }
    static const char *all[] = {"test_batch.bin", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
                                "t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz", "batches.meta.txt"};
    for (size_t i = 0; i < sizeof all / sizeof *all; i++) rm(all[i]);
    if (size < 1) return 0;
    int kind = data[0] % 4;
    data++, size--;
    const char *fmt;
    if (kind == 0 || kind == 3) {
        if (kind == 3) {
            if (size < 2) return 0;
            size_t ml = (size_t)data[0] | (size_t)data[1] << 8;
            data += 2, size -= 2;
            if (ml > size) ml = size;
            put("batches.meta.txt", data, ml);
            data += ml, size -= ml;
        }
        put("test_batch.bin", data, size);
        fmt = "cifar10";
    } else {
        if (size < 2) return 0;
        size_t il = (size_t)data[0] | (size_t)data[1] << 8;
        data += 2, size -= 2;
        if (il > size) il = size;
        int gz = kind == 2;
        put(gz ? "t10k-images-idx3-ubyte.gz" : "t10k-images-idx3-ubyte", data, il);
        put(gz ? "t10k-labels-idx1-ubyte.gz" : "t10k-labels-idx1-ubyte", data + il, size - il);
        fmt = "idx";
    }
    mk_source s = {0};
    if (mk_source_open(dir, fmt, NULL, &s) == 0) {
        volatile uint8_t x = 0;
        for (size_t i = 0; i < s.n; i++) {
            const mk_item *it = &s.items[i];
            size_t px = (size_t)it->w * it->h * it->c;
            for (size_t b = 0; b < px; b++) x ^= it->pixels[b];
        }
        (void)x;
        if (!strcmp(fmt, "cifar10")) {
            if (s.nclasses != 10) abort();
            for (uint32_t i = 0; i < s.nclasses; i++)
                if (!s.classes[i][0] || strpbrk(s.classes[i], "\r\n")) abort();
        }
    }
    mk_source_free(&s);
    return 0;
}
