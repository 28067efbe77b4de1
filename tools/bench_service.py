#!/usr/bin/python3
"""bench_service.py: the stream as a service, measured side by side in one
run (issue 12's benchmarks). The last line printed is one JSON object.

  consumer: one `moco run DB --serve ipc://...` (loader + --workers
      workers); its consumers take turns on the same workers: the C sink
      (`moco sink --connect`) and moco_stream.PairStream (tools/python),
      --rounds times, the order alternating. Reported: pairs/s of each and PairStream / C sink.
  transport: `moco bench pipeline` into the C sink with the workers on
      private ipc sockets, then on tcp over loopback with CURVE
      (--bind tcp://127.0.0.1:PORT --keys DIR --workers-via-tcp),
      alternately, --rounds times. Reported: pairs/s and tcp / ipc.

  tools/bench_service.py --db DB --recipe cifar --size 32 --workers 1
  tools/bench_service.py --db DB --recipe v2 --size 224 --workers 1 --what both

Each figure is measured over --seconds after a --warmup; the CPU model
(lscpu) and the load average go beside the figures."""
import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, "python"))


def cpu_model():
    try:
        out = subprocess.run(["lscpu"], capture_output=True, text=True).stdout
        for line in out.splitlines():
            if line.startswith("Model name:"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return "?"


def last_json(text):
    for line in reversed(text.strip().splitlines()):
        line = line.strip()
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError("no JSON line in: " + text[-500:])


def c_sink(moco, ep, seconds, warmup):
    """(pairs/s, CPU seconds of the consumer process)"""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    out = subprocess.run([moco, "sink", "--connect", ep, "--seconds", str(seconds), "--warmup", str(warmup), "--quiet"],
                         capture_output=True, text=True, timeout=seconds + warmup + 60)
    if out.returncode != 0:
        raise RuntimeError("moco sink: " + out.stderr[-500:])
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    return last_json(out.stdout)["pairs_per_s"], r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime


def pairstream(ep, seconds, warmup):
    """(pairs/s, CPU seconds of this process while it read)"""
    import moco_stream
    r0 = resource.getrusage(resource.RUSAGE_SELF)
    n = 0
    t_start = None
    with moco_stream.PairStream(ep, timeout=60) as s:
        t0 = time.time()
        for b in s:
            t = time.time()
            if t_start is None and t - t0 >= warmup:
                t_start, n = t, 0
            if t_start is not None:
                n += len(b.indices)
                if t - t_start >= seconds:
                    break
    r1 = resource.getrusage(resource.RUSAGE_SELF)
    return n / (time.time() - t_start), r1.ru_utime + r1.ru_stime - r0.ru_utime - r0.ru_stime


def consumer_bench(a, tmp):
    ep = "ipc://%s/serve" % tmp
    run = subprocess.Popen([a.moco, "run", a.db, "--serve", ep, "--workers", str(a.workers), "--epochs", "1000000",
                            "--recipe", a.recipe, "--size", str(a.size), "--run-dir", os.path.join(tmp, "run"), "--quiet"],
                           stderr=open(os.path.join(tmp, "run.err"), "w"))
    rounds = []
    try:
        time.sleep(1.0)
        for r in range(a.rounds):
            if r % 2 == 0:  # alternate the order, so that neither always goes first
                c, cc = c_sink(a.moco, ep, a.seconds, a.warmup)
                p, pc = pairstream(ep, a.seconds, a.warmup)
            else:
                p, pc = pairstream(ep, a.seconds, a.warmup)
                c, cc = c_sink(a.moco, ep, a.seconds, a.warmup)
            rounds.append({"c_sink": round(c, 1), "pairstream": round(p, 1), "ratio": round(p / c, 3),
                           "c_sink_cpu_s": round(cc, 2), "pairstream_cpu_s": round(pc, 2)})
            print("consumer round %d: C sink %.1f pairs/s (%.2f CPU s), PairStream %.1f pairs/s (%.2f CPU s), ratio %.3f "
                  "(load %s)" % (r + 1, c, cc, p, pc, p / c, os.getloadavg()[0]), file=sys.stderr)
    finally:
        run.terminate()
        run.wait(timeout=30)
    c = sum(x["c_sink"] for x in rounds) / len(rounds)
    p = sum(x["pairstream"] for x in rounds) / len(rounds)
    return {"rounds": rounds, "c_sink_mean": round(c, 1), "pairstream_mean": round(p, 1), "ratio": round(p / c, 3)}


def transport_bench(a, tmp):
    keys = os.path.join(tmp, "keys")
    subprocess.run([a.moco, "keygen", keys], check=True, capture_output=True)
    rounds = []
    port = 40000 + os.getpid() % 5000
    for r in range(a.rounds):
        fig = {}
        for mode in (("ipc", "tcp") if r % 2 == 0 else ("tcp", "ipc")):
            extra = ["--bind", "tcp://127.0.0.1:%d" % (port + 2 * r), "--keys", keys, "--workers-via-tcp"] if mode == "tcp" else []
            out = subprocess.run([a.moco, "bench", "pipeline", "--db", a.db, "--recipe", a.recipe, "--size", str(a.size),
                                  "--workers", str(a.workers), "--seconds", str(a.seconds), "--warmup", str(a.warmup),
                                  "--run-dir", os.path.join(tmp, "b-%s-%d" % (mode, r))] + extra,
                                 capture_output=True, text=True, timeout=a.seconds + a.warmup + 120)
            if out.returncode != 0:
                raise RuntimeError("moco bench pipeline (%s): %s" % (mode, out.stderr[-500:]))
            fig[mode] = last_json(out.stdout)["pairs_per_s"]
        fig["ratio"] = round(fig["tcp"] / fig["ipc"], 3)
        rounds.append(fig)
        print("transport round %d: ipc %.1f pairs/s, tcp+CURVE %.1f pairs/s, ratio %.3f (load %s)"
              % (r + 1, fig["ipc"], fig["tcp"], fig["ratio"], os.getloadavg()[0]), file=sys.stderr)
    i = sum(x["ipc"] for x in rounds) / len(rounds)
    t = sum(x["tcp"] for x in rounds) / len(rounds)
    return {"rounds": rounds, "ipc_mean": round(i, 1), "tcp_curve_mean": round(t, 1), "ratio": round(t / i, 3)}


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--moco", default=os.path.join(HERE, "..", "bin", "moco"))
    ap.add_argument("--db", required=True)
    ap.add_argument("--recipe", default="cifar")
    ap.add_argument("--size", type=int, default=32)
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--warmup", type=float, default=2)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--what", choices=["consumer", "transport", "both"], default="consumer")
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix="moco-bench-service.")
    res = {"bench": "service", "cpu": cpu_model(), "nproc": os.cpu_count(), "db": a.db, "recipe": a.recipe, "size": a.size,
           "workers": a.workers, "seconds": a.seconds, "load_before": os.getloadavg()[0]}
    try:
        if a.what in ("consumer", "both"):
            res["consumer"] = consumer_bench(a, tmp)
        if a.what in ("transport", "both"):
            res["transport"] = transport_bench(a, tmp)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    res["load_after"] = os.getloadavg()[0]
    print(json.dumps(res))


if __name__ == "__main__":
    main()
