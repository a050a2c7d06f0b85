"""Notifier deliveries through the durable outbox: signed HTTP webhooks and local command hooks.

Delivery is at least once: a row stays pending until a notifier accepts it, and every resend
carries the same X-Lockstep-Delivery id so receivers can drop duplicates.
"""

from __future__ import annotations

import hashlib
import hmac
import subprocess
import time
from pathlib import Path
from typing import Any

import httpx

from lockstep.config import CommandNotifier, Config, WebhookNotifier
from lockstep.errors import LockstepError
from lockstep.git import redact
from lockstep.queue.store import Store

USER_AGENT = "lockstep-notifier/1"


def sign(secret: bytes, body: bytes) -> str:
    """The X-Lockstep-Signature value: `sha256=` + hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret, body, hashlib.sha256).hexdigest()


def verify(secret: bytes, body: bytes, header: str) -> bool:
    """Check a signature header in constant time (for receivers and tests)."""
    return hmac.compare_digest(sign(secret, body).encode(), header.encode("utf-8", "replace"))


def enqueue(store: Store, c: Any, cfg: Config, event: str, seq: int | None,
            payload: dict[str, Any]) -> None:
    """Queue one delivery per notifier subscribed to the event (inside the caller's tx)."""
    for index, notifier in enumerate(cfg.notifiers):
        if event in notifier.events:
            store.add_outbox(c, event, seq, index, {"event": event, **payload})


def _deliver_one(notifier: WebhookNotifier | CommandNotifier, row: dict[str, Any],
                 cwd: Path | None) -> None:
    body = row["payload"].encode()
    if isinstance(notifier, WebhookNotifier):
        headers = {
            "Content-Type": "application/json",
            "User-Agent": USER_AGENT,
            "X-Lockstep-Event": row["event"],
            "X-Lockstep-Delivery": row["delivery_id"],
            "X-Lockstep-Signature": sign(notifier.resolve_secret(), body),
        }
        try:
            resp = httpx.post(notifier.url, content=body, headers=headers,
                              timeout=notifier.timeout)
        except httpx.HTTPError as exc:
            raise LockstepError(f"webhook {redact(notifier.url)}: {type(exc).__name__}") from None
        if not 200 <= resp.status_code < 300:
            raise LockstepError(f"webhook {redact(notifier.url)} answered {resp.status_code}")
        return
    try:
        proc = subprocess.run(notifier.command, input=body, capture_output=True, cwd=cwd,
                              timeout=notifier.timeout, check=False)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise LockstepError(f"command hook {notifier.command[0]}: {exc}") from None
    if proc.returncode != 0:
        raise LockstepError(f"command hook {notifier.command[0]} exited {proc.returncode}")


def deliver_due(store: Store, cfg: Config, attempts: int, now: float | None = None,
                cwd: Path | None = None) -> int:
    """Try every due delivery once; returns how many were delivered.

    Rows are claimed first (their next attempt moved past the notifier's timeout), so two
    workers do not send the same delivery at once; a crash mid-send just retries it later.
    """
    now = time.time() if now is None else now
    with store.tx() as c:
        rows = store.due_outbox(c, now)
        for row in rows:
            timeout = (cfg.notifiers[row["notifier"]].timeout
                       if row["notifier"] < len(cfg.notifiers) else 0.0)
            store.update_outbox(c, row["id"], next_attempt_at=time.time() + timeout + 30.0)
    delivered = 0
    for row in rows:
        error: str | None = None
        try:
            if row["notifier"] >= len(cfg.notifiers):
                raise LockstepError("notifier no longer configured")
            _deliver_one(cfg.notifiers[row["notifier"]], row, cwd)
        except LockstepError as exc:
            error = exc.one_line()
        tries = row["attempts"] + 1
        with store.tx() as c:
            if error is None:
                store.update_outbox(c, row["id"], state="delivered", attempts=tries,
                                    last_error=None)
                delivered += 1
            else:
                state = "failed" if tries >= attempts else "pending"
                store.update_outbox(c, row["id"], state=state, attempts=tries, last_error=error,
                                    next_attempt_at=time.time() + min(60.0, 2.0 ** tries))
    return delivered
