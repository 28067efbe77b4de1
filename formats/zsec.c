/* zsec.c: CURVE on every tcp socket, our own ZAP handler, handshake counting
 * and `moco keygen` (the contract is in zsec.h).
 *
 * One thread per moco_sec owns three kinds of sockets in the caller's
 * context: a REP bound to inproc://zeromq.zap.01 (RFC 27: libzmq asks it about
 * every CURVE client of every bound socket of the context), a PAIR joined to
 * the callers (control: register a monitor, stop), and one PAIR per socket
 * monitor that moco_sec_bind started (handshake failures are counted there,
 * so each failed handshake counts once whatever its cause) or that
 * moco_sec_connect started (a server's refusal of our key is counted). */
#include "formats/zsec.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <zmq.h>

#include "formats/errors.h"
#include "formats/jsonw.h"

#define KEY_FILE_MAX (64 * 1024) /* a certificate is < 1 KiB; refuse anything huge */
#define ALLOW_MAX 4096           /* certificates in allowed/ */
#define MON_MAX 1024             /* monitored sockets alive at once */
#define ZAP_FRAMES_MAX 16
#define ZAP_FRAME_MAX 1024
#define LOG_BURST 20 /* event lines written before the limit, */
#define LOG_EVERY 10 /* then at most one per LOG_EVERY s (a flood of connections wrote MBs) */
#define FAIL_EVENTS (ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL | ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL | \
                     ZMQ_EVENT_HANDSHAKE_FAILED_AUTH)

typedef moco_sec_cert cert;

struct moco_sec {
    void *zctx;
    int keyed, insecure;
    char who[64], *dir;
    FILE *log;
    uint8_t server_pub[32], server_sec[32], client_pub[32], client_sec[32];
    uint8_t (*allowed)[32];
    size_t nallowed;
    pthread_t thread;
    int running;
    void *ctl;          /* the callers' end of the control pair (under mu) */
    pthread_mutex_t mu;
    unsigned nmon;      /* monitors started, for unique names */
    char ctl_ep[64];
    _Atomic uint64_t rejected, refused, dropped;
    _Atomic uint64_t closed_early; /* connecting sockets: connections closed while no handshake had succeeded */
    _Atomic int handshaken;        /* connecting sockets: a handshake succeeded */
    /* handler thread only */
    void *mons[MON_MAX];
    unsigned char mon_client[MON_MAX]; /* 1: the monitor of a connecting socket */
    int nmons;
    time_t warn_at;
    unsigned warn_burst, warn_dropped;
    time_t log_at;        /* when the last event line was written */
    unsigned log_lines;   /* event lines written */
    uint64_t log_skipped; /* event lines left out since then */
};

/* ---- helpers ---- */

/* A peer's bytes (n of them) for a stderr message: the body of their JSON
 * string (escaped, without the quotes), so that no control byte reaches the
 * terminal. */
static const char *printable(const char *s, size_t n, char *out, size_t cap)
{
    moco_json_quote(s, n, out, cap);
    size_t l = strlen(out);
    if (l >= 2) memmove(out, out + 1, l - 2), out[l - 2] = 0;
    return out;
}

/* Whether the next event line may be written: the first LOG_BURST, then at
 * most one per LOG_EVERY s (like warn(): a stranger retries every 100 ms, a
 * port scan connects as fast as it can); the others are counted, for the
 * next line's "suppressed". */
static int log_ok(moco_sec *s)
{
    if (!s->log) return 0;
    if (s->log_lines >= LOG_BURST && time(NULL) - s->log_at < LOG_EVERY) {
        s->log_skipped++;
        return 0;
    }
    return 1;
}

/* An event line of the log (formats/jsonw): log_ok, log_begin, the fields,
 * log_end. event: auth_rejected, handshake_dropped or auth_summary. */
static void log_begin(const moco_sec *s, moco_jw *w, const char *event)
{
    moco_jw_begin(w);
    moco_jw_str(w, "event", event);
    moco_jw_str(w, "who", s->who);
    moco_jw_i64(w, "t", (int64_t)time(NULL));
}

static void log_end(moco_sec *s, moco_jw *w)
{
    if (s->log_skipped) moco_jw_u64(w, "suppressed", s->log_skipped); /* lines left out before this one */
    moco_jw_line(w, s->log); /* one write and a flush per line */
    s->log_lines++, s->log_at = time(NULL), s->log_skipped = 0;
}

/* Lines left out and LOG_EVERY s since the last one written: one line with
 * their count and the totals (the handler thread's poll wakes up for it). */
static void log_summary(moco_sec *s)
{
    if (!s->log_skipped || time(NULL) - s->log_at < LOG_EVERY) return;
    moco_jw w;
    log_begin(s, &w, "auth_summary");
    moco_jw_u64(&w, "rejected", atomic_load(&s->rejected));
    moco_jw_u64(&w, "dropped", atomic_load(&s->dropped));
    log_end(s, &w);
}

/* A ZAP request refused: the peer's address (its bytes, escaped), the reason,
 * the client's key (NULL: none). */
static void log_auth(moco_sec *s, const char *peer, size_t peer_len, const char *reason, const char *key)
{
    if (!log_ok(s)) return;
    moco_jw w;
    log_begin(s, &w, "auth_rejected");
    moco_jw_strn(&w, "peer", peer, peer_len);
    moco_jw_str(&w, "kind", "auth");
    moco_jw_str(&w, "reason", reason);
    if (key) moco_jw_str(&w, "key", key);
    log_end(s, &w);
}

/* A one-line stderr warning: the first 5, then at most one per 10 s (a
 * misconfigured peer retries every 100 ms). */
static void warn(moco_sec *s, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void warn(moco_sec *s, const char *fmt, ...)
{
    time_t now = time(NULL);
    if (s->warn_burst >= 5 && now - s->warn_at < 10) {
        s->warn_dropped++;
        return;
    }
    s->warn_burst++;
    s->warn_at = now;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    if (s->warn_dropped) fprintf(stderr, "%s: %s (and %u more rejections since the last warning)\n", s->who, msg, s->warn_dropped);
    else fprintf(stderr, "%s: %s\n", s->who, msg);
    s->warn_dropped = 0;
}

static int z85_key(const char *v, size_t n, uint8_t out[32])
{
    static const char z85[] = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ.-:+=^!/*?&<>()[]{}@%$#";
    char buf[41];
    if (n != 40) return -1;
    for (size_t i = 0; i < n; i++)
        if (!v[i] || !strchr(z85, v[i])) return -1;
    memcpy(buf, v, 40);
    buf[40] = 0;
    return zmq_z85_decode(out, buf) ? 0 : -1;
}

/* ---- certificates (ZPL text) ---- */

/* The curve section's public-key and secret-key of a ZPL certificate (any
 * bytes in, a precise complaint out). */
static int parse_cert(const char *path, const char *b, size_t n, int need_secret, cert *c)
{
    int in_curve = 0, have_pub = 0, lineno = 0;
    memset(c, 0, sizeof *c);
    if (memchr(b, 0, n)) return moco_err(MOCO_ECORRUPT, "%s: not a certificate (holds a NUL byte)", path);
    for (size_t ls = 0, next; ls < n; ls = next) {
        size_t e = ls;
        while (e < n && b[e] != '\n') e++;
        next = e + 1;
        lineno++;
        size_t end = e > ls && b[e - 1] == '\r' ? e - 1 : e, p = ls;
        while (p < end && (b[p] == ' ' || b[p] == '\t')) p++;
        if (p == end || b[p] == '#') continue;
        size_t q = p;
        while (q < end && b[q] != ' ' && b[q] != '\t' && b[q] != '=') q++;
        if (p == ls) { /* depth 0: a section name (or a root-level name = value) */
            in_curve = q - p == 5 && !memcmp(b + p, "curve", 5);
            continue;
        }
        int is_pub = q - p == 10 && !memcmp(b + p, "public-key", 10);
        int is_sec = q - p == 10 && !memcmp(b + p, "secret-key", 10);
        if (!in_curve || (!is_pub && !is_sec)) continue;
        const char *what = is_pub ? "public-key" : "secret-key";
        while (q < end && (b[q] == ' ' || b[q] == '\t')) q++;
        if (q == end || b[q] != '=') return moco_err(MOCO_ECORRUPT, "%s: line %d: no '=' after %s", path, lineno, what);
        for (q++; q < end && (b[q] == ' ' || b[q] == '\t');) q++;
        size_t vs = q, ve;
        if (q < end && (b[q] == '"' || b[q] == '\'')) {
            char qc = b[q];
            for (vs = ++q; q < end && b[q] != qc;) q++;
            if (q == end) return moco_err(MOCO_ECORRUPT, "%s: line %d: unterminated quote in the %s", path, lineno, what);
            ve = q++;
        } else {
            while (q < end && b[q] != ' ' && b[q] != '\t') q++; /* '#' is a Z85 character */
            ve = q;
        }
        while (q < end && (b[q] == ' ' || b[q] == '\t')) q++;
        if (q < end && b[q] != '#') return moco_err(MOCO_ECORRUPT, "%s: line %d: characters after the %s", path, lineno, what);
        if (is_pub ? have_pub : c->has_sec) return moco_err(MOCO_ECORRUPT, "%s: line %d: a second %s", path, lineno, what);
        if (z85_key(b + vs, ve - vs, is_pub ? c->pub : c->sec))
            return moco_err(MOCO_ECORRUPT, "%s: line %d: %s is not a 40-character Z85 key", path, lineno, what);
        *(is_pub ? &have_pub : &c->has_sec) = 1;
    }
    if (!have_pub) return moco_err(MOCO_ECORRUPT, "%s: no public-key in a curve section (not a ZeroMQ certificate)", path);
    if (need_secret && !c->has_sec)
        return moco_err(MOCO_ECORRUPT, "%s: no secret-key (a public certificate where a *_secret file is needed)", path);
    if (c->has_sec) {
        char pz[41], sz[41], dz[41];
        zmq_z85_encode(pz, c->pub, 32);
        zmq_z85_encode(sz, c->sec, 32);
        int ok = zmq_curve_public(dz, sz) == 0 && !strcmp(dz, pz);
        explicit_bzero(sz, sizeof sz);
        if (!ok) return moco_err(MOCO_ECORRUPT, "%s: its public-key does not belong to its secret-key", path);
    }
    return 0;
}

/* 0 if path (st) belongs to this user or root; else MOCO_EIO: whoever owns a
 * key file or directory can swap the keys or the allow list (OpenSSH's
 * StrictModes refuses such files too). */
static int check_owner(const char *path, const struct stat *st)
{
    if (st->st_uid == geteuid() || st->st_uid == 0) return 0;
    return moco_err(MOCO_EIO, "%s is owned by another user (uid %u), who could swap the keys: only this user (uid %u) or root may own it (chown %u %s)",
                    path, (unsigned)st->st_uid, (unsigned)geteuid(), (unsigned)geteuid(), path);
}

/* Read and parse one certificate file: a regular file of at most 64 KiB,
 * owned by this user or root, mode 0600 or stricter. */
int moco_sec_load_cert(const char *path, int need_secret, moco_sec_cert *c)
{
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
    if (fd < 0) return moco_err(MOCO_EIO, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    int rc = 0;
    char *buf = NULL;
    size_t n = 0;
    if (fstat(fd, &st)) rc = moco_err(MOCO_EIO, "cannot stat %s: %s", path, strerror(errno));
    else if (!S_ISREG(st.st_mode)) rc = moco_err(MOCO_ECORRUPT, "%s is not a regular file", path);
    else if (st.st_uid != geteuid() && st.st_uid != 0) rc = check_owner(path, &st);
    else if (st.st_mode & 077)
        rc = moco_err(MOCO_EIO, "%s is open to group or others (mode %04o): chmod 600 %s", path,
                      (unsigned)(st.st_mode & 07777), path);
    else if (st.st_size > KEY_FILE_MAX)
        rc = moco_err(MOCO_ECORRUPT, "%s: %lld bytes, not a certificate (at most %d)", path, (long long)st.st_size, KEY_FILE_MAX);
    else if (!(buf = malloc(KEY_FILE_MAX + 1))) rc = moco_err(MOCO_ENOMEM, "%s: out of memory", path);
    while (!rc) { /* read to the end (the file may change under us: cap again) */
        ssize_t r = read(fd, buf + n, KEY_FILE_MAX + 1 - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) rc = moco_err(MOCO_EIO, "cannot read %s: %s", path, strerror(errno));
        else if (r == 0) break;
        else if ((n += (size_t)r) > KEY_FILE_MAX) rc = moco_err(MOCO_ECORRUPT, "%s: over %d bytes, not a certificate", path, KEY_FILE_MAX);
    }
    close(fd);
    if (!rc) rc = parse_cert(path, buf, n, need_secret, c);
    if (buf) explicit_bzero(buf, n), free(buf);
    return rc;
}

static int load_dir(moco_sec *s, const char *dir)
{
    char path[4200];
    struct stat st;
    cert c;
    int rc;
    if (strlen(dir) > 4000) return moco_err(MOCO_EINVAL, "key directory path too long");
    if (stat(dir, &st)) return moco_err(MOCO_EIO, "key directory %s: %s (make one with moco keygen)", dir, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return moco_err(MOCO_EIO, "key directory %s is not a directory", dir);
    if ((rc = check_owner(dir, &st))) return rc;
    if (st.st_mode & 022) return moco_err(MOCO_EIO, "%s is writable by group or others: chmod 700 %s", dir, dir);
    snprintf(path, sizeof path, "%s/server.key_secret", dir);
    if ((rc = moco_sec_load_cert(path, 1, &c))) return rc;
    memcpy(s->server_pub, c.pub, 32), memcpy(s->server_sec, c.sec, 32);
    snprintf(path, sizeof path, "%s/client.key_secret", dir);
    if ((rc = moco_sec_load_cert(path, 1, &c))) return rc;
    memcpy(s->client_pub, c.pub, 32), memcpy(s->client_sec, c.sec, 32);
    snprintf(path, sizeof path, "%s/server.key", dir);
    if ((rc = moco_sec_load_cert(path, 0, &c))) return rc;
    if (memcmp(c.pub, s->server_pub, 32))
        return moco_err(MOCO_ECORRUPT, "%s does not match %s/server.key_secret (keys of two deployments?)", path, dir);
    explicit_bzero(&c, sizeof c);

    snprintf(path, sizeof path, "%s/allowed", dir);
    if (stat(path, &st)) return moco_err(MOCO_EIO, "allow list %s: %s", path, strerror(errno));
    if (!S_ISDIR(st.st_mode)) return moco_err(MOCO_EIO, "allow list %s is not a directory", path);
    if ((rc = check_owner(path, &st))) return rc;
    if (st.st_mode & 022) return moco_err(MOCO_EIO, "%s is writable by group or others: chmod 700 %s", path, path);
    DIR *d = opendir(path);
    if (!d) return moco_err(MOCO_EIO, "cannot open %s: %s", path, strerror(errno));
    if (!(s->allowed = malloc(ALLOW_MAX * sizeof *s->allowed))) rc = moco_err(MOCO_ENOMEM, "out of memory");
    for (struct dirent *de; !rc && (de = readdir(d));) {
        if (de->d_name[0] == '.') continue;
        if (s->nallowed == ALLOW_MAX) rc = moco_err(MOCO_EINVAL, "%s/allowed: more than %d certificates", dir, ALLOW_MAX);
        snprintf(path, sizeof path, "%s/allowed/%s", dir, de->d_name);
        if (!rc && !(rc = moco_sec_load_cert(path, 0, &c))) memcpy(s->allowed[s->nallowed++], c.pub, 32);
    }
    closedir(d);
    explicit_bzero(&c, sizeof c);
    return rc;
}

/* ---- the handler thread ---- */

static int send_str(void *sock, const char *str, int more)
{
    return zmq_send(sock, str, strlen(str), more ? ZMQ_SNDMORE : 0) < 0 ? -1 : 0;
}

static int allowed(const moco_sec *s, const uint8_t key[32])
{
    for (size_t i = 0; i < s->nallowed; i++)
        if (!memcmp(s->allowed[i], key, 32)) return 1;
    return 0;
}

/* Answer one ZAP request (RFC 27) of nf frames: version, request id, domain,
 * address, identity, mechanism, credentials. bad: too many or too big frames. */
static void zap_answer(moco_sec *s, void *zap, zmq_msg_t *f, int nf, int bad)
{
#define FR(i) ((const char *)zmq_msg_data(&f[i]))
#define FN(i) zmq_msg_size(&f[i])
#define IS(i, lit) (FN(i) == sizeof lit - 1 && !memcmp(FR(i), lit, sizeof lit - 1))
    const char *code = "500", *text = "malformed ZAP request";
    char user[41] = "", kz[41] = "", why[64], ppeer[300], pmech[48];
    /* the peer's address: its bytes as they came (escaped when written) */
    const char *peer = nf >= 4 && !bad ? FR(3) : "?";
    size_t peer_len = nf >= 4 && !bad ? FN(3) : 1;
    if (bad || nf < 6 || !IS(0, "1.0") || FN(1) > 255) {
        log_auth(s, peer, peer_len, "malformed ZAP request", NULL);
    } else if (!IS(2, "moco")) {
        code = "400", text = "unknown ZAP domain";
        log_auth(s, peer, peer_len, "unknown ZAP domain (a CURVE socket not set up by moco_sec_bind)", NULL);
    } else if (IS(5, "CURVE") && (nf != 7 || FN(6) != 32)) {
        log_auth(s, peer, peer_len, "malformed ZAP request (CURVE credentials)", NULL);
    } else if (!IS(5, "CURVE")) {
        code = "400", text = "CURVE only";
        int ml = (int)(FN(5) < 20 ? FN(5) : 20);
        snprintf(why, sizeof why, "mechanism %.*s not allowed", ml, FR(5)); /* escaped in the line */
        log_auth(s, peer, peer_len, why, NULL);
        warn(s, "rejected %s: mechanism %s (only CURVE is allowed)", printable(peer, peer_len, ppeer, sizeof ppeer),
             printable(FR(5), (size_t)ml, pmech, sizeof pmech));
    } else {
        zmq_z85_encode(kz, (const uint8_t *)FR(6), 32);
        if (allowed(s, (const uint8_t *)FR(6))) {
            code = "200", text = "OK";
            memcpy(user, kz, sizeof user);
        } else {
            code = "400", text = "client key not allowed";
            log_auth(s, peer, peer_len, "client key not allowed", kz);
            warn(s, "rejected %s: its key %s is not in %s/allowed/ (copy that host's client.key there)",
                 printable(peer, peer_len, ppeer, sizeof ppeer), kz, s->dir);
        }
    }
    /* reply: version, request id (echoed), status code, status text, user id, metadata */
    int echo = nf >= 2 && FN(1) <= 255;
    if (send_str(zap, "1.0", 1) == 0 && zmq_send(zap, echo ? FR(1) : "", echo ? FN(1) : 0, ZMQ_SNDMORE) >= 0 &&
        send_str(zap, code, 1) == 0 && send_str(zap, text, 1) == 0 && send_str(zap, user, 1) == 0)
        send_str(zap, "", 0);
#undef FR
#undef FN
#undef IS
}

/* Receive one ZAP request and answer it: every request gets exactly one
 * reply (REP), however malformed. */
static void handle_zap(moco_sec *s, void *zap)
{
    zmq_msg_t f[ZAP_FRAMES_MAX], spare;
    int nf = 0, more = 1, bad = 0;
    while (more) {
        zmq_msg_t *m = nf < ZAP_FRAMES_MAX ? &f[nf] : &spare;
        zmq_msg_init(m);
        if (zmq_msg_recv(m, zap, 0) < 0) {
            zmq_msg_close(m);
            break; /* the context is ending: no reply possible */
        }
        more = zmq_msg_more(m);
        if (zmq_msg_size(m) > ZAP_FRAME_MAX) bad = 1;
        if (m == &spare) bad = 1, zmq_msg_close(m);
        else nf++;
    }
    if (!more) zap_answer(s, zap, f, nf, bad);
    for (int i = 0; i < nf; i++) zmq_msg_close(&f[i]);
}

static const char *protocol_detail(uint32_t v)
{
    switch (v) {
    case ZMQ_PROTOCOL_ERROR_ZMTP_MECHANISM_MISMATCH: return "mechanism mismatch (a client without CURVE keys?)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_CRYPTOGRAPHIC: return "cryptographic error (a client with the wrong server.key?)";
    case ZMQ_PROTOCOL_ERROR_ZMTP_KEY_EXCHANGE: return "key exchange failed";
    default: return v >> 28 == 2 ? "ZAP protocol error" : "ZMTP protocol error";
    }
}

/* One monitor event: frame 1 = u16 event + u32 value, frame 2 = endpoint.
 * client: the monitor of a connecting socket, where only a server's
 * refusal of our key counts (moco_sec_refused). Returns 1 when the monitor
 * stopped (its socket closed or re-monitored). */
static int handle_mon(moco_sec *s, void *mon, int client)
{
    uint8_t head[8];
    char ep[256] = "", pep[1600];
    int nf = 0, hn = -1, en = 0, more = 1;
    while (more) {
        zmq_msg_t m;
        zmq_msg_init(&m);
        if (zmq_msg_recv(&m, mon, 0) < 0) { zmq_msg_close(&m); return 0; }
        more = zmq_msg_more(&m);
        size_t n = zmq_msg_size(&m);
        if (nf == 0 && n == 6) memcpy(head, zmq_msg_data(&m), 6), hn = 6;
        if (nf == 1) memcpy(ep, zmq_msg_data(&m), en = (int)(n < sizeof ep ? n : sizeof ep - 1));
        zmq_msg_close(&m);
        nf++;
    }
    if (hn != 6 || nf != 2) return 0; /* not a libzmq 4.x event: ignore */
    uint16_t ev;
    uint32_t val;
    memcpy(&ev, head, 2), memcpy(&val, head + 2, 4);
    if (ev == ZMQ_EVENT_MONITOR_STOPPED) return 1;
    if (client) {
        if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) atomic_fetch_add(&s->refused, 1);
        else if (ev == ZMQ_EVENT_HANDSHAKE_SUCCEEDED) atomic_store(&s->handshaken, 1);
        else if (ev == ZMQ_EVENT_DISCONNECTED && !atomic_load(&s->handshaken)) atomic_fetch_add(&s->closed_early, 1);
        return 0;
    }
    if (!(ev & FAIL_EVENTS)) return 0;
    moco_jw w;
    char code[16], why[160];
    if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_NO_DETAIL && (val == EPIPE || val == ECONNRESET || val == EAGAIN)) {
        /* the peer hung up, or stayed silent past ZMQ_HANDSHAKE_IVL (libzmq says
         * EAGAIN for that too), before the handshake said anything: a port scan,
         * a health check, a client that saw a mismatch first. Nothing
         * was refused: counted apart, no stderr warning, rate-limited lines. */
        uint64_t dropped = atomic_fetch_add(&s->dropped, 1) + 1;
        if (!log_ok(s)) return 0;
        snprintf(why, sizeof why, "%s before the handshake ended: %s",
                 val == EAGAIN ? "closed, or silent past the handshake interval," : "closed", strerror((int)val));
        log_begin(s, &w, "handshake_dropped");
        moco_jw_strn(&w, "endpoint", ep, (size_t)en);
        moco_jw_u64(&w, "errno", val);
        moco_jw_str(&w, "reason", why);
        moco_jw_u64(&w, "dropped", dropped);
        log_end(s, &w);
        return 0;
    }
    uint64_t total = atomic_fetch_add(&s->rejected, 1) + 1;
    if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_AUTH) return 0; /* the ZAP handler logged it, with the peer and key */
    printable(ep, (size_t)en, pep, sizeof pep);
    if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) warn(s, "rejected a connection to %s: %s", pep, protocol_detail(val));
    else warn(s, "handshake failed on %s: %s", pep, strerror((int)val));
    if (!log_ok(s)) return 0;
    log_begin(s, &w, "auth_rejected");
    moco_jw_strn(&w, "endpoint", ep, (size_t)en);
    if (ev == ZMQ_EVENT_HANDSHAKE_FAILED_PROTOCOL) {
        snprintf(code, sizeof code, "0x%08x", val);
        moco_jw_str(&w, "kind", "protocol");
        moco_jw_str(&w, "code", code);
        moco_jw_str(&w, "reason", protocol_detail(val));
    } else {
        snprintf(why, sizeof why, "handshake failed: %s", strerror((int)val));
        moco_jw_str(&w, "kind", "no_detail");
        moco_jw_u64(&w, "errno", val);
        moco_jw_str(&w, "reason", why);
    }
    moco_jw_u64(&w, "rejected", total);
    log_end(s, &w);
    return 0;
}

/* A control request: "M<endpoint>" joins a new monitor of a bound socket,
 * "C<endpoint>" of a connecting one; "S" stops. */
static int handle_ctl(moco_sec *s, void *ctl)
{
    char req[128];
    int n = zmq_recv(ctl, req, sizeof req - 1, 0);
    if (n < 0) return errno == ETERM ? -1 : 0;
    req[n < (int)sizeof req - 1 ? n : (int)sizeof req - 1] = 0;
    if (req[0] == 'S') return -1;
    if (req[0] != 'M' && req[0] != 'C') return 0;
    void *m = s->nmons < MON_MAX ? zmq_socket(s->zctx, ZMQ_PAIR) : NULL;
    int linger = 0;
    if (m && (zmq_setsockopt(m, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(m, req + 1))) zmq_close(m), m = NULL;
    if (m) s->mon_client[s->nmons] = req[0] == 'C', s->mons[s->nmons++] = m;
    send_str(ctl, m ? "OK" : s->nmons >= MON_MAX ? "Etoo many monitored sockets" : "Ecannot join the socket monitor", 0);
    return 0;
}

static void *sec_thread(void *arg)
{
    moco_sec *s = arg;
    int linger = 0;
    void *ctl = zmq_socket(s->zctx, ZMQ_PAIR), *zap = zmq_socket(s->zctx, ZMQ_REP);
    if (!ctl || zmq_setsockopt(ctl, ZMQ_LINGER, &linger, sizeof linger) || zmq_connect(ctl, s->ctl_ep)) goto done;
    if (!zap || zmq_setsockopt(zap, ZMQ_LINGER, &linger, sizeof linger) || zmq_bind(zap, "inproc://zeromq.zap.01")) {
        char msg[200];
        snprintf(msg, sizeof msg, "Ecannot bind the ZAP handler (inproc://zeromq.zap.01): %s%s", zmq_strerror(zmq_errno()),
                 zmq_errno() == EADDRINUSE ? " (one moco_sec per ZeroMQ context)" : "");
        send_str(ctl, msg, 0);
        goto done;
    }
    if (send_str(ctl, "OK", 0)) goto done;
    zmq_pollitem_t items[2 + MON_MAX];
    for (;;) {
        items[0] = (zmq_pollitem_t){ctl, 0, ZMQ_POLLIN, 0};
        items[1] = (zmq_pollitem_t){zap, 0, ZMQ_POLLIN, 0};
        for (int i = 0; i < s->nmons; i++) items[2 + i] = (zmq_pollitem_t){s->mons[i], 0, ZMQ_POLLIN, 0};
        int nmons = s->nmons;
        long wait_ms = -1; /* lines left out: wake up for their summary line */
        if (s->log_skipped) {
            long left = (long)(s->log_at + LOG_EVERY - time(NULL));
            wait_ms = left > 0 ? left * 1000 : 0;
        }
        int np = zmq_poll(items, 2 + nmons, wait_ms);
        if (np < 0) {
            if (zmq_errno() == EINTR) continue;
            break; /* ETERM: the context is ending */
        }
        log_summary(s);
        if (!np) continue;
        if (items[1].revents & ZMQ_POLLIN) handle_zap(s, zap);
        for (int i = nmons - 1; i >= 0; i--) /* backwards: a stopped monitor is removed in place */
            if ((items[2 + i].revents & ZMQ_POLLIN) && handle_mon(s, s->mons[i], s->mon_client[i])) {
                zmq_close(s->mons[i]);
                s->nmons--;
                s->mons[i] = s->mons[s->nmons], s->mon_client[i] = s->mon_client[s->nmons];
            }
        if ((items[0].revents & ZMQ_POLLIN) && handle_ctl(s, ctl) < 0) break;
    }
done:
    for (int i = 0; i < s->nmons; i++) zmq_close(s->mons[i]);
    s->nmons = 0;
    if (zap) zmq_close(zap);
    if (ctl) zmq_close(ctl);
    return NULL;
}

/* Send a request to the thread and wait for its answer (under mu). */
static int ctl_call(moco_sec *s, const char *req, char *ans, size_t cap)
{
    zmq_pollitem_t it = {s->ctl, 0, ZMQ_POLLIN, 0};
    if (zmq_send(s->ctl, req, strlen(req), ZMQ_DONTWAIT) < 0) return moco_err(MOCO_EZMQ, "%s: security thread: %s", s->who, zmq_strerror(zmq_errno()));
    if (zmq_poll(&it, 1, 10000) <= 0) return moco_err(MOCO_ETIMEOUT, "%s: security thread does not answer", s->who);
    int n = zmq_recv(s->ctl, ans, cap - 1, 0);
    if (n < 0) return moco_err(MOCO_EZMQ, "%s: security thread: %s", s->who, zmq_strerror(zmq_errno()));
    ans[(size_t)n < cap - 1 ? (size_t)n : cap - 1] = 0;
    return ans[0] == 'O' ? 0 : moco_err(MOCO_EZMQ, "%s: %s", s->who, ans + 1);
}

/* ---- the API ---- */

int moco_sec_new(void *zctx, const char *keys_dir, int insecure, const char *who, FILE *log, moco_sec **out)
{
    *out = NULL;
    if (!zctx) return moco_err(MOCO_EINVAL, "moco_sec_new: no ZeroMQ context");
    moco_sec *s = calloc(1, sizeof *s);
    if (!s) return moco_err(MOCO_ENOMEM, "out of memory");
    s->zctx = zctx, s->insecure = insecure != 0, s->log = log;
    snprintf(s->who, sizeof s->who, "%s", who ? who : "moco");
    pthread_mutex_init(&s->mu, NULL);
    atomic_init(&s->rejected, 0);
    atomic_init(&s->refused, 0);
    atomic_init(&s->closed_early, 0);
    atomic_init(&s->handshaken, 0);
    atomic_init(&s->dropped, 0);
    if (!keys_dir) {
        *out = s;
        return 0;
    }
    int rc, linger = 0;
    char ans[256];
    if (!zmq_has("curve")) {
        rc = moco_err(MOCO_EZMQ, "this libzmq has no CURVE support (it needs libsodium)");
        goto fail;
    }
    if (!(s->dir = strdup(keys_dir))) {
        rc = moco_err(MOCO_ENOMEM, "out of memory");
        goto fail;
    }
    if ((rc = load_dir(s, keys_dir))) goto fail;
    s->keyed = 1;
    snprintf(s->ctl_ep, sizeof s->ctl_ep, "inproc://moco-sec-ctl-%p", (void *)s);
    s->ctl = zmq_socket(zctx, ZMQ_PAIR);
    if (!s->ctl || zmq_setsockopt(s->ctl, ZMQ_LINGER, &linger, sizeof linger) || zmq_bind(s->ctl, s->ctl_ep)) {
        rc = moco_err(MOCO_EZMQ, "%s: control socket: %s", s->who, zmq_strerror(zmq_errno()));
        goto fail;
    }
    if (pthread_create(&s->thread, NULL, sec_thread, s)) {
        rc = moco_err(MOCO_EIO, "%s: cannot start the ZAP handler thread", s->who);
        goto fail;
    }
    s->running = 1;
    zmq_pollitem_t it = {s->ctl, 0, ZMQ_POLLIN, 0}; /* wait until the ZAP socket is bound */
    int n = zmq_poll(&it, 1, 10000) > 0 ? zmq_recv(s->ctl, ans, sizeof ans - 1, 0) : -1;
    ans[n > 0 ? n : 0] = 0;
    if (n < 0 || ans[0] != 'O') {
        rc = moco_err(MOCO_EZMQ, "%s: %s", s->who, n > 0 ? ans + 1 : "the ZAP handler thread did not start");
        goto fail;
    }
    *out = s;
    return 0;
fail:
    moco_sec_destroy(&s);
    return rc;
}

enum { EP_LOCAL, EP_TCP, EP_ABSTRACT, EP_OTHER };

static int ep_kind(const char *ep)
{
    if (!strncmp(ep, "ipc://@", 7)) return EP_ABSTRACT; /* Linux abstract namespace: no file, no permissions */
    if (!strncmp(ep, "ipc://", 6) || !strncmp(ep, "inproc://", 9)) return EP_LOCAL;
    return strncmp(ep, "tcp://", 6) ? EP_OTHER : EP_TCP;
}

int moco_sec_check_endpoint(const moco_sec *s, const char *ep)
{
    if (!ep) return moco_err(MOCO_EINVAL, "no endpoint");
    switch (ep_kind(ep)) {
    case EP_LOCAL: return 0;
    case EP_OTHER: return moco_err(MOCO_EINVAL, "%s: unsupported transport (moco uses tcp://, ipc://, inproc://)", ep);
    case EP_ABSTRACT:
        if (s && s->insecure) return 0;
        return moco_err(MOCO_EINVAL,
                        "%s is an abstract ipc socket, which any local user can connect to: give an ipc:// path in a "
                        "private directory or, to let anyone on this host in, --insecure",
                        ep);
    default:
        if (s && (s->keyed || s->insecure)) return 0;
        return moco_err(MOCO_EINVAL, "%s needs --keys DIR (see moco keygen) or --insecure", ep);
    }
}

/* The checks bind and connect share; 1 = go on with CURVE, 0 = nothing to do. */
static int precheck(moco_sec *s, void *sock, const char *ep, const char *role)
{
    if (!sock || !ep) return moco_err(MOCO_EINVAL, "moco_sec_%s: no socket or endpoint", role);
    int rc = moco_sec_check_endpoint(s, ep);
    if (rc) return rc;
    return ep_kind(ep) == EP_TCP && s && s->keyed;
}

static int setopt(void *sock, int opt, const void *v, size_t n, const char *name, const char *ep)
{
    return zmq_setsockopt(sock, opt, v, n) ? moco_err(MOCO_EZMQ, "%s: setting %s: %s", ep, name, zmq_strerror(zmq_errno())) : 0;
}

/* Monitor sock for events (kind 'M': a bound socket, 'C': a connecting one)
 * on the handler thread. */
static int start_monitor(moco_sec *s, void *sock, const char *endpoint, char kind, int events)
{
    char req[96], ans[256];
    int rc = 0;
    pthread_mutex_lock(&s->mu);
    snprintf(req, sizeof req, "%cinproc://moco-sec-mon-%p-%u", kind, (void *)s, ++s->nmon);
    if (zmq_socket_monitor(sock, req + 1, events | ZMQ_EVENT_MONITOR_STOPPED))
        rc = moco_err(MOCO_EZMQ, "%s: zmq_socket_monitor: %s", endpoint, zmq_strerror(zmq_errno()));
    else if ((rc = ctl_call(s, req, ans, sizeof ans)))
        zmq_socket_monitor(sock, NULL, 0);
    pthread_mutex_unlock(&s->mu);
    return rc;
}

int moco_sec_bind(moco_sec *s, void *sock, const char *endpoint)
{
    int rc = precheck(s, sock, endpoint, "bind"), one = 1, hs = MOCO_SEC_HANDSHAKE_MS;
    if (rc <= 0) return rc;
    if ((rc = setopt(sock, ZMQ_CURVE_SERVER, &one, sizeof one, "ZMQ_CURVE_SERVER", endpoint)) ||
        (rc = setopt(sock, ZMQ_HANDSHAKE_IVL, &hs, sizeof hs, "ZMQ_HANDSHAKE_IVL", endpoint)) ||
        (rc = setopt(sock, ZMQ_CURVE_SECRETKEY, s->server_sec, 32, "ZMQ_CURVE_SECRETKEY", endpoint)) ||
        (rc = setopt(sock, ZMQ_ZAP_DOMAIN, "moco", 4, "ZMQ_ZAP_DOMAIN", endpoint)))
        return rc;
    return start_monitor(s, sock, endpoint, 'M', FAIL_EVENTS);
}

int moco_sec_connect(moco_sec *s, void *sock, const char *endpoint)
{
    int rc = precheck(s, sock, endpoint, "connect");
    if (rc <= 0) return rc;
    if ((rc = setopt(sock, ZMQ_CURVE_SERVERKEY, s->server_pub, 32, "ZMQ_CURVE_SERVERKEY", endpoint)) ||
        (rc = setopt(sock, ZMQ_CURVE_PUBLICKEY, s->client_pub, 32, "ZMQ_CURVE_PUBLICKEY", endpoint)) ||
        (rc = setopt(sock, ZMQ_CURVE_SECRETKEY, s->client_sec, 32, "ZMQ_CURVE_SECRETKEY", endpoint)))
        return rc;
    return start_monitor(s, sock, endpoint, 'C',
                         ZMQ_EVENT_HANDSHAKE_FAILED_AUTH | ZMQ_EVENT_HANDSHAKE_SUCCEEDED | ZMQ_EVENT_DISCONNECTED);
}

/* A server that cannot read our HELLO (its key is not the server.key we
 * use) closes the connection without a word (libzmq: the client sees
 * CONNECTED, HANDSHAKE_FAILED_NO_DETAIL, DISCONNECTED, again every 0.1 s):
 * taken as such after this many, while no handshake has succeeded. A
 * server not yet listening gives no DISCONNECTED (the TCP connect fails). */
#define CLOSED_EARLY_MAX 3

static int wrong_server_key(const moco_sec *s)
{
    moco_sec *m = (moco_sec *)s;
    return s && !atomic_load(&m->handshaken) && atomic_load(&m->closed_early) >= CLOSED_EARLY_MAX;
}

uint64_t moco_sec_refused(const moco_sec *s)
{
    return s ? atomic_load(&((moco_sec *)s)->refused) + (uint64_t)wrong_server_key(s) : 0;
}

int moco_sec_check_refused(const moco_sec *s, const char *endpoint)
{
    if (!moco_sec_refused(s)) return 0;
    if (!atomic_load(&((moco_sec *)s)->refused))
        return moco_err(MOCO_EINVAL,
                        "%s closed %d connections during the CURVE handshake, and none succeeded: %s/server.key is "
                        "probably not that server's key (copy the key directory of the loader's host, moco keygen "
                        "there once, to every host; or %s is not a moco endpoint)",
                        endpoint, CLOSED_EARLY_MAX, s->dir ? s->dir : "?", endpoint);
    return moco_err(MOCO_EINVAL,
                    "%s refused this process's key %s/client.key (CURVE authentication failed): add that file to the "
                    "allow list, DIR/allowed/, of the key directory the other side uses (moco keygen)",
                    endpoint, s->dir ? s->dir : "?");
}

uint64_t moco_sec_rejected(const moco_sec *s)
{
    return s ? atomic_load(&((moco_sec *)s)->rejected) : 0;
}

uint64_t moco_sec_dropped(const moco_sec *s)
{
    return s ? atomic_load(&((moco_sec *)s)->dropped) : 0;
}

void moco_sec_destroy(moco_sec **sp)
{
    moco_sec *s = sp ? *sp : NULL;
    if (!s) return;
    *sp = NULL;
    if (s->running) {
        pthread_mutex_lock(&s->mu);
        zmq_send(s->ctl, "S", 1, ZMQ_DONTWAIT); /* fails only if the thread has ended already */
        pthread_mutex_unlock(&s->mu);
        pthread_join(s->thread, NULL);
    }
    if (s->ctl) zmq_close(s->ctl);
    pthread_mutex_destroy(&s->mu);
    free(s->allowed);
    free(s->dir);
    explicit_bzero(s, sizeof *s);
    free(s);
}

/* ---- moco keygen ---- */

static int write_cert(const char *dir, const char *name, const char *pub, const char *sec)
{
    char path[4200], tmp[4300], text[1024];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    snprintf(tmp, sizeof tmp, "%s.tmp", path);
    int n = snprintf(text, sizeof text,
                     "#   ****  Generated by moco keygen  ****\n%s\nmetadata\ncurve\n    public-key = \"%s\"\n%s%s%s",
                     sec ? "#   ZeroMQ CURVE **Secret** Certificate\n"
                           "#   DO NOT PROVIDE THIS FILE TO OTHER USERS nor change its permissions.\n"
                         : "#   ZeroMQ CURVE Public Certificate\n"
                           "#   Give it to the peers that must know this key (a server's allowed/ directory).\n",
                     pub, sec ? "    secret-key = \"" : "", sec ? sec : "", sec ? "\"\n" : "");
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600), rc = 0;
    if (fd < 0) rc = moco_err(MOCO_EIO, "cannot create %s: %s", tmp, strerror(errno));
    else {
        if (fchmod(fd, 0600) || write(fd, text, (size_t)n) != n || fsync(fd))
            rc = moco_err(MOCO_EIO, "cannot write %s: %s", tmp, strerror(errno));
        if (close(fd) && !rc) rc = moco_err(MOCO_EIO, "cannot write %s: %s", tmp, strerror(errno));
        if (!rc && rename(tmp, path)) rc = moco_err(MOCO_EIO, "cannot rename %s to %s: %s", tmp, path, strerror(errno));
        if (rc) unlink(tmp);
    }
    explicit_bzero(text, sizeof text);
    return rc;
}

/* mkdir DIR 0700 unless it is a directory already (of this user or root:
 * not another user's, left as it was); then chmod 0700. */
static int private_dir(const char *dir)
{
    struct stat st;
    int rc;
    if (mkdir(dir, 0700) && errno != EEXIST) return moco_err(MOCO_EIO, "cannot create %s: %s", dir, strerror(errno));
    if (stat(dir, &st) || !S_ISDIR(st.st_mode)) return moco_err(MOCO_EEXIST, "%s exists and is not a directory", dir);
    if ((rc = check_owner(dir, &st))) return rc;
    if (chmod(dir, 0700)) return moco_err(MOCO_EIO, "chmod 700 %s: %s", dir, strerror(errno));
    return 0;
}

int moco_keygen(const char *dir, int force)
{
    char sub[4200], spub[41], ssec[41], cpub[41], csec[41];
    if (!dir || !*dir || strlen(dir) > 4000) return moco_err(MOCO_EINVAL, "moco keygen: bad directory name");
    DIR *d = opendir(dir);
    if (d) {
        int empty = 1;
        for (struct dirent *de; empty && (de = readdir(d));)
            if (strcmp(de->d_name, ".") && strcmp(de->d_name, "..")) empty = 0;
        closedir(d);
        if (!empty && !force) return moco_err(MOCO_EEXIST, "%s exists and is not empty (--force rewrites its keys)", dir);
    } else if (errno != ENOENT) {
        return moco_err(errno == ENOTDIR ? MOCO_EEXIST : MOCO_EIO, "%s: %s", dir, strerror(errno));
    }
    int rc;
    snprintf(sub, sizeof sub, "%s/allowed", dir);
    if ((rc = private_dir(dir)) || (rc = private_dir(sub))) return rc;
    if (zmq_curve_keypair(spub, ssec) || zmq_curve_keypair(cpub, csec))
        return moco_err(MOCO_EZMQ, "zmq_curve_keypair: %s (libzmq without CURVE?)", zmq_strerror(zmq_errno()));
    if (!(rc = write_cert(dir, "server.key_secret", spub, ssec)) && !(rc = write_cert(dir, "server.key", spub, NULL)) &&
        !(rc = write_cert(dir, "client.key_secret", cpub, csec)) && !(rc = write_cert(dir, "client.key", cpub, NULL)))
        rc = write_cert(sub, "client.key", cpub, NULL);
    explicit_bzero(ssec, sizeof ssec);
    explicit_bzero(csec, sizeof csec);
    for (int i = 0; !rc && i < 2; i++) { /* make the renames durable */
        int fd = open(i ? dir : sub, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (fd >= 0) fsync(fd), close(fd);
    }
    return rc;
}
