"""The audit log proves completeness: a keyed chain whose head the registry keeps, one chain for several writers,
no operation on a secret while the log cannot be written, and a real duration on every line."""
import hashlib
import hmac
import http.client
import json
import resource
import sqlite3
import subprocess
import threading
import time

from conftest import ADMIN_TOKEN, BINARY, canary, create_provider, data
from test_aws import aws_gateway, moto  # noqa: F401 (the moto fixture)
from test_rotation import wait_idle


def verify(gw, path=None):
    args = [BINARY, "audit", "verify"] + ([str(path)] if path else [])
    return subprocess.run(args, env=gw.env(), capture_output=True, text=True, timeout=60)


def log_lines(gw):
    return (gw.data_dir / "audit.log").read_text().splitlines()


def some_history(gw, n=3):
    ids = [create_provider(gw, f"p{i}", {"api_key": canary()})["id"] for i in range(n)]
    for pid in ids:
        data(gw.call("POST", f"/admin/providers/{pid}/credentials/rotate", json={"credentials": {"api_key": canary()}}))
    data(gw.call("POST", "/admin/secrets/clear-cache"))
    return ids


def recompute(lines, key=None, keep=None):
    """What someone with the data dir but not the audit key can do: rewrite the chain, keyed with a guessed key,
    or as the old unkeyed SHA-256 chain."""
    out, prev = [], "0" * 64
    for seq, line in enumerate(lines[:keep] if keep else lines, 1):
        body = json.loads(line[:line.rindex(',"mac":"')] + "}")
        body["seq"], body["prev"] = seq, prev
        text = json.dumps(body, separators=(",", ":"))
        if key is None:
            digest = hashlib.sha256(text.encode()).hexdigest()
            out.append(text[:-1] + ',"hash":"' + digest + '"}')
        else:
            digest = hmac.new(key, text.encode(), hashlib.sha256).hexdigest()
            out.append(text[:-1] + ',"mac":"' + digest + '"}')
        prev = digest
    return out


def test_removed_tail_is_reported(gateway):
    some_history(gateway)
    gateway.stop()
    ok = verify(gateway)
    assert ok.returncode == 0, ok.stderr
    lines = log_lines(gateway)
    (gateway.data_dir / "audit.log").write_text("\n".join(lines[:-2]) + "\n")
    r = verify(gateway)
    assert r.returncode == 1, r.stdout
    assert f"line {len(lines) - 1}" in r.stderr and "the last 2 line(s) were removed" in r.stderr, r.stderr
    # With the database in hand too, the head pointed at the new last line: its seal needs the key.
    last = json.loads(lines[-3])
    db = sqlite3.connect(gateway.data_dir / "gateway.db")
    db.execute("UPDATE audit_head SET seq=?, mac=?", (last["seq"], last["mac"]))
    db.commit()
    db.close()
    r = verify(gateway)
    assert r.returncode == 1 and "not sealed under the audit key" in r.stderr, r.stderr


def test_recomputed_chain_is_reported(gateway):
    some_history(gateway)
    gateway.stop()
    log = gateway.data_dir / "audit.log"
    lines = log.read_text().splitlines()
    master = bytes.fromhex(gateway.env()["ENCRYPTION_KEY"])
    for forged in (recompute(lines, key=None),               # the old unkeyed chain
                   recompute(lines, key=master),             # keyed with the master key itself
                   recompute(lines, key=b"\0" * 32),          # keyed with a guess
                   recompute(lines, key=master, keep=len(lines) - 1)):  # shortened and re-chained
        log.write_text("\n".join(forged) + "\n")
        r = verify(gateway)
        assert r.returncode == 1, (r.stdout, forged[0])
        assert "line " in r.stderr, r.stderr


def test_server_and_cli_rotate_keep_one_chain(gateway):
    ids = some_history(gateway, n=5)
    stop = threading.Event()
    answers = []

    def churn():
        i = 0
        while not stop.is_set():
            pid = ids[i % len(ids)]
            r = gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                             json={"credentials": {"api_key": canary()}})
            answers.append(r.status_code)
            i += 1

    threads = [threading.Thread(target=churn) for _ in range(2)]
    for t in threads:
        t.start()
    try:
        for _ in range(2):
            while len(answers) < 20:
                time.sleep(0.01)
            cli = subprocess.run([BINARY, "secrets", "rotate"], env=gateway.env(), capture_output=True, text=True,
                                 timeout=120)
            # Whether the run completes is not this test's matter (a server sealing under a version the CLI
            # retired is item 3's); that both processes append to one chain is.
            assert cli.returncode in (0, 1) and "progress" in cli.stdout, (cli.stdout, cli.stderr)
            before = len(answers)
            while len(answers) < before + 20:  # the server writes after the CLI too
                time.sleep(0.01)
    finally:
        stop.set()
        for t in threads:
            t.join()
    assert set(answers) == {200}
    gateway.stop()
    events = [json.loads(line) for line in log_lines(gateway)]
    assert sum(1 for e in events if e["action"] == "key.rotate" and e["actor"] == "cli") == 2
    assert [e["seq"] for e in events] == list(range(1, len(events) + 1))
    r = verify(gateway)
    assert r.returncode == 0, r.stderr


def test_file_size_limited_log_refuses_then_recovers(gateway):
    pid = create_provider(gateway, "openai", {"api_key": canary()})["id"]
    log = gateway.data_dir / "audit.log"
    # The audit log can grow by no more than 200 bytes: less than any
    # operation may need.
    resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (log.stat().st_size + 200, resource.RLIM_INFINITY))
    try:
        r = gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                         json={"credentials": {"api_key": canary()}})
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "SERVICE_UNAVAILABLE"
        assert gateway.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate").status_code == 503
        assert gateway.call("DELETE", f"/admin/providers/{pid}").status_code == 503
        # Spellings of /v1 are refused by the router as /v1's are (400, OpenAI's shape), none taken for a write.
        # (http.client sends a path as written; requests would resolve the dot segments.)
        # An admin path's spelling waits for the log as the admin path does (503).
        for path, status, shape in (("//v1/chat/completions", 400, "error"), ("/./v1/chat/completions", 400, "error"),
                                    ("/v1/../admin/providers", 400, "error"), ("//admin/providers", 503, "status")):
            conn = http.client.HTTPConnection("127.0.0.1", gateway.port, timeout=10)
            conn.request("POST", path, b'{"model": "m"}', {"Authorization": f"Bearer {ADMIN_TOKEN}",
                                                           "Content-Type": "application/json"})
            answer = conn.getresponse()
            body = json.loads(answer.read())
            conn.close()
            assert answer.status == status and list(body)[0] == shape, (path, answer.status, body)
        assert data(gateway.call("GET", f"/admin/providers/{pid}"))["credentialsVersion"] == 1  # nothing happened
    finally:
        resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    rotated = data(gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                                json={"credentials": {"api_key": canary()}}))
    assert rotated["credentialsVersion"] == 2
    assert data(gateway.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))["valid"] is True
    gateway.stop()
    assert any('"action":"credentials.rotate"' in line for line in log_lines(gateway))
    r = verify(gateway)
    assert r.returncode == 0, r.stderr


def test_log_without_headroom_is_reported_by_health_and_readyz(gateway):
    """Security review, finding 1: while the audit log cannot take a line (past its headroom: RLIMIT_FSIZE or a
    nearly full disk) every write gets 503; health and /readyz say so too, and recover with it."""
    pid = create_provider(gateway, "openai", {"api_key": canary()})["id"]
    log = gateway.data_dir / "audit.log"
    assert gateway.call("GET", "/readyz").status_code == 200
    assert data(gateway.call("GET", "/admin/secrets/health"))["auditLogHealthy"] is True
    resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (log.stat().st_size + 200, resource.RLIM_INFINITY))
    try:
        assert gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                            json={"credentials": {"api_key": canary()}}).status_code == 503
        r = gateway.call("GET", "/readyz")
        assert r.status_code == 503, r.text
        assert "audit log" in r.json()["error"]["message"]
        health = gateway.call("GET", "/admin/secrets/health").json()
        health = health.get("data", health)
        assert health["auditLogHealthy"] is False, health
        assert health["status"] != "healthy", health
    finally:
        resource.prlimit(gateway.proc.pid, resource.RLIMIT_FSIZE, (resource.RLIM_INFINITY, resource.RLIM_INFINITY))
    assert gateway.call("GET", "/readyz").status_code == 200
    assert data(gateway.call("GET", "/admin/secrets/health"))["auditLogHealthy"] is True
    rotated = data(gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate",
                                json={"credentials": {"api_key": canary()}}))
    assert rotated["credentialsVersion"] == 2


def test_duration_is_real_for_every_action(gateway):
    pid = some_history(gateway, n=1)[0]
    data(gateway.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))
    run = data(gateway.call("POST", "/admin/secrets/key-rotation/perform", json={"force": True}), 202)
    deadline = time.time() + 30
    while time.time() < deadline:
        status = data(gateway.call("GET", "/admin/secrets/key-rotation/status"))
        if not status.get("inProgress"):
            break
        time.sleep(0.05)
    gateway.stop()
    events = [json.loads(line) for line in log_lines(gateway)]
    seen = {}
    for e in events:
        seen.setdefault(e["action"], []).append(e["durationMs"])
    for action in ("provider.create", "credentials.rotate", "credentials.validate", "key.rotate", "cache.clear"):
        assert action in seen, (action, run, sorted(seen))
        assert all(ms > 0 for ms in seen[action]), (action, seen[action])


def test_audit_key_survives_rotations_that_retire_its_version(gateway):
    pid = some_history(gateway, n=2)[0]
    gateway.stop()
    for _ in range(3):  # each run makes a new primary and retires the versions no secret uses
        cli = subprocess.run([BINARY, "secrets", "rotate"], env=gateway.env(), capture_output=True, text=True,
                             timeout=120)
        assert cli.returncode == 0, (cli.stdout, cli.stderr)
    status = subprocess.run([BINARY, "secrets", "rotation-status"], env=gateway.env(), capture_output=True, text=True)
    assert "v3 -> v4" in status.stdout, status.stdout
    gateway.start()
    # The log opens its key again: operations are not refused, and the chain goes on.
    data(gateway.call("POST", f"/admin/providers/{pid}/credentials/rotate", json={"credentials": {"api_key": canary()}}))
    gateway.stop()
    r = verify(gateway)
    assert r.returncode == 0, r.stderr


def test_kms_wrapped_audit_key_survives_a_rotation_that_retires_its_version(make_gateway, moto):
    gw = aws_gateway(make_gateway, moto)
    pids = [create_provider(gw, f"p-{i}", {"api_key": canary()})["id"] for i in range(2)]
    data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)
    assert wait_idle(gw)["history"][0]["status"] == "completed"
    h = data(gw.call("GET", "/admin/secrets/health"))
    assert [v["state"] for v in h["keyManager"]["versions"]] == ["retired", "active"]
    db = sqlite3.connect(gw.data_dir / "gateway.db")
    assert db.execute("SELECT kind, key_version FROM audit_key").fetchall() == [("aws-kms", 2)]
    db.close()
    gw.restart()  # unwraps the audit key again through KMS
    assert data(gw.call("POST", f"/admin/secrets/providers/{pids[0]}/credentials/validate"))["valid"] is True
    gw.stop()
    r = verify(gw)
    assert r.returncode == 0, r.stderr
