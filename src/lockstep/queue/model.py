"""Queue domain types: item states, rejection reasons and the ordering rule (no I/O here)."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any


class State(StrEnum):
    """Item states of spec/queue.md §2.1."""

    QUEUED = "queued"
    TESTING = "testing"
    FAILING = "failing"
    PASSED = "passed"
    LANDING = "landing"
    LANDED = "landed"
    REJECTED = "rejected"
    SKIPPED = "skipped"
    CANCELLED = "cancelled"

    @property
    def terminal(self) -> bool:
        """Whether nothing more will happen to an item in this state."""
        return self in TERMINAL


TERMINAL = frozenset({State.LANDED, State.REJECTED, State.SKIPPED, State.CANCELLED})
ACTIVE = frozenset({State.TESTING, State.FAILING, State.PASSED, State.LANDING})


class RejectKind(StrEnum):
    """Why an item was rejected (spec/queue.md §3.6)."""

    STAGE_FAILED = "stage-failed"
    STAGE_TIMEOUT = "stage-timeout"
    INFRASTRUCTURE = "infrastructure"
    WORKER_LOST = "worker-lost"
    NOT_APPLICABLE = "not-applicable"
    COMMIT_GONE = "commit-gone"  # the bump's own commit left its component's repository
    ITEM_TIMEOUT = "item-timeout"  # its candidate outlived [queue] item_timeout
    ARTIFACT_MISSING = "artifact-missing"  # its artifact never reached the registry


@dataclass(frozen=True)
class ItemView:
    """What the scheduler needs to know about one non-terminal item."""

    id: str
    seq: int
    priority: int
    state: State
    holder_alive: bool = False
    recoveries: int = 0


@dataclass(frozen=True)
class QueueView:
    """A consistent snapshot of one queue, read inside the scheduling transaction."""

    paused: bool
    items: tuple[ItemView, ...]
    max_recoveries: int = 3
    paused_reason: str | None = None
    draining: bool = False


def item_id(seq: int) -> str:
    """The public id of an item: q<seq>."""
    return f"q{seq}"


def parse_item_id(value: str) -> int:
    """`q12` (or `12`) → 12, validated."""
    from lockstep import names

    value = value.strip()
    if value.isdigit():
        value = f"q{value}"
    names.item_id(value)
    return int(value[1:])


def order(items: Iterable[ItemView]) -> list[ItemView]:
    """Queue order: items holding work first (by seq), then priority descending, seq ascending.

    A higher-priority submission never overtakes an item that already started (spec §3.1).
    """
    started = sorted((i for i in items if i.state in ACTIVE), key=lambda i: i.seq)
    waiting = sorted(
        (i for i in items if i.state == State.QUEUED), key=lambda i: (-i.priority, i.seq)
    )
    return started + waiting


@dataclass(frozen=True)
class Reason:
    """A rejection reason object."""

    kind: str
    message: str
    stage: str | None = None
    configuration: str | None = None
    exit_code: int | None = None
    attempt: int | None = None
    log_tail: list[str] = field(default_factory=list)
    candidate: str | None = None
    base: str | None = None
    items: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "kind": self.kind,
            "message": self.message,
            "stage": self.stage,
            "configuration": self.configuration,
            "exit_code": self.exit_code,
            "attempt": self.attempt,
            "log_tail": self.log_tail,
            "candidate": self.candidate,
            "base": self.base,
            "items": self.items,
        }
