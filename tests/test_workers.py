"""Several worker processes, cancellation of running items, landing repair after base moves."""

from __future__ import annotations

import json
import signal
import threading
import time
from collections import Counter
from pathlib import Path

from lockstep.errors import EXIT_PAUSED
from lockstep.queue import operations as ops
from lockstep.queue import scheduler
from lockstep.queue.model import State
from lockstep.queue.worker import RunMode, Worker, WorkerReport
from tests.system import STAGES, System, process_running, sh, wait_for, wait_started


def _registered_worker_pids(system: System) -> set[int]:
    store = system.store()
    with store.read() as c:
        return set(c.exec_driver_sql("SELECT pid FROM workers").scalars())


def test_two_workers_never_test_or_land_an_item_twice(system: System) -> None:
    """Both workers work on one queue, and no stage run or landing happens twice."""
    release = system.root / "release"
    system.set_rules({"build": {"wait_file": str(release)}})
    ids = [system.submit(c, v).id for c, v in
           [("alpha", "v1.1.0"), ("beta", "v1.1.0"), ("gamma", "v1.1.0"), ("alpha", "v1.2.0")]]
    first = system.start_worker("--once", "--json")  # one item, then it leaves the rest
    blocked = wait_started(release, proc=first)
    assert (blocked["item"], blocked["ppid"]) == (ids[0], first.pid)
    second = system.start_worker("--json")  # polls while the first holds the front item
    wait_for(lambda: second.pid in _registered_worker_pids(system), proc=second,
             what="the second worker to register")
    release.touch()
    landed: list[str] = []
    for w in (first, second):
        out, err = w.communicate(timeout=120)
        assert w.returncode == 0, err
        landed += json.loads(out)["landed"]
    assert sorted(landed) == sorted(ids)  # each item landed once, by one of them
    assert [system.item(i).state for i in ids] == [State.LANDED] * 4
    assert len(system.remote_tags()) == 4 and len(system.commits()) == 5
    # Every stage ran once per item and configuration, and both workers ran stages.
    gate_runs = Counter((r["item"], r["stage"], r["config"]) for r in system.gate_runs())
    assert set(gate_runs.values()) == {1} and len(gate_runs) == 4 * len(STAGES) * 2
    runs = [r for i in ids for r in system.store_runs(i)]
    assert Counter((r["item_seq"], r["stage"], r["configuration"]) for r in runs) == Counter(
        {(int(i[1:]), s, c): 1 for i in ids for s in STAGES for c in ("default", "edge")})
    assert {r["state"] for r in runs} == {"passed"}
    ran_by = {int(r["worker"].split(":")[1]) for r in runs}
    assert ran_by == {first.pid, second.pid}
    assert {int(r["worker"].split(":")[1]) for r in system.store_runs(ids[0])} == {first.pid}


def test_sigkilled_worker_pid_is_taken_over_at_once(system: System) -> None:
    """Q19: one of two workers is SIGKILLed mid-stage; the other retests without waiting."""
    system.set_queue_settings(lease_ttl=3600)  # waiting for the lease would outlast the test
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    first = system.start_worker()
    orphan = wait_started(release, proc=first)["pid"]
    first.send_signal(signal.SIGKILL)
    first.wait()
    assert process_running(orphan)  # still blocked: only the next worker can stop it
    system.set_rules({})
    second = system.cli("queue", "run")
    assert second.returncode == 0, second.stderr
    landed = system.item(item.id)
    assert landed.state == State.LANDED and landed.recoveries == 1
    # The dead worker's stage process, never released, was killed by the worker that took over.
    assert not process_running(orphan)
    assert not release.exists()


def test_cancel_testing_item_kills_its_stage(system: System) -> None:
    release = system.root / "release"
    system.set_rules({"build": {"wait_file": str(release)}})
    item = system.submit("alpha", "v1.1.0")
    behind = system.submit("beta", "v1.1.0")
    worker = system.start_worker()
    gate = wait_started(release, proc=worker)
    assert gate["item"] == item.id
    system.set_rules({})
    cancel = system.cli("queue", "cancel", item.id)
    assert cancel.returncode == 0, cancel.stderr
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == 0, err
    assert system.item(item.id).state == State.CANCELLED
    assert system.item(behind.id).state == State.LANDED
    assert not process_running(gate["pid"])  # killed while blocked, never released
    assert [r["state"] for r in system.store_runs(item.id)] == ["aborted"]
    assert system.remote_tags().keys() == {system.item(behind.id).outcome["tag"]}  # type: ignore[index]


def _crash_before_commit(system: System) -> str:
    item = system.submit("gamma", "v1.2.0")
    crashed = system.cli("queue", "run", "--test-crash-at", "before-commit")
    assert crashed.returncode == -signal.SIGKILL
    assert system.item(item.id).state == State.LANDING
    return item.id


def _external_commit(system: System, tmp: Path) -> str:
    return system.commit_elsewhere(
        lambda clone: (clone / "README.md").write_text("an external change\n"), "external change")


def test_external_commit_during_landing_retests_on_new_base(system: System,
                                                            tmp_path: Path) -> None:
    """Q4 (e): the base moved under a landing: local tag dropped, item retested, then lands."""
    item_id = _crash_before_commit(system)
    external = _external_commit(system, tmp_path)
    again = system.cli("queue", "run")
    assert again.returncode == 0, again.stderr
    item = system.item(item_id)
    assert item.state == State.LANDED and item.outcome is not None
    assert system.parent(item.outcome["commit"]) == external
    assert item.attempt == 2
    assert len(system.remote_tags()) == 1


def test_tag_name_taken_by_someone_else(system: System, tmp_path: Path) -> None:
    """Q4 (b): the journal's tag name appears on the remote elsewhere: next free N is used."""
    item_id = _crash_before_commit(system)
    store = system.store()
    with store.tx() as c:
        journal = store.open_landing(c, int(item_id[1:]))
    assert journal is not None
    taken = journal["tag_name"]
    head = system.remote_head()
    sh(["tag", "-a", taken, "-m", "someone else's", head], system.remote)
    foreign = sh(["rev-parse", f"refs/tags/{taken}"], system.remote)
    again = system.cli("queue", "run")
    assert again.returncode == 0, again.stderr
    item = system.item(item_id)
    assert item.state == State.LANDED and item.outcome is not None
    assert item.outcome["tag"] != taken
    assert sh(["rev-parse", f"refs/tags/{taken}"], system.remote) == foreign
    prefix, n = taken.rsplit(".", 1)
    assert item.outcome["tag"] == f"{prefix}.{int(n) + 1}"


def test_rewritten_history_pauses_the_queue(system: System) -> None:
    system.submit("alpha", "v1.1.0")
    system.run_queue()
    landed = system.remote_head()
    sh(["update-ref", "refs/heads/main", system.parent(landed)], system.remote)  # force-push
    item = system.submit("beta", "v1.1.0")
    system.run_queue()
    assert system.item(item.id).state == State.QUEUED
    status = system.cli("queue", "status", "--json")
    assert json.loads(status.stdout)["queue"]["paused_reason"] == "history-rewritten"
    sh(["update-ref", "refs/heads/main", landed], system.remote)  # repaired
    assert system.cli("queue", "resume").returncode == 0
    system.run_queue()
    assert system.item(item.id).state == State.LANDED


def test_unreachable_remote_keeps_the_item_and_stops_the_worker(system: System,
                                                                 tmp_path: Path) -> None:
    item = system.submit("alpha", "v1.1.0")
    moved = tmp_path / "moved.git"
    system.remote.rename(moved)
    proc = system.cli("queue", "run")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: cannot read main from remote 'origin'")
    assert proc.stderr.count("\n") == 1
    assert system.item(item.id).state == State.QUEUED
    assert system.item(item.id).attempt == 0
    moved.rename(system.remote)
    assert system.cli("queue", "run").returncode == 0
    assert system.item(item.id).state == State.LANDED


def test_component_fetch_falls_back_to_ssh_url(tmp_path: Path) -> None:
    """The primary URL fails (prompts off, nothing there); the ssh_url is used instead.
    (A URL holding a password is refused at load: tests/test_release_config.py.)"""
    system = System.create(tmp_path)
    toml = system.ws_dir / "lockstep.toml"
    text = toml.read_text().replace(
        'url = "../remotes/beta.git"',
        'url = "https://user@127.0.0.1:1/beta.git"\nssh_url = "../remotes/beta.git"')
    toml.write_text(text)
    item = system.submit("beta", "v1.2.0")
    assert item.sha == system.shas[("beta", "v1.2.0")]
    toml.write_text(text.replace('ssh_url = "../remotes/beta.git"', ""))
    proc = system.cli("queue", "submit", "beta", "v1.3.0")
    assert proc.returncode == 1
    assert "127.0.0.1:1/beta.git" in proc.stderr and "Couldn't connect" in proc.stderr


def test_pause_abort_running_requeues_without_counting(system: System) -> None:
    system.set_queue_settings(lease_ttl=3600)  # so it is the abort the worker notices
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    item = system.submit("alpha", "v1.1.0")
    worker = system.start_worker()
    gate = wait_started(release, proc=worker)
    proc = system.cli("queue", "pause", "--abort-running")
    assert proc.returncode == 0 and item.id in proc.stdout
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == EXIT_PAUSED, err  # stopped paused, items waiting
    # The worker killed the stage it was running: it never finished on its own.
    assert not process_running(gate["pid"])
    runs = system.store_runs(item.id)
    assert [(r["stage"], r["state"]) for r in runs] == [("build", "passed"), ("check", "aborted")]
    aborted = system.item(item.id)
    assert (aborted.state, aborted.attempt, aborted.recoveries) == (State.QUEUED, 0, 0)
    assert system.remote_tags() == {}
    system.set_rules({})
    assert system.cli("queue", "resume").returncode == 0
    system.run_queue()
    assert system.item(item.id).state == State.LANDED


def test_drain_lands_in_flight_then_pauses(system: System) -> None:
    """Q8: after drain the in-flight item lands, nothing new starts, the queue is `drained`."""
    release = system.root / "release"
    system.set_rules({"build": {"wait_file": str(release)}})
    first = system.submit("alpha", "v1.1.0", configs=["default"])
    second = system.submit("beta", "v1.1.0")
    worker = system.start_worker()
    assert wait_started(release, proc=worker)["item"] == first.id
    assert system.cli("queue", "drain").returncode == 0
    third = system.submit("gamma", "v1.1.0")  # submissions are still accepted
    release.touch()
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == EXIT_PAUSED, err  # stopped paused, items waiting
    assert system.item(first.id).state == State.LANDED
    assert system.item(second.id).state == State.QUEUED
    assert system.item(third.id).state == State.QUEUED
    status = json.loads(system.cli("queue", "status", "--json").stdout)
    assert (status["queue"]["state"], status["queue"]["paused_reason"]) == ("paused", "drained")
    assert {r["item"] for r in system.gate_runs()} == {first.id}


def test_worker_lost_too_often_is_rejected(system: System) -> None:
    """An item whose worker dies in every attempt is rejected `worker-lost` after 3 recoveries."""
    system.set_rules({"build": {"kill_worker_always": True}})
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    for _ in range(4):
        assert system.cli("queue", "run").returncode == -signal.SIGKILL
    assert system.cli("queue", "run").returncode == 0
    rejected = system.item(item.id)
    assert rejected.state == State.REJECTED and rejected.outcome is not None
    assert rejected.outcome["kind"] == "worker-lost"
    assert rejected.recoveries == 3
    assert system.remote_tags() == {}


def test_finished_workers_and_old_run_dirs_are_cleaned_up(system: System) -> None:
    system.set_rules({"build": {"fail_if": [["alpha", "v1.1.0"]]}})
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    system.cli("queue", "run")
    runs_dir = system.ws_dir / ".lockstep" / "runs" / item.id
    assert runs_dir.is_dir()  # the failed run's workspace is kept for inspection
    for _ in range(3):
        assert system.cli("queue", "run").returncode == 0
    store = system.store()
    with store.tx() as c:
        rows = c.exec_driver_sql("SELECT count(*) FROM workers").scalar_one()
    assert rows == 1  # only the last, already exited, worker is left until the next run
    Worker(system.workspace(), store)._prune_run_dirs(keep=0)
    assert not runs_dir.exists()


def test_store_written_by_a_newer_lockstep_is_refused(system: System) -> None:
    store = system.store()
    with store.tx() as c:
        c.exec_driver_sql("UPDATE schema_info SET version = 99")
    proc = system.cli("queue", "status")
    assert proc.returncode == 1
    assert proc.stderr.startswith("error: the queue store uses schema 99")


def test_cancel_of_a_landing_item_is_refused_and_it_lands(system: System) -> None:
    """Q9: a landing item cannot be cancelled (exit 1); the next run lands it."""
    item_id = _crash_before_commit(system)
    proc = system.cli("queue", "cancel", item_id)
    assert proc.returncode == 1 and "landing in progress" in proc.stderr
    assert system.cli("queue", "run").returncode == 0
    assert system.item(item_id).state == State.LANDED


def test_pause_with_a_run_in_flight(system: System) -> None:
    """Q8: the run in flight finishes and keeps its result, nothing lands until resume."""
    release = system.root / "release"
    system.set_rules({"deploy": {"wait_file": str(release)}})
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    worker = system.start_worker()
    assert wait_started(release, proc=worker)["item"] == item.id
    assert system.cli("queue", "pause").returncode == 0
    later = system.submit("beta", "v1.1.0")  # accepted while paused
    release.touch()
    _, err = worker.communicate(timeout=60)
    assert worker.returncode == EXIT_PAUSED, err  # stopped paused, items waiting
    assert system.item(item.id).state == State.PASSED
    assert system.item(later.id).state == State.QUEUED
    assert system.remote_tags() == {}
    assert system.cli("queue", "resume").returncode == 0
    system.run_queue()
    assert system.item(item.id).state == State.LANDED
    assert system.item(later.id).state == State.LANDED
    assert len([r for r in system.gate_runs() if r["item"] == item.id]) == 3  # not retested


def test_fenced_worker_does_not_land(system: System) -> None:
    """A worker whose landing lock was taken over (epoch moved) touches neither git nor store."""
    system.submit("gamma", "v1.1.0", configs=["default"])
    ws = system.workspace()
    store = system.store()
    worker = Worker(ws, store)
    assert worker.step()  # tests the item: it passes and waits to land
    with store.tx() as c:
        plan = scheduler.decide(store.view(c, 3))
        [land] = plan.decisions
        action = worker._claim(c, land)
    assert action is not None
    with store.tx() as c:  # another worker takes the lock over meanwhile
        store.update_queue(c, landing_holder="elsewhere:1:x",
                           landing_epoch=store.queue(c).landing_epoch + 1)
    head = system.remote_head()
    action()
    assert system.remote_head() == head and system.remote_tags() == {}
    with store.tx() as c:
        assert store.open_landing(c, 1) is None


def test_until_empty_waits_while_another_worker_is_landing(system: System) -> None:
    """`--until-empty` keeps waiting, not stopping, when another worker holds the landing lock
    of the front item (it had claimed it but not yet marked it landing)."""
    item = system.submit("gamma", "v1.1.0", configs=["default"])
    behind = system.submit("beta", "v1.1.0", configs=["default"])
    ws = system.workspace()
    store = system.store()
    assert Worker(ws, store).step()  # tests the front item: it passes and waits to land
    other = Worker(ws, store)  # a live worker that claimed the landing
    with store.tx() as c:
        store.update_queue(c, landing_holder=other.id,
                           landing_epoch=store.queue(c).landing_epoch + 1,
                           landing_expires_at=time.time() + 3600)
    waiting = Worker(ws, ops.open_store(ws))
    reports: list[WorkerReport] = []
    thread = threading.Thread(target=lambda: reports.append(waiting.run(RunMode.UNTIL_EMPTY)))
    thread.start()
    wait_for(lambda: waiting.idle_reason == "busy" or not thread.is_alive(),
             what="the worker to find the landing lock taken")
    assert thread.is_alive(), "the worker stopped although items are left"
    with store.tx() as c:  # the other worker goes away without landing
        store.update_queue(c, landing_holder=None, landing_expires_at=None)
    thread.join(timeout=120)
    assert not thread.is_alive()
    assert reports[0].landed == [item.id, behind.id]
