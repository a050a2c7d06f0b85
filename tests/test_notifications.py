"""Notifier deliveries: a listener down then up (Q20), command hooks, landed events."""

from __future__ import annotations

import json
import socket
import sys
import time
from pathlib import Path

import pytest

from lockstep.queue import notify
from lockstep.queue.model import State
from tests import webhook
from tests.system import System, wait_for, wait_started


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def test_listener_down_then_up_resends_same_delivery(tmp_path: Path,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOOK_SECRET", "k")
    port = _free_port()
    notifier = (f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "http://127.0.0.1:{port}/hook"\n'
                'secret_env = "HOOK_SECRET"\nevents = ["rejected"]\n')
    system = System.create(tmp_path, extra_config=notifier)
    system.set_rules({"build": {"fail_if": [["alpha", "v1.1.0"]]}})
    bad = system.submit("alpha", "v1.1.0")
    good = system.submit("beta", "v1.1.0")
    system.run_queue()
    # The listener was down: the queue kept landing, the delivery waits in the outbox.
    assert system.item(bad.id).state == State.REJECTED
    assert system.item(good.id).state == State.LANDED
    store = system.store()
    with store.tx() as c:
        [row] = store.outbox_rows(c, bad.seq)
    # At least one attempt failed (a loaded machine may have made a second, after its backoff).
    assert row["state"] == "pending" and row["attempts"] >= 1 and row["last_error"]
    listener = webhook.start(port)
    try:
        delivered = notify.deliver_due(store, system.workspace().config, 5,
                                       now=time.time() + 3600)
        assert delivered == 1
        [got] = listener.deliveries
        assert got.headers["x-lockstep-delivery"] == row["delivery_id"]
        assert notify.verify(b"k", got.body, got.headers["x-lockstep-signature"])
        with store.tx() as c:
            [after] = store.outbox_rows(c, bad.seq)
        assert after["state"] == "delivered" and after["attempts"] == row["attempts"] + 1
    finally:
        listener.stop()


def test_command_hook_gets_json_on_stdin(tmp_path: Path) -> None:
    out = tmp_path / "events.jsonl"
    hook = tmp_path / "hook.py"
    hook.write_text(f"import sys\nopen({str(out)!r}, 'a').write(sys.stdin.read() + '\\n')\n")
    notifier = (f'[[notifiers]]\nname = "hook"\ntype = "command"\n'
                f'command = ["{sys.executable}", "{hook}"]\n'
                'events = ["rejected", "landed", "skipped"]\n')
    system = System.create(tmp_path / "sys", extra_config=notifier)
    system.set_rules({"deploy": {"fail_if": [["gamma", "v1.2.0"]]}})
    system.submit("gamma", "v1.2.0")
    system.submit("alpha", "v1.3.0")
    system.run_queue()
    events = [json.loads(line) for line in out.read_text().splitlines()]
    assert [e["event"] for e in events] == ["rejected", "landed"]
    assert events[0]["rejection"]["stage"] == "deploy"
    assert events[0]["rejection"]["kind"] == "stage-failed"
    assert events[1]["landed"]["tag"] in system.remote_tags()
    assert len({e["delivery"] for e in events}) == 2


def test_failing_notifier_gives_up_after_attempts(tmp_path: Path) -> None:
    """A delivery its notifier refuses is retried, then marked failed after `attempts` tries."""
    hook = [sys.executable, "-c", "raise SystemExit(1)"]
    notifier = (f'[[notifiers]]\nname = "broken"\ntype = "command"\ncommand = {json.dumps(hook)}\n'
                'events = ["rejected"]\n')
    system = System.create(tmp_path, extra_config=notifier)
    store = system.store()
    cfg = system.workspace().config
    with store.tx() as c:
        notify.enqueue(store, c, cfg, "rejected", None, {"x": 1})
    for tries, state in [(1, "pending"), (2, "pending"), (3, "failed"), (3, "failed")]:
        notify.deliver_due(store, cfg, 3, now=time.time() + 3600 * tries)
        with store.read() as c:
            [row] = store.outbox_rows(c)
        assert (row["state"], row["attempts"]) == (state, tries)
        assert "exited 1" in row["last_error"]


def test_slow_receiver_does_not_hold_up_the_queue(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    """A receiver sitting on a rejection does not stop the next item being tested and landed."""
    monkeypatch.setenv("HOOK_SECRET", "k")
    listener = webhook.start()
    listener.hold()
    try:
        notifier = (f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{listener.url}"\n'
                    'secret_env = "HOOK_SECRET"\nevents = ["rejected"]\ntimeout = 300\n')
        system = System.create(tmp_path, extra_config=notifier)
        release = tmp_path / "release"
        system.set_rules({"build": {"fail_if": [["alpha", "v1.1.0"]]},
                          "check": {"wait_file": str(release)}})
        bad = system.submit("alpha", "v1.1.0", configs=["default"])
        good = system.submit("beta", "v1.1.0", configs=["default"])
        worker = system.start_worker("--json")
        # The rejection reaches the receiver, which does not answer, before `good` can pass.
        wait_for(lambda: listener.deliveries, proc=worker,
                 what="the rejection to reach the receiver")
        assert wait_started(release, proc=worker)["item"] == good.id
        release.touch()
        wait_for(lambda: system.item(good.id).state == State.LANDED, proc=worker,
                 what=f"{good.id} to land while the receiver holds the rejection")
        assert listener.answered == 0  # landed while the receiver was still sitting on it
        assert json.loads(listener.deliveries[0].body)["item"] == bad.id
        listener.release()
        out, err = worker.communicate(timeout=60)
        assert worker.returncode == 0, err
        report = json.loads(out)
        assert (report["rejected"], report["landed"]) == ([bad.id], [good.id])
        assert len(listener.deliveries) == 1 and listener.answered == 1
        store = system.store()
        with store.read() as c:
            [row] = store.outbox_rows(c, bad.seq)
        assert row["state"] == "delivered" and row["attempts"] == 1
    finally:
        listener.stop()
