"""A sample stateful service speaking the promotion protocol: a key-value HTTP API on shared SQLite.

`python -m lockstep.rollout.demo_service --data DIR --release VERSION --public-addr HOST:PORT`, with
LOCKSTEP_DEPLOY_GENERATION and LOCKSTEP_INTERNAL_ADDR from the driver. Reads are served in every
phase, writes only by the leader. The data shares DIR/state.sqlite3 with the leader row, so each
write and its fencing check commit together and the data survives every upgrade.
"""

from __future__ import annotations

import argparse
import json
import logging
import signal
import sqlite3
import sys
import threading
import time
from collections.abc import Sequence
from http.server import ThreadingHTTPServer
from pathlib import Path
from types import FrameType
from typing import NoReturn
from urllib.parse import unquote

from lockstep.errors import EXIT_USAGE, LockstepError
from lockstep.rollout.protocol import (
    DEFAULT_CATCHUP_MAX_WAIT,
    DEFAULT_FENCE_INTERVAL,
    BootRule,
    Fenced,
    Hooks,
    JsonHandler,
    ManagedService,
    NotLeader,
    SharedState,
    bind_http,
    parse_addr,
)

log = logging.getLogger("lockstep.rollout.demo_service")

STATE_FILE = "state.sqlite3"
MAX_KEY = 256
DRAIN_GRACE = 2.0  # seconds an exiting process waits for the connections it accepted


class DemoHooks(Hooks):
    """Opening takes `init_delay` seconds; catch-up ends `catchup_delay` seconds after opening."""

    def __init__(self, init_delay: float, catchup_delay: float) -> None:
        self.init_delay = init_delay
        self.catchup_delay = catchup_delay
        self._opened_at = float("inf")

    def open(self, read_only: bool, stopping: threading.Event) -> None:
        """Simulate loading the state (interrupted by a stop or a fence)."""
        stopping.wait(self.init_delay)
        self._opened_at = time.monotonic()

    def migrate(self, conn: sqlite3.Connection) -> None:
        """The key-value table, created by the first leader and kept by every later one."""
        conn.execute("CREATE TABLE IF NOT EXISTS kv (key TEXT PRIMARY KEY, value TEXT NOT NULL, "
                     "generation INTEGER NOT NULL)")

    def caught_up(self) -> bool:
        """Caught up once `catchup_delay` has passed since opening."""
        return time.monotonic() - self._opened_at >= self.catchup_delay


def read_key(state: SharedState, key: str) -> tuple[str, int] | None:
    """The value of `key` and the generation that wrote it, through a read-only connection."""
    conn = state.connect_read_only()
    try:
        row = conn.execute("SELECT value, generation FROM kv WHERE key = ?", (key,)).fetchone()
    except sqlite3.OperationalError as exc:
        if "no such table" in str(exc):  # no leader has opened the store yet
            return None
        raise
    finally:
        conn.close()
    return None if row is None else (str(row[0]), int(row[1]))


class InFlight:
    """How many connections the public listener is serving, so an exit can wait for them."""

    def __init__(self) -> None:
        self._count = 0
        self._idle = threading.Condition()

    def __enter__(self) -> None:
        with self._idle:
            self._count += 1

    def __exit__(self, *exc: object) -> None:
        with self._idle:
            self._count -= 1
            self._idle.notify_all()

    def wait_idle(self, timeout: float) -> bool:
        """Wait until no connection is being served; False if `timeout` passed first."""
        with self._idle:
            return self._idle.wait_for(lambda: self._count == 0, timeout)


def drain(server: ThreadingHTTPServer, inflight: InFlight, grace: float) -> None:
    """Stop accepting, serve the connections already queued, close the listener and wait for
    those in flight (at most `grace` s): a client of an exiting generation (fenced or stopped)
    gets an answer — reads succeed, writes 503 — instead of a reset connection."""
    server.shutdown()
    server.socket.setblocking(False)
    while True:
        try:
            request, addr = server.get_request()
        except OSError:  # nothing queued any more
            break
        server.process_request(request, addr)
    server.server_close()
    inflight.wait_idle(grace)


def _public_handler(service: ManagedService, inflight: InFlight) -> type[JsonHandler]:
    """GET/PUT /kv/<key>, GET /info and GET /healthz."""

    class Handler(JsonHandler):
        def handle(self) -> None:
            """Serve the connection, counted in `inflight`."""
            with inflight:
                super().handle()

        def _key(self) -> str | None:
            """The key of a /kv/<key> path (None for other paths or a bad key)."""
            if not self.route.startswith("/kv/"):
                return None
            key = unquote(self.route[len("/kv/"):])
            return key if 0 < len(key) <= MAX_KEY else None

        def do_GET(self) -> None:
            """Reads: served in every state."""
            if self.route == "/healthz":
                self.send_json(200, {"ok": True})
            elif self.route == "/info":
                self.send_json(200, {"generation": service.generation, "release": service.release,
                                     "status": service.status, "phase": service.phase.value,
                                     "bootStateGeneration": service.boot_generation,
                                     "fenced": service.fenced})
            elif (key := self._key()) is not None:
                try:
                    found = read_key(service.state, key)
                except sqlite3.Error as exc:
                    self.send_json(503, {"message": f"read failed: {exc}"})
                    return
                if found is None:
                    self.send_json(404, {"message": f"no key {key!r}"})
                else:
                    self.send_json(200, {"key": key, "value": found[0], "generation": found[1]})
            else:
                self.send_json(404, {"message": f"no endpoint {self.route}"})

        def do_PUT(self) -> None:
            """Writes: only the leader, in a fenced transaction."""
            body = self.read_body()
            if body is None:
                return
            key = self._key()
            if key is None:
                self.send_json(404, {"message": f"no endpoint {self.route} (PUT /kv/<key>)"})
                return
            try:
                value = body.decode("utf-8")
            except UnicodeDecodeError:
                self.send_json(400, {"message": "the value is not UTF-8"})
                return
            try:
                with service.writing() as conn:
                    conn.execute(
                        "INSERT INTO kv VALUES (?, ?, ?) ON CONFLICT (key) DO UPDATE SET "
                        "value = excluded.value, generation = excluded.generation",
                        (key, value, service.generation))
            except NotLeader as exc:
                self.send_json(503, {"message": str(exc), "reason": "read-only"})
            except Fenced:
                self.send_json(503, {"message": f"generation {service.generation} is fenced",
                                     "reason": "fenced"})
            except sqlite3.Error as exc:
                self.send_json(503, {"message": f"write failed: {exc}", "reason": "store"})
            else:
                self.send_json(200, {"key": key, "generation": service.generation})

    return Handler


class _Parser(argparse.ArgumentParser):
    """argparse with lockstep's one-line `error: <what> (<how to fix>)` and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see `python -m lockstep.rollout.demo_service "
                         "--help`)\n")
        sys.exit(EXIT_USAGE)


def _seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not value >= 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite non-negative number")
    return value


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    """The command line; generation and internal address come from the environment (§2.6)."""
    p = _Parser(prog="python -m lockstep.rollout.demo_service", description=__doc__)
    p.add_argument("--data", type=Path, required=True, help="directory of the shared state")
    p.add_argument("--release", required=True, help="the release this process runs")
    p.add_argument("--public-addr", required=True, help="HOST:PORT of the key-value API")
    p.add_argument("--fence-interval", type=_seconds, default=DEFAULT_FENCE_INTERVAL,
                   help="seconds between fencing checks (at most 10)")
    p.add_argument("--init-delay", type=_seconds, default=0.0,
                   help="seconds spent Initializing (simulates opening a large state)")
    p.add_argument("--catchup-delay", type=_seconds, default=0.0,
                   help="seconds a read-only generation spends catching up")
    p.add_argument("--catchup-max-wait", type=_seconds, default=DEFAULT_CATCHUP_MAX_WAIT,
                   help="catch-up ends after this many seconds at the latest")
    return p.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    """Boot, serve until fenced or stopped, and return the exit status."""
    args = parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    hooks = DemoHooks(args.init_delay, args.catchup_delay)
    try:
        public_addr = parse_addr(args.public_addr, "--public-addr")
        service = ManagedService.from_env(
            SharedState(args.data / STATE_FILE), args.release, hooks=hooks,
            fence_interval=args.fence_interval, catchup_max_wait=args.catchup_max_wait)
        inflight = InFlight()
        public = bind_http(public_addr, _public_handler(service, inflight), "public listener")
        rule = service.start()
    except Fenced as exc:
        log.info("%s; exiting without writing", exc)
        return 0
    except LockstepError as exc:
        sys.stderr.write(f"error: {exc.one_line()}\n")
        return exc.exit_code

    def on_signal(signum: int, frame: FrameType | None) -> None:
        """SIGTERM/SIGINT (the driver's teardown): exit 0."""
        service.stop()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    threading.Thread(target=public.serve_forever, name="public-http", daemon=True).start()
    host, port = str(public.server_address[0]), int(public.server_address[1])
    internal_host, internal_port = service.internal_address
    print(json.dumps({
        "event": "listening", "generation": service.generation, "release": service.release,
        "role": "read-only" if rule is BootRule.READ_ONLY else "leader",
        "internal": f"{internal_host}:{internal_port}", "public": f"{host}:{port}"}), flush=True)
    code = service.wait()
    drain(public, inflight, DRAIN_GRACE)
    service.close()
    return code or 0


if __name__ == "__main__":
    sys.exit(main())
