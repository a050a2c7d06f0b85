"""The release journal and lock (spec/release.md §4.3): SQLite beside the queue's store.

A journal row is a hint: the remotes and registries are the truth, and every step re-checks
them. Each write commits durably before the side effect it announces.
"""

from __future__ import annotations

import json
import os
import socket
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import Column, Float, Integer, MetaData, String, Table, Text, and_, select

from lockstep.errors import ReleaseBusyError
from lockstep.queue.store import pid_matches, sqlite_engine

STEPS = ("resolve", "pin", "commit", "tag", "push", "advance", "wait")
LEASE = 30.0
RENEW_EVERY = 10.0

metadata = MetaData()
releases = Table(
    "releases", metadata,
    Column("version", String(200), primary_key=True),
    Column("configuration", String(64), primary_key=True),
    Column("started_at", Integer, nullable=False),  # dates of recreated objects: byte-identical
    Column("plan", Text, nullable=False),
    Column("outcome", Text),
)
journal = Table(
    "journal", metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("version", String(200), nullable=False),
    Column("configuration", String(64), nullable=False),
    Column("component", String(64), nullable=False),
    Column("step", String(16), nullable=False),
    Column("state", String(16), nullable=False),
    Column("intent", Text),
    Column("observed", Text),
    Column("run_id", String(64), nullable=False),
    Column("at", Float, nullable=False),
)
locks = Table(
    "release_locks", metadata,
    Column("version", String(200), primary_key=True),
    Column("configuration", String(64), primary_key=True),
    Column("host", String(255), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("pid_start", Float, nullable=False),
    Column("run_id", String(64), nullable=False),
    Column("started", Float, nullable=False),
    Column("lease_until", Float, nullable=False),
)


@dataclass(frozen=True)
class Entry:
    """One journal row."""

    component: str
    step: str
    state: str
    intent: dict[str, Any]
    observed: dict[str, Any]
    run_id: str
    at: float


def _process_start(pid: int) -> float:
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.Error:
        return 0.0


class Journal:
    """The journal of one workspace: releases, their step rows and their locks."""

    def __init__(self, path: Path) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self.engine = sqlite_engine(path)
        metadata.create_all(self.engine)

    # -- releases ---------------------------------------------------------------------------

    def begin(self, version: str, configuration: str, plan: dict[str, Any]) -> int:
        """Record the release (first run only) and return its start time, which dates every
        object it creates so a rerun rebuilds them byte for byte."""
        with self.engine.begin() as c:
            row = c.execute(select(releases.c.started_at).where(
                releases.c.version == version,
                releases.c.configuration == configuration)).first()
            if row is not None:
                c.execute(releases.update().where(
                    releases.c.version == version,
                    releases.c.configuration == configuration).values(plan=json.dumps(plan)))
                return int(row[0])
            started = int(time.time())
            c.execute(releases.insert().values(version=version, configuration=configuration,
                                               started_at=started, plan=json.dumps(plan)))
            return started

    def finish(self, version: str, configuration: str, outcome: dict[str, Any]) -> None:
        """Record how the last run ended (done, failed, interrupted)."""
        with self.engine.begin() as c:
            c.execute(releases.update().where(
                releases.c.version == version,
                releases.c.configuration == configuration).values(outcome=json.dumps(outcome)))

    def release(self, version: str | None, configuration: str
                ) -> tuple[str, dict[str, Any], dict[str, Any] | None] | None:
        """(version, plan, outcome) of the named release, or of the newest one."""
        q = select(releases.c.version, releases.c.plan, releases.c.outcome).where(
            releases.c.configuration == configuration)
        if version is not None:
            q = q.where(releases.c.version == version)
        q = q.order_by(releases.c.started_at.desc()).limit(1)
        with self.engine.connect() as c:
            row = c.execute(q).first()
        if row is None:
            return None
        return row[0], json.loads(row[1]), json.loads(row[2]) if row[2] else None

    def versions(self, configuration: str) -> list[str]:
        """Every release of a configuration, newest first."""
        with self.engine.connect() as c:
            return [r[0] for r in c.execute(
                select(releases.c.version).where(releases.c.configuration == configuration)
                .order_by(releases.c.started_at.desc()))]

    # -- steps ------------------------------------------------------------------------------

    def record(self, version: str, configuration: str, component: str, step: str, state: str,
               run_id: str, intent: dict[str, Any] | None = None,
               observed: dict[str, Any] | None = None) -> None:
        """Append one row, durably."""
        assert step in STEPS, step
        with self.engine.begin() as c:
            c.execute(journal.insert().values(
                version=version, configuration=configuration, component=component, step=step,
                state=state, intent=json.dumps(intent or {}, sort_keys=True),
                observed=json.dumps(observed or {}, sort_keys=True), run_id=run_id,
                at=time.time()))

    def entries(self, version: str, configuration: str,
                component: str | None = None) -> list[Entry]:
        """Rows of a release in order (of one component when given)."""
        cond = and_(journal.c.version == version, journal.c.configuration == configuration)
        if component is not None:
            cond = and_(cond, journal.c.component == component)
        with self.engine.connect() as c:
            rows = c.execute(select(journal).where(cond).order_by(journal.c.id)).all()
        return [Entry(r.component, r.step, r.state, json.loads(r.intent or "{}"),
                      json.loads(r.observed or "{}"), r.run_id, r.at) for r in rows]

    def last_done(self, version: str, configuration: str, component: str,
                  step: str) -> dict[str, Any] | None:
        """What the newest `done` row of a step observed, or None."""
        with self.engine.connect() as c:
            row = c.execute(select(journal.c.observed).where(
                journal.c.version == version, journal.c.configuration == configuration,
                journal.c.component == component, journal.c.step == step,
                journal.c.state == "done").order_by(journal.c.id.desc()).limit(1)).first()
        return json.loads(row[0]) if row else None

    # -- lock -------------------------------------------------------------------------------

    def lock(self, version: str, configuration: str, run_id: str) -> None:
        """Take the release's lock or raise ReleaseBusyError naming its holder.

        Taken over at once on this host when the holder's process is gone (or its pid was
        reused), elsewhere only after its lease expired.
        """
        host, pid = socket.gethostname(), os.getpid()
        now = time.time()
        row_values = dict(host=host, pid=pid, pid_start=_process_start(pid), run_id=run_id,
                          started=now, lease_until=now + LEASE)
        with self.engine.begin() as c:
            held = c.execute(select(locks).where(
                locks.c.version == version, locks.c.configuration == configuration)).first()
            if held is not None:
                alive = held.lease_until > now
                if held.host == host:
                    alive = pid_matches(held.pid, held.pid_start)
                if alive and held.run_id != run_id:
                    since = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(held.started))
                    raise ReleaseBusyError(
                        f"release {version} ({configuration}) is being cut by pid {held.pid} "
                        f"on {held.host} since {since}",
                        "wait for it, or stop it; a killed run's lock is taken over")
                c.execute(locks.delete().where(locks.c.version == version,
                                               locks.c.configuration == configuration))
            c.execute(locks.insert().values(version=version, configuration=configuration,
                                            **row_values))

    def renew(self, version: str, configuration: str, run_id: str) -> None:
        """Extend this run's lease."""
        with self.engine.begin() as c:
            c.execute(locks.update().where(
                locks.c.version == version, locks.c.configuration == configuration,
                locks.c.run_id == run_id).values(lease_until=time.time() + LEASE))

    def unlock(self, version: str, configuration: str, run_id: str) -> None:
        """Release this run's lock."""
        with self.engine.begin() as c:
            c.execute(locks.delete().where(
                locks.c.version == version, locks.c.configuration == configuration,
                locks.c.run_id == run_id))
