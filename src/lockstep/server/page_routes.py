"""The status page at `/` (static files shipped in the package, no build step, no CDN) and
`/api/overview`, the one document it polls."""

from __future__ import annotations

import time
from importlib import resources
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, Response

from lockstep.errors import LockstepError
from lockstep.server import integration, pipeline
from lockstep.server.auth import require_read
from lockstep.server.queue_routes import ERRORS, ctx_of, snapshot_response
from lockstep.server.release_routes import TAGS_TTL, recent_cuts
from lockstep.server.rollout_routes import all_summaries

STATIC = resources.files("lockstep.server") / "static"
TYPES = {"app.js": "text/javascript; charset=utf-8", "app.css": "text/css; charset=utf-8"}
# The page needs nothing from elsewhere: a policy that forbids it keeps it so.
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
       "connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'")

router = APIRouter(responses=ERRORS)


def _static(name: str) -> bytes:
    return (STATIC / name).read_bytes()


@router.get("/", response_class=HTMLResponse, include_in_schema=False)
def page() -> Response:
    """The status page (it asks for a token itself when reads need one)."""
    return Response(_static("index.html"), media_type="text/html; charset=utf-8",
                    headers={"Content-Security-Policy": CSP, "Cache-Control": "no-cache"})


@router.get("/static/{name}", include_in_schema=False)
def static(name: str) -> Response:
    """The page's script and style sheet."""
    if name not in TYPES:
        return Response(b"not found", status_code=404, media_type="text/plain")
    return Response(_static(name), media_type=TYPES[name],
                    headers={"Cache-Control": "no-cache"})


@router.get("/api/overview", tags=["page"], dependencies=[Depends(require_read)])
async def overview(request: Request,
                   recent: Annotated[int, Query(ge=1, le=100)] = 10,
                   releases: Annotated[int, Query(ge=1, le=50)] = 5,
                   cuts: Annotated[int, Query(ge=1, le=50)] = 5) -> Response:
    """Everything the page shows: the queue as a pipeline (with `pipeline`, what each runner
    tests, when runners are registered), the newest integration releases with their diffs,
    the newest release cuts with each component's steps, each environment's rollout. A part
    that cannot be read says why."""
    ctx = ctx_of(request)
    key = f"overview:{recent}:{releases}:{cuts}"
    return await snapshot_response(ctx, key, lambda: _overview(request, recent, releases, cuts))


def _distributions(ctx: Any, shown: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The recorded distribution of each release shown (state, artifacts, error), by tag."""
    from lockstep.distribution import journal

    if not shown:
        return {}
    store = ctx.dist_store()
    out: dict[str, dict[str, Any]] = {}
    with store.read() as c:
        for release in shown:
            row = journal.row(c, release["tag"])
            if row is not None:
                d = journal.decode(row, journal.artifacts_of(c, row["tag"]))
                out[row["tag"]] = {"state": d["state"], "artifacts": len(d["artifacts"]),
                                   "error": d["error"], "published_to": d["published_to"]}
    return out


def _overview(request: Request, recent: int, releases: int, cuts: int) -> dict[str, Any]:
    ctx = ctx_of(request)
    ws = ctx.workspace()
    out: dict[str, Any] = {"generated_at": time.time(),
                           "poll_seconds": ctx.settings.poll_seconds,
                           "stages": [s.name for s in ws.config.stages]}
    out["queue"] = pipeline.board(ws, ctx.store, recent)
    try:
        out["releases"] = ctx.cached(f"releases:{releases}", TAGS_TTL,
                                     lambda: integration.recent(ws, releases))
    except LockstepError as exc:
        out["releases"] = {"releases": [], "total": 0, "error": exc.one_line()}
    out["distributions"] = _distributions(ctx, out["releases"].get("releases", []))
    try:
        out["cuts"] = recent_cuts(ctx.journal(), cuts)
    except LockstepError as exc:
        out["cuts"] = []
        out["cuts_error"] = exc.one_line()
    try:
        out["environments"] = all_summaries(request)
    except LockstepError as exc:
        out["environments"] = []
        out["environments_error"] = exc.one_line()
    return out
