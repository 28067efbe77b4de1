/* test_jsonw.c: the JSON writer escapes whatever bytes it is given (a path
 * with quotes, a libvips message ending in a newline, invalid UTF-8), and
 * what it writes parses with the project's strict reader. */
#include "tests/testutil.h"

#include <math.h>

#include "formats/errors.h"
#include "formats/json.h"
#include "formats/jsonw.h"

static void parses(const char *s)
{
    moco_json_tok t[64];
    int n;
    print_message("  %s\n", s);
    assert_int_equal(moco_json_parse(s, strlen(s), "line", t, 64, &n), 0);
}

static void test_escaping(void **st)
{
    (void)st;
    moco_jw w;
    moco_jw_begin(&w);
    moco_jw_str(&w, "path", "/tmp/a \"quoted\" dir\\x");
    moco_jw_str(&w, "msg", "VipsJpeg: Premature end of JPEG file\n");
    moco_jw_strn(&w, "bad", "ok\xff\xfe\xc3(\xe2\x82", 8);
    moco_jw_str(&w, "utf8", "caf\xc3\xa9 \xe2\x82\xac");
    moco_jw_num(&w, "nan", NAN, 3);
    moco_jw_num(&w, "x", -0.0001, 2);
    moco_jw_num(&w, "pi", 3.14159, 3);
    moco_jw_u64(&w, "big", UINT64_MAX);
    moco_jw_i64(&w, "neg", -5);
    moco_jw_bool(&w, "t", 1);
    moco_jw_null(&w, "z");
    moco_jw_raw(&w, "nested", "{\"a\":[1,2]}");
    const char *s = moco_jw_end(&w);
    assert_non_null(s);
    parses(s);
    assert_non_null(strstr(s, "\"path\":\"/tmp/a \\\"quoted\\\" dir\\\\x\""));
    assert_non_null(strstr(s, "file\\u000a\""));
    assert_non_null(strstr(s, "\"bad\":\"ok\\ufffd\\ufffd\\ufffd(\\ufffd\\ufffd\""));
    assert_non_null(strstr(s, "\"utf8\":\"caf\xc3\xa9 \xe2\x82\xac\""));
    assert_non_null(strstr(s, "\"nan\":null,\"x\":0.00,\"pi\":3.142"));
    assert_non_null(strstr(s, "\"big\":18446744073709551615"));
    moco_jw_free(&w);
}

static void test_quote_truncates_cleanly(void **st)
{
    (void)st;
    char b[16];
    for (size_t cap = 3; cap <= sizeof b; cap++) {
        moco_json_quote("ab\"\n\xc3\xa9\xc3\xa9xyz\\\\", 13, b, cap);
        assert_true(strlen(b) < cap);
        char doc[64];
        snprintf(doc, sizeof doc, "{\"k\":%s}", b);
        parses(doc);
    }
}

/* Nested objects and arrays, %g numbers, checked foreign JSON. */
static void test_nesting(void **st)
{
    (void)st;
    moco_jw w;
    moco_jw_begin(&w);
    moco_jw_u64(&w, "pairs", 3);
    moco_jw_arr(&w, "per_epoch");
    for (int e = 0; e < 2; e++) {
        moco_jw_obj(&w, NULL);
        moco_jw_i64(&w, "epoch", e);
        moco_jw_bool(&w, "ok", e == 0);
        moco_jw_close(&w);
    }
    moco_jw_close(&w);
    moco_jw_arr(&w, "empty");
    moco_jw_close(&w);
    moco_jw_arr(&w, "view");
    for (int i = 0; i < 3; i++) moco_jw_u64(&w, NULL, (uint64_t)(28 + i));
    moco_jw_str(&w, NULL, "a\"b");
    moco_jw_close(&w);
    moco_jw_obj(&w, "stream");
    moco_jw_u64(&w, "held", 0);
    moco_jw_obj(&w, "inner");
    moco_jw_close(&w);
    moco_jw_close(&w);
    moco_jw_g(&w, "lr", 0.03, 0);
    moco_jw_g(&w, "wd", 1e-05, 0);
    moco_jw_g(&w, "K", 4096, 0);
    moco_jw_g(&w, "inf", INFINITY, 0);
    moco_jw_g(&w, "pi", 3.14159265358979, 15);
    moco_err(MOCO_EIO, "the caller's message");
    moco_jw_json(&w, "sink", "{\"pairs\":1,\"per_epoch\":[{\"ok\":true}]}");
    moco_jw_json(&w, "torn", "{\"pairs\":1,\"per_ep"); /* a line cut short: null */
    moco_jw_json(&w, "two", "{} {}");
    moco_jw_json(&w, "none", "");
    moco_jw_json(&w, "nul", NULL);
    assert_string_equal(moco_errmsg(), "the caller's message");
    moco_jw_obj(&w, "open"); /* left open: moco_jw_end closes it */
    moco_jw_arr(&w, "a");
    const char *s = moco_jw_end(&w);
    assert_non_null(s);
    parses(s);
    assert_string_equal(s, "{\"pairs\":3,\"per_epoch\":[{\"epoch\":0,\"ok\":true},{\"epoch\":1,\"ok\":false}],\"empty\":[],"
                           "\"view\":[28,29,30,\"a\\\"b\"],\"stream\":{\"held\":0,\"inner\":{}},\"lr\":0.03,\"wd\":1e-05,"
                           "\"K\":4096,\"inf\":null,\"pi\":3.14159265358979,"
                           "\"sink\":{\"pairs\":1,\"per_epoch\":[{\"ok\":true}]},\"torn\":null,\"two\":null,\"none\":null,"
                           "\"nul\":null,\"open\":{\"a\":[]}}");
    moco_jw_free(&w);

    /* too deep, or a close with nothing open: the line is dropped, not malformed */
    moco_jw_begin(&w);
    for (int i = 0; i < MOCO_JW_MAX_DEPTH + 1; i++) moco_jw_arr(&w, i ? NULL : "deep");
    assert_null(moco_jw_end(&w));
    moco_jw_free(&w);
    moco_jw_begin(&w);
    moco_jw_close(&w);
    assert_int_equal(moco_jw_line(&w, NULL), MOCO_ENOMEM);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_escaping), cmocka_unit_test(test_quote_truncates_cleanly),
                                       cmocka_unit_test(test_nesting)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
