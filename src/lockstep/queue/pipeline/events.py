"""Requests that reach the scheduler from users between two calls (spec §3.5)."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class CancelRequest:
    """`queue cancel ID`: withdraw the item; candidates containing it are rebuilt without it."""

    item: str


@dataclass(frozen=True)
class PauseRequest:
    """`queue pause [--abort-running]`: nothing starts or lands; optionally kill runs in flight."""

    reason: str = "user"
    abort_running: bool = False


@dataclass(frozen=True)
class ResumeRequest:
    """`queue resume`: end a pause or a drain."""


@dataclass(frozen=True)
class DrainRequest:
    """`queue drain`: nothing new starts; what is in flight finishes, then the queue pauses."""


Event = CancelRequest | PauseRequest | ResumeRequest | DrainRequest
