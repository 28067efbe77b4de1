"""burst.py: one burst of hostile traffic for the soak over tcp with CURVE
(tests/soak/soak.sh), from strangers and from an allowed key.

    burst.py KEYS WORK CTL PAIRS COUNT SEED

WORK, CTL: the loader's endpoints; PAIRS: where workers push pairs (the
sink in direct mode, the loader in serve mode). It sends:
  - strangers (no CURVE, a key not in allowed/, a wrong server key) to each
    endpoint: nothing of theirs may get through (their PAIRs have the index
    COUNT + 424242, hostile.stranger_index: one through would be counted
    rejected_index, one more than "out_of_range");
  - from the allowed key: a forged HELLO to CTL (REFUSED while the consumer
    lives), a READY without credit and spoofed FAILED reports to WORK,
    PAIRs of a far epoch and of indices >= COUNT to PAIRS, a 40 MB frame to
    PAIRS and a 1 MB frame to WORK (over the limits: the sender is cut off).
Prints one JSON line: how many of each it sent (the soak adds them up and
checks the counters against them)."""
import json
import os
import random
import sys
import tempfile
import time

import zmq

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), ".."))
from hostile import curve_client, oversized, pair_msg, prefix, stranger_index, strangers  # noqa: E402
import struct  # noqa: E402


def main(keys, work, ctl, pairs, count, seed):
    rnd = random.Random(seed)
    ctx = zmq.Context()
    socks = []
    sent = {"hello": 0, "failed": 0, "far_epoch": 0, "out_of_range": 0, "oversized": 2, "strangers": 9}
    with tempfile.TemporaryDirectory() as tmp:
        socks += strangers(ctx, keys, [(work, zmq.DEALER, [prefix(2, 4) + struct.pack("<IQI", 64, 0, 16)]),
                                       (ctl, zmq.DEALER, [prefix(1, 8) + struct.pack("<IQ", 0, count)]),
                                       # a stranger's pair that got through would be one
                                       # rejected_index more than "out_of_range" (direct rounds)
                                       (pairs, zmq.PUSH, pair_msg(0, stranger_index(count), h=32, w=32, c=3))], tmp)
        h = curve_client(ctx, zmq.DEALER, keys)
        h.connect(ctl)
        h.send(prefix(1, 8) + struct.pack("<IQ", rnd.randrange(3), count))
        sent["hello"] = 1
        w = curve_client(ctx, zmq.DEALER, keys)
        w.connect(work)
        w.send(prefix(2, 4) + struct.pack("<IQI", 0, 0, 16))
        nf = rnd.randrange(5, 30)
        for _ in range(nf):
            w.send(prefix(1, 3) + struct.pack("<IiQ", rnd.randrange(4), -32999, rnd.randrange(count)) + b"spoofed")
        sent["failed"] = nf
        p = curve_client(ctx, zmq.PUSH, keys)
        p.connect(pairs)
        for _ in range(rnd.randrange(1, 10)):
            p.send_multipart(pair_msg(100000 + rnd.randrange(1000), rnd.randrange(count), h=32, w=32, c=3))
            sent["far_epoch"] += 1
        for _ in range(rnd.randrange(1, 10)):
            p.send_multipart(pair_msg(0, count + rnd.randrange(2**40), h=32, w=32, c=3))
            sent["out_of_range"] += 1
        socks += [h, w, p] + oversized(ctx, keys, pairs, work)
        time.sleep(1.0)  # let them go out (and the handshakes fail)
        for s in socks:
            s.close(0)
    ctx.term()
    print(json.dumps(sent))


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3], sys.argv[4], int(sys.argv[5]), int(sys.argv[6]))
