"""Durable queue state in SQLite (WAL, synchronous=FULL, BEGIN IMMEDIATE) or PostgreSQL.

Every state transition is a compare-and-set inside one transaction, so two workers on one store
never claim the same item and a SIGKILL leaves either the old or the new state, never a mix.
Write transactions are serialised on both: SQLite by BEGIN IMMEDIATE, PostgreSQL by locking the
queue's row (`SELECT … FOR UPDATE`) first; on PostgreSQL lease times use the database clock.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psutil
from sqlalchemy import (
    ColumnElement,
    Connection,
    Engine,
    Float,
    bindparam,
    cast,
    create_engine,
    event,
    func,
    insert,
    inspect,
    literal,
    select,
    text,
    update,
)
from sqlalchemy.exc import DBAPIError

from lockstep.errors import LockstepError, NotFoundError, StateError
from lockstep.queue import schema as s
from lockstep.queue import store_url
from lockstep.queue.model import ItemView, QueueView, State, item_id

QUEUE_ID = 1
HOST = socket.gethostname()
DEFAULT_LEASE_TTL = 60.0  # [queue] lease_ttl's default: a worker row silent for twice it is dead
# pg_advisory_xact_lock key ("lockstep" in ASCII) serialising schema creation and migration.
_INIT_LOCK = 0x6C6F636B73746570


@dataclass(frozen=True)
class Item:
    """One item row, decoded."""

    seq: int
    component: str
    version: str
    sha: str
    digest: str | None
    configurations: list[str]
    priority: int
    state: State
    submitted_at: float
    submitted_base: str | None  # the integration head the submission was made against
    updated_at: float
    attempt: int
    recoveries: int
    holder: str | None
    lease_token: int | None
    lease_expires_at: float | None
    candidate: dict[str, Any] | None
    outcome: dict[str, Any] | None

    @property
    def id(self) -> str:
        """The public id, q<seq>."""
        return item_id(self.seq)

    @classmethod
    def from_row(cls, row: Any) -> Item:
        """Decode a database row."""
        m = row._mapping
        return cls(
            seq=m["seq"],
            component=m["component"],
            version=m["version"],
            sha=m["sha"],
            digest=m["digest"],
            configurations=json.loads(m["configurations"]),
            priority=m["priority"],
            state=State(m["state"]),
            submitted_at=m["submitted_at"],
            submitted_base=m["submitted_base"],
            updated_at=m["updated_at"],
            attempt=m["attempt"],
            recoveries=m["recoveries"],
            holder=m["holder"],
            lease_token=m["lease_token"],
            lease_expires_at=m["lease_expires_at"],
            candidate=json.loads(m["candidate"]) if m["candidate"] else None,
            outcome=json.loads(m["outcome"]) if m["outcome"] else None,
        )


@dataclass(frozen=True)
class QueueRow:
    """The queue's own row."""

    mode: str
    paused: bool
    paused_reason: str | None
    draining: bool
    infra_streak: int
    landing_holder: str | None
    landing_epoch: int
    landing_expires_at: float | None


def _encode_json_columns(values: dict[str, Any]) -> None:
    """The candidate and outcome columns hold JSON; accept them as dicts."""
    for key in ("candidate", "outcome"):
        if values.get(key) is not None and not isinstance(values[key], str):
            values[key] = json.dumps(values[key], sort_keys=True)


def _pk(result: Any) -> int:
    key = result.inserted_primary_key
    assert key is not None
    return int(key[0])


def sqlite_engine(path: Path) -> Engine:
    """A SQLite engine: WAL, durable commits, writers take the lock up front."""
    engine = create_engine(
        f"sqlite:///{path}",
        connect_args={"timeout": 5.0, "isolation_level": None, "check_same_thread": False},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        cur = dbapi_conn.cursor()
        cur.execute("PRAGMA journal_mode=WAL")
        cur.execute("PRAGMA synchronous=FULL")
        cur.execute("PRAGMA busy_timeout=5000")
        cur.execute("PRAGMA foreign_keys=ON")
        cur.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Connection) -> None:
        # Writers take the write lock up front (no upgrade deadlocks); readers do not take it.
        read_only = conn.get_execution_options().get("lockstep_read_only", False)
        conn.exec_driver_sql("BEGIN" if read_only else "BEGIN IMMEDIATE")

    return engine


def postgres_engine(target: store_url.StoreTarget) -> Engine:
    """A PostgreSQL engine (psycopg): pre-pinged pooled connections, bounded lock waits, and
    sessions that a vanished client leaves idle inside a transaction are ended by the server."""
    engine = create_engine(
        target.url, pool_pre_ping=True, hide_parameters=True,
        connect_args={"connect_timeout": 10, "application_name": "lockstep"},
    )

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.autocommit = True
        with dbapi_conn.cursor() as cur:
            cur.execute("SET lock_timeout = '30s'")
            cur.execute("SET idle_in_transaction_session_timeout = '300s'")
        dbapi_conn.autocommit = False

    return engine


class Store:
    """The queue store; methods take a connection from `tx()` so callers group writes."""

    def __init__(self, engine: Engine, lease_ttl: float = DEFAULT_LEASE_TTL,
                 display: str | None = None) -> None:
        self.engine = engine
        self.lease_ttl = lease_ttl
        self.is_postgres = engine.dialect.name == "postgresql"
        self.display = display or engine.url.render_as_string(hide_password=True)
        self._ready = False  # the schema and the queue row exist: write transactions lock it

    @classmethod
    def open(cls, path: Path, url: str | None = None, *,
             lease_ttl: float = DEFAULT_LEASE_TTL) -> Store:
        """Open (creating if needed) the store: PostgreSQL when LOCKSTEP_STORE_URL or `url`
        (lockstep.toml's `[store] url`) names one, else the SQLite file at path."""
        target = store_url.effective(url)
        if target is None:
            path.parent.mkdir(parents=True, exist_ok=True)
            store = cls(sqlite_engine(path), lease_ttl)
        else:
            store = cls(postgres_engine(target), lease_ttl, target.display)
        try:
            store._init()
        except DBAPIError as exc:  # unreachable, refused, or not allowed to create the tables
            store.close()
            if target is None:
                raise
            cause = store_url.redact(" ".join(str(exc.orig or exc).split()))
            raise LockstepError(f"cannot use the PostgreSQL store {target.display}: {cause}",
                                "check that the server runs and the URL, user and password "
                                f"({store_url.ENV_VAR}, PGPASSWORD or ~/.pgpass) are right"
                                ) from None
        return store

    @contextmanager
    def _init_tx(self) -> Iterator[Connection]:
        """The schema's own write transaction; on PostgreSQL it holds an advisory lock, so two
        processes opening a new database do not both create the tables."""
        with self.engine.begin() as c:
            if self.is_postgres:
                c.execute(select(func.pg_advisory_xact_lock(_INIT_LOCK)))
            yield c

    def _init(self) -> None:
        """Create, check or migrate the schema in one write transaction (all or nothing)."""
        with self._init_tx() as c:
            has_schema = inspect(c).has_table(s.schema_info.name)
            row = c.execute(select(s.schema_info.c.version)).first() if has_schema else None
            if row is None:
                s.metadata.create_all(c)
                c.execute(insert(s.schema_info).values(version=s.SCHEMA_VERSION))
            elif row[0] > s.SCHEMA_VERSION:
                raise StateError(
                    f"the queue store uses schema {row[0]}, newer than this lockstep "
                    f"understands ({s.SCHEMA_VERSION})",
                    "upgrade lockstep; never downgrade it over a store a newer one wrote",
                )
            elif row[0] < s.SCHEMA_VERSION:
                migrate(self, c, row[0])
            if c.execute(select(s.queues.c.id).where(s.queues.c.id == QUEUE_ID)).first() is None:
                c.execute(insert(s.queues).values(id=QUEUE_ID, mode="serial", paused=0,
                                                  draining=0))
        self._ready = True

    @contextmanager
    def tx(self) -> Iterator[Connection]:
        """One write transaction: BEGIN IMMEDIATE on SQLite; on PostgreSQL it first locks the
        queue's row (`SELECT … FOR UPDATE`), so writers run one at a time as on SQLite and every
        read-then-write inside (scheduling, lease tokens, the landing lock) sees no rival."""
        with self.engine.begin() as conn:
            if self.is_postgres and self._ready:
                conn.execute(select(s.queues.c.id).where(s.queues.c.id == QUEUE_ID)
                             .with_for_update())
            yield conn

    @contextmanager
    def read(self) -> Iterator[Connection]:
        """One read-only transaction: a consistent snapshot without the write lock (on
        PostgreSQL a REPEATABLE READ, READ ONLY transaction)."""
        with self.engine.connect() as conn:
            if self.is_postgres:
                conn = conn.execution_options(isolation_level="REPEATABLE READ",
                                              postgresql_readonly=True)
            conn = conn.execution_options(lockstep_read_only=True)
            with conn.begin():
                yield conn

    # --- the clock -------------------------------------------------------------------------

    def _now_sql(self) -> ColumnElement[float]:
        """The database clock in Unix seconds, as SQL (PostgreSQL: the transaction's now())."""
        return cast(func.extract("epoch", func.now()), Float)

    def now_sql(self) -> ColumnElement[float]:
        """`clock` as SQL, to read it in a statement that runs anyway: the database's clock on
        PostgreSQL, this machine's (a bound value) on SQLite."""
        if self.is_postgres:
            return self._now_sql()
        return literal(time.time(), Float)

    def clock(self, c: Connection) -> float:
        """Now, in Unix seconds, by the clock lease times are compared with: the database's on
        PostgreSQL (workers on several machines share it), this machine's on SQLite."""
        if not self.is_postgres:
            return time.time()
        return float(c.execute(select(self._now_sql())).scalar_one())

    def expiry(self, c: Connection, ttl: float) -> float:
        """When a lease or lock taken now for ttl seconds expires, by `clock`."""
        return self.clock(c) + ttl

    def close(self) -> None:
        """Release database resources."""
        self.engine.dispose()

    # --- queue row -------------------------------------------------------------------------

    def queue(self, c: Connection) -> QueueRow:
        """The queue's row."""
        m = c.execute(select(s.queues).where(s.queues.c.id == QUEUE_ID)).one()._mapping
        return QueueRow(
            mode=m["mode"],
            paused=bool(m["paused"]),
            paused_reason=m["paused_reason"],
            draining=bool(m["draining"]),
            infra_streak=m["infra_streak"],
            landing_holder=m["landing_holder"],
            landing_epoch=m["landing_epoch"],
            landing_expires_at=m["landing_expires_at"],
        )

    def update_queue(self, c: Connection, **values: Any) -> None:
        """Update columns of the queue row."""
        c.execute(update(s.queues).where(s.queues.c.id == QUEUE_ID).values(**values))

    def renew_landing_lock(self, c: Connection, worker: str, epoch: int, ttl: float) -> bool:
        """Extend the landing lock if this worker still holds it at this epoch."""
        result = c.execute(
            update(s.queues)
            .where(s.queues.c.id == QUEUE_ID, s.queues.c.landing_holder == worker,
                   s.queues.c.landing_epoch == epoch)
            .values(landing_expires_at=self._expiry_value(ttl))
        )
        if result.rowcount:
            self.heartbeat(c, worker)
        return bool(result.rowcount)

    def take_landing_lock(self, c: Connection, worker: str, ttl: float) -> int | None:
        """Take (or retake) the landing lock for ttl seconds; returns the new epoch, or None
        while another worker holds it and still works (§8: epoch + 1, expiry by `clock`)."""
        q = self.queue(c)
        now = self.clock(c)
        if q.landing_holder and q.landing_holder != worker and (
                q.landing_expires_at or 0) > now and self.worker_alive(
                    c, q.landing_holder, q.landing_expires_at, now):
            return None
        epoch = c.execute(
            update(s.queues)
            .where(s.queues.c.id == QUEUE_ID, s.queues.c.landing_epoch == q.landing_epoch)
            .values(landing_holder=worker, landing_epoch=s.queues.c.landing_epoch + 1,
                    landing_expires_at=self._expiry_value(ttl))
            .returning(s.queues.c.landing_epoch)
        ).scalar()
        return None if epoch is None else int(epoch)

    def _expiry_value(self, ttl: float) -> Any:
        """The value of an expiry column ttl seconds from now by `clock` (SQL on PostgreSQL)."""
        return self._now_sql() + ttl if self.is_postgres else time.time() + ttl

    def next_lease_token(self, c: Connection) -> int:
        """A fresh, monotonically increasing lease token (unique across concurrent workers:
        the row update is atomic, and on PostgreSQL the new value is read back by RETURNING)."""
        if self.is_postgres:
            return int(c.execute(
                update(s.queues)
                .where(s.queues.c.id == QUEUE_ID)
                .values(lease_seq=s.queues.c.lease_seq + 1)
                .returning(s.queues.c.lease_seq)
            ).scalar_one())
        c.execute(
            update(s.queues)
            .where(s.queues.c.id == QUEUE_ID)
            .values(lease_seq=s.queues.c.lease_seq + 1)
        )
        return int(
            c.execute(select(s.queues.c.lease_seq).where(s.queues.c.id == QUEUE_ID)).scalar_one()
        )

    # --- items -----------------------------------------------------------------------------

    def add_item(
        self,
        c: Connection,
        *,
        component: str,
        version: str,
        sha: str,
        configurations: list[str],
        priority: int,
        state: State = State.QUEUED,
        outcome: dict[str, Any] | None = None,
        submitted_base: str | None = None,
    ) -> int:
        """Insert a submission; returns its seq."""
        now = time.time()
        result = c.execute(
            insert(s.items).values(
                queue_id=QUEUE_ID,
                component=component,
                version=version,
                sha=sha,
                configurations=json.dumps(configurations),
                priority=priority,
                state=state.value,
                submitted_at=now,
                submitted_base=submitted_base,
                updated_at=now,
                attempt=0,
                recoveries=0,
                outcome=json.dumps(outcome) if outcome else None,
            )
        )
        seq = _pk(result)
        self.add_event(c, seq, "submitted", {"component": component, "version": version})
        return seq

    def item(self, c: Connection, seq: int) -> Item:
        """One item, or NotFoundError."""
        row = c.execute(select(s.items).where(s.items.c.seq == seq)).first()
        if row is None:
            raise NotFoundError(f"no item {item_id(seq)}", "see `lockstep queue status`")
        return Item.from_row(row)

    def items(self, c: Connection, *, include_terminal: bool = False) -> list[Item]:
        """Items by seq: the live ones (through their index; the cost does not grow with
        history), or with include_terminal every item ever submitted (tests and the demo)."""
        q = select(s.items).order_by(s.items.c.seq)
        if not include_terminal:
            q = q.where(_state_in(s.LIVE_STATES))
        return [Item.from_row(r) for r in c.execute(q)]

    def finished(self, c: Connection, limit: int, before: int | None = None) -> list[Item]:
        """Up to `limit` finished items, newest (highest seq) first, older than seq `before`
        when given: one page of history, read through its index whatever its length."""
        q = select(s.items).where(_state_in(s.FINISHED_STATES))
        if before is not None:
            q = q.where(s.items.c.seq < before)
        q = q.order_by(s.items.c.seq.desc()).limit(limit)
        return [Item.from_row(r) for r in c.execute(q)]

    def finished_ids(self, c: Connection, limit: int) -> list[str]:
        """The ids of the newest `limit` finished items, newest first."""
        q = (select(s.items.c.seq).where(_state_in(s.FINISHED_STATES))
             .order_by(s.items.c.seq.desc()).limit(limit))
        return [item_id(seq) for seq in c.execute(q).scalars()]

    def last_seq(self, c: Connection) -> int:
        """The highest item seq so far (0 for an empty store)."""
        return int(c.execute(select(s.items.c.seq).order_by(s.items.c.seq.desc()).limit(1))
                   .scalar() or 0)

    def transition(
        self, c: Connection, seq: int, expect: set[State], to: State, *,
        expect_token: int | None = None, **values: Any
    ) -> bool:
        """Compare-and-set an item's state; False when it was not in one of `expect` (or, with
        expect_token, when its lease token is no longer that one)."""
        _encode_json_columns(values)
        where = [s.items.c.seq == seq, s.items.c.state.in_([e.value for e in expect])]
        if expect_token is not None:
            where.append(s.items.c.lease_token == expect_token)
        result = c.execute(
            update(s.items).where(*where).values(state=to.value, updated_at=time.time(), **values)
        )
        if result.rowcount:
            self.add_event(c, seq, to.value, {})
        return bool(result.rowcount)

    def set_item(self, c: Connection, seq: int, **values: Any) -> None:
        """Update item columns without a state change."""
        _encode_json_columns(values)
        c.execute(update(s.items).where(s.items.c.seq == seq).values(**values))

    def renew_lease(self, c: Connection, seq: int, token: int, ttl: float) -> bool:
        """Extend a lease if it is still ours; False means it was lost (cancelled, taken over)."""
        result = c.execute(
            update(s.items)
            .where(
                s.items.c.seq == seq,
                s.items.c.lease_token == token,
                s.items.c.state.in_([State.TESTING.value, State.LANDING.value]),
            )
            .values(lease_expires_at=self._expiry_value(ttl))
        )
        if result.rowcount and self.is_postgres:
            holder = select(s.items.c.holder).where(s.items.c.seq == seq).scalar_subquery()
            c.execute(update(s.workers).where(s.workers.c.id == holder)
                      .values(heartbeat_at=self._expiry_value(0.0)))
        return bool(result.rowcount)

    def holds_lease(self, c: Connection, seq: int, token: int) -> bool:
        """Whether the lease is still ours (a read: nothing is written)."""
        row = c.execute(
            select(s.items.c.lease_token, s.items.c.state).where(s.items.c.seq == seq)
        ).first()
        return row is not None and row[0] == token and row[1] in (
            State.TESTING.value, State.LANDING.value)

    # --- runs ------------------------------------------------------------------------------

    def add_run(self, c: Connection, **values: Any) -> int:
        """Record a run that is starting; returns its id."""
        return _pk(c.execute(insert(s.runs).values(**values)))

    def finish_run(self, c: Connection, run_id: int, state: str, exit_code: int | None) -> None:
        """Record a run's result."""
        c.execute(
            update(s.runs)
            .where(s.runs.c.id == run_id)
            .values(state=state, exit_code=exit_code, ended_at=time.time())
        )

    def set_run(self, c: Connection, run_id: int, **values: Any) -> None:
        """Update run columns (the stage's pid once it started)."""
        c.execute(update(s.runs).where(s.runs.c.id == run_id).values(**values))

    def runs(self, c: Connection, seq: int) -> list[dict[str, Any]]:
        """Every run of an item, oldest first."""
        q = select(s.runs).where(s.runs.c.item_seq == seq).order_by(s.runs.c.id)
        return [dict(r._mapping) for r in c.execute(q)]

    # --- landings --------------------------------------------------------------------------

    def add_landing(self, c: Connection, **values: Any) -> int:
        """Write a landing journal row; returns its id."""
        values.setdefault("created_at", time.time())
        return _pk(c.execute(insert(s.landings).values(**values)))

    def open_landing(self, c: Connection, seq: int) -> dict[str, Any] | None:
        """The open journal row of an item, if any."""
        row = c.execute(
            select(s.landings).where(s.landings.c.item_seq == seq, s.landings.c.state == "open")
        ).first()
        return dict(row._mapping) if row else None

    def update_landing(self, c: Connection, landing_id: int, **values: Any) -> None:
        """Update a journal row."""
        c.execute(update(s.landings).where(s.landings.c.id == landing_id).values(**values))

    def last_landed_commit(self, c: Connection) -> str | None:
        """The commit of the most recent landing."""
        row = c.execute(
            select(s.landings.c.commit_sha)
            .where(s.landings.c.state == "landed")
            .order_by(s.landings.c.id.desc())
            .limit(1)
        ).first()
        return str(row[0]) if row and row[0] else None

    # --- outbox and events -----------------------------------------------------------------

    def add_outbox(self, c: Connection, event_name: str, seq: int | None, notifier: str,
                   payload: dict[str, Any]) -> str:
        """Queue a delivery for the notifier of that name; returns its stable delivery id."""
        delivery = uuid.uuid4().hex
        payload = {**payload, "delivery": delivery}
        c.execute(
            insert(s.outbox).values(
                delivery_id=delivery,
                event=event_name,
                item_seq=seq,
                notifier=notifier,
                payload=json.dumps(payload, sort_keys=True),
                state="pending",
                attempts=0,
                next_attempt_at=time.time(),
            )
        )
        return delivery

    def next_due_delivery(self, c: Connection, now: float,
                          after: int) -> dict[str, Any] | None:
        """The first pending delivery due at `now` whose id is above `after`."""
        row = c.execute(
            select(s.outbox)
            .where(s.outbox.c.state == "pending", s.outbox.c.id > after,
                   s.outbox.c.next_attempt_at <= now)
            .order_by(s.outbox.c.id)
            .limit(1)
        ).first()
        return dict(row._mapping) if row else None

    def claim_delivery(self, c: Connection, row: dict[str, Any], until: float,
                       claimant: str) -> bool:
        """Claim one due row (as read by next_due_delivery) for its send, until `until`.

        One row at a time, so a claim covers only the send under way: a slow receiver cannot
        make the claim of rows still waiting their turn expire. False when someone else got it.
        """
        result = c.execute(
            update(s.outbox)
            .where(s.outbox.c.id == row["id"], s.outbox.c.state == "pending",
                   s.outbox.c.next_attempt_at == row["next_attempt_at"])
            .values(next_attempt_at=until, claimed_by=claimant)
        )
        return bool(result.rowcount)

    def finish_delivery(self, c: Connection, row_id: int, claimant: str,
                        **values: Any) -> bool:
        """Record a delivery attempt if `claimant` still holds the row's claim."""
        result = c.execute(
            update(s.outbox)
            .where(s.outbox.c.id == row_id, s.outbox.c.state == "pending",
                   s.outbox.c.claimed_by == claimant)
            .values(claimed_by=None, **values)
        )
        return bool(result.rowcount)

    def drop_delivery(self, c: Connection, row_id: int, reason: str) -> bool:
        """Mark a pending delivery dropped (it will never be sent), saying why."""
        result = c.execute(
            update(s.outbox)
            .where(s.outbox.c.id == row_id, s.outbox.c.state == "pending")
            .values(state="dropped", claimed_by=None, last_error=reason)
        )
        return bool(result.rowcount)

    def outbox_rows(self, c: Connection, seq: int | None = None) -> list[dict[str, Any]]:
        """Every outbox row (of one item when seq is given)."""
        q = select(s.outbox).order_by(s.outbox.c.id)
        if seq is not None:
            q = q.where(s.outbox.c.item_seq == seq)
        return [dict(r._mapping) for r in c.execute(q)]

    def last_event(self, c: Connection, kind: str) -> dict[str, Any] | None:
        """The newest queue-level event of a kind, its detail decoded."""
        row = c.execute(
            select(s.events.c.detail)
            .where(s.events.c.kind == kind, s.events.c.item_seq.is_(None))
            .order_by(s.events.c.id.desc())
            .limit(1)
        ).first()
        return json.loads(row[0]) if row else None

    def item_events(self, c: Connection, seq: int) -> list[dict[str, Any]]:
        """One item's history, oldest first, details decoded."""
        q = (select(s.events.c.at, s.events.c.kind, s.events.c.detail)
             .where(s.events.c.item_seq == seq).order_by(s.events.c.id))
        return [{"at": r.at, "kind": r.kind, "detail": json.loads(r.detail)}
                for r in c.execute(q)]

    def history_accepted(self, c: Connection, lost: str) -> bool:
        """Whether a user accepted a rewritten history that lost this landed commit."""
        accepted = self.last_event(c, "history-accepted")
        return accepted is not None and accepted.get("lost") == lost

    def add_event(self, c: Connection, seq: int | None, kind: str, detail: dict[str, Any]) -> None:
        """Append to the event log."""
        c.execute(
            insert(s.events).values(
                at=time.time(), item_seq=seq, kind=kind, detail=json.dumps(detail, sort_keys=True)
            )
        )

    # --- workers and liveness --------------------------------------------------------------

    def register_worker(self, c: Connection) -> str:
        """Record this process as a worker; returns its id."""
        pid = os.getpid()
        worker = f"{HOST}:{pid}:{uuid.uuid4().hex[:6]}"
        now = self.clock(c)
        c.execute(
            insert(s.workers).values(
                id=worker,
                host=HOST,
                pid=pid,
                pid_started=psutil.Process(pid).create_time(),
                started_at=now,
                heartbeat_at=now,
            )
        )
        return worker

    def heartbeat(self, c: Connection, worker: str) -> bool:
        """Record that a worker is alive now (by `clock`); False if its row is gone. Renewing a
        lease or the landing lock does this too; an idle worker calls it every lease_ttl/4."""
        result = c.execute(update(s.workers).where(s.workers.c.id == worker)
                           .values(heartbeat_at=self._expiry_value(0.0)))
        return bool(result.rowcount)

    def forget_dead_workers(self, c: Connection) -> int:
        """Delete rows of exited workers that hold nothing: this host's whose process is gone,
        and on PostgreSQL other hosts' silent for 2·lease_ttl; returns how many."""
        held: set[str | None] = {i.holder for i in self.items(c)}
        held.add(self.queue(c).landing_holder)
        query = select(s.workers)
        if not self.is_postgres:
            query = query.where(s.workers.c.host == HOST)
        now = self.clock(c)
        gone = 0
        for row in c.execute(query).all():
            m = row._mapping
            if m["id"] in held or self._worker_row_lost(m, now) is None:
                continue
            c.execute(s.workers.delete().where(s.workers.c.id == m["id"]))
            gone += 1
        return gone

    def _worker_row_lost(self, m: Any, now: float) -> str | None:
        """Why a registered worker is dead (its pid is gone on this host, or on another host
        its row has been silent for 2·lease_ttl: PostgreSQL only, where renewals record
        heartbeats), or None while it may still work."""
        if m["host"] == HOST:
            if not pid_matches(m["pid"], m["pid_started"]):
                return f"its process {m['pid']} is gone"
            return None
        silent = now - m["heartbeat_at"]
        if self.is_postgres and silent > 2 * self.lease_ttl:
            return f"its worker on {m['host']} has been silent for {silent:.0f}s"
        return None

    def worker_alive(self, c: Connection, worker: str | None, lease_expires_at: float | None,
                     now: float) -> bool:
        """Whether a holder still works: a dead pid on this host is dead at once, else the lease."""
        return self.holder_lost(c, worker, lease_expires_at, now) is None

    def holder_lost(self, c: Connection, worker: str | None, lease_expires_at: float | None,
                    now: float) -> str | None:
        """Why a holder no longer works (its pid is gone on this host, its worker on another
        host fell silent, or its lease expired), or None while it does.

        `now` is the caller's clock; on PostgreSQL the database clock decides instead, since
        leases were set by it and the caller may run on a machine whose clock differs.
        """
        if not worker:
            return "no worker holds it"
        row = c.execute(select(s.workers).where(s.workers.c.id == worker)).first()
        if row is None:
            return f"worker {worker} is not registered"
        if self.is_postgres:
            now = self.clock(c)
        why = self._worker_row_lost(row._mapping, now)
        if why is not None:
            return why
        if lease_expires_at is None or lease_expires_at <= now:
            return "its lease expired"
        return None

    def view(self, c: Connection, max_recoveries: int) -> QueueView:
        """The scheduler's snapshot of the queue (lease expiry judged by `clock`)."""
        now = self.clock(c)
        q = self.queue(c)
        # Only the columns the scheduler reads: no JSON decoded for 10,000 queued items.
        t = s.items.c
        live = c.execute(select(t.seq, t.priority, t.state, t.holder, t.lease_expires_at,
                                t.recoveries).where(_state_in(s.LIVE_STATES)).order_by(t.seq)).all()
        views = tuple(
            ItemView(
                id=item_id(seq),
                seq=seq,
                priority=priority,
                state=_STATES[state],
                holder_alive=bool(holder) and self.worker_alive(c, holder, expires, now),
                recoveries=recoveries,
            )
            for seq, priority, state, holder, expires, recoveries in live
        )
        return QueueView(q.paused, views, max_recoveries, q.paused_reason, q.draining)


_STATES = {state.value: state for state in State}


def _state_in(states: tuple[str, ...]) -> ColumnElement[bool]:
    """`state IN (...)` with the states as literals, so SQLite matches the partial index."""
    return s.items.c.state.in_(bindparam("states", list(states), literal_execute=True))


def migrate(store: Store, c: Connection, version: int) -> None:
    """Bring a store written by an older lockstep to SCHEMA_VERSION (inside the caller's tx),
    one version step after the other; one `schema-migrated` event records the whole upgrade.

    1 → 2: items record the integration head they were submitted against (NULL for older items,
    which then count from their first candidate's base). Outbox rows were bound to a notifier by
    its list position, which cannot be mapped to a name safely, so pending rows are dropped with
    a reason (never sent to whichever notifier now has that position); delivered and failed rows
    keep their history, without a notifier. The items.state index gives way to the partial
    indexes of live and finished items.

    2 → 3: the pipeline scheduler's columns and tables (see `_migrate_2_to_3`).

    3 → 4: pipeline runs record their process (host, pid, its start time).
    """
    assert 1 <= version < s.SCHEMA_VERSION, version
    dropped = 0
    if version == 1:
        dropped = _migrate_1_to_2(store, c)
    if version <= 2:
        _migrate_2_to_3(store, c)  # creates pipeline_runs (create_all below) with v4's columns
    else:
        host = "VARCHAR" if store.is_postgres else "VARCHAR(255)"
        for column, kind in (("host", host), ("pid", "INTEGER"), ("pid_started", "FLOAT")):
            c.execute(text(f"ALTER TABLE pipeline_runs ADD COLUMN {column} {kind}"))
    s.metadata.create_all(c)
    c.execute(update(s.schema_info).values(version=s.SCHEMA_VERSION))
    store.add_event(c, None, "schema-migrated", {"from": version, "to": s.SCHEMA_VERSION,
                                                 "deliveries_dropped": dropped})


def _migrate_1_to_2(store: Store, c: Connection) -> int:
    """Schema 1 → 2 (see `migrate`); returns how many pending deliveries were dropped."""
    dropped = _migrate_outbox_in_place(c) if store.is_postgres else _migrate_outbox_by_copy(c)
    column = "VARCHAR" if store.is_postgres else "VARCHAR(40)"
    c.execute(text(f"ALTER TABLE items ADD COLUMN submitted_base {column}"))
    c.execute(text("DROP INDEX IF EXISTS ix_items_state"))
    for table in (s.items, s.landings, s.events, s.outbox):
        for index in table.indexes:
            if index.name != "ix_items_positioned" and index.name != "ix_items_waiting":
                index.create(c, checkfirst=True)
    return dropped


def _migrate_2_to_3(store: Store, c: Connection) -> None:
    """Schema 2 → 3: items gain position, group and candidate id (NULL: every existing item
    waits, as the serial worker never placed one in the pipeline); the queue row gains the
    pipeline's counters (window NULL: not chosen yet); the front's indexes; the candidates,
    pipeline_runs and runners tables are created empty by the caller's create_all."""
    short = "VARCHAR" if store.is_postgres else "VARCHAR(32)"
    for table, column, kind in (
            ("items", "position", "INTEGER"), ("items", '"group"', "INTEGER"),
            ("items", "candidate_id", short), ("queues", '"window"', "INTEGER")):
        c.execute(text(f"ALTER TABLE {table} ADD COLUMN {column} {kind}"))
    for column, start in (("landed_count", 0), ("external_commits", 0), ("next_candidate", 1),
                          ("next_group", 1), ("next_position", 1)):
        c.execute(text(f"ALTER TABLE queues ADD COLUMN {column} INTEGER NOT NULL "
                       f"DEFAULT {start}"))
    for index in s.items.indexes:
        if index.name in ("ix_items_positioned", "ix_items_waiting"):
            index.create(c, checkfirst=True)


def _dropped_reason(notifier: Any) -> str:
    """Why the 1 → 2 upgrade drops a pending delivery queued for a notifier list position."""
    return (f"dropped by the upgrade to store schema 2, not sent: it was queued for "
            f"notifiers.{notifier} by position, which cannot be matched to a notifier name "
            "safely")


def _migrate_outbox_in_place(c: Connection) -> int:
    """PostgreSQL, 1 → 2: pending rows dropped, the notifier column emptied and made a name,
    the claim column added; the table keeps its constraints and its id sequence. Returns how
    many rows were dropped."""
    pending = c.execute(text("SELECT id, notifier FROM outbox WHERE state = 'pending'"))
    rows = pending.mappings().all()
    for row in rows:
        c.execute(update(s.outbox).where(s.outbox.c.id == row["id"])
                  .values(state="dropped", last_error=_dropped_reason(row["notifier"])))
    c.execute(text("ALTER TABLE outbox ALTER COLUMN notifier DROP NOT NULL"))
    c.execute(text("ALTER TABLE outbox ALTER COLUMN notifier TYPE VARCHAR USING NULL"))
    c.execute(text("ALTER TABLE outbox ADD COLUMN claimed_by VARCHAR"))
    return len(rows)


def _migrate_outbox_by_copy(c: Connection) -> int:
    """SQLite, 1 → 2 (it cannot change a column's type): the table is rebuilt by copy. Returns
    how many pending rows were dropped."""
    c.execute(text("ALTER TABLE outbox RENAME TO outbox_v1"))
    s.outbox.create(c)
    old = c.execute(text("SELECT id, delivery_id, event, item_seq, notifier, payload, state, "
                         "attempts, next_attempt_at, last_error FROM outbox_v1 ORDER BY id"))
    dropped = 0
    for r in old.mappings():
        state, error = r["state"], r["last_error"]
        if state == "pending":
            state, dropped = "dropped", dropped + 1
            error = _dropped_reason(r["notifier"])
        c.execute(insert(s.outbox).values(
            id=r["id"], delivery_id=r["delivery_id"], event=r["event"], item_seq=r["item_seq"],
            notifier=None, payload=r["payload"], state=state, attempts=r["attempts"],
            next_attempt_at=r["next_attempt_at"], last_error=error))
    c.execute(text("DROP TABLE outbox_v1"))
    return dropped


def pid_matches(pid: int, started: float) -> bool:
    """Whether pid is still the process that started at `started` (not exited, not reused)."""
    try:
        proc = psutil.Process(pid)
        return bool(abs(proc.create_time() - started) <= 1.0
                    and proc.status() != psutil.STATUS_ZOMBIE)
    except psutil.NoSuchProcess:
        return False


def require_state(item: Item, allowed: set[State], action: str) -> None:
    """Raise StateError unless the item is in one of the allowed states."""
    if item.state not in allowed:
        raise StateError(f"cannot {action} {item.id}: it is {item.state.value}")
