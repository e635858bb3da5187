"""A throwaway PostgreSQL 15 on a free loopback port (DESIGN.md §10): initdb and pg_ctl run as the `postgres` user
(the tests run as root), trust authentication, no fsync. The data lives in its own directory under /tmp, because
pytest's tmp_path is mode 0700 and the postgres user could not enter it; stop() removes it."""
import os
import pathlib
import shutil
import subprocess
import tempfile

from aws_peers import free_port, wait_port

PG_BIN = pathlib.Path(os.environ.get("DYAD_PG_BIN", "/usr/lib/postgresql/15/bin"))


def as_postgres(command):
    if os.geteuid() == 0:
        return subprocess.run(["su", "postgres", "-c", command], check=True, capture_output=True, text=True)
    return subprocess.run(["sh", "-c", command], check=True, capture_output=True, text=True)


class Postgres:
    def __init__(self, port=None):
        if not (PG_BIN / "initdb").exists():
            raise RuntimeError(f"{PG_BIN}/initdb is missing: apt-get install postgresql-15")
        self.port = port or free_port()
        self.dir = pathlib.Path(tempfile.mkdtemp(prefix="dyad-pg-"))
        if os.geteuid() == 0:
            shutil.chown(self.dir, "postgres", "postgres")
        self.data = self.dir / "data"
        try:
            as_postgres(f"{PG_BIN}/initdb -D {self.data} -U postgres -A trust --no-sync")
            as_postgres(f"{PG_BIN}/pg_ctl -D {self.data} -l {self.dir}/pg.log -w "
                        f"-o '-k {self.dir} -h 127.0.0.1 -p {self.port} -F' start")
            wait_port(self.port, _Running(), "postgres")
        except BaseException:
            self.stop()  # a half-started server and its directory go too
            raise

    @property
    def dsn(self):
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres?sslmode=disable"

    def psql(self, sql):
        """Runs `sql` through psql as postgres; its output (unaligned, tuples only)."""
        return as_postgres(f"{PG_BIN}/psql -h 127.0.0.1 -p {self.port} -U postgres -d postgres -At -c \"{sql}\"").stdout

    def stop(self):
        if self.data.exists():
            subprocess.run(["su", "postgres", "-c", f"{PG_BIN}/pg_ctl -D {self.data} stop -m fast"]
                           if os.geteuid() == 0 else ["sh", "-c", f"{PG_BIN}/pg_ctl -D {self.data} stop -m fast"],
                           capture_output=True)
        shutil.rmtree(self.dir, ignore_errors=True)


class _Running:
    """wait_port's process stand-in: pg_ctl -w has already waited for the server."""

    def poll(self):
        return None
