"""`/api/distributions`: what `dist list | show --json` print."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from lockstep.distribution import journal
from lockstep.server import models
from lockstep.server.auth import require_read
from lockstep.server.queue_routes import ERRORS, ctx_of

router = APIRouter(prefix="/api/distributions", tags=["distributions"], responses=ERRORS,
                   dependencies=[Depends(require_read)])


@router.get("", response_model=list[models.Distribution])
def distributions(request: Request) -> list[dict[str, Any]]:
    """Every recorded distribution, oldest release first (`dist list --json`)."""
    store = ctx_of(request).dist_store()
    with store.read() as c:
        return [journal.decode(r, journal.artifacts_of(c, r["tag"])) for r in journal.rows(c)]


@router.get("/{tag}", response_model=models.Distribution)
def distribution(request: Request,
                 tag: Annotated[str, Path(max_length=200, examples=["v2026.11.3"])]
                 ) -> dict[str, Any]:
    """One distribution: artifacts, digests, where it was published (`dist show TAG --json`)."""
    return journal.shown(ctx_of(request).dist_store(), tag)
