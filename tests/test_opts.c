/* test_opts.c: printed commands can be pasted: every argument comes back
 * unchanged through a POSIX shell (sh -c), also with spaces, quotes, $ and
 * backslashes; dropped flags go with their values. */
#include "tests/testutil.h"

#include "formats/opts.h"

static void test_command_round_trip(void **st)
{
    (void)st;
    char *argv[] = {"augment", "--connect", "tcp://h:1", "--log", "/x/y.jsonl", "--keys", "/k/it's a \"dir\" $HOME\\n",
                    "--quiet", "--log=/z", "--size", "28"};
    static const char *const drop[] = {"--log", NULL}, *const flags[] = {"--quiet", NULL};
    char path[1100], cmd[4200];
    snprintf(path, sizeof path, "%s/test_opts.cmd", getenv("MOCO_TEST_TMP") ? getenv("MOCO_TEST_TMP") : "/tmp");
    FILE *f = fopen(path, "w");
    assert_non_null(f);
    fputs("printf '%s\\n'", f); /* the shell prints each argument on a line of its own */
    char *args[16];
    int n = 0;
    for (int i = 0; i < 11; i++) args[n++] = argv[i];
    moco_print_command(f, n, args, drop, flags);
    fclose(f);
    snprintf(cmd, sizeof cmd, "sh %s", path);
    FILE *p = popen(cmd, "r");
    assert_non_null(p);
    char line[512];
    const char *want[] = {NULL /* the program */, "augment", "--connect", "tcp://h:1", "--keys", "/k/it's a \"dir\" $HOME\\n",
                          "--size", "28"};
    int k = 0;
    while (fgets(line, sizeof line, p)) {
        line[strcspn(line, "\n")] = 0;
        print_message("  arg %d: %s\n", k, line);
        assert_true(k < 8);
        if (want[k]) assert_string_equal(line, want[k]);
        k++;
    }
    assert_int_equal(pclose(p), 0);
    assert_int_equal(k, 8);
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_command_round_trip)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
