"""The lander (spec/queue.md §2.3, §2.4, §8): lands a passed item under the landing lock, and
finishes a landing a dead worker left, through the landing journal.

Every store write of a landing is fenced by the lock's epoch, so only one worker lands at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from lockstep import faults, git
from lockstep.distribution import build as dist_build
from lockstep.distribution import journal as dist_journal
from lockstep.errors import LockstepError
from lockstep.manifest import Manifest
from lockstep.queue import landing, notify
from lockstep.queue.lease import LeaseKeeper, LeaseLost
from lockstep.queue.model import State, item_id
from lockstep.queue.worker_context import WorkerContext
from lockstep.workspace import Workspace


class Lander:
    """Owns this worker's use of the landing lock and its landing journal rows."""

    def __init__(self, ctx: WorkerContext, lease: LeaseKeeper) -> None:
        self.ctx = ctx
        self.lease = lease

    def claim(self, c: Any, seq: int, lease: dict[str, Any],
              repair: bool) -> Callable[[], None] | None:
        """Inside the scheduling transaction: take the landing lock and the item's lease; the
        action lands it (or, with `repair`, finishes its half-done landing). None: lock busy."""
        if not self.lease.take_landing_lock(c):
            return None
        self.ctx.store.set_item(c, seq, **lease)
        token: int = lease["lease_token"]
        action = self.finish_landing if repair else self.land
        return lambda: self.guarded(seq, token, action)

    def guarded(self, seq: int, token: int, action: Callable[[int, int], None]) -> None:
        """Run a landing step with the lease and landing lock kept alive; a fenced worker
        stops touching git and leaves the landing to the lock's new holder."""
        try:
            with self.lease.heartbeat(seq, token, landing=True):
                action(seq, token)
        except LeaseLost:
            self.ctx.log(f"{item_id(seq)}: another worker took over the landing; leaving it to it")

    def land(self, seq: int, token: int) -> None:
        """Open the item's journal row (every input of its commit and tag), then land it."""
        # No pre-check of the remote head: the push is conditional on the base (lease), and a
        # refused push is reconciled (the base moved → the item is retested on the new base).
        ctx, store = self.ctx, self.ctx.store
        with store.read() as c:
            item = store.item(c, seq)
        cand = item.candidate or {}
        now = datetime.now(UTC)
        name = landing.next_tag_name(
            ctx.ws.config.integration.tag_format,
            self.known_tag_names(), now)
        with store.tx() as c:
            self.lease.check_token(c, seq, token)
            self.lease.check_epoch(c)
            journal_id = store.add_landing(
                c, item_seq=seq, epoch=self.lease.epoch, state="open", base=cand["base"],
                tree=cand["tree"], commit_message=landing.commit_message(item, cand, 0),
                tag_name=name, tag_message="", who_name=ctx.ws.config.identity.name,
                who_email=ctx.ws.config.identity.email, timestamp=int(now.timestamp()))
            store.update_landing(
                c, journal_id, commit_message=landing.commit_message(item, cand, journal_id),
                tag_message=landing.tag_message(name, item, cand))
            store.transition(c, seq, {State.PASSED}, State.LANDING)
        faults.crashpoint("before-commit")
        self.finish_landing(seq, token, fresh=True)

    def known_tag_names(self) -> set[str]:
        """Tag names on the remote and locally, read once per worker and kept up to date with
        its own landings; a name someone else took meanwhile makes the push fail, and the
        reconcile that follows picks the next free one and forgets this cache."""
        if self.ctx.tag_names is None:
            self.ctx.tag_names = set(landing.remote_tags(self.ctx.ws)) | _local_tags(self.ctx.ws)
        return self.ctx.tag_names

    def finish_landing(self, seq: int, token: int, fresh: bool = False) -> None:
        """Reconcile the item's open journal row until it is landed or undone."""
        ctx, store = self.ctx, self.ctx.store
        if not fresh:
            faults.crashpoint("recovery-start")
        for attempt in range(5):
            with store.read() as c:
                self.lease.check_epoch(c)
                item = store.item(c, seq)
                journal = store.open_landing(c, seq)
            cand = item.candidate or {}
            if journal is None:
                with store.tx() as c:
                    store.transition(c, seq, {State.LANDING}, State.QUEUED, holder=None,
                                     lease_token=None, lease_expires_at=None)
                    self.lease.release_landing_lock(c)
                return
            result = landing.reconcile(ctx.ws, journal, cand["manifest"],
                                       fresh=fresh and attempt == 0)
            if not (fresh and attempt == 0 and result.result == landing.Result.LANDED):
                ctx.tag_names = None
            if result.renamed_tag:
                with store.tx() as c:
                    store.update_landing(c, journal["id"], tag_name=result.renamed_tag,
                                         tag_message=landing.tag_message(
                                             result.renamed_tag, item, cand))
                continue
            with store.tx() as c:
                self.lease.check_epoch(c)
                if result.result == landing.Result.LANDED:
                    outcome = {"commit": result.commit, "tag": result.tag,
                               "tag_object": result.tag_object, "landing": journal["id"]}
                    store.update_landing(c, journal["id"], state="landed",
                                         commit_sha=result.commit, tag_sha=result.tag_object)
                    store.transition(c, seq, {State.LANDING}, State.LANDED, outcome=outcome,
                                     holder=None, lease_token=None, lease_expires_at=None)
                    notify.enqueue(store, c, ctx.ws.config, "landed", seq,
                                   {"item": item.id, "landed": outcome})
                    if dist_build.configured(ctx.ws):  # built once the landing is recorded
                        dist_journal.add_pending(c, journal["tag_name"], journal["id"], seq,
                                                 str(result.commit))
                else:
                    store.update_landing(c, journal["id"], state="undone")
                    store.transition(c, seq, {State.LANDING}, State.QUEUED, holder=None,
                                     lease_token=None, lease_expires_at=None)
                self.lease.release_landing_lock(c)
            if result.result == landing.Result.LANDED:
                assert result.commit is not None
                ctx.report.landed.append(item.id)
                if not fresh:
                    ctx.report.repaired.append(item.id)
                ctx.log(f"{item.id}: landed as {result.tag} ({result.commit[:12]})")
                ctx.last_landed = ctx.last_landed_commit = result.commit
                if cand["base"] in ctx.config_ok:  # a landing changes only the manifest
                    ctx.config_ok.add(result.commit)
                if ctx.tag_names is not None:
                    ctx.tag_names.add(journal["tag_name"])
                ctx.ws.remember_manifest(result.commit,
                                         Manifest(cand["manifest"], ctx.ws.manifest_path))
            else:
                ctx.report.requeued.append(item.id)
                ctx.log(f"{item.id}: {ctx.ws.branch} on {ctx.ws.remote} moved away from "
                        f"{cand['base'][:12]}, the commit {item.id} was tested on; it goes back "
                        "to the queue and is retested on the new head")
            return
        raise LockstepError(f"{item_id(seq)}: could not find a free tag name after 5 tries")


def _local_tags(ws: Workspace) -> set[str]:
    """Tag names in the integration repo's clone."""
    text = git.out(["tag", "--list"], ws.root)
    return set(text.split())
