/* rundir.c: the run directory's lock of rundir.h, on flock(2); a
 * checkpoint flag's run directory; the check that a new run's directory is
 * empty; the removal of one a failed run made and left empty. */
#include "formats/rundir.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/errors.h"

int moco_lock_dir(const char *dir, int *fd)
{
    char path[4200], pid[32] = "";
    *fd = -1;
    if ((size_t)snprintf(path, sizeof path, "%s/%s", dir, MOCO_RUNDIR_LOCK) >= sizeof path)
        return moco_err(MOCO_EINVAL, "%s: the path is too long", dir);
    int f = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW | O_NONBLOCK, 0644);
    if (f < 0) return moco_err(MOCO_EIO, "cannot create %s: %s", path, strerror(errno));
    if (flock(f, LOCK_EX | LOCK_NB)) {
        int e = errno;
        ssize_t n = pread(f, pid, sizeof pid - 1, 0);
        close(f);
        if (e != EWOULDBLOCK) return moco_err(MOCO_EIO, "cannot lock %s: %s", path, strerror(e));
        pid[n > 0 ? n : 0] = 0;
        pid[strcspn(pid, "\n")] = 0;
        return moco_err(MOCO_EEXIST, "%s is in use by another run (pid %s): wait for it to end, stop it, or give another "
                        "directory", dir, pid[0] ? pid : "unknown");
    }
    int l = snprintf(pid, sizeof pid, "%d\n", (int)getpid());
    if (ftruncate(f, 0) || pwrite(f, pid, (size_t)l, 0) != l) { /* the pid is for the message only: the lock stands */
    }
    *fd = f;
    return 0;
}

int moco_rundir_ckpt(const char *flag, const char *path, char *buf, size_t cap)
{
    struct stat st;
    if (stat(path, &st) || !S_ISDIR(st.st_mode)) {
        if (strlen(path) >= cap) return moco_err(MOCO_EINVAL, "%s %s: the path is too long", flag, path);
        snprintf(buf, cap, "%s", path);
        return 0;
    }
    if ((size_t)snprintf(buf, cap, "%s/%s", path, MOCO_RUNDIR_LAST) >= cap)
        return moco_err(MOCO_EINVAL, "%s %s: the path is too long", flag, path);
    if (stat(buf, &st))
        return moco_err(MOCO_ENOTFOUND, "%s %s: a directory without %s (%s): not a run directory, or a run stopped "
                        "before its first checkpoint", flag, path, MOCO_RUNDIR_LAST, strerror(errno));
    return 0;
}

int moco_rundir_check_new(const char *dir, const char *flag, int logs_ok)
{
    DIR *d = opendir(dir);
    if (!d) return errno == ENOENT ? 0 : moco_err(MOCO_EIO, "%s %s: %s", flag, dir, strerror(errno));
    struct dirent *de;
    char held[256] = "";
    int has_last = 0;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        has_last |= !strcmp(n, MOCO_RUNDIR_LAST);
        if (!strcmp(n, ".") || !strcmp(n, "..") || !strcmp(n, MOCO_RUNDIR_LOCK) ||
            (logs_ok && (!strncmp(n, "loader.", 7) || !strncmp(n, "workers.", 8))))
            continue;
        if (!held[0]) snprintf(held, sizeof held, "%s", n);
    }
    closedir(d);
    if (!held[0]) return 0;
    if (has_last)
        return moco_err(MOCO_EEXIST, "%s %s is not empty (it holds %s): give --resume %s to continue its run, --overwrite to "
                        "start afresh there, or another %s", flag, dir, held, dir, flag);
    return moco_err(MOCO_EEXIST, "%s %s is not empty (it holds %s) and holds no %s to resume from (a run stopped before "
                    "its first checkpoint): give --overwrite to start afresh there, or another %s", flag, dir, held,
                    MOCO_RUNDIR_LAST, flag);
}

int moco_rundir_resumes_in(const char *dir, const char *resume)
{
    struct stat sd, sr;
    char parent[4200];
    if (stat(dir, &sd) || stat(resume, &sr)) return 0;
    if (!S_ISDIR(sr.st_mode)) { /* a checkpoint: its directory */
        const char *slash = strrchr(resume, '/');
        if (!slash) snprintf(parent, sizeof parent, ".");
        else if ((size_t)(slash - resume) >= sizeof parent) return 0;
        else snprintf(parent, sizeof parent, "%.*s", slash == resume ? 1 : (int)(slash - resume), resume);
        if (stat(parent, &sr)) return 0;
    }
    return sd.st_dev == sr.st_dev && sd.st_ino == sr.st_ino;
}

int moco_rundir_drop_empty(const char *dir, const char *const *spare, int *lock_fd, int keep_dir)
{
    char p[4400];
    struct stat st;
    struct dirent *de;
    DIR *d = opendir(dir);
    if (!d) return 0;
    int other = 0;
    while (!other && (de = readdir(d))) {
        if (!strcmp(de->d_name, ".") || !strcmp(de->d_name, "..") || !strcmp(de->d_name, MOCO_RUNDIR_LOCK)) continue;
        snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
        int spared = 0;
        for (int i = 0; spare && spare[i]; i++) spared |= !strcmp(de->d_name, spare[i]);
        other = lstat(p, &st) || !S_ISREG(st.st_mode) || (st.st_size && !spared);
    }
    if (other) { closedir(d); return 0; }
    rewinddir(d);
    while ((de = readdir(d)))
        if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, MOCO_RUNDIR_LOCK)) {
            snprintf(p, sizeof p, "%s/%s", dir, de->d_name);
            unlink(p);
        }
    closedir(d);
    if (keep_dir) return 1;
    snprintf(p, sizeof p, "%s/%s", dir, MOCO_RUNDIR_LOCK);
    unlink(p);
    if (*lock_fd >= 0) close(*lock_fd);
    *lock_fd = -1;
    return rmdir(dir) == 0;
}
