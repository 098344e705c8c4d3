# hybrid — build, test, demo. `make demo` and `make test` do all the set-up on a fresh Debian
# machine: missing packages are installed with apt-get (as root).
ifeq ($(origin CC),default)
CC       := gcc
endif
# clang (`make CC=clang test`) builds in its own folder, and contracts a·b + c into an FMA only
# where a file asks for it, as gcc does in C17 mode (the default of clang is to contract).
IS_CLANG := $(if $(findstring clang,$(shell $(CC) --version 2>/dev/null | head -n 1)),1)
ifeq ($(IS_CLANG),1)
BUILD    ?= build-clang
CC_FLAGS := -ffp-contract=off
endif
# The C++ compiler of the SentencePiece shim: clang++ beside clang (sanitizer flags must match), else g++.
ifeq ($(origin CXX),default)
CXX      := $(if $(IS_CLANG),clang++,g++)
endif
BUILD    ?= build
PREFIX   ?= /usr/local
PKGS     := libopenblas-openmp-dev libdnnl-dev libyaml-dev check libfftw3-dev gnuplot-nox pkg-config libpython3-stdlib \
            libopenmpi-dev openmpi-bin libsentencepiece-dev g++ nettle-dev libjansson-dev
OPT      ?= -O3
CFLAGS   := -std=c17 -D_GNU_SOURCE $(OPT) -march=native -fopenmp $(CC_FLAGS) -Wall -Wextra -Werror -MMD -MP \
            -I. -Iinclude -I/usr/include/x86_64-linux-gnu/openblas-openmp $(EXTRA_CFLAGS)
# The SentencePiece shim (experiments/tokenizer_sp.cc) is the only C++: it is built with CXXFLAGS.
CXXFLAGS := -std=c++17 -D_GNU_SOURCE $(OPT) -march=native $(CC_FLAGS) -Wall -Wextra -Werror -MMD -MP -I. -Iinclude \
            $(EXTRA_CFLAGS)
LDLIBS   := -lopenblas -ldnnl -lyaml -ljansson -lfftw3f -lsentencepiece -lsentencepiece_train -lnettle -lstdc++ -lm
# Open MPI (core/dist.c alone includes mpi.h; every program links it). Expanded when a recipe runs,
# i.e. after `deps` has installed it.
MPI_CFLAGS = $(shell pkg-config --cflags ompi-c)
MPI_LIBS   = $(shell pkg-config --libs ompi-c)
TEST_LIBS := -lcheck -lsubunit -lrt -lpthread
PYTHON   ?= /usr/bin/python3
DEMO_CONFIG ?= configs/jamba-like.yaml

LIB_SRC  := $(wildcard core/*.c layers/*.c layers/*/*.c models/*.c experiments/*.c)
LIB_CXX  := $(wildcard experiments/*.cc)
EXE_SRC  := $(wildcard cli/*.c bench/*.c)
TEST_SRC := $(wildcard tests/*.c) tests/fuzz/targets.c
EX_SRC   := $(wildcard examples/*.c)
LIB_OBJ  := $(LIB_SRC:%.c=$(BUILD)/%.o) $(LIB_CXX:%.cc=$(BUILD)/%.o)
EXE_OBJ  := $(EXE_SRC:%.c=$(BUILD)/%.o)
TEST_OBJ := $(TEST_SRC:%.c=$(BUILD)/%.o)
LIB      := $(BUILD)/libhybrid.a
EXE      := $(BUILD)/hybrid-exp
TESTS    := $(BUILD)/run-tests
EXAMPLES := $(EX_SRC:%.c=$(BUILD)/%)
# Example programs see the public header only (-Iinclude, not -I.), as an installed library's user does.
EX_CFLAGS := -std=c17 $(OPT) -march=native -fopenmp $(CC_FLAGS) -Wall -Wextra -Wpedantic -Werror -Iinclude $(EXTRA_CFLAGS)

.PHONY: all deps demo test test-avx2 asan fuzz crosscheck bench install clean
all: $(EXE) $(TESTS) $(EXAMPLES)

# Install the Debian packages the build needs, only those missing.
deps:
	@missing=""; for p in $(PKGS) $(EXTRA_PKGS); do \
	  dpkg-query -W -f='$${Status}' $$p 2>/dev/null | grep -q 'ok installed' || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "make: installing Debian packages:$$missing"; \
	  if [ "$$(id -u)" != 0 ]; then echo "make: need root to run apt-get install$$missing" >&2; exit 1; fi; \
	  export DEBIAN_FRONTEND=noninteractive; \
	  apt-get install -y -q $$missing || { apt-get update -q && apt-get install -y -q $$missing; }; \
	fi

$(BUILD)/%.o: %.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(BUILD)/%.o: %.cc | deps
	@mkdir -p $(dir $@)
	$(CXX) $(CXXFLAGS) -c $< -o $@

$(BUILD)/core/dist.o: core/dist.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) $(MPI_CFLAGS) -c $< -o $@

$(LIB): $(LIB_OBJ)
	@rm -f $@
	ar rcs $@ $^

$(EXE): $(EXE_OBJ) $(LIB)
	$(CC) $(CFLAGS) $(EXE_OBJ) $(LIB) $(LDLIBS) $(MPI_LIBS) -o $@

$(TESTS): $(TEST_OBJ) $(LIB)
	$(CC) $(CFLAGS) $(TEST_OBJ) $(LIB) $(LDLIBS) $(MPI_LIBS) $(TEST_LIBS) -o $@

$(BUILD)/examples/%: examples/%.c include/hybrid.h $(LIB)
	@mkdir -p $(dir $@)
	$(CC) $(EX_CFLAGS) $< $(LIB) $(LDLIBS) $(MPI_LIBS) -o $@

# The main job on the built-in default corpus.
demo: $(EXE)
	./$(EXE) $(DEMO_CONFIG)

# The whole test suite (Check), then the example programs, then (on an AVX-512 machine) the kernel
# suites again at the AVX2 vector width. CK_DEFAULT_TIMEOUT is per test, in seconds.
test: $(TESTS) $(EXE) $(EXAMPLES)
	CK_DEFAULT_TIMEOUT=600 HY_EXE=./$(EXE) ./$(TESTS)
	./$(BUILD)/examples/train_tiny $(BUILD)/examples/train_tiny.safetensors
	@if echo | $(CC) -march=native -dM -E - | grep -q __AVX512F__; then $(MAKE) --no-print-directory test-avx2; \
	else echo "make: no AVX-512 here: the native build already runs the kernels at the AVX2 width"; fi

# The suites of the vector kernels (core/simd.h: 16 floats wide with AVX-512, 8 with AVX2; gemm for
# core/tile_mm.c and the transpose) built with -mno-avx512f in their own folder (build-avx2/,
# build-clang-avx2/ with clang) and run, so the 8-wide code stays tested on an AVX-512 machine.
KERNEL_SUITES := gemm attention causal_conv mamba mamba2 rwkv7 gated_deltanet modal_conv s4d_hyena
test-avx2:
	$(MAKE) --no-print-directory BUILD=$(BUILD)-avx2 EXTRA_CFLAGS=-mno-avx512f $(BUILD)-avx2/run-tests
	@for s in $(KERNEL_SUITES); do echo "AVX2 build: suite $$s"; \
	  CK_DEFAULT_TIMEOUT=600 CK_RUN_SUITE=$$s ./$(BUILD)-avx2/run-tests || exit 1; done

# The suite under AddressSanitizer and UndefinedBehaviorSanitizer, in its own build folder.
asan:
	$(MAKE) BUILD=build-asan OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=address,undefined -fno-sanitize-recover=undefined" build-asan/run-tests build-asan/hybrid-exp
	CK_DEFAULT_TIMEOUT=1200 ASAN_OPTIONS=detect_leaks=0 HY_EXE=./build-asan/hybrid-exp HY_QUICK=1 ./build-asan/run-tests

# libFuzzer over every loader (docs/reliability.md): the targets of tests/fuzz/targets.c built
# with clang, ASan and UBSan in build-fuzz/, seeded from the shipped configs and from files the gcc
# build writes (tests/fuzz/seeds.sh), each run for FUZZ_SECONDS (tests/fuzz/run.sh).
FUZZ_SECONDS ?= 60
FUZZ_BUILD   ?= build-fuzz
FUZZ_NAMES   := yaml safetensors checkpoint state dump
fuzz: $(EXE) $(BUILD)/make-fuzz-model
	$(MAKE) CC=clang BUILD=$(FUZZ_BUILD) OPT="-O1 -g -fno-omit-frame-pointer" \
	  EXTRA_CFLAGS="-fsanitize=fuzzer-no-link,address,undefined -fno-sanitize=vptr -fno-sanitize-recover=undefined -Wno-pass-failed" \
	  $(FUZZ_NAMES:%=$(FUZZ_BUILD)/fuzz-%)
	bash tests/fuzz/seeds.sh ./$(EXE) ./$(BUILD)/make-fuzz-model $(FUZZ_BUILD)/seeds
	bash tests/fuzz/run.sh $(FUZZ_BUILD) $(FUZZ_SECONDS) $(FUZZ_NAMES)

# One libFuzzer program per target: tests/fuzz/fuzz_main.c with FUZZ_TARGET = hy_fuzz_<name>.
$(BUILD)/tests/fuzz/fuzz-%.o: tests/fuzz/fuzz_main.c | deps
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -DFUZZ_TARGET=hy_fuzz_$* -c $< -o $@

$(BUILD)/fuzz-%: $(BUILD)/tests/fuzz/fuzz-%.o $(BUILD)/tests/fuzz/targets.o $(LIB)
	$(CC) $(CFLAGS) -fsanitize=fuzzer $^ $(LDLIBS) -o $@

# The fuzz model's checkpoint and training state, for the seeds (tests/fuzz/make_model.c).
$(BUILD)/make-fuzz-model: $(BUILD)/tests/fuzz/make_model.o $(BUILD)/tests/fuzz/targets.o $(LIB)
	$(CC) $(CFLAGS) $^ $(LDLIBS) -o $@

# Compare against an independent PyTorch implementation of the SPEC (needs python3-torch).
crosscheck: $(EXE)
	@$(MAKE) --no-print-directory deps EXTRA_PKGS=python3-torch
	HY_EXE=./$(EXE) PYTHON=$(PYTHON) bash tests/crosscheck.sh

bench: $(EXE)
	./$(EXE) bench
	./$(EXE) bench decode --fill tile --budget 600 $(foreach c,$(wildcard configs/*.yaml),--config $(c))

install: $(EXE)
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/share/hybrid/configs/models
	install -m 755 $(EXE) $(DESTDIR)$(PREFIX)/bin/
	install -m 644 $(LIB) $(DESTDIR)$(PREFIX)/lib/
	install -m 644 include/hybrid.h $(DESTDIR)$(PREFIX)/include/
	install -m 644 configs/*.yaml $(DESTDIR)$(PREFIX)/share/hybrid/configs/
	install -m 644 configs/models/*.yaml $(DESTDIR)$(PREFIX)/share/hybrid/configs/models/
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|0.1.0|g' hybrid.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/hybrid.pc

clean:
	rm -rf build build-asan build-avx2 build-clang build-clang-avx2 build-fuzz

-include $(LIB_OBJ:.o=.d) $(EXE_OBJ:.o=.d) $(TEST_OBJ:.o=.d) $(wildcard $(BUILD)/tests/fuzz/*.d)
