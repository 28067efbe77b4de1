"""hostile_conns.py: many connections against a serve-mode loader over tcp
with CURVE (tests/cli_hostile.sh; the helpers are hostile.py's).

  memory:    an allowed peer opens 3 connections to the pair socket and
             sends frames of 27 MiB (just under MOCO_PAIRS_FRAME_MAX) with
             no consumer to read them: the loader's RSS grows at most 80 MB
             per connection (MOCO_PAIRS_RCVHWM 2: two such messages wait per
             connection, 54 MB). Before, a high-water mark of 4 let each
             connection fill 108-112 MB (20 connections: 2.2 GB).
  halfopen:  a consumer and a real worker run; strangers open 150 TCP
             connections to the three endpoints and never finish (or start)
             the CURVE handshake: the loader closes them within 8 s
             (MOCO_SEC_HANDSHAKE_MS, 3 s; before, libzmq's default 30 s kept
             each descriptor that long) and the consumer keeps receiving
             pairs meanwhile at no less than a fifth of its rate before (a third
             held in every run here; a fifth leaves room for a busy CI host)."""
import os
import socket
import subprocess
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import curve_client, fail, last_stats, real_worker, teardown, wait_line  # noqa: E402


def rss_mb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def nfds(pid):
    return len(os.listdir("/proc/%d/fd" % pid))


def loader(moco, db, keys, out, port, extra=()):
    eps = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    log, lerr = os.path.join(out, "loader.jsonl"), os.path.join(out, "loader.err")
    p = subprocess.Popen([moco, "loader", "--db", db, "--bind", eps[0], "--ctl", eps[1], "--pairs", eps[2], "--keys", keys,
                          "--log", log] + list(extra), stderr=open(lerr, "w"))
    return p, eps, log, lerr


def memory(moco, db, n, keys, out, port):
    ld, (work, ctl, pairs), log, lerr = loader(moco, db, keys, out, port)
    ctx = zmq.Context()
    socks, conns = [], 3
    try:
        if not wait_line(lerr, "serve mode", 10):
            fail("the loader did not start: %s" % open(lerr).read()[-400:])
        time.sleep(0.5)
        r0 = rss_mb(ld.pid)
        frame = b"\0" * (27 << 20)
        for _ in range(conns):
            s = curve_client(ctx, zmq.PUSH, keys)
            s.setsockopt(zmq.SNDHWM, 8)
            s.connect(pairs)
            socks.append(s)
            for _ in range(6):
                try:
                    s.send(frame, zmq.NOBLOCK, copy=False)
                except zmq.Again:
                    pass
        # until the growth settles (each connection's frames are in or refused)
        last, t0 = -1.0, time.time()
        while time.time() - t0 < 15:
            time.sleep(1.0)
            now = rss_mb(ld.pid)
            if now - last < 5 and now - r0 > 20:
                break
            last = now
        grew = rss_mb(ld.pid) - r0
    finally:
        teardown(ctx, socks, [ld])
    if grew < 20:  # not one frame arrived: the measurement measured nothing
        fail("the loader's RSS grew %.0f MB: the frames of 27 MiB did not reach it" % grew)
    if grew / conns > 80:
        fail("the loader's RSS grew %.0f MB per connection of one allowed key (%d connections, frames of 27 MiB; "
             "expected at most 80)" % (grew / conns, conns))
    print("memory: %d connections of one key, frames of 27 MiB: loader RSS +%.0f MB (%.0f MB per connection)"
          % (conns, grew, grew / conns))


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
    if during < before / 5:
        fail("the consumer got %.0f pairs/s while 150 strangers held connections, %.0f before" % (during, before))
    print("halfopen: 150 strangers' connections (+%d descriptors) closed in %.1f s; pairs/s %.0f before, %.0f during"
          % (opened, closed_after, before, during))


if __name__ == "__main__":
    mode, moco, db, n, keys, out, port = sys.argv[1:8]
    os.makedirs(out, exist_ok=True)
    {"memory": memory, "halfopen": halfopen}[mode](moco, db, int(n), keys, out, int(port))
