/* dist.c: dist.h over MPI: the gradient averaging of moco_comm (owner-
 * reduced buckets: MPI_Ialltoallv, additions in rank order, MPI_Iallgatherv),
 * the small collectives the trainer needs, and the cross-rank checks of the
 * training state. The only file that includes mpi.h. */
#include "trainer/dist.h"

#include <limits.h>
#include <mpi.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "formats/clock.h"
#include "formats/errors.h"
#include "formats/rng.h"
#include "trainer/engine/tune.h"

/* Debug builds check the training state on every rank after every step. */
#if defined(MOCO_DEBUG) || !defined(__OPTIMIZE__) || defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define DIST_CHECK_DEFAULT 1
#else
#define DIST_CHECK_DEFAULT 0
#endif

/* A range handed to grad_ready is averaged in buckets of at most this many
 * floats (MPI counts are ints). */
#define DIST_MAX_BUCKET ((size_t)1 << 26)

/* A bucket's life: all-to-all started, all-to-all done, all-gather
 * started, done. */
enum { B_SENT = 1, B_RECEIVED, B_GATHER, B_DONE };

/* One bucket of gradients being averaged. Slots are kept from step to
 * step (the same buckets come every step), so only the first step allocates. */
typedef struct {
    float *g;              /* the bucket's gradients, averaged in place */
    size_t n, chunk;       /* floats; chunk = ceil(n / ranks), rank r owns [r*chunk, r*chunk + cnt[r]) */
    int phase;             /* B_SENT ... B_DONE */
    MPI_Request req;
    float *recv;           /* (ranks, chunk): this rank's chunk from every rank */
    size_t cap;            /* floats in recv */
    int *cnt, *dsp;        /* (ranks) each: chunk r's size and offset in g */
    int *rcnt, *rdsp;      /* (ranks) each: what this rank receives from rank r, and where in recv */
} bucket;

struct dist {
    int rank, size;
    int mpi;        /* MPI is in use (launched by mpirun) */
    int own_init;   /* dist_init called MPI_Init_thread */
    /* Duplicates of MPI_COMM_WORLD: every rank must start the collectives
     * of a communicator in the same order. The all-to-alls start in the
     * order backward hands the buckets over (the same everywhere); the
     * all-gathers start as the all-to-alls finish, which differs between
     * ranks, so they go on their own communicator and each waits for the
     * one before it. */
    MPI_Comm comm;  /* the small collectives */
    MPI_Comm ca;    /* bucket all-to-alls */
    MPI_Comm cg;    /* bucket all-gathers */
    moco_comm mc;
    bucket *b;      /* buckets of the current step, in the order started */
    int nb, cap;    /* used, allocated */
    int first;      /* the first bucket not done */
    int gather;     /* the next bucket whose all-gather may start */
    double wait_s;
    long check_every;
};

/* An MPI error as MOCO_EIO, naming the call and this rank. */
static int merr(const dist *d, int e, const char *call, const char *what)
{
    char s[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(e, s, &len) != MPI_SUCCESS) snprintf(s, sizeof s, "MPI error %d", e);
    return moco_err(MOCO_EIO, "%s (%s) failed on rank %d of %d: %s", call, what, d->rank, d->size, s);
}

/* MPI_TRY(d, "what for", MPI_Fn, args...): call, return the error if any */
#define MPI_TRY(d, what, fn, ...)                                \
    do {                                                         \
        int e_ = fn(__VA_ARGS__);                                \
        if (e_ != MPI_SUCCESS) return merr((d), e_, #fn, what);  \
    } while (0)

/* ----------------------------------------------------- gradient averaging */

/* Start averaging g[0..n) (n <= DIST_MAX_BUCKET): each rank's chunk r to
 * rank r. */
static int bucket_start(dist *d, float *g, size_t n)
{
    const int R = d->size;
    if (d->nb == d->cap) {
        int cap = d->cap ? 2 * d->cap : 16;
        bucket *nbk = realloc(d->b, sizeof *nbk * (size_t)cap);
        if (!nbk) return moco_err(MOCO_ENOMEM, "out of memory for gradient buckets (rank %d)", d->rank);
        memset(nbk + d->cap, 0, sizeof *nbk * (size_t)(cap - d->cap));
        d->b = nbk, d->cap = cap;
    }
    bucket *b = &d->b[d->nb];
    size_t chunk = (n + (size_t)R - 1) / (size_t)R;
    if (!b->cnt && !(b->cnt = malloc(sizeof(int) * 4 * (size_t)R)))
        return moco_err(MOCO_ENOMEM, "out of memory for gradient buckets (rank %d)", d->rank);
    b->dsp = b->cnt + R, b->rcnt = b->cnt + 2 * R, b->rdsp = b->cnt + 3 * R;
    if (b->cap < chunk * (size_t)R) {
        float *r = realloc(b->recv, sizeof(float) * chunk * (size_t)R);
        if (!r) return moco_err(MOCO_ENOMEM, "out of memory for a gradient bucket of %zu floats (rank %d)", n, d->rank);
        b->recv = r, b->cap = chunk * (size_t)R;
    }
    b->g = g, b->n = n, b->chunk = chunk;
    for (int r = 0; r < R; r++) {
        size_t lo = (size_t)r * chunk, c = lo < n ? (n - lo < chunk ? n - lo : chunk) : 0;
        b->cnt[r] = (int)c, b->dsp[r] = c ? (int)lo : 0;
    }
    /* from every rank, its part of our chunk, at r*chunk in recv */
    for (int r = 0; r < R; r++) b->rcnt[r] = b->cnt[d->rank], b->rdsp[r] = (int)((size_t)r * chunk);
    MPI_TRY(d, "gradient bucket", MPI_Ialltoallv, g, b->cnt, b->dsp, MPI_FLOAT, b->recv, b->rcnt, b->rdsp, MPI_FLOAT, d->ca, &b->req);
    b->phase = B_SENT;
    d->nb++;
    return 0;
}

/* The all-to-all of b is done (and every earlier bucket's all-gather
 * started): add this rank's chunk over the ranks in rank order, divide by
 * R, and start copying it to every rank. */
static int bucket_reduce(dist *d, bucket *b)
{
    const int R = d->size;
    const size_t c = (size_t)b->cnt[d->rank], ch = b->chunk;
    float *out = b->g + (size_t)d->rank * ch;
    const float *in = b->recv;
    if (c) {
        memcpy(out, in, sizeof(float) * c);
        for (int q = 1; q < R; q++)
            for (size_t i = 0; i < c; i++) out[i] += in[(size_t)q * ch + i];
        const float fr = (float)R;
        for (size_t i = 0; i < c; i++) out[i] = out[i] / fr;
    }
    MPI_TRY(d, "gradient bucket", MPI_Iallgatherv, MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, b->g, b->cnt, b->dsp, MPI_FLOAT, d->cg, &b->req);
    b->phase = B_GATHER;
    return 0;
}

/* Move every started bucket along; block = 1: until all are done. */
static int progress(dist *d, int block)
{
    for (int i = d->first; i < d->nb; i++) {
        bucket *b = &d->b[i];
        int flag = 0;
        if (b->phase == B_SENT || b->phase == B_GATHER) {
            if (block && (i == d->gather || b->phase == B_GATHER)) {
                MPI_TRY(d, "gradient bucket", MPI_Wait, &b->req, MPI_STATUS_IGNORE);
                flag = 1;
            } else {
                MPI_TRY(d, "gradient bucket", MPI_Test, &b->req, &flag, MPI_STATUS_IGNORE);
            }
            if (flag) b->phase++;
        }
        /* all-gathers start in bucket order */
        while (d->gather < d->nb && d->b[d->gather].phase == B_RECEIVED) {
            int rc = bucket_reduce(d, &d->b[d->gather]);
            if (rc) return rc;
            d->gather++;
        }
    }
    while (d->first < d->nb && d->b[d->first].phase == B_DONE) d->first++;
    return 0;
}

static int grad_ready(void *ctx, float *grads, size_t off, size_t n)
{
    dist *d = ctx;
    if (d->size == 1) return 0;
    for (size_t done = 0; done < n;) {
        size_t piece = n - done < DIST_MAX_BUCKET ? n - done : DIST_MAX_BUCKET;
        int rc = bucket_start(d, grads + off + done, piece);
        if (rc) return rc;
        done += piece;
    }
    return progress(d, 0);
}

static int grad_wait(void *ctx)
{
    dist *d = ctx;
    if (d->size == 1) return 0;
    double t0 = moco_now_s();
    while (d->first < d->nb) {
        int rc = progress(d, 1);
        if (rc) return rc;
    }
    d->nb = d->first = d->gather = 0;
    d->wait_s += moco_now_s() - t0;
    return 0;
}

static int allgather(void *ctx, const float *local, float *all, size_t n)
{
    dist *d = ctx;
    if (d->size == 1) {
        memmove(all, local, sizeof(float) * n);
        return 0;
    }
    if (n > INT_MAX) return moco_err(MOCO_EINVAL, "all-gather of %zu floats: more than MPI's int count", n);
    MPI_TRY(d, "keys", MPI_Allgather, local, (int)n, MPI_FLOAT, all, (int)n, MPI_FLOAT, d->comm);
    return 0;
}

static int bcast0(void *ctx, void *buf, size_t bytes) { return dist_bcast(ctx, buf, bytes, 0); }

static int step_done(void *ctx, const moco *mc)
{
    dist *d = ctx;
    return d->check_every > 0 && mc->steps % d->check_every == 0 ? dist_check_weights(d, mc) : 0;
}

/* -------------------------------------------------------------- set-up */

int dist_init(int *argc, char ***argv, dist **out)
{
    *out = NULL;
    dist *d = calloc(1, sizeof *d);
    if (!d) return moco_err(MOCO_ENOMEM, "out of memory");
    d->size = 1;
    d->comm = d->ca = d->cg = MPI_COMM_NULL;
    const char *ws = getenv("OMPI_COMM_WORLD_SIZE");
    if (ws && *ws) {
        int inited = 0, e = MPI_Initialized(&inited);
        if (e == MPI_SUCCESS && !inited) {
            int provided = 0;
            e = MPI_Init_thread(argc, argv, MPI_THREAD_FUNNELED, &provided);
            if (e == MPI_SUCCESS) d->own_init = 1;
            if (e == MPI_SUCCESS && provided < MPI_THREAD_FUNNELED) {
                moco_err(MOCO_EIO, "MPI_Init_thread: MPI_THREAD_FUNNELED requested, the library provides only level %d", provided);
                dist_finalize(&d);
                return MOCO_EIO;
            }
        }
        if (e == MPI_SUCCESS) e = MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
        if (e == MPI_SUCCESS) e = MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
        if (e == MPI_SUCCESS) e = MPI_Comm_dup(MPI_COMM_WORLD, &d->ca);
        if (e == MPI_SUCCESS) e = MPI_Comm_dup(MPI_COMM_WORLD, &d->cg);
        if (e == MPI_SUCCESS) e = MPI_Comm_rank(d->comm, &d->rank);
        if (e == MPI_SUCCESS) e = MPI_Comm_size(d->comm, &d->size);
        if (e != MPI_SUCCESS) {
            int rc = merr(d, e, "MPI start-up", "dist_init");
            dist_finalize(&d);
            return rc;
        }
        d->mpi = 1;
    }
    d->mc = (moco_comm){d->rank, d->size, d, grad_ready, grad_wait, allgather, bcast0, step_done};
    const char *ce = getenv("MOCO_DIST_CHECK");
    d->check_every = ce && *ce ? atol(ce) : DIST_CHECK_DEFAULT;
    *out = d;
    return 0;
}

int dist_rank(const dist *d) { return d->rank; }
int dist_size(const dist *d) { return d->size; }
long dist_check_every(const dist *d) { return d->check_every; }
const moco_comm *dist_comm(dist *d) { return &d->mc; }
double dist_wait_seconds(const dist *d) { return d->wait_s; }

void dist_abort(dist *d, int code)
{
    if (d && d->mpi) MPI_Abort(MPI_COMM_WORLD, code);
}

void dist_finalize(dist **pd)
{
    dist *d = pd ? *pd : NULL;
    if (!d) return;
    for (int i = 0; i < d->cap; i++) free(d->b[i].recv), free(d->b[i].cnt);
    free(d->b);
    int fin = 0;
    MPI_Finalized(&fin);
    MPI_Comm *cs[3] = {&d->comm, &d->ca, &d->cg};
    for (int i = 0; i < 3; i++)
        if (*cs[i] != MPI_COMM_NULL && !fin) MPI_Comm_free(cs[i]);
    if (d->own_init && !fin) MPI_Finalize();
    free(d);
    *pd = NULL;
}

/* --------------------------------------------------- small collectives */

int dist_bcast(dist *d, void *buf, size_t n, int root)
{
    if (root < 0 || root >= d->size) return moco_err(MOCO_EINVAL, "broadcast from rank %d of %d", root, d->size);
    if (d->size == 1) return 0;
    for (size_t off = 0; off < n;) {
        size_t c = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        MPI_TRY(d, "broadcast", MPI_Bcast, (char *)buf + off, (int)c, MPI_BYTE, root, d->comm);
        off += c;
    }
    return 0;
}

/* MPI_Allgather; with idle, non-blocking, and once the wait has lasted half
 * a second idle(arg) runs between tests (then about every millisecond). */
static int allgather_d(dist *d, const double *v, int c, double *all, void (*idle)(void *), void *arg)
{
    int e;
    if (!idle) {
        if ((e = MPI_Allgather(v, c, MPI_DOUBLE, all, c, MPI_DOUBLE, d->comm)) != MPI_SUCCESS)
            return merr(d, e, "MPI_Allgather", "dist_sum_d");
        return 0;
    }
    MPI_Request req;
    if ((e = MPI_Iallgather(v, c, MPI_DOUBLE, all, c, MPI_DOUBLE, d->comm, &req)) != MPI_SUCCESS)
        return merr(d, e, "MPI_Iallgather", "dist_sum_d");
    double t0 = moco_now_s();
    for (;;) {
        int flag = 0;
        if ((e = MPI_Test(&req, &flag, MPI_STATUS_IGNORE)) != MPI_SUCCESS) return merr(d, e, "MPI_Test", "dist_sum_d");
        if (flag) return 0;
        if (moco_now_s() - t0 >= 0.5) {
            idle(arg);
            usleep(1000);
        }
    }
}

int dist_sum_d(dist *d, double *v, int n) { return dist_sum_d_idle(d, v, n, NULL, NULL); }

int dist_sum_d_idle(dist *d, double *v, int n, void (*idle)(void *), void *arg)
{
    if (d->size == 1 || n <= 0) return 0;
    enum { CAP = 8192 };
    double stack[CAP], *all = stack;
    const int R = d->size;
    int per = R <= CAP ? CAP / R : 1;
    if (R > CAP && !(all = malloc(sizeof(double) * (size_t)R)))
        return moco_err(MOCO_ENOMEM, "out of memory summing over %d ranks", R);
    int rc = 0;
    for (int i = 0; i < n && !rc; i += per) {
        int c = n - i < per ? n - i : per;
        if ((rc = allgather_d(d, v + i, c, all, idle, arg))) break;
        for (int j = 0; j < c; j++) {
            double s = all[j];
            for (int r = 1; r < R; r++) s += all[(size_t)r * c + j];
            v[i + j] = s;
        }
    }
    if (all != stack) free(all);
    return rc;
}

int dist_min_i(dist *d, int *v)
{
    if (d->size == 1) return 0;
    MPI_TRY(d, "dist_min_i", MPI_Allreduce, MPI_IN_PLACE, v, 1, MPI_INT, MPI_MIN, d->comm);
    return 0;
}

int dist_bor(dist *d, uint8_t *bits, size_t n)
{
    if (d->size == 1) return 0;
    for (size_t off = 0; off < n;) {
        size_t c = n - off < ((size_t)1 << 30) ? n - off : ((size_t)1 << 30);
        MPI_TRY(d, "dist_bor", MPI_Allreduce, MPI_IN_PLACE, bits + off, (int)c, MPI_UINT8_T, MPI_BOR, d->comm);
        off += c;
    }
    return 0;
}

int dist_allreduce_lib(dist *d, float *buf, size_t n)
{
    if (d->size == 1) return 0;
    for (size_t off = 0; off < n;) {
        size_t c = n - off < DIST_MAX_BUCKET ? n - off : DIST_MAX_BUCKET;
        MPI_TRY(d, "dist_allreduce_lib", MPI_Allreduce, MPI_IN_PLACE, buf + off, (int)c, MPI_FLOAT, MPI_SUM, d->comm);
        off += c;
    }
    return 0;
}

/* ------------------------------------------------------ state checks */

/* A 64-bit hash of n bytes, continuing from h: four multiply-xorshift lanes
 * over 8-byte words (each step a bijection of the lane and of the word, so
 * one differing word always changes the result), then mixed. */
static uint64_t hash_bytes(uint64_t h, const void *p, size_t n)
{
    const unsigned char *b = p;
    uint64_t l[4] = {h ^ 0x243F6A8885A308D3ull, h ^ 0x13198A2E03707344ull, h ^ 0xA4093822299F31D0ull, h ^ 0x082EFA98EC4E6C89ull};
    size_t i = 0;
    for (; i + 32 <= n; i += 32)
        for (int j = 0; j < 4; j++) {
            uint64_t w;
            memcpy(&w, b + i + 8 * (size_t)j, 8);
            l[j] = (l[j] ^ w) * 0x9E3779B97F4A7C15ull;
            l[j] ^= l[j] >> 32;
        }
    for (; i < n; i++) {
        l[0] = (l[0] ^ b[i]) * 0x9E3779B97F4A7C15ull;
        l[0] ^= l[0] >> 32;
    }
    return moco_mix64(l[0] ^ moco_mix64(l[1] ^ moco_mix64(l[2] ^ moco_mix64(l[3] ^ (uint64_t)n))));
}

/* Hashes h[0..np) of this rank: which part differs across ranks first, and
 * the first rank whose hash of it differs from rank 0's. *part = -1 when
 * all agree. Collective; allocates nothing. */
static int first_diff(dist *d, const uint64_t *h, int np, int *part, int *rank, uint64_t *h0, uint64_t *hr)
{
    enum { MAXP = 16 };
    uint64_t v[2 * MAXP];
    *part = -1;
    if (d->size == 1) return 0;
    for (int i = 0; i < np; i++) v[i] = h[i], v[np + i] = ~h[i];
    MPI_TRY(d, "state check", MPI_Allreduce, MPI_IN_PLACE, v, 2 * np, MPI_UINT64_T, MPI_MIN, d->comm);
    for (int i = 0; i < np && *part < 0; i++)
        if (v[i] != ~v[np + i]) *part = i; /* min != max */
    if (*part < 0) return 0;
    *h0 = h[*part];
    MPI_TRY(d, "state check", MPI_Bcast, h0, 1, MPI_UINT64_T, 0, d->comm);
    *rank = h[*part] != *h0 ? d->rank : INT_MAX;
    MPI_TRY(d, "state check", MPI_Allreduce, MPI_IN_PLACE, rank, 1, MPI_INT, MPI_MIN, d->comm);
    *hr = h[*part];
    MPI_TRY(d, "state check", MPI_Bcast, hr, 1, MPI_UINT64_T, *rank, d->comm);
    return 0;
}

int dist_same(dist *d, const void *buf, size_t n, const char *what)
{
    uint64_t h = hash_bytes(0, buf, n), h0 = 0, hr = 0;
    int part, rank = 0, rc = first_diff(d, &h, 1, &part, &rank, &h0, &hr);
    if (rc || part < 0) return rc;
    return moco_err(MOCO_EINVAL, "ranks differ in %s: rank %d's %zu bytes hash to %016llx, rank 0's to %016llx", what, rank, n,
                    (unsigned long long)hr, (unsigned long long)h0);
}

int dist_check_weights(dist *d, const moco *mc)
{
    const resnet *q = mc->q, *k = mc->k;
    static const char *names[] = {"query encoder parameters", "SGD momentum buffers", "key encoder parameters",
                                  "BN running statistics", "BN batch counters", "queue", "queue pointer and step count"};
    const int64_t ps[2] = {mc->ptr, mc->steps};
    uint64_t h[7];
    h[0] = hash_bytes(0, q->params, sizeof(float) * q->nparams);
    h[1] = hash_bytes(0, q->momentum, sizeof(float) * q->nparams);
    h[2] = hash_bytes(0, k->params, sizeof(float) * k->nparams);
    h[3] = hash_bytes(hash_bytes(0, q->buffers, sizeof(float) * q->nbuffers), k->buffers, sizeof(float) * k->nbuffers);
    h[4] = hash_bytes(hash_bytes(0, q->counts, sizeof(int64_t) * q->ncounts), k->counts, sizeof(int64_t) * k->ncounts);
    h[5] = hash_bytes(0, mc->queue, sizeof(float) * (size_t)mc->cfg.enc.dim * (size_t)mc->cfg.K);
    h[6] = hash_bytes(0, ps, sizeof ps);
    uint64_t h0 = 0, hr = 0;
    int part, rank = 0, rc = first_diff(d, h, 7, &part, &rank, &h0, &hr);
    if (rc || part < 0) return rc;
    return moco_err(MOCO_ENUMERIC, "ranks diverged after step %lld: the %s of rank %d differ from rank 0's (hash %016llx vs %016llx)",
                    (long long)mc->steps, names[part], rank, (unsigned long long)hr, (unsigned long long)h0);
}

int dist_moco_new(dist *d, const moco_cfg *cfg, moco **out)
{
    const int rank = d ? d->rank : 0, R = d ? d->size : 1;
    double go = 0;
    int rc = 0;
    if (rank && (rc = dist_sum_d(d, &go, 1))) return rc; /* after rank 0's model */
    if ((rc = moco_new(cfg, out))) return rc;              /* a failing rank aborts the job (dist_abort) */
    tune_keep();
    if (!rank && R > 1) rc = dist_sum_d(d, &go, 1);
    return rc;
}
