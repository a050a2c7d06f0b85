"""`lockstep convert`: an Environment in the other API version, as the conversion webhook does."""

from __future__ import annotations

import sys
from typing import Annotated

import typer

from lockstep.cli.rollout import FileArg, read_environment
from lockstep.errors import UsageError

_VERSIONS = ("v1alpha1", "v1alpha2")


def convert(
    file: FileArg,
    to: Annotated[str, typer.Option("--to", help="v1alpha1 or v1alpha2.", show_default=False)],
    output: Annotated[str, typer.Option("--output", "-o", help="yaml or json.")] = "yaml",
) -> None:
    """Convert an Environment to another API version (spec §4); never validates it."""
    from lockstep.rollout.convert import convert as convert_object
    from lockstep.rollout.resource import GROUP, dump

    version = to.removeprefix(f"{GROUP}/")
    if version not in _VERSIONS:
        raise UsageError(f"--to {to!r} is not an API version of Environment",
                         "use --to v1alpha1 or --to v1alpha2")
    if output not in ("yaml", "json"):
        raise UsageError(f"-o {output!r} is not an output format", "use -o yaml or -o json")
    converted = convert_object(read_environment(file), f"{GROUP}/{version}")
    sys.stdout.write(dump(converted, "json" if output == "json" else "yaml"))
