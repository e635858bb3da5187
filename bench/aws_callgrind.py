#!/usr/bin/env python3
"""Instructions per steady-state cache-miss GetSecretValue (issue 15), counted by callgrind.

Starts moto_server as bench/aws_bench.py does (no signature checking), creates the same ~400-byte secret, and runs
`valgrind --tool=callgrind build/dyad_aws_get_bench ENDPOINT NAME N` for N = 100 and N = 300: the difference over
200 is what one more request costs, start-up and the first connection excluded. Prints both totals and the
per-request figure; the callgrind files stay in the working directory (callgrind.aws.N.out) for
`callgrind_annotate`. Needs valgrind (scripts/install-deps.sh --test) and a -DDYAD_BENCH=ON build.

Usage: python3 bench/aws_callgrind.py
"""
import json
import os
import pathlib
import re
import subprocess
import sys

import boto3

ROOT = pathlib.Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests" / "blackbox"))
from aws_peers import REGION, free_port, wait_port  # noqa: E402

KEY, SECRET = "AKIABENCHMARK0000000", "bench-secret-key"


def main():
    port = free_port()
    endpoint = f"http://127.0.0.1:{port}"
    moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, moto, "moto_server")
        sm = boto3.client("secretsmanager", endpoint_url=endpoint, region_name=REGION, aws_access_key_id=KEY,
                          aws_secret_access_key=SECRET)
        name = "dyad-gateway/providers/bench"
        sm.create_secret(Name=name, SecretString=json.dumps({"v": 1, "kms": "aws-kms", "ct": "x" * 300}))
        env = {**os.environ, "AWS_ACCESS_KEY_ID": KEY, "AWS_SECRET_ACCESS_KEY": SECRET, "AWS_REGION": REGION}
        totals = {}
        for n in (100, 300):
            run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file=callgrind.aws.{n}.out",
                                  str(ROOT / "build" / "dyad_aws_get_bench"), endpoint, name, str(n)],
                                 env=env, capture_output=True, text=True, check=True)
            totals[n] = int(re.search(r"Collected : (\d+)", run.stderr).group(1))
            print(f"N={n}: {totals[n]:,} instructions")
        print(f"per request: {(totals[300] - totals[100]) / 200:,.0f} instructions")
    finally:
        moto.terminate()
        moto.wait()


if __name__ == "__main__":
    main()
