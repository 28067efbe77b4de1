"""moco_stream.torch: the stream as a PyTorch IterableDataset.

PairDataset yields (xq, xk, labels, indices, epoch): xq and xk float32
tensors N x C x H x W normalised as formats/README.md "Normalisation" says,
(x / 255 - mean[c]) / std[c] with the constants of `recipe` (a recipe,
cifar, v1, v2, lincls, or a checkpoint's normalize, cifar, imagenet,
none: MEAN_STD); labels and indices
int64 tensors (N,); epoch an int. C is kept as sent: a 1-channel view stays
1 channel and uses the first mean and std constant (repeat it yourself if
your network wants 3); mean and std of 1 value apply to every channel.
Use DataLoader(ds, batch_size=None, num_workers=0):
the stream already receives in a background thread, and a second process
would be a second consumer (the loader refuses it); in a worker (num_workers
> 0) iterating raises StreamError. ds.stream is the
PairStream, for state() in your checkpoints.
"""
import numpy as np
import torch as _torch

from . import PairStream, StreamError

MEAN_STD = {
    "cifar": ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010)),
    "v1": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "v2": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "lincls": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    # the names a checkpoint's config "normalize" takes (formats/README.md, "Normalisation")
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
}


def to_float(x, mean, std):
    """uint8 N x H x W x C (numpy) -> normalised float32 N x C x H x W tensor."""
    c = x.shape[3]
    m, s = (mean[:1], std[:1]) if c == 1 else (mean[:c], std[:c])
    if len(m) == 1 and c > 1:     # one constant for every channel
        m, s = m * c, s * c
    t = _torch.from_numpy(np.ascontiguousarray(x.transpose(0, 3, 1, 2), dtype=np.float32))
    scale = _torch.tensor([1.0 / (255.0 * v) for v in s], dtype=_torch.float32).view(1, c, 1, 1)
    shift = _torch.tensor([a / b for a, b in zip(m, s)], dtype=_torch.float32).view(1, c, 1, 1)
    return t.mul_(scale).sub_(shift)


class PairDataset(_torch.utils.data.IterableDataset):
    """IterableDataset over a `moco run --serve` stream; see the module docstring."""

    def __init__(self, endpoint, keys=None, recipe="cifar", mean=None, std=None, **kwargs):
        super().__init__()
        if mean is None or std is None:
            if recipe not in MEAN_STD:
                raise ValueError("unknown recipe %r (one of %s) and no mean/std given"
                                 % (recipe, ", ".join(sorted(MEAN_STD))))
            mean = MEAN_STD[recipe][0] if mean is None else mean
            std = MEAN_STD[recipe][1] if std is None else std
        self.mean, self.std = tuple(float(v) for v in mean), tuple(float(v) for v in std)
        if len(self.mean) != len(self.std) or len(self.mean) not in (1, 3):
            raise ValueError("mean and std need 1 value (for every channel) or 3 (one per channel; a 1-channel "
                             "view uses the first), not %d and %d" % (len(self.mean), len(self.std)))
        if not all(v > 0 for v in self.std):
            raise ValueError("std must be > 0: %r" % (self.std,))
        self.stream = PairStream(endpoint, keys=keys, **kwargs)

    def __iter__(self):
        if _torch.utils.data.get_worker_info() is not None:
            raise StreamError("moco_stream.torch: PairDataset of %s in a DataLoader worker: use num_workers=0 "
                              "(the stream receives in a thread of the creating process; a worker's copy would "
                              "yield pairs already acknowledged there)" % self.stream.endpoint)
        self.stream.check_process()
        for b in self.stream:
            yield (to_float(b.xq, self.mean, self.std), to_float(b.xk, self.mean, self.std),
                   _torch.from_numpy(b.labels), _torch.from_numpy(b.indices), b.epoch)

    def state(self):
        return self.stream.state()

    def close(self):
        self.stream.close()
