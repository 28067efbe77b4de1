/* fuzz_pipeline.c: libFuzzer target for the pipeline control messages
 * (formats/pipeline.c, moco_pipe_parse): READY (versions 1 and 2),
 * HEARTBEAT, HELLO, ACK, EPOCH_END, END, STOP. Checks: a parsed ACK / EPOCH_END index list lies
 * inside the frame (every index is read back, as the loader does). */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "formats/pipeline.h"
#include "formats/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    uint8_t *f = malloc(size ? size : 1);
    if (!f) return 0;
    memcpy(f, data, size);
    moco_pipe_msg m;
    int rc = moco_pipe_parse(f, size, &m);
    if (rc == 0 && m.n) {
        if (!m.idx) abort();
        volatile uint64_t s = 0;
        for (uint32_t i = 0; i < m.n; i++) s ^= moco_get_le64(m.idx + 8 * (size_t)i);
        (void)s;
    } else if (rc == 0 && m.batch > MOCO_SAMPLES_MAX) {
        abort();
    } else if (rc > 0) {
        abort();
    }
    free(f);
    return 0;
}
