"""Start-up with standard fds closed: a gateway exec'd with fd 0, 1 or 2 closed must not hand that number to its
database or audit log, where every log line written to "stderr" would then land (start-up hardening L5)."""
import json
import os
import socket
import sqlite3
import subprocess
import time

import pytest
import requests

from conftest import BINARY, Gateway, canary, create_provider, data
from test_cluster import pg_database  # noqa: F401 (a fixture)

LOG_TEXT = b"dyad-gateway listening on"  # the warn line every start logs


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_healthy(url, proc, timeout=20):
    deadline = time.time() + timeout
    while time.time() < deadline:
        assert proc.poll() is None, f"the gateway exited: rc={proc.returncode}"
        try:
            r = requests.get(url + "/healthz", timeout=5)
            if r.status_code == 200:
                return
        except requests.ConnectionError:
            pass
        time.sleep(0.05)
    raise AssertionError("the gateway never answered /healthz")


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request):
    """The gateway's extra environment and arguments. SQLite keeps its own files off fds 0-2 (it opens /dev/null
    onto them); nothing does that for PostgreSQL's sockets or the audit log."""
    if request.param == "sqlite":
        return {"ENCRYPTION_KEY": None}, ("serve", "--dev")
    url, _ = request.getfixturevalue("pg_database")
    return {"GATEWAY_DATABASE_URL": url}, ("serve",)


@pytest.mark.parametrize("closed", [(2,), (0, 2), (0, 1, 2)], ids=["stderr", "stdin+stderr", "all"])
def test_closed_standard_fds_never_become_the_database_or_audit_log(tmp_path, database, closed):
    extra, args = database
    gw = Gateway(tmp_path / "data", extra, args=args)
    gw.port = free_port()  # stdout may be closed: the port is chosen, not read from "listening on"
    env = gw.env()
    env["GATEWAY_PORT"] = str(gw.port)

    def close_fds():
        for fd in closed:
            os.close(fd)

    proc = subprocess.Popen([BINARY, *gw.args], env=env, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            preexec_fn=close_fds)
    try:
        wait_healthy(gw.url, proc)
        for fd in closed:  # what a log line written to "stderr" (or a printf to stdout) reaches
            assert os.readlink(f"/proc/{proc.pid}/fd/{fd}") == "/dev/null", f"fd {fd}"
        # Log lines (debug level) and audit lines while the database and the audit log are open.
        created = create_provider(gw, "closedfds", {"api_key": canary()})
        assert data(gw.call("GET", f"/admin/providers/{created['id']}"))["slug"] == "closedfds"
        assert gw.call("GET", "/admin/providers", token="wrong-token-0123456789").status_code == 401
        assert requests.get(gw.url + "/healthz", timeout=5).status_code == 200
    finally:
        proc.terminate()
        rc = proc.wait(timeout=30)
    assert rc == 0

    for path in gw.data_dir.iterdir():
        assert LOG_TEXT not in path.read_bytes(), f"log lines were written into {path.name}"
    if "GATEWAY_DATABASE_URL" not in extra:
        with sqlite3.connect(gw.data_dir / "gateway.db") as db:
            assert db.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
            assert db.execute("SELECT slug FROM providers").fetchall() == [("closedfds",)]
    lines = (gw.data_dir / "audit.log").read_text().splitlines()
    assert any(json.loads(line)["action"] == "provider.create" for line in lines)
    verify = subprocess.run([BINARY, "audit", "verify", *args[1:]], env=env, capture_output=True, text=True,
                            timeout=60)
    assert verify.returncode == 0, verify.stderr
