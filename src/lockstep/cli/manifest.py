"""`lockstep manifest show | diff | validate`."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer
from rich.table import Table

from lockstep import manifest as manifest_mod
from lockstep.cli.common import JsonOpt, WorkspaceOpt, console, info, print_json, workspace
from lockstep.errors import ConfigError
from lockstep.manifest import Manifest, Pin

if TYPE_CHECKING:  # the schema (pydantic) loads with the workspace, not for --help
    from lockstep.workspace import Workspace

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
    if ref:
        m = ws.manifest_at(ws.resolve_commit(ref))
    else:
        m = ws.working_manifest()
        from lockstep.workspace import checkout_drift, drift_hint

        drift = checkout_drift(ws)
        if drift:
            info(f"warning: {drift}; showing the work tree ({drift_hint(ws)}; or pass "
                 f"--ref {ws.remote}/{ws.branch})")
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
def validate(
    remote: Annotated[bool, typer.Option(
        "--remote", help="Also check every pin against its component's repository.")] = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Check lockstep.toml and the manifest; exit 2 naming the first problem."""
    ws = workspace(ws_dir)
    m: Manifest = ws.working_manifest()
    problems = m.validate(set(ws.config.components))
    if problems:
        raise ConfigError(f"{ws.manifest_path}: {problems[0]}",
                          f"{len(problems)} problem(s); declare the component or remove the pin")
    from lockstep import config as config_mod

    config_mod.check_stage_coverage(ws.config, m.configurations)
    from lockstep.stages import unrunnable_stages

    for warning in [*config_mod.committed_secrets(ws.config), *unrunnable_stages(ws.config)]:
        info(f"warning: {warning}")
    unset = config_mod.unset_secrets(ws.config)
    if unset:
        raise ConfigError(f"{config_mod.CONFIG_FILE}: {unset[0]}",
                          f"{len(unset)} problem(s); export the variable where `lockstep queue "
                          "run` runs, or the queue cannot sign its notifications")
    checked = ""
    if remote:
        _check_pins_remotely(ws, m)
        pins = sum(len(m.pins(c)) for c in m.configurations)
        checked = f"; {pins} pins checked against the component repositories"
    console.print(f"ok: {len(ws.config.components)} components, "
                  f"{len(m.configurations)} configurations, {len(ws.config.stages)} stages"
                  f"{checked}")


def _check_pins_remotely(ws: Workspace, m: Manifest) -> None:
    """Every pinned commit exists in its component and its version tag still names it."""
    seen: dict[tuple[str, Pin], str | None] = {}
    problems: list[str] = []
    for configuration in m.configurations:
        for name, pin in m.pins(configuration).items():
            if (name, pin) not in seen:
                seen[(name, pin)] = ws.components.check_pin(name, pin)
            problem = seen[(name, pin)]
            if problem:
                problems.append(f"configuration {configuration!r} pins {name} {pin.version} at "
                                f"{pin.sha}: {problem}")
    if problems:
        raise ConfigError(
            f"{ws.manifest_path}: {problems[0]}",
            f"{len(problems)} problem(s); pin a commit the component has, under a tag that "
            "names it (`lockstep queue submit COMPONENT VERSION` resolves one)",
        )
