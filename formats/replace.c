/* replace.c: the checks of replace.h, on lstat, stat and realpath. */
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

FILE *moco_create_tmp(const char *tmp)
{
    (void)unlink(tmp); /* a stale one; what cannot be removed (a directory) fails the open below */
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0644), e;
    FILE *f = fd < 0 ? NULL : fdopen(fd, "wb");
    if (!f) {
        e = errno;
        if (fd >= 0) close(fd), unlink(tmp);
        moco_err(MOCO_EIO, "cannot create %s: %s", tmp, strerror(e));
        errno = e;
    }
    return f;
}
