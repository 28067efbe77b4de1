# ports.sh: sourced by the cli tests that listen on tcp. port_block N prints
# a base port B such that B .. B+N-1 were all free a moment ago (a test binds
# them soon after). Bases lie in 20000-32759, below Linux's ephemeral range
# (32768-60999), so an outgoing connection of another test or of Open MPI
# cannot hold one; each is tried by binding, up to 200 candidates.
port_block() {
  local n=$1
  /usr/bin/python3 - "$n" "$$" <<'PY' 2>/dev/null && return
import random, socket, sys
n, seed = int(sys.argv[1]), int(sys.argv[2])
rng = random.Random(seed)
for _ in range(200):
    base = rng.randrange(20000, 32760 - n)
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
  # without python3: a base from the PID, in the same range
  echo $(( 20000 + ($$ % 1200) * 10 ))
}
