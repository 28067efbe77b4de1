# Makefile: builds bin/moco and the test suite.
#   make                    build bin/moco (C11, -O2 -Wall -Wextra -Werror)
#   make SANITIZE=address   the same, instrumented (also: undefined, thread)
#   make test               install missing Debian packages, build, run every test
#   make demo               install missing packages, then the main job on Fashion-MNIST
#   make clean
# Sources are found by wildcard: every .c in formats/ loader/ augment/ trainer/
# goes into the program and the tests; cli/ holds main(); tests/test_*.c are
# the unit-test programs (cmocka).

CC      ?= cc
PKGS    := vips libzmq lmdb openblas libturbojpeg zlib
SANITIZE ?=
FLAVOR  := $(if $(SANITIZE),$(SANITIZE),release)
BUILD   := build/$(FLAVOR)

PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT      ?= -O2
CFLAGS_BASE := -std=c11 $(OPT) -g -Wall -Wextra -Werror -D_GNU_SOURCE -I. -pthread -fno-fast-math
CFLAGS  := $(CFLAGS_BASE) $(PKG_CFLAGS) $(EXTRA_CFLAGS)
LDLIBS  := $(PKG_LIBS) -lm -pthread
ifneq ($(SANITIZE),)
CFLAGS  += -fsanitize=$(SANITIZE) -fno-omit-frame-pointer -fno-sanitize-recover=all
LDFLAGS += -fsanitize=$(SANITIZE)
endif

LIB_SRCS  := $(wildcard formats/*.c loader/*.c augment/*.c trainer/*.c)
CLI_SRCS  := $(wildcard cli/*.c)
TEST_SRCS := $(wildcard tests/test_*.c)
LIB_OBJS  := $(LIB_SRCS:%.c=$(BUILD)/%.o)
CLI_OBJS  := $(CLI_SRCS:%.c=$(BUILD)/%.o)
TEST_BINS := $(TEST_SRCS:tests/%.c=$(BUILD)/tests/%)

# bin/moco is the last flavour built: relink when the flavour changes.
$(shell mkdir -p build; echo $(FLAVOR) | cmp -s - build/flavor || echo $(FLAVOR) > build/flavor)

.PHONY: all test demo clean deps tests unit-tests
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

tests: bin/moco $(TEST_MOCO) $(TEST_BINS)

# Every unit-test program, then the command-line tests; one summary line.
test: deps
	@$(MAKE) --no-print-directory tests
	@MOCO=$(CURDIR)/$(TEST_MOCO) BUILD=$(BUILD) bash tests/run.sh $(TEST_BINS)

demo: deps
	@$(MAKE) --no-print-directory bin/moco
	@bash tools/demo.sh

clean:
	rm -rf build bin tests/tmp

-include $(shell find build -name '*.d' 2>/dev/null)
