#!/usr/bin/env bash
# cli_demo.sh: the demo's job, one epoch: MoCo on Fashion-MNIST through the
# whole pipeline must give an encoder whose kNN accuracy beats the same
# encoder at random initialisation (63.10%) by at least 3 points. The queue
# is 1,024 keys, not the demo's 4,096: over one epoch 4,096 varied too much
# (seeds 1-6 on an Intel Xeon: 63.65-70.88%; CI's machine once 63.84% at
# seed 1), where 1,024 gave 70.16-73.85% over seeds 1-8 there, and
# 70.04-71.24% over seeds 1-3 on the AVX2 kernels (MOCO_CONV3=1).
# Skipped without the Fashion-MNIST package.
set -u
case ${BUILD:-build/release} in */release) ;; *) echo "skipped: a sanitizer build: the demo's accuracy is the release pass's check; the same pipeline and training run instrumented in cli_run, cli_train and cli_rundir"; exit 77;; esac
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/demo
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T"
$M mkdb "$SRC" "$T/train" --split train --quiet >/dev/null || fail "mkdb train"
$M mkdb "$SRC" "$T/test" --split test --quiet >/dev/null || fail "mkdb test"
$M mkdb "$SRC" "$T/bank" --split train --shuffle --seed 1 --limit 10000 --quiet >/dev/null || fail "mkdb bank"
timeout 900 $M run "$T/train" --workers 2 --epochs 1 --recipe cifar --size 28 --seed 1 \
  --arch resnet18-cifar --width 8 --batch-size 256 --moco-k 1024 --moco-m 0.99 --moco-t 0.1 \
  --lr 0.06 --cos --wd 5e-4 --bn-splits 8 --run-dir "$T/run" --quiet >"$T/run.out" 2>"$T/run.err" \
  || { tail -5 "$T/run.err"; fail "moco run exited non-zero"; }
EVAL="--train $T/bank --test $T/test --size 28"
trained=$($M knn --ckpt "$T/run/checkpoint_last.safetensors" $EVAL | tail -1 | grep -o '"knn_top1":[0-9.]*' | cut -d: -f2)
random=$($M knn --random-init 1 --arch resnet18-cifar --width 8 $EVAL | tail -1 | grep -o '"knn_top1":[0-9.]*' | cut -d: -f2)
[ -n "$trained" ] && [ -n "$random" ] || fail "no kNN figure (trained '$trained', random '$random')"
echo "kNN top-1: trained (1 epoch) $trained%, random init $random%"
awk -v t="$trained" -v r="$random" 'BEGIN { exit !(t >= r + 3 && r > 20 && t <= 100) }' \
  || fail "the trained encoder ($trained%) does not beat random initialisation ($random%) by 3 points"
