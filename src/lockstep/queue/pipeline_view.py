"""The pipeline as people watch it: what each runner is testing and why each waiting item waits.

Read-only: the wait reasons come from the pure scheduler, asked what it would do now
(`decide(snapshot, [], now)`), whose decisions are read and never applied.
"""

from __future__ import annotations

import json
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from sqlalchemy import Connection, exists, select

from lockstep.queue import pipeline_store
from lockstep.queue import schema as s
from lockstep.queue.pipeline import Enter, PipelineSettings, StartCandidate, decide
from lockstep.queue.store import Store

STARTING = "starting"  # the next scheduling round starts it: it waits for nothing
BEYOND_FRONT = "outside-window"  # an item past the front the scheduler reads (see snapshot.py)

_RUNNERS = (
    select(s.runners.c.id, s.runners.c.worker, s.runners.c.pool, s.runners.c.run,
           s.pipeline_runs.c.candidate_id, s.pipeline_runs.c.configuration,
           s.pipeline_runs.c.stage, s.pipeline_runs.c.attempt, s.pipeline_runs.c.started_at,
           s.candidates.c["items"], s.candidates.c.own, s.candidates.c.state)
    .select_from(s.runners
                 .outerjoin(s.pipeline_runs, s.pipeline_runs.c.id == s.runners.c.run)
                 .outerjoin(s.candidates, s.candidates.c.id == s.pipeline_runs.c.candidate_id))
    .order_by(s.runners.c.seq))


@dataclass(frozen=True)
class RunnerView:
    """One runner slot and, when busy, the run it executes: which candidate (its items, assumed
    ones first, and the ones it decides on), configuration, stage and since when."""

    runner: str
    worker: str | None
    pool: str | None
    run: str | None = None
    candidate: str | None = None
    candidate_state: str | None = None
    items: tuple[str, ...] = ()
    own: tuple[str, ...] = ()
    configuration: str | None = None
    stage: str | None = None
    attempt: int | None = None
    started_at: float | None = None


@dataclass(frozen=True)
class PipelineView:
    """Every runner in order, the wait reason of each item the scheduler looked at, and the
    reason every other not yet started item waits for (`rest_reason`)."""

    mode: str
    window: int
    runners: tuple[RunnerView, ...]
    waiting: dict[str, str] = field(default_factory=dict)
    rest_reason: str | None = None
    positioned: frozenset[str] = frozenset()  # items in the pipeline (started at least once)
    front: frozenset[str] = frozenset()  # items the scheduler read

    def wait_reason(self, item: str) -> str | None:
        """Why a live item waits (`no-runner`, `outside-window`, `batch-filling`, `paused` …),
        `starting` when the next round starts it, None when it is not waiting."""
        if item in self.waiting:
            return self.waiting[item]
        if item in self.positioned:
            return None
        if item not in self.front:
            return self.rest_reason or BEYOND_FRONT
        return self.rest_reason

    def to_json(self) -> dict[str, Any]:
        """The view as the API serves it: runners as objects, waiting items as id → reason."""
        return {"mode": self.mode, "window": self.window,
                "runners": [asdict(r) for r in self.runners],
                "waiting": dict(self.waiting), "rest_reason": self.rest_reason}


def has_runners(c: Connection) -> bool:
    """Whether any pipeline runner is registered (serial mode registers none): one indexed
    lookup, so callers can skip the view cheaply."""
    return bool(c.execute(select(exists().select_from(s.runners))).scalar())


def pipeline_view(store: Store, c: Connection, settings: PipelineSettings,
                  now: float | None = None) -> PipelineView:
    """What each runner is testing and why each waiting item waits, read in `c` (a read
    transaction): the scheduler is asked what it would decide now and nothing is applied."""
    runners = tuple(_runner(row, settings) for row in c.execute(_RUNNERS).all())
    snap = pipeline_store.read_snapshot(store, c, settings)
    d = decide(snap, [], time.time() if now is None else now)
    waiting: dict[str, str] = {}
    for item, reason in d.waiting:
        waiting.setdefault(item, reason)
    for action in d.actions:
        started = action.own if isinstance(action, StartCandidate) else \
            action.items if isinstance(action, Enter) else ()
        for item in started:
            waiting.setdefault(item, STARTING)
    return PipelineView(
        mode=settings.mode.value, window=d.window, runners=runners, waiting=waiting,
        rest_reason=d.rest_reason,
        positioned=frozenset(i.id for i in snap.items if i.position is not None),
        front=frozenset(i.id for i in snap.items))


def _runner(row: Any, settings: PipelineSettings) -> RunnerView:
    """A runner row joined to its run and the run's candidate."""
    (rid, worker, pool, run, candidate, configuration, stage, attempt, started_at, items, own,
     state) = row
    if run is None or candidate is None:
        return RunnerView(rid, worker, pool, run)
    name = settings.stages[stage].name if 0 <= stage < len(settings.stages) else f"#{stage}"
    return RunnerView(rid, worker, pool, run, candidate, state, tuple(json.loads(items)),
                      tuple(json.loads(own)), configuration, name, attempt, started_at)


def annotate(status: dict[str, Any], store: Store, settings: PipelineSettings,
             now: float | None = None) -> dict[str, Any]:
    """Add the pipeline to a `queue status --json` document, in place: `pipeline` (mode,
    window, `runners`, waiting reasons), each item's `wait_reason` from the scheduler, the
    queue's window, and its state `running` while a runner runs something. Without registered
    runners (serial mode) the document is returned unchanged."""
    with store.read() as c:
        if not has_runners(c):
            return status
        view = pipeline_view(store, c, settings, now)
    status["pipeline"] = view.to_json()
    queue = status["queue"]
    queue["window"] = view.window
    if queue.get("state") in ("idle", "waiting") and any(r.run for r in view.runners):
        queue["state"] = "running"
    for item in status["items"]:
        item["wait_reason"] = view.wait_reason(item["id"])
    return status
