#!/usr/bin/env bash
# cli_remote.sh: `moco run DB --bind tcp://... --keys DIR --workers 0` prints
# the command that adds a worker from another host; pasted twice (here, on
# loopback, as another host with a copy of DIR would), the two workers
# deliver 2 epochs exactly once each, over CURVE. A tcp endpoint without
# --keys is refused with a message, so are ws:// and an abstract ipc://@
# socket without --insecure, and a worker whose key is not in the
# allow list stops at once, naming its key file. Bound to 0.0.0.0, the
# printed command names this host. Skipped without Fashion-MNIST.
set -u
fail() { echo "FAIL: $*"; exit 1; }
. "$(dirname "$0")/ports.sh"
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/remote
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T"
$M mkdb $SRC "$T/db" --split test --quiet >/dev/null || fail mkdb
$M keygen "$T/keys" >/dev/null || fail keygen
port=$(port_block 10)
# secure by default
$M run "$T/db" --sink --bind tcp://127.0.0.1:$port --workers 1 --run-dir "$T/r0" 2>"$T/r0.err" && fail "tcp without --keys ran"
grep -q -- "--keys" "$T/r0.err" || fail "no hint about --keys: $(cat "$T/r0.err")"
# only tcp (CURVE), ipc://PATH and inproc: ws:// (which libzmq binds) was
# bound in the clear even with --keys, and an abstract ipc socket (no file,
# no permissions) let any local user in; both refused before anything binds
timeout 10 $M loader --db "$T/db" --bind ws://127.0.0.1:$((port + 7)) --ctl "ipc://$T/ctl" --keys "$T/keys" 2>"$T/ws.err"
rc=$?
[ $rc -eq 1 ] && grep -qx "moco loader: ws://127.0.0.1:$((port + 7)): unsupported transport (moco uses tcp://, ipc://, inproc://)" \
  "$T/ws.err" || fail "--bind ws:// with --keys: exit $rc, $(cat "$T/ws.err")"
timeout 10 $M loader --db "$T/db" --bind ipc://@moco-remote-$$ --ctl "ipc://$T/ctl" 2>"$T/abs.err"
rc=$?
[ $rc -eq 1 ] && grep -q "^moco loader: ipc://@moco-remote-$$ is an abstract ipc socket, which any local user can connect to" \
  "$T/abs.err" || fail "--bind ipc://@: exit $rc, $(cat "$T/abs.err")"
$M run "$T/db" --serve ipc://@moco-remote-$$ --run-dir "$T/r3" 2>"$T/r3.err"
rc=$?
[ $rc -eq 2 ] && grep -q "^moco run: ipc://@moco-remote-$$ is an abstract ipc socket" "$T/r3.err" \
  || fail "--serve ipc://@: exit $rc, $(cat "$T/r3.err")"
echo "ws:// and ipc://@ refused: $(cut -c1-100 "$T/ws.err")"
timeout 120 $M run "$T/db" --sink --bind tcp://127.0.0.1:$port --keys "$T/keys" --workers 0 --epochs 2 --recipe cifar --size 28 \
  --run-dir "$T/r1" 2>"$T/r1.err" &
run=$!
for i in $(seq 600); do grep -q " augment --connect tcp://" "$T/r1.err" && break; sleep 0.05; done
cmd=$(grep " augment --connect tcp://" "$T/r1.err" | head -1)
[ -n "$cmd" ] || { kill $run; fail "no worker command printed: $(cat "$T/r1.err")"; }
echo "pasting:$cmd"
# first from a host whose client key is not in the allow list: the worker
# stops at once (not after its loader timeout), naming the key to add
$M keygen "$T/other" >/dev/null && cp -rp "$T/keys" "$T/host3" && cp -p "$T/other"/client.key* "$T/host3"/ || fail "host3's keys"
bad=$(echo "$cmd" | sed "s#--keys [^ ]*#--keys $T/host3#")
echo "$bad" | grep -q -- "--keys $T/host3 " || fail "cannot point the pasted command at other keys: $bad"
t0=$(date +%s)
(cd / && eval "timeout 30 $bad --quiet" 2>"$T/w0.err"); rc=$?
[ $rc -eq 1 ] && grep -q "refused this process's key $T/host3/client.key" "$T/w0.err" \
  || fail "a worker with a key not in the allow list: exit $rc, $(cat "$T/w0.err")"
[ $(( $(date +%s) - t0 )) -lt 20 ] || fail "the refused worker took $(( $(date +%s) - t0 )) s to stop"
echo "a worker whose key is not allowed stopped: $(tail -1 "$T/w0.err" | cut -c1-120)"
(cd / && eval "$cmd" --quiet 2>"$T/w1.err") &
(cd / && eval "$cmd" --quiet 2>"$T/w2.err") &
wait $run || { cat "$T/r1.err"; fail "moco run exited non-zero"; }
wait
grep -q '"pairs":20000,"epochs":2' "$T/r1/sink.json" || fail "r1: $(cat "$T/r1/sink.json")"
grep -q '"ok":true' "$T/r1/sink.json" || fail "r1 not ok"
grep -q "worker 1 joined" "$T/r1.err" || fail "the second pasted worker never joined"
# bound on every interface (0.0.0.0): the printed command names this host
# instead (0.0.0.0 means nothing to another host); pasted, it works where
# the name resolves (here: to loopback)
host=$(uname -n)
timeout 120 $M run "$T/db" --sink --bind tcp://0.0.0.0:$((port + 5)) --keys "$T/keys" --workers 0 --epochs 1 --recipe cifar \
  --size 28 --run-dir "$T/r2" 2>"$T/r2.err" &
run=$!
for i in $(seq 600); do grep -q " augment --connect tcp://" "$T/r2.err" && break; sleep 0.05; done
cmd=$(grep " augment --connect tcp://" "$T/r2.err" | head -1)
echo "$cmd" | grep -q -- "--connect tcp://$host:$((port + 5)) --push tcp://$host:$((port + 6)) " \
  || { kill $run; fail "--bind tcp://0.0.0.0: the printed command does not name this host ($host): $cmd"; }
if getent hosts "$host" >/dev/null; then
  (cd / && eval "$cmd" --quiet 2>"$T/w3.err") &
  wait $run || { cat "$T/r2.err"; fail "moco run --bind tcp://0.0.0.0 exited non-zero"; }
  wait
  grep -q '"pairs":10000,"epochs":1' "$T/r2/sink.json" || fail "r2: $(cat "$T/r2/sink.json")"
  echo "--bind tcp://0.0.0.0: the printed command names $host; pasted, it delivered the epoch"
else
  kill $run; wait
  echo "--bind tcp://0.0.0.0: the printed command names $host (it does not resolve here: not pasted)"
fi
echo "cli_remote: ok"
