# Thin wrapper over CMake: the README's two commands, and a few more.
#   make run          install missing packages, build, run the example pipeline
#   make test         install missing packages, build, run every test (CTest)
#   make test SANITIZE=1   the same, built with -fsanitize=address,undefined
#   make bench        the benchmark (W1, W2 against LuaJIT alone)
#   make bench-checkpoint   what checkpoints cost (W2 exactly_once vs none, 1M keys)
#   make bench-redis  W2 from a Redis Stream into a hash vs file -> file; 1M-key
#                     checkpoint to redis:// vs file:// (starts its own redis-server)
#   make fuzz         build spec/fuzz/*.c with clang + libFuzzer into build-fuzz/
#                     and run each for FUZZ_TIME seconds (default 60)
#   make docker-test  build docker/Dockerfile with podman and run it (root; slow:
#                     not part of `make test`; see docker/test.sh)
BUILD ?= build
SANITIZE ?= 0
ifeq ($(SANITIZE),1)
  BUILD := build-asan
  CMAKE_FLAGS += -DSLUICE_SANITIZE=ON -DCMAKE_BUILD_TYPE=Debug
else
  CMAKE_FLAGS += -DCMAKE_BUILD_TYPE=RelWithDebInfo
endif
JOBS ?= $(shell nproc 2>/dev/null || echo 2)

.PHONY: all deps build run test bench bench-checkpoint bench-redis fuzz docker-test clean format

all: build

deps:
	@tools/deps.sh

$(BUILD)/CMakeCache.txt:
	cmake -S . -B $(BUILD) $(CMAKE_FLAGS)

build: deps $(BUILD)/CMakeCache.txt
	cmake --build $(BUILD) -j $(JOBS)

run: build
	@mkdir -p out
	$(BUILD)/sluice run conf/wordcount.conf

test: build
	cd $(BUILD) && ctest --output-on-failure -j $(JOBS) --repeat until-pass:2

bench: build
	luajit bench/run.lua $(BUILD)/sluice

bench-checkpoint: build
	luajit bench/checkpoint.lua $(BUILD)/sluice

bench-redis: build
	luajit bench/redis.lua $(BUILD)/sluice

FUZZ_TIME ?= 60
fuzz: deps
	cmake -S . -B build-fuzz -DCMAKE_C_COMPILER=clang -DSLUICE_FUZZ=ON -DSLUICE_SANITIZE=OFF -DCMAKE_BUILD_TYPE=Debug
	cmake --build build-fuzz -j $(JOBS) --target fuzz_codec
	build-fuzz/fuzz_codec -max_total_time=$(FUZZ_TIME)

docker-test:
	docker/test.sh

format:
	clang-format -i server/*.c server/*.h bindings/*.c spec/c/*.c bench/*.c 2>/dev/null || true

clean:
	rm -rf build build-asan build-fuzz
