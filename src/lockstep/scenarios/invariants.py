"""The plan invariants of spec §7, checked after enrichment and before printing (PlanError)."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from lockstep.scenarios.actions import (
    Action,
    Initialize,
    Kill,
    Manipulate,
    PhaseAction,
    Promote,
    Start,
    Validate,
)
from lockstep.scenarios.errors import PlanError

VersionKey = Callable[[str | None], Any]


@dataclass
class _State:
    """What the plan has done so far: running instances, their starts, and the leader."""

    running: set[str] = field(default_factory=set)
    started: dict[str, Start] = field(default_factory=dict)
    leader: str | None = None
    leader_generation: int | None = None
    leading: list[str | None] = field(default_factory=list)  # versions that led, in order


def check_plan(actions: Sequence[Action], key: VersionKey) -> None:
    """Raise PlanError at the first action breaking an invariant; `key` orders versions (None
    is the target). A plan not starting with a Start runs against an instance `main` started
    outside the scenario, whose version and generation are unknown."""
    state = _State()
    if actions and not isinstance(actions[0], Start):
        state.running.add("main")
        state.leader = "main"
    seen: list[str] = []  # phases in order: I, M1, M2, V...
    for number, action in enumerate(actions, start=1):
        problem = _step(state, action, key, seen)
        if problem:
            raise PlanError(f"plan invariant broken at {number:03d} {action.line()}: {problem}",
                            "the scenario's actions() make an invalid plan (spec §7 invariants)")
    counts = {p: seen.count(p) for p in ("I", "M1", "M2")}
    for phase, count in counts.items():
        if count != 1:
            raise PlanError(f"plan invariant broken: {phase} appears {count} times",
                            "I, M1 and M2 must each appear exactly once")
    if seen.count("V") < 2:
        raise PlanError(f"plan invariant broken: V appears {seen.count('V')} times",
                        "validate at least twice, so a non-idempotent validate fails")


def _step(state: _State, action: Action, key: VersionKey, seen: list[str]) -> str | None:
    """Apply one action to the state; the broken invariant, if any."""
    if isinstance(action, Start):
        return _start(state, action, key)
    if isinstance(action, Kill):
        state.running.discard(action.instance)
        if state.leader == action.instance:
            state.leader = None
        return None
    if isinstance(action, Promote):
        return _promote(state, action, key)
    if isinstance(action, PhaseAction):
        return _phase(state, action, seen)
    return None


def _start(state: _State, action: Start, key: VersionKey) -> str | None:
    if action.instance in state.running:
        return f"{action.instance} is started while its processes still run"
    if action.expect_refusal != "none":
        return None  # its processes exit by themselves; it never runs on
    if action.read_only:
        if (state.leader_generation is not None
                and not action.generation > state.leader_generation):
            return (f"read-only generation {action.generation} is not higher than the "
                    f"leader's {state.leader_generation}")
    else:
        problem = _leads(state, action.version, key)
        if problem:
            return problem
        state.leader = action.instance
        state.leader_generation = action.generation
    state.running.add(action.instance)
    state.started[action.instance] = action
    return None


def _promote(state: _State, action: Promote, key: VersionKey) -> str | None:
    started = state.started.get(action.instance)
    if action.instance not in state.running or started is None:
        return f"{action.instance} is promoted but does not run"
    if action.fences is not None:
        if action.fences != state.leader:
            return f"it fences {action.fences}, but the current leader is {state.leader or 'none'}"
        state.running.discard(action.fences)
    problem = _leads(state, started.version, key)
    if problem:
        return problem
    state.leader = action.instance
    state.leader_generation = started.generation
    return None


def _leads(state: _State, version: str | None, key: VersionKey) -> str | None:
    """Record a version that leads; it may not be older than the one that led before."""
    if state.leading and key(version) < key(state.leading[-1]):
        before = state.leading[-1] or "T"
        return f"the leading version goes back from {before} to {version or 'T'}"
    state.leading.append(version)
    return None


def _phase(state: _State, action: PhaseAction, seen: list[str]) -> str | None:
    if state.leader is None or action.instance != state.leader or (
            state.leader not in state.running):
        return f"it runs on {action.instance}, but the current leader is {state.leader or 'none'}"
    if isinstance(action, Initialize):
        if seen:
            return "Initialize must come before every other phase"
        seen.append("I")
    elif isinstance(action, Manipulate):
        expected = ["I"] if action.phase == 1 else ["I", "M1"]
        if seen != expected:
            return f"Manipulate phase={action.phase} is out of order (after {seen or 'nothing'})"
        seen.append(f"M{action.phase}")
    elif isinstance(action, Validate):
        if "M2" not in seen:
            return "Validate comes before Manipulate phase=2"
        seen.append("V")
    return None
