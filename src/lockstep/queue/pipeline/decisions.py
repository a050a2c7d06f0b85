"""What `decide` returns: plain frozen actions a worker applies to its store, in order."""

from __future__ import annotations

from dataclasses import dataclass

from lockstep.queue.pipeline.snapshot import Failure


@dataclass(frozen=True)
class Enter:
    """Items enter the pipeline: positions first_position, first_position + 1, …, and a batch."""

    items: tuple[str, ...]
    first_position: int
    group: int | None = None


@dataclass(frozen=True)
class StartCandidate:
    """Record a candidate (assumed items, then its own); its own items become `testing`."""

    candidate: str
    items: tuple[str, ...]
    own: tuple[str, ...]
    configurations: tuple[str, ...]
    base_landed: int
    base_external: int


@dataclass(frozen=True)
class StartRun:
    """Start one run (stage of a configuration of a candidate, one try) on a runner."""

    run: str
    candidate: str
    configuration: str
    stage: int
    attempt: int
    runner: str


@dataclass(frozen=True)
class Discard:
    """Drop a candidate (kill its runs, count them wasted); its non-terminal own items → queued.

    `why`: `rebuilt` (an item ahead changed), `outside-window`, `assumed-gone`, `aborted`.
    """

    candidate: str
    why: str


@dataclass(frozen=True)
class PassCandidate:
    """Every run passed: its own items → `passed`."""

    candidate: str


@dataclass(frozen=True)
class FailCandidate:
    """A run failed for good: kill its other runs; its own items → `failing`."""

    candidate: str
    failure: Failure


@dataclass(frozen=True)
class Land:
    """Land a passed candidate as one commit and tag listing `items` (consecutive Lands in order).

    The items count as landing from now on: applying it raises `landed_count` by len(items).
    """

    candidate: str
    items: tuple[str, ...]


@dataclass(frozen=True)
class Reject:
    """Reject an item (terminal). An `infrastructure` rejection raises the infra streak; any other
    rejection and every landing reset it."""

    item: str
    kind: str
    candidate: str | None
    failure: Failure | None = None


@dataclass(frozen=True)
class Split:
    """Replace a failed batch by consecutive parts (new groups), all `queued`; positions kept."""

    candidate: str
    parts: tuple[tuple[int, tuple[str, ...]], ...]


@dataclass(frozen=True)
class WithdrawItem:
    """A user cancelled the item: it becomes `cancelled` (its candidate is discarded separately)."""

    item: str


@dataclass(frozen=True)
class SetWindow:
    """Store the new window W."""

    window: int


@dataclass(frozen=True)
class PauseQueue:
    """Pause the queue with a reason (`user`, `drained`, `infrastructure`)."""

    reason: str


@dataclass(frozen=True)
class DrainQueue:
    """Start draining: nothing new starts."""


@dataclass(frozen=True)
class ResumeQueue:
    """End a pause or a drain."""


Action = (Enter | StartCandidate | StartRun | Discard | PassCandidate | FailCandidate | Land
          | Reject | Split | WithdrawItem | SetWindow | PauseQueue | DrainQueue | ResumeQueue)


@dataclass(frozen=True)
class Decisions:
    """The actions to apply in order, when to call again, W, and why items wait (queue status).

    `waiting` covers the items `decide` looked at; every item after them waits for `rest_reason`.
    `runners` pairs each runner with the run it executes once the actions are applied.
    """

    actions: tuple[Action, ...]
    wake_at: float | None
    window: int
    waiting: tuple[tuple[str, str], ...]
    rest_reason: str | None
    runners: tuple[tuple[str, str | None], ...]
