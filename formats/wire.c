/* wire.c: packing and bounds-checked parsing of the wire messages (wire.h).
 * Every parser checks the frame length before it reads a byte. */
#include "formats/wire.h"

#include <string.h>

#include "formats/errors.h"
#include "formats/pipeline.h"
#include "formats/record.h"

const char *moco_msg_type_name(int type)
{
    static const char *const names[] = {"?",     "SAMPLE", "PAIR", "FAILED", "READY", "HEARTBEAT", "EPOCH_END",
                                        "STOP",  "HELLO",  "ACK",  "END",    "PAIRS", "SAMPLES", "WELCOME", "REFUSED", "BYE",
                                        "BUSY"};
    return type > 0 && type < (int)(sizeof names / sizeof *names) ? names[type] : "?";
}

uint16_t moco_wire_type_version(uint16_t type)
{
    if (type == MOCO_MSG_BUSY) return 5;
    if (type == MOCO_MSG_WELCOME || type == MOCO_MSG_REFUSED || type == MOCO_MSG_BYE) return 3;
    return type == MOCO_MSG_READY || type == MOCO_MSG_SAMPLES ? 2 : 1;
}

void moco_wire_prefix_pack(uint8_t out[MOCO_WIRE_PREFIX_SIZE], uint16_t type)
{
    memcpy(out, MOCO_WIRE_MAGIC, 4);
    moco_put_le16(out + 4, moco_wire_type_version(type));
    moco_put_le16(out + 6, type);
}

uint16_t moco_wire_version(const void *frame) { return moco_get_le16((const uint8_t *)frame + 4); }

int moco_wire_peek(const void *frame, size_t len, uint16_t *type)
{
    const uint8_t *p = frame;
    *type = 0;
    if (!p || len < MOCO_WIRE_PREFIX_SIZE)
        return moco_err(MOCO_ECORRUPT, "wire message: header frame of %zu bytes, shorter than the %d-byte prefix", len,
                        MOCO_WIRE_PREFIX_SIZE);
    if (memcmp(p, MOCO_WIRE_MAGIC, 4))
        return moco_err(MOCO_ECORRUPT, "wire message: bad magic %02x %02x %02x %02x (expected \"MOCW\")", p[0], p[1],
                        p[2], p[3]);
    uint16_t v = moco_get_le16(p + 4), t = moco_get_le16(p + 6);
    if (v < 1 || v > MOCO_WIRE_VERSION)
        return moco_err(MOCO_EFORMAT, "wire message: version %u, this build speaks versions 1 to %d", v, MOCO_WIRE_VERSION);
    if (t == 0 || t >= MOCO_MSG_TYPE_MAX) return moco_err(MOCO_ECORRUPT, "wire message: invalid type %u", t);
    *type = t;
    return 0;
}

/* Check the prefix, the expected type and the exact (or minimum) length. */
static int expect(const void *frame, size_t len, uint16_t want, size_t size, int exact)
{
    uint16_t t;
    int rc = moco_wire_peek(frame, len, &t);
    if (rc) return rc;
    if (t != want)
        return moco_err(MOCO_ECORRUPT, "wire message: got a %s (type %u) where a %s was expected", moco_msg_type_name(t),
                        t, moco_msg_type_name(want));
    if (exact ? len != size : len < size)
        return moco_err(MOCO_ECORRUPT, "wire message: %s header of %zu bytes, expected %s%zu", moco_msg_type_name(want),
                        len, exact ? "" : "at least ", size);
    return 0;
}

void moco_wire_sample_pack(uint8_t out[MOCO_WIRE_SAMPLE_SIZE], const moco_wire_sample *s)
{
    moco_wire_prefix_pack(out, MOCO_MSG_SAMPLE);
    moco_put_le32(out + 8, s->epoch);
    moco_put_le32(out + 12, 0);
    moco_put_le64(out + 16, s->index);
}

int moco_wire_sample_parse(const void *frame, size_t len, moco_wire_sample *out)
{
    memset(out, 0, sizeof *out);
    int rc = expect(frame, len, MOCO_MSG_SAMPLE, MOCO_WIRE_SAMPLE_SIZE, 1);
    if (rc) return rc;
    const uint8_t *p = frame;
    if (moco_get_le32(p + 12) != 0)
        return moco_err(MOCO_ECORRUPT, "wire message: SAMPLE of sample %llu (epoch %u) has a non-zero reserved field 0x%08x",
                        (unsigned long long)moco_get_le64(p + 16), moco_get_le32(p + 8), moco_get_le32(p + 12));
    out->epoch = moco_get_le32(p + 8);
    out->index = moco_get_le64(p + 16);
    return 0;
}

void moco_wire_pair_pack(uint8_t out[MOCO_WIRE_PAIR_SIZE], const moco_wire_pair *p)
{
    moco_wire_prefix_pack(out, MOCO_MSG_PAIR);
    moco_put_le32(out + 8, p->epoch);
    moco_put_le32(out + 12, (uint32_t)p->label);
    moco_put_le64(out + 16, p->index);
    moco_put_le16(out + 24, p->height);
    moco_put_le16(out + 26, p->width);
    out[28] = p->channels;
    out[29] = p->layout;
    moco_put_le16(out + 30, 0);
}

int moco_wire_pair_parse(const void *frame, size_t len, moco_wire_pair *out)
{
    memset(out, 0, sizeof *out);
    int rc = expect(frame, len, MOCO_MSG_PAIR, MOCO_WIRE_PAIR_SIZE, 1);
    if (rc) return rc;
    const uint8_t *p = frame;
    moco_wire_pair w = {moco_get_le32(p + 8), (int32_t)moco_get_le32(p + 12), moco_get_le64(p + 16),
                        moco_get_le16(p + 24), moco_get_le16(p + 26), p[28], p[29]};
    if (!w.height || !w.width || w.height > MOCO_VIEW_SIDE_MAX || w.width > MOCO_VIEW_SIDE_MAX ||
        (w.channels != 1 && w.channels != 3) || w.layout != MOCO_LAYOUT_HWC_U8)
        return moco_err(MOCO_ECORRUPT,
                        "wire message: PAIR of sample %llu (epoch %u) has bad view shape %ux%ux%u layout %u "
                        "(sides 1..%d, channels 1 or 3, layout 0)",
                        (unsigned long long)w.index, w.epoch, w.height, w.width, w.channels, w.layout, MOCO_VIEW_SIDE_MAX);
    if (moco_get_le16(p + 30) != 0)
        return moco_err(MOCO_ECORRUPT, "wire message: PAIR of sample %llu (epoch %u) has a non-zero reserved field 0x%04x",
                        (unsigned long long)w.index, w.epoch, moco_get_le16(p + 30));
    *out = w;
    return 0;
}

size_t moco_wire_failed_pack(uint8_t *out, uint32_t epoch, uint64_t index, int32_t code, const char *reason)
{
    moco_wire_prefix_pack(out, MOCO_MSG_FAILED);
    moco_put_le32(out + 8, epoch);
    moco_put_le32(out + 12, (uint32_t)code);
    moco_put_le64(out + 16, index);
    size_t n = reason ? strnlen(reason, MOCO_WIRE_REASON_MAX) : 0;
    if (n) memcpy(out + MOCO_WIRE_FAILED_MIN, reason, n);
    return MOCO_WIRE_FAILED_MIN + n;
}

int moco_wire_failed_parse(const void *frame, size_t len, moco_wire_failed *out)
{
    memset(out, 0, sizeof *out);
    int rc = expect(frame, len, MOCO_MSG_FAILED, MOCO_WIRE_FAILED_MIN, 0);
    if (rc) return rc;
    if (len > MOCO_WIRE_FAILED_MIN + MOCO_WIRE_REASON_MAX)
        return moco_err(MOCO_ECORRUPT, "wire message: FAILED of %zu bytes, longer than the %d allowed", len,
                        MOCO_WIRE_FAILED_MIN + MOCO_WIRE_REASON_MAX);
    const uint8_t *p = frame;
    out->epoch = moco_get_le32(p + 8);
    out->code = (int32_t)moco_get_le32(p + 12);
    out->index = moco_get_le64(p + 16);
    out->reason = (const char *)p + MOCO_WIRE_FAILED_MIN;
    out->reason_len = len - MOCO_WIRE_FAILED_MIN;
    return 0;
}
