/* mkdb.c: placeholder until the converter lands. */
#include <stdio.h>
#include "loader/cmd.h"
int loader_mkdb_main(int argc, char **argv) { (void)argc; (void)argv; fprintf(stderr, "moco mkdb: not yet\n"); return 1; }
