#!/usr/bin/env bash
# Every figure of BENCHMARKS.md in one command (issue 15): builds the Release
# binaries with -DDYAD_BENCH=ON in build-bench/ (its own build directory, so
# build/ is left alone; incremental after the first time), then runs
# bench/run.py, which runs each benchmark beside its comparison and prints one
# markdown table.
#   bash bench/run.sh [--quick] [--write]
#     --quick  under 5 minutes on 2 cores (the build excluded)
#     --write  also put the table into BENCHMARKS.md between its markers
# Needs wrk, valgrind, nginx, the curl CLI and tests/blackbox/requirements.txt
# (scripts/install-deps.sh --test); peers as the black-box tests use them; PostgreSQL 15
# for the cluster rows (bench/cluster_bench.py starts its own server).
set -euo pipefail
cd "$(dirname "$0")/.."
for arg in "$@"; do
  case "$arg" in
    --quick|--write) ;;
    *) echo "bench/run.sh: unknown option '$arg' (options: --quick, --write)" >&2; exit 2 ;;
  esac
done
export DYAD_BUILD_DIR="$PWD/build-bench"
# Configured every time (a second or two) so that the directory is Release with the benches whatever was set before.
cmake -S . -B "$DYAD_BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDYAD_BENCH=ON >&2
cmake --build "$DYAD_BUILD_DIR" -j2 --target dyad-gateway dyad_bench dyad_rotation_bench dyad_aws_get_bench \
  dyad_vault_get_bench dyad_azure_get_bench >&2
exec python3 bench/run.py "$@"
