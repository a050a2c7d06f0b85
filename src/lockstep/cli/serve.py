"""`lockstep serve`: the HTTP API, the live status page and the webhooks of one workspace."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lockstep.cli.common import WorkspaceOpt, check_listen, workspace
from lockstep.errors import UsageError


def serve(
    host: Annotated[str, typer.Option(help="Address to listen on.")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port to listen on (0: any free port).")] = 8765,
    reads: Annotated[str | None, typer.Option(
        help="'open' or 'token': whether reads need the token too (default: serve.reads in "
        "lockstep.toml, else open).", show_default=False)] = None,
    ws_dir: WorkspaceOpt = Path("."),
) -> None:
    """Serve the JSON API, the status page at / and the webhooks until interrupted; writes
    need the token in $LOCKSTEP_SERVE_TOKEN (or the variable serve.token_env names)."""
    from lockstep.server.settings import settings_of

    check_listen(host, port)
    if reads not in (None, "open", "token"):
        raise UsageError(f"--reads {reads!r} is not 'open' or 'token'", "e.g. --reads token")
    ws = workspace(ws_dir)
    settings = settings_of(ws)
    if reads is not None:
        settings = settings.model_copy(update={"reads": reads})
    from lockstep.server.run import serve as run_server

    run_server(ws.root, host, port, settings)
