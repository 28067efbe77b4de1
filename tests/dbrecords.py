"""dbrecords.py: the records of a moco dataset's data.mdb, for the tests'
Python checks (formats/record.h: the 32-byte header "MOCR", version, then
encoding u8, channels u8, label i32, width u32, height u32, payload length
u32, the payload after it). Found by scanning the file for the magic, which
is enough for the small datasets the tests make: records(path) yields
(encoding, channels, label, width, height, payload) in file order.
patch_first(path, offset, fmt, value, crc=True) rewrites a field of the first
record's header in place and, for a version 2 record, its header CRC (bytes
28..31, the CRC-32 of bytes 0..27) unless crc is False: a header false but
consistent, as a hostile or buggy writer makes it, or (crc False) damaged.
against_pil(src, path, ...) compares each class's first record with PIL's
convert("RGB") of the class folder's first file (sorted), for tests that hold
mkdb to PIL pixel for pixel."""
import io
import os
import struct
import zlib


def records(path):
    b = open(path, "rb").read()
    i = b.find(b"MOCR")
    while i >= 0:
        enc, ch, label, w, h, n = struct.unpack_from("<BBiIII", b, i + 6)
        yield enc, ch, label, w, h, b[i + 32:i + 32 + n]
        i = b.find(b"MOCR", i + 32 + n)


def patch_first(path, offset, fmt, value, crc=True):
    b = bytearray(open(path, "rb").read())
    i = b.find(b"MOCR")
    assert i >= 0, path
    old = struct.unpack_from(fmt, b, i + offset)[0]
    struct.pack_into(fmt, b, i + offset, value)
    if crc and struct.unpack_from("<H", b, i + 4)[0] >= 2:
        struct.pack_into("<I", b, i + 28, zlib.crc32(bytes(b[i:i + 28])))
    open(path, "wb").write(b)
    return old


def against_pil(src, path, mode=None, png=True, channels=None, skip=()):
    """(classes seen, mismatches): for each class folder of src (sorted, as
    mkdb labels them) but those in skip, its first record in path against
    PIL's convert("RGB") of the folder's first file: the same pixels, and
    stored as a PNG (png) with `channels` channels (when given). mode, when
    given, is asserted of every source image."""
    import numpy as np
    from PIL import Image
    classes = sorted(os.listdir(src))
    seen, bad = set(), []
    for enc, ch, label, w, h, payload in records(path):
        cls = classes[label]
        if cls in seen:
            continue
        seen.add(cls)
        first = sorted(os.listdir(os.path.join(src, cls)))[0]
        im = Image.open(os.path.join(src, cls, first))
        assert mode is None or im.mode == mode, (cls, im.mode)
        want = np.array(im.convert("RGB")).astype(int)
        got = np.array(Image.open(io.BytesIO(payload)).convert("RGB")).astype(int)
        stored = (not png or (enc == 2 and payload[:8] == b"\x89PNG\r\n\x1a\n")) and (channels is None or ch == channels)
        if stored and got.shape == want.shape and (got == want).all():
            continue
        if got.shape != want.shape:
            diff = "shape %s against %s" % (got.shape, want.shape)
        else:
            d = np.abs(got - want).reshape(-1, 3)
            diff = "mean |diff| %s, max %d, %d of %d values" % (d.mean(0).round(1), d.max(), (d != 0).sum(), d.size)
        bad.append("%s: encoding %d, %d channels, %s" % (cls, enc, ch, diff))
    want_seen = set(classes) - set(skip)
    if seen != want_seen:
        bad.append("classes without a record: %s; unexpected: %s" % (sorted(want_seen - seen), sorted(seen - want_seen)))
    return seen, bad
