"""The rollout controller end to end: real demo-service processes through the LocalDriver, the
controller looping in a thread, the CLI in subprocesses; every wait is on the stored status."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.rollout.controller import Controller
from lockstep.rollout.driver import DriverError, LocalDriver, image_command
from lockstep.rollout.processes import process_start_time
from lockstep.rollout.store import EnvironmentStore

ENV = "shop"
IMAGE = "demo.local/demo/demo-service"


def lockstep(ws: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the CLI against workspace `ws`."""
    return subprocess.run([sys.executable, "-m", "lockstep", *args, "-C", str(ws)],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)


def apply(ws: Path, spec: dict[str, Any]) -> None:
    """`lockstep rollout apply` an Environment named ENV with `spec`."""
    path = ws / "env.json"
    path.write_text(json.dumps({"apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
                                "metadata": {"name": ENV}, "spec": spec}), encoding="utf-8")
    done = lockstep(ws, "rollout", "apply", str(path))
    assert done.returncode == 0, done.stderr


def spec(tag: str, **extra: Any) -> dict[str, Any]:
    """A components-mode spec with one stateful demo-service component `db`."""
    return {"components": {"db": {"image": f"{IMAGE}:{tag}"}}, **extra}


class World:
    """A workspace with a controller running in a thread."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws
        self.controller = Controller.for_workspace(ws)
        self.store: EnvironmentStore = self.controller.store
        self.driver = LocalDriver(ws)
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self.controller.run, kwargs={"stop": self.stop},
                                       daemon=True)

    def status(self) -> dict[str, Any]:
        """The stored object as a client reads it."""
        return self.store.get(ENV).full()

    def wait(self, what: str, check: Callable[[dict[str, Any]], bool],
             timeout: float = 30.0) -> dict[str, Any]:
        """Poll the stored object until `check` holds (failing with the last status)."""
        deadline = time.monotonic() + timeout
        obj: dict[str, Any] = {}
        while time.monotonic() < deadline:
            obj = self.status()
            if check(obj):
                return obj
            self.stop.wait(0.05)
        raise AssertionError(f"timed out waiting for {what}: {json.dumps(obj.get('status'))}")

    def wait_reason(self, reason: str, active: int) -> dict[str, Any]:
        """Wait until the condition has `reason` and `activeGeneration` is `active`."""
        return self.wait(f"{reason} with active {active}", lambda o: (
            _cond(o).get("reason") == reason
            and o.get("status", {}).get("activeGeneration") == active))

    def generations(self) -> dict[int, dict[str, Any]]:
        """Generation → its `db` workload record."""
        return {r["generation"]: r for r in self.driver.records(ENV)
                if r.get("generation") is not None}

    def reasons(self) -> list[str]:
        """The condition history's reasons, oldest first."""
        return [str(h["reason"]) for h in self.store.history(ENV)]


def _cond(obj: dict[str, Any]) -> dict[str, Any]:
    return next((c for c in obj.get("status", {}).get("conditions") or []), {})


@pytest.fixture
def idle_world(tmp_path: Path) -> Iterator[World]:
    """A workspace whose controller thread the test starts; afterwards every workload is
    stopped."""
    w = World(tmp_path)
    yield w
    w.stop.set()
    if w.thread.is_alive():
        w.thread.join(60)
    for record in w.driver.records(ENV):
        w.driver.teardown(ENV, record["generation"])
    w.driver.endpoints.stop_all(ENV)
    assert not w.driver.records(ENV)


@pytest.fixture
def world(idle_world: World) -> World:
    """A workspace with its controller running."""
    idle_world.thread.start()
    return idle_world


def test_image_rule() -> None:
    """Only demo-service images map to a command; the tag is the release."""
    command, release = image_command(f"{IMAGE}:1.2@sha256:{'a' * 64}", Path("/d"))
    assert release == "1.2"
    assert command[1:3] == ["-m", "lockstep.rollout.demo_service"]
    assert command[command.index("--release") + 1] == "1.2"
    with pytest.raises(DriverError, match="example/web:1"):
        image_command("example/web:1", Path("/d"))


def test_wait_until_ready_end_to_end(world: World) -> None:
    """Generation 1 leads; a new tag brings generation 2 up read-only, it is promoted, 1 is
    fenced and torn down, and data written through 1 reads back through 2."""
    apply(world.ws, spec("1.0"))
    first = world.wait_reason("Applied", 1)
    assert _cond(first)["message"] == "Successfully applied changes for generation 1"
    assert first["status"]["lastCompletedRelease"] == "1.0"
    gen1 = world.generations()[1]
    assert gen1["name"] == f"{ENV}-db-1" and gen1["release"] == "1.0"
    assert Path(gen1["log"]).parent == world.ws / ".lockstep/rollouts" / ENV / "logs"
    route = world.driver.routes(ENV)["db"]
    assert route["generation"] == 1 and route["public"] == gen1["public"]
    put = httpx.put(f"http://{gen1['public']}/kv/greeting", content=b"hello")
    assert put.status_code == 200, put.text

    apply(world.ws, spec("1.1"))
    second = world.wait_reason("Applied", 2)
    status = second["status"]
    assert _cond(second)["message"] == "Successfully applied changes for generation 2"
    assert status["lastCompletedRolloutHash"] == status["requestedRolloutHash"]
    assert status["lastCompletedRelease"] == "1.1"
    assert world.reasons() == ["Applying", "Promoting", "Applied"] * 2
    gens = world.generations()
    assert list(gens) == [2]
    assert process_start_time(gen1["pid"]) is None  # generation 1's process is gone
    gen2 = gens[2]
    boot = [json.loads(line) for line in Path(gen2["log"]).read_text().splitlines()
            if line.startswith('{"event": "listening"')]
    assert boot[0]["role"] == "read-only" and boot[0]["generation"] == 2
    assert world.driver.routes(ENV)["db"]["public"] == gen2["public"]
    got = httpx.get(f"http://{gen2['public']}/kv/greeting")
    assert got.json() == {"key": "greeting", "value": "hello", "generation": 1}
    assert httpx.put(f"http://{gen2['public']}/kv/greeting", content=b"hi").status_code == 200


def test_manually_promote_parks_until_forced(world: World) -> None:
    """ManuallyPromote waits at ReadyToPromote; a stale forcePromote starts nothing; `rollout
    promote --force` promotes."""
    apply(world.ws, spec("1.0", rolloutStrategy="ManuallyPromote"))
    first = world.wait_reason("Applied", 1)  # the first deploy ignores the strategy
    completed = first["status"]["lastCompletedRolloutHash"]

    apply(world.ws, spec("1.1", rolloutStrategy="ManuallyPromote"))
    parked = world.wait_reason("ReadyToPromote", 1)
    assert _cond(parked)["message"] == "Ready to promote generation 2"
    gens = world.generations()
    assert sorted(gens) == [1, 2]
    assert world.driver.leader_status(gens[2]) == "ReadyToPromote"
    assert world.driver.routes(ENV)["db"]["generation"] == 1

    # Only forcePromote changes (to a hash no rollout is for): no new generation, still parked.
    apply(world.ws, spec("1.1", rolloutStrategy="ManuallyPromote", forcePromote=completed))
    meta_generation = world.status()["metadata"]["generation"]
    again = world.wait("the edit observed",
                       lambda o: o["status"]["observedGeneration"] == meta_generation)
    assert _cond(again)["reason"] == "ReadyToPromote"
    assert _cond(again)["lastTransitionTime"] == _cond(parked)["lastTransitionTime"]
    assert {g: r["pid"] for g, r in world.generations().items()} == \
        {g: r["pid"] for g, r in gens.items()}

    done = lockstep(world.ws, "rollout", "promote", ENV, "--force")
    assert done.returncode == 0, done.stderr
    assert world.status()["spec"]["forcePromote"] == parked["status"]["requestedRolloutHash"]
    promoted = world.wait_reason("Applied", 2)
    assert promoted["status"]["lastCompletedRolloutHash"] == \
        parked["status"]["requestedRolloutHash"]
    assert list(world.generations()) == [2]
    assert world.reasons()[-3:] == ["ReadyToPromote", "Promoting", "Applied"]
    history = lockstep(world.ws, "rollout", "history", ENV)
    assert "ReadyToPromote" in history.stdout and history.returncode == 0


def test_forcepromote_only_starts_nothing(world: World) -> None:
    """At rest, changing only forcePromote records the new observedGeneration and nothing else."""
    apply(world.ws, spec("1.0"))
    first = world.wait_reason("Applied", 1)
    pid = world.generations()[1]["pid"]
    apply(world.ws, spec("1.0", forcePromote=first["status"]["lastCompletedRolloutHash"]))
    meta_generation = world.status()["metadata"]["generation"]
    assert meta_generation == 2
    after = world.wait("the edit observed",
                       lambda o: o["status"]["observedGeneration"] == meta_generation)
    assert _cond(after)["reason"] == "Applied" and after["status"]["activeGeneration"] == 1
    assert {g: r["pid"] for g, r in world.generations().items()} == {1: pid}
    assert world.reasons() == ["Applying", "Promoting", "Applied", "Applied"]
    assert _cond(after)["message"] == _cond(first)["message"]  # only the generation moves (R4)


def test_unknown_image_is_failed_deploy(world: World) -> None:
    """An image with no local command is a FailedDeploy naming it; nothing is started."""
    apply(world.ws, {"components": {"db": {"image": "example/web:1"}}})
    failed = world.wait_reason("FailedDeploy", 0)
    assert "example/web:1" in _cond(failed)["message"]
    assert _cond(failed)["message"].startswith("Failed to apply changes for generation 1: ")
    assert world.generations() == {}
    shown = lockstep(world.ws, "rollout", "status", ENV)
    assert "FailedDeploy" in shown.stdout and shown.returncode == 0


def test_once_then_a_restarted_controller_adopts_the_workloads(idle_world: World) -> None:
    """`controller run --once` starts generation 1 and exits, leaving it running and recorded;
    a new controller re-observes it from the record (same pid) and completes the rollout."""
    world = idle_world
    apply(world.ws, spec("1.0"))
    once = lockstep(world.ws, "controller", "run", "--once")
    assert once.returncode == 0, once.stderr
    assert _cond(world.status())["reason"] in ("Applying", "Applied")
    record = world.generations()[1]
    assert world.driver.alive(record)  # outlived the controller that started it
    world.thread.start()
    world.wait_reason("Applied", 1)
    assert world.generations()[1]["pid"] == record["pid"]
    apply(world.ws, spec("1.1"))
    world.wait_reason("Applied", 2)
    assert process_start_time(record["pid"]) is None  # torn down through its record alone
    assert list(world.generations()) == [2]


def _alive_generations(world: World) -> set[int]:
    return {g for g, r in world.generations().items() if process_start_time(r["pid"])}


def test_immediately_promote_tears_the_old_generation_down_first(world: World) -> None:
    """ImmediatelyPromoteCausingDowntime: generation 1 is gone before generation 2 starts (never
    two at once, sampled every 10 ms), 2 is forced through catch-up, and the data survives."""
    apply(world.ws, spec("1.0"))
    first = world.wait_reason("Applied", 1)
    gen1 = world.generations()[1]
    assert httpx.put(f"http://{gen1['public']}/kv/k", content=b"v1").status_code == 200
    overlaps: list[set[int]] = []
    sampling = threading.Event()

    def sample() -> None:
        while not sampling.is_set():
            alive = _alive_generations(world)
            if len(alive) > 1:
                overlaps.append(alive)
            sampling.wait(0.01)

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    apply(world.ws, spec("1.1", rolloutStrategy="ImmediatelyPromoteCausingDowntime"))
    second = world.wait_reason("Applied", 2)
    sampling.set()
    sampler.join(10)
    assert overlaps == [], f"generations ran side by side: {overlaps}"
    assert second["status"]["lastCompletedRelease"] == "1.1"
    assert second["status"]["lastCompletedRolloutHash"] != \
        first["status"]["lastCompletedRolloutHash"]
    gen2 = world.generations()[2]
    assert httpx.get(f"http://{gen2['public']}/kv/k").json()["value"] == "v1"


def test_a_spec_change_during_a_rollout_replaces_the_pending_generation(world: World) -> None:
    """A parked candidate for 1.1 is torn down when the spec moves to 1.2; the new candidate
    (the same number: only one can exist) is for the new hash and is the one promoted."""
    apply(world.ws, spec("1.0", rolloutStrategy="ManuallyPromote"))
    world.wait_reason("Applied", 1)
    apply(world.ws, spec("1.1", rolloutStrategy="ManuallyPromote"))
    parked = world.wait_reason("ReadyToPromote", 1)
    stale = world.generations()[2]
    assert stale["release"] == "1.1"

    apply(world.ws, spec("1.2", rolloutStrategy="ManuallyPromote"))
    replaced = world.wait("a candidate for 1.2 parked", lambda o: (
        _cond(o).get("reason") == "ReadyToPromote"
        and o["status"]["requestedRolloutHash"] != parked["status"]["requestedRolloutHash"]))
    candidate = world.generations()[2]
    assert candidate["release"] == "1.2" and candidate["pid"] != stale["pid"]
    assert process_start_time(stale["pid"]) is None, "the 1.1 candidate still runs"
    done = lockstep(world.ws, "rollout", "promote", ENV, "--force")
    assert done.returncode == 0, done.stderr
    promoted = world.wait_reason("Applied", 2)
    assert promoted["status"]["lastCompletedRelease"] == "1.2"
    assert promoted["status"]["lastCompletedRolloutHash"] == \
        replaced["status"]["requestedRolloutHash"]
