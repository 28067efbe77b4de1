#!/usr/bin/env bash
# soak.sh: fault-injection soak of the real pipeline processes (issue 7).
# Not part of `make test`: it runs for minutes and stops by itself.
#   bash tests/soak/soak.sh [MINUTES] [SEED]     (defaults: 15, 1)
# Run from the repository root after `make`; uses bin/moco (or $MOCO).
#
# What it does: converts the CIFAR-10 test split from
# ../shared/data/cifar10-jpeg.tar.gz (10,000 JPEGs) with `moco mkdb`,
# damages K=9 records with corrupt_db.c (3 with a CRC mismatch, 3 with
# valid-CRC garbage image bytes, 3 with a broken header magic), then runs
# rounds of loader + 3 augmentation workers + sink (started by hand, ipc://
# endpoints) until the time is spent. The first round has 3 epochs and
# measures the epoch time; the next ones are sized to fill the time left
# (at most 200 epochs each).
# While a round runs, every 1-4 s (seeded) one of:
#   kill     SIGKILL a random worker, start a new one
#   stop     SIGSTOP a random worker for 2-5 s, then SIGCONT
#   garbage  50 garbage messages (garbage.c) to each bound endpoint: the
#            loader's work and ctl ROUTERs and the sink's pairs PULL
# At the end of each round it checks, and the script fails unless:
#   - every valid record was delivered exactly once in every epoch (the
#     sink's --index-log) and no corrupt record was delivered;
#   - every corrupt record was reported as failed in every epoch (the
#     loader's JSON log, "failed" events);
#   - loader and sink exited 0, and no worker died that was not killed;
# and it samples VmRSS of loader and sink once a second (rss.txt), printing
# the first (after 10 s), largest and last figures of the longest round.
# Output: build/soak/ (logs, db); a summary at the end, also in summary.txt.
set -u
MIN=${1:-15}
SEED=${2:-1}
cd "$(dirname "$0")/../.."
M=${MOCO:-$PWD/bin/moco}
O=$PWD/build/soak
K=9
W=3
mkdir -p "$O"
: > "$O/rounds.txt"
fail() { echo "SOAK FAIL: $*" | tee -a "$O/summary.txt"; exit 1; }
pkg() { pkg-config --cflags --libs "$@"; }
cc -O2 -Wall -Wextra -Werror -o "$O/corrupt_db" tests/soak/corrupt_db.c $(pkg lmdb zlib) || fail "build corrupt_db"
cc -O2 -Wall -Wextra -Werror -o "$O/garbage" tests/soak/garbage.c $(pkg libzmq) || fail "build garbage"
TGZ=../shared/data/cifar10-jpeg.tar.gz
[ -f $TGZ ] || { echo "soak: $TGZ absent"; exit 77; }
if [ ! -d "$O/cifar/test" ]; then
  rm -rf "$O/cifar" && mkdir -p "$O/cifar" && tar xzf $TGZ -C "$O/cifar" test || fail "untar"
fi
if [ ! -d "$O/db.clean" ]; then
  nice -n 19 $M mkdb "$O/cifar/test" "$O/db.clean" --quiet >/dev/null || fail mkdb
fi
rm -rf "$O/db" && cp -r "$O/db.clean" "$O/db"
"$O/corrupt_db" "$O/db" "$SEED" $K > "$O/corrupt.txt" || fail corrupt_db
N=$(( $($M info "$O/db" 2>/dev/null | grep -oE '^ *(count|samples)[^0-9]*[0-9]+' | grep -oE '[0-9]+$' | head -1) ))
[ "$N" -gt 0 ] || N=10000
cut -d' ' -f1 "$O/corrupt.txt" | sort -n > "$O/corrupt.idx"
echo "soak: $N records, corrupt: $(tr '\n' ' ' < "$O/corrupt.txt")"

RANDOM=$SEED
t_end=$(( $(date +%s) + MIN * 60 ))
kills=0; stops=0; mal=0; bursts=0; gmsgs=0; rounds=0; epochs_total=0; pairs_total=0; failed_total=0
S=$(mktemp -d /tmp/moco-soak-XXXXXX)
declare -A wpid killed
start_worker() { # slot
  nice -n 19 $M augment --connect ipc://$S/work --push ipc://$S/pairs --recipe cifar --size 32 --seed 1 --quiet \
    2>>"$R/workers.err" &
  wpid[$1]=$!
}
best_round=""; best_eps=0; ep_secs=0
while :; do
  now=$(date +%s); left=$(( t_end - now ))
  if [ $rounds -eq 0 ]; then E=3
  else
    E=$(awk -v l=$left -v s=$ep_secs 'BEGIN{e=int(l*0.9/s); print (e > 200 ? 200 : e)}')
    [ "$E" -ge 1 ] || break
  fi
  rounds=$((rounds + 1))
  R=$O/round$rounds; rm -rf "$R"; mkdir -p "$R"
  t0=$(date +%s)
  nice -n 19 $M sink --bind ipc://$S/pairs --connect ipc://$S/ctl --count $N --json "$R/sink.json" \
    --index-log "$R/index.log" --quiet >"$R/sink.out" 2>"$R/sink.err" &
  sink=$!
  nice -n 19 $M loader --db "$O/db" --bind ipc://$S/work --ctl ipc://$S/ctl --epochs $E --seed $SEED \
    --worker-timeout 1 --log "$R/loader.jsonl" --quiet 2>"$R/loader.err" &
  loader=$!
  for i in $(seq $W); do start_worker $i; done
  killed=()
  t_rss=$(date +%s); next=$(( $(date +%s) + 1 + RANDOM % 4 ))
  : > "$R/rss.txt"
  while kill -0 $loader 2>/dev/null; do
    sleep 0.5
    now=$(date +%s)
    if [ $now -ge $t_rss ]; then
      t_rss=$((now + 1))
      echo "$((now - t0)) $(awk '/VmRSS/{print $2}' /proc/$loader/status 2>/dev/null || echo 0) $(awk '/VmRSS/{print $2}' /proc/$sink/status 2>/dev/null || echo 0)" >> "$R/rss.txt"
    fi
    [ $now -ge $next ] || continue
    next=$(( now + 1 + RANDOM % 4 ))
    slot=$(( 1 + RANDOM % W ))
    case $(( RANDOM % 3 )) in
      0) kill -KILL ${wpid[$slot]} 2>/dev/null && { killed[${wpid[$slot]}]=1; kills=$((kills + 1)); start_worker $slot; } ;;
      1) p=${wpid[$slot]}; kill -STOP $p 2>/dev/null && { stops=$((stops + 1)); ( sleep $(( 2 + RANDOM % 4 )); kill -CONT $p 2>/dev/null ) & } ;;
      2) g=$("$O/garbage" $RANDOM 50 ipc://$S/work:dealer ipc://$S/ctl:dealer ipc://$S/pairs:push 2>>"$R/garbage.err") \
           && { bursts=$((bursts + 1)); gmsgs=$((gmsgs + g)); } ;;
    esac
  done
  wait $loader; lrc=$?
  for i in $(seq 30); do kill -0 $sink 2>/dev/null || break; sleep 1; done
  wait $sink; src=$?
  t1=$(date +%s)
  # workers: make sure every one is running (CONT) and let them exit on STOP
  for i in $(seq $W); do kill -CONT ${wpid[$i]} 2>/dev/null; done
  wcrash=0
  for i in $(seq $W); do
    for j in $(seq 10); do kill -0 ${wpid[$i]} 2>/dev/null || break; sleep 0.5; done
    # a worker that joined after the last epoch was handed out never gets
    # STOP: it is told to go (SIGTERM; it exits 1, "interrupted")
    termed=0
    kill -0 ${wpid[$i]} 2>/dev/null && { kill -TERM ${wpid[$i]}; termed=1; }
    wait ${wpid[$i]} 2>/dev/null; rc=$?
    if [ $rc -ne 0 ] && ! { [ $termed -eq 1 ] && [ $rc -eq 1 -o $rc -eq 143 ]; }; then
      wcrash=$((wcrash + 1)); echo "worker ${wpid[$i]} exited $rc" >> "$R/workers.check"
    fi
  done
  wait 2>/dev/null
  sj=$(sed 's/"per_epoch":\[[^]]*\]//' "$R/sink.json" 2>/dev/null | grep -oE '"(pairs|failed|duplicates_dropped|stale_dropped|malformed_dropped)":[0-9]+' | tr '\n' ' ')
  mal=$((mal + $(grep -oE '"malformed_dropped":[0-9]+' "$R/sink.json" | cut -d: -f2)))
  [ $lrc -eq 0 ] || fail "round $rounds: loader exited $lrc: $(tail -n 3 "$R/loader.err")"
  [ $src -eq 0 ] || fail "round $rounds: sink exited $src: $(tail -n 3 "$R/sink.err")"
  [ $wcrash -eq 0 ] || fail "round $rounds: $wcrash worker(s) died unkilled: $(cat "$R/workers.check")"
  # exactly once per epoch: sort the (epoch, index) lines and count them
  nice -n 19 sort -S 256M -k1,1n -k2,2n "$R/index.log" | uniq -c | awk -v n=$N -v k=$K -v E=$E -v cf="$O/corrupt.idx" '
    BEGIN { while ((getline l < cf) > 0) bad[l] = 1 }
    { lines += $1; if ($1 > 1) dup += $1 - 1; u[$2]++; if ($3 in bad) cdel += $1 }
    END {
      ne = 0; lost = 0
      for (e in u) { ne++; lost += (n - k) - u[e] }
      if (ne < E) lost += (E - ne) * (n - k)
      printf "epochs %d lost %d duplicated %d corrupt_delivered %d lines %d\n", ne, lost, dup + 0, cdel + 0, lines
    }' > "$R/check.txt"
  read -r _ ne _ lost _ dup _ cdel _ lines < "$R/check.txt"
  # every corrupt record reported in every epoch that ended
  grep '"event":"failed"' "$R/loader.jsonl" | grep -oE '"epoch":[0-9]+,"index":[0-9]+' | sort -u > "$R/failed.txt"
  nf=$(wc -l < "$R/failed.txt")
  ended=$(grep '"event":"epoch_end"' "$R/loader.jsonl" | grep -oE '"epoch":[0-9]+' | sort -u | wc -l)
  hit=$(cut -d: -f3 "$R/failed.txt" | grep -cxFf "$O/corrupt.idx")
  miss=$(( ended * K - hit ))
  [ "$ended" -eq "$E" ] || miss=$(( miss + (E - ended) * K ))
  extra=$(cut -d: -f3 "$R/failed.txt" | sort -un | comm -23 - "$O/corrupt.idx" | wc -l)
  echo "round $rounds: $E epochs in $((t1 - t0)) s; index log: $(cat "$R/check.txt"); failed reports $nf (missing $miss, unexplained $extra); sink: $sj" | tee -a "$O/rounds.txt"
  [ "$ne" -eq "$E" ] && [ "$lost" -eq 0 ] && [ "$dup" -eq 0 ] && [ "$cdel" -eq 0 ] || fail "round $rounds: delivery check: $(cat "$R/check.txt")"
  [ $miss -eq 0 ] && [ "$extra" -eq 0 ] || fail "round $rounds: $miss corrupt records not reported, $extra unexplained failures"
  epochs_total=$((epochs_total + E)); pairs_total=$((pairs_total + lines)); failed_total=$((failed_total + nf))
  ep_secs=$(awk -v d=$((t1 - t0)) -v e=$E 'BEGIN{print (d > 0 ? d : 1) / e}')
  if [ "$E" -ge "$best_eps" ]; then best_eps=$E; best_round=$R; fi
  [ $(( t_end - $(date +%s) )) -gt 10 ] || break
done
rm -rf "$S"
rss=$(awk 'NR > 10 && $2 > 0 { if (!f) { fl = $2; fs = $3; f = 1 } if ($2 > ml) ml = $2; if ($3 > ms) ms = $3; ll = $2; ls = $3 }
  END { printf "loader first %d kB max %d kB last %d kB; sink first %d kB max %d kB last %d kB", fl, ml, ll, fs, ms, ls }' "$best_round/rss.txt")
{
  echo "SOAK OK: $MIN min asked, seed $SEED, $rounds rounds, $epochs_total epochs, $pairs_total pairs, 0 lost, 0 duplicated"
  echo "  faults: $kills SIGKILLs (workers restarted), $stops SIGSTOP/SIGCONT, $bursts garbage bursts ($gmsgs messages; the sink dropped $mal as malformed)"
  echo "  corrupt records: $K ($(tr '\n' ' ' < "$O/corrupt.txt")), $failed_total failed reports, all per epoch, none unexplained"
  echo "  RSS over the longest round ($best_round, $best_eps epochs): $rss"
} | tee "$O/summary.txt"
