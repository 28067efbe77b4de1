/* evalset.h: a labelled dataset LMDB read as evaluation inputs, for the kNN
 * monitor and linear evaluation: each image decoded (raw pixels, JPEG
 * through TurboJPEG, anything else through libvips), resized so that its
 * shorter side is R = evalset_resize_side(size) and centre-cropped to
 * size x size, grey replicated to 3 channels, normalised with the recipe's
 * mean and std, as float NCHW. No augmentation.
 *
 * R: main_lincls.py's validation view, Resize(256) + CenterCrop(224), at
 * its ratio 0.875 (R = floor(size / 0.875): 256 at 224) above
 * EVALSET_SMALL_SIDE; at CIFAR sizes (size <= 64, where --normalize auto
 * is CIFAR's too) R = size: the official CIFAR-10 demo evaluates the 32x32
 * image as it is (no crop margin).
 *
 * This is torchvision 0.14's Resize(R), CenterCrop(size), ToTensor(),
 * Normalize(mean, std) on a PIL image (Pillow 9.4), bit for bit on 8-bit
 * RGB / grey JPEG and PNG (tests/test_evalset.c): the same JPEG decode
 * (libjpeg-turbo, ISLOW IDCT, fancy upsampling), Pillow's BILINEAR resize
 * (antialiased when shrinking, 22-bit fixed point, uint8 after each pass),
 * the long side int(size * long / short), the crop offsets
 * int(round((len - size) / 2.0)) (half to even), uint8 / 255 in float32.
 * Alpha (RGBA, grey + alpha) is dropped, as PIL's convert("RGB") drops it
 * (tests/test_evalset.c). Not covered: palette, 16-bit and CMYK images
 * (converted by libvips here). */
#ifndef TRAINER_EVALSET_H
#define TRAINER_EVALSET_H

#include <stdint.h>

/* Views of at most this side are "small" (CIFAR-like): --normalize auto
 * takes CIFAR-10's mean and std there (evalmodel_norm), ImageNet's above,
 * and the evaluation view has no crop margin there (evalset_resize_side). */
#define EVALSET_SMALL_SIDE 64

typedef struct evalset evalset;

/* Open path read-only. Returns 0 or an error naming it (MOCO_ENOTFOUND,
 * MOCO_ECORRUPT, ...). The dataset must be labelled (no label -1) and hold
 * at least one sample (MOCO_EINVAL "PATH holds no samples"). */
int evalset_open(const char *path, int size, const float mean[3], const float std[3], evalset **out);
/* The same for any dataset (labels -1 where it has none; empty allowed);
 * evalset_labelled says whether it has them. */
int evalset_open_any(const char *path, int size, const float mean[3], const float std[3], evalset **out);
int evalset_labelled(const evalset *e);
void evalset_destroy(evalset **e);

int64_t evalset_count(const evalset *e);
int evalset_classes(const evalset *e);
/* Labels of e from now on as indices of ref's classes, matched by name (a test
 * set whose class folders differ from the training set's: one missing, say,
 * shifts every index after it). MOCO_EINVAL naming both datasets when e has a
 * class ref lacks. Then ref's evalset_classes() is the count for both. */
int evalset_classes_of(evalset *e, const evalset *ref);

/* Samples [start, start + n) into x (n, 3, size, size) and labels[n].
 * Returns 0, or MOCO_ECORRUPT naming the record that cannot be decoded. */
int evalset_read(evalset *e, int64_t start, int n, float *x, int32_t *labels);
/* The same samples before normalisation: px (n, size, size, 3) uint8 HWC,
 * the pixels torchvision's ToTensor would see. Same errors. */
int evalset_read_u8(evalset *e, int64_t start, int n, uint8_t *px, int32_t *labels);

/* The side the shorter side is resized to before the centre crop of size:
 * size itself up to EVALSET_SMALL_SIDE, else size * 8 / 7 (floor: 256 at
 * 224, main_lincls.py's crop ratio 0.875). */
int evalset_resize_side(int size);
/* Resize(R) + CenterCrop(size) geometry for an h x w image (R =
 * evalset_resize_side(size)): the resized rh x rw and the crop's top-left
 * corner. */
void evalset_geometry(int h, int w, int size, int *rh, int *rw, int *top, int *left);
/* Resize(R) + CenterCrop(size) of one image, as Pillow's
 * Image.resize(BILINEAR) then crop: out (size, size, c) from in (h, w, c),
 * c channels interleaved (any c >= 1). Computes only the cropped outputs.
 * Returns 0 or MOCO_ENOMEM. */
int evalset_resize_crop(uint8_t *out, int size, const uint8_t *in, int h, int w, int c);
/* The plain reference of the same (whole image resized, then cropped), for
 * the tests; same results bit for bit. */
int evalset_resize_crop_ref(uint8_t *out, int size, const uint8_t *in, int h, int w, int c);

#endif
