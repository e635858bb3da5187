#!/usr/bin/env bash
# HTTP load on this machine (issue 2): /healthz and an authenticated
# GET /admin/providers/{id}, with keep-alive, through wrk on loopback.
#   bash bench/load.sh [--json] [seconds] [connections]
# --json: one JSON object on stdout instead of wrk's lines (bench/run.py reads
# it), through bench/wrk_json.lua.
# Needs a Release build (build/dyad-gateway) and wrk (Debian package).
set -euo pipefail
cd "$(dirname "$0")/.."
JSON=0
if [ "${1:-}" = "--json" ]; then JSON=1; shift; fi
SECS=${1:-10}
CONNS=${2:-32}
BIN=${BIN:-build/dyad-gateway}  # BIN=/path/to/other/dyad-gateway to compare builds
DATA=$(mktemp -d)
TOKEN="bench-admin-token-$(head -c 8 /dev/urandom | od -An -tx1 | tr -d ' \n')"
LOG_LEVEL=${GATEWAY_LOG_LEVEL:-info}
GATEWAY_PORT=0 GATEWAY_DATA_DIR="$DATA" ENCRYPTION_KEY=$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n') \
  GATEWAY_ADMIN_API_KEY="$TOKEN" GATEWAY_LOG_LEVEL="$LOG_LEVEL" \
  "$BIN" serve > "$DATA/stdout" 2> "$DATA/access.log" &
PID=$!
trap 'kill $PID 2>/dev/null; wait $PID 2>/dev/null; rm -rf "$DATA"' EXIT
for _ in $(seq 100); do grep -q "listening on" "$DATA/stdout" 2>/dev/null && break; sleep 0.1; done
PORT=$(sed -n 's/^listening on .*:\([0-9]*\)$/\1/p' "$DATA/stdout")
URL="http://127.0.0.1:$PORT"
ID=$(curl -sf -H "Authorization: Bearer $TOKEN" -X POST "$URL/admin/providers" \
  -d '{"name":"Bench","slug":"bench","type":"http-sdk","credentials":{"api_key":"sk-bench"},"models":[{"dyadModelId":"m","adapterModelId":"a"}],"adapterConfig":{"baseUrl":"https://192.0.2.1"}}' \
  | python3 -c 'import json,sys; print(json.load(sys.stdin)["data"]["id"])')
if [ "$JSON" = 1 ]; then
  sep='{"connections": '"$CONNS"', "seconds": '"$SECS"', "routes": {'
  for target in "/healthz" "/admin/providers/$ID"; do
    line=$(wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -s bench/wrk_json.lua -H "Authorization: Bearer $TOKEN" \
      "$URL$target" | grep '^{')
    printf '%s"%s": %s' "$sep" "${target/$ID/\{id\}}" "$line"
    sep=', '
  done
  echo '}}'
  exit 0
fi
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs); log level $LOG_LEVEL"
for target in "/healthz" "/admin/providers/$ID"; do
  echo "== GET $target (wrk -t1 -c$CONNS -d${SECS}s --latency)"
  wrk -t1 -c"$CONNS" -d"${SECS}s" --latency -H "Authorization: Bearer $TOKEN" "$URL$target" \
    | grep -E "Requests/sec|^ +50%|^ +99%|Non-2xx|Socket errors"
done
