"""A scripted queue for scheduler tests: chosen items, bad items and run durations, stepped on the
simulator's virtual clock, with every decision recorded (and the one-call settling verified)."""

from __future__ import annotations

import random
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, replace

from lockstep.queue.model import State
from lockstep.queue.pipeline import (
    Action,
    Decisions,
    Land,
    Mode,
    Reject,
    SetWindow,
    StartCandidate,
    StartRun,
)
from lockstep.sim.engine import Simulation
from lockstep.sim.params import Distribution, SimParams, SimStage

T = 600.0


@dataclass(frozen=True)
class Spec:
    """One item of a scripted queue."""

    priority: int = 0
    component: str | None = None
    bad: bool = False
    duration: float | None = None  # its candidates' run duration (default T)


class Script:
    """A queue of scripted items driven by the real scheduler."""

    def __init__(self, specs: Sequence[Spec], mode: Mode, runners: int,
                 arrivals: Sequence[float] | None = None, stages: int = 1,
                 **knobs: object) -> None:
        stage_list = tuple(SimStage(f"s{k}", Distribution("fixed", T)) for k in range(stages))
        params = replace(SimParams(n=len(specs), p=0.0, stages=stage_list, runners=runners,
                                   mode=mode, reps=1), **knobs)
        from lockstep.queue.pipeline import ItemSnap

        items = [ItemSnap(f"q{k}", k, s.priority, State.QUEUED, s.component or f"comp{k}",
                          params.configurations)
                 for k, s in enumerate(specs, start=1)]
        bad = {f"q{k}": frozenset({0}) if s.bad else frozenset()
               for k, s in enumerate(specs, start=1)}
        self.sim = Simulation(params, items, bad, random.Random(0), arrivals, verify=True,
                              record=True)
        for k, s in enumerate(specs, start=1):
            if s.duration is not None:
                self.sim.world.durations[f"q{k}"] = s.duration

    def run(self) -> Script:
        """Step until every item is terminal."""
        self.sim.run()
        return self

    @property
    def history(self) -> list[tuple[float, Decisions]]:
        """Every (time, decisions) so far."""
        assert self.sim.history is not None
        return self.sim.history

    def actions(self) -> Iterator[tuple[float, Action]]:
        """Every action so far, with its time."""
        for now, decisions in self.history:
            for action in decisions.actions:
                yield now, action

    def of(self, kind: type[Action]) -> list[Action]:
        """The actions of one kind, in order."""
        return [a for _, a in self.actions() if isinstance(a, kind)]

    def landed(self) -> list[str]:
        """Landed items in landing order."""
        return list(self.sim.world.measures.landed)

    def rejected(self) -> list[str]:
        """Rejected items in order."""
        return list(self.sim.world.measures.rejected)

    def candidates(self) -> dict[str, StartCandidate]:
        """Every candidate ever started, by id."""
        return {a.candidate: a for a in self.of(StartCandidate)
                if isinstance(a, StartCandidate)}

    def windows(self) -> list[int]:
        """The window values stored, in order."""
        return [a.window for a in self.of(SetWindow) if isinstance(a, SetWindow)]

    def runs(self) -> int:
        """Runs started."""
        return len(self.of(StartRun))

    def landed_trees(self) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
        """For each landing, (the bumps its tested tree holds: the landings its base had, then
        the candidate's items; the items of that landing)."""
        started = self.candidates()
        landed: list[str] = []
        out = []
        for action in self.of(Land):
            assert isinstance(action, Land)
            c = started[action.candidate]
            out.append(((*landed[: c.base_landed], *c.items), action.items))
            landed.extend(action.items)
        return out

    def rejections(self) -> list[Reject]:
        """Reject actions in order."""
        return [a for a in self.of(Reject) if isinstance(a, Reject)]


def assert_every_landing_tested_as_serial(script: Script) -> None:
    """Each landing's tree is head + its bumps: its candidate holds exactly the items landed
    before it, in order, then its own (the tree serial processing tags)."""
    before: list[str] = []
    for items, own in script.landed_trees():
        assert items == (*before, *own)
        before.extend(own)


def test_serial_lands_each_good_item_after_one_run_in_order() -> None:
    script = Script([Spec(), Spec(bad=True), Spec()], Mode.SERIAL, runners=4).run()
    assert script.landed() == ["q1", "q3"]
    assert script.rejected() == ["q2"]
    assert script.runs() == 3
    assert script.sim.world.measures.makespan == 3 * T
    assert_every_landing_tested_as_serial(script)
