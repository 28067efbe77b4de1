/* plot.h: `moco plot` (trainer/plot.c). */
#ifndef TRAINER_PLOT_H
#define TRAINER_PLOT_H

int plot_main(int argc, char **argv);

#endif
