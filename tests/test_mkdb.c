/* test_mkdb.c: `moco mkdb` and `moco info` end to end, on fixtures this test
 * makes itself: image folders with corrupt, truncated, empty and non-image
 * files mixed in; CIFAR-10 and IDX files, whole, truncated and malformed;
 * map growth from a tiny map; atomic output under SIGKILL; --shuffle;
 * decompression bombs and --max-pixels; what --force may replace; class
 * names the dataset cannot hold; OUT inside SRC; broken links and FIFOs; a TIFF's
 * orientation; JPEGs whose header warns, decoded downstream as PIL does. */
#include "tests/testutil.h"

#include <inttypes.h>
#include <turbojpeg.h>
#include <vips/vips.h>
#include <zlib.h>

#include "augment/augment.h"
#include "formats/db.h"
#include "formats/errors.h"
#include "formats/record.h"
#include "loader/sources.h"
#include "trainer/evalset.h"

static char tmp[4096];

static void write_bytes(const char *path, const void *b, size_t n)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(b, 1, n, f), n);
    fclose(f);
}

/* A w x h x bands test image with a seeded pattern, saved by libvips in the
 * format chosen by the file suffix. */
static void make_image(const char *path, int w, int h, int bands, int seed)
{
    uint8_t *px = malloc((size_t)w * h * bands);
    for (int i = 0; i < w * h * bands; i++) px[i] = (uint8_t)((i * 7 + seed * 31 + (i / (w * bands)) * 3) & 0xFF);
    VipsImage *im = vips_image_new_from_memory_copy(px, (size_t)w * h * bands, w, h, bands, VIPS_FORMAT_UCHAR);
    assert_non_null(im);
    if (vips_image_write_to_file(im, path, NULL)) fail_msg("cannot write %s: %s", path, vips_error_buffer());
    g_object_unref(im);
    free(px);
}

static int run_mkdb(const char *args)
{
    return tu_sh("%s mkdb %s >%s/out.txt 2>%s/err.txt", tu_moco(), args, tmp, tmp);
}

static int err_has(const char *needle)
{
    char p[4200];
    size_t n;
    snprintf(p, sizeof p, "%s/err.txt", tmp);
    char *e = (char *)tu_read_file(p, &n);
    e[n] = 0;
    int r = strstr(e, needle) != NULL;
    if (!r) print_message("stderr lacks '%s':\n%s\n", needle, e);
    free(e);
    return r;
}

static moco_db *open_db(const char *path)
{
    moco_db *db;
    int rc = moco_db_open(path, &db);
    if (rc) fail_msg("open %s: %s", path, moco_errmsg());
    return db;
}

/* The payload of record i and its parsed header. */
static const uint8_t *get_rec(moco_db *db, uint64_t i, moco_rec_header *h, uint8_t **buf, size_t *cap)
{
    size_t len;
    const uint8_t *pl;
    assert_int_equal(moco_db_get(db, i, buf, cap, &len), 0);
    if (moco_rec_parse(*buf, len, 1, "record", h, &pl)) fail_msg("%s", moco_errmsg());
    return pl;
}

static void test_folder_with_bad_files(void **st)
{
    (void)st;
    char p[4300], q[4300];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_folder"));
    tu_sh("mkdir -p %s/src/ants %s/src/bees", tmp, tmp);
    snprintf(p, sizeof p, "%s/src/ants/a1.jpg", tmp); make_image(p, 40, 30, 3, 1);
    snprintf(p, sizeof p, "%s/src/ants/a2.png", tmp); make_image(p, 20, 25, 3, 2);
    snprintf(p, sizeof p, "%s/src/ants/gray.png", tmp); make_image(p, 16, 16, 1, 3);
    snprintf(p, sizeof p, "%s/src/bees/b1.webp", tmp); make_image(p, 24, 24, 3, 4);
    snprintf(p, sizeof p, "%s/src/bees/b2.tif", tmp); make_image(p, 12, 10, 3, 5);
    snprintf(p, sizeof p, "%s/src/bees/sub", tmp); tu_sh("mkdir -p %s", p);
    snprintf(p, sizeof p, "%s/src/bees/sub/b3.jpg", tmp); make_image(p, 64, 48, 3, 6);
    /* bad ones: empty, text, random bytes named .jpg, truncated JPEG and PNG */
    snprintf(p, sizeof p, "%s/src/bees/empty.jpg", tmp); write_bytes(p, "", 0);
    snprintf(p, sizeof p, "%s/src/bees/notes.txt", tmp); write_bytes(p, "not an image\n", 13);
    uint8_t junk[500];
    for (int i = 0; i < 500; i++) junk[i] = (uint8_t)(i * 131 + 7);
    junk[0] = 0xFF; junk[1] = 0xD8; junk[2] = 0xFF;
    snprintf(p, sizeof p, "%s/src/ants/junk.jpg", tmp); write_bytes(p, junk, sizeof junk);
    size_t n;
    snprintf(q, sizeof q, "%s/src/bees/sub/b3.jpg", tmp);
    uint8_t *full = tu_read_file(q, &n);
    snprintf(p, sizeof p, "%s/src/ants/trunc.jpg", tmp); write_bytes(p, full, n * 2 / 3);
    free(full);
    snprintf(q, sizeof q, "%s/src/ants/a2.png", tmp);
    full = tu_read_file(q, &n);
    snprintf(p, sizeof p, "%s/src/bees/trunc.png", tmp); write_bytes(p, full, n / 2);
    free(full);

    char args[9000];
    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    const char *bad[] = {"empty.jpg", "notes.txt", "junk.jpg", "trunc.jpg", "trunc.png"};
    for (int i = 0; i < 5; i++) assert_true(err_has(bad[i]));
    assert_false(err_has("a1.jpg"));
    snprintf(p, sizeof p, "%s/db", tmp);
    moco_db *db = open_db(p);
    const moco_db_meta *m = moco_db_get_meta(db);
    assert_int_equal(m->count, 6);
    assert_int_equal(m->skipped, 5);
    assert_int_equal(m->nclasses, 2);
    assert_string_equal(m->class_names[0], "ants");
    assert_string_equal(m->class_names[1], "bees");
    assert_int_equal(m->class_counts[0], 3);
    assert_int_equal(m->class_counts[1], 3);
    assert_int_equal(m->enc_counts[MOCO_ENC_JPEG], 2);
    assert_int_equal(m->enc_counts[MOCO_ENC_PNG], 4);
    assert_int_equal(m->min_w, 12);
    assert_int_equal(m->max_w, 64);
    /* sorted order: ants/a1.jpg a2.png gray.png, bees/b1.webp b2.tif sub/b3.jpg */
    uint8_t *buf = NULL;
    size_t cap = 0;
    moco_rec_header h;
    const uint8_t *pl = get_rec(db, 0, &h, &buf, &cap);
    snprintf(q, sizeof q, "%s/src/ants/a1.jpg", tmp);
    full = tu_read_file(q, &n);
    assert_int_equal(h.encoding, MOCO_ENC_JPEG);
    assert_int_equal(h.payload_len, n);
    assert_memory_equal(pl, full, n); /* JPEG stored byte for byte */
    assert_int_equal(h.width, 40);
    assert_int_equal(h.height, 30);
    assert_int_equal(h.channels, 3);
    assert_int_equal(h.label, 0);
    free(full);
    pl = get_rec(db, 2, &h, &buf, &cap);
    assert_int_equal(h.channels, 1);
    assert_int_equal(h.encoding, MOCO_ENC_PNG);
    /* WebP re-encoded as lossless PNG: same pixels */
    pl = get_rec(db, 3, &h, &buf, &cap);
    assert_int_equal(h.encoding, MOCO_ENC_PNG);
    assert_int_equal(h.label, 1);
    VipsImage *a = vips_image_new_from_buffer(pl, h.payload_len, "", NULL), *b;
    snprintf(q, sizeof q, "%s/src/bees/b1.webp", tmp);
    b = vips_image_new_from_file(q, NULL);
    assert_non_null(a);
    assert_non_null(b);
    size_t la, lb;
    void *pa = vips_image_write_to_memory(a, &la), *pb = vips_image_write_to_memory(b, &lb);
    assert_int_equal(la, lb);
    assert_memory_equal(pa, pb, la);
    g_free(pa);
    g_free(pb);
    g_object_unref(a);
    g_object_unref(b);
    free(buf);
    moco_db_destroy(&db);
    /* info --json agrees */
    assert_int_equal(tu_sh("%s info --json %s/db > %s/info.json && grep -q '\"count\":6' %s/info.json && "
                           "grep -q '\"png\":4' %s/info.json", tu_moco(), tmp, tmp, tmp, tmp), 0);
    assert_int_equal(tu_sh("%s info --verify %s/db >/dev/null", tu_moco(), tmp), 0);

    /* --strict: fails on the first bad file, leaves nothing */
    snprintf(args, sizeof args, "%s/src %s/strict --strict --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("--strict"));
    snprintf(p, sizeof p, "%s/strict", tmp);
    assert_false(tu_exists(p));
    /* OUT exists: refused, then replaced with --force */
    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("exists"));
    snprintf(args, sizeof args, "%s/src %s/db --quiet --force --max-side 32", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(p, sizeof p, "%s/db", tmp);
    db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->max_w, 32); /* --max-side shrank the 40 and 64 px images */
    assert_int_equal(moco_db_get_meta(db)->max_h, 25); /* 64x48 -> 32x24, 40x30 -> 32x24, 20x25 kept */
    moco_db_destroy(&db);
}

static void test_nothing_valid_fails(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_none"));
    tu_sh("mkdir -p %s/src/c", tmp);
    snprintf(p, sizeof p, "%s/src/c/x.jpg", tmp);
    write_bytes(p, "garbage", 7);
    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("no valid images"));
    snprintf(p, sizeof p, "%s/db", tmp);
    assert_false(tu_exists(p));
    assert_int_equal(tu_sh("ls %s | grep -q tmp-", tmp), 1); /* temporary removed too */
    /* usage errors exit 2 */
    snprintf(args, sizeof args, "%s/src %s/db --bogus", tmp, tmp);
    assert_int_equal(run_mkdb(args), 2);
    snprintf(args, sizeof args, "%s/src %s/db --threads lots", tmp, tmp);
    assert_int_equal(run_mkdb(args), 2);
    snprintf(args, sizeof args, "%s/src", tmp);
    assert_int_equal(run_mkdb(args), 2);
}

/* CIFAR-10 batch with n records; label i%10, pixels from (i, channel, pos). */
static void make_cifar(const char *path, int n, size_t cut, int bad_label_at)
{
    size_t len = (size_t)n * 3073;
    uint8_t *b = malloc(len);
    for (int i = 0; i < n; i++) {
        uint8_t *r = b + (size_t)i * 3073;
        r[0] = (uint8_t)(i == bad_label_at ? 10 : i % 10);
        for (int c = 0; c < 3; c++)
            for (int k = 0; k < 1024; k++) r[1 + c * 1024 + k] = (uint8_t)(i * 3 + c * 50 + k);
    }
    write_bytes(path, b, len - cut);
    free(b);
}

static void test_cifar_binary(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_cifar"));
    tu_sh("mkdir -p %s/c", tmp);
    for (int k = 1; k <= 5; k++) {
        snprintf(p, sizeof p, "%s/c/data_batch_%d.bin", tmp, k);
        make_cifar(p, 4, 0, -1);
    }
    snprintf(p, sizeof p, "%s/c/test_batch.bin", tmp);
    make_cifar(p, 3, 0, -1);
    snprintf(args, sizeof args, "%s/c %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 2); /* both splits present: must choose */
    assert_true(err_has("--split"));
    snprintf(args, sizeof args, "%s/c %s/train --split train --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(args, sizeof args, "%s/c %s/test --split test --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(p, sizeof p, "%s/train", tmp);
    moco_db *db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, 20);
    assert_string_equal(moco_db_get_meta(db)->class_names[3], "cat");
    uint8_t *buf = NULL;
    size_t cap = 0;
    moco_rec_header h;
    const uint8_t *pl = get_rec(db, 6, &h, &buf, &cap); /* batch 2, record 2 */
    assert_int_equal(h.encoding, MOCO_ENC_RAW);
    assert_int_equal(h.label, 2);
    assert_int_equal(h.width, 32);
    assert_int_equal(h.channels, 3);
    for (int k = 0; k < 1024; k += 97) /* CHW planes became HWC */
        for (int c = 0; c < 3; c++) assert_int_equal(pl[k * 3 + c], (uint8_t)(2 * 3 + c * 50 + k));
    free(buf);
    moco_db_destroy(&db);
    snprintf(p, sizeof p, "%s/test", tmp);
    db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, 3);
    moco_db_destroy(&db);
    /* truncated batch: error names the file and the offset, no output */
    snprintf(p, sizeof p, "%s/c/data_batch_3.bin", tmp);
    make_cifar(p, 4, 100, -1);
    snprintf(args, sizeof args, "%s/c %s/bad --split train --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("data_batch_3.bin"));
    assert_true(err_has("offset 9219"));
    snprintf(p, sizeof p, "%s/bad", tmp);
    assert_false(tu_exists(p));
    /* malformed label */
    snprintf(p, sizeof p, "%s/c/data_batch_3.bin", tmp);
    make_cifar(p, 4, 0, 2);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("label 10"));
    assert_true(err_has("offset 6146"));
}

static void be32(uint8_t *p, uint32_t v)
{
    p[0] = (uint8_t)(v >> 24); p[1] = (uint8_t)(v >> 16); p[2] = (uint8_t)(v >> 8); p[3] = (uint8_t)v;
}

/* IDX pair for n images of r x c; gz: write compressed. cut: bytes removed
 * from the image file's end; magic: image file magic. */
static void make_idx(const char *dir, const char *pre, uint32_t n, uint32_t r, uint32_t c, size_t cut, uint32_t magic, int gz)
{
    size_t il = 16 + (size_t)n * r * c, ll = 8 + n;
    uint8_t *im = malloc(il), *lb = malloc(ll);
    be32(im, magic); be32(im + 4, n); be32(im + 8, r); be32(im + 12, c);
    for (size_t i = 16; i < il; i++) im[i] = (uint8_t)(i * 13);
    for (uint32_t i = 0; i < n && r * c >= 4; i++) moco_put_le32(im + 16 + (size_t)i * r * c, i); /* distinct images */
    be32(lb, 0x801); be32(lb + 4, n);
    for (uint32_t i = 0; i < n; i++) lb[8 + i] = (uint8_t)(i % 10);
    char p[4400];
    snprintf(p, sizeof p, "%s/%s-images-idx3-ubyte%s", dir, pre, gz ? ".gz" : "");
    if (gz) {
        gzFile f = gzopen(p, "wb");
        gzwrite(f, im, (unsigned)(il - cut));
        gzclose(f);
    } else {
        write_bytes(p, im, il - cut);
    }
    snprintf(p, sizeof p, "%s/%s-labels-idx1-ubyte", dir, pre);
    write_bytes(p, lb, ll);
    free(im);
    free(lb);
}

static void test_idx_and_map_growth(void **st)
{
    (void)st;
    char p[4300], args[9000], d[4300];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_idx"));
    snprintf(d, sizeof d, "%s/fashion", tmp);
    tu_sh("mkdir -p %s", d);
    make_idx(d, "train", 3000, 28, 28, 0, 0x803, 1);
    make_idx(d, "t10k", 7, 28, 28, 0, 0x803, 0);
    /* tiny initial map: must grow, data intact */
    snprintf(args, sizeof args, "%s %s/train --split train --map-size 65536 --batch 500 --quiet", d, tmp);
    assert_int_equal(run_mkdb(args), 0);
    assert_int_equal(tu_sh("grep -q 'map grown' %s/out.txt", tmp), 0);
    snprintf(p, sizeof p, "%s/train", tmp);
    moco_db *db = open_db(p);
    const moco_db_meta *m = moco_db_get_meta(db);
    assert_int_equal(m->count, 3000);
    assert_string_equal(m->class_names[0], "T-shirt/top"); /* "fashion" in the path */
    assert_string_equal(m->source_format, "idx");
    uint8_t *buf = NULL;
    size_t cap = 0;
    moco_rec_header h;
    const uint8_t *pl = get_rec(db, 2999, &h, &buf, &cap);
    assert_int_equal(h.label, 9);
    assert_int_equal(h.channels, 1);
    assert_int_equal(h.width, 28);
    for (int k = 61; k < 784; k += 61) assert_int_equal(pl[k], (uint8_t)((16 + 2999 * 784 + k) * 13));
    free(buf);
    moco_db_destroy(&db);
    snprintf(args, sizeof args, "%s %s/test --split test --quiet", d, tmp);
    assert_int_equal(run_mkdb(args), 0);
    /* truncated (gz) and malformed files: named, with the offset */
    make_idx(d, "train", 3000, 28, 28, 1000, 0x803, 1);
    snprintf(args, sizeof args, "%s %s/bad --split train --quiet", d, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("train-images-idx3-ubyte.gz"));
    assert_true(err_has("truncated at offset 2351016"));
    make_idx(d, "train", 30, 28, 28, 0, 0x802, 0);
    tu_sh("rm -f %s/train-images-idx3-ubyte.gz", d);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("bad magic"));
    snprintf(p, sizeof p, "%s/bad", tmp);
    assert_false(tu_exists(p));
    /* a label file that disagrees on the count */
    make_idx(d, "train", 30, 28, 28, 0, 0x803, 0);
    snprintf(p, sizeof p, "%s/train-labels-idx1-ubyte", d);
    uint8_t lb[8 + 29];
    be32(lb, 0x801); be32(lb + 4, 29);
    memset(lb + 8, 1, 29);
    write_bytes(p, lb, sizeof lb);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("29 labels"));
}

static void test_killed_midway_leaves_nothing(void **st)
{
    (void)st;
    char d[4300], args[9000], p[4300];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_kill"));
    snprintf(d, sizeof d, "%s/mnist", tmp);
    tu_sh("mkdir -p %s", d);
    make_idx(d, "train", 2000, 28, 28, 0, 0x803, 0);
    int st2 = tu_sh("MOCO_MKDB_TEST_KILL_AFTER=2 %s mkdb %s %s/db --batch 100 --quiet >/dev/null 2>&1", tu_moco(), d, tmp);
    assert_int_equal(st2, 128 + 9); /* SIGKILL, by the test hook, after 2 of 20 batches */
    snprintf(p, sizeof p, "%s/db", tmp);
    assert_false(tu_exists(p));
    assert_int_equal(tu_sh("ls %s | grep -q 'db.tmp-'", tmp), 0); /* its partial work is only a temporary */
    /* the next run completes and removes the stale temporary */
    snprintf(args, sizeof args, "%s %s/db --quiet", d, tmp);
    assert_int_equal(run_mkdb(args), 0);
    assert_true(err_has("interrupted run"));
    assert_int_equal(tu_sh("ls %s | grep -q 'db.tmp-'", tmp), 1);
    moco_db *db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, 2000);
    moco_db_destroy(&db);
}

/* payload byte 0..8 of every record, as a fingerprint */
static void fingerprints(const char *path, uint64_t *fp, int32_t *labels, uint64_t n)
{
    moco_db *db = open_db(path);
    assert_int_equal(moco_db_get_meta(db)->count, n);
    uint8_t *buf = NULL;
    size_t cap = 0;
    for (uint64_t i = 0; i < n; i++) {
        moco_rec_header h;
        const uint8_t *pl = get_rec(db, i, &h, &buf, &cap);
        memcpy(&fp[i], pl, 8);
        labels[i] = h.label;
    }
    free(buf);
    moco_db_destroy(&db);
}

static int cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

static void test_shuffle_is_a_reproducible_permutation(void **st)
{
    (void)st;
    enum { N = 500 };
    char d[4300], args[9000], p[4300];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_shuffle"));
    snprintf(d, sizeof d, "%s/m", tmp);
    tu_sh("mkdir -p %s", d);
    make_idx(d, "train", N, 4, 4, 0, 0x803, 0); /* 16-byte images, distinct first 4 bytes */
    static uint64_t plain[N], s1[N], s2[N], s3[N];
    static int32_t lp[N], l1[N], l2[N], l3[N];
    const char *names[] = {"plain", "s1", "s2", "s3"};
    const char *extra[] = {"", "--shuffle --seed 7", "--shuffle --seed 7", "--shuffle --seed 8"};
    uint64_t *fps[] = {plain, s1, s2, s3};
    int32_t *lbs[] = {lp, l1, l2, l3};
    for (int k = 0; k < 4; k++) {
        snprintf(args, sizeof args, "%s %s/%s %s --quiet", d, tmp, names[k], extra[k]);
        assert_int_equal(run_mkdb(args), 0);
        snprintf(p, sizeof p, "%s/%s", tmp, names[k]);
        fingerprints(p, fps[k], lbs[k], N);
    }
    assert_memory_equal(s1, s2, sizeof s1); /* same seed, same order */
    assert_memory_equal(l1, l2, sizeof l1);
    assert_memory_not_equal(s1, plain, sizeof s1);
    assert_memory_not_equal(s1, s3, sizeof s1);
    /* labels travel with their images */
    for (int i = 0; i < N; i++)
        for (int j = 0; j < N; j++)
            if (s1[i] == plain[j]) assert_int_equal(l1[i], lp[j]);
    qsort(s1, N, 8, cmp_u64);
    qsort(plain, N, 8, cmp_u64);
    assert_memory_equal(s1, plain, sizeof s1); /* a permutation: nothing lost or repeated */
    for (int i = 1; i < N; i++) assert_true(plain[i] != plain[i - 1]);
    assert_int_equal(tu_sh("%s info --json %s/s1 | grep -q '\"shuffle_seed\":7'", tu_moco(), tmp), 0);
}

static void test_fashion_mnist_package(void **st)
{
    (void)st;
    const char *src = "/usr/share/datasets/fashion-mnist";
    if (!tu_exists(src)) {
        printf("skipped: the Fashion-MNIST import (%s absent)\n", src);
        skip();
    }
    char args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_fashion"));
    snprintf(args, sizeof args, "%s %s/test --split test --quiet", src, tmp);
    assert_int_equal(run_mkdb(args), 0);
    assert_int_equal(tu_sh("%s info --json %s/test | grep -q '\"count\":10000,\"num_classes\":10'", tu_moco(), tmp), 0);
}

/* A valid w x h RGB JPEG from TurboJPEG (a seeded, noisy pattern, so the
 * scan data is most of the file); flags: TJFLAG_*. Returns malloc'd bytes. */
static uint8_t *tj_jpeg(int w, int h, int flags, size_t *len)
{
    uint8_t *px = malloc((size_t)w * h * 3);
    uint32_t r = 12345;
    for (int i = 0; i < w * h * 3; i++) {
        r = r * 1103515245u + 12345u;
        px[i] = (uint8_t)((i * 5) ^ (r >> 24));
    }
    tjhandle tj = tjInitCompress();
    unsigned char *jpg = NULL;
    unsigned long n = 0;
    assert_int_equal(tjCompress2(tj, px, w, 0, h, TJPF_RGB, &jpg, &n, TJSAMP_420, 90, flags), 0);
    uint8_t *out = malloc(n);
    memcpy(out, jpg, n);
    tjFree(jpg);
    tjDestroy(tj);
    free(px);
    *len = n;
    return out;
}

/* Set the dimensions in a JPEG's SOF0 header (a decompression bomb: the
 * header claims w x h, the data holds a small image). */
static void patch_sof(uint8_t *j, size_t n, int w, int h)
{
    for (size_t i = 2; i + 9 < n; i++)
        if (j[i] == 0xFF && j[i + 1] == 0xC0) {
            j[i + 5] = (uint8_t)(h >> 8), j[i + 6] = (uint8_t)h;
            j[i + 7] = (uint8_t)(w >> 8), j[i + 8] = (uint8_t)w;
            return;
        }
    fail_msg("no SOF0 marker");
}

static int out_has(const char *needle)
{
    char p[4200];
    size_t n;
    snprintf(p, sizeof p, "%s/out.txt", tmp);
    char *e = (char *)tu_read_file(p, &n);
    e[n] = 0;
    int r = strstr(e, needle) != NULL;
    if (!r) print_message("stdout lacks '%s':\n%s\n", needle, e);
    free(e);
    return r;
}

static void test_bombs_and_truncated_jpegs(void **st)
{
    (void)st;
    char p[4300], args[9000];
    size_t n;
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_bomb"));
    tu_sh("mkdir -p %s/src/c", tmp);
    uint8_t *j = tj_jpeg(64, 48, 0, &n);
    snprintf(p, sizeof p, "%s/src/c/good.jpg", tmp); write_bytes(p, j, n);
    snprintf(p, sizeof p, "%s/src/c/half.jpg", tmp); write_bytes(p, j, n / 2); /* truncated in the scan */
    /* a recoverable warning (garbage before the second scan of a
     * progressive JPEG) is accepted, and does not hide a truncation after it */
    size_t pn;
    uint8_t *pj = tj_jpeg(64, 48, TJFLAG_PROGRESSIVE, &pn), *x = malloc(pn + 4);
    size_t sos = 2, seen = 0;
    for (; sos + 1 < pn; sos++)
        if (pj[sos] == 0xFF && pj[sos + 1] == 0xDA && ++seen == 2) break;
    assert_true(sos + 1 < pn);
    memcpy(x, pj, sos);
    memcpy(x + sos, "\x01\x02\x03\x04", 4);
    memcpy(x + sos + 4, pj + sos, pn - sos);
    snprintf(p, sizeof p, "%s/src/c/extra.jpg", tmp); write_bytes(p, x, pn + 4);
    snprintf(p, sizeof p, "%s/src/c/extra_cut.jpg", tmp); write_bytes(p, x, sos + 4 + (pn - sos) / 2);
    free(x);
    free(pj);
    patch_sof(j, n, 30000, 30000);
    snprintf(p, sizeof p, "%s/src/c/bomb.jpg", tmp); write_bytes(p, j, n); /* ~2 KB claiming 900 Mpixel */
    print_message("  bomb.jpg: %zu bytes claiming 30000x30000\n", n);
    free(j);
    snprintf(p, sizeof p, "%s/src/c/small.png", tmp); make_image(p, 40, 30, 3, 7);
    snprintf(p, sizeof p, "%s/src/c/tiny.png", tmp); make_image(p, 20, 20, 3, 8);

    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    assert_true(err_has("skipping"));
    assert_true(err_has("bomb.jpg: 30000x30000"));
    assert_true(err_has("--max-pixels 64000000"));
    assert_true(err_has("/half.jpg: corrupt or truncated"));
    assert_true(err_has("extra_cut.jpg: corrupt or truncated"));
    assert_false(err_has("good.jpg"));
    assert_false(err_has("extra.jpg"));
    assert_true(out_has("skipped 3"));
    snprintf(p, sizeof p, "%s/db", tmp);
    moco_db *db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, 4);
    assert_int_equal(moco_db_get_meta(db)->skipped, 3);
    moco_db_destroy(&db);

    /* the libvips path (--max-side re-encodes): the same two refused */
    snprintf(args, sizeof args, "%s/src %s/db2 --quiet --max-side 32", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    assert_true(err_has("/half.jpg: corrupt or truncated"));
    assert_true(err_has("extra_cut.jpg: corrupt or truncated"));
    assert_true(err_has("bomb.jpg: 30000x30000"));
    assert_true(out_has("skipped 3"));
    /* --max-pixels N, on JPEG and PNG headers alike */
    snprintf(args, sizeof args, "%s/src %s/db3 --quiet --max-pixels 1000", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    assert_true(err_has("small.png: 40x30"));
    assert_true(err_has("good.jpg: 64x48"));
    assert_true(err_has("--max-pixels 1000"));
    assert_false(err_has("tiny.png"));
    snprintf(p, sizeof p, "%s/db3", tmp);
    db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, 1);
    assert_int_equal(moco_db_get_meta(db)->skipped, 6);
    moco_db_destroy(&db);
}

static void test_force_replaces_only_a_dataset(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_force"));
    tu_sh("mkdir -p %s/src/c %s/precious", tmp, tmp);
    snprintf(p, sizeof p, "%s/src/c/a.png", tmp); make_image(p, 16, 16, 3, 1);
    snprintf(p, sizeof p, "%s/precious/notes.txt", tmp); write_bytes(p, "keep me\n", 8);

    /* a folder that is not a dataset: refused, untouched */
    snprintf(args, sizeof args, "%s/src %s/precious --quiet --force", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("notes.txt"));
    assert_true(err_has("not a moco dataset"));
    snprintf(p, sizeof p, "%s/precious/notes.txt", tmp);
    assert_true(tu_exists(p));
    assert_int_equal(tu_sh("ls %s | grep -q tmp-", tmp), 1);
    /* a dataset with a stranger inside: refused too */
    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(p, sizeof p, "%s/db/notes.txt", tmp); write_bytes(p, "mine\n", 5);
    snprintf(args, sizeof args, "%s/src %s/db --quiet --force", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("notes.txt"));
    assert_true(tu_exists(p));
    /* an LMDB environment that is not a moco dataset (no meta database) */
    tu_sh("mkdir -p %s/other", tmp);
    snprintf(p, sizeof p, "%s/other", tmp);
    MDB_env *env;
    MDB_txn *t;
    MDB_dbi d;
    assert_int_equal(mdb_env_create(&env), 0);
    assert_int_equal(mdb_env_open(env, p, 0, 0644), 0);
    assert_int_equal(mdb_txn_begin(env, NULL, 0, &t), 0);
    assert_int_equal(mdb_dbi_open(t, NULL, 0, &d), 0);
    MDB_val k = {3, "key"}, v = {5, "value"};
    assert_int_equal(mdb_put(t, d, &k, &v, 0), 0);
    assert_int_equal(mdb_txn_commit(t), 0);
    mdb_env_close(env);
    snprintf(args, sizeof args, "%s/src %s/other --quiet --force", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("not a moco dataset"));
    snprintf(p, sizeof p, "%s/other/data.mdb", tmp);
    assert_true(tu_exists(p));
    /* a plain file: refused */
    snprintf(p, sizeof p, "%s/file", tmp); write_bytes(p, "x", 1);
    snprintf(args, sizeof args, "%s/src %s/file --quiet --force", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(tu_exists(p));
    /* a real dataset: replaced */
    snprintf(p, sizeof p, "%s/db/notes.txt", tmp);
    unlink(p);
    snprintf(args, sizeof args, "%s/src %s/db --quiet --force --max-side 8", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(p, sizeof p, "%s/db", tmp);
    moco_db *db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->max_w, 8);
    moco_db_destroy(&db);
    assert_int_equal(tu_sh("ls %s | grep -q 'old-\\|tmp-'", tmp), 1); /* nothing left beside it */
    /* an empty directory destroys nothing: allowed */
    tu_sh("mkdir -p %s/empty", tmp);
    snprintf(args, sizeof args, "%s/src %s/empty --quiet --force", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
}

/* OUT inside SRC: never a class, nor its files inputs, wherever it sits
 * (a class of SRC, inside a class, through a link), nor mkdb's OUT.tmp-PID
 * beside it (a stale one, of a process that is gone). Before: the second
 * run with --force listed the old OUT as a class "db" of 0 samples and
 * skipped its data.mdb and lock.mdb as 2 bad inputs. */
static void test_out_inside_src_not_an_input(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_out_in_src"));
    tu_sh("mkdir -p %s/src/a %s/src/b", tmp, tmp);
    snprintf(p, sizeof p, "%s/src/a/1.png", tmp); make_image(p, 8, 8, 3, 1);
    snprintf(p, sizeof p, "%s/src/b/1.png", tmp); make_image(p, 8, 8, 3, 2);
    const char *outs[] = {"db", "a/db"};
    for (int k = 0; k < 2; k++) {
        for (int force = 0; force < 2; force++) {
            if (force) tu_sh("mkdir -p %s/src/%s.tmp-2147483646 && ln -sfn %s/src/%s %s/src/b/link", tmp, outs[k], tmp, outs[k], tmp);
            snprintf(args, sizeof args, "%s/src %s/src/%s --quiet%s", tmp, tmp, outs[k], force ? " --force" : "");
            assert_int_equal(run_mkdb(args), 0);
            snprintf(p, sizeof p, "%s/src/%s", tmp, outs[k]);
            moco_db *db = open_db(p);
            const moco_db_meta *m = moco_db_get_meta(db);
            if (m->nclasses != 2 || m->count != 2 || m->skipped != 0 || strcmp(m->class_names[0], "a") || strcmp(m->class_names[1], "b"))
                fail_msg("OUT %s%s: %u classes (the last %s), %" PRIu64 " samples, %" PRIu64 " skipped; want a, b: 2, 0 skipped",
                         outs[k], force ? " --force" : "", m->nclasses, m->class_names[m->nclasses - 1], m->count, m->skipped);
            moco_db_destroy(&db);
            if (force) {
                snprintf(p, sizeof p, "ignoring %s/src/%s: it is OUT, the dataset being written", tmp, outs[k]);
                assert_true(err_has(p));
                snprintf(p, sizeof p, "ignoring %s/src/b/link: it is OUT", tmp);
                assert_true(err_has(p));
                snprintf(p, sizeof p, "ignoring %s/src/%s.tmp-2147483646: a directory of mkdb's beside OUT", tmp, outs[k]);
                assert_true(err_has(p));
                tu_sh("rm -rf %s/src/%s %s/src/b/link", tmp, outs[k], tmp);
            }
        }
    }
}

/* Class folders whose names the dataset cannot hold: refused before any
 * conversion, exit 2, the folder named with its bytes escaped, nothing
 * written (before: "cl\nass" was written as two names, and every reader
 * refused the dataset; "caf\xE9" was stored as it is, not UTF-8). */
static void test_class_names_refused(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_names"));
    const char *bad[] = {"cl\nass", "caf\xe9"}, *shown[] = {"/src0/cl\\nass'", "/src1/caf\\xE9'"};
    const char *why[] = {"holds a newline", "is not valid UTF-8"};
    for (int b = 0; b < 2; b++) {
        snprintf(p, sizeof p, "%s/src%d", tmp, b);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/src%d/b", tmp, b);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/src%d/b/a.png", tmp, b); make_image(p, 8, 8, 3, 1);
        snprintf(p, sizeof p, "%s/src%d/%s", tmp, b, bad[b]);
        assert_int_equal(mkdir(p, 0755), 0);
        snprintf(p, sizeof p, "%s/src%d/%s/a.png", tmp, b, bad[b]); make_image(p, 8, 8, 3, 2);
        snprintf(args, sizeof args, "%s/src%d %s/db%d --quiet", tmp, b, tmp, b);
        assert_int_equal(run_mkdb(args), 2);
        assert_true(err_has(shown[b]));
        assert_true(err_has(why[b]));
        snprintf(p, sizeof p, "%s/db%d", tmp, b);
        assert_false(tu_exists(p));
    }
    /* UTF-8 names are kept as they are */
    tu_sh("mkdir -p '%s/src2/caf\xc3\xa9' && cp '%s/src1/b/a.png' '%s/src2/caf\xc3\xa9/'", tmp, tmp, tmp);
    snprintf(args, sizeof args, "%s/src2 %s/db2 --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(p, sizeof p, "%s/db2", tmp);
    moco_db *db = open_db(p);
    assert_string_equal(moco_db_get_meta(db)->class_names[0], "caf\xc3\xa9");
    moco_db_destroy(&db);
}

/* Entries of a class folder that are not files (a broken symbolic link, a
 * link loop, a FIFO) are named with the reason and counted as skipped, as
 * bad files are; the FIFO is never opened (before: dropped without a word,
 * "skipped 0"). --strict stops at the first. */
static void test_links_and_fifos_named(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_links"));
    tu_sh("mkdir -p %s/src/c", tmp);
    snprintf(p, sizeof p, "%s/src/c/ok.png", tmp); make_image(p, 8, 8, 3, 1);
    snprintf(p, sizeof p, "%s/src/c/broken.jpg", tmp);
    assert_int_equal(symlink("/nonexistent/photo.jpg", p), 0);
    snprintf(p, sizeof p, "%s/src/c/loop.jpg", tmp);
    assert_int_equal(symlink("loop.jpg", p), 0);
    snprintf(p, sizeof p, "%s/src/c/pipe.jpg", tmp);
    assert_int_equal(mkfifo(p, 0644), 0);
    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    assert_true(err_has("/src/c/broken.jpg: broken symbolic link (to /nonexistent/photo.jpg"));
    assert_true(err_has("/src/c/loop.jpg: cannot follow the symbolic link to loop.jpg"));
    assert_true(err_has("/src/c/pipe.jpg: not a regular file (a FIFO"));
    snprintf(p, sizeof p, "%s/db", tmp);
    moco_db *db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, 1);
    assert_int_equal(moco_db_get_meta(db)->skipped, 3);
    moco_db_destroy(&db);
    snprintf(args, sizeof args, "%s/src %s/strict --quiet --strict", tmp, tmp);
    assert_int_equal(run_mkdb(args), 1);
    assert_true(err_has("broken.jpg: broken symbolic link"));
    snprintf(p, sizeof p, "%s/strict", tmp);
    assert_false(tu_exists(p));
}

/* A TIFF's Orientation tag is applied, as PIL (torchvision's loader)
 * applies it: 6 (rotate 90 clockwise) stores the 64x48 raster as 48x64 with
 * shown(r, c) = raster(H-1-c, r), and 3 rotates it by 180 (before: stored
 * as the raster). cli_datasets.sh compares all 8 with PIL itself. */
static void test_tiff_orientation(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_orient"));
    tu_sh("mkdir -p %s/src/c", tmp);
    enum { W = 64, H = 48 };
    uint8_t px[W * H];
    for (int i = 0; i < W * H; i++) px[i] = (uint8_t)(i * 13 + i / W);
    for (int o = 3; o <= 6; o += 3) {
        VipsImage *im = vips_image_new_from_memory_copy(px, sizeof px, W, H, 1, VIPS_FORMAT_UCHAR);
        assert_non_null(im);
        vips_image_set_int(im, VIPS_META_ORIENTATION, o);
        snprintf(p, sizeof p, "%s/src/c/o%d.tif", tmp, o);
        if (vips_image_write_to_file(im, p, NULL)) fail_msg("cannot write %s: %s", p, vips_error_buffer());
        g_object_unref(im);
    }
    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(p, sizeof p, "%s/db", tmp);
    moco_db *db = open_db(p);
    uint8_t *buf = NULL;
    size_t cap = 0;
    moco_rec_header h;
    for (int r = 0; r < 2; r++) { /* record 0: o3.tif, 1: o6.tif */
        const uint8_t *pl = get_rec(db, (uint64_t)r, &h, &buf, &cap);
        assert_int_equal(h.width, r ? H : W);
        assert_int_equal(h.height, r ? W : H);
        VipsImage *a = vips_image_new_from_buffer(pl, h.payload_len, "", NULL);
        assert_non_null(a);
        size_t la;
        uint8_t *got = vips_image_write_to_memory(a, &la);
        assert_int_equal(la, sizeof px);
        for (int y = 0; y < (int)h.height; y++)
            for (int x = 0; x < (int)h.width; x++) {
                int want = r ? px[(H - 1 - x) * W + y] : px[(H - 1 - y) * W + (W - 1 - x)];
                if (got[y * (int)h.width + x] != want) fail_msg("record %d (%d, %d): %d, want %d", r, y, x, got[y * (int)h.width + x], want);
            }
        g_free(got);
        g_object_unref(a);
    }
    free(buf);
    moco_db_destroy(&db);
}

/* JPEGs whose header gives libjpeg a recoverable warning (3 junk bytes
 * before DQT, SOF or SOS; a grey and a CMYK one) are stored (as PNG) and
 * decoded by an augmentation worker (augment_decode) and by the evaluation
 * reader (evalset_read_u8, at the image's size: no resize) to PIL's
 * convert("RGB") pixels, byte for byte; so is junk before EOI (stored as a
 * JPEG). PIL writes the fixtures and its pixels; skipped without it.
 * Before: all but the EOI one refused, "corrupt or truncated JPEG header". */
static void test_jpeg_header_warnings_decoded_as_pil(void **st)
{
    (void)st;
    enum { S = 48, NCLS = 6 };
    static const char *const cls[NCLS] = {"cmyk", "dqt", "eoi", "grey", "sof", "sos"}; /* label order */
    static const int want_enc[NCLS] = {MOCO_ENC_PNG, MOCO_ENC_PNG, MOCO_ENC_JPEG, MOCO_ENC_PNG, MOCO_ENC_PNG, MOCO_ENC_PNG};
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_jwarn"));
    if (tu_sh("/usr/bin/python3 -c 'import PIL, numpy' 2>/dev/null") != 0) {
        fprintf(stderr, "note: python3-pil missing, JPEG header warnings not compared with PIL\n");
        skip(); /* reported as a skipped part, not a pass */
    }
    static const char py[] =
        "import io, os, sys, numpy as np\n"
        "from PIL import Image\n"
        "d, g = sys.argv[1], np.random.default_rng(5)\n"
        "def jpeg(a, mode):\n"
        "    b = io.BytesIO()\n"
        "    Image.fromarray(a, mode).save(b, 'JPEG', quality=90)\n"
        "    return b.getvalue()\n"
        "def junk(b, m):\n"
        "    i = b.rfind(m) if m == b'\\xff\\xd9' else b.find(m)\n"
        "    return b[:i] + b'\\x00\\x11\\x22' + b[i:]\n"
        "rgb = jpeg(g.integers(0, 256, (48, 48, 3), dtype=np.uint8), 'RGB')\n"
        "cases = {'dqt': junk(rgb, b'\\xff\\xdb'), 'sof': junk(rgb, b'\\xff\\xc0'), 'sos': junk(rgb, b'\\xff\\xda'),\n"
        "         'eoi': junk(rgb, b'\\xff\\xd9'),\n"
        "         'grey': junk(jpeg(g.integers(0, 256, (48, 48), dtype=np.uint8), 'L'), b'\\xff\\xdb'),\n"
        "         'cmyk': junk(jpeg(g.integers(0, 256, (48, 48, 4), dtype=np.uint8), 'CMYK'), b'\\xff\\xdb')}\n"
        "for c, b in cases.items():\n"
        "    os.makedirs(os.path.join(d, 'src', c))\n"
        "    open(os.path.join(d, 'src', c, 'x.jpg'), 'wb').write(b)\n"
        "    open(os.path.join(d, c + '.rgb'), 'wb').write(np.array(Image.open(io.BytesIO(b)).convert('RGB')).tobytes())\n";
    snprintf(p, sizeof p, "%s/make.py", tmp);
    write_bytes(p, py, sizeof py - 1);
    assert_int_equal(tu_sh("/usr/bin/python3 %s/make.py %s", tmp, tmp), 0);
    snprintf(args, sizeof args, "%s/src %s/db --quiet", tmp, tmp);
    if (run_mkdb(args) != 0) fail_msg("mkdb failed");
    snprintf(p, sizeof p, "%s/db", tmp);
    moco_db *db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, NCLS);
    augment_recipe r;
    assert_int_equal(augment_recipe_init(&r, "v2", S), 0);
    augment_ctx *c;
    assert_int_equal(augment_ctx_new(&r, &c), 0);
    evalset *e;
    const float mean[3] = {0, 0, 0}, sd[3] = {1, 1, 1};
    if (evalset_open(p, S, mean, sd, &e)) fail_msg("evalset_open: %s", moco_errmsg());
    uint8_t *buf = NULL, ev[S * S * 3];
    size_t cap = 0, len;
    for (uint64_t i = 0; i < NCLS; i++) {
        moco_rec_header h;
        get_rec(db, i, &h, &buf, &cap);
        assert_int_equal(moco_db_get(db, i, &buf, &cap, &len), 0);
        snprintf(p, sizeof p, "%s/%s.rgb", tmp, cls[h.label]);
        size_t n;
        uint8_t *pil = tu_read_file(p, &n);
        assert_int_equal(n, S * S * 3);
        if (h.encoding != want_enc[h.label]) fail_msg("%s: stored with encoding %d", cls[h.label], h.encoding);
        const uint8_t *px;
        int w, hh, ch;
        int32_t lab, lab2;
        if (augment_decode(c, buf, len, i, &px, &w, &hh, &ch, &lab)) fail_msg("%s: %s", cls[h.label], moco_errmsg());
        assert_int_equal(w, S);
        assert_int_equal(hh, S);
        assert_int_equal(ch, h.label == 3 ? 1 : 3); /* grey stays grey; PIL's RGB of it has R = G = B */
        for (int k = 0; k < S * S * 3; k++)
            if (px[k / 3 * ch + (ch == 3 ? k % 3 : 0)] != pil[k])
                fail_msg("%s: worker pixel %d: %d, PIL's %d", cls[h.label], k, px[k / 3 * ch + (ch == 3 ? k % 3 : 0)], pil[k]);
        if (evalset_read_u8(e, (int64_t)i, 1, ev, &lab2)) fail_msg("%s: %s", cls[h.label], moco_errmsg());
        for (int k = 0; k < S * S * 3; k++)
            if (ev[k] != pil[k]) fail_msg("%s: evaluation pixel %d: %d, PIL's %d", cls[h.label], k, ev[k], pil[k]);
        free(pil);
    }
    printf("JPEG header warnings: %d files (junk before DQT, SOF, SOS, EOI; grey, CMYK) decoded by the worker and the "
           "evaluation reader to PIL's pixels\n", NCLS);
    free(buf);
    evalset_destroy(&e);
    augment_ctx_destroy(&c);
    moco_db_destroy(&db);
}

/* libvips keeps a recoverable JPEG warning in its (global) error buffer: a
 * JPEG with junk before its DQT marker, stored, then a PNG that cannot be
 * read (one thread, in this order): the PNG's reason is its own, one line.
 * Before: "not a readable image: VipsJpeg: Corrupt JPEG data: 3 extraneous
 * bytes before marker 0xdb" and a second line, the JPEG's warning again. */
static void test_warning_not_in_next_reason(void **st)
{
    (void)st;
    char p[4300], args[9000];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_warnleak"));
    tu_sh("mkdir -p %s/src/c", tmp);
    snprintf(p, sizeof p, "%s/src/c/1.jpg", tmp);
    make_image(p, 40, 30, 3, 3);
    size_t n;
    uint8_t *b = tu_read_file(p, &n), *j = malloc(n + 3);
    size_t at = 2;
    while (at + 1 < n && !(b[at] == 0xFF && b[at + 1] == 0xDB)) at++;
    assert_true(at + 1 < n);
    memcpy(j, b, at), memcpy(j + at, "\x00\x11\x22", 3), memcpy(j + at + 3, b + at, n - at);
    write_bytes(p, j, n + 3);
    free(b), free(j);
    snprintf(p, sizeof p, "%s/src/c/2.png", tmp);
    make_image(p, 40, 30, 3, 4);
    b = tu_read_file(p, &n);
    memset(b + n / 2, 0, n - n / 2);
    write_bytes(p, b, n);
    free(b);
    snprintf(args, sizeof args, "%s/src %s/db --threads 1 --quiet", tmp, tmp);
    assert_int_equal(run_mkdb(args), 0);
    snprintf(p, sizeof p, "%s/err.txt", tmp);
    char *e = (char *)tu_read_file(p, &n), want[4400];
    e[n] = 0;
    snprintf(want, sizeof want, "moco mkdb: skipping %s/src/c/2.png: ", tmp);
    if (strncmp(e, want, strlen(want)) || !strchr(e, '\n') || strchr(e, '\n')[1] || strstr(e, "VipsJpeg"))
        fail_msg("want one line, the PNG's own reason:\n%s", e);
    free(e);
    snprintf(p, sizeof p, "%s/db", tmp);
    moco_db *db = open_db(p);
    assert_int_equal(moco_db_get_meta(db)->count, 1);
    moco_db_destroy(&db);
}

/* A source that is not there says so; one that is a file says what a source is (both said "not a directory") */
static void test_source_path_named(void **st)
{
    (void)st;
    mk_source s;
    char f[1100];
    assert_int_equal(mk_source_open("/nonexistent-moco/trian", NULL, NULL, &s), MOCO_ENOTFOUND);
    assert_string_equal(moco_errmsg(), "/nonexistent-moco/trian: No such file or directory");
    snprintf(f, sizeof f, "%s/a-file", tmp);
    FILE *fp = fopen(f, "w");
    assert_non_null(fp);
    fclose(fp);
    assert_int_equal(mk_source_open(f, NULL, NULL, &s), MOCO_ENOTFOUND);
    assert_non_null(strstr(moco_errmsg(), "a-file: not a directory (a source is an image folder, CIFAR-10 batches or IDX files)"));
}

int main(void)
{
    if (VIPS_INIT("test_mkdb")) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_folder_with_bad_files),
        cmocka_unit_test(test_nothing_valid_fails),
        cmocka_unit_test(test_cifar_binary),
        cmocka_unit_test(test_idx_and_map_growth),
        cmocka_unit_test(test_killed_midway_leaves_nothing),
        cmocka_unit_test(test_shuffle_is_a_reproducible_permutation),
        cmocka_unit_test(test_fashion_mnist_package),
        cmocka_unit_test(test_bombs_and_truncated_jpegs),
        cmocka_unit_test(test_force_replaces_only_a_dataset),
        cmocka_unit_test(test_out_inside_src_not_an_input),
        cmocka_unit_test(test_class_names_refused),
        cmocka_unit_test(test_links_and_fifos_named),
        cmocka_unit_test(test_tiff_orientation),
        cmocka_unit_test(test_jpeg_header_warnings_decoded_as_pil),
        cmocka_unit_test(test_warning_not_in_next_reason),
        cmocka_unit_test(test_source_path_named),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    vips_shutdown();
    return r;
}
