"""hostile_conns.py: many connections against a serve-mode loader over tcp
with CURVE (tests/cli_hostile.sh; the helpers are hostile.py's).

  halfopen:  a consumer and a real worker run; strangers open 150 TCP
             connections to the three endpoints and never finish (or start)
             the CURVE handshake: the loader closes them within 8 s
             (MOCO_SEC_HANDSHAKE_MS, 3 s; before, libzmq's default 30 s kept
             each descriptor that long) and the consumer keeps receiving
             pairs meanwhile at no less than a third of its rate before."""
import os
import socket
import subprocess
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import fail, last_stats, real_worker, teardown, wait_line  # noqa: E402


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def loader(moco, db, keys, out, port, extra=()):
    eps = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    log, lerr = os.path.join(out, "loader.jsonl"), os.path.join(out, "loader.err")
    p = subprocess.Popen([moco, "loader", "--db", db, "--bind", eps[0], "--ctl", eps[1], "--pairs", eps[2], "--keys", keys,
                          "--log", log] + list(extra), stderr=open(lerr, "w"))
    return p, eps, log, lerr


def delivered(log, n):
    st = last_stats(log)
    return (st["t"], st["epoch"] * n + st["done"]) if st else (0.0, 0)


def rate(log, n, seconds):
    t0, d0 = delivered(log, n)
    time.sleep(seconds)
    t1, d1 = delivered(log, n)
    return (d1 - d0) / (t1 - t0) if t1 > t0 else 0.0


def halfopen(moco, db, n, keys, out, port):
    ld, (work, ctl, pairs), log, lerr = loader(moco, db, keys, out, port, ["--epochs", "1000"])
    sink = subprocess.Popen([moco, "sink", "--connect", ctl, "--keys", keys, "--quiet"], stdout=subprocess.DEVNULL,
                            stderr=open(os.path.join(out, "sink.err"), "w"))
    worker = real_worker(moco, keys, work, pairs, out)
    raw = []
    try:
        if not wait_line(lerr, "consumer connected", 20):
            fail("the sink did not connect: %s" % open(lerr).read()[-400:])
        time.sleep(1.5)
        before = rate(log, n, 2.5)
        if before <= 0:
            fail("no pairs delivered before the strangers came: %s" % open(lerr).read()[-400:])
        f0 = nfds(ld.pid)
        for i in range(150):
            c = socket.create_connection(("127.0.0.1", port + i % 3))
            if i % 2:
                c.send(b"\xff\0\0\0\0\0\0\0\x01\x7f")  # the start of a ZMTP greeting, never finished
            raw.append(c)
        t0 = time.time()
        time.sleep(0.5)
        opened = nfds(ld.pid) - f0
        during = rate(log, n, 2.5)
        while nfds(ld.pid) > f0 + 3 and time.time() - t0 < 8:
            time.sleep(0.25)
        closed_after, left = time.time() - t0, nfds(ld.pid) - f0
    finally:
        for c in raw:
            c.close()
        teardown(zmq.Context(), [], [ld, sink, worker])
    if opened < 100:  # the strangers' connections were not there to be closed: nothing measured
        fail("the loader held %d more descriptors after 150 connections, expected 100 or more" % opened)
    if left > 3:
        fail("the loader still held %d of the strangers' %d descriptors %.0f s after they connected without a "
             "handshake" % (left, opened, closed_after))
    if during < before / 3:
        fail("the consumer got %.0f pairs/s while 150 strangers held connections, %.0f before" % (during, before))
    print("halfopen: 150 strangers' connections (+%d descriptors) closed in %.1f s; pairs/s %.0f before, %.0f during"
          % (opened, closed_after, before, during))


if __name__ == "__main__":
    mode, moco, db, n, keys, out, port = sys.argv[1:8]
    os.makedirs(out, exist_ok=True)
    {"halfopen": halfopen}[mode](moco, db, int(n), keys, out, int(port))
