/* zsec_util.h: helpers shared by tests/test_zsec.c and tests/test_zsec_curve.c
 * (formats/zsec.h over loopback): the run's scratch directory with a key
 * directory from moco_keygen, a seeded random source (ports, junk bytes), a
 * clock, file helpers, a certificate's public key, and the checker of the
 * auth log's JSON lines. Header-only like testutil.h (each test is one
 * program): included by exactly those two files, every function static inline;
 * base, keys and rng are each program's own. */
#ifndef MOCO_TESTS_ZSEC_UTIL_H
#define MOCO_TESTS_ZSEC_UTIL_H

#include "tests/testutil.h"

#include <sys/stat.h>
#include <time.h>
#include <zmq.h>

#include "formats/errors.h"
#include "formats/json.h"
#include "formats/zsec.h"

static char base[1024];  /* scratch directory of this run */
static char keys[1100];  /* a key directory made by moco_keygen */
static uint64_t rng;

static inline void make_base(void)
{
    const char *t = getenv("MOCO_TEST_TMP");
    snprintf(base, sizeof base, "%s/zsec-XXXXXX", t ? t : "/tmp");
    assert_non_null(mkdtemp(base));
    snprintf(keys, sizeof keys, "%s/keys", base);
    assert_int_equal(moco_keygen(keys, 0), 0);
}

static inline uint32_t next_rand(void)
{
    rng = rng * 6364136223846793005ULL + 1442695040888963407ULL;
    return (uint32_t)(rng >> 33);
}

static inline double now_ms(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

static inline void write_file(const char *path, const void *data, size_t n, mode_t mode)
{
    FILE *f = fopen(path, "wb");
    assert_non_null(f);
    assert_int_equal(fwrite(data, 1, n, f), n);
    fclose(f);
    assert_int_equal(chmod(path, mode), 0);
}

static inline mode_t mode_of(const char *path)
{
    struct stat st;
    assert_int_equal(stat(path, &st), 0);
    return st.st_mode & 07777;
}

static inline char *slurp(const char *path)
{
    size_t n;
    char *b = (char *)tu_read_file(path, &n);
    b[n] = 0;
    return b;
}

/* The Z85 public key of a certificate file (first "public-key" line). */
static inline void pubkey_of(const char *path, char out[41])
{
    char *t = slurp(path), *p = strstr(t, "public-key = \"");
    assert_non_null(p);
    memcpy(out, p + 14, 40);
    out[40] = 0;
    free(t);
}

/* Every line of a log: one JSON object whose "event" is auth_rejected,
 * handshake_dropped or auth_summary and whose "who" decodes to who. Returns
 * the number of lines. */
static inline int log_lines_parse(const char *log, const char *who)
{
    int n = 0;
    for (const char *p = log; *p;) {
        const char *e = strchr(p, '\n');
        assert_non_null(e); /* every line ends */
        moco_json_tok t[64];
        int nt;
        char v[256];
        if (moco_json_parse(p, (size_t)(e - p), "log line", t, 64, &nt)) fail_msg("%s: %.*s", moco_errmsg(), (int)(e - p), p);
        assert_int_equal(t[0].type, MOCO_JSON_OBJ);
        int k = moco_json_get(p, t, 0, "event");
        assert_true(k > 0 && (moco_json_streq(p, &t[k], "auth_rejected") || moco_json_streq(p, &t[k], "handshake_dropped") ||
                              moco_json_streq(p, &t[k], "auth_summary")));
        k = moco_json_get(p, t, 0, "who");
        assert_true(k > 0 && moco_json_str(p, &t[k], v, sizeof v) == 0);
        assert_string_equal(v, who);
        n++;
        p = e + 1;
    }
    return n;
}

#endif
