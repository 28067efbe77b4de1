#!/usr/bin/env bash
# cli_run.sh: `moco run --sink` with real augmentation workers on
# Fashion-MNIST (Debian package; skipped when absent): 2 epochs deliver
# exactly 2 x N pairs, also when a worker is SIGKILLed midway and replaced;
# over tcp only with keys; a SIGKILLed supervisor (with the sink, and with a
# trainer) leaves neither processes nor its socket directory behind; grey
# and colour views in one run pass the sink; the sink's refusal is in its
# --log (sink.jsonl) too.
set -u
fail() { echo "FAIL: $*"; exit 1; }
. "$(dirname "$0")/ports.sh"
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/run
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T"
$M mkdb $SRC "$T/db" --split test --quiet >/dev/null || fail mkdb
N=10000
# plain run
timeout 120 $M run "$T/db" --sink --workers 2 --epochs 2 --recipe cifar --size 28 --run-dir "$T/r1" --quiet >"$T/r1.out" 2>"$T/r1.err" \
  || { rc=$?; cat "$T/r1.err"; fail "moco run exited $rc"; }
grep -q "\"pairs\":$((2 * N)),\"epochs\":2" "$T/r1/sink.json" || fail "r1: $(cat "$T/r1/sink.json")"
grep -q '"ok":true' "$T/r1/sink.json" || fail "r1 not ok"
# the loader's flags for workers from other hosts go through moco run: --max-workers,
# --stall-timeout and --readmit-after reach the loader's command line (the refusal of a worker
# past --max-workers: tests/hostile.py slots); more --workers here than --max-workers is refused
err=$(timeout 30 $M run "$T/db" --sink --workers 2 --max-workers 1 --epochs 1 --run-dir "$T/rmax0" 2>&1 >/dev/null); rc=$?
[ $rc -eq 2 ] && [ "$err" = "moco run: --workers 2 here is more than --max-workers 1 (the loader's worker slots): 1 of them would be refused; give --max-workers 2 or more" ] \
  || fail "--workers 2 --max-workers 1: exit $rc, '$err'"
timeout 120 $M run "$T/db" --sink --workers 1 --max-workers 1 --stall-timeout 7 --readmit-after 9 --epochs 3 --recipe cifar \
  --size 28 --run-dir "$T/rmax" --quiet >/dev/null 2>"$T/rmax.err" &
run=$!
lcmd=
for i in $(seq 200); do
  for c in $(pgrep -P $run); do for p in $c $(pgrep -P $c); do # timeout's child is moco run, the loader its child
    tr '\0' ' ' </proc/$p/cmdline 2>/dev/null | grep -q ' loader ' && lcmd=$(tr '\0' ' ' </proc/$p/cmdline); done; done
  [ -n "$lcmd" ] && break; sleep 0.05
done
wait $run || fail "moco run --max-workers 1: $(cat "$T/rmax.err")"
grep -q "\"pairs\":$((3 * N)),\"epochs\":3" "$T/rmax/sink.json" || fail "rmax: $(cat "$T/rmax/sink.json")"
case "$lcmd" in *"--max-workers 1 --stall-timeout 7 --readmit-after 9 "*) ;; *) fail "the loader's command line: '$lcmd'";; esac
echo "moco run --max-workers 1 --stall-timeout 7 --readmit-after 9: the loader has them, 3 epochs exact; --workers 2 past it refused"
# grey and colour images in one dataset (grey inputs stay one channel by design; the trainer
# replicates it): the sink passes them, checking height and width only, and counts each kind
# (before: "1 pairs had another view size", moco run FAILED)
mkdir -p "$T/mix/c"
{ printf 'P6\n40 30\n255\n'; head -c 3600 /dev/urandom; } >"$T/mix/c/colour.ppm"
{ printf 'P5\n30 40\n255\n'; head -c 1200 /dev/urandom; } >"$T/mix/c/grey.pgm"
$M mkdb "$T/mix" "$T/mixdb" --quiet >/dev/null || fail "mkdb of a grey and a colour image"
timeout 60 $M run "$T/mixdb" --sink --workers 1 --epochs 2 --size 32 --run-dir "$T/rmix" --quiet >/dev/null 2>"$T/rmix.err" \
  || fail "moco run --sink on grey and colour images: $(cat "$T/rmix.err")"
grep -q '"pairs":4,"epochs":2' "$T/rmix/sink.json" && grep -q '"view":\[32,32,[13]\],"channels":{"1":2,"3":2}' "$T/rmix/sink.json" \
  && grep -q '"ok":true' "$T/rmix/sink.json" || fail "grey and colour: $(cat "$T/rmix/sink.json")"
echo "grey and colour views in one run: the sink passes them, 2 pairs of each"
# a worker killed midway (slow consumer so that the run lasts)
timeout 120 $M run "$T/db" --sink --workers 2 --epochs 6 --recipe cifar --size 28 --run-dir "$T/r2" --worker-timeout 1 --quiet \
  >"$T/r2.out" 2>"$T/r2.err" &
run=$!
# only a worker of this run: a child of its `moco run` whose command is `moco augment`
mine() { for c in $(pgrep -P $run); do for p in $c $(pgrep -P $c); do
  grep -q 'augment' /proc/$p/cmdline 2>/dev/null && echo $p; done; done | head -1; }
for i in $(seq 600); do [ -n "$(mine)" ] && break; sleep 0.05; done
sleep 0.3
victim=$(mine)
[ -n "$victim" ] && kill -KILL "$victim"
wait $run || { cat "$T/r2.err"; fail "moco run with a killed worker exited non-zero"; }
grep -q "\"pairs\":$((6 * N)),\"epochs\":6" "$T/r2/sink.json" || fail "r2: $(cat "$T/r2/sink.json")"
grep -q '"ok":true' "$T/r2/sink.json" || fail "r2 not ok"
[ -n "$victim" ] || fail "found no worker of the run to kill"
grep -q "died" "$T/r2.err" || fail "the killed worker $victim was not reported"
echo "killed worker $victim; it was replaced"
# a --run-dir that is not a directory (a file here; /dev/null alike) is refused by name before any process starts
: > "$T/afile"
err=$(timeout 30 $M run "$T/db" --sink --workers 1 --epochs 1 --recipe cifar --size 28 --run-dir "$T/afile" 2>&1 >/dev/null); rc=$?
[ $rc -eq 1 ] && [ "$err" = "moco run: --run-dir $T/afile: not a directory" ] || fail "--run-dir a file: exit $rc, '$err'"
# the same processes started by hand over tcp:// (as across hosts), the
# consumer endpoint derived from --bind (port + 1), with CURVE keys (tcp
# without them is refused; a consumer with a key not allowed stops at once)
P=$(port_block 4)
$M loader --db "$T/db" --bind tcp://127.0.0.1:$P --epochs 1 --quiet 2>"$T/nokeys.err" && fail "a tcp loader without --keys ran"
grep -q -- "--keys" "$T/nokeys.err" || fail "no --keys hint: $(cat "$T/nokeys.err")"
$M keygen "$T/keys" >/dev/null || fail keygen
$M loader --db "$T/db" --bind tcp://127.0.0.1:$P --keys "$T/keys" --epochs 1 --seed 3 --quiet &
LP=$!
# a consumer whose key is not in the allow list stops at once, naming its key file
$M keygen "$T/other" >/dev/null && cp -rp "$T/keys" "$T/host2" && cp -p "$T/other"/client.key* "$T/host2"/ || fail "host2's keys"
t0=$(date +%s)
timeout 30 $M sink --bind tcp://127.0.0.1:$((P + 3)) --connect tcp://127.0.0.1:$((P + 1)) --keys "$T/host2" --count $N --quiet \
  >/dev/null 2>"$T/refused.err"; rc=$?
[ $rc -eq 1 ] && grep -q "refused this process's key $T/host2/client.key" "$T/refused.err" \
  || fail "a sink with a key not in the allow list: exit $rc, $(cat "$T/refused.err")"
[ $(( $(date +%s) - t0 )) -lt 20 ] || fail "the refused sink took $(( $(date +%s) - t0 )) s to stop"
$M sink --bind tcp://127.0.0.1:$((P + 2)) --connect tcp://127.0.0.1:$((P + 1)) --keys "$T/keys" --count $N --json "$T/tcp.json" --quiet >/dev/null &
SP=$!
$M augment --connect tcp://127.0.0.1:$P --push tcp://127.0.0.1:$((P + 2)) --keys "$T/keys" --recipe cifar --size 28 --quiet &
WP=$!
wait $SP || fail "the tcp:// sink failed"
wait $LP $WP
grep -q "\"pairs\":$N,\"epochs\":1" "$T/tcp.json" || fail "tcp: $(cat "$T/tcp.json")"

# the supervisor SIGKILLed: its children stop and its socket directory goes,
# with the counting sink and with a trainer as the consumer
for mode in sink train; do
  if [ $mode = sink ]; then what="--sink"; else what="--arch resnet18-cifar --width 4 --batch-size 16 --moco-k 256 --threads 1"; fi
  $M run "$T/db" $what --workers 1 --epochs 500 --recipe cifar --size 28 --run-dir "$T/k$mode" >/dev/null 2>"$T/k.err" &
  kp=$!
  for i in $(seq 600); do grep -q "ipc:///tmp/moco-run-" "$T/k.err" && break; sleep 0.05; done
  sd=$(grep -o "ipc:///tmp/moco-run-[A-Za-z0-9]*" "$T/k.err" | head -1 | cut -c7-)
  [ -n "$sd" ] && [ -d "$sd" ] || fail "$mode: no socket directory named: $(cat "$T/k.err")"
  sleep 1
  kill -KILL $kp
  for i in $(seq 300); do [ -d "$sd" ] || break; sleep 0.1; done
  [ -d "$sd" ] && fail "$mode: the socket directory $sd survived the supervisor ($(ls "$sd"))"
  for i in $(seq 150); do pgrep -f "$sd" >/dev/null || break; sleep 0.1; done
  pgrep -f "$sd" >/dev/null && fail "$mode: processes of the killed run are still there: $(pgrep -af "$sd")"
done

# --serve where the loader cannot bind: an ipc path in a missing directory, or under a file, is
# refused before anything is made, exit 2, naming it (before: the loader failed once started, exit 1,
# and runs/run-* was left behind); a tcp port in use fails in the loader, and the run directory made
# for it, holding only empty logs, goes, runs/ with it; with --quiet its loader.log says why: kept, named
mkdir -p "$T/sv" && cd "$T/sv" || fail "cd $T/sv"
for ep in "ipc://$T/sv/missing/s" "ipc://$T/db/data.mdb/s"; do
  timeout 60 $M run "$T/db" --serve "$ep" --workers 1 >/dev/null 2>"$T/sv.err"; rc=$?
  case $ep in *missing*) want="its directory $T/sv/missing: No such file or directory" ;; *) want="$T/db/data.mdb is not a directory" ;; esac
  [ $rc -eq 2 ] && grep -qF "moco run: --serve $ep: $want" "$T/sv.err" && [ -z "$(ls -A)" ] \
    || fail "--serve $ep: exit $rc, $(cat "$T/sv.err"); left: $(ls -AR)"
done
port=$(port_block 1)
/usr/bin/python3 -c 'import socket, sys, time; s = socket.socket(); s.bind(("127.0.0.1", int(sys.argv[1]))); s.listen(); time.sleep(60)' $port &
holder=$!
for i in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
timeout 60 $M run "$T/db" --serve tcp://127.0.0.1:$port --insecure --workers 1 >/dev/null 2>"$T/sv.err"; rc=$?
[ $rc -eq 1 ] && grep -q "moco loader: cannot bind tcp://127.0.0.1:$port: Address already in use" "$T/sv.err" && [ -z "$(ls -A)" ] \
  || { kill $holder; fail "--serve on a port in use: exit $rc, $(tail -3 "$T/sv.err"); left: $(ls -AR)"; }
timeout 60 $M run "$T/db" --serve tcp://127.0.0.1:$port --insecure --workers 1 --quiet >/dev/null 2>"$T/sv.err"; rc=$?
kill $holder
d=$(ls -d runs/run-* 2>/dev/null)
[ $rc -eq 1 ] && grep -q "moco run: the loader failed (exit status 1); its messages are in $d/loader.log" "$T/sv.err" \
  && grep -q "Address already in use" "$d/loader.log" || fail "--serve on a port in use, --quiet: exit $rc, $(tail -3 "$T/sv.err"); $(ls -AR)"
cd "$T" || fail "cd $T"
echo "--serve into a missing directory or under a file: exit 2 before anything is made; a port in use: no empty run directory left (--quiet: kept, its loader.log named)"

# the sink's refusal (here the loader's REFUSED of an epoch past its --epochs) is also in its --log, the
# sink.jsonl of a moco run --sink run directory, read afterwards (before: on stderr only)
mkdir -p "$T/sr"
$M loader --db "$T/db" --bind "ipc://$T/sr/w" --ctl "ipc://$T/sr/c" --epochs 1 --quiet 2>/dev/null &
LP=$!
echo 3 >"$T/sr/idx"
timeout 30 $M sink --connect "ipc://$T/sr/c" --resume-epoch 5 --resume-indices "$T/sr/idx" --count $N --log "$T/sr/sink.jsonl" \
  --loader-timeout 10 >/dev/null 2>"$T/sr.err"; rc=$?
kill $LP; wait $LP 2>/dev/null
msg=$(sed -n 's/^moco sink: \(.*refused this consumer: .*epoch 5.*\)$/\1/p' "$T/sr.err")
[ $rc -eq 1 ] && [ -n "$msg" ] && [ "$(sed 's/^{"t":[0-9.]*,/{/' "$T/sr/sink.jsonl" | tail -1)" = "{\"event\":\"failed\",\"error\":\"$msg\"}" ] \
  || fail "the sink's refusal: exit $rc: $(cat "$T/sr.err"); sink.jsonl: $(cat "$T/sr/sink.jsonl")"
# ... and under moco run --sink: two workers from elsewhere (--workers 0 --bind), at --size 28 and 32,
# make the sink refuse the views of one of the sizes at the end of the epoch; its reason is the last
# line of the run directory's sink.jsonl
P=$(port_block 2)
$M augment --connect tcp://127.0.0.1:$P --push tcp://127.0.0.1:$((P + 1)) --insecure --recipe cifar --size 28 --quiet 2>/dev/null &
W1=$!
$M augment --connect tcp://127.0.0.1:$P --push tcp://127.0.0.1:$((P + 1)) --insecure --recipe cifar --size 32 --quiet 2>/dev/null &
W2=$!
timeout 60 $M run "$T/db" --sink --workers 0 --bind tcp://127.0.0.1:$P --insecure --recipe cifar --size 28 --epochs 1 \
  --run-dir "$T/rsz" --quiet >/dev/null 2>"$T/rsz.err"; rc=$?
kill $W1 $W2 2>/dev/null; wait $W1 $W2 2>/dev/null
msg=$(sed -n 's/^moco sink: \([0-9]* pairs had another view size than .*\)$/\1/p' "$T/rsz.err")
[ $rc -eq 1 ] && [ -n "$msg" ] && grep -q "^moco run: FAILED" "$T/rsz.err" \
  && [ "$(sed 's/^{"t":[0-9.]*,/{/' "$T/rsz/sink.jsonl" | tail -1)" = "{\"event\":\"failed\",\"error\":\"$msg\"}" ] \
  || fail "moco run --sink, views of two sizes: exit $rc: $(cat "$T/rsz.err"); sink.jsonl ends: $(tail -1 "$T/rsz/sink.jsonl")"
echo "the sink's refusal: also in its --log (sink.jsonl; under moco run --sink: $msg)"

# usage errors
$M run "$T/db" --workers 0 --sink >/dev/null 2>"$T/usage.err"; rc=$?
[ $rc -eq 2 ] && grep -q "moco run: --workers 0 needs --bind" "$T/usage.err" || fail "--workers 0 without --bind: exit $rc, $(cat "$T/usage.err")"
$M run /nonexistent --sink >/dev/null 2>"$T/usage.err"; rc=$?
[ $rc -eq 2 ] && grep -q "moco run: /nonexistent: cannot open dataset" "$T/usage.err" || fail "a missing DB: exit $rc, $(cat "$T/usage.err")"
# runs that would train nothing fail, saying why (before: exit 0, "loss 0.0000", checkpoints):
# a batch larger than the dataset, and a dataset whose every record fails (payload bytes flipped:
# each record's CRC check fails in the worker)
if [ -d /usr/share/datasets/fashion-mnist ]; then
  TINY="--epochs 2 --workers 1 --arch resnet18-cifar --width 4 --size 28 --recipe cifar --moco-k 16"
  $M mkdb /usr/share/datasets/fashion-mnist "$T/db4" --split test --limit 4 --quiet >/dev/null || fail "mkdb 4"
  # moco run refuses it before it starts anything; moco train on its own, with --count, before it
  # makes anything in --out (and without a loader)
  timeout 120 $M run "$T/db4" $TINY --batch-size 8 --run-dir "$T/r4" >/dev/null 2>"$T/r4.err"; rc=$?
  [ $rc -eq 2 ] && grep -q "moco run: $T/db4: the dataset's 4 samples make no batch of 8 pairs: lower --batch-size" "$T/r4.err" \
    && [ ! -e "$T/r4" ] || fail "batch 8 on 4 samples: exit $rc $(tail -5 "$T/r4.err")"
  timeout 60 $M train --connect "ipc://$T/none-c" --bind "ipc://$T/none-p" --out "$T/t4" --count 4 --batch-size 8 --arch resnet18-cifar \
    --width 4 --size 28 --moco-k 16 --kernels rule >/dev/null 2>"$T/t4.err"; rc=$?
  [ $rc -eq 1 ] && grep -q "moco train: the dataset's 4 samples make no batch of 8 pairs: lower --batch-size" "$T/t4.err" \
    && [ ! -e "$T/t4" ] || fail "moco train, batch 8 on --count 4: exit $rc $(tail -3 "$T/t4.err"); $(ls "$T/t4" 2>&1)"
  $M mkdb /usr/share/datasets/fashion-mnist "$T/db20" --split test --limit 20 --quiet >/dev/null || fail "mkdb 20"
  python3 - "$T/db20/data.mdb" <<'PY' || fail "patching db20's payload bytes"
import sys
b = bytearray(open(sys.argv[1], "rb").read())
i, n = b.find(b"MOCR"), 0
while i >= 0:
    b[i + 32 + 10] ^= 0xFF  # a payload byte (the header is 32 bytes)
    i, n = b.find(b"MOCR", i + 4), n + 1
assert n >= 20, n  # every record (LMDB may hold stale copies of a page too)
open(sys.argv[1], "wb").write(b)
PY
  timeout 120 $M run "$T/db20" $TINY --batch-size 4 --run-dir "$T/r20" >/dev/null 2>"$T/r20.err"; rc=$?
  [ $rc -eq 1 ] && grep -q "moco train: epoch 0 trained no step: all 20 of its samples failed in the workers" "$T/r20.err" || fail "every record failing: exit $rc $(tail -5 "$T/r20.err")"
  [ -e "$T/r20/checkpoint_epoch_0001.safetensors" ] && fail "a checkpoint of an epoch that trained nothing"
  [ -d "$T/r20" ] || fail "the run directory of the failed run is missing"
  echo "a batch larger than the dataset, and a dataset whose every record fails: exit 1, saying why"
  # the workers' --max-pixels, passed on by moco run: every 28x28 image (784 pixels) over 700 is
  # refused undecoded, each named with the reason in the loader's report
  $M mkdb /usr/share/datasets/fashion-mnist "$T/db20c" --split test --limit 20 --quiet >/dev/null || fail "mkdb 20 clean"
  timeout 120 $M run "$T/db20c" $TINY --batch-size 4 --max-pixels 700 --run-dir "$T/rpx" >/dev/null 2>"$T/rpx.err"; rc=$?
  [ $rc -eq 1 ] && grep -q "moco train: epoch 0 trained no step: all 20 of its samples failed in the workers" "$T/rpx.err" \
    && [ "$(grep -c "failed in a worker: record [0-9]* (epoch 0): 28x28 = 784 pixels, over --max-pixels 700 (not decoded)" "$T/rpx.err")" = 20 ] \
    || fail "--max-pixels 700 on 28x28 images: exit $rc $(tail -5 "$T/rpx.err")"
  echo "--max-pixels: each of 20 images over it refused by the workers, named, undecoded"
fi
# a worker declared dead that comes back (stopped once epoch 0 is complete, until the loader
# declares it dead past --worker-timeout 1, with records in flight to it): it takes up the stream
# again and every epoch completes, exactly (before: the loader reset its count of records sent,
# ignored every later READY, and gave it no credit again: the run hung, sink exit 124). The loader
# is not --quiet: its "epoch 0 complete" is waited on and its "is back" checked
D="$T/back"; mkdir -p "$D"
$M loader --db "$T/db" --bind ipc://$D/work --ctl ipc://$D/ctl --epochs 12 --worker-timeout 1 2>"$D/loader.err" &
LP=$!
$M augment --connect ipc://$D/work --push ipc://$D/pairs --recipe cifar --size 28 --queue 1024 --quiet 2>"$D/aug.err" &
AP=$!
( for i in $(seq 1200); do grep -q "epoch 0 complete" "$D/loader.err" && break; sleep 0.05; done
  kill -STOP $AP || { echo stop failed >"$D/stop.err"; exit 1; }
  for i in $(seq 200); do grep -q "worker 0 went silent" "$D/loader.err" && break; sleep 0.05; done
  kill -CONT $AP ) &
SP=$!
timeout 120 $M sink --bind ipc://$D/pairs --connect ipc://$D/ctl --count $N --json "$D/sink.json" --quiet >/dev/null 2>"$D/sink.err"; rc=$?
wait $SP; kill $LP $AP 2>/dev/null; wait $LP $AP 2>/dev/null
[ $rc -eq 0 ] || fail "a worker back from the dead: sink exit $rc (124: hung): $(tail -2 "$D/sink.err") $(grep -a 'silent\|back' "$D/loader.err")"
python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); pe = j["per_epoch"]
assert j["ok"] and len(pe) == 12 and all(e["ok"] and e["pairs"] == int(sys.argv[2]) for e in pe)' "$D/sink.json" $N \
  || fail "a worker back from the dead: $(head -c 400 "$D/sink.json")"
[ ! -e "$D/stop.err" ] && grep -q "moco loader: worker 0 went silent; re-issuing its [1-9][0-9]* samples" "$D/loader.err" \
  && grep -q "moco loader: worker 0 is back" "$D/loader.err" \
  || fail "the stopped worker was not declared dead (with samples in flight) and back: $(cat "$D/stop.err" 2>/dev/null) $(grep -a 'worker 0' "$D/loader.err")"
echo "a worker declared dead and back: 12 epochs of $N, exactly"
# logs on a full disk (/dev/full: every write fails with ENOSPC): each process says so once and
# the stream goes on, exactly (before: the failures went unseen)
D="$T/fulllog"; mkdir -p "$D"
$M loader --db "$T/db" --bind ipc://$D/work --ctl ipc://$D/ctl --epochs 2 --log /dev/full --quiet 2>"$D/loader.err" &
LP=$!
$M augment --connect ipc://$D/work --push ipc://$D/pairs --recipe cifar --size 28 --log /dev/full --quiet 2>"$D/aug.err" &
AP=$!
timeout 120 $M sink --bind ipc://$D/pairs --connect ipc://$D/ctl --count $N --log /dev/full --pause-at 5000 --pause-s 2 --json "$D/sink.json" --quiet >/dev/null 2>"$D/sink.err"; rc=$?
wait $LP; kill $AP 2>/dev/null; wait $AP 2>/dev/null
for p in loader augment sink; do
  f="$D/$p.err"; [ $p = augment ] && f="$D/aug.err"
  [ "$(grep -c "moco $p: /dev/full: cannot write a JSON line: No space left on device; later lines of this log may be lost (the run goes on)" "$f")" = 1 ] \
    || fail "moco $p --log /dev/full: want one warning: $(head -c 300 "$f")"
done
[ $rc -eq 0 ] && python3 -c 'import json, sys; j = json.load(open(sys.argv[1])); pe = j["per_epoch"]
assert j["ok"] and len(pe) == 2 and all(e["ok"] and e["pairs"] == int(sys.argv[2]) for e in pe)' "$D/sink.json" $N \
  || fail "logs on a full disk: sink exit $rc, $(head -c 300 "$D/sink.json")"
echo "logs on a full disk: loader, worker and sink each warn once; 2 epochs of $N, exactly"
# a --count whose bitmap size wraps around (2^64 - 1: (count + 7) / 8 was 0, then a heap overflow)
echo 100000 >"$T/idx.txt"
$M sink --connect ipc://$T/none --count 18446744073709551615 --resume-epoch 0 --resume-indices "$T/idx.txt" >/dev/null 2>"$T/sink.err"
rc=$?; [ $rc -eq 2 ] && grep -q -- "--count: 18446744073709551615 is outside \[0, 68719476736\]" "$T/sink.err" || fail "sink --count 2^64-1: exit $rc $(cat "$T/sink.err")"
echo "moco run: 2 x $N pairs, exactly; 6 x $N with a worker killed; 1 x $N over tcp://"
