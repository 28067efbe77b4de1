/* testutil.h: helpers shared by the cmocka unit tests: a per-test scratch
 * directory, running bin/moco, and the location of ../shared data.
 * Header-only on purpose (each test is one program); every function static. */
#ifndef MOCO_TESTUTIL_H
#define MOCO_TESTUTIL_H

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>
#include <cmocka.h>

#define TEST_SKIP_STATUS 77

/* Test paths are short; snprintf truncation would fail a test visibly. */
#pragma GCC diagnostic ignored "-Wformat-truncation"

/* A fresh, empty scratch directory tests/tmp/<name> (created by make test). */
static inline const char *tu_tmpdir(const char *name)
{
    static char path[4096];
    const char *base = getenv("MOCO_TEST_TMP");
    snprintf(path, sizeof path, "%s/%s", base ? base : "tests/tmp", name);
    char cmd[8300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s' && mkdir -p '%s'", path, path);
    if (system(cmd) != 0) fail_msg("cannot create %s", path);
    return path;
}

/* Path of bin/moco (env MOCO, else ./bin/moco). */
static inline const char *tu_moco(void)
{
    const char *m = getenv("MOCO");
    return m ? m : "./bin/moco";
}

/* Run a shell command built printf-style; return its exit status (or -1). */
static inline int tu_sh(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static inline int tu_sh(const char *fmt, ...)
{
    char cmd[8192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(cmd, sizeof cmd, fmt, ap);
    va_end(ap);
    int st = system(cmd);
    return st == -1 ? -1 : WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
}

static inline int tu_exists(const char *path)
{
    struct stat st;
    return stat(path, &st) == 0;
}

/* The whole of a file (malloc'd, one spare byte for a NUL); fails the test
 * if it cannot be read. */
static inline uint8_t *tu_read_file(const char *path, size_t *n)
{
    FILE *f = fopen(path, "rb");
    assert_non_null(f);
    fseek(f, 0, SEEK_END);
    *n = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(*n + 1);
    assert_int_equal(fread(b, 1, *n, f), *n);
    fclose(f);
    return b;
}

/* Directory of ../shared/data, or NULL when absent (tests then skip). */
static inline const char *tu_shared_data(void)
{
    static const char *cands[] = {"../shared/data", "../../shared/data"};
    for (size_t i = 0; i < sizeof cands / sizeof *cands; i++)
        if (tu_exists(cands[i])) return cands[i];
    return NULL;
}

#endif
