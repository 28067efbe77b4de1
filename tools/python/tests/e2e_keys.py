"""End-to-end test of moco_stream against `moco run DB --serve tcp://... --keys K`
(300 Fashion-MNIST images):
1. tools/python/README.md's example (a PairDataset iterated to the end in a
   DataLoader, never closed; PairStream without torch), its process started
   before the loader binds: every pair, and `moco run` exits within a few
   seconds of the consumer's last batch (before: 30-40 s later, after
   --consumer-timeout and --linger, as the consumer never said BYE);
2. a consumer with (a) the key directory of another `moco keygen` or (b) the
   allowed client key and another server.key: StreamError within 10 s naming
   its server.key (before: "no WELCOME" after the whole timeout, while the
   loader logged cryptographic errors).
Exit 0 pass, 1 fail, 77 skipped.
    e2e_keys.py MOCO TMPDIR                    (the test)
    e2e_keys.py --consume EP KEYS              (the README's consumer)
"""
import os
import shutil
import socket
import subprocess
import sys
import time

import moco_stream

from e2e_data import N, fresh_db


def consume(endpoint, keys):
    """The README's example; prints the pairs and the time of the last batch."""
    n, last = 0, None
    try:
        import torch
        from moco_stream.torch import PairDataset
        ds = PairDataset(endpoint, keys=keys, recipe="cifar", batch_size=64, timeout=30)
        for xq, xk, labels, indices, epoch in torch.utils.data.DataLoader(ds, batch_size=None):
            n, last = n + len(indices), time.time()
    except ImportError:
        for b in moco_stream.PairStream(endpoint, keys=keys, batch_size=64, timeout=30):
            n, last = n + len(b.indices), time.time()
    print("%d %.3f" % (n, last), flush=True)


def free_port():
    with socket.socket() as so:
        so.bind(("127.0.0.1", 0))
        return so.getsockname()[1]


def serve(moco, db, ep, keys, rundir, epochs):
    err = open(rundir + ".err", "w")
    return subprocess.Popen([moco, "run", db, "--serve", ep, "--keys", keys, "--workers", "1",
                             "--epochs", str(epochs), "--recipe", "cifar", "--size", "28", "--quiet",
                             "--run-dir", rundir], stdout=subprocess.DEVNULL, stderr=err), err


def stop(p):
    """SIGTERM (moco run stops every process it started), then SIGKILL."""
    if p.poll() is None:
        p.terminate()
        try:
            p.wait(10)
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()


def main(moco, tmp):
    if "--serve" not in subprocess.run([moco, "run", "--help"], capture_output=True, text=True).stdout:
        print("skipped: `moco run` has no --serve")
        return 77
    db = fresh_db(moco, tmp)
    if db is None:
        return 77
    keys, other = os.path.join(tmp, "keys"), os.path.join(tmp, "other")
    for d in (keys, other):
        subprocess.run([moco, "keygen", d], check=True, stdout=subprocess.DEVNULL)
    wrong = os.path.join(tmp, "wrong")         # the allowed client key, another server.key
    shutil.copytree(keys, wrong)
    shutil.copy(os.path.join(other, "server.key"), wrong)
    ok = True

    # 1. the README's example, started before the loader
    ep = "tcp://127.0.0.1:%d" % free_port()
    child = subprocess.Popen([sys.executable, __file__, "--consume", ep, keys], stdout=subprocess.PIPE, text=True)
    time.sleep(1.0)
    run, err = serve(moco, db, ep, keys, os.path.join(tmp, "r1"), 1)
    try:
        out, _ = child.communicate(timeout=60)
        n, last = out.split()
        rc = run.wait(timeout=max(1.0, float(last) + 5.0 - time.time()))
        print("README example: %s pairs; moco run exited %.1f s after the last batch (rc %d)"
              % (n, time.time() - float(last), rc))
        if int(n) != N or rc != 0 or child.returncode != 0:
            print("FAIL: README example: %s pairs (want %d), consumer rc %s, moco run rc %s: %s"
                  % (n, N, child.returncode, rc, open(os.path.join(tmp, "r1.err")).read()[-2000:]))
            ok = False
    except (subprocess.TimeoutExpired, ValueError) as e:
        print("FAIL: README example: moco run still running 5 s after the consumer's last batch (%r): %s"
              % (e, open(os.path.join(tmp, "r1.err")).read()[-2000:]))
        ok = False
    finally:
        stop(child)
        stop(run)
        err.close()

    # 2. the wrong server key: (a) another keygen's directory, (b) another server.key only
    ep = "tcp://127.0.0.1:%d" % free_port()
    run, err = serve(moco, db, ep, keys, os.path.join(tmp, "r2"), 100)
    try:
        time.sleep(1.0)
        for name, k in (("another keygen", other), ("another server.key", wrong)):
            t0 = time.monotonic()
            try:
                next(iter(moco_stream.PairStream(ep, keys=k, timeout=30)))
                print("FAIL: %s: a pair" % name)
                ok = False
            except moco_stream.StreamError as e:
                dt = time.monotonic() - t0
                print("%s: StreamError after %.1f s: %s" % (name, dt, e))
                if dt > 10 or os.path.join(k, "server.key") not in str(e) or ep not in str(e):
                    print("FAIL: %s: want an error within 10 s naming %s and %s"
                          % (name, ep, os.path.join(k, "server.key")))
                    ok = False
        with moco_stream.PairStream(ep, keys=keys, timeout=30) as s:   # the loader is fine
            next(iter(s))
    finally:
        stop(run)
        err.close()
    if ok:
        print("e2e_keys: the README example ends moco run at once; a wrong server.key is named within seconds")
    return 0 if ok else 1


if __name__ == "__main__":
    if sys.argv[1] == "--consume":
        consume(sys.argv[2], sys.argv[3])
        sys.exit(0)
    sys.exit(main(sys.argv[1], sys.argv[2]))
