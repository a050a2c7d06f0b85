"""The FastAPI application: one workspace's context, the routers per area, the error handlers
and the OpenAPI schema at /openapi.json."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI

from lockstep import __version__
from lockstep.server import (
    dist_routes,
    errors,
    event_routes,
    page_routes,
    queue_routes,
    release_routes,
    rollout_routes,
    webhook_routes,
)
from lockstep.server.context import ServerContext
from lockstep.server.live import ChangeFeed, expire, fingerprint
from lockstep.server.settings import Secrets, ServeSettings, read_secrets, settings_of
from lockstep.workspace import Workspace

DESCRIPTION = """The JSON API of one lockstep workspace: the queue, integration releases,
release cuts, environments and distributions, read with the CLI's own functions, so each answer
matches the corresponding `--json` output. Writes need `Authorization: Bearer <token>`."""


def create_app(ws_dir: Path, settings: ServeSettings | None = None,
               secrets: Secrets | None = None) -> FastAPI:
    """The app for the workspace at `ws_dir`; settings default to its `[serve]` table and the
    secrets to the environment variables it names."""
    if settings is None:
        settings = settings_of(Workspace.open(ws_dir))
    if secrets is None:
        secrets = read_secrets(settings)
    ctx = ServerContext.open(ws_dir, settings, secrets)
    app = FastAPI(title="lockstep", version=__version__, description=DESCRIPTION,
                  docs_url=None, redoc_url=None)  # their pages load scripts from a CDN
    app.state.ctx = ctx
    app.state.feed = ChangeFeed(lambda: fingerprint(ctx), settings.poll_seconds,
                                lambda old, new: expire(ctx, old, new))
    errors.install(app)
    for module in (queue_routes, release_routes, rollout_routes, dist_routes, webhook_routes,
                   event_routes, page_routes):
        app.include_router(module.router)
    return app
