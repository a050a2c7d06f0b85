"""Speculative mode (spec/queue.md §4; scenarios Q10–Q12): candidates on the items ahead,
rejection at the head, retests without a failed item, landing order and the aimd window."""

from __future__ import annotations

from lockstep.queue.pipeline import Discard, FailCandidate, Mode, WindowKind
from tests.test_pipeline_harness import Script, Spec, T, assert_every_landing_tested_as_serial


def test_q10_one_bad_item_is_rejected_once_at_the_head_and_the_rest_land_as_serially() -> None:
    script = Script([Spec(), Spec(bad=True), Spec(), Spec(), Spec(), Spec()], Mode.SPECULATIVE,
                    runners=4).run()
    assert script.landed() == ["q1", "q3", "q4", "q5", "q6"]
    rejections = script.rejections()
    assert [r.item for r in rejections] == ["q2"] and rejections[0].kind == "stage-failed"
    # q2 was rejected at the head: its failed tree (q1 + q2) is head + its bump once q1 landed
    failed = script.candidates()[rejections[0].candidate or ""]
    assert failed.items == ("q1", "q2") and failed.base_landed == 0
    order = [(type(a).__name__, getattr(a, "items", getattr(a, "item", None)))
             for _, a in script.actions() if type(a).__name__ in ("Land", "Reject")]
    assert order[:2] == [("Land", ("q1",)), ("Reject", "q2")]
    # every candidate holding q2 was discarded, and q3–q6 were retested without it
    holding_q2 = {cid for cid, c in script.candidates().items() if "q2" in c.items[:-1]}
    discarded = {a.candidate for a in script.of(Discard) if isinstance(a, Discard)}
    assert holding_q2 == {cid for cid in holding_q2 if cid in discarded} and holding_q2
    for item in ("q3", "q4", "q5", "q6"):
        last = [c for c in script.candidates().values() if c.own == (item,)][-1]
        assert "q2" not in last.items
    assert len(script.of(FailCandidate)) == 1
    assert_every_landing_tested_as_serial(script)  # one tag each, trees equal serial mode's


def test_q10_the_first_round_tests_four_cumulative_candidates_at_once() -> None:
    script = Script([Spec() for _ in range(6)], Mode.SPECULATIVE, runners=4)
    script.sim.step()
    first = list(script.candidates().values())
    assert [c.items for c in first] == [("q1",), ("q1", "q2"), ("q1", "q2", "q3"),
                                        ("q1", "q2", "q3", "q4")]
    assert script.runs() == 4
    waiting = dict(script.history[-1][1].waiting)
    assert script.history[-1][1].rest_reason == "outside-window" and "q5" not in waiting


def test_q11_an_item_failing_only_because_of_another_is_requeued_and_lands() -> None:
    # q3's candidate (q1 + q2 + q3) fails first, because of q1; q1's own run ends later
    script = Script([Spec(bad=True, duration=2 * T), Spec(duration=2 * T), Spec(duration=T)],
                    Mode.SPECULATIVE, runners=4)
    script.sim.step()  # t = 0: three candidates start
    script.sim.step()  # t = T: q3's run failed
    assert script.sim.world.states["q3"] == "failing"
    script.run()
    assert script.rejected() == ["q1"]
    assert script.landed() == ["q2", "q3"]
    requeued = [a for a in script.of(Discard) if isinstance(a, Discard)
                and a.why == "assumed-gone"]
    assert [script.candidates()[a.candidate].own for a in requeued] == [("q3",)]
    assert_every_landing_tested_as_serial(script)


def test_q12_aimd_halves_on_a_rejection_then_grows_by_one_per_landing() -> None:
    script = Script([Spec(bad=True), Spec(), Spec()], Mode.SPECULATIVE, runners=8,
                    window=WindowKind.AIMD, window_floor=3).run()
    assert script.windows() == [8, 4, 6]
    assert script.landed() == ["q2", "q3"]


def test_q12_aimd_never_goes_below_its_floor() -> None:
    script = Script([Spec(bad=True) for _ in range(12)], Mode.SPECULATIVE, runners=8,
                    window=WindowKind.AIMD, window_floor=3).run()
    windows = script.windows()
    assert windows[:3] == [8, 4, 3] and min(windows) == 3
    assert script.rejected() == [f"q{k}" for k in range(1, 13)]
    for _, decisions in script.history:  # never more than W items hold runs
        assert decisions.window >= 3


def test_serial_is_speculative_with_a_window_of_one() -> None:
    specs = [Spec(bad=k in (2, 5)) for k in range(1, 8)]
    serial = Script(specs, Mode.SERIAL, runners=4).run()
    one = Script(specs, Mode.SPECULATIVE, runners=4, window=WindowKind.FIXED,
                 window_fixed=1).run()
    assert serial.landed() == one.landed() and serial.runs() == one.runs() == 7
    assert serial.sim.world.measures.makespan == one.sim.world.measures.makespan == 7 * T
