/* endpoints.c: bind a socket to a list of endpoints, and check an ipc
 * path before anything is bound there (endpoints.h). */
#include "formats/endpoints.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>
#include <zmq.h>

#include "formats/errors.h"

/* Split list into at most MOCO_ENDPOINTS_MAX endpoints in buf. */
static int split(const char *list, char *buf, size_t n, char **ep, int *nep)
{
    *nep = 0;
    if (!list || !*list || strlen(list) >= n) return moco_err(MOCO_EINVAL, "endpoint list '%s' is empty or too long", list ? list : "");
    strcpy(buf, list);
    for (char *save = NULL, *t = strtok_r(buf, ",", &save); t; t = strtok_r(NULL, ",", &save)) {
        if (*nep == MOCO_ENDPOINTS_MAX) return moco_err(MOCO_EINVAL, "more than %d endpoints in '%s'", MOCO_ENDPOINTS_MAX, list);
        ep[(*nep)++] = t;
    }
    if (!*nep) return moco_err(MOCO_EINVAL, "no endpoint in '%s'", list);
    return 0;
}

int moco_bind_endpoints(moco_sec *sec, void *sock, const char *list)
{
    char buf[4096], *ep[MOCO_ENDPOINTS_MAX];
    int nep, rc = split(list, buf, sizeof buf, ep, &nep);
    if (rc) return rc;
    for (int i = 0; i < nep; i++) /* every endpoint checked before any is bound: none in the clear by mistake */
        if ((rc = moco_sec_check_endpoint(sec, ep[i]))) return rc;
    int secured = 0;
    for (int pass = 0; pass < 2; pass++) /* the clear ones, then the tcp ones with CURVE */
        for (int i = 0; i < nep; i++) {
            int tcp = !strncmp(ep[i], "tcp://", 6);
            if (tcp != pass) continue;
            if (tcp && !secured++ && (rc = moco_sec_bind(sec, sock, ep[i]))) return rc;
            if (zmq_bind(sock, ep[i])) return moco_err(MOCO_EZMQ, "cannot bind %s: %s", ep[i], zmq_strerror(errno));
        }
    return 0;
}

void moco_run_sockdir_cleanup(void)
{
    const char *d = getenv("MOCO_RUN_SOCKDIR");
    if (!d || strncmp(d, "/tmp/moco-run-", 14)) return; /* only what moco run made */
    static const char *const names[] = {"work", "ctl", "pairs"};
    char p[4200];
    for (int i = 0; i < 3; i++) {
        snprintf(p, sizeof p, "%s/%s", d, names[i]);
        unlink(p);
    }
    rmdir(d);
}

int moco_endpoint_pick(const char *list, const char *scheme, char *out, size_t n)
{
    char buf[4096], *ep[MOCO_ENDPOINTS_MAX];
    int nep, rc = split(list, buf, sizeof buf, ep, &nep);
    if (rc) return rc;
    size_t l = strlen(scheme);
    for (int i = 0; i < nep; i++)
        if (!strncmp(ep[i], scheme, l) && !strncmp(ep[i] + l, "://", 3) && strlen(ep[i]) < n) {
            strcpy(out, ep[i]);
            return 0;
        }
    return MOCO_ENOTFOUND;
}

int moco_ipc_check(const char *flag, const char *endpoint)
{
    if (strncmp(endpoint, "ipc://", 6) || endpoint[6] == '@') return 0;
    const char *path = endpoint + 6, *slash = strrchr(path, '/');
    if (strlen(path) >= sizeof ((struct sockaddr_un *)0)->sun_path)
        return moco_err(MOCO_EINVAL, "%s %s: the path is %zu bytes, more than a socket's %zu: give a shorter one", flag, endpoint,
                        strlen(path), sizeof ((struct sockaddr_un *)0)->sun_path - 1);
    char dir[sizeof ((struct sockaddr_un *)0)->sun_path];
    if (!*path || (slash && !slash[1])) return moco_err(MOCO_EINVAL, "%s %s: no socket file named (ipc://DIR/NAME)", flag, endpoint);
    if (slash) snprintf(dir, sizeof dir, "%.*s", slash == path ? 1 : (int)(slash - path), path); /* "/s": the root */
    else snprintf(dir, sizeof dir, ".");
    struct stat st;
    if (stat(dir, &st))
        return moco_err(errno == ENOENT ? MOCO_ENOTFOUND : MOCO_EINVAL, "%s %s: its directory %s: %s%s", flag, endpoint, dir,
                        strerror(errno), errno == ENOENT ? " (create it first: mkdir -p, mode 0700 keeps other users out)" : "");
    if (!S_ISDIR(st.st_mode)) return moco_err(MOCO_EINVAL, "%s %s: %s is not a directory", flag, endpoint, dir);
    if (access(dir, W_OK | X_OK))
        return moco_err(MOCO_EINVAL, "%s %s: cannot create the socket in %s: %s", flag, endpoint, dir, strerror(errno));
    return 0;
}
