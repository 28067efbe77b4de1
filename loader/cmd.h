/* cmd.h: the loader process's subcommands, as called by bin/moco.
 * Each returns the process exit status: 0 ok, 1 failure, 2 bad usage. */
#ifndef LOADER_CMD_H
#define LOADER_CMD_H

int loader_mkdb_main(int argc, char **argv);
int loader_info_main(int argc, char **argv);
int loader_stream_main(int argc, char **argv);

#endif
