/* errors.h: the error codes every moco process uses, and the message that
 * goes with the last error of the calling thread.
 *
 * Contract (as LMDB's): functions return an int, 0 on success, a negative
 * MOCO_E* code on failure; outputs come last in the argument list. A failing
 * function records a human-readable message naming the file, record or tensor
 * with moco_err(); the caller reads it with moco_errmsg(). Codes live in a
 * reserved range that does not overlap LMDB's (-30800..-30780) or errno. */
#ifndef MOCO_ERRORS_H
#define MOCO_ERRORS_H

enum {
    MOCO_OK = 0,
    MOCO_EIO = -33000,   /* a read, write, open or rename failed */
    MOCO_ECORRUPT,       /* data is malformed, truncated or fails its CRC */
    MOCO_EFORMAT,        /* well-formed but unsupported (version, encoding) */
    MOCO_EINVAL,         /* a bad argument or configuration value */
    MOCO_ENOMEM,         /* an allocation failed */
    MOCO_ELMDB,          /* LMDB reported an error */
    MOCO_EVIPS,          /* libvips reported an error */
    MOCO_EZMQ,           /* ZeroMQ reported an error */
    MOCO_ENOTFOUND,      /* a record, tensor or file does not exist */
    MOCO_EEXIST,         /* the output already exists */
    MOCO_EINTR,          /* interrupted by a signal or a stop request */
    MOCO_ENUMERIC,       /* a NaN or infinity where a finite value is needed */
    MOCO_ETIMEOUT,       /* a peer did not answer in time */
    MOCO_ELAST
};

/* Record code and a printf-style message for the calling thread; returns
 * code so that `return moco_err(MOCO_EIO, "open %s: %s", path, ...)` reads
 * naturally. The message is truncated to 1023 bytes. */
int moco_err(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

/* The message of the calling thread's last moco_err(), or "" if none.
 * Valid until the next moco_err() in the same thread. */
const char *moco_errmsg(void);

/* A short static description of a code: ours, LMDB's, or an errno. */
const char *moco_strerror(int code);

#endif
