"""SECRETS_PROVIDER=vault against real OpenBao 2.7 (vault_peers): every test has its own server on its own port and,
unless it is about something else, a token holding exactly the seed's policy and `default`."""
import base64
import concurrent.futures
import http.server
import json
import os
import random
import shutil
import subprocess
import threading
import time

import hvac
import pytest

from conftest import BINARY, canary, create_provider, data, provider_body
from test_rotation import wait_idle
from test_secrets import keyed_fingerprint
from vault_peers import Bao, BaoFileServer, Redirector, seed_policy


LOGINS = {"VAULT_ROLE_ID", "VAULT_K8S_ROLE", "VAULT_JWT_ROLE", "VAULT_TOKEN_FILE"}


@pytest.fixture
def bao(tmp_path):
    server = Bao(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def audited_bao(tmp_path):
    """A server whose file audit device logs every request (Bao.audit_paths)."""
    server = Bao(tmp_path, audit=True)
    yield server
    server.stop()


def vault_gateway(make_gateway, bao, token=None, key=None, mode="envelope", name="data", namespace=None, **env):
    """A gateway on `bao`. Without key and token: the seed's setup (Transit, a key, the policy) and a token of it;
    without a key only: a new Transit key."""
    if key is None:
        if token is None and not LOGINS & env.keys():
            key, token = bao.seed(namespace=namespace)
        else:
            bao.enable_transit(namespace=namespace)
            key = bao.make_key(namespace=namespace)
    if namespace:
        env["VAULT_NAMESPACE"] = namespace
    gw = make_gateway(bao.gateway_env(token=token, key=key, SECRETS_ENCRYPTION_MODE=mode, **env), name=name)
    gw.key, gw.token, gw.namespace = key, token, namespace
    return gw.start()


def kv_path(pid):
    return f"dyad-gateway/providers/{pid}"


def wrapped(envelope):
    """The Transit key version that wrapped an envelope's DEK."""
    text = base64.b64decode(envelope["dek"]).decode()
    assert text.startswith("vault:v"), text
    return int(text.split(":")[1][1:])


def validate(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))


def checks(v):
    return {c["check"]: c for c in v.get("checks", [])}


def audit(gw):
    return [json.loads(line) for line in (gw.data_dir / "audit.log").read_text().splitlines()]


def assert_never_logged(gw, *secrets):
    for text in (gw.logs(), gw.stdout):
        for s in secrets:
            assert s not in text


def test_lifecycle_envelope_rotate_validate_health_test_connection(make_gateway, bao):
    gw = vault_gateway(make_gateway, bao)
    creds = {"api_key": canary(), "note": "naïve “quotes” \"x\" 'y'\nline two\t🔑 日本語"}
    p = create_provider(gw, "openai", creds)
    stored = bao.kv_read(kv_path(p["id"]))  # hvac, root token
    assert stored is not None and stored["kms"] == "vault-transit" and stored["kver"] == 1, stored
    assert wrapped(stored) == 1, stored  # the DEK wrapped by Transit ("vault:v1:…", base64 in the envelope)
    assert creds["api_key"] not in json.dumps(stored) and "naïve" not in json.dumps(stored, ensure_ascii=False)
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, creds), v
    assert validate(gw, p["id"])["source"] == "cache"
    assert data(gw.call("GET", f"/admin/providers/{p['id']}"))["slug"] == "openai"

    new = {"api_key": canary()}
    data(gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": new}))
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["source"] == "store" and v["fingerprint"] == keyed_fingerprint(gw, new), v
    meta = bao.root().secrets.kv.v2.read_secret_metadata(path=kv_path(p["id"]))["data"]
    assert meta["current_version"] == 2, meta  # the rotate was a cas write of version 2
    rotated = bao.kv_read(kv_path(p["id"]))
    assert rotated["dek"] != stored["dek"] and new["api_key"] not in json.dumps(rotated)

    h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["status"] == "healthy" and h["provider"] == "vault" and h["keyManager"]["kind"] == "vault-transit", h
    assert gw.call("GET", "/readyz", token=None).status_code == 200
    t = data(gw.call("POST", "/admin/secrets/test-connection"))
    assert t["connected"] is True and all(s["ok"] for s in t["steps"]), t
    metrics = gw.call("GET", "/metrics").text
    host = bao.endpoint.removeprefix("http://")
    assert f'dyad_cloud_calls_total{{endpoint="{host}",op="transit.encrypt",outcome="ok"}}' in metrics, metrics[-3000:]

    data(gw.call("DELETE", f"/admin/providers/{p['id']}"))
    # The seed's policy has no delete/: the tombstone stands (never an unversioned DELETE of the latest version,
    # which could soft-delete another writer's version), and the gateway reads it as deleted.
    assert bao.kv_read(kv_path(p["id"])) == {"dyad_gateway_deleted": True}
    assert data(gw.call("GET", "/admin/providers"))["items"] == []
    # The seed's policy has no metadata/ capability: said once, not asked again.
    assert gw.logs().count("custom metadata (provider id, credentials version) on each secret is off") == 1
    assert_never_logged(gw, creds["api_key"], new["api_key"], gw.token)


def test_key_rotation_reencrypts_2000_while_four_readers_read(make_gateway, bao):
    gw = vault_gateway(make_gateway, bao, SECRETS_CACHE_ENABLED="false")
    n = 2000

    def make(i):
        return create_provider(gw, f"p-{i}", {"api_key": f"sk-{i}-{canary()}"})["id"]

    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        made = list(pool.map(make, range(n)))
    assert len(set(made)) == n
    stop, reads, failures = threading.Event(), [0] * 4, []

    def reader(slot):
        rng = random.Random(slot)
        while not stop.is_set():
            pid = rng.choice(made)
            try:
                v = validate(gw, pid)
                if v["valid"] is not True:
                    failures.append((pid, v))
            except Exception as e:  # noqa: BLE001 - every failure counts
                failures.append((pid, repr(e)))
            reads[slot] += 1

    threads = [threading.Thread(target=reader, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    try:
        run = data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
        h = wait_idle(gw, timeout=180)["history"][0]
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert h["id"] == run["id"] and h["status"] == "completed", h
    assert (h["fromKeyVersion"], h["toKeyVersion"], h["reencrypted"], h["failed"]) == (1, 2, n, 0), h
    assert failures == [] and min(reads) > 0, (failures[:5], reads)
    assert bao.root().secrets.transit.read_key(gw.key)["data"]["latest_version"] == 2
    assert gw.logs().count("rewrap is not permitted") == 1  # the seed's policy: decrypt + encrypt, said once
    client = bao.root()
    envelopes = [client.secrets.kv.v2.read_secret_version(path=kv_path(pid), raise_on_deleted_version=True)
                 ["data"]["data"] for pid in made]
    assert {e["kver"] for e in envelopes} == {2} and {wrapped(e) for e in envelopes} == {2}
    r = subprocess.run([BINARY, "secrets", "verify"], env=gw.env(), capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and f"{n} open, 0 failed" in r.stdout, (r.stdout[-2000:], r.stderr[-2000:])


def test_a_token_missing_one_capability_gets_an_error_naming_path_and_capability(make_gateway, bao):
    """Without transit/decrypt the gateway cannot open even its audit key (sealed by the same Transit key): every
    audited call fails closed, naming the path and the capability; without encrypt, the same for encrypt."""
    key, _ = bao.seed()
    for missing, name in (("decrypt", "no-decrypt"), ("encrypt", "no-encrypt")):
        bao.write_policy(name, "\n".join(line for line in seed_policy().splitlines() if f"/{missing}/" not in line))
        gw = vault_gateway(make_gateway, bao, token=bao.token((name,)), key=key, name=name)
        r = gw.call("POST", "/admin/providers", json=provider_body(slug="openai", credentials={"api_key": canary()}))
        assert r.status_code == 503, r.text
        assert f"the token's policy needs 'update' on 'transit/{missing}/{key}'" in r.text, r.text
        assert data(gw.call("GET", "/admin/providers"))["items"] == []


def login_env(bao, method, tmp_path):
    if method == "approle":
        role_id, secret_id = bao.approle()
        secret_file = tmp_path / "secret-id"
        secret_file.write_text(secret_id + "\n")
        return {"VAULT_ROLE_ID": role_id, "VAULT_SECRET_ID_FILE": str(secret_file)}, None
    if method == "jwt":
        token_file = tmp_path / "jwt"
        token_file.write_text(bao.jwt_auth())
        return {"VAULT_JWT_ROLE": "dyad-gateway", "VAULT_JWT_FILE": str(token_file)}, None
    sa_token, review = bao.kubernetes_auth()
    token_file = tmp_path / "sa-token"
    token_file.write_text(sa_token)
    return {"VAULT_K8S_ROLE": "dyad-gateway", "VAULT_K8S_TOKEN_FILE": str(token_file)}, review


@pytest.mark.parametrize("method", ["approle", "kubernetes", "jwt"])
def test_login_methods_create_and_read_a_provider(make_gateway, bao, tmp_path, method):
    bao.enable_transit()
    bao.write_policy()
    env, review = login_env(bao, method, tmp_path)
    try:
        gw = vault_gateway(make_gateway, bao, VAULT_TOKEN=None, SECRETS_CACHE_ENABLED="false", HOME=str(tmp_path),
                           **env)
        creds = {"api_key": canary()}
        p = create_provider(gw, "openai", creds)
        v = validate(gw, p["id"])
        assert v["valid"] is True and v["fingerprint"] == keyed_fingerprint(gw, creds), v
        assert bao.kv_read(kv_path(p["id"]))["kver"] == 1
        if review:
            assert review.requests >= 1  # Bao asked the TokenReview stand-in
        assert_never_logged(gw, creds["api_key"], *[open(f).read().strip() for k, f in env.items()
                                                    if k.endswith("_FILE")])
    finally:
        if review:
            review.stop()


def test_a_short_renewable_token_is_renewed_and_keeps_working(make_gateway, audited_bao):
    bao = audited_bao
    key, _ = bao.seed()
    ttl = 4
    token = bao.token(ttl=f"{ttl}s", renewable=True, explicit_max_ttl="10m")
    gw = vault_gateway(make_gateway, bao, token=token, key=key, SECRETS_CACHE_ENABLED="false")
    p = create_provider(gw, "openai", {"api_key": canary()})
    started = time.monotonic()
    while time.monotonic() - started < 2.5 * ttl:  # well past the first TTL, polled
        assert validate(gw, p["id"])["valid"] is True
        time.sleep(0.5)
    info = bao.root().auth.token.lookup(token)["data"]
    assert info["last_renewal_time"] and info["ttl"] > 0, info  # renewed by the gateway, still alive
    renewals = len(bao.audit_paths("auth/token/renew-self"))
    assert 3 <= renewals <= 8, renewals  # at about two thirds of each 4 s lease over 10 s: no renewal per call
    assert validate(gw, p["id"])["valid"] is True


def test_approle_logs_in_again_past_the_token_max_ttl(make_gateway, audited_bao, tmp_path):
    bao = audited_bao
    bao.enable_transit()
    bao.write_policy()
    role_id, secret_id = bao.approle(token_ttl="4s", token_max_ttl="4s")
    gw = vault_gateway(make_gateway, bao, VAULT_TOKEN=None, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id,
                       SECRETS_CACHE_ENABLED="false", HOME=str(tmp_path))
    p = create_provider(gw, "openai", {"api_key": canary()})
    started = time.monotonic()
    while time.monotonic() - started < 10:  # two and a half lifetimes of a token that cannot be renewed
        v = validate(gw, p["id"])
        assert v["valid"] is True, v
        time.sleep(0.5)
    logins = len(bao.audit_paths("auth/approle/login"))
    assert 3 <= logins <= 6, logins  # a new token as each one's max TTL nears: no login per call either
    assert_never_logged(gw, secret_id)


def test_namespaces_isolate_two_gateways(make_gateway, bao, tmp_path):
    # One Transit key, the same material in both namespaces (backup, restore): only the namespace differs, so a
    # registry moved to the other namespace still opens its audit key and can only fail to find its secrets.
    key = "dyad-gateway-iso"
    bao.create_namespace("ns1")
    bao.enable_transit()
    bao.api("POST", f"transit/keys/{key}", {"exportable": True, "allow_plaintext_backup": True})
    backup = bao.api("GET", f"transit/backup/{key}")["data"]["backup"]
    bao.enable_kv(namespace="ns1")
    bao.enable_transit(namespace="ns1")
    bao.api("POST", f"transit/restore/{key}", {"backup": backup}, namespace="ns1")
    bao.write_policy()
    bao.write_policy(namespace="ns1")
    a = vault_gateway(make_gateway, bao, bao.token(namespace="ns1"), key, namespace="ns1", name="a")
    b = vault_gateway(make_gateway, bao, bao.token(), key, name="b")
    pa = create_provider(a, "openai", {"api_key": canary()})
    pb = create_provider(b, "openai", {"api_key": canary()})
    assert bao.kv_read(kv_path(pa["id"]), namespace="ns1")["kver"] == 1
    assert bao.kv_read(kv_path(pa["id"])) is None  # not in the root namespace
    assert bao.kv_read(kv_path(pb["id"]))["kver"] == 1
    assert bao.kv_read(kv_path(pb["id"]), namespace="ns1") is None
    # A's token cannot read B's data in the root namespace, nor B's token A's in ns1.
    with pytest.raises(hvac.exceptions.Forbidden):
        bao.client(a.token).secrets.kv.v2.read_secret_version(path=kv_path(pb["id"]), raise_on_deleted_version=True)
    with pytest.raises(hvac.exceptions.Forbidden):
        bao.client(b.token, "ns1").secrets.kv.v2.read_secret_version(path=kv_path(pa["id"]),
                                                                        raise_on_deleted_version=True)
    # Each gateway's registry under the other's settings: the provider is listed, its secret is not found.
    for src, settings, pid, name in ((b, a, pb["id"], "b-in-ns1"), (a, b, pa["id"], "a-in-root")):
        src.stop()
        shutil.copytree(src.data_dir, tmp_path / name)
        src.start()
        gw = make_gateway(settings.env_extra, name=name).start()
        assert [x["id"] for x in data(gw.call("GET", "/admin/providers"))["items"]] == [pid]
        v = validate(gw, pid)
        present = checks(v)["present"]
        assert v["valid"] is False and present["ok"] is False, v
        assert present["message"] == f"secret '{kv_path(pid)}' does not exist", v
        gw.stop()
    assert validate(a, pa["id"])["valid"] is True and validate(b, pb["id"])["valid"] is True


def test_seal_mid_run_cache_stale_fallback_then_recovery_without_restart(make_gateway, tmp_path):
    server = BaoFileServer(tmp_path)
    try:
        gw = vault_gateway(make_gateway, server, SECRETS_CACHE_TTL_SECONDS="1", VAULT_MAX_RETRIES="1",
                           VAULT_CLIENT_TIMEOUT="2", DYAD_PROVIDER_ANTHROPIC_API_KEY="sk-env-fallback")
        a = create_provider(gw, "openai", {"api_key": canary()})
        b = create_provider(gw, "anthropic", {"api_key": canary()})
        data(gw.call("POST", "/admin/secrets/clear-cache"))  # b is never cached: it can only fall back
        assert validate(gw, a["id"])["source"] == "store"
        assert validate(gw, a["id"])["source"] == "cache"
        time.sleep(1.2)
        server.seal()
        assert server.sealed()
        assert validate(gw, a["id"])["source"] == "stale"
        vb = validate(gw, b["id"])
        assert vb["source"] == "fallback" and vb["fingerprint"] == keyed_fingerprint(gw, {"api_key": "sk-env-fallback"})
        deadline = time.time() + 10
        while (h := data(gw.call("GET", "/admin/secrets/health")))["status"] != "unhealthy":
            assert time.time() < deadline, h
            time.sleep(0.2)
        assert "sealed" in json.dumps(h), h
        server.unseal()
        deadline = time.time() + 20
        for x in (b, a):
            while validate(gw, x["id"])["source"] != "store":  # after the error backoff, the store again
                assert time.time() < deadline, "no recovery after unseal"
                time.sleep(0.5)
        sources = [e.get("source") for e in audit(gw) if e.get("action") == "secret.get"]
        # Cache hits are not audited (the hot path, secrets_service.cc); validate's source showed them above.
        assert {"store", "stale", "fallback"} <= set(sources), sources
        assert sources.index("stale") < len(sources) - 1 - sources[::-1].index("store")  # store after the outage
    finally:
        server.stop()


def test_a_tiny_rate_limit_quota(make_gateway, bao):
    """One read per 3 s on one provider's secret, two attempts a call (VAULT_MAX_RETRIES=1): the next read is
    throttled, waits the Retry-After Bao sends (2: whole seconds left, rounded down), is throttled again inside the
    window and fails as unavailable, without fallback; each 429 is counted; after the window the reads succeed
    again. Only that secret's path is limited, so background probes cannot interfere."""
    gw = vault_gateway(make_gateway, bao, SECRETS_CACHE_ENABLED="false", VAULT_MAX_RETRIES="1")
    p = create_provider(gw, "openai", {"api_key": canary()})
    q = create_provider(gw, "other", {"api_key": canary()})
    path = kv_path(p["id"])
    bao.rate_limit("tiny", rate=1, path=f"secret/data/{path}", interval="3s")
    window = time.monotonic()
    assert validate(gw, p["id"])["valid"] is True  # the window's one read
    started = time.monotonic()
    v = validate(gw, p["id"])
    waited = time.monotonic() - started
    assert v["valid"] is False and v["source"] == "", v
    assert checks(v)["decryptable"]["message"] == (f'kv.read: HTTP 429: request path "secret/data/{path}": '
                                                    "rate limit quota exceeded (after 2 attempts)"), v
    assert 2.0 <= waited < 3.0, waited  # Retry-After: 2 honoured
    assert validate(gw, q["id"])["valid"] is True  # another secret is not limited
    host = bao.endpoint.removeprefix("http://")
    metrics = gw.call("GET", "/metrics").text
    assert f'dyad_cloud_throttles_total{{endpoint="{host}",op="kv.read"}} 2' in metrics, metrics[-3000:]
    time.sleep(max(0.0, window + 3.2 - time.monotonic()))
    assert validate(gw, p["id"])["valid"] is True  # the next window, no restart
    bao.drop_rate_limit("tiny")


def test_provider_mode_interop_with_hvac(make_gateway, bao):
    gw = vault_gateway(make_gateway, bao, mode="provider")
    creds = {"api_key": canary(), "org": "ünïcode \"q\"\n"}
    p = create_provider(gw, "interop", creds)
    assert bao.kv_read(kv_path(p["id"])) == creds  # hvac reads what the gateway wrote
    theirs = {"api_key": canary()}
    bao.root().secrets.kv.v2.create_or_update_secret(path=kv_path(p["id"]), secret=theirs)  # and the reverse
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["fingerprint"] == keyed_fingerprint(gw, theirs), v


def test_a_307_to_the_active_node_is_followed(make_gateway, bao):
    redirector = Redirector(bao.endpoint)
    try:
        key, token = bao.seed()
        gw = vault_gateway(make_gateway, bao, token=token, key=key, VAULT_ADDR=redirector.endpoint,
                           SECRETS_CACHE_ENABLED="false")
        creds = {"api_key": canary()}
        p = create_provider(gw, "openai", creds)
        assert validate(gw, p["id"])["fingerprint"] == keyed_fingerprint(gw, creds)
        assert bao.kv_read(kv_path(p["id"]))["kver"] == 1
        assert redirector.requests >= 3  # the KV write, the encrypt, the read: every call went through it
    finally:
        redirector.stop()


class Capture(http.server.ThreadingHTTPServer):
    """A server on `host` that records every request (path, headers, body) and answers 503."""

    def __init__(self, host):
        self.seen = []

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def record(self):
                length = int(self.headers.get("Content-Length", 0) or 0)
                body = self.rfile.read(length) if length else b""
                self.server.seen.append((self.path, dict(self.headers), body))
                self.send_response(503)
                self.send_header("Content-Length", "0")
                self.end_headers()

            do_GET = do_POST = do_PUT = do_DELETE = do_PATCH = do_LIST = record

            def log_message(self, *args):
                pass

        super().__init__((host, 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def stop(self):
        self.shutdown()
        self.server_close()


@pytest.mark.parametrize("case", ["other-host", "listed", "listed-spelt-otherwise", "listed-without-port",
                                  "listed-other-port", "userinfo"])
def test_a_redirect_to_another_host_is_refused_unless_allowed(make_gateway, bao, tmp_path, case):
    """A 307 naming a host other than VAULT_ADDR's does not get the login's secret_id (nor a token) unless the
    operator listed that host and its port in VAULT_REDIRECT_HOSTS (a port left out is VAULT_ADDR's scheme's default,
    80 here, as in VAULT_ADDR itself: found by review, an entry without a port matched every port); a Location with
    user@ is refused even to VAULT_ADDR's host."""
    bao.enable_transit()
    bao.write_policy()
    role_id, secret_id = bao.approle()
    host = "127.0.0.1" if case == "userinfo" else "127.0.0.2"
    capture = Capture(host)
    redirector = Redirector(f"http://{'user@' if case == 'userinfo' else ''}{host}:{capture.server_address[1]}")
    port = capture.server_address[1]
    entries = {"listed": f"127.0.0.2:{port}", "listed-spelt-otherwise": f" 127.0.0.2.:{port}",
               "listed-without-port": "127.0.0.2", "listed-other-port": f"127.0.0.2:{port + 1 if port < 65535 else 1}"}
    allowed = case in ("listed", "listed-spelt-otherwise")
    extra = {"VAULT_REDIRECT_HOSTS": entries[case]} if case in entries else {}
    try:
        gw, started = None, True
        try:
            gw = vault_gateway(make_gateway, bao, VAULT_TOKEN=None, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id,
                               VAULT_ADDR=redirector.endpoint, VAULT_MAX_RETRIES="0", SECRETS_CACHE_ENABLED="false",
                               HOME=str(tmp_path), name=f"redirect-{case}", **extra)
        except RuntimeError as e:  # a start-up check of Vault failed: the error is in the exception
            started, text = False, str(e)
        if started:
            r = gw.call("POST", "/admin/providers", json=provider_body("openai", credentials={"api_key": canary()}))
            assert r.status_code >= 400, r.text
            text = r.text + gw.logs()
        assert redirector.requests >= 1
        if allowed:
            assert capture.seen, "the listed host is followed"
            assert any(secret_id.encode() in body for _, _, body in capture.seen)
        else:
            assert capture.seen == [], "nothing reaches a host no one named"
            assert f"refused a redirect to {host}" in text, text[-2000:]
            assert "/v1/auth/approle/login" not in text.split(f"redirect to {host}", 1)[1][:200]
            assert secret_id not in text
    finally:
        redirector.stop()
        capture.stop()


def test_a_policy_403_does_not_log_in_again(make_gateway, bao, tmp_path):
    """A path the policy denies, refused on a token older than 30 s, is the policy's answer: the token is kept (no
    new login spending a secret_id of one use) and works again once the policy allows the path."""
    bao.enable_transit()
    policy = bao.write_policy()
    role_id, secret_id = bao.approle(secret_id_num_uses=1)
    gw = vault_gateway(make_gateway, bao, VAULT_TOKEN=None, VAULT_ROLE_ID=role_id, VAULT_SECRET_ID=secret_id,
                       SECRETS_CACHE_ENABLED="false", HOME=str(tmp_path))
    creds = {"api_key": canary()}
    p = create_provider(gw, "openai", creds)
    text = seed_policy()
    denied = text.replace('path "secret/data/dyad-gateway/*" { capabilities = ["create", "read", "update", "delete"] }',
                          'path "secret/data/dyad-gateway/*" { capabilities = ["create", "update", "delete"] }')
    assert denied != text
    bao.write_policy(policy, denied)
    time.sleep(31)  # past the 30 s within which a refusal was always taken as the policy's
    r = gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate")
    assert r.status_code >= 400 or r.json()["data"]["valid"] is False, r.text
    bao.write_policy(policy, text)
    v = validate(gw, p["id"])
    assert v["fingerprint"] == keyed_fingerprint(gw, creds), v  # the same token: the one-use secret_id is spent
    assert "obtaining a new one" not in gw.logs()


@pytest.mark.parametrize("source", ["VAULT_TOKEN_FILE", "~/.vault-token"])
def test_the_token_from_a_file(make_gateway, bao, tmp_path, source):
    key, token = bao.seed()
    home = tmp_path / "home"
    home.mkdir()
    path = home / (".vault-token" if source.startswith("~") else "token")
    path.write_text(token + "\n")
    env = {"VAULT_TOKEN_FILE": str(path)} if source == "VAULT_TOKEN_FILE" else {}
    gw = vault_gateway(make_gateway, bao, token=None, key=key, VAULT_TOKEN=None, HOME=str(home), **env)
    p = create_provider(gw, "openai", {"api_key": canary()})
    assert validate(gw, p["id"])["valid"] is True
    assert_never_logged(gw, token)


def test_tls_with_the_servers_ca_and_none_without(make_gateway, tmp_path):
    server = Bao(tmp_path, tls=True)
    try:
        key, token = server.seed()
        gw = vault_gateway(make_gateway, server, token=token, key=key, VAULT_CACERT=str(server.ca))
        p = create_provider(gw, "openai", {"api_key": canary()})
        assert validate(gw, p["id"])["valid"] is True
        named = vault_gateway(make_gateway, server, token=token, key=key, VAULT_CACERT=str(server.ca),
                              VAULT_TLS_SERVER_NAME="localhost", name="named")  # a name of the certificate
        assert data(named.call("POST", "/admin/secrets/test-connection"))["connected"] is True
        untrusted = vault_gateway(make_gateway, server, token=token, key=key, name="untrusted")
        log = server.ca.parent / "bao.log"
        before = log.read_text().count("TLS handshake error")
        r = untrusted.call("POST", "/admin/providers", json=provider_body(credentials={"api_key": canary()}))
        assert r.status_code == 503 and "SSL peer certificate" in r.text, r.text
        # One call, VAULT_MAX_RETRIES=2: three attempts in all, the token lookup's included (not three each).
        assert log.read_text().count("TLS handshake error") - before == 3
        wrong = vault_gateway(make_gateway, server, token=token, key=key, VAULT_CACERT=str(server.ca),
                              VAULT_TLS_SERVER_NAME="not-in-the-cert.example", VAULT_MAX_RETRIES="0",
                              name="wrong-name")
        r = wrong.call("POST", "/admin/secrets/test-connection")
        assert r.status_code == 503 and "SSL peer certificate" in r.text, r.text
    finally:
        server.stop()


def test_vault_passes_the_backend_contract(bao):
    """The seam's contract suite (src/backends/contract_test.cc, the `vault` target) against this OpenBao, with a
    token holding the seed's capabilities on the suite's prefix (contract-<random>) and `list` on its metadata
    (listing is the one optional capability the suite needs: README). The second key is the wrong-key case's."""
    from test_contract import unit_tests_binary

    policy = seed_policy().replace("secret/data/dyad-gateway/*", "secret/data/contract-*")
    bao.write_policy("contract", policy + 'path "secret/metadata/contract-*" { capabilities = ["list"] }\n')
    token = bao.token(("contract",))
    bao.enable_transit()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("VAULT_", "SECRETS_", "ENCRYPTION_", "AWS_"))}
    env.update(DYAD_CONTRACT_VAULT="1", DYAD_CONTRACT_OTHER_KEY_ID=bao.make_key())
    env.update({k: v for k, v in bao.gateway_env(token=token, key=bao.make_key()).items() if v is not None})
    run = subprocess.run([str(unit_tests_binary()), "--gtest_filter=Backends/StoreContract.*/vault"], env=env,
                         capture_output=True, text=True, timeout=600)
    out = run.stdout + run.stderr
    assert run.returncode == 0, out[-6000:]
    assert "[  SKIPPED ]" not in out, out[-6000:]  # every case ran, the wrong-key one included
    assert "[  PASSED  ] 14 tests." in out and token not in out, out[-3000:]


def test_the_database_engine_peer_makes_and_revokes_postgres_users(bao):
    """The harness's PostgreSQL and Bao's database engine on it (the dynamic-secrets tests build on both): a lease
    makes a login role, revoking the lease drops it."""
    from pg_peer import Postgres

    pg = Postgres()
    try:
        role = bao.database(pg)
        creds = bao.api("GET", f"database/creds/{role}")
        user = creds["data"]["username"]
        assert creds["lease_duration"] == 3600 and creds["renewable"] is True, creds
        assert pg.psql(f"SELECT rolcanlogin FROM pg_roles WHERE rolname = '{user}'").strip() == "t"
        bao.api("PUT", "sys/leases/revoke", {"lease_id": creds["lease_id"]})
        assert pg.psql(f"SELECT count(*) FROM pg_roles WHERE rolname = '{user}'").strip() == "0"
    finally:
        pg.stop()


@pytest.mark.parametrize("retire,can_list", [("true", True), ("true", False), ("false", True)])
def test_a_rotation_retires_the_old_version_in_vault_only_when_asked(make_gateway, bao, retire, can_list):
    """min_decryption_version is raised only when asked (VAULT_TRANSIT_RETIRE) and only when the rotation listed
    the store itself: under the seed's policy (no list) only this instance's registry names the secrets, and another
    instance's may still be on the old version."""
    token = key = None
    if can_list:
        key, _ = bao.seed()
        bao.write_policy("dyad-list", 'path "secret/metadata/dyad-gateway/*" { capabilities = ["list"] }\n')
        token = bao.token(("dyad-gateway", "dyad-list"))
    gw = vault_gateway(make_gateway, bao, token=token, key=key, VAULT_TRANSIT_RETIRE=retire)
    made = [create_provider(gw, f"p-{i}", {"api_key": canary()})["id"] for i in range(5)]
    data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    h = wait_idle(gw)["history"][0]
    assert h["status"] == "completed" and h["reencrypted"] == 5, h
    key = bao.root().secrets.transit.read_key(gw.key)["data"]
    assert key["latest_version"] == 2
    in_vault = retire == "true" and can_list
    assert key["min_decryption_version"] == (2 if in_vault else 1), key  # the key may be shared
    warned = gw.logs().count("retired in the gateway only, Vault still decrypts it")
    assert warned == (1 if retire == "true" and not can_list else 0), gw.logs()[-3000:]
    versions = data(gw.call("GET", "/admin/secrets/health"))["keyManager"]["versions"]
    assert [v["state"] for v in versions] == ["retired", "active"], versions  # the gateway stops using 1 either way
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert all(validate(gw, pid)["valid"] for pid in made)
