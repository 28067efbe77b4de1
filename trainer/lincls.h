/* lincls.h: linear evaluation on frozen features (trainer/lincls.c). */
#ifndef TRAINER_LINCLS_H
#define TRAINER_LINCLS_H

#include <stdint.h>

typedef struct {
    int epochs, batch;
    double lr, momentum, wd;
    int schedule[16], nschedule;
    uint64_t seed;
} lincls_cfg;

/* Train a linear softmax classifier on xtr (ntr, F) with labels in [0, C)
 * (every epoch a seeded permutation, the last partial batch kept), then
 * write its test top-1 and top-5 (percent) on xte; top-5 is NaN (null in
 * the JSON line) when C < 5, where it would be 100 whatever the model.
 * Returns 0, MOCO_ENOMEM,
 * or MOCO_ENUMERIC if the loss stops being finite. */
int lincls_train_eval(const float *xtr, const int32_t *ytr, int64_t ntr, const float *xte, const int32_t *yte, int64_t nte,
                      int F, int C, const lincls_cfg *c, double *top1, double *top5);

/* The linear-evaluation consumer: `moco lincls --cached-features ...`, or
 * streamed with --connect/--bind as `moco lincls` (cli/run.c) starts it. */
int lincls_main(int argc, char **argv);
/* Its flags parsed and checked as lincls_main would, nothing run: 0, or the
 * exit status (2; 0 too after --help) with the error said on stderr. */
int lincls_check_args(int argc, char **argv);

#endif
