"""Enrichment and execution (spec §4): F2, F3, F4, F4b, F5, and phase steps F6."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable

import pytest

from lockstep.scenarios import (
    Check,
    CheckRun,
    CheckStepFailure,
    Configure,
    Initialize,
    Kill,
    Manipulate,
    Phase,
    PhaseAction,
    PhaseSteps,
    PlanEntry,
    Promote,
    RunInfo,
    Scenario,
    Start,
    Step,
    StepContext,
    Validate,
    WaitReady,
    enrich,
)
from lockstep.scenarios.actions import Action


def no_setup(instance: str) -> list[Action]:
    return []


def shape(entries: tuple[PlanEntry, ...]) -> list[tuple[str, bool]]:
    """Each entry as (action line, inserted)."""
    return [(e.action.line(), e.inserted) for e in entries]


def test_f2_configure_goes_in_front_of_a_plan_not_starting_with_start() -> None:
    plan = enrich([Initialize(), Manipulate(phase=1)], no_setup)
    assert shape(plan) == [("Configure", True), ("Initialize", False),
                           ("Manipulate phase=1", False)]


def test_f3_setup_actions_follow_the_first_plain_start_only() -> None:
    calls: list[str] = []

    def setup(instance: str) -> list[Action]:
        calls.append(instance)
        return [WaitReady(instance="u")]  # stands for the setup action U

    plan = enrich([Start(version="v2026.10.1"), Initialize(), Kill(),
                   Start(version="v2026.10.1"), Validate()], setup)
    assert [(e.action.name, e.inserted) for e in plan] == [
        ("Start", False), ("WaitReady", True), ("Configure", True), ("Initialize", False),
        ("Kill", False), ("Start", False), ("Configure", True), ("Validate", False)]
    assert calls == ["main"]


def test_f4_promote_gets_configure_read_only_and_refusal_starts_nothing() -> None:
    plan = enrich([Start(version="v1", instance="b", deploy_generation=1, read_only=True),
                   WaitReady(instance="b"), Promote(instance="b")], no_setup)
    assert [(e.action.name, e.inserted) for e in plan] == [
        ("Start", False), ("WaitReady", False), ("Promote", False), ("Configure", True)]
    assert plan[-1].action == Configure(instance="b")
    refused = enrich([Start(version="v1", instance="a", deploy_generation=0,
                            expect_refusal="refused")], no_setup)
    assert shape(refused) == [("Start instance=a version=v1 expect_refusal=refused", False)]


def test_f4b_generation_zero_is_the_default() -> None:
    explicit = enrich([Start(version="v1", instance="main", deploy_generation=0), Validate()],
                      no_setup)
    implicit = enrich([Start(version="v1"), Validate()], no_setup)
    assert shape(explicit) == shape(implicit)
    assert [e.inserted for e in explicit] == [False, True, False]


def test_inserted_actions_are_visited_by_the_walk() -> None:
    # a setup action that itself leads gets its own Configure: the walk sees inserted actions
    plan = enrich([Start()], lambda i: [Start(instance="aux")])
    assert shape(plan) == [("Start", False), ("Start instance=aux", True),
                           ("Configure instance=aux", True), ("Configure", True)]


class RecordingExecutor:
    """Records every call in order; optionally fails one action's execute or join."""

    def __init__(self, fail: tuple[str, int] | None = None) -> None:
        self.calls: list[str] = []
        self.fail = fail
        self.number = 0
        self.run: RunInfo | None = None

    def _do(self, what: str) -> None:
        self.calls.append(f"{what}{self.number}")
        if self.fail == (what, self.number):
            raise RuntimeError(f"{what} of action {self.number} failed")

    def begin_run(self, run: RunInfo) -> None:
        self.run = run
        self.calls.append("begin-run")

    def end_run(self, error: BaseException | None) -> None:
        self.calls.append(f"end-run:{type(error).__name__ if error else 'ok'}")

    def begin_action(self, number: int, entry: PlanEntry) -> None:
        self.number = number

    def end_action(self, number: int, entry: PlanEntry, error: BaseException | None) -> None:
        self.calls.append(f"end{number}:{'failed' if error else 'ok'}")

    def start_phase(self, action: PhaseAction) -> None:
        self._do("execute")

    def join_phase(self, action: PhaseAction) -> None:
        self._do("join")

    def start(self, action: Start) -> None:
        self._do("execute")

    def kill(self, action: Kill) -> None:
        self._do("execute")

    def wait_ready(self, action: WaitReady) -> None:
        self._do("execute")

    def promote(self, action: Promote) -> None:
        self._do("execute")

    def configure(self, action: Configure) -> None:
        self._do("execute")

    def join_configure(self, action: Configure) -> None:
        self._do("join")


def _step(ctx: StepContext) -> None:
    """Never run here."""


class Quiet(Check):
    __abstract__ = False

    def manipulate(self) -> list[Step]:
        return [_step, _step]

    def validate(self) -> Step:
        return _step


class Small(Scenario):
    name = "small"

    def actions(self) -> list[Action]:
        return [Start(), Initialize(), Manipulate(phase=1), Kill(), Start(),
                Manipulate(phase=2), Validate(), Validate()]


def test_f5_execute_then_join_strictly_in_order() -> None:
    executor = RecordingExecutor()
    scenario = Small([Quiet], executor, seed=9)
    scenario.run()
    kinds = {Start: ["execute"], Kill: ["execute"], Configure: ["execute", "join"],
             Initialize: ["execute", "join"], Manipulate: ["execute", "join"],
             Validate: ["execute", "join"]}
    expected = ["begin-run"]
    for number, entry in enumerate(scenario.plan, start=1):
        expected += [f"{k}{number}" for k in kinds[type(entry.action)]] + [f"end{number}:ok"]
    assert executor.calls == [*expected, "end-run:ok"]
    assert executor.run is not None and executor.run.plan == scenario.plan
    assert [c.name for c in executor.run.checks] == ["Quiet"]


def test_f5_a_failed_join_stops_the_run() -> None:
    executor = RecordingExecutor(fail=("join", 3))
    scenario = Small([Quiet], executor, seed=9)
    with pytest.raises(RuntimeError, match="join of action 3"):
        scenario.run()
    assert executor.calls[-3:] == ["join3", "end3:failed", "end-run:RuntimeError"]
    assert not any(c.endswith("4") for c in executor.calls)


def _runs(n: int, *names: str) -> list[CheckRun]:
    out = []
    for name in names:
        cls = type(name, (Quiet,), {})
        out.append(CheckRun.prepare(cls(None, random.Random(n))))
    return out


def _runner(steps: dict[str, Callable[[], None]]) -> Callable[[CheckRun, Phase], None]:
    def run(check: CheckRun, phase: Phase) -> None:
        check.step(phase)
        steps[check.name]()
    return run


def test_f6_parallel_join_waits_for_all_and_raises_the_first_checks_error() -> None:
    first_failed = threading.Event()
    second_done = threading.Event()

    def first() -> None:
        first_failed.set()
        raise ValueError("first broke")

    def second() -> None:
        assert first_failed.wait(10)  # still running after the first check failed
        second_done.set()

    phase = PhaseSteps(_runs(1, "First", "Second"), "1", _runner(
        {"First": first, "Second": second}), parallel=True)
    phase.start()
    assert phase.started == ["First", "Second"]
    with pytest.raises(CheckStepFailure) as info:
        phase.join()
    assert second_done.is_set()
    assert info.value.check == "First" and info.value.phase == "1"
    assert info.value.message == "First (phase 1): ValueError: first broke"
    assert info.value.others == ()


def test_f6_parallel_earliest_check_in_order_wins_even_if_it_failed_last() -> None:
    second_failed = threading.Event()

    def first() -> None:
        assert second_failed.wait(10)
        raise AssertionError("first, later")

    def second() -> None:
        second_failed.set()
        raise AssertionError("second, sooner")

    phase = PhaseSteps(_runs(1, "First", "Second"), "validate", _runner(
        {"First": first, "Second": second}), parallel=True)
    phase.start()
    with pytest.raises(CheckStepFailure) as info:
        phase.join()
    assert info.value.check == "First"
    assert [o.check for o in info.value.others] == ["Second"]
    assert "second, sooner" in info.value.others[0].message


def test_f6_sequential_starts_none_after_a_failure() -> None:
    ran: list[str] = []

    def first() -> None:
        ran.append("First")
        raise ValueError("first broke")

    def second() -> None:
        ran.append("Second")

    phase = PhaseSteps(_runs(1, "First", "Second"), "2", _runner(
        {"First": first, "Second": second}))
    phase.start()
    assert ran == ["First"] and phase.started == ["First"]
    with pytest.raises(CheckStepFailure, match="First \\(phase 2\\): ValueError: first broke"):
        phase.join()
    ok = PhaseSteps(_runs(1, "First", "Second"), "2", _runner(
        {"First": lambda: None, "Second": second}))
    ok.start()
    ok.join()
    assert ran == ["First", "Second"]
