"""Issue 16: baseUrl checks at provider create, validate before promote and live validate, against a loopback
upstream stub that checks the injected key."""
import http.server
import json
import threading

import pytest

from conftest import canary, data, provider_body


def audit(gw):
    return [json.loads(line) for line in (gw.data_dir / "audit.log").read_text().splitlines()]


class Upstream:
    """GET /v1/models: 200 to `Authorization: Bearer <accepted>`, 401 to anything else; every header value seen
    is kept."""

    def __init__(self, accepted):
        self.accepted = accepted
        self.seen = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self):
                auth = self.headers.get("Authorization", "")
                outer.seen.append((self.path, auth))
                ok = self.path == "/v1/models" and auth == "Bearer " + outer.accepted
                body = json.dumps({"object": "list", "data": []} if ok else
                                  {"error": {"message": "Incorrect API key provided", "type": "invalid_request_error"}})
                self.send_response(200 if ok else 401)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body.encode())

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    @property
    def base_url(self):
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def upstream():
    u = Upstream(accepted="sk-old-" + canary())
    yield u
    u.stop()


def rotate(gw, pid, key, validate=True):
    return gw.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                   json={"credentials": {"api_key": key}, "validate": validate})


def live(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate", json={"live": True}))


def needs_probes(r):
    if r.status_code == 501:
        pytest.skip("this build has no UpstreamClient (h-upstream): probes answer 501")


def test_validate_before_promote_keeps_the_old_key_until_the_upstream_takes_the_new_one(gateway, upstream):
    old = upstream.accepted
    p = data(gateway.call("POST", "/admin/providers", json=provider_body(
        slug="stubbed", adapterConfig={"baseUrl": upstream.base_url + "/"}, credentials={"api_key": old})), 201)
    assert p["adapterConfig"] == {"baseUrl": upstream.base_url + "/"}  # stored as given

    # A bad key: refused with the upstream's status, nothing written.
    bad = "sk-bad-" + canary()
    r = rotate(gateway, p["id"], bad)
    needs_probes(r)
    assert r.status_code == 422, r.text
    err = r.json()["error"]
    assert err["code"] == "UPSTREAM_REJECTED" and err["upstreamStatus"] == 401, err
    assert bad not in r.text and old not in r.text
    assert upstream.seen[-1] == ("/v1/models", "Bearer " + bad)
    row = data(gateway.call("GET", f"/admin/providers/{p['id']}"))
    assert row["credentialsVersion"] == 1
    # The old key is the one still served: a live probe carries it.
    v = live(gateway, p["id"])
    assert v["valid"] is True and v["upstreamStatus"] == 200, v
    assert upstream.seen[-1] == ("/v1/models", "Bearer " + old)
    refused = [e for e in audit(gateway) if e.get("action") == "credentials.rotate"]
    assert refused and refused[-1]["outcome"] == "failure", refused

    # The upstream now takes a new key: promoted.
    new = "sk-new-" + canary()
    upstream.accepted = new
    promoted = data(rotate(gateway, p["id"], new))
    assert promoted["credentialsVersion"] == 2
    v = live(gateway, p["id"])
    assert v["valid"] is True and upstream.seen[-1] == ("/v1/models", "Bearer " + new), v
    # The old key, revoked upstream, would now fail a live check: validate says so without promoting anything.
    upstream.accepted = "sk-other"
    v = live(gateway, p["id"])
    assert v["valid"] is False and v["upstreamStatus"] == 401, v
    assert {c["check"]: c["ok"] for c in v["checks"]}["upstream"] is False
    for text in (gateway.logs(), gateway.stdout, json.dumps(audit(gateway))):
        assert old not in text and new not in text and bad not in text


def test_an_unreachable_upstream_refuses_the_rotation_with_424(gateway, upstream):
    old = upstream.accepted
    p = data(gateway.call("POST", "/admin/providers", json=provider_body(
        slug="gone", adapterConfig={"baseUrl": upstream.base_url}, credentials={"api_key": old})), 201)
    upstream.stop()
    r = rotate(gateway, p["id"], "sk-new-" + canary())
    needs_probes(r)
    assert r.status_code == 424, r.text
    assert r.json()["error"]["code"] == "UPSTREAM_UNREACHABLE" and r.json()["error"]["upstreamStatus"] == 0
    assert data(gateway.call("GET", f"/admin/providers/{p['id']}"))["credentialsVersion"] == 1
    # Without validate the rotation is not probed at all.
    assert data(rotate(gateway, p["id"], "sk-unchecked", validate=False))["credentialsVersion"] == 2


def test_validate_takes_only_a_boolean_live(gateway):
    p = data(gateway.call("POST", "/admin/providers", json=provider_body(slug="x", credentials={"api_key": "k"})), 201)
    for body in ({"live": "yes"}, {"live": 1}, {"other": True}):
        r = gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate", json=body)
        assert r.status_code == 400, (body, r.text)
    r = gateway.call("POST", f"/admin/providers/{p['id']}/credentials/rotate",
                     json={"credentials": {"api_key": "k2"}, "validate": "true"})
    assert r.status_code == 400 and "'validate' must be true or false" in r.text
    # Without a body, validate is the local check it always was.
    assert "upstreamStatus" not in data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))


METADATA_URLS = ["http://169.254.169.254/latest/meta-data", "https://169.254.169.254./", "https://2852039166/",
                 "https://0xA9FEA9FE/", "https://0251.0376.0251.0376/", "https://169.254.43518/",
                 "https://[fe80::1]/", "https://[fd00:ec2::254]/", "https://[::ffff:169.254.169.254]/",
                 "https://metadata.google.internal/computeMetadata/v1"]


@pytest.mark.parametrize("url", METADATA_URLS)
def test_a_metadata_base_url_is_refused_at_create_and_update(make_gateway, url):
    gw = make_gateway({"GATEWAY_ALLOW_PLAINTEXT_UPSTREAM": "true"}).start()
    r = gw.call("POST", "/admin/providers", json=provider_body(slug="m", adapterConfig={"baseUrl": url},
                                                               credentials={"api_key": "k"}))
    assert r.status_code == 400, r.text
    assert "link-local or cloud metadata" in r.json()["error"]["message"]
    p = data(gw.call("POST", "/admin/providers", json=provider_body(slug="ok", credentials={"api_key": "k"})), 201)
    r = gw.call("PATCH", f"/admin/providers/{p['id']}", json={"adapterConfig": {"baseUrl": url}},
                headers={"Content-Type": "application/merge-patch+json"})
    assert r.status_code == 400, r.text
    assert data(gw.call("GET", f"/admin/providers/{p['id']}"))["adapterConfig"] == p["adapterConfig"]


def test_plain_http_upstreams_need_loopback_or_the_switch(make_gateway):
    gw = make_gateway().start()
    body = provider_body(slug="plain", adapterConfig={"baseUrl": "http://10.0.0.5:8000/v1"}, credentials={"api_key": "k"})
    r = gw.call("POST", "/admin/providers", json=body)
    assert r.status_code == 400 and "GATEWAY_ALLOW_PLAINTEXT_UPSTREAM" in r.text, r.text
    for bad in ({}, {"baseUrl": 5}, {"baseUrl": "https://user:pw@api.example"}, {"baseUrl": "https://api.example/?k=v"},
                {"baseUrl": "https://api.example", "auth": {"header": "Host"}},
                {"baseUrl": "https://api.example", "auth": {"template": "Bearer {api_key}\r\nX-Evil: 1"}}):
        r = gw.call("POST", "/admin/providers", json=provider_body(slug="bad", adapterConfig=bad))
        assert r.status_code == 400 and r.json()["error"]["message"].startswith("adapterConfig."), (bad, r.text)
        assert "pw@" not in r.json()["error"]["message"]
    # spawn-cli and local providers need no baseUrl.
    data(gw.call("POST", "/admin/providers", json={"name": "l", "slug": "l", "type": "local"}), 201)
    loop = data(gw.call("POST", "/admin/providers", json=provider_body(
        slug="loop", adapterConfig={"baseUrl": "http://localhost:1/v1"})), 201)
    # Nor can an update or a PATCH move a provider to plain http off loopback.
    for method, headers in (("PUT", {}), ("PATCH", {"Content-Type": "application/merge-patch+json"})):
        r = gw.call(method, f"/admin/providers/{loop['id']}", data=json.dumps(
            {"adapterConfig": {"baseUrl": "http://10.0.0.5:8000/v1"}}), headers=headers)
        assert r.status_code == 400 and "GATEWAY_ALLOW_PLAINTEXT_UPSTREAM" in r.text, (method, r.text)
    assert data(gw.call("GET", f"/admin/providers/{loop['id']}"))["adapterConfig"]["baseUrl"] == "http://localhost:1/v1"
    gw.stop()
    gw = make_gateway({"GATEWAY_ALLOW_PLAINTEXT_UPSTREAM": "true"}, name="allowed").start()
    data(gw.call("POST", "/admin/providers", json=body), 201)
