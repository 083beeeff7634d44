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

PKGS    := vips libcjson sqlite3
PKG_CFLAGS := $(shell pkg-config --cflags $(PKGS) 2>/dev/null)
PKG_LIBS   := $(shell pkg-config --libs $(PKGS) 2>/dev/null)

OPT      ?= -O2 -march=x86-64-v3 -mtune=native
WARN     := -Wall -Wextra -Wshadow -Wno-unused-parameter -Wvla
CFLAGS   += -std=c11 -D_GNU_SOURCE $(OPT) -g $(WARN) -fopenmp -I. $(PKG_CFLAGS)
LDLIBS   += $(PKG_LIBS) -lopenblas -fopenmp -lm

LIB_SRC  := $(wildcard engine/*.c io/*.c scheduler/*.c) $(filter-out pipeline/main.c,$(wildcard pipeline/*.c))
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o)
TEST_SRC := $(wildcard tests/test_*.c)
TEST_BIN := $(TEST_SRC:tests/%.c=$(BUILD)/tests/%)
TEST_HELPERS := $(wildcard tests/helpers/*.c)
TEST_HELPER_OBJ := $(TEST_HELPERS:%.c=$(BUILD)/%.o)

.PHONY: all test unit check-asan fuzz bench clean demo deps
all: radcap

$(BUILD)/%.o: %.c
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -MMD -MP -c $< -o $@

$(BUILD)/libradcap.a: $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

radcap: $(BUILD)/pipeline/main.o $(BUILD)/libradcap.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS)

$(BUILD)/tests/%: $(BUILD)/tests/%.o $(TEST_HELPER_OBJ) $(BUILD)/libradcap.a
	$(CC) $(CFLAGS) -o $@ $^ $(LDLIBS) -lcmocka

# Runs every cmocka program from the repository root. SHARED_DIR tells tests
# where ../shared is; RADCAP_BIN lets integration tests run the program.
unit: radcap $(TEST_BIN)
	@fail=0; for t in $(TEST_BIN); do \
	  echo "== $$t"; \
	  RADCAP_SHARED_DIR=$(SHARED_DIR) RADCAP_BIN=./radcap RADCAP_PYTHON=$(PYTHON) RADCAP_BUILD=$(BUILD) $$t || fail=1; \
	done; exit $$fail

test: unit
	@echo "make test: all test programs passed"

check-asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined" \
	  LDFLAGS="-fsanitize=address,undefined" unit

clean:
	rm -rf $(BUILD) build-asan build-fuzz radcap

-include $(LIB_OBJ:.o=.d) $(TEST_BIN:%=%.d) $(BUILD)/pipeline/main.d
