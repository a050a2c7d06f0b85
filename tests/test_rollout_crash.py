"""SIGKILL of the rollout controller in each phase of a rollout, then a restart (issue 7, Must
show 3; spec/rollouts.md §5.3, §5.5).

Each test rolls a real demo-service environment out to 1.0, writes data through generation 1,
applies 1.1 and runs `lockstep controller run --test-crash-at POINT`. It first proves where the
controller died (the stored status, the condition history, the records, which processes live,
what each reports on /api/leader/status, the shared state's stateGeneration, routes.json), so a
crash point moved by one step fails it; then a restarted controller must finish the rollout: one
generation left, leading, recording the requested hash, the old processes gone, the data intact.
"""

from __future__ import annotations

import signal
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.rollout.demo_service import STATE_FILE
from lockstep.rollout.hashing import rollout_hash
from lockstep.rollout.processes import process_start_time
from lockstep.rollout.protocol import SharedState
from tests.test_rollout_controller import ENV, IMAGE, World, apply, lockstep

# Generation 1 checks fencing only every 10 s (the protocol's longest interval), so the old
# leader usually outlives its promotion and teardown really stops it.
V1_ARGS = ["--fence-interval", "10"]
# The first two points need the candidate still catching up when it is applied, and only later
# ReadyToPromote: otherwise a kill right after Apply and one before the Promoting write would
# leave the same world behind.
CATCHUP = 2.0
APPLIED = ["Applying", "Promoting", "Applied"]


def environment(tag: str, *args: str) -> dict[str, Any]:
    """A spec with one stateful demo-service component `db` running `tag` with `args`."""
    return {"components": {"db": {"image": f"{IMAGE}:{tag}", "args": [*V1_ARGS, *args]}}}


@dataclass(frozen=True)
class AtKill:
    """What must hold when the controller has died at one crash point."""

    reason: str  # the stored UpToDate reason
    history: list[str]  # the condition history after the first rollout's
    candidate: tuple[str, ...]  # what generation 2 may report on /api/leader/status
    state_generation: int  # the shared state's, once generation 2 has settled
    old_alive: bool | None  # whether generation 1's process runs (None: either)
    routed: int  # the generation routes.json sends `db` to
    catchup: float = 0.0  # generation 2's --catchup-delay


CASES = {
    "rollout-after-apply": AtKill("Applying", ["Applying"], ("Initializing",), 1, True, 1,
                                  CATCHUP),
    "rollout-before-promoting": AtKill("Applying", ["Applying"], ("ReadyToPromote",), 1, True, 1,
                                       CATCHUP),
    "rollout-before-promote-call": AtKill("Promoting", ["Applying", "Promoting"],
                                          ("ReadyToPromote",), 1, True, 1),
    "rollout-after-promote-call": AtKill("Promoting", ["Applying", "Promoting"],
                                         ("Promoting", "IsLeader"), 2, None, 1),
    "rollout-teardown-stopped": AtKill("Promoting", ["Applying", "Promoting"], ("IsLeader",), 2,
                                       False, 2),
}
MESSAGES = {"Applying": "Applying changes for generation 2",
            "Promoting": "Attempting to promote generation 2"}


class Crashable:
    """One workspace and the controller threads run against it (one at a time)."""

    def __init__(self, ws: Path) -> None:
        self.ws = ws
        self.worlds: list[World] = []

    def start(self) -> World:
        """Start a fresh controller (new store, driver, thread) on the workspace."""
        world = World(self.ws)
        self.worlds.append(world)
        world.thread.start()
        return world

    def stop(self) -> None:
        """Stop every controller thread and wait for it."""
        for world in self.worlds:
            world.stop.set()
            world.thread.join(60)
            assert not world.thread.is_alive()


@pytest.fixture
def crashable(tmp_path: Path) -> Iterator[Crashable]:
    """A workspace; afterwards every controller is stopped and every workload torn down."""
    c = Crashable(tmp_path)
    yield c
    c.stop()
    if c.worlds:
        driver = c.worlds[-1].driver
        for record in driver.records(ENV):
            driver.teardown(ENV, record["generation"])
        driver.endpoints.stop_all(ENV)
        assert not driver.records(ENV)


def leader_status(record: dict[str, Any]) -> str:
    """GET /api/leader/status on the workload's internal address (`unreachable` on error)."""
    try:
        resp = httpx.get(f"http://{record['internal']}/api/leader/status", timeout=5)
        return str(resp.json()["status"])
    except (httpx.HTTPError, ValueError, KeyError):
        return "unreachable"


def alive(record: dict[str, Any]) -> bool:
    """Whether the recorded process still runs (same pid and start time, not a zombie)."""
    return process_start_time(int(record["pid"])) == int(record["startTime"])


def state_generation(ws: Path) -> int:
    """The shared state's stateGeneration: which generation last took over the data."""
    record = SharedState(ws / ".lockstep/rollouts" / ENV / "state/db" / STATE_FILE).read()
    assert record is not None
    return record.state_generation


def until(what: str, check: Callable[[], bool], timeout: float = 20.0) -> None:
    """Poll `check` (an observation of another process) until it holds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def put(record: dict[str, Any], key: str, value: str) -> httpx.Response:
    """PUT /kv/<key> on the workload's public address."""
    return httpx.put(f"http://{record['public']}/kv/{key}", content=value.encode())


def refused(record: dict[str, Any]) -> bool:
    """Whether a write through the workload fails (answered 503, or nothing listens)."""
    try:
        return put(record, "refused", "x").status_code == 503
    except httpx.TransportError:
        return True


def condition(obj: dict[str, Any]) -> dict[str, Any]:
    """The stored UpToDate condition."""
    return next(c for c in obj["status"]["conditions"] if c["type"] == "UpToDate")


@pytest.mark.parametrize("point", sorted(CASES))
def test_a_controller_killed_in_each_phase_finishes_the_rollout_on_restart(
        crashable: Crashable, point: str) -> None:
    """Killed at `point` during 1.0 → 1.1, the controller leaves exactly the world CASES names;
    the next one adopts the candidate and completes the rollout with the data intact."""
    case = CASES[point]
    ws = crashable.ws
    first = crashable.start()
    apply(ws, environment("1.0"))
    completed = first.wait_reason("Applied", 1)["status"]["lastCompletedRolloutHash"]
    gen1 = first.generations()[1]
    before = {f"k{i}": f"v{i}" for i in range(3)}
    for key, value in before.items():
        assert put(gen1, key, value).status_code == 200
    crashable.stop()

    apply(ws, environment("1.1", "--catchup-delay", str(case.catchup)))
    requested = rollout_hash(first.status())
    assert requested != completed
    crashed = lockstep(ws, "controller", "run", "--test-crash-at", point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert f"SIGKILLs itself at {point!r}" in crashed.stderr

    # --- the world the kill left behind -------------------------------------------------------
    obj = first.status()
    status, cond = obj["status"], condition(obj)
    assert (cond["reason"], cond["status"], cond["message"]) == \
        (case.reason, "Unknown", MESSAGES[case.reason])
    assert (status["activeGeneration"], status["requestedRolloutHash"],
            status["lastCompletedRolloutHash"]) == (1, requested, completed)
    assert first.reasons() == APPLIED + case.history
    gens = first.generations()
    assert sorted(gens) == [1, 2]
    gen2 = gens[2]
    assert gen2["rolloutHash"] == requested and gen2["release"] == "1.1"
    assert gens[1]["pid"] == gen1["pid"]
    assert alive(gen2)
    assert leader_status(gen2) in case.candidate
    if case.old_alive is not None:
        assert alive(gen1) is case.old_alive
    if case.old_alive:
        assert leader_status(gen1) == "IsLeader"
    assert first.driver.routes(ENV)["db"]["generation"] == case.routed
    if case.state_generation == 2:  # promoted: the candidate finishes taking over on its own
        until("generation 2 to lead", lambda: leader_status(gen2) == "IsLeader")
    assert state_generation(ws) == case.state_generation
    leader = gen2 if case.state_generation == 2 else gen1
    assert refused(gen2 if leader is gen1 else gen1), "two generations accept writes"
    assert put(leader, "during", point).status_code == 200  # written between kill and restart
    before["during"] = point

    # --- a restarted controller finishes the rollout ------------------------------------------
    second = crashable.start()
    done = second.wait_reason("Applied", 2)
    status = done["status"]
    assert condition(done)["status"] == "True"
    assert condition(done)["message"] == "Successfully applied changes for generation 2"
    assert status["lastCompletedRolloutHash"] == status["requestedRolloutHash"] == requested
    assert status["lastCompletedRelease"] == "1.1"
    assert second.reasons() == APPLIED * 2  # no failure, no second attempt
    final = second.generations()
    assert list(final) == [2]
    assert final[2]["pid"] == gen2["pid"], "the candidate was restarted, not adopted"
    assert final[2]["rolloutHash"] == requested
    assert leader_status(final[2]) == "IsLeader"
    assert not alive(gen1), "generation 1 still runs"
    assert state_generation(ws) == 2
    assert second.driver.routes(ENV)["db"]["generation"] == 2
    for key, value in before.items():
        got = httpx.get(f"http://{final[2]['public']}/kv/{key}")
        assert got.status_code == 200 and got.json()["value"] == value, (key, got.text)
    assert put(final[2], "after", "x").status_code == 200


def gate_held(ws: Path, generation: int) -> list[int]:
    """Pids of processes started for `ws` with LOCKSTEP_DEPLOY_GENERATION=`generation`."""
    wanted = f"LOCKSTEP_DEPLOY_GENERATION={generation}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or process_start_time(int(proc.name)) is None:
            continue
        try:
            environ = (proc / "environ").read_bytes().split(b"\0")
            cmdline = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        if wanted in environ and str(ws).encode() in cmdline:
            found.append(int(proc.name))
    return found


def test_a_controller_killed_between_spawn_and_record_leaves_nothing_running(
        crashable: Crashable) -> None:
    """Killed after spawning candidate 2 but before its record is written: the process never
    runs its command (its gate sees end of file and it exits), no record or process of
    generation 2 is left, and the next controller starts and promotes a fresh one."""
    ws = crashable.ws
    first = crashable.start()
    apply(ws, environment("1.0"))
    first.wait_reason("Applied", 1)
    gen1 = first.generations()[1]
    assert put(gen1, "k", "v").status_code == 200
    crashable.stop()

    apply(ws, environment("1.1"))
    crashed = lockstep(ws, "controller", "run", "--test-crash-at", "rollout-before-record")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert condition(first.status())["reason"] == "Applying"
    assert sorted(first.generations()) == [1], "generation 2 was recorded before the kill"
    until("the unrecorded candidate to exit", lambda: not gate_held(ws, 2))
    log = ws / ".lockstep/rollouts" / ENV / "logs" / f"{ENV}-db-2.log"
    assert "listening" not in log.read_text(encoding="utf-8"), "the candidate ran its command"
    assert alive(gen1) and leader_status(gen1) == "IsLeader"

    second = crashable.start()
    done = second.wait_reason("Applied", 2)
    assert done["status"]["lastCompletedRelease"] == "1.1"
    final = second.generations()
    assert list(final) == [2] and leader_status(final[2]) == "IsLeader"
    got = httpx.get(f"http://{final[2]['public']}/kv/k")
    assert got.status_code == 200 and got.json()["value"] == "v"
