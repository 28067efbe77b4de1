#!/usr/bin/env bash
# cli_jsonlines.sh: issue 15, item 4: every JSON line a command prints or
# logs comes from formats/jsonw, whatever bytes a path holds. A directory
# whose name holds a quote, a backslash and a newline carries the source,
# the dataset, the run directories and the checkpoints:
#   - moco info --json gives the path and the source back byte for byte;
#   - metrics.jsonl's resume record gives the checkpoint's path back, and the
#     step records parse;
#   - the checkpoint's config and the export's moco.encoder metadata parse,
#     the export's source is the checkpoint's path;
#   - moco bench augment's and moco bench pipeline's last lines are one JSON
#     object each (the pipeline's with the sink's and the loader's nested);
#   - the sink's and the workers' once-a-second stats files exist, have
#     lines, and every line parses.
# json_lines (tests/check_json.py, run last by tests/run.sh) scans all of
# them again under $MOCO_TEST_TMP. Fashion-MNIST (Debian package) and
# python3; skipped without them.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/jsonlines
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
command -v python3 >/dev/null || { echo "skipped: python3 absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T" && T=$(cd "$T" && pwd)
W="$T/we\"ird \\dir
x"
mkdir -p "$W/src" && ln -s $SRC/t10k-* "$W/src/" || fail "making $W"
export W
# check FILE PYTHON: FILE's last line is one JSON object d; PYTHON asserts on it
check() {
  python3 - "$1" "$2" <<'EOF' || fail "$1: $(tail -c 600 "$1")"
import json, os, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l.strip()]
d = json.loads(lines[-1])
W = os.environ["W"]
assert isinstance(d, dict), d
exec(sys.argv[2])
EOF
}
# every line of FILE parses; at least MIN of them
all_parse() {
  python3 - "$1" "$2" <<'EOF' || fail "$1: $(head -c 600 "$1")"
import json, sys
lines = [l for l in open(sys.argv[1], encoding="utf-8").read().split("\n") if l.strip()]
assert len(lines) >= int(sys.argv[2]), "%d lines, want at least %s" % (len(lines), sys.argv[2])
for l in lines:
    assert isinstance(json.loads(l), dict), l
EOF
}

$M mkdb "$W/src" "$W/db" --split test --limit 512 --shuffle --seed 3 --quiet >/dev/null || fail "mkdb into $W"
$M info --json "$W/db" >"$T/info.out" || fail "moco info --json"
check "$T/info.out" '
assert d["path"] == W + "/db", d["path"]
assert d["source"].endswith("dir\nx/src"), d["source"]
assert d["count"] == 512 and len(d["classes"]) == 10, d'
$M info --json --verify "$W/db" >"$T/info-verify.out" || fail "moco info --json --verify"
check "$T/info-verify.out" 'assert d["path"] == W + "/db" and d["verified"] == 512 and d["bad_records"] == 0, d'
echo "info --json: the path and the source back byte for byte"

timeout 60 $M bench augment --db "$W/db" --seconds 0.2 --recipe cifar --size 28 >"$T/bench-augment.out" 2>&1 \
  || fail "moco bench augment: $(tail -3 "$T/bench-augment.out")"
check "$T/bench-augment.out" 'assert d["recipe"] == "cifar" and d["records"] == 512 and d["pairs"] > 0, d'
timeout 60 $M bench pipeline --db "$W/db" --workers 1 --seconds 1.2 --warmup 0.3 --recipe cifar --size 28 \
  --run-dir "$W/bench" >"$T/bench-pipeline.out" 2>&1 || fail "moco bench pipeline: $(tail -3 "$T/bench-pipeline.out")"
check "$T/bench-pipeline.out" '
assert d["bench"] == "pipeline" and d["pairs_per_s"] > 0, d
assert isinstance(d["sink"], dict) and d["sink"]["pairs"] > 0 and d["sink"]["view"] == [28, 28, 1], d["sink"]
assert isinstance(d["loader"], dict) and "records_per_s" in d["loader"], d["loader"]'
all_parse "$W/bench/sink.jsonl" 1
all_parse "$W/bench/workers.jsonl" 1
all_parse "$W/bench/sink.json" 1
echo "bench augment, bench pipeline: the last lines parse; sink.jsonl, workers.jsonl: $(cat "$W/bench/sink.jsonl" "$W/bench/workers.jsonl" | wc -l) lines parse"

MODEL="--arch resnet18-cifar --width 4 --batch-size 32 --moco-k 256 --moco-m 0.99 --moco-t 0.1 --cos --bn-splits 4 --threads 1"
RUN="--workers 1 --recipe cifar --size 28 --seed 1 $MODEL --lr 0.06 --log-every 4 --quiet"
timeout 120 $M run "$W/db" $RUN --epochs 2 --run-dir "$W/r" >"$T/r1.out" 2>"$T/r1.err" || fail "moco run: $(tail -3 "$T/r1.err")"
# the run cut back to its first epoch's checkpoint, then resumed from it
cp "$W/r/checkpoint_epoch_0001.safetensors" "$W/r/checkpoint_last.safetensors" 2>/dev/null \
  || cp "$W/r/checkpoint_epoch_0000.safetensors" "$W/r/checkpoint_last.safetensors" || fail "no epoch checkpoint: $(ls "$W/r")"
timeout 120 $M run "$W/db" $RUN --epochs 2 --run-dir "$W/r" --resume "$W/r/checkpoint_last.safetensors" >"$T/r2.out" 2>"$T/r2.err" \
  || fail "moco run --resume: $(tail -3 "$T/r2.err")"
all_parse "$W/r/metrics.jsonl" 4
python3 - <<'EOF' || fail "metrics.jsonl: $(grep -v '"step"' "$W/r/metrics.jsonl")"
import json, os
W = os.environ["W"]
recs = [json.loads(l) for l in open(W + "/r/metrics.jsonl", encoding="utf-8")]
res = [r for r in recs if r.get("type") == "resume"]
assert len(res) == 1 and res[0]["from"] == W + "/r/checkpoint_last.safetensors", res
assert any(r.get("type") == "step" for r in recs), recs
EOF
timeout 60 $M export --ckpt "$W/r/checkpoint_last.safetensors" --out "$W/e.safetensors" >"$T/export.out" 2>&1 \
  || fail "moco export: $(cat "$T/export.out")"
python3 - <<'EOF' || fail "the checkpoint's or the export's metadata"
import json, os, struct
W = os.environ["W"]
def meta(p):
    with open(p, "rb") as f:
        n = struct.unpack("<Q", f.read(8))[0]
        return json.loads(f.read(n))["__metadata__"]
c = json.loads(meta(W + "/r/checkpoint_last.safetensors")["config"])
assert c["arch"] == "resnet18-cifar" and c["width"] == 4 and c["lr"] == 0.06 and c["K"] == 256, c
e = meta(W + "/e.safetensors")
assert e["source"] == W + "/r/checkpoint_last.safetensors", e
d = json.loads(e["moco.encoder"])
# with the inputs' normalisation (CIFAR's: 28 px, --normalize auto), as the config says it
assert d == {"arch": "resnet18-cifar", "width": 4, "mlp": 0, "dim": 128, "head": 0, "normalize": c["normalize"],
             "mean": c["mean"], "std": c["std"]}, d
assert c["normalize"] == "cifar" and [round(v, 4) for v in d["mean"]] == [0.4914, 0.4822, 0.4465], d
EOF
echo "metrics.jsonl (resume record: the checkpoint's path back), the checkpoint's config, the export's metadata: parse"
