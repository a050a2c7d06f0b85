"""User operations on the queue: submit, cancel, pause, resume and the status/show views.

These are what the CLI calls; they validate every input before touching the store, so bad
input changes nothing.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from lockstep import names
from lockstep.config import check_stage_coverage
from lockstep.errors import NotFoundError, StateError, UsageError
from lockstep.queue import pipeline_leases, scheduler
from lockstep.queue.model import State, item_id, order
from lockstep.queue.store import Item, Store
from lockstep.workspace import Workspace

RECENT = 10  # finished items `queue status` shows by default
MAX_LIMIT = 1000  # finished items read per page
ALL_PAGE = 500  # finished items `queue status --all` reads at a time by default


def open_store(ws: Workspace) -> Store:
    """The workspace's store (created on first use): `[store] url` (or LOCKSTEP_STORE_URL)
    when set, else the SQLite file under .lockstep/."""
    return Store.open(ws.store_path, url=ws.config.store.url, lease_ttl=ws.config.queue.lease_ttl)


def submit(ws: Workspace, store: Store, component: str, version: str,
           configurations: list[str], priority: int) -> Item:
    """Resolve the version to a SHA now and queue the bump (or record it as already pinned)."""
    names.version(version)
    ws.components.mirror(component)  # the one lookup of the name; later calls reuse it
    for cfg in configurations:
        names.configuration_name(cfg)
    if not -1000 <= priority <= 1000:
        raise UsageError(f"priority {priority} is out of range", "use -1000 to 1000")
    head = ws.remote_head()
    manifest = ws.manifest_at(head)
    check_stage_coverage(ws.config, manifest.configurations)
    for cfg in configurations:
        if cfg not in manifest.configurations:
            raise NotFoundError(
                f"unknown configuration {cfg!r}",
                f"configurations in the manifest: {', '.join(manifest.configurations)}",
            )
    targets = list(dict.fromkeys(configurations)) or (
        manifest.configurations_pinning(component) or ["default"]
    )
    sha = ws.components.resolve(component, version)
    already = all(
        (pin := manifest.pin(cfg, component)) is not None and pin.sha == sha for cfg in targets
    )
    with store.tx() as c:
        seq = store.add_item(
            c, component=component, version=version, sha=sha, configurations=targets,
            priority=priority, submitted_base=head,
            state=State.SKIPPED if already else State.QUEUED,
            outcome={"reason": "already-pinned", "by": None} if already else None,
        )
        return store.item(c, seq)


def cancel(store: Store, seq: int, who: str) -> Item:
    """Cancel an item that has not started landing (spec/queue.md §3.5)."""
    with store.tx() as c:
        item = store.item(c, seq)
        if item.state == State.CANCELLED:
            return item
        if item.state == State.LANDING:
            raise StateError(f"cannot cancel {item.id}: landing in progress",
                             "it will land or be retested; check `lockstep queue show`")
        if item.state.terminal:
            raise StateError(f"cannot cancel {item.id}: it is already {item.state.value}")
        store.transition(
            c, seq, {State.QUEUED, State.TESTING, State.FAILING, State.PASSED},
            State.CANCELLED, outcome={"by": who, "at": time.time()}, holder=None,
            lease_token=None, lease_expires_at=None,
        )
        return store.item(c, seq)


def pause(store: Store, reason: str = "user", abort_running: bool = False) -> list[str]:
    """Stop starting work; submissions are still accepted. Returns the items aborted.

    With abort_running, items being tested go back to the queue without counting an attempt;
    their workers notice the lost lease within a second and kill the stage.
    """
    aborted = []
    with store.tx() as c:
        store.update_queue(c, paused=1, paused_reason=reason)
        if abort_running:
            for item in store.items(c):
                if item.state == State.TESTING and store.transition(
                    c, item.seq, {State.TESTING}, State.QUEUED, holder=None, lease_token=None,
                    lease_expires_at=None, attempt=max(0, item.attempt - 1),
                ):
                    aborted.append(item.id)
    return aborted


def drain(store: Store) -> str | None:
    """Start nothing new; what has started finishes and lands; then the queue pauses. A queue
    already paused stays as it is: returns its pause reason."""
    with store.tx() as c:
        q = store.queue(c)
        if q.paused:
            return q.paused_reason or "paused"
        store.update_queue(c, draining=1)
        return None


def resume(store: Store, accept_history: bool = False, who: str = "") -> str | None:
    """End a pause or a drain and reset the infrastructure-failure streak.

    With accept_history, a `history-rewritten` pause is ended by accepting the remote branch as
    it is now: the lost landing is recorded as accepted (in the queue's and each waiting item's
    history) and no longer checked. Returns the accepted lost commit.
    """
    with store.tx() as c:
        q = store.queue(c)
        lost: str | None = None
        if accept_history:
            rewritten = store.last_event(c, "history-rewritten")
            if q.paused_reason != "history-rewritten" or rewritten is None:
                now = f"paused: {q.paused_reason}" if q.paused else "not paused"
                raise UsageError(
                    f"--accept-history: the queue is not paused for rewritten history ({now})",
                    "use plain `lockstep queue resume`",
                )
            lost = str(rewritten["lost"])
            detail = {"lost": lost, "head": rewritten.get("head"), "by": who}
            store.add_event(c, None, "history-accepted", detail)
            for item in store.items(c):
                store.add_event(c, item.seq, "history-accepted", detail)
        store.update_queue(c, paused=0, paused_reason=None, draining=0, infra_streak=0)
    return lost


def _wait_reasons(store: Store, c: Any, max_recoveries: int) -> tuple[dict[str, str], list[str]]:
    """Why each live item waits, and the queue order. While a dead holder's item waits for
    recovery, it waits `worker-lost` and everything else `behind` it."""
    view = store.view(c, max_recoveries)
    plan = scheduler.decide(view)
    ordered = [i.id for i in order(view.items)]
    lost = {d.item for d in plan.decisions if isinstance(d, scheduler.Recover)}
    if lost:
        return {i: "worker-lost" if i in lost else "behind" for i in ordered}, ordered
    return plan.wait_reasons, ordered


def _runner(store: Store, c: Any, item: Item, now: float, max_recoveries: int) -> dict[str, Any]:
    """A worker holding an item: running, or lost (its pid is gone on this host or its lease
    expired) with what the next `queue run` will do about it."""
    runs = store.runs(c, item.seq)
    current = runs[-1] if runs and runs[-1]["state"] == "running" else None
    why = store.holder_lost(c, item.holder, item.lease_expires_at, now)
    landing = item.state == State.LANDING
    if why is None:
        after = None
    elif landing:
        after = f"the next queue run repairs the landing of {item.id}"
    elif item.recoveries >= max_recoveries:
        after = (f"the next queue run rejects {item.id} (worker-lost: its worker died "
                 f"{item.recoveries + 1} times)")
    else:
        after = f"the next queue run retests {item.id} from its first stage"
    return {
        "worker": item.holder,
        "runner": 0,
        "state": "running" if why is None else "lost",
        "lost_reason": why,
        "next": after,
        "run": {
            "item": item.id,
            "stage": current["stage"] if current else None,
            "configuration": current["configuration"] if current else None,
            "landing": landing,
        },
    }


def check_limit(limit: int) -> None:
    """Refuse a page size for finished items outside 1..MAX_LIMIT (exit 2)."""
    if not 1 <= limit <= MAX_LIMIT:
        raise UsageError(f"--limit must be between 1 and {MAX_LIMIT}, got {limit}",
                         f"e.g. --limit {RECENT}; --all shows every finished item")


def status(ws: Workspace, store: Store, limit: int = RECENT,
           everything: bool = False) -> dict[str, Any]:
    """The `queue status --json` document: the live queue and the newest `limit` finished
    items, or with `everything` every finished item, read `limit` at a time (newest first)."""
    check_limit(limit)
    max_recoveries = ws.config.queue.max_recoveries
    now = time.time()
    with store.read() as c:
        q = store.queue(c)
        items = store.items(c)
        reasons, ordered = _wait_reasons(store, c, max_recoveries)
        runners = [_runner(store, c, item, now, max_recoveries) for item in items
                   if item.state in (State.TESTING, State.LANDING) and item.holder]
        paused_why = store.last_event(c, q.paused_reason) if q.paused_reason else None
        recent = page = store.finished(c, limit)
        while everything and len(page) == limit:
            page = store.finished(c, limit, before=page[-1].seq)
            recent = recent + page
    by_id = {i.id: i for i in items}
    if q.paused:
        state = "paused"
    elif q.draining:
        state = "draining"
    elif any(r["state"] == "running" for r in runners):
        state = "running"
    else:
        state = "waiting" if items else "idle"
    return {
        "queue": {
            "mode": ws.config.queue.mode,  # the workers' configuration, not the row's default
            "state": state,
            "paused_reason": q.paused_reason,
            "paused_message": (paused_why or {}).get("message") if q.paused else None,
            "window": 1,
            "runners": runners,
        },
        "items": [
            _item_summary(by_id[i], pos, reasons.get(i)) for pos, i in enumerate(ordered, 1)
        ],
        "recent": [_item_summary(i, None, None) for i in recent],
    }


def _item_summary(item: Item, position: int | None, wait: str | None) -> dict[str, Any]:
    out: dict[str, Any] = {
        "id": item.id,
        "state": item.state.value,
        "component": item.component,
        "version": item.version,
        "sha": item.sha,
        "digest": item.digest,
        "configurations": item.configurations,
        "priority": item.priority,
        "seq": item.seq,
        "position": position,
        "wait_reason": wait,
        "submitted_at": _iso(item.submitted_at),
        "attempt": item.attempt,
        "recoveries": item.recoveries,
    }
    if item.state == State.LANDED and item.outcome:
        out["landed"] = {"commit": item.outcome.get("commit"), "tag": item.outcome.get("tag")}
    elif item.state == State.REJECTED and item.outcome:
        out["rejection"] = item.outcome
    elif item.state == State.SKIPPED and item.outcome:
        out["skipped"] = item.outcome
    elif item.state == State.CANCELLED and item.outcome:
        out["cancelled"] = {"by": item.outcome.get("by"), "at": _iso(item.outcome.get("at"))}
    return out


def show(ws: Workspace, store: Store, seq: int) -> dict[str, Any]:
    """The `queue show ID --json` document."""
    with store.read() as c:
        item = store.item(c, seq)
        runs = _runs(ws, store, c, seq)
        reasons, ordered = _wait_reasons(store, c, ws.config.queue.max_recoveries)
        deliveries = store.outbox_rows(c, seq)
        history = store.item_events(c, seq)
    position = ordered.index(item.id) + 1 if item.id in ordered else None
    out = _item_summary(item, position, reasons.get(item.id))
    cand = item.candidate
    out["candidate"] = (
        {"tree": cand["tree"], "base": cand["base"], "items": cand["items"],
         "configurations": cand["configurations"]} if cand else None
    )
    out["runs"] = [
        {
            "stage": r["stage"],
            "configuration": r["configuration"],
            "state": r["state"],
            "attempt": r["attempt"],
            "try": r["try_no"],
            "exit_code": r["exit_code"],
            "started_at": _iso(r["started_at"]),
            "ended_at": _iso(r["ended_at"]),
            "worker": r["worker"],
            "runner": 0,
            "log": str(ws.state_dir / r["log"]),
            "flaky": bool(r.get("flaky")),
        }
        for r in runs
    ]
    out["notifications"] = [
        {"event": d["event"], "notifier": d["notifier"], "delivery": d["delivery_id"],
         "state": d["state"], "attempts": d["attempts"], "last_error": d["last_error"]}
        for d in deliveries
    ]
    out["history"] = [{"at": _iso(e["at"]), "event": e["kind"], "detail": e["detail"]}
                      for e in history]
    return out


def log_files(ws: Workspace, store: Store, seq: int, stage: str | None,
              configuration: str | None) -> list[tuple[dict[str, Any], Path]]:
    """The log file of each run of an item, filtered by stage and configuration."""
    if stage is not None:
        names.stage_name(stage)
        if stage not in {s.name for s in ws.config.stages}:
            raise NotFoundError(f"unknown stage {stage!r}",
                                f"stages: {', '.join(s.name for s in ws.config.stages)}")
    if configuration is not None:
        names.configuration_name(configuration)
    with store.read() as c:
        item = store.item(c, seq)
        runs = _runs(ws, store, c, seq)
    if configuration is not None and configuration not in item.configurations:
        raise NotFoundError(f"{item.id} does not target configuration {configuration!r}",
                            f"its configurations: {', '.join(item.configurations)}")
    return [
        (r, ws.state_dir / r["log"])
        for r in runs
        if (stage is None or r["stage"] == stage)
        and (configuration is None or r["configuration"] == configuration)
    ]


def _runs(ws: Workspace, store: Store, c: Any, seq: int) -> list[dict[str, Any]]:
    """An item's runs: the serial worker's, then those of the pipeline candidates it was in."""
    stages = [stage.name for stage in ws.config.stages]
    return [*store.runs(c, seq), *pipeline_leases.item_runs(c, item_id(seq), stages)]


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
