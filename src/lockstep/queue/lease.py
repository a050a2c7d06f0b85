"""The lease keeper (spec/queue.md §8): item lease tokens, the heartbeat, and the landing lock.

Every role that writes for an item it holds checks its token here first, and every git side
effect of a landing is fenced by the landing lock's epoch, so a worker that lost either stops.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import Any

from lockstep.queue.store import Store
from lockstep.queue.worker_context import WorkerContext


class LeaseLost(Exception):
    """The item was cancelled or taken over while this worker held it."""


class LeaseKeeper:
    """Holds this worker's claim on items and on the landing lock, and keeps them alive."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.epoch = 0  # the landing lock's epoch when this worker last took it (never: 0)

    def lease_values(self, c: Any, token: int) -> dict[str, Any]:
        """The item columns that give it to this worker under `token` for one lease_ttl (by
        the store's clock: the database's on PostgreSQL)."""
        return dict(holder=self.ctx.worker_id, lease_token=token,
                    lease_expires_at=self.ctx.store.expiry(c, self.ctx.settings.lease_ttl))

    def check_token(self, c: Any, seq: int, token: int) -> None:
        """Stop (LeaseLost) unless the item is still leased to this worker under `token`."""
        if self.ctx.store.item(c, seq).lease_token != token:
            raise LeaseLost

    # --- the landing lock ----------------------------------------------------------------------

    def take_landing_lock(self, c: Any) -> bool:
        """Take the landing lock unless a live worker holds it; a new epoch fences the last."""
        epoch = self.ctx.store.take_landing_lock(c, self.ctx.worker_id,
                                                 self.ctx.settings.lease_ttl)
        if epoch is None:
            return False
        self.epoch = epoch
        return True

    def release_landing_lock(self, c: Any) -> None:
        """Let the next landing take the lock at once."""
        self.ctx.store.update_queue(c, landing_holder=None, landing_expires_at=None)

    def check_epoch(self, c: Any) -> None:
        """Fencing: stop unless this worker still holds the landing lock it took."""
        q = self.ctx.store.queue(c)
        if q.landing_holder != self.ctx.worker_id or q.landing_epoch != self.epoch:
            raise LeaseLost

    # --- the heartbeat -------------------------------------------------------------------------

    @contextmanager
    def heartbeat(self, seq: int, token: int,
                  landing: bool = False) -> Iterator[threading.Event]:
        """Renew the item's lease every lease_ttl/4 and check it every second; set the event
        when it is lost (cancelled, aborted by `pause --abort-running`, or taken over)."""
        store, settings = self.ctx.store, self.ctx.settings
        lost = threading.Event()
        done = threading.Event()

        def renew(c: Any) -> bool:
            ok = store.renew_lease(c, seq, token, settings.lease_ttl)
            if landing:
                ok = ok and store.renew_landing_lock(c, self.ctx.worker_id, self.epoch,
                                                     settings.lease_ttl)
            return ok

        def beat() -> None:
            keep_alive(self.ctx.store, settings.lease_ttl, renew,
                       lambda c: store.holds_lease(c, seq, token), lost, done)

        thread = threading.Thread(target=beat, name=f"heartbeat-{seq}", daemon=True)
        thread.start()
        try:
            yield lost
        finally:
            done.set()
            thread.join()


def keep_alive(store: Store, ttl: float, renew: Callable[[Any], bool],
               holds: Callable[[Any], bool], lost: threading.Event,
               done: threading.Event) -> None:
    """A heartbeat thread's loop: `renew` (in a write transaction) every ttl/4 and `holds` (a
    read) every second in between, until `done`; set `lost` and stop once either says no."""
    renewed = time.monotonic()
    while not done.wait(min(1.0, ttl / 4)):
        due = time.monotonic() - renewed >= ttl / 4
        try:
            with store.tx() if due else store.read() as c:
                ok = renew(c) if due else holds(c)
        except Exception:  # noqa: S112 - a busy store is retried next beat
            continue
        if due:
            renewed = time.monotonic()
        if not ok:
            lost.set()
            return
