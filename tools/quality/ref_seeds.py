"""Run the PyTorch reference script (../shared/reference/moco_ref.py) for several seeds at once, on CUDA or CPU.

What it promises: the reference's recipe unchanged. The script's own source is executed; for --device cuda
a fixed list of substitutions (each must match exactly once, or the run stops) moves the two encoders, the
queue and every batch to the GPU, and turns TF32 off so that convolutions and products stay fp32. The
weights, the queue and the key shuffle are still drawn on the CPU generator, as in the reference. Each
seed's records go to OUT/seed<N>.jsonl, one per epoch, as moco_ref.py writes them.

--bf16: the training step under bf16 autocast, the one line a PyTorch user adds (as tools/bench_pytorch_step.py
--bf16 does): both encoders' forward and the logits in autocast, the loss on fp32 logits; the queue, the
weights, SGD and the kNN monitor stay fp32. With one --seed, an fp32 and a --bf16 run see the same batches
(the DataLoader's augmentations and the key shuffle draw from the seeded generators only), so the pair
isolates the precision, like two one-worker runs of moco train.

Usage:
  python3 tools/quality/ref_seeds.py MOCO_REF CIFAR_ROOT --seeds 2,3,4,5 --out DIR [--device cuda]
      [--workers 3] [--threads 1] [--bf16] [-- extra moco_ref.py flags]
The moco_ref.py flags default to the reference run's: --width 16 --epochs 20 --batch 256 --lr 0.03 --init demo.
"""
import argparse
import os
import subprocess
import sys
import time

CUDA_PATCHES = [  # (text in moco_ref.py, replacement)
    ("for pq, pk in zip(q.parameters(), k.parameters()): pk.data.copy_(pq.data); pk.requires_grad = False",
     "q.to(DEV); k.to(DEV)\nfor pq, pk in zip(q.parameters(), k.parameters()): pk.data.copy_(pq.data); pk.requires_grad = False"),
    ("queue = F.normalize(torch.randn(128, a.K), dim=0)", "queue = F.normalize(torch.randn(128, a.K), dim=0).to(DEV)"),
    ("for (x1, x2), _ in dl:", "for (x1, x2), _ in _dev_batches(dl):"),
    ("for x, y in mdl:", "for x, y in _dev_batches(mdl):"),
    ("for x, y in tdl:", "for x, y in _dev_batches(tdl):"),
    ("perm = torch.randperm(x2.size(0)); inv = torch.argsort(perm)",
     "perm = torch.randperm(x2.size(0)).to(DEV); inv = torch.argsort(perm)"),
    ("torch.zeros(x1.size(0), dtype=torch.long)", "torch.zeros(x1.size(0), dtype=torch.long, device=DEV)"),
    ("score = torch.zeros(x.size(0), 10)", "score = torch.zeros(x.size(0), 10, device=DEV)"),
]
BF16_PATCHES = [  # (text in moco_ref.py, replacement): the step under autocast
    ("qv = F.normalize(q(x1), dim=1)", "with _autocast(): qv = F.normalize(q(x1), dim=1)"),
    ("kv = F.normalize(k(x2[perm]), dim=1)[inv]", "with _autocast(): kv = F.normalize(k(x2[perm]), dim=1)[inv]"),
    ("logits = torch.cat([(qv * kv).sum(1, keepdim=True), qv @ queue], 1) / a.T",
     "with _autocast(): logits = torch.cat([(qv * kv).sum(1, keepdim=True), qv @ queue.to(qv.dtype)], 1).float() / a.T"),
]
DEFAULTS = ["--width", "16", "--epochs", "20", "--batch", "256", "--lr", "0.03", "--init", "demo"]


def patched_source(path, device, bf16=False):
    with open(path) as f:
        src = f.read()
    patches = (CUDA_PATCHES if device != "cpu" else []) + (BF16_PATCHES if bf16 else [])
    for old, new in patches:
        n = src.count(old)
        if n != 1:
            raise SystemExit(f"ref_seeds: {path}: expected the text {old!r} once, found it {n} times; "
                             "the reference script changed, update CUDA_PATCHES / BF16_PATCHES")
        src = src.replace(old, new)
    return src


def run_one(ref, device, argv):
    """Executes moco_ref.py in this process with argv (after the substitutions for device; DEVICE+bf16: autocast)."""
    import torch
    bf16 = device.endswith("+bf16")
    device = device.split("+")[0]
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.backends.cudnn.allow_tf32 = False
        torch.backends.cuda.matmul.allow_tf32 = False

    def move(x):
        if isinstance(x, torch.Tensor):
            return x.to(dev, non_blocking=True)
        if isinstance(x, (list, tuple)):
            return type(x)(move(v) for v in x)
        return x

    def dev_batches(loader):
        for batch in loader:
            yield move(batch)

    sys.argv = [ref] + argv
    def autocast():
        return torch.autocast(device_type=dev.type, dtype=torch.bfloat16)

    env = {"__name__": "__main__", "__file__": ref, "DEV": dev, "_dev_batches": dev_batches, "_autocast": autocast}
    exec(compile(patched_source(ref, device, bf16), ref, "exec"), env)


def main():
    if len(sys.argv) > 1 and sys.argv[1] == "--one":  # child: --one REF DEVICE moco_ref-args...
        run_one(sys.argv[2], sys.argv[3], sys.argv[4:])
        return 0
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("ref")
    p.add_argument("root")
    p.add_argument("--seeds", default="1,2,3,4")
    p.add_argument("--out", required=True)
    p.add_argument("--device", default="cuda")
    p.add_argument("--workers", type=int, default=3)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--bf16", action="store_true", help="the training step under bf16 autocast")
    a, extra = p.parse_known_args()
    extra = [x for x in extra if x != "--"]
    patched_source(a.ref, a.device, a.bf16)  # fail before starting anything if a substitution does not apply
    os.makedirs(a.out, exist_ok=True)
    procs = []
    t0 = time.time()
    for seed in [int(s) for s in a.seeds.split(",")]:
        log = os.path.join(a.out, f"seed{seed}.jsonl")
        if os.path.exists(log):
            os.remove(log)
        args = [a.root] + DEFAULTS + ["--seed", str(seed), "--workers", str(a.workers), "--threads", str(a.threads),
                           "--out", log] + extra
        cmd = [sys.executable, os.path.abspath(__file__), "--one", a.ref, a.device + ("+bf16" if a.bf16 else "")] + args
        err = open(os.path.join(a.out, f"seed{seed}.log"), "w")
        procs.append((seed, subprocess.Popen(cmd, stdout=err, stderr=subprocess.STDOUT), err))
    rc = 0
    for seed, proc, err in procs:
        proc.wait()
        err.close()
        print(f"seed {seed}: exit {proc.returncode} after {time.time() - t0:.0f} s", flush=True)
        rc = rc or proc.returncode
    return rc


if __name__ == "__main__":
    sys.exit(main())
