"""What one `queue run` process shares between its roles (runner, lander, verdicts, lease keeper).

One object, passed to every role, so the per-process state has a single owner instead of copies.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lockstep.config import QueueSettings
from lockstep.queue.store import Store
from lockstep.workspace import Workspace


@dataclass
class WorkerReport:
    """What one `queue run` did, for the CLI summary."""

    landed: list[str] = field(default_factory=list)
    rejected: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)
    recovered: list[str] = field(default_factory=list)  # retested: their worker died testing
    repaired: list[str] = field(default_factory=list)  # landings a dead worker left, finished
    requeued: list[str] = field(default_factory=list)
    paused: str | None = None  # why the queue was paused when this run stopped
    waiting: int = 0  # items still waiting when it stopped

    def summary(self) -> str:
        """One line saying what happened, recovery included."""
        parts = [f"landed {len(self.landed)}"]
        if self.repaired:
            parts[0] += f" ({len(self.repaired)} of them half-done landings finished by recovery)"
        parts += [f"rejected {len(self.rejected)}", f"skipped {len(self.skipped)}"]
        if self.recovered:
            parts.append(f"retested {len(self.recovered)} whose worker died")
        if self.requeued:
            parts.append(f"requeued {len(self.requeued)}")
        line = ", ".join(parts)
        if self.paused is not None:
            line += (f"; the queue is paused ({self.paused}) with {self.waiting} item(s) "
                     "waiting: see `lockstep queue status`")
        return line


@dataclass
class WorkerContext:
    """The worker process's identity, its store and workspace, and what it learnt while running."""

    ws: Workspace
    store: Store
    settings: QueueSettings  # the `[queue]` table, as read when the worker started
    worker_id: str
    log: Callable[[str], None]
    warn: Callable[[str], None]  # problems the user must see even with --quiet
    report: WorkerReport = field(default_factory=WorkerReport)
    last_landed: str | None = None  # landed, not yet synced to the checkout
    last_landed_commit: str | None = None  # the remote must still contain it (history check)
    config_ok: set[str] = field(default_factory=set)  # integration commits holding our config
    tag_names: set[str] | None = None  # known tag names, refreshed on any surprise
