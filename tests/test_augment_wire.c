/* test_augment_wire.c: the wire messages (formats/wire.h) and the worker
 * process (`moco augment`): round trips, rejection of every short, long,
 * mis-typed, wrong-magic and wrong-version header, a seeded fuzz of the
 * parsers; then real worker processes fed over ZeroMQ with good records,
 * corrupt records (reported FAILED with their index) and malformed messages
 * (dropped and counted), checking that 1 and 3 workers give exactly the
 * bytes of the in-process augment_pair(). */
#include "tests/testutil.h"

#include <fcntl.h>
#include <signal.h>
#include <vips/vips.h>
#include <zmq.h>

#include "augment/augment.h"
#include "formats/errors.h"
#include "formats/pipeline.h"
#include "formats/record.h"
#include "formats/rng.h"
#include "formats/wire.h"

#define SEED 424242u

static void test_roundtrip(void **state)
{
    (void)state;
    uint8_t b[MOCO_WIRE_FAILED_MIN + MOCO_WIRE_REASON_MAX + 8];
    moco_wire_sample s = {7, 0x0102030405060708ull}, s2;
    moco_wire_sample_pack(b, &s);
    assert_memory_equal(b, "MOCW\x01\x00\x01\x00\x07\x00\x00\x00", 12);
    assert_int_equal(moco_wire_sample_parse(b, MOCO_WIRE_SAMPLE_SIZE, &s2), 0);
    assert_true(s2.epoch == 7 && s2.index == s.index);

    moco_wire_pair p = {3, -1, 99, 224, 200, 3, MOCO_LAYOUT_HWC_U8}, p2;
    moco_wire_pair_pack(b, &p);
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &p2), 0);
    assert_true(p2.epoch == 3 && p2.label == -1 && p2.index == 99 && p2.height == 224 && p2.width == 200 && p2.channels == 3);
    assert_int_equal(moco_wire_pair_view_bytes(&p2), 224 * 200 * 3);

    size_t n = moco_wire_failed_pack(b, 5, 12345, MOCO_ECORRUPT, "record 12345: CRC mismatch");
    moco_wire_failed f;
    assert_int_equal(moco_wire_failed_parse(b, n, &f), 0);
    assert_true(f.epoch == 5 && f.index == 12345 && f.code == MOCO_ECORRUPT);
    assert_int_equal(f.reason_len, strlen("record 12345: CRC mismatch"));
    assert_memory_equal(f.reason, "record 12345: CRC mismatch", f.reason_len);
    char longr[3000];
    memset(longr, 'x', sizeof longr - 1), longr[sizeof longr - 1] = 0;
    n = moco_wire_failed_pack(b, 5, 1, MOCO_EIO, longr);
    assert_int_equal(n, MOCO_WIRE_FAILED_MIN + MOCO_WIRE_REASON_MAX);
    n = moco_wire_failed_pack(b, 5, 1, MOCO_EIO, NULL);
    assert_int_equal(moco_wire_failed_parse(b, n, &f), 0);
    assert_int_equal(f.reason_len, 0);
}

static void test_reject(void **state)
{
    (void)state;
    uint8_t b[64];
    moco_wire_sample s = {1, 2}, so;
    moco_wire_pair p = {1, 0, 2, 32, 32, 3, 0}, po;
    moco_wire_failed fo;
    uint16_t t;
    moco_wire_sample_pack(b, &s);
    for (size_t n = 0; n < MOCO_WIRE_SAMPLE_SIZE; n++) assert_int_equal(moco_wire_sample_parse(b, n, &so), MOCO_ECORRUPT);
    assert_int_equal(moco_wire_sample_parse(b, MOCO_WIRE_SAMPLE_SIZE + 1, &so), MOCO_ECORRUPT);
    assert_int_equal(moco_wire_sample_parse(NULL, 0, &so), MOCO_ECORRUPT);
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_SAMPLE_SIZE, &po), MOCO_ECORRUPT); /* wrong type */
    printf("wrong type: %s\n", moco_errmsg());
    b[0] = 'X';
    assert_int_equal(moco_wire_sample_parse(b, MOCO_WIRE_SAMPLE_SIZE, &so), MOCO_ECORRUPT);
    printf("bad magic: %s\n", moco_errmsg());
    b[0] = 'M', b[4] = MOCO_WIRE_VERSION + 1;
    assert_int_equal(moco_wire_sample_parse(b, MOCO_WIRE_SAMPLE_SIZE, &so), MOCO_EFORMAT);
    printf("version: %s\n", moco_errmsg());
    b[4] = 0;
    assert_int_equal(moco_wire_sample_parse(b, MOCO_WIRE_SAMPLE_SIZE, &so), MOCO_EFORMAT);
    b[4] = 1, b[6] = 0;
    assert_int_equal(moco_wire_peek(b, MOCO_WIRE_SAMPLE_SIZE, &t), MOCO_ECORRUPT);
    b[6] = 200;
    assert_int_equal(moco_wire_peek(b, MOCO_WIRE_SAMPLE_SIZE, &t), MOCO_ECORRUPT);
    b[6] = MOCO_MSG_STOP;
    assert_int_equal(moco_wire_peek(b, 8, &t), 0);
    assert_int_equal(t, MOCO_MSG_STOP);

    moco_wire_pair_pack(b, &p);
    for (size_t n = 0; n < MOCO_WIRE_PAIR_SIZE; n++) assert_int_equal(moco_wire_pair_parse(b, n, &po), MOCO_ECORRUPT);
    b[28] = 2; /* channels */
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), MOCO_ECORRUPT);
    b[28] = 3, b[29] = 1; /* layout */
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), MOCO_ECORRUPT);
    b[29] = 0, b[24] = b[25] = 0; /* height 0 */
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), MOCO_ECORRUPT);
    /* the sides are at most MOCO_VIEW_SIDE_MAX; the reserved field (30-31) is 0 */
    p.height = MOCO_VIEW_SIDE_MAX, p.width = MOCO_VIEW_SIDE_MAX;
    moco_wire_pair_pack(b, &p);
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), 0);
    moco_put_le16(b + 24, MOCO_VIEW_SIDE_MAX + 1);
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), MOCO_ECORRUPT);
    printf("height: %s\n", moco_errmsg());
    moco_put_le16(b + 24, 32), moco_put_le16(b + 26, 4000);
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), MOCO_ECORRUPT);
    moco_put_le16(b + 26, 32), moco_put_le16(b + 30, 0xCDAB);
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), MOCO_ECORRUPT);
    printf("pair reserved: %s\n", moco_errmsg());
    b[31] = 0, b[30] = 1;
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), MOCO_ECORRUPT);
    b[30] = 0;
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &po), 0);
    moco_wire_sample_pack(b, &s);
    b[13] = 1; /* SAMPLE reserved (12-15) */
    assert_int_equal(moco_wire_sample_parse(b, MOCO_WIRE_SAMPLE_SIZE, &so), MOCO_ECORRUPT);
    printf("sample reserved: %s\n", moco_errmsg());

    size_t n = moco_wire_failed_pack(b, 1, 2, MOCO_EIO, "x");
    for (size_t k = 0; k < MOCO_WIRE_FAILED_MIN; k++) assert_int_equal(moco_wire_failed_parse(b, k, &fo), MOCO_ECORRUPT);
    assert_int_equal(moco_wire_failed_parse(b, n, &fo), 0);
}

/* Seeded fuzz: mutated valid headers and random bytes, exact-size copies so
 * that ASan sees any read past the end. */
static void test_fuzz(void **state)
{
    (void)state;
    moco_rng g;
    moco_rng_init(&g, SEED, 1, 2, 3);
    printf("fuzz seed %u\n", SEED);
    int accepted = 0;
    for (int it = 0; it < 30000; it++) {
        uint8_t base[64];
        int kind = (int)moco_rng_below(&g, 4);
        if (kind == 0) moco_wire_sample_pack(base, &(moco_wire_sample){1, 2});
        else if (kind == 1) moco_wire_pair_pack(base, &(moco_wire_pair){1, 2, 3, 4, 5, 3, 0});
        else if (kind == 2) moco_wire_failed_pack(base, 1, 2, -1, "reason");
        else
            for (int i = 0; i < 64; i++) base[i] = (uint8_t)moco_rng_u64(&g);
        int flips = (int)moco_rng_below(&g, 4);
        for (int i = 0; i < flips; i++) base[moco_rng_below(&g, 40)] ^= (uint8_t)(1u << moco_rng_below(&g, 8));
        size_t len = (size_t)moco_rng_below(&g, 50);
        uint8_t *m = malloc(len ? len : 1);
        memcpy(m, base, len);
        moco_wire_sample s;
        moco_wire_pair p;
        moco_wire_failed f;
        uint16_t t;
        int a = moco_wire_sample_parse(m, len, &s), b = moco_wire_pair_parse(m, len, &p), c = moco_wire_failed_parse(m, len, &f);
        moco_wire_peek(m, len, &t);
        accepted += !a + !b + !c;
        if (!b)
            assert_true(p.height && p.width && p.height <= MOCO_VIEW_SIDE_MAX && p.width <= MOCO_VIEW_SIDE_MAX &&
                        (p.channels == 1 || p.channels == 3) && !m[30] && !m[31]);
        if (!a) assert_true(!m[12] && !m[13] && !m[14] && !m[15]);
        if (!c) assert_true(f.reason_len == len - MOCO_WIRE_FAILED_MIN);
        free(m);
    }
    printf("fuzz: %d of 30000 inputs accepted by some parser\n", accepted);
    assert_true(accepted > 0);
}

/* ---- worker processes ---- */

static uint8_t *jpeg_record(int w, int h, uint32_t salt, size_t *len)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    for (int i = 0; i < w * h * 3; i++) px[i] = (uint8_t)((i * 7 + salt * 31 + (i / (3 * w)) * 5) % 251);
    VipsImage *im = vips_image_new_from_memory(px, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
    void *buf;
    size_t bl;
    assert_int_equal(vips_jpegsave_buffer(im, &buf, &bl, "Q", 85, NULL), 0);
    g_object_unref(im);
    moco_rec_header hd = {MOCO_REC_VERSION, MOCO_ENC_JPEG, 3, (int32_t)salt % 10, (uint32_t)w, (uint32_t)h, 0, 0};
    uint8_t *rec = moco_rec_build(&hd, buf, (uint32_t)bl, len);
    g_free(buf);
    free(px);
    return rec;
}

static void send2(void *s, const void *a, size_t al, const void *b, size_t bl)
{
    assert_int_equal(zmq_send(s, a, al, ZMQ_SNDMORE), (int)al);
    assert_int_equal(zmq_send(s, b, bl, 0), (int)bl);
}

static void run_workers(int nw)
{
    const char *dir = tu_tmpdir(nw == 1 ? "augment_worker1" : "augment_worker3");
    char in[512], out[512], fail[512];
    snprintf(in, sizeof in, "ipc://%s/in", dir);
    snprintf(out, sizeof out, "ipc://%s/out", dir);
    snprintf(fail, sizeof fail, "ipc://%s/fail", dir);
    void *zc = zmq_ctx_new();
    void *push = zmq_socket(zc, ZMQ_PUSH), *pull = zmq_socket(zc, ZMQ_PULL), *fpull = zmq_socket(zc, ZMQ_PULL);
    int to = 20000;
    zmq_setsockopt(pull, ZMQ_RCVTIMEO, &to, sizeof to);
    zmq_setsockopt(fpull, ZMQ_RCVTIMEO, &to, sizeof to);
    assert_int_equal(zmq_bind(push, in), 0);
    assert_int_equal(zmq_bind(pull, out), 0);
    assert_int_equal(zmq_bind(fpull, fail), 0);
    pid_t pids[3];
    for (int i = 0; i < nw; i++) {
        char log[600];
        snprintf(log, sizeof log, "%s/worker%d.log", dir, i);
        pids[i] = fork();
        if (pids[i] == 0) {
            /* open and dup2, not freopen: between fork and exec only async-signal-safe calls (ZeroMQ's
             * threads run in this process, and one may hold the allocator's lock) */
            int fd = open(log, O_WRONLY | O_CREAT | O_TRUNC, 0644);
            if (fd < 0 || dup2(fd, STDERR_FILENO) < 0) _exit(126);
            close(fd);
            execl(tu_moco(), "moco", "augment", "--pull", in, "--push", out, "--failed", fail, "--recipe", "cifar",
                  "--size", "24", "--seed", "7", (char *)NULL);
            _exit(127);
        }
        assert_true(pids[i] > 0);
    }
    /* wait until every worker says it is ready (connected), so that PUSH
     * spreads the work and SIGTERM finds the handler installed */
    for (int i = 0; i < nw; i++) {
        char log[600], line[1024];
        snprintf(log, sizeof log, "%s/worker%d.log", dir, i);
        int ready = 0;
        for (int tries = 0; tries < 400 && !ready; tries++) {
            FILE *f = fopen(log, "r");
            while (f && fgets(line, sizeof line, f))
                if (strstr(line, "moco augment: ready")) ready = 1;
            if (f) fclose(f);
            if (!ready) usleep(50000);
        }
        if (!ready) fail_msg("worker %d did not start (see %s)", i, log);
    }
    augment_recipe r;
    augment_recipe_init(&r, "cifar", 24);
    r.seed = 7;
    augment_ctx *ctx;
    assert_int_equal(augment_ctx_new(&r, &ctx), 0);

    /* malformed: header only; bad magic; another version */
    uint8_t h[MOCO_WIRE_SAMPLE_SIZE];
    moco_wire_sample_pack(h, &(moco_wire_sample){3, 0});
    assert_int_equal(zmq_send(push, h, sizeof h, 0), (int)sizeof h);
    h[0] = 'X';
    send2(push, h, sizeof h, "abc", 3);
    h[0] = 'M', h[4] = 9;
    send2(push, h, sizeof h, "abc", 3);

    enum { K = 12 };
    uint8_t *recs[K];
    size_t lens[K];
    for (int i = 0; i < K; i++) {
        recs[i] = jpeg_record(40 + i, 30 + 2 * i, (uint32_t)i, &lens[i]);
        moco_wire_sample_pack(h, &(moco_wire_sample){3, (uint64_t)i});
        send2(push, h, sizeof h, recs[i], lens[i]);
    }
    /* bad records: CRC mismatch, truncated value */
    uint8_t *bad = malloc(lens[0]);
    memcpy(bad, recs[0], lens[0]);
    bad[lens[0] - 5] ^= 0xff;
    moco_wire_sample_pack(h, &(moco_wire_sample){3, 100});
    send2(push, h, sizeof h, bad, lens[0]);
    moco_wire_sample_pack(h, &(moco_wire_sample){3, 101});
    send2(push, h, sizeof h, recs[1], lens[1] / 2);
    free(bad);

    int seen[K] = {0};
    size_t vb = 24 * 24 * 3;
    uint8_t *q = malloc(vb), *k = malloc(vb);
    for (int got = 0; got < K; got++) {
        zmq_msg_t m[3];
        for (int f = 0; f < 3; f++) {
            zmq_msg_init(&m[f]);
            if (zmq_msg_recv(&m[f], pull, 0) < 0) fail_msg("no PAIR from the workers after %d pairs", got);
            int more = zmq_msg_more(&m[f]);
            assert_int_equal(more, f < 2);
        }
        moco_wire_pair p;
        assert_int_equal(moco_wire_pair_parse(zmq_msg_data(&m[0]), zmq_msg_size(&m[0]), &p), 0);
        assert_true(p.index < K && p.epoch == 3 && p.height == 24 && p.width == 24 && p.channels == 3);
        seen[p.index]++;
        assert_int_equal(p.label, (int)p.index % 10);
        assert_int_equal(zmq_msg_size(&m[1]), vb);
        assert_int_equal(zmq_msg_size(&m[2]), vb);
        assert_int_equal(augment_pair(ctx, recs[p.index], lens[p.index], 3, p.index, q, k, NULL), 0);
        assert_memory_equal(zmq_msg_data(&m[1]), q, vb); /* bit-identical to in-process */
        assert_memory_equal(zmq_msg_data(&m[2]), k, vb);
        for (int f = 0; f < 3; f++) zmq_msg_close(&m[f]);
    }
    for (int i = 0; i < K; i++) assert_int_equal(seen[i], 1);
    int fseen = 0;
    for (int i = 0; i < 2; i++) {
        uint8_t fb[2048];
        int n = zmq_recv(fpull, fb, sizeof fb, 0);
        if (n < 0) fail_msg("no FAILED report");
        moco_wire_failed f;
        assert_int_equal(moco_wire_failed_parse(fb, (size_t)n, &f), 0);
        printf("FAILED epoch %u index %llu code %d: %.*s\n", f.epoch, (unsigned long long)f.index, f.code,
               (int)f.reason_len, f.reason);
        assert_true(f.index == 100 || f.index == 101);
        assert_int_equal(f.code, MOCO_ECORRUPT);
        fseen |= 1 << (f.index - 100);
    }
    assert_int_equal(fseen, 3);
    if (nw == 1) { /* a STOP message ends a worker as SIGTERM does */
        uint8_t stop[MOCO_WIRE_PREFIX_SIZE];
        moco_wire_prefix_pack(stop, MOCO_MSG_STOP);
        assert_int_equal(zmq_send(push, stop, sizeof stop, 0), (int)sizeof stop);
    } else {
        for (int i = 0; i < nw; i++) kill(pids[i], SIGTERM);
    }
    unsigned long malformed = 0, pairs = 0;
    for (int i = 0; i < nw; i++) {
        int st;
        assert_int_equal(waitpid(pids[i], &st, 0), pids[i]);
        assert_true(WIFEXITED(st) && WEXITSTATUS(st) == 0);
        char log[600], line[1024];
        snprintf(log, sizeof log, "%s/worker%d.log", dir, i);
        FILE *f = fopen(log, "r");
        assert_non_null(f);
        while (fgets(line, sizeof line, f)) {
            unsigned long a, b, c;
            if (sscanf(line, "moco augment: %lu pairs, %lu failed records, %lu malformed messages", &a, &b, &c) == 3) {
                printf("worker %d: %lu pairs, %lu failed, %lu malformed\n", i, a, b, c);
                pairs += a, malformed += c;
            }
        }
        fclose(f);
    }
    assert_int_equal(pairs, K);
    assert_int_equal(malformed, 3);
    for (int i = 0; i < K; i++) free(recs[i]);
    free(q), free(k);
    augment_ctx_destroy(&ctx);
    zmq_close(push), zmq_close(pull), zmq_close(fpull);
    zmq_ctx_term(zc);
}

static void test_one_worker(void **state)
{
    (void)state;
    run_workers(1);
}

static void test_three_workers(void **state)
{
    (void)state;
    run_workers(3);
}

/* moco preview and moco bench augment on a small dataset made by moco mkdb
 * from images written here. */
static void test_preview_and_bench(void **state)
{
    (void)state;
    const char *d = tu_tmpdir("augment_cli");
    char dir[600];
    snprintf(dir, sizeof dir, "%s", d);
    for (int cls = 0; cls < 2; cls++) {
        char sub[700];
        snprintf(sub, sizeof sub, "%s/src/c%d", dir, cls);
        assert_int_equal(tu_sh("mkdir -p '%s'", sub), 0);
        for (int i = 0; i < 3; i++) {
            int w = 60 + 17 * i, h = 45 + 9 * cls;
            uint8_t *px = malloc((size_t)w * h * 3);
            for (int j = 0; j < w * h * 3; j++) px[j] = (uint8_t)(j * (i + 3) + cls * 50);
            VipsImage *im = vips_image_new_from_memory(px, (size_t)w * h * 3, w, h, 3, VIPS_FORMAT_UCHAR);
            char path[800];
            snprintf(path, sizeof path, "%s/%d.%s", sub, i, i == 2 ? "png" : "jpg");
            assert_int_equal(vips_image_write_to_file(im, path, NULL), 0);
            g_object_unref(im);
            free(px);
        }
    }
    assert_int_equal(tu_sh("%s mkdb '%s/src' '%s/db' --quiet > '%s/mkdb.log' 2>&1", tu_moco(), dir, dir, dir), 0);
    assert_int_equal(tu_sh("%s preview '%s/db' --recipe v2 --size 64 --n 6 --out '%s/grid.png' --seed 3", tu_moco(), dir, dir), 0);
    char png[700];
    snprintf(png, sizeof png, "%s/grid.png", dir);
    VipsImage *g = vips_image_new_from_file(png, NULL);
    assert_non_null(g);
    printf("preview: %dx%d, %d bands\n", g->Xsize, g->Ysize, g->Bands);
    assert_true(g->Xsize > 3 * 96 && g->Ysize > 96 && g->Bands == 3);
    g_object_unref(g);
    assert_int_equal(tu_sh("%s preview '%s/db' --out '%s/x.png' --bogus 2>/dev/null", tu_moco(), dir, dir), 2);
    assert_int_equal(tu_sh("%s bench augment --db '%s/db' --recipe v1 --size 48 --seconds 0.2 > '%s/bench.txt'", tu_moco(),
                           dir, dir), 0);
    assert_int_equal(tu_sh("tail -n 1 '%s/bench.txt' | grep -q '\"pairs_per_s\":[1-9]'", dir), 0);
    assert_int_equal(tu_sh("tail -n 1 '%s/bench.txt' | grep -q '\"decode_per_s\":[1-9].*\"failed\":0'", dir), 0);
}

int main(void)
{
    if (augment_vips_init("test_augment_wire")) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_roundtrip),   cmocka_unit_test(test_reject),        cmocka_unit_test(test_fuzz),
        cmocka_unit_test(test_one_worker), cmocka_unit_test(test_three_workers), cmocka_unit_test(test_preview_and_bench),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
