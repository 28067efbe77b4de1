#!/usr/bin/env bash
# cli_peers.sh: tools/bench_pytorch_step.py --peers --rounds 2 on a tiny
# resnet18-cifar: PyTorch fp32, PyTorch bf16 autocast, ours fp32 and ours
# bf16 (or its skip reason) run twice, interleaved, and the last line's
# figures are each one's median over the rounds, the ratios those of the
# medians, each round's own ratios listed; the CPU model and our build are
# named, and the CPU's fp32 peak our runs measured. Skipped without Debian's python3-torch.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/peers
rm -rf "$T" && mkdir -p "$T"
/usr/bin/python3 -c "import torch" 2>/dev/null || { echo "no python3-torch here"; exit 77; }
MOCO_WISDOM="$T/wisdom.jsonl" /usr/bin/python3 tools/bench_pytorch_step.py --peers --rounds 2 --moco "$M" --width 4 \
  --batch-size 16 --size 16 --K 64 --bn-splits 2 --steps 1 --warmup 0 --threads 2 >"$T/out" 2>"$T/err" ||
  fail "bench_pytorch_step.py: $(tail -3 "$T/err")"
[ "$(grep -c '^# round [12] of 2$' "$T/out")" = 2 ] || fail "want two rounds announced: $(grep '^# round' "$T/out")"
case "${BUILD:-build/release}" in */release) want=release;; *) want="sanitize=${BUILD##*/}";; esac
tail -n 1 "$T/out" | /usr/bin/python3 -c '
import json, sys
want = sys.argv[1]
r = json.loads(sys.stdin.read())
def bad(m): sys.exit("FAIL: " + m + ": " + json.dumps(r)[:400])
if r.get("rounds") != 2: bad("rounds is not 2")
if "family" not in r.get("cpu", ""): bad("no CPU model")
if r.get("moco_build") != want: bad("moco_build is not " + want)
rounds = r.get("pairs_per_s_rounds", {})
peers = ["pytorch_fp32", "pytorch_bf16", "moco_fp32"] + ([] if "moco_bf16" in r.get("skipped", {}) else ["moco_bf16"])
# ours in bf16 may be skipped only for what it documents: no bf16 instructions, or a build without oneDNN (so on a
# CPU with AVX512_BF16 only the latter); a crash or a sanitizer report is not a skip
why = r.get("skipped", {}).get("moco_bf16")
if why is not None:
    allowed = ["needs oneDNN, and this moco was built without it"]
    if " avx512_bf16" not in open("/proc/cpuinfo").read():
        allowed.append("needs a CPU with AVX512_BF16")
    if not any(a in why for a in allowed): bad("ours in bf16 skipped for another reason than " + " or ".join(allowed))
for k in peers:
    xs = rounds.get(k)
    if not xs or len(xs) != 2 or min(xs) <= 0: bad(k + ": want two positive figures")
    if abs(r["pairs_per_s"][k] - round((xs[0] + xs[1]) / 2, 2)) > 0.006: bad(k + ": not the median of its rounds")
for ours in [p for p in peers if p.startswith("moco_")]:
    for peer in ("pytorch_fp32", "pytorch_bf16"):
        k = ours + "_over_" + peer
        if abs(r[k] - round(r["pairs_per_s"][ours] / r["pairs_per_s"][peer], 2)) > 0.006: bad(k + ": not the ratio of the medians")
        per = r.get(k + "_rounds")
        if not per or len(per) != 2: bad(k + "_rounds: want two")
        for i in range(2):
            if abs(per[i] - round(rounds[ours][i] / rounds[peer][i], 2)) > 0.006: bad(k + "_rounds: not each round ratio")
# the CPU peak our runs measured: the thread scale of each round, the median of one thread alone
if len(r.get("peak_thread_scale_rounds", [])) != 2: bad("want peak_thread_scale in both rounds")
if not r.get("peak_fp32_gflops_1t", 0) > 0 or r.get("peak_isa") not in ("avx512", "avx2"): bad("no fp32 peak")
print("ok:", {k: r["pairs_per_s"][k] for k in peers}, "peak", r["peak_fp32_gflops_1t"], r["peak_thread_scale_rounds"])
' "$want" || exit 1
echo "PASS"
