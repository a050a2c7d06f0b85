"""The in-memory world one repetition runs in: store, runners, lander and git, all stand-ins.

It applies the scheduler's actions exactly as a worker would apply them to its store, draws each
run's duration and outcome from the repetition's seeded streams, and keeps the measurements.
"""

from __future__ import annotations

import heapq
import random
from dataclasses import dataclass, field
from typing import Any, TypeVar

from lockstep.queue.model import State
from lockstep.queue.pipeline import (
    CandidateSnap,
    Failure,
    ItemSnap,
    QueueSnap,
    RunnerSnap,
    RunSnap,
    RunState,
    StartCandidate,
    StartRun,
)
from lockstep.queue.pipeline.transitions import Transitions
from lockstep.sim.params import SimParams

EXIT_INFRA = 75
T = TypeVar("T")


def evolve(snap: T, **changes: Any) -> T:
    """A copy of a frozen snapshot with some fields changed (a shallow copy of its attributes,
    which costs a tenth of `dataclasses.replace`; the simulator makes millions of them)."""
    new: T = object.__new__(type(snap))
    attributes = new.__dict__
    attributes.update(snap.__dict__)
    attributes.update(changes)
    return new


@dataclass
class Measures:
    """What one repetition reports (§7 outputs)."""

    makespan: float = 0.0
    runs: int = 0
    wasted: int = 0
    runner_s: float = 0.0
    tags: int = 0
    landed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    ttl: list[float] = field(default_factory=list)
    ttr: list[float] = field(default_factory=list)


@dataclass
class _Run:
    """A run in flight: where, since when, and the outcome already drawn for it."""

    candidate: str
    runner: str
    started: float
    state: RunState
    exit_code: int


class World(Transitions):
    """Store, runners, lander and the simulated test outcomes of one repetition; the actions
    change its rows as `Transitions` says, as they change a store's."""

    def __init__(self, params: SimParams, rng_runs: random.Random,
                 bad: dict[str, frozenset[int]]) -> None:
        """An empty queue with P free runners; `bad` maps an item to the stages it fails."""
        self.params = params
        self.settings = params.settings()
        self.rng = rng_runs
        self.bad = bad
        self.items: dict[str, ItemSnap] = {}
        self.states: dict[str, State] = {}
        self.started: list[str] = []
        self.waiting: list[str] = []
        self.candidates: dict[str, CandidateSnap] = {}
        self.runners: dict[str, RunnerSnap] = {
            f"r{k}": RunnerSnap(f"r{k}") for k in range(1, params.runners + 1)}
        self.runs: dict[str, _Run] = {}
        self.landed_count = 0
        self.window: int | None = None
        self.paused = False
        self.paused_reason: str | None = None
        self.draining = False
        self.infra_streak = 0
        self.next_candidate = self.next_group = self.next_position = 1
        self.lander: list[tuple[str, ...]] = []  # landings waiting for the lander, in order
        self.lander_busy = False
        self.events: list[tuple[float, int, int, str, str]] = []
        self.counter = 0
        self.measures = Measures()
        self.durations: dict[str, float] = {}  # tests: a candidate's last item → run duration

    # --- the snapshot the scheduler reads ------------------------------------------------------

    def snapshot(self) -> QueueSnap:
        """The state `decide` reads (the item list is rebuilt per call: N is small here)."""
        return QueueSnap(
            settings=self.settings,
            items=[*map(self.items.__getitem__, self.started),
                   *map(self.items.__getitem__, self.waiting)],
            candidates=self.candidates,
            runners=tuple(self.runners.values()),
            states=self.states,
            landed_count=self.landed_count,
            window=self.window,
            paused=self.paused,
            paused_reason=self.paused_reason,
            draining=self.draining,
            infra_streak=self.infra_streak,
            next_candidate=self.next_candidate,
            next_group=self.next_group,
            next_position=self.next_position,
        )

    # --- events --------------------------------------------------------------------------------

    def schedule(self, when: float, kind: str, payload: str = "") -> None:
        """Queue an event; events at one time are applied in the order run ends, landings,
        arrivals, timers, then by the order they were scheduled."""
        rank = {"run": 0, "landed": 1, "arrival": 2, "timer": 3}[kind]
        self.counter += 1
        heapq.heappush(self.events, (when, rank, self.counter, kind, payload))

    def submit(self, item: ItemSnap) -> None:
        """An item arrives: it joins the waiting items at its priority."""
        self.items[item.id] = item
        self.states[item.id] = item.state
        key = (-item.priority, item.seq)
        at = len(self.waiting)
        while at > 0 and (-self.items[self.waiting[at - 1]].priority,
                          self.items[self.waiting[at - 1]].seq) > key:
            at -= 1
        self.waiting.insert(at, item.id)

    def run_ended(self, run_id: str, now: float) -> None:
        """A run's process exited: record its result (a killed run's end is ignored)."""
        run = self.runs.pop(run_id, None)
        if run is None:
            return
        self.measures.runner_s += now - run.started
        self.runners[run.runner] = RunnerSnap(run.runner)
        c = self.candidates[run.candidate]
        self.candidates[c.id] = evolve(c, runs=tuple(
            evolve(r, state=run.state, exit_code=run.exit_code, ended_at=now)
            if r.id == run_id else r for r in c.runs))

    def landing_done(self, now: float) -> None:
        """The lander finished its current landing."""
        items = self.lander.pop(0)
        for item in items:
            self._landed(item, now)
        self.lander_busy = False
        self._next_landing(now)

    # --- the rows the actions change (lockstep.queue.pipeline.transitions) ---------------------

    def item_state(self, item: str) -> State:
        """An item's state."""
        return self.states[item]

    def set_item(self, item: str, state: State | None, **changes: Any) -> None:
        """Change an item's row in place: the world owns its rows, and `decide` has returned
        before anything is applied (a worker would read fresh rows in its next transaction)."""
        row = self.items[item].__dict__
        row.update(changes)
        if state is not None:
            row["state"] = state
            self.states[item] = state

    def enter_item(self, item: str, position: int, group: int | None) -> None:
        """The item moves from the waiting ones to the end of the positioned ones."""
        self.set_item(item, None, position=position, group=group)
        self.waiting.remove(item)
        self.started.append(item)

    def finish_item(self, item: str, state: State, outcome: dict[str, Any],
                    now: float) -> None:
        """An item reaches a terminal state: it leaves the queue order; measure it."""
        snap = self.items[item]
        self.set_item(item, state)
        if snap.position is not None:
            self.started.remove(item)
        else:
            self.waiting.remove(item)
        m = self.measures
        m.makespan = max(m.makespan, now)
        if state == State.LANDED:
            m.landed.append(item)
            m.ttl.append(now - snap.submitted_at)
        elif state == State.REJECTED:
            m.rejected.append(item)
            m.ttr.append(now - snap.submitted_at)

    def add_candidate(self, action: StartCandidate, now: float) -> None:
        """A new candidate snapshot."""
        self.candidates[action.candidate] = CandidateSnap(
            action.candidate, action.items, action.own, action.configurations, State.TESTING,
            action.base_landed, action.base_external, now)

    def own(self, candidate: str) -> tuple[str, ...]:
        """A live candidate's own items."""
        return self.candidates[candidate].own

    def live_own(self, candidate: str | None) -> tuple[str, ...] | None:
        """The world keeps live candidates only."""
        found = self.candidates.get(candidate or "")
        return None if found is None else found.own

    def set_candidate(self, candidate: str, state: State, failure: Failure | None = None) -> None:
        """A live candidate's new state (and failure)."""
        c = self.candidates[candidate]
        self.candidates[candidate] = evolve(c, state=state) if failure is None else evolve(
            c, state=state, failure=failure)

    def close_candidate(self, candidate: str, end: str, why: str | None, now: float) -> None:
        """The world forgets candidates that are no longer live."""
        self.candidates.pop(candidate, None)

    def land_candidate(self, candidate: str, items: tuple[str, ...], now: float) -> None:
        """Hand a landing to the lander (at once when landing takes no time)."""
        self.candidates.pop(candidate, None)
        self.measures.tags += 1
        self.lander.append(items)
        self._next_landing(now)

    def add_run(self, action: StartRun, now: float) -> None:
        """Draw the run's duration, then its infrastructure and flake fate; its end is due."""
        c = self.candidates[action.candidate]
        stage = self.params.stages[action.stage]
        duration = self.durations.get(c.own[-1]) or stage.duration.draw(self.rng)
        if self.params.infra > 0 and self.rng.random() < self.params.infra:
            state, code = RunState.INFRA, EXIT_INFRA
        elif any(action.stage in self.bad[item] for item in c.items) or (
                self.params.flake > 0 and self.rng.random() < self.params.flake):
            state, code = RunState.FAILED, 1
        else:
            state, code = RunState.PASSED, 0
        self.runs[action.run] = _Run(c.id, action.runner, now, state, code)
        self.candidates[c.id] = evolve(c, runs=(*c.runs, RunSnap(
            action.run, action.configuration, action.stage, RunState.RUNNING, action.attempt,
            action.runner)))
        self.measures.runs += 1
        self.schedule(now + duration, "run", action.run)

    def occupy_runner(self, runner: str, run: str, pool: str | None) -> None:
        """The runner's slot shows the run."""
        self.runners[runner] = RunnerSnap(runner, run, pool)

    def kill_runs(self, candidate: str, now: float) -> None:
        """Kill the runs in flight; they are wasted."""
        self.measures.wasted += self._kill(self.candidates[candidate], now)

    def drop_runs(self, candidate: str, now: float) -> None:
        """Kill the runs in flight; every run of the candidate is wasted."""
        c = self.candidates[candidate]
        self._kill(c, now)
        self.measures.wasted += len(c.runs)

    def queue_event(self, kind: str, detail: dict[str, Any]) -> None:
        """The world keeps no event log."""

    def _kill(self, c: CandidateSnap, now: float) -> int:
        """Kill a candidate's runs in flight; how many were killed."""
        killed = 0
        for r in c.runs:
            run = self.runs.pop(r.id, None)
            if run is not None:
                killed += 1
                self.measures.runner_s += now - run.started
                self.runners[run.runner] = RunnerSnap(run.runner)
        return killed

    def _next_landing(self, now: float) -> None:
        """Start the lander's next landing, one at a time."""
        if self.lander_busy or not self.lander:
            return
        if self.params.landing_s == 0:
            while self.lander:
                for item in self.lander.pop(0):
                    self._landed(item, now)
            return
        self.lander_busy = True
        self.schedule(now + self.params.landing_s, "landed")

    def _landed(self, item: str, now: float) -> None:
        """An item is on the remote."""
        self.finish_item(item, State.LANDED, {}, now)
