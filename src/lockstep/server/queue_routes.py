"""`/api/queue`: what `queue status | show | logs` print, and submit, cancel, pause, drain and
resume, through the CLI's own operations (src/lockstep/queue/operations.py)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Annotated, Any

from fastapi import APIRouter, Body, Depends, Path, Query, Request, Response
from starlette.concurrency import run_in_threadpool

from lockstep.queue import operations as ops
from lockstep.queue.model import parse_item_id
from lockstep.server import models, pipeline
from lockstep.server.auth import require_read, require_write
from lockstep.server.context import ServerContext

ERRORS: dict[int | str, dict[str, Any]] = {
    code: {"model": models.Error} for code in (401, 403, 404, 409, 422)}
WHO = "api"  # who cancelled or resumed, in the item's and the queue's history

router = APIRouter(prefix="/api/queue", tags=["queue"], responses=ERRORS)
ItemId = Annotated[str, Path(description="An item id such as q3.", examples=["q3"],
                             max_length=24)]


def ctx_of(request: Request) -> ServerContext:
    """The server's context (set by the app factory)."""
    ctx: ServerContext = request.app.state.ctx
    return ctx


def seq_of(item: str) -> int:
    """`q3` → 3, with the CLI's validation (422 on a malformed id)."""
    return parse_item_id(item)


@router.get("", response_model=models.QueueStatus, response_model_exclude_unset=True,
            dependencies=[Depends(require_read)])
async def queue_status(
    request: Request,
    limit: Annotated[int | None, Query(
        ge=1, le=ops.MAX_LIMIT,
        description="Finished items to list (default 10; with all=true, the page size).")
    ] = None,
    all_finished: Annotated[bool, Query(alias="all", description="Every finished item.")
                            ] = False,
) -> Response:
    """The queue, as `lockstep queue status --json` prints it (at most `cache_seconds` old;
    a write through this server shows at once). With pipeline runners registered, `pipeline`
    says what each runner tests and each item's `wait_reason` is the scheduler's."""
    ctx = ctx_of(request)
    size = limit if limit is not None else ops.ALL_PAGE if all_finished else ops.RECENT
    key = f"queue:{size}:{all_finished}"
    return await snapshot_response(ctx, key, lambda: pipeline.status(
        ctx.workspace(), ctx.store, size, all_finished))


async def snapshot_response(ctx: ServerContext, key: str,
                            compute: Callable[[], Any]) -> Response:
    """The document under `key` as JSON: from memory on the event loop when fresh, else
    computed on a worker thread (once for all who ask meanwhile)."""
    body = ctx.fresh(key)
    if body is None:
        body = await run_in_threadpool(ctx.snapshot, key, compute)
    return Response(body, media_type="application/json")


@router.get("/items/{item}", response_model=models.ItemDetail,
            response_model_exclude_unset=True, dependencies=[Depends(require_read)])
def item_detail(request: Request, item: ItemId) -> dict[str, Any]:
    """One item (`queue show ID --json`) with its stage progress and newest log lines."""
    ctx = ctx_of(request)
    return pipeline.detail(ctx.workspace(), ctx.store, seq_of(item))


@router.get("/items/{item}/logs", response_model=models.ItemLogs,
            dependencies=[Depends(require_read)])
def item_logs(
    request: Request, item: ItemId,
    stage: Annotated[str | None, Query(max_length=64, description="Only this stage.")] = None,
    config: Annotated[str | None, Query(max_length=64,
                                        description="Only this configuration.")] = None,
    lines: Annotated[int, Query(ge=1, le=5000, description="Last lines of each log.")] = 200,
) -> dict[str, Any]:
    """The logs of an item's runs (`queue logs ID`), each run's last lines, oldest first."""
    ctx = ctx_of(request)
    seq = seq_of(item)
    runs = pipeline.logs(ctx.workspace(), ctx.store, seq, stage, config, lines)
    return {"id": f"q{seq}", "runs": runs}


@router.post("/items", status_code=201, response_model=models.ItemDetail,
             response_model_exclude_unset=True, dependencies=[Depends(require_write)])
def submit(request: Request, body: models.SubmitRequest) -> dict[str, Any]:
    """Queue a bump (`queue submit`): the tag is resolved to a commit now."""
    ctx = ctx_of(request)
    return submit_bump(ctx, body)


def submit_bump(ctx: ServerContext, body: models.SubmitRequest) -> dict[str, Any]:
    """Submit through `operations.submit`, one at a time (it fetches into the mirrors)."""
    ws = ctx.workspace()
    with ctx.component_lock(body.component):
        item = ops.submit(ws, ctx.store, body.component, body.version, body.configurations,
                          body.priority)
    ctx.changed()
    return pipeline.detail(ws, ctx.store, item.seq)


@router.post("/items/{item}/cancel", response_model=models.ItemDetail,
             response_model_exclude_unset=True, dependencies=[Depends(require_write)])
def cancel(request: Request, item: ItemId) -> dict[str, Any]:
    """Cancel an item (`queue cancel`); a running test is stopped; 409 while it lands."""
    ctx = ctx_of(request)
    seq = seq_of(item)
    ops.cancel(ctx.store, seq, WHO)
    ctx.changed()
    return pipeline.detail(ctx.workspace(), ctx.store, seq)


@router.post("/pause", response_model=models.PauseResult,
             dependencies=[Depends(require_write)])
def pause(request: Request,
          body: Annotated[models.PauseRequest | None, Body()] = None) -> dict[str, Any]:
    """Stop starting work (`queue pause [--abort-running]`)."""
    ctx = ctx_of(request)
    aborted = ops.pause(ctx.store, abort_running=bool(body and body.abort_running))
    ctx.changed()
    return {"paused": True, "aborted": aborted}


@router.post("/drain", response_model=models.DrainResult,
             dependencies=[Depends(require_write)])
def drain(request: Request) -> dict[str, Any]:
    """Let what started finish, then pause (`queue drain`)."""
    ctx = ctx_of(request)
    already = ops.drain(ctx.store)
    ctx.changed()
    return {"draining": already is None, "already_paused": already}


@router.post("/resume", response_model=models.ResumeResult,
             dependencies=[Depends(require_write)])
def resume(request: Request,
           body: Annotated[models.ResumeRequest | None, Body()] = None) -> dict[str, Any]:
    """End a pause or drain (`queue resume [--accept-history]`)."""
    ctx = ctx_of(request)
    lost = ops.resume(ctx.store, bool(body and body.accept_history), WHO)
    ctx.changed()
    return {"resumed": True, "accepted_lost_commit": lost}

