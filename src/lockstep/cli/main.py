"""The `lockstep` application: command groups and the one place errors become exit codes."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from lockstep import __version__
from lockstep.cli import (
    controller,
    convert,
    crd,
    demo,
    dist,
    manifest,
    pin,
    queue,
    release,
    rollout,
    scenario,
    serve,
    sim,
    webhook,
)
from lockstep.cli.common import console
from lockstep.errors import EXIT_USAGE, LockstepError

app = typer.Typer(
    name="lockstep",
    help="Release systems spread over many git repositories.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)


def _print_version(value: bool) -> None:
    if value:
        console.print(__version__)
        raise typer.Exit()


@app.callback()
def main(
    version: Annotated[bool, typer.Option(
        "--version", help="Print lockstep's version and exit.", callback=_print_version,
        is_eager=True)] = False,
) -> None:
    """Release systems spread over many git repositories."""


app.add_typer(manifest.app, name="manifest")
app.add_typer(queue.app, name="queue")
app.add_typer(release.app, name="release")
app.add_typer(rollout.app, name="rollout")
app.add_typer(scenario.app, name="scenario")
app.add_typer(controller.app, name="controller")
app.add_typer(dist.app, name="dist")
app.command("demo")(demo.demo)
app.command("pin")(pin.pin)
app.command("crd")(crd.crd)
app.add_typer(webhook.app, name="webhook")
app.command("convert")(convert.convert)
app.command("sim")(sim.sim)
app.command("serve")(serve.serve)


@app.command("init")
def init(
    directory: Annotated[Path, typer.Argument(help="Where to create the repo.")] = Path("."),
    branch: Annotated[str, typer.Option(help="Integration branch name.")] = "main",
    remote: Annotated[
        str | None, typer.Option(help="URL of the integration remote; pushed to once.")
    ] = None,
) -> None:
    """Create an integration repo: a commented lockstep.toml and a manifest, committed."""
    from lockstep import names
    from lockstep.scaffold import init as scaffold_init

    names.ref_name(branch, "branch name")
    path = scaffold_init(directory, branch=branch, remote_url=remote)
    console.print(f"initialized integration repo in {path}")
    console.print("next: declare components and stages in lockstep.toml, then `lockstep queue`")


@app.command("version")
def version() -> None:
    """Print lockstep's version."""
    console.print(__version__)


def run(argv: list[str] | None = None) -> None:
    """Entry point: run the app; user errors print one line and exit with their code."""
    try:
        code = app(args=argv, prog_name="lockstep", standalone_mode=False)
    except LockstepError as exc:
        sys.stderr.write(f"error: {exc.shown()}\n")
        sys.exit(exc.exit_code)
    except typer.TyperException as exc:  # typer's own usage errors (it vendors click)
        if type(exc).__name__ == "NoArgsIsHelpError":
            sys.stdout.write(exc.format_message() + "\n")
            sys.exit(0)
        sys.stderr.write(f"error: {' '.join(exc.format_message().split())}"
                         f" (see `lockstep --help`)\n")
        sys.exit(EXIT_USAGE if exc.exit_code == 2 else exc.exit_code)
    except typer.Abort:
        sys.stderr.write("aborted\n")
        sys.exit(130)
    except KeyboardInterrupt:
        sys.stderr.write("interrupted\n")
        sys.exit(130)
    except Exception as exc:
        if not _is_database_error(exc):
            raise
        from lockstep.queue.store_url import redact

        cause = " ".join(str(getattr(exc, "orig", exc)).split())
        sys.stderr.write(f"error: the store failed: {redact(cause)} (check that the database "
                         "is up and reachable, then run the command again)\n")
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)


def _is_database_error(exc: BaseException) -> bool:
    """Whether exc is a database outage (SQLAlchemy imported only when one happened)."""
    module = sys.modules.get("sqlalchemy.exc")
    return module is not None and isinstance(exc, module.DBAPIError)
