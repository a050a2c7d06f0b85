"""Benchmark: what `queue status`, a worker's start and one scheduling round cost with history.

It builds an integration repo (no remotes are needed: nothing here touches git), measures at 0
finished items, fills the store with N finished items (50,000 by default) in one transaction
straight through SQLAlchemy, and measures again, in the same run:

- `lockstep queue status --json` as a real process (median of --runs);
- the same status document built in-process (`operations.status`), to separate the query cost
  from the interpreter's start;
- one scheduling round as the worker makes it: `scheduler.decide(store.view(...))` inside a
  write transaction (median of --rounds), with zero live items;
- a worker's start: `Worker(ws, store)` (forget dead workers, register, prune stage workspaces).

The history is realistic: every finished item has a run row and its events, landed items a
landing row, rejected items a delivered notification.

    .venv/bin/python bench/queue_history.py [--finished 50000] [--out PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import prepare, source_info, source_label, write_result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "queue_history.json"
SHA = "a" * 40
OUTCOMES = ("landed", "rejected", "skipped", "cancelled")


def config_text() -> str:
    """lockstep.toml: one component, one stage, one command notifier."""
    return (
        '[integration]\nremote = "origin"\nbranch = "main"\n\n'
        '[components.alpha]\nurl = "../alpha.git"\nowners = ["team-alpha@example.com"]\n\n'
        '[[stages]]\nname = "noop"\ncommand = ["true"]\ntimeout = 60\n\n'
        '[[notifiers]]\nname = "log"\ntype = "command"\ncommand = ["true"]\n'
    )


def build_workspace(root: Path) -> Path:
    """An integration repo made by `lockstep init`, with an (empty) stage workspace dir."""
    from lockstep.manifest import Pin, render_new
    from lockstep.scaffold import init

    ws = root / "integration"
    text = config_text()
    try:
        init(ws, config_text=text, manifest_text=render_new({"default": {
            "alpha": Pin("v1.0.0", SHA)}}))
    except Exception:  # a lockstep from before notifier names: drop the name
        shutil.rmtree(ws, ignore_errors=True)
        init(ws, config_text=text.replace('name = "log"\n', ""),
             manifest_text=render_new({"default": {"alpha": Pin("v1.0.0", SHA)}}))
    (ws / ".lockstep" / "runs").mkdir(parents=True, exist_ok=True)
    return ws


def fill(store_path: Path, count: int) -> float:
    """Insert `count` finished items and their history in one transaction; returns seconds."""
    from sqlalchemy import insert

    from lockstep.queue import schema as s
    from lockstep.queue.store import Store

    store = Store.open(store_path)
    notifier: Any = "log" if s.outbox.c.notifier.type.python_type is str else 0
    started = time.perf_counter()
    base = time.time() - count * 60.0
    items, runs, landings, outbox, events = [], [], [], [], []
    for n in range(count):
        seq = n + 1
        at = base + n * 60.0
        state = OUTCOMES[n % len(OUTCOMES)]
        outcome: dict[str, Any] = {
            "landed": {"commit": SHA, "tag": f"v2026.1.{seq}", "tag_object": SHA,
                       "landing": seq},
            "rejected": {"kind": "stage-failed", "message": "stage noop exited 1",
                         "log_tail": ["x"] * 5},
            "skipped": {"reason": "already-pinned", "by": None},
            "cancelled": {"by": "bench", "at": at},
        }[state]
        items.append(dict(
            seq=seq, queue_id=1, component="alpha", version=f"v1.{seq}.0", sha=SHA,
            configurations='["default"]', priority=0, state=state, submitted_at=at,
            updated_at=at + 30.0, attempt=1, recoveries=0,
            candidate=json.dumps({"base": SHA, "tree": SHA, "items": [f"q{seq}"],
                                  "configurations": ["default"], "manifest": "x" * 200}),
            outcome=json.dumps(outcome)))
        runs.append(dict(item_seq=seq, attempt=1, configuration="default", stage="noop",
                         try_no=1, state="failed" if state == "rejected" else "passed",
                         exit_code=1 if state == "rejected" else 0, started_at=at + 1,
                         ended_at=at + 2, worker="bench:1:x", host="bench",
                         log=f"logs/q{seq}/a1/default/noop.1.log"))
        events += [dict(at=at, item_seq=seq, kind="submitted", detail="{}"),
                   dict(at=at + 30, item_seq=seq, kind=state, detail="{}")]
        if state == "landed":
            landings.append(dict(
                item_seq=seq, epoch=seq, state="landed", base=SHA, tree=SHA, commit_sha=SHA,
                commit_message="Bump", tag_name=f"v2026.1.{seq}", tag_message="x",
                tag_sha=SHA, who_name="bench", who_email="bench@localhost",
                timestamp=int(at), created_at=at))
        if state == "rejected":
            outbox.append(dict(delivery_id=f"d{seq:08x}", event="rejected", item_seq=seq,
                               notifier=notifier, payload="{}", state="delivered", attempts=1,
                               next_attempt_at=at))
    with store.tx() as c:
        for table, rows in ((s.items, items), (s.runs, runs), (s.landings, landings),
                            (s.outbox, outbox), (s.events, events)):
            if rows:
                c.execute(insert(table), rows)
    store.close()
    return time.perf_counter() - started


def median_ms(fn: Callable[[], Any], times: int) -> tuple[float, list[float]]:
    """Run fn `times` times; the median and every sample, in ms."""
    samples = []
    for _ in range(times):
        started = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - started) * 1000)
    return round(statistics.median(samples), 2), [round(x, 2) for x in samples]


def measure(ws_dir: Path, runs: int, rounds: int) -> dict[str, Any]:
    """Every figure at the store's current size."""
    import lockstep
    from lockstep.queue import operations as ops
    from lockstep.queue import scheduler
    from lockstep.queue.worker import Worker
    from lockstep.workspace import Workspace

    src = str(Path(lockstep.__file__).resolve().parents[1])
    env = dict(os.environ, PYTHONPATH=src)
    cmd = [sys.executable, "-m", "lockstep", "queue", "status", "--json", "-C", str(ws_dir)]
    out: dict[str, Any] = {}

    def status_cli() -> None:
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False,
                              stdin=subprocess.DEVNULL)
        if proc.returncode != 0:
            raise SystemExit(f"queue status failed: {proc.stderr.strip()}")
        out["recent"] = len(json.loads(proc.stdout)["recent"])

    status_cli()  # warm the page cache and the interpreter's .pyc files
    out["status_cli_ms"], out["status_cli_samples_ms"] = median_ms(status_cli, runs)
    ws = Workspace.open(ws_dir)
    store = ops.open_store(ws)
    max_recoveries = ws.config.queue.max_recoveries

    def round_() -> None:
        with store.tx() as c:
            plan = scheduler.decide(store.view(c, max_recoveries))
        out["idle_reason"] = plan.idle_reason

    round_()
    out["round_ms"], out["round_samples_ms"] = median_ms(round_, rounds)
    out["status_inprocess_ms"], _ = median_ms(lambda: ops.status(ws, store), rounds)
    out["worker_start_ms"], _ = median_ms(lambda: Worker(ws, store), max(3, rounds // 4))
    with store.read() as c:
        out["live_items"] = len(store.items(c))
    store.close()
    return out


def main(argv: list[str] | None = None) -> int:
    """Measure at 0 and at N finished items; print the figures and write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--finished", type=int, default=50_000,
                        help="finished items to add (default 50000)")
    parser.add_argument("--runs", type=int, default=7,
                        help="`queue status` processes per size (default 7)")
    parser.add_argument("--rounds", type=int, default=21,
                        help="scheduling rounds per size (default 21)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build the store")
    parser.add_argument("--keep", action="store_true", help="keep the temporary workspace")
    args = parser.parse_args(argv)
    if args.finished < 1 or args.runs < 1 or args.rounds < 1:
        parser.error("--finished, --runs and --rounds must be at least 1")

    work = prepare("lockstep-history-", args.tmp, ROOT)
    import lockstep

    try:
        ws_dir = build_workspace(work)
        empty = measure(ws_dir, args.runs, args.rounds)
        fill_s = fill(ws_dir / ".lockstep" / "queue.db", args.finished)
        full = measure(ws_dir, args.runs, args.rounds)
    finally:
        if args.keep:
            print(f"workspace kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    doc = {
        "benchmark": "queue_history",
        "lockstep": lockstep.__version__,
        "source": source_info(),
        "finished_items": args.finished,
        "fill_seconds": round(fill_s, 2),
        "at_0": empty,
        f"at_{args.finished}": full,
        "definitions": {
            "status_cli_ms": "wall time of a `lockstep queue status --json` process, median",
            "status_inprocess_ms": "operations.status() in this process, median",
            "round_ms": "scheduler.decide(store.view(c)) inside Store.tx(), zero live items",
            "worker_start_ms": "Worker(ws, store): forget dead workers, register, prune",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    where = source_label(doc["source"])
    print(f"queue history: lockstep {doc['lockstep']} at {where}; "
          f"{args.finished} finished items filled in {fill_s:.1f} s")
    print(f"  {'':<34}{'0 finished':>14}{f'{args.finished} finished':>18}")
    for key, label in (("status_cli_ms", "queue status --json (process)"),
                       ("status_inprocess_ms", "status, in-process"),
                       ("round_ms", "one scheduling round"),
                       ("worker_start_ms", "worker start")):
        print(f"  {label:<34}{empty[key]:>11} ms{full[key]:>15} ms")
    write_result(args.out, doc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
