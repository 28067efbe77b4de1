/* replace.c: the checks of replace.h, on lstat, stat and realpath; the
 * durable write of a temporary file and its rename. */
#include "formats/replace.h"

#include <errno.h>
#include <fcntl.h>
#include <unistd.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#include "formats/errors.h"

static const char *kind(mode_t m)
{
    return S_ISDIR(m) ? "a directory" : S_ISCHR(m) ? "a character device" : S_ISBLK(m) ? "a block device"
           : S_ISFIFO(m) ? "a FIFO" : S_ISSOCK(m) ? "a socket" : "not a regular file";
}

int moco_replace_target(const char *path, char *target, size_t cap)
{
    struct stat st;
    if (lstat(path, &st) != 0) {
        if (errno != ENOENT) return moco_err(MOCO_EIO, "cannot examine %s: %s", path, strerror(errno));
        if (strlen(path) >= cap) return moco_err(MOCO_EINVAL, "%s: the path is too long", path);
        snprintf(target, cap, "%s", path); /* a new file */
        return 0;
    }
    if (S_ISLNK(st.st_mode)) {
        if (stat(path, &st) != 0)
            return moco_err(MOCO_EIO, "%s is a symbolic link to nothing (%s); not replacing it", path, strerror(errno));
        if (!S_ISREG(st.st_mode))
            return moco_err(MOCO_EIO, "%s is a symbolic link to %s, not a regular file; not replacing it", path, kind(st.st_mode));
        char *r = realpath(path, NULL);
        if (!r) return moco_err(MOCO_EIO, "cannot resolve %s: %s", path, strerror(errno));
        size_t n = strlen(r);
        if (n >= cap) {
            free(r);
            return moco_err(MOCO_EINVAL, "%s: the resolved path is too long", path);
        }
        memcpy(target, r, n + 1);
        free(r);
        return 0;
    }
    if (!S_ISREG(st.st_mode)) return moco_err(MOCO_EIO, "%s is %s, not a regular file; not replacing it", path, kind(st.st_mode));
    if (strlen(path) >= cap) return moco_err(MOCO_EINVAL, "%s: the path is too long", path);
    snprintf(target, cap, "%s", path);
    return 0;
}

FILE *moco_fopen_regular(const char *path)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK), e;
    if (fd < 0) {
        e = errno;
        moco_err(MOCO_EIO, "cannot open %s: %s", path, strerror(e));
        errno = e;
        return NULL;
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        e = errno;
        close(fd);
        moco_err(MOCO_EIO, "cannot examine %s: %s", path, strerror(e));
        errno = e;
        return NULL;
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        moco_err(MOCO_EIO, "%s is %s, not a regular file", path, kind(st.st_mode));
        errno = EINVAL;
        return NULL;
    }
    int fl = fcntl(fd, F_GETFL);
    FILE *f = fl < 0 || fcntl(fd, F_SETFL, fl & ~O_NONBLOCK) < 0 ? NULL : fdopen(fd, "r");
    if (!f) {
        e = errno;
        close(fd);
        moco_err(MOCO_EIO, "cannot open %s: %s", path, strerror(e));
        errno = e;
    }
    return f;
}

int moco_err_output(const char *verb, const char *path, int e)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    size_t l = strlen(dir);
    while (l > 1 && dir[l - 1] == '/') dir[--l] = 0; /* "out/": its directory is that of "out" */
    char *sl = strrchr(dir, '/');
    struct stat st;
    if (e == ENOENT && sl) {
        if (sl == dir) sl[1] = 0;
        else *sl = 0;
        if (stat(dir, &st) != 0) return moco_err(MOCO_EIO, "cannot %s %s: directory %s does not exist", verb, path, dir);
        if (!S_ISDIR(st.st_mode)) return moco_err(MOCO_EIO, "cannot %s %s: %s is not a directory", verb, path, dir);
    }
    return moco_err(MOCO_EIO, "cannot %s %s: %s", verb, path, strerror(e));
}

FILE *moco_create_tmp(const char *tmp, const char *name)
{
    (void)unlink(tmp); /* a stale one; what cannot be removed (a directory) fails the open below */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644), e;
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        e = errno;
        if (fd >= 0) close(fd), unlink(tmp);
        moco_err_output("write", name, e);
        errno = e;
    }
    return f;
}

int moco_fsync_dir(const char *path)
{
    char dir[4096];
    snprintf(dir, sizeof dir, "%s", path);
    char *sl = strrchr(dir, '/');
    if (sl == dir) sl[1] = 0; /* "/name": the root */
    else if (sl) *sl = 0;
    int fd = open(sl ? dir : ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC), e;
    if (fd < 0) return -1;
    int rc = fsync(fd);
    e = errno;
    close(fd);
    errno = e;
    return rc;
}

int moco_finish_tmp(FILE *f, const char *tmp, const char *name)
{
    errno = 0;
    int ok = !ferror(f) && fflush(f) == 0 && fsync(fileno(f)) == 0;
    int e = ok ? 0 : errno ? errno : EIO;
    /* test hook: the fsync of a temporary file whose name ends so fails as on a full disk (tests/cli_eval.sh) */
    const char *fail = getenv("MOCO_TEST_FAIL_FSYNC");
    size_t lt = strlen(tmp), lf = fail ? strlen(fail) : 0;
    if (ok && lf && lt >= lf && !strcmp(tmp + lt - lf, fail)) ok = 0, e = ENOSPC;
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (ok) return 0;
    unlink(tmp);
    return moco_err(MOCO_EIO, "cannot write %s: %s; it is left as it was", name, strerror(e));
}

int moco_rename_tmp(const char *tmp, const char *target, const char *name)
{
    if (rename(tmp, target) != 0) {
        int e = errno;
        unlink(tmp);
        return moco_err(MOCO_EIO, "cannot write %s: %s; it is left as it was", name, strerror(e));
    }
    if (moco_fsync_dir(target) != 0) return moco_err(MOCO_EIO, "cannot make %s durable (fsync of its directory): %s", name, strerror(errno));
    return 0;
}

int moco_commit_tmp(FILE *f, const char *tmp, const char *target, const char *name)
{
    int rc = moco_finish_tmp(f, tmp, name);
    return rc ? rc : moco_rename_tmp(tmp, target, name);
}

int moco_write_replace(const char *path, const void *data, size_t len)
{
    char target[4096], tmp[4200];
    int rc = moco_replace_target(path, target, sizeof target);
    if (rc) return rc;
    snprintf(tmp, sizeof tmp, "%s.%ld.tmp", target, (long)getpid());
    FILE *f = moco_create_tmp(tmp, path);
    if (!f) return MOCO_EIO;
    if (len && fwrite(data, 1, len, f) != len) {
        int e = errno ? errno : EIO;
        fclose(f);
        unlink(tmp);
        return moco_err(MOCO_EIO, "cannot write %s: %s; it is left as it was", path, strerror(e));
    }
    return moco_commit_tmp(f, tmp, target, path);
}
