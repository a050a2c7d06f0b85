"""Leases of pipeline runs (spec/queue.md §8): renewing a run's lease, reaping the runs of dead
workers, and the corrections a round makes before `decide` reads the queue.

Every write here is conditional on the lease token or on the row's state, so a worker that
lost a run (killed by a round, or taken over) records nothing for it.
"""

from __future__ import annotations

import json
import math
from typing import Any

from sqlalchemy import Connection, delete, select, update

from lockstep.queue import schema as s
from lockstep.queue.model import State
from lockstep.queue.pipeline import Discard, QueueSnap, RunState, StartRun
from lockstep.queue.store import HOST, QUEUE_ID, Store
from lockstep.stages import kill_orphaned_group

_r = s.pipeline_runs.c
_k = s.candidates.c
_i = s.items.c
# A live candidate's own items are in the state it gives them; anything else was done to them
# outside the scheduler (`queue cancel`, `queue pause --abort-running`).
_EXPECTED = {State.TESTING: {State.TESTING}, State.PASSED: {State.PASSED},
             State.FAILING: {State.FAILING, State.REJECTED}}


def renew(store: Store, c: Connection, run: str, token: int) -> bool:
    """Extend a run's lease by lease_ttl; False when it is no longer ours and running."""
    done = c.execute(update(s.pipeline_runs).where(
        _r.id == run, _r.lease_token == token, _r.state == RunState.RUNNING.value
    ).values(lease_expires_at=store.now_sql() + store.lease_ttl)).rowcount
    return bool(done)


def holds(c: Connection, run: str, token: int) -> bool:
    """Whether the run is still ours and running (a read)."""
    row = c.execute(select(_r.lease_token, _r.state).where(_r.id == run)).first()
    return row is not None and row[0] == token and row[1] == RunState.RUNNING.value


def finish(c: Connection, run: str, token: int, state: RunState, exit_code: int | None,
           now: float) -> bool:
    """Record a run's result if it is still ours and running, and free its runner."""
    done = c.execute(update(s.pipeline_runs).where(
        _r.id == run, _r.lease_token == token, _r.state == RunState.RUNNING.value
    ).values(state=state.value, exit_code=exit_code, ended_at=now,
             lease_expires_at=None)).rowcount
    if done:
        c.execute(update(s.runners).where(s.runners.c.run == run).values(run=None, pool=None))
    return bool(done)


def reap(store: Store, c: Connection, now: float) -> list[str]:
    """Runs whose lease expired or whose worker is dead end as infrastructure failures (a lost
    runner is never the item's fault; it is retried), and dead workers' runners are removed."""
    alive: dict[str | None, bool] = {}
    lost: list[str] = []
    rows = c.execute(select(_r.id, _r.holder, _r.lease_expires_at, _r.host, _r.pid,
                            _r.pid_started).where(_r.state == RunState.RUNNING.value)).all()
    clock = store.clock(c) if rows else now
    for run, holder, expires, host, pid, started in rows:
        if holder not in alive:
            alive[holder] = store.worker_alive(c, holder, expires, now)
        if not alive[holder] or (expires is not None and expires < clock):
            lost.append(run)
            if host == HOST and pid:
                kill_orphaned_group(pid, started)
    if lost:
        c.execute(update(s.pipeline_runs).where(_r.id.in_(lost)).values(
            state=RunState.INFRA.value, ended_at=now, lease_expires_at=None))
        c.execute(update(s.runners).where(s.runners.c.run.in_(lost)).values(run=None, pool=None))
    owners = set(c.execute(select(s.runners.c.worker).distinct()).scalars())
    dead = [w for w in owners if not store.worker_alive(c, w, math.inf, now)]
    if dead:  # their slots would take runs nobody executes
        c.execute(delete(s.runners).where(s.runners.c.worker.in_(dead)))
    return lost


def withdrawn(snap: QueueSnap) -> list[Discard]:
    """Live candidates whose own items were cancelled or sent back outside the scheduler: they
    are discarded (their runs killed) before `decide` looks at the queue."""
    found: list[Discard] = []
    for cand in snap.candidates.values():
        expected = _EXPECTED.get(cand.state, {cand.state})
        states = [snap.states.get(i) for i in cand.own]
        if any(state not in expected for state in states):
            why = "cancelled" if State.CANCELLED in states else "aborted"
            found.append(Discard(cand.id, why))
    return found


def unland(c: Connection, candidate: str, own: list[str], now: float) -> None:
    """A landing found the branch moved (a commit lockstep did not make): its items go back to
    the queue in place, and every candidate built on the old branch is rebuilt."""
    seqs = [int(i[1:]) for i in own]
    back = c.execute(update(s.items).where(_i.seq.in_(seqs), _i.state == State.LANDING.value)
                     .values(state=State.QUEUED.value, candidate_id=None, updated_at=now)
                     ).rowcount
    c.execute(update(s.candidates).where(_k.id == candidate).values(
        state="discarded", why="base-moved", ended_at=now))
    c.execute(update(s.queues).where(s.queues.c.id == QUEUE_ID).values(
        landed_count=s.queues.c.landed_count - back,
        external_commits=s.queues.c.external_commits + 1))
    c.execute(s.events.insert(), [{"at": now, "item_seq": seq, "kind": State.QUEUED.value,
                                   "detail": json.dumps({"why": "base-moved"})}
                                  for seq in seqs])


def candidate_row(c: Connection, candidate: str) -> dict[str, Any]:
    """A candidate's row, its JSON columns decoded."""
    row = dict(c.execute(select(s.candidates).where(_k.id == candidate)).one()._mapping)
    for key in ("items", "own", "configurations"):
        row[key] = json.loads(row[key])
    return row


def set_tree(c: Connection, candidate: str, base: str, tree: str, manifest: str) -> bool:
    """Record the candidate's tree unless another runner recorded it first."""
    return bool(c.execute(update(s.candidates).where(_k.id == candidate, _k.tree.is_(None))
                          .values(base=base, tree=tree, manifest=manifest)).rowcount)


def assigned(c: Connection, runners: list[str]) -> list[tuple[StartRun, int]]:
    """Each running run handed to one of these runners (by whichever worker's round handed it
    out), with its lease token."""
    rows = c.execute(
        select(_r.id, _r.candidate_id, _r.configuration, _r.stage, _r.attempt, s.runners.c.id,
               _r.lease_token)
        .select_from(s.runners.join(s.pipeline_runs, _r.id == s.runners.c.run))
        .where(s.runners.c.id.in_(runners), _r.state == RunState.RUNNING.value)
        .order_by(_r.seq)).all()
    return [(StartRun(*row[:6]), row[6]) for row in rows]


def set_run_process(c: Connection, run: str, host: str, pid: int, started: float) -> None:
    """The stage process of a run: what a worker that finds the run's worker dead kills."""
    c.execute(update(s.pipeline_runs).where(_r.id == run).values(
        host=host, pid=pid, pid_started=started))


def set_run_log(c: Connection, run: str, log: str) -> None:
    """Where the run's log is, relative to the state directory."""
    c.execute(update(s.pipeline_runs).where(_r.id == run).values(log=log))


def run_log(c: Connection, run: str | None) -> str | None:
    """A run's log path, relative to the state directory."""
    if run is None:
        return None
    return c.execute(select(_r.log).where(_r.id == run)).scalar()


def remove_runners(c: Connection, runners: list[str]) -> None:
    """A worker stopping takes its runner slots away."""
    c.execute(delete(s.runners).where(s.runners.c.id.in_(runners)))


def close_candidate(c: Connection, candidate: str, state: str, now: float) -> None:
    """End a candidate that will not land (e.g. `skipped`: every bump in it was stale)."""
    c.execute(update(s.candidates).where(_k.id == candidate).values(state=state, ended_at=now))


def landing_items(c: Connection) -> list[int]:
    """The items handed to the lander and not landed yet, in landing order: a candidate built
    now stands on them, whether or not the remote shows them yet."""
    own = c.execute(select(_k.own).where(_k.state == State.LANDING.value)
                    .order_by(_k.landing_order)).scalars()
    return [int(i[1:]) for text in own for i in json.loads(text)]


def item_runs(c: Connection, item: str, stages: list[str]) -> list[dict[str, Any]]:
    """The pipeline runs of the candidates that decided on an item, in start order, shaped as
    the serial worker's run rows (`queue show`, `queue log` read both)."""
    # The item's candidates, from its own history (indexed by item), not a scan of them all:
    # every candidate that decided on it put it in `testing` and said so in the event.
    history = c.execute(select(s.events.c.kind, s.events.c.detail).where(
        s.events.c.item_seq == int(item[1:])).order_by(s.events.c.id)).all()
    candidates = {json.loads(detail).get("candidate") for kind, detail in history
                  if kind == State.TESTING.value} - {None}
    if not candidates:
        return []
    rows = c.execute(
        select(_r.seq, _r.id, _r.candidate_id, _r.configuration, _r.stage, _r.attempt,
               _r.state, _r.exit_code, _r.started_at, _r.ended_at, _r.holder, _r.log)
        .where(_r.candidate_id.in_(sorted(candidates))).order_by(_r.seq)).all()
    failed: set[tuple[str, str, int]] = set()
    found = []
    for r in rows:
        key = (r.candidate_id, r.configuration, r.stage)
        # A pass after a failure of the same run (flake_retries) is reported as flaky.
        flaky = r.state == RunState.PASSED.value and key in failed
        if r.state == RunState.FAILED.value:
            failed.add(key)
        found.append({
            "id": f"{r.candidate_id}/{r.configuration}/{r.stage}/{r.attempt}",
            "stage": stages[r.stage] if r.stage < len(stages) else str(r.stage),
            "configuration": r.configuration, "state": r.state, "attempt": 0,
            "try_no": r.attempt + 1, "exit_code": r.exit_code, "started_at": r.started_at,
            "ended_at": r.ended_at, "worker": r.holder, "log": r.log or "",
            "candidate": r.candidate_id, "flaky": flaky})
    return found
