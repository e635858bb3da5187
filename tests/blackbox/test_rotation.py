"""Key rotation through the API and the CLI: status, perform, toggle, kill -9 and resume, one at a time."""
import concurrent.futures
import contextlib
import datetime
import signal
import sqlite3
import subprocess
import time

import requests

from conftest import ADMIN_TOKEN, BINARY, canary, data, provider_body


def seed(gw, n, threads=4):
    def make(chunk):
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        for i in chunk:
            r = s.post(gw.url + "/admin/providers",
                       json=provider_body(slug=f"p-{i}", credentials={"api_key": f"sk-{i}-{canary()}"}), timeout=30)
            assert r.status_code == 201, r.text
    chunks = [range(k, n, threads) for k in range(threads)]
    with concurrent.futures.ThreadPoolExecutor(threads) as ex:
        list(ex.map(make, chunks))


def status(gw):
    return data(gw.call("GET", "/admin/secrets/key-rotation/status"))


def wait_idle(gw, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = status(gw)
        if st["inProgress"] is None and all(h["status"] != "running" for h in st["history"][:1]):
            return st
        time.sleep(0.05)
    raise AssertionError("rotation did not finish")


@contextlib.contextmanager
def writes_held(db_path):
    """Holds the database's write lock (BEGIN IMMEDIATE): a rotation in any process waits at its next write, so a run
    seen running inside stays running until the block ends. Keep the block short: writers give up after 5 s."""
    con = sqlite3.connect(db_path, timeout=30, isolation_level=None)
    try:
        con.execute("BEGIN IMMEDIATE")
        yield con
    finally:
        con.close()


def cli(gw, *args):
    return subprocess.run([BINARY, *args], env=gw.env(), capture_output=True, text=True, timeout=300)


def test_status_perform_history(gateway):
    seed(gateway, 20)
    st = status(gateway)
    assert st["enabled"] is False and st["nextRun"] is None
    assert st["schedule"] == "every 168h since the last successful rotation" and st["intervalHours"] == 168
    assert st["primaryKeyVersion"] == 1 and st["history"] == []
    run = data(gateway.call("POST", "/admin/secrets/key-rotation/perform", json={"force": False}), 202)
    assert run["resumed"] is False and run["force"] is False  # a fresh rotation, not a resume
    st = wait_idle(gateway)
    h = st["history"][0]
    assert h["id"] == run["id"] and h["trigger"] == "manual" and h["status"] == "completed"
    assert (h["fromKeyVersion"], h["toKeyVersion"]) == (1, 2)
    assert h["reencrypted"] == 20 and h["skipped"] == 0 and h["failed"] == 0
    assert h["startedAt"].endswith("Z") and h["finishedAt"].endswith("Z") and h["durationMs"] >= 0
    assert st["primaryKeyVersion"] == 2
    health = data(gateway.call("GET", "/admin/secrets/health"))
    assert [v["state"] for v in health["keyManager"]["versions"]] == ["retired", "active"]
    assert '"action":"key.rotate"' in (gateway.data_dir / "audit.log").read_text()


def test_perform_rejects_bad_bodies(gateway):
    r = gateway.call("POST", "/admin/secrets/key-rotation/perform", json={"force": "yes"})
    assert r.status_code == 400 and "force" in r.json()["error"]["message"]
    r = gateway.call("POST", "/admin/secrets/key-rotation/toggle", json={})
    assert r.status_code == 400 and "enabled" in r.json()["error"]["message"]
    r = gateway.call("POST", "/admin/secrets/key-rotation/toggle", data="{", headers={"Content-Type": "application/json"})
    assert r.status_code == 400


def test_toggle_survives_restart(make_gateway):
    gw = make_gateway({"KEY_ROTATION_SCHEDULE": "30 2 * * MON"}).start()
    assert status(gw)["enabled"] is False
    assert "overrides KEY_ROTATION_ENABLED" not in gw.logs()  # nothing stored yet
    t = data(gw.call("POST", "/admin/secrets/key-rotation/toggle", json={"enabled": True}))
    assert t["enabled"] is True and t["nextRun"].endswith("T02:30:00.000Z")
    gw.restart()
    st = status(gw)
    assert st["enabled"] is True and st["schedule"] == "30 2 * * MON" and st["intervalHours"] is None
    # the stored toggle now disagrees with KEY_ROTATION_ENABLED (unset: false), and the start says so
    assert "overrides KEY_ROTATION_ENABLED=false" in gw.logs()
    gw.stop()
    gw.env_extra["KEY_ROTATION_ENABLED"] = "false"  # the stored choice wins over the environment
    gw.start()
    assert status(gw)["enabled"] is True
    # and the start says so, naming both
    assert "key_rotation.enabled=true" in gw.logs() and "overrides KEY_ROTATION_ENABLED=false" in gw.logs()


def test_one_rotation_at_a_time_across_processes(make_gateway, tmp_path):
    shared = {"GATEWAY_DATA_DIR": str(tmp_path / "shared")}
    a = make_gateway(shared, name="a").start()
    b = make_gateway(shared, name="b").start()
    seed(a, 3000)
    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        results = list(ex.map(lambda gw: gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), [a, b]))
    codes = sorted(r.status_code for r in results)
    assert codes == [202, 409], [r.text for r in results]
    winner = next(r for r in results if r.status_code == 202).json()["data"]["id"]
    loser = next(r for r in results if r.status_code == 409).json()["error"]
    assert loser["code"] == "CONFLICT" and winner in loser["message"]
    # In one process too: with the run held between two writes, the winner refuses a second one.
    winner_gw = a if results[0].status_code == 202 else b
    with writes_held(tmp_path / "shared" / "gateway.db") as db:
        row = db.execute("SELECT status FROM rotation_runs WHERE id=?", (winner,)).fetchone()
        assert row == ("running",), f"the run was over before it could be held: {row}"
        again = winner_gw.call("POST", "/admin/secrets/key-rotation/perform", json={})
    assert again.status_code == 409, again.text
    assert again.json()["error"]["code"] == "CONFLICT" and winner in again.json()["error"]["message"]
    st = wait_idle(a)
    assert [(h["id"], h["status"]) for h in st["history"]] == [(winner, "completed")]


def test_kill_9_at_ten_points_then_resume(make_gateway):
    gw = make_gateway({"GATEWAY_LOG_LEVEL": "warn"}).start()
    seed(gw, 10000, threads=6)
    points = [0, 500, 1500, 2500, 3500, 4500, 5500, 6500, 8000, 9500]
    expected_version = 1
    for target in points:
        run = data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={}), 202)["id"]
        expected_version += 1
        while target:
            st = status(gw)
            prog = st["inProgress"]
            if prog is None or prog["done"] >= target:
                break
            time.sleep(0.002)
        gw.proc.send_signal(signal.SIGKILL)
        gw.proc.wait()
        gw.stop()
        gw.start()  # resumes by itself: no second trigger
        st = wait_idle(gw)
        latest = st["history"][0]
        assert latest["status"] == "completed", latest
        if latest["id"] != run:  # the kill landed before the run finished
            assert latest["trigger"] == "resumed"
            killed = next(h for h in st["history"] if h["id"] == run)
            assert killed["status"] == "interrupted" and latest["id"] in killed["error"]
        assert st["primaryKeyVersion"] == expected_version
        v = cli(gw, "secrets", "verify")
        assert v.returncode == 0 and "10000 secret(s): 10000 open, 0 failed" in v.stdout, v.stdout + v.stderr
    resumed = [h for h in status(gw)["history"] if h["trigger"] == "resumed"]
    assert len(resumed) >= 5


def test_cli_rotate_dry_run_and_status(make_gateway):
    gw = make_gateway().start()
    seed(gw, 12)
    gw.stop()
    dry = cli(gw, "secrets", "rotate", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert "key version 1: 12 secret(s)" in dry.stdout and "nothing was written" in dry.stdout
    run = cli(gw, "secrets", "rotate")
    assert run.returncode == 0, run.stderr
    assert "progress 12/12 to_visit=0 reencrypted=12 skipped=0 failed=0" in run.stdout
    assert "completed" in run.stdout
    st = cli(gw, "secrets", "rotation-status")
    assert st.returncode == 0 and "v1 -> v2" in st.stdout
    assert "schedule: every 168h since the last successful rotation" in st.stdout
    forced = cli(gw, "secrets", "rotate", "--force")
    assert forced.returncode == 0 and "v2 -> v3" in forced.stdout
    assert cli(gw, "secrets", "verify").returncode == 0


def iso_time(t):
    return t.strftime("%Y-%m-%dT%H:%M:%S.") + f"{t.microsecond // 1000:03d}Z"


def add_hours(iso, n):
    t = datetime.datetime.strptime(iso, "%Y-%m-%dT%H:%M:%S.%fZ") + datetime.timedelta(hours=n)
    return iso_time(t)


def hours_ago(n):
    return iso_time(datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(hours=n))


def test_an_interval_missed_while_down_runs_at_start(make_gateway):
    """KEY_ROTATION_INTERVAL_HOURS counts from the last successful rotation in the database: one older than the
    interval (the service was down) makes the next start rotate within seconds, and only once."""
    gw = make_gateway({"KEY_ROTATION_ENABLED": "true", "KEY_ROTATION_INTERVAL_HOURS": "24"}).start()
    seed(gw, 5)
    data(gw.call("POST", "/admin/secrets/key-rotation/perform", json={"force": False}), 202)
    st = wait_idle(gw)
    assert st["primaryKeyVersion"] == 2
    assert st["nextRun"][:19] == add_hours(st["history"][0]["finishedAt"], 24)[:19]  # to the second
    gw.stop()
    # Two days pass while it is down: the last success is 48 h old.
    with sqlite3.connect(gw.data_dir / "gateway.db") as con:
        con.execute("UPDATE rotation_runs SET started_at=?, finished_at=?", (hours_ago(48), hours_ago(48)))
    gw.start()
    deadline = time.time() + 20
    while time.time() < deadline and status(gw)["primaryKeyVersion"] != 3:
        time.sleep(0.2)
    st = wait_idle(gw)
    assert st["primaryKeyVersion"] == 3
    assert [h["trigger"] for h in st["history"]] == ["scheduled", "manual"]
    assert st["nextRun"][:19] == add_hours(st["history"][0]["finishedAt"], 24)[:19]
    gw.restart()  # a restart neither resets nor repeats it
    time.sleep(2)
    st = wait_idle(gw)
    assert st["primaryKeyVersion"] == 3 and len(st["history"]) == 2
