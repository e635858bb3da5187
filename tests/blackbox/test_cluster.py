"""Cluster mode (issue 14): gateway instances with data dirs of their own on one PostgreSQL registry
(GATEWAY_DATABASE_URL=postgresql://…). The server is DYAD_TEST_PG_URL's (scripts/pg-test-cluster.sh); each test
makes a database of its own there and drops it. Skipped when DYAD_TEST_PG_URL is unset."""
import hashlib
import hmac
import json
import os
import secrets
import subprocess
import threading
import urllib.parse

import pytest

from conftest import BINARY, canary, create_provider, data
from pg_peer import PG_BIN

PG_URL = os.environ.get("DYAD_TEST_PG_URL", "")
# The test server trusts every local connection: a password in the URL is accepted and ignored, so it can be
# looked for in everything the gateway says.
PASSWORD = "pw-CANARY-" + secrets.token_hex(6)


def psql(url, sql):
    r = subprocess.run([str(PG_BIN / "psql"), url, "-At", "-v", "ON_ERROR_STOP=1", "-c", sql],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def with_database(url, name, password=None):
    parts = urllib.parse.urlsplit(url)
    netloc = parts.netloc
    if password is not None:
        user, _, host = netloc.rpartition("@")
        netloc = f"{user.split(':')[0] or 'postgres'}:{password}@{host}"
    return urllib.parse.urlunsplit((parts.scheme, netloc, "/" + name, parts.query, parts.fragment))


@pytest.fixture
def pg_database():
    """(URL the gateways use, with a password; URL psql uses) of a new, empty database."""
    if not PG_URL:
        pytest.skip("DYAD_TEST_PG_URL is unset: no PostgreSQL to test on (scripts/pg-test-cluster.sh prints one)")
    name = "dyad_cluster_" + secrets.token_hex(6)
    psql(PG_URL, f"CREATE DATABASE {name}")
    try:
        yield with_database(PG_URL, name, PASSWORD), with_database(PG_URL, name)
    finally:
        psql(PG_URL, f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")


def instance(make_gateway, url, name):
    return make_gateway({"GATEWAY_DATABASE_URL": url, "SECRETS_PROVIDER": "environment",
                         "GATEWAY_LOG_LEVEL": "info"}, name=name)


def keyed_fingerprint(admin_url, credentials):
    """The validate fingerprint: HMAC-SHA-256 under the deployment's key in the registry's settings table."""
    key = psql(admin_url, "SELECT value FROM settings WHERE key='validate.fingerprint_key'")
    text = json.dumps(credentials, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(bytes.fromhex(key), text.encode(), hashlib.sha256).hexdigest()[:16]


def assert_no_password(*texts):
    for text in texts:
        assert PASSWORD not in text


def test_a_provider_created_through_one_instance_is_read_through_another(make_gateway, pg_database):
    url, admin_url = pg_database
    a = instance(make_gateway, url, "a").start()
    b = instance(make_gateway, url, "b").start()
    creds = {"api_key": canary(), "organization": "org-cluster"}
    made = create_provider(a, "openai", creds)
    listed = data(b.call("GET", "/admin/providers"))
    assert [p["id"] for p in listed["items"]] == [made["id"]]
    assert listed["items"][0]["credentials"] == {"api_key": "[STORED_EXTERNALLY]",
                                                 "organization": "[STORED_EXTERNALLY]"}
    # B opens the credentials A sealed: from the shared store, under the same key.
    v = data(b.call("POST", f"/admin/secrets/providers/{made['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "store", v
    assert v["fingerprint"] == keyed_fingerprint(admin_url, creds)
    # The rows are PostgreSQL's, not a file in either data dir.
    assert psql(admin_url, "SELECT count(*) FROM providers") == "1"
    assert not (a.data_dir / "gateway.db").exists() and not (b.data_dir / "gateway.db").exists()
    assert psql(admin_url, "SELECT count(*) FROM secrets") == "1"
    # A CLI command on a third data dir sees the same registry.
    verify = subprocess.run([BINARY, "secrets", "verify"], env=instance(make_gateway, url, "c").env(),
                            capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert "1 secret(s): 1 open, 0 failed" in verify.stdout
    a.stop(), b.stop()
    assert_no_password(a.logs(), b.logs(), verify.stdout, verify.stderr)


def test_instances_starting_at_once_migrate_the_schema_once(make_gateway, pg_database):
    url, admin_url = pg_database
    gateways = [instance(make_gateway, url, f"g{i}") for i in range(3)]
    errors = []

    def start(gw):
        try:
            gw.start()
        except Exception as e:  # noqa: BLE001 - reported below
            errors.append(e)

    threads = [threading.Thread(target=start, args=(gw,)) for gw in gateways]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    versions = psql(admin_url, "SELECT version FROM schema_migrations ORDER BY version").split()
    assert versions == [str(v) for v in range(1, len(versions) + 1)], versions
    assert len(versions) >= 10
    # Every instance works on the one schema: each writes, all see every write.
    for i, gw in enumerate(gateways):
        create_provider(gw, f"p-{i}", {"api_key": canary()})
    for gw in gateways:
        assert data(gw.call("GET", "/admin/providers"))["total"] == 3
    for gw in gateways:
        gw.stop()
        logs = gw.logs()
        assert "[error]" not in logs, logs[-2000:]
        assert_no_password(logs)


def test_sqlite_only_commands_refuse_a_postgresql_registry(make_gateway, pg_database, tmp_path):
    url, _ = pg_database
    gw = instance(make_gateway, url, "ops")
    env = gw.env()
    backup = subprocess.run([BINARY, "backup", "--out", str(tmp_path / "b.db")], env=env, capture_output=True,
                            text=True, timeout=60)
    assert backup.returncode == 2
    assert "PostgreSQL" in backup.stderr and "pg_dump" in backup.stderr, backup.stderr
    assert not (tmp_path / "b.db").exists()
    target = tmp_path / "target.env"
    target.write_text("SECRETS_PREFIX=elsewhere\nSECRETS_PROVIDER=environment\n" f"ENCRYPTION_KEY={'ab' * 32}\n")
    dry = subprocess.run([BINARY, "migrate", "--to-env-file", str(target), "--dry-run"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert dry.returncode == 2
    assert "--dry-run" in dry.stderr and "PostgreSQL" in dry.stderr, dry.stderr
    assert_no_password(backup.stdout, backup.stderr, dry.stdout, dry.stderr)


def test_an_unreachable_server_is_named_without_its_password(make_gateway, tmp_path):
    url = f"postgresql://gw:{PASSWORD}@127.0.0.1:1/registry?sslmode=disable"
    gw = instance(make_gateway, url, "down")
    r = subprocess.run([BINARY, "serve"], env=gw.env(), capture_output=True, text=True, timeout=60)
    assert r.returncode == 2
    assert "GATEWAY_DATABASE_URL" in r.stderr and "postgresql://gw@127.0.0.1:1/registry" in r.stderr, r.stderr
    assert_no_password(r.stdout, r.stderr)
