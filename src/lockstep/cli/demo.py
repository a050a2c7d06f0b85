"""`lockstep demo`: build a sample distributed monolith and run the queue on it end to end."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from lockstep.cli.common import check_listen, console


def demo(
    directory: Annotated[Path | None, typer.Argument(
        help="Where to build it (default: a new temporary directory).")] = None,
    serve: Annotated[bool, typer.Option(
        "--serve", help="Serve the status page while the story runs, and after it until "
        "Ctrl-C.")] = False,
    host: Annotated[str, typer.Option(help="With --serve: the address to listen on.")] = (
        "127.0.0.1"),
    port: Annotated[int, typer.Option(
        help="With --serve: the port (0: any free port).")] = 8765,
) -> None:
    """Build three component repos and an integration repo, submit bumps, run the queue, cut a
    release, and roll the landed releases out to a local environment under a client's load."""
    from lockstep.demo import run_demo

    def say(message: str) -> None:
        console.print(message, markup=False)

    if not serve:
        say(run_demo(directory, log=say))
        return
    from lockstep.demo_serve import StatusPage
    from lockstep.server.ports import free_port

    check_listen(host, port)
    page: StatusPage | None = None

    def start_page(ws_dir: Path) -> None:
        nonlocal page
        page = StatusPage(host, port or free_port(host), ws_dir.parent / "serve.log")
        page.start(ws_dir)
        say(f"status page: {page.url} (log {page.log})")

    try:
        say(run_demo(directory, log=say, on_workspace=start_page))
        if page is not None:
            say(f"the status page stays up at {page.url}; press Ctrl-C to stop it")
            page.wait()
    finally:
        if page is not None:
            page.stop()
