# Makefile: builds bin/moco and the test suite.
#   make                    build bin/moco (C11, -O2 -Wall -Wextra -Werror)
#   make SANITIZE=address   the same, instrumented (also: undefined, thread)
#   make test               install missing Debian packages, build, run every test
#   make demo               install missing packages, then the main job on Fashion-MNIST
#   make check-arm64        every file compiled for 64-bit Arm, the engine's tests run
#                           there under qemu-user (tools/check-arm64.sh; minutes)
#   make clean
# Sources are found by wildcard: every .c in formats/ loader/ augment/ trainer/
# goes into the program and the tests; cli/ holds main(); tests/test_*.c are
# the unit-test programs (cmocka).

CC      ?= cc
PKGS    := vips libzmq lmdb openblas libturbojpeg zlib ompi-c
SANITIZE ?=
JOBS    ?= $(shell nproc 2>/dev/null || echo 1)
comma   := ,
FLAVOR  := $(if $(SANITIZE),$(SANITIZE),release)
BUILD   := build/$(FLAVOR)

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT      ?= -O2
CFLAGS_BASE := -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -I. -pthread -fno-fast-math
CFLAGS  := $(CFLAGS_BASE) $(PKG_CFLAGS) $(EXTRA_CFLAGS)
# the target's instruction set: x86-64 gets glibc's libmvec (trainer/engine/loss.c)
# and, by default, oneDNN; elsewhere (Arm) the engine's portable paths
X86_64  := $(if $(filter x86_64-%,$(shell $(CC) -dumpmachine 2>/dev/null)),1,0)
LDLIBS  := $(PKG_LIBS) -lm $(if $(filter 1,$(X86_64)),-lmvec) -pthread
# oneDNN (Debian's libdnnl-dev) for --precision bf16 (trainer/engine/bf16.c), used
# when its header is there (on x86-64: bf16*.c hold AVX-512 code); the build
# and the fp32 path work without it, and
# bf16 then says what is missing. DNNL=0 builds without it anyway.
DNNL    ?= $(if $(and $(wildcard /usr/include/dnnl.h),$(filter 1,$(X86_64))),1,0)
ifeq ($(DNNL),1)
CFLAGS  += -DMOCO_HAVE_DNNL
LDLIBS  += -ldnnl -lgomp
endif
ifneq ($(SANITIZE),)
# gcc's undefined leaves out float-cast-overflow (a float too large for its int): added
SAN_LIST := $(SANITIZE)$(if $(filter undefined,$(SANITIZE)),$(comma)float-cast-overflow)
CFLAGS  += -fsanitize=$(SAN_LIST) -fno-omit-frame-pointer -fno-sanitize-recover=all -DMOCO_SANITIZE='"$(SANITIZE)"'
LDFLAGS += -fsanitize=$(SAN_LIST)
endif

LIB_SRCS  := $(wildcard formats/*.c loader/*.c augment/*.c trainer/*.c trainer/engine/*.c)
CLI_SRCS  := $(wildcard cli/*.c)
TEST_SRCS := $(wildcard tests/test_*.c)
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS  := $(CLI_SRCS:%.c=$(BUILD)/%.o)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)
# tests/mpi_*.c run under mpirun (tests/cli_mpi_*.sh), not as test_* programs
MPI_TEST_BINS := $(patsubst tests/%.c,$(BUILD)/tests/%,$(wildcard tests/mpi_*.c))

# bin/moco is the last flavour built: relink when the flavour changes.
$(shell mkdir -p build; echo $(FLAVOR) | cmp -s - build/flavor || echo $(FLAVOR) > build/flavor)

.PHONY: all test demo clean deps tests unit-tests quality-tools check-arm64
all: bin/moco

# The tests run their own copy, build/FLAVOR/moco: bin/moco may be relinked
# (or switch flavour) under a running suite.
TEST_MOCO := $(BUILD)/moco
$(TEST_MOCO): $(CLI_OBJS) $(LIB_OBJS)
	@echo "  LD   $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIB_OBJS) $(LDLIBS)

bin/moco: $(CLI_OBJS) $(LIB_OBJS) build/flavor
	@mkdir -p bin
	@echo "  LD   $@ ($(FLAVOR))"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $(CLI_OBJS) $(LIB_OBJS) $(LDLIBS)

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  CC   $<"
	@$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/tests/%: tests/%.c $(LIB_OBJS) tests/testutil.h
	@mkdir -p $(dir $@)
	@echo "  TEST $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -MMD -MP -o $@ $< $(LIB_OBJS) $(LDLIBS) -lcmocka

deps:
	@bash tools/install-deps.sh

tests: bin/moco $(TEST_MOCO) $(TEST_BINS) $(MPI_TEST_BINS) $(BUILD)/tools/quality/step_grads $(BUILD)/tools/quality/exp_terms $(BUILD)/tools/bench_dbread

# Every unit-test program, then the command-line tests; one summary line.
test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) tests
	@MOCO=$(CURDIR)/$(TEST_MOCO) BUILD=$(BUILD) bash tests/run.sh $(TEST_BINS)

demo: deps
	@$(MAKE) --no-print-directory bin/moco
	@bash tools/demo.sh

check-arm64:
	@bash tools/check-arm64.sh

# The quality experiment (tools/quality/README.md): not part of bin/moco.
quality-tools: $(BUILD)/tools/quality/views_epoch $(BUILD)/tools/quality/step_grads $(BUILD)/tools/quality/exp_terms
$(BUILD)/tools/quality/%: tools/quality/%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "  LD   $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS)

# Benchmarks that are not part of bin/moco: tools/bench_allreduce.c (tools/bench_mpi.sh's
# all-reduce timing, run under mpirun) and tools/bench_dbread.c (the loader's read, with and
# without a bracket of reads).
$(BUILD)/tools/bench_%: tools/bench_%.c $(LIB_OBJS)
	@mkdir -p $(dir $@)
	@echo "  LD   $@"
	@$(CC) $(CFLAGS) $(LDFLAGS) -o $@ $< $(LIB_OBJS) $(LDLIBS)

clean:
	rm -rf build bin tests/tmp

-include $(shell find build -name '*.d' 2>/dev/null)

# ---- fuzzing (issue 7): libFuzzer targets in tests/fuzz/fuzz_*.c --------
#   make fuzz         build build/fuzz/fuzz_* (needs clang-14 and
#                     libclang-rt-14-dev: apt-get install clang-14 libclang-rt-14-dev)
#   make fuzz-smoke   run each target on its seed corpus plus 4 s of fuzzing
# The library sources (trainer/ too: the checkpoint, wisdom, metrics and sink-index
# readers) are compiled with the fuzz flags into build/fuzz/ and
# archived, so that each target links only what it uses. Long runs:
#   nice -n 19 build/fuzz/fuzz_record -max_total_time=600 tests/fuzz/corpus/fuzz_record
FUZZ_CC     ?= clang-14
# clang does not define __SANITIZE_ADDRESS__ (gcc does): augment/pixels.c keys
# its target_clones off it, which clang-14 links differently, so define it.
FUZZ_SAN    := -D__SANITIZE_ADDRESS__=1 -fsanitize=address,undefined -fno-sanitize-recover=undefined -fno-omit-frame-pointer
FUZZ_CFLAGS := -std=c11 -O1 -g -Wall -Wextra -Werror -Wno-unknown-pragmas -ffp-contract=off -D_GNU_SOURCE -I. -pthread $(PKG_CFLAGS) $(FUZZ_SAN)
FUZZ_LIBSRC := $(wildcard formats/*.c loader/*.c augment/*.c trainer/*.c trainer/engine/*.c)
FUZZ_OBJS   := $(FUZZ_LIBSRC:%.c=build/fuzz/%.o)
FUZZ_SRCS   := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BINS   := $(FUZZ_SRCS:tests/fuzz/%.c=build/fuzz/%)
FUZZ_SECS   ?= 4

.PHONY: fuzz fuzz-smoke
fuzz: $(FUZZ_BINS)

build/fuzz/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "  FZCC $<"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

build/fuzz/libmoco_fuzz.a: $(FUZZ_OBJS)
	@rm -f $@
	@ar rcs $@ $(FUZZ_OBJS)

build/fuzz/fuzz_%: tests/fuzz/fuzz_%.c build/fuzz/libmoco_fuzz.a
	@echo "  FUZZ $@"
	@$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -o $@ $< build/fuzz/libmoco_fuzz.a $(LDLIBS)

# Each target: replay its seed corpus, then FUZZ_SECS seconds of fuzzing
# (new inputs go to a scratch corpus, never into tests/fuzz/corpus).
fuzz-smoke: fuzz
	@set -e; for f in $(FUZZ_BINS); do n=$$(basename $$f); \
	  rm -rf build/fuzz/smoke/$$n; mkdir -p build/fuzz/smoke/$$n; \
	  echo "  SMOKE $$n"; \
	  $$f -max_total_time=$(FUZZ_SECS) -timeout=10 -rss_limit_mb=2048 -print_final_stats=1 \
	      build/fuzz/smoke/$$n tests/fuzz/corpus/$$n 2>build/fuzz/smoke/$$n.log \
	    || { tail -n 30 build/fuzz/smoke/$$n.log; exit 1; }; \
	  grep -E '^stat::number_of_executed_units|^#[0-9]+ +DONE' build/fuzz/smoke/$$n.log | tail -n 1; \
	done
