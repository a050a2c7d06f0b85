"""`lockstep demo`: build a sample distributed monolith and run the queue on it end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lockstep.cli.common import console


def demo(
    directory: Annotated[Path | None, typer.Argument(
        help="Where to build it (default: a new temporary directory).")] = None,
) -> None:
    """Build three component repos and an integration repo, submit bumps, run the queue, cut a
    release, and roll the landed releases out to a local environment under a client's load."""
    from lockstep.demo import run_demo

    summary = run_demo(directory, log=lambda m: console.print(m, markup=False))
    console.print(summary, markup=False)
