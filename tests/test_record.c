/* test_record.c: the record format, keys, CRC, metadata, RNG streams and the
 * shared option parser: every field round-trips, every malformation is
 * refused with the right code, and so is a class name the metadata reader
 * could not give back. */
#include "tests/testutil.h"

#include <lmdb.h>

#include "formats/db.h"
#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/record.h"
#include "formats/rng.h"

static void test_crc32_known_value(void **st)
{
    (void)st;
    assert_int_equal(moco_crc32("123456789", 9), 0xCBF43926u);
    assert_int_equal(moco_crc32("", 0), 0);
}

static void test_header_round_trip(void **st)
{
    (void)st;
    const int32_t labels[] = {-1, 0, 7, 2147483647};
    for (int enc = 0; enc < MOCO_ENC_COUNT; enc++)
        for (int li = 0; li < 4; li++) {
            uint8_t payload[2 * 3 * 4];
            for (size_t i = 0; i < sizeof payload; i++) payload[i] = (uint8_t)(i * 37 + enc);
            moco_rec_header h = {.encoding = (uint8_t)enc, .channels = 4, .label = labels[li], .width = 3, .height = 2};
            size_t len;
            uint8_t *rec = moco_rec_build(&h, payload, sizeof payload, &len);
            assert_non_null(rec);
            assert_int_equal(len, MOCO_REC_HEADER_SIZE + sizeof payload);
            assert_memory_equal(rec, "MOCR", 4);
            moco_rec_header g;
            const uint8_t *pl;
            assert_int_equal(moco_rec_parse(rec, len, 1, "r", &g, &pl), 0);
            assert_int_equal(g.version, MOCO_REC_VERSION);
            assert_int_equal(g.encoding, enc);
            assert_int_equal(g.channels, 4);
            assert_int_equal(g.label, labels[li]);
            assert_int_equal(g.width, 3);
            assert_int_equal(g.height, 2);
            assert_int_equal(g.payload_len, sizeof payload);
            assert_int_equal(g.crc32, moco_crc32(payload, sizeof payload));
            assert_ptr_equal(pl, rec + MOCO_REC_HEADER_SIZE);
            assert_memory_equal(pl, payload, sizeof payload);
            free(rec);
        }
}

static void test_header_little_endian_layout(void **st)
{
    (void)st;
    uint8_t px[1] = {9};
    moco_rec_header h = {.encoding = MOCO_ENC_RAW, .channels = 1, .label = 0x01020304, .width = 1, .height = 1};
    size_t len;
    uint8_t *r = moco_rec_build(&h, px, 1, &len);
    const uint8_t want[] = {'M', 'O', 'C', 'R', 2, 0, 0, 1, 4, 3, 2, 1, 1, 0, 0, 0, 1, 0, 0, 0, 1, 0, 0, 0};
    assert_memory_equal(r, want, sizeof want);
    assert_int_equal(moco_get_le32(r + 28), moco_crc32(r, 28)); /* version 2: the header's CRC */
    free(r);
}

/* Build a valid 2x2x3 raw record to damage. */
static uint8_t *good(size_t *len)
{
    uint8_t px[12] = {1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12};
    moco_rec_header h = {.encoding = MOCO_ENC_RAW, .channels = 3, .label = 1, .width = 2, .height = 2};
    return moco_rec_build(&h, px, sizeof px, len);
}

static void expect_refused(uint8_t *r, size_t len, int crc, int code, const char *needle)
{
    moco_rec_header h;
    const uint8_t *pl;
    int rc = moco_rec_parse(r, len, crc, "record 42", &h, &pl);
    print_message("  -> %s\n", moco_errmsg());
    assert_int_equal(rc, code);
    assert_non_null(strstr(moco_errmsg(), "record 42"));
    assert_non_null(strstr(moco_errmsg(), needle));
}

/* Rewrite a version 2 record's header CRC after a test changed a field, so
 * that the field's own check is what refuses it. */
static void reseal(uint8_t *r) { moco_put_le32(r + 28, moco_crc32(r, 28)); }

static void test_parse_refuses_malformed(void **st)
{
    (void)st;
    size_t len;
    uint8_t *r = good(&len);
    expect_refused(r, 10, 1, MOCO_ECORRUPT, "shorter");
    expect_refused(NULL, 0, 1, MOCO_ECORRUPT, "shorter");
    r[0] = 'X'; expect_refused(r, len, 1, MOCO_ECORRUPT, "magic"); r[0] = 'M';
    r[4] = 3; reseal(r); expect_refused(r, len, 1, MOCO_EFORMAT, "version"); r[4] = 2;
    r[4] = 0; reseal(r); expect_refused(r, len, 1, MOCO_EFORMAT, "version"); r[4] = 2;
    r[6] = 3; reseal(r); expect_refused(r, len, 1, MOCO_EFORMAT, "encoding"); r[6] = 0;
    r[7] = 0; reseal(r); expect_refused(r, len, 1, MOCO_ECORRUPT, "channels"); r[7] = 5;
    reseal(r); expect_refused(r, len, 1, MOCO_ECORRUPT, "channels"); r[7] = 3;
    r[12] = 0; reseal(r); expect_refused(r, len, 1, MOCO_ECORRUPT, "size"); r[12] = 2;
    r[8] = 0xFE; r[9] = r[10] = r[11] = 0xFF; reseal(r); expect_refused(r, len, 1, MOCO_ECORRUPT, "label");
    r[8] = 1; r[9] = r[10] = r[11] = 0; reseal(r);
    expect_refused(r, len - 1, 1, MOCO_ECORRUPT, "payload bytes");
    r[16] = 3; r[20] = 18; reseal(r); /* 2x3x3 pixels do not fit 12 bytes */
    expect_refused(r, MOCO_REC_HEADER_SIZE + 18, 1, MOCO_ECORRUPT, "payload");
    r[16] = 2; r[20] = 12; reseal(r);
    r[MOCO_REC_HEADER_SIZE + 5] ^= 0x40;
    expect_refused(r, len, 1, MOCO_ECORRUPT, "payload CRC");
    moco_rec_header h;
    const uint8_t *pl;
    assert_int_equal(moco_rec_parse(r, len, 0, "record 42", &h, &pl), 0); /* payload CRC not asked for */
    free(r);
}

/* Version 2: any bit flipped in the header is found, also with the payload
 * CRC not asked for; a label moved to another valid class above all (in
 * version 1 it parsed as a valid record of the wrong class). */
static void test_header_crc_finds_any_flip(void **st)
{
    (void)st;
    size_t len;
    uint8_t *r = good(&len);
    for (int byte = 0; byte < MOCO_REC_HEADER_SIZE; byte++)
        for (int bit = 0; bit < 8; bit++) {
            r[byte] ^= (uint8_t)(1 << bit);
            moco_rec_header h;
            const uint8_t *pl;
            int rc = moco_rec_parse(r, len, 0, "record 42", &h, &pl);
            if (rc == 0) fail_msg("byte %d bit %d flipped: parsed", byte, bit);
            r[byte] ^= (uint8_t)(1 << bit);
        }
    r[8] = 2; /* label 1 -> 2 */
    expect_refused(r, len, 0, MOCO_ECORRUPT, "header CRC mismatch (a header field is damaged: label 2, size 2x2, 3 channels");
    r[8] = 1;
    moco_rec_header h;
    const uint8_t *pl;
    assert_int_equal(moco_rec_parse(r, len, 1, "record 42", &h, &pl), 0);
    assert_int_equal(h.version, 2);
    free(r);
}

/* Version 1 records (datasets written before 2026-12-05) are still read:
 * bytes 28..31 reserved, 0, and no header CRC. */
static void test_version1_still_read(void **st)
{
    (void)st;
    size_t len;
    uint8_t *r = good(&len);
    moco_rec_header h = {.version = 1, .encoding = MOCO_ENC_RAW, .channels = 3, .label = 1, .width = 2, .height = 2,
                         .payload_len = 12, .crc32 = moco_crc32(r + MOCO_REC_HEADER_SIZE, 12)};
    moco_rec_header_pack(&h, r);
    const uint8_t zero[4] = {0};
    assert_memory_equal(r + 28, zero, 4);
    moco_rec_header g;
    const uint8_t *pl;
    assert_int_equal(moco_rec_parse(r, len, 1, "record 42", &g, &pl), 0);
    assert_int_equal(g.version, 1);
    assert_int_equal(g.label, 1);
    r[8] = 2; /* what version 2 exists for: a label moved within the classes is not seen here */
    assert_int_equal(moco_rec_parse(r, len, 1, "record 42", &g, &pl), 0);
    assert_int_equal(g.label, 2);
    r[28] = 1; expect_refused(r, len, 1, MOCO_ECORRUPT, "reserved");
    free(r);
}

static void test_key_order_is_index_order(void **st)
{
    (void)st;
    moco_rng r;
    moco_rng_init(&r, 1, 0, 0, 0);
    for (int i = 0; i < 10000; i++) {
        uint64_t a = moco_rng_u64(&r) >> (moco_rng_below(&r, 64)), b = moco_rng_u64(&r) >> (moco_rng_below(&r, 64));
        uint8_t ka[8], kb[8];
        moco_key_encode(a, ka);
        moco_key_encode(b, kb);
        assert_int_equal(moco_key_decode(ka), a);
        int c = memcmp(ka, kb, 8);
        assert_true((a < b && c < 0) || (a > b && c > 0) || (a == b && c == 0));
    }
    uint8_t k[8];
    moco_key_encode(0x0102030405060708ull, k);
    const uint8_t want[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    assert_memory_equal(k, want, 8);
}

static void test_rng_streams(void **st)
{
    (void)st;
    moco_rng a, b, c;
    moco_rng_init(&a, 7, 1, 2, 3);
    moco_rng_init(&b, 7, 1, 2, 3);
    moco_rng_init(&c, 7, 1, 2, 4);
    int same_c = 0;
    for (int i = 0; i < 1000; i++) {
        uint64_t x = moco_rng_u64(&a);
        assert_int_equal(x, moco_rng_u64(&b));
        same_c += x == moco_rng_u64(&c);
    }
    assert_true(same_c < 2);
    /* below(): in range, roughly uniform */
    int hist[10] = {0};
    for (int i = 0; i < 100000; i++) hist[moco_rng_below(&a, 10)]++;
    for (int i = 0; i < 10; i++) assert_true(hist[i] > 9400 && hist[i] < 10600);
    double s = 0;
    for (int i = 0; i < 100000; i++) {
        double u = moco_rng_uniform(&a);
        assert_true(u >= 0 && u < 1);
        s += u;
    }
    assert_true(s / 100000 > 0.49 && s / 100000 < 0.51);
    /* permutation: each index once */
    uint64_t p[1000];
    moco_rng_permutation(&a, p, 1000);
    char seen[1000] = {0};
    int moved = 0;
    for (int i = 0; i < 1000; i++) {
        assert_true(p[i] < 1000);
        assert_false(seen[p[i]]);
        seen[p[i]] = 1;
        moved += p[i] != (uint64_t)i;
    }
    assert_true(moved > 900);
}

/* An LMDB environment in dir with a write transaction open on its "meta" database. */
static void meta_env(const char *dir, MDB_env **env, MDB_txn **t, MDB_dbi *meta)
{
    assert_int_equal(mdb_env_create(env), 0);
    mdb_env_set_maxdbs(*env, 4);
    assert_int_equal(mdb_env_open(*env, dir, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(*env, NULL, 0, t), 0);
    assert_int_equal(mdb_dbi_open(*t, "meta", MDB_CREATE, meta), 0);
}

static void test_meta_round_trip(void **st)
{
    (void)st;
    const char *dir = tu_tmpdir("record_meta");
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi meta;
    meta_env(dir, &env, &t, &meta);
    char *names[] = {"cat", "dog", "T-shirt/top"};
    uint64_t counts[] = {5, 0, 7};
    moco_db_meta m = {.count = 14, .nclasses = 3, .class_names = names, .class_counts = counts, .unlabelled = 2,
                      .source = "/data/x", .source_format = "folder", .payload_bytes = 12345,
                      .enc_counts = {1, 12, 1}, .min_w = 3, .max_w = 500, .min_h = 4, .max_h = 375,
                      .skipped = 9, .shuffled = 1, .shuffle_seed = 77};
    assert_int_equal(moco_db_meta_put(t, meta, &m), 0);
    moco_db_meta g;
    assert_int_equal(moco_db_meta_get(t, meta, dir, &g), 0);
    assert_int_equal(g.format_version, MOCO_DB_FORMAT_VERSION);
    assert_int_equal(g.count, 14);
    assert_int_equal(g.nclasses, 3);
    for (int i = 0; i < 3; i++) {
        assert_string_equal(g.class_names[i], names[i]);
        assert_int_equal(g.class_counts[i], counts[i]);
    }
    assert_int_equal(g.unlabelled, 2);
    assert_string_equal(g.source, "/data/x");
    assert_string_equal(g.source_format, "folder");
    assert_int_equal(g.payload_bytes, 12345);
    assert_int_equal(g.enc_counts[1], 12);
    assert_int_equal(g.min_w, 3);
    assert_int_equal(g.max_w, 500);
    assert_int_equal(g.min_h, 4);
    assert_int_equal(g.max_h, 375);
    assert_int_equal(g.skipped, 9);
    assert_int_equal(g.shuffled, 1);
    assert_int_equal(g.shuffle_seed, 77);
    moco_db_meta_clear(&g);
    /* inconsistent counts are refused */
    m.count = 15;
    assert_int_equal(moco_db_meta_put(t, meta, &m), 0);
    assert_int_equal(moco_db_meta_get(t, meta, dir, &g), MOCO_ECORRUPT);
    print_message("  -> %s\n", moco_errmsg());
    /* a newer format version is refused */
    m.count = 14;
    assert_int_equal(moco_db_meta_put(t, meta, &m), 0);
    uint8_t v2[8] = {2};
    MDB_val k = {14, "format_version"}, v = {8, v2};
    assert_int_equal(mdb_put(t, meta, &k, &v, 0), 0);
    assert_int_equal(moco_db_meta_get(t, meta, dir, &g), MOCO_EFORMAT);
    mdb_txn_abort(t);
    mdb_env_close(env);
}

/* A class name the reader could not give back is refused by the writer,
 * naming the class, and nothing is written (before: "cl\nass" was written,
 * read back as two names, and the dataset refused: 'class_counts' holds 16
 * bytes for 3 classes). So is one that is not UTF-8. */
static void test_meta_refuses_unreadable_names(void **st)
{
    (void)st;
    const char *dir = tu_tmpdir("record_meta_names");
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi meta;
    meta_env(dir, &env, &t, &meta);
    const char *bad[] = {"cl\nass", "caf\xe9", "\xc3\x28", "\xed\xa0\x80" /* a surrogate */};
    for (int b = 0; b < 4; b++) {
        char *names[] = {"b", (char *)bad[b]};
        uint64_t counts[] = {1, 1};
        moco_db_meta m = {.count = 2, .nclasses = 2, .class_names = names, .class_counts = counts};
        assert_int_equal(moco_db_meta_put(t, meta, &m), MOCO_EINVAL);
        assert_non_null(strstr(moco_errmsg(), "class 1's name"));
        print_message("  -> %s\n", moco_errmsg());
        MDB_val k = {7, "classes"}, v;
        assert_int_equal(mdb_get(t, meta, &k, &v), MDB_NOTFOUND);
    }
    char *fine[] = {"b", "caf\xc3\xa9 \xe2\x9c\x93"}; /* UTF-8 passes */
    uint64_t counts[] = {1, 1};
    moco_db_meta m = {.count = 2, .nclasses = 2, .class_names = fine, .class_counts = counts}, g;
    assert_int_equal(moco_db_meta_put(t, meta, &m), 0);
    assert_int_equal(moco_db_meta_get(t, meta, dir, &g), 0);
    assert_string_equal(g.class_names[1], fine[1]);
    moco_db_meta_clear(&g);
    mdb_txn_abort(t);
    mdb_env_close(env);
}

static void test_options(void **st)
{
    (void)st;
    long n = 3;
    double f = 0.5;
    const char *s = NULL, *c = "a";
    int flag = 0;
    const moco_opt o[] = {
        {"n", MOCO_OPT_INT, &n, "", 1, 10, NULL}, {"f", MOCO_OPT_DOUBLE, &f, "", 0, 1, NULL},
        {"s", MOCO_OPT_STR, &s, "", 0, 0, NULL},  {"c", MOCO_OPT_CHOICE, &c, "", 0, 0, "a|bb"},
        {"flag", MOCO_OPT_FLAG, &flag, "", 0, 0, NULL}, {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec sp = {"t", "X", NULL, o, 1, 1, NULL};
    char *pos[1];
    int np;
    char *ok[] = {"t", "--n", "7", "--f=0.25", "pos", "--s", "x", "--c", "bb", "--flag"};
    assert_int_equal(moco_opts_parse(&sp, 10, ok, pos, &np), MOCO_OPTS_OK);
    assert_int_equal(n, 7);
    assert_true(f == 0.25);
    assert_string_equal(s, "x");
    assert_string_equal(c, "bb");
    assert_int_equal(flag, 1);
    assert_int_equal(np, 1);
    assert_string_equal(pos[0], "pos");
    assert_true(moco_opts_seen(&sp, "f"));
    char *bad[][3] = {{"t", "p", "--nope"}, {"t", "p", "--n=11"}, {"t", "p", "--n=x"}, {"t", "p", "--f=nan"},
                      {"t", "p", "--c=zz"}, {"t", "p", "--n"}, {"t", "p", "q"}, {"t", "p", "--flag=1"},
                      {"t", "p", "-n"}};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        assert_int_equal(moco_opts_parse(&sp, 3, bad[i], pos, &np), MOCO_OPTS_USAGE);
    char *none[] = {"t"};
    assert_int_equal(moco_opts_parse(&sp, 1, none, pos, &np), MOCO_OPTS_USAGE);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_crc32_known_value),   cmocka_unit_test(test_header_round_trip),
        cmocka_unit_test(test_header_little_endian_layout), cmocka_unit_test(test_parse_refuses_malformed),
        cmocka_unit_test(test_header_crc_finds_any_flip),
        cmocka_unit_test(test_version1_still_read),
        cmocka_unit_test(test_key_order_is_index_order), cmocka_unit_test(test_rng_streams),
        cmocka_unit_test(test_meta_round_trip),    cmocka_unit_test(test_meta_refuses_unreadable_names),    cmocka_unit_test(test_options),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
