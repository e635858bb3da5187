"""bench/v1_proxy_bench.py (issue 16): that its upstream stub and its nginx reverse proxy do the job they stand for
(the stub refuses a request without the upstream key; the proxy refuses a wrong client token and replaces the
client's Authorization with the upstream key), how the rounds become the figures (added latency per round against
direct, throughput against nginx's), and how bench/run.py turns them into rows. The measurements themselves are not
run here (noise on a shared machine)."""
import importlib.util
import json
import os
import pathlib
import shutil
import subprocess
import time

import pytest
import requests

ROOT = pathlib.Path(__file__).resolve().parents[2]


def load(name, path):
    spec = importlib.util.spec_from_file_location(name, ROOT / path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


bench = load("v1_proxy_bench", "bench/v1_proxy_bench.py")
ab = load("v1_ab_bench", "bench/v1_ab_bench.py")
first_byte = load("v1_first_byte", "bench/v1_first_byte.py")
run = load("bench_run_v1", "bench/run.py")
NGINX = shutil.which("nginx") or ("/usr/sbin/nginx" if pathlib.Path("/usr/sbin/nginx").exists() else None)


def test_nginx_strings_are_quoted_and_a_dollar_is_refused():
    assert bench.nginx_string("it's a \\ test") == "'it\\'s a \\\\ test'"
    with pytest.raises(AssertionError):
        bench.nginx_string("costs $5")
    # The canned answers are valid: the JSON a chat completion, the stream six events and [DONE].
    assert json.loads(bench.CHAT_JSON)["choices"][0]["message"]["content"]
    events = [e for e in bench.SSE.split("\n\n") if e]
    assert events[-1] == "data: [DONE]" and len(events) == 7
    assert all(json.loads(e[len("data: "):])["object"] == "chat.completion.chunk" for e in events[:-1])


@pytest.fixture
def nginx_pair(tmp_path):
    if not NGINX:
        pytest.skip("nginx not installed (scripts/install-deps.sh --test)")
    stub_port, proxy_port = bench.free_port(), bench.free_port()
    (tmp_path / "stub.conf").write_text(bench.stub_config(tmp_path, stub_port))
    (tmp_path / "proxy.conf").write_text(bench.proxy_config(tmp_path, proxy_port, stub_port))
    procs = []
    try:
        for name, conf, port in (("stub", "stub.conf", stub_port), ("proxy", "proxy.conf", proxy_port)):
            procs.append(bench.Proc(name, [NGINX, "-p", str(tmp_path), "-c", str(tmp_path / conf)], tmp_path,
                                    port=port, ready_timeout=20))
        yield f"http://127.0.0.1:{stub_port}", f"http://127.0.0.1:{proxy_port}"
    finally:
        for p in reversed(procs):
            p.stop()


def post(url, token, mode="json"):
    headers = {"Content-Type": "application/json"}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return requests.post(url + bench.STUB_PATH[mode], data=bench.REQUEST[mode], headers=headers, timeout=10)


def test_the_stub_answers_only_with_the_upstream_key(nginx_pair):
    stub, _ = nginx_pair
    for mode in bench.MODES:
        ok = post(stub, bench.UPSTREAM_KEY, mode)
        assert ok.status_code == 200
        assert ok.text == (bench.CHAT_JSON if mode == "json" else bench.SSE)
        assert ok.headers["Content-Type"].startswith("application/json" if mode == "json" else "text/event-stream")
        for token in (None, bench.CLIENT_TOKEN, bench.UPSTREAM_KEY + "x", bench.UPSTREAM_KEY.upper()):
            r = post(stub, token, mode)
            assert r.status_code == 401 and r.json()["error"]["code"] == "invalid_api_key"
    assert requests.post(stub + "/v1/embeddings", headers={"Authorization": f"Bearer {bench.UPSTREAM_KEY}"},
                         timeout=10).status_code == 404


def test_the_nginx_proxy_checks_the_client_token_and_injects_the_upstream_key(nginx_pair):
    _, proxy = nginx_pair
    for mode in bench.MODES:
        r = post(proxy, bench.CLIENT_TOKEN, mode)  # the stub's 200 proves the upstream key replaced the token
        assert r.status_code == 200 and "you today?" in r.text
        for token in (None, bench.UPSTREAM_KEY, "wrong"):
            assert post(proxy, token, mode).status_code == 401


def one(p50, p99, rps, failed=0, cpu=None):
    many = {"requests_per_s": rps, "failed": 0}
    if cpu is not None:
        many["cpu_us_per_request"] = cpu
    return {"one": {"p50_us": p50, "p99_us": p99, "requests": 3000, "failed": failed}, "many": many}


def test_cpu_per_request_is_a_median_and_a_per_round_ratio_against_nginx():
    rounds = [{"direct": {m: one(50, 90, 10000, cpu=10) for m in bench.MODES},
               "gateway": {m: one(120, 200, 6000, cpu=120) for m in bench.MODES},
               "nginx": {m: one(80, 130, 8000, cpu=40) for m in bench.MODES}},
              {"direct": {m: one(50, 90, 10000, cpu=12) for m in bench.MODES},
               "gateway": {m: one(120, 200, 6000, cpu=100) for m in bench.MODES},
               "nginx": {m: one(80, 130, 8000, cpu=50) for m in bench.MODES}}]
    s = bench.summarize(rounds, ["direct", "gateway", "nginx"])
    assert s["gateway"]["json"]["cpu_us_per_request"] == 110
    assert s["gateway"]["json"]["cpu_vs_nginx"] == pytest.approx(2.5)  # median of 3.0 and 2.0
    assert "cpu_vs_nginx" not in s["direct"]["json"]


def test_session_cpu_counts_the_sessions_processes_only():
    burn = "import time\nt = time.process_time()\nwhile time.process_time() - t < 0.3: pass\nprint('done', flush=True)\ntime.sleep(30)"
    p = subprocess.Popen(["python3", "-c", burn], stdout=subprocess.PIPE, text=True, start_new_session=True)
    try:
        assert p.stdout.readline().strip() == "done"
        assert 0.25 <= bench.session_cpu_seconds(p.pid) < 5
        assert bench.session_cpu_seconds(2 ** 22 + 1) == 0  # no such session
    finally:
        p.kill()
        p.wait()


def test_added_latency_is_per_round_against_direct_and_throughput_against_nginx():
    rounds = [{"direct": {"json": one(50, 90, 10000), "sse": one(60, 100, 9000)},
               "gateway": {"json": one(120, 200, 6000), "sse": one(100, 150, 6300, failed=2)},
               "nginx": {"json": one(80, 130, 8000), "sse": one(90, 140, 9000)}},
              {"direct": {"json": one(150, 400, 5000), "sse": one(60, 100, 9000)},
               "gateway": {"json": one(180, 450, 2000), "sse": one(100, 150, 6300)},
               "nginx": {"json": one(160, 420, 4000), "sse": one(90, 140, 9000)}}]
    s = bench.summarize(rounds, ["direct", "gateway", "nginx"])
    g = s["gateway"]["json"]
    assert g["added_p50_us"] == 50  # median of 70 and 30 (not 150 − 100 from the medians)
    assert g["added_p99_us"] == 80  # median of 110 and 50
    assert g["rps_vs_nginx"] == pytest.approx(0.625)  # median of 0.75 and 0.5
    assert g["one_requests"] == 6000 and "added_p50_us" not in s["direct"]["json"]
    assert s["gateway"]["sse"]["failed"] == 2 and "litellm" not in s


def summary(gw_added_p99, ratio, failed=0, litellm=True):
    def m(added, rps, vs=None, f=0):
        x = {"p50_us": 100, "p99_us": 200, "added_p50_us": added / 2, "added_p99_us": added, "requests_per_s": rps,
             "failed": f}
        if vs is not None:
            x["rps_vs_nginx"] = vs
        return x
    s = {"direct": {k: m(0, 10000) for k in ("json", "sse")},
         "gateway": {k: m(gw_added_p99, 8000 * ratio, ratio, failed) for k in ("json", "sse")},
         "nginx": {k: m(40, 8000) for k in ("json", "sse")}}
    if litellm:
        s["litellm"] = {k: m(4000, 500, 0.0625) for k in ("json", "sse")}
    return {"clients": 16, "summary": s, "litellm": {"available": litellm, "why": "pip install failed: no litellm-proxy"}}


def test_run_py_rows_give_both_targets_per_mode():
    rows = run.v1_result_rows(summary(80, 0.75))
    assert len(rows) == 4
    lat, thr = rows[0], rows[1]
    assert "non-streaming" in lat["benchmark"] and lat["met"] == "**met**" and "p99 +80 µs" in lat["figure"]
    assert "nginx: p99 +40" in lat["comparison"] and "LiteLLM: p99 +4,000" in lat["comparison"]
    assert thr["ratio"] == "**0.75×**" and thr["met"] == "**met**" and "16 clients" in thr["benchmark"]
    assert "LiteLLM: 500 (0.062× nginx's)" in thr["comparison"]
    rows = run.v1_result_rows(summary(101, 0.69))
    assert rows[0]["met"] == "not met" and rows[1]["met"] == "not met"
    assert "sketch" not in rows[1]["comparison"]
    with_sketch = summary(80, 0.75)
    with_sketch["summary"]["sketch"] = {k: {"requests_per_s": 9600, "rps_vs_nginx": 1.2, "failed": 0}
                                        for k in ("json", "sse")}
    assert "event-loop sketch: 9,600 req/s (1.20× nginx's)" in run.v1_result_rows(with_sketch)[1]["comparison"]


def test_run_py_rows_say_why_litellm_is_missing_and_count_failures():
    rows = run.v1_result_rows(summary(10, 0.9, failed=3, litellm=False))
    assert "LiteLLM: not available" in rows[0]["comparison"]
    assert "not available (pip install failed: no litellm-proxy)" in rows[1]["comparison"]
    assert "(3 failed requests)" in rows[0]["figure"] and rows[0]["met"] == "not met"
    assert rows[1]["met"] == "not met"  # failed requests void the throughput too


def test_the_bench_refuses_to_start_without_its_gateway_binary(tmp_path):
    p = subprocess.run(["python3", str(ROOT / "bench" / "v1_proxy_bench.py"), "--quick", "--no-litellm"],
                       env={"PATH": "/usr/bin:/bin:/usr/sbin", "DYAD_GATEWAY_BIN": str(tmp_path / "nothing")},
                       capture_output=True, text=True, timeout=60)
    assert p.returncode != 0 and "nothing is missing" in p.stderr


def test_the_table_says_when_other_work_kept_the_cores_busy_at_the_start():
    r = {"summary": {}, "started": "t", "mode": "quick", "rounds": [], "cores": 2, "uptime_start": "u",
         "uptime_end": "u", "nginx_version": "n", "clients": 16, "litellm": {"available": False, "why": "w"}}
    assert "Other work kept 1.5 of the 2 cores busy" in bench.table({**r, "busy_cores_start": 1.5})
    assert "Other work kept" not in bench.table({**r, "busy_cores_start": 0.2})
    assert 0 <= bench.busy_cores(0.2) <= (os.cpu_count() or 1)


def test_the_ab_bench_gives_medians_of_the_per_pair_ratios_and_counts_the_pairs_b_won():
    def t(cpu, rps, failed=0):
        return {"cpu_us_per_request": cpu, "requests_per_s": rps, "failed": failed}
    # The machine drifts: pair 2 is slower for both. A median of per-pair ratios keeps B's 10% gain; the ratio of
    # the medians of A and B would not be what a pair shows.
    pairs = [(t(200, 7000), t(180, 7700)), (t(300, 5000), t(270, 5400, failed=1)), (t(210, 6800), t(220, 6600))]
    s = ab.summarize(pairs)
    assert s["pairs"] == 3 and s["failed"] == 1
    assert s["cpu_ratio"] == pytest.approx(0.9)  # ratios 0.9, 0.9, 1.048
    assert s["b_less_cpu"] == 2
    assert s["rps_ratio"] == pytest.approx(1.08)  # ratios 1.1, 1.08, 0.97
    assert (s["a_cpu_us"], s["b_cpu_us"]) == (210, 220)
    assert (s["a_rps"], s["b_rps"]) == (6800, 6600)


class ScriptedServer:
    """A loopback HTTP/1.1 server that answers every request on a connection with the same bytes."""

    def __init__(self, answer):
        import socket
        import threading
        self.answer = answer
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.port = self.sock.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self):
        import threading
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._connection, args=(conn,), daemon=True).start()

    def _connection(self, conn):
        data = b""
        with conn:
            while True:
                while b"\r\n\r\n" not in data:
                    more = conn.recv(65536)
                    if not more:
                        return
                    data += more
                head, data = data.split(b"\r\n\r\n", 1)
                length = int(next(line.split(b":")[1] for line in head.split(b"\r\n")
                                  if line.lower().startswith(b"content-length:")))
                while len(data) < length:
                    data += conn.recv(65536)
                data = data[length:]
                conn.sendall(self.answer)
                if b"Connection: close" in self.answer:
                    return

    def close(self):
        self.sock.close()


@pytest.fixture
def probe(tmp_path):
    if not shutil.which(os.environ.get("CXX", "c++")):
        pytest.skip("no C++ compiler to build bench/one_client_probe.cc")
    return bench.probe_binary(tmp_path)


def probe_spec(tmp_path, name, port, token="t"):
    base = f"http://127.0.0.1:{port}"
    return bench.probe_request(tmp_path, "direct", "json", base, token, name=name)


def test_the_probe_request_is_what_wrk_sends(tmp_path):
    spec = bench.probe_request(tmp_path, "gateway", "sse", "http://127.0.0.1:8123", "tok")
    name, rest = spec.split("=", 1)
    assert name == "gateway" and rest.startswith("127.0.0.1:8123:")
    raw = pathlib.Path(rest.split(":", 2)[2]).read_bytes()
    head, body = raw.split(b"\r\n\r\n", 1)
    lines = head.decode().split("\r\n")
    assert lines[0] == "POST /v1/chat/completions HTTP/1.1"
    assert {"Host: 127.0.0.1:8123", "Authorization: Bearer tok", "Content-Type: application/json",
            f"Content-Length: {len(body)}"} <= set(lines[1:])
    assert json.loads(body) == json.loads(bench.REQUEST["sse"])
    # A name of its own (two targets of one path, as the A/B bench has): its spec and its file, the first kept.
    named = bench.probe_request(tmp_path, "gateway", "sse", "http://127.0.0.1:8124", "tok", name="b")
    label, named_rest = named.split("=", 1)
    assert label == "b" and named_rest.startswith("127.0.0.1:8124:")
    assert named_rest.split(":", 2)[2] != rest.split(":", 2)[2]
    assert b"Host: 127.0.0.1:8123\r\n" in pathlib.Path(rest.split(":", 2)[2]).read_bytes()


def test_the_probe_reads_whole_answers_of_either_framing_and_counts_failures(tmp_path, probe):
    body = b'{"ok":true}'
    sized = ScriptedServer(b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s" % (len(body), body))
    chunked = ScriptedServer(b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
                             b"5\r\ndata:\r\n1a\r\n two pieces in one chunk\n\n\r\n0\r\n\r\n")
    refused = ScriptedServer(b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 2\r\n\r\nno")
    closing = ScriptedServer(b"HTTP/1.1 200 OK\r\nConnection: close\r\n\r\nto the close")
    try:
        specs = [probe_spec(tmp_path, n, s.port) for n, s in
                 (("sized", sized), ("chunked", chunked), ("refused", refused), ("closing", closing))]
        p = subprocess.run([str(probe), "--rounds", "40", "--warmup", "3", *specs], capture_output=True, text=True,
                           timeout=120)
        assert p.returncode == 0, p.stderr
        r = json.loads(p.stdout)
        assert r["rounds"] == 40
        paths = r["paths"]
        # Both framings read whole: had the probe stopped early, the next answer's bytes would break the next
        # round's parse and count as failures.
        for name in ("sized", "chunked"):
            assert paths[name]["requests"] == 40 and paths[name]["failed"] == 0
            assert 0 < paths[name]["p50_us"] <= paths[name]["p99_us"] <= paths[name]["max_us"]
        assert paths["refused"]["requests"] == 0 and paths["refused"]["failed"] == 40  # not a 200
        assert paths["closing"]["requests"] == 0 and paths["closing"]["failed"] == 40  # no length: not measurable
    finally:
        for s in (sized, chunked, refused, closing):
            s.close()


def test_the_probe_refuses_a_path_it_cannot_reach(tmp_path, probe):
    p = subprocess.run([str(probe), "--rounds", "5", probe_spec(tmp_path, "gone", bench.free_port())],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 2 and "cannot connect to gone" in p.stderr


def test_interleaved_measures_every_path_through_the_real_stub_and_proxy(tmp_path, nginx_pair, probe):
    if not shutil.which("wrk"):
        pytest.skip("wrk not installed (scripts/install-deps.sh --test)")
    stub, proxy = nginx_pair
    import argparse
    opts = argparse.Namespace(probe_rounds=200, clients=2, many_slices=2, slice_secs=1)
    specs = [bench.probe_request(tmp_path, "direct", "json", stub, bench.UPSTREAM_KEY),
             bench.probe_request(tmp_path, "nginx", "json", proxy, bench.CLIENT_TOKEN)]
    ones = bench.one_client_interleaved(probe, specs, opts)
    assert set(ones) == {"direct", "nginx"}
    assert all(ones[p]["requests"] == 200 and ones[p]["failed"] == 0 for p in ones)
    # A wrong token through the proxy is a 401 on every request: failed, not measured.
    bad = bench.probe_request(tmp_path, "nginx", "sse", proxy, "wrong-token")
    assert bench.one_client_interleaved(probe, [bad], opts)["nginx"]["failed"] == 200
    targets = {"direct": (stub + bench.STUB_PATH["json"], bench.wrk_script(tmp_path, "json", bench.UPSTREAM_KEY),
                          os.getsid(0)),
               "nginx": (proxy + bench.STUB_PATH["json"], bench.wrk_script(tmp_path, "json", bench.CLIENT_TOKEN),
                         os.getsid(0))}
    many = bench.many_clients_interleaved(targets, opts)
    for path in targets:
        m = many[path]
        assert m["failed"] == 0 and m["requests"] > 100
        assert m["seconds"] == pytest.approx(2, rel=0.25)  # two slices of 1 s each
        assert m["requests_per_s"] == pytest.approx(m["requests"] / m["seconds"])


def test_the_ab_table_gives_each_binarys_added_latency_at_one_client_against_direct_in_the_same_run():
    import argparse
    def turn():
        return {"pairs": 1, "a_cpu_us": 50, "b_cpu_us": 45, "cpu_ratio": 0.9, "b_less_cpu": 1, "a_rps": 100,
                "b_rps": 110, "rps_ratio": 1.1, "failed": 0}
    def lat(p50, p99, failed=0):
        return {"p50_us": p50, "p99_us": p99, "failed": failed}
    results = {"started": "t", "uptime": "u", "modes": {"json": turn()},
               "one_client": {"json": {"direct": lat(20, 80), "a": lat(60, 200), "b": lat(45, 150, failed=1)}}}
    opts = argparse.Namespace(a="A", b="B", pairs=1, clients=16, seconds=6, rounds=10000)
    text = ab.table(results, opts)
    assert "| non-streaming | A | 60 | 200 | +40 | +120 | 0 |" in text
    assert "| non-streaming | B | 45 | 150 | +25 | +70 | 1 |" in text
    assert "| non-streaming | direct | 20 | 80 | — | — | 0 |" in text
    assert "10,000 rounds" in text
    assert "One client" not in ab.table({**results, "one_client": {}}, opts)  # --rounds 0


instructions = load("v1_instructions", "bench/v1_instructions.py")


def test_the_instruction_count_is_per_request_and_names_the_gateways_own_work():
    """bench/v1_instructions.py against the real gateway under callgrind: a count per request in the range of the one
    measured (BENCHMARKS.md: ~79 k non-streamed), not the whole run's nor the warm-up's, and the /v1 handler among the
    gateway's costliest functions."""
    if not (NGINX and shutil.which("valgrind")):
        pytest.skip("nginx or valgrind not installed (scripts/install-deps.sh --test)")
    binary = pathlib.Path(os.environ.get("DYAD_GATEWAY_BIN", ROOT / "build" / "dyad-gateway"))
    opts = type("Opts", (), {"modes": ["json"], "warm": 20, "requests": 40, "top": 40})()
    r = instructions.run(opts, gateway_bin=binary)
    per_request = r["gateway"]["json"]
    assert 20_000 < per_request < 400_000, per_request
    names = [name for _, name in r["top"]["json"]]
    # The /v1 handler on the I/O thread (GATEWAY_V1_EVENTED, the default): once the first call has read the catalog
    # and cached the credential, every call is prepared there, none forwarded on the pool.
    assert any("ProxyService::Prepare" in n for n in names), names
    assert "| json | " in instructions.table(r)


def test_the_first_byte_benchs_stub_sends_each_event_only_once_the_one_before_was_read():
    """bench/v1_first_byte.py: its lockstep stub is what makes a held-back answer show (a stall, not a figure)."""
    stub = first_byte.LockstepStub(wait=0.3)
    try:
        client = first_byte.Client(stub.port, bench.UPSTREAM_KEY, stub)
        read_at = client.stream()
        assert len(read_at) == len(stub.sent) == first_byte.EVENTS and stub.stalled == 0
        assert all(r >= s for r, s in zip(read_at, stub.sent))
        assert read_at[0] <= stub.sent[1]  # the second event went only after the first was read
        # A client that does not say it read an event (as if it never came): the stub waits, then counts a stall.
        raw = first_byte.Client(stub.port, bench.UPSTREAM_KEY, stub)
        raw.sock.sendall(raw.request)
        raw._until(b"", b"part0")
        deadline = time.monotonic() + 10
        while stub.stalled == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert stub.stalled == 1
        # Without the upstream key: a 401, which the client refuses to time.
        with pytest.raises(RuntimeError):
            first_byte.Client(stub.port, "sk-wrong", stub).stream()
    finally:
        stub.close()


def test_the_first_byte_row_is_met_only_within_1_ms_and_without_a_held_event():
    def result(gw_p99, stalled=0):
        first = {"p50": 60, "p99": 120, "added_p50": 40, "added_p99": gw_p99}
        paths = {name: {"first": dict(first), "next": dict(first)} for name in ("gateway", "gateway (pool)", "nginx")}
        paths["direct"] = {"first": {"p50": 20, "p99": 60}, "next": {"p50": 20, "p99": 60}}
        return {"rounds": 10, "stalled": stalled, "paths": paths}
    [r] = run.first_byte_result_rows(result(62))
    assert r["met"] == "**met**" and r["figure"].startswith("p99 +62 µs") and "nginx: p99 +62" in r["comparison"]
    assert run.first_byte_result_rows(result(1200))[0]["met"] == "not met"
    [held] = run.first_byte_result_rows(result(62, stalled=1))
    assert held["met"] == "not met" and "(1 events held back)" in held["figure"]
