"""End-to-end test of a loader serving several consumers (ranks):
`moco run DB --serve ipc://... --consumers 2` on 300 Fashion-MNIST images,
2 epochs, read by two PairStreams (rank 0 and rank 1 of 2) in threads:
per epoch the two shards are disjoint, of equal size (+-1), and together
hold every index exactly once. Then the guards: a HELLO of the wrong rank
count and a second consumer for a taken rank are refused. Then a stop
mid-epoch (both ranks BYE), the union of their states (state_union) as the
resume state of two new ranks: over both sessions every index exactly once.
Exit 0 pass, 1 fail, 77 skipped.
    e2e_shards.py MOCO TMPDIR
"""
import json
import os
import subprocess
import sys
import threading
import time

import moco_stream

from e2e_data import N, fresh_db


def start(moco, db, ep, rundir):
    err = open(rundir + ".err", "w")
    cmd = [moco, "run", db, "--serve", ep, "--consumers", "2", "--workers", "1", "--epochs", "2",
           "--run-dir", rundir, "--recipe", "cifar", "--size", "28", "--quiet"]
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


def main(moco, tmp):
    db = fresh_db(moco, tmp)
    if db is None:
        return 77
    ok = True

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


def replaced(moco, db, tmp):
    """3. rank 1 closes mid-epoch while rank 0 reads on, and a new rank 1 joins
    without a state: what the first one had received (and so acknowledged)
    but not yielded is not sent again. It says so as it closes (before:
    silent, the loader's log clean); and where the successor joins the same
    epoch, the loader's rank_replaced event and the successor's warning
    (stats["missing"]) say it too."""
    import logging
    ep = "ipc://%s/s3" % tmp
    proc, errf = start(moco, db, ep, os.path.join(tmp, "r3"))
    out, warned = {}, []

    class Catch(logging.Handler):
        def emit(self, rec):
            warned.append(rec.getMessage())
    h = Catch(level=logging.WARNING)
    logging.getLogger("moco_stream").addHandler(h)
    try:
        t = threading.Thread(target=read, args=(ep, 0, out), kwargs={"stop_after": 10 ** 9})  # slow, to the end
        t.start()
        read(ep, 1, out, stop_after=30)
        later = {}
        read(ep, 1, later)
        t.join(120)
    finally:
        logging.getLogger("moco_stream").removeHandler(h)
    ok = proc.wait(60) == 0
    ev = [json.loads(line) for line in open(os.path.join(tmp, "r3", "loader.jsonl")) if '"rank_replaced"' in line]
    got = [set(out.get(0, {}).get(e, []) + out.get(1, {}).get(e, []) + later.get(1, {}).get(e, [])) for e in (0, 1)]
    gone = [N - len(g) for g in got]
    said = [w for w in warned if "pairs received and acknowledged but not yielded" in w]
    told = int(said[0].split(" with ")[1].split()[0]) if said else -1
    # every sample not yielded is one the closing rank said it left: nothing lost in silence
    if not ok or out.get("errors") or later.get("errors") or len(said) != 1 or sum(gone) != told or \
            any(e["rank"] != 1 for e in ev):
        print("FAIL: a rank replaced mid-epoch: moco run %s, errors %s %s, not yielded %s, rank_replaced %s, "
              "warnings %s: %s" % (proc.returncode, out.get("errors"), later.get("errors"), gone, ev, warned,
                                   open(errf).read()[-800:]))
        return False
    print("a rank closed mid-epoch and replaced without a state: %s samples of epochs 0, 1 not yielded, as its close "
          "said (%d); the loader's rank_replaced events: %s" % (gone, told, ev))
    return True


if __name__ == "__main__":
    sys.exit(main(sys.argv[1], sys.argv[2]))
