"""One `release cut`: plan, validate, lock, run, record; shared by the CLI and the demo."""

from __future__ import annotations

import signal
import time
from dataclasses import dataclass
from types import FrameType
from typing import Any

from lockstep.release import plan as plan_mod
from lockstep.release import run as run_mod
from lockstep.release.artifacts import ProgressFn
from lockstep.release.journal import Journal
from lockstep.release.status import release_status
from lockstep.workspace import Workspace


@dataclass
class CutResult:
    """What a cut did: the plan, the dry run's previews, or the run's outcome and status."""

    plan: plan_mod.Plan
    previews: list[run_mod.Preview]
    outcome: run_mod.Outcome | None = None
    status: dict[str, Any] | None = None
    signal: int | None = None


def journal_of(ws: Workspace) -> Journal:
    """The workspace's release journal."""
    return Journal(ws.state_dir / "release.db")


def cut(ws: Workspace, *, configuration: str = "default", manifest_ref: str | None = None,
        version: str | None = None, jobs: int | None = None, fail_fast: bool = False,
        dry_run: bool = False, progress: ProgressFn | None = None,
        handle_signals: bool = True) -> CutResult:
    """Release an integration release. Every error of the plan is raised before any side
    effect; SIGINT/SIGTERM (when handled here) end the waits and start nothing new."""
    cfg = ws.config
    plan = plan_mod.build(ws, cfg, configuration=configuration, manifest_ref=manifest_ref,
                          version=version)
    journal = journal_of(ws)
    ctx = run_mod.make_context(ws, cfg, plan, journal, started_at=int(time.time()), jobs=jobs,
                               progress=progress)
    try:
        previews = run_mod.preview(ctx, check_artifacts=dry_run)
    except BaseException:
        ctx.artifacts.close()
        raise
    if dry_run:
        ctx.artifacts.close()
        return CutResult(plan, previews)
    journal.lock(plan.version, configuration, ctx.run_id)
    start = journal.begin(plan.version, configuration, plan.to_json())
    ctx.identity = run_mod.identity(cfg, start)  # a rerun dates objects as the first run
    ctx.digests.clear()
    received: list[int] = []

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        received.append(signum)
        ctx.cancel.set()

    old = ({s: signal.signal(s, on_signal) for s in (signal.SIGINT, signal.SIGTERM)}
           if handle_signals else {})
    outcome = run_mod.Outcome()
    try:
        ctx.artifacts.start_notifications()
        outcome = run_mod.execute(ctx, fail_fast=fail_fast)
    finally:
        for s, handler in old.items():
            signal.signal(s, handler)
        journal.finish(plan.version, configuration,
                       {**outcome.to_json(), "interrupted": outcome.interrupted or None})
        journal.unlock(plan.version, configuration, ctx.run_id)
    status = release_status(journal, configuration, plan.version)
    return CutResult(plan, previews, outcome, status, received[0] if received else None)
