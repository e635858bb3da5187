"""Secrets core through the API: stored externally, validate, rotate under load, canary, audit."""
import pathlib
import subprocess
import threading

from conftest import ADMIN_TOKEN, BINARY, canary, create_provider, data, fingerprint, provider_body


def test_credentials_stored_externally_then_valid_after_restart(gateway):
    p = create_provider(gateway, "openai", {"api_key": canary(), "organization": "org-1"})
    assert p["credentials"] == {"api_key": "[STORED_EXTERNALLY]", "organization": "[STORED_EXTERNALLY]"}
    gateway.restart()
    v = data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "store"
    assert all(c["ok"] for c in v["checks"])
    assert v["credentialsVersion"] == 1


def test_validate_reports_missing_required_field(gateway):
    p = create_provider(gateway, "proxy-a", {"token": "t-1"})
    v = data(gateway.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is False
    failed = [c for c in v["checks"] if not c["ok"]]
    assert failed and failed[0]["check"] == "required_fields" and "api_key" in failed[0]["message"]


def test_environment_variables_are_a_read_only_source(make_gateway):
    gw = make_gateway({"DYAD_PROVIDER_ENV_ONLY_API_KEY": "sk-from-env"}).start()
    p = data(gw.call("POST", "/admin/providers", json=provider_body(slug="env-only")), 201)
    v = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] is True and v["source"] == "environment"
    assert v["fingerprint"] == fingerprint({"api_key": "sk-from-env"})


def test_rotate_while_eight_clients_read(gateway):
    old, new = {"api_key": canary()}, {"api_key": canary()}
    p = create_provider(gateway, "openai", old)
    allowed = {fingerprint(old), fingerprint(new)}
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
    assert v["fingerprint"] == fingerprint(old) and v["credentialsVersion"] == 21


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
