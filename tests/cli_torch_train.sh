#!/usr/bin/env bash
# cli_torch_train.sh: tools/python/train_moco_torch.py (PyTorch MoCo) trained
# from the stream of `moco run DB --serve ENDPOINT` (moco_stream.PairStream):
#  1. 2 epochs of a small Fashion-MNIST DB, tiny resnet18-cifar, batch 32,
#     K=256: exit 0, metrics.jsonl has epoch records 0 and 1 with finite
#     losses, floor(count / 32) steps per epoch (the last partial batch is
#     dropped), every epoch record has the consumer's counters as `moco
#     train` writes them ("stream": duplicates, stale, malformed,
#     rejected_epoch, rejected_index, held, held_dropped, auth_rejected, rejected_shape, rejected_label,
#     integers; none malformed), the checkpoint loads into the script's MoCo
#     model and holds the stream state, and `moco run` exits 0;
#  2. a run stopped at step 12 and resumed from its checkpoint (a new
#     consumer and stream) ends as the uninterrupted run: metrics and weights;
#  3. a checkpoint resumed when the run is already done: nothing to train;
#  4. usage errors: --moco-k not a multiple of the batch size, --epochs
#     unlike the loader's (exit 2).
# Without `moco run --serve` (or without Fashion-MNIST) the stream comes from
# a tiny Python server of the serve protocol (formats/README.md) written here.
# Skipped (77) when /usr/bin/python3 lacks torch, numpy or pyzmq.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/torch_train
ROOT=$(cd "$(dirname "$0")/.." && pwd)
PY=/usr/bin/python3
export PYTHONDONTWRITEBYTECODE=1
TRAIN=$ROOT/tools/python/train_moco_torch.py
SRC=/usr/share/datasets/fashion-mnist
[ -x $PY ] && $PY -c 'import torch, numpy, zmq' 2>/dev/null || { echo "skipped: $PY lacks torch, numpy or pyzmq"; exit 77; }
[ -f "$TRAIN" ] || fail "$TRAIN missing"
[ -f "$ROOT/tools/python/moco_stream/__init__.py" ] || fail "tools/python/moco_stream missing"
rm -rf "$T" && mkdir -p "$T"
S=$T  # ipc:// paths must stay short (sun_path: 107 bytes)
[ ${#T} -gt 80 ] && { S=$(mktemp -d /tmp/moco-tt.XXXXXX) || fail mktemp; trap 'rm -rf "$S"' EXIT; }
EP=ipc://$S/serve
B=32
MODEL="-a resnet18-cifar --width 8 -b $B --moco-k 256 --moco-m 0.99 --moco-t 0.1 --cos --bn-splits 4 --seed 1 --threads 1"

# fake_serve.py EP N EPOCHS: the serve side of the protocol (WELCOME, PAIRS, EPOCH_END, END), honouring a resume HELLO
cat >"$T/fake_serve.py" <<'EOF'
import struct, sys, time, numpy as np, zmq
ep, N, E = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
pre = lambda t, v=1: struct.pack("<4sHH", b"MOCW", v, t)
ctx = zmq.Context(); s = ctx.socket(zmq.ROUTER); s.setsockopt(zmq.SNDHWM, 0); s.setsockopt(zmq.LINGER, 5000); s.bind(ep)
if not s.poll(30000): sys.exit("fake server: no HELLO")
fr = s.recv_multipart(); ident = fr[0]; h = fr[1]
assert h[:4] == b"MOCW" and struct.unpack_from("<H", h, 6)[0] == 8, "not a HELLO"
e0 = struct.unpack_from("<I", h, 8)[0]; done = np.zeros(N, bool)
if e0 == 0xFFFFFFFF: e0 = 0
elif len(fr) > 2: done = np.unpackbits(np.frombuffer(fr[2], np.uint8), bitorder="little")[:N].astype(bool)
s.send_multipart([ident, pre(13, 3) + struct.pack("<IIQII", e0, E, N, 1, 1000)])
for e in range(e0, E):
    order = [i for i in np.random.default_rng(e).permutation(N) if not done[i]]
    for j in range(0, len(order), 24):
        idx = order[j:j + 24]; hdr = b""; views = []
        for i in idx:
            hdr += pre(2) + struct.pack("<IiQHHBBH", e, int(i) % 10, int(i), 32, 32, 1, 0, 0)
            for v in (0, 1): views.append(np.random.default_rng([e, int(i), v]).integers(0, 256, 32 * 32, np.uint8).tobytes())
        s.send_multipart([ident, pre(11) + struct.pack("<II", len(idx), 0) + hdr, b"".join(views)])
    s.send_multipart([ident, pre(6) + struct.pack("<IQI", e, N, 0)]); done[:] = False
s.send_multipart([ident, pre(10) + struct.pack("<I", E)])
t = time.time()  # until the consumer is gone: it heart-beats every second while alive
while time.time() - t < 100 and s.poll(3000): s.recv_multipart()
EOF

# serve K, run as `serve K &`: exec, so that $! is the server's `timeout`, which passes a kill on
$M run --help 2>&1 | grep -q -- '--serve' || fail "moco run has no --serve"
if [ -d $SRC ]; then
  REAL=1
  $M mkdb $SRC "$T/db" --split test --limit 320 --shuffle --seed 3 --quiet >/dev/null 2>&1 || fail mkdb
  N=320
  serve() { exec timeout 120 $M run "$T/db" --serve "$EP" --workers 1 --epochs 2 --recipe cifar --size 32 --seed 1 \
              --run-dir "$T/serve$1" --quiet >"$T/serve$1.out" 2>"$T/serve$1.err"; }
  echo "stream: moco run --serve"
else
  REAL=0
  N=300
  serve() { exec timeout 120 $PY "$T/fake_serve.py" "$EP" $N 2 >"$T/serve$1.out" 2>"$T/serve$1.err"; }
  echo "stream: a fake serve-protocol server (no moco run --serve yet, or no $SRC)"
fi

# 1. two epochs
serve 1 &
SRV=$!
timeout 150 $PY "$TRAIN" --stream "$EP" $MODEL --epochs 2 --print-freq 2 --timeout 60 --out "$T/run" \
  >"$T/train.out" 2>"$T/train.err"
rc=$?
[ $rc -eq 0 ] || { tail -5 "$T/train.err"; kill $SRV 2>/dev/null; fail "train_moco_torch.py exited $rc"; }
wait $SRV || { tail -5 "$T/serve1.err"; fail "the server (moco run --serve: $REAL) exited non-zero"; }
tail -1 "$T/train.out" | grep -q '"ok": true' || fail "the last stdout line is not a JSON summary: $(tail -1 "$T/train.out")"
$PY - "$T/run" $N $B "$TRAIN" <<'EOF' || fail "the run's metrics or checkpoint"
import json, math, os, sys, torch
out, N, B, script = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), sys.argv[4]
recs = [json.loads(l) for l in open(os.path.join(out, "metrics.jsonl"))]
ep = [r for r in recs if r["type"] == "epoch"]
st = [r for r in recs if r["type"] == "step"]
assert [r["epoch"] for r in ep] == [0, 1], "epoch records %s" % [r["epoch"] for r in ep]
spe = N // B
assert [r["step"] for r in ep] == [spe, 2 * spe], "steps at the epoch ends %s, want %d per epoch" % ([r["step"] for r in ep], spe)
assert [r["pairs"] for r in ep] == [spe * B] * 2 and [r["dropped"] for r in ep] == [N - spe * B] * 2, ep
assert len(st) == spe and all(r["step"] % 2 == 0 for r in st), "step records every 2 steps: %s" % [r["step"] for r in st]
assert all(math.isfinite(r["loss"]) and r["loss"] > 0 for r in ep + st), "losses %s" % [r["loss"] for r in ep + st]
assert ep[1]["lr"] < ep[0]["lr"] == 0.03, "cosine lr %s" % [r["lr"] for r in ep]
keys = {"duplicates", "stale", "malformed", "rejected_epoch", "rejected_index", "held", "held_dropped", "auth_rejected",
        "rejected_shape", "rejected_label"}
for r in ep:  # the same "stream" object as `moco train`'s epoch records (formats/README.md, metrics.jsonl)
    so = r.get("stream")
    assert isinstance(so, dict) and set(so) == keys, "epoch %d: \"stream\" %r, want the keys %s" % (r["epoch"], so, sorted(keys))
    assert all(type(v) is int and v >= 0 for v in so.values()), "epoch %d: \"stream\" counters not integers: %r" % (r["epoch"], so)
    assert so["malformed"] == so["rejected_index"] == so["auth_rejected"] == 0, "epoch %d: \"stream\" %r" % (r["epoch"], so)
    # as `moco train`'s: knn_top1 (null: no kNN here) and peak_rss_mb
    assert "knn_top1" in r and r["knn_top1"] is None, "epoch %d: knn_top1 %r, want null" % (r["epoch"], r.get("knn_top1"))
    assert isinstance(r.get("peak_rss_mb"), (int, float)) and r["peak_rss_mb"] > 0, "epoch %d: peak_rss_mb %r" % (r["epoch"], r.get("peak_rss_mb"))
summary = json.loads(open(os.path.join(out, "..", "train.out")).read().splitlines()[-1])
assert summary["epochs"] == 2 and summary["steps"] == 2 * spe and summary["count"] == N and summary["complete"], summary
ck = torch.load(os.path.join(out, "checkpoint_last.pt"), map_location="cpu")
assert ck["epoch"] == 2 and ck["step"] == 2 * spe and ck["complete"], (ck["epoch"], ck["step"])
s = ck["stream"]
assert s["version"] == 1 and s["count"] == N, "stream state %r" % {k: s[k] for k in ("version", "count", "epoch")}
full = s["epoch"] == 1 and bytes(s["delivered"]).count(b"\xff") == N // 8
assert s["epoch"] == 2 or full, "stream state at the end: epoch %d" % s["epoch"]
assert ck["args"]["moco_k"] == 256 and "momentum" in str(ck["optimizer"]["param_groups"])
sys.path.insert(0, os.path.dirname(script))
import train_moco_torch as t
m = t.MoCo("resnet18-cifar", 8, 128, 256, 0.99, 0.1, False, ck["in_channels"], 4)
m.load_state_dict(ck["state_dict"])  # strict: every key, every shape
assert m.queue.shape == (128, 256) and int(m.queue_ptr) == (2 * spe * B) % 256
assert abs(float(m.queue.norm(dim=0).mean()) - 1) < 1e-4
e1 = torch.load(os.path.join(out, "checkpoint_0001.pt"), map_location="cpu")
assert e1["epoch"] == 1 and e1["step"] == spe and e1["stream"]["epoch"] in (1, 0)
print("trained %d epochs x %d steps (count %d), final loss %.3f, stream state epoch %d" % (len(ep), spe, N, ep[-1]["loss"], s["epoch"]))
EOF

# 2. stopped at step 12 (--max-steps: in epoch 1), then resumed from its checkpoint by a new consumer
#    of a new stream: the same steps, losses and final weights as the uninterrupted run
serve 2 &
SRV=$!
timeout 150 $PY "$TRAIN" --stream "$EP" $MODEL --epochs 2 --print-freq 2 --out "$T/part" --max-steps 12 \
  >"$T/part1.out" 2>"$T/part1.err" || { tail -3 "$T/part1.err"; kill $SRV; fail "the run stopped by --max-steps failed"; }
kill $SRV 2>/dev/null; wait $SRV 2>/dev/null
serve 3 &
SRV=$!
timeout 150 $PY "$TRAIN" --stream "$EP" $MODEL --epochs 2 --print-freq 2 --out "$T/part" --resume "$T/part/checkpoint_last.pt" \
  >"$T/part2.out" 2>"$T/part2.err" || { tail -3 "$T/part2.err"; kill $SRV; fail "the resumed run failed"; }
wait $SRV || { tail -5 "$T/serve3.err"; fail "the server of the resumed run exited non-zero"; }
# it resumed mid-run from step 12 (not "ends the run": had --max-steps not stopped part 1, both would match trivially)
grep -q "resuming from $T/part/checkpoint_last.pt: epoch 1, step 12\$" "$T/part2.err" ||
  fail "the second part did not resume from step 12: $(grep -m1 'resuming\|ends the run' "$T/part2.err")"
$PY - "$T/run" "$T/part" <<'EOF' || fail "the resumed run differs from the uninterrupted one"
import json, os, re, sys, torch
def metrics(d):
    # timings differ, and so may the stream's counters (a new consumer counts from 0; held pairs depend on timing)
    return [re.sub(r',"(pairs_per_s|seconds|starved_pct|peak_rss_mb)":[0-9.e+-]+|,"stream":\{[^{}]*\}', "", l)
            for l in open(os.path.join(d, "metrics.jsonl"))]
a, b = metrics(sys.argv[1]), metrics(sys.argv[2])
assert a == b, "metrics.jsonl:\n%s\nvs\n%s" % ("".join(a), "".join(b))
ca, cb = [torch.load(os.path.join(d, "checkpoint_last.pt"), map_location="cpu") for d in sys.argv[1:3]]
diff = [k for k in ca["state_dict"] if not torch.equal(ca["state_dict"][k], cb["state_dict"][k])]
assert not diff, "%d tensors differ, e.g. %s" % (len(diff), diff[:3])
print("resumed at step 12: the same %d metrics records and final weights" % len(a))
EOF

# 3. resuming a finished run trains nothing (and needs no stream)
timeout 60 $PY "$TRAIN" --stream "$EP" $MODEL --epochs 2 --out "$T/run" --resume "$T/run/checkpoint_last.pt" \
  >"$T/done.out" 2>"$T/done.err" || fail "resuming a finished run: $(tail -2 "$T/done.err")"
grep -q "ends the run (epoch 2 of 2)" "$T/done.err" || fail "resuming a finished run: $(tail -2 "$T/done.err")"
[ "$(grep -c '"type":"epoch"' "$T/run/metrics.jsonl")" = 2 ] || fail "resuming a finished run changed metrics.jsonl"

# 3b. a resume with another temperature or learning rate: refused, naming the flag (before: taken,
# and the checkpoint's args then claimed the new value for the whole run)
for change in "--moco-t 0.5" "--lr 0.5"; do
  timeout 60 $PY "$TRAIN" --stream "$EP" $MODEL --epochs 2 --out "$T/run" --resume "$T/run/checkpoint_last.pt" $change \
    >/dev/null 2>"$T/chg.err"; rc=$?
  [ $rc -eq 2 ] && grep -q -- "was trained with ${change%% *} " "$T/chg.err" || fail "resume with $change: exit $rc, $(tail -1 "$T/chg.err")"
done

# 4. usage errors
$PY "$TRAIN" --stream "$EP" -b 32 --moco-k 100 --out "$T/bad" >/dev/null 2>"$T/bad.err"
[ $? -eq 2 ] && grep -q "multiple of --batch-size" "$T/bad.err" || fail "--moco-k 100 with -b 32 should exit 2"
$PY "$TRAIN" --out "$T/bad" >/dev/null 2>"$T/bad.err"; rc=$?
[ $rc -eq 2 ] && grep -q "train_moco_torch.py: error: --stream ENDPOINT is required" "$T/bad.err" || fail "no --stream: exit $rc (want 2), $(tail -1 "$T/bad.err")"
# --epochs unlike the loader's: refused once WELCOME tells the loader's (the lr schedule needs it)
serve 4 &
SRV=$!
timeout 60 $PY "$TRAIN" --stream "$EP" $MODEL --epochs 3 --out "$T/bad" >/dev/null 2>"$T/bad.err"
rc=$?
kill $SRV 2>/dev/null; wait $SRV 2>/dev/null
[ $rc -eq 2 ] && grep -q "loader streams 2 epochs" "$T/bad.err" || fail "--epochs 3 against 2 streamed: exit $rc, $(tail -1 "$T/bad.err")"
echo "train_moco_torch.py: 2 epochs from the stream, checkpoint and metrics checked"
