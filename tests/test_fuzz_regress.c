/* test_fuzz_regress.c: hostile inputs for every parser the fuzz targets
 * (tests/fuzz/fuzz_*.c) exercise, each asserting a clean MOCO_E* error and
 * no out-of-bounds access (run it under `make test SANITIZE=address`).
 * Inputs that a fuzzer found to crash belong here, with the target, the
 * date and the fix named in a comment above the test; the others are
 * hand-made edge cases of the same kind (lengths and counts that lie). */
#include "tests/testutil.h"

#include <signal.h>

#include "augment/augment.h"

#include "formats/checkpoint.h"
#include "formats/db.h"
#include "formats/errors.h"
#include "formats/pipeline.h"
#include "formats/record.h"
#include "formats/safetensors.h"
#include "formats/wire.h"
#include "loader/sources.h"
#include "trainer/evalmodel.h"
#include "trainer/stream.h"
#include "trainer/train.h"

/* A copy of exactly n bytes on the heap, so that ASan sees the bounds. */
static uint8_t *dup_n(const void *p, size_t n)
{
    uint8_t *b = malloc(n ? n : 1);
    assert_non_null(b);
    if (n) memcpy(b, p, n);
    return b;
}

static void prefix(uint8_t *b, uint16_t type)
{
    memcpy(b, "MOCW", 4);
    moco_put_le16(b + 4, 1);
    moco_put_le16(b + 6, type);
}

static void test_record_lies(void **st)
{
    (void)st;
    uint8_t r[40] = {0};
    moco_rec_header h = {.version = 1, .encoding = MOCO_ENC_RAW, .channels = 3, .label = 0, .width = 2, .height = 1,
                         .payload_len = 6, .crc32 = 0};
    moco_rec_header_pack(&h, r);
    moco_rec_header g;
    const uint8_t *pl;
    for (size_t n = 0; n < 38; n++) { /* every truncation, the header included */
        uint8_t *b = dup_n(r, n);
        assert_true(moco_rec_parse(b, n, 0, "t", &g, &pl) < 0);
        free(b);
    }
    moco_put_le32(r + 20, 0xFFFFFFF8u); /* payload length that wraps len - 32 */
    uint8_t *b = dup_n(r, 40);
    assert_int_equal(moco_rec_parse(b, 40, 0, "t", &g, &pl), MOCO_ECORRUPT);
    free(b);
}

static void test_wire_lies(void **st)
{
    (void)st;
    uint8_t f[64] = {0};
    moco_wire_sample s;
    moco_wire_pair p;
    moco_wire_failed fl;
    uint16_t type;
    for (size_t n = 0; n < MOCO_WIRE_PAIR_SIZE; n++) {
        uint8_t *b = dup_n(f, n);
        assert_true(moco_wire_peek(b, n, &type) < 0);
        free(b);
    }
    prefix(f, MOCO_MSG_PAIR); /* height 0 */
    uint8_t *b = dup_n(f, MOCO_WIRE_PAIR_SIZE);
    assert_int_equal(moco_wire_pair_parse(b, MOCO_WIRE_PAIR_SIZE, &p), MOCO_ECORRUPT);
    assert_true(moco_wire_sample_parse(b, MOCO_WIRE_PAIR_SIZE, &s) < 0);
    free(b);
    prefix(f, MOCO_MSG_FAILED); /* a FAILED one byte short */
    b = dup_n(f, MOCO_WIRE_FAILED_MIN - 1);
    assert_int_equal(moco_wire_failed_parse(b, MOCO_WIRE_FAILED_MIN - 1, &fl), MOCO_ECORRUPT);
    free(b);
    prefix(f, MOCO_MSG_PAIRS); /* PAIRS claiming 4096 pairs in a 16-byte frame */
    moco_put_le32(f + 8, MOCO_PAIRS_MAX);
    uint32_t n = 0;
    b = dup_n(f, 16);
    assert_int_equal(moco_pipe_pairs_parse(b, 16, 0, &n), MOCO_ECORRUPT);
    moco_put_le32(b + 8, 0xFFFFFFFFu);
    assert_int_equal(moco_pipe_pairs_parse(b, 16, 0, &n), MOCO_ECORRUPT);
    free(b);
    /* SAMPLES: record lengths that would wrap a 32-bit sum, a count beyond
     * the maximum or the frame, the header one entry short, a version-1
     * prefix, and the lengths one byte over and under the data frame */
    uint8_t h[16 + 2 * MOCO_SAMPLES_ENTRY];
    moco_pipe_sample e[2] = {{1, 0xFFFFFFFFu, 3}, {1, 2, 4}};
    size_t hl = moco_pipe_samples_pack(h, e, 2);
    b = dup_n(h, hl);
    assert_int_equal(moco_pipe_samples_parse(b, hl, 1, &n), MOCO_ECORRUPT); /* 2^32 + 1 bytes claimed */
    assert_int_equal(moco_pipe_samples_parse(b, hl - MOCO_SAMPLES_ENTRY, 1, &n), MOCO_ECORRUPT);
    for (size_t k = 0; k < hl; k++) assert_true(moco_pipe_samples_parse(b, k, 0, &n) < 0);
    moco_put_le32(b + 8, MOCO_SAMPLES_MAX + 1);
    assert_int_equal(moco_pipe_samples_parse(b, hl, 0, &n), MOCO_ECORRUPT);
    moco_put_le32(b + 8, 0xFFFFFFFFu);
    assert_int_equal(moco_pipe_samples_parse(b, hl, 0, &n), MOCO_ECORRUPT);
    free(b);
    e[0].len = 5;
    hl = moco_pipe_samples_pack(h, e, 2);
    b = dup_n(h, hl);
    assert_int_equal(moco_pipe_samples_parse(b, hl, 7, &n), 0);
    assert_int_equal(n, 2);
    assert_int_equal(moco_pipe_samples_parse(b, hl, 6, &n), MOCO_ECORRUPT);
    assert_int_equal(moco_pipe_samples_parse(b, hl, 8, &n), MOCO_ECORRUPT);
    moco_put_le16(b + 4, 1);
    assert_int_equal(moco_pipe_samples_parse(b, hl, 7, &n), MOCO_ECORRUPT);
    free(b);
}

static void test_control_lies(void **st)
{
    (void)st;
    uint8_t f[24] = {0};
    moco_pipe_msg m;
    prefix(f, MOCO_MSG_ACK); /* ACK announcing 2^32-1 indices in 16 bytes */
    moco_put_le32(f + 12, 0xFFFFFFFFu);
    uint8_t *b = dup_n(f, 16);
    assert_int_equal(moco_pipe_parse(b, 16, &m), MOCO_ECORRUPT);
    free(b);
    prefix(f, MOCO_MSG_EPOCH_END); /* EPOCH_END announcing 2^31 failures in 24 bytes */
    moco_put_le32(f + 20, 0x80000000u);
    b = dup_n(f, 24);
    assert_int_equal(moco_pipe_parse(b, 24, &m), MOCO_ECORRUPT);
    free(b);
    /* EPOCH_END of exactly 24 + 8n bytes: n at most MOCO_EPOCH_FAILED_MAX
     * (2^20), as the Python consumer checks; one more is refused */
    size_t big = 24 + 8 * (size_t)(MOCO_EPOCH_FAILED_MAX + 1);
    uint64_t *fl = calloc(MOCO_EPOCH_FAILED_MAX + 1, sizeof *fl);
    b = malloc(big);
    assert_non_null(fl);
    assert_non_null(b);
    assert_int_equal(moco_pipe_epoch_end(b, 3, 5, fl, MOCO_EPOCH_FAILED_MAX), big - 8);
    assert_int_equal(moco_pipe_parse(b, big - 8, &m), 0);
    assert_int_equal(m.n, MOCO_EPOCH_FAILED_MAX);
    assert_int_equal(moco_pipe_epoch_end(b, 3, 5, fl, MOCO_EPOCH_FAILED_MAX + 1), big);
    assert_int_equal(moco_pipe_parse(b, big, &m), MOCO_ECORRUPT);
    printf("EPOCH_END over the cap: %s\n", moco_errmsg());
    free(b);
    free(fl);
    /* READY: version 1 is 20 bytes, version 2 is 24 with a batch size of
     * at most MOCO_SAMPLES_MAX; any other length or batch is refused */
    uint8_t r[24];
    assert_int_equal(moco_pipe_ready(r, 8, 9, 16), 24);
    for (size_t k = 0; k < 24; k++) {
        b = dup_n(r, k);
        assert_true(moco_pipe_parse(b, k, &m) < 0);
        free(b);
    }
    b = dup_n(r, 24);
    assert_int_equal(moco_pipe_parse(b, 24, &m), 0);
    assert_int_equal(m.batch, 16);
    moco_put_le32(b + 20, MOCO_SAMPLES_MAX + 1);
    assert_int_equal(moco_pipe_parse(b, 24, &m), MOCO_ECORRUPT);
    moco_put_le16(b + 4, 1); /* version 1: 20 bytes, no batch */
    assert_int_equal(moco_pipe_parse(b, 24, &m), MOCO_ECORRUPT);
    assert_int_equal(moco_pipe_parse(b, 20, &m), 0);
    assert_int_equal(m.batch, 0);
    free(b);
    int prefix_only = 0;
    for (uint16_t t = 1; t <= MOCO_MSG_BUSY; t++) { /* every type, prefix alone, one byte short and one over */
        prefix(f, t);
        f[8] = 0;
        b = dup_n(f, 9);
        int rc = moco_pipe_parse(b, 8, &m);
        int simple = t == MOCO_MSG_HEARTBEAT || t == MOCO_MSG_STOP || t == MOCO_MSG_BYE || t == MOCO_MSG_BUSY;
        if (rc == 0) assert_int_equal(m.type, t);
        assert_true(rc == 0 ? simple : rc < 0);
        prefix_only += rc == 0;
        assert_true(moco_pipe_parse(b, 7, &m) < 0);
        if (simple) assert_int_equal(moco_pipe_parse(b, 9, &m), MOCO_ECORRUPT);
        free(b);
    }
    assert_int_equal(prefix_only, 4); /* HEARTBEAT, STOP, BYE, BUSY */
}

static void test_safetensors_lies(void **st)
{
    (void)st;
    const char *hdrs[] = {
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551615]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",
        "{\"w\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]",
        "[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[[",
    };
    for (size_t i = 0; i < sizeof hdrs / sizeof *hdrs; i++) {
        size_t hl = strlen(hdrs[i]), n = 8 + hl + 8;
        uint8_t *b = calloc(1, n);
        assert_non_null(b);
        moco_put_le64(b, hl);
        memcpy(b + 8, hdrs[i], hl);
        moco_st *t = NULL;
        int rc = moco_st_parse(b, n, "t", &t);
        if (rc != MOCO_ECORRUPT) fail_msg("header %zu: rc %d, expected MOCO_ECORRUPT", i, rc);
        assert_null(t);
        moco_put_le64(b, 0xFFFFFFFFFFFFFFF0ull); /* a header length that wraps */
        assert_int_equal(moco_st_parse(b, n, "t", &t), MOCO_ECORRUPT);
        free(b);
    }
}

static void test_idx_lies(void **st)
{
    (void)st;
    const char *d = tu_tmpdir("fuzz_regress_idx");
    char p[4200];
    /* header promising 2^32-1 images of 65535 x 65535 over a 16-byte file */
    const uint8_t img[16] = {0, 0, 8, 3, 0xFF, 0xFF, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF, 0, 0, 0xFF, 0xFF};
    const uint8_t lab[8] = {0, 0, 8, 1, 0xFF, 0xFF, 0xFF, 0xFF};
    snprintf(p, sizeof p, "%s/t10k-images-idx3-ubyte", d);
    FILE *f = fopen(p, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(img, 1, sizeof img, f), sizeof img);
    fclose(f);
    snprintf(p, sizeof p, "%s/t10k-labels-idx1-ubyte", d);
    assert_non_null(f = fopen(p, "wb"));
    assert_int_equal(fwrite(lab, 1, sizeof lab, f), sizeof lab);
    fclose(f);
    mk_source s = {0};
    assert_int_equal(mk_source_open(d, "idx", NULL, &s), MOCO_ECORRUPT);
    assert_int_equal(s.n, 0);
    mk_source_free(&s);
    /* a CIFAR batch of one record and one byte */
    snprintf(p, sizeof p, "%s/test_batch.bin", d);
    assert_non_null(f = fopen(p, "wb"));
    for (int i = 0; i < 3074; i++) fputc(i ? 7 : 3, f);
    fclose(f);
    assert_int_equal(mk_source_open(d, "cifar10", NULL, &s), MOCO_ECORRUPT);
    mk_source_free(&s);
}

/* fuzz_augment, 2026-11-24: a 546-byte JPEG in a record whose header says
 * 16x16, but whose SOF0 claims 28259x25455, made the worker allocate 2.1 GB
 * (vips_image_write_to_memory; TurboJPEG's path would have too) before the
 * size check refused it. Fix (augment/augment.c, decode_jpeg and
 * decode_vips): the payload's claimed size is compared with the record
 * header's before anything is allocated. The input is the fuzzer's file,
 * tests/fuzz/regress/fuzz_augment-jpeg-claims-huge: 8 bytes for the harness
 * (JPEG, 3 channels, label 5, 16x16), then the payload. */
static void test_augment_jpeg_claims_huge(void **st)
{
    (void)st;
    FILE *f = fopen("tests/fuzz/regress/fuzz_augment-jpeg-claims-huge", "rb");
    assert_non_null(f);
    uint8_t in[4096];
    size_t n = fread(in, 1, sizeof in, f);
    fclose(f);
    assert_int_equal(n, 554);
    moco_rec_header h = {.version = MOCO_REC_VERSION, .encoding = MOCO_ENC_JPEG, .channels = 3, .label = 5,
                         .width = 16, .height = 16};
    size_t len;
    uint8_t *rec = moco_rec_build(&h, in + 8, (uint32_t)(n - 8), &len);
    assert_non_null(rec);
    augment_recipe r;
    augment_ctx *ctx = NULL;
    assert_int_equal(augment_recipe_init(&r, "cifar", 16), 0);
    assert_int_equal(augment_ctx_new(&r, &ctx), 0);
    uint8_t *q = malloc(augment_view_max_bytes(&r)), *k = malloc(augment_view_max_bytes(&r));
    assert_non_null(q);
    assert_non_null(k);
    augment_info info;
    assert_int_equal(augment_pair(ctx, rec, len, 1, 7, q, k, &info), MOCO_ECORRUPT);
    /* refused from the header, before decoding ("claims", not "decodes to") */
    if (!strstr(moco_errmsg(), "claims 28259x25455")) fail_msg("message: %s", moco_errmsg());
    augment_ctx_destroy(&ctx);
    free(q);
    free(k);
    free(rec);
}

/* fuzz_lmdb, 2026-11-29: a 36,963-byte data.mdb (two good meta pages; the
 * newer one's main database root, page 7, holds garbage: flags 0x273, so
 * branch and LEAF2, and mp_lower 0) made moco_db_open hang for ever inside
 * mdb_dbi_open: the page's key count wraps to about 2^31, LMDB's binary
 * search (int low + high overflows) never ends, and with LEAF2 keys of 0
 * bytes it touches no memory, so no fault stops it. Fix (formats/db.c,
 * check_trees, "layer 1b"): the B-trees are walked and checked before LMDB
 * maps the file. The input is the fuzzer's file,
 * tests/fuzz/regress/fuzz_lmdb-main-root-leaf2-wraps; it is opened in a
 * child with a 20 s alarm, so that a hang fails the test. */
static void lmdb_refused_in_time(const char *input, const char *why)
{
    const char *d = tu_tmpdir("fuzz_regress_lmdb");
    assert_int_equal(tu_sh("cp tests/fuzz/regress/%s '%s/data.mdb' && rm -f '%s/lock.mdb'", input, d, d), 0);
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        signal(SIGALRM, SIG_DFL);
        alarm(20);
        moco_db *db = NULL;
        int rc = moco_db_open(d, &db);
        fprintf(stderr, "  moco_db_open: %d: %s\n", rc, moco_errmsg());
        _exit(rc == MOCO_ECORRUPT && strstr(moco_errmsg(), "data.mdb: damaged") && strstr(moco_errmsg(), why) && !db ? 0 : 1);
    }
    int s;
    assert_int_equal(waitpid(pid, &s, 0), pid);
    if (WIFSIGNALED(s)) fail_msg("moco_db_open died of signal %d (%s): a hang", WTERMSIG(s), strsignal(WTERMSIG(s)));
    assert_int_equal(WEXITSTATUS(s), 0);
}

static void test_lmdb_main_root_loops(void **st)
{
    (void)st;
    lmdb_refused_in_time("fuzz_lmdb-main-root-leaf2-wraps", "main database");
}

/* fuzz_lmdb, 2026-12-02: a 36,884-byte data.mdb whose meta page 0 holds
 * transaction 504403158265495553 (odd) and meta page 1 transaction 3. The
 * walk checked meta 0's trees (the newest), but LMDB's read transaction
 * reads meta page T & 1 of the newest T, meta 1 here, whose pages loop as
 * above: moco_db_open hung in mdb_dbi_open. Fix (formats/db.c,
 * check_file): a newest transaction on the other meta page than its
 * number's parity is refused (LMDB writes transaction T to page T & 1). */
static void test_lmdb_meta_parity(void **st)
{
    (void)st;
    lmdb_refused_in_time("fuzz_lmdb-meta-parity", "belongs in meta page 1");
}

/* fuzz_lmdb, 2026-12-02: a data.mdb holding a record of 0 bytes.
 * moco_db_get into an empty buffer (NULL, capacity 0) copied it with
 * memcpy(NULL, p, 0), undefined behaviour (UBSan in the fuzz build), and
 * returned success with *buf still NULL. Fix (formats/db.c, get_body): an
 * empty record gets a buffer too, as moco_db_foreach's copy did. Each
 * record is read into a fresh, empty buffer; the empty one must come back
 * with a buffer and length 0, and the record parser then refuses it. */
static void test_lmdb_empty_record(void **st)
{
    (void)st;
    const char *d = tu_tmpdir("fuzz_regress_lmdb_empty");
    assert_int_equal(tu_sh("cp tests/fuzz/regress/fuzz_lmdb-empty-record '%s/data.mdb' && rm -f '%s/lock.mdb'", d, d), 0);
    moco_db *db = NULL;
    if (moco_db_open(d, &db)) fail_msg("moco_db_open: %s", moco_errmsg());
    int empty = 0;
    for (uint64_t i = 0; i < moco_db_get_meta(db)->count && i < 64; i++) {
        uint8_t *buf = NULL;
        size_t cap = 0, len = 99;
        if (moco_db_get(db, i, &buf, &cap, &len) == 0 && len == 0) {
            empty++;
            if (!buf) fail_msg("record %llu: 0 bytes read, and no buffer", (unsigned long long)i);
            moco_rec_header h;
            const uint8_t *pl;
            assert_int_not_equal(moco_rec_parse(buf, len, 1, "empty", &h, &pl), 0);
        }
        free(buf);
    }
    moco_db_destroy(&db);
    assert_int_equal(empty, 1);
}

/* fuzz_ckpt_config, 2026-12-02: a checkpoint config claiming ranks
 * 2147483647 (batch_size 2) against a one-process run overflowed an int in
 * the message of schedule_unchanged (trainer/train.c, under
 * train_resume_matches): the global batches, ranks x batch_size, were
 * multiplied in int (undefined behaviour; a release build printed "against
 * -2"). Fix: multiplied and printed as long long. The input is the
 * fuzzer's, reduced to its two fields. */
static void test_resume_ranks_times_batch(void **st)
{
    (void)st;
    moco_ckpt_config kc;
    assert_int_equal(moco_ckpt_config_parse("{\"ranks\":2147483647,\"batch_size\":2}", "ckpt", &kc), 0);
    train_cfg c = {.arch = "resnet18-cifar", .width = 1, .mlp = 1, .dim = 4, .K = 8, .batch = 2, .epochs = 3, .bn_splits = 1,
                   .size = 8, .lr = 0.06, .momentum = 0.9, .wd = 5e-4, .m = 0.99, .T = 0.1, .seed = 3, .cos = 1, .count = 64};
    assert_int_equal(train_resume_matches(&c, &kc, "ckpt"), MOCO_EINVAL);
    if (!strstr(moco_errmsg(), "1 rank (checkpoint: 2147483647; a global batch of 2 against 4294967294)"))
        fail_msg("message: %s", moco_errmsg());
}

/* moco sink --resume-indices on a damaged file (found reading fuzz_sink's
 * reader, not by the fuzzer): it stopped at the first word that is not a
 * number and returned 0, so "1 2 x 3 9" resumed with 1 and 2 only. Now
 * refused naming the file and how far it got; a whole file still loads. */
static void test_sink_indices_damaged(void **st)
{
    (void)st;
    char path[512];
    snprintf(path, sizeof path, "%s/indices", tu_tmpdir("fuzz_regress_sink"));
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("1 2 x 3 9\n", f);
    fclose(f);
    uint8_t *bm = NULL;
    assert_int_equal(sink_load_indices(path, 10, &bm), MOCO_EINVAL);
    char want[600];
    snprintf(want, sizeof want, "%s: after 2 indices, a word that is not an index", path);
    if (!strstr(moco_errmsg(), want)) fail_msg("message: %s", moco_errmsg());
    free(bm);
    f = fopen(path, "w");
    assert_non_null(f);
    fputs("1 2\n3\t9\n", f);
    fclose(f);
    bm = NULL;
    assert_int_equal(sink_load_indices(path, 10, &bm), 0);
    assert_int_equal(bm[0], 0x0E);
    assert_int_equal(bm[1], 0x02);
    free(bm);
}

/* fuzz_evalmodel, 2026-12-02: a checkpoint config whose arch is
 * "resnet18resnet50" (the fuzzer's: "resnet18" put before a seed's
 * "resnet50") passed evalmodel_describe (trainer/evalmodel.c, under
 * evalmodel_open) and became the encoder's arch; so did a width, dim or
 * size above what --width, --moco-dim and --size take (hand-made, the same
 * kind). rn_new then refused it without naming the file (a dim of 2^31 - 1:
 * "out of memory for 8389833 MB of activations"). Fix: such a config is
 * MOCO_ECORRUPT naming the file and the field; the largest values the flags
 * take still load. */
static void test_evalmodel_config_lies(void **st)
{
    (void)st;
    static const char *const bad[][2] = {
        {"{\"arch\":\"resnet18resnet50\",\"width\":64,\"dim\":128}", "arch \"resnet18resnet50\" is none of resnet18|"},
        {"{\"arch\":\"resnet18\",\"width\":1025}", "width 1025 is above 1024"},
        {"{\"arch\":\"resnet50\",\"dim\":2147483647}", "dim 2147483647 is above 65536"},
        {"{\"size\":4097}", "size 4097 is above 4096"},
    };
    moco_ckpt_config c;
    for (int i = 0; i < 4; i++) {
        evalmodel_flags f = {.ckpt = "x.safetensors", .norm = "auto", .init_seed = -1};
        assert_int_equal(moco_ckpt_config_parse(bad[i][0], "x.safetensors", &c), 0);
        assert_int_equal(evalmodel_describe(&f, &c), MOCO_ECORRUPT);
        if (!strstr(moco_errmsg(), "x.safetensors: its config's ") || !strstr(moco_errmsg(), bad[i][1]))
            fail_msg("%s: message %s", bad[i][0], moco_errmsg());
        assert_null(f.arch);
    }
    evalmodel_flags f = {.ckpt = "x.safetensors", .norm = "auto", .init_seed = -1};
    assert_int_equal(moco_ckpt_config_parse("{\"arch\":\"resnet50-cifar\",\"width\":1024,\"dim\":65536,\"size\":4096,\"mlp\":1}",
                                            "x.safetensors", &c), 0);
    if (evalmodel_describe(&f, &c)) fail_msg("%s", moco_errmsg());
    assert_string_equal(f.arch, "resnet50-cifar");
    assert_int_equal(f.width, 1024);
    assert_int_equal(f.dim, 65536);
    assert_int_equal(f.size, 4096);
    assert_int_equal(f.mlp, 1);
}

/* fuzz_recover, 2026-12-02 (found reading it, not by a crash): a torn last
 * line of metrics.jsonl (a kill mid-write) that began with the epoch
 * record's prefix counted as the epoch's record (train_epoch_recorded,
 * trainer/train.c). Harmless where resume drops torn lines first; now a
 * record is only a whole line. */
static void test_epoch_record_torn(void **st)
{
    (void)st;
    char path[512];
    snprintf(path, sizeof path, "%s/metrics.jsonl", tu_tmpdir("epoch_record_torn"));
    static const char *const body[] = {
        "{\"type\":\"config\"}\n{\"type\":\"epoch\",\"epoch\":3,\"knn_top1\":4", /* torn */
        "{\"type\":\"config\"}\n{\"type\":\"epoch\",\"epoch\":3,\"knn_top1\":40.0}\n", /* whole */
    };
    for (int i = 0; i < 2; i++) {
        FILE *f = fopen(path, "w");
        assert_non_null(f);
        fputs(body[i], f);
        fclose(f);
        int have = -1;
        assert_int_equal(train_epoch_recorded(path, 3, &have), 0);
        assert_int_equal(have, i);
        assert_int_equal(train_epoch_recorded(path, 2, &have), 0);
        assert_int_equal(have, 0);
    }
    unlink(path);
}

int main(void)
{
    if (augment_vips_init("test_fuzz_regress")) {
        fprintf(stderr, "libvips: %s\n", moco_errmsg());
        return 1;
    }
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_record_lies),      cmocka_unit_test(test_wire_lies),
        cmocka_unit_test(test_control_lies),     cmocka_unit_test(test_safetensors_lies),
        cmocka_unit_test(test_idx_lies),         cmocka_unit_test(test_augment_jpeg_claims_huge),
        cmocka_unit_test(test_lmdb_main_root_loops), cmocka_unit_test(test_lmdb_meta_parity), cmocka_unit_test(test_lmdb_empty_record), cmocka_unit_test(test_resume_ranks_times_batch),
        cmocka_unit_test(test_sink_indices_damaged), cmocka_unit_test(test_evalmodel_config_lies),
        cmocka_unit_test(test_epoch_record_torn),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
