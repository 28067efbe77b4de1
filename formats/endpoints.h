/* endpoints.h: binding one socket to a list of endpoints, the private ones
 * in the clear and the tcp ones with CURVE.
 *
 * "ipc:///run/x/work,tcp://0.0.0.0:5555" binds both: workers on this host
 * connect to the ipc path (protected by its 0700 directory, no encryption
 * cost), workers on other hosts to the tcp port (CURVE, formats/zsec.h).
 * libzmq takes a socket's security options when an endpoint is bound, so the
 * non-tcp endpoints are bound first, then the socket is made a CURVE server
 * (moco_sec_bind) and the tcp ones are bound. */
#ifndef MOCO_ENDPOINTS_H
#define MOCO_ENDPOINTS_H

#include "formats/zsec.h"

#define MOCO_ENDPOINTS_MAX 8

/* Bind sock to every endpoint of the comma-separated list. Every endpoint is
 * checked first (moco_sec_check_endpoint): nothing is bound if one is
 * refused. Returns 0, or MOCO_EINVAL (an empty or too long list, tcp without
 * keys, ipc://@NAME without insecure, a transport other than tcp, ipc and
 * inproc such as ws://: the message names the endpoint) or MOCO_EZMQ (cannot
 * bind, naming the endpoint). */
int moco_bind_endpoints(moco_sec *sec, void *sock, const char *list);

/* The first endpoint of the list whose scheme is `scheme` ("tcp", "ipc"),
 * copied into out (size n); 0 if there is one, MOCO_ENOTFOUND if not. */
int moco_endpoint_pick(const char *list, const char *scheme, char *out, size_t n);

/* Whether an ipc:// endpoint that names a path (ipc://PATH; not ipc://@NAME)
 * can be bound, checked without binding: the path fits a socket address
 * (107 bytes) and its directory exists, is a directory and may take a new
 * file. 0 (other transports too: a tcp bind is checked by binding), or
 * MOCO_EINVAL / MOCO_ENOTFOUND naming flag, the endpoint and what to do.
 * For moco run's --serve, before it creates anything (the loader found a
 * missing directory only once the run had started). */
int moco_ipc_check(const char *flag, const char *endpoint);

/* moco run's private socket directory (environment MOCO_RUN_SOCKDIR, set
 * by the supervisor for its children): remove its sockets (work, ctl,
 * pairs; nothing else) and the directory. Each child that binds there calls
 * it as it exits, so that the directory goes even when the supervisor was
 * killed. A no-op without the variable. */
void moco_run_sockdir_cleanup(void);

#endif
