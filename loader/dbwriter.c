/* dbwriter.c: atomic, self-growing LMDB dataset writer (see dbwriter.h).
 * It deletes only what it can prove is a dataset: data.mdb and lock.mdb in
 * its own temporary directory, in a stale one, or in an OUT that --force
 * replaces after checking it (replaceable()); never any other file. */
#include "loader/dbwriter.h"
#include "formats/errors.h"
#include "formats/replace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

struct dbw {
    MDB_env *env;
    MDB_dbi samples, meta;
    char *out, *tmp;
    size_t mapsize;
    int force;
    unsigned grows;
};

/* Remove an LMDB directory: its data.mdb and lock.mdb, then the directory,
 * which fails (and is left, with anything else in it) unless they were
 * all it held. */
static int remove_dir(const char *dir)
{
    char p[4200];
    snprintf(p, sizeof p, "%s/data.mdb", dir);
    unlink(p);
    snprintf(p, sizeof p, "%s/lock.mdb", dir);
    unlink(p);
    return rmdir(dir) == 0 || errno == ENOENT ? 0 : -1;
}

/* May --force replace out? Yes (0) when it does not exist, is an empty
 * directory, or is a moco dataset: a directory holding data.mdb and
 * lock.mdb, plain files, and nothing else, whose data.mdb opens as a dataset
 * (moco_db_probe). Anything else: MOCO_EEXIST, naming what is in the way. */
static int replaceable(const char *out)
{
    struct stat st;
    char p[4200], other[256] = "";
    int has_data = 0, has_lock = 0;
    if (lstat(out, &st) != 0) return errno == ENOENT ? 0 : moco_err(MOCO_EIO, "%s: %s", out, strerror(errno));
    if (!S_ISDIR(st.st_mode))
        return moco_err(MOCO_EEXIST, "%s exists and is not a moco dataset (not a directory); --force replaces only a "
                                     "dataset made by moco mkdb: remove it yourself", out);
    DIR *d = opendir(out);
    if (!d) return moco_err(MOCO_EIO, "%s: %s", out, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", out, e->d_name);
        int data = !strcmp(e->d_name, "data.mdb"), lock = !strcmp(e->d_name, "lock.mdb");
        if ((data || lock) && lstat(p, &st) == 0 && S_ISREG(st.st_mode)) has_data |= data, has_lock |= lock;
        else if (!*other) snprintf(other, sizeof other, "%s", e->d_name);
    }
    closedir(d);
    if (*other)
        return moco_err(MOCO_EEXIST, "%s is not a moco dataset (it holds %s); --force replaces only a dataset made by "
                                     "moco mkdb: not touching it", out, other);
    if (!has_data && !has_lock) return 0; /* empty: nothing to lose */
    if (!has_data || !has_lock)
        return moco_err(MOCO_EEXIST, "%s is not a moco dataset (no %s); --force replaces only a dataset made by "
                                     "moco mkdb: not touching it", out, has_data ? "lock.mdb" : "data.mdb");
    if (moco_db_probe(out) != 0) {
        char why[1024];
        snprintf(why, sizeof why, "%s", moco_errmsg());
        return moco_err(MOCO_EEXIST, "%s is not a moco dataset (%s); --force replaces only a dataset made by moco "
                                     "mkdb: not touching it", out, why);
    }
    return 0;
}

/* Remove OUT.tmp-PID directories whose process no longer exists. */
static void remove_stale(const char *out)
{
    char dir[4096], prefix[4200];
    snprintf(dir, sizeof dir, "%s", out);
    char *slash = strrchr(dir, '/');
    const char *base = slash ? slash + 1 : dir;
    snprintf(prefix, sizeof prefix, "%s.tmp-", base);
    if (slash) *slash = 0;
    DIR *d = opendir(slash ? (*dir ? dir : "/") : ".");
    if (!d) return;
    struct dirent *e;
    size_t pl = strlen(prefix);
    while ((e = readdir(d))) {
        if (strncmp(e->d_name, prefix, pl)) continue;
        char *end;
        long pid = strtol(e->d_name + pl, &end, 10);
        if (*end || pid <= 0 || (kill((pid_t)pid, 0) == 0 || errno != ESRCH)) continue;
        char p[8192];
        snprintf(p, sizeof p, "%s/%s", slash ? (*dir ? dir : "") : ".", e->d_name);
        if (remove_dir(p) == 0) fprintf(stderr, "moco mkdb: removed %s, left by an interrupted run\n", p);
    }
    closedir(d);
}

static int lmdb_fail(dbw *w, int rc, const char *what)
{
    /* LMDB reports a short write (a full disk) as EIO: say which it was */
    struct statvfs fs;
    if ((rc == EIO || rc == ENOSPC) && !statvfs(w->tmp, &fs) && (uint64_t)fs.f_bavail * fs.f_frsize < ((uint64_t)64 << 20))
        return moco_err(MOCO_ELMDB, "%s: %s: %s: the device is full (%llu KiB free)", w->tmp, what, mdb_strerror(rc),
                        (unsigned long long)((uint64_t)fs.f_bavail * fs.f_frsize >> 10));
    return moco_err(MOCO_ELMDB, "%s: %s: %s", w->tmp, what, mdb_strerror(rc));
}

int dbw_open(const char *out_arg, int force, size_t initial_map, dbw **pw)
{
    struct stat st;
    *pw = NULL;
    /* OUT without trailing slashes: "db/" would put the temporary directory inside it (db/.tmp-PID) */
    char out[4096];
    size_t ol = strlen(out_arg);
    if (ol >= sizeof out) return moco_err(MOCO_EINVAL, "%s: path too long", out_arg);
    memcpy(out, out_arg, ol + 1);
    while (ol > 1 && out[ol - 1] == '/') out[--ol] = 0;
    if (!force && stat(out, &st) == 0) return moco_err(MOCO_EEXIST, "%s already exists (remove it, or use --force)", out);
    int rc0 = force ? replaceable(out) : 0;
    if (rc0) return rc0;
    remove_stale(out);
    dbw *w = calloc(1, sizeof *w);
    if (!w) return moco_err(MOCO_ENOMEM, "out of memory");
    w->out = strdup(out);
    w->tmp = malloc(strlen(out) + 32);
    w->force = force;
    w->mapsize = initial_map ? initial_map : (size_t)64 << 20;
    if (!w->out || !w->tmp) { dbw_abort(&w); return moco_err(MOCO_ENOMEM, "out of memory"); }
    sprintf(w->tmp, "%s.tmp-%ld", out, (long)getpid());
    remove_dir(w->tmp);
    if (mkdir(w->tmp, 0755) != 0) {
        int rc = moco_err_output("create", out, errno); /* the user's path, not OUT.tmp-PID; a missing directory named */
        free(w->tmp); w->tmp = NULL; /* not ours to delete */
        dbw_abort(&w);
        return rc;
    }
    MDB_txn *t;
    int rc;
    if ((rc = mdb_env_create(&w->env))) { rc = lmdb_fail(w, rc, "create"); goto fail; }
    if ((rc = mdb_env_set_maxdbs(w->env, 4)) || (rc = mdb_env_set_mapsize(w->env, w->mapsize)) ||
        (rc = mdb_env_open(w->env, w->tmp, MDB_NOSYNC | MDB_NOMETASYNC, 0644))) {
        rc = lmdb_fail(w, rc, "open");
        goto fail;
    }
    if ((rc = mdb_txn_begin(w->env, NULL, 0, &t))) { rc = lmdb_fail(w, rc, "begin"); goto fail; }
    if ((rc = mdb_dbi_open(t, MOCO_DB_SAMPLES, MDB_CREATE, &w->samples)) ||
        (rc = mdb_dbi_open(t, MOCO_DB_META, MDB_CREATE, &w->meta)) || (rc = mdb_txn_commit(t))) {
        if (rc != MDB_SUCCESS) mdb_txn_abort(t);
        rc = lmdb_fail(w, rc, "create databases");
        goto fail;
    }
    *pw = w;
    return 0;
fail:
    dbw_abort(&w);
    return rc;
}

static int grow(dbw *w)
{
    size_t ns = w->mapsize * 2;
    int rc = mdb_env_set_mapsize(w->env, ns);
    if (rc) return lmdb_fail(w, rc, "growing the map");
    w->mapsize = ns;
    w->grows++;
    return 0;
}

int dbw_put_batch(dbw *w, uint64_t first, uint8_t *const *recs, const size_t *lens, size_t n)
{
    for (;;) {
        MDB_txn *t;
        int rc = mdb_txn_begin(w->env, NULL, 0, &t);
        if (rc) return lmdb_fail(w, rc, "begin");
        for (size_t i = 0; i < n && !rc; i++) {
            uint8_t k[MOCO_KEY_SIZE];
            moco_key_encode(first + i, k);
            MDB_val key = {MOCO_KEY_SIZE, k}, val = {lens[i], recs[i]};
            rc = mdb_put(t, w->samples, &key, &val, MDB_APPEND);
        }
        if (rc) mdb_txn_abort(t);
        else rc = mdb_txn_commit(t);
        if (rc == MDB_MAP_FULL) {
            if ((rc = grow(w))) return rc;
            continue;
        }
        if (rc) return lmdb_fail(w, rc, "writing records");
        return 0;
    }
}

int dbw_finish(dbw **pw, const moco_db_meta *m)
{
    dbw *w = *pw;
    int rc;
    for (;;) {
        MDB_txn *t;
        if ((rc = mdb_txn_begin(w->env, NULL, 0, &t))) { rc = lmdb_fail(w, rc, "begin"); goto fail; }
        rc = moco_db_meta_put(t, w->meta, m);
        if (rc) mdb_txn_abort(t);
        else rc = mdb_txn_commit(t);
        if (rc == MDB_MAP_FULL) {
            if ((rc = grow(w))) goto fail;
            continue;
        }
        if (rc >= MOCO_EIO && rc < MOCO_ELAST) goto fail; /* ours (a class name refused): its message stands */
        if (rc) { rc = lmdb_fail(w, rc, "writing metadata"); goto fail; }
        break;
    }
    if ((rc = mdb_env_sync(w->env, 1))) { rc = lmdb_fail(w, rc, "sync"); goto fail; }
    mdb_env_close(w->env);
    w->env = NULL;
    char old[4200] = "";
    struct stat st;
    if (lstat(w->out, &st) == 0) {
        if (!w->force) { rc = moco_err(MOCO_EEXIST, "%s appeared while converting; not replacing it", w->out); goto fail; }
        if ((rc = replaceable(w->out))) goto fail; /* again: it may have changed while converting */
        snprintf(old, sizeof old, "%s.old-%ld", w->out, (long)getpid());
        if (rename(w->out, old) != 0) { rc = moco_err(MOCO_EIO, "cannot move %s aside: %s", w->out, strerror(errno)); goto fail; }
    }
    if (rename(w->tmp, w->out) != 0) {
        rc = moco_err(MOCO_EIO, "cannot rename %s to %s: %s", w->tmp, w->out, strerror(errno));
        if (*old) rename(old, w->out);
        goto fail;
    }
    if (*old && remove_dir(old) != 0) fprintf(stderr, "moco mkdb: could not remove the old %s\n", old);
    /* make the rename durable */
    char parent[4096];
    snprintf(parent, sizeof parent, "%s", w->out);
    char *sl = strrchr(parent, '/');
    if (sl) *sl = 0;
    int fd = open(sl ? (*parent ? parent : "/") : ".", O_RDONLY | O_DIRECTORY);
    if (fd >= 0) { fsync(fd); close(fd); }
    free(w->tmp);
    w->tmp = NULL;
    dbw_abort(pw);
    return 0;
fail:
    dbw_abort(pw);
    return rc;
}

void dbw_abort(dbw **pw)
{
    dbw *w = *pw;
    if (!w) return;
    if (w->env) mdb_env_close(w->env);
    if (w->tmp) remove_dir(w->tmp);
    free(w->tmp);
    free(w->out);
    free(w);
    *pw = NULL;
}

unsigned dbw_grow_count(const dbw *w) { return w->grows; }
