/* normalize.h: the input normalisation constants, their one home: a view's
 * channel c goes in as (x / 255 - mean[c]) / std[c] (formats/README.md,
 * "Normalisation"). cifar: the official CIFAR-10 demo's; imagenet:
 * torchvision's, main_moco.py's and main_lincls.py's; none: as sent. Each is
 * an initialiser of float[3] (R, G, B). moco_stream.torch.MEAN_STD is the
 * Python copy; tools/python/tests/test_constants.py compares the two,
 * decimal literal for decimal literal. */
#ifndef MOCO_NORMALIZE_H
#define MOCO_NORMALIZE_H

#define MOCO_NORM_CIFAR_MEAN {0.4914f, 0.4822f, 0.4465f}
#define MOCO_NORM_CIFAR_STD {0.2023f, 0.1994f, 0.2010f}
#define MOCO_NORM_IMAGENET_MEAN {0.485f, 0.456f, 0.406f}
#define MOCO_NORM_IMAGENET_STD {0.229f, 0.224f, 0.225f}
#define MOCO_NORM_NONE_MEAN {0.0f, 0.0f, 0.0f}
#define MOCO_NORM_NONE_STD {1.0f, 1.0f, 1.0f}

#endif
