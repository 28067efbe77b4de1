#!/usr/bin/env bash
# bench_mpi.sh: data-parallel training on one host, side by side: the same
# global batch as 1 process x 2 threads and as 2 MPI ranks x 1 thread
# (`moco bench train`, resnet18-cifar width 32, global batch 256, 32 px,
# K 4096, 32 pairs per BN group), then the gradient average alone
# (tools/bench_allreduce.c: resnet18's and resnet50's parameter counts).
# Prints both figures, their ratio, the CPU model; the last line is one
# JSON object.
#   tools/bench_mpi.sh                 STEPS=3 WARMUP=1 ROUNDS=1 WIDTH=32 BUILD=build/release
# ROUNDS > 1 alternates the two settings and reports each round and the mean.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD=${BUILD:-build/release}
STEPS=${STEPS:-3} WARMUP=${WARMUP:-1} ROUNDS=${ROUNDS:-1} WIDTH=${WIDTH:-32}
GB=256 SPLITS=8
command -v mpirun >/dev/null || { echo "bench_mpi: mpirun absent (Debian: openmpi-bin)" >&2; exit 77; }
make --no-print-directory BUILD="$BUILD" "$BUILD/moco" "$BUILD/tools/bench_allreduce" >&2
M=$BUILD/moco
export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
MPIRUN="mpirun -np 2 --oversubscribe --bind-to none"
COMMON="--arch resnet18-cifar --width $WIDTH --size 32 --K 4096 --steps $STEPS --warmup $WARMUP"
cpu=$(lscpu | sed -n 's/^Model name:[[:space:]]*//p' | head -n 1)
fam=$(lscpu | sed -n 's/^CPU family:[[:space:]]*//p' | head -n 1) mod=$(lscpu | sed -n 's/^Model:[[:space:]]*//p' | head -n 1)
cpu="$cpu (family ${fam:-?} model ${mod:-?})"
echo "bench_mpi: $cpu, $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg)"
field() { sed -n "s/.*\"$2\":\([-0-9.e]*\).*/\1/p" <<<"$1"; }
one_all=() two_all=() wait_all=() share_all=()
for r in $(seq 1 "$ROUNDS"); do
  one=$($M bench train $COMMON --batch-size $GB --bn-splits $SPLITS --threads 2 | tail -n 1)
  two=$($MPIRUN "$M" bench train $COMMON --batch-size $((GB / 2)) --bn-splits $((SPLITS / 2)) --threads 1 | tail -n 1)
  p1=$(field "$one" pairs_per_s) p2=$(field "$two" pairs_per_s)
  one_all+=("$p1") two_all+=("$p2") wait_all+=("$(field "$two" allreduce_wait_ms)") share_all+=("$(field "$two" allreduce_share)")
  echo "round $r: 1 process x 2 threads $p1 pairs/s ($(field "$one" step_ms) ms/step);" \
       "2 ranks x 1 thread $p2 pairs/s ($(field "$two" step_ms) ms/step, waited $(field "$two" allreduce_wait_ms) ms/step" \
       "for the gradient average, $(field "$two" allreduce_share) of the step); ratio $(awk "BEGIN{printf \"%.3f\", $p2/$p1}")"
done
mean() { printf '%s\n' "$@" | awk '{s+=$1} END{printf "%.4f", s/NR}'; }
m1=$(mean "${one_all[@]}") m2=$(mean "${two_all[@]}")
ratio=$(awk "BEGIN{printf \"%.3f\", $m2/$m1}")
echo "resnet18-cifar w$WIDTH, global batch $GB, 32 px: 1 process x 2 threads $m1 pairs/s, 2 ranks x 1 thread $m2 pairs/s, ratio $ratio"
ar=$($MPIRUN "$BUILD/tools/bench_allreduce" --reps 3)
grep -v '^{' <<<"$ar"
arj=$(tail -n 1 <<<"$ar")
# the summary line, built by python's json (the CPU name is arbitrary text)
python3 - "$cpu" "$WIDTH" "$GB" "$STEPS" "$ROUNDS" "$m1" "$m2" "$ratio" "$(mean "${wait_all[@]}")" "$(mean "${share_all[@]}")" "$arj" <<'EOF'
import json, sys
a = sys.argv[1:]
print(json.dumps({"bench": "mpi", "cpu": a[0], "arch": "resnet18-cifar", "width": int(a[1]), "global_batch": int(a[2]),
                  "size": 32, "steps": int(a[3]), "rounds": int(a[4]), "one_process_2_threads_pairs_per_s": float(a[5]),
                  "two_ranks_1_thread_pairs_per_s": float(a[6]), "ratio": float(a[7]), "allreduce_wait_ms": float(a[8]),
                  "allreduce_share": float(a[9]), "allreduce": json.loads(a[10])["results"]}))
EOF
