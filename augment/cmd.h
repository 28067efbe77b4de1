/* cmd.h: the augmentation worker's subcommands, as called by bin/moco.
 * Each returns the process exit status: 0 ok, 1 failure, 2 bad usage.
 * MOCO_AUGMENT_COMMANDS expands to entries of cli/moco.c's command table:
 *   {"name", function, "one-line description"}, */
#ifndef AUGMENT_CMD_H
#define AUGMENT_CMD_H

int augment_worker_main(int argc, char **argv);
int augment_preview_main(int argc, char **argv);
int augment_bench_main(int argc, char **argv);

#define MOCO_AUGMENT_COMMANDS \
    {"augment", augment_worker_main, "augmentation worker: records from the loader in, MoCo query/key view pairs out"}, \
    {"preview", augment_preview_main, "PNG contact sheet of a recipe: original | query | key, n samples"},
/* entries of the `moco bench` table, same form */
#define MOCO_AUGMENT_BENCHES \
    {"augment", augment_bench_main, "augmentation pairs/s and decode/s, in-process or N worker processes"},

#endif
