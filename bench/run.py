#!/usr/bin/env python3
"""Every figure of BENCHMARKS.md with its comparison, measured in one run, as one markdown table (issue 15).

Called by bench/run.sh after it has built the Release binaries in DYAD_BUILD_DIR (build-bench/). Each row is one
figure beside what it is compared with in the same run (the host is noisy: ratios are the figure to read), the
target from BENCHMARKS.md or the issue, and whether this run met it. A bench that cannot run (a binary without the
benchmark, valgrind absent, a peer failing) gives its row(s) a clear "missing", "skipped" or "failed" line instead of
stopping the others.

Google Benchmark figures are wall-clock (real) time, medians of the repetitions: the two-thread cache figures can
only be measured in wall-clock time (reads/s of both threads together), so the single-thread ones use it too.

Usage: python3 bench/run.py [--quick] [--write]
  --quick  shorter runs (under 5 minutes on 2 cores, the cloud rotation benches left out)
  --write  also replace the section between the bench/run.sh markers of BENCHMARKS.md with the table
"""
import argparse
import datetime
import json
import os
import pathlib
import shutil
import statistics
import subprocess
import sys
import time

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("DYAD_BUILD_DIR", ROOT / "build-bench")).resolve()
BEGIN, END = "<!-- bench/run.sh begin -->", "<!-- bench/run.sh end -->"

# Google Benchmark's benchmarks read here (dyad_bench, bench/secrets_bench.cc).
GBENCH = ["BM_CacheHit", "BM_MutexMapHit", "BM_CacheHotKey", "BM_MutexMapHotKey", "BM_EnvelopeSeal256",
          "BM_EnvelopeOpen256", "BM_RawAesGcmSeal256", "BM_SingleFlightMiss"]

MODES = {  # what each mode runs; full is what BENCHMARKS.md reports
    # The rotation bench keeps its 100,000 credentials in quick mode (~30 s): its figure includes the rotation's fixed
    # 2 s retirement grace, which would dominate a smaller count and sink it below the target for no fault of the code.
    "quick": dict(gb_reps=3, gb_min_time="0.1", rotation=100000, load_secs=5, aws=(1, 10, 60), vault=(6, 50),
                  azure=(6, 50), aws_rotation=None, vault_rotation=None, cluster=["--quick"], v1=["--quick"]),
    "full": dict(gb_reps=5, gb_min_time=None, rotation=100000, load_secs=10, aws=(3, 20, 100), vault=(10, 100),
                 azure=(10, 100), aws_rotation=(200, 20), vault_rotation=(2000, 8), cluster=[], v1=[]),
}


class Skip(Exception):
    """A bench that cannot run here; its message goes into the row."""


def log(msg):
    print(msg, file=sys.stderr, flush=True)


def run_json(args, env=None, timeout=1800):
    """Runs a bench with --json and returns the JSON document of its stdout."""
    p = subprocess.run([str(a) for a in args], cwd=ROOT, env={**os.environ, **(env or {})}, capture_output=True,
                       text=True, timeout=timeout)
    what = pathlib.Path(next((str(a) for a in args if str(a).endswith((".py", ".sh"))), str(args[0]))).name
    if p.returncode != 0:
        tail = (p.stderr.strip().splitlines() or ["(no output)"])[-1]
        raise RuntimeError(f"{what} exited with {p.returncode}: {tail[:200]}")
    try:
        return json.loads(p.stdout)  # one document (Google Benchmark's, over several lines)
    except ValueError:
        pass
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"{what} printed no JSON")
    return json.loads(lines[-1])  # a script's one JSON line after other output


def row(benchmark, figure, comparison="—", ratio="—", target="—", met="—"):
    return dict(benchmark=benchmark, figure=figure, comparison=comparison, ratio=ratio, target=target, met=met)


def verdict(ok):
    return "**met**" if ok else "not met"


def n0(x):
    return f"{x:,.0f}"


# --- secrets core: dyad_bench (Google Benchmark) ---

def gbench_medians(mode):
    args = [BUILD / "dyad_bench", "--benchmark_format=json", f"--benchmark_repetitions={mode['gb_reps']}",
            "--benchmark_report_aggregates_only=true", "--benchmark_filter=^(" + "|".join(GBENCH) + ")(/|$)"]
    if mode["gb_min_time"]:
        args.append(f"--benchmark_min_time={mode['gb_min_time']}")
    return parse_gbench(run_json(args))


def parse_gbench(doc):
    """Google Benchmark's JSON -> {(name, threads): median wall time per iteration in ns, all threads together}."""
    scale = {"ns": 1, "us": 1e3, "ms": 1e6, "s": 1e9}
    medians = {}
    for b in doc["benchmarks"]:
        if b.get("aggregate_name") != "median":
            continue
        parts = b["run_name"].split("/")
        threads = next((int(p.split(":")[1]) for p in parts if p.startswith("threads:")), 1)
        medians[(parts[0], threads)] = b["real_time"] * scale[b.get("time_unit", "ns")]
    return medians


def gbench_rows(mode):
    return secrets_core_rows(gbench_medians(mode))


def secrets_core_rows(m):
    rows = []

    def mps(ns):  # reads/s of all threads together, in millions: 1 / (wall time per iteration)
        return 1e3 / ns

    for cache, plain, what in (("BM_CacheHotKey", "BM_MutexMapHotKey", "one key"),
                               ("BM_CacheHit", "BM_MutexMapHit", "own keys")):
        label = f"cache hits, {what}: 2 threads / 1 thread"
        if (cache, 1) not in m or (cache, 2) not in m:
            rows.append(row(label, f"missing: {cache} is not in dyad_bench", target="≥ 1.7×"))
            continue
        one, two = mps(m[(cache, 1)]), mps(m[(cache, 2)])
        cmp = f"1 thread: {one:.1f} M/s"
        if (plain, 2) in m:
            cmp += f"; mutex map, 2 threads: {mps(m[(plain, 2)]):.1f} M/s"
            if (plain, 1) in m:
                cmp += f" ({m[(plain, 1)] / m[(plain, 2)]:.2f}× its 1 thread)"
        else:
            cmp += f"; mutex map: missing ({plain})"
        rows.append(row(label, f"{two:.1f} M reads/s on 2 threads", cmp, f"**{two / one:.2f}×**", "≥ 1.7×",
                        verdict(two / one >= 1.7)))
    for cache, plain, what in (("BM_CacheHit", "BM_MutexMapHit", "own keys"),
                               ("BM_CacheHotKey", "BM_MutexMapHotKey", "one key")):
        label = f"cache hit, {what}, 1 thread"
        if (cache, 1) not in m:
            rows.append(row(label, f"missing: {cache} is not in dyad_bench", target="≤ 30 ns"))
            continue
        ns = m[(cache, 1)]
        if (plain, 1) in m:
            cmp, ratio = f"mutex map, 1 thread: {m[(plain, 1)]:.1f} ns", f"{ns / m[(plain, 1)]:.2f}× the map's time"
        else:
            cmp, ratio = f"mutex map: missing ({plain})", "—"
        rows.append(row(label, f"{ns:.1f} ns per read", cmp, ratio, "≤ 30 ns", verdict(ns <= 30)))
    raw = m.get(("BM_RawAesGcmSeal256", 1))
    for name, what in (("BM_EnvelopeSeal256", "envelope seal, 256 bytes"), ("BM_EnvelopeOpen256", "envelope open, 256 bytes")):
        if (name, 1) not in m or raw is None:
            rows.append(row(what, f"missing: {name} or BM_RawAesGcmSeal256 is not in dyad_bench", target="≤ 4×"))
            continue
        r = m[(name, 1)] / raw
        rows.append(row(what, f"{n0(m[(name, 1)])} ns", f"raw AES-256-GCM seal, 256 bytes: {n0(raw)} ns",
                        f"**{r:.2f}×**", "≤ 4× raw", verdict(r <= 4)))
    if ("BM_SingleFlightMiss", 1) in m:
        rows.append(row("single-flight miss (load + publish + invalidate)", f"{n0(m[('BM_SingleFlightMiss', 1)])} ns"))
    return rows


# --- key rotation: dyad_rotation_bench ---

def rotation_rows(mode):
    n = mode["rotation"]
    r = run_json([BUILD / "dyad_rotation_bench", "--json", n])
    return [
        row(f"key rotation alone, {n:,} credentials (local keyring, SQLite)", f"{n0(r['alone_per_s'])} credentials/s",
            f"with one reader running: {n0(r['with_reader_per_s'])}/s", "—", "≥ 20,000/s",
            verdict(r["alone_per_s"] >= 20000)),
        row("credential read p99 during a rotation", f"{r['during_p99_us']:.1f} µs (p50 {r['during_p50_us']:.1f})",
            f"without a rotation: {r['idle_p99_us']:.1f} µs (p50 {r['idle_p50_us']:.1f})",
            f"{r['during_p99_us'] / r['idle_p99_us']:.2f}×"),
    ]


# --- HTTP server: bench/load.sh with wrk ---

def http_rows(mode):
    if not shutil.which("wrk"):
        raise Skip("wrk not installed (scripts/install-deps.sh --test)")
    r = run_json(["bash", "bench/load.sh", "--json", mode["load_secs"], 32], env={"BIN": str(BUILD / "dyad-gateway")})
    rows = []
    for route, label, floor in (("/healthz", "HTTP GET /healthz", 20000),
                                ("/admin/providers/{id}", "HTTP GET /admin/providers/{id} (bearer, SQLite, JSON)", 10000)):
        x = r["routes"][route]
        errors = x["non_2xx"] + x["socket_errors"]
        fig = f"{n0(x['requests_per_s'])} req/s, p99 {x['p99_ms']:.2f} ms"
        if errors:
            fig += f" ({errors} failed requests)"
        rows.append(row(label, fig, f"p50 {x['p50_ms']:.2f} ms", "—", f"≥ {floor:,} req/s, p99 < 5 ms",
                        verdict(x["requests_per_s"] >= floor and x["p99_ms"] < 5 and not errors)))
    return rows


# --- cloud clients: cache-miss reads beside the official SDKs ---

def overhead_row(label, runs, sdk):
    ratios = [r["ratio"] for r in runs]
    med = statistics.median(ratios)
    last = runs[-1]
    floor = last["floor"]["p50_us"]
    fig = f"ours {n0(last['ours']['p50_us'] - floor)} µs over the floor (p50 {n0(last['ours']['p50_us'])} µs)"
    cmp = f"{sdk}: {n0(last[sdk]['p50_us'] - floor)} µs over the floor (floor p50 {n0(floor)} µs)"
    ratio = f"**{med:.3f}**"
    if len(runs) > 1:
        ratio += " (median of " + ", ".join(f"{x:.3f}" for x in ratios) + ")"
        fig += "; last run"
    met = verdict(med <= 0.1)
    if med < 0:  # ours faster than the floor: the floor's own noise is larger than our overhead
        met += " (ours below the floor: noise)"
    return row(label, fig, cmp, ratio, f"≤ 0.1× {sdk}'s", met)


def aws_rows(mode):
    count, rounds, per = mode["aws"]
    runs = []
    for i in range(count):
        log(f"    aws_bench run {i + 1} of {count}")
        runs.append(run_json([sys.executable, "bench/aws_bench.py", "--json", rounds, per]))
    return [overhead_row(f"AWS cache-miss GetSecretValue, client overhead ({rounds}×{per} per client)", runs, "boto3")]


def aws_instruction_rows(mode):
    label = "AWS instructions per steady-state GetSecretValue (callgrind)"
    if not shutil.which("valgrind"):
        return [row(label, "skipped: valgrind not installed (scripts/install-deps.sh --test)", target="≤ 100 k")]
    r = run_json([sys.executable, "bench/aws_bench.py", "--json", "--instructions"])
    per = r["per_request"]
    return [row(label, f"{per / 1e3:,.0f} k", f"keep-alive (moto on waitress) N=100: {r['instructions_100'] / 1e6:.1f} M, "
                f"N=300: {r['instructions_300'] / 1e6:.1f} M; (I300 − I100) / 200; connection per request (moto_server): "
                f"{r['per_request_close'] / 1e3:,.0f} k", "—", "≤ 100 k", verdict(per <= 100e3))]


def vault_rows(mode):
    rounds, per = mode["vault"]
    r = run_json([sys.executable, "bench/vault_bench.py", "--json", rounds, per])
    return [overhead_row(f"Vault cache-miss read (KV + Transit decrypt + open), client overhead ({rounds}×{per})",
                         [r], "hvac")]


def azure_rows(mode):
    rounds, per = mode["azure"]
    r = run_json([sys.executable, "bench/azure_bench.py", "--json", rounds, per])
    return [overhead_row(f"Azure cache-miss read (secret + unwrapKey + open), client overhead ({rounds}×{per})",
                         [r], "sdk")]


def aws_rotation_rows(mode):
    if not mode["aws_rotation"]:
        raise Skip("full mode only")
    n, delay_ms = mode["aws_rotation"]
    r = run_json([sys.executable, "bench/aws_rotation_bench.py", "--json", n, delay_ms, 1, 8],
                 env={"DYAD_GATEWAY_BIN": str(BUILD / "dyad-gateway")})
    one, eight = r["runs"][0], r["runs"][-1]
    return [row(f"AWS key rotation, {n:,} credentials, {delay_ms} ms per call: AWS_CONCURRENCY 8 / 1",
                f"{eight['credentials_per_s']:.0f} credentials/s ({eight['seconds']:.1f} s)",
                f"AWS_CONCURRENCY=1: {one['credentials_per_s']:.0f}/s ({one['seconds']:.1f} s)",
                f"{eight['speedup']:.1f}×")]


def vault_rotation_rows(mode):
    if not mode["vault_rotation"]:
        raise Skip("full mode only")
    r = run_json([sys.executable, "bench/vault_rotation_bench.py", "--json", *mode["vault_rotation"]],
                 env={"DYAD_GATEWAY_BIN": str(BUILD / "dyad-gateway")})
    a, b = r["runs"]
    n = r["credentials"]
    return [row(f"Vault key rotation, {n:,} credentials, {a['token']} (incl. 2 s grace)",
                f"{a['credentials_per_s']:.0f} credentials/s, {a['vault_calls'] / n:.2f} calls and "
                f"{a['transit_calls'] / n:.3f} Transit calls per credential",
                f"{b['token']}: {b['credentials_per_s']:.0f}/s, {b['vault_calls'] / n:.2f} calls, "
                f"{b['transit_calls'] / n:.3f} Transit", f"{a['credentials_per_s'] / b['credentials_per_s']:.2f}×")]


# --- cluster mode: bench/cluster_bench.py (PostgreSQL) ---

def cluster_rows(mode):
    if not shutil.which("wrk"):
        raise Skip("wrk not installed (scripts/install-deps.sh --test)")
    return cluster_result_rows(run_json([sys.executable, "bench/cluster_bench.py", "--json", *mode["cluster"]],
                                        env={"DYAD_BUILD_DIR": str(BUILD)}))


def cluster_result_rows(r):
    n, pg, lite = r["credentials"], r["rotation"]["postgresql"], r["rotation"]["sqlite"]
    one, three = r["get_one"], r["get_three"]
    failed = one["failed"] + three["failed"]
    return [
        row(f"key rotation alone, {n:,} credentials (local keyring, PostgreSQL)", f"{n0(pg['alone_per_s'])} credentials/s",
            f"SQLite: {n0(lite['alone_per_s'])}/s; PostgreSQL with one reader: {n0(pg['with_reader_per_s'])}/s",
            f"{pg['alone_per_s'] / lite['alone_per_s']:.2f}× SQLite's", "≥ 10,000/s", verdict(pg["alone_per_s"] >= 10000)),
        row("HTTP GET /admin/providers/{id} (PostgreSQL): 3 instances / 1",
            f"{n0(three['requests_per_s'])} req/s through 3, p99 {three['p99_ms']:.2f} ms"
            + (f" ({failed} failed requests)" if failed else ""),
            f"1 instance: {n0(one['requests_per_s'])} req/s, p99 {one['p99_ms']:.2f} ms (wrk -c{r['connections']} in all)",
            f"{r['get_ratio']:.2f}×"),
    ]


# --- the /v1 proxy: bench/v1_proxy_bench.py (nginx stub; gateway, nginx and LiteLLM beside direct) ---

def v1_rows(mode):
    for tool in ("wrk", "nginx"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise Skip(f"{tool} not installed (scripts/install-deps.sh --test)")
    return v1_result_rows(run_json([sys.executable, "bench/v1_proxy_bench.py", "--json", *mode["v1"]],
                                   env={"DYAD_BUILD_DIR": str(BUILD)}, timeout=3600))


def small(x):
    """A ratio: two decimals, or two significant digits below 0.1 (LiteLLM's against nginx's)."""
    return f"{x:.2f}" if abs(x) >= 0.1 else f"{x:.2g}"


def v1_result_rows(r):
    s, n = r["summary"], r["clients"]
    names = {"json": "non-streaming", "sse": "streaming"}
    lite = r["litellm"]
    rows = []
    for mode, what in names.items():
        g, ng, d = s["gateway"][mode], s["nginx"][mode], s["direct"][mode]
        failed = sum(s[p][mode]["failed"] for p in s)
        fig = f"p99 {g['added_p99_us']:+,.0f} µs, p50 {g['added_p50_us']:+,.0f} µs (gateway p50 {n0(g['p50_us'])} µs)"
        if failed:
            fig += f" ({failed} failed requests)"
        cmp = f"nginx: p99 {ng['added_p99_us']:+,.0f}, p50 {ng['added_p50_us']:+,.0f} µs; "
        cmp += (f"LiteLLM: p99 {s['litellm'][mode]['added_p99_us']:+,.0f}, p50 {s['litellm'][mode]['added_p50_us']:+,.0f} µs"
                if "litellm" in s else "LiteLLM: not available")
        rows.append(row(f"/v1 chat completion, {what}, 1 client: added latency through the gateway vs direct",
                        fig, cmp + f"; direct p50 {n0(d['p50_us'])} µs", "—", "added p99 ≤ 100 µs",
                        verdict(g["added_p99_us"] <= 100 and not failed)))
        cmp = f"nginx: {n0(ng['requests_per_s'])} req/s; direct: {n0(d['requests_per_s'])}; "
        cmp += (f"LiteLLM: {n0(s['litellm'][mode]['requests_per_s'])} ({small(s['litellm'][mode]['rps_vs_nginx'])}× nginx's)"
                if "litellm" in s else f"LiteLLM: not available ({lite.get('why', '?')})")
        if "sketch" in s:  # bench/v1_event_loop_sketch.cc: what the design could reach
            cmp += f"; event-loop sketch: {n0(s['sketch'][mode]['requests_per_s'])} req/s ({small(s['sketch'][mode]['rps_vs_nginx'])}× nginx's)"
        if g.get("cpu_us_per_request") and ng.get("cpu_us_per_request"):
            cmp += (f"; CPU per request: gateway {n0(g['cpu_us_per_request'])} µs, "
                    f"nginx {n0(ng['cpu_us_per_request'])} µs")
        rows.append(row(f"/v1 chat completion, {what}, {n} clients: gateway / nginx reverse proxy",
                        f"{n0(g['requests_per_s'])} req/s", cmp, f"**{g['rps_vs_nginx']:.2f}×**", "≥ 0.7× nginx's",
                        verdict(g["rps_vs_nginx"] >= 0.7 and not failed)))
    return rows


# --- the /v1 proxy's streams: bench/v1_first_byte.py (lockstep stub; gateway, nginx, sketch beside direct) ---

def first_byte_rows(mode):
    if not shutil.which("nginx") and not os.path.exists("/usr/sbin/nginx"):
        raise Skip("nginx not installed (scripts/install-deps.sh --test)")
    rounds = ["--rounds", "3000", "--warm", "300"] if mode["v1"] else []
    return first_byte_result_rows(run_json([sys.executable, "bench/v1_first_byte.py", "--json", *rounds],
                                           env={"DYAD_BUILD_DIR": str(BUILD)}, timeout=1200))


def first_byte_result_rows(r):
    p = r["paths"]
    g = p["gateway"]["first"]
    cmp = "; ".join(f"{name}: p99 {p[name]['first']['added_p99']:+,.0f}, p50 {p[name]['first']['added_p50']:+,.0f} µs"
                    for name in ("gateway (pool)", "nginx", "sketch") if name in p)
    worst = max(p[name]["first"]["added_p99"] for name in ("gateway", "gateway (pool)"))
    return [row("/v1 stream, 1 client: an event's first byte to the client after the upstream's, added vs direct",
                f"p99 {g['added_p99']:+,.0f} µs, p50 {g['added_p50']:+,.0f} µs"
                + (f" ({r['stalled']} events held back)" if r["stalled"] else ""),
                cmp + f"; direct p50 {n0(p['direct']['first']['p50'])} µs", f"{worst / 1000:.2f}× the target",
                "≤ 1 ms", verdict(worst <= 1000 and not r["stalled"]))]


SECTIONS = [  # (name, rows function, label for a row that could not run)
    ("secrets core (dyad_bench)", gbench_rows, "secrets core: cache hits, envelope seal/open"),
    ("key rotation (dyad_rotation_bench)", rotation_rows, "key rotation, local keyring"),
    ("HTTP server (bench/load.sh)", http_rows, "HTTP server"),
    ("AWS client overhead (bench/aws_bench.py)", aws_rows, "AWS cache-miss GetSecretValue, client overhead"),
    ("AWS instructions (bench/aws_bench.py --instructions)", aws_instruction_rows,
     "AWS instructions per steady-state GetSecretValue (callgrind)"),
    ("Vault client overhead (bench/vault_bench.py)", vault_rows, "Vault cache-miss read, client overhead"),
    ("Azure client overhead (bench/azure_bench.py)", azure_rows, "Azure cache-miss read, client overhead"),
    ("AWS rotation (bench/aws_rotation_bench.py)", aws_rotation_rows, "AWS key rotation over a 20 ms link"),
    ("Vault rotation (bench/vault_rotation_bench.py)", vault_rotation_rows, "Vault key rotation"),
    ("cluster mode (bench/cluster_bench.py)", cluster_rows, "cluster mode: rotation and GET on PostgreSQL"),
    ("/v1 proxy (bench/v1_proxy_bench.py)", v1_rows, "/v1 proxy against direct, nginx and LiteLLM"),
    ("/v1 streams (bench/v1_first_byte.py)", first_byte_rows, "/v1 stream's first byte against direct"),
]


def load_average():
    return os.getloadavg()[0]


def render(rows, header):
    out = [header, "", "| benchmark | figure | comparison (same run) | ratio | target | met? |",
           "| --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        out.append("| " + " | ".join(str(r[k]).replace("|", "\\|") for k in
                                     ("benchmark", "figure", "comparison", "ratio", "target", "met")) + " |")
    return "\n".join(out) + "\n"


def write_benchmarks_md(table, path=ROOT / "BENCHMARKS.md"):
    text = path.read_text()
    if BEGIN not in text or END not in text or text.index(BEGIN) > text.index(END):
        raise SystemExit(f"{path.name}: the markers {BEGIN} … {END} are missing or out of order; nothing written")
    head, rest = text.split(BEGIN, 1)
    tail = rest.split(END, 1)[1]
    path.write_text(f"{head}{BEGIN}\n{table}{END}{tail}")
    log(f"wrote the table into {path}")


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="shorter runs, under 5 minutes")
    ap.add_argument("--write", action="store_true", help="replace the generated section of BENCHMARKS.md")
    opts = ap.parse_args()
    mode_name = "quick" if opts.quick else "full"
    mode = MODES[mode_name]
    if not (BUILD / "dyad_bench").exists():
        raise SystemExit(f"{BUILD}/dyad_bench is missing: run bench/run.sh, which builds it")
    started, load0 = time.monotonic(), load_average()
    rows, raw_times = [], {}
    for i, (name, fn, label) in enumerate(SECTIONS, 1):
        log(f"[{i}/{len(SECTIONS)}] {name}")
        t0 = time.monotonic()
        try:
            rows += fn(mode)
        except Skip as e:
            rows.append(row(label, f"not run: {e}"))
        except (RuntimeError, subprocess.SubprocessError, OSError, KeyError, ValueError) as e:
            rows.append(row(label, f"failed: {e}"))
        raw_times[name] = time.monotonic() - t0
        log(f"    {raw_times[name]:.0f} s")
    wall = time.monotonic() - started
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                            text=True).stdout.strip() or "unknown"
    header = (f"Generated by `bash bench/run.sh{' --quick' if opts.quick else ''}` "
              f"({mode_name} mode) at commit `{commit}`, {datetime.datetime.now(datetime.timezone.utc):%Y-%m-%d %H:%M} "
              f"UTC, on {os.cpu_count()} cores, load average {load0:.1f} at the start and {load_average():.1f} at the "
              f"end; the benchmarks took {wall / 60:.1f} minutes (build excluded). Google Benchmark figures are "
              f"wall-clock (real) time, medians of {mode['gb_reps']} repetitions; each comparison was measured in the "
              "same run as its figure.")
    table = render(rows, header)
    print(table, end="")
    if opts.write:
        write_benchmarks_md(table)


if __name__ == "__main__":
    main()
