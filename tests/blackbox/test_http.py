"""HTTP behaviour: auth, envelope, errors, limits, request ids, shutdown."""
import json
import re
import signal
import socket
import subprocess
import time

import requests

from conftest import ADMIN_TOKEN, VIEWER_TOKEN, data, provider_body


def assert_error(r, status, code):
    assert r.status_code == status, r.text
    body = r.json()
    assert body["status"] == "error"
    assert body["error"]["code"] == code
    assert body["error"]["message"]


def test_healthz_needs_no_token(gateway):
    r = requests.get(gateway.url + "/healthz")
    assert r.status_code == 200
    assert r.json() == {"status": "success", "data": {"status": "ok"}}
    r = requests.get(gateway.url + "/readyz")
    assert r.status_code == 200 and r.json()["data"]["status"] == "ready"


def test_auth_no_wrong_viewer_admin(gateway):
    assert_error(gateway.call("GET", "/admin/providers", token=None), 401, "UNAUTHORIZED")
    assert_error(gateway.call("GET", "/admin/providers", token="wrong-token"), 401, "UNAUTHORIZED")
    assert gateway.call("GET", "/admin/providers", token=VIEWER_TOKEN).status_code == 200
    assert_error(gateway.call("POST", "/admin/providers", token=VIEWER_TOKEN, json=provider_body()), 403, "FORBIDDEN")
    assert_error(gateway.call("POST", "/admin/secrets/clear-cache", token=VIEWER_TOKEN), 403, "FORBIDDEN")
    assert gateway.call("POST", "/admin/providers", json=provider_body()).status_code == 201
    # Tokens never reach the logs.
    assert ADMIN_TOKEN not in gateway.logs() and VIEWER_TOKEN not in gateway.logs()


def test_unknown_route_and_wrong_method(gateway):
    assert_error(requests.get(gateway.url + "/nope"), 404, "NOT_FOUND")
    assert_error(gateway.call("GET", "/admin/nope"), 404, "NOT_FOUND")
    r = gateway.call("PATCH", "/admin/providers")
    assert_error(r, 405, "METHOD_NOT_ALLOWED")
    assert "GET" in r.headers["Allow"] and "POST" in r.headers["Allow"]


def test_malformed_json_and_wrong_types(gateway):
    r = gateway.call("POST", "/admin/providers", data="{not json", headers={"Content-Type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "malformed JSON" in r.json()["error"]["message"]
    r = gateway.call("POST", "/admin/providers", json=provider_body(enabled="yes"))
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "enabled" in r.json()["error"]["message"]
    r = gateway.call("POST", "/admin/providers", json=provider_body(models=[{"dyadModelId": 3}]))
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "models[0].dyadModelId" in r.json()["error"]["message"]
    r = gateway.call("POST", "/admin/providers", json=provider_body(slug="Not Valid"))
    assert "slug" in r.json()["error"]["message"]
    r = gateway.call("POST", "/admin/providers", json=provider_body(type="grpc"))
    assert_error(r, 400, "VALIDATION_ERROR")
    r = gateway.call("GET", "/admin/providers?limit=0")
    assert_error(r, 400, "VALIDATION_ERROR")


def test_two_mebibyte_body_is_413(gateway):
    r = gateway.call("POST", "/admin/providers", data="x" * (2 << 20), headers={"Content-Type": "application/json"})
    assert_error(r, 413, "PAYLOAD_TOO_LARGE")
    assert requests.get(gateway.url + "/healthz").status_code == 200  # still serving


def test_unknown_id_is_404(gateway):
    for method, path in [("GET", "/admin/providers/nope"), ("PUT", "/admin/providers/nope"),
                         ("DELETE", "/admin/providers/nope"),
                         ("POST", "/admin/secrets/providers/nope/credentials/validate"),
                         ("POST", "/admin/providers/nope/credentials/rotate")]:
        body = ({"credentials": {"api_key": "k"}} if path.endswith("rotate") else
                {"live": False} if path.endswith("validate") else {"name": "x"})
        assert_error(gateway.call(method, path, json=body), 404, "NOT_FOUND")


def test_request_id_echoed_or_generated(gateway):
    r = requests.get(gateway.url + "/healthz", headers={"X-Request-Id": "trace-123"})
    assert r.headers["X-Request-Id"] == "trace-123"
    r = requests.get(gateway.url + "/healthz")
    assert len(r.headers["X-Request-Id"]) == 32
    r = gateway.call("GET", "/admin/providers", headers={"X-Request-Id": "abc-789"})
    assert "rid=abc-789" in gateway.logs()


def test_keep_alive_reuses_the_connection(gateway):
    with socket.create_connection(("127.0.0.1", gateway.port)) as s:
        for _ in range(3):
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while b'"ok"}}' not in data:
                chunk = s.recv(4096)
                assert chunk, "connection closed between keep-alive requests"
                data += chunk
            assert data.startswith(b"HTTP/1.1 200")


def test_sigterm_exits_cleanly_with_an_idle_keepalive_connection(gateway):
    s = socket.create_connection(("127.0.0.1", gateway.port))
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    s.recv(4096)
    assert gateway.stop(signal.SIGTERM) == 0
    s.close()


def test_sigint_exits_cleanly(gateway):
    assert gateway.stop(signal.SIGINT) == 0


def test_metrics_exposition(gateway):
    requests.get(gateway.url + "/healthz")
    r = requests.get(gateway.url + "/metrics")
    assert r.status_code == 200
    assert r.headers["Content-Type"].startswith("text/plain")
    for name in ["dyad_cache_hits_total", "dyad_cache_misses_total", "dyad_cache_stale_serves_total",
                 "dyad_cache_evictions_total", "dyad_http_requests_total"]:
        assert name in r.text


def _closed_within(sock, seconds):
    sock.settimeout(seconds)
    try:
        return sock.recv(4096) == b""
    except (socket.timeout, TimeoutError):
        return False
    except ConnectionResetError:
        return True


def test_header_and_idle_timeouts(make_gateway):
    gw = make_gateway({"GATEWAY_HEADER_TIMEOUT_SECONDS": "1", "GATEWAY_IDLE_TIMEOUT_SECONDS": "2"}).start()
    slow = socket.create_connection(("127.0.0.1", gw.port))
    slow.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # headers never finish
    assert _closed_within(slow, 4)
    idle = socket.create_connection(("127.0.0.1", gw.port))
    idle.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
    idle.settimeout(5)
    assert idle.recv(4096).startswith(b"HTTP/1.1 200")
    assert _closed_within(idle, 5)
    assert requests.get(gw.url + "/healthz").status_code == 200


def test_sigterm_lets_a_request_in_flight_finish(gateway):
    body = json.dumps(provider_body(slug="in-flight")).encode()
    s = socket.create_connection(("127.0.0.1", gateway.port))
    s.sendall(b"POST /admin/providers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + ADMIN_TOKEN.encode() +
              b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(body)).encode() + b"\r\n\r\n" +
              body[:10])
    time.sleep(0.3)
    gateway.proc.send_signal(signal.SIGTERM)
    time.sleep(0.3)
    s.sendall(body[10:])
    s.settimeout(10)
    response = b""
    while b"\r\n\r\n" not in response or not response.rstrip().endswith(b"}"):
        chunk = s.recv(65536)
        if not chunk:
            break
        response += chunk
    assert response.startswith(b"HTTP/1.1 201"), response[:200]
    assert b"Connection: close" in response
    assert gateway.proc.wait(timeout=20) == 0


# ---- issue 9: hardening ------------------------------------------------------------------------------------------

def raw_request(gw, method, target, headers=None, body=b"", timeout=10):
    """One request over a raw socket (no client library to normalise the target); (status, body)."""
    lines = [f"{method} {target} HTTP/1.1", "Host: 127.0.0.1", "Connection: close",
             f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as s:
        s.sendall(("\r\n".join(lines) + "\r\n\r\n").encode("latin-1") + body)
        data = b""
        while True:
            chunk = s.recv(65536)
            if not chunk:
                break
            data += chunk
    head, _, payload = data.partition(b"\r\n\r\n")
    return int(head.split(b" ", 2)[1]), payload


def make_witness(gw):
    """A provider with credentials, and its validate answer, to check after hostile input."""
    p = data(gw.call("POST", "/admin/providers", json=provider_body(slug="witness", credentials={"api_key": "sk-w"})),
             201)
    return p["id"], validate(gw, p["id"])


def validate(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))


def assert_witness_intact(gw, witness):
    pid, before = witness
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    after = validate(gw, pid)
    assert after["valid"] is True and after["fingerprint"] == before["fingerprint"]
    assert [p["slug"] for p in data(gw.call("GET", "/admin/providers"))["items"]] == ["witness"]


ODD_SPELLINGS = ["//admin/providers", "/admin//providers", "/admin/providers/", "/./admin/providers",
                 "/admin/./providers", "/x/../admin/providers", "/admin/x/../providers", "/%61dmin/providers",
                 "/admin%2Fproviders", "/admin%2fproviders", "/admin/provider%73", "/admin\\providers",
                 "/admin/providers%2F", "http://127.0.0.1/admin/providers", "*"]


def test_odd_spellings_of_admin_paths_are_400_without_running_anything(gateway):
    """Issue 9 item 1: `POST //admin/providers` created a provider without a token."""
    witness = make_witness(gateway)
    pid = witness[0]
    body = json.dumps(provider_body(slug="evil", credentials={"api_key": "sk-evil"})).encode()
    for target in ODD_SPELLINGS:
        for auth in ({}, {"Authorization": "Bearer " + VIEWER_TOKEN}, {"Authorization": "Bearer wrong"}):
            status, payload = raw_request(gateway, "POST", target, {"Content-Type": "application/json", **auth}, body)
            assert status == 400, (target, auth, payload)
            assert json.loads(payload)["error"]["code"] == "BAD_REQUEST"
    rotate = json.dumps({"credentials": {"api_key": "sk-evil"}}).encode()
    for target in [f"//admin/providers/{pid}/credentials/rotate", f"/admin/providers/{pid}//credentials/rotate",
                   f"/admin/providers/{pid}/credentials/rotate/", f"//admin/providers/{pid}"]:
        for method in ("POST", "PUT", "DELETE"):
            status, payload = raw_request(gateway, method, target, {"Content-Type": "application/json"}, rotate)
            assert status == 400, (method, target, payload)
    assert_witness_intact(gateway, witness)


def test_hostile_json_bodies_are_400_and_the_service_keeps_serving(gateway):
    """Issue 9 item 2: a 100,000-deep adapterConfig killed the process (SIGSEGV)."""
    witness = make_witness(gateway)
    deep = ('{"name":"n","slug":"deep","type":"local","adapterConfig":' + '{"a":' * 100000 + "1" + "}" * 100000 +
            "}")
    r = gateway.call("POST", "/admin/providers", data=deep, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "nested deeper than 64" in r.json()["error"]["message"]
    r = gateway.call("PUT", f"/admin/providers/{witness[0]}", data="[" * 500000,
                     headers={"Content-Type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    r = gateway.call("POST", "/admin/providers", data='{"name":"n","slug":"a","slug":"b","type":"local"}',
                     headers={"Content-Type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "duplicate key 'slug'" in r.json()["error"]["message"]
    r = gateway.call("POST", f"/admin/providers/{witness[0]}/credentials/rotate",
                     data='{"credentials":{"api_key":"sk-1","api_key":"sk-2"}}', headers={"Content-Type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "duplicate key 'api_key'" in r.json()["error"]["message"] and "sk-1" not in r.text
    many = json.dumps(provider_body(slug="many", adapterConfig={f"k{i}": i for i in range(10001)}))
    r = gateway.call("POST", "/admin/providers", data=many, headers={"Content-Type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert "10000 object members" in r.json()["error"]["message"]
    r = gateway.call("POST", "/admin/secrets/key-rotation/toggle", data='{"enabled":true,"enabled":false}',
                     headers={"Content-Type": "application/json"})
    assert_error(r, 400, "VALIDATION_ERROR")
    assert gateway.proc.poll() is None
    assert_witness_intact(gateway, witness)


def test_bad_numbers_in_the_query_are_400(gateway):
    for q in ["limit=99999999999999999999999", "offset=-1", "limit=%2B5", "limit=5x", "offset=1e3"]:
        assert_error(gateway.call("GET", "/admin/providers?" + q), 400, "VALIDATION_ERROR")


def test_header_timeout_applies_to_every_request_on_a_kept_alive_connection(make_gateway):
    """Issue 9 item 8: only the first request of a connection had the header timeout."""
    gw = make_gateway({"GATEWAY_HEADER_TIMEOUT_SECONDS": "1", "GATEWAY_IDLE_TIMEOUT_SECONDS": "30"}).start()
    s = socket.create_connection(("127.0.0.1", gw.port))
    for _ in range(2):
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
    time.sleep(1.5)  # idle longer than the header timeout: still open (the idle timeout applies)
    s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # the next request's headers never finish
    started = time.time()
    assert _closed_within(s, 6)
    assert time.time() - started < 6
    assert requests.get(gw.url + "/healthz").status_code == 200


def test_connections_over_the_cap_are_closed_at_once(make_gateway):
    """Issue 9 item 8: GATEWAY_MAX_CONNECTIONS."""
    gw = make_gateway({"GATEWAY_MAX_CONNECTIONS": "3", "GATEWAY_HEADER_TIMEOUT_SECONDS": "30"}).start()
    held = []
    for _ in range(3):
        s = socket.create_connection(("127.0.0.1", gw.port))
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        s.settimeout(5)
        assert s.recv(4096).startswith(b"HTTP/1.1 200")
        held.append(s)
    extra = socket.create_connection(("127.0.0.1", gw.port))
    assert _closed_within(extra, 3)
    extra.close()
    held.pop().close()
    deadline = time.time() + 5
    while True:  # the freed slot is taken again once the server has seen the close
        try:
            r = requests.get(gw.url + "/healthz", timeout=2)
            break
        except requests.ConnectionError:
            assert time.time() < deadline
            time.sleep(0.05)
    assert r.status_code == 200
    for s in held:
        s.close()


def _cpu_ticks(pid):
    fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime


def test_accept_failing_with_emfile_does_not_spin(make_gateway):
    """Issue 9 item 8: with no descriptor left, accept failed at once and was retried at once, forever."""
    gw = make_gateway({"GATEWAY_HEADER_TIMEOUT_SECONDS": "60", "GATEWAY_IDLE_TIMEOUT_SECONDS": "60"}).start()
    subprocess.run(["prlimit", f"--pid={gw.proc.pid}", "--nofile=48:48"], check=True)
    clients = []
    try:
        for _ in range(80):  # more than the gateway can accept: the rest wait in the backlog
            clients.append(socket.create_connection(("127.0.0.1", gw.port), timeout=5))
        time.sleep(0.5)
        before = _cpu_ticks(gw.proc.pid)
        time.sleep(2)
        used = _cpu_ticks(gw.proc.pid) - before
        assert used < 40, f"{used} CPU ticks in 2 s while accept fails"  # a busy loop burns ~200
        assert "accept failed" in gw.logs()
    finally:
        for c in clients:
            c.close()
    deadline = time.time() + 10
    while True:
        try:
            if requests.get(gw.url + "/healthz", timeout=2).status_code == 200:
                break
        except requests.RequestException:
            pass
        assert time.time() < deadline, "the gateway did not recover after descriptors were freed"
        time.sleep(0.1)


def test_denials_are_audited_a_line_per_source_per_second(gateway):
    """Issue 9 item 9: 401 and 403 answers reach the audit log, rate-limited per source address."""
    started = time.time()
    for _ in range(20):
        assert gateway.call("GET", "/admin/providers", token="wrong-token-123").status_code == 401
    assert gateway.call("POST", "/admin/secrets/clear-cache", token=VIEWER_TOKEN).status_code == 403
    seconds = time.time() - started
    lines = [json.loads(line) for line in (gateway.data_dir / "audit.log").read_text().splitlines() if line.strip()]
    denials = [e for e in lines if str(e.get("action", "")).startswith("auth.")]
    assert 1 <= len(denials) <= int(seconds) + 2, denials
    assert all(e.get("outcome") == "denied" for e in denials)
    text = (gateway.data_dir / "audit.log").read_text()
    assert "wrong-token-123" not in text and VIEWER_TOKEN not in text


# ---- review 38: request framing ----------------------------------------------------------------------------------

READ_BUFFER_LIMIT = 32 * 1024  # the server's read buffer (http_server.cc, kReadBufferLimit)


def raw_exchange(gw, payload, timeout=10):
    """`payload` sent as is on one connection; everything the server sends until it closes."""
    with socket.create_connection(("127.0.0.1", gw.port), timeout=timeout) as s:
        try:
            s.sendall(payload)
        except OSError:  # the server refused before it read everything: what it answered is still read
            pass
        out = b""
        try:
            while chunk := s.recv(65536):
                out += chunk
        except (ConnectionResetError, TimeoutError):  # a connection kept open: what came so far
            pass
    return out


def statuses(answer):
    """The status of each HTTP answer in `answer`, in order (an answer's status line follows the last one's body)."""
    return [int(status) for status in re.findall(rb"HTTP/1\.1 (\d{3}) ", answer)]


def chunked_head(target="/admin/secrets/clear-cache", extra=f"Authorization: Bearer {ADMIN_TOKEN}\r\n"):
    """A chunked POST's head the gateway takes, so that its body is read (a refused head's never is)."""
    return f"POST {target} HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n{extra}\r\n".encode()


def test_chunk_extensions_and_trailers_past_the_read_buffer_are_431_and_the_service_keeps_serving(gateway):
    """Review 38, B1 and B2: a trailer field over 64 KiB made Beast throw out of the I/O thread (the process
    aborted), and a chunk extension or a trailer section grew the read buffer without end (40 MB kept 80 MB). Each
    fills the read buffer exactly here (so the server reads all that was sent and its answer is not lost to a
    reset): 431, the connection closed, nothing run."""
    witness = make_witness(gateway)
    elements = {"a trailer field": b"0\r\nX-T: ", "a chunk extension": b"2;a=", "many trailer fields": b"0\r\n"}
    for what, start in elements.items():
        filler = b"X-A: b\r\n" if what == "many trailer fields" else b"x"
        body = (start + filler * READ_BUFFER_LIMIT)[:READ_BUFFER_LIMIT]
        answer = raw_exchange(gateway, chunked_head() + body)
        assert statuses(answer) == [431], (what, answer[:300])
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "HEADERS_TOO_LARGE", what
    # The trailer that killed the process (70,000 bytes in one field): the answer may be lost to the reset of the
    # unread rest; the process stays.
    raw_exchange(gateway, chunked_head() + b"0\r\nX-T: " + b"b" * 70000 + b"\r\n\r\n")
    assert gateway.proc.poll() is None
    # A chunked body with an extension and a trailer that fit is read as before.
    answer = raw_exchange(gateway, chunked_head("/admin/secrets/clear-cache",
                                                f"Authorization: Bearer {ADMIN_TOKEN}\r\nConnection: close\r\n") +
                          b"2;ext=1\r\n{}\r\n0\r\nX-Trailer: t\r\n\r\n")
    assert statuses(answer) == [200], answer[:300]
    assert_witness_intact(gateway, witness)


def test_transfer_codings_other_than_chunked_alone_are_refused_and_smuggle_nothing(gateway):
    """Review 38, B4: `Transfer-Encoding: xchunked` was read as a request without a body, and the body, a second
    request, was then answered too (smuggled past a proxy that framed it by the coding). RFC 9112 §6.3: an unknown
    coding is refused, and the connection closed."""
    smuggled = b"GET /admin/providers HTTP/1.1\r\nHost: x\r\n\r\n"
    auth = f"Authorization: Bearer {ADMIN_TOKEN}\r\n"
    for coding, body in (("xchunked", smuggled), ("chunked, chunked", b"0\r\n\r\n"), ("gzip, chunked", b"0\r\n\r\n"),
                         ("identity\r\nContent-Length: " + str(len(smuggled)), smuggled)):
        head = f"POST /admin/secrets/clear-cache HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: {coding}\r\n\r\n"
        answer = raw_exchange(gateway, head.encode() + body)
        assert statuses(answer) == [501], (coding, answer[:400])
        assert json.loads(answer.partition(b"\r\n\r\n")[2])["error"]["code"] == "NOT_IMPLEMENTED"
    # The same as a kept-alive connection's next request, which the handler's pool thread reads itself.
    first = f"POST /admin/secrets/clear-cache HTTP/1.1\r\nHost: x\r\n{auth}Content-Length: 0\r\n\r\n"
    then = f"POST /admin/secrets/clear-cache HTTP/1.1\r\nHost: x\r\n{auth}Transfer-Encoding: xchunked\r\n\r\n"
    answer = raw_exchange(gateway, first.encode() + then.encode() + smuggled)
    assert statuses(answer) == [200, 501], answer[:600]
    # Two Transfer-Encoding fields, each chunked: chunked twice, which the parser refuses as malformed.
    head = f"POST /admin/secrets/clear-cache HTTP/1.1\r\nHost: x\r\n{auth}"
    answer = raw_exchange(gateway, (head + "Transfer-Encoding: chunked\r\nTransfer-Encoding: chunked\r\n\r\n").encode()
                          + b"0\r\n\r\n")
    assert statuses(answer) == [400], answer[:400]
    # Chunked alone, in any case, is read.
    answer = raw_exchange(gateway, (head + "Transfer-Encoding: Chunked\r\nConnection: close\r\n\r\n").encode() +
                          b"0\r\n\r\n")
    assert statuses(answer) == [200], answer[:400]


def test_two_authorization_headers_are_400_whatever_their_order(gateway):
    """Review 38, B5: the first of two Authorization headers counted, so a proxy in front that reads the last one
    and the gateway disagreed on who called."""
    admin, viewer = f"Authorization: Bearer {ADMIN_TOKEN}\r\n", f"Authorization: Bearer {VIEWER_TOKEN}\r\n"
    for pair in (admin + viewer, viewer + admin, admin + admin):
        head = f"POST /admin/secrets/clear-cache HTTP/1.1\r\nHost: x\r\n{pair}Content-Length: 0\r\n\r\n"
        answer = raw_exchange(gateway, head.encode())
        assert statuses(answer) == [400], (pair, answer[:300])
        assert "more than one Authorization header" in answer.decode()


def test_an_http_11_request_without_a_host_or_with_two_is_400_and_closes(gateway):
    """RFC 9112 §3.2: a server must answer 400 to an HTTP/1.1 request without a Host, or any with two (helper-154
    found one answered). The admin call pipelined after it is not run."""
    call = f"POST /admin/secrets/clear-cache HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n" \
           "Content-Length: 0\r\n\r\n"
    for head, says in (("GET /healthz HTTP/1.1\r\n\r\n", b"without a Host header"),
                       ("GET /healthz HTTP/1.1\r\nHost: x\r\nhost: y\r\n\r\n", b"more than one Host header"),
                       ("GET /healthz HTTP/1.0\r\nHost: x\r\nHost: x\r\n\r\n", b"more than one Host header"),
                       ("GET /healthz HTTP/1.1\r\nHost: x, y\r\n\r\n", b"not a host and port")):
        answer = raw_exchange(gateway, (head + call).encode())
        assert re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer) == [b"400"], (head, answer[:400])
        assert says in answer
    answer = raw_exchange(gateway, b"GET /healthz HTTP/1.0\r\n\r\n")  # HTTP/1.0 needs none
    assert re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer) == [b"200"], answer[:400]


def test_a_connection_close_ends_the_connection_whatever_else_the_request_says(gateway):
    """RFC 9112 §9.3 (helper-155): "close" in any Connection field wins, and Proxy-Connection is no Connection; an
    HTTP/1.0 request keeps the connection only with Connection: keep-alive. The pipelined second request is answered
    only where the first one kept the connection."""
    then = b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\nGET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"
    for head, kept in (("GET /healthz HTTP/1.0\r\nConnection: close\r\nProxy-Connection: keep-alive\r\n", False),
                       ("GET /healthz HTTP/1.0\r\nProxy-Connection: keep-alive\r\n", False),
                       ("GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: keep-alive\r\nConnection: close\r\n", False),
                       ("GET /healthz HTTP/1.0\r\nConnection: keep-alive\r\n", True),
                       ("GET /healthz HTTP/1.1\r\nHost: x\r\nProxy-Connection: close\r\n", True)):
        answer = raw_exchange(gateway, head.encode() + b"\r\n" + then, timeout=5)
        assert re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer) == [b"200"] * (3 if kept else 1), (head, answer[:600])


def test_a_client_that_expects_100_continue_is_told_to_send_its_body(gateway):
    """Review 38, B8: `Expect: 100-continue` was never answered, so curl (which sends it for a large body) waited a
    second before sending the body anyway. The 100 comes before the body is sent; the final answer after it."""
    head = (f"POST /admin/secrets/clear-cache HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "Content-Type: application/json\r\nContent-Length: 2\r\nExpect: 100-continue\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(head.encode())
        interim = b""
        while b"\r\n\r\n" not in interim:
            chunk = s.recv(65536)
            assert chunk, interim
            interim += chunk
        assert interim.startswith(b"HTTP/1.1 100 Continue\r\n\r\n"), interim
        s.sendall(b"{}")
        rest = interim[len(b"HTTP/1.1 100 Continue\r\n\r\n"):]
        while chunk := s.recv(65536):
            rest += chunk
    assert statuses(rest) == [200], rest[:300]
    # Not to HTTP/1.0 (RFC 9110 §10.1.1), which would read the 100 as the answer (review 38c).
    answer = raw_exchange(gateway, head.replace("HTTP/1.1", "HTTP/1.0").encode() + b"{}")
    assert re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer) == [b"200"], answer[:300]
    # A header already refused is answered at once, not after a 100 and the body.
    two = head.replace("Host: x\r\n", f"Host: x\r\nAuthorization: Bearer {VIEWER_TOKEN}\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(two.encode())
        refused = b""
        while chunk := s.recv(65536):
            refused += chunk
    assert statuses(refused) == [400] and b"more than one Authorization header" in refused, refused[:300]


def test_a_trailer_is_not_read_as_the_requests_header(gateway):
    """Review 38b: Beast adds a chunked body's trailer fields to the request's header, so a request with no
    Authorization header but one in its trailer was authenticated by it (past a proxy in front that checks the
    header only), on the I/O threads and where a pool thread reads a kept-alive connection's next request."""
    trailer = f"0\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\nX-Request-Id: from-the-trailer\r\n\r\n".encode()
    sneaky = b"GET /admin/providers HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n" + trailer
    answer = raw_exchange(gateway, sneaky.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
    assert statuses(answer) == [401], answer[:300]
    assert b"from-the-trailer" not in answer
    first = f"GET /admin/providers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n\r\n".encode()
    answer = raw_exchange(gateway, first + sneaky.replace(b"Host: x\r\n", b"Host: x\r\nConnection: close\r\n"))
    assert statuses(answer) == [200, 401], answer[:600]
    assert b"from-the-trailer" not in answer
    # Nor does a trailer's Connection decide whether the connection is kept (review 38c).
    closing = (b"GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n0\r\nConnection: close\r\n\r\n"
               b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
    assert statuses(raw_exchange(gateway, closing)) == [200, 200]


def test_transfer_encoding_in_an_http_10_request_is_400_and_closes(gateway):
    """Review 38b: RFC 9112 §6.1: such framing is faulty, and the connection must close after it."""
    head = (f"POST /admin/secrets/clear-cache HTTP/1.0\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            "Connection: keep-alive\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n")
    answer = raw_exchange(gateway, head.encode() + b"GET /admin/providers HTTP/1.1\r\nHost: x\r\n\r\n")
    assert re.findall(rb"HTTP/1\.[01] (\d{3}) ", answer) == [b"400"], answer[:400]
    assert b"HTTP/1.0 request" in answer


def read_head(s):
    """One answer's status line and header fields from `s` (its body left unread), as (status, {lower name: value})."""
    raw = b""
    while b"\r\n\r\n" not in raw:
        byte = s.recv(1)
        assert byte, raw
        raw += byte
    lines = raw.decode("latin-1").split("\r\n")
    fields = {}
    for line in lines[1:]:
        if line:
            name, _, value = line.partition(":")
            fields[name.strip().lower()] = value.strip()
    return int(lines[0].split()[1]), fields


def test_head_is_answered_wherever_get_is_without_a_body(gateway):
    """RFC 9110 §9.3.2: HEAD answers as GET would, without the body, its Content-Length the GET's. No byte of a body
    follows the head (a keep-alive client would read it as the next answer), and admin auth applies to HEAD too."""
    get = requests.get(gateway.url + "/healthz")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        for target, want, token in (("/healthz", 200, None), ("/readyz", 200, None), ("/admin/providers", 401, None),
                                    ("/admin/providers", 200, VIEWER_TOKEN), ("/nope", 404, None)):
            auth = f"Authorization: Bearer {token}\r\n" if token else ""
            s.sendall(f"HEAD {target} HTTP/1.1\r\nHost: x\r\n{auth}\r\n".encode())
            status, fields = read_head(s)
            assert status == want, (target, status, fields)
            assert int(fields["content-length"]) > 0, (target, fields)
            if target == "/healthz":
                assert int(fields["content-length"]) == len(get.content), fields
            if want == 401:
                assert fields["www-authenticate"] == "Bearer", fields
            s.settimeout(0.3)
            try:
                stray = s.recv(65536)
            except TimeoutError:
                stray = b""
            s.settimeout(10)
            assert stray == b"", (target, stray)
        # The connection is in step: the next GET is answered whole.
        s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
        status, fields = read_head(s)
        body = b""
        while chunk := s.recv(65536):
            body += chunk
        assert status == 200 and json.loads(body) == get.json(), (status, body)
        assert int(fields["content-length"]) == len(body)
    # POST where only GET is routed: 405, and Allow names HEAD with GET.
    r = requests.post(gateway.url + "/healthz")
    assert r.status_code == 405 and r.headers["Allow"] == "GET, HEAD", r.headers
    assert gateway.call("HEAD", "/admin/providers", token=None).status_code == 401


def test_a_refused_caller_is_answered_before_its_body_is_read(gateway):
    """A request no body could make run (no token or a wrong one, no route) is answered from its head: the gateway
    never reads nor holds the body of a caller it refuses (4,096 connections × 1 MiB each, else), and sends no
    `100 Continue` to one. What the client still sends is read and dropped, so a client that sends its whole body
    anyway (requests does) reads the answer, not a reset. Each case below sends only the head of a 1 MB body: before,
    the gateway waited for the body, and the read timed out."""
    cases = [("/admin/providers", "Bearer wrong-token", 401, "UNAUTHORIZED"),
             ("/admin/providers", None, 401, "UNAUTHORIZED"),
             ("/admin/providers", f"Bearer {VIEWER_TOKEN}", 403, "FORBIDDEN"),
             ("/admin/nowhere", "Bearer wrong-token", 401, "UNAUTHORIZED"),
             ("/nowhere", None, 404, "NOT_FOUND"),
             ("/v1/chat/completions", "Bearer wrong-token", 401, "invalid_api_key")]
    for path, auth, status, code in cases:
        for expect in ("", "Expect: 100-continue\r\n"):
            head = (f"POST {path} HTTP/1.1\r\nHost: x\r\n" + (f"Authorization: {auth}\r\n" if auth else "") +
                    f"Content-Type: application/json\r\nContent-Length: 1000000\r\n{expect}\r\n")
            with socket.create_connection(("127.0.0.1", gateway.port), timeout=5) as s:
                s.sendall(head.encode())
                answer = b""
                while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                    chunk = s.recv(65536)
                    assert chunk, (path, answer)
                    answer += chunk
            assert statuses(answer) == [status], (path, expect, answer[:300])
            assert b"Connection: close" in answer and b"100 Continue" not in answer, answer[:300]
            assert json.loads(answer.split(b"\r\n\r\n", 1)[1])["error"]["code"] == code, answer
    # Sent whole anyway, through a real client: the answer, not a reset.
    r = requests.post(gateway.url + "/admin/providers", data=b"{" + b" " * 999_998 + b"}",
                      headers={"Authorization": "Bearer wrong-token", "Content-Type": "application/json"}, timeout=10)
    assert_error(r, 401, "UNAUTHORIZED")
    # An allowed caller's body is read as ever, however it comes.
    body = json.dumps(provider_body()).encode()
    head = (f"POST /admin/providers HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {ADMIN_TOKEN}\r\n"
            f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\nConnection: close\r\n\r\n")
    with socket.create_connection(("127.0.0.1", gateway.port), timeout=10) as s:
        s.sendall(head.encode())
        time.sleep(0.2)
        s.sendall(body)
        answer = b""
        while chunk := s.recv(65536):
            answer += chunk
    assert statuses(answer) == [201], answer[:300]
    assert "wrong-token" not in gateway.logs()
