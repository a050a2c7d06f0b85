"""Who may call what: a bearer token for writes (and for reads when `reads = "token"`), and
an HMAC signature over the body for component CI's submissions. Comparisons are constant-time;
no secret is ever put in a log line or an answer."""

from __future__ import annotations

import hmac
import json

from fastapi import HTTPException, Request

from lockstep.queue.notify import verify
from lockstep.server.context import ServerContext

CHALLENGE = {"WWW-Authenticate": 'Bearer realm="lockstep"'}
SIGNATURE_HEADER = "X-Lockstep-Signature"


def refuse(status: int, message: str, hint: str, challenge: bool = False) -> HTTPException:
    """An HTTP error with the standard error body."""
    return HTTPException(status, {"error": message, "hint": hint},
                         headers=CHALLENGE if challenge else None)


def check_bearer(ctx: ServerContext, header: str | None, action: str) -> None:
    """401 without a token or with a malformed header, 403 with a wrong one (or when the
    server has no token configured, so nothing can be written)."""
    env = ctx.settings.token_env
    if ctx.secrets.token is None:
        raise refuse(403, f"{action} is disabled: this server has no API token",
                     f"start `lockstep serve` with ${env} set")
    if not header:
        raise refuse(401, f"{action} needs a token", "send `Authorization: Bearer <token>`",
                     challenge=True)
    scheme, _, given = header.partition(" ")
    given = given.strip()
    if scheme.lower() != "bearer" or not given or " " in given:
        raise refuse(401, "malformed Authorization header",
                     "send `Authorization: Bearer <token>`", challenge=True)
    if not hmac.compare_digest(given.encode("utf-8", "replace"),
                               ctx.secrets.token.encode("utf-8")):
        raise refuse(403, "wrong token", f"use the value of ${env} the server was started with")


async def require_write(request: Request) -> None:
    """Dependency of every write endpoint (async: no thread hop for a string compare)."""
    ctx: ServerContext = request.app.state.ctx
    check_bearer(ctx, request.headers.get("Authorization"), "writing")


async def require_read(request: Request) -> None:
    """Dependency of every read endpoint: open unless `reads = "token"`."""
    ctx: ServerContext = request.app.state.ctx
    if ctx.settings.reads == "token":
        check_bearer(ctx, request.headers.get("Authorization"), "reading")


def check_signature(ctx: ServerContext, header: str | None, payload: bytes) -> str | None:
    """`X-Lockstep-Signature: sha256=<hex HMAC-SHA256 of the body>`, the scheme lockstep's own
    notifications are signed with: 401 when absent or malformed, 403 when no key matches.
    Returns the component the matching key is scoped to (None: the shared key, any component);
    the body names the component, so a scoped key cannot sign another component's bump."""
    secrets = ctx.secrets
    if not secrets.submissions_enabled:
        raise refuse(404, "the submissions webhook is not enabled on this server",
                     f"start `lockstep serve` with ${ctx.settings.submissions_secret_env} "
                     "(or a component's variable in [serve] component_secret_envs) set")
    if not header:
        raise refuse(401, f"missing {SIGNATURE_HEADER} header",
                     "sign the body: sha256=<hex HMAC-SHA256 with the shared secret>")
    algo, _, digest = header.partition("=")
    if algo != "sha256" or len(digest) != 64 or not all(c in "0123456789abcdef" for c in digest):
        raise refuse(401, f"malformed {SIGNATURE_HEADER} header",
                     "expected sha256= followed by 64 lowercase hex digits")
    if secrets.submissions is not None and verify(secrets.submissions, payload, header):
        return None
    component = claimed_component(payload)
    scoped = secrets.components.get(component) if component is not None else None
    if scoped is not None and verify(scoped, payload, header):
        return component
    raise refuse(403, "signature does not match the body",
                 "sign the exact bytes sent, with the shared secret or the secret of the "
                 "component the body names")


def claimed_component(payload: bytes) -> str | None:
    """The `component` a submission body names, read only to pick its key (the body is
    validated once the signature holds). A body repeating a key names nothing: parsers
    disagree on which copy wins."""
    try:
        body = json.loads(payload, object_pairs_hook=_unique_keys)
    except ValueError:
        return None
    component = body.get("component") if isinstance(body, dict) else None
    return component if isinstance(component, str) else None


async def require_read_stream(request: Request) -> None:
    """`require_read` for the event stream, which also takes the token as `?token=`: a
    browser's EventSource cannot send headers (the access log masks the value)."""
    ctx: ServerContext = request.app.state.ctx
    if ctx.settings.reads == "token":
        header = request.headers.get("Authorization")
        given = request.query_params.get("token")
        if not header and given:
            header = f"Bearer {given}"
        check_bearer(ctx, header, "reading")


def _unique_keys(pairs: list[tuple[str, object]]) -> dict[str, object]:
    """A JSON object, refused (ValueError) when a key repeats."""
    out = dict(pairs)
    if len(out) != len(pairs):
        raise ValueError("a key repeats")
    return out
