"""The serial scheduler: a pure function from a queue snapshot to the worker's next decisions.

It reads no clock, store or repository, so the simulator and tests can drive it directly.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from lockstep.queue.model import ItemView, QueueView, State, order


@dataclass(frozen=True)
class Recover:
    """An item's holder died: retest it (testing) or reconcile its landing (landing)."""

    item: str
    state: State
    give_up: bool = False


@dataclass(frozen=True)
class Test:
    """Start testing the front item."""

    item: str


@dataclass(frozen=True)
class Land:
    """Land the front item, whose candidate passed."""

    item: str


@dataclass(frozen=True)
class PauseQueue:
    """Pause the queue: a drain finished (nothing started is left)."""

    reason: str


Decision = Recover | Test | Land | PauseQueue


@dataclass(frozen=True)
class Plan:
    """The decisions to apply now, and why each other item waits."""

    decisions: list[Decision] = field(default_factory=list)
    wait_reasons: dict[str, str] = field(default_factory=dict)
    idle_reason: str | None = None


def decide(view: QueueView) -> Plan:
    """Serial discipline (spec/queue.md §3): recover dead holders, then work on the front item."""
    decisions: list[Decision] = []
    wait: dict[str, str] = {}
    items = order(view.items)
    live: list[ItemView] = []
    for item in items:
        if item.state in (State.TESTING, State.LANDING) and not item.holder_alive:
            give_up = item.state == State.TESTING and item.recoveries >= view.max_recoveries
            decisions.append(Recover(item.id, item.state, give_up))
        else:
            live.append(item)
    if decisions:
        return Plan(decisions, {}, "recovering")
    if not live:
        if view.draining and not view.paused:
            return Plan([PauseQueue("drained")], {}, "empty")
        return Plan([], {}, "empty")
    front = live[0]
    for item in live[1:]:
        wait[item.id] = "behind"
    if front.state in (State.TESTING, State.LANDING):
        return Plan([], wait, "busy")
    if view.paused:
        wait[front.id] = "paused"
        return Plan([], wait, "paused")
    if front.state == State.PASSED:
        wait[front.id] = "no-runner"
        return Plan([Land(front.id)], wait, None)
    if view.draining:
        for item in live:
            wait[item.id] = "draining"
        return Plan([PauseQueue("drained")], wait, "paused")
    wait[front.id] = "no-runner"
    return Plan([Test(front.id)], wait, None)
