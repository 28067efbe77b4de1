"""moco_stream._arrays: the arrays of a PairStream, apart from its protocol.

It promises: Batch, the tuple a PairStream yields; bitmaps of the indices of
an epoch (bit i%8 of byte i/8, as a resume state's `delivered`), counted a
chunk at a time (never a temporary of 8 bytes a sample); and Batches built
from a pair message's views, as views of the received frame where they can
be, copied where a kept part would hold a much larger frame alive.
"""
import collections

import numpy as np

Batch = collections.namedtuple("Batch", "xq xk labels indices epoch")


def _new_bitmap(count):
    # np.zeros is calloc'd: pages are touched only when bits are set
    return np.zeros((count + 7) // 8, dtype=np.uint8)


_POPCOUNT8 = np.array([bin(i).count("1") for i in range(256)], dtype=np.uint8)


def _bits_count(bitmap, chunk=1 << 22):
    # set bits, a chunk at a time: np.unpackbits made a temporary 8 times the
    # bitmap (8 bytes a sample: 64 GiB at the largest count a WELCOME may say)
    return sum(int(_POPCOUNT8[bitmap[i:i + chunk]].sum(dtype=np.int64)) for i in range(0, len(bitmap), chunk))


def _bits_test(bitmap, idx):
    return (bitmap[idx >> 3] >> (idx & 7).astype(np.uint8)) & 1


def _bits_set(bitmap, idx):
    np.bitwise_or.at(bitmap, idx >> 3, (np.uint8(1) << (idx & 7).astype(np.uint8)))


def _first_occurrence(idx):
    """True where idx[i] did not occur before i."""
    if len(idx) < 2:
        return np.ones(len(idx), dtype=bool)
    _, first = np.unique(idx, return_index=True)
    m = np.zeros(len(idx), dtype=bool)
    m[first] = True
    return m


def _build_batches(hdr, size, views, sel, single):
    """Batches (one per run of equal shape) of the selected pairs, as views
    of the frame where possible."""
    n = len(hdr)
    if single:
        h, w, c = int(hdr["height"][0]), int(hdr["width"][0]), int(hdr["channels"][0])
        xq = np.frombuffer(views[0], np.uint8).reshape(1, h, w, c)
        xk = np.frombuffer(views[1], np.uint8).reshape(1, h, w, c)
        return [Batch(xq, xk, hdr["label"].astype(np.int64), hdr["index"].astype(np.int64),
                      int(hdr["epoch"][0]))]
    buf = np.frombuffer(views[0], np.uint8)
    shp = np.stack([hdr["height"], hdr["width"], hdr["channels"]], 1).astype(np.int64)
    out = []
    if (shp == shp[0]).all():
        groups = [(0, n)]
    else:      # runs of one shape
        change = np.flatnonzero((shp[1:] != shp[:-1]).any(1)) + 1
        bounds = [0] + change.tolist() + [n]
        groups = list(zip(bounds[:-1], bounds[1:]))
    offs = np.concatenate([[0], np.cumsum(2 * size)])
    epoch = int(hdr["epoch"][np.flatnonzero(sel)[0]])
    for a, b in groups:
        s = sel[a:b]
        if not s.any():
            continue
        h, w, c = (int(v) for v in shp[a])
        blk = buf[offs[a]:offs[b]].reshape(b - a, 2, h, w, c)
        if not s.all():
            blk = blk[s]                       # a copy of the kept pairs only
        out.append(Batch(blk[:, 0], blk[:, 1], hdr["label"][a:b][s].astype(np.int64),
                         hdr["index"][a:b][s].astype(np.int64), epoch))
    return out


def _root_nbytes(a):
    """The size of the buffer (a received frame, say) under an array view."""
    while isinstance(a, np.ndarray) and a.base is not None:
        a = a.base
    if isinstance(a, np.ndarray):
        return a.nbytes
    try:
        return memoryview(a).nbytes
    except TypeError:
        return 0


def _compact(b):
    """b, or a copy of its views when one is under a quarter of the buffer it keeps alive (so a big
    message cut into batches is copied a bounded number of times, not at every cut)."""
    if all(4 * x.nbytes >= _root_nbytes(x) for x in (b.xq, b.xk)):
        return b
    return Batch(np.array(b.xq), np.array(b.xk), b.labels, b.indices, b.epoch)


def _concat(parts):
    if len(parts) == 1:
        return parts[0]
    return Batch(np.concatenate([p.xq for p in parts]), np.concatenate([p.xk for p in parts]),
                 np.concatenate([p.labels for p in parts]),
                 np.concatenate([p.indices for p in parts]), parts[0].epoch)
