"""The pipeline scheduler's store side on SQLite and PostgreSQL: the 2 → 3 migration, the
front-only snapshot, and every decision recorded exactly as the simulator's world applies it."""

from __future__ import annotations

import heapq
import random
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any, get_args

import pytest
from sqlalchemy import Connection, event, select, text, update

from lockstep.queue import pipeline_store as ps
from lockstep.queue import schema as s
from lockstep.queue import store_url
from lockstep.queue.model import State
from lockstep.queue.pipeline import (
    Action,
    CancelRequest,
    DrainRequest,
    Event,
    ItemSnap,
    Mode,
    PauseRequest,
    PipelineSettings,
    QueueSnap,
    ResumeRequest,
    WindowKind,
    decide,
)
from lockstep.queue.pipeline.transitions import Transitions
from lockstep.queue.store import Store
from lockstep.sim.engine import Simulation
from lockstep.sim.params import Distribution, SimParams, SimStage
from lockstep.sim.world import World
from tests.infra import postgres

postgres_server = postgres.postgres_server
postgres_url = postgres.postgres_url


@pytest.fixture(autouse=True)
def no_store_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LOCKSTEP_STORE_URL must not redirect these tests."""
    monkeypatch.delenv(store_url.ENV_VAR, raising=False)


@pytest.fixture(params=("sqlite", "postgres"))
def url(request: pytest.FixtureRequest) -> str | None:
    """None for the SQLite file, else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def store(tmp_path: Path, url: str | None) -> Iterator[Store]:
    """A new store on the backend of the run."""
    opened = Store.open(tmp_path / "queue.db", url=url)
    yield opened
    opened.close()


def submit(store: Store, c: Connection, n: int, priority: int = 0,
           state: State = State.QUEUED, at: float = 0.0) -> list[str]:
    """n items of components comp<seq>; their ids."""
    ids = []
    for _ in range(n):
        seq = store.add_item(c, component="comp", version="v1", sha="a" * 40,
                             configurations=["default"], priority=priority, state=state)
        store.set_item(c, seq, component=f"comp{seq}", submitted_at=at)
        ids.append(f"q{seq}")
    return ids


# --- migration ---------------------------------------------------------------------------------


V3_COLUMNS = {"items": ("position", '"group"', "candidate_id"),
              "queues": ('"window"', "landed_count", "external_commits", "next_candidate",
                         "next_group", "next_position")}


def make_v2(store: Store) -> None:
    """Turn a new store into what schema 2 wrote: no pipeline tables, columns or indexes."""
    with store.tx() as c:
        for table in ("pipeline_runs", "runners", "candidates"):
            c.execute(text(f"DROP TABLE {table}"))
        for index in ("ix_items_positioned", "ix_items_waiting"):
            c.execute(text(f"DROP INDEX {index}"))
        for table, columns in V3_COLUMNS.items():
            for column in columns:
                c.execute(text(f"ALTER TABLE {table} DROP COLUMN {column}"))
        c.execute(update(s.schema_info).values(version=2))


def test_a_version_3_store_gains_the_run_process_columns(tmp_path: Path,
                                                         url: str | None) -> None:
    """Schema 3 → 4: pipeline runs gain host, pid and pid_started; nothing else changes."""
    raw = Store.open(tmp_path / "queue.db", url=url)
    with raw.tx() as c:
        for column in ("host", "pid", "pid_started"):
            c.execute(text(f"ALTER TABLE pipeline_runs DROP COLUMN {column}"))
        c.execute(update(s.schema_info).values(version=3))
    raw.close()
    store = Store.open(tmp_path / "queue.db", url=url)
    try:
        with store.tx() as c:
            assert c.execute(select(s.schema_info.c.version)).scalar_one() == 4
            assert store.last_event(c, "schema-migrated") == {"from": 3, "to": 4,
                                                              "deliveries_dropped": 0}
            assert c.execute(select(s.pipeline_runs.c.host, s.pipeline_runs.c.pid,
                                    s.pipeline_runs.c.pid_started)).all() == []
    finally:
        store.close()


def test_a_version_2_store_migrates_to_3_keeping_its_items(tmp_path: Path,
                                                           url: str | None) -> None:
    """Items of a schema-2 store survive the upgrade, all waiting; the pipeline then runs on it;
    reopening migrates nothing more."""
    old = Store.open(tmp_path / "queue.db", url=url)
    with old.tx() as c:
        live = submit(old, c, 3)
        submit(old, c, 2, state=State.LANDED)
    old.close()
    raw = Store.open(tmp_path / "queue.db", url=url)
    make_v2(raw)
    raw.close()

    store = Store.open(tmp_path / "queue.db", url=url)
    settings = PipelineSettings(mode=Mode.SPECULATIVE)
    try:
        with store.tx() as c:
            assert c.execute(select(s.schema_info.c.version)).scalar_one() == 4
            assert store.last_event(c, "schema-migrated") == {"from": 2, "to": 4,
                                                              "deliveries_dropped": 0}
            ps.add_runner(c, "r1")
            ps.add_runner(c, "r2")
            snap = ps.read_snapshot(store, c, settings)
            assert [(i.id, i.position, i.group, i.candidate) for i in snap.items] == [
                (i, None, None, None) for i in live]
            assert (snap.window, snap.landed_count, snap.next_candidate, snap.next_position) == (
                None, 0, 1, 1)
            decisions = decide(snap, (), 0.0)
            ps.apply_decisions(store, c, snap, decisions, 0.0)
            again = ps.read_snapshot(store, c, settings)
        assert [(i.id, i.state, i.position) for i in again.items] == [
            (live[0], State.TESTING, 1), (live[1], State.TESTING, 2), (live[2], State.QUEUED, None)]
        assert {r.id: r.run for r in again.runners} == {"r1": "c1/default/0/0",
                                                        "r2": "c2/default/0/0"}
    finally:
        store.close()
    reopened = Store.open(tmp_path / "queue.db", url=url)
    with reopened.read() as c:
        kinds = c.execute(select(s.events.c.kind).where(s.events.c.item_seq.is_(None))).scalars()
        assert list(kinds).count("schema-migrated") == 1
    reopened.close()


def round_trip(store: Store, c: Connection, settings: PipelineSettings, now: float) -> None:
    """One scheduling round inside c: read the front, decide, record."""
    snap = ps.read_snapshot(store, c, settings)
    ps.apply_decisions(store, c, snap, decide(snap, (), now), now)


# --- the front-only snapshot -------------------------------------------------------------------


def test_snapshot_reads_the_front_only_in_queue_order(store: Store, url: str | None) -> None:
    """Positioned items by position, then waiting ones by priority desc, seq asc, cut at
    window × batch size + margin; finished items and far waiting ones are never read; states
    cover every item a candidate names, landed ones included."""
    settings = PipelineSettings(mode=Mode.SPECULATIVE, window=WindowKind.FIXED, window_fixed=2,
                                batch_size=3)
    with store.tx() as c:
        for k in range(3):
            ps.add_runner(c, f"r{k + 1}")
        low = submit(store, c, 60)
        submit(store, c, 40, state=State.LANDED)
        high = submit(store, c, 4, priority=5)
        round_trip(store, c, settings, 0.0)
    with store.tx() as c:  # the head's run passes: it lands; the next one enters
        head = ps.read_snapshot(store, c, settings).candidates["c1"]
        assert ps.finish_run(c, head.runs[0].id, ps.RunState.PASSED, 0, 10.0)
        round_trip(store, c, settings, 10.0)
        landing = ps.read_snapshot(store, c, settings)
        assert ps.landing_candidates(c) == ["c1"]
        assert ps.landed(store, c, "c1", 11.0) == [high[0]]
        snap = ps.read_snapshot(store, c, settings)
    assert [(i.id, i.state) for i in landing.items[:3]] == [
        (high[0], State.LANDING), (high[1], State.TESTING), (high[2], State.TESTING)]
    limit = 2 * 3 + ps.FRONT_MARGIN
    positioned = [i.id for i in snap.items if i.position is not None]
    assert positioned == [high[1], high[2]]
    assert [i.id for i in snap.items[2:]] == [high[3], *low[:limit - 1]]
    assert len(snap.items) == 2 + limit
    assert snap.states[high[0]] == State.LANDED  # named by c2 (assumed), not in the front
    assert set(snap.candidates) == {"c2", "c3"}
    assert snap.candidates["c2"].items == tuple(high[:2])  # built on the landed head
    assert snap.candidates["c3"].items == tuple(high[1:3])
    if url is None:  # SQLite: the two front reads go through their partial indexes
        with store.read() as c:
            for where in ("position IS NOT NULL ORDER BY position",
                          "position IS NULL ORDER BY priority DESC, seq LIMIT 5"):
                states = ", ".join(f"'{v}'" for v in s.LIVE_STATES)
                plan = c.exec_driver_sql(
                    f"EXPLAIN QUERY PLAN SELECT seq FROM items WHERE state IN ({states}) "
                    f"AND {where}").all()
                detail = " ".join(str(row[-1]) for row in plan)
                assert "ix_items_positioned" in detail or "ix_items_waiting" in detail, detail
                assert "TEMP B-TREE" not in detail, detail


def test_every_action_has_one_transition() -> None:
    """The store and the simulator apply every action type through the one `Transitions`."""
    assert set(Transitions._ACTIONS) == set(get_args(Action))
    assert issubclass(World, Transitions) and issubclass(ps._Applier, Transitions)


def test_a_failing_head_is_recorded_in_few_statements(store: Store) -> None:
    """A round where the head fails (reject, rebuild the 7 candidates behind, start 8 runs)
    writes its rows in one statement on PostgreSQL, and in one executemany per table and kind
    of change on SQLite; the rebuilt candidates run, each lease with its own token."""
    settings = PipelineSettings(mode=Mode.SPECULATIVE)
    with store.tx() as c:
        for k in range(8):
            ps.add_runner(c, f"r{k + 1}")
        items = submit(store, c, 12)
        round_trip(store, c, settings, 0.0)
        head = ps.read_snapshot(store, c, settings).candidates["c1"]
        assert ps.finish_run(c, head.runs[0].id, ps.RunState.FAILED, 1, 10.0)
    writes: list[str] = []

    def count(conn: Any, cursor: Any, statement: str, *rest: Any) -> None:
        if not statement.lstrip().upper().startswith("SELECT"):
            writes.append(statement)

    with store.tx() as c:
        snap = ps.read_snapshot(store, c, settings)
        decisions = decide(snap, (), 10.0)
        event.listen(store.engine, "before_cursor_execute", count)
        try:
            ps.apply_decisions(store, c, snap, decisions, 10.0)
        finally:
            event.remove(store.engine, "before_cursor_execute", count)
        after = ps.read_snapshot(store, c, settings)
    kinds = {type(a).__name__ for a in decisions.actions}
    assert {"FailCandidate", "Reject", "Discard", "StartCandidate", "StartRun"} <= kinds
    assert len(writes) == (1 if store.is_postgres else 9), writes
    assert [(i.id, i.state) for i in after.items[:8]] == [
        (i, State.TESTING) for i in items[1:9]]
    assert sorted(r.run or "" for r in after.runners) == sorted(
        run.id for cand in after.candidates.values() for run in cand.runs
        if run.state == ps.RunState.RUNNING)
    with store.read() as c:
        outcome = store.item(c, int(items[0][1:])).outcome or {}
        killed = c.execute(select(s.pipeline_runs.c.id).where(
            s.pipeline_runs.c.state == "killed", s.pipeline_runs.c.wasted == 1)).scalars()
        assert len(list(killed)) == 7
        tokens = c.execute(select(s.pipeline_runs.c.lease_token).where(
            s.pipeline_runs.c.state == "running")).scalars().all()
        lease_seq = c.execute(select(s.queues.c.lease_seq)).scalar_one()
    assert outcome["rejected"] == "stage-failed"
    assert sorted(tokens) == list(range(9, 17)) and lease_seq == 16  # 8 at the fill, 8 now


# --- the store and the simulator agree ---------------------------------------------------------


class Twin:
    """A simulation and a store fed the same arrivals, run results, landings and decisions."""

    def __init__(self, store: Store, params: SimParams, bad: dict[str, frozenset[int]]) -> None:
        """Submit params.n items to both at t = 0; the store gets the world's runners."""
        self.store = store
        items = [ItemSnap(f"q{k}", k, 0, State.QUEUED, f"comp{k}", params.configurations)
                 for k in range(1, params.n + 1)]
        self.sim = Simulation(params, items, bad, random.Random(7), verify=False, record=True)
        self.settings = self.sim.world.settings
        self.kinds: set[str] = set()
        with store.tx() as c:
            for runner in self.sim.world.runners:
                ps.add_runner(c, runner, worker="w1")
            for item in items:
                seq = store.add_item(c, component=item.component, version="v1", sha="a" * 40,
                                     configurations=list(item.configurations), priority=0)
                store.set_item(c, seq, submitted_at=0.0)
                assert f"q{seq}" == item.id

    def step(self, events: Sequence[Event] = ()) -> bool:
        """One event time in both; False when the simulation has nothing left."""
        world = self.sim.world
        if not world.events:
            return False
        now = self.sim.now = world.events[0][0]
        with self.store.tx() as c:
            while world.events and world.events[0][0] == now:
                _, _, _, kind, payload = heapq.heappop(world.events)
                if kind == "run":
                    alive = payload in world.runs  # a killed run's end is ignored by both
                    world.run_ended(payload, now)
                    result = self._run(world, payload) if alive else (ps.RunState.PASSED, 0)
                    assert ps.finish_run(c, payload, *result, now) == alive
                elif kind == "landed":
                    world.landing_done(now)
                    ps.landed(self.store, c, ps.landing_candidates(c)[0], now)
                elif kind == "arrival":
                    item = self.sim.pending.pop(payload)
                    world.submit(ItemSnap(item.id, item.seq, item.priority, item.state,
                                          item.component, item.configurations, now))
                else:
                    self.sim.timers.discard(now)
            snap = ps.read_snapshot(self.store, c, self.settings)
            assert_same(snap, world.snapshot())
            decisions = self.sim.decide(events)
            self.kinds.update(type(a).__name__ for a in decisions.actions)
            ps.apply_decisions(self.store, c, snap, decisions, now)
            if self.sim.world.params.landing_s == 0:
                for candidate in ps.landing_candidates(c):
                    ps.landed(self.store, c, candidate, now)
            assert_same(ps.read_snapshot(self.store, c, self.settings), world.snapshot())
        return True

    @staticmethod
    def _run(world: Any, run_id: str) -> tuple[ps.RunState, int]:
        """The result the world recorded for a run that just ended."""
        for cand in world.candidates.values():
            for r in cand.runs:
                if r.id == run_id:
                    assert r.exit_code is not None
                    return r.state, r.exit_code
        raise AssertionError(f"run {run_id} not found")

    def run(self, events_at: dict[int, Sequence[Event]]) -> None:
        """Step to the end, passing requests at given step numbers."""
        steps = 0
        while self.step(events_at.get(steps, ())):
            steps += 1
        assert steps > 3


def assert_same(stored: QueueSnap, world: QueueSnap) -> None:
    """The store's snapshot is the world's, for every field `decide` reads."""
    def items(snap: QueueSnap) -> list[tuple[Any, ...]]:
        return [(i.id, i.seq, i.priority, i.state, i.component, i.configurations, i.position,
                 i.group, i.candidate) for i in snap.items]

    def candidates(snap: QueueSnap) -> dict[str, tuple[Any, ...]]:
        return {k: (c.items, c.own, c.configurations, c.state, c.base_landed, c.base_external,
                    c.started_at, c.failure,
                    [(r.id, r.configuration, r.stage, r.state, r.attempt, r.runner,
                      r.exit_code, r.ended_at) for r in c.runs])
                for k, c in snap.candidates.items()}

    assert items(stored) == items(world)
    assert candidates(stored) == candidates(world)
    assert [(r.id, r.run, r.pool) for r in stored.runners] == [
        (r.id, r.run, r.pool) for r in world.runners]
    for key in ("landed_count", "window", "paused", "draining", "infra_streak",
                "next_candidate", "next_group", "next_position"):
        assert getattr(stored, key) == getattr(world, key), key
    for named in {i for c in world.candidates.values() for i in c.items}:
        assert stored.states[named] == world.states[named], named


def final_states(store: Store) -> dict[str, State]:
    """Every item's state in the store."""
    with store.read() as c:
        return {i.id: i.state for i in store.items(c, include_terminal=True)}


def test_speculative_round_trip_agrees_with_the_simulator(store: Store) -> None:
    """Speculative, aimd window, two stages (one pooled), infra retries, a cancel, a pause and
    a drain: every decision type but Split, applied to both; same snapshots throughout and the
    same final states."""
    stages = (SimStage("build", Distribution("uniform", 50.0, 80.0)),
              SimStage("hw", Distribution("uniform", 100.0, 200.0), pool="hw"))
    params = SimParams(n=24, runners=3, pools=(("hw", 2),), mode=Mode.SPECULATIVE,
                       window=WindowKind.AIMD, window_floor=2, stages=stages, infra=0.05,
                       landing_s=5.0, reps=1)
    bad = {f"q{k}": frozenset({1}) if k in (3, 4, 11) else frozenset({0}) if k == 17
           else frozenset() for k in range(1, 25)}
    twin = Twin(store, params, bad)
    twin.run({2: (CancelRequest("q9"),), 6: (PauseRequest(abort_running=True),),
              8: (ResumeRequest(),), 14: (DrainRequest(),), 18: (ResumeRequest(),)})
    world = twin.sim.world
    assert final_states(store) == world.states
    assert {"Enter", "StartCandidate", "StartRun", "PassCandidate", "FailCandidate", "Land",
            "Reject", "Discard", "WithdrawItem", "SetWindow", "PauseQueue", "DrainQueue",
            "ResumeQueue"} <= twin.kinds
    assert world.states["q9"] == State.CANCELLED
    assert {world.states[i] for i in ("q3", "q4", "q11", "q17")} == {State.REJECTED}
    with store.read() as c:
        wasted = c.execute(select(s.pipeline_runs.c.wasted)).scalars().all()
        leases = c.execute(select(s.pipeline_runs.c.holder, s.pipeline_runs.c.lease_token,
                                  s.pipeline_runs.c.state, s.pipeline_runs.c.lease_expires_at)
                           ).all()
        free = c.execute(select(s.runners.c.run)).scalars().all()
        rejected = store.item(c, 3).outcome or {}
    assert {holder for holder, *_ in leases} == {"w1"}  # each run leased to its runner's worker
    assert len({token for _, token, *_ in leases}) == len(leases)  # one token per run
    assert all(expires is None for *_, state, expires in leases if state != "running")
    assert free == [None, None, None]
    assert (len(wasted), sum(wasted)) == (world.measures.runs, world.measures.wasted)
    assert rejected["rejected"] == "stage-failed" and rejected["failure"]["stage"] == "hw"


def test_batch_bisection_agrees_with_the_simulator(store: Store) -> None:
    """Batch mode with two culprits: batches fail, split into parts, land; the store follows
    the world step for step and ends in the same states."""
    params = SimParams(n=20, runners=2, mode=Mode.BATCH, batch_size=5, reps=1)
    bad = {f"q{k}": frozenset({0}) if k in (4, 13) else frozenset() for k in range(1, 21)}
    twin = Twin(store, params, bad)
    twin.run({})
    assert {"Enter", "Split", "Land", "Reject"} <= twin.kinds
    assert final_states(store) == twin.sim.world.states
    with store.read() as c:
        groups = c.execute(select(s.items.c.group).where(s.items.c.seq == 4)).scalar_one()
        split = c.execute(select(s.candidates.c.id).where(
            s.candidates.c.state == "split")).scalars().all()
    assert groups is not None and split


def test_serial_mode_agrees_with_the_simulator(store: Store) -> None:
    """Serial mode (a window of one): one candidate at a time, the failing item rejected, the
    rest landed in order, in the store as in the world."""
    params = SimParams(n=6, runners=2, mode=Mode.SERIAL, reps=1)
    bad = {f"q{k}": frozenset({0}) if k == 2 else frozenset() for k in range(1, 7)}
    twin = Twin(store, params, bad)
    twin.run({})
    assert final_states(store) == twin.sim.world.states == {
        "q1": State.LANDED, "q2": State.REJECTED, **{f"q{k}": State.LANDED for k in range(3, 7)}}
    with store.read() as c:
        order = c.execute(select(s.candidates.c.id).where(s.candidates.c.state == "landed")
                          .order_by(s.candidates.c.landing_order)).scalars().all()
    assert len(order) == 5
