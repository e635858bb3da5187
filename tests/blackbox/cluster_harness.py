"""The cluster harness of the black-box tests and bench/cluster_bench.py (issue 14): a PostgreSQL server (the one at
DYAD_TEST_PG_URL, or a private one from scripts/pg-test-cluster.sh), a fresh database per test (or one shared SQLite
file), and N `serve` instances on it."""
import concurrent.futures
import contextlib
import hashlib
import hmac
import json
import os
import pathlib
import secrets as pysecrets
import shutil
import sqlite3
import subprocess
import tempfile
import time
import traceback
import urllib.parse

import pytest

from conftest import BINARY, ROOT, Gateway

PG_BIN = pathlib.Path(os.environ.get("DYAD_PG_BIN", "/usr/lib/postgresql/15/bin"))
PG_SCRIPT = ROOT / "scripts" / "pg-test-cluster.sh"
# Where a failed test's logs are kept: out of pytest's tmp dirs, which keep only the last three runs.
FAILED_TESTS_DIR = pathlib.Path(os.environ.get("DYAD_FAILED_TESTS_DIR", "/tmp/dyad-failed-tests"))


class PgServer:
    """A PostgreSQL server reached by `url` (its maintenance database); `dir` when this module started it (then it can
    be restarted and is stopped at the end)."""

    def __init__(self, url, dir=None):
        self.url, self.dir = url, dir
        self.log_path = pathlib.Path(dir, "pg.log") if dir else None

    @classmethod
    def start_private(cls):
        d = tempfile.mkdtemp(prefix="dyad-cluster-pg-")
        p = subprocess.run(["bash", str(PG_SCRIPT), "start", d], capture_output=True, text=True, timeout=120)
        if p.returncode != 0:
            shutil.rmtree(d, ignore_errors=True)
            raise RuntimeError(f"pg-test-cluster.sh start failed: {p.stderr[-2000:]}")
        return cls(p.stdout.strip(), d)

    def stop(self):
        if self.dir:
            subprocess.run(["bash", str(PG_SCRIPT), "stop", self.dir], capture_output=True, timeout=120)

    def restart(self):
        """pg_ctl restart -m fast (the server's options are kept in postmaster.opts): every connection is cut."""
        assert self.dir, "only a private server is restarted"
        cmd = f"'{PG_BIN}/pg_ctl' -D '{self.dir}/data' -l '{self.log_path}' -m fast -w -t 60 restart"
        argv = ["su", "postgres", "-s", "/bin/sh", "-c", cmd] if os.geteuid() == 0 else ["sh", "-c", cmd]
        p = subprocess.run(argv, capture_output=True, text=True, timeout=120)
        assert p.returncode == 0, p.stdout + p.stderr

    def psql(self, sql, url=None):
        p = subprocess.run([str(PG_BIN / "psql"), url or self.url, "-v", "ON_ERROR_STOP=1", "-At", "-c", sql],
                           capture_output=True, text=True, timeout=60)
        assert p.returncode == 0, p.stderr
        return p.stdout

    def database_url(self, name):
        u = urllib.parse.urlsplit(self.url)
        return urllib.parse.urlunsplit(u._replace(path="/" + name))


class Database:
    """The registry every instance of a test shares: a fresh PostgreSQL database, or one SQLite file."""

    def __init__(self, server, tmp_path):
        self.server = server
        if server is None:
            self.path = tmp_path / "shared" / "gateway.db"
            self.path.parent.mkdir()
            self.url = f"sqlite://{self.path}"
        else:
            self.name = "dyad_cluster_" + pysecrets.token_hex(6)
            server.psql(f"CREATE DATABASE {self.name}")
            self.url = server.database_url(self.name)

    def drop(self):
        if self.server is not None:
            self.server.psql(f"DROP DATABASE IF EXISTS {self.name} WITH (FORCE)")

    def setting(self, key):
        if self.server is None:
            db = sqlite3.connect(f"file:{self.path}?mode=ro", uri=True)
            try:
                (value,) = db.execute("SELECT value FROM settings WHERE key=?", (key,)).fetchone()
            finally:
                db.close()
            return value
        return self.server.psql(f"SELECT value FROM settings WHERE key='{key}'", url=self.url).strip()

    def keyed_fingerprint(self, credentials):
        """The validate fingerprint: HMAC-SHA-256 under the deployment's key in the settings table."""
        return self.keyed_fingerprints([credentials])[0]

    def keyed_fingerprints(self, many):
        """keyed_fingerprint of each credentials in `many`, the key read once."""
        key = bytes.fromhex(self.setting("validate.fingerprint_key"))
        texts = (json.dumps(c, sort_keys=True, separators=(",", ":"), ensure_ascii=False) for c in many)
        return [hmac.new(key, t.encode(), hashlib.sha256).hexdigest()[:16] for t in texts]


# --- the cluster -------------------------------------------------------------------------------------------------

class Cluster:
    """N `serve` instances: one ENCRYPTION_KEY and admin token (conftest.Gateway's), environment backend, their own
    ports and data dirs (audit log), one GATEWAY_DATABASE_URL."""

    def __init__(self, tmp_path, database, env=None):
        self.tmp_path, self.db = tmp_path, database
        self.env = {"GATEWAY_DATABASE_URL": database.url, "SECRETS_CACHE_TTL_SECONDS": "300",
                    "GATEWAY_LOG_LEVEL": "warn", **(env or {})}
        self.instances = []

    def start(self, n, env=None, together=True):
        """Starts n more instances, together (as an orchestrator would: the migrations must run once) or one after
        the other."""
        made = [Gateway(self.tmp_path / f"gw{len(self.instances) + i}", {**self.env, **(env or {})}) for i in range(n)]
        with concurrent.futures.ThreadPoolExecutor(n if together else 1) as ex:
            list(ex.map(lambda gw: gw.start(), made))
        self.instances += made
        return made

    def stop(self):
        for gw in self.instances:
            if gw.proc:
                gw.stop()  # a killed one too: its pipes are closed

    def cli(self, *args):
        return subprocess.run([BINARY, *args], env=self.instances[0].env(), capture_output=True, text=True,
                              timeout=600)


@contextlib.contextmanager
def logs_kept_on_failure(name, cluster, *extra):
    """On a failure out of the block (an assertion, a timeout, pytest.fail; not a skip): copies each instance's stderr
    and audit log, and the `extra` files (a PostgreSQL server's log), into FAILED_TESTS_DIR/<name>-<UTC time>/ with the
    failure's traceback, and names that directory on stdout and in the exception's notes. Copied while the instances
    still run: both logs are written line by line, unbuffered."""
    try:
        yield
    except (Exception, pytest.fail.Exception) as e:
        try:
            kept = _keep_logs(name, cluster, extra, e)
            note = f"logs kept in {kept}"
        except OSError as copy_error:
            note = f"logs not kept: {copy_error}"
        print(f"\n[{name}] {note}")
        e.add_note(note)
        raise


def _keep_logs(name, cluster, extra, failure):
    kept = FAILED_TESTS_DIR / f"{name}-{time.strftime('%Y%m%dT%H%M%SZ', time.gmtime())}"
    kept.mkdir(parents=True, exist_ok=True)
    index = []
    for gw in cluster.instances:
        audit = pathlib.Path(gw.env_extra.get("AUDIT_LOG_PATH") or gw.data_dir / "audit.log")
        for src, dst in ((gw.stderr_path, f"{gw.data_dir.name}-stderr.log"), (audit, f"{gw.data_dir.name}-audit.log")):
            if src.exists():
                shutil.copyfile(src, kept / dst)
        index.append(f"{gw.data_dir.name}: {gw.url} (pid {gw.proc.pid if gw.proc else None})")
    for path in extra:
        if path and pathlib.Path(path).exists():
            shutil.copyfile(path, kept / pathlib.Path(path).name)
    (kept / "instances.txt").write_text("\n".join(index) + "\n")
    (kept / "failure.txt").write_text("".join(traceback.format_exception(failure)))
    return kept
