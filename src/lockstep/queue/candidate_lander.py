"""The pipeline's lander (spec/queue.md §2.3, §2.4, §4, §5): lands the candidates the scheduler
handed over, in order, each as one commit and tag, under the landing lock and its journal.

Before writing the journal it checks that the tree it would land (the remote head with the
candidate's own bumps) is the tree that was tested; if not, the branch moved under the queue and
the items go back to be retested, so nothing lands that was not tested exactly as it lands.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from lockstep import faults, git
from lockstep.distribution import build as dist_build
from lockstep.distribution import journal as dist_journal
from lockstep.errors import LockstepError
from lockstep.manifest import Manifest
from lockstep.queue import candidate_tree, landing, notify, pipeline_leases, pipeline_store
from lockstep.queue.candidate_tree import git_lock
from lockstep.queue.lander import Lander
from lockstep.queue.lease import LeaseKeeper, LeaseLost
from lockstep.queue.model import Reason, RejectKind, State
from lockstep.queue.store import Item
from lockstep.queue.verdicts import Verdicts
from lockstep.queue.worker_context import WorkerContext


class CandidateLander:
    """Owns this worker's landings of pipeline candidates."""

    def __init__(self, ctx: WorkerContext, lease: LeaseKeeper, lander: Lander,
                 verdicts: Verdicts) -> None:
        """Share the serial lander's tag-name cache and the lease keeper's landing lock."""
        self.ctx = ctx
        self.lease = lease
        self.lander = lander
        self.verdicts = verdicts

    def land_ready(self) -> bool:
        """Land every candidate waiting to land, in order; False when there was none or another
        worker holds the landing lock (it lands them)."""
        store = self.ctx.store
        with store.tx() as c:
            ready = pipeline_store.landing_candidates(c)
            if not ready or not self.lease.take_landing_lock(c):
                return False
        try:
            for candidate in ready:
                self._land(candidate)
                with store.tx() as c:
                    self.lease.check_epoch(c)
                    store.renew_landing_lock(c, self.ctx.worker_id, self.lease.epoch,
                                             self.ctx.settings.lease_ttl)
        except LeaseLost:
            self.ctx.log("another worker took over the landing lock; leaving the landings to it")
            return True
        with store.tx() as c:
            q = store.queue(c)
            if q.landing_holder == self.ctx.worker_id and q.landing_epoch == self.lease.epoch:
                self.lease.release_landing_lock(c)
        return True

    def _land(self, candidate: str) -> None:
        """Land one candidate: open its journal row (or find the one a dead worker left) and
        reconcile it until landed or undone."""
        store = self.ctx.store
        with store.read() as c:
            cand = pipeline_leases.candidate_row(c, candidate)
            own = [store.item(c, int(i[1:])) for i in cand["own"]]
            journal = store.open_landing(c, own[0].seq)
        fresh = journal is None
        if journal is None:
            journal = self._open_journal(cand, own)
            if journal is None:
                return
        else:
            faults.crashpoint("recovery-start")
        self._reconcile(cand, own, journal, fresh)

    def _open_journal(self, cand: dict[str, Any], own: list[Item]) -> dict[str, Any] | None:
        """Check the tree against the remote head and write the journal row; None when the
        branch moved (the items went back to the queue)."""
        ctx, store, ws = self.ctx, self.ctx.store, self.ctx.ws
        with git_lock(ws):
            head = ws.remote_head()
            text, records = candidate_tree.apply_items(
                ws, ws.manifest_at(head), own, [i.seq for i in own])
            tree = git.tree_with_file(ws.root, head, ws.manifest_path, text.encode(),
                                      ws.state_dir / f"index.land.{cand['id']}")
        if tree != cand["tree"]:
            with store.tx() as c:
                self.lease.check_epoch(c)
                pipeline_leases.unland(c, cand["id"], cand["own"], store.clock(c))
            ids = ", ".join(i.id for i in own)
            ctx.report.requeued.extend(i.id for i in own)
            ctx.log(f"{ids}: {ws.branch} on {ws.remote} is not the branch they were tested on "
                    "(a commit lockstep did not make); they are retested on the new head")
            return None
        stale = [item for item in own if records[item.seq]["skip"] is not None]
        if stale:
            self._skip(cand, stale, records, everything=len(stale) == len(own))
            own = [item for item in own if item not in stale]
            if not own:
                return None
        entries = [(item, {**records[item.seq], "manifest": text}) for item in own]
        now = datetime.now(UTC)
        name = landing.next_tag_name(ctx.ws.config.integration.tag_format,
                                     self.lander.known_tag_names(), now)
        with store.tx() as c:
            self.lease.check_epoch(c)
            journal_id = store.add_landing(
                c, item_seq=own[0].seq, epoch=self.lease.epoch, state="open", base=head,
                tree=tree, commit_message=landing.commit_message_of(entries, 0), tag_name=name,
                tag_message="", who_name=ctx.ws.config.identity.name,
                who_email=ctx.ws.config.identity.email, timestamp=int(now.timestamp()))
            store.update_landing(c, journal_id,
                                 commit_message=landing.commit_message_of(entries, journal_id),
                                 tag_message=landing.tag_message_of(name, entries, text))
            journal = store.open_landing(c, own[0].seq)
        faults.crashpoint("before-commit")
        return journal

    def _skip(self, cand: dict[str, Any], stale: list[Item],
              records: dict[int, dict[str, Any]], everything: bool) -> None:
        """Bumps that change nothing on the head (already pinned, or superseded since they were
        submitted) are skipped, not landed, as serial mode skips them; a candidate of nothing
        but those makes no commit."""
        ctx, store = self.ctx, self.ctx.store
        with store.tx() as c:
            self.lease.check_epoch(c)
            for item in stale:
                outcome = records[item.seq]["skip"]
                if outcome["reason"] == "not-applicable":
                    missing = ", ".join(item.configurations)
                    reason = Reason(RejectKind.NOT_APPLICABLE,
                                    f"configuration(s) {missing} left the manifest",
                                    attempt=item.attempt)
                    if store.transition(c, item.seq, {State.LANDING}, State.REJECTED,
                                        outcome=reason.to_dict()):
                        self.verdicts.announce(c, item, reason)
                    continue
                if store.transition(c, item.seq, {State.LANDING}, State.SKIPPED,
                                    outcome=outcome):
                    notify.enqueue(store, c, ctx.ws.config, "skipped", item.seq,
                                   {"item": item.id, "skipped": outcome})
                    ctx.report.skipped.append(item.id)
                    ctx.log(f"{item.id}: skipped ({outcome['reason']})")
            if everything:
                pipeline_leases.close_candidate(c, cand["id"], "skipped", store.clock(c))

    def _reconcile(self, cand: dict[str, Any], own: list[Item], journal: dict[str, Any],
                   fresh: bool) -> None:
        """Drive the journal row to landed or undone (a taken tag name is replaced)."""
        ctx, store, ws = self.ctx, self.ctx.store, self.ctx.ws
        text = cand["manifest"]
        for attempt in range(5):
            with git_lock(ws):
                result = landing.reconcile(ws, journal, text, fresh=fresh and attempt == 0)
            if not (fresh and attempt == 0 and result.result == landing.Result.LANDED):
                ctx.tag_names = None
            if result.renamed_tag:
                records = {item.seq: item.candidate or {} for item in own}
                entries = [(item, {**records[item.seq], "manifest": text}) for item in own]
                with store.tx() as c:
                    store.update_landing(c, journal["id"], tag_name=result.renamed_tag,
                                         tag_message=landing.tag_message_of(
                                             result.renamed_tag, entries, text))
                    journal = store.open_landing(c, own[0].seq) or journal
                continue
            self._record(cand, own, journal, result, fresh)
            return
        raise LockstepError(f"{cand['id']}: could not find a free tag name after 5 tries")

    def _record(self, cand: dict[str, Any], own: list[Item], journal: dict[str, Any],
                result: landing.Outcome, fresh: bool) -> None:
        """Record a landing's end: the items landed (notified, distribution pending), or back
        to the queue when the branch had moved."""
        ctx, store, ws = self.ctx, self.ctx.store, self.ctx.ws
        with store.tx() as c:
            self.lease.check_epoch(c)
            now = store.clock(c)
            if result.result != landing.Result.LANDED:
                store.update_landing(c, journal["id"], state="undone")
                pipeline_leases.unland(c, cand["id"], cand["own"], now)
            else:
                outcome = {"commit": result.commit, "tag": result.tag,
                           "tag_object": result.tag_object, "landing": journal["id"]}
                store.update_landing(c, journal["id"], state="landed",
                                     commit_sha=result.commit, tag_sha=result.tag_object)
                pipeline_store.landed(store, c, cand["id"], now)
                for item in own:
                    store.set_item(c, item.seq, outcome=outcome)
                    notify.enqueue(store, c, ws.config, "landed", item.seq,
                                   {"item": item.id, "landed": outcome})
                if dist_build.configured(ws):
                    dist_journal.add_pending(c, journal["tag_name"], journal["id"], own[0].seq,
                                             str(result.commit))
        ids = ", ".join(i.id for i in own)
        if result.result != landing.Result.LANDED:
            ctx.report.requeued.extend(i.id for i in own)
            ctx.log(f"{ids}: {ws.branch} on {ws.remote} moved away from the base they were "
                    "tested on; they are retested on the new head")
            return
        assert result.commit is not None
        ctx.report.landed.extend(i.id for i in own)
        if not fresh:
            ctx.report.repaired.extend(i.id for i in own)
        ctx.log(f"{ids}: landed as {result.tag} ({result.commit[:12]})")
        ctx.last_landed = ctx.last_landed_commit = result.commit
        if ctx.tag_names is not None:
            ctx.tag_names.add(journal["tag_name"])
        ws.remember_manifest(result.commit, Manifest(cand["manifest"], ws.manifest_path))
