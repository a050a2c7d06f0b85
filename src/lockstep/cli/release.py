"""`lockstep release cut | status`: release an integration release across repositories."""

from __future__ import annotations

import signal
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lockstep.cli.common import JsonOpt, WorkspaceOpt, console, info, print_json, workspace
from lockstep.errors import NotFoundError

if TYPE_CHECKING:
    from lockstep.registry.wait import Progress
    from lockstep.release.run import Preview

app = typer.Typer(help="Tag, wait for artifacts and pin them, across repositories.",
                  no_args_is_help=True)

ConfigOpt = Annotated[str, typer.Option("--config", "-c", help="The manifest configuration.")]


def _progress_printer() -> Any:
    """A live line on a terminal; otherwise one line a minute per component."""
    last: dict[str, float] = {}
    tty = sys.stderr.isatty()

    def show(component: str, p: Progress) -> None:
        if p.kind == "check" and p.next_check_in is None:
            return  # found (or the last check): the summary says so
        nxt = f", next in {p.next_check_in:.1f}s" if p.next_check_in is not None else ""
        line = (f"{component}: waiting for {p.image} {p.elapsed:.0f}s, {p.checks} checks, "
                f"last {p.last or '-'}{nxt}, notifications {'on' if p.notifications else 'off'}")
        if tty:
            sys.stderr.write("\r\x1b[2K" + line)
            sys.stderr.flush()
        elif time.monotonic() - last.get(component, -1e9) >= 60:
            last[component] = time.monotonic()
            info(line)

    return show


def _print_preview(version: str, configuration: str, commit: str,
                   previews: list[Preview]) -> None:
    console.print(f"release {version}  config {configuration}  integration {commit[:12]}")
    for p in previews:
        pins = [e for e in p.edits if e["changed"]]
        what = (f"{len(pins)} pin{'s' if len(pins) != 1 else ''} → new commit on "
                f"{p.source[:12]}; " if p.new_commit else "")
        push = ", push" if p.tag_state.startswith("absent") else ""
        waits = "".join(f"; wait {a['image']} {a.get('state', '')}".rstrip()
                        for a in p.artifacts)
        console.print(f"level {p.level}  {p.name:<12} {p.source[:12]}  {what}tag {p.tag} "
                      f"{p.tag_state}{push} ({p.transport}){waits}")
        for e in p.edits:
            mark = "" if e["changed"] else "  (already pinned)"
            console.print(f"           {e['file']}:{e['line']}  {e['old']} → {e['new']}{mark}")


@app.command("cut")
def cut(
    manifest: Annotated[str | None, typer.Option(
        "--manifest", help="Integration release (tag or commit); default: the newest.")] = None,
    configuration: ConfigOpt = "default",
    version: Annotated[str | None, typer.Option(
        "--version", help="Release version (default: the integration tag's name).")] = None,
    jobs: Annotated[int | None, typer.Option(
        "--jobs", min=1, max=64, help="Components doing git work at once.")] = None,
    fail_fast: Annotated[bool, typer.Option(
        "--fail-fast", help="On the first failure start nothing new.")] = False,
    dry_run: Annotated[bool, typer.Option(
        "--dry-run", help="Print the plan and the read-only checks; change nothing.")] = False,
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
    test_crash_at: Annotated[str | None, typer.Option("--test-crash-at", hidden=True)] = None,
) -> None:
    """Release the components of an integration release in dependency order."""
    from lockstep import faults
    from lockstep.release.cut import cut as cut_release
    from lockstep.release.status import render

    if test_crash_at:
        faults.arm(test_crash_at)
        info(f"lockstep: test crash point armed at {test_crash_at!r}")
    ws = workspace(ws_dir)
    result = cut_release(ws, configuration=configuration, manifest_ref=manifest, version=version,
                         jobs=jobs, fail_fast=fail_fast, dry_run=dry_run,
                         progress=None if json_out else _progress_printer())
    plan = result.plan
    if dry_run:
        if json_out:
            print_json({"release": plan.version, "configuration": configuration,
                        "integration_commit": plan.integration_commit,
                        "levels": [[p.to_json() for p in result.previews if p.level == lv]
                                   for lv in range(len(plan.levels))]})
        else:
            _print_preview(plan.version, configuration, plan.integration_commit,
                           result.previews)
        return
    if sys.stderr.isatty():
        sys.stderr.write("\n")
    assert result.status is not None and result.outcome is not None
    if json_out:
        print_json(result.status)
    else:
        for line in render(result.status):
            console.print(line)
        for w in result.outcome.warnings:
            info(f"warning: {w}")
    if result.signal is not None:
        info("interrupted; rerun to resume")
        raise typer.Exit(130 if result.signal == signal.SIGINT else 143)
    if not result.outcome.ok:
        raise typer.Exit(1)


@app.command("status")
def status(
    version: Annotated[str | None, typer.Argument(help="Release version (default: newest).")
                       ] = None,
    configuration: ConfigOpt = "default",
    json_out: JsonOpt = False,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Show each component's step and state, from the journal."""
    from lockstep.release.cut import journal_of
    from lockstep.release.status import release_status, render

    ws = workspace(ws_dir)
    journal = journal_of(ws)
    found = release_status(journal, configuration, version)
    if found is None:
        known = ", ".join(journal.versions(configuration)) or "none yet"
        raise NotFoundError(f"no release {version or ''} of configuration "
                            f"{configuration!r} in this workspace".replace("  ", " "),
                            f"releases: {known}; cut one with `lockstep release cut`")
    if json_out:
        print_json(found)
    else:
        for line in render(found):
            console.print(line)
