"""The queue store on both backends: SQLite (the default file) and a real PostgreSQL server the
tests start themselves. Each behaviour runs on both; where the backends differ on purpose (the
clock leases are judged by, heartbeats of workers on other hosts), the test says which is which."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import insert, select, text, update

from lockstep.cli.main import run as cli_run
from lockstep.errors import ConfigError, StateError
from lockstep.queue import schema as s
from lockstep.queue import store as store_mod
from lockstep.queue import store_url
from lockstep.queue.model import State
from lockstep.queue.store import HOST, Store
from tests.infra import free_port, postgres
from tests.infra.postgres import PostgresServer
from tests.system import System, process_running, wait_started
from tests.test_outbox import V1_DDL, v1_store

postgres_server = postgres.postgres_server  # the fixtures: one server per xdist worker,
postgres_url = postgres.postgres_url  # a fresh database per test
BACKENDS = ("sqlite", "postgres")
SECRET = "hunter2-not-shown"


@pytest.fixture(autouse=True)
def no_store_url_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A developer's own LOCKSTEP_STORE_URL must not redirect these tests."""
    monkeypatch.delenv(store_url.ENV_VAR, raising=False)


@pytest.fixture(params=BACKENDS)
def url(request: pytest.FixtureRequest) -> str | None:
    """None for the SQLite file, else the URL of a fresh PostgreSQL database."""
    if request.param == "sqlite":
        return None
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture
def open_store(tmp_path: Path, url: str | None) -> Iterator[Callable[[], Store]]:
    """Opens another handle on the test's store (as another worker would); all closed after."""
    opened: list[Store] = []

    def opener() -> Store:
        """A new handle on the same store."""
        store = Store.open(tmp_path / "queue.db", url=url)
        opened.append(store)
        return store

    yield opener
    for store in opened:
        store.close()


@pytest.fixture
def store(open_store: Callable[[], Store]) -> Store:
    """The test's store, on the backend of the run."""
    return open_store()


def add(store: Store, c: Any, component: str = "alpha", priority: int = 0) -> int:
    """Submit a bump of component (inside c); its seq."""
    return store.add_item(c, component=component, version="v1.1.0", sha="a" * 40,
                          configurations=["default", "edge"], priority=priority)


def run_together(n: int, work: Callable[[int], Any]) -> list[Any]:
    """Run work(0..n-1) on n threads released at once by a barrier; their results, in order.
    A thread's exception fails the caller."""
    barrier = threading.Barrier(n)
    results: list[Any] = [None] * n
    errors: list[BaseException] = []

    def body(k: int) -> None:
        """Wait for the others, then work; keep any exception for the caller."""
        try:
            barrier.wait(timeout=30)
            results[k] = work(k)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=body, args=(k,)) for k in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=120)
    assert not errors, errors
    assert not any(t.is_alive() for t in threads)
    return results


# --- items and transitions --------------------------------------------------------------------


def test_items_round_trip_and_transitions_compare_and_set(store: Store) -> None:
    """Columns come back as written (JSON, floats); a transition happens only from the
    expected state and lease token, and each one is in the item's history."""
    with store.tx() as c:
        seq = add(store, c)
        other = add(store, c, "beta", priority=5)
    with store.tx() as c:
        assert store.transition(c, seq, {State.QUEUED}, State.TESTING, holder="w",
                                lease_token=7, candidate={"base": "b" * 40, "items": ["q1"]})
        assert not store.transition(c, seq, {State.QUEUED}, State.TESTING)  # no longer queued
        assert not store.transition(c, seq, {State.TESTING}, State.PASSED, expect_token=8)
        assert store.transition(c, seq, {State.TESTING}, State.PASSED, expect_token=7)
        assert store.transition(c, other, {State.QUEUED}, State.CANCELLED,
                                outcome={"by": "me", "at": 1.5})
    with store.read() as c:
        item = store.item(c, seq)
        live = [i.seq for i in store.items(c)]
        everything = [i.seq for i in store.items(c, include_terminal=True)]
        finished = [i.seq for i in store.finished(c, 10)]
        kinds = [e["kind"] for e in store.item_events(c, seq)]
        last = store.last_seq(c)
    assert (item.state, item.lease_token, item.holder) == (State.PASSED, 7, "w")
    assert item.configurations == ["default", "edge"]
    assert item.candidate == {"base": "b" * 40, "items": ["q1"]}
    assert isinstance(item.submitted_at, float) and item.updated_at >= item.submitted_at
    assert (live, everything, finished, last) == ([seq], [seq, other], [other], other)
    assert kinds == ["submitted", "testing", "passed"]


def test_concurrent_claims_of_one_item_let_exactly_one_win(
        open_store: Callable[[], Store]) -> None:
    """Eight workers (own connections) try to claim the same queued items at the same moment."""
    first = open_store()
    with first.tx() as c:
        seqs = [add(first, c) for _ in range(5)]
    stores = [open_store() for _ in range(8)]

    def claim(k: int) -> list[int]:
        """Try to claim every item as worker k; the seqs it won."""
        won = []
        for seq in seqs:
            with stores[k].tx() as c:
                token = stores[k].next_lease_token(c)
                if stores[k].transition(c, seq, {State.QUEUED}, State.TESTING,
                                        holder=f"w{k}", lease_token=token):
                    won.append(seq)
        return won

    winners = run_together(len(stores), claim)
    assert sorted(seq for won in winners for seq in won) == seqs  # each claimed once, by one


# --- lease tokens and leases ------------------------------------------------------------------


def test_lease_tokens_are_unique_under_concurrency(open_store: Callable[[], Store]) -> None:
    """Six workers (own connections) take 20 tokens each at the same time."""
    stores = [open_store() for _ in range(6)]
    per_thread = 20

    def take(k: int) -> list[int]:
        """Worker k's tokens, in the order it got them."""
        tokens = []
        for _ in range(per_thread):
            with stores[k].tx() as c:
                tokens.append(stores[k].next_lease_token(c))
        return tokens

    results = run_together(len(stores), take)
    tokens = [t for r in results for t in r]
    assert len(set(tokens)) == len(tokens) == len(stores) * per_thread
    assert sorted(tokens) == list(range(1, len(tokens) + 1))  # none skipped, none reused
    assert all(r == sorted(r) for r in results)  # increasing for each worker


class ShiftedClock:
    """Stands in for the store module's `time`: this machine's clock moved by `offset`."""

    def __init__(self, offset: float) -> None:
        """Move the clock by offset seconds."""
        self.offset = offset

    def time(self) -> float:
        """time.time(), moved."""
        return time.time() + self.offset


def test_leases_expire_by_the_database_clock(store: Store, url: str | None,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """A lease renewed for 60 s. This machine's clock then jumps an hour: on PostgreSQL the
    lease still holds (the database's clock set and judges it, as for workers on several
    machines); on SQLite, one machine's clock is the store's clock, so it expired."""
    with store.tx() as c:
        me = store.register_worker(c)
        seq = add(store, c)
        token = store.next_lease_token(c)
        assert store.transition(c, seq, {State.QUEUED}, State.TESTING, holder=me,
                                lease_token=token, lease_expires_at=store.expiry(c, 60))
        assert store.renew_lease(c, seq, token, 60.0)
        assert not store.renew_lease(c, seq, token + 1, 60.0)  # not ours
        clock = store.clock(c)
    with store.read() as c:
        expires = store.item(c, seq).lease_expires_at
        assert store.view(c, 3).items[0].holder_alive
    assert expires is not None and 59.0 < expires - clock < 61.0
    assert abs(clock - time.time()) < 5.0  # the server runs on this machine: same clock
    with monkeypatch.context() as shifted, store.read() as c:
        shifted.setattr(store_mod, "time", ShiftedClock(3600.0))
        alive = store.view(c, 3).items[0].holder_alive
        why = store.holder_lost(c, me, expires, time.time() + 3600.0)
    if url is None:
        assert (alive, why) == (False, "its lease expired")
    else:
        assert (alive, why) == (True, None)
    # A lease past its expiry by the store's clock is lost on both.
    with store.tx() as c:
        store.set_item(c, seq, lease_expires_at=store.clock(c) - 1.0)
    with store.read() as c:
        assert not store.view(c, 3).items[0].holder_alive
        assert store.holder_lost(c, me, store.clock(c) - 1.0, time.time()) == "its lease expired"


def test_holders_on_other_hosts_are_judged_by_heartbeat_and_lease(
        store: Store, url: str | None) -> None:
    """A dead pid on this host is lost at once. A holder on another host has no pid we can
    check: on PostgreSQL it is lost once its worker row is silent for 2·lease_ttl (or its lease
    ran out); on SQLite (one machine only) the lease alone decides."""
    with store.tx() as c:
        now = store.clock(c)
        for worker, host, pid, beat in (("here-dead", HOST, 2 ** 22 + 17, now),
                                        ("far-live", "far.example", os.getpid(), now),
                                        ("far-silent", "far.example", 1, now - 3 * 60.0)):
            c.execute(insert(s.workers).values(id=worker, host=host, pid=pid, pid_started=0.0,
                                               started_at=now, heartbeat_at=beat))
        lease = store.expiry(c, 60)
        why = {w: store.holder_lost(c, w, lease, time.time())
               for w in ("here-dead", "far-live", "far-silent")}
        expired = store.holder_lost(c, "far-live", now - 1.0, time.time())
        forgotten = store.forget_dead_workers(c)
        left = set(c.execute(select(s.workers.c.id)).scalars())
    assert why["here-dead"] == f"its process {2 ** 22 + 17} is gone"
    assert why["far-live"] is None
    assert expired == "its lease expired"
    if url is None:
        assert why["far-silent"] is None
        assert (forgotten, left) == (1, {"far-live", "far-silent"})
    else:
        assert why["far-silent"] is not None and "far.example has been silent" in why["far-silent"]
        assert (forgotten, left) == (2, {"far-live"})


def test_renewing_a_lease_is_a_heartbeat_on_postgres(store: Store, url: str | None) -> None:
    """On PostgreSQL a renewal also stamps the holder's worker row; SQLite leaves it."""
    with store.tx() as c:
        me = store.register_worker(c)
        c.execute(update(s.workers).where(s.workers.c.id == me).values(heartbeat_at=0.0))
        seq = add(store, c)
        assert store.transition(c, seq, {State.QUEUED}, State.TESTING, holder=me,
                                lease_token=1, lease_expires_at=store.expiry(c, 60))
        assert store.renew_lease(c, seq, 1, 60.0)
        beat = c.execute(select(s.workers.c.heartbeat_at)
                         .where(s.workers.c.id == me)).scalar_one()
        assert store.heartbeat(c, me) and not store.heartbeat(c, "nobody")
        after = c.execute(select(s.workers.c.heartbeat_at)
                          .where(s.workers.c.id == me)).scalar_one()
    assert after > 0.0
    assert (beat > 0.0) == (url is not None)  # SQLite keeps its behaviour: pid, then lease


# --- the landing lock -------------------------------------------------------------------------


def test_landing_lock_epochs_and_fencing(store: Store) -> None:
    """Each take is a new epoch; only the holder at the current epoch renews; an expired
    lock is taken over and fences the old holder."""
    with store.tx() as c:
        first, second = store.register_worker(c), store.register_worker(c)
        assert store.take_landing_lock(c, first, 60.0) == 1
        assert store.take_landing_lock(c, second, 60.0) is None  # held and alive
        assert store.renew_landing_lock(c, first, 1, 60.0)
        assert not store.renew_landing_lock(c, second, 1, 60.0)
        assert store.take_landing_lock(c, first, 60.0) == 2  # retaken: a new epoch
        assert not store.renew_landing_lock(c, first, 1, 60.0)  # the old epoch is fenced
        store.update_queue(c, landing_expires_at=store.clock(c) - 1.0)  # it expired
        assert store.take_landing_lock(c, second, 60.0) == 3
        assert not store.renew_landing_lock(c, first, 2, 60.0)
        q = store.queue(c)
    assert (q.landing_holder, q.landing_epoch) == (second, 3)
    assert q.landing_expires_at is not None


def test_landing_lock_races_have_one_winner(open_store: Callable[[], Store]) -> None:
    """Six live workers (own connections) take the free lock at the same moment."""
    stores = [open_store() for _ in range(6)]
    with stores[0].tx() as c:
        workers = [stores[0].register_worker(c) for _ in stores]  # all alive: this process

    def take(k: int) -> int | None:
        """Worker k's try: the epoch it got, or None."""
        with stores[k].tx() as c:
            return stores[k].take_landing_lock(c, workers[k], 60.0)

    epochs = run_together(len(stores), take)
    assert sorted(e for e in epochs if e is not None) == [1]
    with stores[0].read() as c:
        assert stores[0].queue(c).landing_holder == workers[epochs.index(1)]


# --- the outbox -------------------------------------------------------------------------------


def test_outbox_claims_by_two_workers_never_both_succeed(
        open_store: Callable[[], Store]) -> None:
    a, b = open_store(), open_store()
    with a.tx() as c:
        for n in range(10):
            a.add_outbox(c, "rejected", None, "hook", {"n": n})
    with a.read() as c:
        due = [a.next_due_delivery(c, time.time() + 1.0, after) for after in range(10)]
    rows = [r for r in due if r is not None]
    assert [r["id"] for r in rows] == list(range(1, 11))

    def claim(k: int) -> list[bool]:
        """Sender k claims every row in turn; which claims it won."""
        mine = (a, b)[k]
        won = []
        for row in rows:
            with mine.tx() as c:
                won.append(mine.claim_delivery(c, row, time.time() + 60.0, f"sender{k}"))
        return won

    first, second = run_together(2, claim)
    assert [x != y for x, y in zip(first, second, strict=True)] == [True] * len(rows)
    row = rows[0]
    winner, loser = ("sender0", "sender1") if first[0] else ("sender1", "sender0")
    with a.tx() as c:
        assert not a.finish_delivery(c, row["id"], loser, state="delivered", attempts=1)
        assert a.finish_delivery(c, row["id"], winner, state="delivered", attempts=1)
        assert not a.claim_delivery(c, row, time.time() + 60.0, loser)  # no longer pending
        assert a.drop_delivery(c, rows[1]["id"], "gone")
    with a.read() as c:
        states = [r["state"] for r in a.outbox_rows(c)]
        payload = json.loads(a.outbox_rows(c)[0]["payload"])
    assert states[:3] == ["delivered", "dropped", "pending"]
    assert payload["n"] == 0 and payload["delivery"] == row["delivery_id"]


# --- the scheduler's view ---------------------------------------------------------------------


def test_view_lists_live_items_with_holder_liveness(store: Store) -> None:
    """The scheduler's snapshot: live items by seq with priority, state, recoveries, and
    whether their holder works; the queue's pause."""
    with store.tx() as c:
        me = store.register_worker(c)
        queued = add(store, c, "alpha", priority=1)
        testing = add(store, c, "beta")
        stale = add(store, c, "gamma")
        done = add(store, c, "alpha")
        assert store.transition(c, testing, {State.QUEUED}, State.TESTING, holder=me,
                                lease_token=1, lease_expires_at=store.expiry(c, 60))
        assert store.transition(c, stale, {State.QUEUED}, State.TESTING, holder="gone:1:x",
                                lease_token=2, lease_expires_at=store.expiry(c, 60),
                                recoveries=2)
        assert store.transition(c, done, {State.QUEUED}, State.LANDED)
        store.update_queue(c, paused=1, paused_reason="user")
    with store.read() as c:
        view = store.view(c, 3)
    assert (view.paused, view.paused_reason, view.draining, view.max_recoveries) == (
        True, "user", False, 3)
    assert [(i.seq, i.state, i.priority, i.holder_alive, i.recoveries) for i in view.items] == [
        (queued, State.QUEUED, 1, False, 0), (testing, State.TESTING, 0, True, 0),
        (stale, State.TESTING, 0, False, 2)]


# --- schema versions --------------------------------------------------------------------------


def postgres_v1_store(pg_url: str) -> None:
    """The schema-1 tables of test_outbox, as SQLAlchemy would have made them on PostgreSQL
    (serial ids), with their rows; the id sequences continue after the rows."""
    ddl = V1_DDL.replace("(id INTEGER NOT NULL", "(id SERIAL NOT NULL").replace(
        "(seq INTEGER NOT NULL", "(seq SERIAL NOT NULL")
    raw = Store(store_mod.postgres_engine(store_url.parse(pg_url, "")))
    with raw.engine.begin() as c:
        for statement in ddl.split(";"):
            if statement.strip():
                c.exec_driver_sql(statement)
        for table, column in (("items", "seq"), ("outbox", "id"), ("events", "id")):
            c.execute(text(f"SELECT setval(pg_get_serial_sequence('{table}', '{column}'), "
                           f"(SELECT coalesce(max({column}), 0) + 1 FROM {table}), false)"))
    raw.close()


def test_v1_store_migrates_on_both_backends(tmp_path: Path, url: str | None) -> None:
    """Schema 1 → 2 on both: history kept, pending deliveries dropped with a reason, new rows
    continue the ids; reopening migrates nothing more."""
    if url is None:
        v1_store(tmp_path / "queue.db")
    else:
        postgres_v1_store(url)
    store = Store.open(tmp_path / "queue.db", url=url)
    try:
        with store.read() as c:
            version = c.execute(s.schema_info.select()).scalar_one()
            by_id = {r["delivery_id"]: r for r in store.outbox_rows(c)}
            live = [i.id for i in store.items(c)]
            finished = [i.id for i in store.finished(c, 10)]
            migrated = store.last_event(c, "schema-migrated")
        assert version == s.SCHEMA_VERSION == 4
        assert migrated == {"from": 1, "to": 4, "deliveries_dropped": 1}
        assert [(r["state"], r["attempts"]) for r in by_id.values()] == [
            ("delivered", 2), ("failed", 5), ("dropped", 1)]
        assert "notifiers.1 by position" in by_id["d-pending"]["last_error"]
        assert all(r["notifier"] is None for r in by_id.values())
        assert (live, finished) == (["q2"], ["q1"])
        with store.tx() as c:  # new rows continue the ids and use the new columns
            seq = store.add_item(c, component="gamma", version="v1.2.0", sha="c" * 40,
                                 configurations=["default"], priority=0, submitted_base="d" * 40)
            store.add_outbox(c, "landed", seq, "hook", {"n": 4})
            rows = store.outbox_rows(c)
            assert store.claim_delivery(c, rows[-1], time.time() + 60, "me")
        assert seq == 3 and [r["id"] for r in rows] == [1, 2, 3, 4]
        assert rows[-1]["notifier"] == "hook"
    finally:
        store.close()
    again = Store.open(tmp_path / "queue.db", url=url)  # reopening migrates nothing more
    with again.read() as c:
        assert [e for e in store_events(again, c) if e == "schema-migrated"] == ["schema-migrated"]
    again.close()


def store_events(store: Store, c: Any) -> list[str]:
    """The kinds of the queue-level events, oldest first."""
    return list(c.execute(select(s.events.c.kind).where(s.events.c.item_seq.is_(None))).scalars())


def test_store_newer_than_lockstep_is_refused(tmp_path: Path, url: str | None) -> None:
    """A schema version above this lockstep's is refused on both backends."""
    Store.open(tmp_path / "queue.db", url=url).close()
    store = Store.open(tmp_path / "queue.db", url=url)
    with store.tx() as c:
        c.execute(update(s.schema_info).values(version=s.SCHEMA_VERSION + 1))
    store.close()
    with pytest.raises(StateError, match=f"schema {s.SCHEMA_VERSION + 1}, newer than"):
        Store.open(tmp_path / "queue.db", url=url)


def test_concurrent_opens_of_a_new_postgres_database_create_one_schema(
        tmp_path: Path, postgres_url: str) -> None:
    """Four stores open one empty database at once: the tables and the queue row are
    created once (an advisory lock), and no SQLite file appears."""
    stores = run_together(4, lambda _k: Store.open(tmp_path / "unused.db", url=postgres_url))
    with stores[0].read() as c:
        assert c.execute(select(s.schema_info.c.version)).scalars().all() == [s.SCHEMA_VERSION]
        assert c.execute(select(s.queues.c.id)).scalars().all() == [1]
    for st in stores:
        st.close()
    assert not (tmp_path / "unused.db").exists()


# --- choosing the store -----------------------------------------------------------------------


def test_environment_url_wins_over_the_configured_one(
        tmp_path: Path, postgres_server: PostgresServer,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """LOCKSTEP_STORE_URL is used instead of the configured URL, and only while it is set."""
    configured, chosen = postgres_server.create_database(), postgres_server.create_database()
    try:
        monkeypatch.setenv(store_url.ENV_VAR, postgres_server.url(chosen))
        store = Store.open(tmp_path / "queue.db", url=postgres_server.url(configured))
        assert store.is_postgres and chosen in store.display
        with store.tx() as c:
            add(store, c)
        store.close()
        monkeypatch.delenv(store_url.ENV_VAR)
        other = Store.open(tmp_path / "queue.db", url=postgres_server.url(configured))
        with other.read() as c:
            assert other.items(c) == []
        other.close()
        assert not (tmp_path / "queue.db").exists()
    finally:
        postgres_server.drop_database(configured)
        postgres_server.drop_database(chosen)


@pytest.fixture
def workspace(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The least a CLI command opens: a git repository with a lockstep.toml (cwd there)."""
    root = tmp_path / "ws"
    root.mkdir()
    subprocess.run(["git", "init", "--quiet", str(root)], check=True)
    (root / "lockstep.toml").write_text('[integration]\nremote = "origin"\n')
    monkeypatch.chdir(root)
    return root


def cli(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    """Run the CLI in-process: its exit code, stdout and stderr."""
    with pytest.raises(SystemExit) as exc:
        cli_run(argv)
    out, err = capsys.readouterr()
    return int(exc.value.code or 0), out, err


BAD_URLS = {
    "other-database": f"mysql://relbot:{SECRET}@db.example/queue",
    "sqlite-url": "sqlite:///tmp/queue.db",
    "no-scheme": f"relbot:{SECRET}@db.example/queue",
    "bad-port": f"postgresql://relbot:{SECRET}@db.example:99999/queue",
    "no-database": f"postgresql://relbot:{SECRET}@db.example",
    "other-driver": f"postgresql+psycopg2://relbot:{SECRET}@db.example/queue",
}


@pytest.mark.parametrize("case", BAD_URLS)
def test_bad_store_url_in_the_environment_is_one_line_exit_2(
        case: str, workspace: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """A LOCKSTEP_STORE_URL lockstep cannot use: one line naming the variable and the forms
    that work, exit 2, the password never shown, nothing created."""
    monkeypatch.setenv(store_url.ENV_VAR, BAD_URLS[case])
    code, out, err = cli(["queue", "status"], capsys)
    assert code == 2
    assert err.startswith(f"error: {store_url.ENV_VAR}: ") and err.count("\n") == 1, err
    assert "postgresql://USER@HOST" in err and SECRET not in err + out
    assert not (workspace / ".lockstep" / "queue.db").exists()


@pytest.mark.parametrize(("value", "expected"), [
    (f"mysql://relbot:{SECRET}@db.example/queue", "unsupported store URL"),
    (f"postgresql://relbot:{SECRET}@db.example/queue", "holds a password"),
    ("postgresql://relbot@db.example/queue?password=" + SECRET, "holds a password"),
])
def test_bad_store_url_in_lockstep_toml_is_one_line_exit_2(
        value: str, expected: str, workspace: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """A bad `[store] url`, or one holding a password: one line, exit 2, password hidden."""
    toml = workspace / "lockstep.toml"
    toml.write_text(toml.read_text() + f'\n[store]\nurl = "{value}"\n')
    code, out, err = cli(["queue", "status"], capsys)
    assert code == 2
    assert err.startswith("error: lockstep.toml: store.url: ") and err.count("\n") == 1, err
    assert expected in err and SECRET not in err + out


def test_unreachable_server_is_one_line_without_the_password(
        workspace: Path, monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """No server at the URL: one line, exit 1, the URL shown without its password."""
    port = free_port()  # nothing listens there
    monkeypatch.setenv(store_url.ENV_VAR, f"postgresql://relbot:{SECRET}@127.0.0.1:{port}/q")
    code, out, err = cli(["queue", "status"], capsys)
    assert code == 1
    assert err.startswith("error: cannot use the PostgreSQL store postgresql://relbot:***@")
    assert err.count("\n") == 1 and SECRET not in err + out


def test_url_checks_and_redaction() -> None:
    """Accepted forms, the driver they get, socket directories, and redaction."""
    target = store_url.parse("postgresql://relbot@db.example:5433/queue?sslmode=require", "")
    assert target.url == "postgresql+psycopg://relbot@db.example:5433/queue?sslmode=require"
    assert not target.has_password
    socket_dir = store_url.parse("postgresql:///queue?host=/run/postgresql", "")
    assert socket_dir.url == "postgresql+psycopg:///queue?host=/run/postgresql"
    assert store_url.redact(f"x postgresql://u:{SECRET}@h/db?a=1&password={SECRET} y") == (
        "x postgresql://u:***@h/db?a=1&password=*** y")
    assert store_url.effective(None, {}) is None
    assert store_url.effective(None, {store_url.ENV_VAR: "  "}) is None
    with pytest.raises(ConfigError, match="names no host"):
        store_url.effective("postgresql:///queue", {})


# --- a real queue on PostgreSQL ---------------------------------------------------------------


def test_two_queue_run_processes_share_a_postgres_queue(
        tmp_path: Path, postgres_url: str,
        monkeypatch: pytest.MonkeyPatch) -> None:
    """A real `lockstep queue submit` (then two more in-process) and two `lockstep queue run`
    processes, all on LOCKSTEP_STORE_URL: every item finishes once, each stage runs once per
    item, and the SQLite file is never created."""
    system = System.create(tmp_path, stages=("build", "check"), configurations=("default",))
    monkeypatch.setenv(store_url.ENV_VAR, postgres_url)
    system.set_rules({"check": {"fail_if": [["beta", "v1.1.0"]], "exit": 3}})
    submitted = system.cli("queue", "submit", "alpha", "v1.1.0", "--json")
    assert submitted.returncode == 0, submitted.stderr
    ids = [json.loads(submitted.stdout)["id"]]
    ids += [system.submit(c, "v1.1.0").id for c in ("beta", "gamma")]
    workers = [system.start_worker("--json") for _ in range(2)]
    outcomes: Counter[str] = Counter()
    for w in workers:
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        report = json.loads(out)
        outcomes.update({i: 1 for i in report["landed"]})
        outcomes.update({i: 1 for i in report["rejected"]})
    assert outcomes == Counter({i: 1 for i in ids})  # each item finished once, by one worker
    store = Store.open(system.workspace().store_path, url=postgres_url)
    with store.read() as c:
        states = {i.id: i.state for i in store.items(c, include_terminal=True)}
        landings = c.execute(select(s.landings.c.item_seq, s.landings.c.state)).all()
    store.close()
    assert states == {ids[0]: State.LANDED, ids[1]: State.REJECTED, ids[2]: State.LANDED}
    assert sorted(landings) == [(int(ids[0][1:]), "landed"), (int(ids[2][1:]), "landed")]
    assert len(system.remote_tags()) == 2
    ran = Counter((r["item"], r["stage"], r["config"]) for r in system.gate_runs())
    assert set(ran.values()) == {1} and len(ran) == 3 * 2
    assert not (system.ws_dir / ".lockstep" / "queue.db").exists()



def test_sigkilled_worker_on_postgres_is_taken_over_and_the_queue_goes_on(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """A worker SIGKILLed mid-stage: the next worker on this host sees its pid gone and retests
    the item at once (no waiting for the hour-long lease); it lands once, and so does the item
    queued behind it."""
    system = System.create(tmp_path, stages=("build", "check"), configurations=("default",))
    monkeypatch.setenv(store_url.ENV_VAR, postgres_url)
    system.set_queue_settings(lease_ttl=3600)
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    first_item, second_item = system.submit("alpha", "v1.1.0"), system.submit("beta", "v1.1.0")
    doomed = system.start_worker()
    orphan = wait_started(release, proc=doomed)["pid"]
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    system.set_rules({})
    report = system.run_queue()  # in this process, on LOCKSTEP_STORE_URL too
    assert (report.recovered, report.landed) == ([first_item.id], [first_item.id, second_item.id])
    assert (system.item(first_item.id).state, system.item(first_item.id).recoveries) == (
        State.LANDED, 1)
    assert len(system.remote_tags()) == 2 and not process_running(orphan)
    assert not (system.ws_dir / ".lockstep" / "queue.db").exists()


@pytest.mark.parametrize(("ci", "outcome"), [("true", pytest.fail.Exception),
                                             ("", pytest.skip.Exception)])
def test_missing_server_binaries_skip_but_fail_under_ci(
        ci: str, outcome: type[BaseException], monkeypatch: pytest.MonkeyPatch,
        capsys: pytest.CaptureFixture[str]) -> None:
    """Without initdb and postgres the fixture skips with a printed reason; under CI it
    fails, since CI installs them."""
    monkeypatch.setattr(postgres, "server_bin", lambda: None)
    monkeypatch.setenv("CI", ci)
    with pytest.raises(outcome, match="PostgreSQL server binaries"):
        postgres.require_server()
    printed = capsys.readouterr().out
    assert ("skipping the PostgreSQL store tests" in printed) == (not ci)
