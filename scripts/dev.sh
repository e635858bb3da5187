#!/usr/bin/env bash
# README command 1: install dependencies, build, and serve on the embedded
# default (environment provider, SQLite, local keyring) in dev mode.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DDYAD_TESTS=OFF -DDYAD_BENCH=OFF
cmake --build build --target dyad-gateway
exec build/dyad-gateway serve --dev "$@"
