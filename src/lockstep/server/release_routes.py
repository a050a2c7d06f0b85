"""`/api/releases` (integration releases: tags, manifests, diffs) and `/api/cuts` (release
cuts: `release status` and their journal)."""

from __future__ import annotations

from dataclasses import asdict
from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from sqlalchemy import select

from lockstep import names
from lockstep.errors import NotFoundError
from lockstep.release import journal as jt
from lockstep.release.journal import Entry, Journal
from lockstep.release.status import release_status
from lockstep.server import integration, models
from lockstep.server.auth import require_read
from lockstep.server.queue_routes import ERRORS, ctx_of

TAGS_TTL = 2.0  # seconds the remote's tag list is reused (pollers need not each ls-remote)

router = APIRouter(tags=["releases"], responses=ERRORS, dependencies=[Depends(require_read)])
Tag = Annotated[str, Path(description="An integration release tag.", examples=["v2026.11.3"],
                          max_length=200)]


@router.get("/api/releases", response_model=models.ReleaseList,
            response_model_exclude_unset=True)
def releases(request: Request, limit: Annotated[int, Query(ge=1, le=200)] = 10
             ) -> dict[str, Any]:
    """The newest integration releases on the integration remote, each with the pins its
    landing changed."""
    ctx = ctx_of(request)
    ws = ctx.workspace()
    return ctx.cached(f"releases:{limit}", TAGS_TTL, lambda: integration.recent(ws, limit))


@router.get("/api/releases/{tag}", response_model=models.IntegrationReleaseDetail,
            response_model_exclude_unset=True)
def release(request: Request, tag: Tag,
            against: Annotated[str | None, Query(
                max_length=200, description="Diff against this release or commit instead of "
                "the tag's parent (`manifest diff AGAINST TAG`).")] = None) -> dict[str, Any]:
    """One integration release: its manifest and what changed."""
    ctx = ctx_of(request)
    names.ref_name(tag, "tag")
    if against is not None:
        names.ref_name(against, "revision")
    ws = ctx.workspace()
    with ctx.git_lock:
        return integration.one(ws, tag, against)


def _configurations(request: Request) -> list[str]:
    return ctx_of(request).workspace().working_manifest().configurations


@router.get("/api/cuts", response_model=list[models.CutStatus],
            response_model_exclude_unset=True)
def cuts(request: Request,
         configuration: Annotated[str | None, Query(max_length=64)] = None
         ) -> list[dict[str, Any]]:
    """Every release cut recorded in this workspace (`release status` of each), newest first
    per configuration."""
    journal = ctx_of(request).journal()
    configs = [names.configuration_name(configuration)] if configuration else \
        _configurations(request)
    out = []
    for cfg in configs:
        for version in journal.versions(cfg):
            found = release_status(journal, cfg, version)
            if found is not None:
                out.append(found)
    return out


def steps_of(entries: list[Entry]) -> dict[str, list[dict[str, Any]]]:
    """Each component's journal steps in the order first reached, with each one's last state
    and error (the page's per-step view of a cut)."""
    out: dict[str, dict[str, dict[str, Any]]] = {}
    for e in entries:
        step = out.setdefault(e.component, {}).setdefault(e.step, {"step": e.step})
        step.update(state=e.state, at=e.at, error=e.observed.get("error"))
    return {component: list(steps.values()) for component, steps in out.items()}


def recent_cuts(journal: Journal, limit: int) -> list[dict[str, Any]]:
    """The newest release cuts of every configuration, newest first: `release status` of each,
    its start time, and each component's steps from the journal."""
    with journal.engine.connect() as c:
        rows = c.execute(select(jt.releases.c.version, jt.releases.c.configuration,
                                jt.releases.c.started_at)
                         .order_by(jt.releases.c.started_at.desc(), jt.releases.c.version.desc())
                         .limit(limit)).all()
    out = []
    for version, configuration, started_at in rows:
        found = release_status(journal, configuration, version)
        if found is None:
            continue
        steps = steps_of(journal.entries(version, configuration))
        for component in found["components"]:
            component["steps"] = steps.get(component["component"], [])
        found["started_at"] = started_at
        out.append(found)
    return out


@router.get("/api/cuts/{configuration}/{version}", response_model=models.CutDetail,
            response_model_exclude_unset=True)
def cut(request: Request,
        configuration: Annotated[str, Path(max_length=64, examples=["default"])],
        version: Annotated[str, Path(max_length=200, examples=["v1.0.0"])]) -> dict[str, Any]:
    """One release cut: `release status VERSION -c CONFIGURATION --json` and its journal."""
    names.configuration_name(configuration)
    names.ref_name(version, "release version")
    journal = ctx_of(request).journal()
    found = release_status(journal, configuration, version)
    if found is None:
        known = ", ".join(journal.versions(configuration)) or "none yet"
        raise NotFoundError(f"no release {version} of configuration {configuration!r} in "
                            "this workspace", f"releases: {known}")
    found["journal"] = [asdict(e) for e in journal.entries(version, configuration)]
    return found
