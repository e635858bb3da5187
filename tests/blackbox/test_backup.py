"""Backup and restore (issue 13): an online snapshot of gateway.db taken while the service writes, restored onto a
fresh machine layout (a new data dir, the same master key), where every credential opens and every provider
acknowledged before the backup started is present; and what a backup and a restore refuse."""
import os
import pathlib
import sqlite3
import stat
import subprocess
import threading
import time

import requests

from conftest import BINARY, Gateway, canary, create_provider, data, provider_body


def run(*args, data_dir, **extra):
    """A CLI command with only the storage variables (and `extra`): backup and restore need no key or token."""
    env = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "GATEWAY_DATA_DIR": str(data_dir), **extra}
    return subprocess.run([BINARY, *args], env=env, capture_output=True, text=True, timeout=120)


def listed_ids(gw):
    ids, offset = set(), 0
    while True:
        page = data(gw.call("GET", f"/admin/providers?limit=500&offset={offset}"))
        ids |= {p["id"] for p in page["items"]}
        offset += len(page["items"])
        if not page["items"] or offset >= page["total"]:
            return ids


def mode(path):
    return stat.S_IMODE(os.stat(path).st_mode)


def test_backup_beside_a_writer_restores_on_a_fresh_layout(make_gateway, tmp_path):
    gw = make_gateway().start()
    acked = []  # (id, acknowledged before the backup started)
    backup_started = threading.Event()
    stop = threading.Event()
    for i in range(20):
        acked.append((create_provider(gw, f"seed-{i}", {"api_key": canary()})["id"], True))

    errors = []

    def writer():
        n = 0
        while not stop.is_set():
            r = gw.call("POST", "/admin/providers", json=provider_body(slug=f"w-{n}", credentials={"api_key": canary()}))
            if r.status_code != 201:
                errors.append(r.text)
                return
            # Acknowledged before the backup started only if the event is still clear once the answer is in.
            acked.append((r.json()["data"]["id"], not backup_started.is_set()))
            n += 1

    thread = threading.Thread(target=writer)
    thread.start()
    while len(acked) < 40 and thread.is_alive():
        time.sleep(0.01)
    out = tmp_path / "backups" / "gateway-backup.db"
    out.parent.mkdir()
    backup_started.set()
    r = run("backup", "--out", str(out), data_dir=gw.data_dir)  # no ENCRYPTION_KEY, no token
    during = len(acked)
    while len(acked) < during + 5 and thread.is_alive():  # the writer goes on after the snapshot
        time.sleep(0.01)
    stop.set()
    thread.join()
    assert not errors, errors
    assert r.returncode == 0, r.stderr
    assert "written to" in r.stdout
    assert mode(out) == 0o600
    assert sorted(os.listdir(out.parent)) == ["gateway-backup.db"]  # no temporary, no -wal beside it
    gw.stop()

    before = {pid for pid, was_before in acked if was_before}
    assert len(before) >= 40

    # A fresh machine: a new data dir that does not exist yet, the same master key.
    fresh = tmp_path / "machine2" / "data"
    r = run("restore", str(out), data_dir=fresh)
    assert r.returncode == 0, r.stderr
    assert mode(fresh) == 0o700 and mode(fresh / "gateway.db") == 0o600
    restored = Gateway(fresh)
    # As the README's recipe runs it: the master key, no admin token (the command serves nothing).
    offline = {k: v for k, v in restored.env().items() if k not in ("GATEWAY_ADMIN_API_KEY", "GATEWAY_ADMIN_TOKENS_FILE")}
    verify = subprocess.run([BINARY, "secrets", "verify"], env=offline, capture_output=True, text=True, timeout=120)
    assert verify.returncode == 0, verify.stdout + verify.stderr
    assert ", 0 failed" in verify.stdout
    restored.start()
    try:
        ids = listed_ids(restored)
        assert before <= ids, before - ids
        assert ids <= {pid for pid, _ in acked}
        some = sorted(before)[0]
        assert data(restored.call("POST", f"/admin/secrets/providers/{some}/credentials/validate"))["valid"] is True
    finally:
        restored.stop()

    # Without the master key the backup opens nothing.
    other_key = dict(restored.env(), ENCRYPTION_KEY="cd" * 32)
    verify = subprocess.run([BINARY, "secrets", "verify"], env=other_key, capture_output=True, text=True, timeout=120)
    assert verify.returncode != 0


def backup_of_a_small_gateway(make_gateway, tmp_path):
    gw = make_gateway().start()
    create_provider(gw, "openai", {"api_key": canary()})
    out = tmp_path / "b.db"
    r = run("backup", "--out", str(out), data_dir=gw.data_dir)
    assert r.returncode == 0, r.stderr
    return gw, out


def test_backup_never_replaces_a_file(make_gateway, tmp_path):
    gw, out = backup_of_a_small_gateway(make_gateway, tmp_path)
    first = out.read_bytes()
    r = run("backup", "--out", str(out), data_dir=gw.data_dir)
    assert r.returncode != 0
    assert str(out) in r.stderr and "already exists" in r.stderr
    assert out.read_bytes() == first


def test_restore_refuses_a_data_dir_that_is_not_empty(make_gateway, tmp_path):
    gw, out = backup_of_a_small_gateway(make_gateway, tmp_path)
    gw.stop()
    before = sorted(os.listdir(gw.data_dir))
    r = run("restore", str(out), data_dir=gw.data_dir)
    assert r.returncode != 0
    assert str(gw.data_dir) in r.stderr and "not empty" in r.stderr, r.stderr
    assert sorted(os.listdir(gw.data_dir)) == before
    # A single stray file is enough.
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("x")
    r = run("restore", str(out), data_dir=other)
    assert r.returncode != 0 and "notes.txt" in r.stderr
    assert os.listdir(other) == ["notes.txt"]


def test_restore_refuses_a_damaged_backup(make_gateway, tmp_path):
    gw, out = backup_of_a_small_gateway(make_gateway, tmp_path)
    damaged = {
        "truncated": out.read_bytes()[: len(out.read_bytes()) // 2],
        "garbage header": b"\x5a" * 100 + out.read_bytes()[100:],
        "not sqlite": b"these are not the bytes of a database\n" * 200,
    }
    for name, content in damaged.items():
        bad = tmp_path / (name.replace(" ", "-") + ".db")
        bad.write_bytes(content)
        target = tmp_path / ("fresh-" + name.replace(" ", "-"))
        r = run("restore", str(bad), data_dir=target)
        assert r.returncode != 0, name
        assert str(bad) in r.stderr, (name, r.stderr)
        assert not (target / "gateway.db").exists() and os.listdir(target) == [], name
    # The intact one restores.
    r = run("restore", str(out), data_dir=tmp_path / "fresh-intact")
    assert r.returncode == 0, r.stderr


def test_the_backup_file_alone_holds_every_table(make_gateway, tmp_path):
    """`cp` of a running gateway.db misses what sits in its WAL; the backup is one rollback-journal file."""
    gw, out = backup_of_a_small_gateway(make_gateway, tmp_path)
    with sqlite3.connect(f"file:{out}?mode=ro", uri=True) as db:
        tables = {row[0] for row in db.execute("SELECT name FROM sqlite_master WHERE type='table'")}
        assert {"providers", "secrets", "key_versions", "settings", "audit_key"} <= tables
        assert db.execute("SELECT COUNT(*) FROM providers").fetchone()[0] == 1
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "delete"
    assert not pathlib.Path(str(out) + "-wal").exists()


def test_backup_refuses_an_out_path_that_is_a_symlink(make_gateway, tmp_path):
    gw, out = backup_of_a_small_gateway(make_gateway, tmp_path)
    victim = tmp_path / "victim.txt"
    victim.write_text("keep me")
    cases = {"to a file": victim, "dangling": tmp_path / "nowhere" / "x.db"}
    for name, target in cases.items():
        link = tmp_path / (name.replace(" ", "-") + ".db")
        link.symlink_to(target)
        r = run("backup", "--out", str(link), data_dir=gw.data_dir)
        assert r.returncode != 0, name
        assert str(link) in r.stderr, (name, r.stderr)
        assert link.is_symlink(), name
    assert victim.read_text() == "keep me"
    assert not (tmp_path / "nowhere").exists()


def test_restore_refuses_a_backup_whose_schema_holds_a_trigger(make_gateway, tmp_path):
    """A trigger in the file would run inside the restored gateway on its writes (here: drop every new setting)."""
    gw, out = backup_of_a_small_gateway(make_gateway, tmp_path)
    crafted = tmp_path / "crafted.db"
    crafted.write_bytes(out.read_bytes())
    with sqlite3.connect(crafted) as db:
        db.execute("CREATE TRIGGER swallow AFTER INSERT ON settings BEGIN DELETE FROM settings; END")
    r = run("restore", str(crafted), data_dir=tmp_path / "fresh")
    assert r.returncode != 0
    assert str(crafted) in r.stderr and "'swallow'" in r.stderr, r.stderr
    assert os.listdir(tmp_path / "fresh") == []


def test_restore_refuses_a_database_path_with_a_leftover_wal(make_gateway, tmp_path):
    """GATEWAY_DATABASE_URL outside the data dir: a -wal left by a deleted database would be replayed over the restore."""
    gw, out = backup_of_a_small_gateway(make_gateway, tmp_path)
    db_dir = tmp_path / "db"
    db_dir.mkdir()
    wal = db_dir / "gateway.db-wal"
    wal.write_bytes(b"left by a database that was deleted after a crash")
    r = run("restore", str(out), data_dir=tmp_path / "fresh", GATEWAY_DATABASE_URL=f"sqlite://{db_dir}/gateway.db")
    assert r.returncode != 0
    assert str(wal) in r.stderr, r.stderr
    assert sorted(os.listdir(db_dir)) == ["gateway.db-wal"]
    wal.unlink()
    r = run("restore", str(out), data_dir=tmp_path / "fresh", GATEWAY_DATABASE_URL=f"sqlite://{db_dir}/gateway.db")
    assert r.returncode == 0, r.stderr


def test_a_restored_dev_data_dir_asks_for_its_key_and_makes_none(make_gateway, tmp_path):
    """`serve --dev` keeps its ENCRYPTION_KEY in the data dir's dev-encryption-key, which a backup does not hold. On a
    restored registry without it, a new key would open nothing (the start failed after printing a new admin token "shown
    once") and stay behind in the old key's place: the start is refused, naming the file, and nothing is generated; with
    the old file copied in, the restored gateway serves its credentials."""
    dev = {"ENCRYPTION_KEY": None, "GATEWAY_ADMIN_API_KEY": None, "GATEWAY_ADMIN_TOKENS_FILE": None}
    gw = make_gateway(dev, args=("serve", "--dev")).start()
    token = (gw.data_dir / "dev-admin-token").read_text().strip()
    pid = data(gw.call("POST", "/admin/providers", token=token,
                       json=provider_body(slug="restored", credentials={"api_key": canary()})), 201)["id"]
    out = tmp_path / "dev.db"
    assert run("backup", "--out", str(out), data_dir=gw.data_dir).returncode == 0
    gw.stop()

    fresh = tmp_path / "restored"
    r = run("restore", str(out), data_dir=fresh)
    assert r.returncode == 0, r.stderr
    restored = make_gateway(dev, args=("serve", "--dev"), name="restored")
    p = subprocess.run([BINARY, "serve", "--dev"], env=restored.env(), capture_output=True, text=True, timeout=60)
    assert p.returncode == 2, p.stdout + p.stderr
    assert "dev-encryption-key is missing" in p.stderr and "a backup does not hold it" in p.stderr, p.stderr
    assert "admin token" not in p.stdout, p.stdout
    assert sorted(os.listdir(fresh)) == ["gateway.db"]  # no key, no token made

    for name in ("dev-encryption-key", "dev-admin-token"):
        (fresh / name).write_bytes((gw.data_dir / name).read_bytes())
        os.chmod(fresh / name, 0o600)
    restored.start()
    v = data(restored.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate", token=token))
    assert v["valid"] is True, v
