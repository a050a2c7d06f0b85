"""`/api/environments`: each Environment's rollout as `rollout status | history` show it, and
`promote` (the CLI's `rollout promote --force`)."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Request

from lockstep import names
from lockstep.errors import LockstepError
from lockstep.rollout.promote import force_promote
from lockstep.rollout.resource import up_to_date
from lockstep.rollout.store import Stored
from lockstep.server import models
from lockstep.server.auth import require_read, require_write
from lockstep.server.queue_routes import ERRORS, ctx_of

router = APIRouter(prefix="/api/environments", tags=["environments"], responses=ERRORS)
Name = Annotated[str, Path(description="The Environment's metadata.name.",
                           examples=["staging"], max_length=253)]


def summary(stored: Stored) -> dict[str, Any]:
    """Generations, hashes and the UpToDate condition of one stored Environment."""
    obj = stored.full()
    st = stored.status if isinstance(stored.status, dict) else {}
    spec = obj.get("spec") if isinstance(obj, dict) else None
    spec = spec if isinstance(spec, dict) else {}
    v1 = obj.get("apiVersion", "").endswith("/v1alpha1") if isinstance(obj, dict) else False
    requested = spec.get("requestRollout") if v1 else st.get("requestedRolloutHash")
    completed = st.get("lastCompletedRolloutRequest") if v1 else st.get("lastCompletedRolloutHash")
    cond = up_to_date(st)
    return {
        "name": stored.name,
        "apiVersion": obj.get("apiVersion") if isinstance(obj, dict) else None,
        "generation": stored.generation,
        "observedGeneration": st.get("observedGeneration"),
        "activeGeneration": st.get("activeGeneration"),
        "pending": cond.get("reason") in ("Applying", "ReadyToPromote"),
        "requested": requested if isinstance(requested, str) else None,
        "completed": completed if isinstance(completed, str) else None,
        "release": spec.get("release") if isinstance(spec.get("release"), str) else None,
        "completedRelease": st.get("lastCompletedRelease"),
        "condition": cond,
    }


def all_summaries(request: Request) -> list[dict[str, Any]]:
    """Every stored Environment's summary; one stored unreadable is skipped."""
    store = ctx_of(request).environments()
    out = []
    for name in store.names():
        try:
            out.append(summary(store.get(name)))
        except LockstepError:
            continue
    return out


@router.get("", response_model=list[models.EnvironmentSummary],
            dependencies=[Depends(require_read)])
def environments(request: Request) -> list[dict[str, Any]]:
    """Each Environment's rollout at a glance."""
    return all_summaries(request)


@router.get("/{name}", response_model=models.EnvironmentObject,
            dependencies=[Depends(require_read)])
def environment(request: Request, name: Name) -> dict[str, Any]:
    """The whole object with its status, as `rollout status NAME --json` prints it."""
    full: dict[str, Any] = ctx_of(request).environments().get(names.environment_name(name)).full()
    return full


@router.get("/{name}/history", response_model=list[models.HistoryRow],
            dependencies=[Depends(require_read)])
def history(request: Request, name: Name) -> list[dict[str, Any]]:
    """The condition changes, oldest first (`rollout history NAME --json`)."""
    return ctx_of(request).environments().history(names.environment_name(name))


@router.post("/{name}/promote", response_model=models.EnvironmentSummary,
             dependencies=[Depends(require_write)])
def promote(request: Request, name: Name) -> dict[str, Any]:
    """Force-promote the rollout in progress (`rollout promote NAME --force`); 409 when none
    is in progress."""
    ctx = ctx_of(request)
    name = names.environment_name(name)
    force_promote(ctx.environments(), name)
    ctx.changed()
    return summary(ctx.environments().get(name))
