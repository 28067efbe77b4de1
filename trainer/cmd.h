/* cmd.h: the trainer's subcommands, as called by bin/moco.
 * Each returns the process exit status: 0 ok, 1 failure, 2 bad usage.
 * MOCO_TRAINER_COMMANDS expands to entries of cli/moco.c's command table:
 *   {"name", function, "one-line description"}, */
#ifndef TRAINER_CMD_H
#define TRAINER_CMD_H

#define MOCO_TRAINER_COMMANDS
/* entries of the `moco bench` table, same form */
#define MOCO_TRAINER_BENCHES \
    {"train", trainer_bench_main, "full MoCo training steps on synthetic data (trainer/bench.c)"},

int trainer_bench_main(int argc, char **argv);

#endif
