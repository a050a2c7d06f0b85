"""The pipeline scheduler's side of the store: read the front of the queue as a `QueueSnap`, and
record `decide`'s actions, inside the caller's write transaction (one scheduling round).

`apply_decisions` applies actions with `pipeline.transitions.Transitions`, the code the
simulator's world applies them with, so both hold the same states; `finish_run` and `landed`
mirror the world's run ends and landings (what runners and the lander report).
"""

from __future__ import annotations

import functools
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

from sqlalchemy import (
    Connection,
    Integer,
    bindparam,
    insert,
    select,
    update,
)

from lockstep.queue import schema as s
from lockstep.queue.model import State, item_id
from lockstep.queue.pipeline import (
    Action,
    CandidateSnap,
    Decisions,
    Failure,
    ItemSnap,
    PipelineSettings,
    QueueSnap,
    RunnerSnap,
    RunSnap,
    RunState,
    StartCandidate,
    StartRun,
    WindowKind,
)
from lockstep.queue.pipeline.transitions import Transitions
from lockstep.queue.store import QUEUE_ID, Store

# Candidates `decide` sees (the world keeps only these); the others keep their rows for history.
LIVE_CANDIDATES = (State.TESTING.value, State.PASSED.value, State.FAILING.value)
FRONT_MARGIN = 16  # waiting items read beyond window × batch size (rejections during a pass)
_STATES = {state.value: state for state in State}
_RUN_STATES = {state.value: state for state in RunState}
_i = s.items.c
_r = s.pipeline_runs.c
_k = s.candidates.c


# --- statements, built once (building and cache-keying a statement costs more than running it)


def _b(name: str) -> Any:
    """A bound parameter (named apart from the columns, which SET clauses reserve)."""
    return bindparam(f"b_{name}")


def _live() -> Any:
    """`state IN (live states)` spelt as the partial indexes spell it (literals)."""
    return _i.state.in_(bindparam("live", list(s.LIVE_STATES), literal_execute=True))


_QUEUE = select(s.queues).where(s.queues.c.id == QUEUE_ID)
_RUNNERS = select(s.runners.c.id, s.runners.c.run, s.runners.c.pool, s.runners.c.worker
                  ).order_by(s.runners.c.seq)
_FRONT_COLUMNS = (_i.seq, _i.priority, _i.state, _i.component, _i.configurations,
                  _i.submitted_at, _i.position, _i.group, _i.candidate_id)
_POSITIONED = select(*_FRONT_COLUMNS).where(_live(), _i.position.isnot(None)
                                            ).order_by(_i.position)
_WAITING = select(*_FRONT_COLUMNS).where(_live(), _i.position.is_(None)).order_by(
    _i.priority.desc(), _i.seq).limit(bindparam("b_limit", type_=Integer))
_LIVE_CANDIDATES_AND_RUNS = select(
    _k.id, _k["items"], _k.own, _k.configurations, _k.state, _k.base_landed, _k.base_external,
    _k.started_at, _k.failure, _r.id, _r.configuration, _r.stage, _r.state, _r.attempt,
    _r.runner, _r.exit_code, _r.ended_at,
).select_from(s.candidates.outerjoin(s.pipeline_runs, _r.candidate_id == _k.id)).where(
    _k.state.in_(bindparam("b_live", list(LIVE_CANDIDATES), literal_execute=True))
).order_by(_k.id, _r.seq)
_STATES_OF = select(_i.seq, _i.state).where(_i.seq.in_(bindparam("b_seqs", expanding=True)))
_ROWS_OF = select(*_FRONT_COLUMNS).where(_i.seq.in_(bindparam("b_seqs", expanding=True)))
_SET_QUEUE = update(s.queues).where(s.queues.c.id == QUEUE_ID)
# A run's lease holder is its runner's worker, looked up by the insert itself.
_ADD_RUN = insert(s.pipeline_runs).values(
    holder=select(s.runners.c.worker).where(s.runners.c.id == _b("runner"))
    .scalar_subquery())
# SQLite writes a round's rows with these executemany statements (PostgreSQL: `_PG_WRITE`).
_ADD_CANDIDATE = insert(s.candidates)
_EVENTS = insert(s.events)


class _Bulk:
    """An UPDATE of many rows of one table by key, as one executemany (SQLite: in process, a
    statement costs no round trip)."""

    def __init__(self, table: Any, key: str, columns: tuple[str, ...],
                 fixed: dict[str, Any] | None = None) -> None:
        """Rows give `key` and `columns`; `fixed` values are set on every row."""
        self.many = update(table).where(table.c[key] == _b(key)).values(
            {**{table.c[name]: _b(name) for name in columns},
             **{table.c[name]: value for name, value in (fixed or {}).items()}})

    def run(self, c: Connection, rows: list[dict[str, Any]]) -> None:
        """Write the rows (dicts by column name)."""
        if rows:
            c.execute(self.many, [{f"b_{k}": v for k, v in row.items()} for row in rows])


_SET_RUNNER = _Bulk(s.runners, "id", ("run", "pool"))
_SET_ITEM = _Bulk(s.items, "seq", ("state", "candidate_id", "position", "group", "updated_at"))
_SET_OUTCOME = _Bulk(s.items, "seq", ("outcome",))
_SET_CANDIDATE = _Bulk(s.candidates, "id", ("state", "failure", "why", "ended_at",
                                            "landing_order"))
_KILL_RUN = _Bulk(s.pipeline_runs, "id", ("state", "ended_at"),
                  {"wasted": 1, "lease_expires_at": None})
_WASTE_RUN = _Bulk(s.pipeline_runs, "id", (), {"wasted": 1})


def _seq(item: str) -> int:
    """q12 → 12 (ids written by `decide`, which come from the store: no validation needed)."""
    return int(item[1:])


# --- reading -----------------------------------------------------------------------------------


def front_limit(settings: PipelineSettings, window: int | None, runners: int) -> int:
    """How many waiting items the snapshot needs: the largest window this round may reach, times
    the batch size, plus a margin (snapshot.py: at least window × batch size)."""
    if settings.window == WindowKind.AIMD:
        reach = settings.aimd_max(runners)
    else:
        reach = max(window or 0, settings.initial_window(runners))
    return reach * max(1, settings.batch_size) + FRONT_MARGIN


def read_snapshot(store: Store, c: Connection, settings: PipelineSettings) -> QueueSnap:
    """The queue's front as `decide` reads it: positioned items by position, then the waiting
    ones by priority desc, seq asc (up to `front_limit`), live candidates with their runs, the
    runners, and the state of every item a candidate names. Indexed reads only."""
    q = c.execute(_QUEUE).one()._mapping
    runners = tuple(RunnerSnap(rid, run, pool) for rid, run, pool, _ in c.execute(_RUNNERS))
    limit = front_limit(settings, q["window"], len(runners))
    items = [_item(row) for row in c.execute(_POSITIONED).all()]
    items.extend(_item(row) for row in c.execute(_WAITING, {"b_limit": limit}).all())
    states = {item.id: item.state for item in items}
    candidates = _candidates(c)
    named = {i for cand in candidates.values() for i in cand.items} - states.keys()
    if named:
        rows = c.execute(_STATES_OF, {"b_seqs": [_seq(i) for i in named]})
        states.update((item_id(seq), _STATES[state]) for seq, state in rows)
    return QueueSnap(
        settings=settings, items=items, candidates=candidates, runners=runners, states=states,
        landed_count=q["landed_count"], external_commits=q["external_commits"],
        window=q["window"], paused=bool(q["paused"]), paused_reason=q["paused_reason"],
        draining=bool(q["draining"]), infra_streak=q["infra_streak"],
        next_candidate=q["next_candidate"], next_group=q["next_group"],
        next_position=q["next_position"])


def _item(row: Any) -> ItemSnap:
    """An item row of the front, decoded."""
    seq, priority, state, component, configurations, submitted_at, position, group, cand = row
    return ItemSnap(f"q{seq}", seq, priority, _STATES[state], component,
                    _configurations(configurations), submitted_at, position, group, cand)


@functools.lru_cache(maxsize=256)
def _configurations(text: str) -> tuple[str, ...]:
    """A configurations column decoded (few distinct values: decoded once each)."""
    return tuple(json.loads(text))


def _candidates(c: Connection) -> dict[str, CandidateSnap]:
    """The live candidates in creation order, each with its runs in start order (one query:
    the candidates joined to their runs)."""
    rows: dict[str, Any] = {}
    runs: dict[str, list[RunSnap]] = {}
    for row in c.execute(_LIVE_CANDIDATES_AND_RUNS).all():
        cid = row[0]
        if cid not in rows:
            rows[cid] = row
            runs[cid] = []
        rid, configuration, stage, state, attempt, runner, code, ended = row[9:]
        if rid is not None:
            runs[cid].append(RunSnap(rid, configuration, stage, _RUN_STATES[state], attempt,
                                     runner, code, ended))
    found: dict[str, CandidateSnap] = {}
    for cid in sorted(rows, key=lambda k: int(k[1:])):
        _, items, own, configurations, state, base_landed, base_external, started, failure = \
            rows[cid][:9]
        found[cid] = CandidateSnap(
            cid, tuple(json.loads(items)), tuple(json.loads(own)),
            _configurations(configurations), _STATES[state], base_landed, base_external,
            started, tuple(runs[cid]), Failure(**json.loads(failure)) if failure else None)
    return found


# --- applying ----------------------------------------------------------------------------------


def apply_decisions(store: Store, c: Connection, snap: QueueSnap,
                    decisions: Decisions | Sequence[Action], now: float) -> None:
    """Record the actions `decide` returned for `snap` (read in this same transaction) as the
    simulator's world applies them, one by one in memory, then write the rows that changed:
    one executemany per table whatever the number of actions, the queue row once."""
    actions = decisions.actions if isinstance(decisions, Decisions) else decisions
    if not actions:
        return
    applier = _Applier(c, snap, now)
    for action in actions:
        applier.apply(action, now)
    applier.write(store)


class _Applier(Transitions):
    """The rows one round changes, kept in memory as the world keeps its own (the same
    `Transitions`), then written."""

    def __init__(self, c: Connection, snap: QueueSnap, now: float) -> None:
        """Start from the round's snapshot at `now`."""
        self.c, self.snap, self.now = c, snap, now
        self.settings = snap.settings
        self.wall = time.time()
        self.window, self.landed_count = snap.window, snap.landed_count
        self.infra_streak = snap.infra_streak
        self.next_candidate, self.next_group = snap.next_candidate, snap.next_group
        self.next_position = snap.next_position
        self.paused, self.draining = snap.paused, snap.draining
        self.paused_reason = snap.paused_reason
        self.start_queue = self.queue()
        self.front: dict[str, ItemSnap] | None = None  # snap.items by id, built on first use
        self.items: dict[str, dict[str, Any]] = {}  # touched items: state, candidate, …
        self.outcomes: dict[str, str] = {}
        self.cands: dict[str, dict[str, Any]] = {}  # touched candidates (new ones: "new")
        self.runs: dict[str, dict[str, Any]] = {}  # started or changed runs
        self.runners = {r.id: (r.run, r.pool) for r in snap.runners}
        self.start_runners = dict(self.runners)
        self.started: list[str] = []  # runs started, in order
        self.events: list[dict[str, Any]] = []

    def queue(self) -> dict[str, Any]:
        """The queue row's columns this round may change, as stored."""
        return {"window": self.window, "landed_count": self.landed_count,
                "infra_streak": self.infra_streak, "next_candidate": self.next_candidate,
                "next_group": self.next_group, "next_position": self.next_position,
                "paused": int(self.paused), "draining": int(self.draining),
                "paused_reason": self.paused_reason}

    # --- items ---------------------------------------------------------------------------------

    def item_state(self, item: str) -> State:
        """An item's state now: as changed by this round, else as read."""
        row = self.items.get(item)
        if row is not None:
            return State(row["state"])
        if item in self.snap.states:
            return self.snap.states[item]
        return State(self._row(item)["state"])

    def set_item(self, item: str, state: State | None, **changes: Any) -> None:
        """Change an item's row (and log its new state)."""
        row = self._row(item)
        row.update(changes)
        if state is not None:
            row["state"] = state.value
            detail = {k: v for k, v in changes.items() if k in ("candidate", "group")}
            self._event(_seq(item), state.value, detail)

    def enter_item(self, item: str, position: int, group: int | None) -> None:
        """The item's position and batch."""
        self.set_item(item, None, position=position, group=group)

    def finish_item(self, item: str, state: State, outcome: dict[str, Any],
                    now: float) -> None:
        """The terminal state, and the outcome column."""
        self.set_item(item, state)
        self.outcomes[item] = json.dumps(outcome, sort_keys=True)

    def _row(self, item: str) -> dict[str, Any]:
        """An item's row, from the snapshot's front (or the store) on first touch."""
        row = self.items.get(item)
        if row is not None:
            return row
        if self.front is None:
            self.front = {i.id: i for i in self.snap.items}
        snap = self.front.get(item)
        if snap is None:  # not in the front: `decide` never names one, but be exact
            snap = _item(self.c.execute(_ROWS_OF, {"b_seqs": [_seq(item)]}).one())
        row = self.items[item] = {"state": snap.state.value, "candidate": snap.candidate,
                                  "position": snap.position, "group": snap.group,
                                  "was": snap.state.value}
        return row

    # --- candidates ----------------------------------------------------------------------------

    def add_candidate(self, action: StartCandidate, now: float) -> None:
        """A new candidate's row."""
        self.cands[action.candidate] = {
            "new": True, "id": action.candidate, "items": action.items, "own": action.own,
            "configurations": action.configurations, "state": State.TESTING.value,
            "base_landed": action.base_landed, "base_external": action.base_external,
            "started_at": now, "failure": None, "why": None, "ended_at": None,
            "landing_order": None, "runs": []}

    def own(self, candidate: str) -> tuple[str, ...]:
        """A candidate's own items."""
        own: tuple[str, ...] = self._cand(candidate)["own"]
        return own

    def live_own(self, candidate: str | None) -> tuple[str, ...] | None:
        """Own items of a candidate read or started this round and still live."""
        if not candidate or (candidate not in self.cands
                             and candidate not in self.snap.candidates):
            return None
        cand = self._cand(candidate)
        return cand["own"] if cand["state"] in LIVE_CANDIDATES else None

    def set_candidate(self, candidate: str, state: State, failure: Failure | None = None) -> None:
        """A candidate's state (and failure, as JSON)."""
        cand = self._cand(candidate)
        cand["state"] = state.value
        if failure is not None:
            cand["failure"] = json.dumps(asdict(failure), sort_keys=True)

    def close_candidate(self, candidate: str, end: str, why: str | None, now: float) -> None:
        """The candidate's final state, and when it ended (a discard's reason too)."""
        cand = self._cand(candidate)
        cand.update(state=end, ended_at=now)
        if why is not None:
            cand["why"] = why

    def land_candidate(self, candidate: str, items: tuple[str, ...], now: float) -> None:
        """The candidate is `landing`, in order after the landings before it."""
        self._cand(candidate).update(state=State.LANDING.value,
                                     landing_order=self.landed_count)

    def _cand(self, candidate: str) -> dict[str, Any]:
        """A candidate's row, from the snapshot (live ones) on first touch."""
        found = self.cands.get(candidate)
        if found is None:
            snap = self.snap.candidates[candidate]
            found = self.cands[candidate] = {
                "new": False, "id": candidate, "own": snap.own, "state": snap.state.value,
                "failure": json.dumps(asdict(snap.failure), sort_keys=True)
                if snap.failure else None, "why": None, "ended_at": None,
                "landing_order": None, "runs": [r.id for r in snap.runs],
                "running": {r.id: r.runner for r in snap.runs if r.state == RunState.RUNNING}}
        return found

    # --- runs and runners ----------------------------------------------------------------------

    def add_run(self, action: StartRun, now: float) -> None:
        """A started run's whole row."""
        run = {"id": action.run, "candidate_id": action.candidate,
               "configuration": action.configuration, "stage": action.stage,
               "attempt": action.attempt, "state": RunState.RUNNING.value,
               "runner": action.runner, "exit_code": None, "started_at": now,
               "ended_at": None, "wasted": 0, "log": None, "new": True}
        self.runs[action.run] = run
        self.started.append(action.run)
        self._cand(action.candidate)["runs"].append(action.run)

    def occupy_runner(self, runner: str, run: str, pool: str | None) -> None:
        """The runner's row."""
        self.runners[runner] = (run, pool)

    def kill_runs(self, candidate: str, now: float) -> None:
        """Kill the candidate's runs in flight (wasted) and free their runners."""
        self._kill(self._cand(candidate), now)

    def drop_runs(self, candidate: str, now: float) -> None:
        """Kill the runs in flight; mark every run of the candidate wasted."""
        cand = self._cand(candidate)
        self._kill(cand, now)
        for run in cand["runs"]:
            self._run(run)["wasted"] = 1

    def queue_event(self, kind: str, detail: dict[str, Any]) -> None:
        """An event row about the queue."""
        self._event(None, kind, detail)

    def _run(self, run: str) -> dict[str, Any]:
        """A run's changing columns (a started run's whole row)."""
        found = self.runs.get(run)
        if found is None:
            found = self.runs[run] = {"id": run, "state": None, "ended_at": None, "wasted": 0,
                                      "new": False}
        return found

    def _kill(self, cand: dict[str, Any], now: float) -> None:
        """Kill the candidate's runs in flight (wasted) and free their runners."""
        running: dict[str, str | None] = dict(cand.get("running", {}))
        running.update((r, self.runs[r]["runner"]) for r in cand["runs"]
                       if r in self.runs and self.runs[r].get("new"))
        for run_id, runner in running.items():
            run = self._run(run_id)
            if run["state"] not in (None, RunState.RUNNING.value):
                continue
            run.update(state=RunState.KILLED.value, ended_at=now, wasted=1)
            if runner is not None:
                self.runners[runner] = (None, None)
        cand["running"] = {}

    def _event(self, seq: int | None, kind: str, detail: dict[str, Any]) -> None:
        """An event row for the log."""
        self.events.append({"at": self.wall, "item_seq": seq, "kind": kind,
                            "detail": json.dumps(detail, sort_keys=True)})

    # --- writing -------------------------------------------------------------------------------

    def write(self, store: Store) -> None:
        """Write every changed row: queue (and the run leases' tokens), candidates, runs,
        items, runners and events (on PostgreSQL all in one statement)."""
        changed = {k: v for k, v in self.queue().items() if v != self.start_queue[k]}
        if store.is_postgres:
            _write_postgres(self.c, self._rows(), changed, len(self.started), store.lease_ttl)
            return
        c = self.c
        if self.started:  # one lease token per run, and the clock, in the queue row's update
            last, clock = c.execute(_SET_QUEUE.values(
                lease_seq=s.queues.c.lease_seq + len(self.started), **changed)
                .returning(s.queues.c.lease_seq, store.now_sql())).one()
            expires = float(clock) + store.lease_ttl
            for k, run_id in enumerate(self.started):
                run = self.runs[run_id]
                running = run["state"] == RunState.RUNNING.value
                run.update(lease_token=last - len(self.started) + 1 + k,
                           lease_expires_at=expires if running else None)
        elif changed:
            c.execute(_SET_QUEUE.values(**changed))
        _write_each(c, self._rows())

    def _rows(self) -> _Rows:
        """The rows to insert or update, per table."""
        return _Rows(
            new_candidates=[{
                "id": r["id"], "queue_id": QUEUE_ID, "items": json.dumps(list(r["items"])),
                "own": json.dumps(list(r["own"])),
                "configurations": json.dumps(list(r["configurations"])), "state": r["state"],
                "base_landed": r["base_landed"], "base_external": r["base_external"],
                "started_at": r["started_at"], "failure": r["failure"], "why": r["why"],
                "ended_at": r["ended_at"], "landing_order": r["landing_order"]}
                for r in self.cands.values() if r["new"]],
            candidates=[{
                "id": r["id"], "state": r["state"], "failure": r["failure"], "why": r["why"],
                "ended_at": r["ended_at"], "landing_order": r["landing_order"]}
                for r in self.cands.values() if not r["new"]],
            new_runs=[{k: v for k, v in self.runs[r].items() if k != "new"}
                      for r in self.started],
            killed=[{"id": r["id"], "state": r["state"], "ended_at": r["ended_at"]}
                    for r in self.runs.values() if not r["new"] and r["state"] is not None],
            wasted=[{"id": r["id"]} for r in self.runs.values()
                    if not r["new"] and r["state"] is None],
            items=[{"seq": _seq(item), "state": row["state"], "candidate_id": row["candidate"],
                    "position": row["position"], "group": row["group"], "updated_at": self.wall,
                    "outcome": self.outcomes.get(item)}
                   for item, row in self.items.items()],
            runners=[{"id": rid, "run": run, "pool": pool}
                     for rid, (run, pool) in self.runners.items()
                     if (run, pool) != self.start_runners[rid]],
            events=self.events)


@dataclass
class _Rows:
    """The rows one round inserts or updates, per table (dicts by column name)."""

    new_candidates: list[dict[str, Any]]
    candidates: list[dict[str, Any]]
    new_runs: list[dict[str, Any]]
    killed: list[dict[str, Any]]  # runs killed: state, ended_at (and wasted)
    wasted: list[dict[str, Any]]  # runs of a discarded candidate that had ended
    items: list[dict[str, Any]]  # outcome: None leaves the column as it is
    runners: list[dict[str, Any]]
    events: list[dict[str, Any]]


def _write_each(c: Connection, rows: _Rows) -> None:
    """Write the rows with one executemany per table and kind of change (SQLite, in process:
    a statement costs no round trip)."""
    if rows.new_candidates:
        c.execute(_ADD_CANDIDATE, rows.new_candidates)
    _SET_CANDIDATE.run(c, rows.candidates)
    if rows.new_runs:
        c.execute(_ADD_RUN, [{**run, "b_runner": run["runner"]} for run in rows.new_runs])
    _KILL_RUN.run(c, rows.killed)
    _WASTE_RUN.run(c, rows.wasted)
    _SET_ITEM.run(c, [{k: v for k, v in row.items() if k != "outcome"} for row in rows.items])
    _SET_OUTCOME.run(c, [{"seq": row["seq"], "outcome": row["outcome"]} for row in rows.items
                         if row["outcome"] is not None])
    _SET_RUNNER.run(c, rows.runners)
    if rows.events:
        c.execute(_EVENTS, rows.events)


# PostgreSQL: a round's rows in one statement of data-modifying CTEs, each fed by unnest() over
# one array per column: one round trip whatever the number of actions. Its text varies only with
# the queue columns that changed (a few combinations), so psycopg prepares each after a few
# rounds. The queue row's update returns the lease counter and the clock the new runs' lease
# tokens and expiries are computed from (it is skipped when neither changed). The CTEs touch
# disjoint rows (new rows are inserted with their final values), as PostgreSQL requires.
_PG_COLUMNS: dict[str, tuple[tuple[str, str], ...]] = {
    "new_candidates": (
        ("id", "varchar"), ("queue_id", "int"), ("items", "text"), ("own", "text"),
        ("configurations", "text"), ("state", "varchar"), ("base_landed", "int"),
        ("base_external", "int"), ("started_at", "float8"), ("failure", "text"),
        ("why", "varchar"), ("ended_at", "float8"), ("landing_order", "int")),
    "candidates": (("id", "varchar"), ("state", "varchar"), ("failure", "text"),
                   ("why", "varchar"), ("ended_at", "float8"), ("landing_order", "int")),
    "new_runs": (
        ("id", "varchar"), ("candidate_id", "varchar"), ("configuration", "varchar"),
        ("stage", "int"), ("attempt", "int"), ("state", "varchar"), ("runner", "varchar"),
        ("exit_code", "int"), ("started_at", "float8"), ("ended_at", "float8"),
        ("wasted", "int"), ("log", "text")),
    "killed": (("id", "varchar"), ("state", "varchar"), ("ended_at", "float8")),
    "wasted": (("id", "varchar"),),
    "items": (("seq", "int"), ("state", "varchar"), ("candidate_id", "varchar"),
              ("position", "int"), ("group", "int"), ("updated_at", "float8"),
              ("outcome", "text")),
    "runners": (("id", "varchar"), ("run", "varchar"), ("pool", "varchar")),
    "events": (("at", "float8"), ("item_seq", "int"), ("kind", "varchar"), ("detail", "text")),
}


def _unnest(part: str, ordinal: str | None = None) -> str:
    """`unnest(arrays) AS v(columns)`: one row per element, one array parameter per column
    (and the element's 1-based index as column `ordinal`)."""
    arrays = ", ".join(f"%({part}_{name})s::{kind}[]" for name, kind in _PG_COLUMNS[part])
    if ordinal is None:
        return f"unnest({arrays}) AS v({_names(part)})"
    return f"unnest({arrays}) WITH ORDINALITY AS v({_names(part)}, {ordinal})"


def _names(part: str, prefix: str = "") -> str:
    """The part's columns, quoted (and qualified by `prefix`)."""
    return ", ".join(f'{prefix}"{name}"' for name, _ in _PG_COLUMNS[part])


_PG_WRITE = f"""
WITH q AS (
  UPDATE queues SET lease_seq = lease_seq + %(leases)s{{queue_sets}}
  WHERE id = %(queue_id)s AND %(touch)s
  RETURNING lease_seq, CAST(extract(epoch FROM now()) AS float8) AS clock),
add_candidates AS (
  INSERT INTO candidates ({_names("new_candidates")})
  SELECT * FROM {_unnest("new_candidates")}),
set_candidates AS (
  UPDATE candidates AS k SET state = v.state, failure = v.failure, why = v.why,
    ended_at = v.ended_at, landing_order = v.landing_order
  FROM {_unnest("candidates")} WHERE k.id = v.id),
add_runs AS (
  INSERT INTO pipeline_runs ({_names("new_runs")}, lease_token, lease_expires_at, holder)
  SELECT {_names("new_runs", "v.")}, q.lease_seq - %(leases)s + v.k,
    CASE WHEN v.state = 'running' THEN q.clock + %(ttl)s END,
    (SELECT r.worker FROM runners AS r WHERE r.id = v.runner)
  FROM {_unnest("new_runs", ordinal="k")} CROSS JOIN q),
kill_runs AS (
  UPDATE pipeline_runs AS p SET state = v.state, ended_at = v.ended_at, wasted = 1,
    lease_expires_at = NULL
  FROM {_unnest("killed")} WHERE p.id = v.id),
waste_runs AS (
  UPDATE pipeline_runs AS p SET wasted = 1 FROM {_unnest("wasted")} WHERE p.id = v.id),
set_items AS (
  UPDATE items AS i SET state = v.state, candidate_id = v.candidate_id,
    position = v.position, "group" = v."group", updated_at = v.updated_at,
    outcome = COALESCE(v.outcome, i.outcome)
  FROM {_unnest("items")} WHERE i.seq = v.seq),
set_runners AS (
  UPDATE runners AS r SET run = v.run, pool = v.pool FROM {_unnest("runners")}
  WHERE r.id = v.id)
INSERT INTO events ({_names("events")}) SELECT * FROM {_unnest("events")}
"""  # noqa: S608 (built once, from the constant column lists above)


@functools.lru_cache(maxsize=64)
def _pg_write(queue_columns: tuple[str, ...]) -> str:
    """`_PG_WRITE` setting these queue columns too (from parameters `queue_<column>`)."""
    sets = "".join(f', "{name}" = %(queue_{name})s' for name in queue_columns)
    return _PG_WRITE.replace("{queue_sets}", sets)


def _write_postgres(c: Connection, rows: _Rows, queue: dict[str, Any], leases: int,
                    ttl: float) -> None:
    """Write the rows, the queue's changed columns and `leases` new lease tokens in one
    statement, each column's values as one array; new runs lease for `ttl` seconds."""
    touch = bool(queue) or leases > 0
    if not touch and not any(getattr(rows, part) for part in _PG_COLUMNS):
        return
    params: dict[str, Any] = {"queue_id": QUEUE_ID, "touch": touch, "leases": leases,
                              "ttl": ttl}
    params.update((f"queue_{name}", value) for name, value in queue.items())
    for part, columns in _PG_COLUMNS.items():
        table = getattr(rows, part)
        for name, _ in columns:
            params[f"{part}_{name}"] = [row[name] for row in table]
    c.exec_driver_sql(_pg_write(tuple(sorted(queue))), params)


# --- what runners, the lander and the worker report --------------------------------------------


def finish_run(c: Connection, run: str, state: RunState, exit_code: int | None,
               now: float) -> bool:
    """A run's process exited: record its result and free its runner (mirrors World.run_ended;
    a run no longer running, killed by a round, is left as it is). False when ignored."""
    done = c.execute(update(s.pipeline_runs)
                     .where(_r.id == run, _r.state == RunState.RUNNING.value)
                     .values(state=state.value, exit_code=exit_code, ended_at=now,
                             lease_expires_at=None)).rowcount
    if done:
        c.execute(update(s.runners).where(s.runners.c.run == run).values(run=None, pool=None))
    return bool(done)


def landed(store: Store, c: Connection, candidate: str, now: float) -> list[str]:
    """The lander put a landing candidate's items on the remote: they are `landed` (mirrors
    World.landing_done); returns them."""
    row = c.execute(select(_k.own, _k.state).where(_k.id == candidate)).one()
    if row.state != State.LANDING.value:
        return []
    seqs = [_seq(i) for i in json.loads(row.own)]
    rows = c.execute(select(_i.seq).where(_i.seq.in_(seqs),
                                          _i.state == State.LANDING.value)).scalars().all()
    wall = time.time()
    c.execute(update(s.items).where(_i.seq.in_(rows)).values(
        state=State.LANDED.value, updated_at=wall))
    c.execute(update(s.candidates).where(_k.id == candidate).values(
        state=State.LANDED.value, ended_at=now))
    if rows:
        c.execute(insert(s.events), [{"at": wall, "item_seq": seq, "kind": State.LANDED.value,
                                      "detail": json.dumps({"candidate": candidate})}
                                     for seq in rows])
    return [item_id(seq) for seq in sorted(rows)]


def landing_candidates(c: Connection) -> list[str]:
    """Candidates handed to the lander and not landed yet, in the order they must land."""
    return list(c.execute(select(_k.id).where(_k.state == State.LANDING.value)
                          .order_by(_k.landing_order)).scalars())


def add_runner(c: Connection, runner: str, worker: str | None = None,
               pool: str | None = None) -> None:
    """Register a runner slot (free)."""
    c.execute(insert(s.runners).values(id=runner, worker=worker, pool=pool, run=None))
