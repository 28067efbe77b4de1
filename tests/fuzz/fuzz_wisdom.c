/* fuzz_wisdom.c: libFuzzer target for the kernel-choice cache's reader
 * (trainer/engine/tune.c, the "wisdom" file of tune.h, kept across runs):
 * the input is written as the wisdom file, then tune_configure and
 * tune_load read it as the first tune_conv of a run does. A line counts only
 * under this process's key, which the fuzzer cannot guess: in the input,
 * "@C" stands for this CPU's name (tune_cpu), "@B" for this build
 * (tune_build) and "@T" for the thread count, so that the seeds
 * (make_corpus.py) reach the entries' parse as well as the key's. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "trainer/engine/par.h"
#include "trainer/engine/tune.h"

static char dir[256], path[300], threads[16];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof dir, "/tmp/moco-fuzz-wisdom-XXXXXX");
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/wisdom.jsonl", dir);
    tune_configure(TUNE_MEASURE, path); /* no file yet: the key only */
    if (tune_load() != 0) abort();
    snprintf(threads, sizeof threads, "%d", par_threads());
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    for (size_t i = 0; i < size; i++) {
        const char *sub = NULL;
        if (data[i] == '@' && i + 1 < size)
            sub = data[i + 1] == 'C' ? tune_cpu() : data[i + 1] == 'B' ? tune_build() : data[i + 1] == 'T' ? threads : NULL;
        if (sub) fputs(sub, f), i++;
        else fputc(data[i], f);
    }
    fclose(f);
    tune_configure(TUNE_MEASURE, path);
    int n = tune_load();
    if (n < 0 || (size_t)n > size / 8) abort(); /* a choice is a line of 8 bytes at least */
    (void)tune_note();
    return 0;
}
