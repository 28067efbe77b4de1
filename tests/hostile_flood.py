"""hostile_flood.py: allowed peers that hold work together, flood the loader,
or fill its pair socket (tests/cli_hostile.sh; the helpers are hostile.py's).

  pair:  two peers take the whole --window between them and return nothing:
         both are banned, and the epoch ends exactly once. Before, each one
         holding samples kept the other from counting as stalled: the run hung.
  idle:  serve mode, no consumer yet: a message waiting at the pair endpoint
         leaves the loader idle (before, its poll woke at once, forever: a
         core at 100%); 40 frames of 8 MiB from one connection stay bounded
         by the socket's high-water mark of 4 (before, it was set after the
         bind and did not apply: 1,000 frames); a HELLO of a rank out of
         range is REFUSED (before, no answer); ACKs of an epoch not begun
         are counted as rejected (before, ignored and not counted).
  flood: a consumer connected; for 3 s an allowed peer floods HELLOs,
         malformed pair messages and FAILED reports of samples it does not
         hold: each is counted, and the lines written about them are the
         first 20 of each kind (then one per 10 s; before, one per message
         in the log, and per HELLO on stderr: MBs a second)."""
import os
import struct
import subprocess
import sys
import time

import zmq

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from hostile import (curve_client, direct_run, exact_end, fail, last_stats, prefix, real_worker, run_end,  # noqa: E402
                     take_credit, teardown, wait_line)


def pair(moco, db, n, keys, out, port):
    work, pairs, loader_log, lerr_path, procs, sink = direct_run(
        moco, db, n, keys, out, port, 1, ["--worker-timeout", "2", "--stall-timeout", "0.5", "--window", "64"], worker=False)
    ctx = zmq.Context()
    socks = []
    try:
        if not wait_line(lerr_path, "consumer connected", 20):
            fail("the sink did not connect: %s" % open(lerr_path).read()[-400:])
        socks = [curve_client(ctx, zmq.DEALER, keys) for _ in range(2)]
        for s in socks:
            s.connect(work)
        got, t0 = [0, 0], time.time()
        while got != [32, 32]:  # each asks for half the window
            if time.time() - t0 > 20:
                fail("the two peers got %s of the window's 64 samples" % got)
            got = [take_credit(s, got[j], 32 - got[j]) for j, s in enumerate(socks)]
        procs.append(real_worker(moco, keys, work, pairs, out))
        t0 = time.time()
        while sink.poll() is None:  # both go on heart-beating with room for more, as stuck ones would
            if time.time() - t0 > 60:
                fail("the run did not end in 60 s with two peers holding the window: %s" % open(lerr_path).read()[-600:])
            for j, s in enumerate(socks):
                take_credit(s, got[j], 32)
        rcs = run_end(sink, procs, 10)
    except subprocess.TimeoutExpired:
        fail("the run hung")
    finally:
        teardown(ctx, socks, procs + [sink])
    ls = exact_end(rcs, out, n, 1, loader_log)
    if ls["stalled_workers"] != 2:
        fail("stalled_workers %s, expected 2 for the two peers holding the window: %s"
             % (ls["stalled_workers"], open(lerr_path).read()[-600:]))
    print("pair: 1 epoch x %d exact; both peers that held the window between them banned (stalled_workers 2)" % n)


def cpu_s(pid):
    f = open("/proc/%d/stat" % pid).read().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def rss_mb(pid):
    for line in open("/proc/%d/status" % pid):
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024.0
    return 0.0


def idle(moco, db, n, keys, out, port):
    work, ctl, pairs = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    log = os.path.join(out, "loader.jsonl")
    loader = subprocess.Popen([moco, "loader", "--db", db, "--bind", work, "--ctl", ctl, "--pairs", pairs, "--keys", keys,
                               "--log", log], stderr=open(os.path.join(out, "loader.err"), "w"))
    ctx = zmq.Context()
    socks = []
    try:
        time.sleep(1.5)
        p = curve_client(ctx, zmq.PUSH, keys)
        p.connect(pairs)
        socks.append(p)
        p.send(b"x" * 16)
        time.sleep(1.0)
        c0 = cpu_s(loader.pid)
        time.sleep(3.0)
        busy = cpu_s(loader.pid) - c0
        if busy > 0.5:
            fail("the loader, with no consumer and a message waiting at its pair endpoint, used %.2f s of CPU in 3 s" % busy)
        r0 = rss_mb(loader.pid)
        big = curve_client(ctx, zmq.PUSH, keys)
        big.setsockopt(zmq.SNDHWM, 40)
        big.connect(pairs)
        socks.append(big)
        frame = b"\0" * (8 << 20)
        for _ in range(40):
            try:
                big.send(frame, zmq.NOBLOCK, copy=False)
            except zmq.Again:
                pass
        time.sleep(4.0)
        grew = rss_mb(loader.pid) - r0
        if grew > 120:
            fail("the loader's RSS grew %.0f MB from 40 frames of 8 MiB on one connection (its high-water mark is 4)" % grew)
        c = curve_client(ctx, zmq.DEALER, keys)
        c.connect(ctl)
        socks.append(c)
        # a HELLO of rank 2 of 2 (the loader serves 1): REFUSED with the reason (before: no answer at all)
        c.send(prefix(4, 8) + struct.pack("<IQII", 0xFFFFFFFF, 0, 2, 2))
        if not c.poll(5000):
            fail("no answer to a HELLO of rank 2 of 2")
        a = c.recv()
        if a[6:8] != struct.pack("<H", 14) or b"a malformed HELLO: HELLO of rank 2 of 2 ranks" not in a:
            fail("a HELLO of rank 2 of 2 was answered %r" % a[:80])
        c.send(prefix(1, 8) + struct.pack("<IQ", 0xFFFFFFFF, 0))
        if not c.poll(5000) or c.recv()[6:8] != struct.pack("<H", 13):
            fail("no WELCOME to the consumer's HELLO")
        c.send(prefix(1, 9) + struct.pack("<II", 999, 3) + struct.pack("<QQQ", 1, 2, 3))
        t0, st = time.time(), None
        while time.time() - t0 < 10:
            time.sleep(0.5)
            st = last_stats(log)
            if st and st["rejected_acks"] == 3:
                break
        if not st or st["rejected_acks"] != 3:
            fail("ACKs of 3 indices in epoch 999 (not begun): rejected_acks %s, expected 3" % (st and st["rejected_acks"]))
    finally:
        teardown(ctx, socks, [loader])
    print("idle: a message waiting without a consumer: %.2f s of CPU in 3 s; 40 frames of 8 MiB: RSS +%.0f MB; "
          "ACKs of an epoch not begun rejected (3)" % (busy, grew))


def flood(moco, db, n, keys, out, port):
    work, ctl, pairs = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    log, lerr = os.path.join(out, "loader.jsonl"), os.path.join(out, "loader.err")
    loader = subprocess.Popen([moco, "loader", "--db", db, "--bind", work, "--ctl", ctl, "--pairs", pairs, "--keys", keys,
                               "--epochs", "1000", "--log", log], stderr=open(lerr, "w"))
    sink = subprocess.Popen([moco, "sink", "--connect", ctl, "--keys", keys, "--quiet", "--delay-ms", "1"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    ctx = zmq.Context()
    socks = []
    try:
        if not wait_line(lerr, "consumer connected", 20):
            fail("the sink did not connect: %s" % open(lerr).read()[-400:])
        h, p, d = (curve_client(ctx, t, keys) for t in (zmq.DEALER, zmq.PUSH, zmq.DEALER))
        socks += [h, p, d]
        h.connect(ctl)
        p.connect(pairs)
        d.connect(work)
        d.send(prefix(2, 4) + struct.pack("<IQI", 0, 0, 64))  # a worker with no room: it holds nothing
        time.sleep(0.5)
        log0, err0 = os.path.getsize(log), os.path.getsize(lerr)
        hello = prefix(1, 8) + struct.pack("<IQ", 0xFFFFFFFF, 0)
        bad_pair = prefix(1, 2) + b"\0" * 8  # a pair header of the wrong size
        failed = prefix(1, 3) + struct.pack("<IiQ", 0, -32999, 5)
        t0, sent = time.time(), 0
        while time.time() - t0 < 3:
            try:
                h.send(hello, zmq.NOBLOCK)
                p.send(bad_pair, zmq.NOBLOCK)
                d.send(failed, zmq.NOBLOCK)
                sent += 1
            except zmq.Again:
                time.sleep(0.001)
            while h.poll(0):
                h.recv()
            while d.poll(0):
                d.recv_multipart()
        time.sleep(2.0)
        st = last_stats(log)
        logged, printed = os.path.getsize(log) - log0, os.path.getsize(lerr) - err0
    finally:
        teardown(ctx, socks, [loader, sink])
    for k in ("refused_hellos", "rejected_pairs", "rejected_failed"):
        if not st or st[k] < 1000:
            fail("after %d of each hostile message, %s %s: expected at least 1000 counted" % (sent, k, st and st[k]))
    if logged > 65536 or printed > 65536:
        fail("%d of each hostile message wrote %d bytes to the log and %d to stderr (expected under 64 KiB each)"
             % (sent, logged, printed))
    lines = open(log).read()
    # the first 20 of each kind, then one per 10 s: HELLOs; pair messages; the FAILED reports of the one worker
    for ev, want in (('"event":"refused_hello"', 20), ('"event":"rejected"', 40)):
        if lines.count(ev) != want:
            fail("%d lines of %s in the log after the flood, expected %d" % (lines.count(ev), ev, want))
    print("flood: %d HELLOs, malformed pairs and spoofed FAILED each in 3 s: counted (%d, %d, %d); %d bytes logged, "
          "%d printed" % (sent, st["refused_hellos"], st["rejected_pairs"], st["rejected_failed"], logged, printed))


if __name__ == "__main__":
    mode, moco, db, n, keys, out, port = sys.argv[1:8]
    os.makedirs(out, exist_ok=True)
    {"pair": pair, "idle": idle, "flood": flood}[mode](moco, db, int(n), keys, out, int(port))
