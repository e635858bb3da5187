"""Dynamic secrets (issue 11): a provider credential that refers to OpenBao's `database` engine, against a PostgreSQL
started by the test with password authentication. The gateway talks to OpenBao through a recording proxy, so the test
knows the database credential the gateway was handed (and nothing else does: the gateway never returns a value); with
it the test logs in to PostgreSQL, and checks the gateway's keyed validate fingerprint over exactly that lease's
username and password. Then renewal, re-read after a lease is revoked behind the gateway's back, and revocation on
replace and on delete."""
import http.server
import json
import os
import subprocess
import threading
import time
import urllib.parse

import pytest
import requests

from aws_peers import free_port
from conftest import data
from pg_peer import PG_BIN, Postgres, as_postgres
from test_secrets import keyed_fingerprint
from test_vault import audit, validate, vault_gateway
from vault_peers import POLICY, Bao

PATH = "database/creds/readonly"
# http-sdk providers need a baseUrl (issue 16); nothing here calls it.
LOOPBACK_UPSTREAM = {"baseUrl": "http://127.0.0.1:9"}
# Beyond the seed's policy: read the referenced path, revoke the leases it gives (renew is in `default`).
DYNAMIC_POLICY = """\
path "database/creds/readonly" { capabilities = ["read"] }
path "sys/leases/revoke" { capabilities = ["update"] }
"""
TTL = 6  # the role's default_ttl: the gateway renews from 4 s on


class RecordingProxy:
    """Forwards every request to `upstream` as it is and keeps (method, path, request JSON, status, answer JSON)."""

    def __init__(self, upstream):
        self.upstream = upstream.rstrip("/")
        self.lock = threading.Lock()
        self.calls = []
        proxy = self

        class Handler(http.server.BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):
                pass

            def forward(self):
                n = int(self.headers.get("Content-Length") or 0)
                body = self.rfile.read(n) if n else b""
                headers = {k: v for k, v in self.headers.items()
                           if k.lower() not in ("host", "content-length", "connection", "accept-encoding")}
                r = requests.request(self.command, proxy.upstream + self.path, headers=headers, data=body,
                                     timeout=30, allow_redirects=False)
                with proxy.lock:
                    proxy.calls.append((self.command, urllib.parse.urlparse(self.path).path,
                                        json.loads(body) if body else None, r.status_code,
                                        r.json() if r.content else None))
                self.send_response(r.status_code)
                self.send_header("Content-Type", r.headers.get("Content-Type", "application/json"))
                self.send_header("Content-Length", str(len(r.content)))
                self.end_headers()
                self.wfile.write(r.content)

            do_GET = do_PUT = do_POST = do_DELETE = do_LIST = forward

        self.port = free_port()
        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        self.server.daemon_threads = True
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    @property
    def endpoint(self):
        return f"http://127.0.0.1:{self.port}"

    def seen(self, method, path):
        with self.lock:
            return [c for c in self.calls if c[0] == method and c[1] == "/v1/" + path]

    def stop(self):
        self.server.shutdown()
        self.server.server_close()


class PasswordPostgres(Postgres):
    """pg_peer's PostgreSQL, but TCP logins need a password (scram-sha-256): a login proves the password. The
    superuser's is the one vault_peers' database() gives OpenBao; the test's own SQL goes over the socket."""

    SUPERUSER_PASSWORD = "unused-trust-auth"

    def __init__(self):
        super().__init__()
        self.sql(f"ALTER USER postgres PASSWORD '{self.SUPERUSER_PASSWORD}'")
        hba = self.data / "pg_hba.conf"
        lines = [line.replace("trust", "scram-sha-256") if line.startswith("host") else line
                 for line in hba.read_text().splitlines()]
        hba.write_text("\n".join(lines) + "\n")
        as_postgres(f"{PG_BIN}/pg_ctl -D {self.data} reload")
        time.sleep(0.3)  # the postmaster reloads pg_hba.conf on SIGHUP

    def sql(self, query):
        return as_postgres(f"{PG_BIN}/psql -h {self.dir} -p {self.port} -U postgres -d postgres -At -c \"{query}\"").stdout

    def dynamic_roles(self):
        return sorted(r for r in self.sql("SELECT rolname FROM pg_roles WHERE rolname LIKE 'v-%'").split("\n") if r)

    def login(self, user, password):
        """current_user of a TCP login with this password, or None when PostgreSQL refuses it."""
        r = subprocess.run([f"{PG_BIN}/psql", "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", "postgres",
                            "-w", "-At", "-c", "SELECT current_user"], capture_output=True, text=True,
                           env={**os.environ, "PGPASSWORD": password})
        return r.stdout.strip() if r.returncode == 0 else None


@pytest.fixture
def bao(tmp_path):
    server = Bao(tmp_path)
    yield server
    server.stop()


@pytest.fixture
def pg():
    server = PasswordPostgres()
    yield server
    server.stop()


@pytest.fixture
def proxy(bao):
    p = RecordingProxy(bao.endpoint)
    yield p
    p.stop()


def dynamic_gateway(make_gateway, bao, pg, proxy, max_ttl="1h", paths="database/creds/", policy=DYNAMIC_POLICY,
                    mode="envelope"):
    bao.database(pg, role="readonly", default_ttl=f"{TTL}s", max_ttl=max_ttl)
    key, _ = bao.seed()
    bao.write_policy("dyad-dynamic", text=policy)
    token = bao.token(policies=(POLICY, "dyad-dynamic"))
    return vault_gateway(make_gateway, bao, token=token, key=key, mode=mode, VAULT_ADDR=proxy.endpoint,
                         VAULT_DYNAMIC_PATHS=paths)


def reference(field):
    return {"vault": PATH, "field": field}


def create_dynamic(gw, slug="pg"):
    body = {"name": "PG", "slug": slug, "type": "http-sdk", "adapterConfig": LOOPBACK_UPSTREAM,
            "credentials": {"api_key": reference("password"), "username": reference("username")}}
    return data(gw.call("POST", "/admin/providers", json=body), 201)


def issued(proxy):
    """(username, password, lease_id) of each read of PATH the gateway made, in order."""
    return [(a["data"]["username"], a["data"]["password"], a["lease_id"])
            for (_, _, _, status, a) in proxy.seen("GET", PATH) if status == 200]


def lease_ttl(bao, lease_id):
    """The lease's TTL as OpenBao sees it, or None once it is gone."""
    r = requests.put(f"{bao.endpoint}/v1/sys/leases/lookup", json={"lease_id": lease_id},
                     headers={"X-Vault-Token": "root"}, timeout=10)
    return r.json()["data"]["ttl"] if r.status_code == 200 else None


def test_a_database_credential_read_on_use_renewed_and_revoked_on_delete(make_gateway, bao, pg, proxy):
    gw = dynamic_gateway(make_gateway, bao, pg, proxy)
    p = create_dynamic(gw)
    assert p["credentials"] == {"api_key": "[STORED_EXTERNALLY]", "username": "[STORED_EXTERNALLY]"}
    assert issued(proxy) == [] and pg.dynamic_roles() == []  # read on use, not on write

    v = validate(gw, p["id"])
    assert v["valid"] is True and v["source"] == "store", v
    assert set(v["leaseTtlSeconds"]) == {"api_key", "username"}, v
    assert TTL - 2 <= v["leaseTtlSeconds"]["api_key"] <= TTL, v
    # Two fields, one path: ONE read, one lease, one database role; the username and password belong together.
    [(user, password, lease_id)] = issued(proxy)
    assert pg.dynamic_roles() == [user]
    assert v["fingerprint"] == keyed_fingerprint(gw, {"api_key": password, "username": user})
    assert pg.login(user, password) == user  # a working database password
    assert pg.login(user, password + "x") is None  # … and logins do check it
    assert validate(gw, p["id"])["source"] == "cache"
    assert len(issued(proxy)) == 1

    # In the lease's last third the next read renews it (no new role).
    time.sleep(TTL * 2 / 3 + 0.4)
    assert lease_ttl(bao, lease_id) <= TTL / 3
    v = validate(gw, p["id"])
    assert v["valid"] is True and v["fingerprint"] == keyed_fingerprint(gw, {"api_key": password, "username": user})
    renewals = proxy.seen("PUT", "sys/leases/renew")
    assert [(c[2]["lease_id"], c[2]["increment"], c[3]) for c in renewals] == [(lease_id, TTL, 200)], renewals
    assert lease_ttl(bao, lease_id) >= TTL - 2
    assert v["leaseTtlSeconds"]["api_key"] >= TTL - 2, v
    assert len(issued(proxy)) == 1 and pg.dynamic_roles() == [user]
    assert pg.login(user, password) == user

    # Deleting the provider revokes its lease: OpenBao forgets it and drops the role.
    assert gw.call("DELETE", f"/admin/providers/{p['id']}").status_code in (200, 204)
    assert [c[2]["lease_id"] for c in proxy.seen("PUT", "sys/leases/revoke")] == [lease_id]
    assert lease_ttl(bao, lease_id) is None
    assert pg.dynamic_roles() == []
    assert pg.login(user, password) is None
    revoked = [e for e in audit(gw) if e["action"] == "lease.revoke"]
    assert len(revoked) == 1 and revoked[0]["outcome"] == "success" and revoked[0]["resource"] == p["id"], revoked
    for text in (gw.logs(), gw.stdout, (gw.data_dir / "audit.log").read_text()):
        assert password not in text


def test_a_lease_revoked_behind_the_gateways_back_is_read_again_and_a_replace_revokes(make_gateway, bao, pg, proxy):
    gw = dynamic_gateway(make_gateway, bao, pg, proxy)
    p = create_dynamic(gw)
    assert validate(gw, p["id"])["valid"] is True
    [(user1, _, lease1)] = issued(proxy)
    bao.api("PUT", "sys/leases/revoke", {"lease_id": lease1})  # an operator revokes it
    time.sleep(TTL * 2 / 3 + 0.4)
    v = validate(gw, p["id"])  # the renewal is refused: a new read, a new role
    assert v["valid"] is True, v
    assert [c[3] for c in proxy.seen("PUT", "sys/leases/renew")] == [400]
    [(_, _, _), (user2, password2, lease2)] = issued(proxy)
    assert user2 != user1 and pg.dynamic_roles() == [user2]
    assert v["fingerprint"] == keyed_fingerprint(gw, {"api_key": password2, "username": user2})
    assert pg.login(user2, password2) == user2

    # Replacing the credentials revokes the lease they held.
    r = gw.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": {"api_key": "sk-x"}})
    assert r.status_code == 200, r.text
    assert lease_ttl(bao, lease2) is None and pg.dynamic_roles() == []
    v = validate(gw, p["id"])
    assert v["valid"] is True and "leaseTtlSeconds" not in v, v
    assert len(issued(proxy)) == 2


def test_a_lease_cut_short_by_its_max_ttl_is_read_again(make_gateway, bao, pg, proxy):
    gw = dynamic_gateway(make_gateway, bao, pg, proxy, max_ttl="10s")
    p = create_dynamic(gw)
    assert validate(gw, p["id"])["valid"] is True
    time.sleep(TTL * 2 / 3 + 0.4)  # t≈4.4: renewed (what Vault grants is well over half of the 6 s asked for)
    assert validate(gw, p["id"])["valid"] is True
    [(user1, _, lease1)] = issued(proxy)
    [(_, _, _, status, answer)] = proxy.seen("PUT", "sys/leases/renew")
    granted = answer["lease_duration"]
    assert status == 200 and granted * 2 >= TTL, answer
    # In the renewed lease's last third (t≈8-9 s), 1-2 s are left before the 10 s max TTL: cut short, read again.
    time.sleep(granted * 2 / 3 + 0.4)
    v = validate(gw, p["id"])
    assert v["valid"] is True, v
    renewals = [(c[2]["lease_id"], c[3]) for c in proxy.seen("PUT", "sys/leases/renew")]
    assert renewals == [(lease1, 200), (lease1, 200)], renewals
    reads = issued(proxy)
    assert len(reads) == 2, reads
    user2, password2, lease2 = reads[1]
    assert user2 != user1 and lease2 != lease1
    assert v["fingerprint"] == keyed_fingerprint(gw, {"api_key": password2, "username": user2})
    assert pg.login(user2, password2) == user2


def test_references_are_checked_and_name_the_field(make_gateway, bao, pg, proxy):
    gw = dynamic_gateway(make_gateway, bao, pg, proxy)
    for bad, why in [({"vault": PATH}, "is an object: a reference takes exactly"),
                     ({"vault": PATH, "field": "password", "x": 1}, "is an object: a reference takes exactly"),
                     ({"vault": "database/../sys/x", "field": "f"}, "'vault' must be segments"),
                     ({"vault": "auth/token/lookup-self", "field": "id"}, "may not name a path under auth/"),
                     ({"vault": PATH, "field": 5}, "'credentials.api_key.field' must be a string")]:
        r = gw.call("POST", "/admin/providers", json={"name": "x", "slug": "x", "type": "http-sdk", "adapterConfig": LOOPBACK_UPSTREAM,
                                                      "credentials": {"api_key": bad}})
        assert r.status_code == 400 and why in r.json()["error"]["message"], (bad, r.text)
    # A field the secret does not have: validate names it, without any value.
    body = {"name": "typo", "slug": "typo", "type": "http-sdk", "adapterConfig": LOOPBACK_UPSTREAM, "credentials": {"api_key": reference("passwd")}}
    p = data(gw.call("POST", "/admin/providers", json=body), 201)
    v = validate(gw, p["id"])
    assert v["valid"] is False, v
    [(_, password, _)] = issued(proxy)
    message = json.dumps(v)
    # Only the field asked for is named: not the secret's other fields, nor any value.
    assert "no string field 'passwd'" in message and "it has" not in message and "username" not in message, message
    assert password not in message


def create_ref(gw, path, field, slug="x"):
    return gw.call("POST", "/admin/providers", json={"name": slug, "slug": slug, "type": "http-sdk", "adapterConfig": LOOPBACK_UPSTREAM,
                                                     "credentials": {"api_key": {"vault": path, "field": field}}})


def test_a_reference_outside_vault_dynamic_paths_is_a_400_naming_the_variable(make_gateway, bao, pg, proxy):
    gw = dynamic_gateway(make_gateway, bao, pg, proxy)  # VAULT_DYNAMIC_PATHS=database/creds/
    paths = ("database/static-creds/readonly", "database/credsX/readonly", "aws/creds/r", "kv/data/shared")
    for path in paths:
        r = create_ref(gw, path, "password")
        assert r.status_code == 400, (path, r.text)
        assert r.json()["error"]["message"] == "credentials.api_key: references a Vault secret outside VAULT_DYNAMIC_PATHS"
    # Refused when written: none of them was read.
    assert [c for c in proxy.calls if c[1].startswith(tuple("/v1/" + p for p in paths))] == []


def test_without_vault_dynamic_paths_references_are_off(make_gateway, bao, pg, proxy):
    gw = dynamic_gateway(make_gateway, bao, pg, proxy, paths="")
    r = create_ref(gw, PATH, "password")
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == ("credentials.api_key: references a Vault secret outside "
                                            "VAULT_DYNAMIC_PATHS (unset: dynamic secrets are off)")
    assert issued(proxy) == []


# A policy as broad as an operator might write: the token CAN read a child namespace's lookup-self, and every
# provider's KV secret (the seed's policy). What refuses these references is the gateway, not OpenBao.
BROAD_POLICY = DYNAMIC_POLICY + """path "ns1/*" { capabilities = ["read"] }
path "secret/*" { capabilities = ["read"] }
"""


def test_the_tokens_own_secrets_and_the_gateways_kv_mount_are_refused_even_when_allow_listed(
        make_gateway, bao, pg, proxy):
    gw = dynamic_gateway(make_gateway, bao, pg, proxy, paths="ns1/,secret/,transit/,database/creds/",
                         policy=BROAD_POLICY, mode="provider")
    victim = data(gw.call("POST", "/admin/providers", json={"name": "victim", "slug": "victim", "type": "http-sdk", "adapterConfig": LOOPBACK_UPSTREAM,
                                                             "credentials": {"api_key": "sk-VICTIM-canary"}}), 201)
    # In provider mode the victim's KV secret holds its api_key as it is, and the token can read it: a reference
    # to it would hand the key to whoever can create a provider.
    kv = f"secret/data/dyad-gateway/providers/{victim['id']}"
    probe = requests.get(f"{bao.endpoint}/v1/{kv}", headers={"X-Vault-Token": gw.token}, timeout=10)
    assert probe.status_code == 200 and "sk-VICTIM-canary" in probe.text, probe.status_code
    before = len(proxy.calls)
    for path, why in [
            # a child namespace's token endpoint: refused by its auth segment, whatever the allowlist
            ("ns1/auth/token/lookup-self", "'vault' may not name a path under auth/ at any depth"),
            ("ns1/sys/wrapping/unwrap", "'vault' may not name a path under sys/ at any depth"),
            # the gateway's own KV mount (VAULT_MOUNT_PATH): every provider's credentials
            (kv, "references a Vault secret under the gateway's own KV mount secret/ (VAULT_MOUNT_PATH"),
            # ... and its Transit mount (VAULT_TRANSIT_MOUNT)
            (f"transit/keys/{gw.key}", "under the gateway's own Transit mount transit/ (VAULT_TRANSIT_MOUNT)")]:
        r = create_ref(gw, path, "api_key" if path == kv else "id", slug="thief")
        assert r.status_code == 400, (path, r.text)
        message = r.json()["error"]["message"]
        assert why in message and message.startswith("field 'credentials.api_key'" if "'vault'" in why
                                                     else "credentials.api_key: "), (path, message)
        assert "sk-VICTIM-canary" not in r.text
    # None of them was read: refused before any call to OpenBao.
    assert [c for c in proxy.calls[before:] if c[1].startswith(("/v1/ns1/", "/v1/secret/", "/v1/transit/keys"))] == []
    # The allowlist still lets through what it names.
    p = create_dynamic(gw)
    assert validate(gw, p["id"])["valid"] is True
    assert "sk-VICTIM-canary" not in gw.logs()


def test_without_dynamic_secrets_a_reference_is_a_400(make_gateway):
    gw = make_gateway().start()  # the environment backend
    r = gw.call("POST", "/admin/providers", json={"name": "x", "slug": "x", "type": "http-sdk", "adapterConfig": LOOPBACK_UPSTREAM,
                                                  "credentials": {"api_key": reference("password")}})
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == ("credentials.api_key: references a Vault secret, but "
                                            "SECRETS_PROVIDER=environment has no dynamic secrets")
