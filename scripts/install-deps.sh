#!/usr/bin/env bash
# Installs the Debian 12 packages dyad-gateway builds and tests with
# (DESIGN.md §2), and the Python packages of the black-box suite.
set -euo pipefail
PKGS=(cmake ninja-build ccache g++ pkg-config
  libboost1.81-dev libboost-json1.81-dev libboost-url1.81-dev libcurl4-openssl-dev libssl-dev
  nlohmann-json3-dev libsqlite3-dev libpq-dev libspdlog-dev libcli11-dev prometheus-cpp-dev
  libgtest-dev libgmock-dev libbenchmark-dev libtcmalloc-minimal4)
if [ "${1:-}" = "--test" ]; then
  # wrk, valgrind: bench/run.sh; prometheus: its promtool checks deploy/prometheus/*.yml (test_observability.py);
  # postgresql-15: the unit tests' PostgreSQL cases (scripts/pg-test-cluster.sh) and the black-box pg_peer.py;
  # nginx: bench/v1_proxy_bench.py only (the upstream stub and the reverse proxy it is compared with, run as its
  # own processes on loopback; the package's service is not started where policy-rc.d forbids it)
  PKGS+=(clang-14 libclang-rt-14-dev wrk valgrind python3-pip prometheus postgresql-15 nginx)
fi
missing=()
for p in "${PKGS[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  SUDO=""
  [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -q
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -q --no-install-recommends "${missing[@]}"
fi
if [ "${1:-}" = "--test" ]; then
  python3 -m pip install -q --disable-pip-version-check -r "$(dirname "$0")/../tests/blackbox/requirements.txt"
fi
