"""dbrecords.py: the records of a moco dataset's data.mdb, for the tests'
Python checks (formats/record.h: the 32-byte header "MOCR", version, then
encoding u8, channels u8, label i32, width u32, height u32, payload length
u32, the payload after it). Found by scanning the file for the magic, which
is enough for the small datasets the tests make: records(path) yields
(encoding, channels, label, width, height, payload) in file order.
patch_first(path, offset, fmt, value, crc=True) rewrites a field of the first
record's header in place and, for a version 2 record, its header CRC (bytes
28..31, the CRC-32 of bytes 0..27) unless crc is False: a header false but
consistent, as a hostile or buggy writer makes it, or (crc False) damaged."""
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
