/* test_jsonw.c: the JSON writer escapes whatever bytes it is given (a path
 * with quotes, a libvips message ending in a newline, invalid UTF-8), and
 * what it writes parses with the project's strict reader. */
#include "tests/testutil.h"

#include <math.h>

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

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_escaping), cmocka_unit_test(test_quote_truncates_cleanly)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
