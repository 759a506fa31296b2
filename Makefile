# sluice build.
#
#   make            libsluice.a and the sluice binary (build/release)
#   make run        install what is missing, build, start sluice (embedded broker)
#   make cluster    install what is missing, build, start a real broker, PostgreSQL,
#                   three sluice instances and the sink until Ctrl-C (scripts/cluster;
#                   ARGS='--set key=value' for every instance)
#   make test       install what is missing, build under ASan+UBSan, start a real
#                   Kafka broker and PostgreSQL, run every test, stop them
#   make bench      install what is missing, build the release variant (tests/apps
#                   and bench/ programs included), start a real Kafka broker and
#                   run the engine benchmark (bench/bench_engine); extra flags:
#                   make bench BENCH_ARGS='--records 200000'
#   make docs       regenerate docs/CONFIGURATION.md from the config tables
#   make bench-peer  the engine benchmark's pass-through and counter runs
#                   against the counter's Kafka Streams twin (cache off and on)
#                   on one broker, alternating; the twin is built with Maven
#                   (bench/peers/kafka-streams); extra flags in BENCH_ARGS
#   make bench-jwt  build and run the token-verification benchmark (bench/jwt_bench.c)
#   make fuzz       install clang, build the libFuzzer targets of tests/fuzz/
#                   (build/fuzz) and run each for FUZZ_SECONDS (default 60);
#                   new corpus entries and crashes go to .cache/fuzz/
#                   (git-ignored). make test replays the committed corpora.
#   make format     clang-format every C file
#   make bench-pgsink  the Postgres sink vs a raw COPY of the same rows, under
#                   scripts/harness (bench/pgsink_bench.c; ARGS="--rows N")
#   make bench-dialogs  build and run bench/dialogs_bench (release, under
#                   scripts/harness: 3 instances, sends, lists, Lady Gaga)
#   make bench-cluster  the dialogs work over 1, 2 and 3 `sluice run` instances
#                   (bench/cluster_bench.c, release, under scripts/harness):
#                   sends/s and each instance's share of dialogs.commands;
#                   ARGS='--sends N --users N --instances 1,2,3'
#   make bench-standby  a task's unavailability window when its instance stops,
#                   with standby replicas on and off (bench/standby_bench.c,
#                   release, under scripts/harness); ARGS='--records 200000'
#   make bench-http  the HTTP edge under wrk (bench/http_bench.c, release,
#                   under scripts/harness): /healthz, local and forwarded
#                   keys, the state endpoint, at 64 and 1,000 connections
#   make bench-passwords  build and run bench/passwords_bench (release build;
#                   ARGS="N" sets the hashes per phase)
#   make bench-identity  install what is missing, build sluice and
#                   bench/identity_bench (release), start a real Kafka broker
#                   and run the identity HTTP benchmark on two sluice instances;
#                   extra flags: make bench-identity BENCH_ARGS='--seconds 5'
#   make clean
#
# VARIANT=release (default), VARIANT=asan or VARIANT=fuzz (clang, for make
# fuzz) selects the build flavour; each has its own directory under build/.

VARIANT ?= release
OUT := build/$(VARIANT)
GEN := build/gen

CC ?= gcc
ifeq ($(origin CC),default)
CC := gcc
endif

PKGS := rdkafka libprotobuf-c libmicrohttpd jansson rocksdb libcrypto libargon2 libsodium libpq \
        icu-uc icu-i18n
TEST_PKGS := cmocka

WARN := -Wall -Wextra -Werror -Wshadow -Wstrict-prototypes -Wmissing-prototypes \
        -Wformat=2 -Wvla
ifeq ($(VARIANT),asan)
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined \
       -fno-sanitize-recover=undefined
SAN_LD := -fsanitize=address,undefined
else ifeq ($(VARIANT),release)
OPT := -O2 -g
SAN_LD :=
else ifeq ($(VARIANT),fuzz)
# Everything instrumented for libFuzzer's coverage; only the fuzz targets link
# its main (FUZZ_LD below).
CC := clang
OPT := -O1 -g -fno-omit-frame-pointer -fsanitize=fuzzer-no-link,address,undefined \
       -fno-sanitize-recover=undefined
SAN_LD := -fsanitize=address,undefined
else
$(error VARIANT must be release, asan or fuzz, not '$(VARIANT)')
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

# Every .c under the four library folders, except the binary's main.
LIB_SRCS := $(sort $(filter-out processor/cmd/%,$(shell find processor state topology connectors \
              -name '*.c' 2>/dev/null)))
# The Postgres sink's migrations (schemas/postgres/NNNN_*.sql) are compiled
# into the library as C strings, so the binary applies them without needing
# the source tree.
PG_MIGRATIONS := $(sort $(wildcard schemas/postgres/[0-9]*.sql))
PG_MIGRATIONS_C := $(GEN)/schemas/pg_migrations.c

# The OpenAPI description of the HTTP API (schemas/openapi.yaml), converted
# to JSON and compiled in as well: `sluice run` serves it at /openapi.json.
OPENAPI_YAML := schemas/openapi.yaml
OPENAPI_JSON := $(GEN)/schemas/openapi.json
OPENAPI_C := $(GEN)/schemas/openapi.c
# A python3 with PyYAML for the conversion: the one on PATH, else Debian's
# (scripts/bootstrap build installs python3-yaml). Evaluated only when the
# JSON is out of date.
YAML_PYTHON = $(firstword $(foreach p,python3 /usr/bin/python3,\
                $(if $(shell $(p) -c 'import yaml' 2>/dev/null && echo y),$(p))))

LIB_OBJS := $(patsubst %.c,$(OUT)/obj/%.o,$(LIB_SRCS)) \
            $(patsubst $(GEN)/%.c,$(OUT)/obj/gen/%.o,$(PB_C) $(PG_MIGRATIONS_C) $(OPENAPI_C))

# The full list of configuration key groups (processor/cmd/config_groups.c)
# sees every room, so it is not in libsluice.a; the binary, the tests and the
# benchmarks link this object beside the library (sl_config_new takes it).
CONFIG_GROUPS_OBJ := $(OUT)/obj/processor/cmd/config_groups.o

UNIT_TESTS := $(patsubst tests/unit/%.c,$(OUT)/tests/unit/%,$(wildcard tests/unit/test_*.c))
INTEG_TESTS := $(patsubst tests/integration/%.c,$(OUT)/tests/integration/%,\
                 $(wildcard tests/integration/test_*.c))
SUPPORT_OBJS := $(patsubst %.c,$(OUT)/obj/%.o,$(wildcard tests/support/*.c))
TEST_APPS := $(patsubst tests/apps/%.c,$(OUT)/tests/apps/%,$(wildcard tests/apps/*.c))
# Benchmark programs: one bench/<name>.c each, built only when asked for;
# each links what they share (bench/support/*.c, compiled once).
BENCHES := $(patsubst bench/%.c,$(OUT)/bench/%,$(wildcard bench/*.c))
BENCH_SUPPORT_OBJS := $(patsubst %.c,$(OUT)/obj/%.o,$(wildcard bench/support/*.c))

# One fuzz target per decoder or request parser (tests/fuzz/fuzz_*.c). In the
# test build each links tests/fuzz/replay.c, which replays a corpus directory
# (tests/run passes tests/fuzz/corpus/<name>); in VARIANT=fuzz, libFuzzer.
FUZZ_TARGETS := $(patsubst tests/fuzz/%.c,%,$(wildcard tests/fuzz/fuzz_*.c))
FUZZ_BINS := $(addprefix $(OUT)/tests/fuzz/,$(FUZZ_TARGETS))
ifeq ($(VARIANT),fuzz)
FUZZ_DRIVER :=
FUZZ_LD := -fsanitize=fuzzer
else
FUZZ_DRIVER := $(OUT)/obj/tests/fuzz/replay.o
FUZZ_LD :=
endif
FUZZ_SECONDS ?= 60

.PHONY: all run cluster test tests docs format clean deps fuzz fuzzers benches bench bench-jwt bench-passwords bench-http \
        bench-pgsink bench-identity bench-peer \
        bench-dialogs bench-cluster bench-standby
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

# One byte array per file (NUL-terminated) and a table of {file name, text}.
$(PG_MIGRATIONS_C): $(PG_MIGRATIONS) Makefile
	@mkdir -p $(dir $@)
	@{ echo '/* Generated from schemas/postgres/ by the Makefile; do not edit. */'; \
	  echo '#include <stddef.h>'; i=0; \
	  for f in $(PG_MIGRATIONS); do \
	    echo "static const char m$$i[] = {"; od -An -v -tx1 "$$f" | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '0};'; \
	    i=$$((i + 1)); done; \
	  echo 'struct sl_pg_migration { const char *name; const char *sql; };'; echo 'extern const struct sl_pg_migration sl_pg_migrations[];'; echo 'const struct sl_pg_migration sl_pg_migrations[] = {'; i=0; \
	  for f in $(PG_MIGRATIONS); do echo "{\"$$(basename $$f)\", m$$i},"; i=$$((i + 1)); done; \
	  echo '{NULL, NULL}};'; } > $@.tmp && mv $@.tmp $@

$(OPENAPI_JSON): $(OPENAPI_YAML) scripts/openapi-json
	@mkdir -p $(dir $@)
	@py='$(YAML_PYTHON)'; [ -n "$$py" ] || { echo "make: no python3 with PyYAML to convert \
	  $(OPENAPI_YAML); run 'scripts/bootstrap build'" >&2; exit 1; }; \
	  $$py scripts/openapi-json $(OPENAPI_YAML) $@.tmp && mv $@.tmp $@

# The JSON as one byte array and its length (not NUL-terminated).
$(OPENAPI_C): $(OPENAPI_JSON) Makefile
	@{ echo '/* Generated from schemas/openapi.yaml by the Makefile; do not edit. */'; \
	  echo '#include <stddef.h>'; echo 'extern const unsigned char sl_openapi_document[];'; \
	  echo 'extern const size_t sl_openapi_document_len;'; \
	  echo 'const unsigned char sl_openapi_document[] = {'; \
	  od -An -v -tx1 $(OPENAPI_JSON) | sed 's/\([0-9a-f][0-9a-f]\)/0x\1,/g'; echo '};'; \
	  echo "const size_t sl_openapi_document_len = $$(wc -c < $(OPENAPI_JSON));"; } > $@.tmp && \
	  mv $@.tmp $@

$(OUT)/obj/gen/%.o: $(GEN)/%.c $(PB_H) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(OUT)/obj/%.o: %.c $(PB_H) | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS_ALL) -c -o $@ $<

$(OUT)/obj/tests/%.o: CFLAGS_ALL += $(call pkg_cflags,$(TEST_PKGS))

$(OUT)/libsluice.a: $(LIB_OBJS)
	@rm -f $@
	ar rcs $@ $^

$(OUT)/sluice: $(OUT)/obj/processor/cmd/sluice.o $(CONFIG_GROUPS_OBJ) $(OUT)/libsluice.a
	$(CC) $(SAN_LD) -o $@ $^ $(LDLIBS_ALL)

$(OUT)/tests/%: $(OUT)/obj/tests/%.o $(SUPPORT_OBJS) $(CONFIG_GROUPS_OBJ) $(OUT)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_LD) -o $@ $^ $(LDLIBS_ALL) $(call pkg_libs,$(TEST_PKGS))

# More specific than $(OUT)/tests/%, so make picks it for the fuzz targets.
$(OUT)/tests/fuzz/fuzz_%: $(OUT)/obj/tests/fuzz/fuzz_%.o $(FUZZ_DRIVER) $(CONFIG_GROUPS_OBJ) \
                           $(OUT)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_LD) $(FUZZ_LD) -o $@ $^ $(LDLIBS_ALL)

tests: $(UNIT_TESTS) $(INTEG_TESTS) $(TEST_APPS) $(FUZZ_BINS) $(OUT)/sluice

fuzzers: $(FUZZ_BINS)

# Benchmarks (bench/*.c) are built only when asked for, never by `make` or
# `make test`; libjwt is linked into the JWT benchmark only, as its baseline.
BENCH_PKGS := libjwt
$(OUT)/obj/bench/%.o: CFLAGS_ALL += $(call pkg_cflags,$(BENCH_PKGS))

$(OUT)/bench/%: $(OUT)/obj/bench/%.o $(BENCH_SUPPORT_OBJS) $(CONFIG_GROUPS_OBJ) \
               $(OUT)/libsluice.a
	@mkdir -p $(dir $@)
	$(CC) $(SAN_LD) -o $@ $^ $(LDLIBS_ALL) $(call pkg_libs,$(BENCH_PKGS))

benches: $(BENCHES)

# Timings mean something only in the release build.
bench-jwt:
	$(MAKE) VARIANT=release build/release/bench/jwt_bench
	build/release/bench/jwt_bench $(ARGS)

# The Postgres sink against a raw COPY of the same rows (bench/pgsink_bench.c),
# with a real broker and PostgreSQL; ARGS="--rows N".
bench-pgsink:
	scripts/bootstrap test
	$(MAKE) VARIANT=release build/release/bench/pgsink_bench
	scripts/harness build/release/bench/pgsink_bench $(ARGS)

# Three sluice instances on a real broker: HTTP and Kafka sends, routed and
# local lists, the full-size Lady Gaga case. ARGS: --http-sends N --threads N
# --kafka-sends N --lists N --partners N --pairs N.
bench-dialogs:
	scripts/bootstrap test
	$(MAKE) VARIANT=release all build/release/bench/dialogs_bench
	scripts/harness build/release/bench/dialogs_bench --build build/release $(ARGS)

# 1, 2 and 3 instances, each with a fresh application.id: sends/s and every
# instance's share of the dialogs.commands records (bench/cluster_bench.c).
bench-cluster:
	scripts/bootstrap test
	$(MAKE) VARIANT=release all build/release/bench/cluster_bench
	scripts/harness build/release/bench/cluster_bench --build build/release \
	    --label "$$(git describe --always --dirty 2>/dev/null || echo unknown)" $(ARGS)

# Two instances, one stopped: how long its users-by-id keys answer 503 on the
# other, with num.standby.replicas=1 and =0 (bench/standby_bench.c);
# ARGS='--records N' (default 1000000).
bench-standby:
	scripts/bootstrap test
	$(MAKE) VARIANT=release all build/release/bench/standby_bench
	scripts/harness build/release/bench/standby_bench --build build/release \
	    --label "$$(git describe --always --dirty 2>/dev/null || echo unknown)" $(ARGS)

# The HTTP edge under wrk: /healthz, a local and a forwarded key, the state
# endpoint, at 64 and 1,000 connections (bench/http_bench.c). ARGS:
# --seconds N --connections 64,1000
bench-http:
	scripts/bootstrap bench
	$(MAKE) VARIANT=release all build/release/bench/http_bench
	scripts/harness build/release/bench/http_bench --build build/release \
	    --label "$$(git describe --always --dirty 2>/dev/null || echo unknown)" $(ARGS)

bench-passwords:
	$(MAKE) VARIANT=release build/release/bench/passwords_bench
	build/release/bench/passwords_bench $(ARGS)

run:
	scripts/bootstrap build
	$(MAKE) VARIANT=release all
	./build/release/sluice run $(ARGS)

# Three `sluice run` instances and `sluice sink` on the harness's real broker
# and PostgreSQL, in the foreground until Ctrl-C (scripts/cluster); ARGS go
# to every instance: make cluster ARGS='--set log.level=debug'.
cluster:
	scripts/bootstrap test
	$(MAKE) VARIANT=release all
	scripts/cluster --build build/release $(ARGS)

# The release build is compiled too: gcc's -O2 sees warnings -O1 does not
# (format truncation), and `make run` must keep building.
test:
	scripts/bootstrap test
	$(MAKE) VARIANT=release all
	$(MAKE) VARIANT=asan tests
	scripts/harness tests/run build/asan

fuzz:
	scripts/bootstrap fuzz
	$(MAKE) VARIANT=fuzz fuzzers
	FUZZ_SECONDS=$(FUZZ_SECONDS) scripts/fuzz build/fuzz

# Timings are never test assertions: `make test` does not run this.
bench:
	scripts/bootstrap test
	$(MAKE) VARIANT=release tests benches
	scripts/harness build/release/bench/bench_engine --build build/release \
	    --label "$$(git describe --always --dirty 2>/dev/null || echo unknown)" $(BENCH_ARGS)

# The counter app against its Kafka Streams twin (bench/peers/kafka-streams,
# built by `scripts/bootstrap peer` with Maven), cache off and on, with the
# pass-through baseline, alternating on one broker (bench/bench_engine.c).
bench-peer:
	scripts/bootstrap peer
	$(MAKE) VARIANT=release build/release/tests/apps/counter build/release/bench/passthrough \
	    build/release/bench/bench_engine
	scripts/harness build/release/bench/bench_engine --build build/release \
	    --peer bench/peers/kafka-streams --runs a,b,k,kc,r1,rk \
	    --label "$$(git describe --always --dirty 2>/dev/null || echo unknown)" $(BENCH_ARGS)

# Two release-build `sluice run` instances on the harness's broker, driven
# over HTTP (bench/identity_bench.c; results in bench/RESULTS.md).
bench-identity:
	scripts/bootstrap test
	$(MAKE) VARIANT=release all build/release/bench/identity_bench
	scripts/harness build/release/bench/identity_bench --build build/release \
	    --label "$$(git describe --always --dirty 2>/dev/null || echo unknown)" $(BENCH_ARGS)

docs: $(OUT)/sluice
	$(OUT)/sluice config-doc > docs/CONFIGURATION.md

format:
	clang-format -i $$(git ls-files '*.c' '*.h')

clean:
	rm -rf build

-include $(shell find build -name '*.d' 2>/dev/null)
