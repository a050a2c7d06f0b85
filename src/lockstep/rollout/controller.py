"""The rollout executor (spec/rollouts.md §5.1): read the stored Environment, observe its
workloads, ask the pure reconciler for a plan and run the plan's steps through a driver.

One pass runs the steps in order; each WriteStatus is durably acknowledged before the next step;
a conflict ends the pass with an immediate requeue; the first failing step ends the pass (writing
its failure status) and the object is retried with backoff from 1 s to 300 s. `run()` loops over
every environment, waking when the store changes, a requeue falls due, a waiting rollout's
workloads change, or a rollout reaches its timeout.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from sqlalchemy import select

from lockstep import faults
from lockstep.errors import LockstepError, NotFoundError
from lockstep.rollout.convert import ConversionError, up
from lockstep.rollout.driver import Driver, LocalDriver
from lockstep.rollout.plan import (
    Apply,
    ApplyStateless,
    Ending,
    Fail,
    Observed,
    Promote,
    Requeue,
    Route,
    Settings,
    SkipCatchup,
    Teardown,
    WriteSpec,
    WriteStatus,
)
from lockstep.rollout.reconcile import reconcile, timeout_deadline
from lockstep.rollout.resource import V1ALPHA1, V1ALPHA2
from lockstep.rollout.store import ConflictError, EnvironmentStore, environments

log = logging.getLogger("lockstep.rollout.controller")

BACKOFF_MIN, BACKOFF_MAX = 1.0, 300.0
STORE_POLL = 0.2  # seconds between checks of the store's resourceVersions
WORKLOAD_POLL = 0.1  # seconds between observations of a waiting rollout's workloads
_NEVER = float("inf")


def store_path(workspace: Path) -> Path:
    """Where a workspace keeps its Environments."""
    return workspace / ".lockstep" / "rollouts.db"


@dataclasses.dataclass
class _Schedule:
    """When one environment's next pass is due and what its last pass saw."""

    due: float = 0.0
    failures: int = 0
    seen_rv: int | None = None  # resourceVersion after our own writes
    watch: Observed | None = None  # observation to compare against while a requeue waits
    next_watch: float = _NEVER


class Controller:
    """Runs reconciliation passes for the Environments of one store through one driver."""

    def __init__(self, store: EnvironmentStore, driver: Driver, settings: Settings | None = None,
                 *, clock: Callable[[], datetime] = lambda: datetime.now(UTC),
                 rng: random.Random | None = None) -> None:
        self.store = store
        self.driver = driver
        self.settings = settings or Settings()
        self.clock = clock
        self.rng = rng or random.Random()
        self._schedules: dict[str, _Schedule] = {}

    @classmethod
    def for_workspace(cls, workspace: Path, settings: Settings | None = None) -> Controller:
        """The controller of a workspace: its store and a LocalDriver."""
        return cls(EnvironmentStore(store_path(workspace)), LocalDriver(workspace), settings)

    # --- one pass -----------------------------------------------------------------------------

    def run_pass(self, name: str) -> tuple[Ending, Observed]:
        """One reconciliation pass of environment `name`: how it ended and what it observed."""
        ending, observed, rv = self._run_pass(name)
        self._schedules.setdefault(name, _Schedule()).seen_rv = rv
        return ending, observed

    def _run_pass(self, name: str) -> tuple[Ending, Observed, int]:
        """A pass, also returning the resourceVersion its own last write left."""
        stored = self.store.get(name)
        obj = stored.full()
        rv = stored.resource_version
        if not isinstance(obj, dict):  # a hand-edited row: nothing to observe or write to
            return Fail("the stored Environment is not a JSON object"), Observed(), rv
        try:
            observed = self.driver.observe(name, obj)
        except (LockstepError, OSError) as exc:
            log.warning("%s: observing failed: %s", name, exc)
            return Fail(f"observing failed: {exc}"), Observed(), rv
        observed = dataclasses.replace(observed, fresh_uuid=str(uuid.uuid4()))
        plan = reconcile(obj, observed, self.clock(), self.settings)
        for warning in plan.warnings:
            log.warning("%s: %s", name, warning)
        log.debug("%s: plan %s", name, plan.steps)
        for step in plan.steps:
            try:
                if isinstance(step, WriteStatus):
                    faults.crashpoint("rollout-before-promoting", _reason(step) == "Promoting")
                    rv = self.store.write_status(name, dict(step.status), rv)
                elif isinstance(step, WriteSpec):
                    body = stored.full()
                    body["spec"] = dict(body.get("spec") or {}) | dict(step.members)
                    rv = self.store.put(body, expected_rv=rv).resource_version
                elif isinstance(step, Apply | SkipCatchup):
                    try:
                        if isinstance(step, Apply):
                            self.driver.apply(name, obj, step.generation)
                            faults.crashpoint("rollout-after-apply")
                        else:
                            self.driver.skip_catchup(name, step.generation, step.component)
                    except (LockstepError, OSError) as exc:
                        log.warning("%s: %s", name, _text(exc))
                        rv = self.store.write_status(name, step.failure(_text(exc)), rv)
                        return Fail(_text(exc)), observed, rv
                elif isinstance(step, Promote):
                    faults.crashpoint("rollout-before-promote-call")
                    if not self.driver.promote(name, step.generation, step.component):
                        return Requeue(5, 10), observed, rv
                    faults.crashpoint("rollout-after-promote-call")
                elif isinstance(step, Teardown):
                    self.driver.teardown(name, step.generation)
                elif isinstance(step, Route):
                    self.driver.route(name, step.generation)
                elif isinstance(step, ApplyStateless):
                    self.driver.apply_stateless(name, step)
                else:
                    return step, observed, rv
            except ConflictError:
                return Requeue(0, 0), observed, rv
            except (LockstepError, OSError) as exc:
                log.warning("%s: %s failed: %s", name, type(step).__name__, _text(exc))
                return Fail(f"{type(step).__name__} failed: {_text(exc)}"), observed, rv
        raise AssertionError("a plan always ends with an ending")  # pragma: no cover

    # --- the loop -----------------------------------------------------------------------------

    def migrate_storage(self) -> list[str]:
        """Rewrite every object stored as v1alpha1 (left by a v1alpha1-mode controller) as
        v1alpha2, spec and status together, best effort (spec/rollouts.md §4.6); the names
        rewritten. A conflict or an unconvertible object is left for its passes to report."""
        done = []
        for name in self.store.names():
            try:
                stored = self.store.get(name)
            except LockstepError:
                continue  # unreadable or gone: its passes report it
            if not (isinstance(stored.obj, dict) and stored.obj.get("apiVersion") == V1ALPHA1):
                continue
            try:
                self.store.rewrite(name, up(stored.full()), stored.resource_version)
            except (LockstepError, ConversionError) as exc:
                log.warning("%s: not migrated to %s: %s", name, V1ALPHA2, _text(exc))
                continue
            log.info("%s: stored as %s (was %s)", name, V1ALPHA2, V1ALPHA1)
            done.append(name)
        return done

    def run(self, once: bool = False, stop: threading.Event | None = None) -> None:
        """Reconcile every environment until `stop` is set; with `once`, run each environment's
        passes until one ends Done, Fail or with a delayed requeue, then return."""
        stop = stop or threading.Event()
        if self.settings.api == "v1alpha2":
            self.migrate_storage()
        if once:
            for name in self.store.names():
                for _ in range(20):
                    ending = self._pass(name)
                    if not (isinstance(ending, Requeue) and ending.max_seconds == 0):
                        break
            return
        while not stop.is_set():
            now = time.monotonic()
            versions = self._versions()
            for name, rv in versions.items():
                sched = self._schedules.setdefault(name, _Schedule())
                if sched.seen_rv != rv:
                    sched.due = now  # changed by someone else (or never seen)
                elif sched.watch is not None and now >= sched.next_watch:
                    sched.next_watch = now + WORKLOAD_POLL
                    if self._observe(name) != sched.watch:
                        sched.due = now
                if now >= sched.due:
                    self._pass(name)
                if stop.is_set():
                    return
            for gone in set(self._schedules) - set(versions):
                del self._schedules[gone]
            stop.wait(STORE_POLL)

    def _pass(self, name: str) -> Ending:
        """Run one pass and schedule the next one from its ending and the rollout timeout."""
        sched = self._schedules.setdefault(name, _Schedule())
        level = logging.INFO
        try:
            ending, observed = self.run_pass(name)
        except Exception as exc:  # deleted, unreadable, the store failed, or a bug: this
            # environment backs off and the loop goes on with the others
            expected = isinstance(exc, LockstepError)
            level = logging.WARNING if expected else logging.ERROR
            error = _text(exc) if expected else f"{type(exc).__name__}: {_text(exc)}"
            log.debug("%s: the pass raised", name, exc_info=True)
            ending, observed = Fail(error), Observed()
            with contextlib.suppress(Exception):  # retry on the backoff, or when edited
                sched.seen_rv = self._versions().get(name)
        now = time.monotonic()
        sched.watch, sched.next_watch = None, _NEVER
        if isinstance(ending, Fail):
            delay = min(BACKOFF_MAX, BACKOFF_MIN * 2 ** sched.failures)
            sched.failures += 1
            log.log(level, "%s: pass failed (%s); retrying in %.0f s", name, ending.error, delay)
        else:
            sched.failures = 0
            delay = _NEVER
            if isinstance(ending, Requeue):
                delay = self.rng.uniform(ending.min_seconds, ending.max_seconds)
                if delay > 0:
                    sched.watch = dataclasses.replace(observed, fresh_uuid=None)
                    sched.next_watch = now + WORKLOAD_POLL
        try:
            deadline = timeout_deadline(self.store.get(name).full(), self.settings)
        except NotFoundError:
            sched.seen_rv = None
            return ending
        except Exception:  # unreadable: the pass has reported it
            deadline = None
        if deadline is not None:
            until = (deadline - self.clock()).total_seconds()
            if until > 0:
                delay = min(delay, until + 0.05)
        sched.due = now + delay
        return ending

    def _observe(self, name: str) -> Observed | None:
        """The workloads as they are now (None if they cannot be observed)."""
        try:
            return self.driver.observe(name, self.store.get(name).full())
        except Exception:  # unreadable or gone: the next pass reports it
            return None

    def _versions(self) -> dict[str, int]:
        """Every environment's resourceVersion: one cheap query."""
        with self.store.engine.connect() as c:
            rows = c.execute(select(environments.c.name, environments.c.resource_version))
            return {str(r[0]): int(r[1]) for r in rows}


def _reason(step: WriteStatus) -> object:
    """The `UpToDate` reason a status write sets (a crash point needs the Promoting one)."""
    return next((c.get("reason") for c in step.status.get("conditions") or []
                 if isinstance(c, dict) and c.get("type") == "UpToDate"), None)


def _text(exc: Exception) -> str:
    """An error as one line (a LockstepError without its hint)."""
    return " ".join((exc.message if isinstance(exc, LockstepError) else str(exc)).split())
