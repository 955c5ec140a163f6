# Discord AI bot cluster: one static core library and four role binaries.
#
#   make              build common/libbotcore.a and the four instances
#   make test         build, then run every test (unit + integration)
#   make test-asan    the same suite, built with AddressSanitizer + UBSan
#   make ci           what .ci/run does: install deps, test, test-asan
#   make docs-config  regenerate the configuration table in README.md
#   make fuzz         build the libFuzzer targets (clang) and run each one for
#                     FUZZ_SECONDS (default 60); see tests/README.md
#   make fuzz-ci      what ci runs: replay the committed corpora, then run
#                     each target for FUZZ_CI_SECONDS (default 8)
#
# VARIANT=release puts the library and binaries where operators expect them
# (common/libbotcore.a, chat-instance/chat-instance, ...); any other variant
# builds entirely under build/$(VARIANT)/ so both can coexist.

VARIANT ?= release
# DEVTAG and MODULES let one developer build a private library from a subset
# of common/ while others edit the rest: make DEVTAG=me MODULES='err mem log'
DEVTAG ?=
MODULES ?=
BUILD := build/$(VARIANT)$(if $(DEVTAG),-$(DEVTAG))
ROLES := chat image video admin
PKGS := libuv libcurl json-c hiredis libpq libmicrohttpd libsodium libwebsockets zlib

CC ?= cc
# Debian's python3 (installed by deploy/install-deps.sh) sees Debian's Python
# packages (python3-nacl for the simulators); a python3 earlier on PATH may not.
PYTHON ?= $(shell test -x /usr/bin/python3 && echo /usr/bin/python3 || echo python3)
VERSION := $(shell cat VERSION 2>/dev/null || echo 0.0.0)
GIT_REV := $(shell git rev-parse --short HEAD 2>/dev/null || echo unknown)

WARN := -Wall -Wextra -Werror -Wshadow -Wformat=2 -Wstrict-prototypes -Wmissing-prototypes \
        -Wno-missing-field-initializers
BASE_CFLAGS := -std=gnu17 -g -D_GNU_SOURCE -I. -Icommon $(WARN) \
        -DBC_VERSION='"$(VERSION)"' -DBC_GIT_REV='"$(GIT_REV)"' \
        $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

ifeq ($(VARIANT)$(DEVTAG),release)
  OPT := -O2
  SAN :=
  LIB := common/libbotcore.a
  BIN = $(1)-instance/$(1)-instance
  ROLE_LIB = $(1)-instance/lib$(1).a
else ifeq ($(VARIANT),release)
  OPT := -O2
  SAN :=
  LIB := $(BUILD)/common/libbotcore.a
  BIN = $(BUILD)/$(1)-instance/$(1)-instance
  ROLE_LIB = $(BUILD)/$(1)-instance/lib$(1).a
else ifeq ($(VARIANT),asan)
  OPT := -O1 -fno-omit-frame-pointer
  SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LIB := $(BUILD)/common/libbotcore.a
  BIN = $(BUILD)/$(1)-instance/$(1)-instance
  ROLE_LIB = $(BUILD)/$(1)-instance/lib$(1).a
else
  $(error unknown VARIANT $(VARIANT): use release or asan)
endif

CFLAGS := $(BASE_CFLAGS) $(OPT) $(SAN) $(EXTRA_CFLAGS)
LDFLAGS := $(SAN) $(EXTRA_LDFLAGS)

# common/ is grouped into layer folders (base, parse, io, service, discord,
# process: docs/architecture.md); tests/tools/layers.py checks that a file
# includes nothing from a layer above its own.
CORE_SRC := $(if $(MODULES),$(foreach m,$(MODULES),$(wildcard common/*/$(m).c)),$(sort $(wildcard common/*/*.c)))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
BINS := $(foreach r,$(ROLES),$(call BIN,$(r)))
# A role's code (everything in <role>-instance/ but main.c) is built into
# lib<role>.a beside its main.c. Which role libraries a binary links is said
# here and in its main.c: every instance answers the admin commands while no
# admin instance is alive, and the admin instance takes over every role
# (docs/architecture.md). Listed in link order, libbotcore.a last.
# Each role's command rows (<role>-instance/commands.c) are linked into
# every binary and test: any instance routes any command to its role.
ROLE_SRC = $(filter-out $(1)-instance/main.c $(1)-instance/commands.c,$(sort $(wildcard $(1)-instance/*.c)))
CMDS_OBJ := $(foreach r,$(ROLES),$(BUILD)/$(r)-instance/commands.o)
LINKS_chat := chat admin
LINKS_image := image admin
LINKS_video := video admin
LINKS_admin := admin chat image video
ROLE_LIBS := $(foreach r,$(ROLES),$(call ROLE_LIB,$(r)))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRC:%.c=$(BUILD)/%)

.PHONY: all lib bins unit test test-asan ci clean docs-config check-deps bench fuzz fuzz-build fuzz-ci fuzz-regress test-compose
.DELETE_ON_ERROR:
.SECONDARY:

all: $(LIB) $(ROLE_LIBS) $(BINS) $(UNIT_BINS)

lib: $(LIB) $(ROLE_LIBS)
bins: $(BINS)
unit: $(UNIT_BINS)

check-deps:
	@pkg-config --exists $(PKGS) || { echo "missing libraries: run ./deploy/install-deps.sh" >&2; exit 1; }

$(BUILD)/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(LIB): $(CORE_OBJ)
	@mkdir -p $(dir $@)
	rm -f $@
	ar rcs $@ $^

define role_rules
$(call ROLE_LIB,$(1)): $(patsubst %.c,$(BUILD)/%.o,$(call ROLE_SRC,$(1)))
	@mkdir -p $$(dir $$@)
	rm -f $$@
	ar rcs $$@ $$^

$(call BIN,$(1)): $(BUILD)/$(1)-instance/main.o $(CMDS_OBJ) $(foreach l,$(LINKS_$(1)),$(call ROLE_LIB,$(l))) $(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$(filter %.o,$$^) $(foreach l,$(LINKS_$(1)),$(call ROLE_LIB,$(l))) $(LIB) $$(LIBS)
endef
$(foreach r,$(ROLES),$(eval $(call role_rules,$(r))))

# A unit test may test a role's code: the role libraries come first.
$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(CMDS_OBJ) $(ROLE_LIBS) $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(CMDS_OBJ) $(ROLE_LIBS) $(LIB) $(LIBS)

test: all
	$(PYTHON) tests/run.py --variant $(VARIANT)

test-asan:
	$(MAKE) VARIANT=asan all
	ASAN_OPTIONS=detect_leaks=1:abort_on_error=0:halt_on_error=1 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	$(PYTHON) tests/run.py --variant asan

ci:
	./deploy/install-deps.sh
	$(MAKE) -j2 all
	$(MAKE) test
	$(MAKE) -j2 VARIANT=asan all
	$(MAKE) test-asan
	$(MAKE) -j2 fuzz-ci

# Figures, not pass/fail: printed with their ratio to the budget and to a
# discord.js bot in the same run; results in bench/results/ (bench/README.md).
#   make bench BENCH=routing,ack   only those measurements
#   make bench QUICK=1             a smoke run (small counts, one run each)
#   make bench BENCH_ARGS='--kills 5 --chats 1000'
BENCH ?=
QUICK ?=
BENCH_ARGS ?=
bench: bins
	tests/bench/setup.sh
	$(PYTHON) tests/bench/bench.py $(if $(BENCH),--bench $(BENCH)) $(if $(filter-out 0,$(QUICK)),--quick) $(BENCH_ARGS)

chaos: all ; rm -rf build/chaos; CHAOS_REPORT_DIR=$(CURDIR)/build/chaos $(PYTHON) tests/run.py -v --variant $(VARIANT) --integration-dir tests/chaos -k chaos; st=$$?; $(PYTHON) tests/chaos/summary.py build/chaos; exit $$st

# The cluster in containers, for real (tests/compose/, docs/compose.md): a
# podman engine set up by tests/compose/engine.sh, the image, compose up, the
# four /health, docker kill -> takeover -> restart. Where the engine cannot be
# set up it says so and counts as skipped, not passed (COMPOSE_REQUIRED=1
# makes that a failure).
test-compose: all
	@if tests/compose/engine.sh >/dev/null; then \
	  $(PYTHON) tests/run.py -v --variant $(VARIANT) --integration-dir tests/compose -k compose; \
	else \
	  echo "test-compose: SKIPPED, not passed: no container engine here (the reason is above)"; \
	  echo "test-compose: 0 passed, 0 failed, 1 skipped"; \
	  [ "$(COMPOSE_REQUIRED)" != 1 ]; \
	fi

docs-config: all
	$(PYTHON) tests/tools/docs_config.py --write

# ---- fuzzing -------------------------------------------------------------
# libFuzzer needs clang (Debian's clang + libclang-rt-14-dev, installed by
# deploy/install-deps.sh). The library is built a second time into
# build/fuzz/ with coverage instrumentation (fuzzer-no-link) and ASan+UBSan;
# each target in tests/fuzz/fuzz_*.c links it with -fsanitize=fuzzer. The
# release and asan builds above are not affected. Committed seed corpora are
# in tests/fuzz/corpus/<target>/; what a run finds beyond them goes to
# build/fuzz/corpus/<target>/ (never committed by accident).
FUZZ_CC ?= clang
FUZZ_DIR := build/fuzz
FUZZ_SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
# clang also flags vsnprintf(fmt, ap) inside printf-like wrappers (gcc does not)
FUZZ_CFLAGS := $(BASE_CFLAGS) -Wno-format-nonliteral -O1 -fno-omit-frame-pointer $(FUZZ_SAN) $(EXTRA_CFLAGS)
FUZZ_LIB := $(FUZZ_DIR)/common/libbotcore.a
FUZZ_CORE_OBJ := $(sort $(wildcard common/*/*.c))
FUZZ_CORE_OBJ := $(FUZZ_CORE_OBJ:%.c=$(FUZZ_DIR)/%.o)
# the roles' code, for targets that parse a role's job payload
FUZZ_ROLE_LIB := $(FUZZ_DIR)/libroles.a
FUZZ_ROLE_OBJ := $(foreach r,$(ROLES),$(call ROLE_SRC,$(r)))
FUZZ_ROLE_OBJ := $(FUZZ_ROLE_OBJ:%.c=$(FUZZ_DIR)/%.o)
FUZZ_CMDS_OBJ := $(foreach r,$(ROLES),$(FUZZ_DIR)/$(r)-instance/commands.o)
FUZZ_SRC := $(sort $(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(FUZZ_SRC:tests/fuzz/%.c=$(FUZZ_DIR)/%)
FUZZ_SECONDS ?= 60
FUZZ_CI_SECONDS ?= 8
# FUZZ_TARGETS='sse split' runs only those (names without fuzz_)
FUZZ_TARGETS ?=
FUZZ_RUN := $(if $(FUZZ_TARGETS),$(FUZZ_TARGETS:%=$(FUZZ_DIR)/fuzz_%),$(FUZZ_BINS))

$(FUZZ_DIR)/%.o: %.c | check-deps
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer-no-link -MMD -MP -c $< -o $@

$(FUZZ_LIB): $(FUZZ_CORE_OBJ)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_ROLE_LIB): $(FUZZ_ROLE_OBJ)
	rm -f $@
	ar rcs $@ $^

$(FUZZ_DIR)/fuzz_%: tests/fuzz/fuzz_%.c tests/fuzz/fuzz.h $(FUZZ_CMDS_OBJ) $(FUZZ_ROLE_LIB) $(FUZZ_LIB)
	@mkdir -p $(dir $@)
	$(FUZZ_CC) $(FUZZ_CFLAGS) -fsanitize=fuzzer -MMD -MP -MF $@.d -o $@ $< $(FUZZ_CMDS_OBJ) $(FUZZ_ROLE_LIB) $(FUZZ_LIB) $(LIBS)

fuzz-build: $(FUZZ_BINS)

# Replay every committed seed once (a crash reproducer stays fixed).
fuzz-regress: fuzz-build
	tests/fuzz/run.sh regress $(FUZZ_RUN)

fuzz: fuzz-build
	tests/fuzz/run.sh run $(FUZZ_SECONDS) $(FUZZ_RUN)

fuzz-ci: fuzz-build
	tests/fuzz/run.sh regress $(FUZZ_RUN)
	tests/fuzz/run.sh run $(FUZZ_CI_SECONDS) $(FUZZ_RUN)

clean:
	rm -rf build common/libbotcore.a $(foreach r,$(ROLES),$(r)-instance/$(r)-instance $(r)-instance/lib$(r).a)

-include $(CORE_OBJ:.o=.d) $(UNIT_BINS:=.d)
-include $(FUZZ_CORE_OBJ:.o=.d) $(FUZZ_ROLE_OBJ:.o=.d) $(FUZZ_CMDS_OBJ:.o=.d) $(FUZZ_BINS:=.d)
-include $(foreach r,$(ROLES),$(patsubst %.c,$(BUILD)/%.d,$(wildcard $(r)-instance/*.c)))
