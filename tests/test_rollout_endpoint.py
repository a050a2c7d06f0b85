"""The stable endpoint `<env>-<c>`: the proxy process on its own (routes re-read per connection,
bounded waiting, bad arguments) and end to end through the controller with real demo-service
processes (it follows rollouts on one port, outlives a controller crash, comes back on its port,
and holds a connection across the switch)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import socketserver
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.rollout.driver import LocalDriver, process_start_time
from tests import test_rollout_controller
from tests.test_rollout_controller import ENV, IMAGE, World, _cond, apply, lockstep, spec

idle_world = test_rollout_controller.idle_world  # the fixtures, shared
world = test_rollout_controller.world


def _info(addr: str) -> dict[str, Any]:
    """GET /info through `addr` on a new connection."""
    resp = httpx.get(f"http://{addr}/info", timeout=30)
    assert resp.status_code == 200, resp.text
    return dict(resp.json())


def _endpoint_record(w: World, component: str = "db") -> dict[str, Any]:
    path = w.driver.env_dir(ENV) / "endpoints" / f"{ENV}-{component}.json"
    return dict(json.loads(path.read_text(encoding="utf-8")))


def _local(w: World) -> LocalDriver:
    driver = w.controller.driver
    assert isinstance(driver, LocalDriver)
    return driver


# --- the proxy process alone ---------------------------------------------------------------------

class _Tagged(socketserver.ThreadingTCPServer):
    """A TCP server answering every connection with its tag, then what it received."""

    daemon_threads = True
    allow_reuse_address = True

    def __init__(self, tag: bytes) -> None:
        class Handler(socketserver.StreamRequestHandler):
            def handle(self) -> None:
                self.wfile.write(tag + b":" + self.rfile.readline())

        super().__init__(("127.0.0.1", 0), Handler)
        threading.Thread(target=self.serve_forever, daemon=True).start()

    @property
    def addr(self) -> str:
        return f"127.0.0.1:{self.server_address[1]}"


def _ask(addr: str, line: bytes = b"hello\n") -> bytes:
    """Send one line through `addr` and read until the other side closes."""
    host, port = addr.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=30) as s:
        s.sendall(line)
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(4096):
            chunks.append(data)
    return b"".join(chunks)


def _write_routes(path: Path, routes: dict[str, Any]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(routes), encoding="utf-8")
    os.replace(tmp, path)


@pytest.fixture
def proxy(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[str], str, Path]]:
    """An endpoint process for component `db` of routes.json in tmp_path (absent at first),
    waiting at most 0.5 s for a target; yields it, its address and the routes path."""
    routes = tmp_path / "env" / "routes.json"
    routes.parent.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "lockstep.rollout.endpoint", "--routes", str(routes),
         "--component", "db", "--listen", "127.0.0.1:0", "--retry-for", "0.5"],
        stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert proc.stdout is not None
    event = json.loads(proc.stdout.readline())
    assert event["event"] == "listening" and event["component"] == "db"
    yield proc, str(event["endpoint"]), routes
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    assert proc.wait(10) == 0


def test_proxy_follows_routes_json_per_connection(
        proxy: tuple[subprocess.Popen[str], str, Path]) -> None:
    """No route: the connection is closed after the bounded wait; a route: relayed both ways;
    a rewritten route: the next connection goes to the new target, on the same address."""
    _, addr, routes = proxy
    started = time.monotonic()
    assert _ask(addr) == b""
    assert time.monotonic() - started >= 0.5  # it waited for a route before giving up
    one, two = _Tagged(b"one"), _Tagged(b"two")
    try:
        _write_routes(routes, {"db": {"public": one.addr, "generation": 1},
                               "web": {"public": two.addr, "generation": None}})
        assert _ask(addr) == b"one:hello\n"
        assert _ask(addr, b"again\n") == b"one:again\n"
        _write_routes(routes, {"db": {"public": two.addr, "generation": 2}})
        assert _ask(addr) == b"two:hello\n"
    finally:
        one.shutdown()
        two.shutdown()
        one.server_close()
        two.server_close()
    assert _ask(addr) == b""  # the routed target is gone: closed after the wait


def test_proxy_exits_when_the_environment_directory_is_deleted(
        proxy: tuple[subprocess.Popen[str], str, Path]) -> None:
    """A deleted environment (its directory gone) leaves no orphaned endpoint behind."""
    proc, _, routes = proxy
    shutil.rmtree(routes.parent)
    assert proc.wait(15) == 0


@pytest.mark.parametrize("args, message", [
    (["--listen", "nowhere"], "'nowhere' is not HOST:PORT"),
    (["--listen", "127.0.0.1:0", "--retry-for", "-1"], "not a finite non-negative number"),
])
def test_proxy_bad_arguments(tmp_path: Path, args: list[str], message: str) -> None:
    """Bad arguments: one `error:` line with a hint, exit 2."""
    done = subprocess.run([sys.executable, "-m", "lockstep.rollout.endpoint", "--routes",
                           str(tmp_path / "routes.json"), "--component", "db", *args],
                          capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert done.stderr.startswith("error: ") and message in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1


def test_proxy_port_taken(tmp_path: Path) -> None:
    """A stable address someone else holds: exit 2 naming it and what to do."""
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        done = subprocess.run([sys.executable, "-m", "lockstep.rollout.endpoint", "--routes",
                               str(tmp_path / "routes.json"), "--component", "db",
                               "--listen", f"127.0.0.1:{port}"],
                              capture_output=True, text=True, timeout=30)
    assert done.returncode == 2
    assert f"cannot listen on 127.0.0.1:{port}" in done.stderr
    assert "remove the endpoint's record" in done.stderr


# --- end to end ----------------------------------------------------------------------------------

def test_endpoint_follows_a_rollout_on_one_port(world: World) -> None:
    """The endpoint answers with the active generation; during a WaitUntilReady rollout every
    read through it succeeds; afterwards the same process on the same port serves generation
    2, which routes.json names."""
    apply(world.ws, spec("1.0"))
    world.wait_reason("Applied", 1)
    addr = world.driver.endpoint(ENV, "db")
    assert addr is not None and addr.startswith("127.0.0.1:")
    record = _endpoint_record(world)
    assert record["address"] == addr and record["startTime"] == process_start_time(record["pid"])
    assert _info(addr)["generation"] == 1
    assert httpx.put(f"http://{addr}/kv/greeting", content=b"hello").status_code == 200

    failures: list[str] = []
    reads = 0
    done = threading.Event()

    def read() -> None:
        nonlocal reads
        while not done.is_set():
            try:
                resp = httpx.get(f"http://{addr}/kv/greeting", timeout=30)
                ok = resp.status_code == 200 and resp.json()["value"] == "hello"
            except httpx.HTTPError as exc:
                failures.append(repr(exc))
            else:
                reads += 1
                if not ok:
                    failures.append(f"{resp.status_code} {resp.text}")

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    apply(world.ws, spec("1.1"))
    world.wait_reason("Applied", 2)
    done.set()
    reader.join(60)
    assert failures == [] and reads > 0
    assert world.driver.endpoint(ENV, "db") == addr
    assert _endpoint_record(world)["pid"] == record["pid"]
    assert world.driver.routes(ENV)["db"]["generation"] == 2
    info = _info(addr)
    assert info["generation"] == 2 and info["release"] == "1.1"


def test_endpoint_outlives_a_controller_crash_and_is_adopted(idle_world: World) -> None:
    """A controller SIGKILLed after the first rollout leaves its endpoint serving; the next
    controller adopts it (same pid, same port) and routes it to the next generation."""
    w = idle_world
    controller = subprocess.Popen([sys.executable, "-m", "lockstep", "controller", "run",
                                   "-C", str(w.ws)], stdin=subprocess.DEVNULL,
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        apply(w.ws, spec("1.0"))
        w.wait_reason("Applied", 1)
    finally:
        controller.kill()
        controller.wait(30)
    addr = w.driver.endpoint(ENV, "db")
    assert addr is not None
    pid = _endpoint_record(w)["pid"]
    assert _info(addr)["generation"] == 1  # served with no controller running

    w.thread.start()
    apply(w.ws, spec("1.1"))
    w.wait_reason("Applied", 2)
    assert _endpoint_record(w)["pid"] == pid
    assert w.driver.endpoint(ENV, "db") == addr
    assert _info(addr)["generation"] == 2


def test_a_killed_endpoint_comes_back_on_its_port(world: World) -> None:
    """SIGKILL the endpoint: its port refuses; the next pass (an edit that starts no rollout)
    starts a new process on the same port."""
    apply(world.ws, spec("1.0"))
    first = world.wait_reason("Applied", 1)
    addr = world.driver.endpoint(ENV, "db")
    assert addr is not None
    old = _endpoint_record(world)
    os.kill(old["pid"], signal.SIGKILL)
    world.wait("the endpoint gone", lambda _: process_start_time(old["pid"]) is None)
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://{addr}/info")

    apply(world.ws, spec("1.0", forcePromote=first["status"]["lastCompletedRolloutHash"]))
    meta_generation = world.status()["metadata"]["generation"]
    world.wait("the edit observed", lambda o: o["status"]["observedGeneration"] == meta_generation)
    # ApplyStateless, which restarts it, is the pass's step after the status write
    world.wait("a new endpoint announced", lambda _: (
        world.driver.endpoint(ENV, "db") is not None
        and _endpoint_record(world)["pid"] != old["pid"]))
    new = _endpoint_record(world)
    assert new["address"] == addr
    assert new["command"][new["command"].index("--listen") + 1] == addr
    assert _info(addr)["generation"] == 1
    assert sorted(world.generations()) == [1]  # no rollout


def test_a_connection_is_held_across_the_switch(idle_world: World) -> None:
    """The routed generation is gone (as when fenced) and the next one not routed yet: a request
    through the endpoint waits instead of failing, and is answered by the promoted one."""
    w = idle_world
    _local(w).endpoints.retry_for = 60.0  # the promotion below goes through a CLI subprocess
    w.thread.start()
    apply(w.ws, spec("1.0", rolloutStrategy="ManuallyPromote"))
    w.wait_reason("Applied", 1)
    addr = w.driver.endpoint(ENV, "db")
    assert addr is not None
    apply(w.ws, spec("1.1", rolloutStrategy="ManuallyPromote"))
    w.wait_reason("ReadyToPromote", 1)
    gen1 = w.generations()[1]
    os.killpg(gen1["pid"], signal.SIGKILL)
    w.wait("generation 1 gone", lambda _: process_start_time(gen1["pid"]) is None)

    answer: dict[str, Any] = {}
    asking = threading.Thread(target=lambda: answer.update(_info(addr)), daemon=True)
    asking.start()
    log = Path(_endpoint_record(w)["log"])
    w.wait("the endpoint retrying", lambda _: "retrying" in log.read_text(encoding="utf-8"))
    assert asking.is_alive() and not answer

    done = lockstep(w.ws, "rollout", "promote", ENV, "--force")
    assert done.returncode == 0, done.stderr
    w.wait_reason("Applied", 2)
    asking.join(60)
    assert answer["generation"] == 2 and answer["release"] == "1.1"


def test_a_stateless_component_has_an_endpoint_across_in_place_updates(world: World) -> None:
    """A stateless component is routed to its one workload `<env>-<c>`: an in-place update
    keeps the endpoint's port; removing the component stops its endpoint."""
    db = {"image": f"{IMAGE}:1.0"}
    web = {"image": f"{IMAGE}:1.0", "stateless": True}
    apply(world.ws, {"components": {"db": db, "web": web}})
    world.wait_reason("Applied", 1)
    addr = world.driver.endpoint(ENV, "web")
    assert addr is not None and addr != world.driver.endpoint(ENV, "db")
    assert _info(addr)["release"] == "1.0"
    route = world.driver.routes(ENV)["web"]
    assert route["generation"] is None and route["workload"] == f"{ENV}-web"
    pid = _endpoint_record(world, "web")["pid"]

    apply(world.ws, {"components": {"db": db, "web": web | {"image": f"{IMAGE}:1.1"}}})
    world.wait("web updated in place",
               lambda _: world.driver.routes(ENV)["web"]["public"] != route["public"])
    assert _info(addr)["release"] == "1.1"
    assert world.driver.endpoint(ENV, "web") == addr
    assert _endpoint_record(world, "web")["pid"] == pid
    assert sorted(world.generations()) == [1]  # no rollout

    apply(world.ws, spec("1.0"))
    world.wait("web's endpoint stopped",
               lambda _: world.driver.endpoint(ENV, "web") is None)
    assert process_start_time(pid) is None
    assert "web" not in world.driver.routes(ENV)
    assert _cond(world.status())["reason"] == "Applied"
