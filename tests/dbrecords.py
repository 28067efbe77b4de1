"""dbrecords.py: the records of a moco dataset's data.mdb, for the tests'
Python checks (formats/record.h: the 32-byte header "MOCR", version, then
encoding u8, channels u8, label i32, width u32, height u32, payload length
u32, the payload after it). Found by scanning the file for the magic, which
is enough for the small datasets the tests make: records(path) yields
(encoding, channels, label, width, height, payload) in file order."""
import struct


def records(path):
    b = open(path, "rb").read()
    i = b.find(b"MOCR")
    while i >= 0:
        enc, ch, label, w, h, n = struct.unpack_from("<BBiIII", b, i + 6)
        yield enc, ch, label, w, h, b[i + 32:i + 32 + n]
        i = b.find(b"MOCR", i + 32 + n)
