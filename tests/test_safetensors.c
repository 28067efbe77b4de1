/* test_safetensors.c: formats/safetensors.c and formats/json.c: round trip
 * (names, dtypes, shapes, metadata, alignment), a file as PyTorch's script
 * writes it, and refusal of every kind of bad input: truncation at every
 * length, headers that lie about offsets or sizes, overlaps and holes,
 * unknown dtypes, duplicate names, malformed JSON; then a seeded fuzz of
 * byte flips that must never crash (run it under ASan/UBSan). */
#include "tests/testutil.h"

#include "formats/errors.h"
#include "formats/json.h"
#include "formats/rng.h"
#include "formats/safetensors.h"

/* A header + data buffer from a JSON string and n data bytes. */
static uint8_t *mk(const char *json, size_t ndata, size_t *len)
{
    size_t hl = strlen(json);
    *len = 8 + hl + ndata;
    uint8_t *b = calloc(1, *len);
    for (int i = 0; i < 8; i++) b[i] = (uint8_t)((uint64_t)hl >> (8 * i));
    memcpy(b + 8, json, hl);
    return b;
}

static int parse_json_file(const char *json, size_t ndata)
{
    size_t len;
    uint8_t *b = mk(json, ndata, &len);
    moco_st *st = NULL;
    int rc = moco_st_parse(b, len, "t.safetensors", &st);
    printf("  %-90.90s -> %s\n", json, rc ? moco_errmsg() : "accepted");
    moco_st_destroy(&st);
    free(b);
    return rc;
}

static void test_round_trip(void **s)
{
    (void)s;
    const char *dir = tu_tmpdir("safetensors_rt");
    char p[600];
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    float w[2 * 3 * 2 * 2];
    for (int i = 0; i < 24; i++) w[i] = (float)i * 0.5f - 3;
    int64_t nbt = 123456789012345LL;
    float empty[1];
    moco_st_entry e[] = {
        {"conv1.weight", MOCO_ST_F32, 4, {2, 3, 2, 2}, w},
        {"bn1.num_batches_tracked", MOCO_ST_I64, 0, {0}, &nbt},
        {"layer1.0.downsample.1.weight", MOCO_ST_F32, 1, {3}, w + 5},
        {"odd \"name\"\n", MOCO_ST_F32, 2, {0, 4}, empty},
    };
    const char *meta[] = {"format", "pt", "k\"ey", "v\\al"};
    assert_int_equal(moco_st_write(p, e, 4, meta, 2), 0);
    size_t len;
    uint8_t *b = tu_read_file(p, &len);
    uint64_t hl = 0;
    memcpy(&hl, b, 8);
    assert_int_equal((8 + hl) % 8, 0);
    free(b);
    moco_st *st;
    assert_int_equal(moco_st_open(p, &st), 0);
    assert_int_equal(moco_st_count(st), 4);
    float got[24];
    assert_int_equal(moco_st_read(st, "conv1.weight", MOCO_ST_F32, 4, (int64_t[]){2, 3, 2, 2}, got), 0);
    assert_memory_equal(got, w, sizeof w);
    int64_t n2;
    assert_int_equal(moco_st_read(st, "bn1.num_batches_tracked", MOCO_ST_I64, 0, NULL, &n2), 0);
    assert_true(n2 == nbt);
    assert_int_equal(moco_st_read(st, "layer1.0.downsample.1.weight", MOCO_ST_F32, 1, (int64_t[]){3}, got), 0);
    assert_memory_equal(got, w + 5, 12);
    assert_non_null(moco_st_find(st, "odd \"name\"\n"));
    /* mismatches name the tensor */
    assert_int_equal(moco_st_read(st, "conv1.weight", MOCO_ST_F32, 4, (int64_t[]){2, 3, 3, 3}, got), MOCO_EINVAL);
    printf("%s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), "conv1.weight"));
    assert_non_null(strstr(moco_errmsg(), "[2, 3, 2, 2]"));
    assert_int_equal(moco_st_read(st, "conv1.weight", MOCO_ST_F64, 4, (int64_t[]){2, 3, 2, 2}, got), MOCO_EFORMAT);
    printf("%s\n", moco_errmsg());
    assert_int_equal(moco_st_read(st, "fc.weight", MOCO_ST_F32, 0, NULL, got), MOCO_ENOTFOUND);
    printf("%s\n", moco_errmsg());
    assert_non_null(strstr(moco_errmsg(), "fc.weight"));
    moco_st_destroy(&st);
    assert_null(st);
    assert_int_equal(moco_st_open("tests/tmp/does/not/exist", &st), MOCO_EIO);
}

static void test_pytorch_file(void **s)
{
    (void)s;
    moco_st *st;
    assert_int_equal(moco_st_open("tests/golden/trainer/r18c_w8.safetensors", &st), 0);
    const moco_st_tensor *t = moco_st_find(st, "init.layer2.0.downsample.0.weight");
    assert_non_null(t);
    assert_int_equal(t->ndim, 4);
    assert_int_equal(t->shape[0], 16);
    assert_int_equal(t->shape[1], 8);
    t = moco_st_find(st, "init.bn1.num_batches_tracked");
    assert_non_null(t);
    assert_int_equal(t->dtype, MOCO_ST_I64);
    assert_int_equal(t->ndim, 0);
    moco_st_destroy(&st);
}

static void test_truncated_everywhere(void **s)
{
    (void)s;
    const char *dir = tu_tmpdir("safetensors_trunc");
    char p[600];
    snprintf(p, sizeof p, "%s/a.safetensors", dir);
    float w[6] = {1, 2, 3, 4, 5, 6};
    moco_st_entry e[] = {{"a", MOCO_ST_F32, 2, {2, 2}, w}, {"b", MOCO_ST_F32, 1, {2}, w + 4}};
    assert_int_equal(moco_st_write(p, e, 2, NULL, 0), 0);
    size_t len;
    uint8_t *b = tu_read_file(p, &len);
    for (size_t n = 0; n < len; n++) {
        moco_st *st = NULL;
        int rc = moco_st_parse(b, n, "trunc", &st);
        if (rc != MOCO_ECORRUPT) fail_msg("truncated at %zu of %zu bytes: rc %d", n, len, rc);
        assert_null(st);
    }
    moco_st *st;
    assert_int_equal(moco_st_parse(b, len, "full", &st), 0);
    moco_st_destroy(&st);
    /* one byte too many */
    uint8_t *c = malloc(len + 1);
    memcpy(c, b, len);
    c[len] = 0;
    assert_int_equal(moco_st_parse(c, len + 1, "long", &st), MOCO_ECORRUPT);
    printf("%s\n", moco_errmsg());
    free(c);
    free(b);
}

static void test_lying_headers(void **s)
{
    (void)s;
    /* accepted baselines */
    assert_int_equal(parse_json_file("{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}", 8), 0);
    assert_int_equal(parse_json_file("{}", 0), 0);
    assert_int_equal(parse_json_file("{\"__metadata__\":{\"x\":\"y\"},\"a\":{\"shape\":[],\"data_offsets\":[0,8],\"dtype\":\"I64\"}}  ", 8), 0);
    const char *bad[] = {
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,12]}}",           /* size != shape */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,16]}}",           /* beyond data */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[8,0]}}",            /* reversed */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}",            /* hole at 0 */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"b\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[4,8]}}", /* overlap */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1],\"data_offsets\":[0,4]}}",            /* trailing data */
        "{\"a\":{\"dtype\":\"Q8\",\"shape\":[8],\"data_offsets\":[0,8]}}",             /* dtype */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[-2],\"data_offsets\":[0,8]}}",           /* negative */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2.0],\"data_offsets\":[0,8]}}",          /* fraction */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[4611686018427387904,4],\"data_offsets\":[0,8]}}", /* overflow */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,18446744073709551624]}}", /* > u64 */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"a\":{\"dtype\":\"F32\",\"shape\":[0],\"data_offsets\":[8,8]}}", /* duplicate */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2]}}",                                   /* no offsets */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8],\"x\":1}}",    /* extra field */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[1,1,1,1,1,1,1,1,2],\"data_offsets\":[0,8]}}", /* rank 9 */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},}",           /* trailing comma */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}",             /* unclosed */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}x",           /* garbage */
        "[1,2]",                                                                       /* not an object */
        "{\"\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",             /* empty name */
        "{\"a\\u0000b\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",    /* NUL in name */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]},\"__metadata__\":{\"k\":1}}", /* metadata value */
        "{\"a\x01\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}}",        /* control char */
        "{\"a\":{\"dtype\":\"F32\",\"shape\":[2],\"data_offsets\":[0,8]}} {}",         /* two values */
    };
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++)
        if (parse_json_file(bad[i], 8) != MOCO_ECORRUPT) fail_msg("accepted: %s", bad[i]);
    /* header length beyond the file, and absurd */
    uint8_t b[16] = {0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, '{', '}'};
    moco_st *st;
    assert_int_equal(moco_st_parse(b, sizeof b, "huge", &st), MOCO_ECORRUPT);
    printf("%s\n", moco_errmsg());
    b[0] = 9, memset(b + 1, 0, 7);
    assert_int_equal(moco_st_parse(b, 10, "short", &st), MOCO_ECORRUPT);
    /* a plausible length and a '{', cut short: "does not fit", not "not a safetensors checkpoint" */
    assert_non_null(strstr(moco_errmsg(), "short: header length 9 does not fit the file (10 bytes)"));
    /* another kind of file: an .npy (its magic read as a length), an LMDB's data.mdb (zeros) */
    uint8_t npy[128] = "\x93NUMPY\x01\x00v\x00{'descr': '<f4', 'fortran_order': False, 'shape': (2, 3), }";
    assert_int_equal(moco_st_parse(npy, sizeof npy, "e.npy", &st), MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), "e.npy: not a safetensors checkpoint"));
    uint8_t zeros[64] = {0};
    assert_int_equal(moco_st_parse(zeros, sizeof zeros, "data.mdb", &st), MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), "data.mdb: not a safetensors checkpoint"));
    uint8_t nobrace[16] = {4, 0, 0, 0, 0, 0, 0, 0, '[', ']', ' ', ' '}; /* a fitting length, no JSON object after it */
    assert_int_equal(moco_st_parse(nobrace, sizeof nobrace, "list", &st), MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), "list: not a safetensors checkpoint"));
    /* deep nesting */
    char deep[400];
    memset(deep, '[', 200);
    memset(deep + 200, ']', 200);
    moco_json_tok tk[300];
    int nt;
    assert_int_equal(moco_json_parse(deep, 400, "deep", tk, 300, &nt), MOCO_ECORRUPT);
    assert_int_equal(moco_json_parse(deep + 150, 100, "ok", tk, 300, &nt), 0);
    assert_int_equal(nt, 50);
    const char *js = "{\"a\":[1,{\"b\":\"x\\u00e9\\ud83d\\ude00\"}],\"c\":true,\"d\":null,\"e\":-1.5e3}";
    assert_int_equal(moco_json_parse(js, strlen(js), "js", tk, 300, &nt), 0);
    int v = moco_json_get(js, tk, 0, "a");
    assert_int_equal(tk[v].type, MOCO_JSON_ARR);
    assert_int_equal(tk[v].size, 2);
    int bb = moco_json_get(js, tk, v + 2, "b");
    char str[32];
    assert_int_equal(moco_json_str(js, &tk[bb], str, sizeof str), 0);
    assert_string_equal(str, "x\xc3\xa9\xf0\x9f\x98\x80");
    assert_int_equal(tk[moco_json_get(js, tk, 0, "e")].type, MOCO_JSON_NUM);
    assert_int_equal(moco_json_get(js, tk, 0, "zz"), -1);
    /* strings are UTF-8 (RFC 8259 8.1; the header is UTF-8 JSON): a byte
     * 0xFF, an overlong '/', a surrogate, a sequence cut by the quote, as a
     * key or a value, were passed through */
    const char *utf[] = {"{\"a\xff\":1}", "{\"a\":\"\xc0\xaf\"}", "{\"a\":\"x\xed\xa0\x80\"}", "[\"\xe2\x82\"]"};
    const size_t at[] = {3, 6, 7, 2};
    for (int i = 0; i < 4; i++) {
        assert_int_equal(moco_json_parse(utf[i], strlen(utf[i]), "utf", tk, 300, &nt), MOCO_ECORRUPT);
        char want[64];
        snprintf(want, sizeof want, "utf: a JSON string is not UTF-8 at byte %zu", at[i]);
        assert_string_equal(moco_errmsg(), want);
    }
    const char *good = "{\"caf\xc3\xa9\":\"\xf0\x9f\x98\x80\xe2\x82\xac\"}";
    assert_int_equal(moco_json_parse(good, strlen(good), "good", tk, 300, &nt), 0);
}

static void test_fuzz(void **s)
{
    (void)s;
    size_t len;
    uint8_t *good = mk("{\"__metadata__\":{\"m\":\"v\"},\"w\":{\"dtype\":\"F32\",\"shape\":[2,2],\"data_offsets\":[0,16]},"
                       "\"n\":{\"dtype\":\"I64\",\"shape\":[],\"data_offsets\":[16,24]}}",
                       24, &len);
    moco_rng r;
    moco_rng_init(&r, 2024, 5, 0, 0);
    printf("fuzz seed 2024, 20000 mutants of a %zu-byte file\n", len);
    int accepted = 0;
    uint8_t *b = malloc(len);
    for (int it = 0; it < 20000; it++) {
        memcpy(b, good, len);
        int flips = 1 + (int)moco_rng_below(&r, 4);
        for (int f = 0; f < flips; f++) {
            size_t at = (size_t)moco_rng_below(&r, len < 120 ? len : 120);
            b[at] = (uint8_t)moco_rng_below(&r, 256);
        }
        size_t n = moco_rng_below(&r, 8) ? len : (size_t)moco_rng_below(&r, len + 1);
        moco_st *st = NULL;
        int rc = moco_st_parse(b, n, "fuzz", &st);
        if (!rc) {
            accepted++;
            for (int i = 0; i < moco_st_count(st); i++) { /* every accepted tensor lies inside the buffer */
                const moco_st_tensor *t = moco_st_at(st, i);
                assert_true(t->end <= n && t->begin <= t->end);
            }
            moco_st_destroy(&st);
        } else {
            assert_true(rc == MOCO_ECORRUPT);
            assert_null(st);
        }
    }
    printf("  %d accepted (harmless mutations such as data bytes or whitespace), the rest refused\n", accepted);
    free(b);
    free(good);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_round_trip),   cmocka_unit_test(test_pytorch_file), cmocka_unit_test(test_truncated_everywhere),
        cmocka_unit_test(test_lying_headers), cmocka_unit_test(test_fuzz),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
