"""Live updates for `/api/events`: one watcher per server reads a cheap fingerprint of what the
page shows every `poll_seconds`, and wakes every open event stream when it changed (so a
hundred open pages cost one probe a second, not a hundred)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Hashable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from sqlalchemy import bindparam, func, select
from sqlalchemy.exc import DBAPIError
from starlette.concurrency import run_in_threadpool

from lockstep.queue import schema as s
from lockstep.queue.model import ACTIVE

if TYPE_CHECKING:
    from lockstep.server.context import ServerContext

log = logging.getLogger(__name__)
_i = s.items.c
# Live items through their partial index (spelt as the index spells it), then the active ones.
_BUSY = select(func.count()).select_from(s.items).where(
    _i.state.in_(bindparam("live", list(s.LIVE_STATES), literal_execute=True)),
    _i.state.in_(bindparam("active", sorted(a.value for a in ACTIVE), literal_execute=True)))
# Primary-key maxima only (index lookups): a new event, serial run or pipeline run moves one.
_COUNTERS = select(
    select(func.max(s.events.c.id)).scalar_subquery(),
    select(func.max(s.runs.c.id)).scalar_subquery(),
    select(func.max(s.pipeline_runs.c.seq)).scalar_subquery(),
    _BUSY.scalar_subquery())
_RUNNERS = select(s.runners.c.id, s.runners.c.run).order_by(s.runners.c.seq)
_QUEUE = select(s.queues.c.paused, s.queues.c.draining, s.queues.c.paused_reason,
                s.queues.c.window, s.queues.c.landed_count)


def _stat(path: Path) -> tuple[int, int]:
    try:
        st = path.stat()
    except OSError:
        return (0, 0)
    return (st.st_mtime_ns, st.st_size)


def fingerprint(ctx: ServerContext) -> Hashable:
    """What changes whenever the page would: the queue store's counters, runners and queue row,
    the distributions' newest update, the release journal's and Environment store's files.
    While an item is being tested the running stage's log grows, so a busy queue also changes
    the fingerprint on every probe (the page then refreshes its log tail once per probe)."""
    from lockstep.distribution import journal as dist
    from lockstep.rollout.controller import store_path

    with ctx.store.read() as c:
        counters = tuple(c.execute(_COUNTERS).one())
        runners = tuple(tuple(r) for r in c.execute(_RUNNERS))
        queue = tuple(tuple(r) for r in c.execute(_QUEUE))
        try:  # last: on PostgreSQL a failed statement ends the transaction
            dists = c.execute(select(func.max(dist.distributions.c.updated_at))).scalar()
        except DBAPIError:  # no distribution recorded yet: the table is created on first use
            dists = None
    state = ctx.ws.state_dir
    files = tuple(_stat(p) for p in (state / "release.db", state / "release.db-wal",
                                     store_path(ctx.ws_dir), Path(f"{store_path(ctx.ws_dir)}-wal")))
    busy = time.monotonic() if counters[-1] else 0.0  # differs on every probe while busy
    return (counters, runners, queue, dists, files, busy)


def expire(ctx: ServerContext, old: Hashable, new: Hashable) -> None:
    """What a change seen by the watcher makes stale: every cached document (the pages fetch
    a fresh one next), and the remote's tag list when the queue's event log moved (a landing
    tags a release before it records the landing)."""
    ctx.changed()
    if _newest_event(old) != _newest_event(new):
        ctx.forget_prefix("releases:")


def _newest_event(fp: Hashable) -> Any:
    """The queue's newest event id in a `fingerprint` (None before the first)."""
    return fp[0][0] if isinstance(fp, tuple) else None


class ChangeFeed:
    """A version number that grows when the fingerprint changes, and a way to wait for it.

    The watcher runs only while at least one stream is open; it is started by the first.
    """

    def __init__(self, probe: Callable[[], Hashable], interval: float,
                 on_change: Callable[[Hashable, Hashable], None] | None = None) -> None:
        """Probe with `probe()` every `interval` seconds; call `on_change(old, new)` with the
        two fingerprints on each change."""
        self.probe = probe
        self.interval = interval
        self.on_change = on_change
        self.version = 0
        self.probes = 0  # how many probes ran (the tests check that streams share them)
        self.subscribers = 0
        self._last: Any = None
        self._changed: asyncio.Event | None = None
        self._task: asyncio.Task[None] | None = None
        self.closed = False

    def _event(self) -> asyncio.Event:
        if self._changed is None:
            self._changed = asyncio.Event()
        return self._changed

    async def _watch(self) -> None:
        """Probe until the last stream closes; a failed probe is logged and retried."""
        while self.subscribers and not self.closed:
            try:
                current = await run_in_threadpool(self.probe)
            except Exception as exc:  # a locked or vanished store: try again next time
                log.warning("live updates: probe failed: %s", exc)
            else:
                self.probes += 1
                if current != self._last:
                    old, self._last = self._last, current
                    self.version += 1
                    if self.on_change is not None:
                        self.on_change(old, current)
                    self._wake()
            await asyncio.sleep(self.interval)
        self._task = None

    def _wake(self) -> None:
        event = self._event()
        self._changed = asyncio.Event()
        event.set()

    @contextlib.asynccontextmanager
    async def subscription(self) -> Any:
        """Count a stream while it is open (the watcher runs while any is)."""
        self.subscribers += 1
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._watch())
        try:
            yield self
        finally:
            self.subscribers -= 1

    async def wait(self, seen: int, timeout: float) -> int:
        """The version, once it differs from `seen` or after `timeout` seconds (whichever is
        first); the feed's closing wakes everyone."""
        if self.version == seen and not self.closed:
            event = self._event()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(event.wait(), timeout)
        return self.version

    def close(self) -> None:
        """The server stops: end every stream."""
        self.closed = True
        self._wake()
