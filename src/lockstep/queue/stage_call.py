"""One try of one stage on one configuration of a candidate (spec/queue.md §3.3): prepare its
workspace at the candidate tree, give it the documented environment, run it. The serial
worker's runner and the pipeline's runners both run stages through here.
"""

from __future__ import annotations

import contextlib
import shutil
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass
from pathlib import Path

from lockstep.config import Stage
from lockstep.errors import LockstepError
from lockstep.git import redact
from lockstep.manifest import Manifest
from lockstep.queue.store import Item
from lockstep.stages import (
    Outcome,
    RunResult,
    environment_for,
    prepare_workspace,
    run_command,
    run_upgrade,
)
from lockstep.workspace import Workspace


@dataclass(frozen=True)
class StageCall:
    """What one try runs on: the candidate (tree, base, manifest, its item ids and the item the
    run is named after), the stage and configuration, and where its workspace and log go."""

    tree: str
    base: str
    manifest: Manifest
    items: list[str]
    item: Item  # LOCKSTEP_ITEM, LOCKSTEP_COMPONENT, LOCKSTEP_VERSION
    stage: Stage
    configuration: str
    attempt: int
    try_no: int
    workdir: Path
    log: Path


def execute(ws: Workspace, call: StageCall, kill_grace: float, lost: threading.Event,
            on_start: Callable[[int], None],
            git_lock: AbstractContextManager[None] | None = None) -> RunResult:
    """Prepare the workspace (under `git_lock` when git is shared with other threads), run the
    stage there, and remove the workspace if it passed (a failed run's is kept to look at). A
    workspace that cannot be prepared is an infrastructure failure, said in the log."""
    stage, workdir, log = call.stage, call.workdir, call.log
    try:
        with git_lock or contextlib.nullcontext():
            components = prepare_workspace(ws, call.tree, call.manifest.pins(call.configuration),
                                           workdir)
    except (LockstepError, OSError) as exc:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write(f"lockstep: cannot prepare the workspace: {redact(str(exc))}\n")
        return RunResult(Outcome.INFRA, None, log)
    env = environment_for(ws.config, stage, {
        "LOCKSTEP_MANIFEST": str(workdir / ws.manifest_path),
        "LOCKSTEP_CONFIG": call.configuration,
        "LOCKSTEP_ITEM": call.item.id,
        "LOCKSTEP_ITEMS": " ".join(call.items),
        "LOCKSTEP_CANDIDATE": call.tree,
        "LOCKSTEP_BASE": call.base,
        "LOCKSTEP_STAGE": stage.name,
        "LOCKSTEP_ATTEMPT": str(call.attempt),
        "LOCKSTEP_TRY": str(call.try_no),
        "LOCKSTEP_WORKSPACE": str(workdir),
        "LOCKSTEP_COMPONENTS_DIR": str(components),
        "LOCKSTEP_COMPONENT": call.item.component,
        "LOCKSTEP_VERSION": call.item.version,
    })
    if stage.command is None:  # kind = "upgrade"
        result = run_upgrade(ws, stage, cwd=workdir, env=env, log=log, timeout=stage.timeout,
                             kill_grace=kill_grace, should_abort=lost.is_set, on_start=on_start)
    else:
        result = run_command(stage.command, cwd=workdir, env=env, log=log,
                             timeout=stage.timeout, infra_exit_code=stage.infra_exit_code,
                             kill_grace=kill_grace, should_abort=lost.is_set, on_start=on_start)
    if result.outcome == Outcome.PASSED:
        shutil.rmtree(workdir, ignore_errors=True)
    return result
