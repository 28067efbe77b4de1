#!/usr/bin/env bash
# cli_datasets.sh: the real datasets: CIFAR-10 JPEGs from ../shared/data
# (skipped when absent) and Fashion-MNIST from the Debian package. Checks the
# counts `moco info --json` reports and prints the conversion time.
set -u
fail() { echo "FAIL: $*"; exit 1; }
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/datasets
rm -rf "$T" && mkdir -p "$T"
count() { $M info --json "$1" | grep -o '"count":[0-9]*,"num_classes":[0-9]*' | head -1; }
if [ -d /usr/share/datasets/fashion-mnist ]; then
  for s in train:60000 test:10000; do
    $M mkdb /usr/share/datasets/fashion-mnist "$T/fm-${s%%:*}" --split "${s%%:*}" --quiet || fail "fashion-mnist ${s%%:*}"
    [ "$(count "$T/fm-${s%%:*}")" = "\"count\":${s##*:},\"num_classes\":10" ] || fail "fashion-mnist ${s%%:*}: $(count "$T/fm-${s%%:*}")"
  done
  echo "fashion-mnist: 60000 / 10000 samples, 10 classes"
fi
tgz=../shared/data/cifar10-jpeg.tar.gz
[ -f "$tgz" ] || { echo "skipped: $tgz absent"; exit 77; }
mkdir -p "$T/src" && tar -xzf "$tgz" -C "$T/src" || fail "unpacking $tgz"
for s in train:50000 test:10000; do
  t0=$(date +%s.%N)
  $M mkdb "$T/src" "$T/cifar-${s%%:*}" --split "${s%%:*}" --quiet | tee "$T/out" || fail "cifar ${s%%:*}"
  t1=$(date +%s.%N)
  [ "$(count "$T/cifar-${s%%:*}")" = "\"count\":${s##*:},\"num_classes\":10" ] || fail "cifar ${s%%:*}: $(count "$T/cifar-${s%%:*}")"
  echo "cifar-10 ${s%%:*}: ${s##*:} samples in $(awk "BEGIN{printf \"%.1f\", $t1 - $t0}") s"
done
$M info --verify "$T/cifar-test" >/dev/null || fail "cifar test does not verify"
rm -rf "$T"
