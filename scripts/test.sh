#!/usr/bin/env bash
# README command 2: install dependencies and test peers, build, and run every
# suite: the black-box pytest suite against the release binary, the unit
# tests (ctest) under ASan+UBSan and under ThreadSanitizer, and a short run
# of each libFuzzer target. The ThreadSanitizer build (clang) also checks
# the lock annotations (-Wthread-safety as errors). The unit
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
# The binary for the black-box suite, the backend contract suite it runs against the real peers, and the cache's
# tests (their allocation count needs the plain allocator). The full unit suite is built and run under the
# sanitizers below: each build of it costs minutes on 2 cores.
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDYAD_BENCH=OFF  # benches: bench/run.sh, in build-bench
cmake --build build -j "$JOBS" --target dyad-gateway dyad_cache_tests dyad_contract_tests
./build/dyad_cache_tests

step "black-box tests"
DYAD_GATEWAY_BIN="$PWD/build/dyad-gateway" python3 -m pytest -q tests/blackbox

step "build: unit tests and fuzzers under ASan+UBSan (clang)"
# One tree for both: the fuzzers need clang and ASan; only the libraries carry libFuzzer's coverage.
fuzzers=$(cd fuzz && ls *_fuzz.cc | sed 's/\.cc$//')
CC=clang-14 CXX=clang++-14 cmake -S . -B build-asan -G Ninja -DCMAKE_BUILD_TYPE=Debug \
  -DCMAKE_CXX_FLAGS_DEBUG="-O0 -gline-tables-only" -DDYAD_SANITIZE=ON -DDYAD_FUZZ=ON -DDYAD_BENCH=OFF
cmake --build build-asan -j "$JOBS" --target dyad_unit_tests $fuzzers

step "unit tests under ASan+UBSan"
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
  ctest --test-dir build-asan --output-on-failure -j "$JOBS"

step "fuzzers (${FUZZ_SECONDS}s each)"
for f in $fuzzers; do
  work=$(mktemp -d)
  mkdir "$work/corpus"
  # A fixed seed: the same inputs on every run, so CI results repeat.
  if ! ./build-asan/"$f" -seed=1 -max_total_time="$FUZZ_SECONDS" -max_len=8192 -artifact_prefix="$work/" \
      "$work/corpus" "fuzz/corpus/${f%_fuzz}" >"$work/log" 2>&1; then
    tail -n 60 "$work/log"
    echo "fuzzer $f failed; the input is in $work"
    exit 1
  fi
  echo "$f: $(grep -E '^Done' "$work/log")"
  rm -rf "$work"
done

step "unit tests under ThreadSanitizer (clang, lock annotations checked)"
# -Wthread-safety as errors: the lock annotations of the library and the tests are checked by this build.
CC=clang-14 CXX=clang++-14 cmake -S . -B build-tsan -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
  -DCMAKE_CXX_FLAGS_RELWITHDEBINFO="-O1 -gline-tables-only" -DDYAD_TSAN=ON -DDYAD_THREAD_SAFETY_ANALYSIS=ON \
  -DDYAD_BENCH=OFF
cmake --build build-tsan -j "$JOBS" --target dyad_unit_tests
TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1" ctest --test-dir build-tsan --output-on-failure -j "$JOBS"

echo
echo "all suites passed in $SECONDS s"
