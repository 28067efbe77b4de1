/* fuzz_record.c: libFuzzer target for the LMDB record parser,
 * moco_rec_parse (formats/record.c), with and without the CRC check.
 * Promise checked: any bytes give 0 or a clean MOCO_E* code; on success
 * the payload lies inside the input and its length matches the header. */
#include <stdint.h>
#include <stdlib.h>
#include "formats/errors.h"
#include "formats/record.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    for (int crc = 0; crc < 2; crc++) {
        moco_rec_header h;
        const uint8_t *pl = NULL;
        int rc = moco_rec_parse(data, size, crc, "fuzz", &h, &pl);
        if (rc == 0) {
            if (pl != data + MOCO_REC_HEADER_SIZE || (size_t)h.payload_len + MOCO_REC_HEADER_SIZE != size) abort();
            volatile uint8_t s = 0;
            for (size_t i = 0; i < h.payload_len; i++) s ^= pl[i];
            (void)s;
        } else if (rc >= 0) {
            abort();
        }
    }
    return 0;
}
