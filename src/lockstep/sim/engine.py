"""The discrete-event loop on a virtual clock, calling `pipeline.decide`.

At each event time every event due is applied to the world (run ends in the order they were
scheduled, so results arriving together are applied front to back), then the scheduler is asked
once what to do: `decide` settles in one call (it goes on past its own landings, splits and
rebuilds). With `verify` it is asked a second time and must have nothing more to say.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

from lockstep.queue.model import State
from lockstep.queue.pipeline import Decisions, Event, ItemSnap, ResumeRequest, decide
from lockstep.sim.params import SimParams
from lockstep.sim.world import Measures, World


class SchedulerStuck(RuntimeError):
    """The scheduler did not settle, or left items that nothing will ever move."""


@dataclass
class Repetition:
    """One repetition's measurements and the cost of each `decide` call (ns, wall clock)."""

    measures: Measures
    decide_ns: list[int] = field(default_factory=list)


def streams(seed: int, rep: int) -> tuple[random.Random, random.Random, random.Random]:
    """The repetition's independent generators: item badness, runs, arrivals."""
    return (random.Random(f"{seed}/{rep}/items"), random.Random(f"{seed}/{rep}/runs"),
            random.Random(f"{seed}/{rep}/arrivals"))


class Simulation:
    """A world, its event queue and the scheduler, stepped one event time at a time."""

    def __init__(self, params: SimParams, items: Sequence[ItemSnap],
                 bad: dict[str, frozenset[int]], rng_runs: random.Random,
                 arrivals: Sequence[float] | None = None, timed: bool = False,
                 verify: bool = False, record: bool = False) -> None:
        """Schedule the arrivals (all at 0 unless given); `record` keeps every decision."""
        self.world = World(params, rng_runs, bad)
        self.pending = {item.id: item for item in items}
        for k, item in enumerate(items):
            self.world.schedule(0.0 if arrivals is None else arrivals[k], "arrival", item.id)
        self.timed = timed
        self.verify = verify
        self.history: list[tuple[float, Decisions]] | None = [] if record else None
        self.decide_ns: list[int] = []
        self.timers: set[float] = set()
        self.now = 0.0

    def step(self, events: Sequence[Event] = ()) -> bool:
        """Apply every event of the next event time, then decide; False when nothing is left."""
        world = self.world
        if not world.events:
            return False
        now = self.now = world.events[0][0]
        while world.events and world.events[0][0] == now:
            _, _, _, kind, payload = heapq.heappop(world.events)
            if kind == "run":
                world.run_ended(payload, now)
            elif kind == "landed":
                world.landing_done(now)
            elif kind == "arrival":
                item = self.pending.pop(payload)
                world.submit(ItemSnap(item.id, item.seq, item.priority, item.state,
                                      item.component, item.configurations, now))
            else:
                self.timers.discard(now)
        self.decide(events)
        return True

    def decide(self, events: Sequence[Event] = ()) -> Decisions:
        """Ask the scheduler at the current time, apply its actions, arm its timer."""
        decisions = self._call(events, record=True)
        if self.verify:
            again = self._call((), record=False)
            if again.actions:
                raise SchedulerStuck(f"the scheduler had more to do at t={self.now}: "
                                     f"{again.actions[:3]}")
        return decisions

    def _call(self, events: Sequence[Event], record: bool) -> Decisions:
        """One `decide` call and its application."""
        world, now = self.world, self.now
        state = world.snapshot()
        if self.timed:
            start = time.perf_counter_ns()
            decisions = decide(state, events, now)
            self.decide_ns.append(time.perf_counter_ns() - start)
        else:
            decisions = decide(state, events, now)
        for action in decisions.actions:
            world.apply(action, now)
        if record and self.history is not None:
            self.history.append((now, decisions))
        wake = decisions.wake_at
        if wake is not None and wake > now and wake not in self.timers and math.isfinite(wake):
            self.timers.add(wake)
            world.schedule(wake, "timer")
        return decisions

    def run(self) -> Measures:
        """Step to the end: every item landed, rejected or cancelled."""
        while self.step() or self._resume_after_infrastructure_pause():
            pass
        left = [key for key, state in self.world.states.items() if not state.terminal]
        if left or self.pending:
            raise SchedulerStuck(f"the simulation stopped with items waiting: {left[:5]}")
        return self.world.measures


    def _resume_after_infrastructure_pause(self) -> bool:
        """A queue paused for repeated infrastructure failures waits for an operator: the
        simulated one resumes it at once (infrastructure faults are drawn independently, so
        waiting would change nothing). False when the queue is not paused that way."""
        world = self.world
        left = any(not state.terminal for state in world.states.values())
        if not (left and world.paused and world.paused_reason == "infrastructure"):
            return False
        self.decide([ResumeRequest()])
        return True


def run_repetition(params: SimParams, rep: int, timed: bool = False,
                   verify: bool = False) -> Repetition:
    """Simulate one repetition of a parameter set, drawing from its seeded streams."""
    rng_items, rng_runs, rng_arrivals = streams(params.seed, rep)
    stage_p = params.stage_p()
    bad: dict[str, frozenset[int]] = {}
    items: list[ItemSnap] = []
    for seq in range(1, params.n + 1):
        item_id = f"q{seq}"
        bad[item_id] = frozenset(s for s, p in enumerate(stage_p) if rng_items.random() < p)
        items.append(ItemSnap(item_id, seq, 0, State.QUEUED, f"comp{seq}",
                              params.configurations))
    rate = params.arrival_rate()
    arrivals = None
    if rate is not None:
        at, arrivals = 0.0, []
        for _ in items:
            at += rng_arrivals.expovariate(rate)
            arrivals.append(at)
    sim = Simulation(params, items, bad, rng_runs, arrivals, timed=timed, verify=verify)
    measures = sim.run()
    return Repetition(measures, sim.decide_ns)
