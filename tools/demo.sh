#!/usr/bin/env bash
# demo.sh: `make demo`, the main job on Fashion-MNIST (Debian package
# dataset-fashion-mnist): pack it into LMDB, look at the augmentations, train
# MoCo (the official CIFAR-10 demo's recipe, scaled down to run in minutes on
# two cores) with the pipeline of separate processes, and report kNN accuracy
# after every epoch. Everything goes to demo/ (ignored by git).
#   DEMO_EPOCHS (3), DEMO_WIDTH (8), DEMO_WORKERS (2) change the run.
set -euo pipefail
cd "$(dirname "$0")/.."
M=bin/moco
SRC=/usr/share/datasets/fashion-mnist
OUT=demo
EPOCHS=${DEMO_EPOCHS:-3}
WIDTH=${DEMO_WIDTH:-8}
WORKERS=${DEMO_WORKERS:-2}
mkdir -p "$OUT"
echo "== 1. Fashion-MNIST into LMDB (moco mkdb)"
for split in train test; do
  [ -d "$OUT/fashion-$split" ] || $M mkdb "$SRC" "$OUT/fashion-$split" --split "$split"
done
# the kNN bank: 10,000 training images (the whole 60,000 takes longer to embed)
[ -d "$OUT/fashion-bank" ] || $M mkdb "$SRC" "$OUT/fashion-bank" --split train --shuffle --seed 1 --limit 10000 --quiet
$M info "$OUT/fashion-train"
echo
echo "== 2. what the workers make of it (moco preview -> $OUT/preview.png)"
$M preview "$OUT/fashion-train" --recipe cifar --size 28 --n 8 --out "$OUT/preview.png"
echo
echo "== 3. MoCo training: loader + $WORKERS augmentation workers + trainer (moco run)"
echo "   resnet18-cifar width $WIDTH, batch 256, K 4096, m 0.99, T 0.1, lr 0.06 cosine, shuffle BN (8 splits), $EPOCHS epochs"
rm -rf "$OUT/run"
$M run "$OUT/fashion-train" --workers "$WORKERS" --epochs "$EPOCHS" --recipe cifar --size 28 --seed 1 \
  --arch resnet18-cifar --width "$WIDTH" --batch-size 256 --moco-k 4096 --moco-m 0.99 --moco-t 0.1 \
  --lr 0.06 --cos --wd 5e-4 --bn-splits 8 \
  --knn-train "$OUT/fashion-bank" --knn-test "$OUT/fashion-test" --run-dir "$OUT/run"
echo
echo "== 4. results"
grep '"type":"epoch"' "$OUT/run/metrics.jsonl" | sed 's/^/   /'
$M plot "$OUT/run" --out "$OUT/curves.png" >/dev/null
EVAL="--train $OUT/fashion-bank --test $OUT/fashion-test --arch resnet18-cifar --width $WIDTH --size 28"
trained=$($M knn --ckpt "$OUT/run/checkpoint_last.safetensors" $EVAL | tail -1 | grep -o '"knn_top1":[0-9.]*' | cut -d: -f2)
random=$($M knn --random-init 1 $EVAL | tail -1 | grep -o '"knn_top1":[0-9.]*' | cut -d: -f2)
echo
echo "   kNN top-1 on the Fashion-MNIST test split (k 200, 10,000-image bank, 128-d head):"
echo "     trained encoder ($EPOCHS epochs)        $trained%"
echo "     same encoder at random initialisation $random%"
echo
echo "   checkpoint (torchvision names under encoder_q.): $OUT/run/checkpoint_last.safetensors"
echo "   metrics: $OUT/run/metrics.jsonl   curves: $OUT/curves.png   augmentations: $OUT/preview.png"
echo "   export the backbone: bin/moco export --ckpt $OUT/run/checkpoint_last.safetensors --out encoder.safetensors"
echo "demo: done in $SECONDS s"
