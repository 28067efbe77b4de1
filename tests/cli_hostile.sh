#!/usr/bin/env bash
# cli_hostile.sh: strangers and allowed-but-hostile peers against real
# pipelines over tcp on loopback with CURVE (tests/hostile.py): the counts of
# the real consumer stay exact, every hostile message is rejected and
# counted, nothing of a stranger gets through; peers that hold work together,
# flood the loader or fill its pair socket (tests/hostile_flood.py) are
# banned, bounded and counted; many connections of one key and strangers'
# half-open connections stay bounded (tests/hostile_conns.py). Skipped without python3-zmq
# or the Fashion-MNIST package.
set -u
fail() { echo "FAIL: $*"; exit 1; }
. "$(dirname "$0")/ports.sh"
M=${MOCO:?}
T=${MOCO_TEST_TMP:?}/hostile
SRC=/usr/share/datasets/fashion-mnist
[ -d $SRC ] || { echo "skipped: $SRC absent"; exit 77; }
/usr/bin/python3 -c 'import zmq, zmq.auth' 2>/dev/null || { echo "skipped: python3-zmq absent"; exit 77; }
rm -rf "$T" && mkdir -p "$T"
$M mkdb $SRC "$T/db" --split test --quiet >/dev/null || fail mkdb
$M keygen "$T/keys" >/dev/null || fail keygen
base=$(port_block 35)
timeout 240 /usr/bin/python3 tests/hostile.py direct "$M" "$T/db" 10000 "$T/keys" "$T/direct" $base || fail "direct mode"
timeout 240 /usr/bin/python3 tests/hostile.py serve "$M" "$T/db" 10000 "$T/keys" "$T/serve" $((base + 5)) || fail "serve mode"
timeout 300 /usr/bin/python3 tests/hostile.py slots "$M" "$T/db" 10000 "$T/keys" "$T/slots" $((base + 8)) || fail "worker slots"
timeout 300 /usr/bin/python3 tests/hostile.py repeat "$M" "$T/db" 10000 "$T/keys" "$T/repeat" $((base + 11)) || fail "a repeated pair"
timeout 120 /usr/bin/python3 tests/hostile.py window "$M" "$T/db" 10000 "$T/keys" "$T/window" $((base + 14)) || fail "a peer holding the window"
timeout 200 /usr/bin/python3 tests/hostile.py readmit "$M" "$T/db" 10000 "$T/keys" "$T/readmit" $((base + 17)) || fail "a banned peer given work again"
timeout 120 /usr/bin/python3 tests/hostile_flood.py pair "$M" "$T/db" 10000 "$T/keys" "$T/pair" $((base + 20)) || fail "two peers holding the window"
timeout 60 /usr/bin/python3 tests/hostile_flood.py idle "$M" "$T/db" 10000 "$T/keys" "$T/idle" $((base + 23)) || fail "serve mode without a consumer"
timeout 60 /usr/bin/python3 tests/hostile_flood.py flood "$M" "$T/db" 10000 "$T/keys" "$T/flood" $((base + 26)) || fail "a flood of hostile messages"
timeout 60 /usr/bin/python3 tests/hostile_conns.py memory "$M" "$T/db" 10000 "$T/keys" "$T/memory" $((base + 29)) || fail "many connections of one key"
timeout 60 /usr/bin/python3 tests/hostile_conns.py halfopen "$M" "$T/db" 10000 "$T/keys" "$T/halfopen" $((base + 32)) || fail "strangers' half-open connections"
echo "cli_hostile: ok"
