/* zsec.h: transport security for every ZeroMQ socket of a moco process.
 *
 * Promise: a tcp endpoint is either encrypted and authenticated with CURVE
 * (keys from a `moco keygen` directory; a bound socket admits only clients
 * whose public key is in DIR/allowed/, checked by our own ZAP handler, RFC 27)
 * or refused, unless the caller explicitly asked for --insecure. ipc://PATH and
 * inproc:// endpoints pass untouched (protected by the file system / the
 * process); an abstract ipc socket (ipc://@NAME) has no such protection and
 * needs --insecure; every other transport is refused. Rejected handshakes on
 * bound sockets are counted and logged; a server's refusal of our own key is
 * counted, for a clear error.
 * Key files are ZeroMQ's ZPL certificates (CZMQ zcert, pyzmq zmq.auth);
 * see formats/README.md, "Security: keys, CURVE, ZAP". */
#ifndef MOCO_ZSEC_H
#define MOCO_ZSEC_H

#include <stdint.h>
#include <stdio.h>

typedef struct moco_sec moco_sec;

/* A connection to a bound CURVE socket that has not finished its handshake
 * (a stranger's silent or half-open TCP connection) is closed after this
 * long (ZMQ_HANDSHAKE_IVL; libzmq's default, 30 s, let a stranger hold
 * hundreds of descriptors for half a minute each). Loopback and LAN
 * handshakes take milliseconds. */
#define MOCO_SEC_HANDSHAKE_MS 3000

/* One per ZeroMQ context (process). keys_dir may be NULL (then only ipc/inproc endpoints,
 * or tcp with insecure=1, are allowed; with keys, insecure changes nothing). With keys_dir: loads DIR/server.key_secret,
 * DIR/client.key_secret, DIR/server.key and every public certificate in DIR/allowed/
 * (the allow list; names starting with '.' are skipped), refusing (MOCO_EIO /
 * MOCO_ECORRUPT with a message naming the file) missing or malformed files, a public key
 * that does not match its secret key, and key files readable or writable by group/others
 * ("chmod 600 FILE"); then starts the ZAP handler thread and returns only once it is bound
 * (a CURVE server without a ZAP handler would accept anyone).
 * who: a name for messages, e.g. "moco loader". log: a FILE* for JSON-line events, or NULL
 * (written from the handler thread, one fprintf + fflush per line): "auth_rejected" and
 * "handshake_dropped" lines, the first 20, then at most one per 10 s (with "suppressed": the
 * lines left out before it), and 10 s after a line when some were left out since, one
 * "auth_summary" line (suppressed, rejected, dropped). */
int moco_sec_new(void *zctx, const char *keys_dir, int insecure, const char *who, FILE *log, moco_sec **out);

/* Call before zmq_bind(sock, endpoint), in the thread that owns sock. tcp:// without keys
 * and without insecure -> MOCO_EINVAL ("tcp://... needs --keys DIR (see moco keygen) or
 * --insecure"). tcp with keys: ZMQ_CURVE_SERVER=1, the server secret key, ZMQ_ZAP_DOMAIN
 * "moco", ZMQ_HANDSHAKE_IVL MOCO_SEC_HANDSHAKE_MS, and a socket monitor that counts failed handshakes. ipc://PATH, inproc://: nothing to
 * do, returns 0. ipc://@NAME without insecure, any other transport: MOCO_EINVAL
 * (moco_sec_check_endpoint). s may be NULL (= no keys, not insecure). */
int moco_sec_bind(moco_sec *s, void *sock, const char *endpoint);

/* Whether endpoint may be bound or connected under s (NULL: no keys, not
 * insecure), with no side effect: 0, or MOCO_EINVAL with a message naming it.
 * tcp:// needs keys or insecure; ipc://PATH and inproc:// pass; an abstract
 * ipc socket (ipc://@NAME, reachable by every local user: it has no file and
 * no permissions) needs insecure; every other transport (ws://, udp://, pgm://,
 * TCP:// ...) is refused. moco_sec_bind and moco_sec_connect check this first. */
int moco_sec_check_endpoint(const moco_sec *s, const char *endpoint);

/* Call before zmq_connect. tcp without keys and without insecure -> MOCO_EINVAL as above.
 * tcp with keys: the client keypair (client.key_secret), ZMQ_CURVE_SERVERKEY (server.key),
 * and a socket monitor that counts the server's refusals of our key (moco_sec_refused). */
int moco_sec_connect(moco_sec *s, void *sock, const char *endpoint);

/* Handshakes rejected so far on this context's bound sockets (thread-safe
 * read): no CURVE, a wrong server key, a key not allowed, a protocol error. */
uint64_t moco_sec_rejected(const moco_sec *s);
/* Connections to those sockets that ended before the handshake said anything
 * (libzmq's HANDSHAKE_FAILED_NO_DETAIL with EPIPE, ECONNRESET or EAGAIN: a
 * port scan, a health check, a client that hung up): not rejections, counted
 * here (thread-safe read). */
uint64_t moco_sec_dropped(const moco_sec *s);
/* Handshakes in which a server refused this context's key (its ZAP handler
 * said no: the key is not in its allow list), on sockets moco_sec_connect
 * prepared (thread-safe read); plus 1 once 3 connections closed during the
 * handshake while none had succeeded (the server could not read our HELLO:
 * our server.key is not its key). */
uint64_t moco_sec_refused(const moco_sec *s);
/* 0 while moco_sec_refused(s) is 0; then MOCO_EINVAL with a message that
 * names endpoint and this process's key file (client.key, or server.key
 * for the second case), and says what to do. */
int moco_sec_check_refused(const moco_sec *s, const char *endpoint);

/* Stop the thread, close its sockets, free. Call after closing your own sockets and
 * before zmq_ctx_term. *s = NULL; NULL-safe. */
void moco_sec_destroy(moco_sec **s);

/* Create the key directory (mode 0700): server.key, server.key_secret, client.key,
 * client.key_secret, allowed/client.key, every file mode 0600. Refuses an existing
 * non-empty DIR unless force (then it rewrites only these files; other files in
 * allowed/ stay). Each file is written to FILE.tmp, fsync'ed and renamed. */
int moco_keygen(const char *dir, int force);

/* One key file's keys (moco_sec_new reads each file with this; exposed for
 * tests/fuzz/fuzz_zsec.c). */
typedef struct {
    uint8_t pub[32], sec[32];
    int has_sec;
} moco_sec_cert;
/* Read and parse one ZPL certificate: a regular file of at most 64 KiB, owned
 * by this user or root, mode 0600 or stricter, with a public-key (and, if
 * need_secret, a secret-key that the public-key belongs to) in its curve
 * section. 0, or MOCO_EIO / MOCO_ECORRUPT / MOCO_ENOMEM with a message naming
 * path (and the line). */
int moco_sec_load_cert(const char *path, int need_secret, moco_sec_cert *c);

#endif
