"""`lockstep controller run`: the rollout controller over the workspace's Environments."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lockstep.cli.common import WorkspaceOpt

app = typer.Typer(help="Run the rollout controller.", no_args_is_help=True)


@app.callback()
def controller() -> None:
    """Run the rollout controller."""


@app.command("run")
def run(once: Annotated[bool, typer.Option(
        "--once", help="Reconcile each environment until it waits, then exit.")] = False,
        ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Reconcile the workspace's Environments through local processes until interrupted."""
    import logging

    from lockstep.rollout.controller import Controller

    logging.basicConfig(level=logging.INFO,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    Controller.for_workspace(ws_dir).run(once=once)
