"""The queue as a pipeline: `queue status` and `queue show` documents (the CLI's own data
functions), with each item's stage progress and the running stage's log tail added."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from lockstep.config import Config
from lockstep.queue import operations as ops
from lockstep.queue.model import ACTIVE, State
from lockstep.queue.pipeline_settings import pipeline_settings
from lockstep.queue.pipeline_view import annotate
from lockstep.queue.store import Store
from lockstep.stages import tail
from lockstep.workspace import Workspace

LOG_TAIL = 20  # lines of the latest run's log in an item's detail
LIVE_TAIL = 8  # lines of the running stage's log on the page


def stages_for(cfg: Config, configuration: str) -> list[str]:
    """The stages an item runs for one configuration, in order (a stage limited to other
    configurations is left out)."""
    return [s.name for s in cfg.stages
            if s.configurations is None or configuration in s.configurations]


def progress(cfg: Config, item: dict[str, Any]) -> list[dict[str, Any]]:
    """Each target configuration's stages with the state of the item's current attempt:
    pending until it runs, then the run's state (the newest try wins)."""
    attempt = item.get("attempt", 0)
    latest: dict[tuple[str, str], dict[str, Any]] = {}
    tries: dict[tuple[str, str], int] = {}
    for run in item.get("runs", []):
        if run.get("attempt") != attempt:
            continue
        key = (run["configuration"], run["stage"])
        latest[key] = run
        tries[key] = tries.get(key, 0) + 1
    landed = item.get("state") == State.LANDED.value
    out = []
    for configuration in item["configurations"]:
        stages = []
        for stage in stages_for(cfg, configuration):
            run = latest.get((configuration, stage))
            state = run["state"] if run else ("passed" if landed else "pending")
            stages.append({"stage": stage, "state": state,
                           "exit_code": run.get("exit_code") if run else None,
                           "tries": tries.get((configuration, stage), 0)})
        out.append({"configuration": configuration, "stages": stages})
    return out


def latest_log(item: dict[str, Any], lines: int) -> list[str]:
    """The last lines of the item's newest run's log (the running stage, while one runs)."""
    runs = item.get("runs") or []
    return tail(Path(runs[-1]["log"]), lines) if runs else []


def detail(ws: Workspace, store: Store, seq: int, lines: int = LOG_TAIL) -> dict[str, Any]:
    """`queue show --json` with the progress and the newest run's log tail."""
    shown = ops.show(ws, store, seq)
    shown["progress"] = progress(ws.config, shown)
    shown["log_tail"] = latest_log(shown, lines)
    return shown


def logs(ws: Workspace, store: Store, seq: int, stage: str | None, configuration: str | None,
         lines: int) -> list[dict[str, Any]]:
    """`queue logs`: each matching run with its log's last lines."""
    out = []
    for run, path in ops.log_files(ws, store, seq, stage, configuration):
        exists = path.is_file()
        out.append({"configuration": run["configuration"], "stage": run["stage"],
                    "attempt": run["attempt"], "try": run["try_no"], "state": run["state"],
                    "lines": tail(path, lines) if exists else [], "missing": not exists})
    return out


def status(ws: Workspace, store: Store, limit: int, everything: bool = False) -> dict[str, Any]:
    """`queue status --json`; when pipeline runners are registered, with `pipeline` (what each
    runner tests) and the scheduler's wait reason of each item (lockstep.queue.pipeline_view)."""
    return annotate(ops.status(ws, store, limit=limit, everything=everything), store,
                    pipeline_settings(ws.config))


def board(ws: Workspace, store: Store, recent: int) -> dict[str, Any]:
    """The page's queue: `queue status --json`, and for each item being worked on its stage
    progress and live log tail (keyed by item id)."""
    doc = status(ws, store, recent)
    live: dict[str, Any] = {}
    for item in doc["items"]:
        if item["state"] in {s.value for s in ACTIVE}:
            shown = ops.show(ws, store, item["seq"])
            live[item["id"]] = {"progress": progress(ws.config, shown),
                                "log_tail": latest_log(shown, LIVE_TAIL)}
    doc["live"] = live
    return doc
