/* cmd.c: the augmentation worker's subcommands (augment/cmd.h). `moco
 * augment` is the pipeline worker (augment/pipe_main.c), also for --help;
 * only `moco augment --pull ...` is the standalone worker that `moco bench
 * augment` starts (augment/worker.c). */
#include "augment/cmd.h"

#include <string.h>

#include "augment/pipe.h"

static int augment_main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++)
        if (!strncmp(argv[i], "--pull", 6)) return augment_worker_main(argc, argv);
    return augment_pipe_main(argc, argv);
}

const moco_command augment_commands[] = {
    {"augment", augment_main, "augmentation worker: records from the loader in, MoCo query/key view pairs out"},
    {"preview", augment_preview_main, "PNG contact sheet of a recipe: original | query | key, n samples"},
    {NULL, NULL, NULL},
};

const moco_command augment_benches[] = {
    {"augment", augment_bench_main, "augmentation pairs/s and decode/s, in-process or N worker processes"},
    {NULL, NULL, NULL},
};
