"""The server's handles on one workspace: the workspace itself (reloaded when lockstep.toml
changes), the queue store, the release journal and the Environment store, opened once and
shared by every request."""

from __future__ import annotations

import json
import threading
import time
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from lockstep.config import CONFIG_FILE
from lockstep.queue import operations as ops
from lockstep.server.settings import Secrets, ServeSettings
from lockstep.workspace import Workspace

if TYPE_CHECKING:
    from lockstep.queue.store import Store
    from lockstep.release.journal import Journal
    from lockstep.rollout.store import EnvironmentStore

T = TypeVar("T")
REGISTRY_EVENTS_KEPT = 100  # recent registry notifications shown by the API


@dataclass
class Cached:
    """One value computed at most every `ttl` seconds (e.g. the remote's tags)."""

    ttl: float
    at: float = -1e18
    value: Any = None


@dataclass(frozen=True)
class Snapshot:
    """A read document, encoded once and served to every poller until it is too old or a
    write through this server changed what it shows."""

    at: float
    generation: int
    body: bytes


@dataclass
class ServerContext:
    """Everything a request needs, created once by the app factory."""

    ws_dir: Path
    settings: ServeSettings
    secrets: Secrets
    ws: Workspace
    store: Store
    git_lock: threading.Lock = field(default_factory=threading.Lock)
    registry_events: deque[dict[str, Any]] = field(
        default_factory=lambda: deque(maxlen=REGISTRY_EVENTS_KEPT))
    _config_stamp: tuple[int, int] = (0, 0)
    _lock: threading.Lock = field(default_factory=threading.Lock)
    _journal: Journal | None = None
    _environments: EnvironmentStore | None = None
    _dist_ready: bool = False
    _cache: dict[str, Cached] = field(default_factory=dict)
    _snapshots: dict[str, Snapshot] = field(default_factory=dict)
    _key_locks: dict[str, threading.Lock] = field(default_factory=dict)
    generation: int = 0  # grows with every write through this server

    @classmethod
    def open(cls, ws_dir: Path, settings: ServeSettings, secrets: Secrets) -> ServerContext:
        """Open the workspace and its queue store (created on first use, as the CLI does)."""
        ws = Workspace.open(ws_dir)
        ctx = cls(ws.root, settings, secrets, ws, ops.open_store(ws))
        ctx._config_stamp = ctx._stamp()
        return ctx

    def _stamp(self) -> tuple[int, int]:
        try:
            st = (self.ws_dir / CONFIG_FILE).stat()
        except OSError:
            return (0, 0)
        return (st.st_mtime_ns, st.st_size)

    def workspace(self) -> Workspace:
        """The workspace, reopened when lockstep.toml changed on disk since the last request
        (an invalid edit keeps the last good one: the CLI reports the error, not the page)."""
        stamp = self._stamp()
        if stamp != self._config_stamp:
            with self._lock:
                if stamp != self._config_stamp:
                    from lockstep.errors import LockstepError

                    try:
                        self.ws = Workspace.open(self.ws_dir)
                    except LockstepError:
                        pass
                    self._config_stamp = stamp
        return self.ws

    def journal(self) -> Journal:
        """The release journal (`release status` reads the same file)."""
        if self._journal is None:
            from lockstep.release.cut import journal_of

            with self._lock:
                if self._journal is None:
                    self._journal = journal_of(self.ws)
        return self._journal

    def environments(self) -> EnvironmentStore:
        """The Environment store (`rollout status` reads the same file)."""
        if self._environments is None:
            from lockstep.rollout.store import open_environment_store

            with self._lock:
                if self._environments is None:
                    self._environments = open_environment_store(self.ws_dir)
        return self._environments

    def dist_store(self) -> Store:
        """The queue store with the distribution tables ensured (as `dist list` does)."""
        if not self._dist_ready:
            from lockstep.distribution import journal

            with self._lock:
                journal.ensure_tables(self.store)
                self._dist_ready = True
        return self.store

    def cached(self, key: str, ttl: float, compute: Callable[[], T]) -> T:
        """`compute()` at most once per `ttl` seconds under the git lock (it runs git)."""
        entry = self._cache.setdefault(key, Cached(ttl))
        now = time.monotonic()
        if now - entry.at < entry.ttl:
            return entry.value  # type: ignore[no-any-return]
        with self.git_lock:
            if time.monotonic() - entry.at >= entry.ttl:
                entry.value = compute()
                entry.at = time.monotonic()
            return entry.value  # type: ignore[no-any-return]

    def forget(self, key: str) -> None:
        """Drop a cached value (after a write that changes it)."""
        self._cache.pop(key, None)

    def forget_prefix(self, prefix: str) -> None:
        """Drop every cached value whose key starts with `prefix`."""
        for key in [k for k in self._cache if k.startswith(prefix)]:
            self._cache.pop(key, None)

    def changed(self) -> None:
        """A write went through: every snapshot is out of date."""
        with self._lock:
            self.generation += 1

    def _lock_for(self, key: str) -> threading.Lock:
        with self._lock:
            return self._key_locks.setdefault(key, threading.Lock())

    def component_lock(self, component: str) -> threading.Lock:
        """Serialises the fetches into one component's mirror (others fetch meanwhile)."""
        return self._lock_for(f"component:{component}")

    def fresh(self, key: str) -> bytes | None:
        """The encoded document under `key` if it is recent enough (`cache_seconds`) and no
        write came through since; None otherwise. Cheap: the event loop calls it."""
        snap = self._snapshots.get(key)
        if snap is None or snap.generation != self.generation:
            return None
        if time.monotonic() - snap.at >= self.settings.cache_seconds:
            return None
        return snap.body

    def snapshot(self, key: str, compute: Callable[[], Any]) -> bytes:
        """The encoded document under `key`: fresh, or computed once for every request that
        asks meanwhile (so a hundred pollers cost one query, not a hundred)."""
        body = self.fresh(key)
        if body is not None:
            return body
        with self._lock_for(key):
            body = self.fresh(key)
            if body is not None:
                return body
            generation = self.generation
            body = json.dumps(compute()).encode()
            self._snapshots[key] = Snapshot(time.monotonic(), generation, body)
            return body
