"""What each of `decide`'s actions does to the queue's rows, written once.

`Transitions.apply` holds the meaning of every action over a few row accessors; the simulator's
world implements them on its in-memory objects and the store's applier on the rows it then
writes in bulk, so the two cannot drift apart.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import asdict
from typing import Any, ClassVar

from lockstep.queue.model import TERMINAL, State
from lockstep.queue.pipeline.decisions import (
    Action,
    Discard,
    DrainQueue,
    Enter,
    FailCandidate,
    Land,
    PassCandidate,
    PauseQueue,
    Reject,
    ResumeQueue,
    SetWindow,
    Split,
    StartCandidate,
    StartRun,
    WithdrawItem,
)
from lockstep.queue.pipeline.settings import PipelineSettings
from lockstep.queue.pipeline.snapshot import Failure

# How a candidate that leaves the live set without landing is recorded.
DISCARDED = "discarded"
SPLIT = "split"


class Transitions(ABC):
    """The queue's rows as the actions change them: the queue row's counters are plain
    attributes, items, candidates, runs and runners are reached through the methods below."""

    settings: PipelineSettings
    window: int | None
    landed_count: int
    infra_streak: int
    next_candidate: int
    next_group: int
    next_position: int
    paused: bool
    draining: bool
    paused_reason: str | None

    _ACTIONS: ClassVar[dict[type, Callable[[Any, Any, float], None]]]

    def apply(self, action: Action, now: float) -> None:
        """Apply one action at `now`, as a worker records it in one store transaction."""
        self._ACTIONS[type(action)](self, action, now)

    # --- the actions ---------------------------------------------------------------------------

    def _start_run(self, action: StartRun, now: float) -> None:
        """The candidate gains a running run; its runner executes it in the stage's pool."""
        self.add_run(action, now)
        self.occupy_runner(action.runner, action.run, self.settings.stages[action.stage].pool)

    def _start_candidate(self, action: StartCandidate, now: float) -> None:
        """A new candidate, testing; its own items are `testing` in it."""
        self.add_candidate(action, now)
        self.next_candidate = max(self.next_candidate, int(action.candidate[1:]) + 1)
        for item in action.own:
            self.set_item(item, State.TESTING, candidate=action.candidate)

    def _enter(self, action: Enter, now: float) -> None:
        """Items take consecutive positions (and their batch); the counters move past them."""
        for k, item in enumerate(action.items):
            self.enter_item(item, action.first_position + k, action.group)
        self.next_position = action.first_position + len(action.items)
        if action.group is not None:
            self.next_group = max(self.next_group, action.group + 1)

    def _discard(self, action: Discard, now: float) -> None:
        """The candidate is dropped with all its runs; its unfinished own items wait again."""
        own = self.own(action.candidate)
        self.drop_runs(action.candidate, now)
        self.close_candidate(action.candidate, DISCARDED, action.why, now)
        for item in own:
            if self.item_state(item) not in TERMINAL:
                self.set_item(item, State.QUEUED, candidate=None)

    def _pass_candidate(self, action: PassCandidate, now: float) -> None:
        """Every run passed: the candidate and its own items are `passed`."""
        self.set_candidate(action.candidate, State.PASSED)
        for item in self.own(action.candidate):
            self.set_item(item, State.PASSED)

    def _fail_candidate(self, action: FailCandidate, now: float) -> None:
        """A run failed for good: the others are killed; candidate and own items `failing`."""
        self.kill_runs(action.candidate, now)
        self.set_candidate(action.candidate, State.FAILING, action.failure)
        for item in self.own(action.candidate):
            self.set_item(item, State.FAILING)

    def _land(self, action: Land, now: float) -> None:
        """The items count as landed from now on and are `landing`; the lander gets them."""
        self.landed_count += len(action.items)
        self.infra_streak = 0
        for item in action.items:
            self.set_item(item, State.LANDING)
        self.land_candidate(action.candidate, action.items, now)

    def _reject(self, action: Reject, now: float) -> None:
        """The item is rejected; its candidate closes once all its own items are final."""
        failure = asdict(action.failure) if action.failure else None
        self.finish_item(action.item, State.REJECTED, {
            "rejected": action.kind, "candidate": action.candidate, "failure": failure}, now)
        own = self.live_own(action.candidate)
        if own is not None and all(self.item_state(i) in TERMINAL for i in own):
            self.close_candidate(action.candidate or "", State.REJECTED.value, None, now)
        self.infra_streak = self.infra_streak + 1 if action.kind == "infrastructure" else 0

    def _split(self, action: Split, now: float) -> None:
        """The failed batch closes; each part is a new batch of `queued` items."""
        self.close_candidate(action.candidate, SPLIT, None, now)
        for group, items in action.parts:
            self.next_group = max(self.next_group, group + 1)
            for item in items:
                self.set_item(item, State.QUEUED, candidate=None, group=group)

    def _withdraw(self, action: WithdrawItem, now: float) -> None:
        """A user cancelled the item."""
        self.finish_item(action.item, State.CANCELLED, {"cancelled": True}, now)

    def _set_window(self, action: SetWindow, now: float) -> None:
        """Store W."""
        self.window = action.window

    def _pause(self, action: PauseQueue, now: float) -> None:
        """Paused (a drain ends in a pause), with its reason."""
        self.paused, self.draining, self.paused_reason = True, False, action.reason
        self.queue_event("paused", {"reason": action.reason})

    def _drain(self, action: DrainQueue, now: float) -> None:
        """Nothing new starts."""
        self.draining = True

    def _resume(self, action: ResumeQueue, now: float) -> None:
        """Neither paused nor draining."""
        self.paused = self.draining = False
        self.paused_reason = None

    # --- items ---------------------------------------------------------------------------------

    @abstractmethod
    def item_state(self, item: str) -> State:
        """An item's state now (as changed by the actions applied so far)."""

    @abstractmethod
    def set_item(self, item: str, state: State | None, **changes: Any) -> None:
        """Change an item's state (None: keep it) and columns (`candidate`, `group`)."""

    @abstractmethod
    def enter_item(self, item: str, position: int, group: int | None) -> None:
        """A waiting item enters the pipeline at `position`, in batch `group`."""

    @abstractmethod
    def finish_item(self, item: str, state: State, outcome: dict[str, Any],
                    now: float) -> None:
        """An item reaches a terminal state; `outcome` is what its row records about why."""

    # --- candidates ----------------------------------------------------------------------------

    @abstractmethod
    def add_candidate(self, action: StartCandidate, now: float) -> None:
        """Record a new candidate, `testing` from `now`, without runs."""

    @abstractmethod
    def own(self, candidate: str) -> tuple[str, ...]:
        """A live candidate's own items."""

    @abstractmethod
    def live_own(self, candidate: str | None) -> tuple[str, ...] | None:
        """The candidate's own items while it is live (testing, passed or failing), else None."""

    @abstractmethod
    def set_candidate(self, candidate: str, state: State, failure: Failure | None = None) -> None:
        """A live candidate's new state (and why it failed)."""

    @abstractmethod
    def close_candidate(self, candidate: str, end: str, why: str | None, now: float) -> None:
        """The candidate leaves the live set without landing: `end` is DISCARDED, SPLIT or
        `rejected`, `why` a discard's reason."""

    @abstractmethod
    def land_candidate(self, candidate: str, items: tuple[str, ...], now: float) -> None:
        """The candidate leaves the live set for the lander, which lands `items` in this order
        after every landing handed to it before (`landed_count` already counts them)."""

    # --- runs and runners ----------------------------------------------------------------------

    @abstractmethod
    def add_run(self, action: StartRun, now: float) -> None:
        """The candidate gains a run, `running` from `now`."""

    @abstractmethod
    def occupy_runner(self, runner: str, run: str, pool: str | None) -> None:
        """The runner executes `run` (of a stage of `pool`)."""

    @abstractmethod
    def kill_runs(self, candidate: str, now: float) -> None:
        """Kill the candidate's runs in flight and free their runners; each counts wasted."""

    @abstractmethod
    def drop_runs(self, candidate: str, now: float) -> None:
        """Kill the candidate's runs in flight and free their runners; every run it had, ended
        or killed, counts wasted (its results will never be used)."""

    @abstractmethod
    def queue_event(self, kind: str, detail: dict[str, Any]) -> None:
        """Log an event of the queue as a whole (pausing)."""


Transitions._ACTIONS = {
    StartRun: Transitions._start_run,
    StartCandidate: Transitions._start_candidate,
    Enter: Transitions._enter,
    Discard: Transitions._discard,
    PassCandidate: Transitions._pass_candidate,
    FailCandidate: Transitions._fail_candidate,
    Land: Transitions._land,
    Reject: Transitions._reject,
    Split: Transitions._split,
    WithdrawItem: Transitions._withdraw,
    SetWindow: Transitions._set_window,
    PauseQueue: Transitions._pause,
    DrainQueue: Transitions._drain,
    ResumeQueue: Transitions._resume,
}
