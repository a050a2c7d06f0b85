"""`lockstep controller run`: the rollout controller over the workspace's Environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lockstep.cli.common import WorkspaceOpt
from lockstep.cli.rollout import ApiOpt

app = typer.Typer(help="Run the rollout controller.", no_args_is_help=True)


@app.callback()
def controller() -> None:
    """Run the rollout controller."""


@app.command("run")
def run(once: Annotated[bool, typer.Option(
        "--once", help="Reconcile each environment until it waits, then exit.")] = False,
        ws_dir: WorkspaceOpt = Path("."), api: ApiOpt = "v1alpha2",
        test_crash_at: Annotated[str | None, typer.Option(
            "--test-crash-at", hidden=True,
            help="Tests only: SIGKILL the controller at a named crash point.")] = None) -> None:
    """Reconcile the workspace's Environments through local processes until interrupted."""
    import logging
    import sys

    from lockstep import faults

    if test_crash_at is not None:
        faults.arm(test_crash_at)
        sys.stderr.write(faults.announcement("controller"))

    from lockstep.rollout.controller import Controller
    from lockstep.rollout.plan import Settings

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Controller.for_workspace(ws_dir, Settings(api=api)).run(once=once)
