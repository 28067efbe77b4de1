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


_ST_DTYPES = {"F32": np.float32, "F64": np.float64, "F16": np.float16, "I64": np.int64, "I32": np.int32, "U8": np.uint8}


def load_safetensors(path):
    """The tensors of a safetensors file (`moco export`'s, a checkpoint) as a
    dict of torch tensors, and its __metadata__ as load_safetensors.metadata:
    for model.load_state_dict(load_safetensors(FILE), strict=False) where the
    safetensors package is not installed (Debian has none). A file that is not
    one, or is cut short, raises ValueError naming it."""
    with open(path, "rb") as f:
        b = f.read()
    n = int.from_bytes(b[:8], "little") if len(b) >= 8 else -1
    if n < 2 or 8 + n > len(b):
        raise ValueError("%s: not a safetensors file (header length %d, file %d bytes)" % (path, n, len(b)))
    try:
        import json
        h = json.loads(b[8:8 + n])
    except ValueError as e:
        raise ValueError("%s: not a safetensors file (its header: %s)" % (path, e)) from None
    load_safetensors.metadata = h.pop("__metadata__", {})
    out, data = {}, memoryview(b)[8 + n:]
    for k, v in h.items():
        dt = _ST_DTYPES.get(v.get("dtype"))
        lo, hi = v.get("data_offsets", (0, -1))
        count = int(np.prod(v.get("shape", []), dtype=np.int64))
        if dt is None or not 0 <= lo <= hi <= len(data) or hi - lo != count * np.dtype(dt).itemsize:
            raise ValueError("%s: tensor %s: dtype %s, shape %s, bytes %s-%s of %d: not readable"
                             % (path, k, v.get("dtype"), v.get("shape"), lo, hi, len(data)))
        out[k] = _torch.from_numpy(np.frombuffer(data[lo:hi], dt).reshape(v["shape"]).copy())
    return out
