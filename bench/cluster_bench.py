#!/usr/bin/env python3
"""Cluster mode (issue 14), in one run:

1. re-encryption of N credentials (default 100,000) by one key rotation, PostgreSQL and SQLite: the same
   bench binary (build/dyad_rotation_bench, local keyring, uncached) on each engine, one after the other;
2. provider GET throughput (`GET /admin/providers/{id}` of one hot provider, bearer token, keep-alive) through one
   instance and through three instances on the same PostgreSQL database: wrk with 32 connections in all (one wrk per
   instance, the connections split between them), the requests/s summed.

Usage: python3 bench/cluster_bench.py [--json] [--quick]
  --json   one JSON object on stdout instead of the table (bench/run.py reads it)
  --quick  10,000 credentials and 5 s of wrk instead of 100,000 and 10 s
PostgreSQL: a private server started by scripts/pg-test-cluster.sh (or the one at DYAD_TEST_PG_URL), a fresh
database for each measurement. Binaries: DYAD_BUILD_DIR (default build/): dyad-gateway, dyad_rotation_bench.
"""
import concurrent.futures
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("DYAD_BUILD_DIR", ROOT / "build")).resolve()
os.environ.setdefault("DYAD_GATEWAY_BIN", str(BUILD / "dyad-gateway"))
sys.path.insert(0, str(ROOT / "tests" / "blackbox"))
from cluster_harness import Cluster, Database, PgServer  # noqa: E402
from conftest import ADMIN_TOKEN, provider_body  # noqa: E402

JSON = "--json" in sys.argv[1:]
QUICK = "--quick" in sys.argv[1:]
N = 10000 if QUICK else 100000
WRK_SECS = 5 if QUICK else 10
CONNECTIONS = 32


def log(msg):
    print(msg, file=sys.stderr if JSON else sys.stdout, flush=True)


def reencryption(server, work):
    """credentials/s of a rotation alone, per engine: dyad_rotation_bench's "alone" figure."""
    out = {}
    for engine in ("postgresql", "sqlite"):
        args = [str(BUILD / "dyad_rotation_bench"), "--json"]
        db = None
        if engine == "postgresql":
            db = Database(server, work)
            args += ["--database-url", db.url]
        try:
            t0 = time.monotonic()
            p = subprocess.run(args + [str(N)], capture_output=True, text=True, timeout=3600)
            if p.returncode != 0:
                raise RuntimeError(f"dyad_rotation_bench on {engine} exited with {p.returncode}: "
                                   f"{(p.stderr.strip().splitlines() or ['(no output)'])[-1][:300]}")
            r = json.loads([line for line in p.stdout.splitlines() if line.startswith("{")][-1])
            r["wall_s"] = time.monotonic() - t0
            out[engine] = r
            log(f"  {engine}: {r['alone_per_s']:,.0f} credentials/s alone, {r['with_reader_per_s']:,.0f}/s with a "
                f"reader (seeding and all: {r['wall_s']:.0f} s)")
        finally:
            if db:
                db.drop()
    return out


def wrk(url, path, conns, secs):
    return subprocess.Popen(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--latency", "-s",
                             str(ROOT / "bench" / "wrk_json.lua"), "-H", f"Authorization: Bearer {ADMIN_TOKEN}",
                             url + path], stdout=subprocess.PIPE, text=True)


def get_throughput(server, work, instances):
    """req/s of GET /admin/providers/{id} through `instances` instances on one fresh database."""
    db = Database(server, work / f"get-{instances}")
    cluster = Cluster(work / f"get-{instances}", db, {"GATEWAY_LOG_LEVEL": "warn"})
    try:
        gws = cluster.start(instances)
        r = gws[0].call("POST", "/admin/providers", json=provider_body(slug="hot", credentials={"api_key": "sk-hot"}))
        assert r.status_code == 201, r.text
        pid = r.json()["data"]["id"]
        for gw in gws:
            assert gw.call("GET", f"/admin/providers/{pid}").status_code == 200
        conns = [CONNECTIONS // instances + (1 if i < CONNECTIONS % instances else 0) for i in range(instances)]
        procs = [wrk(gw.url, f"/admin/providers/{pid}", c, WRK_SECS) for gw, c in zip(gws, conns)]
        results = []
        for p in procs:
            stdout, _ = p.communicate(timeout=WRK_SECS + 60)
            if p.returncode != 0:
                raise RuntimeError(f"wrk exited with {p.returncode}")
            results.append(json.loads([line for line in stdout.splitlines() if line.startswith("{")][-1]))
        total = sum(x["requests_per_s"] for x in results)
        errors = sum(x["non_2xx"] + x["socket_errors"] for x in results)
        each = ", ".join(f"{x['requests_per_s']:,.0f}" for x in results)
        log(f"  {instances} instance(s): {total:,.0f} req/s ({each}), p99 {max(x['p99_ms'] for x in results):.2f} ms, "
            f"{errors} failed")
        return {"instances": instances, "requests_per_s": total, "per_instance": results, "failed": errors,
                "p99_ms": max(x["p99_ms"] for x in results), "p50_ms": max(x["p50_ms"] for x in results)}
    finally:
        cluster.stop()
        db.drop()


def main():
    with tempfile.TemporaryDirectory(prefix="dyad-cluster-bench-") as tmp:
        work = pathlib.Path(tmp)
        server = PgServer(os.environ["DYAD_TEST_PG_URL"]) if os.environ.get("DYAD_TEST_PG_URL") \
            else PgServer.start_private()
        try:
            log(f"re-encryption of {N:,} credentials (dyad_rotation_bench), PostgreSQL then SQLite:")
            rotation = reencryption(server, work)
            log(f"GET /admin/providers/{{id}} on PostgreSQL, wrk -c{CONNECTIONS} in all, {WRK_SECS} s:")
            one = get_throughput(server, work, 1)
            three = get_throughput(server, work, 3)
        finally:
            server.stop()
    result = {"credentials": N, "rotation": rotation, "get_one": one, "get_three": three,
              "get_ratio": three["requests_per_s"] / one["requests_per_s"], "wrk_seconds": WRK_SECS,
              "connections": CONNECTIONS}
    if JSON:
        print(json.dumps(result))
        return
    pg, lite = rotation["postgresql"], rotation["sqlite"]
    print(f"\n| measurement | PostgreSQL | SQLite |\n| --- | ---: | ---: |\n"
          f"| re-encryption of {N:,}, rotation alone | {pg['alone_per_s']:,.0f}/s | {lite['alone_per_s']:,.0f}/s |\n"
          f"| re-encryption with one reader | {pg['with_reader_per_s']:,.0f}/s | {lite['with_reader_per_s']:,.0f}/s |\n"
          f"| uncached read p99 during the rotation | {pg['during_p99_us']:.0f} µs | {lite['during_p99_us']:.0f} µs |")
    print(f"\n| GET /admin/providers/{{id}}, PostgreSQL | req/s | p99 (worst instance) |\n| --- | ---: | ---: |\n"
          f"| 1 instance | {one['requests_per_s']:,.0f} | {one['p99_ms']:.2f} ms |\n"
          f"| 3 instances | {three['requests_per_s']:,.0f} | {three['p99_ms']:.2f} ms |\n"
          f"| 3 / 1 | {result['get_ratio']:.2f}× | |")


if __name__ == "__main__":
    main()
