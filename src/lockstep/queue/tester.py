"""Testing one claimed item (spec/queue.md §2.2, §3.2, §3.3): build its candidate on the remote
head, check that the bump is still needed and the repo sound, run every configuration, record
the verdict.

The heartbeat keeps the item's lease alive meanwhile; a lost lease drops the results.
"""

from __future__ import annotations

import threading

from lockstep import git
from lockstep.errors import LockstepError
from lockstep.manifest import Manifest
from lockstep.queue import candidate as candidate_mod
from lockstep.queue import freshness
from lockstep.queue.lease import LeaseKeeper, LeaseLost
from lockstep.queue.repo_health import RepoHealth
from lockstep.queue.runner import StageRunner
from lockstep.queue.store import Item
from lockstep.queue.verdicts import Verdicts
from lockstep.queue.worker_context import WorkerContext


class ItemTester:
    """Takes an item this worker claimed from `testing` to passed, rejected, skipped or
    requeued."""

    def __init__(self, ctx: WorkerContext, lease: LeaseKeeper, runner: StageRunner,
                 verdicts: Verdicts, health: RepoHealth) -> None:
        self.ctx = ctx
        self.lease = lease
        self.runner = runner
        self.verdicts = verdicts
        self.health = health

    def test(self, item: Item, token: int) -> None:
        """Test the item under its lease; if a repo cannot be read, requeue it and re-raise."""
        try:
            with self.lease.heartbeat(item.seq, token) as lost:
                self._test_item(item, token, lost)
        except LeaseLost:
            self.ctx.log(f"{item.id}: lease lost (cancelled or taken over); results dropped")
        except LockstepError:
            # The integration remote or a component repo could not be read: not the item's
            # fault. It goes back to the queue untouched and the worker stops with the error.
            with self.ctx.store.tx() as c:
                self.verdicts.requeue_untouched(c, item, token)
            raise

    def _test_item(self, item: Item, token: int, lost: threading.Event) -> None:
        """Build the candidate and run its stages, configuration by configuration."""
        ctx = self.ctx
        ws = ctx.ws
        base = ws.remote_head()
        if not self.health.history_intact(item, token, base):
            return
        if base not in ctx.config_ok:  # else the item goes back and this worker stops
            ws.check_config_matches(base)
            ctx.config_ok.add(base)
        base_manifest = ws.manifest_at(base)
        plan = candidate_mod.plan(
            component=item.component,
            version=item.version,
            sha=item.sha,
            digest=item.digest,
            targets=item.configurations,
            base=base_manifest,
            superseding_item=lambda cfg, pin: freshness.superseding(ctx, item, base, cfg, pin),
        )
        if not plan.bumps:
            self.verdicts.finish_without_bumps(item, token, plan)
            return
        if not ws.components.reachable(item.component, item.sha):
            self.verdicts.reject_gone_commit(item, token)
            return
        text = base_manifest.apply([(b.configuration, item.component, b.new) for b in plan.bumps])
        index = ws.state_dir / f"index.{item.id}"
        tree = git.tree_with_file(ws.root, base, ws.manifest_path, text.encode(), index)
        configurations = [b.configuration for b in plan.bumps]
        cand = {
            "base": base,
            "tree": tree,
            "items": [item.id],
            "configurations": configurations,
            "old": {b.configuration: b.old.version if b.old else None for b in plan.bumps},
            "manifest": text,
        }
        candidate_manifest = Manifest(text, ws.manifest_path)
        fault = self.health.fault(candidate_manifest, configurations)
        if fault is not None:
            self.health.pause(item, token, fault)
            return
        with ctx.store.tx() as c:
            self.lease.check_token(c, item.seq, token)
            ctx.store.set_item(c, item.seq, candidate=cand)
        for configuration in configurations:
            failure = self.runner.test_configuration(item, token, lost, cand, candidate_manifest,
                                                     configuration)
            if failure is not None:
                self.verdicts.reject_failed_run(item, token, cand, configuration, failure.stage,
                                                failure.result, failure.tries)
                return
        self.verdicts.passed(item, token)
