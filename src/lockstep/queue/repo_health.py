"""Faults of the integration repo, not of a bump: its history rewritten under lockstep, a
configuration no stage tests, a pin whose commit is gone. Each pauses the queue until fixed.

The item being tested goes back to the queue untouched, since rejecting it would blame its owners.
"""

from __future__ import annotations

from typing import Any, NamedTuple

from lockstep import git
from lockstep.config import uncovered_configurations
from lockstep.manifest import Manifest
from lockstep.queue.lease import LeaseKeeper
from lockstep.queue.store import Item
from lockstep.queue.verdicts import Verdicts
from lockstep.queue.worker_context import WorkerContext


class RepoFault(NamedTuple):
    """Why the queue pauses: the pause reason, the event's detail, and what the user should do."""

    reason: str
    detail: dict[str, Any]
    message: str


class RepoHealth:
    """Checks the integration repo before an item's stages run, and pauses the queue on a fault."""

    def __init__(self, ctx: WorkerContext, lease: LeaseKeeper, verdicts: Verdicts) -> None:
        self.ctx = ctx
        self.lease = lease
        self.verdicts = verdicts

    def history_intact(self, item: Item, token: int, head: str) -> bool:
        """Pause the queue (`history-rewritten`) if the remote lost lockstep's last landing."""
        ctx = self.ctx
        if ctx.last_landed_commit is None:
            with ctx.store.read() as c:
                ctx.last_landed_commit = ctx.store.last_landed_commit(c)
        last = ctx.last_landed_commit
        if last is None or last == head or not git.has_object(ctx.ws.root, last):
            return True
        if git.is_ancestor(ctx.ws.root, last, head):
            return True
        with ctx.store.read() as c:
            if ctx.store.history_accepted(c, last):
                return True
        self.pause(item, token, RepoFault(
            "history-rewritten", {"lost": last, "head": head},
            f"{ctx.ws.branch} on {ctx.ws.remote} no longer contains lockstep's last landing "
            f"{last[:12]} (head is now {head[:12]}); restore it on the remote and run "
            "`lockstep queue resume`, or accept the rewritten history with "
            "`lockstep queue resume --accept-history`"))
        return False

    def fault(self, manifest: Manifest, configurations: list[str]) -> RepoFault | None:
        """What is wrong with the integration repo for these configurations, if anything: a
        configuration no stage tests, or a pin whose commit its component does not have."""
        ws = self.ctx.ws
        uncovered = uncovered_configurations(ws.config, configurations)
        if uncovered:
            return RepoFault(
                "config-invalid", {"configurations": uncovered},
                f"no stage tests configuration(s) {', '.join(uncovered)} of the manifest; "
                "add a stage for them in lockstep.toml (or remove its `configurations` "
                "restriction), then `lockstep queue resume`")
        for configuration in configurations:
            for name, pin in manifest.pins(configuration).items():
                if not ws.components.reachable(name, pin.sha):
                    return RepoFault(
                        "manifest-invalid",
                        {"configuration": configuration, "component": name,
                         "sha": pin.sha, "version": pin.version},
                        f"the manifest pins {name} {pin.version} at {pin.sha} in "
                        f"configuration {configuration}, a commit no tag or branch of "
                        f"that component contains (any more); fix the pin in "
                        f"{ws.manifest_path} on {ws.branch}, then `lockstep queue resume`")
        return None

    def pause(self, item: Item, token: int, fault: RepoFault) -> None:
        """A fault of the integration repo, not of the bump: the item goes back to the queue
        untouched (no attempt counted, nobody notified) and the queue pauses until fixed."""
        store = self.ctx.store
        with store.tx() as c:
            self.lease.check_token(c, item.seq, token)
            self.verdicts.requeue_untouched(c, item, token)
            store.update_queue(c, paused=1, paused_reason=fault.reason)
            store.add_event(c, None, fault.reason, {**fault.detail, "message": fault.message})
            store.add_event(c, item.seq, "requeued", {"reason": fault.reason})
        self.ctx.report.requeued.append(item.id)
        self.ctx.log(f"queue paused ({fault.reason}): {fault.message}")
