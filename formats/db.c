/* db.c: read-only access to a dataset LMDB and its metadata encoding.
 *
 * Damaged files. LMDB maps data.mdb and trusts what it finds there: a file
 * cut short gives SIGBUS on the first touch of a missing page, and a page
 * of zeros trips one of LMDB's assertions, which aborts. Neither may reach
 * the user as a signal, so this reader defends itself in two layers:
 *
 *  1. Before mdb_env_open, moco_db_check_file() (formats/dbcheck.c) reads
 *     the two meta pages of data.mdb itself (liblmdb 0.9's layout, spelled
 *     out there) and refuses,
 *     with MOCO_ECORRUPT and a message naming the file, one with a damaged
 *     meta page (flag, magic, version, page size, root pages) or one shorter
 *     than (last page + 1) x page size. This catches every truncation.
 *     Then it walks the B-trees of the meta page LMDB will use (walk_tree:
 *     every page's number, type, bounds and depth, each page once), since
 *     LMDB loops for ever on some damaged pages (see "layer 1b" in dbcheck.c).
 *  2. Every LMDB call and every copy out of the map runs inside a guard
 *     (run_guarded): a thread-local sigsetjmp point, a SIGBUS/SIGSEGV handler
 *     installed once per process, and an LMDB assertion callback. A fault or
 *     an assertion inside the guard jumps back and becomes MOCO_ECORRUPT; the
 *     handle is then marked damaged and refuses further reads. Values are
 *     also checked to lie inside the file before they are copied or handed
 *     to a caller (moco_db_foreach hands out a private copy).
 *
 * Caveats: outside a guard the handler passes the signal on to the handler
 * it replaced (or to the default action), so other faults still crash as
 * they should; a handler installed later for SIGBUS or SIGSEGV is put
 * behind ours by the next guard (one that itself passes faults back to
 * ours gets the default action instead of a loop). Each guard costs two
 * sigaction calls and one pthread_sigmask (two more when the caller had
 * SIGBUS or SIGSEGV blocked, or after a fault: the thread's mask is the
 * caller's again after every guard); inside moco_db_reads_begin/end those
 * are made once for the bracket, and a guard is a sigsetjmp alone. A fault
 * in the middle of an LMDB call leaves that read transaction unusable, hence
 * the damaged mark; memory LMDB allocated inside the interrupted call may
 * leak (once per damaged handle; the calls here are ordered so that the
 * usual faults, in page reads, happen where LMDB holds no allocation). Datasets are written once and never
 * modified, so the file's extent is fixed at open. */
#include "formats/db.h"
#include "formats/dbcheck.h"
#include "formats/errors.h"
#include "formats/json.h"

#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

struct moco_db {
    MDB_env *env;
    MDB_dbi samples, meta;
    MDB_txn *rtxn; /* reset between calls, renewed on use */
    MDB_cursor *cur; /* the cursor in use, if any (here, not in a local,
                      * so that moco_db_destroy closes it after a fault) */
    char *path;
    const uint8_t *map;   /* the mapping of data.mdb */
    uint64_t data_end;    /* bytes of it that hold pages: (last page + 1) x page size */
    uint64_t ino;         /* data.mdb's inode, to find the mapping */
    int damaged;          /* a read faulted: the handle refuses further reads */
    uint8_t *copy;        /* moco_db_foreach's copy of the current value */
    size_t copy_cap;
    moco_db_meta m;
};

/* ---- layer 2: the guard -------------------------------------------------- */
typedef struct {
    sigjmp_buf jb;
    int sig;        /* SIGBUS or SIGSEGV; 0: an LMDB assertion */
    char what[240]; /* the assertion's text */
} db_guard;

static _Thread_local db_guard *volatile cur_guard;
static _Thread_local volatile sig_atomic_t chaining; /* inside a previous handler */
static struct sigaction prev_bus, prev_segv;
static pthread_mutex_t install_mu = PTHREAD_MUTEX_INITIALIZER;

/* A fault inside a guard jumps back to it; any other one goes to the handler
 * that was there before ours, or gets the default action. */
static void on_fault(int sig, siginfo_t *si, void *uc)
{
    db_guard *g = cur_guard;
    if (g) {
        cur_guard = NULL;
        g->sig = sig;
        siglongjmp(g->jb, 1);
    }
    const struct sigaction *p = sig == SIGBUS ? &prev_bus : &prev_segv;
    if (!chaining && (p->sa_flags & SA_SIGINFO)) {
        chaining = 1; /* a previous handler that chains back to us ends here */
        p->sa_sigaction(sig, si, uc);
        chaining = 0;
    } else if (!chaining && p->sa_handler != SIG_DFL && p->sa_handler != SIG_IGN) {
        chaining = 1;
        p->sa_handler(sig);
        chaining = 0;
    } else {
        struct sigaction dfl = {.sa_handler = SIG_DFL};
        sigemptyset(&dfl.sa_mask);
        sigaction(sig, &dfl, NULL);
        raise(sig); /* not blocked (SA_NODEFER): the default action, now */
    }
}

static int is_ours(const struct sigaction *sa) { return (sa->sa_flags & SA_SIGINFO) && sa->sa_sigaction == on_fault; }

/* Make on_fault the handler of sig, keeping the one it replaces in *prev.
 * Checked on every guard, so that a handler installed after ours (a test
 * framework's, say) is chained rather than left to swallow the fault. */
static void install_handler(int sig, struct sigaction *prev)
{
    struct sigaction cur;
    if (sigaction(sig, NULL, &cur) != 0 || is_ours(&cur)) return;
    pthread_mutex_lock(&install_mu);
    if (sigaction(sig, NULL, &cur) == 0 && !is_ours(&cur)) {
        /* SA_NODEFER: the signal is not blocked while the handler runs
         * (run_guarded restores the thread's mask after a jump anyway) */
        struct sigaction sa = {.sa_sigaction = on_fault, .sa_flags = SA_SIGINFO | SA_NODEFER};
        sigemptyset(&sa.sa_mask);
        *prev = cur;
        sigaction(sig, &sa, NULL);
    }
    pthread_mutex_unlock(&install_mu);
}

/* LMDB calls this on a failed assertion, then prints and aborts if it
 * returns: inside a guard, it does not return. */
static void on_assert(MDB_env *env, const char *msg)
{
    (void)env;
    db_guard *g = cur_guard;
    if (!g) return;
    cur_guard = NULL;
    g->sig = 0;
    snprintf(g->what, sizeof g->what, "%s", msg);
    siglongjmp(g->jb, 1);
}

#define GUARD_FAULT 1 /* run_guarded: body faulted, g says how */

/* A guard's set-up: our handler in front for SIGBUS and SIGSEGV, both
 * unblocked in this thread; the thread's mask before in *old. */
static void guard_setup(sigset_t *old)
{
    sigset_t unblock;
    install_handler(SIGBUS, &prev_bus);
    install_handler(SIGSEGV, &prev_segv);
    sigemptyset(&unblock);
    sigaddset(&unblock, SIGBUS);
    sigaddset(&unblock, SIGSEGV);
    pthread_sigmask(SIG_UNBLOCK, &unblock, old);
}

/* The thread's mask as guard_setup found it (a call only where it differs) */
static void guard_restore(const sigset_t *old)
{
    if (sigismember(old, SIGBUS) || sigismember(old, SIGSEGV)) pthread_sigmask(SIG_SETMASK, old, NULL);
}

/* moco_db_reads_begin's nesting depth in this thread, the thread's mask
 * before the outermost one, and that mask with SIGBUS and SIGSEGV
 * unblocked (the one its guards run under) */
static _Thread_local int reads_depth;
static _Thread_local sigset_t reads_before, reads_mask;

void moco_db_reads_begin(void)
{
    if (reads_depth++) return;
    guard_setup(&reads_before);
    reads_mask = reads_before;
    sigdelset(&reads_mask, SIGBUS);
    sigdelset(&reads_mask, SIGSEGV);
}

void moco_db_reads_end(void)
{
    if (reads_depth <= 0 || --reads_depth) return;
    guard_restore(&reads_before);
}

/* Run body(arg) under the guard. Returns body's value, or GUARD_FAULT.
 * The thread's signal mask: SIGBUS and SIGSEGV are unblocked inside (a
 * fault while they are blocked is not delivered to a handler: the kernel
 * kills the process, as it did in threads that block every signal), and
 * the mask is the caller's again on return, after a fault too: the jump
 * out of the handler leaves the mask the handler ran with, which blocks
 * whatever the handler's sa_mask named (ThreadSanitizer's wrapper fills
 * it: every signal stayed blocked, so a second fault in that thread would
 * kill the process). Inside moco_db_reads_begin/end the handler and the
 * unblocking are the bracket's, and after a fault the mask is the
 * bracket's again. */
static int run_guarded(db_guard *g, int (*body)(void *), void *arg)
{
    /* own: not inside a bracket. Neither own nor old changes after sigsetjmp: valid after the jump */
    const int own = !reads_depth;
    sigset_t old;
    if (own) guard_setup(&old);
    if (sigsetjmp(g->jb, 0)) {
        pthread_sigmask(SIG_SETMASK, own ? &old : &reads_mask, NULL); /* the jump left the handler's mask */
        return GUARD_FAULT;
    }
    cur_guard = g;
    int rc = body(arg);
    cur_guard = NULL;
    if (own) guard_restore(&old);
    return rc;
}

/* The message for a fault while doing `doing`: one line, naming the file. */
static int fault_err(const char *dir, const db_guard *g, const char *doing)
{
    if (g->sig == SIGBUS)
        return moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged or truncated (bus error while %s)", dir, doing);
    if (g->sig)
        return moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged (invalid memory access while %s)", dir, doing);
    return moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged (%s, while %s)", dir, g->what, doing);
}

/* The start of the mapping of the file with inode ino that holds p (LMDB
 * does not tell where it mapped data.mdb), from /proc/self/maps; NULL if
 * not found. */
static const uint8_t *find_map(uint64_t ino, const void *p)
{
    FILE *f = fopen("/proc/self/maps", "re");
    char line[4608];
    const uint8_t *base = NULL;
    uintptr_t a = (uintptr_t)p;
    if (!f) return NULL;
    while (!base && fgets(line, sizeof line, f)) {
        unsigned long lo, hi, off, i;
        if (sscanf(line, "%lx-%lx %*s %lx %*s %lu", &lo, &hi, &off, &i) == 4 && a >= lo && a < hi && off == 0 && i == ino)
            base = (const uint8_t *)lo;
    }
    fclose(f);
    return base;
}

/* Does [p, p + n) lie inside the pages of the file? (Always yes when the
 * mapping was not found: the guard is then the only defence.) */
static int in_file(const moco_db *db, const void *p, size_t n)
{
    const uint8_t *b = p;
    if (!db->map) return 1;
    return b >= db->map && n <= db->data_end && (uint64_t)(b - db->map) <= db->data_end - n;
}

void moco_db_meta_clear(moco_db_meta *m)
{
    if (m->class_names)
        for (uint32_t i = 0; i < m->nclasses; i++) free(m->class_names[i]);
    free(m->class_names);
    free(m->class_counts);
    free(m->source);
    free(m->source_format);
    memset(m, 0, sizeof *m);
}

static int put(MDB_txn *t, MDB_dbi d, const char *k, const void *v, size_t n)
{
    MDB_val key = {strlen(k), (void *)k}, val = {n, (void *)v};
    int rc = mdb_put(t, d, &key, &val, 0);
    if (rc) moco_err(rc, "writing metadata '%s': %s", k, mdb_strerror(rc));
    return rc;
}

static int put_u64(MDB_txn *t, MDB_dbi d, const char *k, uint64_t v)
{
    uint8_t b[8];
    moco_put_le64(b, v);
    return put(t, d, k, b, 8);
}

/* 0 if name can go in the class list (newline-separated UTF-8, which
 * moco_db_meta_get reads back), else MOCO_EINVAL naming class i. */
static int check_class_name(uint32_t i, const char *name)
{
    size_t n = strlen(name);
    if (memchr(name, '\n', n)) return moco_err(MOCO_EINVAL, "metadata: class %u's name holds a newline, which the class list cannot hold", i);
    for (size_t k = 0; k < n;) {
        int l = moco_utf8_len((const unsigned char *)name + k, n - k);
        if (!l) return moco_err(MOCO_EINVAL, "metadata: class %u's name is not UTF-8 (byte %zu)", i, k);
        k += (size_t)l;
    }
    return 0;
}

int moco_db_meta_put(MDB_txn *t, MDB_dbi d, const moco_db_meta *m)
{
    int rc;
    size_t nlen = 0;
    for (uint32_t i = 0; i < m->nclasses; i++)
        if ((rc = check_class_name(i, m->class_names[i]))) return rc;
    for (uint32_t i = 0; i < m->nclasses; i++) nlen += strlen(m->class_names[i]) + 1;
    char *names = malloc(nlen + 1);
    uint8_t *counts = malloc((size_t)m->nclasses * 8 + 8);
    if (!names || !counts) {
        free(names);
        free(counts);
        return moco_err(MOCO_ENOMEM, "metadata: out of memory");
    }
    char *p = names;
    for (uint32_t i = 0; i < m->nclasses; i++) {
        size_t l = strlen(m->class_names[i]);
        memcpy(p, m->class_names[i], l);
        p += l;
        *p++ = '\n';
    }
    for (uint32_t i = 0; i < m->nclasses; i++) moco_put_le64(counts + 8 * i, m->class_counts[i]);
    uint8_t enc[8 * MOCO_ENC_COUNT], sz[16];
    for (int i = 0; i < MOCO_ENC_COUNT; i++) moco_put_le64(enc + 8 * i, m->enc_counts[i]);
    moco_put_le32(sz, m->min_w);
    moco_put_le32(sz + 4, m->max_w);
    moco_put_le32(sz + 8, m->min_h);
    moco_put_le32(sz + 12, m->max_h);
    if ((rc = put_u64(t, d, "format_version", MOCO_DB_FORMAT_VERSION)) ||
        (rc = put_u64(t, d, "count", m->count)) ||
        (rc = put(t, d, "classes", names, (size_t)(p - names))) ||
        (rc = put(t, d, "class_counts", counts, (size_t)m->nclasses * 8)) ||
        (rc = put_u64(t, d, "unlabelled", m->unlabelled)) ||
        (rc = put(t, d, "source", m->source ? m->source : "", m->source ? strlen(m->source) : 0)) ||
        (rc = put(t, d, "source_format", m->source_format ? m->source_format : "",
                  m->source_format ? strlen(m->source_format) : 0)) ||
        (rc = put_u64(t, d, "payload_bytes", m->payload_bytes)) ||
        (rc = put(t, d, "encodings", enc, sizeof enc)) ||
        (rc = put(t, d, "size_range", sz, sizeof sz)) ||
        (rc = put_u64(t, d, "skipped", m->skipped)))
        goto out;
    if (m->shuffled) rc = put_u64(t, d, "shuffle_seed", m->shuffle_seed);
out:
    free(names);
    free(counts);
    return rc;
}

/* Fetch meta entry k; missing is MOCO_ECORRUPT unless optional. */
static int get(MDB_txn *t, MDB_dbi d, const char *path, const char *k, MDB_val *v, int optional)
{
    MDB_val key = {strlen(k), (void *)k};
    int rc = mdb_get(t, d, &key, v);
    if (rc == MDB_NOTFOUND && optional) return MDB_NOTFOUND;
    if (rc == MDB_NOTFOUND) return moco_err(MOCO_ECORRUPT, "%s: metadata entry '%s' is missing", path, k);
    if (rc) return moco_err(rc, "%s: reading metadata '%s': %s", path, k, mdb_strerror(rc));
    return 0;
}

static int get_u64(MDB_txn *t, MDB_dbi d, const char *path, const char *k, uint64_t *out)
{
    MDB_val v;
    int rc = get(t, d, path, k, &v, 0);
    if (rc) return rc;
    if (v.mv_size != 8) return moco_err(MOCO_ECORRUPT, "%s: metadata '%s' has %zu bytes, expected 8", path, k, v.mv_size);
    *out = moco_get_le64(v.mv_data);
    return 0;
}

/* A malloc'd NUL-terminated copy of v. */
static int dup_val(const MDB_val *v, const char *path, char **out)
{
    if (!(*out = malloc(v->mv_size + 1))) return moco_err(MOCO_ENOMEM, "%s: out of memory", path);
    memcpy(*out, v->mv_data, v->mv_size);
    (*out)[v->mv_size] = 0;
    return 0;
}

int moco_db_meta_get(MDB_txn *t, MDB_dbi d, const char *path, moco_db_meta *m)
{
    uint64_t ver = 0, seed = 0;
    char *names = NULL;
    MDB_val vsrc, vfmt, vnames, vcounts, venc, vsize, vseed;
    int rc, shuffled;
    memset(m, 0, sizeof *m);
    /* every lookup first, every allocation after: a fault inside LMDB (see
     * the guard above) then leaks nothing */
    if ((rc = get_u64(t, d, path, "format_version", &ver))) return rc;
    if (ver != MOCO_DB_FORMAT_VERSION)
        return moco_err(MOCO_EFORMAT, "%s: dataset format version %llu, this build reads version %d", path,
                        (unsigned long long)ver, MOCO_DB_FORMAT_VERSION);
    m->format_version = (uint32_t)ver;
    if ((rc = get_u64(t, d, path, "count", &m->count)) ||
        (rc = get_u64(t, d, path, "unlabelled", &m->unlabelled)) ||
        (rc = get_u64(t, d, path, "payload_bytes", &m->payload_bytes)) ||
        (rc = get_u64(t, d, path, "skipped", &m->skipped)) ||
        (rc = get(t, d, path, "source", &vsrc, 0)) || (rc = get(t, d, path, "source_format", &vfmt, 0)) ||
        (rc = get(t, d, path, "classes", &vnames, 0)) || (rc = get(t, d, path, "class_counts", &vcounts, 0)) ||
        (rc = get(t, d, path, "encodings", &venc, 0)) || (rc = get(t, d, path, "size_range", &vsize, 0)))
        goto fail;
    rc = get(t, d, path, "shuffle_seed", &vseed, 1);
    if (rc && rc != MDB_NOTFOUND) goto fail;
    shuffled = rc == 0;
    if (shuffled && (rc = get_u64(t, d, path, "shuffle_seed", &seed))) goto fail;
    if ((rc = dup_val(&vsrc, path, &m->source)) || (rc = dup_val(&vfmt, path, &m->source_format)) ||
        (rc = dup_val(&vnames, path, &names)))
        goto fail;
    /* class names: each terminated by '\n'; a NUL inside would cut the list short unseen */
    if (strlen(names) != vnames.mv_size) {
        rc = moco_err(MOCO_ECORRUPT, "%s: metadata 'classes' holds a NUL byte", path);
        goto fail;
    }
    uint32_t n = 0;
    for (char *p = names; *p; p++) n += *p == '\n';
    if (n > MOCO_DB_MAX_CLASSES) {
        rc = moco_err(MOCO_ECORRUPT, "%s: %u classes (limit %d)", path, n, MOCO_DB_MAX_CLASSES);
        goto fail;
    }
    m->class_names = calloc(n ? n : 1, sizeof *m->class_names);
    m->class_counts = calloc(n ? n : 1, sizeof *m->class_counts);
    if (!m->class_names || !m->class_counts) { rc = moco_err(MOCO_ENOMEM, "%s: out of memory", path); goto fail; }
    char *s = names;
    for (uint32_t i = 0; i < n; i++) {
        char *e = strchr(s, '\n');
        *e = 0;
        if (!(m->class_names[i] = strdup(s))) { rc = moco_err(MOCO_ENOMEM, "%s: out of memory", path); goto fail; }
        m->nclasses = i + 1;
        s = e + 1;
    }
    if (*s) { rc = moco_err(MOCO_ECORRUPT, "%s: metadata 'classes' is not newline-terminated", path); goto fail; }
    if (vcounts.mv_size != (size_t)n * 8) {
        rc = moco_err(MOCO_ECORRUPT, "%s: 'class_counts' holds %zu bytes for %u classes", path, vcounts.mv_size, n);
        goto fail;
    }
    /* the counts must add up to count; each step stays at or below it, so no sum wraps around */
    uint64_t total = m->unlabelled;
    int over = total > m->count;
    for (uint32_t i = 0; i < n; i++) {
        uint64_t c = m->class_counts[i] = moco_get_le64((uint8_t *)vcounts.mv_data + 8 * i);
        if (!over && c > m->count - total) over = 1;
        if (!over) total += c;
    }
    if (over || total != m->count) {
        rc = over ? moco_err(MOCO_ECORRUPT, "%s: the class counts add up to more than count (%llu)", path, (unsigned long long)m->count)
                  : moco_err(MOCO_ECORRUPT, "%s: class counts sum to %llu, count is %llu", path, (unsigned long long)total,
                             (unsigned long long)m->count);
        goto fail;
    }
    if (venc.mv_size != 8 * MOCO_ENC_COUNT) { rc = moco_err(MOCO_ECORRUPT, "%s: malformed 'encodings'", path); goto fail; }
    for (int i = 0; i < MOCO_ENC_COUNT; i++) m->enc_counts[i] = moco_get_le64((uint8_t *)venc.mv_data + 8 * i);
    if (vsize.mv_size != 16) { rc = moco_err(MOCO_ECORRUPT, "%s: malformed 'size_range'", path); goto fail; }
    m->min_w = moco_get_le32(vsize.mv_data);
    m->max_w = moco_get_le32((uint8_t *)vsize.mv_data + 4);
    m->min_h = moco_get_le32((uint8_t *)vsize.mv_data + 8);
    m->max_h = moco_get_le32((uint8_t *)vsize.mv_data + 12);
    m->shuffled = shuffled;
    m->shuffle_seed = seed;
    free(names);
    return 0;
fail:
    free(names);
    moco_db_meta_clear(m);
    return rc;
}

/* An LMDB error from reading db: MOCO_ECORRUPT for the codes that mean a
 * damaged file, else MOCO_ELMDB; doing names the operation. */
static int read_err(const moco_db *db, int rc, const char *doing)
{
    if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND || rc == MDB_INVALID)
        return moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged (%s, while %s)", db->path, mdb_strerror(rc), doing);
    return moco_err(MOCO_ELMDB, "%s: %s: %s", db->path, doing, mdb_strerror(rc));
}

/* Every key and value of the meta database inside the file (so that
 * moco_db_meta_get copies nothing from outside it). */
static int check_meta_extent(moco_db *db, MDB_txn *t)
{
    MDB_val k, v;
    MDB_stat st;
    /* mdb_stat first: it reads the database's root with a cursor on the
     * stack, so that a fault there leaks nothing, and mdb_cursor_open (which
     * mallocs the cursor before reading) then reads no page */
    int rc = mdb_stat(t, db->meta, &st), first = 1;
    if (rc == 0) rc = mdb_cursor_open(t, db->meta, &db->cur);
    if (rc) {
        db->cur = NULL;
        return read_err(db, rc, "reading metadata");
    }
    while ((rc = mdb_cursor_get(db->cur, &k, &v, first ? MDB_FIRST : MDB_NEXT)) == 0) {
        first = 0;
        if (!in_file(db, k.mv_data, k.mv_size) || !in_file(db, v.mv_data, v.mv_size)) {
            rc = moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged: a metadata entry lies outside the file", db->path);
            break;
        }
    }
    mdb_cursor_close(db->cur);
    db->cur = NULL;
    if (rc == MDB_NOTFOUND) return 0;
    return rc == MOCO_ECORRUPT ? rc : read_err(db, rc, "reading metadata");
}

/* moco_db_open's LMDB part, run under the guard. */
static int open_body(void *arg)
{
    moco_db *db = arg;
    const char *path = db->path;
    MDB_envinfo info;
    int rc;
    if ((rc = mdb_env_create(&db->env)) || (rc = mdb_env_set_assert(db->env, on_assert)) ||
        (rc = mdb_env_set_maxdbs(db->env, 4)) ||
        (rc = mdb_env_open(db->env, path, MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD, 0644))) {
        return moco_err(rc == ENOENT ? MOCO_ENOTFOUND : rc == MDB_INVALID ? MOCO_ECORRUPT : MOCO_ELMDB,
                        "%s: cannot open dataset: %s", path, mdb_strerror(rc));
    }
    if ((rc = mdb_env_info(db->env, &info))) return moco_err(MOCO_ELMDB, "%s: %s", path, mdb_strerror(rc));
    if (info.me_mapsize < db->data_end) db->data_end = info.me_mapsize;
    /* every transaction lives in db->rtxn, where moco_db_destroy finds it
     * after a fault */
    if ((rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &db->rtxn))) {
        db->rtxn = NULL;
        return read_err(db, rc, "starting a read");
    }
    if ((rc = mdb_dbi_open(db->rtxn, MOCO_DB_SAMPLES, 0, &db->samples)) ||
        (rc = mdb_dbi_open(db->rtxn, MOCO_DB_META, 0, &db->meta))) {
        if (rc == MDB_CORRUPTED || rc == MDB_PAGE_NOTFOUND) return read_err(db, rc, "opening its databases");
        return moco_err(MOCO_ECORRUPT, "%s: not a moco dataset (no '%s' database: %s)", path,
                        db->samples ? MOCO_DB_META : MOCO_DB_SAMPLES, mdb_strerror(rc));
    }
    /* commit, so the database handles outlive this transaction */
    MDB_txn *t = db->rtxn;
    db->rtxn = NULL;
    rc = mdb_txn_commit(t);
    if (rc || (rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &db->rtxn))) {
        db->rtxn = NULL;
        return read_err(db, rc, "starting a read");
    }
    MDB_val key = {14, "format_version"}, v;
    if (mdb_get(db->rtxn, db->meta, &key, &v) == 0) db->map = find_map(db->ino, v.mv_data);
    if ((rc = check_meta_extent(db, db->rtxn)) || (rc = moco_db_meta_get(db->rtxn, db->meta, path, &db->m))) return rc;
    MDB_stat st;
    if ((rc = mdb_stat(db->rtxn, db->samples, &st))) return read_err(db, rc, "counting samples");
    if (st.ms_entries != db->m.count)
        return moco_err(MOCO_ECORRUPT, "%s: metadata says %llu samples, database holds %zu", path,
                        (unsigned long long)db->m.count, st.ms_entries);
    mdb_txn_reset(db->rtxn);
    return 0;
}

int moco_db_open(const char *path, moco_db **out)
{
    int rc;
    db_guard g;
    moco_db *db = calloc(1, sizeof *db);
    *out = NULL;
    if (!db || !(db->path = strdup(path))) { free(db); return moco_err(MOCO_ENOMEM, "%s: out of memory", path); }
    if ((rc = moco_db_check_file(path, &db->data_end, &db->ino))) goto fail;
    rc = run_guarded(&g, open_body, db);
    if (rc == GUARD_FAULT) rc = fault_err(path, &g, "opening it");
    if (rc) goto fail;
    *out = db;
    return 0;
fail:
    moco_db_destroy(&db);
    return rc;
}

void moco_db_destroy(moco_db **pdb)
{
    moco_db *db = *pdb;
    if (!db) return;
    if (db->cur) mdb_cursor_close(db->cur);
    if (db->rtxn) mdb_txn_abort(db->rtxn);
    if (db->env) mdb_env_close(db->env);
    moco_db_meta_clear(&db->m);
    free(db->copy);
    free(db->path);
    free(db);
    *pdb = NULL;
}

const moco_db_meta *moco_db_get_meta(const moco_db *db) { return &db->m; }
const char *moco_db_path(const moco_db *db) { return db->path; }

static int damaged_err(const moco_db *db)
{
    return moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged (an earlier read failed; not reading it again)", db->path);
}

typedef struct {
    moco_db *db;
    uint64_t index;
    uint8_t **buf;
    size_t *cap, *len;
} get_args;

/* moco_db_get's LMDB part, run under the guard. */
static int get_body(void *arg)
{
    get_args *a = arg;
    moco_db *db = a->db;
    uint8_t k[MOCO_KEY_SIZE];
    MDB_val key = {MOCO_KEY_SIZE, k}, val;
    int rc = mdb_txn_renew(db->rtxn);
    if (rc) return read_err(db, rc, "starting a read");
    moco_key_encode(a->index, k);
    rc = mdb_get(db->rtxn, db->samples, &key, &val);
    if (rc == MDB_NOTFOUND)
        return moco_err(MOCO_ENOTFOUND, "%s: no record %llu", db->path, (unsigned long long)a->index);
    if (rc) {
        char doing[64];
        snprintf(doing, sizeof doing, "reading record %llu", (unsigned long long)a->index);
        return read_err(db, rc, doing);
    }
    if (!in_file(db, val.mv_data, val.mv_size))
        return moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged: record %llu lies outside the file", db->path,
                        (unsigned long long)a->index);
    if (*a->cap < val.mv_size || !*a->buf) { /* an empty record too gets a buffer: never memcpy into NULL */
        uint8_t *nb = realloc(*a->buf, val.mv_size ? val.mv_size : 1);
        if (!nb)
            return moco_err(MOCO_ENOMEM, "%s: record %llu: out of memory", db->path, (unsigned long long)a->index);
        *a->buf = nb;
        *a->cap = val.mv_size;
    }
    memcpy(*a->buf, val.mv_data, val.mv_size);
    *a->len = val.mv_size;
    return 0;
}

int moco_db_get(moco_db *db, uint64_t index, uint8_t **buf, size_t *cap, size_t *len)
{
    if (db->damaged) return damaged_err(db);
    db_guard g;
    get_args a = {db, index, buf, cap, len};
    int rc = run_guarded(&g, get_body, &a);
    mdb_txn_reset(db->rtxn);
    if (rc == GUARD_FAULT) {
        char doing[64];
        snprintf(doing, sizeof doing, "reading record %llu", (unsigned long long)index);
        db->damaged = 1;
        rc = fault_err(db->path, &g, doing);
    }
    return rc;
}

typedef struct {
    moco_db *db;
    MDB_cursor_op op;
    uint64_t index; /* of the entry read */
    size_t len;     /* its value, copied into db->copy */
} step_args;

/* One cursor step of moco_db_foreach, run under the guard: the next entry,
 * checked and copied. Returns 0, MDB_NOTFOUND at the end, or an error. */
static int step_body(void *arg)
{
    step_args *a = arg;
    moco_db *db = a->db;
    MDB_val key, val;
    int rc;
    if (!db->cur) {
        MDB_stat st;
        if ((rc = mdb_txn_renew(db->rtxn))) return read_err(db, rc, "starting a read");
        /* mdb_stat first: see check_meta_extent */
        if ((rc = mdb_stat(db->rtxn, db->samples, &st)) || (rc = mdb_cursor_open(db->rtxn, db->samples, &db->cur))) {
            db->cur = NULL;
            return read_err(db, rc, "opening a cursor");
        }
    }
    rc = mdb_cursor_get(db->cur, &key, &val, a->op);
    if (rc == MDB_NOTFOUND) return rc;
    if (rc) return read_err(db, rc, "walking the samples");
    if (key.mv_size != MOCO_KEY_SIZE || !in_file(db, key.mv_data, key.mv_size))
        return moco_err(MOCO_ECORRUPT, "%s: key of %zu bytes in '%s'", db->path, key.mv_size, MOCO_DB_SAMPLES);
    a->index = moco_key_decode(key.mv_data);
    if (!in_file(db, val.mv_data, val.mv_size))
        return moco_err(MOCO_ECORRUPT, "%s/data.mdb: damaged: record %llu lies outside the file", db->path,
                        (unsigned long long)a->index);
    if (db->copy_cap < val.mv_size || !db->copy) {
        uint8_t *nb = realloc(db->copy, val.mv_size ? val.mv_size : 1);
        if (!nb) return moco_err(MOCO_ENOMEM, "%s: record %llu: out of memory", db->path, (unsigned long long)a->index);
        db->copy = nb;
        db->copy_cap = val.mv_size;
    }
    memcpy(db->copy, val.mv_data, val.mv_size);
    a->len = val.mv_size;
    return 0;
}

int moco_db_foreach(moco_db *db, int (*fn)(void *, uint64_t, const uint8_t *, size_t), void *ctx)
{
    if (db->damaged) return damaged_err(db);
    step_args a = {db, MDB_FIRST, 0, 0};
    db_guard g;
    int rc, u = 0;
    while ((rc = run_guarded(&g, step_body, &a)) == 0) {
        a.op = MDB_NEXT;
        /* the callback runs outside the guard, on our copy */
        if ((u = fn(ctx, a.index, db->copy, a.len))) break;
    }
    if (rc == GUARD_FAULT) {
        db->damaged = 1;
        rc = fault_err(db->path, &g, "walking the samples");
    }
    if (rc == MDB_NOTFOUND) rc = 0;
    if (db->cur) mdb_cursor_close(db->cur);
    db->cur = NULL;
    mdb_txn_reset(db->rtxn);
    return u ? u : rc;
}

/* moco_db_probe's LMDB part, run under the guard: the environment opens and
 * its meta database holds an 8-byte format_version. */
static int probe_body(void *arg)
{
    moco_db *db = arg;
    MDB_val key = {14, "format_version"}, v;
    int rc;
    if ((rc = mdb_env_create(&db->env)) || (rc = mdb_env_set_assert(db->env, on_assert)) ||
        (rc = mdb_env_set_maxdbs(db->env, 4)) ||
        (rc = mdb_env_open(db->env, db->path, MDB_RDONLY | MDB_NOTLS | MDB_NORDAHEAD, 0644)))
        return moco_err(MOCO_ECORRUPT, "%s: not an LMDB environment: %s", db->path, mdb_strerror(rc));
    if ((rc = mdb_txn_begin(db->env, NULL, MDB_RDONLY, &db->rtxn))) { /* destroy aborts it */
        db->rtxn = NULL;
        return read_err(db, rc, "starting a read");
    }
    if ((rc = mdb_dbi_open(db->rtxn, MOCO_DB_META, 0, &db->meta)) || (rc = mdb_get(db->rtxn, db->meta, &key, &v)) ||
        v.mv_size != 8)
        return moco_err(MOCO_ECORRUPT, "%s: not a moco dataset (no format_version in a '%s' database)", db->path,
                        MOCO_DB_META);
    return 0;
}

int moco_db_probe(const char *path)
{
    int rc;
    db_guard g;
    moco_db *db = calloc(1, sizeof *db);
    if (!db || !(db->path = strdup(path))) { free(db); return moco_err(MOCO_ENOMEM, "%s: out of memory", path); }
    if (!(rc = moco_db_check_file(path, &db->data_end, &db->ino))) {
        rc = run_guarded(&g, probe_body, db);
        if (rc == GUARD_FAULT) rc = fault_err(path, &g, "opening it");
    }
    moco_db_destroy(&db);
    return rc;
}
