"""Commands that never touch the queue start without loading the store's engine (SQLAlchemy),
and `--help`/`--version` without the configuration schema (pydantic): each runs as a real
process under `python -X importtime`, which lists every module imported."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from lockstep import __version__
from tests.system import REPO_ROOT, System

COMMANDS = {
    "--help": (["--help"], "Usage: lockstep"),
    "--version": (["--version"], __version__),
    "manifest show": (["manifest", "show", "--json"], '"configurations"'),
    "manifest diff": (["manifest", "diff", "HEAD", "HEAD", "--json"], "{"),
}


def _imported(args: list[str], cwd: str) -> tuple[subprocess.CompletedProcess[str], set[str]]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    proc = subprocess.run([sys.executable, "-X", "importtime", "-m", "lockstep", *args],
                          cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
                          stdin=subprocess.DEVNULL, check=False)
    modules = {line.rsplit("|", 1)[-1].strip() for line in proc.stderr.splitlines()
               if line.startswith("import time:")}
    return proc, modules


@pytest.mark.parametrize("name", COMMANDS)
def test_command_starts_without_sqlalchemy(system: System, name: str) -> None:
    args, expected = COMMANDS[name]
    proc, modules = _imported(args, str(system.ws_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert expected in proc.stdout
    assert "typer" in modules  # the listing is real: the CLI's own imports are in it
    assert not {m for m in modules if m.split(".")[0] == "sqlalchemy"}
    assert "lockstep.queue.store" not in modules
    if name in ("--help", "--version"):  # no workspace, so no lockstep.toml schema either
        assert "pydantic" not in modules and "lockstep.config" not in modules


def test_queue_commands_do_load_the_store(system: System) -> None:
    """The check above can fail: a command that needs the store shows it in the listing."""
    proc, modules = _imported(["queue", "status", "--json"], str(system.ws_dir))
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "sqlalchemy" in modules and "lockstep.queue.store" in modules
