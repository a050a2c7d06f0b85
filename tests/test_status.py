"""`queue status`: dead workers shown as lost, finished items paged, and reads whose cost does
not grow with history (checked on the query plans, not with a stopwatch)."""

from __future__ import annotations

import json
import re
import signal
import sqlite3
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from sqlalchemy import event, insert

from lockstep.queue import notify, scheduler
from lockstep.queue import operations as ops
from lockstep.queue import schema as s
from lockstep.queue.model import State
from lockstep.queue.store import Store
from lockstep.queue.worker import Worker
from tests.system import System

SHA = "a" * 40


def status(system: System, *args: str) -> dict[str, Any]:
    proc = system.cli("queue", "status", "--json", *args)
    assert proc.returncode == 0, proc.stderr
    result: dict[str, Any] = json.loads(proc.stdout)
    return result


# --- dead workers -----------------------------------------------------------------------------


def test_sigkilled_worker_is_shown_lost_with_what_happens_next(system: System) -> None:
    system.set_rules({"check": {"kill_worker_once": True, "exit_after_kill": True}})
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    killed = system.cli("queue", "run")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    assert system.item(item.id).state == State.TESTING  # its holder is dead, not done

    data = status(system)
    [runner] = data["queue"]["runners"]
    assert runner["state"] == "lost" and "is gone" in runner["lost_reason"]
    assert runner["next"] == f"the next queue run retests {item.id} from its first stage"
    assert runner["run"] == {"item": item.id, "stage": "check", "configuration": "default",
                             "landing": False}
    assert data["queue"]["state"] == "waiting"
    [waiting] = data["items"]
    assert (waiting["id"], waiting["wait_reason"]) == (item.id, "worker-lost")
    text = system.cli("queue", "status").stdout
    assert f"{item.id} default/check: LOST" in text
    assert f"the next queue run retests {item.id} from its first stage" in text

    assert system.cli("queue", "run").returncode == 0
    assert system.item(item.id).state == State.LANDED
    assert status(system)["queue"]["runners"] == []


def test_worker_killed_while_landing_is_shown_lost_with_its_repair(system: System) -> None:
    item = system.submit("alpha", "v1.1.0")
    killed = system.cli("queue", "run", "--test-crash-at", "after-commit")
    assert killed.returncode == -signal.SIGKILL, killed.stderr
    [runner] = status(system)["queue"]["runners"]
    assert (runner["state"], runner["run"]["landing"]) == ("lost", True)
    assert runner["next"] == f"the next queue run repairs the landing of {item.id}"


def test_expired_lease_is_lost_even_while_its_process_lives(system: System) -> None:
    """A holder on this host whose pid still runs but whose lease ran out (a stalled worker) is
    lost; one with a current lease is running."""
    store = system.store()
    stalled = system.submit("alpha", "v1.1.0")
    working = system.submit("beta", "v1.1.0")
    with store.tx() as c:
        me = store.register_worker(c)  # this test process: alive
        store.transition(c, stalled.seq, {State.QUEUED}, State.LANDING, holder=me,
                         lease_token=1, lease_expires_at=time.time() - 1)
        store.transition(c, working.seq, {State.QUEUED}, State.TESTING, holder=me,
                         lease_token=2, lease_expires_at=time.time() + 600)
    data = status(system)
    runners = {r["run"]["item"]: r for r in data["queue"]["runners"]}
    assert runners[stalled.id]["state"] == "lost"
    assert runners[stalled.id]["lost_reason"] == "its lease expired"
    assert runners[stalled.id]["next"] == f"the next queue run repairs the landing of {stalled.id}"
    assert (runners[working.id]["state"], runners[working.id]["next"]) == ("running", None)
    assert data["queue"]["state"] == "running"


# --- finished items, paged --------------------------------------------------------------------


def finish(store: Store, n: int) -> list[str]:
    """n items recorded as finished (already pinned), through the store's own API."""
    ids = []
    with store.tx() as c:
        for k in range(n):
            seq = store.add_item(c, component="alpha", version=f"v9.{k}.0", sha=SHA,
                                 configurations=["default"], priority=0, state=State.SKIPPED,
                                 outcome={"reason": "already-pinned", "by": None})
            ids.append(f"q{seq}")
    return ids


def test_status_shows_the_newest_finished_and_pages_through_all(system: System) -> None:
    finished = finish(system.store(), 25)
    live = system.submit("gamma", "v1.1.0")
    newest_first = finished[::-1]

    data = status(system)
    assert [i["id"] for i in data["items"]] == [live.id]
    assert [i["id"] for i in data["recent"]] == newest_first[:10]
    assert [i["id"] for i in status(system, "--limit", "3")["recent"]] == newest_first[:3]
    assert [i["id"] for i in status(system, "--all", "--limit", "4")["recent"]] == newest_first
    assert [i["id"] for i in status(system, "--all")["recent"]] == newest_first
    text = system.cli("queue", "status").stdout
    assert "older finished items: `lockstep queue status --all`" in text
    every = system.cli("queue", "status", "--all", "--limit", "7").stdout
    assert all(re.search(rf"\b{i}\b", every) for i in finished)

    for bad in ("0", "-1", "1001"):
        proc = system.cli("queue", "status", "--limit", bad)
        assert proc.returncode == 2
        assert proc.stderr.startswith(f"error: --limit must be between 1 and 1000, got {bad} (")


# --- cost that does not grow with history -----------------------------------------------------

HISTORY_TABLES = ("items", "runs", "landings", "outbox", "events")


def fill_history(store: Store, n: int) -> None:
    """n finished items with their runs, landings and delivered notifications (plain SQL)."""
    items, runs, landings, outbox = [], [], [], []
    for seq in range(1, n + 1):
        state = ("landed", "rejected", "skipped", "cancelled")[seq % 4]
        items.append(dict(seq=seq, queue_id=1, component="alpha", version=f"v1.{seq}.0", sha=SHA,
                          configurations='["default"]', priority=0, state=state,
                          submitted_at=seq, updated_at=seq, attempt=1, recoveries=0))
        runs.append(dict(item_seq=seq, attempt=1, configuration="default", stage="build",
                         try_no=1, state="passed", started_at=seq, ended_at=seq, worker="w",
                         log="x.log"))
        landings.append(dict(item_seq=seq, epoch=seq, state="landed", base=SHA, tree=SHA,
                             commit_message="m", tag_name=f"t{seq}", tag_message="m",
                             who_name="n", who_email="e", timestamp=seq, created_at=seq))
        outbox.append(dict(delivery_id=f"d{seq}", event="rejected", item_seq=seq,
                           notifier="hook", payload="{}", state="delivered", attempts=1,
                           next_attempt_at=seq))
    with store.tx() as c:
        for table, values in ((s.items, items), (s.runs, runs), (s.landings, landings),
                              (s.outbox, outbox)):
            c.execute(insert(table), values)


def bounded_scan(table: str, index: str | None, sql: str) -> bool:
    """The two scans whose cost does not grow with history: through the live-items index, and
    of items newest first under a LIMIT (finished items are nearly every row, so the newest N
    are found within N + the live ones)."""
    newest_first = re.search(r"ORDER BY items\.seq\s+DESC\s+LIMIT", sql)
    return index == "ix_items_live" or (
        table == "items" and index in (None, "ix_items_finished") and newest_first is not None)


def full_scans(db: Path, statements: list[tuple[str, Any]]) -> list[str]:
    """Plan lines of the statements that read a history table whole: a scan or a sort."""
    bad = []
    with sqlite3.connect(db) as raw:
        for sql, params in statements:
            if not sql.lstrip().upper().startswith(("SELECT", "UPDATE", "DELETE")):
                continue
            if not set(re.findall(r"\b(?:FROM|UPDATE|JOIN)\s+(\w+)", sql)) & set(HISTORY_TABLES):
                continue
            for row in raw.execute("EXPLAIN QUERY PLAN " + sql, params).fetchall():
                detail = row[-1]
                m = re.match(r"SCAN (\w+)(?: USING (?:COVERING )?INDEX (\w+))?", detail)
                if (m and m.group(1) in HISTORY_TABLES and not bounded_scan(*m.groups(), sql)) \
                        or detail.startswith("USE TEMP B-TREE"):
                    bad.append(f"{detail}: {' '.join(sql.split())}")
    return bad


def test_status_round_worker_start_and_deliveries_read_through_indexes(system: System) -> None:
    store = system.store()
    fill_history(store, 3000)
    queued = system.submit("alpha", "v1.1.0")
    system.submit("beta", "v1.1.0")
    (system.ws_dir / ".lockstep" / "runs" / "q1").mkdir(parents=True, exist_ok=True)
    with store.tx() as c:
        store.add_outbox(c, "rejected", queued.seq, "hook", {"n": 1})
    ws = system.workspace()
    cfg = ws.config
    captured: list[tuple[str, Any]] = []

    def capture(_conn: Any, _cursor: Any, sql: str, params: Any, _ctx: Any,
                many: bool) -> None:
        if not many:
            captured.append((sql, params))

    def one_round() -> None:
        with store.tx() as c:
            scheduler.decide(store.view(c, cfg.queue.max_recoveries))

    actions: dict[str, Callable[[], Any]] = {
        "queue status": lambda: ops.status(ws, store),
        "queue show": lambda: ops.show(ws, store, queued.seq),
        "scheduling round": one_round,
        "worker start": lambda: Worker(ws, store),
        "deliveries": lambda: notify.deliver_due(store, cfg, 5, now=0.0),
    }
    event.listen(store.engine, "before_cursor_execute", capture)
    for stats in ("without statistics", "after ANALYZE"):
        if stats == "after ANALYZE":  # the plans must hold once the planner knows the data
            with store.tx() as c:
                c.exec_driver_sql("ANALYZE")
        problems = {}
        for name, action in actions.items():
            captured.clear()
            action()
            assert captured, name
            problems[name] = full_scans(ws.store_path, list(captured))
        assert problems == {name: [] for name in actions}, stats
    event.remove(store.engine, "before_cursor_execute", capture)
    assert [i["id"] for i in ops.status(ws, store)["recent"]][:2] == ["q3000", "q2999"]


def test_worker_start_prunes_run_dirs_of_old_finished_items_only(system: System) -> None:
    store = system.store()
    finished = finish(store, 30)
    live = system.submit("alpha", "v1.1.0")
    runs = system.ws_dir / ".lockstep" / "runs"
    for name in [*finished, live.id, "q99", "notes"]:
        (runs / name).mkdir(parents=True)
    Worker(system.workspace(), store)
    kept = {d.name for d in runs.iterdir()}
    assert kept == {*finished[-20:], live.id, "q99", "notes"}
