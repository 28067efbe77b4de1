# ports.sh: sourced by the cli tests that listen on tcp. port_block N prints
# a base port B such that B .. B+N-1 were all free a moment ago (a test binds
# them soon after). Bases lie in 10000-19999: below Linux's ephemeral range
# (32768-60999), so an outgoing connection of another test or of Open MPI
# cannot hold one, and below test_zsec's servers (20000 and up). tests/run.sh
# runs tests in lanes side by side (MOCO_TEST_LANE of MOCO_TEST_LANES): each
# lane draws from its own slice of that range, so two tests running at once
# never pick the same port between one's check and its bind. Each candidate
# is tried by binding, up to 200.
port_block() {
  local n=$1 lanes=${MOCO_TEST_LANES:-1} lane=${MOCO_TEST_LANE:-0}
  [[ $lanes =~ ^[1-9][0-9]?$ && $lane =~ ^[0-9]+$ ]] && [ "$lane" -lt "$lanes" ] || { lanes=1; lane=0; }
  local span=$(( 10000 / lanes ))
  local lo=$(( 10000 + lane * span ))
  /usr/bin/python3 - "$n" "$$" "$lo" "$span" <<'PY' 2>/dev/null && return
import random, socket, sys
n, seed, lo, span = (int(a) for a in sys.argv[1:])
rng = random.Random(seed)
for _ in range(200):
    base = rng.randrange(lo, lo + span - n)
    held = []
    try:
        for p in range(base, base + n):
            s = socket.socket()
            held.append(s)
            s.bind(("0.0.0.0", p))
    except OSError:
        continue
    finally:
        for s in held:
            s.close()
    print(base)
    sys.exit(0)
sys.exit(1)
PY
  # without python3: a base from the PID, in the lane's slice
  echo $(( lo + ($$ * 16) % (span - n) ))
}
