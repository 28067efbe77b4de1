/* rundir.c: the run directory's lock of rundir.h, on flock(2). */
#include "formats/rundir.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/file.h>
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
