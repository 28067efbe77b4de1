/* evalset.h: a labelled dataset LMDB read as evaluation inputs, for the kNN
 * monitor and linear evaluation: each image decoded (raw pixels, JPEG
 * through TurboJPEG, anything else through libvips), resized so that its
 * shorter side is `size` (antialiased) and centre-cropped to size x size
 * (torchvision's Resize(size) + CenterCrop(size); images already size x size
 * are untouched), grey replicated to 3 channels, normalised with the
 * recipe's mean and std, as float NCHW. No augmentation. */
#ifndef TRAINER_EVALSET_H
#define TRAINER_EVALSET_H

#include <stdint.h>

typedef struct evalset evalset;

/* Open path read-only. Returns 0 or an error naming it (MOCO_ENOTFOUND,
 * MOCO_ECORRUPT, ...). The dataset must be labelled (no label -1). */
int evalset_open(const char *path, int size, const float mean[3], const float std[3], evalset **out);
/* The same for any dataset (labels -1 where it has none); evalset_labelled
 * says whether it has them. */
int evalset_open_any(const char *path, int size, const float mean[3], const float std[3], evalset **out);
int evalset_labelled(const evalset *e);
void evalset_destroy(evalset **e);

int64_t evalset_count(const evalset *e);
int evalset_classes(const evalset *e);

/* Samples [start, start + n) into x (n, 3, size, size) and labels[n].
 * Returns 0, or MOCO_ECORRUPT naming the record that cannot be decoded. */
int evalset_read(evalset *e, int64_t start, int n, float *x, int32_t *labels);

#endif
