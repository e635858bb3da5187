#!/usr/bin/env bash
# README command 2: install dependencies and test peers, build, and run every
# suite: unit tests (ctest), the same under ASan+UBSan and under
# ThreadSanitizer, the black-box pytest suite against the real binary, and a
# short run of each libFuzzer target. The fuzzer build (clang) also checks
# the lock annotations of the library (-Wthread-safety -Werror). The unit
# tests' PostgreSQL cases run against a throwaway PostgreSQL 15 started here
# (scripts/pg-test-cluster.sh) and stopped on exit.
set -euo pipefail
cd "$(dirname "$0")/.."
JOBS=${JOBS:-$(nproc)}
FUZZ_SECONDS=${FUZZ_SECONDS:-30}

step() { printf '\n==== %s (at %d s) ====\n' "$*" "$SECONDS"; }

step "dependencies"
bash scripts/install-deps.sh --test
bash scripts/install-peers.sh

step "PostgreSQL test cluster"
PG_TEST_DIR=$(mktemp -d /tmp/dyad-test-pg.XXXXXX)
trap 'bash scripts/pg-test-cluster.sh stop "$PG_TEST_DIR"' EXIT
# Fails the run (set -e) when the cluster cannot start: the PostgreSQL cases never skip here.
DYAD_TEST_PG_URL=$(bash scripts/pg-test-cluster.sh start "$PG_TEST_DIR")
export DYAD_TEST_PG_URL
echo "PostgreSQL test cluster at $DYAD_TEST_PG_URL"

step "build (release)"
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDYAD_BENCH=OFF  # benches: bench/run.sh, in build-bench
cmake --build build -j "$JOBS"

step "unit tests"
ctest --test-dir build --output-on-failure -j "$JOBS"

step "black-box tests"
DYAD_GATEWAY_BIN="$PWD/build/dyad-gateway" python3 -m pytest -q tests/blackbox

step "unit tests under ASan+UBSan"
cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDYAD_SANITIZE=ON -DDYAD_BENCH=OFF
cmake --build build-asan -j "$JOBS" --target dyad_unit_tests
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS"

step "unit tests under ThreadSanitizer"
CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DDYAD_TSAN=ON \
  -DDYAD_BENCH=OFF
cmake --build build-tsan -j "$JOBS" --target dyad_unit_tests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --test-dir build-tsan --output-on-failure -j "$JOBS"

step "fuzzers (${FUZZ_SECONDS}s each)"
# Built with -Wthread-safety -Werror too: the lock annotations of the library are checked here.
CC=clang-14 CXX=clang++-14 cmake -S . -B build-fuzz -G Ninja -DCMAKE_BUILD_TYPE=Debug -DDYAD_FUZZ=ON \
  -DDYAD_THREAD_SAFETY_ANALYSIS=ON -DDYAD_TESTS=OFF -DDYAD_BENCH=OFF
fuzzers=$(cd fuzz && ls *_fuzz.cc | sed 's/\.cc$//')
cmake --build build-fuzz -j "$JOBS" --target $fuzzers
for f in $fuzzers; do
  work=$(mktemp -d)
  mkdir "$work/corpus"
  # A fixed seed: the same inputs on every run, so CI results repeat.
  if ! ./build-fuzz/"$f" -seed=1 -max_total_time="$FUZZ_SECONDS" -max_len=8192 -artifact_prefix="$work/" \
      "$work/corpus" "fuzz/corpus/${f%_fuzz}" >"$work/log" 2>&1; then
    tail -n 60 "$work/log"
    echo "fuzzer $f failed; the input is in $work"
    exit 1
  fi
  echo "$f: $(grep -E '^Done' "$work/log")"
  rm -rf "$work"
done

echo
echo "all suites passed in $SECONDS s"
