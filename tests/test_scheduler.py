"""The serial scheduler (a pure function) and the queue ordering rule."""

from __future__ import annotations

import copy
import dataclasses

import pytest

from lockstep.queue import model, scheduler
from lockstep.queue.model import ItemView, QueueView, State
from lockstep.queue.scheduler import Land, Plan, Recover, decide
from lockstep.queue.store import Store
from tests.purity import outside_world_closed

StartTest = scheduler.Test  # not imported as Test: pytest would try to collect it


def item(seq: int, state: State = State.QUEUED, priority: int = 0, *, alive: bool = False,
         recoveries: int = 0) -> ItemView:
    return ItemView(model.item_id(seq), seq, priority, state, alive, recoveries)


def view(*items: ItemView, paused: bool = False, max_recoveries: int = 3) -> QueueView:
    return QueueView(paused=paused, items=items, max_recoveries=max_recoveries)


def ids(items: list[ItemView]) -> list[str]:
    return [i.id for i in items]


# --- model.order -------------------------------------------------------------------------------


def test_item_id() -> None:
    assert model.item_id(12) == "q12"


def test_order_is_priority_descending_then_submission() -> None:
    items = [item(1), item(2, priority=5), item(3), item(4, priority=5), item(5, priority=-1),
             item(6, priority=1)]
    assert ids(model.order(items)) == ["q2", "q4", "q6", "q1", "q3", "q5"]


def test_order_does_not_depend_on_input_order() -> None:
    items = [item(1), item(2, priority=5), item(3, State.PASSED), item(4, priority=5)]
    assert ids(model.order(items)) == ids(model.order(list(reversed(items))))


@pytest.mark.parametrize("state", [State.TESTING, State.FAILING, State.PASSED, State.LANDING])
def test_started_items_are_never_overtaken(state: State) -> None:
    items = [item(1), item(2, priority=100), item(7, state, priority=-5)]
    assert ids(model.order(items)) == ["q7", "q2", "q1"]


def test_started_items_are_ordered_by_submission_not_priority() -> None:
    items = [item(5, State.PASSED, priority=1), item(3, State.TESTING, priority=9),
             item(4, State.LANDING)]
    assert ids(model.order(items)) == ["q3", "q4", "q5"]


@pytest.mark.parametrize("state", sorted(model.TERMINAL))
def test_order_leaves_out_terminal_items(state: State) -> None:
    assert ids(model.order([item(1, state), item(2)])) == ["q2"]


def test_terminal_and_active_sets() -> None:
    assert {s for s in State if s.terminal} == {
        State.LANDED, State.REJECTED, State.SKIPPED, State.CANCELLED
    }
    assert not State.QUEUED.terminal
    assert model.ACTIVE.isdisjoint(model.TERMINAL)
    assert State.QUEUED not in model.ACTIVE


# --- decide: the front item --------------------------------------------------------------------


def test_empty_queue_is_idle() -> None:
    assert decide(view()) == Plan([], {}, "empty")


def test_only_terminal_items_is_empty() -> None:
    assert decide(view(item(1, State.LANDED), item(2, State.CANCELLED))) == Plan([], {}, "empty")


def test_queued_front_item_is_tested_and_the_rest_wait_behind() -> None:
    plan = decide(view(item(1), item(2), item(3)))
    assert plan.decisions == [StartTest("q1")]
    assert plan.wait_reasons == {"q1": "no-runner", "q2": "behind", "q3": "behind"}
    assert plan.idle_reason is None


def test_front_item_is_chosen_by_priority() -> None:
    plan = decide(view(item(1), item(2, priority=3), item(3, priority=3)))
    assert plan.decisions == [StartTest("q2")]
    assert plan.wait_reasons == {"q2": "no-runner", "q3": "behind", "q1": "behind"}


def test_passed_front_item_is_landed() -> None:
    plan = decide(view(item(1), item(2, State.PASSED)))
    assert plan.decisions == [Land("q2")]
    assert plan.wait_reasons == {"q2": "no-runner", "q1": "behind"}
    assert plan.idle_reason is None


def test_passed_item_lands_before_a_higher_priority_newcomer() -> None:
    plan = decide(view(item(1, State.PASSED), item(2, priority=10)))
    assert plan.decisions == [Land("q1")]
    assert plan.wait_reasons["q2"] == "behind"


@pytest.mark.parametrize("state", [State.TESTING, State.LANDING])
def test_busy_front_item_gives_no_decisions(state: State) -> None:
    plan = decide(view(item(1, state, alive=True), item(2), item(3, priority=9)))
    assert plan.decisions == []
    assert plan.idle_reason == "busy"
    assert plan.wait_reasons == {"q3": "behind", "q2": "behind"}  # the front item has none


def test_busy_front_item_is_not_overtaken_by_priority() -> None:
    plan = decide(view(item(4, State.TESTING, priority=-1, alive=True), item(5, priority=50)))
    assert plan == Plan([], {"q5": "behind"}, "busy")


# --- decide: paused ----------------------------------------------------------------------------


@pytest.mark.parametrize("front", [State.QUEUED, State.PASSED])
def test_paused_queue_neither_tests_nor_lands(front: State) -> None:
    plan = decide(view(item(1, front), item(2), paused=True))
    assert plan.decisions == []
    assert plan.idle_reason == "paused"
    assert plan.wait_reasons == {"q1": "paused", "q2": "behind"}


def test_paused_queue_lets_a_busy_item_finish() -> None:
    plan = decide(view(item(1, State.LANDING, alive=True), item(2), paused=True))
    assert plan == Plan([], {"q2": "behind"}, "busy")


def test_paused_queue_still_recovers_dead_holders() -> None:
    plan = decide(view(item(1, State.TESTING), item(2), paused=True))
    assert plan.decisions == [Recover("q1", State.TESTING, give_up=False)]
    assert plan.idle_reason == "recovering"


# --- decide: recovery --------------------------------------------------------------------------


@pytest.mark.parametrize("state", [State.TESTING, State.LANDING])
def test_dead_holder_is_recovered_first(state: State) -> None:
    plan = decide(view(item(1, state, alive=False), item(2)))
    assert plan == Plan([Recover("q1", state, give_up=False)], {}, "recovering")


def test_every_dead_holder_is_recovered_in_queue_order() -> None:
    plan = decide(view(
        item(1, State.PASSED),
        item(3, State.LANDING),
        item(2, State.TESTING, recoveries=1),
        item(4, State.TESTING, alive=True),
        item(5),
    ))
    assert plan.decisions == [
        Recover("q2", State.TESTING, give_up=False),
        Recover("q3", State.LANDING, give_up=False),
    ]
    assert plan.idle_reason == "recovering"


@pytest.mark.parametrize("state", [State.QUEUED, State.PASSED])
def test_items_without_a_holder_are_not_recovered(state: State) -> None:
    plan = decide(view(item(1, state, alive=False)))
    assert not any(isinstance(d, Recover) for d in plan.decisions)


@pytest.mark.parametrize(
    ("recoveries", "max_recoveries", "give_up"),
    [(0, 3, False), (2, 3, False), (3, 3, True), (4, 3, True), (0, 0, True), (1, 2, False)],
)
def test_testing_item_gives_up_after_max_recoveries(
    recoveries: int, max_recoveries: int, give_up: bool
) -> None:
    plan = decide(view(item(1, State.TESTING, recoveries=recoveries),
                       max_recoveries=max_recoveries))
    assert plan.decisions == [Recover("q1", State.TESTING, give_up=give_up)]


def test_landing_item_is_always_reconciled_never_given_up() -> None:
    """A landing may already be on the remote: it must be reconciled, whatever the count."""
    plan = decide(view(item(1, State.LANDING, recoveries=10), max_recoveries=3))
    assert plan.decisions == [Recover("q1", State.LANDING, give_up=False)]


def test_default_max_recoveries_is_3() -> None:
    assert QueueView(paused=False, items=()).max_recoveries == 3
    assert decide(QueueView(False, (item(1, State.TESTING, recoveries=3),))).decisions == [
        Recover("q1", State.TESTING, give_up=True)
    ]


PURITY_VIEWS = {
    "empty": view(),
    "recover-land-test": view(item(1, State.TESTING), item(2, State.PASSED), item(3, priority=2)),
    "give-up": view(item(4, State.TESTING, recoveries=3), item(5, State.LANDING), item(6)),
    "busy": view(item(1, State.TESTING, alive=True), item(2), item(3, priority=9)),
    "paused": view(item(1, State.PASSED), item(2), paused=True),
    "test-by-priority": view(item(1), item(2, priority=3), item(3, priority=3)),
    "draining": QueueView(paused=False, items=(item(1), item(2)), draining=True),
}


@pytest.mark.parametrize("name", PURITY_VIEWS)
def test_decide_is_pure(name: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """decide depends on its argument only: it reads no clock, store or file, changes nothing
    it was given, keeps no state between calls and ignores the snapshot's row order."""
    v = PURITY_VIEWS[name]
    snapshot = copy.deepcopy(v)
    store = [(Store, "open"), (Store, "tx"), (Store, "read")]
    with outside_world_closed(monkeypatch, also=store):
        first = decide(copy.deepcopy(v))
        expected = copy.deepcopy(first)
        first.decisions.append(StartTest("q999"))  # a caller may change what it got back
        first.wait_reasons["q999"] = "behind"
        again = decide(v)
        shuffled = decide(dataclasses.replace(v, items=tuple(reversed(v.items))))
    assert again == shuffled == expected
    assert v == snapshot


# --- drain -------------------------------------------------------------------------------------


def draining(*items: ItemView, paused: bool = False) -> QueueView:
    return QueueView(paused=paused, items=items, draining=True)


def test_drain_with_nothing_started_pauses_at_once() -> None:
    plan = decide(draining(item(1), item(2)))
    assert plan.decisions == [scheduler.PauseQueue("drained")]
    assert plan.wait_reasons == {"q1": "draining", "q2": "draining"}


def test_drain_lands_what_passed_first() -> None:
    plan = decide(draining(item(1, State.PASSED), item(2)))
    assert plan.decisions == [Land("q1")]


def test_drain_waits_for_a_running_item() -> None:
    plan = decide(draining(item(1, State.TESTING, alive=True), item(2)))
    assert plan.decisions == [] and plan.idle_reason == "busy"


def test_drain_of_an_empty_queue_pauses() -> None:
    assert decide(draining()).decisions == [scheduler.PauseQueue("drained")]
    assert decide(draining(paused=True)).decisions == []
