"""Operations: orphaned secrets (reported at start, removed by `secrets gc`), file modes, secret variables
leaving the process, and a CLI that never turns into dev mode (issue 9 items 4, 7, 10)."""
import concurrent.futures
import datetime
import os
import pathlib
import random
import sqlite3
import stat
import subprocess
import signal
import threading
import time

import pytest
import requests

from conftest import ADMIN_TOKEN, BINARY, canary, create_provider, data, provider_body

PREFIX = "dyad-gateway/providers/"


def cli(gw, *args, env=None):
    return subprocess.run([BINARY, *args], env=env or gw.env(), capture_output=True, text=True, timeout=120)


def iso(delta):
    t = datetime.datetime.now(datetime.timezone.utc) + delta
    return t.strftime("%Y-%m-%dT%H:%M:%S.000Z")


def put_orphan(gw, provider_id, age):
    """A stored secret without a provider row, last changed `age` ago (as a failed compensation leaves it)."""
    with sqlite3.connect(gw.data_dir / "gateway.db", timeout=30) as db:
        db.execute("INSERT INTO secrets(name, value, updated_at) VALUES(?,?,?)",
                   (PREFIX + provider_id, '{"v":1}', iso(-age)))


def stored(gw):
    with sqlite3.connect(gw.data_dir / "gateway.db", timeout=30) as db:
        return {row[0][len(PREFIX):] for row in db.execute("SELECT name FROM secrets WHERE name LIKE ?",
                                                            (PREFIX + "%",))}


# --- item 4: no automatic deletion ---------------------------------------------------------------------------

def test_start_and_cli_commands_only_report_orphans(gateway):
    kept = create_provider(gateway, "kept", {"api_key": canary()})
    put_orphan(gateway, "ghost", datetime.timedelta(hours=5))
    assert cli(gateway, "secrets", "rotation-status").returncode == 0
    assert "ghost" in stored(gateway), "a CLI command deleted a secret at start"
    gateway.restart()
    assert "ghost" in stored(gateway), "the server deleted a secret at start"
    assert data(gateway.call("GET", "/admin/secrets/health"))["orphanedSecrets"] == 1
    assert "1 stored secret(s) have no provider row" in gateway.logs()
    assert stored(gateway) == {"ghost", kept["id"]}


def test_gc_deletes_orphans_older_than_the_grace(gateway):
    kept = create_provider(gateway, "kept", {"api_key": canary()})
    put_orphan(gateway, "old", datetime.timedelta(hours=2))
    put_orphan(gateway, "recent", datetime.timedelta(minutes=20))

    dry = cli(gateway, "secrets", "gc", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    assert PREFIX + "old  would delete" in dry.stdout and PREFIX + "recent  too young" in dry.stdout
    assert "dry run, nothing deleted" in dry.stdout
    assert stored(gateway) == {"old", "recent", kept["id"]}

    run = cli(gateway, "secrets", "gc")  # default grace: 1 h
    assert run.returncode == 0, run.stderr
    assert "1 deleted, 1 kept, 0 failed; grace 1h" in run.stdout
    assert stored(gateway) == {"recent", kept["id"]}

    run = cli(gateway, "secrets", "gc", "--older-than", "10m")
    assert run.returncode == 0 and "1 deleted" in run.stdout
    assert stored(gateway) == {kept["id"]}
    assert '"action":"secret.delete"' in (gateway.data_dir / "audit.log").read_text()
    assert data(gateway.call("POST", f"/admin/secrets/providers/{kept['id']}/credentials/validate"))["valid"]

    for bad in ("1x", "h", "", "-5m"):
        r = cli(gateway, "secrets", "gc", "--older-than", bad)
        assert r.returncode != 0 and "--older-than" in r.stderr, bad


def test_gc_beside_a_creating_server_loses_no_secret(gateway):
    """A server creates providers while `secrets gc --older-than 0s` and other CLI commands start beside it."""
    put_orphan(gateway, "old", datetime.timedelta(hours=2))
    created, errors = [], []
    stop = threading.Event()

    def create_loop(worker):
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        i = 0
        while not stop.is_set() or i < 20:
            r = s.post(gateway.url + "/admin/providers",
                       json=provider_body(slug=f"w{worker}-{i}", credentials={"api_key": canary()}), timeout=30)
            if r.status_code == 201:
                created.append(r.json()["data"]["id"])
            else:
                errors.append(r.text)
            i += 1

    with concurrent.futures.ThreadPoolExecutor(2) as ex:
        loops = [ex.submit(create_loop, w) for w in range(2)]
        runs = [cli(gateway, "secrets", "gc", "--older-than", "0s") for _ in range(4)]
        runs.append(cli(gateway, "secrets", "rotation-status"))
        stop.set()
        for f in loops:
            f.result()
    assert errors == []
    for r in runs:
        assert r.returncode == 0, r.stderr
    assert "grace raised from 0s to 1m" in runs[0].stderr
    assert "old" not in stored(gateway)  # an orphan older than the grace does go
    assert len(created) >= 40
    missing = set(created) - stored(gateway)
    assert not missing, f"{len(missing)} created provider(s) lost their secret"
    gateway.restart()
    for pid in created:
        v = data(gateway.call("POST", f"/admin/secrets/providers/{pid}/credentials/validate"))
        assert v["valid"] and v["source"] == "store", v


# --- item 7: files and memory --------------------------------------------------------------------------------

def modes(gw):
    paths = [gw.data_dir / n for n in ("gateway.db", "gateway.db-wal", "gateway.db-shm", "audit.log",
                                       "dev-encryption-key", "dev-admin-token")]
    out = {p.name: stat.S_IMODE(os.stat(p).st_mode) for p in paths if p.exists()}
    out["."] = stat.S_IMODE(os.stat(gw.data_dir).st_mode)
    return out


@pytest.mark.parametrize("dev", [False, True], ids=["prod", "dev"])
def test_files_are_owner_only_in_every_mode(make_gateway, dev):
    extra = {"ENCRYPTION_KEY": None} if dev else {}
    gw = make_gateway(extra, args=("serve", "--dev") if dev else ("serve",))
    os.chmod(gw.data_dir, 0o755)  # as an operator (or an older build) made it
    gw.start()
    create_provider(gw, "p", {"api_key": canary()})
    m = modes(gw)
    assert {"gateway.db", "gateway.db-wal", "audit.log"} <= set(m)
    if dev:
        assert "dev-encryption-key" in m
    assert m == {name: (0o700 if name == "." else 0o600) for name in m}, m

    gw.stop()
    for name in m:  # files an older build left 0644 (the WAL is gone after a clean stop)
        if (gw.data_dir / name).exists():
            os.chmod(gw.data_dir / name, 0o755 if name == "." else 0o644)
    gw.start()
    create_provider(gw, "q", {"api_key": canary()})
    m = modes(gw)
    assert m == {name: (0o700 if name == "." else 0o600) for name in m}, m


def test_cli_files_are_owner_only(make_gateway):
    gw = make_gateway()
    r = cli(gw, "secrets", "rotation-status")  # the first command on a fresh data dir creates the database
    assert r.returncode == 0, r.stderr
    m = modes(gw)
    assert "gateway.db" in m
    assert m == {name: (0o700 if name == "." else 0o600) for name in m}, m


def test_secret_variables_leave_the_process_environment(make_gateway):
    fallback = canary()
    key = "cd" * 32
    gw = make_gateway({"ENCRYPTION_KEY": key, "DYAD_PROVIDER_OPENAI_API_KEY": fallback})
    gw.start()
    environ = open(f"/proc/{gw.proc.pid}/environ", "rb").read()
    for value in (fallback, key, ADMIN_TOKEN):
        assert value.encode() not in environ
    assert b"GATEWAY_DATA_DIR=" in environ  # the others stay
    # The DYAD_PROVIDER_* fallback still works, from its SecretBytes copy.
    p = data(gw.call("POST", "/admin/providers", json=provider_body(slug="openai")), 201)
    v = data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))
    assert v["valid"] and v["source"] == "environment", v


# --- item 10: the CLI never turns into dev mode ----------------------------------------------------------------

@pytest.mark.parametrize("command", [("secrets", "verify"), ("secrets", "rotate"), ("secrets", "rotation-status"),
                                     ("secrets", "gc"), ("secrets", "rotate", "--dry-run")])
def test_cli_configuration_error_generates_nothing(tmp_path, command):
    data_dir = tmp_path / "prod"
    data_dir.mkdir()
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(data_dir), "GATEWAY_ADMIN_API_KEY": ADMIN_TOKEN}
    r = subprocess.run([BINARY, *command], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0
    assert "configuration error" in r.stderr and "ENCRYPTION_KEY" in r.stderr, r.stderr
    assert list(data_dir.iterdir()) == [], "the CLI wrote into the data dir"

    bad = subprocess.run([BINARY, *command], env={**env, "ENCRYPTION_KEY": "ab" * 32, "GATEWAY_PORT": "http"},
                         capture_output=True, text=True, timeout=60)
    assert bad.returncode != 0 and "GATEWAY_PORT" in bad.stderr, bad.stderr
    assert list(data_dir.iterdir()) == []


def test_cli_dev_flag_reads_the_dev_key_and_never_makes_one(make_gateway, tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    r = subprocess.run([BINARY, "secrets", "verify", "--dev"], env={"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(empty)},
                       capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "serve --dev" in r.stderr, r.stderr
    assert list(empty.iterdir()) == []

    gw = make_gateway({"ENCRYPTION_KEY": None}, args=("serve", "--dev")).start()
    create_provider(gw, "p", {"api_key": canary()})
    gw.stop()
    env = {"PATH": "/usr/bin:/bin", "GATEWAY_DATA_DIR": str(gw.data_dir)}
    r = subprocess.run([BINARY, "secrets", "verify", "--dev"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "1 open, 0 failed" in r.stdout, r.stderr
    r = subprocess.run([BINARY, "secrets", "verify"], env=env, capture_output=True, text=True, timeout=60)
    assert r.returncode != 0 and "ENCRYPTION_KEY" in r.stderr


# --- the same over AWS Secrets Manager (moto) ------------------------------------------------------------------

def test_aws_orphans_reported_kept_while_young_and_secret_key_not_in_environ(make_gateway, tmp_path):
    from aws_peers import Moto
    from test_aws import aws_gateway
    moto = Moto(tmp_path / "moto")
    try:
        gw = aws_gateway(make_gateway, moto)
        environ = open(f"/proc/{gw.proc.pid}/environ", "rb").read()
        assert gw.env()["AWS_SECRET_ACCESS_KEY"].encode() not in environ
        p = create_provider(gw, "p", {"api_key": canary()})  # signed with the secret key it no longer has in environ
        sm = moto.client("secretsmanager")
        ghost = f"{gw.prefix}/providers/ghost"
        sm.create_secret(Name=ghost, SecretString="{}")

        r = cli(gw, "secrets", "gc", "--older-than", "0s")
        assert r.returncode == 0, r.stderr
        assert f"{ghost}  too young" in r.stdout and "grace 1m" in r.stdout
        assert "DeletedDate" not in sm.describe_secret(SecretId=ghost)
        gw.restart()
        assert data(gw.call("GET", "/admin/secrets/health"))["orphanedSecrets"] == 1
        assert "DeletedDate" not in sm.describe_secret(SecretId=ghost)
        assert data(gw.call("POST", f"/admin/secrets/providers/{p['id']}/credentials/validate"))["valid"]
    finally:
        moto.stop()


def test_gc_beside_a_create_stalled_between_its_secret_and_its_row(gateway):
    """The server is stopped (SIGSTOP) at arbitrary moments of a stream of creates, some of them after a secret was
    written and before its row: `secrets gc --older-than 0s` run meanwhile must leave every such secret alone."""
    created, errors = [], []
    stop = threading.Event()

    def create_loop():
        s = requests.Session()
        s.headers["Authorization"] = f"Bearer {ADMIN_TOKEN}"
        i = 0
        while not stop.is_set():
            r = s.post(gateway.url + "/admin/providers",
                       json=provider_body(slug=f"s-{i}", credentials={"api_key": canary()}), timeout=60)
            (created if r.status_code == 201 else errors).append(r.json()["data"]["id"] if r.status_code == 201
                                                                 else r.text)
            i += 1

    with concurrent.futures.ThreadPoolExecutor(1) as ex:
        loop = ex.submit(create_loop)
        seen_orphan = 0
        for _ in range(40):
            done = len(created)
            while len(created) == done and loop.running():  # the server made progress since the last stop
                time.sleep(0.0005)
            time.sleep(random.uniform(0, 0.004))  # jitter: where in the next create the stop lands
            gateway.proc.send_signal(signal.SIGSTOP)
            try:
                r = cli(gateway, "secrets", "gc", "--older-than", "0s")
            finally:
                gateway.proc.send_signal(signal.SIGCONT)
            if r.returncode != 0 and "database is locked" in r.stderr:
                continue  # stopped inside a write transaction: the CLI cannot open the database; no verdict
            assert r.returncode == 0, r.stderr
            seen_orphan += any(line.endswith(("  too young", "  deleted")) for line in r.stdout.splitlines())
        stop.set()
        loop.result()
    assert errors == []
    missing = set(created) - stored(gateway)
    assert not missing, f"{len(missing)} of {len(created)} created provider(s) lost their secret ({seen_orphan} stops " \
                        "caught a create between its secret and its row)"


def test_the_server_runs_on_tcmalloc_unless_built_without_it(make_gateway):
    # CMake's DYAD_TCMALLOC (default ON; BENCHMARKS.md: less CPU per /v1 request than glibc's malloc).
    cache = pathlib.Path(BINARY).parent / "CMakeCache.txt"
    if cache.exists() and "DYAD_TCMALLOC:BOOL=OFF" in cache.read_text():
        pytest.skip("built with -DDYAD_TCMALLOC=OFF")
    gw = make_gateway()
    gw.start()
    maps = open(f"/proc/{gw.proc.pid}/maps").read()
    assert "libtcmalloc_minimal.so" in maps
