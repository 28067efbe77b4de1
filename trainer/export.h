/* export.h: `moco export` and `moco embed` (trainer/export.c). */
#ifndef TRAINER_EXPORT_H
#define TRAINER_EXPORT_H

int export_main(int argc, char **argv);
int embed_main(int argc, char **argv);

#endif
