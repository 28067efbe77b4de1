/* fuzz_zsec.c: libFuzzer target for the CURVE key-file reader
 * (formats/zsec.c, moco_sec_load_cert: the ZPL certificates `moco keygen`
 * writes and moco_sec_new reads). The first input byte's low bit is
 * need_secret (a *.key_secret file, or a public certificate); the rest is
 * written, mode 0600, as the key file. A file accepted must hold what was
 * asked for (a secret key when needed; a secret key whose public key is the
 * public-key read); a file refused must have a message naming it. */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zmq.h>

#include "formats/errors.h"
#include "formats/zsec.h"

static char dir[256], path[300];

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
    (void)argc, (void)argv;
    snprintf(dir, sizeof dir, "/tmp/moco-fuzz-zsec-XXXXXX");
    if (!mkdtemp(dir)) abort();
    snprintf(path, sizeof path, "%s/server.key_secret", dir);
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
    if (size < 1) return 0;
    int need_secret = data[0] & 1;
    data++, size--;
    FILE *f = fopen(path, "wb");
    if (!f) abort();
    if (size && fwrite(data, 1, size, f) != size) abort();
    fclose(f);
    if (chmod(path, 0600)) abort();
    moco_sec_cert c;
    int rc = moco_sec_load_cert(path, need_secret, &c);
    if (rc) {
        if (rc != MOCO_ECORRUPT || !strstr(moco_errmsg(), path)) abort();
        return 0;
    }
    if (need_secret && !c.has_sec) abort();
    if (c.has_sec) {
        char pz[41], sz[41], dz[41];
        zmq_z85_encode(pz, c.pub, 32);
        zmq_z85_encode(sz, c.sec, 32);
        if (zmq_curve_public(dz, sz) || strcmp(dz, pz)) abort();
    }
    return 0;
}
