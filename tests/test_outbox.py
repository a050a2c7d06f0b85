"""The notification outbox: deliveries bound to a notifier by name, claimed one at a time, and the
migration of a schema-1 store (deliveries bound by list position)."""

from __future__ import annotations

import json
import sqlite3
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from lockstep import config
from lockstep.errors import StateError
from lockstep.queue import notify
from lockstep.queue import schema as s
from lockstep.queue.store import Store
from tests import webhook
from tests.system import System

HOLD_CAP = 120.0  # a safety net against a hung test, not a timing


def webhooks(*hooks: tuple[str, str, str]) -> str:
    """[[notifiers]] tables for (name, url, secret) webhooks, in that order."""
    return "".join(f'[[notifiers]]\nname = "{name}"\ntype = "webhook"\nurl = "{url}"\n'
                   f'secret = "{secret}"\nevents = ["rejected"]\n\n'
                   for name, url, secret in hooks)


def enqueue(store: Store, cfg: config.Config, seq: int | None, n: int) -> None:
    """Queue n rejection events, one per notifier each, as a worker would."""
    for k in range(n):
        with store.tx() as c:
            notify.enqueue(store, c, cfg, "rejected", seq, {"item": f"q{seq}", "k": k})


def rows(store: Store) -> list[dict[str, Any]]:
    with store.read() as c:
        return store.outbox_rows(c)


# --- bound by name ----------------------------------------------------------------------------


def test_reordered_notifiers_send_each_event_to_its_own_url_and_secret(tmp_path: Path) -> None:
    audit, ops = webhook.start(), webhook.start()
    try:
        store = Store.open(tmp_path / "queue.db")
        before = config.parse(webhooks(("audit", audit.url, "audit-key"),
                                       ("ops", ops.url, "ops-key")))
        after = config.parse(webhooks(("ops", ops.url, "ops-key"),
                                      ("audit", audit.url, "audit-key")))
        enqueue(store, before, None, 2)
        assert notify.deliver_due(store, after, 5) == 4
        for listener, name, key in ((audit, "audit", b"audit-key"), (ops, "ops", b"ops-key")):
            ids = {r["delivery_id"] for r in rows(store) if r["notifier"] == name}
            got = {d.headers["x-lockstep-delivery"] for d in listener.deliveries}
            assert got == ids and len(listener.deliveries) == 2
            assert all(notify.verify(key, d.body, d.headers["x-lockstep-signature"])
                       for d in listener.deliveries)
    finally:
        audit.stop()
        ops.stop()


def test_removed_notifier_drops_its_pending_deliveries_with_a_reason(tmp_path: Path) -> None:
    audit, ops = webhook.start(), webhook.start()
    try:
        system = System.create(tmp_path)
        item = system.submit("alpha", "v1.1.0")
        store = system.store()
        both = config.parse(system.config_text(("build",)) + webhooks(
            ("audit", audit.url, "audit-key"), ("ops", ops.url, "ops-key")))
        only_ops = config.parse(system.config_text(("build",)) + webhooks(
            ("ops", ops.url, "ops-key")))
        enqueue(store, both, item.seq, 1)
        assert notify.deliver_due(store, only_ops, 5) == 1
        assert audit.deliveries == []
        [to_ops] = ops.deliveries
        assert json.loads(to_ops.body)["delivery"] == next(
            r["delivery_id"] for r in rows(store) if r["notifier"] == "ops")
        by_name = {r["notifier"]: r for r in rows(store)}
        assert by_name["ops"]["state"] == "delivered"
        assert by_name["audit"]["state"] == "dropped" and by_name["audit"]["attempts"] == 0
        assert by_name["audit"]["last_error"] == "notifier 'audit' is no longer configured"
        assert notify.deliver_due(store, both, 5) == 0  # dropped stays dropped
        assert audit.deliveries == []

        shown = json.loads(system.cli("queue", "show", item.id, "--json").stdout)
        assert {(n["notifier"], n["state"]) for n in shown["notifications"]} == {
            ("ops", "delivered"), ("audit", "dropped")}
        text = system.cli("queue", "show", item.id).stdout
        assert "notification rejected to audit: dropped" in text
        assert "notifier 'audit' is no longer configured" in text
    finally:
        audit.stop()
        ops.stop()


# --- one claim per delivery -------------------------------------------------------------------


@dataclass
class HoldingReceiver:
    """A real HTTP receiver that holds the first request it gets until released (a slow
    receiver under the test's control) and answers every other one at once."""

    server: ThreadingHTTPServer
    received: list[str] = field(default_factory=list)  # X-Lockstep-Delivery, in arrival order
    first_arrived: threading.Event = field(default_factory=threading.Event)
    release: threading.Event = field(default_factory=threading.Event)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"


@pytest.fixture
def receiver() -> Iterator[HoldingReceiver]:
    holder: dict[str, HoldingReceiver] = {}
    lock = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            self.rfile.read(int(self.headers.get("Content-Length", "0")))
            rec = holder["r"]
            with lock:
                rec.received.append(self.headers["X-Lockstep-Delivery"])
                first = len(rec.received) == 1
            if first:
                rec.first_arrived.set()
                rec.release.wait(HOLD_CAP)
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = rec = HoldingReceiver(server)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield rec
    rec.release.set()
    server.shutdown()
    server.server_close()
    thread.join()


def test_slow_receiver_holds_only_the_delivery_being_sent(
        tmp_path: Path, receiver: HoldingReceiver) -> None:
    """Two real `queue run` workers: while the first sits on a slow receiver with one delivery,
    the second sends the next one at once; each is sent exactly once."""
    system = System.create(tmp_path, extra_config=webhooks(("hook", receiver.url, "k")))
    store = system.store()
    enqueue(store, system.workspace().config, None, 2)
    first, second = (r["delivery_id"] for r in rows(store))
    slow = system.start_worker()
    try:
        assert receiver.first_arrived.wait(HOLD_CAP)
        assert receiver.received == [first]
        other = system.cli("queue", "run", "-q")  # runs to completion while `slow` is held
        assert other.returncode == 0, other.stderr
        assert receiver.received == [first, second]
        assert [r["state"] for r in rows(store)] == ["pending", "delivered"]
        receiver.release.set()
        assert slow.wait(HOLD_CAP) == 0
    finally:
        receiver.release.set()
        if slow.poll() is None:
            slow.kill()
            slow.wait()
    assert receiver.received == [first, second]
    assert [(r["state"], r["attempts"]) for r in rows(store)] == [("delivered", 1)] * 2


def test_claims_expiring_behind_a_slow_send_do_not_resend_later_rows(
        tmp_path: Path, receiver: HoldingReceiver) -> None:
    """A sender stuck on its first delivery past every claim (another worker sees them all
    expired): the rows it has not reached are sent once, by the other worker, not again by it."""
    system = System.create(tmp_path, extra_config=webhooks(("hook", receiver.url, "k")))
    cfg = system.workspace().config
    store = system.store()
    enqueue(store, cfg, None, 2)
    first, second = (r["delivery_id"] for r in rows(store))
    stuck = threading.Thread(target=notify.deliver_due, args=(system.store(), cfg, 5))
    stuck.start()
    try:
        assert receiver.first_arrived.wait(HOLD_CAP)
        later = max(r["next_attempt_at"] for r in rows(store)) + 1.0  # every claim expired
        assert notify.deliver_due(system.store(), cfg, 5, now=later) == 2
        assert receiver.received == [first, first, second]
    finally:
        receiver.release.set()
        stuck.join(HOLD_CAP)
    assert not stuck.is_alive()
    assert receiver.received.count(second) == 1
    assert [r["state"] for r in rows(store)] == ["delivered", "delivered"]


# --- schema 1 → 2 -----------------------------------------------------------------------------

# The schema-1 tables as the previous lockstep created them (outbox.notifier was a list index).
V1_DDL = """
CREATE TABLE schema_info (version INTEGER NOT NULL, PRIMARY KEY (version));
CREATE TABLE queues (id INTEGER NOT NULL, mode VARCHAR(16) NOT NULL, paused INTEGER NOT NULL,
  paused_reason VARCHAR(64), draining INTEGER NOT NULL, infra_streak INTEGER NOT NULL,
  landing_holder VARCHAR(128), landing_epoch INTEGER NOT NULL, landing_expires_at FLOAT,
  lease_seq INTEGER NOT NULL, PRIMARY KEY (id));
CREATE TABLE events (id INTEGER NOT NULL, at FLOAT NOT NULL, item_seq INTEGER,
  kind VARCHAR(32) NOT NULL, detail TEXT NOT NULL, PRIMARY KEY (id));
CREATE TABLE workers (id VARCHAR(128) NOT NULL, host VARCHAR(255) NOT NULL, pid INTEGER NOT NULL,
  pid_started FLOAT NOT NULL, started_at FLOAT NOT NULL, heartbeat_at FLOAT NOT NULL,
  PRIMARY KEY (id));
CREATE TABLE items (seq INTEGER NOT NULL, queue_id INTEGER NOT NULL,
  component VARCHAR(64) NOT NULL, version VARCHAR(200) NOT NULL, sha VARCHAR(40) NOT NULL,
  digest VARCHAR(100), configurations TEXT NOT NULL, priority INTEGER NOT NULL,
  state VARCHAR(16) NOT NULL, submitted_at FLOAT NOT NULL, updated_at FLOAT NOT NULL,
  attempt INTEGER NOT NULL, recoveries INTEGER NOT NULL, holder VARCHAR(128),
  lease_token INTEGER, lease_expires_at FLOAT, candidate TEXT, outcome TEXT,
  PRIMARY KEY (seq), FOREIGN KEY(queue_id) REFERENCES queues (id));
CREATE INDEX ix_items_state ON items (state);
CREATE TABLE runs (id INTEGER NOT NULL, item_seq INTEGER NOT NULL, attempt INTEGER NOT NULL,
  configuration VARCHAR(64) NOT NULL, stage VARCHAR(64) NOT NULL, try_no INTEGER NOT NULL,
  state VARCHAR(16) NOT NULL, exit_code INTEGER, started_at FLOAT NOT NULL, ended_at FLOAT,
  worker VARCHAR(128) NOT NULL, host VARCHAR(255), pid INTEGER, pid_started FLOAT,
  log TEXT NOT NULL, PRIMARY KEY (id), FOREIGN KEY(item_seq) REFERENCES items (seq));
CREATE INDEX ix_runs_item_seq ON runs (item_seq);
CREATE TABLE landings (id INTEGER NOT NULL, item_seq INTEGER NOT NULL, epoch INTEGER NOT NULL,
  state VARCHAR(16) NOT NULL, base VARCHAR(40) NOT NULL, tree VARCHAR(40) NOT NULL,
  commit_sha VARCHAR(40), commit_message TEXT NOT NULL, tag_name VARCHAR(200) NOT NULL,
  tag_message TEXT NOT NULL, tag_sha VARCHAR(40), who_name VARCHAR(200) NOT NULL,
  who_email VARCHAR(200) NOT NULL, timestamp INTEGER NOT NULL, created_at FLOAT NOT NULL,
  PRIMARY KEY (id), FOREIGN KEY(item_seq) REFERENCES items (seq));
CREATE TABLE outbox (id INTEGER NOT NULL, delivery_id VARCHAR(64) NOT NULL,
  event VARCHAR(32) NOT NULL, item_seq INTEGER, notifier INTEGER NOT NULL, payload TEXT NOT NULL,
  state VARCHAR(16) NOT NULL, attempts INTEGER NOT NULL, next_attempt_at FLOAT NOT NULL,
  last_error TEXT, PRIMARY KEY (id), UNIQUE (delivery_id),
  FOREIGN KEY(item_seq) REFERENCES items (seq));
INSERT INTO schema_info VALUES (1);
INSERT INTO queues VALUES (1, 'serial', 0, NULL, 0, 0, NULL, 0, NULL, 0);
INSERT INTO items VALUES (1, 1, 'alpha', 'v1.1.0', 'aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa', NULL,
  '["default"]', 0, 'rejected', 100.0, 200.0, 1, 0, NULL, NULL, NULL, NULL,
  '{"kind": "stage-failed"}');
INSERT INTO items VALUES (2, 1, 'beta', 'v1.1.0', 'bbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbbb', NULL,
  '["default"]', 0, 'queued', 300.0, 300.0, 0, 0, NULL, NULL, NULL, NULL, NULL);
INSERT INTO outbox VALUES (1, 'd-delivered', 'rejected', 1, 0, '{"n": 1}', 'delivered', 2, 150.0,
  NULL);
INSERT INTO outbox VALUES (2, 'd-failed', 'rejected', 1, 1, '{"n": 2}', 'failed', 5, 160.0,
  'webhook http://hooks.example/x answered 500');
INSERT INTO outbox VALUES (3, 'd-pending', 'rejected', 1, 1, '{"n": 3}', 'pending', 1, 170.0,
  'webhook http://hooks.example/x: ConnectError');
"""


def v1_store(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    with sqlite3.connect(path) as db:
        db.executescript(V1_DDL)
    return path


def schema_of(path: Path) -> list[tuple[str, str | None]]:
    with sqlite3.connect(path) as db:
        return sorted(db.execute("SELECT name, sql FROM sqlite_master").fetchall(),
                      key=lambda r: r[0])


def test_v1_store_migrates_pending_deliveries_to_dropped_and_keeps_history(
        tmp_path: Path) -> None:
    path = v1_store(tmp_path / "queue.db")
    store = Store.open(path)
    with store.read() as c:
        version = c.execute(s.schema_info.select()).scalar_one()
        by_id = {r["delivery_id"]: r for r in store.outbox_rows(c)}
        live = [i.id for i in store.items(c)]
        finished = [i.id for i in store.finished(c, 10)]
    assert version == s.SCHEMA_VERSION == 4
    assert (by_id["d-delivered"]["state"], by_id["d-delivered"]["attempts"],
            by_id["d-delivered"]["last_error"]) == ("delivered", 2, None)
    assert (by_id["d-failed"]["state"], by_id["d-failed"]["attempts"],
            by_id["d-failed"]["last_error"]) == (
        "failed", 5, "webhook http://hooks.example/x answered 500")
    pending = by_id["d-pending"]
    assert pending["state"] == "dropped" and pending["attempts"] == 1
    assert "notifiers.1 by position" in pending["last_error"]
    assert "cannot be matched to a notifier name" in pending["last_error"]
    assert all(r["notifier"] is None for r in by_id.values())
    assert (live, finished) == (["q2"], ["q1"])
    names = {name for name, _ in schema_of(path)}
    assert "ix_items_state" not in names and {"ix_items_live", "ix_items_finished"} <= names

    # A notifier now at position 1 gets nothing; reopening changes nothing more.
    hook = webhook.start()
    try:
        cfg = config.parse(webhooks(("first", hook.url, "k"), ("second", hook.url, "k")))
        assert notify.deliver_due(store, cfg, 5, now=10_000_000_000.0) == 0
        assert hook.deliveries == []
    finally:
        hook.stop()
    store.close()
    migrated = schema_of(path)
    Store.open(path).close()
    assert schema_of(path) == migrated


def test_store_newer_than_lockstep_is_refused_untouched(tmp_path: Path) -> None:
    path = tmp_path / "queue.db"
    Store.open(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"UPDATE schema_info SET version = {s.SCHEMA_VERSION + 1}")
        db.execute("DROP INDEX IF EXISTS ix_items_live")  # what a newer lockstep might have done
    before = schema_of(path)
    with pytest.raises(StateError, match=f"schema {s.SCHEMA_VERSION + 1}, newer than this "
                                         "lockstep understands"):
        Store.open(path)
    assert schema_of(path) == before
