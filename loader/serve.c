/* serve.c: the loader's serve mode (`moco loader --pairs EP`, `moco run
 * --serve`): the workers push their pairs to the loader, which checks each
 * message against the epoch's state (formats/README.md, "serve mode": the
 * current epoch, an index below the count and handed out in this epoch;
 * leftovers of an epoch before a resume are stale) and forwards it,
 * unchanged and without copying, to the one consumer over its control
 * socket, only while that socket has room: so the consumer's pace reaches
 * the workers. Rejected messages are counted and logged. */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <zmq.h>

#include "formats/pipeline.h"
#include "formats/wire.h"
#include "loader/state.h"

/* Check a pair message from a worker (frames f, nf) against the epoch's
 * state. Returns 1 to forward it, 0 to drop it as stale (a late duplicate
 * of a finished epoch), -1 to reject it (malformed; a pair of another
 * epoch, of an index out of range or never handed out). */
static int check_pairs(loader *L, zmq_msg_t *f, int nf, uint32_t *npairs)
{
    const uint8_t *h = zmq_msg_data(&f[0]);
    size_t hl = zmq_msg_size(&f[0]);
    uint16_t type;
    uint32_t cnt = 1;
    moco_wire_pair one;
    *npairs = 1;
    if (moco_wire_peek(h, hl, &type)) return -1;
    if (type == MOCO_MSG_PAIRS) {
        if (nf != 2 || moco_pipe_pairs_parse(h, hl, zmq_msg_size(&f[1]), &cnt)) return -1;
    } else if (type == MOCO_MSG_PAIR) {
        if (nf != 3 || moco_wire_pair_parse(h, hl, &one) || zmq_msg_size(&f[1]) != moco_wire_pair_view_bytes(&one) ||
            zmq_msg_size(&f[2]) != moco_wire_pair_view_bytes(&one))
            return -1;
    } else {
        return -1;
    }
    *npairs = cnt;
    int current = 0;
    for (uint32_t i = 0; i < cnt; i++) {
        moco_wire_pair p = one;
        if (type == MOCO_MSG_PAIRS) moco_pipe_pairs_at(h, i, &p);
        if (p.index >= L->n || p.epoch > L->max_epoch) return -1; /* (epoch, max_epoch]: left over from before a resume */
        if (p.epoch == L->epoch && L->started) {
            if (!L->touched[p.index]) return -1;
            current = 1;
        }
    }
    return current;
}

/* Forward what waits in L->fw; returns 1 if it went (or there was nothing),
 * 0 if the consumer has no room (try again later). */
int loader_forward_pending(loader *L)
{
    if (!L->nfw) return 1;
    if (!L->have_consumer) return 0;
    if (zmq_send(L->ctl, L->cid, L->cidlen, ZMQ_SNDMORE | ZMQ_DONTWAIT) < 0) return 0; /* full, or gone: later */
    for (int i = 0; i < L->nfw; i++)
        if (zmq_msg_send(&L->fw[i], L->ctl, i + 1 < L->nfw ? ZMQ_SNDMORE : 0) < 0) zmq_msg_close(&L->fw[i]);
    L->nfw = 0;
    L->forwarded++;
    return 1;
}

/* Read and forward pair messages while the consumer takes them. */
void loader_serve_pairs(loader *L)
{
    for (int burst = 0; burst < 256; burst++) {
        if (!loader_forward_pending(L)) return;
        zmq_msg_t f[4];
        int nf = 0, more = 1, bad = 0;
        while (more) {
            zmq_msg_init(&f[nf < 3 ? nf : 3]);
            if (zmq_msg_recv(&f[nf < 3 ? nf : 3], L->pairs, ZMQ_DONTWAIT) < 0) {
                zmq_msg_close(&f[nf < 3 ? nf : 3]);
                if (nf == 0) return;
                bad = 1;
                break;
            }
            more = zmq_msg_more(&f[nf < 3 ? nf : 3]);
            if (nf < 3) nf++;
            else { zmq_msg_close(&f[3]); bad = 1; }
        }
        uint32_t np = 0;
        int r = bad ? -1 : check_pairs(L, f, nf, &np);
        if (r == 1) {
            memcpy(L->fw, f, sizeof(zmq_msg_t) * (size_t)nf);
            L->nfw = nf;
            continue;
        }
        for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
        if (r == 0) { L->stale_pairs += np; continue; }
        L->rejected_pairs += np;
        if (L->rejected_pairs <= 20 || !(L->rejected_pairs & (L->rejected_pairs - 1)))
            fprintf(stderr, "moco loader: rejected a pair message of %u pairs (malformed, another epoch, an index out of range "
                            "or never handed out; %" PRIu64 " pairs rejected so far)\n", np, L->rejected_pairs);
        moco_jw w;
        loader_ev_begin(L, &w, "rejected");
        moco_jw_str(&w, "what", "pairs");
        moco_jw_u64(&w, "pairs", np);
        moco_jw_u64(&w, "total", L->rejected_pairs);
        loader_ev_end(L, &w);
    }
}

