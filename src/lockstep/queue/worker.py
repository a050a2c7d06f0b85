"""The queue worker's loop: the imperative shell around the pure scheduler.

Each step reads a snapshot in one transaction, asks the scheduler what to do, claims the work
with a compare-and-set, then hands the slow part (stages, git) to a role outside any
transaction: the tester (with its runner) or the lander, while the lease keeper's heartbeat
keeps the lease alive.
"""

from __future__ import annotations

import dataclasses
import shutil
import threading
import time
from collections.abc import Callable
from enum import StrEnum
from typing import Any

from lockstep.config import (
    CONFIG_FILE,
    check_stage_coverage,
    committed_secrets,
    unset_secrets,
)
from lockstep.distribution import build as dist_build
from lockstep.distribution import journal as dist_journal
from lockstep.errors import ConfigError
from lockstep.git import redact
from lockstep.queue import landing, notify, scheduler
from lockstep.queue.lander import Lander
from lockstep.queue.lease import LeaseKeeper, LeaseLost
from lockstep.queue.model import Reason, RejectKind, State
from lockstep.queue.pipeline_worker import PipelineLoop
from lockstep.queue.repo_health import RepoHealth
from lockstep.queue.runner import StageRunner
from lockstep.queue.store import Item, Store
from lockstep.queue.tester import ItemTester
from lockstep.queue.verdicts import Verdicts
from lockstep.queue.worker_context import WorkerContext, WorkerReport
from lockstep.stages import unrunnable_stages
from lockstep.workspace import Workspace, checkout_drift, drift_hint

__all__ = ["LeaseLost", "RunMode", "Worker", "WorkerReport"]


class RunMode(StrEnum):
    """How long `queue run` works."""

    ONCE = "once"
    UNTIL_EMPTY = "until-empty"
    FOREVER = "forever"


class Worker:
    """One `lockstep queue run` process: the loop, and the roles it hands work to."""

    def __init__(self, ws: Workspace, store: Store,
                 log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        """Register this worker (forgetting dead ones), set up its roles, prune old runs."""
        ws.state_dir.mkdir(parents=True, exist_ok=True)  # index files; absent with PostgreSQL
        with store.tx() as c:
            store.forget_dead_workers(c)
            worker_id = store.register_worker(c)
        log = log or (lambda _msg: None)
        self.ctx = WorkerContext(ws=ws, store=store, settings=ws.config.queue,
                                 worker_id=worker_id, log=log, warn=warn or log)
        self.lease = LeaseKeeper(self.ctx)
        self.runner = StageRunner(self.ctx, self.lease)
        self.verdicts = Verdicts(self.ctx, self.lease)
        self.tester = ItemTester(self.ctx, self.lease, self.runner, self.verdicts,
                                 RepoHealth(self.ctx, self.lease, self.verdicts))
        self.lander = Lander(self.ctx, self.lease)
        self.idle_reason: str | None = None
        self.last_item: int | None = None
        dist_journal.ensure_tables(store)
        self._prune_run_dirs()

    @property
    def id(self) -> str:
        """This worker's row in the store's `workers` table."""
        return self.ctx.worker_id

    @property
    def report(self) -> WorkerReport:
        """What this worker did so far."""
        return self.ctx.report

    def _prune_run_dirs(self, keep: int = 20) -> None:
        """Keep the stage workspaces of the last `keep` finished items (failed runs' are kept
        for inspection); older ones would only fill the disk."""
        ws, store = self.ctx.ws, self.ctx.store
        if not ws.runs_dir.is_dir():
            return
        with store.read() as c:  # index reads only, whatever the length of the history
            newest = store.finished_ids(c, limit=keep) if keep else []
            live = {i.id for i in store.items(c)}
            last = store.last_seq(c)
        if len(newest) < keep:
            return  # no more finished items than are kept
        # Items below the oldest kept one (every item, with keep=0) existed when the snapshot
        # was read, so one that was not live then is finished (or gone), never a new one.
        below = int(newest[-1][1:]) if newest else last + 1
        for old in ws.runs_dir.iterdir():
            seq = old.name[1:]
            if old.name[:1] == "q" and seq.isdigit() and int(seq) < below and old.name not in live:
                shutil.rmtree(old, ignore_errors=True)

    # --- the loop --------------------------------------------------------------------------

    def run(self, mode: RunMode, poll: float = 1.0) -> WorkerReport:
        """Work until the mode says stop.

        --until-empty waits while another worker holds the front item (there may be more
        after it) and stops when nothing is left or the queue is paused.
        """
        self.preflight()
        self.distribute()  # what a killed worker left half built or half published
        stop = threading.Event()
        sender = threading.Thread(target=self._deliver_until, args=(stop,), daemon=True,
                                  name="notifier-deliveries")
        sender.start()
        try:
            if self.ctx.settings.mode == "serial":
                self._loop(mode, poll)
            else:
                PipelineLoop(self.ctx, self.lease, self.lander, self.verdicts).run(
                    until_empty=mode != RunMode.FOREVER, poll=poll,
                    after_landing=self.distribute)
                self.sync_checkout()
        finally:
            stop.set()
            sender.join()
        self.deliver()  # what the last step queued goes out before `queue run` returns
        store = self.ctx.store
        with store.read() as c:
            q = store.queue(c)
            waiting = len(store.items(c))
        if q.paused and waiting:
            self.report.paused, self.report.waiting = q.paused_reason or "paused", waiting
        return self.report

    def preflight(self) -> None:
        """Refuse to start on a configuration that would let a bump land untested (exit 2),
        and warn about notifiers that cannot sign what they send."""
        ws = self.ctx.ws
        unrunnable = unrunnable_stages(ws.config)
        if unrunnable:
            raise ConfigError(f"{CONFIG_FILE}: {unrunnable[0]}",
                              "fix the stage's command (or PATH), so that bumps are not "
                              "rejected for a command that cannot start")
        head = ws.remote_head()
        ws.check_config_matches(head)
        manifest = ws.manifest_at(head)
        check_stage_coverage(ws.config, manifest.configurations,
                             f"{CONFIG_FILE} (manifest on {ws.remote}/{ws.branch})")
        for problem in [*unset_secrets(ws.config), *committed_secrets(ws.config)]:
            self.ctx.warn(f"warning: {problem}")

    def _deliver_until(self, stop: threading.Event) -> None:
        """Deliver notifications beside the work, so a slow receiver never holds up the queue."""
        while not stop.wait(0.5):
            self.deliver()

    def _loop(self, mode: RunMode, poll: float) -> None:
        """Step until the mode says stop; sync the checkout whenever the queue goes idle."""
        while True:
            did = self.step()
            if did:
                if mode == RunMode.ONCE and not self._front_passed():
                    break
                continue
            if self.idle_reason == "busy" and mode == RunMode.UNTIL_EMPTY:
                time.sleep(min(poll, 0.2))
                continue
            self.sync_checkout()
            if mode != RunMode.FOREVER:
                break
            self.distribute()  # retries whose infrastructure backoff has passed
            time.sleep(poll)
        self.sync_checkout()

    def sync_checkout(self) -> None:
        """Fast-forward the integration repo's checkout to the last landing (once per idle)."""
        ctx = self.ctx
        if ctx.last_landed is not None:
            if not landing.fast_forward_checkout(ctx.ws, ctx.last_landed):
                drift = checkout_drift(ctx.ws) or "the checkout cannot be fast-forwarded"
                ctx.warn(f"warning: {drift}; it was left as it is, so files in it show older "
                         f"pins than {ctx.ws.remote}/{ctx.ws.branch} ({drift_hint(ctx.ws)})")
            ctx.last_landed = None

    def _front_passed(self) -> bool:
        """Whether the item just tested passed and waits to land (--once lands it too)."""
        if self.last_item is None:
            return False
        with self.ctx.store.read() as c:
            return self.ctx.store.item(c, self.last_item).state == State.PASSED

    def deliver(self) -> None:
        """Send due notifier deliveries (never raises: a notifier must not stop the queue)."""
        ctx = self.ctx
        try:
            notify.deliver_due(ctx.store, ctx.ws.config, ctx.settings.notify_attempts,
                               cwd=ctx.ws.root)
        except Exception as exc:  # a broken notifier or a busy store: the next round retries
            ctx.log(f"notifier delivery failed: {redact(str(exc))}")

    def step(self) -> bool:
        """One scheduling round; False when there was nothing to do now."""
        with self.ctx.store.tx() as c:
            plan = self._decide(c)
            self.idle_reason = plan.idle_reason
            claims = [self._claim(c, d) for d in plan.decisions]
        recovered = any(isinstance(d, scheduler.Recover) for d in plan.decisions)
        work = [w for w in claims if w is not None]
        if not work and any(isinstance(d, scheduler.Land) for d in plan.decisions):
            self.idle_reason = "busy"  # another worker holds the landing lock: it is landing
        for action in work:
            action()
        if work:
            self.distribute()
        return bool(work) or recovered

    def _decide(self, c: Any) -> scheduler.Plan:
        """Ask the scheduler what to do now: the one place that names it (with `_claim`)."""
        return scheduler.decide(self.ctx.store.view(c, self.ctx.settings.max_recoveries))

    def distribute(self) -> None:
        """Build the distributions of releases landed so far, oldest first (after landing,
        never before); interrupted builds and publishes are completed too."""
        if dist_build.configured(self.ctx.ws):
            dist_build.complete_unfinished(self.ctx.ws, self.ctx.store, self.ctx.log)

    def _claim(self, c: Any, decision: scheduler.Decision) -> Callable[[], None] | None:
        """Take the item for this worker inside the scheduling transaction; the action that
        follows does the slow part outside it (None: nothing more to do now)."""
        store = self.ctx.store
        if isinstance(decision, scheduler.PauseQueue):
            store.update_queue(c, paused=1, paused_reason=decision.reason, draining=0)
            store.add_event(c, None, "paused", {"reason": decision.reason})
            self.ctx.log(f"queue paused: {decision.reason}")
            return None
        seq = int(decision.item[1:])
        self.last_item = seq
        item = store.item(c, seq)
        token = store.next_lease_token(c)
        lease = self.lease.lease_values(c, token)
        if isinstance(decision, scheduler.Recover) and decision.state == State.TESTING:
            self._recover_testing(c, item, decision.give_up)
            return None
        if isinstance(decision, scheduler.Recover):
            return self.lander.claim(c, seq, lease, repair=True)
        if isinstance(decision, scheduler.Test):
            if not store.transition(c, seq, {State.QUEUED}, State.TESTING,
                                    attempt=item.attempt + 1, **lease):
                return None
            claimed = dataclasses.replace(item, state=State.TESTING, attempt=item.attempt + 1,
                                          lease_token=token)
            return lambda: self.tester.test(claimed, token)
        return self.lander.claim(c, seq, lease, repair=False)

    def _recover_testing(self, c: Any, item: Item, give_up: bool) -> None:
        """The worker testing the item died: kill what it left running, then retest the item
        from stage 1, or reject it (`give_up`) once its workers died too often."""
        store, seq = self.ctx.store, item.seq
        self.runner.kill_orphans(c, seq)
        if give_up:
            reason = Reason(RejectKind.WORKER_LOST, "the worker testing it died too often",
                            attempt=item.attempt)
            self.verdicts.reject(c, item, reason, {State.TESTING})
            return
        store.transition(c, seq, {State.TESTING}, State.QUEUED, holder=None,
                         lease_token=None, lease_expires_at=None,
                         recoveries=item.recoveries + 1)
        self.report.recovered.append(item.id)
        self.ctx.log(f"{item.id}: its worker died while testing; it is retested from stage 1")
