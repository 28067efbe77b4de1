#!/usr/bin/env bash
# cli_mpi_step.sh: data-parallel MoCo over MPI (trainer/dist.h), under
# `mpirun -np 2` (skipped, exit 77, without mpirun):
#  1. $BUILD/tests/mpi_step (tests/mpi_step.c): 2 ranks at batch 8 against
#     1 process at batch 16 over 5 steps, bit-identical state on both ranks
#     after every step, refusals; it exits non-zero on any mismatch;
#  2. `mpirun -np 2 moco bench train` ends with one JSON line for the
#     global batch (2 x 8) with ranks, threads, allreduce_wait_ms and
#     allreduce_share; a K that is not a multiple of 2 x 8 is a usage error;
# 2b. sanitizer builds: a communicator never freed (tests/mpi_leak.c) is
#     reported by the leak check, and Open MPI's own allocations are not;
#  3. `mpirun -np 2 moco train` (batch 4 a rank) on 64 samples whose epoch-0
#     shards differ (the loader's shards from `mpi_step --shards`): rank 1's
#     shard has 4 pairs and 28 images over the workers' --max-pixels (they
#     fail), rank 0's 32 pairs; after the one step both can take, rank 1's
#     shard ends, and rank 0 drops its full batch and drains the 24 pairs
#     left of its shard: the epoch record says pairs 36, failed 28,
#     step 1, dropped 28 (the batch and the drained pairs; before, only the
#     batch: 4), so that pairs = steps x 2 x 4 + dropped (skipped without
#     a python3 with PIL to make the images).
# Open MPI refuses to run as root unless told; the test machines run as
# root. Sanitizer builds: Open MPI's own allocations that live until exit
# are suppressed in tests/lsan.supp (run.sh sets LSAN_OPTIONS), by the MPI
# call they come from (part 2b checks that ours are not).
set -u
fail() { echo "FAIL: $*"; exit 1; }
command -v mpirun >/dev/null || { echo "skipped: mpirun absent (Debian: openmpi-bin)"; exit 77; }
M=${MOCO:?}
B=${BUILD:-build/release}
T=${MOCO_TEST_TMP:?}/mpi
rm -rf "$T" && mkdir -p "$T"
[ -x "$B/tests/mpi_step" ] || fail "$B/tests/mpi_step is not built (make tests)"
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# sanitizer builds: Open MPI's components are unloaded before the leak
# check, so only the slow unwinder's stacks reach the libraries that
# tests/lsan.supp names
if [ -n "${LSAN_OPTIONS:-}" ]; then export LSAN_OPTIONS="$LSAN_OPTIONS:fast_unwind_on_malloc=0:malloc_context_size=64"; fi
# no binding: the test machines share their cores with other jobs
RUN="mpirun -np 2 --oversubscribe --bind-to none"

# 1. the engine against one process, and the checks
timeout 300 $RUN "$B/tests/mpi_step" >"$T/step.out" 2>&1
rc=$?
cat "$T/step.out"
[ $rc = 0 ] || fail "mpi_step exited $rc"
grep -q '^PASS: 2 ranks' "$T/step.out" || fail "mpi_step did not report PASS"
[ "$(grep -c 'worst over 5 steps' "$T/step.out")" = 2 ] || fail "mpi_step did not run both cases"

# 2. the benchmark with 2 ranks
timeout 300 $RUN "$M" bench train --width 4 --batch-size 8 --size 16 --K 64 --steps 2 --warmup 1 --bn-splits 2 \
  --threads 1 --symmetric >"$T/bench.out" 2>"$T/bench.err" || { cat "$T/bench.err"; fail "mpirun moco bench train"; }
tail -n 1 "$T/bench.out" >"$T/bench.jsonl"
cat "$T/bench.jsonl"
for k in '"bench":"train"' '"batch":16' '"batch_per_rank":8' '"ranks":2' '"threads":1' '"pairs_per_s":' \
         '"allreduce_wait_ms":[0-9]' '"allreduce_share":[0-9]'; do
  grep -q "$k" "$T/bench.jsonl" || fail "bench JSON lacks $k"
done
[ "$(grep -c '^{' "$T/bench.out")" = 1 ] || fail "only rank 0 should print the JSON line"
timeout 120 $RUN "$M" bench train --width 4 --batch-size 8 --size 16 --K 48 --symmetric --steps 1 --threads 1 --bn-splits 2 \
  >"$T/badk.out" 2>&1
rc=$?
[ $rc = 2 ] || fail "K=48 with 2 ranks x 8 x 2 directions: exit $rc, want 2 (a usage error)"
grep -q "multiple of ranks x batch x directions" "$T/badk.out" || fail "no message for a bad K: $(tail -3 "$T/badk.out")"

# 2b. sanitizer builds: the leak check sees our own leaks of MPI objects. tests/mpi_leak
# dups MPI_COMM_WORLD and frees the dup only with --free; tests/lsan.supp must let the
# leak through (a suppression of all of libmpi hid it before 2026-12-04) and suppress
# the rest (Open MPI's own allocations, left for exit).
if ldd "$B/tests/mpi_leak" 2>/dev/null | grep -q libasan; then
  timeout 120 mpirun -np 1 --bind-to none "$B/tests/mpi_leak" >"$T/leak.out" 2>&1
  rc=$?
  [ $rc != 0 ] && grep -q "in MPI_Comm_dup" "$T/leak.out" && grep -q "tests/mpi_leak.c" "$T/leak.out" \
    || fail "a communicator dup'ed and never freed: exit $rc, and no leak report through MPI_Comm_dup: $(grep -m3 -E 'SUMMARY|ERROR' "$T/leak.out")"
  timeout 120 mpirun -np 1 --bind-to none "$B/tests/mpi_leak" --free >"$T/noleak.out" 2>&1 \
    || fail "mpi_leak --free (nothing of ours leaked): exit $?: $(grep -m3 -E 'SUMMARY|ERROR|#[0-9]' "$T/noleak.out")"
  echo "leak check: a communicator never freed is reported (through MPI_Comm_dup), Open MPI's own allocations are not"
fi

# 3. a rank's shard that ends first: the pairs the other drains are dropped, and counted
PY=
for p in python3 /usr/bin/python3; do command -v $p >/dev/null && $p -c 'import PIL' 2>/dev/null && { PY=$p; break; }; done
[ -n "$PY" ] || { echo "skipped: part 3 (unequal shards): no python3 with PIL (python3-pil) to make its images"; echo "ok"; exit 0; }
N=64
"$B/tests/mpi_step" --shards 1 0 $N 2 >"$T/shards" || fail "mpi_step --shards"
[ "$(wc -l <"$T/shards")" = $N ] || fail "mpi_step --shards printed $(wc -l <"$T/shards") lines, want $N"
# rank 1's shard: its first 4 samples 28x28, the other 28 32x32 (1,024 pixels: over --max-pixels 900); rank 0's all 28x28
"$PY" - "$T/shards" "$T/img/a" <<'PY' || fail "making the images"
import os, sys
from PIL import Image
rank = dict(tuple(map(int, l.split())) for l in open(sys.argv[1]))
os.makedirs(sys.argv[2])
ones = sorted(i for i, r in rank.items() if r == 1)
assert len(ones) == 32 and len(rank) == 64
for i, r in rank.items():
    side = 32 if r == 1 and i not in ones[:4] else 28
    Image.new("RGB", (side, side), ((i * 37) % 256, (i * 11) % 256, (i * 5) % 256)).save("%s/%03d.png" % (sys.argv[2], i))
PY
$M mkdb "$T/img" "$T/db" --quiet >/dev/null 2>"$T/mkdb.err" || fail "mkdb: $(cat "$T/mkdb.err")"
S="$T/s"; mkdir -p "$S"
$M loader --db "$T/db" --bind ipc://$S/w --ctl ipc://$S/c --pairs ipc://$S/p --consumers 2 --epochs 1 --seed 1 \
  --quiet --linger 0 --consumer-wait 60 --log "$T/loader.jsonl" 2>"$T/loader.err" &
LP=$!
$M augment --connect ipc://$S/w --push ipc://$S/p --recipe cifar --size 28 --seed 1 --max-pixels 900 --quiet 2>"$T/augment.err" &
WP=$!
timeout 300 $RUN "$M" train --connect ipc://$S/c --out "$T/drain" --epochs 1 --seed 1 --size 28 --count $N --arch resnet18-cifar \
  --width 4 --batch-size 4 --moco-k 64 --bn-splits 2 --threads 1 >"$T/drain.out" 2>"$T/drain.err"
rc=$?
kill $LP $WP 2>/dev/null; wait $LP $WP 2>/dev/null
[ $rc = 0 ] || fail "mpirun moco train on unequal shards exited $rc: $(tail -5 "$T/drain.err")"
rec=$(grep '"type":"epoch"' "$T/drain/metrics.jsonl")
[ "$(echo "$rec" | grep -c .)" = 1 ] || fail "want one epoch record: $rec"
for k in '"epoch":0,"step":1,' '"pairs":36,' '"dropped":28,' '"failed":28,' '"ranks":2'; do
  echo "$rec" | grep -q "$k" || fail "the epoch record lacks $k (rank 0 drained 24 pairs after its dropped batch of 4): $rec"
done
echo "unequal shards: rank 0 dropped its batch and drained the rest of its shard: dropped 28, pairs 36 = 1 step x 8 + 28"
echo "ok"
