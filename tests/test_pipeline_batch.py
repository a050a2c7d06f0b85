"""Batch mode with bisection (spec/queue.md §5; scenarios Q13, Q14): formation, max wait,
priorities, one bump per component and configuration, splits, one landing per passed batch."""

from __future__ import annotations

from lockstep.queue.pipeline import Enter, Land, Mode, Split, StartCandidate
from tests.test_pipeline_harness import Script, Spec, assert_every_landing_tested_as_serial


def _culprit(at: int, n: int = 8) -> list[Spec]:
    return [Spec(bad=k == at) for k in range(1, n + 1)]


def test_q13_halving_with_one_runner_isolates_the_culprit_in_at_most_seven_runs() -> None:
    for at in range(1, 9):
        script = Script(_culprit(at), Mode.BATCH, runners=1, bisect_ways=2).run()
        assert script.rejected() == [f"q{at}"]
        assert script.landed() == [f"q{k}" for k in range(1, 9) if k != at]
        assert script.runs() <= 7
        splits = [a for a in script.of(Split) if isinstance(a, Split)]
        assert all(len(a.parts) == 2 for a in splits)
        # each passing part lands as one landing (one tag) listing its items
        lands = [a.items for a in script.of(Land) if isinstance(a, Land)]
        assert all(len(items) >= 1 for items in lands) and len(lands) == len(set(lands))
        assert_every_landing_tested_as_serial(script)


def test_q13_auto_split_at_four_runners_tests_four_cumulative_parts_at_once() -> None:
    script = Script(_culprit(6), Mode.BATCH, runners=4)
    script.sim.step()  # t = 0: the batch of 8 starts
    script.sim.step()  # t = T: it failed and is split into 4 parts of 2
    _, decisions = script.history[-1]
    split = next(a for a in decisions.actions if isinstance(a, Split))
    assert [items for _, items in split.parts] == [("q1", "q2"), ("q3", "q4"), ("q5", "q6"),
                                                    ("q7", "q8")]
    started = [a for a in decisions.actions if isinstance(a, StartCandidate)]
    assert [c.items for c in started] == [
        ("q1", "q2"), ("q1", "q2", "q3", "q4"), ("q1", "q2", "q3", "q4", "q5", "q6"),
        ("q1", "q2", "q3", "q4", "q5", "q6", "q7", "q8")]
    assert script.runs() == 1 + 4
    script.run()
    assert script.rejected() == ["q6"]
    assert script.landed() == ["q1", "q2", "q3", "q4", "q5", "q7", "q8"]
    assert_every_landing_tested_as_serial(script)  # no untested tree is tagged


def test_q14_a_partial_batch_starts_after_batch_max_wait_on_the_virtual_clock() -> None:
    script = Script([Spec(), Spec(), Spec()], Mode.BATCH, runners=2, batch_max_wait=60.0)
    script.sim.step()  # t = 0: three items, batch_size 8: the batch fills
    _, first = script.history[-1]
    assert not first.actions or all(not isinstance(a, Enter) for a in first.actions)
    assert dict(first.waiting) == {"q1": "batch-filling", "q2": "batch-filling",
                                   "q3": "batch-filling"}
    assert first.wake_at == 60.0
    script.sim.step()
    now, decisions = script.history[-1]
    assert now == 60.0
    assert [a.items for a in decisions.actions if isinstance(a, Enter)] == [("q1", "q2", "q3")]
    script.run()
    assert [a.items for a in script.of(Land) if isinstance(a, Land)] == [("q1", "q2", "q3")]


def test_q14_priorities_never_mix_in_a_batch() -> None:
    specs = [Spec(priority=0), Spec(priority=0), Spec(priority=5), Spec(priority=5),
             Spec(priority=0)]
    script = Script(specs, Mode.BATCH, runners=1).run()
    batches = [a.items for a in script.of(Enter) if isinstance(a, Enter)]
    assert batches == [("q3", "q4"), ("q1", "q2", "q5")]
    priority = {f"q{k}": s.priority for k, s in enumerate(specs, start=1)}
    assert all(len({priority[i] for i in batch}) == 1 for batch in batches)
    assert script.landed() == ["q3", "q4", "q1", "q2", "q5"]


def test_q14_a_second_bump_of_one_component_starts_the_next_batch() -> None:
    specs = [Spec(component="api"), Spec(component="db"), Spec(component="api"),
             Spec(component="ui")]
    script = Script(specs, Mode.BATCH, runners=2).run()
    batches = [a.items for a in script.of(Enter) if isinstance(a, Enter)]
    assert batches == [("q1", "q2"), ("q3", "q4")]
    assert script.landed() == ["q1", "q2", "q3", "q4"]
    starts = [now for now, a in script.actions() if isinstance(a, Enter)]
    assert starts == [0.0, 60.0]  # closed by the conflict, the first starts at once; the
    # second is partial and waits batch_max_wait


def test_a_failed_batch_behind_a_running_one_waits_then_splits_and_batches_behind_rebuild() -> None:
    specs = [Spec() for _ in range(8)] + [Spec(bad=k == 3) for k in range(1, 9)] + \
        [Spec() for _ in range(8)]
    script = Script(specs, Mode.BATCH, runners=8).run()
    assert script.rejected() == ["q11"]
    assert len(script.landed()) == 23
    assert_every_landing_tested_as_serial(script)
