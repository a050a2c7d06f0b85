"""`lockstep manifest show | diff | validate`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.table import Table

from lockstep import manifest as manifest_mod
from lockstep.cli.common import JsonOpt, WorkspaceOpt, console, print_json, workspace
from lockstep.errors import ConfigError
from lockstep.manifest import Manifest

app = typer.Typer(help="Read, compare and check the manifest.", no_args_is_help=True)


@app.command("show")
def show(
    config: Annotated[str | None, typer.Option("--config", "-c",
                                               help="Only this configuration.")] = None,
    ref: Annotated[str | None, typer.Option("--ref",
                                            help="Read it at a tag or commit.")] = None,
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Show the pinned version of every component, per configuration."""
    ws = workspace(ws_dir)
    m = ws.manifest_at(ws.resolve_commit(ref)) if ref else ws.working_manifest()
    configs = [config] if config else m.configurations
    for c in configs:
        m.pins(c)
    data = {c: m.to_dict()[c] for c in configs}
    if json_out:
        print_json({"configurations": data})
        return
    for c in configs:
        table = Table(title=f"configuration {c}", title_justify="left")
        for col in ("component", "version", "sha", "digest"):
            table.add_column(col)
        for name, pin in m.pins(c).items():
            table.add_row(name, pin.version, pin.sha[:12], pin.digest or "")
        console.print(table)


@app.command("diff")
def diff(
    ref1: Annotated[str, typer.Argument(help="Older integration release or commit.")],
    ref2: Annotated[str, typer.Argument(help="Newer integration release or commit.")],
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Show which pins changed between two integration releases or commits."""
    ws = workspace(ws_dir)
    old = ws.manifest_at(ws.resolve_commit(ref1))
    new = ws.manifest_at(ws.resolve_commit(ref2))
    changes = manifest_mod.diff(old, new)
    if json_out:
        print_json({"from": ref1, "to": ref2, "changes": [ch.to_dict() for ch in changes]})
        return
    if not changes:
        console.print(f"no pin changed between {ref1} and {ref2}")
    for ch in changes:
        console.print(ch.describe())


@app.command("validate")
def validate(ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Check lockstep.toml and the manifest; exit 2 naming the first problem."""
    ws = workspace(ws_dir)
    m: Manifest = ws.working_manifest()
    problems = m.validate(set(ws.config.components))
    if problems:
        raise ConfigError(f"{ws.manifest_path}: {problems[0]}",
                          f"{len(problems)} problem(s); declare the component or remove the pin")
    console.print(f"ok: {len(ws.config.components)} components, "
                  f"{len(m.configurations)} configurations, {len(ws.config.stages)} stages")
