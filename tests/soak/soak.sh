#!/usr/bin/env bash
# soak.sh: fault-injection soak of the real pipeline processes (issue 7).
# Not part of `make test`: it runs for minutes and stops by itself.
#   bash tests/soak/soak.sh [MINUTES] [SEED] [TRANSPORT]   (defaults: 15, 1, tcp)
# TRANSPORT tcp (issue 12): every endpoint on loopback tcp with CURVE
# (moco keygen), and rounds alternate between two consumers: odd rounds the
# C sink binding the pair port (workers push to it), even rounds serve mode
# (the loader forwards the pairs) read by tests/soak/ps_consumer.py, a
# moco_stream.PairStream that is SIGKILLed now and then and resumes from
# its stored state. The garbage bursts then come from strangers (no key),
# and a fourth fault joins: `hostile` (tests/soak/burst.py: strangers with
# no key, an unknown key and a wrong server key, and from the allowed key a
# forged HELLO, spoofed FAILED reports, PAIRs of a far epoch and of indices
# out of range, a 40 MB and a 1 MB frame). Checked per round, besides the
# below: no message of a stranger got through (the sink's malformed count
# stays 0), the sink rejected exactly the far-epoch and out-of-range pairs
# sent to it (a stranger's PAIR, of index COUNT + 424242, that got through
# would be one more; serve rounds: the loader rejected at least those), the loader
# refused at least the forged HELLOs and ignored at least the spoofed
# FAILED reports, and no record was marked failed that is not corrupt.
# TRANSPORT ipc: the original soak on ipc:// endpoints.
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
# the first (after 10 s), largest and last figures of the longest round; it
# fails if, in that round, the last figure of the loader or of the sink
# exceeds 1.5 x its first + 64 MB (a leak), or if a round that lasted over
# 30 s has no such figures.
# Nothing waits forever: a round fails when its loader is still running
# past 4 x the round's expected time + 10 min (the first round: 15 min) or
# when its index log has not changed for PROGRESS_S (180) s; the sink must
# exit within 30 s of the loader, workers within 10 s of SIGTERM, helper
# processes within 15 s; burst.py and garbage run under `timeout`. On any
# failure the processes it started are killed.
# Output: build/soak/ (logs, db); a summary at the end, also in summary.txt.
set -u
MIN=${1:-15}
SEED=${2:-1}
TRANSPORT=${3:-tcp}
cd "$(dirname "$0")/../.."
M=${MOCO:-$PWD/bin/moco}
PROGRESS_S=${PROGRESS_S:-180}
RSS_FACTOR=1.5; RSS_SLACK_KB=$((64 * 1024))
O=$PWD/build/soak
K=9
W=3
mkdir -p "$O"
: > "$O/rounds.txt"
fail() { echo "SOAK FAIL: $*" | tee -a "$O/summary.txt"; exit 1; }
# on exit (a failure, ^C): kill what this script started and has not reaped
# (jobs -p: only its own children), remove the socket directory
cleanup() { local p; for p in $(jobs -p); do kill -CONT $p 2>/dev/null; kill -KILL $p 2>/dev/null; done; [ -n "${S:-}" ] && rm -rf "$S"; }
trap cleanup EXIT
trap 'exit 130' INT TERM
pkg() { pkg-config --cflags --libs "$@"; }
cc -O2 -Wall -Wextra -Werror -o "$O/corrupt_db" tests/soak/corrupt_db.c $(pkg lmdb zlib) || fail "build corrupt_db"
cc -O2 -Wall -Wextra -Werror -o "$O/garbage" tests/soak/garbage.c $(pkg libzmq) || fail "build garbage"
TGZ=../shared/data/cifar10-jpeg.tar.gz
[ -f $TGZ ] || { echo "soak: $TGZ absent"; exit 77; }
if [ ! -d "$O/cifar/test" ]; then
  rm -rf "$O/cifar" && mkdir -p "$O/cifar" && tar xzf $TGZ -C "$O/cifar" test || fail "untar"
fi
if [ ! -d "$O/db.clean" ]; then
  nice -n 19 timeout 3600 $M mkdb "$O/cifar/test" "$O/db.clean" --quiet >/dev/null || fail mkdb
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
hbursts=0; ckills=0; h_sent_total=0
S=$(mktemp -d /tmp/moco-soak-XXXXXX)
KEYS=()
if [ "$TRANSPORT" = tcp ]; then
  /usr/bin/python3 -c 'import zmq, numpy' 2>/dev/null || fail "TRANSPORT tcp needs python3-zmq and python3-numpy"
  rm -rf "$O/keys" && $M keygen "$O/keys" >/dev/null || fail keygen
  KEYS=(--keys "$O/keys")
  P=$(( 40000 + (SEED * 7 + $$) % 10000 ))
  WORK=tcp://127.0.0.1:$P; CTL=tcp://127.0.0.1:$((P + 1)); PAIRS=tcp://127.0.0.1:$((P + 2))
else
  WORK=ipc://$S/work; CTL=ipc://$S/ctl; PAIRS=ipc://$S/pairs
fi
declare -A wpid killed
start_worker() { # slot
  nice -n 19 $M augment --connect $WORK --push $PAIRS "${KEYS[@]}" --recipe cifar --size 32 --seed 1 --quiet \
    2>>"$R/workers.err" &
  wpid[$1]=$!
}
start_consumer() { # serve rounds: the PairStream consumer, resumed from its state
  nice -n 19 /usr/bin/python3 tests/soak/ps_consumer.py $CTL "$O/keys" "$R/index.log" "$R/ps.state" 2>>"$R/sink.err" &
  sink=$!
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
  serve=0; [ "$TRANSPORT" = tcp ] && [ $((rounds % 2)) -eq 0 ] && serve=1
  h_epoch=0; h_range=0; h_failed=0; h_hello=0
  SERVE=()
  if [ $serve -eq 1 ]; then
    SERVE=(--pairs $PAIRS --consumer-timeout 2)
    start_consumer
  else
    nice -n 19 $M sink --bind $PAIRS --connect $CTL "${KEYS[@]}" --count $N --json "$R/sink.json" \
      --index-log "$R/index.log" --quiet >"$R/sink.out" 2>"$R/sink.err" &
    sink=$!
  fi
  nice -n 19 $M loader --db "$O/db" --bind $WORK --ctl $CTL "${SERVE[@]}" "${KEYS[@]}" --epochs $E --seed $SEED \
    --worker-timeout 1 --log "$R/loader.jsonl" --quiet 2>"$R/loader.err" &
  loader=$!
  for i in $(seq $W); do start_worker $i; done
  killed=()
  t_rss=$(date +%s); next=$(( $(date +%s) + 1 + RANDOM % 4 ))
  : > "$R/rss.txt"
  # no wait forever: a deadline for the round, and progress (the index log changes)
  if [ $rounds -eq 1 ]; then deadline=$((t0 + 900))
  else deadline=$(awk -v t=$t0 -v e=$E -v s=$ep_secs 'BEGIN{printf "%d", t + 4 * e * s + 600}'); fi
  t_prog=$t0; isize=-1
  while kill -0 $loader 2>/dev/null; do
    sleep 0.5
    now=$(date +%s)
    sz=$(stat -c %s "$R/index.log" 2>/dev/null || echo -1)
    [ "$sz" = "$isize" ] || { isize=$sz; t_prog=$now; }
    [ $now -le $deadline ] || fail "round $rounds: the loader still runs $((now - t0)) s after the start of $E epochs (deadline $((deadline - t0)) s): hung? $(tail -n 2 "$R/loader.err")"
    [ $((now - t_prog)) -le $PROGRESS_S ] || fail "round $rounds: no pair delivered for $((now - t_prog)) s (the index log stays at $isize bytes): hung? $(tail -n 2 "$R/loader.err")"
    if [ $now -ge $t_rss ]; then
      t_rss=$((now + 1))
      echo "$((now - t0)) $(awk '/VmRSS/{print $2}' /proc/$loader/status 2>/dev/null || echo 0) $(awk '/VmRSS/{print $2}' /proc/$sink/status 2>/dev/null || echo 0)" >> "$R/rss.txt"
    fi
    [ $now -ge $next ] || continue
    next=$(( now + 1 + RANDOM % 4 ))
    slot=$(( 1 + RANDOM % W ))
    nf=3; [ "$TRANSPORT" = tcp ] && nf=5
    case $(( RANDOM % nf )) in
      0) kill -KILL ${wpid[$slot]} 2>/dev/null && { killed[${wpid[$slot]}]=1; kills=$((kills + 1)); start_worker $slot; } ;;
      1) p=${wpid[$slot]}; kill -STOP $p 2>/dev/null && { stops=$((stops + 1)); ( sleep $(( 2 + RANDOM % 4 )); kill -CONT $p 2>/dev/null ) & } ;;
      2) g=$(timeout 30 "$O/garbage" $RANDOM 50 $WORK:dealer $CTL:dealer $PAIRS:push 2>>"$R/garbage.err") \
           && { bursts=$((bursts + 1)); gmsgs=$((gmsgs + g)); } ;;
      3) h=$(timeout 60 /usr/bin/python3 tests/soak/burst.py "$O/keys" $WORK $CTL $PAIRS $N $RANDOM 2>>"$R/burst.err") || fail "burst.py"
         hbursts=$((hbursts + 1)); echo "$h" >> "$R/bursts.jsonl"
         h_epoch=$((h_epoch + $(echo "$h" | grep -oE '"far_epoch": [0-9]+' | grep -oE '[0-9]+$')))
         h_range=$((h_range + $(echo "$h" | grep -oE '"out_of_range": [0-9]+' | grep -oE '[0-9]+$')))
         h_failed=$((h_failed + $(echo "$h" | grep -oE '"failed": [0-9]+' | grep -oE '[0-9]+$')))
         h_hello=$((h_hello + 1)) ;;
      4) if [ $serve -eq 1 ] && kill -KILL $sink 2>/dev/null; then wait $sink 2>/dev/null; ckills=$((ckills + 1)); start_consumer; fi ;;
    esac
  done
  wait $loader; lrc=$?
  for i in $(seq 30); do kill -0 $sink 2>/dev/null || break; sleep 1; done
  kill -0 $sink 2>/dev/null && fail "round $rounds: the sink (pid $sink) still runs 30 s after the loader exited $lrc: $(tail -n 2 "$R/sink.err")"
  wait $sink; src=$?
  if [ "$TRANSPORT" = tcp ]; then
    ls_=$(grep '^{"t"' "$R/loader.jsonl" | tail -n 1)
    lget() { echo "$ls_" | grep -oE "\"$1\":[0-9]+" | cut -d: -f2; }
    [ "$(lget refused_hellos)" -ge $h_hello ] || fail "round $rounds: the loader refused $(lget refused_hellos) HELLOs, $h_hello forged"
    [ "$(lget rejected_failed)" -ge $h_failed ] || fail "round $rounds: $(lget rejected_failed) FAILED reports ignored, $h_failed spoofed"
    if [ $serve -eq 1 ]; then
      [ "$(lget rejected_pairs)" -ge $((h_epoch + h_range)) ] || fail "round $rounds: the loader rejected $(lget rejected_pairs) pairs, $((h_epoch + h_range)) bad ones sent"
    else
      sget() { grep -oE "\"$1\":[0-9]+" "$R/sink.json" | cut -d: -f2; }
      [ "$(sget rejected_epoch)" -eq $h_epoch ] && [ "$(sget rejected_index)" -eq $h_range ] \
        || fail "round $rounds: the sink rejected $(sget rejected_epoch) + $(sget rejected_index) pairs, $h_epoch far-epoch + $h_range out-of-range sent"
      [ "$(sget malformed)" -eq 0 ] || fail "round $rounds: $(sget malformed) malformed messages reached the sink through CURVE"
    fi
    h_sent_total=$((h_sent_total + h_epoch + h_range + h_failed + h_hello))
  fi
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
    for j in $(seq 20); do kill -0 ${wpid[$i]} 2>/dev/null || break; sleep 0.5; done
    kill -0 ${wpid[$i]} 2>/dev/null && fail "round $rounds: worker ${wpid[$i]} still runs 10 s after SIGTERM"
    wait ${wpid[$i]} 2>/dev/null; rc=$?
    if [ $rc -ne 0 ] && ! { [ $termed -eq 1 ] && [ $rc -eq 1 -o $rc -eq 143 ]; }; then
      wcrash=$((wcrash + 1)); echo "worker ${wpid[$i]} exited $rc" >> "$R/workers.check"
    fi
  done
  # the rest: SIGCONT helpers (at most 5 s) and workers killed and replaced
  for j in $(seq 30); do [ -z "$(jobs -pr)$(jobs -ps)" ] && break; sleep 0.5; done
  [ -z "$(jobs -pr)$(jobs -ps)" ] || fail "round $rounds: processes still running 15 s after the round: $(jobs -l | tr '\n' ' ')"
  wait 2>/dev/null
  if [ $serve -eq 1 ]; then
    sj="PairStream $(tail -n 1 "$R/sink.err")"
  else
    sj=$(sed 's/"per_epoch":\[[^]]*\]//' "$R/sink.json" 2>/dev/null | grep -oE '"(pairs|failed|duplicates|stale|malformed|rejected_epoch|rejected_index)":[0-9]+' | tr '\n' ' ')
    mal=$((mal + $(grep -oE '"malformed":[0-9]+' "$R/sink.json" | cut -d: -f2)))
  fi
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
# RSS: the last figure of the longest round against its first after 10 s (a leak grows)
[ -f "$best_round/rss.txt" ] || fail "no RSS samples: $best_round/rss.txt missing"
rss_check=$(awk -v f=$RSS_FACTOR -v k=$RSS_SLACK_KB 'NR > 10 {
    if ($2 > 0) { if (!fl) fl = $2; ll = $2; nl++ }
    if ($3 > 0) { if (!fs) fs = $3; ls = $3; ns++ } }
  function chk(who, first, last, n) {
    if (!n) { printf "%s: no RSS sample after the first 10 s; ", who; return 1 }
    if (last > f * first + k) { printf "%s RSS grew from %d kB to %d kB (limit %g x first + %d kB = %d kB); ", who, first, last, f, k, f * first + k; return 1 }
    return 0 }
  END { bad = chk("loader", fl, ll, nl); bad += chk("sink", fs, ls, ns); exit (bad > 0) }' "$best_round/rss.txt")
rss_rc=$?
rss_ok=""; [ $rss_rc -eq 0 ] && rss_ok="checked: last <= $RSS_FACTOR x first + $((RSS_SLACK_KB / 1024)) MB"
best_secs=$(tail -n 1 "$best_round/rss.txt" | cut -d' ' -f1)
if [ $rss_rc -ne 0 ]; then
  if echo "$rss_check" | grep -q "grew" || [ "${best_secs:-0}" -gt 30 ]; then
    fail "the longest round ($best_round, ${best_secs:-0} s): $rss_check"
  fi
  echo "soak: RSS not checked: the longest round lasted ${best_secs:-0} s ($rss_check)"
fi
rss=$(awk 'NR > 10 && $2 > 0 { if (!f) { fl = $2; fs = $3; f = 1 } if ($2 > ml) ml = $2; if ($3 > ms) ms = $3; ll = $2; ls = $3 }
  END { printf "loader first %d kB max %d kB last %d kB; sink first %d kB max %d kB last %d kB", fl, ml, ll, fs, ms, ls }' "$best_round/rss.txt")
{
  echo "SOAK OK: $MIN min asked, seed $SEED, $rounds rounds, $epochs_total epochs, $pairs_total pairs, 0 lost, 0 duplicated"
  echo "  transport: $TRANSPORT"
  echo "  faults: $kills SIGKILLs (workers restarted), $stops SIGSTOP/SIGCONT, $bursts garbage bursts ($gmsgs messages; the sink dropped $mal as malformed)"
  [ "$TRANSPORT" = tcp ] && echo "  hostile: $hbursts bursts ($h_sent_total forged messages, all rejected and counted), $ckills PairStream consumers SIGKILLed and resumed"
  echo "  corrupt records: $K ($(tr '\n' ' ' < "$O/corrupt.txt")), $failed_total failed reports, all per epoch, none unexplained"
  echo "  RSS over the longest round ($best_round, $best_eps epochs): $rss${rss_ok:+ ($rss_ok)}"
} | tee "$O/summary.txt"
