#!/usr/bin/env bash
# cli_mpi.sh: data-parallel training on MPI ranks fed by the pipeline, on a
# small Fashion-MNIST subset with a tiny ResNet (2 ranks x 1 thread):
#  1. `moco run --ranks 2` trains 2 epochs: every sample exactly once per
#     epoch across the ranks (the loader's epoch_end and the trainer's epoch
#     records: pairs = N, the two shards together), steps = 2 x N / (2 x B);
#     with --hostfile and --bind tcp://... --keys, the ranks read the
#     stream over tcp + CURVE, exactly as well;
#  2. `mpirun -np 2 moco train` (10 epochs) against a loader with --consumers 2, one
#     rank SIGKILLed mid-epoch: the other exits within seconds, and a resume
#     from the last checkpoint (union of the ranks' positions) ends with a
#     final checkpoint byte-identical to an uninterrupted 2-rank run's (one
#     worker: the order of each shard is deterministic);
#     mpirun's message names the killed rank;
#  2b. the same job with the loader stopped (it ends the stream) mid-epoch:
#     the ranks fail within seconds, naming the run directory, and the
#     resume from the last checkpoint is byte-identical too;
#  2c. SIGUSR1 to mpirun: exit 130 and the resume command, mpirun -np 2
#     included; that resume byte-identical too;
#  3. launch errors: flags that differ across ranks (and starting points:
#     resumes from different checkpoints), K not a multiple of
#     ranks x batch, and --bn-splits 1 on 2 ranks are refused with a message
#     on every rank; a resume of the 2-rank checkpoint on 1 process (another
#     global batch) is refused as a schedule change; `moco run --ranks`
#     without mpirun on the PATH says so and exits 1.
# Skipped (77) without mpirun (openmpi-bin) or the dataset.
set -u
fail() { echo "FAIL: $*"; exit 1; }
. "$(dirname "$0")/ports.sh"
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/mpi
SRC=/usr/share/datasets/fashion-mnist
command -v mpirun >/dev/null || { echo "skipped: no mpirun (openmpi-bin)"; exit 77; }
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_btl_vader_single_copy_mechanism=none
# sanitizer builds: Open MPI's own leaks (tests/lsan.supp) are matched only on full stacks
# (tests/run.sh preloads a dlclose that keeps Open MPI's components mapped: matching their
# frames then costs no re-read of the module list, about 10 s at every rank's exit)
if [ -n "${LSAN_OPTIONS:-}" ]; then export LSAN_OPTIONS="$LSAN_OPTIONS:fast_unwind_on_malloc=0:malloc_context_size=64"; fi
MPIRUN="mpirun -np 2 --oversubscribe --bind-to none"
rm -rf "$T" && mkdir -p "$T"
N=512
$M mkdb $SRC "$T/db" --split test --limit $N --shuffle --seed 3 --quiet >/dev/null || fail mkdb
MODEL="--arch resnet18-cifar --width 4 --batch-size 16 --moco-k 256 --moco-m 0.99 --moco-t 0.1 --lr 0.06 --cos --bn-splits 2 --threads 1"

# 1. moco run --ranks 2: exactly once per epoch across the ranks; rank 0
# evaluates kNN after each epoch (10,000 images against 10,000: over a
# second), and rank 1,
# waiting for it, tells the loader it is BUSY
$M mkdb $SRC "$T/bank" --split test --quiet >/dev/null || fail "mkdb (the kNN bank)"
timeout 300 $M run "$T/db" --ranks 2 --workers 1 --epochs 2 --recipe cifar --size 28 --seed 1 $MODEL \
  --knn-train "$T/bank" --knn-test "$T/bank" --run-dir "$T/r1" --quiet >"$T/r1.out" 2>"$T/r1.err" \
  || { tail "$T/r1.err"; fail "moco run --ranks 2 exited non-zero"; }
grep -q '"event":"consumer_busy".*"rank":1' "$T/r1/loader.jsonl" \
  || fail "rank 1 never said BUSY while rank 0 evaluated: $(grep -c '"event":"consumer_busy"' "$T/r1/loader.jsonl") BUSY events; $(grep 'kNN' "$T/r1.err")"
n=$(grep -c '"type":"epoch"' "$T/r1/metrics.jsonl")
[ "$n" = 2 ] || fail "expected 2 epoch records, got $n"
for e in 0 1; do
  grep '"type":"epoch"' "$T/r1/metrics.jsonl" | grep "\"epoch\":$e," | grep -q "\"pairs\":$N,.*\"ranks\":2" \
    || fail "epoch $e: the ranks together did not get $N pairs: $(grep '"type":"epoch"' "$T/r1/metrics.jsonl")"
done
[ "$(grep -c "\"event\":\"epoch_end\".*\"delivered\":$N,\"failed\":0" "$T/r1/loader.jsonl")" = 2 ] \
  || fail "the loader did not end 2 epochs with $N delivered: $(grep epoch_end "$T/r1/loader.jsonl")"
grep -q '"step":32,' "$T/r1/metrics.jsonl" || fail "2 epochs of $N at 2 ranks x batch 16 should end at step 32"
[ -s "$T/r1/checkpoint_epoch_0002.safetensors" ] || fail "no checkpoint_epoch_0002"
ls "$T/r1" | grep -q "rank" && fail "a rank other than 0 wrote files: $(ls "$T/r1")"
echo "moco run --ranks 2: 2 epochs of $N pairs, exactly, across the ranks"
# ... with --hostfile (ranks that could be on other hosts): they read the
# stream over tcp with CURVE (the loader's consumer port, PORT+2), still exactly once
$M keygen "$T/keys" >/dev/null || fail keygen
printf 'localhost slots=2\n' >"$T/hosts"
port=$(port_block 3)
timeout 120 $M run "$T/db" --ranks 2 --hostfile "$T/hosts" --bind tcp://127.0.0.1:$port --keys "$T/keys" --workers 1 --epochs 2 \
  --recipe cifar --size 28 --seed 1 $MODEL --run-dir "$T/rh" >/dev/null 2>"$T/rh.err" || fail "moco run --ranks 2 --hostfile: $(tail -3 "$T/rh.err")"
grep -q "consumer: tcp://127.0.0.1:$((port + 2)) (serve mode)" "$T/rh.err" || fail "--hostfile: the ranks' stream is not on tcp PORT+2: $(head -4 "$T/rh.err")"
[ "$(grep -c "consumer of rank [01] of 2 connected" "$T/rh.err")" = 2 ] || fail "--hostfile: not both ranks connected: $(cat "$T/rh.err")"
[ "$(grep -c "\"event\":\"epoch_end\".*\"delivered\":$N,\"failed\":0" "$T/rh/loader.jsonl")" = 2 ] \
  || fail "--hostfile: the loader did not end 2 epochs with $N delivered: $(grep epoch_end "$T/rh/loader.jsonl")"
grep -q '"step":32,' "$T/rh/metrics.jsonl" || fail "--hostfile: 2 epochs of $N at 2 ranks x batch 16 should end at step 32"
echo "moco run --ranks 2 --hostfile: the ranks read over tcp + CURVE, 2 epochs of $N pairs exactly"
# ... and a rank killed under moco run: it says how to resume, and that finishes the run
# (20 epochs, 320 steps: long enough that the kill lands before the end)
$M run "$T/db" --ranks 2 --workers 1 --epochs 20 --recipe cifar --size 28 --seed 1 $MODEL --save-every 4 --log-every 1 \
  --run-dir "$T/r1k" >/dev/null 2>"$T/r1k.err" &
RP=$!
for i in $(seq 1200); do grep -q '"step":12,' "$T/r1k/metrics.jsonl" 2>/dev/null && break; sleep 0.05; done
victim=$(pgrep -f "train .*--out $T/r1k" | while read p; do [ "$(ps -o comm= -p $p)" = "$(basename $M)" ] && echo $p; done | head -1)
[ -n "$victim" ] || fail "moco run --ranks: found no rank to kill"
kill -KILL "$victim"
wait $RP; rc=$?
[ $rc -eq 1 ] || fail "moco run --ranks with a killed rank exited $rc, want 1: $(tail -3 "$T/r1k.err")"
cmd=$(grep -A1 "moco run: resume with:" "$T/r1k.err" | tail -1)
echo "$cmd" | grep -q -- "--ranks 2 .*--resume $T/r1k$" || fail "no resume command after a killed rank: $(tail -5 "$T/r1k.err")"
eval "timeout 300 $cmd" >/dev/null 2>"$T/r1k2.err" || fail "the printed resume command failed: $(tail -3 "$T/r1k2.err")"
[ "$(grep -c '"type":"epoch"' "$T/r1k/metrics.jsonl")" = 20 ] && grep -q '"type":"epoch","epoch":19,"step":320,' "$T/r1k/metrics.jsonl" \
  || fail "the resumed run did not end at epoch 20, step 320: $(grep -v '"type":"step"' "$T/r1k/metrics.jsonl" | cut -c1-80)"
echo "moco run --ranks 2: a rank killed at step >= 12: exit 1, the printed resume command finished the run at step 320"

# ... and Ctrl-C: to the supervisor alone, and to its whole process group as a terminal sends it.
# The ranks stop at the current step with a checkpoint of it (before: the loader's end of the
# stream reached them first and they aborted, or mpirun killed them at once and the supervisor
# exited while they ran), and nothing is left running.
for to in sup group; do
  setsid $M run "$T/db" --ranks 2 --workers 1 --epochs 30 --recipe cifar --size 28 --seed 1 $MODEL --log-every 1 \
    --run-dir "$T/c$to" >/dev/null 2>"$T/c$to.err" &
  RP=$!
  for i in $(seq 1200); do grep -q '"step":20,' "$T/c$to/metrics.jsonl" 2>/dev/null && break; sleep 0.05; done
  if [ $to = group ]; then kill -INT -- -$RP; else kill -INT $RP; fi
  wait $RP; rc=$?
  # within a second of its exit nothing of the run is left (mpirun's own command line matches
  # too: no rank can start after the check)
  for i in $(seq 10); do left=$(pgrep -f "train .*--out $T/c$to" | tr '\n' ' '); [ -z "$left" ] && break; sleep 0.1; done
  [ $rc -eq 130 ] && [ -z "$left" ] || fail "Ctrl-C ($to) on moco run --ranks: exit $rc, left running: '$left': $(tail -5 "$T/c$to.err")"
  grep -q "moco train: rank 0 of 2: interrupted at step [0-9]* (epoch [0-9]*): $T/c$to/checkpoint_last.safetensors holds it" "$T/c$to.err" \
    || fail "Ctrl-C ($to): no stop checkpoint at the current step: $(grep -E 'moco (train|run)' "$T/c$to.err" | tail -5)"
  grep -q -e "ended the stream" -e "MPI_ABORT" "$T/c$to.err" && fail "Ctrl-C ($to): the ranks took the stop for a failure: $(grep -E 'ended|ABORT' "$T/c$to.err" | head -2)"
  st=$(grep -o 'interrupted at step [0-9]*' "$T/c$to.err" | grep -o '[0-9]*$'); last=$(grep -o '"step":[0-9]*' "$T/c$to/metrics.jsonl" | tail -1 | cut -d: -f2)
  [ "$st" -ge "$last" ] || fail "Ctrl-C ($to): the checkpoint (step $st) is behind the metrics (step $last)"
done
echo "moco run --ranks 2: Ctrl-C to the supervisor or its group: exit 130, a checkpoint at the current step, nothing left running"

# 2. kill one rank mid-epoch; resume == uninterrupted
# 10 epochs (160 steps, 10 ms each here): a kill aimed at step 10 of a 2-epoch
# run landed anywhere from step 20 to past its last step (32) on a quiet machine
E2=10
pipeline() { # $1: dir, rest: trainer flags
  local d=$1; shift
  rm -rf "$T/s"; mkdir -p "$T/s" "$d"
  $M loader --db "$T/db" --bind ipc://$T/s/w --ctl ipc://$T/s/c --pairs ipc://$T/s/p --consumers 2 --epochs $E2 --seed 1 \
    --quiet --linger 0 --consumer-timeout 3 --consumer-wait 60 &
  LP=$!
  $M augment --connect ipc://$T/s/w --push ipc://$T/s/p --recipe cifar --size 28 --seed 1 --quiet &
  WP=$!
  timeout 300 $MPIRUN $M train --connect ipc://$T/s/c --out "$d" --epochs $E2 --seed 1 --size 28 --count $N $MODEL "$@" \
    >>"$d.out" 2>>"$d.err" &
  TP=$!
}
pipeline "$T/full"
wait $TP || fail "uninterrupted 2-rank training failed: $(tail -5 "$T/full.err")"
wait $LP $WP
pipeline "$T/cut" --save-every 5 --log-every 1
# the victim is found first (rank 0 has logged step 1), then killed the moment step 12 is logged
for i in $(seq 3000); do grep -q '"step":1,' "$T/cut/metrics.jsonl" 2>/dev/null && break; sleep 0.02; done
victim=$(pgrep -f "train --connect ipc://$T/s/c" | while read p; do [ "$(ps -o comm= -p $p)" = "$(basename $M)" ] && echo $p; done | tail -1)
[ -n "$victim" ] || fail "found no rank to kill"
for i in $(seq 6000); do grep -q '"step":12,' "$T/cut/metrics.jsonl" && break; sleep 0.01; done
t0=$SECONDS
kill -KILL "$victim"
wait $TP; rc=$?
[ $rc -ne 0 ] || fail "the job exited 0 after a rank was killed"
[ $((SECONDS - t0)) -le 20 ] || fail "the other rank took $((SECONDS - t0)) s to exit"
pgrep -f "train --connect ipc://$T/s/c" >/dev/null && fail "ranks are left running: $(pgrep -af "train --connect ipc://$T/s/c")"
kill $LP $WP 2>/dev/null; wait $LP $WP 2>/dev/null
step=$(grep -o '"step":[0-9]*' "$T/cut/metrics.jsonl" | tail -1)
echo "killed rank pid $victim at $step; the job ended in $((SECONDS - t0)) s (exit $rc)"
grep -q "process rank [01] with PID" "$T/cut.err" || fail "no message names the killed rank: $(tail -5 "$T/cut.err")"
[ "${step#*:}" -lt $((E2 * 16)) ] || fail "the kill landed after the last step ($step): the run was too short"
cp "$T/cut/checkpoint_last.safetensors" "$T/resume.safetensors"
pipeline "$T/cut" --resume "$T/resume.safetensors"
wait $TP || fail "resumed 2-rank training failed: $(tail -5 "$T/cut.err")"
wait $LP $WP
grep -q "resumed" "$T/cut.err" || fail "the trainer did not say it resumed"
cmp "$T/full/checkpoint_last.safetensors" "$T/cut/checkpoint_last.safetensors" \
  || fail "the resumed 2-rank run's final checkpoint differs from the uninterrupted run's"
echo "killed and resumed: the final checkpoint is byte-identical to the uninterrupted run's"

# 2b. the loader stopped (SIGTERM: it ends the stream) mid-epoch under 2
#     ranks: the job fails within seconds (no rank waits forever for the
#     other), says the stream ended early and names the run directory, and
#     says no "done"; a resume from the last common checkpoint ends
#     byte-identical to the uninterrupted run
pipeline "$T/end" --save-every 5 --log-every 1
for i in $(seq 6000); do grep -q '"step":12,' "$T/end/metrics.jsonl" 2>/dev/null && break; sleep 0.01; done
t0=$SECONDS
kill -TERM $LP
wait $TP; rc=$?; el=$((SECONDS - t0))
[ $rc -ne 0 ] || fail "2b: the ranks exited 0 after the loader ended the stream early: $(tail -3 "$T/end.err")"
[ $el -le 30 ] || fail "2b: the ranks took $el s to exit"
pgrep -f "train --connect ipc://$T/s/c" >/dev/null && fail "2b: ranks are left running"
kill $WP 2>/dev/null; wait $LP $WP 2>/dev/null
grep -q "the loader ended the stream in epoch [0-9]* of $E2, at step [0-9]*: resume from the last checkpoint in $T/end" "$T/end.err" \
  || fail "2b: no message on the early end: $(tail -5 "$T/end.err")"
grep -q "moco train: done" "$T/end.err" && fail "2b: a rank said done after an early end"
step=$(grep -o '"step":[0-9]*' "$T/end/metrics.jsonl" | tail -1)
[ "${step#*:}" -lt $((E2 * 16)) ] || fail "2b: the stop landed after the last step ($step): the run was too short"
cp "$T/end/checkpoint_last.safetensors" "$T/resume-end.safetensors"
pipeline "$T/end" --resume "$T/resume-end.safetensors"
wait $TP || fail "2b: resumed 2-rank training failed: $(tail -5 "$T/end.err")"
wait $LP $WP
cmp "$T/full/checkpoint_last.safetensors" "$T/end/checkpoint_last.safetensors" \
  || fail "2b: the resumed run's final checkpoint differs from the uninterrupted run's"
echo "2b: the loader stopped at $step: the ranks exited $rc after $el s, naming the run directory; resumed byte-identical"

# 2c. SIGUSR1 to mpirun itself (it forwards it to the ranks; moco run stops its ranks so): the
#     ranks stop at a common step with a checkpoint, exit 130, and rank 0 prints the command
#     that resumes, launcher included (mpirun -np 2: the checkpoint wants as many ranks); that
#     resume ends byte-identical to the uninterrupted run
pipeline "$T/usr" --save-every 5 --log-every 1
for i in $(seq 6000); do grep -q '"step":12,' "$T/usr/metrics.jsonl" 2>/dev/null && break; sleep 0.01; done
mp=$(pgrep -P $TP -x mpirun)
[ -n "$mp" ] || fail "2c: no mpirun under timeout $TP"
kill -USR1 "$mp"
wait $TP; rc=$?
kill $LP $WP 2>/dev/null; wait $LP $WP 2>/dev/null
[ $rc -eq 130 ] || fail "2c: SIGUSR1 to mpirun: exit $rc, want 130: $(tail -5 "$T/usr.err")"
cmd=$(grep -A1 "^moco train: resume with (on 2 ranks, with the launcher's other flags as before):" "$T/usr.err" | sed -n 2p)
echo "$cmd" | grep -q "^ mpirun -np 2 $M train --connect ipc://$T/s/c .* --resume $T/usr$" || fail "2c: no mpirun resume command: $(tail -5 "$T/usr.err")"
step=$(grep -o '"step":[0-9]*' "$T/usr/metrics.jsonl" | tail -1)
[ "${step#*:}" -lt $((E2 * 16)) ] || fail "2c: the stop landed after the last step ($step): the run was too short"
pipeline "$T/usr" --resume "$T/usr"
wait $TP || fail "2c: the resume failed: $(tail -5 "$T/usr.err")"
wait $LP $WP
cmp "$T/full/checkpoint_last.safetensors" "$T/usr/checkpoint_last.safetensors" || fail "2c: the resumed run's final checkpoint differs"
echo "2c: SIGUSR1 to mpirun at $step: exit 130, the resume command with mpirun -np 2; resumed byte-identical"

# 3. launch errors, on every rank
mkdir -p "$T/s3"
out=$(timeout 60 mpirun -np 2 --oversubscribe sh -c 'exec "$0" train --connect ipc://'"$T"'/s3/none --out '"$T"'/e1 --count '"$N"' \
  --size 28 '"$MODEL"' --lr $(( OMPI_COMM_WORLD_RANK + 1 ))' "$M" 2>&1); rc=$?
[ $rc -ne 0 ] || fail "ranks with different --lr were accepted"
[ "$(echo "$out" | grep -c 'ranks differ in the training flags')" -ge 2 ] || fail "differing flags not reported on every rank: $out"
# flags that decide which collectives a rank calls (before: a hang in mismatched collectives,
# timeout's 124) or what its inputs are (before: trained on, unseen): refused on every rank
for diff in '--log-every $(( OMPI_COMM_WORLD_RANK * 2 + 1 ))' '--save-every $(( OMPI_COMM_WORLD_RANK * 3 + 2 ))' \
            '$( [ $OMPI_COMM_WORLD_RANK = 1 ] && echo --normalize none )' 'MOCO_DIST_CHECK=$OMPI_COMM_WORLD_RANK'; do
  case "$diff" in MOCO*) pre="env $diff"; flag="";; *) pre=""; flag="$diff";; esac
  want="run" # --normalize is in the checkpoint's config since 2026-12-02: one of the training flags
  case "$diff" in *normalize*) want="training";; esac
  out=$(timeout 60 mpirun -np 2 --oversubscribe sh -c 'exec '"$pre"' "$0" train --connect ipc://'"$T"'/s3/none --out '"$T"'/e1 --count '"$N"' \
    --size 28 '"$MODEL"' '"$flag" "$M" 2>&1); rc=$?
  [ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "ranks with different $diff: exit $rc (124: hung): $out"
  [ "$(echo "$out" | grep -c "ranks differ in the $want flags")" -ge 2 ] || fail "ranks with different $diff: not reported on every rank as $want flags: $out"
done
# ranks resuming from different checkpoints, one of which ends the run (before: that rank left, the
# other waited in a collective for good, timeout's 124): refused on every rank
out=$(timeout 60 mpirun -np 2 --oversubscribe sh -c 'exec "$0" train --connect ipc://'"$T"'/s3/none --out '"$T"'/e5 --count '"$N"' \
  --size 28 --epochs '"$E2"' --seed 1 '"$MODEL"' --resume '"$T"'/full/checkpoint_epoch_$(printf %04d $(( 10 - OMPI_COMM_WORLD_RANK ))).safetensors' "$M" 2>&1); rc=$?
[ $rc -ne 0 ] && [ $rc -ne 124 ] || fail "ranks resuming from epochs 10 and 9: exit $rc (124: hung): $out"
[ "$(echo "$out" | grep -c 'ranks differ in the run flags.*or the starting point')" -ge 2 ] || fail "ranks resuming from different epochs: not reported on every rank: $out"
out=$(timeout 60 $MPIRUN $M train --connect ipc://$T/s3/none --out "$T/e2" --count $N --size 28 $MODEL --moco-k 48 2>&1); rc=$?
[ $rc -ne 0 ] || fail "K=48 with 2 ranks x batch 16 was accepted"
[ "$(echo "$out" | grep -c 'queue length K=48 must be a multiple of ranks x batch x directions = 2 x 16 x 1 = 32')" -ge 2 ] \
  || fail "K not a multiple of ranks x batch: no message on every rank: $out"
out=$(timeout 60 $MPIRUN $M train --connect ipc://$T/s3/none --out "$T/e3" --count $N --size 28 $MODEL --bn-splits 1 2>&1); rc=$?
[ $rc -ne 0 ] || fail "--bn-splits 1 on 2 ranks was accepted"
[ "$(echo "$out" | grep -c -- '--bn-splits 1 with 2 ranks')" -ge 2 ] || fail "--bn-splits 1 on 2 ranks: no message on every rank: $out"
out=$(timeout 60 $M train --connect ipc://$T/s3/none --out "$T/e4" --count $N --size 28 --epochs $E2 --seed 1 $MODEL \
  --resume "$T/resume.safetensors" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "a 2-rank checkpoint resumed on 1 process: exit $rc, want 1: $out"
echo "$out" | grep -q "1 rank (checkpoint: 2; a global batch of 16 against 32)" || fail "resume on 1 rank: no clear message: $out"
out=$(timeout 60 env PATH=/nonexistent $M run "$T/db" --ranks 2 --workers 1 --recipe cifar --size 28 $MODEL --run-dir "$T/nompi" 2>&1); rc=$?
[ $rc -eq 1 ] || fail "moco run --ranks without mpirun exited $rc, want 1: $out"
echo "$out" | grep -q "cannot start mpirun" || fail "moco run --ranks without mpirun: no message: $out"
echo "launch errors: refused with messages"
