/* cmd.h: the augmentation worker's subcommands, as called by bin/moco, in
 * one table each for commands and benchmarks (formats/opts.h,
 * moco_command). */
#ifndef AUGMENT_CMD_H
#define AUGMENT_CMD_H

#include "formats/opts.h"

int augment_worker_main(int argc, char **argv);
int augment_preview_main(int argc, char **argv);
int augment_bench_main(int argc, char **argv);

extern const moco_command augment_commands[], augment_benches[];

#endif
