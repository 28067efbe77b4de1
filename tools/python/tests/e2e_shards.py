"""End-to-end test of a loader serving several consumers (ranks):
`moco run DB --serve ipc://... --consumers 2` on 300 Fashion-MNIST images,
2 epochs, read by two PairStreams (rank 0 and rank 1 of 2) in threads:
per epoch the two shards are disjoint, of equal size (+-1), and together
hold every index exactly once. Then the guards: a HELLO of the wrong rank
count and a second consumer for a taken rank are refused. Then a stop
mid-epoch (both ranks BYE), the union of their states (state_union) as the
resume state of two new ranks: over both sessions every index exactly once.
Then ranks closed and killed mid-epoch, replaced without a state (replaced()).
Exit 0 pass, 1 fail, 77 skipped.
    e2e_shards.py MOCO TMPDIR [replaced]   (replaced: that case alone)
"""
import json
import os
import re
import subprocess
import sys
import threading
import time

import moco_stream

from e2e_data import N, fresh_db


def start(moco, db, ep, rundir, *extra):
    err = open(rundir + ".err", "w")
    cmd = [moco, "run", db, "--serve", ep, "--consumers", "2", "--workers", "1", "--epochs", "2",
           "--run-dir", rundir, "--recipe", "cifar", "--size", "28", "--quiet"] + list(extra)
    return subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=err), rundir + ".err"


def read(ep, rank, out, stop_after=None, resume=None, states=None):
    """Rank `rank`'s indices per epoch into out[rank]; with stop_after, close
    (BYE) after that many pairs of epoch 0 and leave the state in states."""
    log = out.setdefault(rank, {})
    try:
        with moco_stream.PairStream(ep, rank=rank, ranks=2, resume=resume, batch_size=10,
                                    prefetch=2, timeout=30) as s:
            for b in s:
                log.setdefault(b.epoch, []).extend(b.indices.tolist())
                if stop_after is not None and len(log.get(0, [])) >= stop_after:
                    break
                if stop_after is not None:
                    time.sleep(0.05)  # slow: the guards below run while both ranks are in
            if states is not None:
                states[rank] = s.state()
            out.setdefault("ends", {})[rank] = list(s.epoch_ends)
    except Exception as e:  # noqa: BLE001 -- reported by the main thread
        out.setdefault("errors", []).append("rank %d: %r" % (rank, e))


def both(ep, **kw):
    out = {}
    ts = [threading.Thread(target=read, args=(ep, r, out), kwargs=kw) for r in (0, 1)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(120)
    return out


def check(name, logs, epochs=(0, 1)):
    ok = True
    for e in epochs:
        per = [sorted(i for log in logs[r] for i in log.get(e, [])) for r in (0, 1)]
        union = sorted(per[0] + per[1])
        if union != list(range(N)):
            print("FAIL: %s epoch %d: %d indices, %d distinct (want %d)" % (name, e, len(union), len(set(union)), N))
            ok = False
        if set(per[0]) & set(per[1]):
            print("FAIL: %s epoch %d: the shards overlap" % (name, e))
            ok = False
    return ok


def main(moco, tmp, only=None):
    db = fresh_db(moco, tmp)
    if db is None:
        return 77
    ok = True
    if only == "replaced":
        return 0 if replaced(moco, db, tmp) else 1

    # 1. two ranks, two epochs: disjoint shards, every index once per epoch
    ep = "ipc://%s/s1" % tmp
    proc, errf = start(moco, db, ep, os.path.join(tmp, "r1"))
    out = both(ep)
    if out.get("errors"):
        print("FAIL: run 1: %s" % out["errors"])
        return 1
    ok &= check("run 1", [[out[0]], [out[1]]])
    for e in (0, 1):
        n0, n1 = len(out[0].get(e, [])), len(out[1].get(e, []))
        if abs(n0 - n1) > 1:
            print("FAIL: run 1 epoch %d: shards of %d and %d" % (e, n0, n1))
            ok = False
    print("run 1: shards of %s and %s pairs per epoch" % ([len(out[0].get(e, [])) for e in (0, 1)],
                                                         [len(out[1].get(e, [])) for e in (0, 1)]))
    if proc.wait(60) != 0:
        print("FAIL: run 1: moco run exited %s: %s" % (proc.returncode, open(errf).read()[-2000:]))
        ok = False

    # 2. guards, then a stop mid-epoch and a resume of both ranks from the union
    ep = "ipc://%s/s2" % tmp
    proc, errf = start(moco, db, ep, os.path.join(tmp, "r2"))
    # a refusal is a REFUSED with a code and the loader's reason; any other StreamError (no WELCOME in time) is not
    for kw, what, reason in (({"rank": 0, "ranks": 3}, "a HELLO of 3 ranks", "this loader serves 2 consumers"),):
        try:
            with moco_stream.PairStream(ep, timeout=10, **kw) as s:
                next(iter(s))
            print("FAIL: %s was accepted" % what)
            ok = False
        except moco_stream.StreamError as e:
            if e.code is None or reason not in str(e):
                print("FAIL: %s: not the loader's refusal (%r) but: %s" % (what, reason, e))
                ok = False
            else:
                print("refused, as it should be: %s: %s" % (what, e))
    first, states = {}, {}
    ts = [threading.Thread(target=read, args=(ep, r, first), kwargs={"stop_after": 60, "states": states})
          for r in (0, 1)]
    for t in ts:
        t.start()
    deadline = time.monotonic() + 30
    while not first.get(1, {}).get(0) and time.monotonic() < deadline:
        time.sleep(0.01)
    try:  # rank 1 is taken: another consumer for it is refused
        with moco_stream.PairStream(ep, rank=1, ranks=2, timeout=10) as s:
            next(iter(s))
        print("FAIL: a second consumer of rank 1 was accepted")
        ok = False
    except moco_stream.StreamError as e:
        if e.code is None or "another consumer is connected as rank 1" not in str(e):
            print("FAIL: a second rank 1: not the loader's refusal but: %s" % e)
            ok = False
        else:
            print("refused, as it should be: a second rank 1: %s" % e)
    for t in ts:
        t.join(120)
    if first.get("errors") or len(states) != 2:
        print("FAIL: session 1: %s, states of %s" % (first.get("errors"), sorted(states)))
        return 1
    st = moco_stream.state_union([states[0], states[1]])
    print("stopped at %s and %s pairs of epoch 0; resuming both from the union"
          % (len(first[0].get(0, [])), len(first[1].get(0, []))))
    second = {}
    deadline = time.monotonic() + 30
    while True:  # BYE frees a rank at once; allow a moment for the second BYE
        second = both(ep, resume=st)
        if not second.get("errors") or time.monotonic() > deadline or second.get(0) or second.get(1):
            break
        time.sleep(0.5)
    if second.get("errors"):
        print("FAIL: session 2: %s" % second["errors"])
        return 1
    ok &= check("stop and resume", [[first[0], second[0]], [first[1], second[1]]])
    if proc.wait(60) != 0:
        print("FAIL: run 2: moco run exited %s: %s" % (proc.returncode, open(errf).read()[-2000:]))
        ok = False
    ok &= replaced(moco, db, tmp)
    print("shards: %s" % ("passed" if ok else "FAILED"))
    return 0 if ok else 1


# rank 1 of 2 as a process of its own, to be killed (SIGKILL): it writes each batch's indices to FILE as
# it yields them ("e i i ..."), and after 3 batches, once what it yielded is acknowledged, "ready PAIRS
# YIELDED" (pairs received, yielded); then it reads no more, its queue full, until killed
RANK_PROC = r"""
import sys, time, moco_stream
ep, path = sys.argv[1], sys.argv[2]
with open(path, "w") as f, moco_stream.PairStream(ep, rank=1, ranks=2, batch_size=10, prefetch=2, timeout=30) as s:
    for k, b in enumerate(s):
        f.write("%d %s\n" % (b.epoch, " ".join(map(str, b.indices.tolist()))))
        f.flush()
        if k == 2:
            break
    while s.stats["acked"] < s.stats["yielded"]:
        time.sleep(0.01)
    time.sleep(0.5)  # the loader fills the queue
    f.write("ready %d %d\n" % (s.stats["pairs"], s.stats["yielded"]))
    f.flush()
    time.sleep(600)
"""


def successor(ep, out, deadline):
    """Rank 1 without a state, read to the end; a HELLO refused while its predecessor (killed, so
    silent) still counts as connected (--consumer-timeout) is said again."""
    while True:
        out.clear()
        read(ep, 1, out)
        errs = out.get("errors", [])
        if not errs or "another consumer is connected as rank 1" not in str(errs) or time.monotonic() > deadline:
            return
        time.sleep(0.5)


def once(name, logs, epochs=(0, 1)):
    """Every index of each epoch yielded exactly once over all the logs ({epoch: [indices]})."""
    ok = True
    for e in epochs:
        got = sorted(i for log in logs for i in log.get(e, []))
        if got != list(range(N)):
            have = set(got)
            print("FAIL: %s epoch %d: %d indices yielded, %d distinct, %d missing (of %d), e.g. %s" %
                  (name, e, len(got), len(have), N - len(have), N, sorted(set(range(N)) - have)[:8]))
            ok = False
    return ok


def finish(proc, threads, within=40):
    """The readers' threads joined within `within` s, then moco run's exit status; None where a reader
    hangs (moco run is stopped: the stream never ended)."""
    end = time.monotonic() + within
    for th in threads:
        th.join(max(0.0, end - time.monotonic()))
    if any(th.is_alive() for th in threads):
        proc.terminate()
        proc.wait(30)
        return None
    return proc.wait(60)


def replaced(moco, db, tmp):
    """3. rank 1 leaves mid-epoch while rank 0 reads on, and a new rank 1
    joins without a state, twice: (a) it closes after 30 pairs, (b) it is
    killed (SIGKILL, a process of its own) after 3 batches, once the queue
    holds more. A pair is acknowledged when it is yielded: what the first
    rank 1 received and never yielded goes to the new one, so the three
    readers' yields hold every index of each epoch exactly once (before:
    those pairs were acknowledged on receipt and lost; a close warned of
    them). (b) runs with --window 8, 4 samples a rank, below the batch of 10:
    pairs sent and not yielded take no room in the window, and an epoch's
    last, short batch gets its EPOCH_END: no deadlock."""
    import logging
    import signal
    ok = True
    warned = []

    class Catch(logging.Handler):
        def emit(self, rec):
            warned.append(rec.getMessage())
    h = Catch(level=logging.INFO)
    lg = logging.getLogger("moco_stream")
    level = lg.level
    lg.setLevel(logging.INFO)
    lg.addHandler(h)
    try:
        # (a) closed
        ep = "ipc://%s/s3" % tmp
        proc, errf = start(moco, db, ep, os.path.join(tmp, "r3"))
        out, first, later = {}, {}, {}
        t = threading.Thread(target=read, args=(ep, 0, out), kwargs={"stop_after": 10 ** 9}, daemon=True)  # slow
        t.start()
        read(ep, 1, first, stop_after=30)
        t1 = threading.Thread(target=successor, args=(ep, later, time.monotonic() + 30), daemon=True)
        t1.start()
        rc = finish(proc, (t, t1))
        ev = [json.loads(line) for line in open(os.path.join(tmp, "r3", "loader.jsonl")) if '"rank_replaced"' in line]
        logs = [out.get(0, {}), first.get(1, {}), later.get(1, {})]
        print("(a) rank 1 closed after %d pairs of epoch 0; its successor yielded %s, rank 0 %s; rank_replaced %s"
              % (len(first.get(1, {}).get(0, [])), [len(later.get(1, {}).get(e, [])) for e in (0, 1)],
                 [len(out.get(0, {}).get(e, [])) for e in (0, 1)], ev))
        if rc != 0 or out.get("errors") or first.get("errors") or later.get("errors") or t.is_alive() or t1.is_alive():
            print("FAIL: (a) moco run %s, errors %s %s %s, hung %s: %s" % (rc, out.get("errors"), first.get("errors"),
                  later.get("errors"), t.is_alive() or t1.is_alive(), open(errf).read()[-800:]))
            ok = False
        ok &= once("(a) a rank closed mid-epoch and replaced without a state", logs)
        # what the loader kept of the closed rank is what it yielded: its acknowledgements
        if [e["acknowledged"] for e in ev] != [len(first.get(1, {}).get(0, []))]:
            print("FAIL: (a) rank_replaced %s: the closed rank yielded %d" % (ev, len(first.get(1, {}).get(0, []))))
            ok = False

        # (b) killed
        ep = "ipc://%s/s4" % tmp
        proc, errf = start(moco, db, ep, os.path.join(tmp, "r4"), "--window", "8")
        out, later = {}, {}
        rec = os.path.join(tmp, "rank1.yields")
        env = dict(os.environ, PYTHONPATH=os.pathsep.join(sys.path))
        victim = subprocess.Popen([sys.executable, "-c", RANK_PROC, ep, rec], env=env)
        t = threading.Thread(target=read, args=(ep, 0, out), kwargs={"stop_after": 10 ** 9}, daemon=True)
        t.start()
        deadline, ready = time.monotonic() + 60, None
        while ready is None and time.monotonic() < deadline and victim.poll() is None:
            time.sleep(0.05)
            if os.path.exists(rec):
                ready = next((ln.split() for ln in open(rec) if ln.startswith("ready")), None)
        victim.send_signal(signal.SIGKILL)
        victim.wait(10)
        killed = {}
        for ln in open(rec) if os.path.exists(rec) else ():
            f = ln.split()
            if f and f[0] != "ready":
                killed.setdefault(int(f[0]), []).extend(int(i) for i in f[1:])
        t1 = threading.Thread(target=successor, args=(ep, later, time.monotonic() + 40), daemon=True)
        t1.start()
        rc = finish(proc, (t, t1))
        print("(b) rank 1 killed after yielding %d pairs of epoch 0 (%s received; pairs yielded by it: %s); its "
              "successor yielded %s, rank 0 %s" % (len(killed.get(0, [])), ready and ready[1], ready and ready[2],
                                                   [len(later.get(1, {}).get(e, [])) for e in (0, 1)],
                                                   [len(out.get(0, {}).get(e, [])) for e in (0, 1)]))
        if ready is None or int(ready[1]) <= int(ready[2]):
            print("FAIL: (b) the rank to kill did not get ready with pairs received and not yielded: %s" % ready)
            ok = False
        if rc != 0 or out.get("errors") or later.get("errors") or t.is_alive() or t1.is_alive():
            print("FAIL: (b) moco run %s, errors %s %s, hung %s: %s" % (rc, out.get("errors"), later.get("errors"),
                  t.is_alive() or t1.is_alive(), open(errf).read()[-800:]))
            ok = False
        ok &= once("(b) a rank killed mid-epoch and replaced without a state (--window 8)",
                   [out.get(0, {}), killed, later.get(1, {})])
    finally:
        lg.removeHandler(h)
        lg.setLevel(level)
    # nothing received and not yielded is acknowledged: no close warns of pairs lost; each successor is told
    # (INFO) of what its predecessor yielded, no more
    lost = [w for w in warned if "acknowledged but not yielded" in w or "restart every rank" in w]
    told = [int(re.search(r"epoch \d+: (\d+) samples", w).group(1)) for w in warned
            if "yielded them to its caller" in w]
    if lost or told != [len(first.get(1, {}).get(0, [])), len(killed.get(0, []))]:
        print("FAIL: warnings of lost pairs %s; of pairs that never came to a successor: %s" % (lost, told))
        ok = False
    if ok:
        print("ranks closed and killed mid-epoch, replaced without a state: every index of each epoch yielded "
              "exactly once")
    return ok


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:4]))
