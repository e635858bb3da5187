#!/usr/bin/env python3
"""Key rotation over the AWS backend with a far-away service: moto behind a loopback proxy that adds DELAY_MS to
every request (a cloud round trip), N providers, one rotation run per AWS_CONCURRENCY value, all in one run.

Usage: python3 bench/aws_rotation_bench.py [--json] [N] [DELAY_MS] [CONCURRENCY ...]   (defaults: 200 20 1 8)
  --json  one JSON object on stdout instead of the table (bench/run.py reads it)
The gateway is DYAD_GATEWAY_BIN (default build/dyad-gateway).
"""
import concurrent.futures
import json
import pathlib
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "blackbox"))
from aws_peers import Moto  # noqa: E402
from conftest import Gateway, provider_body  # noqa: E402
from fault_proxy import FaultProxy  # noqa: E402

JSON = "--json" in sys.argv[1:]
ARGS = [a for a in sys.argv[1:] if a != "--json"]
N = int(ARGS[0]) if len(ARGS) > 0 else 200
DELAY_MS = float(ARGS[1]) if len(ARGS) > 1 else 20
LEVELS = [int(x) for x in ARGS[2:]] or [1, 8]


def rotate_once(work, moto, proxy, concurrency):
    alias = f"bench-{concurrency}"
    moto.make_key(alias)
    gw = Gateway(work / f"gw-{concurrency}", moto.gateway_env(
        AWS_ENDPOINT_URL=proxy.endpoint, ENCRYPTION_KEY_ID=alias, SECRETS_PREFIX=f"bench-{concurrency}",
        AWS_CONCURRENCY=str(concurrency), GATEWAY_LOG_LEVEL="warn")).start()
    try:
        def make(i):
            r = gw.call("POST", "/admin/providers", json=provider_body(slug=f"p-{i}", credentials={"api_key": f"k{i}"}))
            assert r.status_code == 201, r.text
        with concurrent.futures.ThreadPoolExecutor(8) as ex:
            list(ex.map(make, range(N)))
        run = gw.call("POST", "/admin/secrets/key-rotation/perform", json={}).json()["data"]
        while True:
            st = gw.call("GET", "/admin/secrets/key-rotation/status").json()["data"]
            h = st["history"][0] if st["history"] else None
            if st["inProgress"] is None and h and h["id"] == run["id"]:
                assert h["status"] == "completed" and h["reencrypted"] == N, h
                return h["durationMs"] / 1000
            time.sleep(0.1)
    finally:
        gw.stop()


def main():
    with tempfile.TemporaryDirectory() as tmp:
        work = pathlib.Path(tmp)
        moto = Moto(work / "moto", verify_signatures=False)
        proxy = FaultProxy(moto.endpoint, delay=DELAY_MS / 1000)
        try:
            results = {c: rotate_once(work, moto, proxy, c) for c in LEVELS}
        finally:
            proxy.stop()
            moto.stop()
    base = results[LEVELS[0]]
    if JSON:
        print(json.dumps({"credentials": N, "delay_ms": DELAY_MS,
                          "runs": [{"concurrency": c, "seconds": secs, "credentials_per_s": N / secs,
                                    "speedup": base / secs} for c, secs in results.items()]}))
        return
    print(f"{N} credentials, {DELAY_MS:g} ms added to every AWS request\n")
    print("| AWS_CONCURRENCY | rotation s | credentials/s | speed-up |")
    print("| ---: | ---: | ---: | ---: |")
    for c, secs in results.items():
        print(f"| {c} | {secs:.2f} | {N / secs:.0f} | {base / secs:.1f}× |")


if __name__ == "__main__":
    main()
