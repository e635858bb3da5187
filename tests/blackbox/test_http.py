"""HTTP behaviour: auth, envelope, errors, limits, request ids, shutdown."""
import json
import signal
import socket
import time

import requests

from conftest import ADMIN_TOKEN, VIEWER_TOKEN, provider_body


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
        body = {"credentials": {"api_key": "k"}} if path.endswith("rotate") else {"name": "x"}
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
