/* train_out.c: what a training run may find in its --out and resume from:
 * a new run's --out is empty (or --overwrite clears its run files); a
 * resume from another directory's checkpoint never goes into a directory
 * holding another run; metrics.jsonl is rewound to the checkpoint's step,
 * and takes the reason of a run that failed; a --out the run made and left
 * empty goes again. Split from train.c. */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "formats/errors.h"
#include "formats/jsonw.h"
#include "formats/replace.h"
#include "formats/rundir.h"
#include "trainer/engine/ckpt.h"
#include "trainer/train.h"

/* --out without --resume: refused when it holds anything but the logs moco
 * run writes there (loader.*, workers.*), with the advice of
 * formats/rundir.h; with --overwrite, the old run's metrics.jsonl and
 * checkpoint_*.safetensors are removed. */
int train_check_out_dir(const char *out, int overwrite)
{
    if (!overwrite) return moco_rundir_check_new(out, "--out", 1);
    DIR *d = opendir(out);
    if (!d) return errno == ENOENT ? 0 : moco_err(MOCO_EIO, "--out %s: %s", out, strerror(errno));
    struct dirent *de;
    char path[4400];
    int rc = 0;
    while ((de = readdir(d))) {
        const char *n = de->d_name;
        size_t l = strlen(n);
        int ours = !strcmp(n, "metrics.jsonl") || (!strncmp(n, "checkpoint_", 11) && l > 12 && !strcmp(n + l - 12, ".safetensors"));
        if (!ours) continue;
        snprintf(path, sizeof path, "%s/%s", out, n);
        if (unlink(path) && errno != ENOENT) { rc = moco_err(MOCO_EIO, "cannot remove %s: %s", path, strerror(errno)); break; }
    }
    closedir(d);
    return rc;
}

/* On resume: metrics.jsonl keeps the records up to the checkpoint's step
 * (those after it are trained again and would be duplicates; a torn last
 * line goes too), rewritten atomically when something is dropped. */
int train_metrics_rewind(const char *path, int64_t step, int *dropped)
{
    *dropped = 0;
    char target[4200], tmp[4400], *line = NULL;
    int rc = moco_replace_target(path, target, sizeof target); /* a FIFO there would block the read */
    if (rc) return rc;
    FILE *in = fopen(target, "r");
    if (!in) return errno == ENOENT ? 0 : moco_err(MOCO_EIO, "cannot read %s: %s", path, strerror(errno));
    size_t cap = 0;
    ssize_t len;
    snprintf(tmp, sizeof tmp, "%s.tmp", target);
    FILE *out = moco_create_tmp(tmp, path);
    if (!out) { fclose(in); return MOCO_EIO; }
    while ((len = getline(&line, &cap, in)) > 0) {
        const char *p = strstr(line, "\"step\":");
        if (line[len - 1] != '\n' || (p && strtoll(p + 7, NULL, 10) > step)) { (*dropped)++; continue; }
        fwrite(line, 1, (size_t)len, out);
    }
    free(line);
    fclose(in);
    int ok = fflush(out) == 0 && fsync(fileno(out)) == 0;
    ok = fclose(out) == 0 && ok;
    if (!*dropped) { unlink(tmp); return 0; }
    if (!ok || rename(tmp, target)) { unlink(tmp); return moco_err(MOCO_EIO, "cannot rewrite %s: %s", path, strerror(errno)); }
    return 0;
}

/* a run's identity in its checkpoint's config: "seed S, ARCH width W dim D[ mlp], N samples" */
static void run_identity(const moco_ckpt_config *k, char *buf, size_t cap)
{
    char seed[32] = "no seed";
    if (k->has_seed) snprintf(seed, sizeof seed, "seed %" PRIu64, k->seed);
    snprintf(buf, cap, "%s, %s width %d dim %d%s, %" PRId64 " samples", seed, k->arch[0] ? k->arch : "?", k->width, k->dim,
             k->mlp > 0 ? " mlp" : "", k->count);
}

int train_resume_into(const char *dir, const char *resume, const char *flag)
{
    char last[4200], a[160], b[160];
    struct stat st;
    moco_ckpt_config kr, kd;
    if (moco_rundir_resumes_in(dir, resume)) return 0;
    snprintf(last, sizeof last, "%s/%s", dir, MOCO_RUNDIR_LAST);
    if (stat(last, &st)) return 0; /* no checkpoint of a run of its own there */
    int rc = ckpt_read_config(resume, &kr);
    if (rc) return rc;
    if (ckpt_read_config(last, &kd) || !kd.has_config) return 0; /* unreadable: nothing to tell apart (it is replaced) */
    run_identity(&kr, a, sizeof a);
    run_identity(&kd, b, sizeof b);
    if (!strcmp(a, b)) return 0; /* a copy of its own run's checkpoint (an earlier one, say) */
    return moco_err(MOCO_EEXIST, "%s %s holds another run (%s: %s; --resume %s: %s): a run resumed from elsewhere goes on in a "
                    "new %s (or give --resume %s to continue the run there)", flag, dir, MOCO_RUNDIR_LAST, b, resume, a, flag, dir);
}

/* A run directory this process made (mkdir) for a run that failed before
 * its first checkpoint: removed when it holds nothing but the lock (and
 * the lock closed), so that no empty --out is left behind. */
void train_drop_made_out(const char *out, int *lock_fd)
{
    DIR *d = opendir(out);
    if (!d) return;
    struct dirent *de;
    int other = 0;
    while ((de = readdir(d)))
        other |= strcmp(de->d_name, ".") && strcmp(de->d_name, "..") && strcmp(de->d_name, MOCO_RUNDIR_LOCK);
    closedir(d);
    if (other) return;
    char lock[4200];
    snprintf(lock, sizeof lock, "%s/%s", out, MOCO_RUNDIR_LOCK);
    unlink(lock);
    if (*lock_fd >= 0) close(*lock_fd);
    *lock_fd = -1;
    rmdir(out);
}

void train_note_failure(const char *out, int64_t epoch, const char *msg)
{
    char path[4200], saved[1024], last = '\n';
    struct stat st;
    snprintf(saved, sizeof saved, "%s", moco_errmsg()); /* msg may be it: a failed write below would replace it */
    msg = msg == moco_errmsg() ? saved : msg;
    snprintf(path, sizeof path, "%s/metrics.jsonl", out);
    int fd = open(path, O_RDWR | O_APPEND | O_CLOEXEC | O_NONBLOCK); /* never created here; a FIFO not waited on */
    if (fd < 0) return;
    FILE *f = NULL;
    if (fstat(fd, &st) || !S_ISREG(st.st_mode) || (st.st_size > 0 && pread(fd, &last, 1, st.st_size - 1) != 1) || last != '\n' ||
        !(f = fdopen(fd, "a"))) {
        close(fd);
        return;
    }
    moco_jw w;
    moco_jw_begin(&w);
    moco_jw_str(&w, "type", "failed");
    if (epoch >= 0) moco_jw_i64(&w, "epoch", epoch);
    moco_jw_str(&w, "error", msg);
    moco_jw_line(&w, f);
    fclose(f);
    moco_err(0, "%s", saved);
}
