"""The stable endpoint `<env>-<c>` (spec/rollouts.md §2.6): a TCP proxy process per component
that forwards each new connection to the public address routes.json names, and its supervision.

`python -m lockstep.rollout.endpoint --routes FILE --component C --listen HOST:PORT` serves one
component; `Endpoints` (used by LocalDriver) starts, adopts, restarts and stops these processes
and keeps `<env_dir>/endpoints/<env>-<c>.json`. Standard library only (asyncio streams): no
maintained library relays TCP to a target re-read from a file, and the relay is a few lines.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from lockstep.errors import EXIT_USAGE, LockstepError
from lockstep.rollout.processes import announcement, last_line, spawn, stop_group

log = logging.getLogger("lockstep.rollout.endpoint")

RETRY_FOR = 5.0  # seconds a connection waits for a reachable target before it is closed
RETRY_STEP = 0.02  # seconds between connect attempts while waiting
CONNECT_TIMEOUT = 2.0  # seconds one connect attempt may take
BOOT_TIMEOUT = 30.0  # seconds the supervisor waits for the `listening` line
STOP_TIMEOUT = 10.0  # seconds between SIGTERM and SIGKILL
CHUNK = 1 << 16
ORPHAN_CHECK = 2.0  # seconds between checks that the environment's directory still exists


class EndpointError(LockstepError):
    """An endpoint process could not be started or stopped; the message says which and why."""


# --- the proxy process ---------------------------------------------------------------------------

class RouteTable:
    """One component's target in routes.json, re-read only when the file's identity, size or
    mtime changed (a stat per connection)."""

    def __init__(self, path: Path, component: str) -> None:
        self.path = path
        self.component = component
        self._key: tuple[int, int, int] | None = None
        self._target: tuple[str, int] | None = None
        self._generation: object = None

    def target(self) -> tuple[str, int] | None:
        """The active (host, port) of the component, None while routes.json names none."""
        try:
            st = self.path.stat()
        except OSError:
            self._key, self._target = None, None
            return None
        key = (st.st_ino, st.st_size, st.st_mtime_ns)
        if key != self._key:
            self._key = key
            self._reload()
        return self._target

    def _reload(self) -> None:
        try:
            routes = json.loads(self.path.read_text(encoding="utf-8"))
        except (OSError, ValueError):
            self._key = None  # being replaced or unreadable: read again next time
            return
        entry = routes.get(self.component) if isinstance(routes, dict) else None
        public = entry.get("public") if isinstance(entry, dict) else None
        target = _split(public) if isinstance(public, str) else None
        if target != self._target:
            generation = entry.get("generation") if isinstance(entry, dict) else None
            log.info("%s: routing to %s (generation %s)", self.component,
                     public if target else "nothing", generation)
        self._target = target


def _split(addr: str) -> tuple[str, int] | None:
    """`HOST:PORT` (IPv6 host in brackets) as (host, port), None if malformed."""
    host, sep, port = addr.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or not 0 < int(port) <= 65535:
        return None
    return host, int(port)


class Proxy:
    """Accepts clients on the stable address and relays each to the current target; a refused,
    reset or missing target is retried (routes re-read each time) for `retry_for` seconds."""

    def __init__(self, table: RouteTable, retry_for: float = RETRY_FOR) -> None:
        self.table = table
        self.retry_for = retry_for

    async def _connect(self) -> tuple[asyncio.StreamReader, asyncio.StreamWriter] | None:
        """A connection to the target, waiting out a switch; None after `retry_for` seconds."""
        deadline = time.monotonic() + self.retry_for
        waited = False
        while True:
            target = self.table.target()
            why = "no route"
            if target is not None:
                try:
                    return await asyncio.wait_for(asyncio.open_connection(*target),
                                                  CONNECT_TIMEOUT)
                except (OSError, TimeoutError) as exc:
                    why = f"{target[0]}:{target[1]}: {exc.__class__.__name__}"
            if time.monotonic() >= deadline:
                log.warning("%s: %s after %.1f s; closing the client connection",
                            self.table.component, why, self.retry_for)
                return None
            if not waited:
                log.info("%s: %s; retrying for up to %.1f s", self.table.component, why,
                         self.retry_for)
                waited = True
            await asyncio.sleep(RETRY_STEP)

    async def handle(self, client_r: asyncio.StreamReader,
                     client_w: asyncio.StreamWriter) -> None:
        """Relay one client connection both ways until both sides are done."""
        try:
            upstream = await self._connect()
            if upstream is None:
                return
            up_r, up_w = upstream
            try:
                await asyncio.gather(_relay(client_r, up_w, client_w),
                                     _relay(up_r, client_w, up_w))
            finally:
                up_w.close()
        finally:
            client_w.close()


async def _relay(src: asyncio.StreamReader, dst: asyncio.StreamWriter,
                 src_w: asyncio.StreamWriter) -> None:
    """Copy `src` to `dst`; at EOF half-close `dst`, on an error close both connections."""
    try:
        while data := await src.read(CHUNK):
            dst.write(data)
            await dst.drain()
        if dst.can_write_eof():
            dst.write_eof()
    except (OSError, RuntimeError):  # reset, broken pipe, or writing to a closed transport
        dst.close()
        src_w.close()


async def serve(routes: Path, component: str, listen: tuple[str, int],
                retry_for: float) -> int:
    """Listen, announce the bound address on stdout, relay until SIGTERM/SIGINT; exit status."""
    proxy = Proxy(RouteTable(routes, component), retry_for)
    try:
        server = await asyncio.start_server(proxy.handle, listen[0], listen[1],
                                            reuse_address=True)
    except OSError as exc:
        sys.stderr.write(f"error: cannot listen on {listen[0]}:{listen[1]}: "
                         f"{exc.strerror or exc} (free the port, or remove the endpoint's "
                         "record to pick a new one)\n")
        return 2
    host, port = server.sockets[0].getsockname()[:2]
    bound = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    print(json.dumps({"event": "listening", "component": component, "endpoint": bound}),
          flush=True)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    async with server:
        while not stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), ORPHAN_CHECK)
            if not routes.parent.is_dir():
                log.warning("%s: %s is gone (environment deleted); exiting", component,
                            routes.parent)
                break
    return 0


class _Parser(argparse.ArgumentParser):
    """argparse with lockstep's one-line `error: <what> (<how to fix>)` and exit 2."""

    def error(self, message: str) -> NoReturn:
        sys.stderr.write(f"error: {message} (see `python -m lockstep.rollout.endpoint --help`)\n")
        sys.exit(EXIT_USAGE)


def _addr(text: str) -> tuple[str, int]:
    """An argparse type: HOST:PORT, port 0 picking a free one."""
    host, sep, port = text.rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise argparse.ArgumentTypeError(f"{text!r} is not HOST:PORT")
    return host, int(port)


def _seconds(text: str) -> float:
    """An argparse type: a finite, non-negative number of seconds."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number of seconds") from None
    if not 0 <= value < float("inf"):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite non-negative number")
    return value


def main(argv: Sequence[str] | None = None) -> int:
    """The endpoint process's command line."""
    p = _Parser(prog="python -m lockstep.rollout.endpoint",
                description="Relay TCP connections to a component's active generation.")
    p.add_argument("--routes", type=Path, required=True, help="the environment's routes.json")
    p.add_argument("--component", required=True, help="the component whose route to follow")
    p.add_argument("--listen", type=_addr, required=True,
                   help="HOST:PORT of the stable address (port 0 picks one)")
    p.add_argument("--retry-for", type=_seconds, default=RETRY_FOR,
                   help="seconds a connection waits for a reachable target")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return asyncio.run(serve(args.routes, args.component, args.listen, args.retry_for))


# --- supervision (the driver's side) -------------------------------------------------------------

class Endpoints:
    """The endpoint processes of a driver's environments: each runs in its own session (so it
    outlives the controller, like a workload) with only PATH and LC_ALL in its environment, and
    keeps its address across restarts through its record `<env_dir>/endpoints/<env>-<c>.json`."""

    def __init__(self, root: Path, start_time: Callable[[int], int | None],
                 retry_for: float = RETRY_FOR) -> None:
        self.root = root
        self.start_time = start_time
        self.retry_for = retry_for  # passed to processes started from now on
        self._children: dict[int, subprocess.Popen[bytes]] = {}

    def close(self) -> None:
        """Reap exited children (the endpoints keep running)."""
        for proc in self._children.values():
            proc.poll()

    def _path(self, env: str, component: str) -> Path:
        return self.root / env / "endpoints" / f"{env}-{component}.json"

    def records(self, env: str) -> dict[str, dict[str, Any]]:
        """Component → endpoint record, the address filled in from the log once announced."""
        out = {}
        for path in sorted((self.root / env / "endpoints").glob("*.json")):
            try:
                record = json.loads(path.read_text(encoding="utf-8"))
            except (OSError, ValueError):
                continue
            if isinstance(record, dict) and isinstance(record.get("component"), str):
                if record.get("address") is None:
                    self._fill_address(record)
                out[record["component"]] = record
        return out

    def address(self, env: str, component: str) -> str | None:
        """The stable HOST:PORT of `<env>-<component>` once it has been announced."""
        record = self.records(env).get(component)
        return None if record is None else record.get("address")

    def alive(self, record: Mapping[str, Any]) -> bool:
        """Whether the recorded process still runs (same pid and start time, not a zombie)."""
        proc = self._children.get(int(record["pid"]))
        if proc is not None and proc.poll() is not None:
            return False
        return self.start_time(int(record["pid"])) == record.get("startTime")

    def sync(self, env: str, components: Sequence[str]) -> None:
        """Make the endpoints of `env` exactly `components`: adopt live ones, restart dead ones
        on their recorded address, start new ones on a free port, stop the others."""
        records = self.records(env)
        for component, record in records.items():
            if component not in components:
                self.stop(env, record)
        for component in sorted(components):
            old = records.get(component)
            if old is not None and self.alive(old):
                continue
            if old is not None:
                log.warning("endpoint %s-%s (pid %s) is gone; restarting it on %s", env,
                            component, old["pid"], old.get("address"))
            self._start(env, component, old)

    def _write(self, record: Mapping[str, Any]) -> None:
        path = self._path(str(record["environment"]), str(record["component"]))
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(record, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)

    def _fill_address(self, record: dict[str, Any]) -> bool:
        """Read the process's `listening` line from its log; True once the address is known."""
        event = announcement(record["log"], int(record.get("logOffset", 0)))
        if event is None:
            return False
        record["address"] = event.get("endpoint")
        self._write(record)
        return True

    def _start(self, env: str, component: str, old: Mapping[str, Any] | None) -> None:
        """Spawn the endpoint (on the old record's address if any), record it, wait for it to
        announce its address."""
        name = f"{env}-{component}"
        listen = str(old.get("address") or "127.0.0.1:0") if old else "127.0.0.1:0"
        env_dir = self.root / env
        command = [sys.executable, "-m", "lockstep.rollout.endpoint",
                   "--routes", str(env_dir / "routes.json"), "--component", component,
                   "--listen", listen, "--retry-for", f"{self.retry_for:g}"]
        log_path = env_dir / "logs" / f"{name}.endpoint.log"
        environ = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8"}
        spawned = spawn(command, env=environ, cwd=env_dir, log_path=log_path)
        proc = spawned.proc
        self._children[proc.pid] = proc
        record: dict[str, Any] = {
            "name": name, "environment": env, "component": component, "pid": proc.pid,
            "startTime": self.start_time(proc.pid), "address": None, "listen": listen,
            "log": str(log_path), "logOffset": spawned.log_offset, "command": command}
        try:
            self._write(record)
        except BaseException:
            spawned.abort()
            raise
        spawned.go()
        log.info("started endpoint %s (pid %d) on %s", name, proc.pid, listen)
        deadline = time.monotonic() + BOOT_TIMEOUT
        while not self._fill_address(record):
            if proc.poll() is not None or time.monotonic() > deadline:
                if proc.poll() is None:
                    self.stop(env, record)
                why = last_line(log_path, spawned.log_offset)
                raise EndpointError(f"endpoint {name} did not start listening on {listen}: "
                                    f"{why}", f"see its log {log_path}")
            time.sleep(0.02)

    def stop(self, env: str, record: Mapping[str, Any]) -> None:
        """Stop an endpoint's process group (SIGTERM, then SIGKILL) and drop its record."""
        pid = int(record["pid"])
        if not stop_group(pid, lambda: self.alive(record), STOP_TIMEOUT):
            raise EndpointError(f"endpoint {record['name']} (pid {pid}) survived SIGKILL",
                                "stop it by hand; the next pass retries")
        proc = self._children.pop(pid, None)
        if proc is not None:
            proc.wait()
        self._path(env, str(record["component"])).unlink(missing_ok=True)
        log.info("stopped endpoint %s (pid %d)", record["name"], pid)

    def stop_all(self, env: str) -> None:
        """Stop every endpoint of `env` (its records go too)."""
        for record in self.records(env).values():
            self.stop(env, record)


if __name__ == "__main__":
    sys.exit(main())
