"""The scheduler's controls and limits (spec/queue.md §3.1, §3.3, §3.5, §8): pause, drain,
cancel, infrastructure retries with backoff, item timeout, fail-fast stages, pools, wait reasons,
purity, and the cost of one decision with 10,000 queued items."""

from __future__ import annotations

import statistics
import time
from collections.abc import Sequence
from typing import overload

import pytest

from lockstep.queue.model import State
from lockstep.queue.pipeline import (
    CancelRequest,
    CandidateSnap,
    Discard,
    DrainRequest,
    Enter,
    FailCandidate,
    ItemSnap,
    Land,
    Mode,
    PassCandidate,
    PauseQueue,
    PauseRequest,
    PipelineSettings,
    QueueSnap,
    Reject,
    ResumeRequest,
    RunnerSnap,
    RunSnap,
    RunState,
    StageSpec,
    StartCandidate,
    StartRun,
    WithdrawItem,
    decide,
)
from tests.purity import outside_world_closed
from tests.test_pipeline_harness import Script, Spec, T


def _item(k: int, state: State = State.QUEUED, candidate: str | None = None,
          configurations: tuple[str, ...] = ("default",)) -> ItemSnap:
    return ItemSnap(f"q{k}", k, 0, state, f"comp{k}", configurations,
                    position=k if candidate else None, candidate=candidate)


def _state(items: Sequence[ItemSnap], candidates: Sequence[CandidateSnap],
           runners: Sequence[RunnerSnap], settings: PipelineSettings) -> QueueSnap:
    return QueueSnap(settings, list(items), {c.id: c for c in candidates}, tuple(runners),
                     {i.id: i.state for i in items}, next_candidate=100, next_position=100,
                     window=settings.initial_window(len(runners)))


# --- pause, drain, cancel ---------------------------------------------------------------------

def test_pause_lets_runs_finish_but_nothing_starts_or_lands_until_resume() -> None:
    script = Script([Spec(), Spec(), Spec()], Mode.SPECULATIVE, runners=2)
    script.sim.step()
    paused = script.sim.decide([PauseRequest()])
    assert PauseQueue("user") in paused.actions and paused.rest_reason == "paused"
    script.sim.step()  # t = T: both runs end
    _, at_t = script.history[-1]
    assert [type(a) for a in at_t.actions] == [PassCandidate, PassCandidate]
    assert dict(at_t.waiting) == {"q1": "paused", "q2": "paused"}
    resumed = script.sim.decide([ResumeRequest()])
    assert [a.items for a in resumed.actions if isinstance(a, Land)] == [("q1",), ("q2",)]
    script.run()
    assert script.landed() == ["q1", "q2", "q3"]


def test_pause_abort_running_returns_items_to_the_queue_without_a_rejection() -> None:
    script = Script([Spec(), Spec()], Mode.SPECULATIVE, runners=2)
    script.sim.step()
    aborted = script.sim.decide([PauseRequest(abort_running=True)])
    assert {a.why for a in aborted.actions if isinstance(a, Discard)} == {"aborted"}
    assert script.sim.world.states["q1"] == State.QUEUED
    assert not any(isinstance(a, StartRun) for a in aborted.actions)
    script.sim.decide([ResumeRequest()])
    script.run()
    assert script.landed() == ["q1", "q2"] and script.rejected() == []


def test_drain_finishes_what_is_in_flight_then_pauses_drained() -> None:
    script = Script([Spec() for _ in range(5)], Mode.SPECULATIVE, runners=2)
    script.sim.step()
    drained = script.sim.decide([DrainRequest()])
    assert drained.rest_reason == "draining"
    script.sim.step()
    _, at_t = script.history[-1]
    assert [a.items for a in at_t.actions if isinstance(a, Land)] == [("q1",), ("q2",)]
    assert PauseQueue("drained") in at_t.actions
    assert not any(isinstance(a, Enter) for a in at_t.actions)
    assert script.sim.world.paused and script.landed() == ["q1", "q2"]


def test_cancel_of_a_testing_item_rebuilds_the_candidates_behind_without_it() -> None:
    script = Script([Spec() for _ in range(4)], Mode.SPECULATIVE, runners=4)
    script.sim.step()
    cancelled = script.sim.decide([CancelRequest("q2")])
    assert cancelled.actions[0] == WithdrawItem("q2")
    rebuilt = [a.items for a in cancelled.actions if isinstance(a, StartCandidate)]
    assert rebuilt == [("q1", "q3"), ("q1", "q3", "q4")]
    assert sum(isinstance(a, StartRun) for a in cancelled.actions) == 2  # on the freed runners
    script.run()
    assert script.landed() == ["q1", "q3", "q4"]


def test_cancel_of_a_landing_or_terminal_item_decides_nothing() -> None:
    items = [_item(1, State.LANDING, "c1")]
    state = _state(items, [], [RunnerSnap("r1")], PipelineSettings(mode=Mode.SPECULATIVE))
    assert decide(state, [CancelRequest("q1"), CancelRequest("q9")], 0.0).actions == ()


# --- runs: retries, timeouts, fail-fast, pools ------------------------------------------------

def _candidate(runs: Sequence[RunSnap], configurations: tuple[str, ...] = ("default",),
               started_at: float = 0.0) -> CandidateSnap:
    return CandidateSnap("c1", ("q1",), ("q1",), configurations, State.TESTING, 0, 0,
                         started_at, tuple(runs))


def test_infrastructure_failures_are_retried_after_5s_then_10s_then_rejected() -> None:
    settings = PipelineSettings(mode=Mode.SPECULATIVE, retries=2)
    item = _item(1, State.TESTING, "c1")
    one = RunSnap("c1/default/0/0", "default", 0, RunState.INFRA, 0, exit_code=75, ended_at=600)
    state = _state([item], [_candidate([one])], [RunnerSnap("r1")], settings)
    early = decide(state, [], 604.0)
    assert early.actions == () and early.wake_at == 605.0
    retry = decide(state, [], 605.0)
    assert retry.actions == (StartRun("c1/default/0/1", "c1", "default", 0, 1, "r1"),)
    two = RunSnap("c1/default/0/1", "default", 0, RunState.INFRA, 1, exit_code=75, ended_at=1205)
    state = _state([item], [_candidate([one, two])], [RunnerSnap("r1")], settings)
    assert decide(state, [], 1210.0).wake_at == 1215.0
    passed = RunSnap("c1/default/0/2", "default", 0, RunState.PASSED, 2, ended_at=1815)
    state = _state([item], [_candidate([one, two, passed])], [RunnerSnap("r1")], settings)
    assert [type(a) for a in decide(state, [], 1815.0).actions] == [PassCandidate, Land]
    three = RunSnap("c1/default/0/2", "default", 0, RunState.INFRA, 2, exit_code=75, ended_at=1815)
    state = _state([item], [_candidate([one, two, three])], [RunnerSnap("r1")], settings)
    out = decide(state, [], 1815.0).actions
    assert isinstance(out[0], FailCandidate)
    assert isinstance(out[1], Reject) and out[1].kind == "infrastructure"


def test_three_items_rejected_for_infrastructure_in_a_row_pause_the_queue() -> None:
    script = Script([Spec() for _ in range(4)], Mode.SERIAL, runners=1, infra=1.0)
    while script.sim.step():
        pass
    assert script.rejected() == ["q1", "q2", "q3"]
    assert all(r.kind == "infrastructure" for r in script.rejections())
    assert script.sim.world.paused and script.sim.world.states["q4"] == State.QUEUED
    assert script.sim.world.measures.makespan == 3 * (3 * T + 15)


def test_item_timeout_fails_the_candidate_and_rejects_at_the_head() -> None:
    settings = PipelineSettings(mode=Mode.SPECULATIVE, item_timeout=900.0)
    run = RunSnap("c1/default/0/0", "default", 0, RunState.RUNNING, runner="r1")
    state = _state([_item(1, State.TESTING, "c1")], [_candidate([run], started_at=100.0)],
                   [RunnerSnap("r1", run.id)], settings)
    assert decide(state, [], 999.0).wake_at == 1000.0
    out = decide(state, [], 1000.0)
    assert isinstance(out.actions[0], FailCandidate)
    assert isinstance(out.actions[1], Reject) and out.actions[1].kind == "item-timeout"
    assert out.runners == (("r1", None),)  # its run was killed


def test_stages_run_in_order_per_configuration_and_the_first_failure_stops_the_rest() -> None:
    settings = PipelineSettings(mode=Mode.SPECULATIVE,
                                stages=(StageSpec("build"), StageSpec("test")))
    configs = ("a", "b")
    a_done = RunSnap("c1/a/0/0", "a", 0, RunState.PASSED, ended_at=600)
    b_run = RunSnap("c1/b/0/0", "b", 0, RunState.RUNNING, runner="r2")
    state = _state([_item(1, State.TESTING, "c1", configs)],
                   [_candidate([a_done, b_run], configs)],
                   [RunnerSnap("r1"), RunnerSnap("r2", b_run.id)], settings)
    assert decide(state, [], 600.0).actions == (StartRun("c1/a/1/0", "c1", "a", 1, 0, "r1"),)
    a_fail = RunSnap("c1/a/1/0", "a", 1, RunState.FAILED, exit_code=1, ended_at=900)
    state = _state([_item(1, State.TESTING, "c1", configs)],
                   [_candidate([a_done, b_run, a_fail], configs)],
                   [RunnerSnap("r1"), RunnerSnap("r2", b_run.id)], settings)
    out = decide(state, [], 900.0)
    failure = out.actions[0]
    assert isinstance(failure, FailCandidate)
    assert (failure.failure.stage, failure.failure.configuration) == ("test", "a")
    assert out.runners == (("r1", None), ("r2", None))


def test_a_pool_caps_its_stage_and_the_item_says_so() -> None:
    settings = PipelineSettings(mode=Mode.SPECULATIVE, stages=(StageSpec("rig", pool="hw"),),
                                pools={"hw": 1})
    items = [_item(k, configurations=("a", "b")) for k in (1, 2)]
    out = decide(_state(items, [], [RunnerSnap(f"r{k}") for k in range(4)], settings), [], 0.0)
    assert sum(isinstance(a, StartRun) for a in out.actions) == 1
    assert dict(out.waiting) == {"q1": "pool-full:hw", "q2": "pool-full:hw"}
    assert out.runners[0] == ("r0", "c100/a/0/0")


def test_a_higher_priority_submission_never_overtakes_started_work() -> None:
    script = Script([Spec(), Spec(), Spec(priority=9)], Mode.SPECULATIVE, runners=1,
                    arrivals=[0.0, 0.0, 10.0])
    script.run()
    assert script.landed() == ["q1", "q3", "q2"]


# --- purity and cost --------------------------------------------------------------------------

def test_decide_touches_no_clock_randomness_file_or_process(
        monkeypatch: pytest.MonkeyPatch) -> None:
    script = Script([Spec(bad=k == 3) for k in range(1, 12)], Mode.BATCH, runners=4)
    script.sim.step()
    script.sim.step()
    state = script.sim.world.snapshot()
    with outside_world_closed(monkeypatch):
        first = decide(state, [CancelRequest("q5")], script.sim.now)
        again = decide(state, [CancelRequest("q5")], script.sim.now)
    assert first == again and first.actions


class _Counting(Sequence[ItemSnap]):
    """A queue that remembers the furthest index read."""

    def __init__(self, items: list[ItemSnap]) -> None:
        self.items = items
        self.furthest = -1

    def __len__(self) -> int:
        return len(self.items)

    @overload
    def __getitem__(self, index: int) -> ItemSnap: ...
    @overload
    def __getitem__(self, index: slice) -> Sequence[ItemSnap]: ...

    def __getitem__(self, index: int | slice) -> ItemSnap | Sequence[ItemSnap]:
        assert isinstance(index, int)
        self.furthest = max(self.furthest, index)
        return self.items[index]


@pytest.mark.parametrize("mode", [Mode.SERIAL, Mode.SPECULATIVE, Mode.BATCH])
def test_with_10000_queued_items_decide_reads_only_the_front_in_under_a_millisecond(
        mode: Mode) -> None:
    script = Script([Spec() for _ in range(10_000)], mode, runners=8)
    script.sim.step()  # the front enters the pipeline; runs start
    base = script.sim.world.snapshot()
    counting = _Counting(list(base.items))
    state = QueueSnap(**{**base.__dict__, "items": counting})
    decide(state, [], 1.0)
    assert counting.furthest < 8 * 8 + 8
    costs = []
    for _ in range(50):
        start = time.perf_counter()
        decide(base, [], 1.0)
        costs.append(time.perf_counter() - start)
    assert statistics.median(costs) < 0.001
