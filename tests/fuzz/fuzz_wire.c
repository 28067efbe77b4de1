/* fuzz_wire.c: libFuzzer target for the data wire messages of
 * formats/wire.c: moco_wire_peek and the SAMPLE, PAIR and FAILED parsers
 * (every parser gets every input), plus the PAIRS batch header
 * (moco_pipe_pairs_parse, formats/pipeline.c) with a data length taken from
 * the first 4 bytes, and the SAMPLES batch header (moco_pipe_samples_parse)
 * the same way. Checks: no out-of-bounds read, a FAILED reason lies inside
 * the frame, PAIRS headers read back within the frame, SAMPLES record
 * lengths add up to the data frame. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "formats/pipeline.h"
#include "formats/record.h"
#include "formats/wire.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    /* copy so that ASan sees the exact frame bounds */
    uint8_t *f = malloc(size ? size : 1);
    if (!f) return 0;
    memcpy(f, data, size);
    uint16_t type;
    (void)moco_wire_peek(f, size, &type);
    moco_wire_sample s;
    (void)moco_wire_sample_parse(f, size, &s);
    moco_wire_pair p;
    if (moco_wire_pair_parse(f, size, &p) == 0 && moco_wire_pair_view_bytes(&p) == 0) abort();
    moco_wire_failed fl;
    if (moco_wire_failed_parse(f, size, &fl) == 0) {
        if (fl.reason_len && (fl.reason < (const char *)f || fl.reason + fl.reason_len > (const char *)f + size)) abort();
        volatile char c = 0;
        for (size_t i = 0; i < fl.reason_len; i++) c ^= fl.reason[i];
        (void)c;
    }
    if (size >= 4) {
        size_t dlen = moco_get_le32(f) & 0xFFFFFF;
        uint32_t n = 0;
        if (moco_pipe_pairs_parse(f + 4, size - 4, dlen, &n) == 0) {
            size_t tot = 0;
            for (uint32_t i = 0; i < n; i++) {
                moco_pipe_pairs_at(f + 4, i, &p);
                tot += 2 * moco_wire_pair_view_bytes(&p);
            }
            if (tot != dlen) abort();
        }
        if (moco_pipe_samples_parse(f + 4, size - 4, dlen, &n) == 0) {
            if (n < 1 || n > MOCO_SAMPLES_MAX || size - 4 != 16 + (size_t)MOCO_SAMPLES_ENTRY * n) abort();
            size_t tot = 0;
            for (uint32_t i = 0; i < n; i++) {
                moco_pipe_sample e;
                moco_pipe_samples_at(f + 4, i, &e);
                tot += e.len;
            }
            if (tot != dlen) abort();
        }
    }
    free(f);
    return 0;
}
