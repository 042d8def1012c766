"""A real PostgreSQL server for the tests: initdb + pg_ctl in a temporary directory.

One server per test process (started on first use, stopped at exit: each pytest-xdist worker
has its own, in its own directory on its own port); every test gets its own database from
:meth:`PgServer.new_database`. The server listens on a free loopback port with
password authentication (scram), so the tests exercise the same connection path as production,
password included. initdb and pg_ctl refuse to run as root, so as root they run as the
``postgres`` account (setpriv), with the directory owned by it.

Nothing is mocked: when no PostgreSQL binaries are found the PostgreSQL tests skip and say why
(``scripts/install`` installs the Debian package when it runs as root).
"""

from __future__ import annotations

import atexit
import itertools
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

SEARCH = ("/usr/lib/postgresql/*/bin", "/usr/local/pgsql/bin", "/usr/pgsql-*/bin")
USER = "syncd"
PASSWORD = "pg-test-Secret-7731"


def bindir() -> Path | None:
    """Where initdb and pg_ctl are (newest version first), or None."""
    configured = os.environ.get("SYNCD_PG_BINDIR")
    if configured:
        return Path(configured) if (Path(configured) / "initdb").exists() else None
    on_path = shutil.which("initdb")
    if on_path:
        return Path(on_path).parent
    for pattern in SEARCH:
        found = sorted(Path("/").glob(pattern.lstrip("/")), reverse=True)
        for candidate in found:
            if (candidate / "initdb").exists():
                return candidate
    return None


def unavailable_reason() -> str | None:
    """Why PostgreSQL tests cannot run here, or None when they can."""
    if bindir() is None:
        return ("PostgreSQL tests skipped: no initdb/pg_ctl found (install the 'postgresql' "
                "package; scripts/install does so when run as root, or set SYNCD_PG_BINDIR)")
    if os.geteuid() == 0:
        try:
            pwd.getpwnam("postgres")
        except KeyError:
            return ("PostgreSQL tests skipped: running as root and there is no 'postgres' "
                    "account to run initdb/pg_ctl as")
        if shutil.which("setpriv") is None:
            return "PostgreSQL tests skipped: running as root without setpriv"
    return None


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@dataclass
class PgServer:
    bin: Path
    dir: Path
    port: int
    _numbers: itertools.count[int]

    @classmethod
    def start_new(cls) -> PgServer:
        found = bindir()
        assert found is not None
        base = Path(tempfile.mkdtemp(prefix="syncd-pg-"))
        base.chmod(0o755)
        server = cls(found, base, free_port(), itertools.count(1))
        server._chown(base)
        pwfile = base / "pw"
        pwfile.write_text(PASSWORD + "\n")
        server._chown(pwfile)
        server._as_owner([str(found / "initdb"), "-D", str(base / "data"), "-U", USER,
                          "--pwfile", str(pwfile), "-A", "scram-sha-256", "-E", "UTF8",
                          "--no-sync", "--locale=C"])
        conf = base / "data" / "postgresql.conf"
        with conf.open("a") as f:
            f.write(
                f"\nlisten_addresses = '127.0.0.1'\nport = {server.port}\n"
                f"unix_socket_directories = '{base}'\nfsync = off\nsynchronous_commit = off\n"
                "full_page_writes = off\nmax_connections = 200\nshared_buffers = 32MB\n"
            )
        server.start()
        atexit.register(server.destroy)
        return server

    # --------------------------------------------------------------------------- lifecycle

    def start(self) -> None:
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-l",
                        str(self.dir / "log"), "-w", "-t", "60", "start"])

    def stop(self, mode: str = "fast") -> None:
        self._as_owner([str(self.bin / "pg_ctl"), "-D", str(self.dir / "data"), "-m", mode,
                        "-w", "-t", "60", "stop"])

    def restart(self, down_for: float = 0.0) -> None:
        """Stop the server (dropping every connection), wait, start it again."""
        self.stop("fast")
        time.sleep(down_for)
        self.start()

    def destroy(self) -> None:
        try:
            if (self.dir / "data" / "postmaster.pid").exists():
                self.stop("immediate")
        finally:
            shutil.rmtree(self.dir, ignore_errors=True)

    # --------------------------------------------------------------------------- databases

    def url(self, database: str, *, password: bool = True) -> str:
        auth = f"{USER}:{PASSWORD}" if password else USER
        return f"postgresql+psycopg://{auth}@127.0.0.1:{self.port}/{database}"

    def new_database(self, prefix: str = "t") -> str:
        """A fresh empty database; returns its name."""
        name = f"{prefix}_{os.getpid()}_{next(self._numbers)}"
        self.sql(f'CREATE DATABASE "{name}"')
        return name

    def sql(self, statement: str, database: str = "postgres") -> list[tuple[object, ...]]:
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, password=PASSWORD,
                             dbname=database, autocommit=True) as conn:
            cur = conn.execute(statement)  # type: ignore[arg-type]
            return list(cur.fetchall()) if cur.description else []

    # --------------------------------------------------------------------------- helpers

    def _chown(self, path: Path) -> None:
        if os.geteuid() == 0:
            pw = pwd.getpwnam("postgres")
            os.chown(path, pw.pw_uid, pw.pw_gid)

    def _as_owner(self, argv: list[str]) -> None:
        if os.geteuid() == 0:
            argv = ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *argv]
        proc = subprocess.run(argv, capture_output=True, text=True, timeout=120,
                              cwd=str(self.dir))
        if proc.returncode != 0:
            log = self.dir / "log"
            tail = log.read_text()[-2000:] if log.exists() else ""
            raise RuntimeError(f"{argv[-1]} failed: {proc.stdout}{proc.stderr}{tail}")


_SERVER: PgServer | None = None


def server() -> PgServer:
    """The run's server, started on first use. Callers check :func:`unavailable_reason` first
    (the pytest fixture turns it into a skip)."""
    global _SERVER
    if _SERVER is None:
        _SERVER = PgServer.start_new()
    return _SERVER
