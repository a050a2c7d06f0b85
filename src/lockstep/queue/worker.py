"""The queue worker: the imperative shell around the pure scheduler.

Each step reads a snapshot in one transaction, asks `scheduler.decide` what to do, claims the
work with a compare-and-set, then does the slow part (stages, git) outside any transaction while
a heartbeat thread keeps the lease alive.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path
from typing import Any

import psutil

from lockstep import faults, git
from lockstep.config import (
    CONFIG_FILE,
    Stage,
    check_stage_coverage,
    committed_secrets,
    uncovered_configurations,
    unset_secrets,
)
from lockstep.distribution import build as dist_build
from lockstep.distribution import journal as dist_journal
from lockstep.errors import ConfigError, GitError, LockstepError
from lockstep.git import redact
from lockstep.manifest import Manifest, Pin
from lockstep.queue import candidate as candidate_mod
from lockstep.queue import landing, notify, scheduler
from lockstep.queue.model import Reason, RejectKind, State, item_id, parse_item_id
from lockstep.queue.store import HOST, Item, Store
from lockstep.stages import (
    Outcome,
    RunResult,
    environment_for,
    kill_orphaned_group,
    prepare_workspace,
    run_command,
    run_upgrade,
    tail,
    unrunnable_stages,
)
from lockstep.workspace import Workspace, checkout_drift, drift_hint


class RunMode(StrEnum):
    """How long `queue run` works."""

    ONCE = "once"
    UNTIL_EMPTY = "until-empty"
    FOREVER = "forever"


@dataclass
class WorkerReport:
    """What one `queue run` did, for the CLI summary."""

    landed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # retested: their worker died testing
    repaired: list[str] = field(default_factory=list)  # landings a dead worker left, finished
    requeued: list[str] = field(default_factory=list)
    paused: str | None = None  # why the queue was paused when this run stopped
    waiting: int = 0  # items still waiting when it stopped

    def summary(self) -> str:
        """One line saying what happened, recovery included."""
        parts = [f"landed {len(self.landed)}"]
        if self.repaired:
            parts[0] += f" ({len(self.repaired)} of them half-done landings finished by recovery)"
        parts += [f"rejected {len(self.rejected)}", f"skipped {len(self.skipped)}"]
        if self.recovered:
            parts.append(f"retested {len(self.recovered)} whose worker died")
        if self.requeued:
            parts.append(f"requeued {len(self.requeued)}")
        line = ", ".join(parts)
        if self.paused is not None:
            line += (f"; the queue is paused ({self.paused}) with {self.waiting} item(s) "
                     "waiting: see `lockstep queue status`")
        return line


class LeaseLost(Exception):
    """The item was cancelled or taken over while this worker held it."""


class Worker:
    """One `lockstep queue run` process."""

    def __init__(self, ws: Workspace, store: Store,
                 log: Callable[[str], None] | None = None,
                 warn: Callable[[str], None] | None = None) -> None:
        self.ws = ws
        self.store = store
        self.settings = ws.config.queue
        self.log = log or (lambda _msg: None)
        self.warn = warn or self.log  # problems the user must see even with --quiet
        self.report = WorkerReport()
        self.idle_reason: str | None = None
        self.last_item: int | None = None
        self.last_landed: str | None = None  # not yet synced to the checkout
        self.last_landed_commit: str | None = None
        self._tag_names: set[str] | None = None  # known tag names, refreshed on any surprise
        self._config_ok: set[str] = set()  # integration commits holding this worker's config
        with store.tx() as c:
            store.forget_dead_workers(c)
            self.id = store.register_worker(c)
        dist_journal.ensure_tables(store)
        self._prune_run_dirs()

    def _prune_run_dirs(self, keep: int = 20) -> None:
        """Keep the stage workspaces of the last `keep` finished items (failed runs' are kept
        for inspection); older ones would only fill the disk."""
        if not self.ws.runs_dir.is_dir():
            return
        with self.store.read() as c:  # index reads only, whatever the length of the history
            newest = self.store.finished_ids(c, limit=keep) if keep else []
            live = {i.id for i in self.store.items(c)}
            last = self.store.last_seq(c)
        if len(newest) < keep:
            return  # no more finished items than are kept
        # Items below the oldest kept one (every item, with keep=0) existed when the snapshot
        # was read, so one that was not live then is finished (or gone), never a new one.
        below = int(newest[-1][1:]) if newest else last + 1
        for old in self.ws.runs_dir.iterdir():
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
            self._loop(mode, poll)
        finally:
            stop.set()
            sender.join()
        self.deliver()  # what the last step queued goes out before `queue run` returns
        with self.store.read() as c:
            q = self.store.queue(c)
            waiting = len(self.store.items(c))
        if q.paused and waiting:
            self.report.paused, self.report.waiting = q.paused_reason or "paused", waiting
        return self.report

    def preflight(self) -> None:
        """Refuse to start on a configuration that would let a bump land untested (exit 2),
        and warn about notifiers that cannot sign what they send."""
        unrunnable = unrunnable_stages(self.ws.config)
        if unrunnable:
            raise ConfigError(f"{CONFIG_FILE}: {unrunnable[0]}",
                              "fix the stage's command (or PATH), so that bumps are not "
                              "rejected for a command that cannot start")
        head = self.ws.remote_head()
        self.ws.check_config_matches(head)
        manifest = self.ws.manifest_at(head)
        check_stage_coverage(self.ws.config, manifest.configurations,
                             f"{CONFIG_FILE} (manifest on {self.ws.remote}/{self.ws.branch})")
        for problem in [*unset_secrets(self.ws.config), *committed_secrets(self.ws.config)]:
            self.warn(f"warning: {problem}")

    def _deliver_until(self, stop: threading.Event) -> None:
        """Deliver notifications beside the work, so a slow receiver never holds up the queue."""
        while not stop.wait(0.5):
            self.deliver()

    def _loop(self, mode: RunMode, poll: float) -> None:
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
        if self.last_landed is not None:
            if not landing.fast_forward_checkout(self.ws, self.last_landed):
                drift = checkout_drift(self.ws) or "the checkout cannot be fast-forwarded"
                self.warn(f"warning: {drift}; it was left as it is, so files in it show older "
                          f"pins than {self.ws.remote}/{self.ws.branch} ({drift_hint(self.ws)})")
            self.last_landed = None

    def _front_passed(self) -> bool:
        """Whether the item just tested passed and waits to land (--once lands it too)."""
        if self.last_item is None:
            return False
        with self.store.read() as c:
            return self.store.item(c, self.last_item).state == State.PASSED

    def deliver(self) -> None:
        """Send due notifier deliveries (never raises: a notifier must not stop the queue)."""
        try:
            notify.deliver_due(self.store, self.ws.config, self.settings.notify_attempts,
                               cwd=self.ws.root)
        except Exception as exc:  # a broken notifier or a busy store: the next round retries
            self.log(f"notifier delivery failed: {redact(str(exc))}")

    def step(self) -> bool:
        """One scheduling round; False when there was nothing to do now."""
        with self.store.tx() as c:
            plan = scheduler.decide(self.store.view(c, self.settings.max_recoveries))
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

    def distribute(self) -> None:
        """Build the distributions of releases landed so far, oldest first (after landing,
        never before); interrupted builds and publishes are completed too."""
        if dist_build.configured(self.ws):
            dist_build.complete_unfinished(self.ws, self.store, self.log)

    def _claim(self, c: Any, decision: scheduler.Decision) -> Callable[[], None] | None:
        """Take the item for this worker inside the scheduling transaction."""
        if isinstance(decision, scheduler.PauseQueue):
            self.store.update_queue(c, paused=1, paused_reason=decision.reason, draining=0)
            self.store.add_event(c, None, "paused", {"reason": decision.reason})
            self.log(f"queue paused: {decision.reason}")
            return None
        seq = int(decision.item[1:])
        self.last_item = seq
        item = self.store.item(c, seq)
        token = self.store.next_lease_token(c)
        lease: dict[str, Any] = dict(holder=self.id, lease_token=token,
                                     lease_expires_at=time.time() + self.settings.lease_ttl)
        if isinstance(decision, scheduler.Recover) and decision.state == State.TESTING:
            self._kill_orphans(c, seq)
            if decision.give_up:
                reason = Reason(RejectKind.WORKER_LOST, "the worker testing it died too often",
                                attempt=item.attempt)
                self._reject(c, item, reason, {State.TESTING})
                return None
            self.store.transition(c, seq, {State.TESTING}, State.QUEUED, holder=None,
                                  lease_token=None, lease_expires_at=None,
                                  recoveries=item.recoveries + 1)
            self.report.recovered.append(item.id)
            self.log(f"{item.id}: its worker died while testing; it is retested from stage 1")
            return None
        if isinstance(decision, scheduler.Recover):
            if not self._take_landing_lock(c):
                return None
            self.store.set_item(c, seq, **lease)
            return lambda: self._landing_guarded(seq, token, self._finish_landing)
        if isinstance(decision, scheduler.Test):
            if not self.store.transition(c, seq, {State.QUEUED}, State.TESTING,
                                         attempt=item.attempt + 1, **lease):
                return None
            claimed = dataclasses.replace(item, state=State.TESTING, attempt=item.attempt + 1,
                                          lease_token=token)
            return lambda: self._test(claimed, token)
        if not self._take_landing_lock(c):
            return None
        self.store.set_item(c, seq, **lease)
        return lambda: self._landing_guarded(seq, token, self._land)

    # --- testing ---------------------------------------------------------------------------

    def _test(self, item: Item, token: int) -> None:
        seq = item.seq
        try:
            with self._heartbeat(seq, token) as lost:
                self._test_item(item, token, lost)
        except LeaseLost:
            self.log(f"{item.id}: lease lost (cancelled or taken over); results dropped")
        except LockstepError:
            # The integration remote or a component repo could not be read: not the item's
            # fault. It goes back to the queue untouched and the worker stops with the error.
            with self.store.tx() as c:
                self._requeue_untouched(c, item, token)
            raise

    def _requeue_untouched(self, c: Any, item: Item, token: int) -> bool:
        """Put an item this worker tests back in the queue as if it had not started (no
        attempt counted); nothing if its lease moved on (cancelled, or taken over)."""
        return self.store.transition(c, item.seq, {State.TESTING}, State.QUEUED,
                                     expect_token=token, holder=None, lease_token=None,
                                     lease_expires_at=None, attempt=item.attempt - 1)

    def _test_item(self, item: Item, token: int, lost: threading.Event) -> None:
        base = self.ws.remote_head()
        if not self._history_intact(item, token, base):
            return
        if base not in self._config_ok:  # else the item goes back and this worker stops
            self.ws.check_config_matches(base)
            self._config_ok.add(base)
        base_manifest = self.ws.manifest_at(base)
        plan = candidate_mod.plan(
            component=item.component,
            version=item.version,
            sha=item.sha,
            digest=item.digest,
            targets=item.configurations,
            base=base_manifest,
            superseding_item=lambda cfg, pin: self._superseding(item, base, cfg, pin),
        )
        if not plan.bumps:
            self._finish_without_bumps(item, token, plan)
            return
        if not self.ws.components.reachable(item.component, item.sha):
            self._reject_gone_commit(item, token)
            return
        text = base_manifest.apply([(b.configuration, item.component, b.new) for b in plan.bumps])
        index = self.ws.state_dir / f"index.{item.id}"
        tree = git.tree_with_file(self.ws.root, base, self.ws.manifest_path, text.encode(), index)
        configurations = [b.configuration for b in plan.bumps]
        cand = {
            "base": base,
            "tree": tree,
            "items": [item.id],
            "configurations": configurations,
            "old": {b.configuration: b.old.version if b.old else None for b in plan.bumps},
            "manifest": text,
        }
        candidate_manifest = Manifest(text, self.ws.manifest_path)
        fault = self._repo_fault(candidate_manifest, configurations)
        if fault is not None:
            self._pause_for_repo_fault(item, token, *fault)
            return
        with self.store.tx() as c:
            self._check_token(c, item.seq, token)
            self.store.set_item(c, item.seq, candidate=cand)
        for configuration in cand["configurations"]:
            for stage in self.ws.config.stages:
                if stage.configurations is not None and configuration not in stage.configurations:
                    continue
                result, tries = self._run_stage(item, token, lost, cand, candidate_manifest,
                                                configuration, stage)
                if result.outcome == Outcome.PASSED:
                    continue
                self._reject_run(item, token, cand, configuration, stage, result, tries)
                return
        with self.store.tx() as c:
            self._check_token(c, item.seq, token)
            self.store.transition(c, item.seq, {State.TESTING}, State.PASSED)
            self.store.update_queue(c, infra_streak=0)
        self.log(f"{item.id}: every stage passed")

    def _history_intact(self, item: Item, token: int, head: str) -> bool:
        """Pause the queue (`history-rewritten`) if the remote lost lockstep's last landing."""
        if self.last_landed_commit is None:
            with self.store.read() as c:
                self.last_landed_commit = self.store.last_landed_commit(c)
        last = self.last_landed_commit
        if last is None or last == head or not git.has_object(self.ws.root, last):
            return True
        if git.is_ancestor(self.ws.root, last, head):
            return True
        with self.store.read() as c:
            if self.store.history_accepted(c, last):
                return True
        self._pause_for_repo_fault(
            item, token, "history-rewritten", {"lost": last, "head": head},
            f"{self.ws.branch} on {self.ws.remote} no longer contains lockstep's last landing "
            f"{last[:12]} (head is now {head[:12]}); restore it on the remote and run "
            "`lockstep queue resume`, or accept the rewritten history with "
            "`lockstep queue resume --accept-history`")
        return False

    def _pause_for_repo_fault(self, item: Item, token: int, reason: str,
                              detail: dict[str, Any], message: str) -> None:
        """A fault of the integration repo, not of the bump: the item goes back to the queue
        untouched (no attempt counted, nobody notified) and the queue pauses until fixed."""
        with self.store.tx() as c:
            self._check_token(c, item.seq, token)
            self._requeue_untouched(c, item, token)
            self.store.update_queue(c, paused=1, paused_reason=reason)
            self.store.add_event(c, None, reason, {**detail, "message": message})
            self.store.add_event(c, item.seq, "requeued", {"reason": reason})
        self.report.requeued.append(item.id)
        self.log(f"queue paused ({reason}): {message}")

    def _repo_fault(self, manifest: Manifest, configurations: list[str]) -> tuple[str, dict[
            str, Any], str] | None:
        """What is wrong with the integration repo for these configurations, if anything: a
        configuration no stage tests, or a pin whose commit its component does not have."""
        uncovered = uncovered_configurations(self.ws.config, configurations)
        if uncovered:
            return ("config-invalid", {"configurations": uncovered},
                    f"no stage tests configuration(s) {', '.join(uncovered)} of the manifest; "
                    "add a stage for them in lockstep.toml (or remove its `configurations` "
                    "restriction), then `lockstep queue resume`")
        for configuration in configurations:
            for name, pin in manifest.pins(configuration).items():
                if not self.ws.components.reachable(name, pin.sha):
                    return ("manifest-invalid",
                            {"configuration": configuration, "component": name,
                             "sha": pin.sha, "version": pin.version},
                            f"the manifest pins {name} {pin.version} at {pin.sha} in "
                            f"configuration {configuration}, a commit no tag or branch of "
                            f"that component contains (any more); fix the pin in "
                            f"{self.ws.manifest_path} on {self.ws.branch}, then "
                            "`lockstep queue resume`")
        return None

    def _superseding(self, item: Item, head: str, configuration: str, pin: Pin) -> str | None:
        """Who moved `pin` after the item's submission to a descendant of the item's commit: the
        landed item's id, or the commit that pinned it by hand; None when the bump is tested
        (the pin predates the submission, so a downgrade is deliberate, or histories diverged)."""
        since = item.submitted_base or (item.candidate or {}).get("base")
        if since is None:
            return None
        try:
            at_submit = self.ws.manifest_at(since)  # cached; fails if the commit is not here
        except ConfigError:
            return None  # a rewritten history this clone never fetched: test the bump
        before = (at_submit.pin(configuration, item.component)
                  if configuration in at_submit.configurations else None)
        if before is not None and before.sha == pin.sha:
            return None
        if not git.is_ancestor(self.ws.root, since, head):
            return None  # history was rewritten since the submit: test the bump
        repo = self.ws.components.path(item.component)
        try:
            descends = git.is_ancestor(repo, item.sha, pin.sha)
        except GitError:  # an object is missing from the mirror: fetch, then ask again
            self.ws.components.ensure(item.component, pin.sha)
            self.ws.components.ensure(item.component, item.sha)
            descends = git.is_ancestor(repo, item.sha, pin.sha)
        if not descends:
            return None
        commit = self._commit_that_pinned(since, head, configuration, item.component, pin.sha)
        if commit is None:
            return None
        with self.store.read() as c:
            for trailer in git.trailers(self.ws.root, commit, "Lockstep-Item"):
                try:
                    other = self.store.item(c, parse_item_id(trailer))
                except LockstepError:
                    continue
                if other.component == item.component and other.sha == pin.sha:
                    return other.id
        return commit

    def _commit_that_pinned(self, since: str, head: str, configuration: str, component: str,
                            sha: str) -> str | None:
        """The first-parent commit in since..head whose manifest change pinned component at
        sha in configuration (the last such change, if it happened more than once)."""
        found = None
        previous = self.ws.manifest_at(since)
        for commit in git.first_parent_range(self.ws.root, since, head):
            manifest = self.ws.manifest_at(commit)
            now = (manifest.pin(configuration, component)
                   if configuration in manifest.configurations else None)
            was = (previous.pin(configuration, component)
                   if configuration in previous.configurations else None)
            if now is not None and now.sha == sha and (was is None or was.sha != sha):
                found = commit
            previous = manifest
        return found

    def _reject_gone_commit(self, item: Item, token: int) -> None:
        """The bump's own commit is on no tag or branch of its component any more (deleted or
        force-pushed away since submit): the bump cannot land, and its owners should know."""
        reason = Reason(RejectKind.COMMIT_GONE,
                        f"{item.component} {item.version}: commit {item.sha} is no longer on any "
                        "tag or branch of the component's repository (removed after submit)",
                        attempt=item.attempt)
        with self.store.tx() as c:
            self._reject(c, item, reason, {State.TESTING}, token=token)

    def _finish_without_bumps(self, item: Item, token: int,
                              plan: candidate_mod.CandidatePlan) -> None:
        with self.store.tx() as c:
            self._check_token(c, item.seq, token)
            if plan.skip_reason is None:
                missing = ", ".join(plan.not_applicable)
                reason = Reason(RejectKind.NOT_APPLICABLE,
                                f"configuration(s) {missing} left the manifest",
                                attempt=item.attempt)
                self._reject(c, item, reason, {State.TESTING}, token=token)
                return
            outcome = {"reason": plan.skip_reason, "by": plan.superseded_by}
            self.store.transition(c, item.seq, {State.TESTING}, State.SKIPPED, outcome=outcome,
                                  holder=None, lease_token=None, lease_expires_at=None)
            notify.enqueue(self.store, c, self.ws.config, "skipped", item.seq,
                           {"item": item.id, "skipped": outcome})
        self.report.skipped.append(item.id)
        self.log(f"{item.id}: skipped ({plan.skip_reason})")

    def _run_stage(self, item: Item, token: int, lost: threading.Event, cand: dict[str, Any],
                   manifest: Manifest, configuration: str,
                   stage: Stage) -> tuple[RunResult, int]:
        """Run one stage for one configuration, retrying infrastructure failures."""
        result: RunResult | None = None
        for try_no in range(1, stage.retries + 2):
            log = (self.ws.logs_dir / item.id / f"a{item.attempt}" / configuration
                   / f"{stage.name}.{try_no}.log")
            with self.store.tx() as c:
                self._check_token(c, item.seq, token)
                run_id = self.store.add_run(
                    c, item_seq=item.seq, attempt=item.attempt, configuration=configuration,
                    stage=stage.name, try_no=try_no, state="running", started_at=time.time(),
                    worker=self.id, log=str(log.relative_to(self.ws.state_dir)))
            self.log(f"{item.id}: {configuration}/{stage.name} try {try_no}")
            result = self._run_once(item, cand, manifest, configuration, stage, try_no, log, lost,
                                    functools.partial(self._record_pid, run_id))
            with self.store.tx() as c:
                self.store.finish_run(c, run_id, result.outcome.value, result.exit_code)
                for kind, detail in result.events:
                    self.store.add_event(c, item.seq, kind, detail)
            if result.outcome == Outcome.ABORTED or lost.is_set():
                raise LeaseLost
            if result.outcome != Outcome.INFRA or try_no > stage.retries:
                return result, try_no
            time.sleep(self.settings.retry_backoff * 2 ** (try_no - 1))
        assert result is not None
        return result, stage.retries + 1

    def _run_once(self, item: Item, cand: dict[str, Any], manifest: Manifest,
                  configuration: str, stage: Stage, try_no: int, log: Path,
                  lost: threading.Event, on_start: Callable[[int], None]) -> RunResult:
        workdir = self.ws.runs_dir / item.id / f"{configuration}-{stage.name}"
        try:
            components = prepare_workspace(self.ws, cand["tree"], manifest.pins(configuration),
                                           workdir)
        except (LockstepError, OSError) as exc:
            log.parent.mkdir(parents=True, exist_ok=True)
            with open(log, "a", encoding="utf-8") as fh:
                fh.write(f"lockstep: cannot prepare the workspace: {exc}\n")
            return RunResult(Outcome.INFRA, None, log)
        env = environment_for(self.ws.config, stage, {
            "LOCKSTEP_MANIFEST": str(workdir / self.ws.manifest_path),
            "LOCKSTEP_CONFIG": configuration,
            "LOCKSTEP_ITEM": item.id,
            "LOCKSTEP_ITEMS": " ".join(cand["items"]),
            "LOCKSTEP_CANDIDATE": cand["tree"],
            "LOCKSTEP_BASE": cand["base"],
            "LOCKSTEP_STAGE": stage.name,
            "LOCKSTEP_ATTEMPT": str(item.attempt),
            "LOCKSTEP_TRY": str(try_no),
            "LOCKSTEP_WORKSPACE": str(workdir),
            "LOCKSTEP_COMPONENTS_DIR": str(components),
            "LOCKSTEP_COMPONENT": item.component,
            "LOCKSTEP_VERSION": item.version,
        })
        if stage.command is None:  # kind = "upgrade"
            result = run_upgrade(self.ws, stage, cwd=workdir, env=env, log=log,
                                 timeout=stage.timeout, kill_grace=self.settings.kill_grace,
                                 should_abort=lost.is_set, on_start=on_start)
        else:
            result = run_command(
                stage.command, cwd=workdir, env=env, log=log, timeout=stage.timeout,
                infra_exit_code=stage.infra_exit_code, kill_grace=self.settings.kill_grace,
                should_abort=lost.is_set, on_start=on_start,
            )
        if result.outcome == Outcome.PASSED:
            shutil.rmtree(workdir, ignore_errors=True)
            with contextlib.suppress(OSError):  # the item's directory, once no run is kept
                workdir.parent.rmdir()
        return result

    def _record_pid(self, run_id: int, pid: int) -> None:
        """Remember the stage's process so a later worker can kill it if this one dies."""
        try:
            started = psutil.Process(pid).create_time()
        except psutil.NoSuchProcess:
            return
        with self.store.tx() as c:
            self.store.set_run(c, run_id, host=HOST, pid=pid, pid_started=started)

    def _kill_orphans(self, c: Any, seq: int) -> None:
        """Stop the stage processes a dead worker left running, and mark its runs lost."""
        for run in self.store.runs(c, seq):
            if run["state"] != "running":
                continue
            if run["host"] == HOST and run["pid"]:
                kill_orphaned_group(run["pid"], run["pid_started"])
            self.store.finish_run(c, run["id"], "lost", None)

    def _reject_run(self, item: Item, token: int, cand: dict[str, Any], configuration: str,
                    stage: Stage, result: RunResult, tries: int) -> None:
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
            attempt=item.attempt, log_tail=tail(result.log, self.settings.log_tail_lines),
            candidate=cand["tree"], base=cand["base"], items=cand["items"],
        )
        with self.store.tx() as c:
            self._check_token(c, item.seq, token)
            self._reject(c, item, reason, {State.TESTING}, token=token)
            if kind == RejectKind.INFRASTRUCTURE:
                streak = self.store.queue(c).infra_streak + 1
                values: dict[str, Any] = {"infra_streak": streak}
                if streak >= self.settings.infra_pause_after:
                    values.update(paused=1, paused_reason="infrastructure")
                    self.log("queue paused: too many infrastructure failures in a row")
                self.store.update_queue(c, **values)
            else:
                self.store.update_queue(c, infra_streak=0)

    def _reject(self, c: Any, item: Item, reason: Reason, expect: set[State],
                token: int | None = None) -> None:
        if token is not None:
            self._check_token(c, item.seq, token)
        if not self.store.transition(c, item.seq, expect, State.REJECTED,
                                     outcome=reason.to_dict(), holder=None, lease_token=None,
                                     lease_expires_at=None):
            return
        notify.enqueue(self.store, c, self.ws.config, "rejected", item.seq, {
            "item": item.id, "component": item.component, "version": item.version,
            "sha": item.sha, "owners": _owners(self.ws, item.component),
            "rejection": reason.to_dict(),
        })
        self.report.rejected.append(item.id)
        self.log(f"{item.id}: rejected: {reason.message}")

    # --- landing ---------------------------------------------------------------------------

    def _take_landing_lock(self, c: Any) -> bool:
        q = self.store.queue(c)
        now = time.time()
        if q.landing_holder and q.landing_holder != self.id and (
            q.landing_expires_at or 0) > now and self.store.worker_alive(
                c, q.landing_holder, q.landing_expires_at, now):
            return False
        self.store.update_queue(c, landing_holder=self.id, landing_epoch=q.landing_epoch + 1,
                                landing_expires_at=now + self.settings.lease_ttl)
        self._epoch = q.landing_epoch + 1
        return True

    def _release_landing_lock(self, c: Any) -> None:
        self.store.update_queue(c, landing_holder=None, landing_expires_at=None)

    def _check_epoch(self, c: Any) -> None:
        """Fencing: stop unless this worker still holds the landing lock it took."""
        q = self.store.queue(c)
        if q.landing_holder != self.id or q.landing_epoch != self._epoch:
            raise LeaseLost

    def _landing_guarded(self, seq: int, token: int,
                         action: Callable[[int, int], None]) -> None:
        """Run a landing step with the lease and landing lock kept alive; a fenced worker
        stops touching git and leaves the landing to the lock's new holder."""
        try:
            with self._heartbeat(seq, token, landing=True):
                action(seq, token)
        except LeaseLost:
            self.log(f"{item_id(seq)}: another worker took over the landing; leaving it to it")

    def _land(self, seq: int, token: int) -> None:
        # No pre-check of the remote head: the push is conditional on the base (lease), and a
        # refused push is reconciled (the base moved → the item is retested on the new base).
        with self.store.read() as c:
            item = self.store.item(c, seq)
        cand = item.candidate or {}
        now = datetime.now(UTC)
        name = landing.next_tag_name(
            self.ws.config.integration.tag_format,
            self._known_tag_names(), now)
        with self.store.tx() as c:
            self._check_token(c, seq, token)
            self._check_epoch(c)
            journal_id = self.store.add_landing(
                c, item_seq=seq, epoch=self._epoch, state="open", base=cand["base"],
                tree=cand["tree"], commit_message=landing.commit_message(item, cand, 0),
                tag_name=name, tag_message="", who_name=self.ws.config.identity.name,
                who_email=self.ws.config.identity.email, timestamp=int(now.timestamp()))
            self.store.update_landing(
                c, journal_id, commit_message=landing.commit_message(item, cand, journal_id),
                tag_message=landing.tag_message(name, item, cand))
            self.store.transition(c, seq, {State.PASSED}, State.LANDING)
        faults.crashpoint("before-commit")
        self._finish_landing(seq, token, fresh=True)

    def _known_tag_names(self) -> set[str]:
        """Tag names on the remote and locally, read once per worker and kept up to date with
        its own landings; a name someone else took meanwhile makes the push fail, and the
        reconcile that follows picks the next free one and forgets this cache."""
        if self._tag_names is None:
            self._tag_names = set(landing.remote_tags(self.ws)) | _local_tags(self.ws)
        return self._tag_names

    def _finish_landing(self, seq: int, token: int, fresh: bool = False) -> None:
        """Reconcile the item's open journal row until it is landed or undone."""
        if not fresh:
            faults.crashpoint("recovery-start")
        for attempt in range(5):
            with self.store.read() as c:
                self._check_epoch(c)
                item = self.store.item(c, seq)
                journal = self.store.open_landing(c, seq)
            cand = item.candidate or {}
            if journal is None:
                with self.store.tx() as c:
                    self.store.transition(c, seq, {State.LANDING}, State.QUEUED, holder=None,
                                          lease_token=None, lease_expires_at=None)
                    self._release_landing_lock(c)
                return
            result = landing.reconcile(self.ws, journal, cand["manifest"],
                                       fresh=fresh and attempt == 0)
            if not (fresh and attempt == 0 and result.result == landing.Result.LANDED):
                self._tag_names = None
            if result.renamed_tag:
                with self.store.tx() as c:
                    self.store.update_landing(c, journal["id"], tag_name=result.renamed_tag,
                                              tag_message=landing.tag_message(
                                                  result.renamed_tag, item, cand))
                continue
            with self.store.tx() as c:
                self._check_epoch(c)
                if result.result == landing.Result.LANDED:
                    outcome = {"commit": result.commit, "tag": result.tag,
                               "tag_object": result.tag_object, "landing": journal["id"]}
                    self.store.update_landing(c, journal["id"], state="landed",
                                              commit_sha=result.commit, tag_sha=result.tag_object)
                    self.store.transition(c, seq, {State.LANDING}, State.LANDED, outcome=outcome,
                                          holder=None, lease_token=None, lease_expires_at=None)
                    notify.enqueue(self.store, c, self.ws.config, "landed", seq,
                                   {"item": item.id, "landed": outcome})
                    if dist_build.configured(self.ws):  # built once the landing is recorded
                        dist_journal.add_pending(c, journal["tag_name"], journal["id"], seq,
                                                 str(result.commit))
                else:
                    self.store.update_landing(c, journal["id"], state="undone")
                    self.store.transition(c, seq, {State.LANDING}, State.QUEUED, holder=None,
                                          lease_token=None, lease_expires_at=None)
                self._release_landing_lock(c)
            if result.result == landing.Result.LANDED:
                assert result.commit is not None
                self.report.landed.append(item.id)
                if not fresh:
                    self.report.repaired.append(item.id)
                self.log(f"{item.id}: landed as {result.tag} ({result.commit[:12]})")
                self.last_landed = self.last_landed_commit = result.commit
                if cand["base"] in self._config_ok:  # a landing changes only the manifest
                    self._config_ok.add(result.commit)
                if self._tag_names is not None:
                    self._tag_names.add(journal["tag_name"])
                self.ws.remember_manifest(result.commit,
                                          Manifest(cand["manifest"], self.ws.manifest_path))
            else:
                self.report.requeued.append(item.id)
                self.log(f"{item.id}: {self.ws.branch} on {self.ws.remote} moved away from "
                         f"{cand['base'][:12]}, the commit {item.id} was tested on; it goes back "
                         "to the queue and is retested on the new head")
            return
        raise LockstepError(f"{item_id(seq)}: could not find a free tag name after 5 tries")

    # --- leases ----------------------------------------------------------------------------

    def _check_token(self, c: Any, seq: int, token: int) -> None:
        if self.store.item(c, seq).lease_token != token:
            raise LeaseLost

    @contextmanager
    def _heartbeat(self, seq: int, token: int,
                   landing: bool = False) -> Iterator[threading.Event]:
        """Renew the item's lease every lease_ttl/4 and check it every second; set the event
        when it is lost (cancelled, aborted by `pause --abort-running`, or taken over)."""
        lost = threading.Event()
        done = threading.Event()
        check_every = min(1.0, self.settings.lease_ttl / 4)

        def beat() -> None:
            renewed = time.monotonic()
            while not done.wait(check_every):
                renew = time.monotonic() - renewed >= self.settings.lease_ttl / 4
                try:
                    with self.store.tx() if renew else self.store.read() as c:
                        if renew:
                            ok = self.store.renew_lease(c, seq, token, self.settings.lease_ttl)
                            if landing:
                                ok = ok and self.store.renew_landing_lock(
                                    c, self.id, self._epoch, self.settings.lease_ttl)
                        else:
                            ok = self.store.holds_lease(c, seq, token)
                except Exception:  # noqa: S112 - a busy store is retried next beat
                    continue
                if renew:
                    renewed = time.monotonic()
                if not ok:
                    lost.set()
                    return

        thread = threading.Thread(target=beat, name=f"heartbeat-{seq}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            done.set()
            thread.join()


def _owners(ws: Workspace, component: str) -> list[str]:
    comp = ws.config.components.get(component)
    return list(comp.owners) if comp else []


def _local_tags(ws: Workspace) -> set[str]:
    text = git.out(["tag", "--list"], ws.root)
    return set(text.split())
