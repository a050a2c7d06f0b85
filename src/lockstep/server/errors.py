"""How errors become HTTP answers: every one a JSON body `{"error": "...", "hint": "..."}`
with the same one-line message the CLI prints, and a status code saying whose fault it is."""

from __future__ import annotations

from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException as StarletteHTTPException

from lockstep.errors import (
    GitError,
    InfrastructureFault,
    LockstepError,
    NotFoundError,
    StateError,
    UsageError,
)


def status_of(exc: LockstepError) -> int:
    """404 for an unknown name, 422 for bad input, 409 when the state forbids it, 502 when a
    remote or registry failed, else 500."""
    if isinstance(exc, NotFoundError):
        return 404
    if isinstance(exc, UsageError):
        return 422
    if isinstance(exc, StateError):
        return 409
    if isinstance(exc, GitError | InfrastructureFault):
        return 502
    return 500


def body(message: str, hint: str | None = None, **extra: Any) -> dict[str, Any]:
    """The error document."""
    return {"error": message, "hint": hint, **extra}


def _where(loc: tuple[Any, ...] | list[Any]) -> str:
    return ".".join(str(p) for p in loc if p != "body" or len(loc) == 1)


def validation_message(errors: list[dict[str, Any]]) -> tuple[str, str | None]:
    """One line for the first problem of a request (its location and what is wrong), and a
    hint: our validators' own hints (src/lockstep/names.py), else the count of the others."""
    first = errors[0]
    where = _where(first.get("loc", ()))
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, LockstepError):
        msg, hint = cause.message, cause.hint
    else:
        msg, hint = str(first.get("msg", "invalid")).removeprefix("Value error, "), None
    if first.get("type") == "missing":
        msg = "required field is missing"
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{where}: {msg}{more}" if where else f"{msg}{more}", hint


def install(app: FastAPI) -> None:
    """Register the handlers on the app."""

    @app.exception_handler(LockstepError)
    async def lockstep_error(_req: Request, exc: LockstepError) -> JSONResponse:
        return JSONResponse(body(exc.message, exc.hint), status_code=status_of(exc))

    @app.exception_handler(RequestValidationError)
    async def bad_request(_req: Request, exc: RequestValidationError) -> JSONResponse:
        errors = [dict(e) for e in exc.errors()]
        msg, hint = validation_message(errors)
        detail = [{"loc": list(e.get("loc", ())), "msg": str(e.get("msg", "")),
                   "type": str(e.get("type", ""))} for e in errors]
        return JSONResponse(body(msg, hint, detail=detail), status_code=422)

    @app.exception_handler(StarletteHTTPException)
    async def http_error(_req: Request, exc: StarletteHTTPException) -> JSONResponse:
        if isinstance(exc.detail, dict):
            content = body(str(exc.detail.get("error", "")), exc.detail.get("hint"))
        else:
            content = body(str(exc.detail))
        return JSONResponse(content, status_code=exc.status_code, headers=exc.headers)
