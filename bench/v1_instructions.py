#!/usr/bin/env python3
"""Instructions per /v1 request, counted by callgrind: the gateway against the event-loop sketch (issue 16).

Timings on this shared 2-core machine move by ±10 % from run to run; the count of instructions a process executes per
request does not (a few tenths of a per cent). So this is the measure for a change of the gateway's per-request work,
and for how far it is from the sketch's (bench/v1_event_loop_sketch.cc: the same parsers, hash and framing, on one
io_context per core, no timeouts, metrics or access log).

Each program runs under `valgrind --tool=callgrind` against the nginx stub of v1_proxy_bench.py; one client (one
kept-alive connection) sends --warm requests, the counters are zeroed (callgrind_control -z), then --requests more
are sent and the counters dumped. Per request: the dump's total over --requests, all of the process's threads. With
--top N, the N costliest functions of the gateway's own code (inclusive, per request) follow.

Usage: python3 bench/v1_instructions.py [--modes json sse] [--warm 300] [--requests 300] [--top 25] [--json]
Binaries: DYAD_GATEWAY_BIN and DYAD_SKETCH_BIN as for v1_proxy_bench.py (the sketch is skipped when not built).
Needs valgrind, nginx (scripts/install-deps.sh --test).
"""
import argparse
import http.client
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_proxy_bench as bench  # noqa: E402  (the stub, the gateway's set-up and the requests are shared)


def callgrind_wrapper(work, binary, name):
    """A script that runs `binary` under callgrind, its output file in `work` (start_gateway runs a binary)."""
    out = work / f"{name}.%p.callgrind"
    script = work / f"{name}-callgrind.sh"
    script.write_text(f"#!/bin/sh\nexec valgrind --tool=callgrind --callgrind-out-file={out} {binary} \"$@\"\n")
    script.chmod(0o755)
    return script


def send(port, mode, n):
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    headers = {"Authorization": f"Bearer {bench.CLIENT_TOKEN}", "Content-Type": "application/json"}
    for _ in range(n):
        conn.request("POST", bench.CLIENT_PATH["gateway"][mode], bench.REQUEST[mode], headers)
        answer = conn.getresponse()
        answer.read()
        if answer.status != 200:
            raise RuntimeError(f"{mode}: answered {answer.status}")
    conn.close()


def count(pid, port, mode, opts, work, name):
    """Instructions per request of process `pid` in `mode`, and the dump they were read from."""
    send(port, mode, opts.warm)
    subprocess.run(["callgrind_control", "-z", str(pid)], check=True, capture_output=True)
    send(port, mode, opts.requests)
    subprocess.run(["callgrind_control", "-d", f"{mode}", str(pid)], check=True, capture_output=True)
    dumps = sorted(work.glob(f"{name}.{pid}.callgrind.*"), key=lambda p: p.stat().st_mtime)
    text = subprocess.run(["callgrind_annotate", "--auto=no", "--inclusive=yes", "--threshold=100", str(dumps[-1])],
                          check=True, capture_output=True, text=True).stdout
    total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M).group(1).replace(",", ""))
    return total / opts.requests, text


def top_functions(text, requests, n):
    """The gateway's own functions (dyad::), costliest first: (instructions per request, name)."""
    rows = []
    for line in text.splitlines():
        m = re.match(r"^\s*([\d,]+) \(\s*[\d.]+%\)\s+\S*?:(.*?) \[", line)
        if m and "dyad::" in m.group(2) and "_Function_handler" not in m.group(2):
            name = re.sub(r"\(anonymous namespace\)::", "", m.group(2))
            rows.append((int(m.group(1).replace(",", "")) / requests, name[:110]))
    return rows[:n]


def run(opts, gateway_bin=None):
    """{"gateway": {mode: per request}, "sketch": {…} (when built), "top": {mode: [(per request, name)]}}."""
    work = pathlib.Path(tempfile.mkdtemp(prefix="dyad-v1-instr-"))
    stub_port = bench.free_port()
    (work / "stub.conf").write_text(bench.stub_config(work, stub_port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs = [bench.Proc("stub", [nginx, "-p", str(work), "-c", str(work / "stub.conf")], work, port=stub_port)]
    result = {"warm": opts.warm, "requests": opts.requests, "gateway": {}, "sketch": {}, "top": {}}
    try:
        gw, url = bench.start_gateway(work, stub_port, callgrind_wrapper(work, gateway_bin or bench.GATEWAY_BIN, "gateway"))
        procs.append(gw)
        port = int(url.rsplit(":", 1)[1])
        for mode in opts.modes:
            result["gateway"][mode], text = count(gw.proc.pid, port, mode, opts, work, "gateway")
            result["top"][mode] = top_functions(text, opts.requests, opts.top)
        if bench.SKETCH_BIN.exists():
            sketch_port = bench.free_port()
            args = [str(callgrind_wrapper(work, bench.SKETCH_BIN, "sketch")), str(sketch_port), str(stub_port),
                    bench.CLIENT_TOKEN, bench.UPSTREAM_KEY, "1"]
            sketch = bench.Proc("sketch", args, work, port=sketch_port, ready_timeout=120)
            procs.append(sketch)
            for mode in opts.modes:
                result["sketch"][mode], _ = count(sketch.proc.pid, sketch_port, mode, opts, work, "sketch")
    finally:
        for p in reversed(procs):
            p.stop()
    return result


def table(r):
    lines = [f"instructions per request (callgrind, one client, {r['requests']} requests after {r['warm']} of warm-up)",
             "", "| mode | dyad-gateway | event-loop sketch | gateway / sketch |", "| --- | ---: | ---: | ---: |"]
    for mode, gw in r["gateway"].items():
        sk = r["sketch"].get(mode)
        ratio = f"{gw / sk:.2f}×" if sk else "—"
        lines.append(f"| {mode} | {gw:,.0f} | {f'{sk:,.0f}' if sk else 'not built'} | {ratio} |")
    for mode, rows in r["top"].items():
        if rows:
            lines += ["", f"the gateway's own functions, {mode}, inclusive per request:"]
            lines += [f"{cost:9,.0f}  {name}" for cost, name in rows]
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", choices=bench.MODES, default=list(bench.MODES))
    ap.add_argument("--warm", type=int, default=300)
    ap.add_argument("--requests", type=int, default=300)
    ap.add_argument("--top", type=int, default=0)
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()
    result = run(opts)
    print(json.dumps(result) if opts.json else table(result), end="")


if __name__ == "__main__":
    main()
