/* test_dbdamage.c: damaged dataset files (issue "Trustworthy edges", item 1).
 * A small dataset (records of 200 B to 5.6 KB: leaf and overflow pages) is
 * written with loader/dbwriter.c, then damaged: data.mdb truncated at
 * several sizes, each page zeroed in turn, each byte of both meta pages
 * flipped, the file cut short while a handle reads it. Every open, walk and
 * read must end in success or a clean error whose message names the file,
 * never a signal or an abort: each case runs in a forked child, so a crash
 * fails the test instead of killing it. Forged metadata: counts that wrap
 * around, a NUL in the class list. The guard caught twice in one thread,
 * signals blocked or not: the thread's signal mask is the same after. */
#include "tests/testutil.h"

#include <fcntl.h>
#include <pthread.h>
#include <signal.h>

#include "formats/db.h"
#include "formats/errors.h"
#include "formats/record.h"
#include "loader/dbwriter.h"

enum { N = 300, PSIZE = 4096 };

static char dir[4096], src[4200], work[4200];

/* payload length of record i: leaf records and overflow ones */
static uint32_t rec_len(uint64_t i) { return 200 + (uint32_t)(i % 7) * 900; }

/* Write the pristine dataset to src (once). */
static void make_dataset(void)
{
    dbw *w;
    snprintf(dir, sizeof dir, "%s", tu_tmpdir("dbdamage"));
    snprintf(src, sizeof src, "%s/src", dir);
    snprintf(work, sizeof work, "%s/db", dir);
    if (dbw_open(src, 0, 0, &w)) fail_msg("%s", moco_errmsg());
    for (uint64_t i = 0; i < N; i++) {
        uint32_t n = rec_len(i);
        uint8_t *px = malloc(n);
        for (uint32_t k = 0; k < n; k++) px[k] = (uint8_t)(i * 31 + k * 7);
        moco_rec_header h = {.encoding = MOCO_ENC_RAW, .channels = 1, .label = 0, .width = n, .height = 1};
        size_t len;
        uint8_t *rec = moco_rec_build(&h, px, n, &len);
        assert_non_null(rec);
        assert_int_equal(dbw_put_batch(w, i, &rec, &len, 1), 0);
        free(rec);
        free(px);
    }
    char *names[] = {"all"};
    uint64_t counts[] = {N};
    moco_db_meta m = {.count = N, .nclasses = 1, .class_names = names, .class_counts = counts,
                      .source = "test", .source_format = "folder", .enc_counts = {N, 0, 0}, .min_w = 200,
                      .max_w = 5600, .min_h = 1, .max_h = 1};
    if (dbw_finish(&w, &m)) fail_msg("%s", moco_errmsg());
}

/* A fresh copy of the dataset at work. */
static void fresh_copy(void)
{
    assert_int_equal(tu_sh("rm -rf '%s' && cp -r '%s' '%s'", work, src, work), 0);
}

static char mdb[4300];
static const char *data_mdb(void)
{
    snprintf(mdb, sizeof mdb, "%s/data.mdb", work);
    return mdb;
}

static off_t file_size(void)
{
    struct stat st;
    assert_int_equal(stat(data_mdb(), &st), 0);
    return st.st_size;
}

static void patch(off_t off, const void *b, size_t n)
{
    int fd = open(data_mdb(), O_WRONLY);
    assert_true(fd >= 0);
    assert_int_equal(pwrite(fd, b, n, off), (ssize_t)n);
    close(fd);
}

/* An error must name the dataset. Returns 0 when rc is 0 or such an error. */
static int clean(int rc, const char *what)
{
    if (rc == 0) return 0;
    if (strstr(moco_errmsg(), work) && !strchr(moco_errmsg(), '\n')) return 0;
    fprintf(stderr, "%s: rc %d, message lacks the path (or is not one line): %s\n", what, rc, moco_errmsg());
    return 1;
}

typedef struct {
    uint64_t n, bad_crc;
} walk_ctx;

static int walk_one(void *ctx, uint64_t index, const uint8_t *val, size_t len)
{
    walk_ctx *w = ctx;
    moco_rec_header h;
    const uint8_t *pl;
    (void)index;
    w->n++;
    if (moco_rec_parse(val, len, 1, "record", &h, &pl)) w->bad_crc++;
    return 0;
}

/* Open, walk, read every record. Bits of the result: 1 = some call gave an
 * unclean error, 2 = some call reported damage (MOCO_ECORRUPT), 4 = the
 * whole dataset read back intact. */
static int exercise(void)
{
    moco_db *db;
    int r = 0, rc = moco_db_open(work, &db);
    if (rc) return clean(rc, "open") | (rc == MOCO_ECORRUPT ? 2 : 0);
    walk_ctx w = {0, 0};
    rc = moco_db_foreach(db, walk_one, &w);
    r |= clean(rc, "foreach") | (rc == MOCO_ECORRUPT ? 2 : 0);
    int intact = rc == 0 && w.n == N && w.bad_crc == 0;
    uint8_t *buf = NULL;
    size_t cap = 0, len;
    for (uint64_t i = 0; i < N; i++) {
        rc = moco_db_get(db, i, &buf, &cap, &len);
        r |= clean(rc, "get") | (rc == MOCO_ECORRUPT ? 2 : 0);
        if (rc) intact = 0;
        else if (len != 32 + rec_len(i)) intact = 0;
    }
    free(buf);
    moco_db_destroy(&db);
    return r | (intact ? 4 : 0);
}

/* In a child: the default action for the signals cmocka catches, so that
 * a crash kills the child instead of resuming cmocka's runner in it. */
static void child_signals(void)
{
    const int sigs[] = {SIGABRT, SIGBUS, SIGSEGV, SIGILL, SIGFPE, SIGSYS};
    for (size_t i = 0; i < sizeof sigs / sizeof *sigs; i++) signal(sigs[i], SIG_DFL);
}

/* Run fn() in a child and return its exit code; fails the test if the
 * child died of a signal (SIGBUS, SIGSEGV, SIGABRT from LMDB, or SIGALRM:
 * it ran for 20 s, a hang). */
static int forked(int (*fn)(void), const char *what)
{
    fflush(NULL);
    pid_t pid = fork();
    assert_true(pid >= 0);
    if (pid == 0) {
        /* _exit: no cmocka, no atexit (leaks are checked in-process below) */
        child_signals();
        alarm(20); /* LMDB looping on a damaged page must fail the test, not block it */
        _exit(fn());
    }
    int st;
    assert_int_equal(waitpid(pid, &st, 0), pid);
    if (!WIFEXITED(st)) fail_msg("%s: the reader died of signal %d (%s)", what, WTERMSIG(st), strsignal(WTERMSIG(st)));
    return WEXITSTATUS(st);
}

/* Run exercise() in a child. Returns its result bits. */
static int in_child(const char *what)
{
    int r = forked(exercise, what);
    if (r & 1) fail_msg("%s: an error without the file name (see above)", what);
    return r;
}

static void test_pristine_reads_back(void **st)
{
    (void)st;
    fresh_copy();
    assert_int_equal(in_child("pristine"), 4);
    assert_int_equal(exercise(), 4); /* in-process too: no leak, nothing left over */
}

static void test_truncated(void **st)
{
    (void)st;
    fresh_copy();
    const off_t full = file_size();
    const off_t sizes[] = {full / 2, full - PSIZE, full - 1, PSIZE, PSIZE + 100, 100, 0};
    for (size_t k = 0; k < sizeof sizes / sizeof *sizes; k++) {
        fresh_copy();
        assert_int_equal(truncate(data_mdb(), sizes[k]), 0);
        char what[64];
        snprintf(what, sizeof what, "truncated to %lld of %lld bytes", (long long)sizes[k], (long long)full);
        int r = in_child(what);
        if (!(r & 2)) fail_msg("%s: not reported as damaged", what);
        moco_db *db;
        assert_int_equal(moco_db_open(work, &db), MOCO_ECORRUPT); /* refused at open, before LMDB maps it */
        assert_non_null(strstr(moco_errmsg(), "data.mdb"));
        print_message("  %s -> %s\n", what, moco_errmsg());
    }
}

static void test_zeroed_pages(void **st)
{
    (void)st;
    fresh_copy();
    const off_t pages = file_size() / PSIZE;
    static uint8_t zero[PSIZE];
    int damaged = 0, undetected = 0, mid = -1;
    static uint8_t keep[PSIZE];
    for (off_t p = 2; p < pages; p++) {
        int fd = open(data_mdb(), O_RDONLY);
        assert_int_equal(pread(fd, keep, PSIZE, p * PSIZE), PSIZE);
        close(fd);
        patch(p * PSIZE, zero, PSIZE);
        char what[64];
        snprintf(what, sizeof what, "page %lld of %lld zeroed", (long long)p, (long long)pages);
        int r = in_child(what);
        patch(p * PSIZE, keep, PSIZE); /* undone for the next page */
        damaged += (r & 2) != 0;
        undetected += (r & 6) == 0; /* an overflow page of zeros reads back: the record CRC catches it */
        if (p == pages / 2) {
            mid = r;
            print_message("  %s: %s\n", what, r & 2 ? "reported as damaged" : "read without a crash");
        }
    }
    print_message("  %lld pages zeroed one at a time: %d reported as damaged, %d caught only by record CRCs\n",
                  (long long)(pages - 2), damaged, undetected);
    assert_true(damaged > 0);
    /* the middle page, in-process (the sanitizers see its leaks): every error names the file, and it reads as
     * the child read it */
    fresh_copy();
    patch(pages / 2 * PSIZE, zero, PSIZE);
    assert_true(mid >= 0);
    assert_int_equal(exercise(), mid);
}

static void test_meta_bytes_flipped(void **st)
{
    (void)st;
    int refused = 0;
    fresh_copy();
    for (int m = 0; m < 2; m++)
        for (int off = 0; off < 160; off++) {
            uint8_t b;
            int fd = open(data_mdb(), O_RDONLY);
            assert_int_equal(pread(fd, &b, 1, m * PSIZE + off), 1);
            close(fd);
            b ^= 0xFF;
            patch(m * PSIZE + off, &b, 1);
            char what[64];
            snprintf(what, sizeof what, "meta page %d byte %d flipped", m, off);
            refused += (in_child(what) & 2) != 0;
            b ^= 0xFF;
            patch(m * PSIZE + off, &b, 1); /* undone for the next byte */
        }
    print_message("  320 single-byte flips in the meta pages: %d refused as damaged, none crashed\n", refused);
    assert_true(refused > 0);
}

/* The file shrinks under an open handle: LMDB's mapping now ends in pages
 * with no file behind them, and touching them is SIGBUS, which the guard
 * in formats/db.c turns into MOCO_ECORRUPT. */
static int shrink_while_open(void)
{
    moco_db *db;
    if (moco_db_open(work, &db)) return 10;
    if (truncate(data_mdb(), PSIZE * 2) != 0) return 11;
    walk_ctx w = {0, 0};
    int rc = moco_db_foreach(db, walk_one, &w), r = 0;
    if (rc != MOCO_ECORRUPT || !strstr(moco_errmsg(), "data.mdb")) {
        fprintf(stderr, "foreach after shrinking: rc %d: %s\n", rc, moco_errmsg());
        r = 12;
    }
    uint8_t *buf = NULL;
    size_t cap = 0, len;
    rc = moco_db_get(db, N - 1, &buf, &cap, &len);
    if (rc != MOCO_ECORRUPT || !strstr(moco_errmsg(), work)) {
        fprintf(stderr, "get after shrinking: rc %d: %s\n", rc, moco_errmsg());
        r = 13;
    }
    free(buf);
    moco_db_destroy(&db);
    return r;
}

static void test_shrinks_while_reading(void **st)
{
    (void)st;
    fresh_copy();
    assert_int_equal(forked(shrink_while_open, "shrunk while open"), 0);
    /* in-process too (cmocka's own SIGBUS handler is in place: the guard
     * goes in front of it) */
    fresh_copy();
    assert_int_equal(shrink_while_open(), 0);
    print_message("  shrunk while open -> %s\n", moco_errmsg());
    /* a fault outside the guard still gets the default action: the child
     * must die of SIGBUS */
    fresh_copy();
    fflush(NULL);
    pid_t pid = fork();
    int s;
    assert_true(pid >= 0);
    if (pid == 0) {
        moco_db *db;
        child_signals();
        if (moco_db_open(work, &db)) _exit(1); /* installs the guard's handler */
        moco_db_destroy(&db);
        raise(SIGBUS);
        _exit(0);
    }
    assert_int_equal(waitpid(pid, &s, 0), pid);
    assert_true(WIFSIGNALED(s) && WTERMSIG(s) == SIGBUS);
}

/* The guard twice in one thread (an audit: the jump out of the fault
 * handler left the thread's mask as the handler ran with it, so that a
 * second SIGBUS could kill the process; and a thread that blocks every
 * signal, as augment/pipe.c's beat thread does, was killed by the first).
 * Two handles are opened, the file is cut, each handle's read faults: both
 * are reported, and the mask (signals 1 to 64) is the caller's after each.
 * bracket 0: each handle's walk (moco_db_foreach); 1: moco_db_get inside
 * moco_db_reads_begin/end (the loader's batches, whose reads skip the
 * guard's set-up), nested once, then one end too many: inside the bracket
 * the mask is the caller's with SIGBUS and SIGSEGV unblocked, after it the
 * caller's. Returns 0, or a code that says what went wrong (and stderr why). */
static int mask_changed(const sigset_t *before)
{
    sigset_t now;
    sigemptyset(&now);
    pthread_sigmask(SIG_SETMASK, NULL, &now);
    for (int s = 1; s <= 64; s++)
        if (sigismember(&now, s) != sigismember(before, s)) return s;
    return 0;
}

static int fault_twice_in(int bracket)
{
    const int base = bracket ? 40 : 20;
    const char *where = bracket ? "inside the bracket" : "after the guard";
    sigset_t before, want;
    sigemptyset(&before);
    pthread_sigmask(SIG_SETMASK, NULL, &before);
    want = before;
    if (bracket) sigdelset(&want, SIGBUS), sigdelset(&want, SIGSEGV);
    moco_db *db[2];
    if (moco_db_open(work, &db[0]) || moco_db_open(work, &db[1])) return base;
    if (truncate(data_mdb(), PSIZE * 2) != 0) return base + 1;
    int r = 0, s;
    uint8_t *buf = NULL;
    size_t cap = 0, len = 0;
    if (bracket) moco_db_reads_begin(), moco_db_reads_begin(); /* nested: the inner end changes nothing */
    for (int k = 0; k < 2 && !r; k++) {
        walk_ctx w = {0, 0};
        int rc = bracket ? moco_db_get(db[k], 0, &buf, &cap, &len) : moco_db_foreach(db[k], walk_one, &w);
        if (rc != MOCO_ECORRUPT || !strstr(moco_errmsg(), "bus error")) {
            fprintf(stderr, "fault %d: rc %d: %s\n", k + 1, rc, moco_errmsg());
            r = base + 2 + k;
        } else if ((s = mask_changed(&want))) {
            fprintf(stderr, "fault %d: signal %d (%s) is %s blocked %s\n", k + 1, s, strsignal(s),
                    sigismember(&want, s) ? "no longer" : "now", where);
            r = base + 4 + k;
        }
        if (bracket && k == 0) moco_db_reads_end();
    }
    if (bracket) {
        moco_db_reads_end();
        if (!r && (s = mask_changed(&before))) {
            fprintf(stderr, "after the bracket: signal %d (%s) is %s blocked\n", s, strsignal(s),
                    sigismember(&before, s) ? "no longer" : "now");
            r = base + 6;
        }
        moco_db_reads_end(); /* one too many: nothing */
        if (!r && mask_changed(&before)) r = base + 7;
    }
    free(buf);
    moco_db_destroy(&db[0]);
    moco_db_destroy(&db[1]);
    return r;
}

static int fault_twice(void) { return fault_twice_in(0); }
static int fault_twice_bracketed(void) { return fault_twice_in(1); }

/* fn's result, run in a thread that blocks every signal (30: no thread) */
typedef struct {
    int (*fn)(void);
    int r;
} blocked_run;

static void *blocked_thread(void *arg)
{
    blocked_run *b = arg;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    b->r = b->fn();
    return NULL;
}

static int in_blocked_thread(int (*fn)(void))
{
    blocked_run b = {fn, 30};
    pthread_t t;
    if (pthread_create(&t, NULL, blocked_thread, &b) == 0) pthread_join(t, NULL);
    return b.r;
}

static int fault_twice_blocked(void) { return in_blocked_thread(fault_twice); }
static int fault_twice_bracketed_blocked(void) { return in_blocked_thread(fault_twice_bracketed); }

static void test_guard_twice(void **st)
{
    (void)st;
    static const struct {
        int (*fn)(void);
        const char *what;
    } runs[] = {
        {fault_twice, "two faults in a thread that blocks none"},
        {fault_twice_blocked, "two faults in a thread that blocks every signal"},
        {fault_twice_bracketed, "two faults in a bracket of reads in a thread that blocks none"},
        {fault_twice_bracketed_blocked, "two faults in a bracket of reads in a thread that blocks every signal"},
    };
    for (size_t i = 0; i < sizeof runs / sizeof *runs; i++) {
        fresh_copy();
        int r = forked(runs[i].fn, runs[i].what);
        if (r) fail_msg("%s: exit %d (see above)", runs[i].what, r);
        print_message("  %s: both reported, the mask as it was\n", runs[i].what);
    }
    /* in-process too, under cmocka's handlers */
    fresh_copy();
    assert_int_equal(fault_twice(), 0);
    fresh_copy();
    assert_int_equal(fault_twice_bracketed(), 0);
}

/* ---- pages LMDB loops on (issue 15, item 1: found by tests/fuzz/fuzz_lmdb) ---- */

static uint16_t rd16(const uint8_t *p) { uint16_t v; memcpy(&v, p, 2); return v; }
static uint64_t rd64(const uint8_t *p) { uint64_t v; memcpy(&v, p, 8); return v; }

static void read_page(uint64_t pg, uint8_t *p)
{
    int fd = open(data_mdb(), O_RDONLY);
    assert_true(fd >= 0);
    assert_int_equal(pread(fd, p, PSIZE, (off_t)(pg * PSIZE)), PSIZE);
    close(fd);
}

/* The root page of the main database in the meta page LMDB reads (the
 * larger transaction id), and the root of the named database `name` (a
 * 48-byte record in the main database's leaf), from data.mdb at work. */
static uint64_t main_root(void)
{
    static uint8_t m0[PSIZE], m1[PSIZE];
    read_page(0, m0);
    read_page(1, m1);
    const uint8_t *m = rd64(m1 + 16 + 128) > rd64(m0 + 16 + 128) ? m1 : m0; /* txnid */
    return rd64(m + 16 + 24 + 48 + 40);                                       /* the main database's md_root */
}

static uint64_t db_root(const char *name)
{
    static uint8_t p[PSIZE];
    read_page(main_root(), p);
    assert_int_equal(rd16(p + 10), 0x02); /* a leaf: the dataset's two names */
    for (unsigned i = 0; i < (rd16(p + 12) - 16u) / 2; i++) {
        const uint8_t *nd = p + rd16(p + 16 + 2 * i);
        if (rd16(nd + 6) == strlen(name) && !memcmp(nd + 8, name, strlen(name))) return rd64(nd + 8 + rd16(nd + 6) + 40);
    }
    fail_msg("no database %s", name);
    return 0;
}

/* Page pg: flags and mp_lower / mp_upper as given (a LEAF2 page whose
 * lower is below the header: its key count wraps to about 2^31). */
static void set_header(uint64_t pg, uint16_t flags, uint16_t lower, uint16_t upper)
{
    uint8_t h[6];
    memcpy(h, &flags, 2), memcpy(h + 2, &lower, 2), memcpy(h + 4, &upper, 2);
    patch((off_t)(pg * PSIZE + 10), h, 6);
}

/* Each case: the reader ends (within the 20 s alarm of in_child) with the
 * damage reported, naming the file, and moco_db_open refuses it. Without
 * the tree walk in formats/db.c the first two hang in LMDB's binary search
 * (mdb_dbi_open, mdb_get: the child dies of its alarm); the last two check
 * the walk's cycle and depth checks. */
static void test_looping_pages(void **st)
{
    (void)st;
    static uint8_t p[PSIZE];
    struct {
        const char *what;
        int kind;
    } cases[] = {
        {"the main database's root: LEAF2, lower 0 (mdb_dbi_open looped)", 0},
        {"a leaf of 'samples': LEAF2, lower 0 (mdb_get looped)", 1},
        {"a branch of 'samples' pointing at itself", 2},
        {"the root of 'samples': a leaf where the depth says branch", 3},
    };
    for (size_t c = 0; c < sizeof cases / sizeof *cases; c++) {
        fresh_copy();
        uint64_t sroot = db_root("samples");
        read_page(sroot, p);
        assert_int_equal(rd16(p + 10), 0x01); /* 300 records: 'samples' has a branch root */
        const uint8_t *first = p + rd16(p + 16); /* its first child */
        uint64_t leaf = rd16(first) | (uint64_t)rd16(first + 2) << 16;
        switch (cases[c].kind) {
        case 0: set_header(main_root(), 0x22, 0, 0); break;
        case 1: set_header(leaf, 0x22, 0, 0); break;
        case 2: {
            uint8_t self[4] = {(uint8_t)sroot, (uint8_t)(sroot >> 8), (uint8_t)(sroot >> 16), (uint8_t)(sroot >> 24)};
            patch((off_t)(sroot * PSIZE + rd16(p + 16 + 2)), self, 4); /* its second child: itself */
            break;
        }
        case 3: set_header(sroot, 0x02, rd16(p + 12), rd16(p + 14)); break;
        }
        int r = in_child(cases[c].what);
        if (!(r & 2)) fail_msg("%s: not reported as damaged", cases[c].what);
        moco_db *db;
        assert_int_equal(moco_db_open(work, &db), MOCO_ECORRUPT);
        assert_non_null(strstr(moco_errmsg(), "data.mdb"));
        print_message("  %s -> %s\n", cases[c].what, moco_errmsg());
    }
}

static void test_probe(void **st)
{
    (void)st;
    fresh_copy();
    assert_int_equal(moco_db_probe(work), 0);
    assert_int_equal(truncate(data_mdb(), PSIZE * 3), 0);
    assert_int_equal(moco_db_probe(work), MOCO_ECORRUPT);
    assert_int_not_equal(moco_db_probe(dir), 0); /* no data.mdb */
}

/* Metadata written whole but forged: class counts that wrap around 2^64 to
 * the record count (before: accepted, "summing to count"), and a class list
 * with a NUL byte inside (before: the list cut short at it, unseen). */
static void test_meta_forged(void **st)
{
    (void)st;
    char path[4300];
    snprintf(path, sizeof path, "%s/forged", dir);
    dbw *w;
    assert_int_equal(tu_sh("rm -rf '%s'", path), 0);
    assert_int_equal(dbw_open(path, 0, 0, &w), 0);
    moco_rec_header h = {.encoding = MOCO_ENC_RAW, .channels = 1, .label = 0, .width = 4, .height = 1};
    size_t len;
    uint8_t px[4] = {1, 2, 3, 4}, *rec = moco_rec_build(&h, px, 4, &len);
    assert_non_null(rec);
    for (uint64_t i = 0; i < 4; i++) assert_int_equal(dbw_put_batch(w, i, &rec, &len, 1), 0);
    free(rec);
    char *names[] = {"zqxj", "other"};
    uint64_t counts[] = {UINT64_MAX, 5}; /* UINT64_MAX + 5 = 4 modulo 2^64 */
    moco_db_meta m = {.count = 4, .nclasses = 2, .class_names = names, .class_counts = counts, .source = "test",
                      .source_format = "folder", .enc_counts = {4, 0, 0}, .min_w = 4, .max_w = 4, .min_h = 1, .max_h = 1};
    assert_int_equal(dbw_finish(&w, &m), 0);
    moco_db *db = NULL;
    assert_int_equal(moco_db_open(path, &db), MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), path));
    assert_non_null(strstr(moco_errmsg(), "add up to more than count"));

    /* the same with honest counts opens; then a NUL put into the first name in data.mdb */
    assert_int_equal(tu_sh("rm -rf '%s'", path), 0);
    assert_int_equal(dbw_open(path, 0, 0, &w), 0);
    rec = moco_rec_build(&h, px, 4, &len);
    for (uint64_t i = 0; i < 4; i++) assert_int_equal(dbw_put_batch(w, i, &rec, &len, 1), 0);
    free(rec);
    counts[0] = 3, counts[1] = 1;
    assert_int_equal(dbw_finish(&w, &m), 0);
    assert_int_equal(moco_db_open(path, &db), 0);
    assert_int_equal(moco_db_get_meta(db)->nclasses, 2);
    moco_db_destroy(&db);
    assert_int_equal(tu_sh("python3 -c \"import sys; p = sys.argv[1]; b = open(p, 'rb').read(); "
                           "assert b.count(b'zqxj\\n') == 1; open(p, 'wb').write(b.replace(b'zqxj\\n', b'zq\\0j\\n'))\" '%s/data.mdb'",
                           path),
                     0);
    assert_int_equal(moco_db_open(path, &db), MOCO_ECORRUPT);
    assert_non_null(strstr(moco_errmsg(), path));
    assert_non_null(strstr(moco_errmsg(), "'classes' holds a NUL byte"));
}

int main(void)
{
    make_dataset();
    const struct CMUnitTest tests[] = {
        cmocka_unit_test(test_pristine_reads_back),
        cmocka_unit_test(test_truncated),
        cmocka_unit_test(test_zeroed_pages),
        cmocka_unit_test(test_meta_bytes_flipped),
        cmocka_unit_test(test_shrinks_while_reading),
        cmocka_unit_test(test_guard_twice),
        cmocka_unit_test(test_looping_pages),
        cmocka_unit_test(test_probe),
        cmocka_unit_test(test_meta_forged),
    };
    return cmocka_run_group_tests(tests, NULL, NULL);
}
