/* pipeline.c: pack and strictly parse the pipeline's control messages. */
#include "formats/pipeline.h"
#include "formats/errors.h"
#include "formats/record.h"

#include <string.h>

size_t moco_pipe_simple(uint8_t *b, uint16_t type)
{
    moco_wire_prefix_pack(b, type);
    return MOCO_WIRE_PREFIX_SIZE;
}

size_t moco_pipe_ready(uint8_t *b, uint32_t free_slots, uint64_t received)
{
    moco_wire_prefix_pack(b, MOCO_MSG_READY);
    moco_put_le32(b + 8, free_slots);
    moco_put_le64(b + 12, received);
    return 20;
}

size_t moco_pipe_end(uint8_t *b, uint32_t epochs)
{
    moco_wire_prefix_pack(b, MOCO_MSG_END);
    moco_put_le32(b + 8, epochs);
    return 12;
}

size_t moco_pipe_hello(uint8_t *b, uint32_t epoch, uint64_t count)
{
    moco_wire_prefix_pack(b, MOCO_MSG_HELLO);
    moco_put_le32(b + 8, epoch);
    moco_put_le64(b + 12, count);
    return 20;
}

size_t moco_pipe_ack(uint8_t *b, uint32_t epoch, const uint64_t *idx, uint32_t n)
{
    moco_wire_prefix_pack(b, MOCO_MSG_ACK);
    moco_put_le32(b + 8, epoch);
    moco_put_le32(b + 12, n);
    for (uint32_t i = 0; i < n; i++) moco_put_le64(b + 16 + 8 * (size_t)i, idx[i]);
    return 16 + 8 * (size_t)n;
}

size_t moco_pipe_epoch_end(uint8_t *b, uint32_t epoch, uint64_t delivered, const uint64_t *failed, uint32_t nf)
{
    moco_wire_prefix_pack(b, MOCO_MSG_EPOCH_END);
    moco_put_le32(b + 8, epoch);
    moco_put_le64(b + 12, delivered);
    moco_put_le32(b + 20, nf);
    for (uint32_t i = 0; i < nf; i++) moco_put_le64(b + 24 + 8 * (size_t)i, failed[i]);
    return 24 + 8 * (size_t)nf;
}

static int want(size_t n, size_t need, const char *what)
{
    if (n != need) return moco_err(MOCO_ECORRUPT, "%s message of %zu bytes, expected %zu", what, n, need);
    return 0;
}

int moco_pipe_parse(const uint8_t *p, size_t n, moco_pipe_msg *m)
{
    int rc = moco_wire_peek(p, n, &m->type);
    if (rc) return rc;
    m->epoch = m->credits = m->n = 0;
    m->count = m->received = 0;
    m->idx = NULL;
    switch (m->type) {
    case MOCO_MSG_HEARTBEAT:
    case MOCO_MSG_STOP:
        return want(n, MOCO_WIRE_PREFIX_SIZE, moco_msg_type_name(m->type));
    case MOCO_MSG_READY:
        if ((rc = want(n, 20, "READY"))) return rc;
        m->credits = moco_get_le32(p + 8);
        m->received = moco_get_le64(p + 12);
        return 0;
    case MOCO_MSG_END:
        if ((rc = want(n, 12, "END"))) return rc;
        m->epoch = moco_get_le32(p + 8);
        return 0;
    case MOCO_MSG_HELLO:
        if ((rc = want(n, 20, "HELLO"))) return rc;
        m->epoch = moco_get_le32(p + 8);
        m->count = moco_get_le64(p + 12);
        return 0;
    case MOCO_MSG_ACK:
        if (n < 16) return want(n, 16, "ACK");
        m->epoch = moco_get_le32(p + 8);
        m->n = moco_get_le32(p + 12);
        if ((rc = want(n, 16 + 8 * (size_t)m->n, "ACK"))) return rc;
        m->idx = p + 16;
        return 0;
    case MOCO_MSG_EPOCH_END:
        if (n < 24) return want(n, 24, "EPOCH_END");
        m->epoch = moco_get_le32(p + 8);
        m->count = moco_get_le64(p + 12);
        m->n = moco_get_le32(p + 20);
        if ((rc = want(n, 24 + 8 * (size_t)m->n, "EPOCH_END"))) return rc;
        m->idx = p + 24;
        return 0;
    default:
        return moco_err(MOCO_ECORRUPT, "%s message (type %u) is not a control message", moco_msg_type_name(m->type), m->type);
    }
}
