# Discord AI bot cluster: one static core library and four role binaries.
#
#   make              build common/libbotcore.a and the four instances
#   make test         build, then run every test (unit + integration)
#   make test-asan    the same suite, built with AddressSanitizer + UBSan
#   make ci           what .ci/run does: install deps, test, test-asan
#   make docs-config  regenerate the configuration table in README.md
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
BASE_CFLAGS := -std=gnu17 -g -D_GNU_SOURCE -Icommon $(WARN) \
        -DBC_VERSION='"$(VERSION)"' -DBC_GIT_REV='"$(GIT_REV)"' \
        $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
LIBS := $(shell pkg-config --libs $(PKGS) 2>/dev/null) -lpthread -lm

ifeq ($(VARIANT)$(DEVTAG),release)
  OPT := -O2
  SAN :=
  LIB := common/libbotcore.a
  BIN = $(1)-instance/$(1)-instance
else ifeq ($(VARIANT),release)
  OPT := -O2
  SAN :=
  LIB := $(BUILD)/common/libbotcore.a
  BIN = $(BUILD)/$(1)-instance/$(1)-instance
else ifeq ($(VARIANT),asan)
  OPT := -O1 -fno-omit-frame-pointer
  SAN := -fsanitize=address,undefined -fno-sanitize-recover=undefined
  LIB := $(BUILD)/common/libbotcore.a
  BIN = $(BUILD)/$(1)-instance/$(1)-instance
else
  $(error unknown VARIANT $(VARIANT): use release or asan)
endif

CFLAGS := $(BASE_CFLAGS) $(OPT) $(SAN) $(EXTRA_CFLAGS)
LDFLAGS := $(SAN) $(EXTRA_LDFLAGS)

CORE_SRC := $(if $(MODULES),$(MODULES:%=common/%.c),$(sort $(wildcard common/*.c)))
CORE_OBJ := $(CORE_SRC:%.c=$(BUILD)/%.o)
BINS := $(foreach r,$(ROLES),$(call BIN,$(r)))
UNIT_SRC := $(sort $(wildcard tests/unit/test_*.c))
UNIT_BINS := $(UNIT_SRC:%.c=$(BUILD)/%)

.PHONY: all lib bins unit test test-asan ci clean docs-config check-deps bench
.DELETE_ON_ERROR:
.SECONDARY:

all: $(LIB) $(BINS) $(UNIT_BINS)

lib: $(LIB)
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
$(call BIN,$(1)): $(patsubst %.c,$(BUILD)/%.o,$(wildcard $(1)-instance/*.c)) $(LIB)
	@mkdir -p $$(dir $$@)
	$$(CC) $$(LDFLAGS) -o $$@ $$(filter %.o,$$^) $(LIB) $$(LIBS)
endef
$(foreach r,$(ROLES),$(eval $(call role_rules,$(r))))

$(BUILD)/tests/unit/%: $(BUILD)/tests/unit/%.o $(LIB)
	$(CC) $(LDFLAGS) -o $@ $< $(LIB) $(LIBS)

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

docs-config: all
	$(PYTHON) tests/tools/docs_config.py --write

clean:
	rm -rf build common/libbotcore.a $(foreach r,$(ROLES),$(r)-instance/$(r)-instance)

-include $(CORE_OBJ:.o=.d) $(UNIT_BINS:=.d)
-include $(foreach r,$(ROLES),$(patsubst %.c,$(BUILD)/%.d,$(wildcard $(r)-instance/*.c)))
