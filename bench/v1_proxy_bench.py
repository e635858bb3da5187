#!/usr/bin/env python3
"""The /v1 proxy (issue 16) against the same upstream stub, in one run: direct, through the gateway, through nginx
as a reverse proxy, through LiteLLM's proxy.

The upstream stub is nginx (Debian), run as our own process on a loopback port with a config in a temporary
directory: it answers POST /v1/chat/completions with a fixed chat completion (JSON) and POST
/sse/v1/chat/completions with a fixed event stream (six chunks and [DONE]), and 401 unless `Authorization: Bearer
<the upstream key>` is present. Paths, each sent the same requests:

- direct:  wrk → stub, with the upstream key;
- gateway: wrk → dyad-gateway (release build, client token) → stub: two http-sdk providers whose baseUrls are the
           stub's /v1 and /sse/v1, the upstream key injected from the provider's credentials;
- nginx:   wrk → nginx reverse proxy → stub: the client token checked (`if`), Authorization replaced by the upstream
           key, keep-alive upstream pool, proxy_buffering off for the stream; the floor of a C proxy;
- sketch:  wrk → bench/v1_event_loop_sketch.cc → stub, when it is built (DYAD_BENCH, or DYAD_SKETCH_BIN): the
           gateway's request work (its parsers, the token's hash, the key injected) done event-driven on one
           io_context per core; not a product, no timeouts or metrics: what the gateway's design could reach here;
- litellm: wrk → LiteLLM's proxy (master key = the client token, the two models with api_base = the stub), when a
           LiteLLM venv is there (`--install-litellm` makes one; the full mode tries to); otherwise "not available"
           and why.

For each mode (non-streaming, streaming), direct, the gateway, nginx (and the sketch) are measured interleaved, so that other work
on this shared machine falls on them alike and their figures compare:
- one client: bench/one_client_probe.cc (the bench build's dyad_one_client_probe, else compiled here) holds one
  kept-alive connection per path and sends one request on each path per round, in a shuffled order, for 20,000 rounds
  (--quick: 5,000) after 500 of warm-up: p50/p99 latency of each path, and the added latency against direct (p50 and
  p99 differences, same run). Measured one path after another instead, the p99 difference was mostly the noise of the
  seconds each path happened to get;
- N clients (wrk -cN keep-alive connections, default 16, after a warm-up): each path in turn for 1 s slices, 5 slices
  each (--quick: 2), the order shuffled in every turn: requests/s over all its slices; and the CPU time (user +
  system, /proc) that the path's own processes spent, divided by its requests: CPU µs per request (direct: the stub's;
  a proxy: its own, not the stub's), and against nginx's. On a machine whose cores are the limit, this ratio is what
  the throughput ratio can at best be the inverse of.
LiteLLM, hundreds of times slower, is measured after them with wrk alone (one client: ≥ 2,000 requests).
wrk is the load generator for N clients (C, one event loop). The full mode runs
three rounds (in each: both modes through direct, gateway and nginx, then LiteLLM's) and reports medians of the
rounds; --quick one shorter round, measuring the others while LiteLLM's workers start (it says so).
The gateway runs at its defaults (GATEWAY_THREADS = cores, access log at info to a file), nginx with
worker_processes auto and its access log on (Debian's default), LiteLLM with one worker per core.

Targets (issue 16): added p99 ≤ 100 µs at one client; gateway throughput ≥ 0.7× nginx's in the same run.

Usage: python3 bench/v1_proxy_bench.py [--quick] [--json] [--clients N] [--install-litellm] [--no-litellm]
  --json             one JSON object on stdout (bench/run.py reads it) instead of the markdown table
  --quick            one round, shorter measurements (under 2 minutes with LiteLLM installed)
  --install-litellm  create the LiteLLM venv if missing (pip, time-boxed to 10 minutes); the full mode does this
Binaries: DYAD_GATEWAY_BIN, else DYAD_BUILD_DIR/dyad-gateway (default build/). Needs nginx and wrk (Debian;
scripts/install-deps.sh --test). LiteLLM venv: LITELLM_VENV (default /tmp/dyad-litellm-venv).
"""
import argparse
import datetime
import hashlib
import json
import os
import pathlib
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request

ROOT = pathlib.Path(__file__).resolve().parents[1]
BUILD = pathlib.Path(os.environ.get("DYAD_BUILD_DIR", ROOT / "build")).resolve()
GATEWAY_BIN = pathlib.Path(os.environ.get("DYAD_GATEWAY_BIN", BUILD / "dyad-gateway"))
# bench/v1_event_loop_sketch.cc (DYAD_BENCH): measured beside the others when it is there.
SKETCH_BIN = pathlib.Path(os.environ.get("DYAD_SKETCH_BIN", BUILD / "dyad_v1_event_loop_sketch"))
LITELLM_VENV = pathlib.Path(os.environ.get("LITELLM_VENV", "/tmp/dyad-litellm-venv"))  # shared by worktrees
# Not a version the registry pulled (1.107.0 was), and one whose [proxy] extra resolves on PyPI (the 1.10x releases
# need a `litellm-proxy` package that PyPI does not serve).
LITELLM_REQUIREMENT = "litellm[proxy]==1.80.0"
LITELLM_INSTALL_SECONDS = 600

UPSTREAM_KEY = "sk-upstream-bench-" + "u" * 24
CLIENT_TOKEN = "sk-client-bench-" + "c" * 24  # LiteLLM wants its master key to start with sk-
ADMIN_TOKEN = "admin-bench-" + "a" * 24
MODEL, MODEL_SSE = "bench-model", "bench-model-sse"
TARGET_ADDED_P99_US = 100
TARGET_RPS_RATIO = 0.7
MIN_ONE_CLIENT_REQUESTS = 2000
PATHS = ("direct", "gateway", "nginx", "sketch", "litellm")
MODES = ("json", "sse")  # non-streaming, streaming

CHAT_JSON = json.dumps({
    "id": "chatcmpl-bench", "object": "chat.completion", "created": 1764547200, "model": MODEL,
    "choices": [{"index": 0, "finish_reason": "stop", "logprobs": None,
                 "message": {"role": "assistant", "content": "Hello! How can I help you today?"}}],
    "usage": {"prompt_tokens": 12, "completion_tokens": 9, "total_tokens": 21}}, separators=(",", ":"))


def _chunk(delta, finish=None):
    return json.dumps({"id": "chatcmpl-bench", "object": "chat.completion.chunk", "created": 1764547200,
                       "model": MODEL_SSE, "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]},
                      separators=(",", ":"))


SSE = "".join(f"data: {c}\n\n" for c in (
    [_chunk({"role": "assistant", "content": ""})]
    + [_chunk({"content": w}) for w in ("Hello! ", "How can ", "I help ", "you today?")]
    + [_chunk({}, "stop")])) + "data: [DONE]\n\n"



def requests_of(body_kib=0):
    """The request bodies by mode: one short message, or (body_kib > 0) a conversation of about that many KiB
    before it, in turns of ~400 bytes (a chat client resends the whole history with each call)."""
    history = [{"role": "assistant" if i % 2 else "user", "content": f"Turn {i}: " + "w" * 380 + ' "q" é'}
               for i in range(round(body_kib * 1024 / 420))]
    messages = history + [{"role": "user", "content": "Say hello."}]
    return {"json": json.dumps({"model": MODEL, "messages": messages}),
            "sse": json.dumps({"model": MODEL_SSE, "stream": True, "messages": messages})}


REQUEST = requests_of()  # --body-kib replaces it
# The stub's paths; the proxies are sent the same ones (the gateway and LiteLLM pick the upstream by model).
STUB_PATH = {"json": "/v1/chat/completions", "sse": "/sse/v1/chat/completions"}
CLIENT_PATH = {"direct": STUB_PATH, "nginx": STUB_PATH,
               **{p: {m: "/v1/chat/completions" for m in MODES} for p in ("gateway", "sketch", "litellm")}}

QUIET = False
SHUFFLE = random.Random(20261203)  # the order of the paths' slices: fixed, so runs compare


def log(msg):
    if not QUIET:
        print(msg, file=sys.stderr, flush=True)


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_port(port, proc, what, timeout=60):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{what} exited with {proc.returncode} while starting")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not listen on {port} within {timeout} s")


def nginx_string(s):
    """An nginx single-quoted string; `return` would expand a '$', so none may be in it."""
    assert "$" not in s
    return "'" + s.replace("\\", "\\\\").replace("'", "\\'") + "'"


def nginx_common(work, name):
    tmp = work / f"{name}-tmp"
    tmp.mkdir(exist_ok=True)
    temp_paths = "".join(f"  {d}_temp_path {tmp}/{d};\n" for d in ("client_body", "proxy", "fastcgi", "uwsgi", "scgi"))
    # Request bodies (--body-kib) stay in memory, never in a temporary file (the gateway holds them in memory too).
    temp_paths += "  client_body_buffer_size 1m;\n"
    return (f"pid {work}/{name}.pid;\nerror_log {work}/{name}-error.log warn;\ndaemon off;\n"
            f"events {{ worker_connections 4096; }}\n", temp_paths)


def stub_config(work, port):
    head, temp_paths = nginx_common(work, "stub")
    unauthorized = nginx_string('{"error":{"message":"Incorrect API key provided","type":"invalid_request_error",'
                                '"param":null,"code":"invalid_api_key"}}')
    check = f'if ($http_authorization != "Bearer {UPSTREAM_KEY}") {{ return 401 {unauthorized}; }}'
    return f"""worker_processes 1;
{head}http {{
{temp_paths}  access_log off;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  server {{
    listen 127.0.0.1:{port};
    location = {STUB_PATH['json']} {{
      default_type application/json;
      {check}
      return 200 {nginx_string(CHAT_JSON)};
    }}
    location = {STUB_PATH['sse']} {{
      default_type text/event-stream;
      {check}
      return 200 {nginx_string(SSE)};
    }}
    location / {{ return 404; }}
  }}
}}
"""


def proxy_config(work, port, stub_port):
    head, temp_paths = nginx_common(work, "nginx-proxy")
    check = f'if ($http_authorization != "Bearer {CLIENT_TOKEN}") {{ return 401; }}'
    common = (f"proxy_pass http://stub; proxy_http_version 1.1; proxy_set_header Connection \"\"; "
              f"proxy_set_header Authorization \"Bearer {UPSTREAM_KEY}\";")
    return f"""worker_processes auto;
{head}http {{
{temp_paths}  access_log {work}/nginx-proxy-access.log;
  keepalive_requests 10000000;
  keepalive_timeout 300s;
  upstream stub {{ server 127.0.0.1:{stub_port}; keepalive 64; keepalive_requests 10000000; }}
  server {{
    listen 127.0.0.1:{port};
    location = {STUB_PATH['json']} {{ {check} {common} }}
    location = {STUB_PATH['sse']} {{ {check} {common} proxy_buffering off; }}
    location / {{ return 404; }}
  }}
}}
"""


class Proc:
    """A server process of this bench: started, waited for, stopped by its own pid."""

    def __init__(self, name, args, work, env=None, port=None, ready_timeout=60):
        self.name = name
        self.out = open(work / f"{name}.out", "wb")
        self.proc = subprocess.Popen(args, stdout=self.out, stderr=subprocess.STDOUT, env=env, cwd=work,
                                     start_new_session=True)
        if port:
            wait_port(port, self.proc, name, ready_timeout)

    def stop(self):
        """SIGTERM to its process group (its own session: nginx's workers, LiteLLM's), SIGKILL after 15 s."""
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
            except ProcessLookupError:
                pass
        self.out.close()


def http(method, url, body=None, headers=None, timeout=30):
    req = urllib.request.Request(url, data=body.encode() if isinstance(body, str) else body, method=method,
                                 headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=timeout) as r:
            return r.status, r.read().decode(errors="replace"), dict(r.headers)
    except urllib.error.HTTPError as e:
        return e.code, e.read().decode(errors="replace"), dict(e.headers)


def start_gateway(work, stub_port, binary=None, extra_env=None):
    """dyad-gateway (`binary`, default GATEWAY_BIN; `extra_env` added to its environment) on a free port with the two
    providers: (Proc, its URL)."""
    clients = work / "clients.json"
    clients.write_text(json.dumps({"tokens": [
        {"name": "bench", "role": "client", "sha256": hashlib.sha256(CLIENT_TOKEN.encode()).hexdigest()}]}))
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GATEWAY_PORT": "0", "GATEWAY_DATA_DIR": str(work / "gw"),
           "ENCRYPTION_KEY": "ab" * 32, "GATEWAY_ADMIN_API_KEY": ADMIN_TOKEN,
           "GATEWAY_CLIENT_API_KEYS_FILE": str(clients), **(extra_env or {})}
    (work / "gw").mkdir()
    out = open(work / "gateway.out", "w")
    err = open(work / "gateway-access.log", "wb")  # stderr: the access log (info, the default level)
    proc = subprocess.Popen([str(binary or GATEWAY_BIN), "serve"], stdout=subprocess.PIPE, stderr=err, env=env,
                            text=True, start_new_session=True)
    deadline = time.monotonic() + 30
    port = None
    while time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        out.write(line)
        if line.startswith("listening on "):
            port = int(line.strip().rsplit(":", 1)[1])
            break
    if port is None:
        proc.kill()
        raise RuntimeError(f"dyad-gateway did not start (rc {proc.poll()}); see {work}/gateway-access.log")
    gw = Proc.__new__(Proc)
    gw.name, gw.proc, gw.out = "gateway", proc, out
    url = f"http://127.0.0.1:{port}"
    for slug, model, path in (("bench", MODEL, "/v1"), ("benchsse", MODEL_SSE, "/sse/v1")):
        body = {"name": slug, "slug": slug, "type": "http-sdk", "enabled": True,
                "models": [{"dyadModelId": model, "adapterModelId": model}],
                "adapterConfig": {"baseUrl": f"http://127.0.0.1:{stub_port}{path}"},
                "credentials": {"api_key": UPSTREAM_KEY}}
        status, text, _ = http("POST", url + "/admin/providers", json.dumps(body),
                               {"Authorization": f"Bearer {ADMIN_TOKEN}", "Content-Type": "application/json"})
        if status != 201:
            gw.stop()
            raise RuntimeError(f"creating provider {slug}: {status} {text[:200]}")
    return gw, url


def litellm_version():
    py = LITELLM_VENV / "bin" / "python"
    if not (LITELLM_VENV / "bin" / "litellm").exists():
        return None
    p = subprocess.run([str(py), "-c", "import importlib.metadata as m; print(m.version('litellm'))"],
                       capture_output=True, text=True, timeout=60)
    return p.stdout.strip() if p.returncode == 0 else None


def install_litellm():
    """Creates LITELLM_VENV with LITELLM_REQUIREMENT; returns None or why it failed."""
    log(f"installing {LITELLM_REQUIREMENT} into {LITELLM_VENV} (at most {LITELLM_INSTALL_SECONDS // 60} minutes)")
    t0 = time.monotonic()
    try:
        if not (LITELLM_VENV / "bin" / "pip").exists():
            subprocess.run([sys.executable, "-m", "venv", str(LITELLM_VENV)], check=True, capture_output=True,
                           timeout=120)
        p = subprocess.run([str(LITELLM_VENV / "bin" / "pip"), "install", "-q", "--disable-pip-version-check",
                            LITELLM_REQUIREMENT], capture_output=True, text=True,
                           timeout=LITELLM_INSTALL_SECONDS - (time.monotonic() - t0))
    except subprocess.TimeoutExpired:
        return f"pip install {LITELLM_REQUIREMENT} did not finish within {LITELLM_INSTALL_SECONDS // 60} minutes"
    except (subprocess.CalledProcessError, OSError) as e:
        return f"creating the venv failed: {e}"
    if p.returncode != 0:
        tail = [line for line in p.stderr.strip().splitlines() if line.startswith("ERROR")] or p.stderr.splitlines()
        return f"pip install {LITELLM_REQUIREMENT} failed: {(tail or ['?'])[-1][:200]}"
    log(f"  installed in {time.monotonic() - t0:.0f} s")
    return None


def launch_litellm(work, stub_port):
    """Starts LiteLLM's proxy (it takes from ~20 s on a quiet machine to over a minute on a busy one to import);
    wait_litellm waits for it."""
    port = free_port()
    cfg = work / "litellm.yaml"
    models = []
    for name, path in ((MODEL, "/v1"), (MODEL_SSE, "/sse/v1")):
        models.append(f"""  - model_name: {name}
    litellm_params:
      model: openai/{name}
      api_base: http://127.0.0.1:{stub_port}{path}
      api_key: {UPSTREAM_KEY}
""")
    cfg.write_text("model_list:\n" + "".join(models) + f"general_settings:\n  master_key: {CLIENT_TOKEN}\n")
    # No fetch of the model price list at start (no network needed), no telemetry.
    env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True", "LITELLM_TELEMETRY": "False"}
    proc = Proc("litellm", [str(LITELLM_VENV / "bin" / "litellm"), "--config", str(cfg), "--host", "127.0.0.1",
                            "--port", str(port), "--num_workers", str(os.cpu_count() or 1)], work, env=env)
    return proc, f"http://127.0.0.1:{port}"


def wait_litellm(proc, url, timeout=240):
    """Until its liveness route answers 200 (the parent binds the port before its workers are ready)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.proc.poll() is not None:
            raise RuntimeError(f"litellm exited with {proc.proc.returncode} while starting")
        try:
            if http("GET", url + "/health/liveliness", timeout=5)[0] == 200:
                return
        except OSError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"litellm did not answer within {timeout} s")


def wrk_script(work, mode, token):
    path = work / f"wrk-{mode}-{hashlib.sha256(token.encode()).hexdigest()[:8]}.lua"
    path.write_text(f"""wrk.method = "POST"
wrk.body = {json.dumps(REQUEST[mode])}
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer {token}"
done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    '{{"requests": %d, "seconds": %.3f, "p50_us": %.1f, "p99_us": %.1f, "non_2xx": %d, "socket_errors": %d}}\\n',
    summary.requests, summary.duration / 1e6, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
""")
    return path


def wrk(url, script, conns, secs):
    p = subprocess.run(["wrk", "-t1", f"-c{conns}", f"-d{secs}s", "--timeout", "10s", "-s", str(script), url],
                       capture_output=True, text=True, timeout=secs + 60)
    lines = [line for line in p.stdout.splitlines() if line.startswith("{")]
    if p.returncode != 0 or not lines:
        raise RuntimeError(f"wrk exited with {p.returncode}: {(p.stderr or p.stdout).strip()[-200:]}")
    r = json.loads(lines[-1])
    r["requests_per_s"] = r["requests"] / r["seconds"] if r["seconds"] else 0.0
    r["failed"] = r["non_2xx"] + r["socket_errors"]
    return r


def check_path(name, url, mode, token):
    """One request by hand: 200 and the stub's answer came through (the upstream key reached the stub)."""
    status, text, headers = http("POST", url, REQUEST[mode], {"Authorization": f"Bearer {token}",
                                                              "Content-Type": "application/json"})
    if status != 200:
        raise RuntimeError(f"{name} {mode}: {status} {text[:200]}")
    if mode == "json" and "How can I help you today?" not in text:
        raise RuntimeError(f"{name} json: unexpected answer {text[:200]}")
    if mode == "sse" and ("[DONE]" not in text or "you today?" not in text):
        raise RuntimeError(f"{name} sse: unexpected stream {text[:200]}")


def session_cpu_seconds(sid):
    """User + system CPU seconds of the live processes of session `sid` (a server and its workers), threads included."""
    total = 0
    for stat in pathlib.Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:  # gone meanwhile
            continue
        if int(fields[3]) == sid:  # fields[0] is the state: the session is field 6 of proc(5)
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


def one_client_wrk(url, script, opts):
    """One client through wrk alone (≥ 2,000 requests after a warm-up): for LiteLLM, too slow to interleave."""
    warm = wrk(url, script, 1, 1)
    rate = warm["requests_per_s"] or 1.0
    secs = max(opts.one_secs, int((MIN_ONE_CLIENT_REQUESTS * 1.15) / rate) + 1)
    one = wrk(url, script, 1, min(secs, opts.max_one_secs))
    for _ in range(3):  # slower than the warm-up said (a busy machine): again, longer
        if one["requests"] >= MIN_ONE_CLIENT_REQUESTS or secs >= opts.max_one_secs:
            break  # (a path slower than 2,000 in max_one_secs gets fewer: the table gives the count)
        secs = int(MIN_ONE_CLIENT_REQUESTS * 1.3 / max(one["requests_per_s"], 1.0)) + 1
        one = wrk(url, script, 1, min(secs, opts.max_one_secs))
    return one


def probe_binary(work):
    """The interleaving one-client probe (bench/one_client_probe.cc): the bench build's, else compiled here (it needs
    nothing but the C++ standard library)."""
    built = BUILD / "dyad_one_client_probe"
    if built.exists():
        return built
    out = work / "one_client_probe"
    cxx = os.environ.get("CXX", "c++")
    p = subprocess.run([cxx, "-O2", "-std=c++20", str(ROOT / "bench" / "one_client_probe.cc"), "-o", str(out)],
                       capture_output=True, text=True, timeout=300)
    if p.returncode != 0:
        raise SystemExit(f"cannot build bench/one_client_probe.cc with {cxx}: {p.stderr.strip()[-400:]}")
    return out


def probe_request(work, path, mode, base, token, name=None):
    """The whole HTTP/1.1 request wrk sends for (path, mode), in a file the probe reads; the probe's spec for it,
    which names the measurement `name` (by default the path: a name of its own tells apart two targets of one
    path, e.g. two gateway builds)."""
    name = name or path
    host = base.split("//", 1)[1]
    body = REQUEST[mode].encode()
    head = (f"POST {CLIENT_PATH[path][mode]} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Authorization: Bearer {token}\r\nContent-Length: {len(body)}\r\n\r\n")
    f = work / f"probe-{name}-{mode}.http"
    f.write_bytes(head.encode() + body)
    return f"{name}={host}:{f}"


def one_client_interleaved(probe, specs, opts):
    """One client on each path, request by request in a shuffled order each round (see one_client_probe.cc): a burst
    of other work on the machine falls on every path alike, so the paths' percentiles compare."""
    p = subprocess.run([str(probe), "--rounds", str(opts.probe_rounds), "--warmup", "500", *specs],
                       capture_output=True, text=True, timeout=600)
    if p.returncode != 0:
        raise RuntimeError(f"the probe exited with {p.returncode}: {p.stderr.strip()[-300:]}")
    return json.loads(p.stdout)["paths"]


def many_clients(url, script, opts, sid):
    """opts.clients clients after a warm-up, with the CPU the path's own processes (session `sid`: the proxy, or the
    stub for direct) spent per request meanwhile."""
    wrk(url, script, opts.clients, 1)  # warm-up of the N connections (and of the proxy's upstream pool)
    cpu0 = session_cpu_seconds(sid)
    many = wrk(url, script, opts.clients, opts.many_secs)
    many["cpu_us_per_request"] = 1e6 * (session_cpu_seconds(sid) - cpu0) / max(many["requests"], 1)
    return many


def many_clients_interleaved(targets, opts):
    """opts.clients clients on each path in turn, opts.many_slices slices of opts.slice_secs each, the paths in a
    shuffled order in every turn: other work on the machine takes its share from every path alike. `targets` maps a
    path to (url, wrk script, session id); per path: requests, seconds, requests_per_s, failed and the CPU its own
    processes spent per request, over all its slices."""
    out = {}
    for path, (url, script, _) in targets.items():
        wrk(url, script, opts.clients, 1)  # warm-up of the N connections (and of the proxy's upstream pool)
        out[path] = {"requests": 0, "seconds": 0.0, "failed": 0, "cpu_seconds": 0.0}
    order = list(targets)
    for _ in range(opts.many_slices):
        SHUFFLE.shuffle(order)
        for path in order:
            url, script, sid = targets[path]
            cpu0 = session_cpu_seconds(sid)
            w = wrk(url, script, opts.clients, opts.slice_secs)
            m = out[path]
            m["cpu_seconds"] += session_cpu_seconds(sid) - cpu0
            for k in ("requests", "seconds", "failed"):
                m[k] += w[k]
    for m in out.values():
        m["requests_per_s"] = m["requests"] / m["seconds"] if m["seconds"] else 0.0
        m["cpu_us_per_request"] = 1e6 * m.pop("cpu_seconds") / max(m["requests"], 1)
    return out


def median_of(rounds, path, mode, *keys):
    vals = []
    for r in rounds:
        x = r.get(path, {}).get(mode)
        for k in keys:
            x = x.get(k) if isinstance(x, dict) else None
        if x is not None:
            vals.append(x)
    return statistics.median(vals) if vals else None


def summarize(rounds, available):
    out = {}
    for path in PATHS:
        if path not in available:
            continue
        out[path] = {}
        for mode in MODES:
            s = {k: median_of(rounds, path, mode, "one", k) for k in ("p50_us", "p99_us")}
            s["one_requests"] = sum(r[path][mode]["one"]["requests"] for r in rounds if path in r)
            s["requests_per_s"] = median_of(rounds, path, mode, "many", "requests_per_s")
            s["cpu_us_per_request"] = median_of(rounds, path, mode, "many", "cpu_us_per_request")
            s["failed"] = sum(r[path][mode][w]["failed"] for r in rounds if path in r for w in ("one", "many"))
            if path != "direct":  # added latency: per round against direct's of the same round, median of the rounds
                for k in ("p50_us", "p99_us"):
                    s["added_" + k] = statistics.median(
                        r[path][mode]["one"][k] - r["direct"][mode]["one"][k] for r in rounds if path in r)
            out[path][mode] = s
    for mode in MODES:  # throughput ratios against nginx's, per round, median
        for path in ("gateway", "sketch", "litellm"):
            if path in out and "nginx" in out:
                out[path][mode]["rps_vs_nginx"] = statistics.median(
                    r[path][mode]["many"]["requests_per_s"] / r["nginx"][mode]["many"]["requests_per_s"]
                    for r in rounds if path in r)
                cpu = [r[path][mode]["many"]["cpu_us_per_request"] / r["nginx"][mode]["many"]["cpu_us_per_request"]
                       for r in rounds if path in r and r["nginx"][mode]["many"].get("cpu_us_per_request")
                       and r[path][mode]["many"].get("cpu_us_per_request") is not None]
                if cpu:
                    out[path][mode]["cpu_vs_nginx"] = statistics.median(cpu)
    return out


def busy_cores(seconds=2.0):
    """How many cores other work kept busy over `seconds` (from /proc/stat), before this bench starts anything: the
    load average lags by a minute (a bench run right after another would count the first one's load)."""
    def sample():
        f = [int(x) for x in pathlib.Path("/proc/stat").read_text().splitlines()[0].split()[1:]]
        return sum(f), f[3] + f[4]  # all, idle + iowait
    t0, i0 = sample()
    time.sleep(seconds)
    t1, i1 = sample()
    return (os.cpu_count() or 1) * (1 - (i1 - i0) / max(t1 - t0, 1))


def uptime():
    try:
        return subprocess.run(["uptime"], capture_output=True, text=True, timeout=5).stdout.strip()
    except OSError:
        return "load average %.2f, %.2f, %.2f" % os.getloadavg()


def run(opts):
    for tool in ("nginx", "wrk"):
        if not shutil.which(tool) and not os.path.exists(f"/usr/sbin/{tool}"):
            raise SystemExit(f"{tool} is not installed (scripts/install-deps.sh --test)")
    if not GATEWAY_BIN.exists():
        raise SystemExit(f"{GATEWAY_BIN} is missing: build the Release dyad-gateway (or run bench/run.sh)")
    nginx = shutil.which("nginx") or "/usr/sbin/nginx"
    result = {"mode": "quick" if opts.quick else "full", "clients": opts.clients, "cores": os.cpu_count(),
              "uptime_start": uptime(), "load_start": os.getloadavg()[0], "busy_cores_start": busy_cores(),
              "started": datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
              "nginx_version": subprocess.run([nginx, "-v"], capture_output=True, text=True).stderr.strip(),
              "litellm": {"available": False}}
    log(f"machine: {os.cpu_count()} cores; {result['uptime_start']}")
    litellm_why = None
    if opts.no_litellm:
        litellm_why = "left out (--no-litellm)"
    elif litellm_version() is None:
        if opts.install_litellm or not opts.quick:
            litellm_why = install_litellm()
        else:
            litellm_why = (f"no LiteLLM venv at {LITELLM_VENV} (the full mode or --install-litellm installs "
                           f"{LITELLM_REQUIREMENT})")
        if litellm_why is None and litellm_version() is None:
            litellm_why = "installed, but the litellm command is missing"
    t0 = time.monotonic()
    procs = []
    lite = None
    with tempfile.TemporaryDirectory(prefix="dyad-v1-bench-") as tmp:
        work = pathlib.Path(tmp)
        try:
            stub_port, proxy_port = free_port(), free_port()
            if litellm_why is None:  # first: its start is long
                lite, lite_url = launch_litellm(work, stub_port)
                procs.append(lite)
            (work / "stub.conf").write_text(stub_config(work, stub_port))
            stub = Proc("stub", [nginx, "-p", str(work), "-c", str(work / "stub.conf")], work, port=stub_port)
            procs.append(stub)
            (work / "proxy.conf").write_text(proxy_config(work, proxy_port, stub_port))
            proxy = Proc("nginx-proxy", [nginx, "-p", str(work), "-c", str(work / "proxy.conf")], work, port=proxy_port)
            procs.append(proxy)
            gw, gw_url = start_gateway(work, stub_port)
            procs.append(gw)
            # Each path's own processes (their sessions: each was started in a new one), whose CPU is measured.
            sids = {"direct": stub.proc.pid, "nginx": proxy.proc.pid, "gateway": gw.proc.pid,
                    "litellm": lite.proc.pid if lite else None}
            bases = {"direct": f"http://127.0.0.1:{stub_port}", "nginx": f"http://127.0.0.1:{proxy_port}",
                     "gateway": gw_url}
            if SKETCH_BIN.exists():
                sketch_port = free_port()
                sketch = Proc("sketch", [str(SKETCH_BIN), str(sketch_port), str(stub_port), CLIENT_TOKEN, UPSTREAM_KEY],
                              work, port=sketch_port)
                procs.append(sketch)
                sids["sketch"], bases["sketch"] = sketch.proc.pid, f"http://127.0.0.1:{sketch_port}"
            tokens = {"direct": UPSTREAM_KEY, "litellm": CLIENT_TOKEN, **{p: CLIENT_TOKEN for p in ("gateway", "nginx", "sketch")}}
            status, _, _ = http("POST", bases["direct"] + STUB_PATH["json"], REQUEST["json"])
            if status != 401:
                raise RuntimeError(f"the stub answered {status} without the upstream key (401 expected)")
            for path in bases:
                for mode in MODES:
                    check_path(path, bases[path] + CLIENT_PATH[path][mode], mode, tokens[path])

            def litellm_ready():
                """LiteLLM's base URL once it answers right, else None (and why in litellm_why)."""
                nonlocal litellm_why
                if lite is None or litellm_why:
                    return None
                if "litellm" not in bases:
                    t = time.monotonic()
                    try:
                        wait_litellm(lite, lite_url)
                        for mode in MODES:
                            check_path("litellm", lite_url + CLIENT_PATH["litellm"][mode], mode, CLIENT_TOKEN)
                    except (RuntimeError, OSError) as e:
                        litellm_why = f"its proxy did not serve: {e}"
                        return None
                    log(f"LiteLLM ready (waited {time.monotonic() - t:.0f} s)")
                    bases["litellm"] = lite_url
                    result["litellm"] = {"available": True, "version": litellm_version(), "workers": os.cpu_count() or 1,
                                         "started_alongside": opts.quick}
                return bases["litellm"]

            # The full mode measures nothing while LiteLLM's workers start (a minute of CPU on a busy machine);
            # --quick measures the others meanwhile (said in the output).
            if not opts.quick:
                litellm_ready()
            core = [p for p in ("direct", "gateway", "nginx", "sketch") if p in bases]
            scripts = {(p, m): wrk_script(work, m, tokens[p]) for p in PATHS for m in MODES}
            rounds = []

            probe = probe_binary(work)
            specs = {(p, m): probe_request(work, p, m, bases[p], tokens[p]) for p in core for m in MODES}

            def report(r, path, mode):
                m = r[path][mode]
                failed = m["one"]["failed"] + m["many"]["failed"]
                log(f"  {path:8} {mode:4}: 1 client p50 {m['one']['p50_us']:.0f} µs p99 {m['one']['p99_us']:.0f} µs "
                    f"({m['one']['requests']} requests); {opts.clients} clients {m['many']['requests_per_s']:,.0f} "
                    f"req/s, {m['many']['cpu_us_per_request']:.0f} µs CPU/request" + (f"; {failed} failed" if failed else ""))

            def measure_core(r, mode):
                ones = one_client_interleaved(probe, [specs[(p, mode)] for p in core], opts)
                manys = many_clients_interleaved(
                    {p: (bases[p] + CLIENT_PATH[p][mode], scripts[(p, mode)], sids[p]) for p in core}, opts)
                for path in core:
                    r.setdefault(path, {})[mode] = {"one": ones[path], "many": manys[path]}
                    report(r, path, mode)

            def measure_litellm(r, mode):
                url = bases["litellm"] + CLIENT_PATH["litellm"][mode]
                r.setdefault("litellm", {})[mode] = {"one": one_client_wrk(url, scripts[("litellm", mode)], opts),
                                                     "many": many_clients(url, scripts[("litellm", mode)], opts,
                                                                          sids["litellm"])}
                report(r, "litellm", mode)

            for i in range(opts.rounds):
                log(f"round {i + 1} of {opts.rounds}")
                r = {}
                for mode in MODES:
                    measure_core(r, mode)
                if litellm_ready():
                    for mode in MODES:
                        measure_litellm(r, mode)
                rounds.append(r)
            available = [p for p in PATHS if p in bases]
        finally:
            for p in reversed(procs):
                p.stop()
    if litellm_why:
        result["litellm"] = {"available": False, "why": litellm_why}
    result.update(rounds=rounds, summary=summarize(rounds, available), seconds=time.monotonic() - t0,
                  uptime_end=uptime(), load_end=os.getloadavg()[0])
    return result


def verdict(ok):
    return "**met**" if ok else "not met"


def table(r):
    s = r["summary"]
    names = {"direct": "direct to the stub", "gateway": "dyad-gateway", "nginx": "nginx reverse proxy",
             "sketch": "event-loop sketch (not a product)",
             "litellm": f"LiteLLM proxy {r['litellm'].get('version', '')}".strip()}
    mode_names = {"json": "non-streaming", "sse": "streaming (SSE)"}
    out = [f"Measured {r['started']}, {r['mode']} mode ({len(r['rounds'])} round(s), medians), {r['cores']} cores; "
           f"load at the start: `{r['uptime_start']}`; at the end: `{r['uptime_end']}`. The machine is shared with "
           f"other work: figures move with it; compare within a column of the same run. {r['nginx_version']}. "
           f"Request bodies: {len(REQUEST['json']):,} bytes.", "",
           f"| path | mode | 1 client p50 µs | p99 µs | requests | added p50 µs | added p99 µs | {r['clients']} clients "
           "req/s | vs nginx | CPU µs/request | vs nginx | failed |",
           "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for path in PATHS:
        if path not in s:
            continue
        for mode in MODES:
            x = s[path][mode]
            added = ("—", "—") if path == "direct" else (f"{x['added_p50_us']:+,.0f}", f"{x['added_p99_us']:+,.0f}")
            v = x.get("rps_vs_nginx")
            ratio = "—" if v is None else (f"{v:.2f}×" if v >= 0.1 else f"{v:.2g}×")
            c = x.get("cpu_vs_nginx")
            cpu_ratio = "—" if c is None else f"{c:.1f}×"
            out.append(f"| {names[path]} | {mode_names[mode]} | {x['p50_us']:,.0f} | {x['p99_us']:,.0f} | "
                       f"{x['one_requests']:,} | {added[0]} | "
                       f"{added[1]} | {x['requests_per_s']:,.0f} | {ratio} | {x['cpu_us_per_request'] or 0:,.0f} | {cpu_ratio} | "
                       f"{x['failed']} |")
    if not r["litellm"]["available"]:
        out.append(f"| LiteLLM proxy | — | not available: {r['litellm'].get('why', '?')} | | | | | | | | | |")
    out.append("")
    if r["litellm"].get("started_alongside"):
        out.append("Quick mode: LiteLLM's workers were starting (CPU-bound imports) while direct, the gateway and nginx "
                   "were measured.\n")
    if r.get("busy_cores_start", 0) > 0.5:
        out.append(f"Other work kept {r['busy_cores_start']:.1f} of the {r['cores']} cores busy at the start: it took "
                   "CPU from every path at random, so the throughput ratios and verdicts below say little. CPU per "
                   "request is counted per process and still compares.\n")
    if "gateway" in s:
        for mode in MODES:
            g = s["gateway"][mode]
            out.append(f"Target, {mode_names[mode]}: added p99 at one client ≤ {TARGET_ADDED_P99_US} µs: "
                       f"{g['added_p99_us']:+.0f} µs, {verdict(g['added_p99_us'] <= TARGET_ADDED_P99_US)}; "
                       f"throughput ≥ {TARGET_RPS_RATIO}× nginx's: {g.get('rps_vs_nginx', 0):.2f}×, "
                       f"{verdict(g.get('rps_vs_nginx', 0) >= TARGET_RPS_RATIO)}.")
    return "\n".join(out) + "\n"


def main():
    global QUIET
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--clients", type=int, default=16)
    ap.add_argument("--rounds", type=int)
    ap.add_argument("--install-litellm", action="store_true")
    ap.add_argument("--no-litellm", action="store_true")
    ap.add_argument("--body-kib", type=float, default=0, help="a conversation of this size in each request body")
    opts = ap.parse_args()
    REQUEST.update(requests_of(opts.body_kib))
    if opts.rounds is None:
        opts.rounds = 1 if opts.quick else 3
    # One client: at least 2,000 requests, but at most max_one_secs (LiteLLM on a busy machine: ~50 ms a request).
    opts.one_secs, opts.many_secs, opts.max_one_secs = (2, 2, 12) if opts.quick else (4, 5, 60)
    # The interleaved probe: rounds of one request per path (direct, gateway, nginx), about 0.3 ms each.
    opts.probe_rounds = 5000 if opts.quick else 20000
    # N clients: each path in turn, for many_slices slices of slice_secs (the same seconds per path as before).
    opts.many_slices, opts.slice_secs = (2, 1) if opts.quick else (5, 1)
    # A SIGTERM (a timeout of the caller) still stops the servers this bench started (the finally of run()).
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    result = run(opts)
    if opts.json:
        print(json.dumps(result))
    else:
        print(table(result), end="")


if __name__ == "__main__":
    main()
