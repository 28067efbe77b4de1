#!/usr/bin/env bash
# cli_train.sh: `moco train` on a small Fashion-MNIST subset (Debian package;
# skipped when absent), with a tiny ResNet so that it runs in seconds:
#  1. `moco run` trains 2 epochs with the kNN monitor: metrics.jsonl has a
#     record per epoch with loss, contrastive accuracy and kNN accuracy, and
#     the checkpoints exist;
#  2. a run killed (SIGKILL) mid-epoch and resumed from its checkpoint ends
#     with a final checkpoint byte-identical to an uninterrupted run's (one
#     worker: the order of samples is then deterministic);
#  3. a truncated checkpoint is refused with a message, exit 1.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/train
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T"
$M mkdb $SRC "$T/db" --split test --limit 512 --shuffle --seed 3 --quiet >/dev/null || fail mkdb
MODEL="--arch resnet18-cifar --width 4 --batch-size 32 --moco-k 256 --moco-m 0.99 --moco-t 0.1 --lr 0.06 --cos --bn-splits 4 --threads 1"

# 1. moco run, 2 epochs, kNN every epoch
timeout 300 $M run "$T/db" --workers 2 --epochs 2 --recipe cifar --size 28 --seed 1 $MODEL \
  --knn-train "$T/db" --knn-test "$T/db" --run-dir "$T/r1" --quiet >"$T/r1.out" 2>"$T/r1.err" \
  || { tail "$T/r1.err"; fail "moco run (training) exited non-zero"; }
n=$(grep -c '"type":"epoch"' "$T/r1/metrics.jsonl")
[ "$n" = 2 ] || fail "expected 2 epoch records, got $n"
grep '"type":"epoch"' "$T/r1/metrics.jsonl" | grep -q '"knn_top1":[0-9]' || fail "no kNN accuracy in metrics.jsonl"
grep -q '"step":32,' "$T/r1/metrics.jsonl" || fail "2 epochs of 512 at batch 32 should end at step 32"
for f in checkpoint_last checkpoint_best checkpoint_epoch_0002; do
  [ -s "$T/r1/$f.safetensors" ] || fail "no $f.safetensors"
done

grep '"type":"step"' "$T/r1/metrics.jsonl" | grep -q '"acc":[1-9]' || fail "contrastive accuracy never above 0: $(grep step "$T/r1/metrics.jsonl" | tail -2)"
$M plot "$T/r1" --out "$T/curves.png" >/dev/null && [ "$(head -c 4 "$T/curves.png" | od -An -c | tr -d ' ')" = "211PNG" ] \
  || fail "moco plot did not write a PNG"

# moco knn on the final checkpoint reproduces the monitor's last figure
want=$(grep '"type":"epoch"' "$T/r1/metrics.jsonl" | tail -1 | grep -o '"knn_top1":[0-9.]*' | cut -d: -f2)
got=$($M knn --ckpt "$T/r1/checkpoint_last.safetensors" --train "$T/db" --test "$T/db" --arch resnet18-cifar --width 4 \
      --size 28 --threads 1 | tail -1 | grep -o '"knn_top1":[0-9.]*' | cut -d: -f2)
[ -n "$want" ] && [ "$want" = "$got" ] || fail "moco knn says $got, the training monitor said $want"
$M knn --ckpt "$T/r1/checkpoint_last.safetensors" --train "$T/db" --test "$T/db" --width 8 --size 28 >/dev/null 2>"$T/knn.err"
[ $? -eq 1 ] && grep -q "encoder_q.conv1.weight" "$T/knn.err" || fail "a checkpoint of another width should be refused, naming the tensor"
# the random-init baseline: reproducible for a seed, another seed gives other features, and not with --ckpt too
E="--db $T/db --arch resnet18-cifar --width 4 --size 28 --threads 1"
$M embed --random-init 1 $E --out "$T/r1a.st" >/dev/null && $M embed --random-init 1 $E --out "$T/r1b.st" >/dev/null \
  && $M embed --random-init 2 $E --out "$T/r2.st" >/dev/null || fail "moco embed --random-init"
cmp -s "$T/r1a.st" "$T/r1b.st" || fail "--random-init 1 twice gave different features"
cmp -s "$T/r1a.st" "$T/r2.st" && fail "--random-init 1 and 2 gave the same features"
$M knn --random-init 1 --train "$T/db" --test "$T/db" --arch resnet18-cifar --width 4 --size 28 --threads 1 | tail -1 \
  | grep -q '"knn_top1":[0-9].*"ckpt":"random-init 1"' || fail "moco knn --random-init"
$M knn --random-init 1 --ckpt "$T/r1/checkpoint_last.safetensors" --train "$T/db" --test "$T/db" --width 4 >/dev/null 2>&1
[ $? -eq 1 ] || fail "--ckpt with --random-init should be refused"

# linear evaluation on the frozen features
lin=$($M lincls --ckpt "$T/r1/checkpoint_last.safetensors" --train "$T/db" --test "$T/db" --arch resnet18-cifar --width 4 \
      --size 28 --epochs 10 --schedule 6,8 --lr 1 --threads 1 | tail -1)
echo "$lin" | grep -q '"lincls_top1":[1-9][0-9]' || fail "moco lincls: $lin"

# 2. resume mid-epoch == uninterrupted
pipeline() { # $1: dir, rest: trainer flags
  local d=$1; shift
  rm -f "$T/s/"*
  mkdir -p "$T/s" "$d"
  $M loader --db "$T/db" --bind ipc://$T/s/w --ctl ipc://$T/s/c --epochs 2 --seed 1 --quiet &
  LP=$!
  $M augment --connect ipc://$T/s/w --push ipc://$T/s/p --recipe cifar --size 28 --seed 1 --quiet &
  WP=$!
  $M train --connect ipc://$T/s/c --bind ipc://$T/s/p --out "$d" --epochs 2 --seed 1 --size 28 --count 512 $MODEL "$@" 2>>"$d.err" &
  TP=$!
}
pipeline "$T/full"
wait $TP || fail "uninterrupted training failed: $(tail -3 "$T/full.err")"
wait $LP $WP
pipeline "$T/cut" --save-every 5
for i in $(seq 600); do
  grep -q '"step":10,' "$T/cut/metrics.jsonl" 2>/dev/null && break
  sleep 0.05
done
kill -KILL $TP; wait $TP 2>/dev/null
kill $LP $WP; wait $LP $WP 2>/dev/null
step=$(grep -o '"step":[0-9]*' "$T/cut/metrics.jsonl" | tail -1)
echo "killed the trainer at $step (checkpoint every 5 steps)"
cp "$T/cut/checkpoint_last.safetensors" "$T/resume.safetensors"
pipeline "$T/cut" --resume "$T/resume.safetensors"
wait $TP || fail "resumed training failed: $(tail -3 "$T/cut.err")"
wait $LP $WP
grep -q "resumed" "$T/cut.err" || fail "the trainer did not say it resumed"
cmp "$T/full/checkpoint_last.safetensors" "$T/cut/checkpoint_last.safetensors" \
  || fail "the resumed run's final checkpoint differs from the uninterrupted run's"

# 3. a truncated checkpoint is refused
head -c 100000 "$T/resume.safetensors" > "$T/trunc.safetensors"
pipeline "$T/bad" --resume "$T/trunc.safetensors"
wait $TP; rc=$?
kill $LP $WP 2>/dev/null; wait $LP $WP 2>/dev/null
[ $rc -eq 1 ] || fail "a truncated checkpoint should exit 1, got $rc"
grep -q "trunc.safetensors" "$T/bad.err" || fail "the error does not name the file: $(cat "$T/bad.err")"
echo "training: 2 epochs with kNN; resume mid-epoch is byte-identical to an uninterrupted run"
