"""A runner of the pipeline (spec/queue.md §3.3, §8): executes one leased run, one stage of one
configuration of a candidate, in its own thread, and records the result under its lease.

The lease is renewed every lease_ttl/4 and checked every second; a run the scheduler killed
(its candidate discarded or failed) or another worker took over is stopped, its result dropped.
"""

from __future__ import annotations

import functools
import threading
from collections.abc import Callable

from sqlalchemy import Connection

from lockstep import git
from lockstep.errors import LockstepError
from lockstep.git import redact
from lockstep.manifest import Manifest
from lockstep.queue import candidate_tree, pipeline_leases, stage_call
from lockstep.queue.candidate_tree import git_lock
from lockstep.queue.lease import keep_alive
from lockstep.queue.pipeline import RunState, StartRun
from lockstep.queue.stage_call import StageCall
from lockstep.queue.store import HOST, Item
from lockstep.queue.worker_context import WorkerContext
from lockstep.stages import (
    Outcome,
    RunResult,
    process_started,
)

_STATES = {Outcome.PASSED: RunState.PASSED, Outcome.FAILED: RunState.FAILED,
           Outcome.TIMEOUT: RunState.TIMEOUT, Outcome.INFRA: RunState.INFRA,
           Outcome.ABORTED: RunState.KILLED}


class IntegrationFault(Exception):
    """The integration repo could not be read to build a candidate: an infrastructure fault
    that is never blamed on the item (no retry counted, no rejection, no notification)."""

    def __init__(self, error: LockstepError) -> None:
        """Wrap the error the worker stops with."""
        super().__init__(str(error))
        self.error = error


class CandidateRunner:
    """Starts runs on threads; `done` is called after each run's result is recorded."""

    def __init__(self, ctx: WorkerContext, done: Callable[[], None]) -> None:
        """Runs of this worker, reporting to `done` (the loop's wake-up)."""
        self.ctx = ctx
        self.done = done
        self.threads: dict[str, threading.Thread] = {}
        self.fatal: LockstepError | None = None  # why this worker must stop (see IntegrationFault)

    def start(self, run: StartRun, token: int) -> None:
        """Execute the run on a thread of its own."""
        thread = threading.Thread(target=self._execute, args=(run, token), daemon=True,
                                  name=f"run-{run.run}")
        self.threads[run.run] = thread
        thread.start()

    def busy(self) -> bool:
        """Whether a run of this worker is still executing."""
        for run, thread in list(self.threads.items()):
            if not thread.is_alive():
                del self.threads[run]
        return bool(self.threads)

    def join(self) -> None:
        """Wait for every run in flight to end and be recorded."""
        for thread in list(self.threads.values()):
            thread.join()
        self.threads.clear()

    # --- one run -------------------------------------------------------------------------------

    def _execute(self, run: StartRun, token: int) -> None:
        """Build (or reuse) the candidate's tree, run the stage, record the result."""
        ctx = self.ctx
        lost = threading.Event()
        stop = threading.Event()
        beat = threading.Thread(target=self._heartbeat, args=(run.run, token, lost, stop),
                                daemon=True, name=f"heartbeat-{run.run}")
        beat.start()
        result: RunResult | None = None
        try:
            result = self._run(run, lost)
            state, code = _STATES[result.outcome], result.exit_code
        except IntegrationFault as fault:
            # Not the run's fault, nor the item's: the run is given back uncounted (killed runs
            # are rerun) and this worker stops with the error, as the serial worker does.
            ctx.warn(f"{run.run}: {redact(str(fault.error))}; the run goes back to the queue")
            self.fatal = self.fatal or fault.error
            state, code = RunState.KILLED, None
        except (LockstepError, OSError) as exc:  # the workspace could not be prepared
            ctx.warn(f"{run.run}: cannot prepare the run: {redact(str(exc))}")
            state, code = RunState.INFRA, None
        except Exception as exc:
            ctx.warn(f"{run.run}: runner failed: {redact(str(exc))}")
            state, code = RunState.INFRA, None
        finally:
            stop.set()
            beat.join()
        try:
            with ctx.store.tx() as c:
                kept = pipeline_leases.finish(c, run.run, token, state, code, ctx.store.clock(c))
                if kept and result is not None:
                    cand = pipeline_leases.candidate_row(c, run.candidate)
                    for kind, detail in result.events:
                        for item in cand["own"]:
                            ctx.store.add_event(c, int(item[1:]), kind, detail)
        except Exception as exc:
            ctx.warn(f"{run.run}: cannot record its result: {redact(str(exc))}")
            kept = False
        ctx.log(f"{run.run}: {state.value}" + ("" if kept else " (dropped: no longer ours)"))
        self.done()

    def _heartbeat(self, run: str, token: int, lost: threading.Event,
                   stop: threading.Event) -> None:
        """Renew the run's lease every lease_ttl/4, check it every second; set `lost` when the
        run was killed by a round or taken over."""
        store = self.ctx.store

        def renew(c: Connection) -> bool:
            ok = pipeline_leases.renew(store, c, run, token)
            store.heartbeat(c, self.ctx.worker_id)
            return ok

        keep_alive(store, self.ctx.settings.lease_ttl, renew,
                   lambda c: pipeline_leases.holds(c, run, token), lost, stop)

    def _run(self, run: StartRun, lost: threading.Event) -> RunResult:
        """Prepare the run's workspace at the candidate tree and run its stage there."""
        ctx = self.ctx
        ws = ctx.ws
        stage = ws.config.stages[run.stage]
        try:
            tree, base, manifest, items, own = self._candidate(run.candidate)
        except LockstepError as exc:  # the integration remote or this clone cannot be read
            raise IntegrationFault(exc) from exc
        last = items[-1]
        name = f"{run.configuration}-{stage.name}-{run.attempt}"
        workdir = ws.runs_dir / run.candidate / name
        log = ws.logs_dir / run.candidate / run.configuration / f"{stage.name}.{run.attempt}.log"
        with ctx.store.tx() as c:
            pipeline_leases.set_run_log(c, run.run, str(log.relative_to(ws.state_dir)))
        if all((item.candidate or {}).get("skip") for item in own):
            log.parent.mkdir(parents=True, exist_ok=True)
            log.write_text("lockstep: nothing to test: every bump of this candidate is already "
                           "pinned or superseded; it is skipped when it reaches the head\n")
            return RunResult(Outcome.PASSED, 0, log)
        ctx.log(f"{run.run}: {run.configuration}/{stage.name} on {', '.join(i.id for i in items)}")
        return stage_call.execute(ws, StageCall(
            tree=tree, base=base, manifest=manifest, items=[i.id for i in items], item=last,
            stage=stage, configuration=run.configuration, attempt=run.attempt + 1,
            try_no=run.attempt + 1, workdir=workdir, log=log), ctx.settings.kill_grace, lost,
            functools.partial(self._record_pid, run.run), git_lock(ws))

    def _record_pid(self, run: str, pid: int) -> None:
        """Remember the stage's process, so a worker that finds this one dead can kill it."""
        started = process_started(pid)
        if started is None:
            return
        with self.ctx.store.tx() as c:
            pipeline_leases.set_run_process(c, run, HOST, pid, started)

    def _candidate(self, candidate: str) -> tuple[str, str, Manifest, list[Item], list[Item]]:
        """The candidate's tree, base, manifest, items and own items; built on first use, by
        whichever runner gets there first (the others use what it recorded)."""
        ctx = self.ctx
        store, ws = ctx.store, ctx.ws
        with store.read() as c:
            row = pipeline_leases.candidate_row(c, candidate)
            items = [store.item(c, int(i[1:])) for i in row["items"]]
        if row["tree"] is None:
            own = [int(i[1:]) for i in row["own"]]
            with store.read() as c:  # landing, maybe not pushed yet: applied first (no-op if so)
                landing = [store.item(c, seq) for seq in pipeline_leases.landing_items(c)]
            built = candidate_tree.build(ws, items, own, candidate, landing)
            with store.tx() as c:
                if pipeline_leases.set_tree(c, candidate, built.base, built.tree,
                                            built.manifest):
                    for seq, record in built.records.items():
                        store.set_item(c, seq, candidate=record)
                row = pipeline_leases.candidate_row(c, candidate)
                items = [store.item(c, int(i[1:])) for i in row["items"]]
        tree, base, text = row["tree"], row["base"], row["manifest"]
        with git_lock(ws):
            if not git.has_object(ws.root, tree):  # built in another worker's clone
                if not git.has_object(ws.root, base):
                    ws.fetch_branch()
                made = git.tree_with_file(ws.root, base, ws.manifest_path, text.encode(),
                                          ws.state_dir / f"index.{candidate}")
                if made != tree:
                    raise LockstepError(f"{candidate}: its tree {tree[:12]} cannot be rebuilt "
                                        f"here (got {made[:12]})")
        own_ids = set(row["own"])
        return (tree, base, Manifest(text, ws.manifest_path), items,
                [item for item in items if item.id in own_ids])
