"""The managed-service side of the generation and promotion protocol (spec rollouts §6).

A stateful service embeds `ManagedService`: it applies the boot rules to the shared state, runs the
internal state machine behind its HTTP listener and fences itself when a newer generation takes
over. Standard library only (sqlite3, http.server): an embedding service gains no dependency and
still starts in well under 0.5 s.
"""

from __future__ import annotations

import contextlib
import enum
import json
import logging
import os
import re
import socket
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from lockstep.errors import ConfigError, StateError

log = logging.getLogger(__name__)

ENV_GENERATION = "LOCKSTEP_DEPLOY_GENERATION"
ENV_INTERNAL_ADDR = "LOCKSTEP_INTERNAL_ADDR"
DEFAULT_INTERNAL_ADDR = "127.0.0.1:0"
DEFAULT_FENCE_INTERVAL = 1.0
MAX_FENCE_INTERVAL = 10.0  # §6: a leader checks fencing at least every 10 s
DEFAULT_CATCHUP_MAX_WAIT = 300.0
CATCHUP_POLL = 0.05
STORE_FORMAT = 1  # layout of the leader table; a store of a higher format is refused at boot

STATUS_PATH = "/api/leader/status"
PROMOTE_PATH = "/api/leader/promote"
SKIP_CATCHUP_PATH = "/api/leader/skip-catchup"

_RELEASE = re.compile(r"v?(\d+(?:\.\d+)*)(?:-([0-9A-Za-z.-]+))?")
_GENERATION = re.compile(r"[0-9]+")


class Refused(StateError):
    """The shared state was written by a newer release (or store format): never boot against it."""


class Fenced(Exception):
    """A newer generation owns the shared state: this generation must write nothing and exit 0."""

    def __init__(self, state_generation: int, generation: int) -> None:
        super().__init__(
            f"generation {generation} is fenced: stateGeneration is {state_generation}")
        self.state_generation = state_generation
        self.generation = generation


class NotLeader(Exception):
    """A write was attempted by a generation that is not (yet) the leader."""

    def __init__(self, generation: int, status: str) -> None:
        super().__init__(f"generation {generation} is read-only (status {status})")
        self.status = status


# --- environment ---------------------------------------------------------------------------------

def parse_addr(text: str, what: str) -> tuple[str, int]:
    """`HOST:PORT` (IPv6 hosts in brackets) as a (host, port) pair; port 0 picks a free port."""
    host, sep, port = text.strip().rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not _GENERATION.fullmatch(port) or int(port) > 65535:
        raise ConfigError(f"{what} {text!r} is not HOST:PORT",
                          "e.g. 127.0.0.1:8080; port 0 picks a free port")
    return host, int(port)


def generation_from_env(environ: Mapping[str, str]) -> int:
    """The deploy generation g from LOCKSTEP_DEPLOY_GENERATION (absent or empty: 0)."""
    raw = environ.get(ENV_GENERATION, "").strip()
    if not raw:
        return 0
    if not _GENERATION.fullmatch(raw):
        raise ConfigError(f"{ENV_GENERATION}={raw!r} is not a deploy generation",
                          "set a non-negative integer, or leave it unset for 0")
    return int(raw)


def internal_addr_from_env(environ: Mapping[str, str]) -> tuple[str, int]:
    """The internal listener's address from LOCKSTEP_INTERNAL_ADDR (absent: any free loopback
    port)."""
    return parse_addr(environ.get(ENV_INTERNAL_ADDR) or DEFAULT_INTERNAL_ADDR, ENV_INTERNAL_ADDR)


# --- boot rules ----------------------------------------------------------------------------------

def release_key(release: str) -> tuple[tuple[int, ...], int, str] | None:
    """A sort key for `vYYYY.MM.N`-like releases (a `-suffix` sorts before the bare tuple); None
    when unparsable, which disables the newer-release check."""
    m = _RELEASE.fullmatch(release.strip())
    if m is None:
        return None
    numbers = tuple(int(n) for n in m.group(1).split("."))
    suffix = m.group(2)
    return (numbers, 0, suffix) if suffix else (numbers, 1, "")


def release_is_newer(recorded: str, running: str) -> bool:
    """Whether `recorded` (the release that last led the state) is newer than `running`."""
    a, b = release_key(recorded), release_key(running)
    return a is not None and b is not None and a > b


@dataclass(frozen=True)
class LeaderRecord:
    """The shared state's leader row: who may write, and which release last did."""

    state_generation: int
    release: str
    store_format: int = STORE_FORMAT


class BootRule(enum.Enum):
    """The first matching row of §6's boot table."""

    INITIALISE = "initialise"
    REFUSE = "refuse"
    LEADER = "leader"
    READ_ONLY = "read-only"
    FENCED = "fenced"


def boot_rule(record: LeaderRecord | None, generation: int, release: str) -> BootRule:
    """Decide how generation g of `release` boots against the shared state (pure)."""
    if record is None:
        return BootRule.INITIALISE
    if record.store_format > STORE_FORMAT or release_is_newer(record.release, release):
        return BootRule.REFUSE
    if record.state_generation == generation:
        return BootRule.LEADER
    if record.state_generation < generation:
        return BootRule.READ_ONLY
    return BootRule.FENCED


# --- shared state --------------------------------------------------------------------------------

_SCHEMA = """CREATE TABLE IF NOT EXISTS leader (
    id INTEGER PRIMARY KEY CHECK (id = 1),
    state_generation INTEGER NOT NULL,
    release TEXT NOT NULL,
    store_format INTEGER NOT NULL)"""


class SharedState:
    """A SQLite file holding the leader row; SQLite's file locks make every compare-and-set atomic
    across processes, and a service may keep its own tables in the same file (then each write and
    its fencing check are one transaction)."""

    def __init__(self, path: Path, *, timeout: float = 10.0) -> None:
        self.path = Path(path)
        self.timeout = timeout

    def connect(self) -> sqlite3.Connection:
        """A read-write connection in autocommit mode (transactions are explicit)."""
        return sqlite3.connect(self.path, timeout=self.timeout, isolation_level=None)

    def connect_read_only(self) -> sqlite3.Connection:
        """A connection SQLite itself refuses to write through (the read-only generation's view).

        A writer killed mid-transaction leaves a hot journal that a read-only connection cannot
        roll back; a read-write connection does it first (restoring the last committed state)."""
        uri = f"{self.path.resolve().as_uri()}?mode=ro"
        conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        try:
            conn.execute("SELECT count(*) FROM sqlite_master").fetchone()
        except sqlite3.OperationalError as exc:
            if getattr(exc, "sqlite_errorname", "") != "SQLITE_READONLY_ROLLBACK":
                conn.close()
                raise
            conn.close()
            with contextlib.closing(self.connect()) as recovering:
                recovering.execute("SELECT count(*) FROM sqlite_master").fetchone()
            conn = sqlite3.connect(uri, uri=True, timeout=self.timeout, isolation_level=None)
        return conn

    def read(self) -> LeaderRecord | None:
        """The leader row, or None when the state is not initialised; writes nothing."""
        if not self.path.exists():
            return None
        with contextlib.closing(self.connect_read_only()) as conn:
            return _leader_row(conn)

    def initialise(self, generation: int, release: str) -> tuple[LeaderRecord, bool]:
        """Create the leader row with `stateGeneration := generation` unless another process did
        first; returns the row now stored and whether this call created it."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with contextlib.closing(self.connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                conn.execute(_SCHEMA)
                created = conn.execute(
                    "INSERT OR IGNORE INTO leader VALUES (1, ?, ?, ?)",
                    (generation, release, STORE_FORMAT)).rowcount == 1
                record = _leader_row(conn)
                conn.execute("COMMIT")
            except BaseException:
                conn.execute("ROLLBACK")
                raise
        assert record is not None
        return record, created

    def compare_and_set(self, expected: int, generation: int, release: str,
                        then: Callable[[sqlite3.Connection], None] | None = None) -> bool:
        """Atomically move `stateGeneration` from `expected` to `generation` (recording `release`),
        running `then` in the same transaction; False, writing nothing, when it was not `expected`.
        """
        with contextlib.closing(self.connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                moved = conn.execute(
                    "UPDATE leader SET state_generation = ?, release = ?, store_format = ? "
                    "WHERE id = 1 AND state_generation = ?",
                    (generation, release, STORE_FORMAT, expected)).rowcount == 1
                if moved and then is not None:
                    then(conn)
                conn.execute("COMMIT" if moved else "ROLLBACK")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
        return moved

    @contextlib.contextmanager
    def transaction(self, generation: int) -> Iterator[sqlite3.Connection]:
        """A write transaction for the leader of `generation`: raises Fenced (writing nothing) when
        `stateGeneration` moved past it; the check and the writes commit together."""
        with contextlib.closing(self.connect()) as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                record = _leader_row(conn)
                if record is None or record.state_generation > generation:
                    raise Fenced(record.state_generation if record else -1, generation)
                yield conn
                conn.execute("COMMIT")
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise


def _leader_row(conn: sqlite3.Connection) -> LeaderRecord | None:
    """The leader row through `conn`, None when the table or row does not exist yet."""
    try:
        row = conn.execute(
            "SELECT state_generation, release, store_format FROM leader WHERE id = 1").fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):
            return None
        raise
    return None if row is None else LeaderRecord(int(row[0]), str(row[1]), int(row[2]))


# --- the state machine ---------------------------------------------------------------------------

class Phase(enum.Enum):
    """The internal states of §6; `reported` is what GET /api/leader/status answers."""

    INITIALIZING = "Initializing"
    CATCHING_UP = "CatchingUp"
    READY_TO_PROMOTE = "ReadyToPromote"
    PROMOTING = "Promoting"
    IS_LEADER = "IsLeader"

    @property
    def reported(self) -> str:
        """The status value on the wire (CatchingUp is reported as Initializing)."""
        return "Initializing" if self is Phase.CATCHING_UP else self.value


class Hooks:
    """What an embedding service customises; the defaults suit a service with nothing to open."""

    def open(self, read_only: bool, stopping: threading.Event) -> None:
        """Open the service's own state (slow work belongs here); runs while Initializing.
        Long waits should use `stopping.wait(...)` so a stop or a fence interrupts them."""

    def migrate(self, conn: sqlite3.Connection) -> None:
        """Create or upgrade the service's tables; runs in the leader's first fenced transaction
        (at a leader boot, or atomically with the promotion's compare-and-set)."""

    def caught_up(self) -> bool:
        """Whether a read-only generation has caught up with the leader; polled while CatchingUp."""
        return True


class ManagedService:
    """One generation of a stateful component: boot rules, state machine, internal listener and
    fencing. `start()` boots (raising Refused or Fenced), `wait()` blocks until it must exit."""

    def __init__(self, state: SharedState, release: str, *, generation: int,
                 internal_addr: tuple[str, int], hooks: Hooks | None = None,
                 fence_interval: float = DEFAULT_FENCE_INTERVAL,
                 catchup_max_wait: float = DEFAULT_CATCHUP_MAX_WAIT) -> None:
        if not 0 < fence_interval <= MAX_FENCE_INTERVAL:
            raise ConfigError(f"fence interval {fence_interval:g}s is out of range",
                              f"use more than 0 and at most {MAX_FENCE_INTERVAL:g} seconds")
        if generation < 0:
            raise ConfigError(f"deploy generation {generation} is negative", "use 0 or more")
        self.state = state
        self.release = release
        self.generation = generation
        self.hooks = hooks or Hooks()
        self.fence_interval = fence_interval
        self.catchup_max_wait = catchup_max_wait
        self.stopping = threading.Event()
        self._internal_addr = internal_addr
        self._lock = threading.Lock()
        self._phase = Phase.INITIALIZING
        self._skip = threading.Event()
        self._fenced = False
        self._fenced_by = -1
        self._exit_code = 0
        self._boot_generation = -1
        self._server: ThreadingHTTPServer | None = None

    @classmethod
    def from_env(cls, state: SharedState, release: str, environ: Mapping[str, str] | None = None,
                 **kw: Any) -> ManagedService:
        """A service for the generation and internal address the driver put in the environment."""
        env = os.environ if environ is None else environ
        return cls(state, release, generation=generation_from_env(env),
                   internal_addr=internal_addr_from_env(env), **kw)

    # -- observation --
    @property
    def phase(self) -> Phase:
        """The current internal state."""
        return self._phase

    @property
    def status(self) -> str:
        """The status GET /api/leader/status reports."""
        return self._phase.reported

    @property
    def fenced(self) -> bool:
        """Whether a newer generation took over (writes are refused, the process must exit 0)."""
        return self._fenced

    @property
    def boot_generation(self) -> int:
        """`stateGeneration` as read at boot (the promotion's compare-and-set expects it)."""
        return self._boot_generation

    @property
    def internal_address(self) -> tuple[str, int]:
        """The bound address of the internal listener (after `start()`)."""
        if self._server is None:
            return self._internal_addr
        host, port = self._server.server_address[:2]
        return str(host), int(port)

    # -- lifecycle --
    def start(self) -> BootRule:
        """Apply the boot rules, then serve the internal listener and move through the states in
        the background. Raises Refused (exit non-zero) or Fenced (exit 0) before listening."""
        rule = self._boot()
        self._server = bind_http(self._internal_addr, _protocol_handler(self), "internal listener")
        server = self._server
        # A short poll: stopping the service must not wait up to half a second for the loop.
        self._spawn(lambda: server.serve_forever(poll_interval=0.05), "internal-http")
        self._spawn(self._watch_fence, "fence-watch")
        log.info("generation %d of %s booted %s (stateGeneration %d); internal listener %s:%d",
                 self.generation, self.release, rule.value, self._boot_generation,
                 *self.internal_address)
        leads = rule in (BootRule.INITIALISE, BootRule.LEADER)
        self._spawn(self._guarded(self._lead if leads else self._catch_up), "boot")
        return rule

    def wait(self, timeout: float | None = None) -> int | None:
        """Block until the service must exit; its exit status (0 when fenced or stopped), or None
        on timeout."""
        return self._exit_code if self.stopping.wait(timeout) else None

    def stop(self, exit_code: int = 0) -> None:
        """Ask the service to exit (e.g. on SIGTERM)."""
        with self._lock:
            if not self.stopping.is_set():
                self._exit_code = exit_code
        self.stopping.set()

    def close(self) -> None:
        """Stop the internal listener and release its socket."""
        self.stopping.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()

    # -- protocol operations (the endpoints map these to HTTP) --
    def promote(self) -> str | None:
        """POST /api/leader/promote: None on success (idempotent once promoting), else why not."""
        with self._lock:
            if self._fenced:
                return f"generation {self.generation} is fenced"
            phase = self._phase
            if phase in (Phase.PROMOTING, Phase.IS_LEADER):
                return None
            if phase is not Phase.READY_TO_PROMOTE:
                return (f"generation {self.generation} is not ready to promote "
                        f"(status {phase.reported})")
            self._phase = Phase.PROMOTING
        log.info("generation %d promoting", self.generation)
        self._spawn(self._guarded(self._take_over), "promote")
        return None

    def skip_catchup(self) -> str | None:
        """POST /api/leader/skip-catchup: None on success (ends catch-up at once), else why not."""
        with self._lock:
            if self._phase is Phase.INITIALIZING:
                return f"generation {self.generation} is still initializing"
            if self._phase is Phase.CATCHING_UP:
                self._phase = Phase.READY_TO_PROMOTE
                log.info("generation %d catch-up skipped: ReadyToPromote", self.generation)
        self._skip.set()
        return None

    @contextlib.contextmanager
    def writing(self) -> Iterator[sqlite3.Connection]:
        """A fenced write transaction on the shared state: raises NotLeader unless IsLeader, and
        Fenced (after starting the exit) when a newer generation took over."""
        if self._fenced:
            raise Fenced(self._fenced_by, self.generation)
        if self._phase is not Phase.IS_LEADER:
            raise NotLeader(self.generation, self.status)
        try:
            with self.state.transaction(self.generation) as conn:
                yield conn
        except Fenced as exc:
            self._fence(exc.state_generation)
            raise

    # -- internals --
    def _boot(self) -> BootRule:
        record = self.state.read()
        rule = boot_rule(record, self.generation, self.release)
        if rule is BootRule.INITIALISE:
            record, created = self.state.initialise(self.generation, self.release)
            if not created:  # another generation initialised it first
                rule = boot_rule(record, self.generation, self.release)
        assert record is not None
        if rule is BootRule.REFUSE:
            if record.store_format > STORE_FORMAT:
                raise Refused(f"shared state {self.state.path} has format {record.store_format}, "
                              f"newer than this release's {STORE_FORMAT}",
                              f"run release {record.release} or later")
            raise Refused(f"shared state {self.state.path} was written by release "
                          f"{record.release}, newer than this release {self.release}",
                          f"an older release never takes over newer state: run {record.release} "
                          "or later")
        if rule is BootRule.FENCED:
            raise Fenced(record.state_generation, self.generation)
        self._boot_generation = record.state_generation
        return rule

    def _lead(self) -> None:
        self.hooks.open(False, self.stopping)
        with self.state.transaction(self.generation) as conn:
            self.hooks.migrate(conn)
        self._set_phase(Phase.INITIALIZING, Phase.IS_LEADER)

    def _catch_up(self) -> None:
        self.hooks.open(True, self.stopping)
        self._set_phase(Phase.INITIALIZING, Phase.CATCHING_UP)
        deadline = time.monotonic() + self.catchup_max_wait
        while not self.stopping.is_set() and self._phase is Phase.CATCHING_UP:
            if time.monotonic() >= deadline or self.hooks.caught_up():
                self._set_phase(Phase.CATCHING_UP, Phase.READY_TO_PROMOTE)
                return
            self._skip.wait(CATCHUP_POLL)

    def _take_over(self) -> None:
        if not self.state.compare_and_set(self._boot_generation, self.generation, self.release,
                                          then=self.hooks.migrate):
            record = self.state.read()
            raise Fenced(record.state_generation if record else -1, self.generation)
        self._set_phase(Phase.PROMOTING, Phase.IS_LEADER)

    def _set_phase(self, expected: Phase, new: Phase) -> None:
        with self._lock:
            if self._phase is expected and not self._fenced:
                self._phase = new
                log.info("generation %d: %s", self.generation, new.value)

    def _watch_fence(self) -> None:
        while not self.stopping.wait(self.fence_interval):
            try:
                record = self.state.read()
            except sqlite3.Error as exc:
                log.warning("fencing check failed (retrying): %s", exc)
                continue
            if record is not None and record.state_generation > self.generation:
                self._fence(record.state_generation)
                return

    def _fence(self, state_generation: int) -> None:
        with self._lock:
            if self._fenced:
                return
            self._fenced = True
            self._fenced_by = state_generation
            self._exit_code = 0
        log.warning("generation %d fenced: stateGeneration is %d; exiting",
                    self.generation, state_generation)
        self.stopping.set()

    def _guarded(self, step: Callable[[], None]) -> Callable[[], None]:
        def run() -> None:
            """Run `step`; a fence exits 0, any other failure exits 1."""
            try:
                step()
            except Fenced as exc:
                self._fence(exc.state_generation)
            except Exception:
                log.exception("generation %d failed", self.generation)
                self.stop(1)
        return run

    @staticmethod
    def _spawn(target: Callable[[], None], name: str) -> None:
        threading.Thread(target=target, name=name, daemon=True).start()


# --- HTTP ----------------------------------------------------------------------------------------

class JsonHandler(BaseHTTPRequestHandler):
    """A keep-alive request handler answering JSON, logging through `logging` at debug level."""

    protocol_version = "HTTP/1.1"
    server_version = "lockstep"
    disable_nagle_algorithm = True  # headers and body are separate writes: avoid a 40 ms stall
    max_body = 1 << 20

    @property
    def route(self) -> str:
        """The request path without its query string."""
        return urlsplit(self.path).path

    def read_body(self) -> bytes | None:
        """The request body (None, after answering 413, when it exceeds `max_body`)."""
        length = int(self.headers.get("Content-Length") or 0)
        if length > self.max_body:
            self.send_json(413, {"message": f"body exceeds {self.max_body} bytes"})
            self.close_connection = True
            return None
        return self.rfile.read(length) if length > 0 else b""

    def send_json(self, code: int, body: object) -> None:
        """Answer `code` with a JSON body."""
        data = json.dumps(body).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.end_headers()
        self.wfile.write(data)

    def send_empty(self, code: int) -> None:
        """Answer `code` (e.g. 204) with no body."""
        self.send_response(code)
        if code != 204:
            self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        """Route access logs to `logging` (debug) instead of stderr."""
        log.debug("%s %s", self.address_string(), format % args)


def bind_http(addr: tuple[str, int], handler: type[BaseHTTPRequestHandler],
              what: str) -> ThreadingHTTPServer:
    """A threaded HTTP server bound to `addr` (IPv4 or IPv6); ConfigError when it cannot bind."""
    family = socket.AF_INET6 if ":" in addr[0] else socket.AF_INET

    class Server(ThreadingHTTPServer):
        address_family = family
        daemon_threads = True

    try:
        return Server(addr, handler)
    except OSError as exc:
        raise ConfigError(f"cannot open the {what} on {addr[0]}:{addr[1]}: {exc.strerror or exc}",
                          "choose a free port, or 0 to pick one") from exc


def _protocol_handler(service: ManagedService) -> type[JsonHandler]:
    """The internal listener's endpoints (§6), answering from `service`."""

    class Handler(JsonHandler):
        def do_GET(self) -> None:
            """GET /api/leader/status."""
            if self.route == STATUS_PATH:
                self.send_json(200, {"status": service.status})
            elif self.route in (PROMOTE_PATH, SKIP_CATCHUP_PATH):
                self.send_json(405, {"message": "use POST"})
            else:
                self.send_json(404, {"message": f"no endpoint {self.route}"})

        def do_POST(self) -> None:
            """POST /api/leader/promote and /api/leader/skip-catchup."""
            if self.read_body() is None:
                return
            if self.route == PROMOTE_PATH:
                why = service.promote()
                if why is None:
                    self.send_json(200, {"result": "Success"})
                else:
                    self.send_json(400, {"result": {"Failure": {"message": why}}})
            elif self.route == SKIP_CATCHUP_PATH:
                why = service.skip_catchup()
                if why is None:
                    self.send_empty(204)
                else:
                    self.send_json(400, {"message": why})
            elif self.route == STATUS_PATH:
                self.send_json(405, {"message": "use GET"})
            else:
                self.send_json(404, {"message": f"no endpoint {self.route}"})

    return Handler
