/* record.h: the on-disk sample record (the value of one LMDB entry) and its
 * key. See formats/README.md, "Record format", for the byte layout.
 *
 * A record is a 32-byte header followed by the payload: the encoded image
 * bytes (JPEG, PNG: the original file's, or a lossless PNG that moco mkdb
 * re-encoded) or raw uint8 pixels (HWC, interleaved). All header
 * integers are little-endian. The key of sample i is i as an 8-byte
 * big-endian integer, so LMDB's key order is index order.
 *
 * Version 2 (written since 2026-12-05) puts a CRC-32 of the header's first
 * 28 bytes in the last 4, which version 1 reserved as 0: a damaged label,
 * size or CRC field is found, not only a damaged payload. Version 1 records
 * are still read; their headers are checked field by field only. */
#ifndef MOCO_RECORD_H
#define MOCO_RECORD_H

#include <stddef.h>
#include <stdint.h>

#define MOCO_REC_MAGIC "MOCR"
#define MOCO_REC_VERSION 2          /* written; versions 1 and 2 are read */
#define MOCO_REC_VERSION_MIN 1
#define MOCO_REC_HEADER_SIZE 32
#define MOCO_KEY_SIZE 8
#define MOCO_MAX_SIDE 65535u        /* largest width or height accepted */
#define MOCO_MAX_PAYLOAD (1u << 30) /* largest payload accepted (1 GiB) */

typedef enum {
    MOCO_ENC_RAW = 0,  /* uint8 pixels, height x width x channels, row-major */
    MOCO_ENC_JPEG = 1,
    MOCO_ENC_PNG = 2,
    MOCO_ENC_COUNT
} moco_encoding;

typedef struct {
    uint16_t version;
    uint8_t encoding;     /* moco_encoding */
    uint8_t channels;     /* 1, 2, 3 or 4 */
    int32_t label;        /* class index, or -1 when unlabelled */
    uint32_t width, height;
    uint32_t payload_len; /* bytes following the header */
    uint32_t crc32;       /* CRC-32 (zlib / IEEE 802.3) of the payload */
} moco_rec_header;

/* Write the header of hdr into out[0..32): bytes 28..31 are 0 for version
 * 1 and the CRC-32 of bytes 0..27 for version 2. Never fails. */

void moco_rec_header_pack(const moco_rec_header *hdr, uint8_t out[MOCO_REC_HEADER_SIZE]);

/* Parse and validate a whole record value of `len` bytes: magic, version,
 * the header's CRC (version 2, always: 28 bytes), encoding, channels,
 * dimensions, payload length == len - 32, and (if check_crc) the payload
 * CRC. On success fills *hdr and *payload (pointing
 * into val). Returns 0, MOCO_ECORRUPT or MOCO_EFORMAT (newer version or
 * unknown encoding), with a message naming `what` (e.g. "record 17"). */
int moco_rec_parse(const void *val, size_t len, int check_crc, const char *what,
                   moco_rec_header *hdr, const uint8_t **payload);

/* Build a whole record of the current version in a new malloc'd buffer of
 * 32 + payload_len bytes, computing the CRCs. hdr->version,
 * hdr->payload_len and hdr->crc32 are filled in.
 * Returns NULL if out of memory. */
uint8_t *moco_rec_build(moco_rec_header *hdr, const void *payload, uint32_t payload_len, size_t *out_len);

/* CRC-32 of a buffer (zlib's polynomial). */
uint32_t moco_crc32(const void *buf, size_t len);

void moco_key_encode(uint64_t index, uint8_t out[MOCO_KEY_SIZE]);
uint64_t moco_key_decode(const uint8_t in[MOCO_KEY_SIZE]);

const char *moco_encoding_name(int enc); /* "raw", "jpeg", "png" or "?" */

/* Little-endian loads and stores, for this and the other formats. */
static inline void moco_put_le16(uint8_t *p, uint16_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); }
static inline void moco_put_le32(uint8_t *p, uint32_t v) { for (int i = 0; i < 4; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline void moco_put_le64(uint8_t *p, uint64_t v) { for (int i = 0; i < 8; i++) p[i] = (uint8_t)(v >> (8 * i)); }
static inline uint16_t moco_get_le16(const uint8_t *p) { return (uint16_t)(p[0] | (p[1] << 8)); }
static inline uint32_t moco_get_le32(const uint8_t *p)
{
    return (uint32_t)p[0] | ((uint32_t)p[1] << 8) | ((uint32_t)p[2] << 16) | ((uint32_t)p[3] << 24);
}
static inline uint64_t moco_get_le64(const uint8_t *p)
{
    return (uint64_t)moco_get_le32(p) | ((uint64_t)moco_get_le32(p + 4) << 32);
}

#endif
