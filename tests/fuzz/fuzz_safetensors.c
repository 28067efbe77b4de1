/* fuzz_safetensors.c: libFuzzer target for the safetensors reader
 * (formats/safetensors.c, its JSON header through formats/json.c):
 * moco_st_parse on arbitrary bytes, then every tensor's data is read
 * through moco_st_data and looked up by name, as the checkpoint loader does. */
#include <stdint.h>
#include <stdlib.h>
#include "formats/safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    moco_st *st = NULL;
    if (moco_st_parse(data, size, "fuzz", &st) == 0) {
        int n = moco_st_count(st);
        for (int i = 0; i < n; i++) {
            const moco_st_tensor *t = moco_st_at(st, i);
            if (!t || t->end < t->begin) abort();
            if (moco_st_find(st, t->name) == NULL) abort();
            const uint8_t *d = moco_st_data(st, t);
            volatile uint8_t s = 0;
            for (uint64_t b = 0; b < t->end - t->begin; b++) s ^= d[b];
            (void)s;
        }
        moco_st_destroy(&st);
    }
    return 0;
}
