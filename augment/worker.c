/* worker.c: `moco augment`, the augmentation worker process.
 *
 * Sockets (one ZeroMQ context, one thread): PULL SAMPLE messages from the
 * loader (--pull), PUSH PAIR messages downstream (--push), and PUSH a FAILED
 * report upstream (--failed) for every record that cannot be augmented.
 * The views travel without a copy (zmq_msg_init_data, freed by ZeroMQ once
 * sent). A malformed message (bad magic, version, type or frame count) is
 * dropped and counted; a bad record is reported, logged once and skipped;
 * neither stops the worker. It exits 0 on STOP, SIGINT or SIGTERM, printing
 * its counts. The credit-based dispatch of the pipeline replaces PULL later;
 * augment_pair() (augment.h) is the socket-free core both use. A tcp
 * endpoint needs --keys (CURVE, formats/zsec.h) or --insecure, and every
 * socket caps its frames at the largest legitimate one (ZMQ_MAXMSGSIZE). */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zmq.h>

#include "augment/augment.h"
#include "augment/cmd.h"
#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/pipeline.h"
#include "formats/wire.h"
#include "formats/zsec.h"

static volatile sig_atomic_t stop_flag;
static void on_signal(int sig) { (void)sig; stop_flag = 1; }

static void free_view(void *data, void *hint) { (void)hint; free(data); }

/* Receive every frame of one multipart message (at most 4 kept). */
static int recv_multi(void *s, zmq_msg_t *m, int *nf)
{
    int more = 1, n = 0;
    size_t ml = sizeof more;
    while (more) {
        zmq_msg_t tmp, *dst = n < 4 ? &m[n] : &tmp;
        zmq_msg_init(dst);
        if (zmq_msg_recv(dst, s, 0) < 0) {
            if (dst == &tmp) zmq_msg_close(&tmp);
            for (int i = 0; i < (n < 4 ? n : 4); i++) zmq_msg_close(&m[i]);
            return -1;
        }
        if (dst == &tmp) zmq_msg_close(&tmp);
        n++;
        zmq_getsockopt(s, ZMQ_RCVMORE, &more, &ml);
    }
    *nf = n;
    return 0;
}

static int send_pair(void *push, const augment_info *in, uint32_t epoch, uint64_t index, uint8_t *q, uint8_t *k)
{
    uint8_t h[MOCO_WIRE_PAIR_SIZE];
    moco_wire_pair p = {epoch, in->label, index, (uint16_t)in->height, (uint16_t)in->width, (uint8_t)in->channels,
                        MOCO_LAYOUT_HWC_U8};
    moco_wire_pair_pack(h, &p);
    size_t vb = moco_wire_pair_view_bytes(&p);
    zmq_msg_t mq, mk;
    if (zmq_send(push, h, sizeof h, ZMQ_SNDMORE) < 0) goto fail_both;
    zmq_msg_init_data(&mq, q, vb, free_view, NULL);
    if (zmq_msg_send(&mq, push, ZMQ_SNDMORE) < 0) {
        zmq_msg_close(&mq);
        free(k);
        return -1;
    }
    zmq_msg_init_data(&mk, k, vb, free_view, NULL);
    if (zmq_msg_send(&mk, push, 0) < 0) {
        zmq_msg_close(&mk);
        return -1;
    }
    return 0;
fail_both:
    free(q), free(k);
    return -1;
}

int augment_worker_main(int argc, char **argv)
{
    const char *pull_ep = NULL, *push_ep = NULL, *fail_ep = NULL, *keys = NULL;
    int bind = 0, quiet = 0, insecure = 0;
    long hwm = 16;
    augment_flags f;
    moco_opt opts[AUGMENT_FLAGS_NOPTS + 10];
    int n = augment_flags_opts(&f, opts);
    moco_opt extra[] = {
        {"pull", MOCO_OPT_STR, &pull_ep, "endpoint to PULL SAMPLE messages from", 0, 0, NULL},
        {"push", MOCO_OPT_STR, &push_ep, "endpoint to PUSH PAIR messages to", 0, 0, NULL},
        {"failed", MOCO_OPT_STR, &fail_ep, "endpoint to PUSH FAILED reports to (default: none, log only)", 0, 0, NULL},
        {"bind", MOCO_OPT_FLAG, &bind, "bind the endpoints instead of connecting", 0, 0, NULL},
        {"hwm", MOCO_OPT_INT, &hwm, "high-water mark of each socket, in messages", 1, 100000, NULL},
        {"keys", MOCO_OPT_STR, &keys, "key directory (moco keygen DIR): CURVE on every tcp endpoint", 0, 0, NULL},
        {"insecure", MOCO_OPT_FLAG, &insecure, "allow tcp endpoints without --keys", 0, 0, NULL},
        {"quiet", MOCO_OPT_FLAG, &quiet, "no summary at exit", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    memcpy(opts + n, extra, sizeof extra);
    const moco_optspec spec = {"moco augment", "--pull EP --push EP [--failed EP] [recipe options]",
                               "Augmentation worker: receives SAMPLE messages (formats/wire.h), decodes each record once\n"
                               "and sends a PAIR of two independently augmented uint8 views. A view is a pure function of\n"
                               "(recipe, seed, epoch, index, view). Bad records are reported as FAILED and skipped.\n"
                               "(With --connect LOADER --push EP instead, it speaks the pipeline's credit protocol.)",
                               opts, 0, 0, "pull push"};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    augment_recipe r;
    if (augment_flags_recipe(&f, &spec, &r)) {
        fprintf(stderr, "moco augment: %s\n", moco_errmsg());
        return 2;
    }
    augment_ctx *ctx;
    if (augment_vips_init(argv[0]) || augment_ctx_new(&r, &ctx)) {
        fprintf(stderr, "moco augment: %s\n", moco_errmsg());
        return 1;
    }
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);

    void *zc = zmq_ctx_new();
    void *pull = zmq_socket(zc, ZMQ_PULL), *push = zmq_socket(zc, ZMQ_PUSH);
    void *fail = fail_ep ? zmq_socket(zc, ZMQ_PUSH) : NULL;
    moco_sec *sec = NULL;
    int h = (int)hwm, linger = 1000;
    /* the largest legitimate frame in (a record); push and failed receive nothing */
    int64_t maxin = (int64_t)MOCO_RECORD_WIRE_MAX, maxctl = MOCO_CTL_FRAME_MAX;
    zmq_setsockopt(pull, ZMQ_MAXMSGSIZE, &maxin, sizeof maxin);
    zmq_setsockopt(push, ZMQ_MAXMSGSIZE, &maxctl, sizeof maxctl);
    if (fail) zmq_setsockopt(fail, ZMQ_MAXMSGSIZE, &maxctl, sizeof maxctl);
    zmq_setsockopt(pull, ZMQ_RCVHWM, &h, sizeof h);
    zmq_setsockopt(push, ZMQ_SNDHWM, &h, sizeof h);
    zmq_setsockopt(push, ZMQ_LINGER, &linger, sizeof linger);
    if (fail) zmq_setsockopt(fail, ZMQ_LINGER, &linger, sizeof linger);
    /* tcp: CURVE with --keys, refused without unless --insecure (formats/zsec.h) */
    int (*secure)(moco_sec *, void *, const char *) = bind ? moco_sec_bind : moco_sec_connect;
    if (moco_sec_new(zc, keys, insecure, "moco augment", NULL, &sec) || secure(sec, pull, pull_ep) ||
        secure(sec, push, push_ep) || (fail && secure(sec, fail, fail_ep))) {
        fprintf(stderr, "moco augment: %s\n", moco_errmsg());
        rc = 2;
        goto out;
    }
    int (*join)(void *, const char *) = bind ? zmq_bind : zmq_connect;
    if (join(pull, pull_ep) || join(push, push_ep) || (fail && join(fail, fail_ep))) {
        fprintf(stderr, "moco augment: %s %s: %s\n", bind ? "bind" : "connect", pull_ep, zmq_strerror(zmq_errno()));
        rc = 1;
        goto out;
    }
    if (!quiet)
        fprintf(stderr, "moco augment: ready: recipe %s, size %d, seed %" PRIu64 ", pulling from %s, pushing to %s\n", r.name,
                r.size, r.seed, pull_ep, push_ep);
    size_t vb = augment_view_max_bytes(&r);
    uint64_t pairs = 0, failed = 0, malformed = 0;
    zmq_pollitem_t item = {pull, 0, ZMQ_POLLIN, 0};
    while (!stop_flag) {
        int pr = zmq_poll(&item, 1, 200);
        if (pr < 0 && zmq_errno() == EINTR) continue;
        if (pr < 0) {
            fprintf(stderr, "moco augment: poll: %s\n", zmq_strerror(zmq_errno()));
            rc = 1;
            break;
        }
        if (!pr) continue;
        zmq_msg_t m[4];
        int nf;
        if (recv_multi(pull, m, &nf)) continue;
        uint16_t type;
        moco_wire_sample s;
        int kept = nf < 4 ? nf : 4;
        if (moco_wire_peek(zmq_msg_data(&m[0]), zmq_msg_size(&m[0]), &type) == 0 && type == MOCO_MSG_STOP) {
            for (int i = 0; i < kept; i++) zmq_msg_close(&m[i]);
            break;
        }
        if (moco_wire_sample_parse(zmq_msg_data(&m[0]), zmq_msg_size(&m[0]), &s) || nf != 2) {
            if (nf != 2 && !moco_wire_sample_parse(zmq_msg_data(&m[0]), zmq_msg_size(&m[0]), &s))
                moco_err(MOCO_ECORRUPT, "SAMPLE of %d frames, expected 2", nf);
            if (malformed++ < 10) fprintf(stderr, "moco augment: dropped a malformed message: %s\n", moco_errmsg());
            for (int i = 0; i < kept; i++) zmq_msg_close(&m[i]);
            continue;
        }
        uint8_t *q = malloc(vb), *k = malloc(vb);
        augment_info info;
        int arc = q && k ? augment_pair(ctx, zmq_msg_data(&m[1]), zmq_msg_size(&m[1]), s.epoch, s.index, q, k, &info)
                         : moco_err(MOCO_ENOMEM, "record %" PRIu64 ": out of memory", s.index);
        for (int i = 0; i < kept; i++) zmq_msg_close(&m[i]);
        if (arc) {
            free(q), free(k);
            failed++;
            fprintf(stderr, "moco augment: %s (%s)\n", moco_errmsg(), moco_strerror(arc));
            if (fail) {
                uint8_t fb[MOCO_WIRE_FAILED_MIN + MOCO_WIRE_REASON_MAX];
                size_t fl = moco_wire_failed_pack(fb, s.epoch, s.index, arc, moco_errmsg());
                zmq_send(fail, fb, fl, 0);
            }
            continue;
        }
        if (send_pair(push, &info, s.epoch, s.index, q, k)) {
            if (zmq_errno() == EINTR || zmq_errno() == ETERM) break;
            fprintf(stderr, "moco augment: send: %s\n", zmq_strerror(zmq_errno()));
            rc = 1;
            break;
        }
        pairs++;
    }
    if (!quiet)
        fprintf(stderr, "moco augment: %" PRIu64 " pairs, %" PRIu64 " failed records, %" PRIu64 " malformed messages\n",
                pairs, failed, malformed);
out:
    zmq_close(pull), zmq_close(push);
    if (fail) zmq_close(fail);
    moco_sec_destroy(&sec);
    zmq_ctx_term(zc);
    augment_ctx_destroy(&ctx);
    return rc;
}
