"""The pipeline view: what each runner tests and why each item waits, read from a store the
scheduler's own decisions populated, without changing a row of it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import Connection, select

from lockstep.queue import pipeline_store as ps
from lockstep.queue import schema as s
from lockstep.queue.model import State
from lockstep.queue.pipeline import Mode, PipelineSettings, StageSpec, WindowKind, decide
from lockstep.queue.pipeline_view import annotate, pipeline_view
from lockstep.queue.store import Store

STAGES = (StageSpec("build"), StageSpec("check"))
SPECULATIVE = PipelineSettings(mode=Mode.SPECULATIVE, stages=STAGES)


@pytest.fixture
def store(tmp_path: Path) -> Iterator[Store]:
    """A new SQLite store."""
    opened = Store.open(tmp_path / "queue.db")
    yield opened
    opened.close()


def submit(store: Store, n: int, at: float = 0.0) -> list[str]:
    """n queued items, components comp<seq>; their ids."""
    ids = []
    with store.tx() as c:
        for _ in range(n):
            seq = store.add_item(c, component="comp", version="v1", sha="a" * 40,
                                 configurations=["default"], priority=0, state=State.QUEUED)
            store.set_item(c, seq, component=f"comp{seq}", submitted_at=at)
            ids.append(f"q{seq}")
    return ids


def runners(store: Store, *names: str, worker: str = "w1") -> None:
    """Register free runners of one worker."""
    with store.tx() as c:
        for name in names:
            ps.add_runner(c, name, worker=worker)


def schedule(store: Store, settings: PipelineSettings, now: float) -> None:
    """One scheduling round, applied (what the pipeline worker does)."""
    with store.tx() as c:
        snap = ps.read_snapshot(store, c, settings)
        ps.apply_decisions(store, c, snap, decide(snap, (), now), now)


def rows(c: Connection) -> dict[str, list[Any]]:
    """Every row the scheduler writes, to check the view changed none."""
    return {t.name: [tuple(r) for r in c.execute(select(t))]
            for t in (s.items, s.candidates, s.pipeline_runs, s.runners, s.queues, s.events)}


def test_runners_show_their_candidates_and_the_rest_waits_outside_the_window(
        store: Store) -> None:
    ids = submit(store, 4)
    runners(store, "r1", "r2")
    schedule(store, SPECULATIVE, 10.0)
    with store.read() as c:
        before = rows(c)
        view = pipeline_view(store, c, SPECULATIVE, 11.0)
        assert rows(c) == before, "the view applied a decision"
    assert view.window == 2 and view.mode == "speculative"
    assert [(r.runner, r.worker, r.candidate, r.items, r.own, r.configuration, r.stage,
             r.started_at) for r in view.runners] == [
        ("r1", "w1", "c1", (ids[0],), (ids[0],), "default", "build", 10.0),
        ("r2", "w1", "c2", (ids[0], ids[1]), (ids[1],), "default", "build", 10.0)]
    assert [view.wait_reason(i) for i in ids] == [None, None, "outside-window",
                                                  "outside-window"]
    assert view.wait_reason("q999") == "outside-window"  # past the front the scheduler reads


def test_a_candidate_without_a_free_runner_waits_for_one(store: Store) -> None:
    ids = submit(store, 3)
    runners(store, "r1")
    fixed = PipelineSettings(mode=Mode.SPECULATIVE, stages=STAGES, window=WindowKind.FIXED,
                             window_fixed=2)
    schedule(store, fixed, 10.0)
    with store.read() as c:
        view = pipeline_view(store, c, fixed, 11.0)
    assert [(r.runner, r.candidate, r.own) for r in view.runners] == [("r1", "c1", (ids[0],))]
    assert [view.wait_reason(i) for i in ids] == [None, "no-runner", "outside-window"]


def test_items_the_next_round_starts_and_a_paused_queue(store: Store) -> None:
    ids = submit(store, 2)
    runners(store, "r1", "r2")
    with store.read() as c:
        view = pipeline_view(store, c, SPECULATIVE, 1.0)
    assert [view.wait_reason(i) for i in ids] == ["starting", "starting"]
    assert [r.run for r in view.runners] == [None, None]
    with store.tx() as c:
        c.execute(s.queues.update().values(paused=1, paused_reason="user"))
    with store.read() as c:
        paused = pipeline_view(store, c, SPECULATIVE, 1.0)
    assert [paused.wait_reason(i) for i in ids] == ["paused", "paused"]


def test_a_batch_filling_up_waits(store: Store) -> None:
    ids = submit(store, 2, at=100.0)
    runners(store, "r1")
    batch = PipelineSettings(mode=Mode.BATCH, stages=STAGES, batch_size=4, batch_max_wait=60.0)
    with store.read() as c:
        view = pipeline_view(store, c, batch, 110.0)
    assert [view.wait_reason(i) for i in ids] == ["batch-filling", "batch-filling"]


def test_annotate_adds_runners_and_reasons_only_when_runners_exist(store: Store) -> None:
    ids = submit(store, 3)
    doc = {"queue": {"state": "waiting", "window": 1, "runners": []},
           "items": [{"id": i, "wait_reason": "no-runner"} for i in ids], "recent": []}
    serial = {**doc, "items": [dict(i) for i in doc["items"]]}
    assert annotate(serial, store, SPECULATIVE) == doc, "serial output must not change"
    runners(store, "r1", "r2")
    schedule(store, SPECULATIVE, 5.0)
    out = annotate(doc, store, SPECULATIVE, 6.0)
    assert [i["wait_reason"] for i in out["items"]] == [None, None, "outside-window"]
    assert [(r["runner"], r["candidate"], r["stage"]) for r in out["pipeline"]["runners"]] == [
        ("r1", "c1", "build"), ("r2", "c2", "build")]
    assert out["pipeline"]["window"] == 2 and out["pipeline"]["rest_reason"] == "outside-window"
    assert (out["queue"]["state"], out["queue"]["window"]) == ("running", 2)
