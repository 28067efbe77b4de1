"""hostile.py: hostile and stranger peers against a real pipeline over tcp
with CURVE (issue 12), driven by tests/cli_hostile.sh.

    hostile.py direct MOCO DB N KEYS OUT PORT
    hostile.py serve  MOCO DB N KEYS OUT PORT
    hostile.py repeat MOCO DB N KEYS OUT PORT

direct: loader (work tcp PORT, ctl tcp PORT+1), one worker, a sink that binds
tcp PORT+2, every endpoint with --keys. While 20 epochs stream, it sends:
  - strangers: a plain (no CURVE) peer, a peer with a key not in allowed/,
    a peer that uses a wrong server key, to each of the three ports; to the
    sink a PAIR of index stranger_index(N) = N + 424242, which no other
    peer sends: one that got through would be counted rejected_index by the
    sink, whose count must be exactly the allowed key's 8;
  - from an allowed key: a forged HELLO to ctl (REFUSED), then 50 BUSY from
    that socket (dropped: it is not the consumer), 100 spoofed FAILED
    reports after a READY with no credit, 50 more from a worker that holds
    other samples of the epoch (the owner check), 7 PAIRs of epoch 1000, 5 PAIRs of
    index 2^40-1 and 3 of index N, a 40 MB frame to the sink and a 1 MB
    frame to the loader (both over the limits: the sender is cut off).
serve: `moco run DB --serve tcp://PORT+2 --bind tcp://PORT --keys`, the
real consumer `moco sink --connect`; a forged HELLO (REFUSED), 9 PAIRs of
epoch 1000 and 4 of index N sent to the loader's pair port (rejected at the
loader), strangers to the serve port.
repeat: serve mode with --consumers 2 (two PairStreams): an allowed peer
takes one sample as a worker and pushes its pair 3,000 times: forwarded
once, 2,999 stale_pairs at the loader, no duplicate at the consumers.
Then it checks exact counts: every index exactly once per epoch at the real
consumer, each hostile message rejected and counted exactly, strangers
counted and nothing of theirs through. Exit 0 or 1 with the reason."""
import json
import os
import re
import struct
import subprocess
import sys
import threading
import time

import zmq
import zmq.auth

MAGIC = b"MOCW"
STRANGER_INDEX_OFFSET = 424242


def stranger_index(n):
    """The index of the pairs strangers forge: out of range (n + 424242) and
    used by no other message here, so that one getting through is counted as
    rejected_index at a consumer whose count is then off by one (a pair of a
    valid index would only be a duplicate or stale pair nobody checks)."""
    return n + STRANGER_INDEX_OFFSET


def prefix(version, typ):
    return MAGIC + struct.pack("<HH", version, typ)


def pair_msg(epoch, index, label=0, h=28, w=28, c=1, reserved=0):
    hdr = prefix(1, 2) + struct.pack("<IiQHHBBH", epoch, label, index, h, w, c, 0, reserved)
    view = bytes(h * w * c)
    return [hdr, view, view]


def fail(msg):
    print("FAIL: " + msg)
    sys.exit(1)


def curve_client(ctx, typ, keys, server_public=None, client_pair=None):
    s = ctx.socket(typ)
    s.linger = 0
    pub, sec = client_pair or zmq.auth.load_certificate(os.path.join(keys, "client.key_secret"))
    s.curve_publickey, s.curve_secretkey = pub, sec
    s.curve_serverkey = server_public or zmq.auth.load_certificate(os.path.join(keys, "server.key"))[0]
    return s


def strangers(ctx, keys, endpoints, tmp):
    """Three kinds of stranger to each endpoint; each sends what would be a
    valid message. Returns the sockets (closed by the caller)."""
    other_dir = os.path.join(tmp, "stranger-keys")
    os.makedirs(other_dir, exist_ok=True)
    pub, sec = zmq.auth.create_certificates(other_dir, "x")
    stranger_pair = zmq.auth.load_certificate(sec)
    wrong_server = zmq.auth.load_certificate(sec)[0]
    socks = []
    for ep, typ, msg in endpoints:
        plain = ctx.socket(typ)
        plain.linger = 0
        unknown = curve_client(ctx, typ, keys, client_pair=stranger_pair)
        wrong = curve_client(ctx, typ, keys, server_public=wrong_server)
        for s in (plain, unknown, wrong):
            s.connect(ep)
            for _ in range(3):
                try:
                    s.send_multipart(msg, zmq.NOBLOCK)
                except zmq.Again:
                    pass
            socks.append(s)
    return socks


def oversized(ctx, keys, pairs, work):
    """From the allowed key, a 40 MB frame to the pair endpoint and a 1 MB
    frame to the loader's work endpoint: both over the sockets' limits, so
    ZeroMQ cuts the sender off. Returns the sockets (closed by the caller)."""
    big = curve_client(ctx, zmq.PUSH, keys)
    big.connect(pairs)
    big.send(b"\0" * (40 << 20))
    big2 = curve_client(ctx, zmq.DEALER, keys)
    big2.connect(work)
    big2.send(b"\0" * (1 << 20))
    return [big, big2]


def take_credit(s, received, credit):
    """READY with `credit` of room from peer socket s; reads what came for 0.1 s: the samples received so far."""
    s.send(prefix(2, 4) + struct.pack("<IQI", credit, received, 8))
    while s.poll(100):
        f = s.recv_multipart()
        if f[0][6:8] == struct.pack("<H", 12):
            received += struct.unpack("<I", f[0][8:12])[0]
    return received


def fake_worker(ctx, keys, ep, stop, n=None, spoof=0):
    """Takes samples (READY with credit, heart-beating) and returns none.
    With spoof > 0: once it holds samples, it sends FAILED for `spoof`
    samples of that epoch that it does not hold (the loader must take FAILED
    only from the worker that holds the sample). Before it picks them it
    takes its credit back (READY with no free room) and reads until no
    SAMPLES came for a second: a sample already on its way to it would be
    its own, and FAILED for it rightly taken."""
    s = curve_client(ctx, zmq.DEALER, keys)
    s.connect(ep)
    received = 0
    held = set()
    spoofed = False

    def take(seconds, quiet=None):
        """Reads SAMPLES for `seconds`, or with quiet: until none came for that long."""
        nonlocal received
        t = time.time()
        while time.time() - t < seconds:
            if s.poll(50):
                f = s.recv_multipart()
                if f[0][6:8] == struct.pack("<H", 12):
                    k = struct.unpack("<I", f[0][8:12])[0]
                    received += k
                    for j in range(k):
                        e, _, i = struct.unpack_from("<IIQ", f[0], 16 + 16 * j)
                        held.add((e, i))
                    if quiet:
                        t = time.time()

    while not stop.is_set():
        s.send(prefix(2, 4) + struct.pack("<IQI", 256, received, 64))
        take(0.3)
        if spoof and held and not spoofed:
            s.send(prefix(2, 4) + struct.pack("<IQI", 0, received, 64))
            take(1.0, quiet=True)
            e = min(held)[0]
            others = [i for i in range(n) if (e, i) not in held][:spoof]
            if len(others) < spoof:
                raise RuntimeError("fake worker holds %d of %d samples: not %d others to spoof" % (len(held), n, spoof))
            for i in others:
                s.send(prefix(1, 3) + struct.pack("<IiQ", e, -32999, i) + b"spoofed by a worker holding others")
            spoofed = True
    s.close(0)


def last_stats(path):
    last = None
    with open(path) as f:
        for line in f:
            line = line.strip()
            if line.startswith('{"t"'):
                last = json.loads(line)
    return last


def check_index_log(path, n, epochs):
    seen = {}
    with open(path) as f:
        for line in f:
            e, i = line.split()
            seen.setdefault(int(e), []).append(int(i))
    if sorted(seen) != list(range(epochs)):
        fail("epochs at the consumer: %s, expected 0..%d" % (sorted(seen), epochs - 1))
    for e, idx in seen.items():
        if len(idx) != n or len(set(idx)) != n or min(idx) != 0 or max(idx) != n - 1:
            fail("epoch %d: %d pairs, %d distinct, expected each of %d once" % (e, len(idx), len(set(idx)), n))


def wait_line(path, needle, seconds):
    t = time.time()
    while time.time() - t < seconds:
        if os.path.exists(path) and needle in open(path, errors="replace").read():
            return True
        time.sleep(0.05)
    return False


def direct_run(moco, db, n, keys, out, port, epochs, flags, worker=True):
    """A loader (direct mode, CURVE, `flags` added), the sink and, with
    worker, one real worker: (work, pairs, loader_log, lerr_path, procs, sink),
    procs[0] the loader."""
    work, ctl, pairs = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    loader_log, lerr_path = os.path.join(out, "loader.jsonl"), os.path.join(out, "loader.err")
    procs = [subprocess.Popen([moco, "loader", "--db", db, "--bind", work, "--ctl", ctl, "--keys", keys, "--epochs",
                               str(epochs), "--log", loader_log] + flags, stderr=open(lerr_path, "w"))]
    sink = subprocess.Popen([moco, "sink", "--bind", pairs, "--connect", ctl, "--keys", keys, "--count", str(n),
                             "--index-log", os.path.join(out, "index.log"), "--json", os.path.join(out, "sink.json"),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "sink.err"), "w"))
    if worker:
        procs.append(real_worker(moco, keys, work, pairs, out))
    return work, pairs, loader_log, lerr_path, procs, sink


def real_worker(moco, keys, work, pairs, out):
    return subprocess.Popen([moco, "augment", "--connect", work, "--push", pairs, "--keys", keys, "--recipe", "cifar",
                             "--size", "28"], stderr=open(os.path.join(out, "worker.err"), "w"))


def run_end(sink, procs, seconds):
    """Waits for the sink (at most `seconds`), then for the loader: (sink's, loader's exit status)."""
    rc = sink.wait(timeout=seconds)
    return rc, procs[0].wait(timeout=30)


def exact_end(rcs, out, n, epochs, loader_log):
    """Both exited 0 and the sink got every sample once per epoch: the loader's last statistics."""
    if rcs != (0, 0):
        fail("sink exited %s, loader %s" % rcs)
    check_index_log(os.path.join(out, "index.log"), n, epochs)
    return last_stats(loader_log)


def teardown(ctx, socks, procs):
    """Closes the sockets (ctx.term() waits for every one), then kills what still runs."""
    for s in socks:
        s.close(0)
    ctx.term()
    for p in procs:
        if p.poll() is None:
            p.kill()


def direct(moco, db, n, keys, out, port):
    epochs = 20
    work, ctl, pairs = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    loader_log = os.path.join(out, "loader.jsonl")
    procs = []
    lerr = open(os.path.join(out, "loader.err"), "w")
    procs.append(subprocess.Popen([moco, "loader", "--db", db, "--bind", work, "--ctl", ctl, "--keys", keys, "--epochs",
                                   str(epochs), "--log", loader_log, "--worker-timeout", "2", "--stall-timeout", "2",
                                   "--readmit-after", "0"], stderr=lerr))
    serr = open(os.path.join(out, "sink.err"), "w")
    sink = subprocess.Popen([moco, "sink", "--bind", pairs, "--connect", ctl, "--keys", keys, "--count", str(n),
                             "--index-log", os.path.join(out, "index.log"), "--json", os.path.join(out, "sink.json"),
                             "--quiet"], stdout=subprocess.DEVNULL, stderr=serr)
    werr = open(os.path.join(out, "worker.err"), "w")
    procs.append(subprocess.Popen([moco, "augment", "--connect", work, "--push", pairs, "--keys", keys, "--recipe", "cifar",
                                   "--size", "28"], stderr=werr))
    ctx = zmq.Context()
    hostile = []
    stop = threading.Event()
    # a worker that holds samples and never returns them
    fake = threading.Thread(target=fake_worker, args=(ctx, keys, work, stop, n, 50))
    fake.start()
    try:
        if not wait_line(os.path.join(out, "loader.err"), "consumer connected", 20):
            fail("the sink did not connect")
        # strangers first: nothing of theirs may get through
        hostile += strangers(ctx, keys, [(work, zmq.DEALER, [prefix(2, 4) + struct.pack("<IQI", 64, 0, 16)]),
                                         (ctl, zmq.DEALER, [prefix(1, 8) + struct.pack("<IQ", 0, n)]),
                                         (pairs, zmq.PUSH, pair_msg(0, stranger_index(n)))], out)
        # allowed but hostile: a forged HELLO while the real consumer lives
        h = curve_client(ctx, zmq.DEALER, keys)
        h.connect(ctl)
        h.send(prefix(1, 8) + struct.pack("<IQ", 5, n))
        if not h.poll(5000):
            fail("no answer to a forged HELLO")
        ans = h.recv()
        if ans[6:8] != struct.pack("<H", 14):
            fail("a forged HELLO was answered with type %d, expected REFUSED (14)" % struct.unpack("<H", ans[6:8]))
        # ... and 50 BUSY from that socket, which is not the consumer: dropped, the consumer's clock runs on
        for i in range(50):
            h.send(prefix(5, 16))
        hostile.append(h)
        # spoofed FAILED reports: a READY with no credit, then 100 FAILED
        w = curve_client(ctx, zmq.DEALER, keys)
        w.connect(work)
        w.send(prefix(2, 4) + struct.pack("<IQI", 0, 0, 16))
        for i in range(100):
            w.send(prefix(1, 3) + struct.pack("<IiQ", 0, -32999, (i * 97) % n) + b"spoofed")
        hostile.append(w)
        # future-epoch and out-of-range pairs, and an oversized frame
        p = curve_client(ctx, zmq.PUSH, keys)
        p.connect(pairs)
        for i in range(7):
            p.send_multipart(pair_msg(1000, i))
        for i in range(5):
            p.send_multipart(pair_msg(0, 2**40 - 1))
        for i in range(3):
            p.send_multipart(pair_msg(0, n))
        # malformed headers the Python client refuses too: a non-zero reserved field, a side over 2048
        p.send_multipart(pair_msg(0, 0, reserved=0xCDAB))
        p.send_multipart(pair_msg(0, 1, reserved=1))
        p.send_multipart(pair_msg(0, 2, h=4000))
        hostile.append(p)
        hostile += oversized(ctx, keys, pairs, work)
        rc = sink.wait(timeout=120)
        lrc = procs[0].wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("the run hung")
    finally:
        stop.set()
        fake.join()
        teardown(ctx, hostile, procs + [sink])
    if rc != 0 or lrc != 0:
        fail("sink exited %s, loader %s" % (rc, lrc))
    check_index_log(os.path.join(out, "index.log"), n, epochs)
    sj = json.load(open(os.path.join(out, "sink.json")))
    ls = last_stats(loader_log)
    # (held is not checked: a real pair of the next epoch may arrive before
    # the sink has read EPOCH_END; it is held, then delivered, legitimately)
    ss = sj["stream"]
    if ss["rejected_index"] > 8:
        fail("sink rejected_index = %d, 8 sent from the allowed key: %d pair(s) of a stranger (index %d) got through "
             "CURVE (%s)" % (ss["rejected_index"], ss["rejected_index"] - 8, stranger_index(n), json.dumps(sj)))
    want = {"rejected_epoch": 7, "rejected_index": 8, "malformed": 3, "held_dropped": 0}
    for k, v in want.items():
        if ss[k] != v:
            fail("sink %s = %s, expected %s (%s)" % (k, ss[k], v, json.dumps(sj)))
    if ss["auth_rejected"] < 3:
        fail("sink counted %d rejected handshakes, expected at least 3 (3 strangers)" % ss["auth_rejected"])
    # rejected_failed: 100 from a worker holding nothing, 50 from one holding other samples
    want = {"refused_hellos": 1, "rejected_failed": 150, "failed": 0, "dropped_msgs": 50, "stalled_workers": 1,
            "consumer_busy_s": 0}
    for k, v in want.items():
        if ls[k] != v:
            fail("loader %s = %s, expected %s (%s)" % (k, ls[k], v, json.dumps(ls)))
    if ls["auth_rejected"] < 6:
        fail("loader counted %d rejected handshakes, expected at least 6 (3 strangers x 2 ports)" % ls["auth_rejected"])
    # each rejected FAILED report's line names the peer that sent it; each peer's first 20 are written (then
    # one per 10 s): 20 from each spoofer (before: from the 21st on, the peer field was whatever the stack held,
    # the first spoofer's id; and every report made a line)
    peers = {}
    with open(loader_log) as f:
        for line in f:
            if '"event":"rejected"' in line:
                e = json.loads(line)
                if e.get("what") == "FAILED":
                    if not re.fullmatch(r"[0-9a-f]{2,32}", e.get("peer", "")):
                        fail("a rejected FAILED event names no peer: %s" % line.strip())
                    peers[e["peer"]] = peers.get(e["peer"], 0) + 1
    if sorted(peers.values()) != [20, 20]:
        fail("rejected FAILED events by peer %s, expected the first 20 of each of two peers" % peers)
    print("direct: %d epochs x %d exact; sink rejected_epoch %d rejected_index %d auth_rejected %d; loader refused_hellos %d "
          "rejected_failed %d stalled_workers %d auth_rejected %d" % (epochs, n, ss["rejected_epoch"], ss["rejected_index"],
                                                              ss["auth_rejected"], ls["refused_hellos"], ls["rejected_failed"],
                                                              ls["stalled_workers"], ls["auth_rejected"]))


def serve(moco, db, n, keys, out, port):
    epochs = 20
    work, pairs_in, ctl = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    run_dir = os.path.join(out, "run")
    rerr = open(os.path.join(out, "run.err"), "w")
    run = subprocess.Popen([moco, "run", db, "--serve", ctl, "--bind", work, "--keys", keys, "--workers", "1", "--epochs",
                            str(epochs), "--recipe", "cifar", "--size", "28", "--run-dir", run_dir], stderr=rerr)
    ctx = zmq.Context()
    hostile = []
    # 9 + 4 + 3 bad pairs at the loader's pair port, before the consumer comes:
    # they wait there, and the loader checks them once it serves
    p = curve_client(ctx, zmq.PUSH, keys)
    p.connect(pairs_in)
    for i in range(9):
        p.send_multipart(pair_msg(1000, i))
    for i in range(4):
        p.send_multipart(pair_msg(0, n + i))
    # 3 malformed headers (reserved field, a side over 2048): the loader drops and counts them
    p.send_multipart(pair_msg(0, 0, reserved=0xCDAB))
    p.send_multipart(pair_msg(0, 1, reserved=1))
    p.send_multipart(pair_msg(0, 2, h=4000))
    hostile.append(p)
    time.sleep(1.0)
    serr = open(os.path.join(out, "sink.err"), "w")
    sink = subprocess.Popen([moco, "sink", "--connect", ctl, "--keys", keys, "--count", str(n), "--index-log",
                             os.path.join(out, "index.log"), "--json", os.path.join(out, "sink.json"), "--quiet"],
                            stdout=subprocess.DEVNULL, stderr=serr)
    try:
        if not wait_line(os.path.join(out, "run.err"), "consumer connected", 20):
            fail("the sink did not connect")
        h = curve_client(ctx, zmq.DEALER, keys)
        h.connect(ctl)
        h.send(prefix(1, 8) + struct.pack("<IQ", 0xFFFFFFFF, 0))
        if not h.poll(5000):
            fail("no answer to a forged HELLO")
        if h.recv()[6:8] != struct.pack("<H", 14):
            fail("a forged HELLO was not REFUSED")
        hostile.append(h)
        hostile += strangers(ctx, keys, [(ctl, zmq.DEALER, [prefix(1, 8) + struct.pack("<IQ", 0, n)])], out)
        rc = sink.wait(timeout=120)
        rrc = run.wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("the run hung")
    finally:
        for s in hostile:
            s.close(0)
        ctx.term()
        for p_ in (run, sink):
            if p_.poll() is None:
                p_.kill()
    if rc != 0 or rrc != 0:
        fail("sink exited %s, moco run %s" % (rc, rrc))
    check_index_log(os.path.join(out, "index.log"), n, epochs)
    ls = last_stats(os.path.join(run_dir, "loader.jsonl"))
    want = {"refused_hellos": 1, "rejected_pairs": 16}
    for k, v in want.items():
        if ls[k] != v:
            fail("loader %s = %s, expected %s (%s)" % (k, ls[k], v, json.dumps(ls)))
    if ls["auth_rejected"] < 3:
        fail("loader counted %d rejected handshakes, expected at least 3" % ls["auth_rejected"])
    sj = json.load(open(os.path.join(out, "sink.json")))
    ss = sj["stream"]
    if ss["rejected_epoch"] or ss["rejected_index"] or ss["malformed"]:
        fail("the consumer saw what the loader should have stopped: %s" % json.dumps(sj))
    print("serve: %d epochs x %d exact; loader refused_hellos %d rejected_pairs %d auth_rejected %d"
          % (epochs, n, ls["refused_hellos"], ls["rejected_pairs"], ls["auth_rejected"]))


def count_lines(path, needle):
    return open(path, errors="replace").read().count(needle) if os.path.exists(path) else 0


def slots(moco, db, n, keys, out, port):
    """An allowed peer that stalls (holds 8 samples, returns none, heart-beats)
    until the loader bans it, then reconnects under a new routing id, three
    times, against a loader with --max-workers 2 and one real worker. Each
    time it must get a slot (the banned one's, reclaimed) and be banned again;
    then a quiet peer (READY with no credit, heart-beating) takes the slot,
    and one more new peer is refused while it lives; once it has held
    nothing and asked for no work for --worker-timeout, its slot goes to the
    next new peer. Before, banned slots were kept for good: the second round
    got no slot, and so would every later worker; and quiet peers kept
    theirs for good."""
    epochs = 60
    work, pairs, loader_log, lerr_path, procs, sink = direct_run(
        moco, db, n, keys, out, port, epochs, ["--worker-timeout", "5", "--stall-timeout", "0.5", "--max-workers", "2"])
    ctx = zmq.Context()
    socks = []

    def ready(s, credit, received):
        s.send(prefix(2, 4) + struct.pack("<IQI", credit, received, 8))

    try:
        if not wait_line(lerr_path, "worker 0 joined", 20) or not wait_line(lerr_path, "consumer connected", 20):
            fail("the worker or the sink did not connect: %s" % open(lerr_path).read()[-400:])
        for r in range(1, 4):
            s = curve_client(ctx, zmq.DEALER, keys)
            s.connect(work)
            socks.append(s)  # closed before ctx.term() also when this fails: term waits for every socket
            received, t0 = 0, time.time()
            while count_lines(lerr_path, "gets no more work") < r:
                if time.time() - t0 > 60:
                    fail("round %d: the stalling peer was not banned in 60 s (it got no slot?): %s"
                         % (r, open(lerr_path).read()[-600:]))
                ready(s, 8, received)
                while s.poll(100):
                    f = s.recv_multipart()
                    if f[0][6:8] == struct.pack("<H", 12):
                        received += struct.unpack("<I", f[0][8:12])[0]
            if not received:
                fail("round %d: the stalling peer was banned holding nothing" % r)
            socks.remove(s)
            s.close(0)
        def peer():
            p = curve_client(ctx, zmq.DEALER, keys)
            p.connect(work)
            socks.append(p)
            return p

        def until(needle, count, what, *readies):
            t0 = time.time()
            while count_lines(lerr_path, needle) < count:
                if time.time() - t0 > 30:
                    fail("%s: %s" % (what, open(lerr_path).read()[-600:]))
                for p, credit in readies:
                    ready(p, credit, 0)
                time.sleep(0.2)

        quiet = peer()
        until("goes to a new worker", 3, "the quiet peer got no reclaimed slot", (quiet, 0))
        extra = peer()
        until("refused a new worker", 1, "a peer beyond --max-workers was not refused", (quiet, 0), (extra, 8))
        socks.remove(extra)
        extra.close(0)
        # the quiet peer holds nothing and asks for no work: after --worker-timeout (5 s) of that, its slot
        # goes to a new peer that asks for one (before, quiet peers held every slot for good)
        late = peer()
        until("held nothing and asked for no work", 1, "the idle peer's slot did not go to a new peer",
              (quiet, 0), (late, 0))
        for s in socks:
            s.close(0)
        socks = []
        rcs = run_end(sink, procs, 180)
    except subprocess.TimeoutExpired:
        fail("the run hung")
    finally:
        teardown(ctx, socks, procs + [sink])
    ls = exact_end(rcs, out, n, epochs, loader_log)
    if (ls["stalled_workers"] != 3 or ls["reclaimed_slots"] != 3 or ls["refused_workers"] < 1
            or ls["idle_reclaimed"] != 1):
        fail("loader stalled_workers %s reclaimed_slots %s refused_workers %s idle_reclaimed %s, expected 3, 3, at "
             "least 1 and 1" % (ls["stalled_workers"], ls["reclaimed_slots"], ls["refused_workers"],
                               ls.get("idle_reclaimed")))
    print("slots: %d epochs x %d exact; --max-workers 2: stalled_workers %d, reclaimed_slots %d, refused_workers %d, "
          "idle_reclaimed %d" % (epochs, n, ls["stalled_workers"], ls["reclaimed_slots"], ls["refused_workers"],
                                 ls["idle_reclaimed"]))


def window(moco, db, n, keys, out, port):
    """An allowed peer that takes the whole --window (READY with credit for
    all of it, heart-beats, returns nothing) before the real worker joins:
    nothing more can be issued, so the real worker stands idle and no
    delivery can prove the peer stuck. The loader must ban it once a sample
    it holds has waited --stall-timeout of the consumer's reading, and the
    epoch must end exactly once. Before, the run waited for --reissue-after
    (120 s), and the peer could take the re-issued samples again."""
    work, pairs, loader_log, lerr_path, procs, sink = direct_run(
        moco, db, n, keys, out, port, 1, ["--worker-timeout", "2", "--stall-timeout", "0.5", "--window", "64"], worker=False)
    ctx = zmq.Context()
    socks = []
    try:
        if not wait_line(lerr_path, "consumer connected", 20):
            fail("the sink did not connect: %s" % open(lerr_path).read()[-400:])
        s = curve_client(ctx, zmq.DEALER, keys)
        s.connect(work)
        socks.append(s)
        received, t0 = 0, time.time()
        while received < 64:
            if time.time() - t0 > 20:
                fail("the peer got %d of the window's 64 samples" % received)
            received = take_credit(s, received, 64)
        procs.append(real_worker(moco, keys, work, pairs, out))
        t0 = time.time()
        while sink.poll() is None:  # the peer goes on heart-beating, credit and all, as a stuck one would
            if time.time() - t0 > 60:
                fail("the run did not end in 60 s with the peer holding the window: %s" % open(lerr_path).read()[-600:])
            s.send(prefix(2, 4) + struct.pack("<IQI", 64, received, 8))
            while s.poll(100):
                s.recv_multipart()
        socks.remove(s)
        s.close(0)
        rcs = run_end(sink, procs, 10)
    except subprocess.TimeoutExpired:
        fail("the run hung")
    finally:
        teardown(ctx, socks, procs + [sink])
    ls = exact_end(rcs, out, n, 1, loader_log)
    lerr = open(lerr_path).read()
    if ls["stalled_workers"] != 1 or "the other workers stood idle (nothing more could be issued)" not in lerr:
        fail("stalled_workers %s, expected 1 for the peer holding the window: %s" % (ls["stalled_workers"], lerr[-600:]))
    print("window: 1 epoch x %d exact; the peer that held the whole window banned (stalled_workers 1)" % n)

def readmit(moco, db, n, keys, out, port):
    """A peer stalls (takes samples, returns none, says READY) and is banned;
    with --readmit-after 1 it gets work again after 1 s, stalls again and is
    banned for 2 s (twice as long). The run stays exact. Before, a ban was
    for good: an honest worker stuck for a while (a huge image, a paused
    host) was lost to the run."""
    epochs = 60
    work, pairs, loader_log, lerr_path, procs, sink = direct_run(
        moco, db, n, keys, out, port, epochs, ["--stall-timeout", "0.5", "--readmit-after", "1"])
    ctx = zmq.Context()
    socks = []
    try:
        if not wait_line(lerr_path, "worker 0 joined", 20) or not wait_line(lerr_path, "consumer connected", 20):
            fail("the worker or the sink did not connect: %s" % open(lerr_path).read()[-400:])
        s = curve_client(ctx, zmq.DEALER, keys)
        s.connect(work)
        socks.append(s)
        received, after, t0 = 0, 0, time.time()
        while count_lines(lerr_path, "gets no more work") < 2:
            if time.time() - t0 > 60:
                fail("the peer was not banned twice in 60 s: %s" % open(lerr_path).read()[-600:])
            s.send(prefix(2, 4) + struct.pack("<IQI", 8, received, 8))
            while s.poll(100):
                f = s.recv_multipart()
                if f[0][6:8] == struct.pack("<H", 12):
                    k = struct.unpack("<I", f[0][8:12])[0]
                    received += k
                    after += k if count_lines(lerr_path, "gets work again") else 0
        socks.remove(s)
        s.close(0)
        rcs = run_end(sink, procs, 240)
    except subprocess.TimeoutExpired:
        fail("the run hung")
    finally:
        teardown(ctx, socks, procs + [sink])
    ls = exact_end(rcs, out, n, epochs, loader_log)
    ev = [json.loads(l) for l in open(loader_log) if '"event":"stalled_worker"' in l or '"event":"readmitted_worker"' in l]
    kinds = [(e["event"], e.get("ban_s", e.get("bans"))) for e in ev]
    if kinds != [("stalled_worker", 1), ("readmitted_worker", 1), ("stalled_worker", 2)]:
        fail("events %s, expected a ban of 1 s, work again, a ban of 2 s" % kinds)
    if ev[1]["after_s"] < 1.0:
        fail("given work again %.3f s after its 1 s ban" % ev[1]["after_s"])
    if "; 2 bans of stalling workers (1 given work again)," not in open(lerr_path).read():
        fail("the loader's last line does not count the bans: %s" % open(lerr_path).read()[-400:])
    if ls["stalled_workers"] != 2 or ls["readmitted_workers"] != 1 or not after:
        fail("loader stalled_workers %s readmitted_workers %s, samples taken after the ban %d: expected 2, 1 and some"
             % (ls["stalled_workers"], ls["readmitted_workers"], after))
    print("readmit: %d epochs x %d exact; banned for 1 s, given work again after %.2f s (%d samples), banned for 2 s"
          % (epochs, n, ev[1]["after_s"], after))


def loader_peak_mb(run_pid):
    """VmHWM (MB) of the loader under `moco run` (its child whose command line names loader), or None."""
    for k in os.listdir("/proc"):
        try:
            if not k.isdigit() or b"\0loader\0" not in open("/proc/%s/cmdline" % k, "rb").read():
                continue
            st = open("/proc/%s/status" % k).read()
            if "\nPPid:\t%d\n" % run_pid in st:
                return int(st.split("VmHWM:")[1].split()[0]) / 1024.0
        except (OSError, IndexError, ValueError):
            pass
    return None


def repeat(moco, db, n, keys, out, port):
    """Serve mode with two consumers (--consumers 2, PairStreams of rank 0 and
    1): an allowed peer takes one sample as a worker and pushes its pair
    COPIES times. The loader forwards it once (each issue of a sample is
    forwarded once) and drops the other copies as stale_pairs, exactly
    COPIES - 1; the consumers see no duplicate, every epoch is exact, and
    the loader's peak RSS stays small. Before, every copy was forwarded (or,
    while the consumers were busy, held: by count, not bytes, so copies of a
    large pair took the loader past 1 GB)."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tools", "python"))
    import moco_stream
    epochs, copies = 20, 3000
    work, pairs_in, ctl = ["tcp://127.0.0.1:%d" % (port + i) for i in range(3)]
    run_dir = os.path.join(out, "run")
    run = subprocess.Popen([moco, "run", db, "--serve", ctl, "--bind", work, "--keys", keys, "--workers", "1", "--epochs",
                            str(epochs), "--consumers", "2", "--recipe", "cifar", "--size", "28", "--run-dir", run_dir,
                            "--quiet"], stdout=subprocess.DEVNULL, stderr=open(os.path.join(out, "run.err"), "w"))
    ctx = zmq.Context()
    socks = []
    got, errors, stats = {0: {}, 1: {}}, [], {}

    def consume(rank):
        try:
            with moco_stream.PairStream(ctl, keys=keys, rank=rank, ranks=2, batch_size=50, timeout=60) as ps:
                for b in ps:
                    got[rank].setdefault(b.epoch, []).extend(b.indices.tolist())
                stats[rank] = dict(ps.stats)
        except Exception as e:  # noqa: BLE001 -- reported below
            errors.append("rank %d: %r" % (rank, e))

    try:
        w = curve_client(ctx, zmq.DEALER, keys)
        w.connect(work)
        socks.append(w)
        w.send(prefix(2, 4) + struct.pack("<IQI", 1, 0, 8))  # room for one sample
        ts = [threading.Thread(target=consume, args=(r,)) for r in (0, 1)]
        for t in ts:
            t.start()
        taken, t0 = None, time.time()
        while taken is None:
            if time.time() - t0 > 30:
                fail("the peer got no sample in 30 s")
            w.send(prefix(2, 4) + struct.pack("<IQI", 1, 0, 8))
            if w.poll(200):
                f = w.recv_multipart()
                if f[0][6:8] == struct.pack("<H", 12):
                    e, _, i = struct.unpack_from("<IIQ", f[0], 16)
                    taken = (e, i)
        w.send(prefix(2, 4) + struct.pack("<IQI", 0, 1, 8))  # no more room: it holds the one
        p = curve_client(ctx, zmq.PUSH, keys)
        p.connect(pairs_in)
        socks.append(p)
        msg = pair_msg(taken[0], taken[1])
        for _ in range(copies):
            p.send_multipart(msg)
        peak = None
        for _ in range(10):  # heart-beating while the copies are read; the loader's peak RSS while it runs
            w.send(prefix(2, 4) + struct.pack("<IQI", 0, 1, 8))
            peak = loader_peak_mb(run.pid) or peak
            time.sleep(0.3)
        for t in ts:
            t.join(180)
        if any(t.is_alive() for t in ts):
            fail("the consumers did not finish")
        rrc = run.wait(timeout=30)
    except subprocess.TimeoutExpired:
        fail("the run hung")
    finally:
        teardown(ctx, socks, [run])
    if errors or rrc != 0:
        fail("consumers %s, moco run exited %s" % (errors, rrc))
    for e in range(epochs):
        idx = got[0].get(e, []) + got[1].get(e, [])
        if sorted(idx) != list(range(n)):
            fail("epoch %d: %d pairs, %d distinct, expected each of %d once" % (e, len(idx), len(set(idx)), n))
    dup = stats[0]["duplicates"] + stats[1]["duplicates"]
    ls = last_stats(os.path.join(run_dir, "loader.jsonl"))
    if ls["stale_pairs"] != copies - 1 or ls["rejected_pairs"] != 0 or dup != 0:
        fail("loader stale_pairs %s rejected_pairs %s, consumers' duplicates %s: expected %d, 0, 0 (%s)"
             % (ls["stale_pairs"], ls["rejected_pairs"], dup, copies - 1, json.dumps(ls)))
    if peak is None or peak > 400:
        fail("the loader's peak RSS %s MB (expected under 400)" % peak)
    print("repeat: %d epochs x %d exact; %d copies of one issued pair: forwarded once, stale_pairs %d, consumers' "
          "duplicates %d; loader peak RSS %.0f MB" % (epochs, n, copies, ls["stale_pairs"], dup, peak))


if __name__ == "__main__":
    mode, moco, db, n, keys, out, port = sys.argv[1:8]
    os.makedirs(out, exist_ok=True)
    {"direct": direct, "serve": serve, "slots": slots, "repeat": repeat, "window": window,
     "readmit": readmit}[mode](moco, db, int(n), keys, out, int(port))
