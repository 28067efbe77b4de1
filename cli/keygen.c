/* keygen.c: `moco keygen DIR [--force]`: create the key directory of a
 * deployment (formats/zsec.h moco_keygen) and say how to use it. Exit 0 on
 * success, 1 on failure, 2 on bad usage. */
#include <stdio.h>

#include "cli/run.h"
#include "formats/errors.h"
#include "formats/opts.h"
#include "formats/zsec.h"

int cli_keygen_main(int argc, char **argv)
{
    int force = 0;
    const moco_opt opts[] = {
        {"force", MOCO_OPT_FLAG, &force, "rewrite the keys of an existing DIR (other files in DIR/allowed/ stay)", 0, 0, NULL},
        {NULL, 0, NULL, NULL, 0, 0, NULL},
    };
    const moco_optspec spec = {"moco keygen", "DIR [options]",
                               "Create DIR (mode 0700) with a server and a client CURVE keypair and the allow list\n"
                               "DIR/allowed/ (every file mode 0600). Give every process --keys DIR: processes that bind\n"
                               "tcp endpoints use server.key_secret and admit only clients whose public key is in\n"
                               "allowed/; processes that connect use client.key_secret and server.key.",
                               opts, 1, 1, NULL};
    char *pos[1];
    int np, rc = 0, opt_exit;
    if (!moco_opts_run(&spec, argc, argv, pos, &np, &opt_exit)) return opt_exit;
    if ((rc = moco_keygen(pos[0], force))) {
        fprintf(stderr, "moco keygen: %s\n", moco_errmsg());
        return 1;
    }
    const char *d = pos[0];
    printf("created %s (mode 0700), every file mode 0600:\n"
           "  %s/server.key_secret   the servers' keypair (processes that bind tcp endpoints)\n"
           "  %s/server.key          the servers' public certificate\n"
           "  %s/client.key_secret   a client keypair (processes that connect)\n"
           "  %s/client.key          its public certificate\n"
           "  %s/allowed/client.key  the allow list: clients the servers admit\n"
           "Start every process with --keys %s.\n"
           "To add a host: copy the directory to it (scp -rp %s HOST:DIR). To give the host a key of\n"
           "its own instead, copy the directory, replace its client.key and client.key_secret by those\n"
           "of a fresh `moco keygen NEWDIR`, and put that client.key into %s/allowed/ on every serving\n"
           "host under any name (mode 0600); servers read allowed/ when they start.\n",
           d, d, d, d, d, d, d, d, d);
    return 0;
}
