"""Notifier deliveries through the durable outbox: signed HTTP webhooks and local command hooks.

Delivery is at least once: a row stays pending until a notifier accepts it, and every resend
carries the same X-Lockstep-Delivery id so receivers can drop duplicates. A row is bound to its
notifier by name: it is sent to that notifier or to none (dropped, with the reason).
"""

from __future__ import annotations

import hashlib
import hmac
import os
import subprocess
import time
import uuid
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
    for notifier in cfg.notifiers:
        if event in notifier.events:
            store.add_outbox(c, event, seq, notifier.name, {"event": event, **payload})


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


CLAIM_MARGIN = 30.0  # seconds a claim outlasts the notifier's own timeout


def deliver_due(store: Store, cfg: Config, attempts: int, now: float | None = None,
                cwd: Path | None = None) -> int:
    """Try every delivery due at `now` once, in order; returns how many were delivered.

    Each row is claimed just before it is sent (for the notifier's timeout plus a margin) and
    released when its attempt is recorded, so two workers never send a row at once and a slow
    receiver never holds rows it has not reached; a crash mid-send just retries it later. A row
    whose notifier is no longer configured is dropped, never sent to another one.
    """
    now = time.time() if now is None else now
    by_name = {n.name: n for n in cfg.notifiers}
    claimant = f"{os.getpid()}:{uuid.uuid4().hex[:12]}"
    delivered = 0
    last = 0
    while True:
        with store.read() as c:  # an idle poll never takes the write lock
            row = store.next_due_delivery(c, now, last)
        if row is None:
            return delivered
        last = row["id"]
        notifier = by_name.get(row["notifier"]) if row["notifier"] is not None else None
        with store.tx() as c:
            if notifier is None:
                store.drop_delivery(c, row["id"], _gone(row["notifier"]))
                continue
            until = time.time() + notifier.timeout + CLAIM_MARGIN
            if not store.claim_delivery(c, row, until, claimant):  # compare-and-set on the read
                continue
        error: str | None = None
        try:
            _deliver_one(notifier, row, cwd)
        except LockstepError as exc:
            error = exc.one_line()
        tries = row["attempts"] + 1
        with store.tx() as c:
            if error is None:
                if store.finish_delivery(c, row["id"], claimant, state="delivered",
                                         attempts=tries, last_error=None):
                    delivered += 1
            else:
                store.finish_delivery(c, row["id"], claimant,
                                      state="failed" if tries >= attempts else "pending",
                                      attempts=tries, last_error=error,
                                      next_attempt_at=time.time() + min(60.0, 2.0 ** tries))


def _gone(name: str | None) -> str:
    if name is None:
        return "queued by position before notifiers had names; it cannot be matched to one"
    return f"notifier {name!r} is no longer configured"
