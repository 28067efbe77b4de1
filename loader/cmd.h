/* cmd.h: the loader process's subcommands, as called by bin/moco, in one
 * table (formats/opts.h, moco_command). */
#ifndef LOADER_CMD_H
#define LOADER_CMD_H

#include "formats/opts.h"

int loader_mkdb_main(int argc, char **argv);
int loader_info_main(int argc, char **argv);
int loader_stream_main(int argc, char **argv);

extern const moco_command loader_commands[];

#endif
