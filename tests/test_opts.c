/* test_opts.c: printed commands can be pasted: every argument comes back
 * unchanged through a POSIX shell (sh -c), also with spaces, quotes, $ and
 * backslashes; dropped flags go with their values. A spec's required flags:
 * a parse without them is a usage error naming the missing ones (and only
 * them), --help marks them; two specs parsed in turn each keep what they saw.
 * Aliases (an entry's "batch-size|-b", "moco-k|--K"): -b 256, -b256, -b=256
 * and --K set the entry, are seen as it, are named as typed in messages and
 * listed in --help; a near miss (-B, --b, -lr) gets a did-you-mean. */
#include "tests/testutil.h"

#include <fcntl.h>

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

/* Run moco_opts_parse with stderr (or stdout for --help) into buf. */
static int parse_into(const moco_optspec *sp, int argc, char **argv, char *buf, size_t n, int out)
{
    fflush(NULL);
    FILE *t = tmpfile();
    assert_non_null(t);
    int fd = out ? 1 : 2, saved = dup(fd);
    dup2(fileno(t), fd);
    char *pos[1];
    int np = 0, rc = moco_opts_parse(sp, argc, argv, pos, &np);
    fflush(NULL);
    dup2(saved, fd);
    close(saved);
    rewind(t);
    size_t got = fread(buf, 1, n - 1, t);
    buf[got] = 0;
    fclose(t);
    return rc;
}

static void test_required(void **st)
{
    (void)st;
    const char *db = NULL, *bind = NULL, *log = NULL;
    const moco_opt o[] = {{"db", MOCO_OPT_STR, &db, "dataset", 0, 0, NULL}, {"bind", MOCO_OPT_STR, &bind, "endpoint", 0, 0, NULL},
                          {"log", MOCO_OPT_STR, &log, "log file", 0, 0, NULL}, {NULL, 0, NULL, NULL, 0, 0, NULL}};
    const moco_optspec sp = {"moco x", "--db DB --bind EP", NULL, o, 0, 0, "db bind"};
    char buf[2048];
    char *none[] = {"x", "--log", "l"}, *one[] = {"x", "--db", "d"}, *both[] = {"x", "--bind", "b", "--db", "d"}, *help[] = {"x", "--help"};
    assert_int_equal(parse_into(&sp, 3, none, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco x: --db and --bind are required"));
    assert_int_equal(parse_into(&sp, 3, one, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco x: --bind is required"));
    assert_null(strstr(buf, "--db"));
    assert_int_equal(parse_into(&sp, 5, both, buf, sizeof buf, 0), MOCO_OPTS_OK);
    assert_string_equal(buf, "");
    assert_string_equal(db, "d");
    assert_int_equal(parse_into(&sp, 2, help, buf, sizeof buf, 1), MOCO_OPTS_HELP);
    assert_non_null(strstr(buf, "dataset (required)"));
    assert_non_null(strstr(buf, "endpoint (required)"));
    assert_null(strstr(buf, "log file (required)"));
    /* --help after a flag that takes a value: the help, not the flag's value "--help"; and the
     * flags before it are not shown as defaults */
    db = NULL;
    char *late[] = {"x", "--log", "mine.log", "--db", "--help"};
    assert_int_equal(parse_into(&sp, 5, late, buf, sizeof buf, 1), MOCO_OPTS_HELP);
    assert_non_null(strstr(buf, "dataset (required)"));
    assert_null(db);
    char *late2[] = {"x", "--log", "mine.log", "--help"};
    assert_int_equal(parse_into(&sp, 4, late2, buf, sizeof buf, 1), MOCO_OPTS_HELP);
    assert_null(strstr(buf, "mine.log"));
    /* a second spec parsed after the first: each keeps what it saw */
    long k = 0;
    const moco_opt o2[] = {{"k", MOCO_OPT_INT, &k, "k", 0, 100, NULL}, {NULL, 0, NULL, NULL, 0, 0, NULL}};
    const moco_optspec sp2 = {"moco y", "", NULL, o2, 0, 0, NULL};
    char *kk[] = {"y", "--k", "3"};
    assert_int_equal(parse_into(&sp, 5, both, buf, sizeof buf, 0), MOCO_OPTS_OK);
    assert_int_equal(parse_into(&sp2, 3, kk, buf, sizeof buf, 0), MOCO_OPTS_OK);
    assert_true(moco_opts_seen(&sp, "db") && moco_opts_seen(&sp, "bind") && !moco_opts_seen(&sp, "log"));
    assert_true(moco_opts_seen(&sp2, "k"));
}

/* moco_opts_run, every command's entry point: go on, or the exit status */
static void test_run_status(void **st)
{
    (void)st;
    const char *db = NULL;
    const moco_opt o[] = {{"db", MOCO_OPT_STR, &db, "dataset", 0, 0, NULL}, {NULL, 0, NULL, NULL, 0, 0, NULL}};
    const moco_optspec sp = {"moco x", "--db DB", NULL, o, 0, 0, "db"};
    char *ok[] = {"x", "--db", "d"}, *help[] = {"x", "--help"}, *bad[] = {"x", "--nope"}, *none[] = {"x"}, *pos[1];
    int np = 0, status = -7;
    assert_int_equal(moco_opts_run(&sp, 3, ok, pos, &np, &status), 1);
    assert_int_equal(status, 0);
    assert_string_equal(db, "d");
    fflush(NULL);
    int saved[2] = {dup(1), dup(2)}, devnull = open("/dev/null", O_WRONLY);
    dup2(devnull, 1), dup2(devnull, 2);
    int r_help = moco_opts_run(&sp, 2, help, pos, &np, &status), s_help = status;
    int r_bad = moco_opts_run(&sp, 2, bad, pos, &np, &status), s_bad = status;
    int r_none = moco_opts_run(&sp, 1, none, pos, &np, &status), s_none = status;
    fflush(NULL);
    dup2(saved[0], 1), dup2(saved[1], 2);
    close(saved[0]), close(saved[1]), close(devnull);
    assert_int_equal(r_help, 0);
    assert_int_equal(s_help, 0); /* --help: exit 0 */
    assert_int_equal(r_bad, 0);
    assert_int_equal(s_bad, 2); /* an unknown flag: exit 2 */
    assert_int_equal(r_none, 0);
    assert_int_equal(s_none, 2); /* a required flag missing: exit 2 */
    assert_int_equal(moco_opts_status(MOCO_OPTS_HELP), 0);
    assert_int_equal(moco_opts_status(MOCO_OPTS_USAGE), 2);
}

/* an unknown flag: a did-you-mean against the table; flags passed on (moco
 * run's to moco train): said as the outer command's, both tables, both helps;
 * a fixed-format output name (--out x.png) */
static void test_unknown_and_suffix(void **st)
{
    (void)st;
    long workers = 0, epochs = 0;
    const moco_opt ro[] = {{"workers", MOCO_OPT_INT, &workers, "w", 0, 0, NULL}, {NULL, 0, NULL, NULL, 0, 0, NULL}};
    const moco_opt to[] = {{"epochs", MOCO_OPT_INT, &epochs, "e", 0, 0, NULL}, {NULL, 0, NULL, NULL, 0, 0, NULL}};
    const moco_optspec run = {"moco run", "", NULL, ro, 0, 0, NULL}, train = {"moco train", "", NULL, to, 0, 0, NULL};
    char buf[2048];
    char *epoch[] = {"train", "--epoch", "1"}, *worker[] = {"train", "--worker", "1"}, *far[] = {"train", "--zz", "1"};
    assert_int_equal(parse_into(&train, 3, epoch, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco train: unknown option '--epoch'; did you mean --epochs?\nTry 'moco train --help'."));
    assert_int_equal(parse_into(&train, 3, far, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_null(strstr(buf, "did you mean")); /* nothing near: no guess */
    moco_opts_passed_on(&run);
    assert_int_equal(parse_into(&train, 3, worker, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    moco_opts_passed_on(NULL);
    assert_non_null(strstr(buf, "moco run: unknown option '--worker' (neither a run flag nor a train flag); did you mean "
                                "--workers?\nTry 'moco run --help' and 'moco train --help'."));
    assert_int_equal(parse_into(&train, 3, worker, buf, sizeof buf, 0), MOCO_OPTS_USAGE); /* cleared: train's own */
    assert_non_null(strstr(buf, "moco train: unknown option '--worker'\nTry 'moco train --help'."));
    fflush(NULL);
    FILE *t = tmpfile();
    int saved = dup(2);
    dup2(fileno(t), 2);
    int ok1 = moco_opts_suffix(&run, "out", "a.png", ".png", "a PNG"), ok2 = moco_opts_suffix(&run, "out", "A.PNG", ".png", "a PNG");
    int bad = moco_opts_suffix(&run, "out", "a.jpg", ".png", "it is written as a PNG"), bad2 = moco_opts_suffix(&run, "out", ".png", ".png", "x");
    fflush(NULL);
    dup2(saved, 2);
    close(saved);
    rewind(t);
    size_t got = fread(buf, 1, sizeof buf - 1, t);
    buf[got] = 0;
    fclose(t);
    assert_true(ok1 && ok2 && !bad && !bad2);
    assert_non_null(strstr(buf, "moco run: --out a.jpg: it is written as a PNG; give a name ending in .png\nTry 'moco run --help'."));
}

/* main_moco.py's short flags and bench train's old long names, as aliases of a table entry */
static void test_aliases(void **st)
{
    (void)st;
    long batch = 0, K = 0, workers = 0;
    int cos = 0;
    double lr = 0.03;
    const char *arch = "r50";
    const moco_opt o[] = {{"arch|-a", MOCO_OPT_CHOICE, &arch, "encoder", 0, 0, "r18|r50"},
                          {"batch-size|-b", MOCO_OPT_INT, &batch, "pairs per step", 2, 1000, NULL},
                          {"moco-k|--K", MOCO_OPT_INT, &K, "queue", 1, 100000, NULL},
                          {"cos|-c", MOCO_OPT_FLAG, &cos, "cosine", 0, 0, NULL},
                          {"lr", MOCO_OPT_DOUBLE, &lr, "learning rate", 0, 0, NULL},
                          {NULL, 0, NULL, NULL, 0, 0, NULL}};
    const moco_optspec sp = {"moco t", "", NULL, o, 0, 0, "batch-size"};
    char buf[2048];
    /* the spaced, attached and argparse's -b=V forms; the long alias; the last value wins across spellings */
    char *spaced[] = {"t", "-b", "256", "-a", "r18", "--K", "4096", "-c"}, *attached[] = {"t", "-b64", "-ar18"},
         *eq[] = {"t", "-b=96", "--K=512", "--moco-k", "1024"};
    assert_int_equal(parse_into(&sp, 8, spaced, buf, sizeof buf, 0), MOCO_OPTS_OK);
    assert_string_equal(buf, "");
    assert_int_equal(batch, 256);
    assert_string_equal(arch, "r18");
    assert_int_equal(K, 4096);
    assert_int_equal(cos, 1);
    assert_true(moco_opts_seen(&sp, "batch-size") && moco_opts_seen(&sp, "arch") && moco_opts_seen(&sp, "moco-k"));
    arch = "r50";
    assert_int_equal(parse_into(&sp, 3, attached, buf, sizeof buf, 0), MOCO_OPTS_OK);
    assert_int_equal(batch, 64);
    assert_string_equal(arch, "r18");
    assert_false(moco_opts_seen(&sp, "moco-k"));
    assert_int_equal(parse_into(&sp, 5, eq, buf, sizeof buf, 0), MOCO_OPTS_OK);
    assert_int_equal(batch, 96);
    assert_int_equal(K, 1024);
    /* messages name the flag as typed; the required flag given by its alias counts */
    char *bad_int[] = {"t", "-b", "x"}, *range[] = {"t", "-b1"}, *noval[] = {"t", "-b"}, *flagval[] = {"t", "-b", "8", "-c1"},
         *kbad[] = {"t", "-b", "8", "--K", "-3"};
    assert_int_equal(parse_into(&sp, 3, bad_int, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco t: -b: 'x' is not an integer\nTry 'moco t --help'."));
    assert_int_equal(parse_into(&sp, 2, range, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco t: -b: 1 is outside [2, 1000]"));
    assert_int_equal(parse_into(&sp, 2, noval, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco t: -b needs a value"));
    assert_int_equal(parse_into(&sp, 4, flagval, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco t: -c takes no value"));
    assert_int_equal(parse_into(&sp, 5, kbad, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco t: --K: -3 is outside [1, 100000]"));
    /* a near miss: the same name but for its case or dashes, or an edit away; nothing for what is far */
    struct { const char *arg, *want; } near[] = {{"-B", "unknown option '-B'; did you mean -b?"},
                                                {"--b", "unknown option '--b'; did you mean -b?"},
                                                {"-lr", "unknown option '-lr'; did you mean --lr?"},
                                                {"--k", "unknown option '--k'; did you mean --K?"},
                                                {"--batchsize", "unknown option '--batchsize'; did you mean --batch-size?"},
                                                /* -a with "rch" attached, as argparse reads it */
                                                {"-arch", "moco t: -a: 'rch' is not one of r18|r50"}};
    for (size_t i = 0; i < sizeof near / sizeof *near; i++) {
        char *v[] = {"t", "-b", "8", (char *)near[i].arg, "1"};
        assert_int_equal(parse_into(&sp, 5, v, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
        print_message("  %s: %s", near[i].arg, buf);
        assert_non_null(strstr(buf, near[i].want));
    }
    char *far[] = {"t", "-b", "8", "-z", "1"};
    assert_int_equal(parse_into(&sp, 5, far, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    assert_non_null(strstr(buf, "moco t: unknown option '-z'\n"));
    /* flags passed on: the outer table's alias is suggested too */
    const moco_opt ro[] = {{"workers|-j", MOCO_OPT_INT, &workers, "w", 0, 0, NULL}, {NULL, 0, NULL, NULL, 0, 0, NULL}};
    const moco_optspec run = {"moco run", "", NULL, ro, 0, 0, NULL};
    char *J[] = {"t", "-b", "8", "-J", "2"};
    moco_opts_passed_on(&run);
    assert_int_equal(parse_into(&sp, 5, J, buf, sizeof buf, 0), MOCO_OPTS_USAGE);
    moco_opts_passed_on(NULL);
    assert_non_null(strstr(buf, "moco run: unknown option '-J' (neither a run flag nor a t flag); did you mean -j?"));
    /* --help (and -h) lists every spelling */
    char *help[] = {"t", "-h"};
    assert_int_equal(parse_into(&sp, 2, help, buf, sizeof buf, 1), MOCO_OPTS_HELP);
    print_message("%s", buf);
    assert_non_null(strstr(buf, "\n  -a, --arch X  "));
    assert_non_null(strstr(buf, "\n  -b, --batch-size N     pairs per step (required)"));
    assert_non_null(strstr(buf, "\n  --moco-k, --K N "));
    assert_non_null(strstr(buf, "\n  -c, --cos  "));
    assert_non_null(strstr(buf, "\n  --lr F  "));
    assert_non_null(strstr(buf, "\n  -h, --help  "));
    /* moco_opts_find: what moco run routes by */
    const char *att = "unset";
    assert_ptr_equal(moco_opts_find(&sp, "-b", &att), &o[1]);
    assert_null(att);
    assert_ptr_equal(moco_opts_find(&sp, "-b32", &att), &o[1]);
    assert_string_equal(att, "32");
    assert_ptr_equal(moco_opts_find(&sp, "-b=32", &att), &o[1]);
    assert_string_equal(att, "32");
    assert_ptr_equal(moco_opts_find(&sp, "--batch-size=7", &att), &o[1]);
    assert_string_equal(att, "7");
    assert_ptr_equal(moco_opts_find(&sp, "--K", &att), &o[2]);
    assert_null(att);
    assert_null(moco_opts_find(&sp, "--b", &att));
    assert_null(moco_opts_find(&sp, "-K", &att));
    assert_null(moco_opts_find(&sp, "--batch-size|-b", &att));
    assert_null(moco_opts_find(&sp, "batch-size", &att));
}

int main(void)
{
    const struct CMUnitTest tests[] = {cmocka_unit_test(test_command_round_trip), cmocka_unit_test(test_required),
                                       cmocka_unit_test(test_run_status), cmocka_unit_test(test_unknown_and_suffix),
                                       cmocka_unit_test(test_aliases)};
    return cmocka_run_group_tests(tests, NULL, NULL);
}
