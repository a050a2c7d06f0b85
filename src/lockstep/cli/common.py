"""What every command shares: the workspace option, JSON output and the console."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.console import Console

if TYPE_CHECKING:
    from lockstep.workspace import Workspace

console = Console(highlight=False, soft_wrap=True, markup=False)

WorkspaceOpt = Annotated[
    Path,
    typer.Option("--workspace", "-C", help="The integration repo (default: current directory).",
                 envvar="LOCKSTEP_WORKSPACE_DIR", show_default=False),
]
JsonOpt = Annotated[bool, typer.Option("--json", help="Print machine-readable JSON.")]


def workspace(path: Path) -> Workspace:
    """Open the workspace named by -C (or the current directory); imported here, so that
    `--help` and `--version` do not load the configuration schema (pydantic)."""
    from lockstep.workspace import Workspace

    return Workspace.open(path)


def print_json(value: Any) -> None:
    """Write JSON to stdout (stable key order, no colour)."""
    sys.stdout.write(json.dumps(value, indent=2, sort_keys=True) + "\n")


def info(message: str) -> None:
    """A progress line on stderr, so stdout stays parseable."""
    sys.stderr.write(message + "\n")
    sys.stderr.flush()


def check_listen(host: str, port: int) -> None:
    """Refuse a --host that is no address or a --port out of range (one line, exit 2)."""
    from lockstep.errors import UsageError

    if not 0 <= port <= 65535:
        raise UsageError(f"--port {port} is out of range", "use 1 to 65535, or 0 for any")
    if not host or any(c.isspace() or c in "/@" for c in host):
        raise UsageError(f"--host {host!r} is not an address", "e.g. --host 127.0.0.1")
