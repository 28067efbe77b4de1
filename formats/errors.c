/* errors.c: thread-local last-error message and code descriptions. */
#include "formats/errors.h"

#include <lmdb.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

static _Thread_local char errbuf[1024];

int moco_err(int code, const char *fmt, ...)
{
    /* formatted aside first: a caller may pass moco_errmsg() itself as an argument (wrapping the
     * message of a lower layer), and vsnprintf onto its own source garbled it */
    char msg[sizeof errbuf];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    memcpy(errbuf, msg, sizeof errbuf);
    return code;
}

const char *moco_errmsg(void) { return errbuf; }

const char *moco_strerror(int code)
{
    static const char *const names[] = {
        "I/O error", "corrupt data", "unsupported format", "invalid argument",
        "out of memory", "LMDB error", "libvips error", "ZeroMQ error",
        "not found", "already exists", "interrupted", "non-finite number",
        "timed out",
    };
    if (code == 0) return "success";
    if (code >= MOCO_EIO && code < MOCO_ELAST) return names[code - MOCO_EIO];
    if (code >= MDB_KEYEXIST && code <= MDB_LAST_ERRCODE) return mdb_strerror(code);
    return strerror(code < 0 ? -code : code);
}
