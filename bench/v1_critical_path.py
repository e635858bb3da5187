#!/usr/bin/env python3
"""A /v1 call's critical path in a proxy's own code, from its system calls: the gateway against the sketch (issue 16).

At one client a proxy's added latency is its work between reading the client's request and sending it upstream, its
work between reading the upstream's answer and sending it to the client, the two sends, and the wake-ups of idle CPUs
the extra hop costs. callgrind (v1_instructions.py) counts all of a process's instructions, those after the answer
went out too (the access line, timers), and not the kernel's. This measures the path itself: the proxy's busiest
thread is traced with `perf record -e raw_syscalls:sys_enter,raw_syscalls:sys_exit,sched:sched_switch` while
bench/one_client_probe.cc sends --requests requests on one kept-alive connection, and for each call:

- before the upstream: from the exit of the read that brought the request to the entry of the send upstream;
- after the upstream: from the exit of the read that brought the answer to the entry of the send to the client;
- each send's own time in the kernel (the receiver's TCP input and wake-up run in it).

Intervals in which the thread was switched out are left out (they time the scheduler, not the proxy). Each traced
system call adds about a microsecond, so compare the two programs, not the figures with untraced ones. The first
exchange names the connections (the client's is the one read before the first send; writes to fd 2, the access log,
are not sends); the system call numbers are x86-64's.

Usage: python3 bench/v1_critical_path.py [--modes json sse] [--requests 3000] [--json]
Binaries: DYAD_GATEWAY_BIN and DYAD_SKETCH_BIN as for v1_proxy_bench.py (the sketch is skipped when not built).
Needs perf (Debian: linux-perf) with tracepoints readable (root), and nginx (scripts/install-deps.sh --test).
"""
import argparse
import collections
import json
import pathlib
import re
import shutil
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
import v1_proxy_bench as bench  # noqa: E402  (the stub, the gateway's set-up and the requests are shared)

# x86-64 system call numbers: the reads and sends a proxy's connections use.
READS = {0: "read", 19: "readv", 45: "recvfrom", 47: "recvmsg"}
SENDS = {1: "write", 20: "writev", 44: "sendto", 46: "sendmsg"}
EVENT = re.compile(r"\s*(\d+)\s+([\d.]+):\s+(raw_syscalls:sys_enter|raw_syscalls:sys_exit|sched:sched_switch):\s*(.*)")


def probe_run(probe, spec, rounds, warmup):
    """The probe's rounds on one path; every answer must have been a 200 (a 401 is no /v1 call)."""
    out = subprocess.run([str(probe), "--rounds", str(rounds), "--warmup", str(warmup), spec],
                         capture_output=True, text=True, check=True).stdout
    failed = sum(p["failed"] for p in json.loads(out)["paths"].values())
    if failed:
        raise SystemExit(f"{failed} of the probe's requests failed ({spec.split('=')[0]}): nothing to measure")


def trace(pid, probe, spec, requests, work, name):
    """perf's events for `pid` while the probe sends `requests` requests: [(tid, µs, event, text)]."""
    probe_run(probe, spec, 500, 100)
    data = work / f"{name}.perf.data"
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "raw_syscalls:sys_enter", "-e", "raw_syscalls:sys_exit",
                            "-e", "sched:sched_switch", "-o", str(data), "-p", str(pid)],
                           stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        time.sleep(1)
        probe_run(probe, spec, requests, 0)
    finally:
        rec.send_signal(2)
        _, err = rec.communicate()
    if rec.returncode not in (0, -2, 130) or not data.exists():
        raise SystemExit(f"perf record failed ({rec.returncode}): {err.decode()[-300:]}")
    text = subprocess.run(["perf", "script", "-i", str(data), "-F", "tid,time,event,trace"],
                          capture_output=True, text=True, check=True).stdout
    events = []
    for line in text.splitlines():
        m = EVENT.match(line)
        if m:
            events.append((int(m.group(1)), float(m.group(2)) * 1e6, m.group(3), m.group(4)))
    return events


def calls(events):
    """Per call of the busiest thread: before/after the upstream (µs), and the sends' times in the kernel."""
    busiest = collections.Counter(e[0] for e in events).most_common(1)[0][0]
    ev = [e[1:] for e in events if e[0] == busiest]
    out = {"before": [], "after": [], "send_upstream": [], "send_client": []}
    client_fd = upstream_fd = None
    read_done = None  # (fd, time) of the last read that returned bytes, not yet followed by a send
    switched = False
    entered = {}  # syscall number -> (fd, time) of its entry
    for t, kind, text in ev:
        if kind == "sched:sched_switch":
            switched = True
            continue
        m = re.match(r"NR (\d+) (?:\((\w+),|= (-?\d+))", text)
        if not m:
            continue
        nr = int(m.group(1))
        if kind.endswith("sys_enter"):
            fd = int(m.group(2), 16) if m.group(2) else None
            entered[nr] = (fd, t)
            if nr in SENDS and read_done and fd != 2:
                rfd, rt = read_done
                if client_fd is None:  # the first exchange names the connections
                    client_fd, upstream_fd = rfd, fd
                if not switched and rfd == client_fd and fd == upstream_fd:
                    out["before"].append(t - rt)
                elif not switched and rfd == upstream_fd and fd == client_fd:
                    out["after"].append(t - rt)
                read_done = None
            continue
        fd, t0 = entered.pop(nr, (None, t))
        result = int(m.group(3)) if m.group(3) else 0
        if nr in READS and result > 0:
            read_done, switched = (fd, t), False
        elif nr in SENDS and fd is not None and fd != 2 and client_fd is not None:
            out["send_upstream" if fd == upstream_fd else "send_client"].append(t - t0)
    return out


def pct(values, q):
    v = sorted(values)
    return v[min(len(v) - 1, int(q * (len(v) - 1) + 0.5))] if v else float("nan")


def run(opts):
    work = pathlib.Path(tempfile.mkdtemp(prefix="dyad-v1-path-"))
    stub_port = bench.free_port()
    (work / "stub.conf").write_text(bench.stub_config(work, stub_port))
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    procs = [bench.Proc("stub", [nginx, "-p", str(work), "-c", str(work / "stub.conf")], work, port=stub_port)]
    probe = bench.probe_binary(work)
    result = {"requests": opts.requests, "gateway": {}, "sketch": {}}
    try:
        gw, url = bench.start_gateway(work, stub_port)
        procs.append(gw)
        targets = [("gateway", gw.proc.pid, url)]
        if bench.SKETCH_BIN.exists():
            port = bench.free_port()
            sketch = bench.Proc("sketch", [str(bench.SKETCH_BIN), str(port), str(stub_port), bench.CLIENT_TOKEN,
                                           bench.UPSTREAM_KEY], work, port=port)
            procs.append(sketch)
            targets.append(("sketch", sketch.proc.pid, f"http://127.0.0.1:{port}"))
        for name, pid, base in targets:
            for mode in opts.modes:
                spec = bench.probe_request(work, name, mode, base, bench.CLIENT_TOKEN)
                per = calls(trace(pid, probe, spec, opts.requests, work, f"{name}-{mode}"))
                result[name][mode] = {k: {"n": len(v), "p50": pct(v, .5), "p90": pct(v, .9), "p99": pct(v, .99)}
                                      for k, v in per.items()}
    finally:
        for p in reversed(procs):
            p.stop()
        shutil.rmtree(work, ignore_errors=True)  # the perf data: tens of megabytes
    return result


def table(r):
    lines = [f"a /v1 call's critical path, µs per call (perf tracepoints, one client, {r['requests']} requests; "
             "p50 / p99)", "", "| program | mode | before the upstream | after the upstream | send upstream | "
             "send to the client |", "| --- | --- | ---: | ---: | ---: | ---: |"]
    for name in ("gateway", "sketch"):
        for mode, m in r[name].items():
            cells = [f"{m[k]['p50']:.0f} / {m[k]['p99']:.0f}" for k in ("before", "after", "send_upstream",
                                                                         "send_client")]
            lines.append(f"| {name} | {mode} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--modes", nargs="+", choices=bench.MODES, default=list(bench.MODES))
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--json", action="store_true")
    opts = ap.parse_args()
    if not shutil.which("perf"):
        raise SystemExit("needs perf (Debian: apt-get install linux-perf)")
    r = run(opts)
    print(json.dumps(r) if opts.json else table(r), end="")


if __name__ == "__main__":
    main()
