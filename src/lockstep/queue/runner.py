"""The runner (spec/queue.md §3.3): tests one candidate on one configuration, stage by stage.

Each run gets its own workspace and environment, its process is recorded so that another worker
can kill it if this one dies, and infrastructure failures are retried with a backoff.
"""

from __future__ import annotations

import contextlib
import functools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from lockstep.config import Stage
from lockstep.manifest import Manifest
from lockstep.queue import stage_call
from lockstep.queue.lease import LeaseKeeper, LeaseLost
from lockstep.queue.stage_call import StageCall
from lockstep.queue.store import HOST, Item
from lockstep.queue.worker_context import WorkerContext
from lockstep.stages import (
    Outcome,
    RunResult,
    kill_orphaned_group,
    process_started,
)


@dataclass(frozen=True)
class StageFailure:
    """The stage that did not pass on a configuration, its last result and how often it ran."""

    stage: Stage
    result: RunResult
    tries: int


class StageRunner:
    """Runs the stages of a candidate this worker holds, recording each run in the store."""

    def __init__(self, ctx: WorkerContext, lease: LeaseKeeper) -> None:
        self.ctx = ctx
        self.lease = lease

    def test_configuration(self, item: Item, token: int, lost: threading.Event,
                           cand: dict[str, Any], manifest: Manifest,
                           configuration: str) -> StageFailure | None:
        """Run every stage that tests `configuration`, in order; the first that fails stops."""
        for stage in self.ctx.ws.config.stages:
            if stage.configurations is not None and configuration not in stage.configurations:
                continue
            result, tries = self.run_stage(item, token, lost, cand, manifest, configuration,
                                           stage)
            if result.outcome != Outcome.PASSED:
                return StageFailure(stage, result, tries)
        return None

    def run_stage(self, item: Item, token: int, lost: threading.Event, cand: dict[str, Any],
                  manifest: Manifest, configuration: str,
                  stage: Stage) -> tuple[RunResult, int]:
        """Run one stage for one configuration, retrying infrastructure failures."""
        ws, store = self.ctx.ws, self.ctx.store
        result: RunResult | None = None
        for try_no in range(1, stage.retries + 2):
            log = (ws.logs_dir / item.id / f"a{item.attempt}" / configuration
                   / f"{stage.name}.{try_no}.log")
            with store.tx() as c:
                self.lease.check_token(c, item.seq, token)
                run_id = store.add_run(
                    c, item_seq=item.seq, attempt=item.attempt, configuration=configuration,
                    stage=stage.name, try_no=try_no, state="running", started_at=time.time(),
                    worker=self.ctx.worker_id, log=str(log.relative_to(ws.state_dir)))
            self.ctx.log(f"{item.id}: {configuration}/{stage.name} try {try_no}")
            result = self._run_once(item, cand, manifest, configuration, stage, try_no, log, lost,
                                    functools.partial(self._record_pid, run_id))
            with store.tx() as c:
                store.finish_run(c, run_id, result.outcome.value, result.exit_code)
                for kind, detail in result.events:
                    store.add_event(c, item.seq, kind, detail)
            if result.outcome == Outcome.ABORTED or lost.is_set():
                raise LeaseLost
            if result.outcome != Outcome.INFRA or try_no > stage.retries:
                return result, try_no
            time.sleep(self.ctx.settings.retry_backoff * 2 ** (try_no - 1))
        assert result is not None
        return result, stage.retries + 1

    def _run_once(self, item: Item, cand: dict[str, Any], manifest: Manifest,
                  configuration: str, stage: Stage, try_no: int, log: Path,
                  lost: threading.Event, on_start: Callable[[int], None]) -> RunResult:
        """One try: prepare the run's workspace, run the stage in it, and remove the workspace
        if it passed (a failed run's is kept for inspection)."""
        ws = self.ctx.ws
        workdir = ws.runs_dir / item.id / f"{configuration}-{stage.name}"
        result = stage_call.execute(ws, StageCall(
            tree=cand["tree"], base=cand["base"], manifest=manifest, items=cand["items"],
            item=item, stage=stage, configuration=configuration, attempt=item.attempt,
            try_no=try_no, workdir=workdir, log=log), self.ctx.settings.kill_grace, lost,
            on_start)
        if result.outcome == Outcome.PASSED:
            with contextlib.suppress(OSError):  # the item's directory, once no run is kept
                workdir.parent.rmdir()
        return result

    def _record_pid(self, run_id: int, pid: int) -> None:
        """Remember the stage's process so a later worker can kill it if this one dies."""
        started = process_started(pid)
        if started is None:
            return
        with self.ctx.store.tx() as c:
            self.ctx.store.set_run(c, run_id, host=HOST, pid=pid, pid_started=started)

    def kill_orphans(self, c: Any, seq: int) -> None:
        """Stop the stage processes a dead worker left running, and mark its runs lost."""
        store = self.ctx.store
        for run in store.runs(c, seq):
            if run["state"] != "running":
                continue
            if run["host"] == HOST and run["pid"]:
                kill_orphaned_group(run["pid"], run["pid_started"])
            store.finish_run(c, run["id"], "lost", None)
