"""How an item's test ends (spec/queue.md §3.2, §3.3, §3.6): passed, rejected with a reason and
its owners notified, skipped as stale or a no-op, or requeued untouched when it was not its fault.

The infrastructure-failure streak lives here too, since every verdict updates it.
"""

from __future__ import annotations

from typing import Any

from lockstep.config import Stage
from lockstep.queue import candidate as candidate_mod
from lockstep.queue import notify
from lockstep.queue.lease import LeaseKeeper
from lockstep.queue.model import Reason, RejectKind, State
from lockstep.queue.store import Item
from lockstep.queue.worker_context import WorkerContext
from lockstep.stages import Outcome, RunResult, tail
from lockstep.workspace import Workspace


class Verdicts:
    """Records the outcome of testing an item this worker holds, and says so to users."""

    def __init__(self, ctx: WorkerContext, lease: LeaseKeeper) -> None:
        self.ctx = ctx
        self.lease = lease

    def passed(self, item: Item, token: int) -> None:
        """Every stage passed: the item waits to land, and the infrastructure streak ends."""
        store = self.ctx.store
        with store.tx() as c:
            self.lease.check_token(c, item.seq, token)
            store.transition(c, item.seq, {State.TESTING}, State.PASSED)
            store.update_queue(c, infra_streak=0)
        self.ctx.log(f"{item.id}: every stage passed")

    def reject(self, c: Any, item: Item, reason: Reason, expect: set[State],
               token: int | None = None) -> None:
        """Reject the item (if it is still in one of `expect`) and notify its owners."""
        store = self.ctx.store
        if token is not None:
            self.lease.check_token(c, item.seq, token)
        if not store.transition(c, item.seq, expect, State.REJECTED,
                                outcome=reason.to_dict(), holder=None, lease_token=None,
                                lease_expires_at=None):
            return
        self.announce(c, item, reason)

    def announce(self, c: Any, item: Item, reason: Reason) -> None:
        """Tell the item's owners why it was rejected (the state is already `rejected`)."""
        store = self.ctx.store
        notify.enqueue(store, c, self.ctx.ws.config, "rejected", item.seq, {
            "item": item.id, "component": item.component, "version": item.version,
            "sha": item.sha, "owners": _owners(self.ctx.ws, item.component),
            "rejection": reason.to_dict(),
        })
        self.ctx.report.rejected.append(item.id)
        self.ctx.log(f"{item.id}: rejected: {reason.message}")

    def reject_failed_run(self, item: Item, token: int, cand: dict[str, Any],
                          configuration: str, stage: Stage, result: RunResult,
                          tries: int) -> None:
        """Reject the item for a stage that failed, timed out or kept failing on
        infrastructure; pause the queue after infra_pause_after infrastructure failures."""
        settings = self.ctx.settings
        kind = {
            Outcome.TIMEOUT: RejectKind.STAGE_TIMEOUT,
            Outcome.INFRA: RejectKind.INFRASTRUCTURE,
        }.get(result.outcome, RejectKind.STAGE_FAILED)
        what = {
            RejectKind.STAGE_TIMEOUT: f"timed out after {stage.timeout:g}s",
            RejectKind.INFRASTRUCTURE: f"failed on infrastructure {tries} times",
        }.get(kind, f"exited {result.exit_code}")
        reason = Reason(
            kind, f"stage {stage.name} {what} for configuration {configuration}",
            stage=stage.name, configuration=configuration, exit_code=result.exit_code,
            attempt=item.attempt, log_tail=tail(result.log, settings.log_tail_lines),
            candidate=cand["tree"], base=cand["base"], items=cand["items"],
        )
        store = self.ctx.store
        with store.tx() as c:
            self.lease.check_token(c, item.seq, token)
            self.reject(c, item, reason, {State.TESTING}, token=token)
            if kind == RejectKind.INFRASTRUCTURE:
                streak = store.queue(c).infra_streak + 1
                values: dict[str, Any] = {"infra_streak": streak}
                if streak >= settings.infra_pause_after:
                    values.update(paused=1, paused_reason="infrastructure")
                    self.ctx.log("queue paused: too many infrastructure failures in a row")
                store.update_queue(c, **values)
            else:
                store.update_queue(c, infra_streak=0)

    def reject_gone_commit(self, item: Item, token: int) -> None:
        """The bump's own commit is on no tag or branch of its component any more (deleted or
        force-pushed away since submit): the bump cannot land, and its owners should know."""
        reason = Reason(RejectKind.COMMIT_GONE,
                        f"{item.component} {item.version}: commit {item.sha} is no longer on any "
                        "tag or branch of the component's repository (removed after submit)",
                        attempt=item.attempt)
        with self.ctx.store.tx() as c:
            self.reject(c, item, reason, {State.TESTING}, token=token)

    def finish_without_bumps(self, item: Item, token: int,
                             plan: candidate_mod.CandidatePlan) -> None:
        """Nothing is left to test: skip a stale or no-op bump, reject one whose
        configurations all left the manifest."""
        store = self.ctx.store
        with store.tx() as c:
            self.lease.check_token(c, item.seq, token)
            if plan.skip_reason is None:
                missing = ", ".join(plan.not_applicable)
                reason = Reason(RejectKind.NOT_APPLICABLE,
                                f"configuration(s) {missing} left the manifest",
                                attempt=item.attempt)
                self.reject(c, item, reason, {State.TESTING}, token=token)
                return
            outcome = {"reason": plan.skip_reason, "by": plan.superseded_by}
            store.transition(c, item.seq, {State.TESTING}, State.SKIPPED, outcome=outcome,
                             holder=None, lease_token=None, lease_expires_at=None)
            notify.enqueue(store, c, self.ctx.ws.config, "skipped", item.seq,
                           {"item": item.id, "skipped": outcome})
        self.ctx.report.skipped.append(item.id)
        self.ctx.log(f"{item.id}: skipped ({plan.skip_reason})")

    def requeue_untouched(self, c: Any, item: Item, token: int) -> bool:
        """Put an item this worker tests back in the queue as if it had not started (no
        attempt counted); nothing if its lease moved on (cancelled, or taken over)."""
        return self.ctx.store.transition(c, item.seq, {State.TESTING}, State.QUEUED,
                                         expect_token=token, holder=None, lease_token=None,
                                         lease_expires_at=None, attempt=item.attempt - 1)


def _owners(ws: Workspace, component: str) -> list[str]:
    """Who the component's lockstep.toml entry names as owners (notified on rejection)."""
    comp = ws.config.components.get(component)
    return list(comp.owners) if comp else []
