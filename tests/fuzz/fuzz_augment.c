/* fuzz_augment.c: libFuzzer target for the worker's decode-and-augment path
 * (augment/augment.c: augment_pair) on an arbitrary record payload: libvips
 * and TurboJPEG decoding hostile JPEG/PNG bytes, and raw pixels with any
 * dimensions. The input is the payload; the first 8 bytes choose the record
 * header (encoding, channels, width, height: small, so raw pixels fit) and
 * the record is built with a valid CRC so that the decoder is reached.
 * The recipe is "cifar" at 16x16 output. */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include "augment/augment.h"
#include "formats/errors.h"
#include "formats/record.h"

static augment_ctx *ctx;
static uint8_t *q, *k;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    augment_recipe r;
    if (augment_vips_init((*argv)[0]) || augment_recipe_init(&r, "cifar", 16) || augment_ctx_new(&r, &ctx)) abort();
    size_t vb = augment_view_max_bytes(&r);
    q = malloc(vb);
    k = malloc(vb);
    if (!q || !k) abort();
    (void)argc;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 8 || size > (1 << 20)) return 0;
    moco_rec_header h = {0};
    h.version = MOCO_REC_VERSION;
    h.encoding = data[0] % MOCO_ENC_COUNT;
    h.channels = 1 + data[1] % 4;
    h.label = (int8_t)data[2];
    h.width = 1 + (moco_get_le16(data + 3) % 512);
    h.height = 1 + (moco_get_le16(data + 5) % 512);
    if (data[7] & 1) { /* raw: make the dimensions fit the payload often */
        size_t px = size - 8, c = h.channels;
        if (h.encoding == MOCO_ENC_RAW && px >= c && px / c > 0) {
            h.width = 1 + data[7] / 2 % 64;
            h.height = (uint32_t)(px / c / h.width);
            if (h.height == 0) h.height = 1;
        }
    }
    size_t len = 0;
    uint8_t *rec = moco_rec_build(&h, data + 8, (uint32_t)(size - 8), &len);
    if (!rec) return 0;
    augment_info info;
    int rc = augment_pair(ctx, rec, len, 1, 7, q, k, &info);
    if (rc == 0) {
        if (info.height < 1 || info.width < 1 || info.height > 16 || info.width > 16) abort();
    } else if (rc >= 0) {
        abort();
    }
    free(rec);
    return 0;
}
