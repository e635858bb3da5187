#!/usr/bin/env python3
"""Cache-miss GetSecretValue round trip against moto_server, three clients in one run (issue 5):

  ours   build/dyad_aws_get_bench: SecretsManagerStore::Get (SigV4, JSON, pooled libcurl keep-alive)
  boto3  client.get_secret_value on a warm client
  floor  the same request unsigned, sent by the curl CLI on one kept-alive connection (curl -w %{time_total});
         it carries a fixed Authorization header that nobody computes, because moto picks the service from the
         credential scope in it (without one the request is routed to S3)

moto runs without signature checking here so that it does the same work for all three. Rounds alternate between the
clients so that machine noise falls on all of them. Prints p50/p99 per client and the client-side overhead
(round trip minus the floor's) of ours and boto3's, and their ratio.

With --instructions it times nothing: it counts the instructions of ours per steady-state GetSecretValue instead,
`valgrind --tool=callgrind` over N = 100 and N = 300 requests, (I300 - I100) / 200, so that start-up cancels out.
It counts twice: against moto's WSGI app served by waitress, which keeps connections alive as AWS does ("steady
state": the pooled handle reuses its connection; the headline figure), and against moto_server itself, whose werkzeug
server answers every request with "Connection: close", so that each request there also pays a new TCP connection.
The timed comparison keeps moto_server (werkzeug) for all three clients, as in every earlier figure.

Usage: python3 bench/aws_bench.py [--json] [--instructions] [ROUNDS] [PER_ROUND]
  --json  one JSON object on stdout instead of the table (bench/run.py reads it)
The bench binary is DYAD_BUILD_DIR/dyad_aws_get_bench (default build/).
"""
import contextlib
import json
import os
import pathlib
import subprocess
import sys
import tempfile
import time

import boto3

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "tests" / "blackbox"))
from aws_peers import REGION, free_port, wait_port  # noqa: E402

ROOT = pathlib.Path(__file__).resolve().parents[1]
FLAGS = {a for a in sys.argv[1:] if a.startswith("--")}
ARGS = [a for a in sys.argv[1:] if not a.startswith("--")]
if FLAGS - {"--json", "--instructions"}:
    raise SystemExit(f"unknown option {sorted(FLAGS - {'--json', '--instructions'})[0]}: see the usage in the opening comment")
ROUNDS = int(ARGS[0]) if len(ARGS) > 0 else 20
PER_ROUND = int(ARGS[1]) if len(ARGS) > 1 else 100
BENCH = pathlib.Path(os.environ.get("DYAD_BUILD_DIR", ROOT / "build")) / "dyad_aws_get_bench"
KEY, SECRET = "AKIABENCHMARK0000000", "bench-secret-key"


def pct(samples, p):
    s = sorted(samples)
    return s[min(len(s) - 1, int(p / 100 * len(s)))]


# moto's own WSGI app (as moto.server builds it) behind waitress, an HTTP/1.1 server that keeps connections alive.
WAITRESS = """import sys
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app
from waitress import serve
serve(DomainDispatcherApplication(create_backend_app), host="127.0.0.1", port=int(sys.argv[1]), threads=2,
      _quiet=True)
"""


@contextlib.contextmanager
def moto_with_secret(keep_alive=False):
    """moto without signature checks, holding the bench's ~400-byte secret: (endpoint, name, env, client).
    keep_alive: served by waitress (connections kept); else moto_server (werkzeug: "Connection: close" on every answer).
    """
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    command = ([sys.executable, "-c", WAITRESS, str(port)] if keep_alive else
               [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)])
    moto = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, moto, "moto_server")
        sm = boto3.client("secretsmanager", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET)
        name = "dyad-gateway/providers/bench"
        # About the size of a sealed provider credential envelope.
        sm.create_secret(Name=name, SecretString=json.dumps({"v": 1, "kms": "aws-kms", "ct": "x" * 300}))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": REGION}
        yield endpoint, name, env, sm
    finally:
        moto.terminate()
        moto.wait()


def main():
    if "--instructions" in FLAGS:
        return count_instructions()
    with moto_with_secret() as (endpoint, name, env, sm):
        body = json.dumps({"SecretId": name, "VersionStage": "AWSCURRENT"})
        samples = {"ours": [], "boto3": [], "floor": []}
        for _ in range(ROUNDS):
            out = subprocess.run([str(BENCH), endpoint, name, str(PER_ROUND)],
                                 env=env, capture_output=True, text=True, check=True).stdout
            samples["ours"] += [float(x) for x in out.split()]
            sm.get_secret_value(SecretId=name)  # warm
            for _ in range(PER_ROUND):
                t0 = time.perf_counter()
                sm.get_secret_value(SecretId=name, VersionStage="AWSCURRENT")
                samples["boto3"].append((time.perf_counter() - t0) * 1e6)
            args = ["curl", "-s", "-o", "/dev/null", "-w", "%{time_total}\n", "-H",
                    "Content-Type: application/x-amz-json-1.1", "-H", "X-Amz-Target: secretsmanager.GetSecretValue",
                    "-H", f"Authorization: AWS4-HMAC-SHA256 Credential={KEY}/20260101/{REGION}/secretsmanager/"
                          "aws4_request, SignedHeaders=host, Signature=0", "--data-binary", body]
            for _ in range(PER_ROUND):
                args += ["--url", endpoint + "/", "-o", "/dev/null"]
            out = subprocess.run(args, capture_output=True, text=True, check=True).stdout
            samples["floor"] += [float(x) * 1e6 for x in out.split()]
        floor50 = pct(samples["floor"], 50)
        ours, theirs = pct(samples["ours"], 50) - floor50, pct(samples["boto3"], 50) - floor50
        if "--json" in FLAGS:
            print(json.dumps({"rounds": ROUNDS, "per_round": PER_ROUND, "ratio": ours / theirs,
                              **{k: {"p50_us": pct(v, 50), "p99_us": pct(v, 99)} for k, v in samples.items()}}))
            return
        print(f"{ROUNDS} rounds x {PER_ROUND} requests per client, moto_server on loopback\n")
        print("| client | p50 µs | p99 µs | overhead over the floor at p50 µs |")
        print("| --- | --- | --- | --- |")
        for k in ("ours", "boto3", "floor"):
            over = "" if k == "floor" else f"{pct(samples[k], 50) - floor50:.0f}"
            print(f"| {k} | {pct(samples[k], 50):.0f} | {pct(samples[k], 99):.0f} | {over} |")
        print(f"\nclient-side overhead ratio ours/boto3 at p50: {ours / theirs:.3f}")


def callgrind_totals(endpoint, name, env, tag):
    """Callgrind totals of ours for N = 100 and N = 300 requests (DYAD_CALLGRIND_DIR: keep the files there, as
    callgrind.TAG.N)."""
    totals = {}
    keep = os.environ.get("DYAD_CALLGRIND_DIR")
    with tempfile.TemporaryDirectory(prefix="aws-callgrind-") as tmp:
        for n in (100, 300):
            out = pathlib.Path(keep or tmp) / f"callgrind.{tag}.{n}"
            subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file={out}", str(BENCH), endpoint, name,
                            str(n)], env=env, capture_output=True, text=True, check=True)
            totals[n] = next(int(line.split()[1]) for line in out.read_text().splitlines()
                             if line.startswith("totals:") or line.startswith("summary:"))
    return totals


def count_instructions():
    """Instructions per steady-state request of ours: callgrind totals for N = 100 and N = 300, difference / 200,
    against a keep-alive server (the figure) and against moto_server's connection per request."""
    results = {}
    for keep_alive in (True, False):
        with moto_with_secret(keep_alive) as (endpoint, name, env, _):
            totals = callgrind_totals(endpoint, name, env, "keepalive" if keep_alive else "close")
        results[keep_alive] = (totals, (totals[300] - totals[100]) / 200)
    (ka, per), (cpr, per_close) = results[True], results[False]
    if "--json" in FLAGS:
        print(json.dumps({"instructions_100": ka[100], "instructions_300": ka[300], "per_request": per,
                          "close_instructions_100": cpr[100], "close_instructions_300": cpr[300],
                          "per_request_close": per_close}))
    else:
        print(f"callgrind, keep-alive (moto app on waitress): {ka[100]:,} instructions for 100 requests, "
              f"{ka[300]:,} for 300: {per:,.0f} per request in steady state")
        print(f"callgrind, connection per request (moto_server, werkzeug): {cpr[100]:,} for 100, {cpr[300]:,} for "
              f"300: {per_close:,.0f} per request")


if __name__ == "__main__":
    main()
