"""Two processes on one data dir and database (issue 9 item 3): every instance writes under the live primary
key version, and registry updates are atomic read-modify-writes across instances."""
import concurrent.futures
import subprocess
import threading
import time

import requests

from conftest import ADMIN_TOKEN, BINARY, canary, create_provider, data, provider_body


def cli(gw, *args):
    return subprocess.run([BINARY, *args], env=gw.env(), capture_output=True, text=True, timeout=600)


def session():
    s = requests.Session()
    s.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
    return s


def wait_idle(gw, timeout=120):
    deadline = time.time() + timeout
    while time.time() < deadline:
        st = data(gw.call("GET", "/admin/secrets/key-rotation/status"))
        if st["inProgress"] is None and all(h["status"] != "running" for h in st["history"][:1]):
            return st
        time.sleep(0.05)
    raise AssertionError("rotation did not finish")


def test_writer_beside_rotations_in_another_process_loses_nothing(make_gateway, tmp_path):
    shared = {"GATEWAY_DATA_DIR": str(tmp_path / "shared"), "GATEWAY_LOG_LEVEL": "warn"}
    # Both start before any write: a start-up orphan sweep cannot race the creates.
    a = make_gateway(shared, name="a").start()
    b = make_gateway(shared, name="b").start()
    ids = [create_provider(b, f"seed-{i}", {"api_key": canary()})["id"] for i in range(100)]
    done = threading.Event()
    runs = []

    def rotate_in_another_process():
        while not done.is_set() or not runs:
            r = a.call("POST", "/admin/secrets/key-rotation/perform", json={})
            assert r.status_code == 202, r.text
            st = wait_idle(a)
            runs.append(st["history"][0])

    def write(chunk):
        s = session()
        for i in chunk:
            if i % 2:
                r = s.post(b.url + "/admin/providers",
                           json=provider_body(slug=f"b-{i}", credentials={"api_key": canary()}), timeout=60)
                assert r.status_code == 201, r.text
            else:
                r = s.post(f"{b.url}/admin/providers/{ids[i % len(ids)]}/credentials/rotate",
                           json={"credentials": {"api_key": canary()}}, timeout=60)
                assert r.status_code == 200, r.text

    rotator = threading.Thread(target=rotate_in_another_process)
    rotator.start()
    try:
        with concurrent.futures.ThreadPoolExecutor(4) as ex:
            list(ex.map(write, [range(k, 1000, 4) for k in range(4)]))
    finally:
        done.set()
        rotator.join()
    assert all(r["status"] == "completed" for r in runs), runs
    st = data(a.call("GET", "/admin/secrets/key-rotation/status"))
    assert st["primaryKeyVersion"] == 1 + len(runs)
    versions = data(a.call("GET", "/admin/secrets/health"))["keyManager"]["versions"]
    assert versions[0]["version"] == 1 and versions[0]["state"] == "retired", versions
    # B, never restarted, goes on writing after the last run retired the version it started with.
    write(range(1000, 1100))
    verify = cli(b, "secrets", "verify")
    total = 100 + 500 + 50
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert f"{total} secret(s): {total} open, 0 failed" in verify.stdout, verify.stdout
    a.stop()
    a.start()  # a process that starts now opens what B wrote
    s = session()
    for pid in ids[:20]:
        r = s.post(f"{a.url}/admin/secrets/providers/{pid}/credentials/validate", timeout=30)
        assert data(r)["valid"], r.text


def test_rotations_on_one_instance_and_renames_on_another_lose_no_write(make_gateway, tmp_path):
    shared = {"GATEWAY_DATA_DIR": str(tmp_path / "shared"), "GATEWAY_LOG_LEVEL": "warn"}
    a = make_gateway(shared, name="a").start()
    b = make_gateway(shared, name="b").start()
    pid = create_provider(a, "shared", {"api_key": canary()})["id"]
    rounds = 100

    def rename():
        s = session()
        for i in range(rounds):
            r = s.put(f"{a.url}/admin/providers/{pid}", json={"name": f"name-{i}"}, timeout=60)
            assert r.status_code == 200, r.text

    def rotate():
        s = session()
        for i in range(1, rounds + 1):
            creds = {"api_key": canary(), "org": "o"} if i % 2 else {"api_key": canary()}
            r = s.post(f"{b.url}/admin/providers/{pid}/credentials/rotate", json={"credentials": creds}, timeout=60)
            assert r.status_code == 200, r.text  # acknowledged

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        for f in [ex.submit(rename), ex.submit(rotate)]:
            f.result()
    for gw in (a, b):
        row = data(gw.call("GET", f"/admin/providers/{pid}"))
        assert row["credentialsVersion"] == 1 + rounds, row
        assert row["name"] == f"name-{rounds - 1}"
        # The last rotation (an even one) stored only api_key: the row names exactly the secret's fields.
        assert sorted(row["credentials"]) == ["api_key"], row["credentials"]
        v = data(gw.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))
        assert v["valid"] and v["credentialsVersion"] == 1 + rounds, v
