# radcap build. `make` builds ./radcap; `make test` builds and runs every test;
# `make check-asan` runs the unit tests under AddressSanitizer/UBSan;
# `make fuzz` builds the libFuzzer targets and runs each briefly; `make bench`
# runs the benchmarks (not part of `make test`).
#
# Sources are found by wildcard: every engine/, io/, scheduler/ and pipeline/
# .c file goes into build/libradcap.a (pipeline/main.c is the program's entry);
# every tests/test_*.c is one cmocka test program; every tests/fuzz/fuzz_*.c
# is one libFuzzer target.

CC      ?= cc
BUILD   ?= build
SHARED_DIR ?= ../shared
PYTHON  ?= /usr/bin/python3

PKGS    := vips libcjson sqlite3 ompi-c
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT      ?= -O2 -march=x86-64-v3 -mtune=native
WARN     := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wvla
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) -fopenmp -I. $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lopenblas -fopenmp -lm

LIB_SRC  := $(wildcard engine/*.c io/*.c scheduler/*.c) $(filter-out pipeline/main.c,$(wildcard pipeline/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(BUILD)/version.o
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_HELPERS := $(wildcard tests/helpers/*.c)
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(BUILD)/%.o)

.PHONY: all test unit check-asan fuzz fuzz-build bench clean demo deps slurm-test
# keep test objects between runs (they are intermediate files of pattern rules)
.SECONDARY:
all: radcap

# Installs the Debian packages (no-op when they are all present).
deps:
	@./scripts/install-deps.sh

# The README's first command: install, build, run the demo.
demo: deps
	@$(MAKE) --no-print-directory radcap
	@./scripts/demo.sh

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	@echo "CC $<"
	@$(CC) $(CFLAGS) $(if $(filter $<,$(UNSANITIZED)),-fno-sanitize=all) -MMD -MP -c $< -o $@

# radcap_version (pipeline/version.h): regenerated at every make, the file
# rewritten (and version.o rebuilt) only when the description changes.
VERSION = $(shell git describe --always --dirty --tags 2>/dev/null || echo unknown)
.PHONY: version-check
version-check:
$(BUILD)/version.c: version-check
	@mkdir -p $(BUILD)
	@printf '#include "pipeline/version.h"\nconst char *const radcap_version = "%s";\n' "$(VERSION)" >$@.new
	@if cmp -s $@.new $@; then rm -f $@.new; else mv $@.new $@; fi

$(BUILD)/version.o: $(BUILD)/version.c
	@echo "CC $< ($(VERSION))"
	@$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/libradcap.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

# The sanitizer build's program lives in its build directory; the normal one
# at the top, where the README runs it.
RADCAP := $(if $(filter build,$(BUILD)),radcap,$(BUILD)/radcap)

$(RADCAP): $(BUILD)/pipeline/main.o $(BUILD)/libradcap.a
	@echo "LINK $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_HELPER_OBJ) $(BUILD)/libradcap.a
	@echo "LINK $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# Runs every cmocka program from the repository root. SHARED_DIR tells tests
# where ../shared is; RADCAP_BIN lets integration tests run the program.
unit: $(RADCAP) $(TEST_BIN)
	@fail=0; for t in $(TEST_BIN); do \
	  echo "== $$t"; start=$$(date +%s); \
	  RADCAP_SHARED_DIR=$(SHARED_DIR) RADCAP_BIN=$(if $(filter /%,$(RADCAP)),$(RADCAP),./$(RADCAP)) RADCAP_PYTHON=$(PYTHON) RADCAP_BUILD=$(BUILD) \
	    RADCAP_ASAN=$(RADCAP_ASAN) $$t || fail=1; \
	  echo "== $$t took $$(( $$(date +%s) - start )) s"; \
	done; \
	if [ "$(RADCAP_ASAN)" != 1 ]; then \
	  echo "== tests/reference/test_reference.py (the PyTorch reference itself)"; \
	  if $(PYTHON) -c 'import torch' 2>/dev/null; then $(PYTHON) tests/reference/test_reference.py || fail=1; \
	  else echo "SKIP: $(PYTHON) cannot import torch (apt-get install python3-torch)"; fi; \
	fi; exit $$fail

# The batch scripts on a real one-node Slurm cluster (tests/slurm/run.sh);
# prints SKIP and passes when the machine cannot run one (not root, no
# slurm-wlm/munge).
slurm-test: $(RADCAP)
	@RADCAP=$(abspath $(RADCAP)) RADCAP_SHARED_DIR=$(SHARED_DIR) ./tests/slurm/run.sh

# The README's test command: dependencies, all unit and integration tests,
# the Slurm tests, the same unit tests under AddressSanitizer/UBSan, and a
# short run of every fuzzer.
# Each build compiles on every core (JOBS); the tests themselves run one
# program at a time. The project keeps CI under 30 minutes.
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

test: deps
	@$(MAKE) --no-print-directory -j$(JOBS) $(RADCAP) $(TEST_BIN)
	@$(MAKE) --no-print-directory unit
	@$(MAKE) --no-print-directory slurm-test
	@$(MAKE) --no-print-directory check-asan
	@$(MAKE) --no-print-directory fuzz FUZZ_SECONDS=8
	@echo "make test: all passed"

# Sanitizer build in its own directory. The full-size parity test is left to
# the optimised build (it would take minutes under ASan).
ASAN_MAKE = $(MAKE) --no-print-directory BUILD=build-asan \
	  OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" RADCAP_ASAN=1
check-asan:
	@$(ASAN_MAKE) -j$(JOBS) build-asan/radcap $(TEST_SRC:tests/%.c=build-asan/tests/%)
	@$(ASAN_MAKE) unit

# libFuzzer targets: the library is rebuilt with clang and coverage
# instrumentation; each tests/fuzz/fuzz_NAME.c runs for FUZZ_SECONDS from its
# seed corpus tests/fuzz/corpus/NAME (new inputs go to build-fuzz/corpus).
FUZZ_SRC := $(wildcard tests/fuzz/fuzz_*.c)
FUZZ_BIN := $(FUZZ_SRC:tests/fuzz/%.c=build-fuzz/%)
FUZZ_SECONDS ?= 60
FUZZ_FLAGS := -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined

# clang takes minutes to instrument each unrolled SIMD kernel (124 s for
# gemm_avx512.c alone) and no parser reaches them: the fuzz build compiles
# them uninstrumented (check-asan's gcc build still runs them under ASan).
FUZZ_UNSANITIZED := engine/gemm_avx512.c engine/gemm_avx512bf16.c engine/gemm_avx2.c

fuzz-build:
	@$(MAKE) --no-print-directory -j$(JOBS) BUILD=build-fuzz CC=clang OPT="$(FUZZ_FLAGS) -fsanitize=fuzzer-no-link" \
	  WARN="-Wall -Wno-unused-parameter" UNSANITIZED="$(FUZZ_UNSANITIZED)" build-fuzz/libradcap.a
	@$(MAKE) --no-print-directory -j$(JOBS) $(FUZZ_BIN)

build-fuzz/fuzz_%: tests/fuzz/fuzz_%.c build-fuzz/libradcap.a
	@echo "FUZZ $@"
	@clang -std=c11 -D_GNU_SOURCE $(FUZZ_FLAGS) -fsanitize=fuzzer -fopenmp -I. $(PKG_CFLAGS) $< build-fuzz/libradcap.a \
	  $(PKG_LIBS) -lopenblas -lm -o $@

# Two fuzzers at a time on two cores (JOBS): each is one process.
FUZZ_RUNS := $(FUZZ_BIN:build-fuzz/fuzz_%=fuzz-run-%)
.PHONY: $(FUZZ_RUNS)
fuzz: fuzz-build
	@$(MAKE) --no-print-directory -j$(JOBS) $(FUZZ_RUNS)

$(FUZZ_RUNS): fuzz-run-%:
	@mkdir -p build-fuzz/corpus/$*
	@build-fuzz/fuzz_$* -max_total_time=$(FUZZ_SECONDS) -print_final_stats=0 -close_fd_mask=3 \
	  build-fuzz/corpus/$* tests/fuzz/corpus/$* 2>build-fuzz/$*.log \
	  || { echo "== fuzz $* FAILED:"; tail -50 build-fuzz/$*.log; exit 1; }
	@echo "== fuzz $* ($(FUZZ_SECONDS) s): $$(grep -E '^Done [0-9]+ runs' build-fuzz/$*.log | tail -1)"

# Benchmarks (not part of `make test`): every tests/bench/bench_*.c is built;
# all but bench_engine run in turn (their JSON lines gathered into
# $(BUILD)/bench.jsonl); then scripts/bench.sh runs the engine next to the
# PyTorch reference and `radcap run` as 1 process against mpirun, prints the
# side-by-side table and writes $(BUILD)/bench.json.
BENCH_SRC := $(wildcard tests/bench/bench_*.c)
BENCH_BIN := $(BENCH_SRC:tests/bench/%.c=$(BUILD)/bench/%)

$(BUILD)/bench/%: $(BUILD)/tests/bench/%.o $(BUILD)/libradcap.a
	@mkdir -p $(dir $@)
	@echo "LINK $@"
	@$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

bench: $(BENCH_BIN) $(RADCAP)
	@rm -f $(BUILD)/bench.jsonl
	@for b in $(filter-out %/bench_engine,$(BENCH_BIN)); do echo "== $$b"; $$b | tee $(BUILD)/bench.out || exit 1; \
	  grep -E '^\{' $(BUILD)/bench.out | tail -1 >> $(BUILD)/bench.jsonl; done
	@echo "== figures gathered in $(BUILD)/bench.jsonl"
	@BUILD=$(BUILD) RADCAP_BIN=$(if $(filter /%,$(RADCAP)),$(RADCAP),./$(RADCAP)) PYTHON=$(PYTHON) \
	  SHARED_DIR=$(SHARED_DIR) ./scripts/bench.sh

clean:
	rm -rf $(BUILD) build-asan build-fuzz radcap

-include $(LIB_OBJ:.o=.d) $(TEST_BIN:%=%.d) $(TEST_HELPER_OBJ:.o=.d) $(BENCH_BIN:$(BUILD)/bench/%=$(BUILD)/tests/bench/%.d) $(BUILD)/pipeline/main.d
