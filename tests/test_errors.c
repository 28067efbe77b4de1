/* test_errors.c: formats/errors.c: moco_err keeps the last message, also
 * when it wraps the message before it (moco_errmsg() passed as an argument,
 * as some 150 callers do: "FILE: %s"), and truncates a long one whole. */
#include "tests/testutil.h"

#include "formats/errors.h"

static void test_wrap_own_message(void **state)
{
    (void)state;
    assert_int_equal(moco_err(MOCO_EIO, "cannot write a JSON line: %s", "File too large"), MOCO_EIO);
    assert_int_equal(moco_err(MOCO_EIO, "%s: %s; the run stops here", "mf/metrics.jsonl", moco_errmsg()), MOCO_EIO);
    /* before: vsnprintf wrote over its own source, "mf/metrics.jsonl: mf/metrics.jsonl: N line: ..." */
    assert_string_equal(moco_errmsg(), "mf/metrics.jsonl: cannot write a JSON line: File too large; the run stops here");
    moco_err(MOCO_EINVAL, "inner");
    moco_err(MOCO_EINVAL, "%s, %s, %s", moco_errmsg(), moco_errmsg(), "outer");
    assert_string_equal(moco_errmsg(), "inner, inner, outer");
}

static void test_long_message(void **state)
{
    (void)state;
    char big[3000];
    memset(big, 'x', sizeof big - 1);
    big[sizeof big - 1] = 0;
    moco_err(MOCO_EIO, "%s", big);
    size_t n = strlen(moco_errmsg());
    assert_true(n > 500 && n < sizeof big - 1); /* truncated, terminated */
    moco_err(MOCO_EIO, "a: %s", moco_errmsg());
    assert_int_equal(strncmp(moco_errmsg(), "a: xxx", 6), 0);
    assert_int_equal(strlen(moco_errmsg()), n);
}

int main(void)
{
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_wrap_own_message),
        cmocka_unit_test(test_long_message),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
