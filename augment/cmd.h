/* cmd.h: the augmentation worker's subcommands, as called by bin/moco.
 * Each returns the process exit status: 0 ok, 1 failure, 2 bad usage.
 * MOCO_AUGMENT_COMMANDS expands to entries of cli/moco.c's command table:
 *   {"name", function, "one-line description"}, */
#ifndef AUGMENT_CMD_H
#define AUGMENT_CMD_H

#define MOCO_AUGMENT_COMMANDS
/* entries of the `moco bench` table, same form */
#define MOCO_AUGMENT_BENCHES

#endif
