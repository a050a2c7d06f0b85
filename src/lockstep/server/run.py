"""Run the app under uvicorn in this process until SIGINT/SIGTERM."""

from __future__ import annotations

import sys
from pathlib import Path

from lockstep.errors import UsageError
from lockstep.server.access_log import log_config
from lockstep.server.app import create_app
from lockstep.server.ports import free_port
from lockstep.server.settings import Secrets, ServeSettings, read_secrets
from lockstep.transport.urls import is_loopback


def serve(ws_dir: Path, host: str, port: int, settings: ServeSettings) -> None:
    """Open the workspace, check the settings, then serve (blocking)."""
    import uvicorn

    secrets = read_secrets(settings)
    if not is_loopback(host) and settings.reads == "open":
        sys.stderr.write(f"lockstep serve: warning: reads are open to anyone who can reach "
                         f"{host}:{port} (set reads = \"token\" to require the token)\n")
    app = create_app(ws_dir, settings, secrets)
    if port == 0:
        port = free_port(host)
    writes = "enabled" if secrets.token else f"disabled (${settings.token_env} unset)"
    hooks = submissions_line(settings, secrets)
    sys.stderr.write(f"lockstep serve: http://{host}:{port}/ for {app.state.ctx.ws_dir}; "
                     f"writes {writes}; reads {settings.reads}; submissions webhook {hooks}\n")
    sys.stderr.flush()
    try:
        uvicorn.run(app, host=host, port=port, log_config=log_config(), access_log=True,
                    server_header=False, timeout_graceful_shutdown=5)
    except OSError as exc:
        raise UsageError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                         "pick another --port or --host") from None


def submissions_line(settings: ServeSettings, secrets: Secrets) -> str:
    """What the startup line says of the submissions webhook: which keys can sign, and the
    configured component variables that are unset (so a typo shows at once)."""
    if not secrets.submissions_enabled:
        return f"disabled (${settings.submissions_secret_env} unset)"
    keys = ["shared key"] if secrets.submissions else []
    if secrets.components:
        keys.append("keys of " + ", ".join(sorted(secrets.components)))
    unset = [f"${env}" for c, env in sorted(settings.component_secret_envs.items())
             if c not in secrets.components]
    return "enabled (" + "; ".join(keys) + (f"; unset: {', '.join(unset)}" if unset else "") + ")"
