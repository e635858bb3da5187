#!/usr/bin/env python3
"""Instructions per steady-state cache-miss GetSecretValue (issue 15), counted by callgrind.

Starts moto_server as bench/aws_bench.py does (no signature checking), creates the same ~400-byte secret, and runs
`valgrind --tool=callgrind build/dyad_aws_get_bench ENDPOINT NAME N` for N = 100 and N = 300: the difference over
200 is what one more request costs, start-up and the first connection excluded. Prints both totals and the
per-request figure; the callgrind files stay in the working directory (callgrind.aws.N.out) for
`callgrind_annotate`. Needs valgrind (scripts/install-deps.sh --test) and a -DDYAD_BENCH=ON build.

Usage: python3 bench/aws_callgrind.py
"""
import pathlib
import re
import subprocess
import sys

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from aws_bench import ROOT, moto_with_secret  # noqa: E402


def main():
    with moto_with_secret() as (endpoint, name, env, _):
        totals = {}
        for n in (100, 300):
            run = subprocess.run(["valgrind", "--tool=callgrind", f"--callgrind-out-file=callgrind.aws.{n}.out",
                                  str(ROOT / "build" / "dyad_aws_get_bench"), endpoint, name, str(n)],
                                 env=env, capture_output=True, text=True, check=True)
            totals[n] = int(re.search(r"Collected : (\d+)", run.stderr).group(1))
            print(f"N={n}: {totals[n]:,} instructions")
        print(f"per request: {(totals[300] - totals[100]) / 200:,.0f} instructions")


if __name__ == "__main__":
    main()
