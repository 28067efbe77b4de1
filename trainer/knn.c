/* knn.c: weighted kNN on normalised features (see knn.h). Similarities of a
 * chunk of queries against the whole bank come from one cblas_sgemm; the top
 * k of each row are kept in a min-heap, so most of the bank is rejected with
 * one comparison. */
#include "trainer/knn.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "formats/errors.h"

#define CHUNK 256

typedef struct {
    float s;
    int64_t i;
} hent;

/* min-heap on s; ties: larger index is "smaller" so that, among equal
 * similarities, the lower bank index is kept (a deterministic choice) */
static int less(hent a, hent b) { return a.s < b.s || (a.s == b.s && a.i > b.i); }

static void sift_down(hent *h, int n, int i)
{
    for (;;) {
        int l = 2 * i + 1, r = l + 1, m = i;
        if (l < n && less(h[l], h[m])) m = l;
        if (r < n && less(h[r], h[m])) m = r;
        if (m == i) return;
        hent t = h[i]; h[i] = h[m]; h[m] = t;
        i = m;
    }
}

static int vote(const hent *top, int k, const int32_t *labels, int nclasses, float t, double *score)
{
    /* weights exp(s / t), each scaled by exp(-max s / t): the same vote, and no overflow to
     * inf however small t is (at t 0.001 every weight was inf, and class 0 won every tie) */
    memset(score, 0, sizeof *score * (size_t)nclasses);
    float smax = top[0].s;
    for (int j = 1; j < k; j++) smax = top[j].s > smax ? top[j].s : smax;
    for (int j = 0; j < k; j++) score[labels[top[j].i]] += exp(((double)top[j].s - smax) / t);
    int best = 0;
    for (int c = 1; c < nclasses; c++)
        if (score[c] > score[best]) best = c;
    return best;
}

static int check(const int32_t *labels, int64_t nbank, int nclasses, int k)
{
    if (k < 1 || nbank < 1 || nclasses < 1) return moco_err(MOCO_EINVAL, "kNN: k %d, bank of %lld, %d classes", k, (long long)nbank, nclasses);
    for (int64_t i = 0; i < nbank; i++)
        if (labels[i] < 0 || labels[i] >= nclasses)
            return moco_err(MOCO_EINVAL, "kNN: bank sample %lld has label %d, not in [0, %d)", (long long)i, labels[i], nclasses);
    return 0;
}

int knn_classify(int32_t *pred, const float *bank, const int32_t *labels, int64_t nbank, const float *query, int64_t nq,
                 int dim, int nclasses, int k, float t)
{
    int rc = check(labels, nbank, nclasses, k);
    if (rc) return rc;
    if (k > nbank) k = (int)nbank;
    float *sim = malloc(sizeof *sim * (size_t)CHUNK * (size_t)nbank);
    hent *h = malloc(sizeof *h * (size_t)k);
    double *score = malloc(sizeof *score * (size_t)nclasses);
    if (!sim || !h || !score) {
        rc = moco_err(MOCO_ENOMEM, "kNN: out of memory for %d x %lld similarities", CHUNK, (long long)nbank);
        goto out;
    }
    for (int64_t q0 = 0; q0 < nq; q0 += CHUNK) {
        int m = (int)(nq - q0 < CHUNK ? nq - q0 : CHUNK);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, m, (int)nbank, dim, 1.0f, query + q0 * dim, dim, bank, dim, 0.0f,
                    sim, (int)nbank);
        for (int r = 0; r < m; r++) {
            const float *row = sim + (size_t)r * (size_t)nbank;
            for (int j = 0; j < k; j++) h[j] = (hent){row[j], j};
            for (int j = k / 2 - 1; j >= 0; j--) sift_down(h, k, j);
            for (int64_t j = k; j < nbank; j++) {
                hent e = {row[j], j};
                if (less(h[0], e)) {
                    h[0] = e;
                    sift_down(h, k, 0);
                }
            }
            pred[q0 + r] = vote(h, k, labels, nclasses, t, score);
        }
    }
out:
    free(sim);
    free(h);
    free(score);
    return rc;
}

static int cmp_desc(const void *a, const void *b)
{
    const hent *x = a, *y = b;
    if (x->s != y->s) return x->s > y->s ? -1 : 1;
    return x->i < y->i ? -1 : x->i > y->i;
}

int knn_classify_ref(int32_t *pred, const float *bank, const int32_t *labels, int64_t nbank, const float *query, int64_t nq,
                     int dim, int nclasses, int k, float t)
{
    int rc = check(labels, nbank, nclasses, k);
    if (rc) return rc;
    if (k > nbank) k = (int)nbank;
    hent *all = malloc(sizeof *all * (size_t)nbank);
    double *score = malloc(sizeof *score * (size_t)nclasses);
    if (!all || !score) { free(all); free(score); return moco_err(MOCO_ENOMEM, "kNN: out of memory"); }
    for (int64_t q = 0; q < nq; q++) {
        for (int64_t i = 0; i < nbank; i++) {
            double s = 0;
            for (int d = 0; d < dim; d++) s += (double)query[q * dim + d] * bank[i * dim + d];
            all[i] = (hent){(float)s, i};
        }
        qsort(all, (size_t)nbank, sizeof *all, cmp_desc);
        pred[q] = vote(all, k, labels, nclasses, t, score);
    }
    free(all);
    free(score);
    return 0;
}
