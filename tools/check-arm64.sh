#!/usr/bin/env bash
# check-arm64.sh (make check-arm64): the engine on a CPU that is not x86-64.
# Compiles every C file of the project for 64-bit Arm (Debian's
# gcc-aarch64-linux-gnu, with the real build's -Werror), then links the
# engine (trainer/engine/, formats/) into its unit tests and runs them
# under qemu-user: there the engine has no AVX, so the plain loops, the
# generic-vector Winograd transforms and OpenBLAS's Arm kernels are what
# runs. Promise: exit 0 only when every file compiled and every test
# listed ran and passed (1: a file or test failed; 2: the packages it needs
# could not be installed, nothing checked); a test's log is in build/arm64/.
#
# Not part of `make test`: under emulation the tests take minutes. The Arm
# libraries are Debian's arm64 packages beside the x86-64 ones (multiarch);
# only those that sit beside them cleanly are installed (libvips-dev:arm64
# and libopenmpi-dev:arm64 would replace the machine's own: the files that
# use them are compiled against the x86-64 headers, which do not differ
# for these, and not linked).
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=(${ARM_TESTS:-test_errors test_nhwc test_safetensors test_nn test_tune test_trainer test_replace})
OUT=build/arm64
mkdir -p build
ARCH_PKGS=(libopenblas-dev:arm64 libcmocka-dev:arm64 liblmdb-dev:arm64 libzmq3-dev:arm64 zlib1g-dev:arm64
           libglib2.0-dev:arm64) # glib: its glibconfig.h, for libvips's headers
HOST_PKGS=(gcc-aarch64-linux-gnu qemu-user-static)

missing=()
for p in "${HOST_PKGS[@]}" "${ARCH_PKGS[@]}"; do
  [ "$(dpkg-query -W -f='${db:Status-Status}' "$p" 2>/dev/null || true)" = installed ] || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "check-arm64: installing ${missing[*]}" >&2
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  # --no-remove: an Arm package that would replace one of the machine's own
  # is refused, not installed (apt would otherwise remove, say, libvips-dev)
  if ! { { dpkg --print-foreign-architectures | grep -qx arm64 || $SUDO dpkg --add-architecture arm64; } &&
         $SUDO apt-get update -qq &&
         DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-remove --no-install-recommends "${missing[@]}" >"$OUT.apt.log" 2>&1; }; then
    tail -5 "$OUT.apt.log" >&2 || true
    echo "check-arm64: could not install ${missing[*]} (see $OUT.apt.log): nothing checked" >&2
    exit 2
  fi
fi

CC=aarch64-linux-gnu-gcc
CFLAGS=(-std=c11 -O2 -g -Wall -Wextra -Werror -D_GNU_SOURCE -I. -pthread -fno-fast-math
        -I/usr/include/aarch64-linux-gnu/openblas-pthread)
LIBS=(-L/usr/lib/aarch64-linux-gnu/openblas-pthread -lopenblas -lcmocka -llmdb -lzmq -lz -lm -pthread)
mkdir -p "$OUT/obj"
rm -f "$OUT"/obj/*.o "$OUT"/obj/*.log "$OUT/libmoco.a"

# every file, compiled, as many at a time as there are cores; the engine's
# objects (trainer/engine/, formats/ but for payload.c, which decodes images
# with libvips) then make its library
VIPS_I=$(pkg-config --cflags-only-I vips ompi-c libturbojpeg |
         sed 's|/usr/lib/x86_64-linux-gnu/glib-2.0/include|/usr/lib/aarch64-linux-gnu/glib-2.0/include|; s|-I/usr/include/x86_64-linux-gnu||')
export CC OUT VIPS_I CFLAGS_S="${CFLAGS[*]}"
compile() { # FILE: its object, or its log and a line naming it
  local o="$OUT/obj/$(echo "${1%.c}" | tr / _).o"
  # shellcheck disable=SC2086
  $CC $CFLAGS_S $VIPS_I -c "$1" -o "$o" 2>"$o.log" || { cat "$o.log"; echo "check-arm64: $1 does not compile for aarch64"; return 1; }
}
export -f compile
SRCS=(formats/*.c loader/*.c augment/*.c trainer/*.c trainer/engine/*.c cli/*.c tools/*.c tools/quality/*.c tests/*.c)
printf '%s\n' "${SRCS[@]}" | xargs -P "$(nproc)" -I{} bash -c 'compile {}' >&2 || exit 1
echo "check-arm64: ${#SRCS[@]} files compile for aarch64"
lib=()
for f in trainer/engine/*.c formats/*.c; do
  [ "$f" = formats/payload.c ] || lib+=("$OUT/obj/$(echo "${f%.c}" | tr / _).o")
done
aarch64-linux-gnu-ar rcs "$OUT/libmoco.a" "${lib[@]}"

# the tests linked, then run as many at a time as there are cores (test_trainer
# alone takes about 90 s under qemu), each reported in the list's order
run_one() { # TEST: runs it, leaves its exit status and seconds in $OUT/TEST.rc
  local start rc=0
  start=$(date +%s)
  # the Arm libc is the multiarch one (/lib/ld-linux-aarch64.so.1 with
  # /usr/lib/aarch64-linux-gnu): with the cross toolchain's loader beside
  # it (-L /usr/aarch64-linux-gnu), pthread_create never returned
  qemu-aarch64-static "$OUT/$1" >"$OUT/$1.log" 2>&1 || rc=$?
  echo "$rc $(($(date +%s) - start))" >"$OUT/$1.rc"
}
export -f run_one
for t in "${TESTS[@]}"; do
  rm -f "$OUT/$t.rc"
  "$CC" "${CFLAGS[@]}" "tests/$t.c" -o "$OUT/$t" "$OUT/libmoco.a" "${LIBS[@]}"
done
printf '%s\n' "${TESTS[@]}" | tac | xargs -P "$(nproc)" -I{} bash -c 'run_one {}' # the list's end first: test_trainer starts at once
failed=0
for t in "${TESTS[@]}"; do
  read -r rc secs <"$OUT/$t.rc" || { rc=1 secs=?; }
  case $rc in
    0) echo "PASS  $t (${secs}s, aarch64 under qemu$(grep -q '^\[  SKIPPED \]' "$OUT/$t.log" && echo ", with parts skipped: see its log"))" ;;
    77) echo "FAIL  $t (${secs}s): skipped as a whole: $(tail -1 "$OUT/$t.log")"; failed=1 ;; # a listed test must run
    *) echo "FAIL  $t (${secs}s, exit $rc): see $OUT/$t.log"; grep -E '^\[  (ERROR|FAILED) |error:|Error' "$OUT/$t.log" | head -5 || true; failed=1 ;;
  esac
done
exit $failed
