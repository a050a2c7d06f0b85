"""Running a release: validate the whole plan first (read-only), then run the components in
dependency order, each as soon as its dependencies' artifacts exist (no barrier between levels),
at most `jobs` doing git work at once; a failure blocks only its dependents."""

from __future__ import annotations

import concurrent.futures as cf
import threading
import uuid
from dataclasses import dataclass, field
from typing import Any

from lockstep import git
from lockstep.config import Config
from lockstep.errors import LockstepError
from lockstep.release import pins as pins_mod
from lockstep.release.artifacts import Artifacts, ProgressFn
from lockstep.release.component import ComponentRun, Context, Interrupted
from lockstep.release.journal import RENEW_EVERY, Journal
from lockstep.release.plan import Plan
from lockstep.transport import settings as transport_settings
from lockstep.workspace import Workspace


@dataclass
class Preview:
    """What a component's release would do, from read-only checks (the plan, validated)."""

    name: str
    level: int
    source: str
    tag: str
    tag_state: str  # absent → create | present at target → reuse | CONFLICT at <sha>
    transport: str
    edits: list[dict[str, Any]] = field(default_factory=list)
    new_commit: bool = False
    artifacts: list[dict[str, Any]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """As `--dry-run --json` prints it."""
        return self.__dict__.copy()


def identity(cfg: Config, when: int) -> git.Identity:
    """`[release] identity`, else the identity lockstep commits to the integration repository
    with (`[identity]`); dated `when` so objects rebuilt by a rerun are byte-identical."""
    who = cfg.release.identity or cfg.identity
    return git.Identity(who.name, who.email, when)


def make_context(ws: Workspace, cfg: Config, plan: Plan, journal: Journal, *, started_at: int,
                 jobs: int | None, progress: ProgressFn | None = None) -> Context:
    """The shared state of one run."""
    return Context(
        ws=ws, cfg=cfg, plan=plan, journal=journal, run_id=uuid.uuid4().hex,
        identity=identity(cfg, started_at),
        transport=transport_settings.from_config(cfg, ws.root),
        artifacts=Artifacts(cfg, ws.root, progress=progress),
        jobs=threading.BoundedSemaphore(jobs or cfg.release.jobs),
        jobs_limit=jobs or cfg.release.jobs)


def preview(ctx: Context, *, check_artifacts: bool) -> list[Preview]:
    """Validate every component before any side effect (spec §3 "Validation first"): source
    reachable, tag looked up and checked, every pin computed with the future image tags (a
    placeholder digest). Raises a PlanError (exit 2) on the first problem."""
    plan = ctx.plan
    for node in plan.nodes.values():
        ctx.digests[node.name] = {a.image: pins_mod.DIGEST_PLACEHOLDER for a in node.artifacts}
    order = [name for level in plan.levels for name in level]
    # Components are independent here (placeholder digests), so they are checked concurrently;
    # the first error in plan order is the one reported.
    with cf.ThreadPoolExecutor(max_workers=min(len(order) or 1, ctx.jobs_limit),
                               thread_name_prefix="plan") as pool:
        futures = {name: pool.submit(_preview_one, ctx, name, check_artifacts)
                   for name in order}
        cf.wait(futures.values())
    for name in order:
        exc = futures[name].exception()
        if exc is not None:
            raise exc
    return [futures[name].result() for name in order]


def _preview_one(ctx: Context, name: str, check_artifacts: bool) -> Preview:
    node = ctx.plan.nodes[name]
    run = ComponentRun(ctx, node, record=False)
    run.resolve()
    run.pin()
    state = "absent → create"
    if run.remote_tag is not None:
        if run.acceptable_at_plan(run.remote_tag):
            state = "present at target → reuse"
        else:
            raise run.conflict(run.remote_tag)
    arts = []
    for art in node.artifacts:
        entry: dict[str, Any] = {"image": art.reference, "registry": art.registry}
        if check_artifacts:
            try:
                answer = ctx.artifacts.check_once(art)
                entry["state"] = "present" if answer.found else "absent"
                entry["digest"] = answer.digest
                entry["detail"] = answer.detail
            except LockstepError as exc:
                entry["state"] = f"error: {exc.one_line()}"
        arts.append(entry)
    return Preview(name, node.level, node.source, node.tag, state, run.remote.transport,
                   run.edits, run.tree is not None, arts)


@dataclass
class Outcome:
    """How a run ended, per component: done, failed (with the error), blocked or interrupted."""

    done: list[str] = field(default_factory=list)
    failed: dict[str, str] = field(default_factory=dict)
    blocked: dict[str, str] = field(default_factory=dict)
    interrupted: list[str] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """Every component released."""
        return not (self.failed or self.blocked or self.interrupted)

    def to_json(self) -> dict[str, Any]:
        """As the journal keeps it."""
        return self.__dict__.copy()


def execute(ctx: Context, *, fail_fast: bool = False) -> Outcome:
    """Run every component; a component starts when all its dependencies finished `wait`."""
    plan = ctx.plan
    outcome = Outcome()
    pending = dict(plan.nodes)
    finished: set[str] = set()
    stop = threading.Event()
    renew = threading.Thread(target=_renew_lease, args=(ctx, stop), daemon=True)
    renew.start()
    try:
        with cf.ThreadPoolExecutor(max_workers=max(1, len(plan.nodes)),
                                   thread_name_prefix="release") as pool:
            running: dict[cf.Future[None], str] = {}
            while pending or running:
                for name, node in sorted(pending.items()):
                    # An interrupted dependency blocks nothing: its dependents stay pending.
                    bad = [d for d in node.deps if d in outcome.failed or d in outcome.blocked]
                    if bad:
                        outcome.blocked[name] = f"dependency {bad[0]} did not finish"
                        del pending[name]
                    elif (all(d in finished for d in node.deps) and not ctx.cancel.is_set()):
                        running[pool.submit(ComponentRun(ctx, node).run)] = name
                        del pending[name]
                if ctx.cancel.is_set() and not running:
                    outcome.interrupted.extend(sorted(pending))
                    break
                if not running:
                    continue
                done, _ = cf.wait(running, timeout=0.5, return_when=cf.FIRST_COMPLETED)
                for fut in done:
                    name = running.pop(fut)
                    exc = fut.exception()
                    if exc is None:
                        finished.add(name)
                        outcome.done.append(name)
                    elif isinstance(exc, Interrupted):
                        outcome.interrupted.append(name)
                    else:
                        text = (exc.one_line() if isinstance(exc, LockstepError)
                                else f"{type(exc).__name__}: {exc}")
                        outcome.failed[name] = text
                        _record_failure(ctx, name, text)
                        if fail_fast:
                            ctx.cancel.set()
    finally:
        stop.set()
        ctx.artifacts.close()
    outcome.warnings = list(ctx.warnings)
    return outcome


def _record_failure(ctx: Context, name: str, text: str) -> None:
    last = ctx.journal.entries(ctx.plan.version, ctx.plan.configuration, name)
    step = last[-1].step if last else "resolve"
    ctx.journal.record(ctx.plan.version, ctx.plan.configuration, name, step, "failed",
                       ctx.run_id, observed={"error": text})


def _renew_lease(ctx: Context, stop: threading.Event) -> None:
    while not stop.wait(RENEW_EVERY):
        ctx.journal.renew(ctx.plan.version, ctx.plan.configuration, ctx.run_id)
