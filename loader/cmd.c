/* cmd.c: the loader process's subcommands (loader/cmd.h). */
#include "loader/cmd.h"

const moco_command loader_commands[] = {
    {"mkdb", loader_mkdb_main, "pack an image folder, CIFAR-10 or IDX files into a dataset LMDB"},
    {"info", loader_info_main, "describe a dataset LMDB (count, classes, sizes, encodings)"},
    {"loader", loader_stream_main, "stream a dataset LMDB to augmentation workers, exactly once per epoch"},
    {NULL, NULL, NULL},
};
