"""End-to-end test of moco_stream against the real C pipeline:
`moco run DB --serve ipc://...` on 300 Fashion-MNIST images, 2 epochs:
every index exactly once per epoch; then a consumer SIGKILLed mid-epoch
after saving its state, resumed by a new consumer: the union per epoch is
exact; a consumer that closes (BYE) is succeeded at once, exactly once
too. Until `moco run` has --serve, the same pipeline is started by hand
(`moco loader --pairs` + `moco augment`). Exit 0 pass, 1 fail, 77 skipped.
    e2e_serve.py MOCO TMPDIR          (the test)
    e2e_serve.py --consume EP FILE    (the consumer that gets killed)
"""
import os
import pickle
import signal
import subprocess
import sys
import time

import moco_stream

from e2e_data import N, fresh_db


def save(path, obj):
    with open(path + ".tmp", "wb") as f:
        pickle.dump(obj, f)
    os.replace(path + ".tmp", path)


def consume(endpoint, path):
    """Yielded indices and state, saved together after every batch (atomic).
    prefetch=2: PairStream ACKs on receipt, so what sits in its queue is done
    for the loader; a small queue keeps the run from ending before the kill."""
    log = {}
    with moco_stream.PairStream(endpoint, batch_size=10, prefetch=2, timeout=30) as s:
        for b in s:
            log.setdefault(b.epoch, []).extend(b.indices.tolist())
            save(path, {"state": s.state(), "log": log})
            time.sleep(0.02)                   # slow, so that the kill lands mid-epoch


def exact(name, logs, failed):
    ok = True
    for e in (0, 1):
        # the subset is clean: a sample the loader declares failed is a fault here, not a licence to skip it
        if failed.get(e):
            print("FAIL: %s epoch %d: the loader declared %d samples failed: %s"
                  % (name, e, len(failed[e]), sorted(failed[e])[:10]))
            ok = False
        got = sorted(i for log in logs for i in log.get(e, []))
        want = list(range(N))
        if got != want:
            dup = len(got) - len(set(got))
            print("FAIL: %s epoch %d: %d indices, %d duplicates, %d missing"
                  % (name, e, len(got), dup, len(set(want) - set(got))))
            ok = False
    return ok


class Pipeline:
    """`moco run DB --serve EP` when moco run has --serve; else the same by
    hand: `moco loader --pairs` (serve mode) and one `moco augment`."""

    def __init__(self, moco, db, endpoint, rundir, serve, extra):
        self.err = open(rundir + ".err", "w")
        self.rundir = rundir
        recipe = ["--recipe", "cifar", "--size", "28", "--quiet"]
        if serve:
            cmd = [moco, "run", db, "--serve", endpoint, "--workers", "1", "--epochs", "2",
                   "--run-dir", rundir] + recipe + list(extra)
            self.procs = [subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=self.err)]
            return
        d = endpoint[len("ipc://"):] + ".d"
        os.makedirs(d, mode=0o700)
        loader = [moco, "loader", "--db", db, "--bind", "ipc://%s/work" % d, "--ctl", endpoint,
                  "--pairs", "ipc://%s/pairs" % d, "--epochs", "2", "--quiet",
                  "--consumer-timeout", "2"]
        worker = [moco, "augment", "--connect", "ipc://%s/work" % d, "--push",
                  "ipc://%s/pairs" % d] + recipe
        self.procs = [subprocess.Popen(c, stdout=subprocess.DEVNULL, stderr=self.err)
                      for c in (loader, worker)]

    def finish(self):
        """True when every process exited 0 (the worker may need a nudge)."""
        rcs = []
        for i, p in enumerate(self.procs):
            try:
                rcs.append(p.wait(30 if i == 0 else 8))
            except subprocess.TimeoutExpired:
                p.kill()
                rcs.append("timeout")
        self.err.close()
        if rcs[0] != 0 or any(rc not in (0, -15) for rc in rcs[1:]):
            print("FAIL: pipeline exit codes %s: %s" % (rcs, open(self.rundir + ".err").read()[-2000:]))
            return False
        return True


def main(moco, tmp):
    helptext = subprocess.run([moco, "run", "--help"], capture_output=True, text=True).stdout
    serve = "--serve" in helptext
    if not serve:
        print("FAIL: `moco run --help` has no --serve")
        return 1
    db = fresh_db(moco, tmp)
    if db is None:
        return 77
    extra = ["--consumer-timeout", "2"] if "--consumer-timeout" in helptext else []
    ok = True

    # 1. two epochs, exactly once
    ep = "ipc://%s/serve1" % tmp
    run = Pipeline(moco, db, ep, os.path.join(tmp, "r1"), serve, extra)
    log = {}
    t0 = time.monotonic()
    with moco_stream.PairStream(ep, timeout=30) as s:
        for b in s:
            log.setdefault(b.epoch, []).extend(b.indices.tolist())
            assert b.xq.shape[1:] == (28, 28, 1) and b.xq.shape == b.xk.shape, b.xq.shape
        failed = {e: f for e, _, f in s.epoch_ends}
        print("run 1: %d pairs in %.1f s, WELCOME count %s epochs %s, stats %s"
              % (sum(map(len, log.values())), time.monotonic() - t0, s.count, s.epochs,
                 {k: v for k, v in s.stats.items() if v}))
    if s.count != N or s.epochs != 2:
        print("FAIL: run 1: WELCOME count %s epochs %s, want %d and 2" % (s.count, s.epochs, N))
        ok = False
    ok &= exact("run 1", [log], failed)
    ok &= run.finish()

    # 2. a consumer killed mid-epoch, resumed from its saved state
    ep = "ipc://%s/serve2" % tmp
    run = Pipeline(moco, db, ep, os.path.join(tmp, "r2"), serve, extra)
    path = os.path.join(tmp, "consumer.pkl")
    child = subprocess.Popen([sys.executable, __file__, "--consume", ep, path])
    deadline = time.monotonic() + 30
    saved = None
    while time.monotonic() < deadline:
        try:
            saved = pickle.load(open(path, "rb"))
        except (OSError, EOFError, pickle.UnpicklingError):
            saved = None
        if saved and len(saved["log"].get(0, [])) >= 100:
            break
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    saved = pickle.load(open(path, "rb"))
    st = saved["state"]
    print("killed the consumer at epoch %d with %d of epoch 0 delivered"
          % (st["epoch"], len(saved["log"].get(0, []))))
    if st["epoch"] != 0:
        print("FAIL: the kill did not land in epoch 0")
        ok = False
    log2, refused = {}, 0
    deadline = time.monotonic() + 30
    while True:     # the loader refuses a successor until it takes the old one for dead
        try:
            with moco_stream.PairStream(ep, resume=st, timeout=30) as s:
                for b in s:
                    log2.setdefault(b.epoch, []).extend(b.indices.tolist())
                failed = {e: f for e, _, f in s.epoch_ends}
            break
        except moco_stream.StreamError as e:
            if e.code is None or time.monotonic() > deadline or log2:
                raise
            refused += 1
            time.sleep(0.5)
    print("resumed after %d refusals: %d pairs" % (refused, sum(map(len, log2.values()))))
    ok &= exact("kill and resume", [saved["log"], log2], failed)
    ok &= run.finish()

    # 3. a consumer that closes (BYE) mid-epoch: its successor is taken at once
    ep = "ipc://%s/serve3" % tmp
    run = Pipeline(moco, db, ep, os.path.join(tmp, "r3"), serve, extra)
    log3 = {}
    with moco_stream.PairStream(ep, batch_size=10, prefetch=2, timeout=30) as s:
        for b in s:
            log3.setdefault(b.epoch, []).extend(b.indices.tolist())
            if len(log3[0]) >= 120:
                break
        st = s.state()
    log4, refused = {}, 0
    deadline = time.monotonic() + 30
    while True:
        try:
            with moco_stream.PairStream(ep, resume=st, timeout=30) as s:
                for b in s:
                    log4.setdefault(b.epoch, []).extend(b.indices.tolist())
                failed = {e: f for e, _, f in s.epoch_ends}
            break
        except moco_stream.StreamError as e:
            if e.code is None or time.monotonic() > deadline or log4:
                raise
            refused += 1
            time.sleep(0.5)
    print("closed (BYE) after %d pairs; the successor got %d after %d refusals"
          % (len(log3[0]), sum(map(len, log4.values())), refused))
    ok &= exact("close and resume", [log3, log4], failed)
    if refused:
        # a loader built before BYE (formats/README.md) ignores it; moco run --serve is newer
        print("%s: the loader did not honour BYE" % ("FAIL" if serve else "note"))
        ok &= not serve
    ok &= run.finish()
    if ok:
        print("e2e: 2 x %d pairs exactly once; killed or closed, and resumed: exactly once" % N)
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "--consume":
        consume(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main(sys.argv[1], sys.argv[2]))
