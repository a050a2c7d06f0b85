"""A throwaway PostgreSQL server on 127.0.0.1 for the tests, one per xdist worker.

initdb refuses root, so as root the server runs as `postgres` in a mkdtemp directory chowned to
it (pytest's tmp_path is 0700). fsync is off: the data dies with the test run. Each test gets a
fresh database. Missing server binaries skip the tests, or fail them under CI.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pwd
import shutil
import signal
import subprocess
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.infra import free_port, scratch_dir, start, stop, tail, wait_until

USER = "test"  # the superuser initdb creates; trust authentication on loopback
BIN_ENV = "LOCKSTEP_TEST_PG_BIN"  # a directory holding initdb and postgres, if not the default


def server_bin() -> Path | None:
    """The directory of initdb and postgres: $LOCKSTEP_TEST_PG_BIN, Debian's PostgreSQL 15,
    else the newest Debian PostgreSQL installed; None when there is none."""
    candidates = [Path(os.environ[BIN_ENV])] if os.environ.get(BIN_ENV) else []
    candidates.append(Path("/usr/lib/postgresql/15/bin"))
    versions = sorted(Path("/usr/lib/postgresql").glob("*/bin"),
                      key=lambda p: int(p.parent.name) if p.parent.name.isdigit() else 0)
    candidates.extend(reversed(versions))
    for directory in candidates:
        if (directory / "initdb").is_file() and (directory / "postgres").is_file():
            return directory
    return None


def _in_ci() -> bool:
    return os.environ.get("CI", "").lower() not in ("", "0", "false", "no")


def require_server() -> Path:
    """The server binaries' directory; skip (with the reason) when missing, but under CI fail,
    since CI installs them (scripts/system-deps) and must never silently skip these tests."""
    found = server_bin()
    if found is not None:
        return found
    reason = ("PostgreSQL server binaries (initdb, postgres) not found under "
              "/usr/lib/postgresql/*/bin or $" + BIN_ENV + "; run `bash scripts/system-deps` as "
              "root to install the Debian package postgresql")
    if _in_ci():
        pytest.fail(reason)
    print(f"skipping the PostgreSQL store tests: {reason}")
    pytest.skip(reason)


def _as_postgres(cmd: list[str], *, fork: bool) -> list[str]:
    """cmd run as the `postgres` account when we are root (initdb refuses root); `fork` picks
    runuser (one-shot tools) over setpriv (exec in place: the server's pid is the Popen's)."""
    if os.geteuid() != 0:
        return cmd
    if fork:
        return ["runuser", "-u", "postgres", "--", *cmd]
    return ["setpriv", "--reuid=postgres", "--regid=postgres", "--init-groups", *cmd]


@dataclass
class PostgresServer:
    """A running server: its port, and fresh databases on request."""

    port: int
    root: Path
    log: Path
    version: str

    def url(self, database: str) -> str:
        """The SQLAlchemy URL (psycopg) of one of its databases."""
        return f"postgresql+psycopg://{USER}@127.0.0.1:{self.port}/{database}"

    def admin(self, sql: str) -> None:
        """Run one statement alone in autocommit (CREATE/DROP DATABASE refuse a transaction)."""
        import psycopg

        with psycopg.connect(host="127.0.0.1", port=self.port, user=USER, dbname="postgres",
                             autocommit=True, connect_timeout=10) as conn:
            conn.execute(sql)  # type: ignore[arg-type]

    def create_database(self) -> str:
        """A new empty database; returns its name."""
        name = f"t_{uuid.uuid4().hex[:16]}"
        self.admin(f'CREATE DATABASE "{name}"')
        return name

    def drop_database(self, name: str) -> None:
        """Drop a database, ending any session still connected to it."""
        self.admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def _ready(port: int) -> bool:
    import psycopg

    try:
        with psycopg.connect(host="127.0.0.1", port=port, user=USER, dbname="postgres",
                             connect_timeout=1):
            return True
    except psycopg.OperationalError:
        return False


@contextlib.contextmanager
def running_postgres() -> Iterator[PostgresServer]:
    """initdb and start a server as `postgres` (when root) in a scratch directory; stop it with
    SIGINT (fast shutdown) and delete the directory afterwards."""
    bindir = require_server()
    root = scratch_dir("lockstep-pg-")
    proc: subprocess.Popen[bytes] | None = None
    try:
        if os.geteuid() == 0:
            account = pwd.getpwnam("postgres")
            os.chown(root, account.pw_uid, account.pw_gid)
        log = root / "server.log"
        init = subprocess.run(
            _as_postgres([str(bindir / "initdb"), "-D", str(root / "data"), "-U", USER,
                          "--auth=trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"],
                         fork=True),
            capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False, timeout=120)
        if init.returncode != 0:
            raise RuntimeError(f"initdb failed (rc={init.returncode}): {init.stderr[-2000:]}")
        subprocess.run(_as_postgres(["mkdir", str(root / "sock")], fork=True), check=True,
                       stdin=subprocess.DEVNULL)
        for _attempt in range(5):  # a free port can be taken before the server binds it
            port = free_port()
            proc = start(_as_postgres(
                [str(bindir / "postgres"), "-D", str(root / "data"), "-p", str(port),
                 "-k", str(root / "sock"), "-c", "listen_addresses=127.0.0.1",
                 "-c", "fsync=off", "-c", "synchronous_commit=off",
                 "-c", "full_page_writes=off", "-c", "max_connections=200"], fork=False), log)
            try:
                wait_until(functools.partial(_ready, port), proc, log, timeout=60.0)
                break
            except RuntimeError:
                if "Address already in use" not in tail(log):
                    raise
                proc = None
        else:
            raise RuntimeError(f"PostgreSQL could not bind a free port:\n{tail(log)}")
        version = subprocess.run([str(bindir / "postgres"), "--version"], capture_output=True,
                                 text=True, check=True).stdout.strip()
        yield PostgresServer(port, root, log, version)
    finally:
        if proc is not None:
            stop(proc, signal.SIGINT)
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[PostgresServer]:
    """One server per test session (each xdist worker is its own session)."""
    with running_postgres() as server:
        yield server


@pytest.fixture
def postgres_url(postgres_server: PostgresServer) -> Iterator[str]:
    """A fresh, empty database for one test: its SQLAlchemy URL; dropped afterwards."""
    name = postgres_server.create_database()
    yield postgres_server.url(name)
    postgres_server.drop_database(name)
