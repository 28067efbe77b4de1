/* cmd.h: the trainer's subcommands, as called by bin/moco, in one table
 * each for commands and benchmarks (formats/opts.h, moco_command). */
#ifndef TRAINER_CMD_H
#define TRAINER_CMD_H

#include "formats/opts.h"

int trainer_bench_main(int argc, char **argv);

extern const moco_command trainer_commands[], trainer_benches[];

#endif
