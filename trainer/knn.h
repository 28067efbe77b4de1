/* knn.h: the weighted k-nearest-neighbour classifier used to monitor MoCo
 * (InstDisc, and the official MoCo CIFAR-10 demo's knn_predict): each query
 * feature votes with its k most similar bank features (cosine similarity of
 * L2-normalised features, one sgemm per chunk of queries), each vote
 * weighted by exp(sim / t); the class with the largest sum wins (the lowest
 * class index on a tie). */
#ifndef TRAINER_KNN_H
#define TRAINER_KNN_H

#include <stdint.h>

/* bank (nbank, dim) and query (nquery, dim) are L2-normalised rows;
 * bank_labels in [0, nclasses). Writes pred[nquery]. Returns 0, MOCO_EINVAL
 * (k < 1, a label out of range, empty bank) or MOCO_ENOMEM. */
int knn_classify(int32_t *pred, const float *bank, const int32_t *bank_labels, int64_t nbank, const float *query,
                 int64_t nquery, int dim, int nclasses, int k, float t);

/* The same, by a full sort per query (the tests' reference). */
int knn_classify_ref(int32_t *pred, const float *bank, const int32_t *bank_labels, int64_t nbank, const float *query,
                     int64_t nquery, int dim, int nclasses, int k, float t);

#endif
