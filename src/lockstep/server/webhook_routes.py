"""Inbound webhooks: registry push notifications (relayed to the release wait's own receiver,
src/lockstep/registry/notifications.py) and signed submissions from component CI."""

from __future__ import annotations

import hmac
import json
import logging
import os
import threading
import time
from typing import Annotated, Any

import httpx
from fastapi import APIRouter, Depends, Path, Request
from pydantic import ValidationError as PydanticValidationError
from starlette.concurrency import run_in_threadpool

from lockstep.registry import notifications
from lockstep.server import models
from lockstep.server.auth import SIGNATURE_HEADER, check_signature, refuse, require_read
from lockstep.server.context import ServerContext
from lockstep.server.errors import validation_message
from lockstep.server.queue_routes import ERRORS, ctx_of, submit_bump

log = logging.getLogger("lockstep.server.webhooks")
MAX_SUBMISSION = 64 * 1024
RELAY_TIMEOUT = 5.0

router = APIRouter(tags=["webhooks"], responses=ERRORS)


def registry_token(ctx: ServerContext) -> tuple[str | None, str]:
    """The token the registry sends: `[release] notifications.token_env`'s value when set
    (the same one the release wait checks), else the serve API token; and where it came from."""
    conf = ctx.workspace().config.release.notifications
    if conf is not None and conf.token_env and os.environ.get(conf.token_env):
        return os.environ[conf.token_env], f"${conf.token_env}"
    return ctx.secrets.token, f"${ctx.settings.token_env}"


def relay_target(ctx: ServerContext, registry: str) -> str | None:
    """The running `release cut`'s receiver for this registry, when `[release] notifications`
    is configured."""
    conf = ctx.workspace().config.release.notifications
    if conf is None:
        return None
    host, port = conf.address
    host = f"[{host}]" if ":" in host else host
    return f"http://{host}:{port}{conf.path.rstrip('/')}/{registry}"


def _relay(records: list[dict[str, Any]], url: str, body: bytes, content_type: str,
           token: str | None) -> None:
    """Forward the envelope to the wait's receiver, which wakes the waits it concerns; nobody
    listening (no cut is waiting) is normal."""
    headers = {"Content-Type": content_type}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    try:
        resp = httpx.post(url, content=body, headers=headers, timeout=RELAY_TIMEOUT)
        outcome = f"answered {resp.status_code}"
    except httpx.ConnectError:
        outcome = "no release wait listening"
    except httpx.HTTPError as exc:
        outcome = f"failed: {type(exc).__name__}"
    for record in records:
        record["relayed"] = outcome


@router.post("/webhooks/registry/{registry}", status_code=200)
async def registry_notification(
    request: Request,
    registry: Annotated[str, Path(max_length=255, description="The registry's key "
                                  "(host:port), as in [registries] and the image names.")],
) -> dict[str, Any]:
    """A registry notification envelope: 401/403 without the right bearer token, else 200
    whatever it holds (the registry retries anything else forever, stalling later events).
    Manifest pushes are recorded and relayed to a running release wait."""
    ctx = ctx_of(request)
    token, source = registry_token(ctx)
    header = request.headers.get("Authorization")
    if token is None:
        raise refuse(403, "registry notifications are disabled: no token configured",
                     "set [release] notifications.token_env or start the server with "
                     f"{source} set")
    if not header:
        raise refuse(401, "registry notification without a token",
                     "configure the endpoint's headers: Authorization: [Bearer <token>]",
                     challenge=True)
    if not hmac.compare_digest(header.encode("latin-1", "replace"),
                               f"Bearer {token}".encode()):
        raise refuse(403, "wrong registry notification token", f"use the value of {source}")
    body = await request.body()
    content_type = request.headers.get("Content-Type", "")
    pushes = _manifest_pushes(body, content_type)
    url = relay_target(ctx, registry.lower())
    records = [{"at": time.time(), "registry": registry.lower(),
                "repository": event["repository"], "tag": event["tag"], "action": "push",
                "relayed": "relaying" if url else "not relayed: [release] notifications unset"}
               for event in pushes]
    ctx.registry_events.extend(records)
    if records and url is not None:
        threading.Thread(target=_relay, args=(records, url, body, content_type, token),
                         daemon=True).start()
    return {"received": len(pushes)}


def _manifest_pushes(body: bytes, content_type: str) -> list[dict[str, Any]]:
    """The manifest pushes of an envelope, read with the release wait's own filter; anything
    unreadable is no push."""
    if content_type.split(";")[0].strip().lower() not in notifications.EVENT_TYPES:
        return []
    try:
        events = json.loads(body)["events"]
    except (ValueError, KeyError, TypeError):
        return []
    out = []
    for event in events if isinstance(events, list) else []:
        repository = notifications.pushed_manifest(event)
        if repository is not None:
            target = event.get("target") or {}
            tag = target.get("tag") if isinstance(target.get("tag"), str) else None
            out.append({"repository": repository, "tag": tag})
    return out


@router.get("/api/webhooks/registry", response_model=list[models.RegistryEvent],
            dependencies=[Depends(require_read)])
def registry_events(request: Request) -> list[dict[str, Any]]:
    """The latest manifest pushes the registries reported, newest first."""
    return list(reversed(ctx_of(request).registry_events))


@router.post("/webhooks/submissions", status_code=201, response_model=models.SubmissionAccepted,
             openapi_extra={
                 "requestBody": {"required": True, "content": {"application/json": {
                     "schema": models.SubmitRequest.model_json_schema()}}},
                 "parameters": [{"name": SIGNATURE_HEADER, "in": "header", "required": True,
                                 "schema": {"type": "string"},
                                 "description": "sha256=<hex HMAC-SHA256 of the body>"}]})
async def submission(request: Request) -> dict[str, Any]:
    """A component CI's `queue submit`, authenticated by an HMAC of the exact body with the
    shared secret or the named component's own (`X-Lockstep-Signature: sha256=...`, as
    lockstep signs its notifications)."""
    ctx = ctx_of(request)
    body = await request.body()
    if len(body) > MAX_SUBMISSION:
        raise refuse(413, f"submission body over {MAX_SUBMISSION} bytes",
                     "send {component, version, configurations, priority}")
    scope = check_signature(ctx, request.headers.get(SIGNATURE_HEADER), body)
    try:
        wanted = models.SubmitRequest.model_validate_json(body)
    except PydanticValidationError as exc:
        errors: list[dict[str, Any]] = [dict(e) for e in exc.errors()]
        msg, hint = validation_message(errors)
        raise refuse(422, msg, hint or "send {component, version, configurations, priority}"
                     ) from None
    if scope is not None and wanted.component != scope:  # e.g. a repeated "component" key
        raise refuse(403, f"the key of {scope} cannot submit {wanted.component}",
                     "name the component once, and sign with that component's secret")
    item: dict[str, Any] = await run_in_threadpool(submit_bump, ctx, wanted)
    log.info("submission %s: %s %s (signed with %s)", item["id"], item["component"],
             item["version"], "the shared key" if scope is None else f"the key of {scope}")
    return item
