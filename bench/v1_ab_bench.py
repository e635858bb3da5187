#!/usr/bin/env python3
"""Two dyad-gateway binaries, A (before) and B (after), on the /v1 path against the same upstream stub, alternated:
the paired comparison for a change whose effect is smaller than the run-to-run noise of v1_proxy_bench.py.

On this kind of shared 2-core machine one binary's CPU per request moves by ±10% from one full run to the next, so a
5% change cannot be seen by running the full bench once before and once after. Here the two binaries take turns
against one stub (nginx, as in v1_proxy_bench.py), in A B, B A, A B, ... order so that a drift of the machine during
the run weighs on both; each turn is a fresh gateway, a 1 s warm-up, then wrk with N keep-alive clients (default 16)
for S seconds. Per turn: requests/s and the gateway's CPU µs per request (user + system of its process, /proc).
Reported per mode: each pair's B/A ratios, their medians, and in how many pairs B used less CPU than A. Then one
client: A and B run side by side and bench/one_client_probe.cc sends one request to the stub directly, one through A
and one through B per round, in a shuffled order (--rounds, default 10,000): p50/p99 of each, measured in the same
seconds (latency at one client moves with the machine far more than a change moves it).

Usage: python3 bench/v1_ab_bench.py A_BINARY B_BINARY [--pairs 6] [--seconds 6] [--clients 16] [--modes json sse]
       [--rounds 10000] [--body-kib 0] [--json]
Needs nginx and wrk (scripts/install-deps.sh --test). Build the "before" binary from another worktree, e.g.
`git worktree add /tmp/before <rev> && cmake -S /tmp/before -B /tmp/before/build-bench -G Ninja
-DCMAKE_BUILD_TYPE=Release -DDYAD_TESTS=OFF -DDYAD_BENCH=OFF && ninja -C /tmp/before/build-bench dyad-gateway`.
"""
import argparse
import datetime
import json
import pathlib
import shutil
import statistics
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_proxy_bench as bench  # noqa: E402  (the stub, the gateway's set-up, wrk and the CPU count are shared)


def turn(binary, work, stub_port, mode, opts):
    """One gateway run of `binary`: {"requests_per_s", "cpu_us_per_request", "failed"}."""
    work.mkdir()
    gw, url = bench.start_gateway(work, stub_port, binary)
    try:
        target = url + bench.CLIENT_PATH["gateway"][mode]
        bench.check_path("gateway", target, mode, bench.CLIENT_TOKEN)
        script = bench.wrk_script(work, mode, bench.CLIENT_TOKEN)
        bench.wrk(target, script, opts.clients, 1)  # warm-up: the connections and the upstream pool
        cpu0 = bench.session_cpu_seconds(gw.proc.pid)  # its own session (start_new_session)
        r = bench.wrk(target, script, opts.clients, opts.seconds)
        cpu = bench.session_cpu_seconds(gw.proc.pid) - cpu0
        return {"requests_per_s": r["requests_per_s"], "cpu_us_per_request": 1e6 * cpu / max(r["requests"], 1),
                "failed": r["failed"]}
    finally:
        gw.stop()


def one_client(work, stub_port, mode, opts, probe):
    """A and B side by side, one client interleaved with direct (one_client_probe.cc): {"direct", "a", "b"}, each
    with requests, failed and p50/p90/p99/p999/max in µs."""
    specs = [bench.probe_request(work, "direct", mode, f"http://127.0.0.1:{stub_port}", bench.UPSTREAM_KEY)]
    running = []
    try:
        for which in ("a", "b"):
            d = work / f"{mode}-one-{which}"
            d.mkdir()
            gw, url = bench.start_gateway(d, stub_port, getattr(opts, which))
            running.append(gw)
            specs.append(bench.probe_request(d, "gateway", mode, url, bench.CLIENT_TOKEN, name=which))
        return bench.one_client_interleaved(probe, specs, argparse.Namespace(probe_rounds=opts.rounds))
    finally:
        for gw in running:
            gw.stop()


def summarize(pairs):
    """pairs: [(a_turn, b_turn)] of one mode. The medians of A, B and of the per-pair B/A ratios."""
    def ratio(b, a):
        return b / a if a else float("nan")  # a turn that served nothing
    cpu_ratio = [ratio(b["cpu_us_per_request"], a["cpu_us_per_request"]) for a, b in pairs]
    rps_ratio = [ratio(b["requests_per_s"], a["requests_per_s"]) for a, b in pairs]
    return {
        "pairs": len(pairs),
        "a_cpu_us": statistics.median(a["cpu_us_per_request"] for a, _ in pairs),
        "b_cpu_us": statistics.median(b["cpu_us_per_request"] for _, b in pairs),
        "cpu_ratio": statistics.median(cpu_ratio),
        "b_less_cpu": sum(r < 1 for r in cpu_ratio),
        "a_rps": statistics.median(a["requests_per_s"] for a, _ in pairs),
        "b_rps": statistics.median(b["requests_per_s"] for _, b in pairs),
        "rps_ratio": statistics.median(rps_ratio),
        "failed": sum(a["failed"] + b["failed"] for a, b in pairs),
    }


def table(results, opts):
    lines = [f"A = `{opts.a}`, B = `{opts.b}`; {opts.pairs} pairs (A B, B A, ...), wrk -c{opts.clients} "
             f"for {opts.seconds} s per turn; request bodies of {len(bench.REQUEST['json']):,} bytes; medians. Measured {results['started']}, load at the start: "
             f"`{results['uptime']}`.", "",
             "| mode | CPU µs/request A | B | B/A (median of pairs) | pairs where B used less | req/s A | B "
             "| B/A (median of pairs) | failed |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for mode, s in results["modes"].items():
        lines.append(f"| {'non-streaming' if mode == 'json' else 'streaming (SSE)'} | {s['a_cpu_us']:.0f} | "
                     f"{s['b_cpu_us']:.0f} | {s['cpu_ratio']:.3f} | {s['b_less_cpu']} of {s['pairs']} | "
                     f"{s['a_rps']:,.0f} | {s['b_rps']:,.0f} | {s['rps_ratio']:.3f} | {s['failed']} |")
    if results.get("one_client"):
        lines += ["", f"One client, A and B side by side, one request each per round with one to the stub directly "
                      f"(shuffled; {opts.rounds:,} rounds): latency in µs, and what each adds to direct's.", "",
                  "| mode | path | p50 | p99 | added p50 | added p99 | failed |", "| --- | --- | ---: | ---: | ---: | ---: | ---: |"]
        for mode, one in results["one_client"].items():
            d = one["direct"]
            for path in ("direct", "a", "b"):
                x = one[path]
                added = ("—", "—") if path == "direct" else (f"{x['p50_us'] - d['p50_us']:+,.0f}",
                                                             f"{x['p99_us'] - d['p99_us']:+,.0f}")
                name = path if path == "direct" else path.upper()
                lines.append(f"| {'non-streaming' if mode == 'json' else 'streaming (SSE)'} | {name} | "
                             f"{x['p50_us']:,.0f} | {x['p99_us']:,.0f} | {added[0]} | {added[1]} | {x['failed']} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("a", type=pathlib.Path)
    ap.add_argument("b", type=pathlib.Path)
    ap.add_argument("--pairs", type=int, default=6)
    ap.add_argument("--seconds", type=int, default=6)
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--modes", nargs="+", choices=bench.MODES, default=list(bench.MODES))
    ap.add_argument("--rounds", type=int, default=10000, help="one-client rounds (0: none)")
    ap.add_argument("--json", action="store_true", help="one JSON object on stdout instead of the table")
    ap.add_argument("--body-kib", type=float, default=0, help="a conversation of this size in each request body")
    opts = ap.parse_args()
    bench.REQUEST.update(bench.requests_of(opts.body_kib))
    for path in (opts.a, opts.b):
        if not path.is_file():
            sys.exit(f"no gateway binary at {path}")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    results = {"started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
               "uptime": bench.uptime(), "modes": {}, "one_client": {}}
    with tempfile.TemporaryDirectory(prefix="dyad-v1-ab-") as tmp:
        work = pathlib.Path(tmp)
        stub_port = bench.free_port()
        (work / "stub.conf").write_text(bench.stub_config(work, stub_port))
        stub = bench.Proc("stub", [nginx, "-p", str(work), "-c", str(work / "stub.conf")], work, port=stub_port)
        try:
            probe = bench.probe_binary(work) if opts.rounds > 0 else None
            for mode in opts.modes:
                pairs = []
                for i in range(opts.pairs):
                    order = ("a", "b") if i % 2 == 0 else ("b", "a")
                    got = {}
                    for which in order:
                        got[which] = turn(getattr(opts, which), work / f"{mode}-{i}-{which}", stub_port, mode, opts)
                        bench.log(f"  {mode} pair {i + 1} {which.upper()}: {got[which]['requests_per_s']:,.0f} "
                                  f"req/s, {got[which]['cpu_us_per_request']:.0f} µs CPU/request")
                    pairs.append((got["a"], got["b"]))
                results["modes"][mode] = summarize(pairs)
                if opts.rounds > 0:
                    results["one_client"][mode] = one_client(work, stub_port, mode, opts, probe)
        finally:
            stub.stop()
    print(json.dumps(results) if opts.json else table(results, opts))


if __name__ == "__main__":
    main()
