/* record.c: pack, parse and validate sample records. */
#include "formats/record.h"
#include "formats/errors.h"

#include <stdlib.h>
#include <string.h>
#include <zlib.h>

uint32_t moco_crc32(const void *buf, size_t len)
{
    uLong c = crc32(0L, Z_NULL, 0);
    const Bytef *p = buf;
    while (len > 0) { /* zlib takes uInt lengths */
        uInt n = len > (1u << 30) ? (1u << 30) : (uInt)len;
        c = crc32(c, p, n);
        p += n;
        len -= n;
    }
    return (uint32_t)c;
}

void moco_rec_header_pack(const moco_rec_header *h, uint8_t o[MOCO_REC_HEADER_SIZE])
{
    memcpy(o, MOCO_REC_MAGIC, 4);
    moco_put_le16(o + 4, h->version);
    o[6] = h->encoding;
    o[7] = h->channels;
    moco_put_le32(o + 8, (uint32_t)h->label);
    moco_put_le32(o + 12, h->width);
    moco_put_le32(o + 16, h->height);
    moco_put_le32(o + 20, h->payload_len);
    moco_put_le32(o + 24, h->crc32);
    moco_put_le32(o + 28, h->version >= 2 ? moco_crc32(o, 28) : 0); /* version 1: reserved, 0 */
}

int moco_rec_parse(const void *val, size_t len, int check_crc, const char *what,
                   moco_rec_header *h, const uint8_t **payload)
{
    const uint8_t *p = val;
    if (!p || len < MOCO_REC_HEADER_SIZE)
        return moco_err(MOCO_ECORRUPT, "%s: %zu bytes, shorter than the %d-byte record header", what, len, MOCO_REC_HEADER_SIZE);
    if (memcmp(p, MOCO_REC_MAGIC, 4) != 0)
        return moco_err(MOCO_ECORRUPT, "%s: bad magic (not a moco record)", what);
    h->version = moco_get_le16(p + 4);
    h->encoding = p[6];
    h->channels = p[7];
    h->label = (int32_t)moco_get_le32(p + 8);
    h->width = moco_get_le32(p + 12);
    h->height = moco_get_le32(p + 16);
    h->payload_len = moco_get_le32(p + 20);
    h->crc32 = moco_get_le32(p + 24);
    if (h->version < MOCO_REC_VERSION_MIN || h->version > MOCO_REC_VERSION)
        return moco_err(MOCO_EFORMAT, "%s: record version %u, this build reads versions %d to %d", what, h->version,
                        MOCO_REC_VERSION_MIN, MOCO_REC_VERSION);
    if (h->version == 1 && moco_get_le32(p + 28) != 0)
        return moco_err(MOCO_ECORRUPT, "%s: reserved header field is not zero", what);
    if (h->version >= 2 && moco_crc32(p, 28) != moco_get_le32(p + 28))
        return moco_err(MOCO_ECORRUPT, "%s: header CRC mismatch (a header field is damaged: label %d, size %ux%u, "
                        "%u channels, payload %u bytes as read)", what, h->label, h->width, h->height, h->channels,
                        h->payload_len);
    if (h->encoding >= MOCO_ENC_COUNT)
        return moco_err(MOCO_EFORMAT, "%s: unknown encoding %u", what, h->encoding);
    if (h->channels < 1 || h->channels > 4)
        return moco_err(MOCO_ECORRUPT, "%s: %u channels (expected 1-4)", what, h->channels);
    if (h->width < 1 || h->height < 1 || h->width > MOCO_MAX_SIDE || h->height > MOCO_MAX_SIDE)
        return moco_err(MOCO_ECORRUPT, "%s: image size %ux%u out of range", what, h->width, h->height);
    if (h->label < -1)
        return moco_err(MOCO_ECORRUPT, "%s: label %d (expected >= -1)", what, h->label);
    if ((size_t)h->payload_len != len - MOCO_REC_HEADER_SIZE)
        return moco_err(MOCO_ECORRUPT, "%s: header says %u payload bytes, record holds %zu", what,
                        h->payload_len, len - MOCO_REC_HEADER_SIZE);
    if (h->encoding == MOCO_ENC_RAW &&
        (uint64_t)h->width * h->height * h->channels != h->payload_len)
        return moco_err(MOCO_ECORRUPT, "%s: raw payload of %u bytes does not hold %ux%ux%u pixels", what,
                        h->payload_len, h->height, h->width, h->channels);
    if (check_crc && moco_crc32(p + MOCO_REC_HEADER_SIZE, h->payload_len) != h->crc32)
        return moco_err(MOCO_ECORRUPT, "%s: payload CRC mismatch", what);
    *payload = p + MOCO_REC_HEADER_SIZE;
    return 0;
}

uint8_t *moco_rec_build(moco_rec_header *h, const void *payload, uint32_t n, size_t *out_len)
{
    uint8_t *buf = malloc((size_t)MOCO_REC_HEADER_SIZE + n);
    if (!buf) return NULL;
    h->version = MOCO_REC_VERSION;
    h->payload_len = n;
    h->crc32 = moco_crc32(payload, n);
    moco_rec_header_pack(h, buf);
    if (n) memcpy(buf + MOCO_REC_HEADER_SIZE, payload, n);
    *out_len = (size_t)MOCO_REC_HEADER_SIZE + n;
    return buf;
}

void moco_key_encode(uint64_t index, uint8_t out[MOCO_KEY_SIZE])
{
    for (int i = 0; i < 8; i++) out[i] = (uint8_t)(index >> (56 - 8 * i));
}

uint64_t moco_key_decode(const uint8_t in[MOCO_KEY_SIZE])
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++) v = (v << 8) | in[i];
    return v;
}

const char *moco_encoding_name(int enc)
{
    switch (enc) {
    case MOCO_ENC_RAW: return "raw";
    case MOCO_ENC_JPEG: return "jpeg";
    case MOCO_ENC_PNG: return "png";
    default: return "?";
    }
}
