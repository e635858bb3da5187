"""Issue 13: metrics, alert rules and dashboard, debug and JSON logs, cache warming (black box)."""
import json
import pathlib
import re
import shutil
import subprocess
import time

import pytest

from conftest import ROOT, canary, create_provider, data

VALIDATE = "/admin/secrets/providers/{}/credentials/validate"
RULES = ROOT / "deploy" / "prometheus" / "dyad-gateway-alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "dyad-gateway-dashboard.json"
# Only a cloud backend (AWS, Vault, Azure) makes these: the Vault test below scrapes them live.
CLOUD_ONLY = {"dyad_cloud_calls_total", "dyad_cloud_retries_total", "dyad_cloud_throttles_total"}


def scrape(gw):
    r = gw.call("GET", "/metrics", token=None)
    assert r.status_code == 200, r.text
    return r.text


def value(text, series):
    """The value of one exact series line (`name{labels}`), or None."""
    for line in text.splitlines():
        if line.startswith(series + " "):
            return float(line.rsplit(" ", 1)[1])
    return None


def read(gw, pid):
    return data(gw.call("POST", VALIDATE.format(pid)))["source"]


def wait_rotation(gw, timeout=60):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = data(gw.call("GET", "/admin/secrets/key-rotation/status"))
        if st["inProgress"] is None and st["history"] and st["history"][0]["status"] != "running":
            return st["history"][0]
        time.sleep(0.05)
    raise AssertionError("rotation did not finish")


def exercise(gw, secret):
    """A provider written, read from the store then the cache, and one key rotation."""
    p = create_provider(gw, "obs-" + secret[-6:].lower(), {"api_key": secret})
    assert read(gw, p["id"]) == "store"
    assert read(gw, p["id"]) == "cache"
    data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    assert wait_rotation(gw)["status"] == "completed"
    return p


def test_metrics_move_with_reads_requests_and_rotations(gateway):
    before = scrape(gateway)
    for series in ('dyad_credential_read_seconds_count{source="cache"}',
                   'dyad_credential_read_seconds_count{source="store"}',
                   'dyad_key_rotations_total{outcome="completed"}',
                   'dyad_key_rotation_secrets_total{outcome="reencrypted"}'):
        assert value(before, series) == 0, series
    assert value(before, "dyad_key_rotation_last_success_timestamp_seconds") == 0
    assert value(before, "dyad_key_primary_version") == 1
    # Buckets that resolve a cache hit (100 ns) and a slow store (10 s).
    assert 'dyad_credential_read_seconds_bucket{source="cache",le="1e-07"}' in before
    assert 'dyad_credential_read_seconds_bucket{source="cache",le="10"}' in before

    p = exercise(gateway, canary())
    after = scrape(gateway)
    assert value(after, 'dyad_credential_read_seconds_count{source="cache"}') >= 1
    assert value(after, 'dyad_credential_read_seconds_count{source="store"}') >= 1
    assert value(after, 'dyad_key_rotations_total{outcome="completed"}') == 1
    assert value(after, 'dyad_key_rotation_duration_seconds_count{outcome="completed"}') == 1
    assert value(after, 'dyad_key_rotation_secrets_total{outcome="reencrypted"}') >= 1
    assert value(after, 'dyad_key_rotation_secrets_total{outcome="failed"}') == 0
    assert abs(value(after, "dyad_key_rotation_last_success_timestamp_seconds") - time.time()) < 300
    assert value(after, "dyad_key_primary_version") == 2
    assert value(after, "dyad_key_max_encryptions") == 4294967295
    assert value(after, "dyad_key_primary_encryptions") >= 1  # the rotation sealed under version 2
    route = 'dyad_http_request_duration_seconds_count{method="POST",route="/admin/secrets/providers/{id}/credentials/validate"}'
    assert value(after, route) == 2
    gateway.call("GET", "/admin/providers/" + p["id"] + "x")  # 404, but a known pattern
    gateway.call("GET", "/no/such/" + p["id"], token=None)
    after = scrape(gateway)
    assert value(after, 'dyad_http_request_duration_seconds_count{method="GET",route="/admin/providers/{id}"}') >= 1
    assert value(after, 'dyad_http_request_duration_seconds_count{method="other",route="unmatched"}') >= 1
    assert p["id"] not in after  # no ids in labels, ever


def metric_names(text):
    return set(re.findall(r"\bdyad_[a-z_]+\b", text))


def scraped_names(text):
    names = set()
    for line in text.splitlines():
        if line and not line.startswith("#"):
            names.add(re.match(r"[a-zA-Z_:][a-zA-Z0-9_:]*", line).group(0))
    return names


def test_alert_rules_pass_promtool_and_every_metric_they_and_the_dashboard_name_is_served(gateway):
    promtool = shutil.which("promtool")
    assert promtool, "promtool missing: scripts/install-deps.sh --test installs Debian's prometheus package"
    check = subprocess.run([promtool, "check", "rules", str(RULES)], capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 10 rules found" in check.stdout
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    referenced = metric_names(RULES.read_text()) | metric_names("\n".join(exprs))
    for alert in ("DyadKeyRotationFailed", "DyadCacheHitRateLow", "DyadSecretStoreErrorRateHigh", "DyadFallbackInUse",
                  "DyadKeyWearHigh"):
        assert alert in RULES.read_text()
    exercise(gateway, canary())
    served = scraped_names(scrape(gateway))
    missing = sorted(n for n in referenced - CLOUD_ONLY if n not in served)
    assert missing == [], missing
    assert len(referenced) >= 20


def test_debug_log_has_backend_cache_and_rotation_lines_and_no_value(gateway):
    secret = canary()
    p = exercise(gateway, secret)
    log = gateway.logs()
    assert re.search(r"backend call: store\.create secret=\S*" + p["id"] + r" status=OK duration_ms=[0-9.]+", log)
    assert re.search(r"backend call: store\.get secret=\S*" + p["id"] + r" status=OK duration_ms=", log)
    assert re.search(r"backend call: keys\.decrypt secret=\S*" + p["id"] + r" status=OK", log)
    assert re.search(r"cache miss: provider=" + p["id"] + r" source=store status=OK", log)
    assert "cache hit: provider=" + p["id"] in log
    assert re.search(r"key rotation batch: run=\S+ to_version=2 secrets=1 .* reencrypted=1 skipped=0 failed=0", log)
    assert secret not in log
    assert secret[-12:] not in log


def test_json_log_format_is_one_object_per_line(make_gateway):
    gw = make_gateway({"GATEWAY_LOG_FORMAT": "json"}).start()
    secret = canary()
    p = exercise(gw, secret)
    gw.call("GET", '/admin/providers/"quoted\\path', token=None)  # a message with quotes and a backslash
    gw.stop()
    lines = [l for l in gw.logs().splitlines() if l.strip()]
    assert lines
    parsed = [json.loads(l) for l in lines]  # every line parses
    for j in parsed:
        assert {"ts", "level", "logger", "msg"} <= j.keys()
    hits = [j for j in parsed if j["msg"].startswith("cache hit:")]
    assert hits and hits[0]["level"] == "debug" and hits[0]["attrs"]["provider"] == p["id"]
    calls = [j for j in parsed if j["msg"].startswith("backend call: store.get") and p["id"] in j["msg"]]
    assert calls and calls[0]["attrs"]["status"] == "OK" and float(calls[0]["attrs"]["duration_ms"]) >= 0
    assert secret not in gw.logs()


def test_bad_log_format_is_refused_naming_the_variable(make_gateway):
    gw = make_gateway({"GATEWAY_LOG_FORMAT": "xml"})
    with pytest.raises(RuntimeError):
        gw.start()
    assert "GATEWAY_LOG_FORMAT" in gw.stdout + gw.logs()


def wait_warm(gw, loaded, timeout=30):
    deadline = time.time() + timeout
    while time.time() < deadline:
        text = scrape(gw)
        if value(text, "dyad_cache_warming") == 0 and value(text, 'dyad_cache_warm_loads_total{outcome="ok"}') >= loaded:
            return text
        time.sleep(0.05)
    raise AssertionError("cache warming did not finish: " + scrape(gw))


def test_cache_warming_makes_the_first_read_a_hit_at_start_and_after_clear_cache(make_gateway):
    seeding = make_gateway(name="data").start()
    ids = [create_provider(seeding, f"warm-{i}", {"api_key": canary()})["id"] for i in range(6)]
    seeding.stop()
    gw = make_gateway({"SECRETS_CACHE_WARM": "true", "SECRETS_CACHE_WARM_BLOCKS_READY": "true"}, name="data").start()
    wait_warm(gw, 6)
    assert gw.call("GET", "/readyz", token=None).status_code == 200
    assert [read(gw, i) for i in ids] == ["cache"] * 6
    cleared = data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert cleared["cleared"] == 6 and cleared["warming"] is True
    wait_warm(gw, 12)
    assert read(gw, ids[0]) == "cache"
    assert "cache warming: 6 of 6 provider(s) loaded" in gw.logs()


def test_without_warming_the_first_read_is_a_miss(make_gateway):
    gw = make_gateway().start()
    pid = create_provider(gw, "cold", {"api_key": canary()})["id"]
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    assert read(gw, pid) == "store"
    assert value(scrape(gw), 'dyad_cache_warm_loads_total{outcome="ok"}') == 0


def test_cache_warming_stops_at_the_cache_size(make_gateway):
    seeding = make_gateway(name="data").start()
    for i in range(5):
        create_provider(seeding, f"size-{i}", {"api_key": canary()})
    seeding.stop()
    gw = make_gateway({"SECRETS_CACHE_WARM": "true", "SECRETS_CACHE_MAX_SIZE": "3"}, name="data").start()
    text = wait_warm(gw, 3)
    assert value(text, 'dyad_cache_warm_loads_total{outcome="ok"}') == 3  # never evicts what it loaded
    assert value(text, "dyad_cache_entries") == 3
    assert value(text, 'dyad_cache_warm_loads_total{outcome="error"}') == 0


def test_warming_setting_is_checked(make_gateway):
    gw = make_gateway({"SECRETS_CACHE_WARM": "maybe"})
    with pytest.raises(RuntimeError):
        gw.start()
    assert "SECRETS_CACHE_WARM" in gw.stdout + gw.logs()


def test_on_vault_every_cloud_metric_is_served_and_each_attempt_has_a_debug_line_without_token(make_gateway, tmp_path):
    from vault_peers import Bao
    from test_vault import vault_gateway
    bao = Bao(tmp_path)
    try:
        gw = vault_gateway(make_gateway, bao)
        secret = canary()
        p = create_provider(gw, "vault-obs", {"api_key": secret})
        assert read(gw, p["id"]) == "store"
        text = scrape(gw)
        served = scraped_names(text)
        assert CLOUD_ONLY <= served, sorted(CLOUD_ONLY - served)
        assert re.search(r'dyad_cloud_calls_total\{endpoint="127\.0\.0\.1:\d+",op="[^"]+",outcome="ok"\} [1-9]', text)
        log = gw.logs()
        assert re.search(r"backend call: endpoint=127\.0\.0\.1:\d+ op=\S+ attempt=1 status=200 duration_ms=[0-9.]+",
                         log)
        assert re.search(r"backend call: keys\.seal secret=\S*" + p["id"] + " status=OK", log)
        assert secret not in log and gw.token not in log
    finally:
        bao.stop()


def test_an_envelope_failing_its_auth_tag_is_counted_as_an_integrity_refusal(gateway):
    import base64
    import sqlite3
    p = create_provider(gateway, "tamper", {"api_key": canary()})
    name = f"dyad-gateway/providers/{p['id']}"
    db = gateway.data_dir / "gateway.db"
    with sqlite3.connect(db) as c:
        (value_text,) = c.execute("SELECT value FROM secrets WHERE name=?", (name,)).fetchone()
        env = json.loads(value_text)
        ct = bytearray(base64.b64decode(env["ct"]))
        ct[0] ^= 0x01  # one bit of the ciphertext: the GCM tag no longer matches
        env["ct"] = base64.b64encode(bytes(ct)).decode()
        assert c.execute("UPDATE secrets SET value=? WHERE name=?", (json.dumps(env, separators=(",", ":")), name)).rowcount == 1
    assert value(scrape(gateway), 'dyad_secrets_tampered_total{reason="integrity"}') == 0
    data(gateway.call("POST", "/admin/secrets/clear-cache"))
    v = data(gateway.call("POST", VALIDATE.format(p["id"])))
    assert v["valid"] is False
    assert value(scrape(gateway), 'dyad_secrets_tampered_total{reason="integrity"}') == 1


def test_unknown_paths_and_methods_add_no_metric_series(gateway):
    """Route labels are the router's patterns: a client's paths and methods cannot grow /metrics (memory)."""
    def series(text):
        return {l.split(" ")[0] for l in text.splitlines() if l.startswith("dyad_http_request_duration_seconds")}

    gateway.call("GET", "/healthz", token=None)
    gateway.call("GET", "/no-such-path-0", token=None)
    gateway.call("PURGE", "/healthz", token=None)
    scrape(gateway)  # /metrics' own series
    before = series(scrape(gateway))
    for i in range(1, 60):
        gateway.call("GET", f"/no-such-path-{i}", token=None)
        gateway.call(f"X{i}", f"/admin/providers/{canary()}", token=None)
        gateway.call("GET", f"/admin/providers/{canary()}")  # a matched route: the id is not a label
    text = scrape(gateway)
    grown = series(text) - before - {s for s in series(text) if 'route="/admin/providers/{id}"' in s}
    assert grown == set(), sorted(grown)[:5]
    assert "no-such-path" not in text and 'method="X1"' not in text


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_debug_logs_never_hold_a_bearer_token(make_gateway, fmt):
    from conftest import ADMIN_TOKEN
    gw = make_gateway({"GATEWAY_LOG_FORMAT": fmt}).start()
    wrong = canary()
    p = create_provider(gw, "tok", {"api_key": canary()})
    read(gw, p["id"])
    gw.call("GET", "/admin/providers", token=wrong)
    gw.call("POST", "/admin/secrets/clear-cache", token=wrong, json={})
    gw.call("GET", "/admin/providers", headers={"Authorization": "Basic " + wrong}, token=None)
    gw.stop()
    log = gw.logs()
    assert "debug" in log
    for needle in (ADMIN_TOKEN, wrong, "Authorization", "Bearer "):
        assert needle not in log, needle
