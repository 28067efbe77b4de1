/* test_mkdb_interrupt.c: `moco mkdb` under SIGINT and SIGTERM while one of
 * its threads is stuck reading an input for good (a hung file system,
 * made here by an LD_PRELOAD fread that never returns for a file named
 * *STALL*): it exits promptly, status 1, saying it was interrupted, and
 * leaves nothing at OUT, not even its temporary directory. Before: the
 * writer waited on the stuck item's slot, the signal never woke it, and
 * mkdb ran until killed (SIGKILL after 15 s here), leaving OUT.tmp-PID. */
#include "tests/testutil.h"

#include <signal.h>
#include <time.h>
#include <vips/vips.h>

static char tmp[4096];

static const char SHIM[] =
    "#define _GNU_SOURCE\n"
    "#include <dlfcn.h>\n#include <fcntl.h>\n#include <stdio.h>\n#include <stdlib.h>\n#include <string.h>\n#include <unistd.h>\n"
    "size_t fread(void *p, size_t s, size_t n, FILE *f)\n"
    "{\n"
    "    static size_t (*real)(void *, size_t, size_t, FILE *);\n"
    "    if (!real) real = (size_t (*)(void *, size_t, size_t, FILE *))dlsym(RTLD_NEXT, \"fread\");\n"
    "    char l[64], t[4096];\n"
    "    snprintf(l, sizeof l, \"/proc/self/fd/%d\", fileno(f));\n"
    "    ssize_t k = readlink(l, t, sizeof t - 1);\n"
    "    if (k > 0 && (t[k] = 0, strstr(t, \"STALL\"))) {\n"
    "        const char *m = getenv(\"STALL_MARK\");\n"
    "        if (m) close(open(m, O_CREAT | O_WRONLY, 0644));\n"
    "        for (;;) pause();\n"
    "    }\n"
    "    return real(p, s, n, f);\n"
    "}\n";

static double now_s(void)
{
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + 1e-9 * (double)t.tv_nsec;
}

static void make_png(const char *path, int seed)
{
    uint8_t px[8 * 8 * 3];
    for (int i = 0; i < (int)sizeof px; i++) px[i] = (uint8_t)(i * 7 + seed * 31);
    VipsImage *im = vips_image_new_from_memory_copy(px, sizeof px, 8, 8, 3, VIPS_FORMAT_UCHAR);
    assert_non_null(im);
    if (vips_image_write_to_file(im, path, NULL)) fail_msg("cannot write %s: %s", path, vips_error_buffer());
    g_object_unref(im);
}

static void interrupt_while_stuck(int sig, const char *name)
{
    char p[4300], so[4300], mark[4300], out[4300], err[4300], cmd[20000];
    snprintf(so, sizeof so, "%s/stall.so", tmp);
    snprintf(mark, sizeof mark, "%s/mark-%s", tmp, name);
    snprintf(out, sizeof out, "%s/db-%s", tmp, name);
    snprintf(err, sizeof err, "%s/err-%s.txt", tmp, name);
    /* ASan builds: the shim comes before libasan, which it only wraps fread around */
    snprintf(cmd, sizeof cmd,
             "LD_PRELOAD=%s STALL_MARK=%s ASAN_OPTIONS=${ASAN_OPTIONS:+$ASAN_OPTIONS:}verify_asan_link_order=0 "
             "exec %s mkdb %s/src %s --quiet --threads 2 2>%s",
             so, mark, tu_moco(), tmp, out, err);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
        _exit(127);
    }
    double t0 = now_s();
    while (!tu_exists(mark) && now_s() - t0 < 20) usleep(20000);
    if (!tu_exists(mark)) { kill(pid, SIGKILL); waitpid(pid, NULL, 0); fail_msg("%s: the reader never got stuck", name); }
    usleep(300000); /* the others ran on to the window's end, the writer waits on the stuck slot */
    assert_int_equal(kill(pid, sig), 0);
    double ts = now_s();
    int status = 0, done = 0;
    while (!done && now_s() - ts < 15) {
        pid_t r = waitpid(pid, &status, WNOHANG);
        assert_true(r >= 0);
        if (r == pid) done = 1;
        else usleep(20000);
    }
    double took = now_s() - ts;
    if (!done) {
        kill(pid, SIGKILL);
        waitpid(pid, NULL, 0);
    }
    size_t n;
    char *e = (char *)tu_read_file(err, &n);
    e[n] = 0;
    print_message("%s: %s after %.2f s; stderr:\n%s", name, done ? "exited" : "still running, killed", took, e);
    if (!done) fail_msg("%s: mkdb still running %.0f s after the signal", name, took);
    if (!WIFEXITED(status) || WEXITSTATUS(status) != 1)
        fail_msg("%s: want exit status 1, got %s %d", name, WIFEXITED(status) ? "exit" : "signal",
                 WIFEXITED(status) ? WEXITSTATUS(status) : WTERMSIG(status));
    if (took > 3) fail_msg("%s: took %.2f s to exit after the signal (want under 3)", name, took);
    snprintf(p, sizeof p, "interrupted; nothing written to %s", out);
    if (!strstr(e, p)) fail_msg("%s: stderr lacks '%s'", name, p);
    free(e);
    assert_false(tu_exists(out));
    assert_int_equal(tu_sh("ls %s | grep -q 'db-%s.tmp-'", tmp, name), 1); /* no temporary left */
}

static void test_interrupt_with_a_reader_stuck(void **st)
{
    (void)st;
    char p[4300];
    snprintf(tmp, sizeof tmp, "%s", tu_tmpdir("mkdb_interrupt"));
    snprintf(p, sizeof p, "%s/stall.c", tmp);
    FILE *f = fopen(p, "w");
    assert_non_null(f);
    fputs(SHIM, f);
    fclose(f);
    if (tu_sh("${CC:-cc} -shared -fPIC -O2 -o %s/stall.so %s -ldl", tmp, p)) fail_msg("cannot build the fread shim");
    tu_sh("mkdir -p %s/src/a %s/src/b", tmp, tmp);
    for (int i = 0; i < 40; i++) {
        snprintf(p, sizeof p, "%s/src/%c/%02d%s.png", tmp, i < 20 ? 'a' : 'b', i, i == 5 ? "STALL" : "");
        make_png(p, i);
    }
    interrupt_while_stuck(SIGINT, "int");
    interrupt_while_stuck(SIGTERM, "term");
}

int main(void)
{
    if (VIPS_INIT("test_mkdb_interrupt")) return 1;
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_interrupt_with_a_reader_stuck),
    };
    int r = cmocka_run_group_tests(tests, NULL, NULL);
    vips_shutdown();
    return r;
}
