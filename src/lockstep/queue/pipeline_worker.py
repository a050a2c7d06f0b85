"""The worker loop of the speculative and batch modes (spec/queue.md §4, §5, §8).

Each round is one write transaction: reap runs whose worker died, read the queue's front, ask
the pure scheduler (`pipeline.decide`) what to do, record its actions. Then this worker's
runners execute the runs handed to them on threads, and the lander lands what passed, in order.
Several `queue run` processes share one store this way; each owns only its runners.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from sqlalchemy import Connection

from lockstep.errors import UsageError
from lockstep.queue import pipeline, pipeline_leases, pipeline_store
from lockstep.queue.candidate_lander import CandidateLander
from lockstep.queue.candidate_runner import CandidateRunner
from lockstep.queue.lander import Lander
from lockstep.queue.lease import LeaseKeeper
from lockstep.queue.model import Reason, RejectKind
from lockstep.queue.pipeline_settings import pipeline_settings
from lockstep.queue.verdicts import Verdicts
from lockstep.queue.worker_context import WorkerContext
from lockstep.stages import tail

POLL = 0.25  # seconds between rounds while idle: runs handed to this worker start this soon


@dataclass
class Round:
    """What one scheduling round left this worker to do."""

    live: int = 0  # non-terminal items after the round
    paused: bool = False
    wake_at: float | None = None
    started: list[tuple[pipeline.StartRun, int]] = field(default_factory=list)


class PipelineLoop:
    """Drives `decide` for one worker with `[queue] runners` runner slots."""

    def __init__(self, ctx: WorkerContext, lease: LeaseKeeper, lander: Lander,
                 verdicts: Verdicts) -> None:
        """Name this worker's runners; nothing is registered until `run`."""
        self.ctx = ctx
        self.settings = pipeline_settings(ctx.ws.config)
        self.verdicts = verdicts
        self.wake = threading.Event()
        self.runner = CandidateRunner(ctx, self.wake.set)
        self.lander = CandidateLander(ctx, lease, lander, verdicts)
        self.runner_ids = [f"{ctx.worker_id}/r{k + 1}" for k in range(ctx.settings.runners)]

    def run(self, until_empty: bool, poll: float,
            after_landing: Callable[[], None] = lambda: None) -> None:
        """Register the runners and work until the queue is empty (`until_empty`) or forever;
        `after_landing` runs after each round that landed something (distribution builds)."""
        store = self.ctx.store
        with store.tx() as c:
            for runner in self.runner_ids:
                pipeline_store.add_runner(c, runner, self.ctx.worker_id)
        try:
            while True:
                if self.runner.fatal is not None:
                    raise self.runner.fatal
                done = self.round()
                for run, token in done.started:
                    self.runner.start(run, token)
                landed = self.lander.land_ready()
                if landed:
                    after_landing()
                    continue
                if until_empty and not self.runner.busy() and (
                        done.live == 0 or (done.paused and not self._others_busy())):
                    return
                timeout = min(poll, POLL)  # other workers' rounds hand runs to ours too
                if done.wake_at is not None:
                    timeout = max(0.05, min(timeout, done.wake_at - time.time()))
                self.wake.wait(timeout)
                self.wake.clear()
        finally:
            self.runner.join()
            with store.tx() as c:
                pipeline_leases.remove_runners(c, self.runner_ids)

    def _others_busy(self) -> bool:
        """Whether runs of other workers are still in flight (a paused queue waits for them)."""
        with self.ctx.store.read() as c:
            snap = pipeline_store.read_snapshot(self.ctx.store, c, self.settings)
        return any(r.run is not None for r in snap.runners)

    def round(self) -> Round:
        """One scheduling transaction; the rejections it made are notified."""
        store = self.ctx.store
        with store.tx() as c:
            now = store.clock(c)
            lost = pipeline_leases.reap(store, c, now)
            snap = pipeline_store.read_snapshot(store, c, self.settings)
            stale = pipeline_leases.withdrawn(snap)
            if stale:
                pipeline_store.apply_decisions(store, c, snap, stale, now)
                snap = pipeline_store.read_snapshot(store, c, self.settings)
            decisions = pipeline.decide(snap, [], now)
            pipeline_store.apply_decisions(store, c, snap, decisions, now)
            mine = [(run, token) for run, token in pipeline_leases.assigned(c, self.runner_ids)
                    if run.run not in self.runner.threads]
            for action in decisions.actions:
                if isinstance(action, pipeline.Reject):
                    self._rejected(c, action)
            gone = sum(1 for a in decisions.actions
                       if isinstance(a, pipeline.Reject | pipeline.WithdrawItem))
            paused = snap.paused or any(isinstance(a, pipeline.PauseQueue)
                                        for a in decisions.actions)
            live = len(snap.items) - gone
        for run in lost:
            self.ctx.log(f"{run}: its worker died or its lease expired; it is run again")
        return Round(live=live, paused=paused, wake_at=decisions.wake_at,
                     started=mine)

    def _rejected(self, c: Connection, action: pipeline.Reject) -> None:
        """Give a rejection the serial worker's reason (with the failed run's log tail) and
        notify the item's owners."""
        store, ws = self.ctx.store, self.ctx.ws
        item = store.item(c, int(action.item[1:]))
        failure = action.failure
        kind = action.kind
        message = {
            RejectKind.STAGE_FAILED.value: "stage {stage} exited {code} for configuration {conf}",
            RejectKind.STAGE_TIMEOUT.value: "stage {stage} timed out for configuration {conf}",
            RejectKind.INFRASTRUCTURE.value:
                "stage {stage} kept failing on infrastructure for configuration {conf}",
            RejectKind.ITEM_TIMEOUT.value: "its candidate outlived [queue] item_timeout",
            RejectKind.ARTIFACT_MISSING.value: "its artifact never reached the registry",
        }.get(kind, kind)
        log_tail: list[str] = []
        if failure is not None and failure.run is not None:
            log = pipeline_leases.run_log(c, failure.run)
            if log:
                log_tail = tail(ws.state_dir / log, self.ctx.settings.log_tail_lines)
        cand = item.candidate or {}
        reason = Reason(
            kind, message.format(stage=failure.stage if failure else None,
                                 code=failure.exit_code if failure else None,
                                 conf=failure.configuration if failure else None),
            stage=failure.stage if failure else None,
            configuration=failure.configuration if failure else None,
            exit_code=failure.exit_code if failure else None, attempt=item.attempt,
            log_tail=log_tail, candidate=cand.get("tree"), base=cand.get("base"),
            items=cand.get("items", []))
        store.set_item(c, item.seq, outcome=reason.to_dict())
        self.verdicts.announce(c, item, reason)


def check_mode(once: bool, mode: str) -> None:
    """`--once` tests one item at a time: it has no meaning when many are tested at once."""
    if once and mode != "serial":
        raise UsageError(f"`queue run --once` tests one item; [queue] mode is {mode!r}, which "
                         "tests many at once",
                         "use `lockstep queue run --until-empty` or `--forever`")
