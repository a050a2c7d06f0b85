"""`lockstep webhook serve`: the Kubernetes conversion webhook over HTTPS (spec §4.5)."""

from __future__ import annotations

import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Annotated

import typer

from lockstep.cli.common import info
from lockstep.errors import UsageError

app = typer.Typer(help="The ConversionReview endpoint the Kubernetes API server calls.",
                  no_args_is_help=True)


def parse_listen(value: str) -> tuple[str, int]:
    """`HOST:PORT` or `[IPV6]:PORT` → (host, port); port 0 picks a free one."""
    host, sep, port = value.rpartition(":")
    if host.startswith("[") and host.endswith("]"):
        host = host[1:-1]
    if not sep or not host or not port.isdigit() or int(port) > 65535:
        raise UsageError(f"--listen {value!r} is not HOST:PORT",
                         "e.g. --listen 127.0.0.1:8443, 0.0.0.0:8443 or [::]:8443")
    return host, int(port)


@app.command("serve")
def serve(
    cert: Annotated[Path, typer.Option("--cert", help="PEM certificate (chain) to serve.")],
    key: Annotated[Path, typer.Option("--key", help="PEM private key of the certificate.")],
    listen: Annotated[str, typer.Option(
        "--listen", help="HOST:PORT to listen on (port 0: any free port).")] = "127.0.0.1:8443",
    reload_every: Annotated[str, typer.Option(
        "--reload-every", help="How often to re-read --cert and --key (e.g. 1h, 10m, 500ms).")
    ] = "1h",
) -> None:
    """Serve POST /convert (ConversionReview v1) and GET /healthz until SIGTERM or Ctrl-C."""
    from lockstep.release_config import positive_duration
    from lockstep.rollout import webhook

    host, port = parse_listen(listen)
    try:
        every = positive_duration(reload_every)
    except ValueError as exc:
        raise UsageError(f"--reload-every {reload_every!r}: {exc}",
                         "write a positive duration such as 1h, 10m or 30s") from None
    done = threading.Event()

    def on_signal(signum: int, frame: FrameType | None) -> None:
        done.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    running = webhook.start(cert, key, host, port, every)
    shown = f"[{host}]" if ":" in host else host
    info(f"webhook: serving https://{shown}:{running.port}{webhook.CONVERT_PATH} "
         f"(certificate {cert}, re-read every {reload_every})")
    try:
        done.wait()
    finally:
        running.stop()
    info("webhook: stopped")
