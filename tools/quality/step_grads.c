/* step_grads.c: an experiment, not part of bin/moco. One MoCo step of this
 * engine on a case written by bf16_error.py, in fp32 or bf16, and the
 * query encoder's gradient it produced, so that the gradient error of
 * `--precision bf16` can be set beside PyTorch's bf16 autocast on the same
 * weights, images, key permutation and queue.
 *
 *   step_grads CASE OUT fp32|bf16 [all|conv|fp32]
 *
 * The last argument is bf16's activation storage (rn_cfg.store): all (the
 * default), conv outputs only, or none kept in bf16. The kernels are the
 * fixed rule's, or with $MOCO_KERNELS=measure the wisdom's (as training
 * picks them; measured where the wisdom has no answer, and saved).
 * CASE (safetensors): cfg int64 [N, size, K, dim, bn_splits, symmetric,
 * mlp, width], cfgf f32 [T], init.<name> (a resnet18-cifar state_dict,
 * torchvision names), optionally initk.<name> (the key encoder's, else it
 * starts equal to the query encoder), x1, x2 (N,3,size,size) f32, perm
 * int64 (N per direction), queue (dim,K) f32.
 * OUT (safetensors): <name> = d loss / d parameter for every query-encoder
 * parameter, and loss (1). The step runs with lr 0 and weight decay 0, so
 * the gradient is the loss's alone; a key encoder given as initk.* is
 * moved by the step's momentum update (by (1 - 0.99) of its distance from
 * the query encoder) before it computes the keys, as in training.
 * Exit status 0, 1 on an error, 2 on bad usage, 77 for bf16 where this CPU
 * has no bf16 path. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"
#include "formats/safetensors.h"
#include "trainer/engine/moco.h"
#include "trainer/engine/nn.h"
#include "trainer/engine/par.h"
#include "trainer/engine/tune.h"

static int fail(const char *what)
{
    fprintf(stderr, "step_grads: %s: %s\n", what, moco_errmsg());
    return 1;
}

/* Copy every "<prefix><name>" tensor of st into m, checking its size. */
static int load_init(const moco_st *st, resnet *m, const char *prefix)
{
    for (int i = 0; i < m->ntensors; i++) {
        const rn_tensor *t = &m->tensors[i];
        char nm[96];
        snprintf(nm, sizeof nm, "%s%s", prefix, t->name);
        moco_st_dtype dt = t->kind == RN_COUNT ? MOCO_ST_I64 : MOCO_ST_F32;
        if (moco_st_read(st, nm, dt, t->ndim, t->shape, rn_data(m, t))) return fail(nm);
    }
    return 0;
}

int main(int argc, char **argv)
{
    const char *store = argc == 5 ? argv[4] : "all";
    if ((argc != 4 && argc != 5) || (strcmp(argv[3], "fp32") && strcmp(argv[3], "bf16")) ||
        (strcmp(store, "all") && strcmp(store, "conv") && strcmp(store, "fp32"))) {
        fprintf(stderr, "usage: step_grads CASE OUT fp32|bf16 [all|conv|fp32]\n");
        return 2;
    }
    if (!strcmp(argv[3], "bf16") && nn_bf16_available()) {
        fprintf(stderr, "step_grads: no bf16 here: %s\n", moco_errmsg());
        return 77;
    }
    moco_st *st;
    if (moco_st_open(argv[1], &st)) return fail(argv[1]);
    int64_t c[8];
    float T;
    if (moco_st_read(st, "cfg", MOCO_ST_I64, 1, (int64_t[]){8}, c) || moco_st_read(st, "cfgf", MOCO_ST_F32, 1, (int64_t[]){1}, &T))
        return fail(argv[1]);
    const int N = (int)c[0], S = (int)c[1], K = (int)c[2], D = (int)c[3], dirs = c[5] ? 2 : 1;
    par_set_threads(2);
    /* $MOCO_KERNELS=measure: the kernels training picks (the wisdom), not the rule */
    if (getenv("MOCO_KERNELS") && !strcmp(getenv("MOCO_KERNELS"), "measure")) tune_configure(TUNE_MEASURE, NULL);
    moco_cfg cfg = {.enc = {.arch = "resnet18-cifar", .width = (int)c[7], .mlp = (int)c[6], .dim = D, .bn_splits = (int)c[4],
                            .batch = N, .size = S, .precision = strcmp(argv[3], "bf16") ? NN_FP32 : NN_BF16,
                            .store = !strcmp(store, "all") ? RN_STORE_ALL : !strcmp(store, "conv") ? RN_STORE_CONV : RN_STORE_FP32},
                    .K = K, .m = 0.99f, .T = T, .symmetric = (int)c[5], .lr = 0, .sgd_momentum = 0.9f, .weight_decay = 0, .seed = 1};
    moco *mc;
    if (moco_new(&cfg, &mc)) return fail("model");
    const size_t nx = (size_t)N * 3 * S * S;
    float *x1 = malloc(sizeof(float) * nx), *x2 = malloc(sizeof(float) * nx);
    int64_t *perm = malloc(sizeof *perm * (size_t)N * dirs);
    const int64_t xs[4] = {N, 3, S, S}, qs[2] = {D, K}, ps[1] = {(int64_t)N * dirs};
    int rc = !x1 || !x2 || !perm;
    if (rc) fprintf(stderr, "step_grads: out of memory\n");
    rc = rc || load_init(st, mc->q, "init.") ||
         load_init(st, mc->k, moco_st_find(st, "initk.conv1.weight") ? "initk." : "init.");
    if (!rc && (moco_st_read(st, "x1", MOCO_ST_F32, 4, xs, x1) || moco_st_read(st, "x2", MOCO_ST_F32, 4, xs, x2) ||
                moco_st_read(st, "perm", MOCO_ST_I64, 1, ps, perm) || moco_st_read(st, "queue", MOCO_ST_F32, 2, qs, mc->queue)))
        rc = fail(argv[1]);
    moco_stats ms;
    if (!rc && moco_step(mc, x1, x2, (const uint64_t *)perm, 0, &ms)) rc = fail("step");
    if (!rc) {
        moco_st_entry *e = malloc(sizeof *e * (size_t)(mc->q->ntensors + 1));
        int n = 0;
        for (int i = 0; e && i < mc->q->ntensors; i++) {
            const rn_tensor *t = &mc->q->tensors[i];
            if (t->kind != RN_PARAM) continue;
            e[n] = (moco_st_entry){t->name, MOCO_ST_F32, t->ndim, {0}, rn_grad(mc->q, t)};
            memcpy(e[n].shape, t->shape, sizeof t->shape);
            n++;
        }
        if (e) e[n++] = (moco_st_entry){"loss", MOCO_ST_F32, 1, {1}, &ms.loss};
        if (!e || moco_st_write(argv[2], e, n, NULL, 0)) rc = fail(argv[2]);
        free(e);
    }
    free(x1), free(x2), free(perm);
    moco_destroy(&mc);
    moco_st_destroy(&st);
    if (tune_mode() == TUNE_MEASURE) tune_save(); /* the choices, for a look with the wisdom file */
    return rc;
}
