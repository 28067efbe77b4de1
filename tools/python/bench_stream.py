#!/usr/bin/python3
"""bench_stream.py: pairs per second that moco_stream.PairStream receives
from `moco run DB --serve`. Either reads a running stream (--endpoint) or
starts `moco run DB --serve ipc://TMP/serve` itself (--db, --workers, ...;
while moco run lacks --serve: moco loader --pairs and moco augment).
Measures for --seconds after the first batch; prints a human line, and as
its LAST line one JSON object:
  {"pairs": P, "seconds": S, "pairs_per_s": R, "mb_per_s": M, "batches": B,
   "epochs": [first, last], "stats": {...}, "endpoint": "..."}
Example: PYTHONPATH=tools/python tools/python/bench_stream.py --db DB --workers 2 --seconds 10
"""
import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import moco_stream  # noqa: E402


def start(a):
    """Start `moco run DB --serve`; while moco run lacks --serve, the same
    by hand: `moco loader --pairs` and --workers `moco augment`."""
    here = os.path.dirname(os.path.abspath(__file__))
    moco = a.moco or os.path.join(here, "..", "..", "bin", "moco")
    tmp = tempfile.mkdtemp(prefix="bench_stream.")      # mode 0700
    endpoint = "ipc://%s/serve" % tmp
    recipe = ["--recipe", a.recipe, "--quiet"] + (["--size", str(a.size)] if a.size else [])
    quiet = dict(stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    if "--serve" in subprocess.run([moco, "run", "--help"], capture_output=True, text=True).stdout:
        cmd = [moco, "run", a.db, "--serve", endpoint, "--workers", str(a.workers),
               "--epochs", str(a.epochs), "--run-dir", os.path.join(tmp, "run")] + recipe
        return [subprocess.Popen(cmd, **quiet)], tmp, endpoint
    procs = [subprocess.Popen([moco, "loader", "--db", a.db, "--bind", "ipc://%s/work" % tmp,
                               "--ctl", endpoint, "--pairs", "ipc://%s/pairs" % tmp,
                               "--epochs", str(a.epochs), "--quiet"], **quiet)]
    for _ in range(a.workers):
        procs.append(subprocess.Popen([moco, "augment", "--connect", "ipc://%s/work" % tmp,
                                       "--push", "ipc://%s/pairs" % tmp] + recipe, **quiet))
    return procs, tmp, endpoint


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--endpoint", help="a running loader's serve endpoint")
    ap.add_argument("--db", help="start `moco run DB --serve` on this dataset LMDB")
    ap.add_argument("--moco", default=None, help="the moco binary (default: bin/moco of this repo)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--recipe", default="cifar")
    ap.add_argument("--size", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=1000, help="epochs of the started run")
    ap.add_argument("--seconds", type=float, default=10.0)
    ap.add_argument("--batch-size", type=int, default=None)
    ap.add_argument("--keys", default=None)
    ap.add_argument("--insecure", action="store_true")
    ap.add_argument("--timeout", type=float, default=60.0)
    a = ap.parse_args()
    if (a.endpoint is None) == (a.db is None):
        ap.error("give exactly one of --endpoint and --db")
    procs, tmp = [], None
    endpoint = a.endpoint
    if a.db:
        procs, tmp, endpoint = start(a)
    try:
        pairs = batches = nbytes = 0
        epochs = set()
        with moco_stream.PairStream(endpoint, keys=a.keys, batch_size=a.batch_size,
                                    timeout=a.timeout, insecure=a.insecure) as s:
            it = iter(s)
            first = next(it, None)
            t0 = time.monotonic()
            if first is not None:
                epochs.add(first.epoch)
                for b in it:
                    pairs += len(b.indices)
                    batches += 1
                    nbytes += b.xq.nbytes + b.xk.nbytes
                    epochs.add(b.epoch)
                    if time.monotonic() - t0 >= a.seconds:
                        break
            dt = max(time.monotonic() - t0, 1e-9)
            stats = {k: v for k, v in s.stats.items() if v}
    finally:
        for p in procs:
            p.terminate()
        for p in procs:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
        if tmp:
            shutil.rmtree(tmp, ignore_errors=True)
    out = {"pairs": pairs, "seconds": round(dt, 3), "pairs_per_s": round(pairs / dt, 1),
           "mb_per_s": round(nbytes / dt / 1e6, 2), "batches": batches,
           "epochs": [min(epochs), max(epochs)] if epochs else [], "stats": stats, "endpoint": endpoint}
    print("moco_stream: %d pairs in %.2f s = %.0f pairs/s (%.1f MB/s of views)"
          % (pairs, dt, pairs / dt, nbytes / dt / 1e6))
    print(json.dumps(out))


if __name__ == "__main__":
    main()
