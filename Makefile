# sluice build.
#
#   make            libsluice.a and the sluice binary (build/release)
#   make run        install what is missing, build, start sluice (embedded broker)
#   make test       install what is missing, build under ASan+UBSan, start a real
#                   Kafka broker and PostgreSQL, run every test, stop them
#   make bench      install what is missing, build the release variant (tests/apps
#                   and bench/ programs included), start a real Kafka broker and
#                   run the engine benchmark (bench/bench_engine); extra flags:
#                   make bench BENCH_ARGS='--records 200000'
#   make docs       regenerate docs/CONFIGURATION.md from the config table
#   make format     clang-format every C file
#   make clean
#
# VARIANT=release (default) or VARIANT=asan selects the build flavour; each
# has its own directory under build/.

VARIANT ?= release
OUT := build/$(VARIANT)
GEN := build/gen

CC ?= gcc
ifeq ($(origin CC),default)
CC := gcc
endif

PKGS := rdkafka libprotobuf-c libmicrohttpd jansson rocksdb
TEST_PKGS := cmocka libpq

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wformat=2 -Wvla
ifeq ($(VARIANT),asan)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
       -fno-sanitize-recover=undefined
SAN_LD := -fsanitize=address,undefined
else ifeq ($(VARIANT),release)
OPT := -O2 -g
SAN_LD :=
else
$(error VARIANT must be release or asan, not '$(VARIANT)')
endif

pkg_cflags = $(shell pkg-config --cflags $(1) 2>/dev/null)
pkg_libs = $(shell pkg-config --libs $(1) 2>/dev/null)

CFLAGS_ALL := -std=c11 -D_GNU_SOURCE $(OPT) $(WARN) -I. -I$(GEN) -MMD -MP \
              $(call pkg_cflags,$(PKGS)) $(CFLAGS)
LDLIBS_ALL := $(call pkg_libs,$(PKGS)) -lpthread $(LDLIBS)

# Generated protobuf-c code: never committed, rebuilt from proto/.
PROTOS := $(wildcard proto/sluice/v1/*.proto)
PB_C := $(patsubst proto/%.proto,$(GEN)/%.pb-c.c,$(PROTOS))
PB_H := $(PB_C:.c=.h)

LIB_SRCS := $(filter-out processor/main.c,$(wildcard processor/*.c state/*.c \
              topology/*.c connectors/*.c))
LIB_OBJS := $(patsubst %.c,$(OUT)/obj/%.o,$(LIB_SRCS)) \
            $(patsubst $(GEN)/%.c,$(OUT)/obj/gen/%.o,$(PB_C))

UNIT_TESTS := $(patsubst tests/unit/%.c,$(OUT)/tests/unit/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integration/%.c,$(OUT)/tests/integration/%,\
                 $(wildcard tests/integration/test_*.c))
SUPPORT_OBJS := $(patsubst %.c,$(OUT)/obj/%.o,$(wildcard tests/support/*.c))
TEST_APPS := $(patsubst tests/apps/%.c,$(OUT)/tests/apps/%,$(wildcard tests/apps/*.c))
BENCH := $(patsubst bench/%.c,$(OUT)/bench/%,$(wildcard bench/*.c))

.PHONY: all run test tests benches bench docs format clean deps
.SECONDARY:
.DEFAULT_GOAL := all

all: $(OUT)/libsluice.a $(OUT)/sluice

# A clear message instead of a wall of missing-header errors.
deps:
	@pkg-config --exists $(PKGS) || { echo "make: missing libraries ($(PKGS)); run 'scripts/bootstrap build' (or 'make run')" >&2; exit 1; }
	@command -v protoc-c >/dev/null || { echo "make: protoc-c is missing; run 'scripts/bootstrap build'" >&2; exit 1; }

$(GEN)/%.pb-c.c $(GEN)/%.pb-c.h: proto/%.proto | deps
	@mkdir -p $(GEN)
	protoc-c --proto_path=proto --c_out=$(GEN) $<

$(OUT)/obj/gen/%.o: $(GEN)/%.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(OUT)/obj/%.o: %.c $(PB_H) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(OUT)/obj/tests/%.o: CFLAGS_ALL += $(call pkg_cflags,$(TEST_PKGS))

$(OUT)/libsluice.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/sluice: $(OUT)/obj/processor/main.o $(OUT)/libsluice.a
	$(CC) $(SAN_LD) -o $@ $^ $(LDLIBS_ALL)

$(OUT)/tests/%: $(OUT)/obj/tests/%.o $(SUPPORT_OBJS) $(OUT)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_LD) -o $@ $^ $(LDLIBS_ALL) $(call pkg_libs,$(TEST_PKGS))

tests: $(UNIT_TESTS) $(INTEG_TESTS) $(TEST_APPS) $(OUT)/sluice

# Benchmark programs link the same library as the binary, without test libs.
$(OUT)/bench/%: $(OUT)/obj/bench/%.o $(OUT)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_LD) -o $@ $^ $(LDLIBS_ALL)

benches: $(BENCH)

run:
	scripts/bootstrap build
	$(MAKE) VARIANT=release all
	./build/release/sluice run $(ARGS)

test:
	scripts/bootstrap test
	$(MAKE) VARIANT=asan tests
	scripts/harness tests/run build/asan

# Timings are never test assertions: `make test` does not run this.
bench:
	scripts/bootstrap test
	$(MAKE) VARIANT=release tests benches
	scripts/harness build/release/bench/bench_engine --build build/release \
	    --label "$$(git describe --always --dirty 2>/dev/null || echo unknown)" $(BENCH_ARGS)

docs: $(OUT)/sluice
	$(OUT)/sluice config-doc > docs/CONFIGURATION.md

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
