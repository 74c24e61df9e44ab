"""A private, real PostgreSQL server for tests (and anything else that needs one briefly).

    from tests.servers.postgres_server import postgres_server

    with postgres_server() as pg:
        db = pg.create_database()          # a fresh, empty database
        url = pg.url(db)                   # postgresql://logloop:PASSWORD@127.0.0.1:PORT/DB
        bare = pg.url(db, with_password=False)  # the password then goes separately: pg.password

Debian's `postgresql` package provides the server; when no initdb / pg_ctl lies under
/usr/lib/postgresql/*/bin, it is installed (`apt-get update`, then `apt-get install -y
postgresql`, which needs root). The server runs as a non-root user (`nobody` when we are
root; PostgreSQL refuses root), from a fresh data directory in a temporary folder, listening
only on 127.0.0.1 on a free port, with its unix socket in the same folder. Over TCP it asks
for the superuser's password (scram-sha-256), so tests exercise real authentication. It is
tuned for throwaway data (fsync off) and stopped (`pg_ctl stop -m fast`) and deleted on exit.

Any failure (no package and no way to install it, initdb or start failing) raises
PostgresUnavailable with the reason and the server's log: tests must fail on it, never skip.
"""

from __future__ import annotations

import contextlib
import glob
import os
import pwd
import secrets
import shutil
import subprocess
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from tests.servers.processes import apt_install, free_port

RUN_AS = "nobody"  # the OS user the server runs as, when we are root


class PostgresUnavailable(RuntimeError):
    """PostgreSQL could not be installed or started."""


def _bin_dir() -> Optional[Path]:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb and pg_ctl, if any."""
    found = []
    for d in glob.glob("/usr/lib/postgresql/*/bin"):
        path = Path(d)
        if (path / "initdb").is_file() and (path / "pg_ctl").is_file() and (path / "postgres").is_file():
            try:
                found.append((int(path.parent.name.split(".")[0]), path))
            except ValueError:
                continue
    return max(found)[1] if found else None


def ensure_installed(timeout_s: float = 900) -> Path:
    """The server's bin directory, installing Debian's postgresql first when it is missing."""
    return apt_install("postgresql", _bin_dir, PostgresUnavailable, "the PostgreSQL tests", timeout_s)


@dataclass
class PostgresServer:
    host: str
    port: int
    user: str         # the superuser
    password: str
    socket_dir: str
    data_dir: str
    log_path: str
    database: str = "postgres"  # the database made at start (postgres_server(database=...))

    def url(self, database: Optional[str] = None, with_password: bool = True, driver: str = "postgresql") -> str:
        """A URL for `database` (default: the one made at start); `driver` e.g. postgresql+psycopg2."""
        auth = f"{self.user}:{self.password}" if with_password else self.user
        return f"{driver}://{auth}@{self.host}:{self.port}/{database or self.database}"

    def connect(self, database: str = "postgres"):
        import psycopg2

        conn = psycopg2.connect(host=self.host, port=self.port, user=self.user, password=self.password,
                                dbname=database, connect_timeout=10)
        conn.autocommit = True
        return conn

    def execute(self, sql: str, params=None, database: str = "postgres") -> list:
        """Run one statement as the superuser (autocommit); rows, if it returns any."""
        conn = self.connect(database)
        try:
            with conn.cursor() as cur:
                cur.execute(sql, params)
                return cur.fetchall() if cur.description else []
        finally:
            conn.close()

    def create_database(self, name: Optional[str] = None) -> str:
        """A new empty database (a fresh random name unless given); returns its name."""
        name = name or "t_" + uuid.uuid4().hex[:16]
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        self.execute(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        if not name.replace("_", "").isalnum():
            raise ValueError(f"database name {name!r}: letters, digits and _ only")
        self.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')

    def log(self) -> str:
        try:
            return Path(self.log_path).read_text(errors="replace")
        except OSError:
            return ""


def _as_server_user(cmd: list[str]) -> list[str]:
    return ["runuser", "-u", RUN_AS, "--", *cmd] if os.geteuid() == 0 else cmd


def _run(cmd: list[str], what: str, log_path: Optional[Path] = None, timeout: float = 120) -> None:
    try:
        done = subprocess.run(_as_server_user(cmd), capture_output=True, text=True, timeout=timeout, cwd="/")
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise PostgresUnavailable(f"{what} failed: {exc}") from exc
    if done.returncode != 0:
        log = log_path.read_text(errors="replace")[-3000:] if log_path and log_path.exists() else ""
        raise PostgresUnavailable(f"{what} failed ({done.returncode}): {done.stdout[-1500:]}{done.stderr[-1500:]}\n{log}")


@contextlib.contextmanager
def postgres_server(database: str = "logloop", user: str = "logloop", password: Optional[str] = None,
                    settings: Optional[dict] = None) -> Iterator[PostgresServer]:
    """Install if needed, start a private server, make `database`, yield it; stop and delete it on exit.

    `settings`: extra postgresql.conf settings (name -> value, written as given).
    """
    bin_dir = ensure_installed()
    password = password or secrets.token_hex(16)
    root = Path(tempfile.mkdtemp(prefix="logloop-pg-"))
    data, sock, log_path, pwfile = root / "data", root / "socket", root / "server.log", root / "pwfile"
    started = False
    try:
        sock.mkdir()
        pwfile.write_text(password + "\n")
        if os.geteuid() == 0:
            uid, gid = pwd.getpwnam(RUN_AS).pw_uid, pwd.getpwnam(RUN_AS).pw_gid
            for path in (root, sock, pwfile):
                os.chown(path, uid, gid)
        root.chmod(0o700)
        _run([str(bin_dir / "initdb"), "-D", str(data), "-U", user, f"--pwfile={pwfile}", "--auth-local=trust",
              "--auth-host=scram-sha-256", "--encoding=UTF8", "--locale=C.UTF-8", "--no-sync"], "initdb")
        pwfile.unlink()
        conf = {
            "listen_addresses": "'127.0.0.1'", "unix_socket_directories": f"'{sock}'",
            "fsync": "off", "synchronous_commit": "off", "full_page_writes": "off",  # throwaway data
            "max_connections": "200", "shared_buffers": "32MB", "log_min_messages": "warning",
            **(settings or {}),
        }
        last_error: Optional[Exception] = None
        for _ in range(3):  # the free port may be taken between choosing and binding it
            port = free_port()
            with open(data / "postgresql.auto.conf", "a") as f:
                for name, value in {**conf, "port": str(port)}.items():
                    f.write(f"{name} = {value}\n")
            try:
                _run([str(bin_dir / "pg_ctl"), "-D", str(data), "-l", str(log_path), "-w", "-t", "60", "start"],
                     "pg_ctl start", log_path)
                started = True
                break
            except PostgresUnavailable as exc:
                last_error = exc
        if not started:
            raise last_error  # type: ignore[misc]
        server = PostgresServer(host="127.0.0.1", port=port, user=user, password=password, socket_dir=str(sock),
                                data_dir=str(data), log_path=str(log_path))
        deadline = time.monotonic() + 30
        while True:  # pg_ctl -w waits for the socket; make sure TCP with the password works too
            try:
                server.execute("SELECT 1")
                break
            except Exception as exc:  # psycopg2.OperationalError
                if time.monotonic() > deadline:
                    raise PostgresUnavailable(f"PostgreSQL on port {port} does not answer: {exc}\n{server.log()[-3000:]}")
                time.sleep(0.1)
        if database != "postgres":
            server.create_database(database)
        server.database = database
        yield server
    finally:
        if started:
            subprocess.run(_as_server_user([str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "fast", "-w", "stop"]),
                           capture_output=True, timeout=60, cwd="/")
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":  # a manual check: start, show the URL (without the password), stop
    t0 = time.monotonic()
    with postgres_server() as pg:
        print(f"up in {time.monotonic() - t0:.1f} s:", pg.url(with_password=False),
              pg.execute("SELECT version()")[0][0])
