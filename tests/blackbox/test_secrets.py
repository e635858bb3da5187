"""Secrets core through the API: stored externally, validate, rotate under load, canary, audit."""
import hashlib
import hmac
import json
import pathlib
import sqlite3
import subprocess
import threading

import pytest

from conftest import ADMIN_TOKEN, BINARY, canary, create_provider, data, fingerprint, provider_body


def keyed_fingerprint(gw, credentials):
    """The validate fingerprint: HMAC-SHA-256 under the deployment's key in the registry's settings table."""
    db = sqlite3.connect(f"file:{gw.data_dir / 'gateway.db'}?mode=ro", uri=True)
    try:
        (key,) = db.execute("SELECT value FROM settings WHERE key='validate.fingerprint_key'").fetchone()
    finally:
        db.close()
    text = json.dumps(credentials, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hmac.new(bytes.fromhex(key), text.encode(), hashlib.sha256).hexdigest()[:16]


def validate(gw, pid):
    return data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))


def test_credentials_stored_externally_then_valid_after_restart(gateway):
    p = create_provider(gateway, "openai", {"api_key": canary(), "organization": "org-1"})
    assert p["credentials"] == {"api_key": "[STORED_EXTERNALLY]", "organization": "[STORED_EXTERNALLY]"}
    gateway.restart()
    v = data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "store"
    assert all(c["ok"] for c in v["checks"])
    assert v["credentialsVersion"] == 1


def test_validate_reports_missing_required_field(make_gateway):
    """The required fields are those auth.template sends (api_key by default), each non-empty. A provider without
    stored credentials reads only DYAD_PROVIDER_<SLUG>_API_KEY: "google-api"'s {key} would be "google"'s api_key."""
    gw = make_gateway({"DYAD_PROVIDER_GOOGLE_API_KEY": "sk-google-canary"}).start()
    r = gw.call("POST", "/admin/providers", json=provider_body(slug="proxy-a", credentials={"api_key": "", "token": "t"}))
    assert r.status_code == 400 and "'credentials.api_key' is empty" in r.text, r.text
    bare = data(gw.call("POST", "/admin/providers", json=provider_body(slug="proxy-a")), 201)
    v = data(gw.call("POST", f"/admin/secrets/providers/{bare['id']}/credentials/validate"))
    assert v["valid"] is False
    required = [c for c in v["checks"] if c["check"] == "required_fields"]
    assert [(c["ok"], c["message"]) for c in required] == [(False, "missing: api_key")], v
    token_config = {"baseUrl": "https://192.0.2.1", "auth": {"header": "x-token", "template": "{token}"}}
    sent = data(gw.call("POST", "/admin/providers", json=provider_body(
        slug="proxy-b", credentials={"token": "t-1"}, adapterConfig=token_config)), 201)
    v = data(gw.call("POST", f"/admin/secrets/providers/{sent['id']}/credentials/validate"))
    assert v["valid"] is True and all(c["ok"] for c in v["checks"]), v
    google = data(gw.call("POST", "/admin/providers", json=provider_body(slug="google")), 201)
    v = data(gw.call("POST", f"/admin/secrets/providers/{google['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "environment", v
    key_config = {"baseUrl": "https://192.0.2.1", "auth": {"header": "x-goog-api-key", "template": "{key}"}}
    other = data(gw.call("POST", "/admin/providers", json=provider_body(slug="google-api", adapterConfig=key_config)), 201)
    v = data(gw.call("POST", f"/admin/secrets/providers/{other['id']}/credentials/validate"))
    assert v["valid"] is False, v
    assert [c["message"] for c in v["checks"] if c["check"] == "required_fields"] == ["missing: key"], v
    # Once "google-api" stores a field key (its store-down fallback would read DYAD_PROVIDER_GOOGLE_API_KEY), that
    # variable names a field of each: read for neither.
    data(gw.call("PUT", f"/admin/providers/{other['id']}", json={"credentials": {"key": "k-own"}}))
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    v = data(gw.call("POST", f"/admin/secrets/providers/{google['id']}/credentials/validate"))
    assert v["valid"] is False, v
    assert ("DYAD_PROVIDER_GOOGLE_API_KEY names field 'api_key' of provider 'google' and a field of provider "
            "'google-api': read for neither") in gw.logs()
    assert "sk-google-canary" not in gw.logs()


def test_environment_variables_are_a_read_only_source(make_gateway):
    gw = make_gateway({"DYAD_PROVIDER_ENV_ONLY_API_KEY": "sk-from-env"}).start()
    p = data(gw.call("POST", "/admin/providers", json=provider_body(slug="env-only")), 201)
    v = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "environment"
    assert v["fingerprint"] == keyed_fingerprint(gw, {"api_key": "sk-from-env"})


def test_rotate_while_eight_clients_read(gateway):
    old, new = {"api_key": canary()}, {"api_key": canary()}
    p = create_provider(gateway, "openai", old)
    allowed = {keyed_fingerprint(gateway, old), keyed_fingerprint(gateway, new)}
    failures, seen = [], set()
    stop = threading.Event()

    def reader():
        import requests
        s = requests.Session()
        while not stop.is_set():
            r = s.post(f"{gateway.url}/admin/secrets/providers/{p['id']}/credentials/validate",
                       headers={"Authorization": f"Bearer {ADMIN_TOKEN}"}, timeout=30)
            body = r.json()
            if r.status_code != 200 or not body["data"]["valid"] or body["data"]["fingerprint"] not in allowed:
                failures.append(r.text)
            else:
                seen.add(body["data"]["fingerprint"])

    threads = [threading.Thread(target=reader) for _ in range(8)]
    for t in threads:
        t.start()
    try:
        for i in range(20):
            creds = new if i % 2 == 0 else old
            data(gateway.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": creds}))
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert failures == []
    assert seen == allowed
    v = data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["fingerprint"] == keyed_fingerprint(gateway, old) and v["credentialsVersion"] == 21


def test_health_test_connection_clear_cache(gateway):
    h = data(gateway.call("GET", "/admin/secrets/health"))
    assert h["status"] == "healthy" and h["provider"] == "environment" and h["cacheEnabled"] is True
    assert h["lastChecked"].endswith("Z") and h["keyManager"]["primaryVersion"] == 1
    t = data(gateway.call("POST", "/admin/secrets/test-connection"))
    assert t["connected"] is True
    assert [s["step"] for s in t["steps"]] == ["key.wrap", "store.write", "store.read", "key.unwrap", "store.delete"]
    assert all(s["ok"] and s["latencyMs"] >= 0 for s in t["steps"])
    c = data(gateway.call("POST", "/admin/secrets/clear-cache"))
    assert c["cleared"] == 0


def test_cache_fills_on_read_and_clear_cache_counts(gateway):
    a = create_provider(gateway, "openai", {"api_key": canary()})
    b = create_provider(gateway, "other", {"api_key": canary()})
    validate = lambda p: data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert validate(a)["source"] == "store"
    assert validate(a)["source"] == "cache"
    validate(b)
    assert data(gateway.call("GET", "/admin/secrets/health"))["cacheSize"] == 2
    assert data(gateway.call("POST", "/admin/secrets/clear-cache"))["cleared"] == 2
    assert validate(a)["source"] == "store"
    metrics = gateway.call("GET", "/metrics").text
    assert "dyad_cache_hits_total 1" in metrics
    audit = (gateway.data_dir / "audit.log").read_text()
    assert '"action":"cache.clear"' in audit


def test_cache_disabled_reads_the_store(make_gateway):
    gw = make_gateway({"SECRETS_CACHE_ENABLED": "false"}).start()
    p = create_provider(gw, "openai", {"api_key": canary()})
    for _ in range(2):
        v = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
        assert v["source"] == "store"
    h = data(gw.call("GET", "/admin/secrets/health"))
    assert h["cacheEnabled"] is False and h["cacheSize"] == 0


def test_canary_never_in_clear_anywhere(gateway):
    secret = canary()
    rotated = canary()
    p = create_provider(gateway, "openai", {"api_key": secret})
    responses = []
    for method, path, body in [
        ("GET", f"/admin/providers/{p['id']}", None), ("GET", "/admin/providers", None),
        ("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate", None),
        ("POST", f"/admin/providers/{p['id']}/credentials/rotate", {"credentials": {"api_key": rotated}}),
        ("PUT", f"/admin/providers/{p['id']}", {"credentials": {"api_key": secret}}),
        ("GET", "/admin/secrets/health", None), ("POST", "/admin/secrets/test-connection", None),
        ("GET", "/metrics", None),
    ]:
        responses.append(gateway.call(method, path, json=body).text)
    bad = gateway.call("POST", "/admin/providers", json=provider_body(slug="Bad Slug", credentials={"api_key": secret}))
    responses.append(bad.text)
    gateway.stop()
    everything = "\n".join(responses) + gateway.logs()
    for f in pathlib.Path(gateway.data_dir).rglob("*"):
        if f.is_file():
            everything += f.read_bytes().decode("latin-1")
    for value in (secret, rotated):
        assert value not in everything
    assert "secret.put" in (gateway.data_dir / "audit.log").read_text()


def test_audit_verify_detects_edits(gateway, tmp_path):
    create_provider(gateway, "openai", {"api_key": canary()})
    gateway.call("POST", "/admin/secrets/clear-cache")
    gateway.stop()
    log = gateway.data_dir / "audit.log"
    ok = subprocess.run([BINARY, "audit", "verify", str(log)], env=gateway.env(), capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    lines = log.read_text().splitlines()
    assert len(lines) >= 3
    actors = [line for line in lines if '"actor":"admin"' in line]
    edited = tmp_path / "edited.log"
    edited.write_text("\n".join(lines).replace(actors[0], actors[0].replace('"actor":"admin"', '"actor":"eve"'), 1) + "\n")
    r = subprocess.run([BINARY, "audit", "verify", str(edited)], env=gateway.env(), capture_output=True, text=True)
    assert r.returncode != 0 and f"line {lines.index(actors[0]) + 1}" in r.stderr
    removed = tmp_path / "removed.log"
    removed.write_text("\n".join(lines[:1] + lines[2:]) + "\n")
    r = subprocess.run([BINARY, "audit", "verify", str(removed)], env=gateway.env(), capture_output=True, text=True)
    assert r.returncode != 0 and "line 2" in r.stderr


def test_fingerprint_is_keyed_per_deployment(make_gateway):
    """Item 13: the same credentials give one fingerprint on a deployment (every instance on its database, across
    restarts) and another on another deployment; never the plain SHA-256 prefix a guess could be checked against."""
    creds = {"api_key": canary()}
    one = make_gateway(name="one").start()
    beside = make_gateway({"GATEWAY_DATABASE_URL": f"sqlite://{one.data_dir / 'gateway.db'}"}, name="beside").start()
    other = make_gateway(name="other").start()
    p = create_provider(one, "openai", creds)
    q = create_provider(other, "openai", creds)
    fp = validate(one, p["id"])["fingerprint"]
    assert len(fp) == 16 and fp != fingerprint(creds)
    assert validate(beside, p["id"])["fingerprint"] == fp  # a second instance on the same database agrees
    assert validate(other, q["id"])["fingerprint"] != fp
    one.restart()
    assert validate(one, p["id"])["fingerprint"] == fp == keyed_fingerprint(one, creds)


def test_a_rolled_back_secret_is_refused_as_tampered(gateway):
    """Item 5: an old, validly sealed value put back in the store is refused, audited and counted, not served."""
    p = create_provider(gateway, "openai", {"api_key": canary()})
    name = f"dyad-gateway/providers/{p['id']}"
    db = gateway.data_dir / "gateway.db"
    with sqlite3.connect(db) as c:
        (old,) = c.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
    data(gateway.call("POST", f"/admin/providers/{p['id']}/credentials/rotate", json={"credentials": {"api_key": canary()}}))
    with sqlite3.connect(db) as c:
        assert c.execute("UPDATE secrets SET value=? WHERE name=?", (old, name)).rowcount == 1
    data(gateway.call("POST", "/admin/secrets/clear-cache"))
    v = validate(gateway, p["id"])
    check = {c["check"]: c for c in v["checks"]}["decryptable"]
    assert v["valid"] is False and not check["ok"] and "rollback" in check["message"], v
    assert 'dyad_secrets_tampered_total{reason="rollback"} 1' in gateway.call("GET", "/metrics").text
    audit = [json.loads(line) for line in (gateway.data_dir / "audit.log").read_text().splitlines()]
    assert [e for e in audit if e["action"] == "secret.tampered" and e.get("resource") == p["id"]]


def test_a_changed_key_id_is_a_start_up_error_naming_both(make_gateway):
    """Item 6: a keyring that did not seal the stored data stops the start, instead of a healthy service whose every
    read fails."""
    gw = make_gateway({"ENCRYPTION_KEY_ID": "keyring-one"}).start()
    create_provider(gw, "openai", {"api_key": canary()})
    gw.stop()
    gw.env_extra["ENCRYPTION_KEY_ID"] = "keyring-two"
    with pytest.raises(RuntimeError) as failed:
        gw.start()
    assert "'keyring-one'" in str(failed.value) and "'keyring-two'" in str(failed.value), failed.value
    assert gw.proc.wait(timeout=20) != 0
    gw.env_extra["ENCRYPTION_KEY_ID"] = "keyring-one"
    gw.start()
    assert data(gw.call("GET", "/admin/secrets/health"))["status"] == "healthy"


def test_a_recreated_keyring_is_a_start_up_error(make_gateway):
    """Item 6: the same key id over a keyring that did not seal the stored data (here: its versions deleted, so a new
    random version 1 is made) stops the start instead of serving a service whose every read fails."""
    gw = make_gateway().start()
    create_provider(gw, "openai", {"api_key": canary()})
    gw.stop()
    with sqlite3.connect(gw.data_dir / "gateway.db") as c:
        c.execute("DELETE FROM key_versions")
    c.close()
    with pytest.raises(RuntimeError) as failed:
        gw.start()
    assert "does not unwrap the data keys" in str(failed.value), failed.value
