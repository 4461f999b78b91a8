"""A real PostgreSQL server for tests (Debian's `postgresql` package: /usr/lib/postgresql/<ver>/bin):
`initdb` into a temporary folder, `postgres` on a free loopback port with password (scram) auth,
stopped by its PID. As root, the server runs as the unprivileged `postgres` user (or `nobody`):
PostgreSQL refuses to run as root."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from datetime import datetime, timedelta, timezone
from pathlib import Path

from .conftest import free_port

START = datetime(2026, 1, 1, tzinfo=timezone.utc)


def find_postgres_bin() -> Path | None:
    found = sorted(glob.glob("/usr/lib/postgresql/*/bin/postgres"),
                   key=lambda p: int(Path(p).parts[-3]) if Path(p).parts[-3].isdigit() else 0)
    if found:
        return Path(found[-1]).parent
    on_path = shutil.which("initdb")
    return Path(on_path).parent if on_path else None


class Postgres:
    """One server: superuser `user` with `password`, a database `db`; `url()` without the password."""

    def __init__(self, bindir: Path, user: str = "trainer", password: str = "s3cret-pw", db: str = "insurance",
                 timeout: float = 60.0):
        self.bindir, self.user, self.password, self.db = bindir, user, password, db
        self.port = free_port()
        # Not under pytest's tmp_path: that is 0700 root's, and the server runs as another user.
        self.dir = Path(tempfile.mkdtemp(prefix="pg-test-"))
        self.data = self.dir / "data"
        self.log = self.dir / "postgres.log"
        pwfile = self.dir / "pw"
        pwfile.write_text(password + "\n")
        self._as = []
        if os.geteuid() == 0:
            name = "postgres" if _user_exists("postgres") else "nobody"
            entry = pwd.getpwnam(name)
            for p in (self.dir, pwfile):
                os.chown(p, entry.pw_uid, entry.pw_gid)
            self._as = ["runuser", "-u", name, "--"]
        self.dir.chmod(0o700)
        subprocess.run([*self._as, str(bindir / "initdb"), "-D", str(self.data), "-U", user, "--pwfile", str(pwfile),
                        "--auth=scram-sha-256", "-E", "UTF8", "--locale=C", "--no-sync"],
                       check=True, capture_output=True, text=True)
        pwfile.unlink()
        logf = open(self.log, "w")
        if self._as:
            os.chown(self.log, pwd.getpwnam(self._as[2]).pw_uid, -1)
        self.process = subprocess.Popen(
            [*self._as, str(bindir / "postgres"), "-D", str(self.data), "-p", str(self.port), "-h", "127.0.0.1",
             "-k", str(self.dir), "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "max_connections=20"],
            stdout=logf, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while not self._ready():
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"postgres did not start:\n{self.log.read_text()[-3000:]}")
            time.sleep(0.2)
        subprocess.run([str(bindir / "psql"), "-h", "127.0.0.1", "-p", str(self.port), "-U", user, "-d", "postgres",
                        "-v", "ON_ERROR_STOP=1", "-c", f"CREATE DATABASE {db}"],
                       check=True, capture_output=True, env={**os.environ, "PGPASSWORD": password})

    def _ready(self) -> bool:
        r = subprocess.run([str(self.bindir / "pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)],
                           capture_output=True)
        return r.returncode == 0

    def url(self, with_password: bool = False, driver: str = "postgresql") -> str:
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"{driver}://{auth}@127.0.0.1:{self.port}/{self.db}"

    @property
    def pid(self) -> int | None:
        """The postmaster's PID, from its postmaster.pid file."""
        try:
            return int((self.data / "postmaster.pid").read_text().split()[0])
        except (OSError, ValueError, IndexError):
            return None

    def stop(self) -> None:
        """Fast shutdown (SIGINT) of the postmaster by its PID; SIGKILL after 20 s."""
        pid = self.pid
        if pid is not None and self.process.poll() is None:
            os.kill(pid, signal.SIGINT)
        try:
            self.process.wait(20)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        shutil.rmtree(self.dir, ignore_errors=True)


def _user_exists(name: str) -> bool:
    try:
        pwd.getpwnam(name)
        return True
    except KeyError:
        return False


def load_into(pg: Postgres, table: str, df, vertical, *, primary_key: bool = True, start=START) -> None:
    """CREATE TABLE with the vertical's columns (+ row_id, quoted_at one hour apart) and COPY the rows."""
    import psycopg

    cols = []
    for f in vertical.features:
        cols.append(f'"{f.name}" double precision' if f.kind == "numeric" else f'"{f.name}" text')
    pk = " PRIMARY KEY" if primary_key else ""
    ddl = (f"CREATE TABLE {table} (row_id bigint{pk}, quoted_at timestamptz NOT NULL, {', '.join(cols)}, "
           f'"{vertical.target}" integer NOT NULL)')
    names = ["row_id", "quoted_at", *vertical.feature_names, vertical.target]
    with psycopg.connect(pg.url(with_password=True)) as conn:
        conn.execute(f"DROP TABLE IF EXISTS {table}")
        conn.execute(ddl)
        with conn.cursor().copy(f"COPY {table} ({', '.join(chr(34) + n + chr(34) for n in names)}) FROM STDIN") as cp:
            for i, row in enumerate(df.itertuples(index=False)):
                values = [None if (isinstance(v, float) and v != v) else v for v in row]
                cp.write_row([i, start + timedelta(hours=i), *values])
