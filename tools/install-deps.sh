#!/usr/bin/env bash
# install-deps.sh: install, with apt-get and only when missing, every Debian
# package this project needs to build, test and run its demo.
# Promise: a no-op (one dpkg-query call, well under a second) when all are present.
set -euo pipefail

PKGS=(
  build-essential pkg-config
  libvips-dev           # image decode/encode, resize, the workers' image library
  libturbojpeg0-dev     # TurboJPEG API: the workers' JPEG hot path (libvips uses libjpeg-turbo underneath)
  libzmq3-dev           # ZeroMQ: the sockets between processes
  liblmdb-dev           # LMDB: the record store
  libopenblas-dev       # OpenBLAS: the trainer's GEMMs
  libdnnl-dev           # oneDNN: --precision bf16 (optional: the build and fp32 work without it)
  zlib1g-dev            # gzip'd IDX files (MNIST / Fashion-MNIST)
  libcmocka-dev         # the C unit-test framework
  libopenmpi-dev        # MPI: data-parallel training over ranks (trainer/dist.c)
  openmpi-bin           # mpirun: launches the ranks (tests/cli_mpi_step.sh, tools/bench_mpi.sh)
  dataset-fashion-mnist # the demo's dataset, under /usr/share/datasets/fashion-mnist
  python3-zmq           # the Python consumer (tools/python/moco_stream) and the hostile-peer tests
  python3-numpy         # its arrays
  python3-torch         # moco_stream.torch and tools/python/train_moco_torch.py
  python3-torchvision   # the reference scripts (golden files, torchvision timings)
  python3-pil           # PIL: the picture tests, torchvision's image path
)

# installed for this machine's architecture (or for all): a package of another
# one beside it (tools/check-arm64.sh's) does not count
arch=$(dpkg --print-architecture)
missing=()
for p in "${PKGS[@]}"; do
  s=$(dpkg-query -W -f='${db:Status-Status} ${Architecture}\n' "$p" 2>/dev/null || true)
  grep -qxE "installed ($arch|all)" <<<"$s" || missing+=("$p")
done
[ ${#missing[@]} -eq 0 ] && exit 0

echo "install-deps: installing ${missing[*]}" >&2
SUDO=""
[ "$(id -u)" -ne 0 ] && SUDO="sudo"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
