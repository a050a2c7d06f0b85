"""Several speculative workers on one PostgreSQL queue (spec/queue.md §8; Q16, Q17): each worker
process has its own clone of the integration repo, as on separate machines; the landed items,
their order and every tag's manifest equal serial processing of the same submissions, and a
worker killed mid-run loses nothing and lands nothing twice."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from collections import Counter
from pathlib import Path
from typing import Any

import psutil
import pytest
from sqlalchemy import select

from lockstep.queue import schema as s
from lockstep.queue import store_url
from lockstep.queue.model import State
from lockstep.queue.store import Store
from tests.infra import postgres
from tests.system import (
    REPO_ROOT,
    STARTED,
    System,
    process_running,
    sh,
    wait_for,
    wait_started,
)
from tests.test_queue_pipeline_e2e import landed_manifests, twin

COMPONENTS = ("alpha", "beta", "gamma")
postgres_server = postgres.postgres_server  # the fixtures: one server per xdist worker,
postgres_url = postgres.postgres_url  # a fresh database per test


def clone_worker(system: System, name: str) -> Path:
    """A worker's own clone of the integration repo (siblings share ../remotes)."""
    path = system.root / name
    sh(["clone", "--quiet", str(system.remote), str(path)], system.root)
    return path


def start(system: System, clone: Path, url: str, *args: str) -> subprocess.Popen[str]:
    """`lockstep queue run ARGS` in a clone, on the PostgreSQL store."""
    env = {**os.environ, "PYTHONPATH": str(REPO_ROOT / "src"), store_url.ENV_VAR: url}
    proc = subprocess.Popen([sys.executable, "-m", "lockstep", "queue", "run", "-q", *args],
                            cwd=clone, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, stdin=subprocess.DEVNULL)
    STARTED.append(proc)
    return proc


def thirty_bumps(system: System) -> tuple[list[tuple[str, str]], list[list[str]]]:
    """Ten new versions of each component, submitted round robin; six of them (20 %) bad."""
    bumps = []
    for k in range(10):
        for component in COMPONENTS:
            version = f"v2.{k}.0"
            system.publish(component, version)
            bumps.append((component, version))
    bad = [list(bumps[i]) for i in (2, 7, 8, 15, 22, 27)]
    return bumps, bad


def test_three_speculative_workers_on_postgres_land_what_serial_lands(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Q16: 30 submissions, about 20 % failing, three `queue run` processes with two runners
    each: the landed set, its order and every tag's manifest are serial mode's."""
    serial = System.create(tmp_path / "serial", stages=("check",), configurations=("default",))
    bumps, bad = thirty_bumps(serial)
    rules = {"check": {"fail_if": bad, "exit": 3}}
    serial.set_rules(rules)
    spec = twin(serial, tmp_path / "spec")
    spec.set_rules(rules)
    spec.set_queue_settings(mode="speculative", runners=2)
    serial.set_queue_settings(kill_grace=2)
    ids = [serial.submit(c, v).id for c, v in bumps]
    serial_report = serial.run_queue()
    assert len(serial_report.rejected) == 6 and len(serial_report.landed) == 24

    monkeypatch.setenv(store_url.ENV_VAR, postgres_url)
    assert [spec.submit(c, v).id for c, v in bumps] == ids
    workers = [start(spec, clone_worker(spec, f"worker{k}"), postgres_url, "--json")
               for k in range(3)]
    finished: Counter[str] = Counter()
    for proc in workers:
        out, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, (out, err)
        report = json.loads(out)
        finished.update(report["landed"] + report["rejected"])
    assert finished == Counter(ids), "every item finished exactly once, by one worker"
    assert landed_manifests(spec) == landed_manifests(serial)
    states = {spec.item(i).state for i in serial_report.rejected}
    assert states == {State.REJECTED}
    runners = {r["item"] for r in spec.gate_runs()}
    assert runners == set(ids)
    store = Store.open(spec.workspace().store_path, url=postgres_url)
    try:
        with store.read() as c:
            holders = set(c.execute(select(s.pipeline_runs.c.holder)).scalars())
            landings = c.execute(select(s.landings.c.state)).scalars().all()
    finally:
        store.close()
    assert len(holders) >= 2, "the runs were shared between the worker processes"
    assert Counter(landings)["landed"] == 24


def test_sigkilled_speculative_worker_on_postgres_loses_nothing(
        tmp_path: Path, postgres_url: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """Q17: a worker SIGKILLed while its stage runs: at the kill the run is recorded running,
    held by it, and nothing has landed; the next worker finds its pid gone, kills the stage it
    left, runs the stage again, and every item lands exactly once."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=2, lease_ttl=3600)
    monkeypatch.setenv(store_url.ENV_VAR, postgres_url)
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    ids = [system.submit(c, "v1.1.0").id for c in COMPONENTS]
    doomed = start(system, clone_worker(system, "doomed"), postgres_url)
    blocked = wait_started(release, proc=doomed)
    assert blocked["ppid"] == doomed.pid
    store = Store.open(system.workspace().store_path, url=postgres_url)

    def running_runs() -> list[Any]:
        with store.read() as c:
            return list(c.execute(select(s.pipeline_runs.c.id, s.pipeline_runs.c.holder,
                                         s.pipeline_runs.c.pid).where(
                s.pipeline_runs.c.state == "running")).all())

    # The stage's pid is recorded just after it starts: wait for that event, not a guess.
    wait_for(lambda: blocked["pid"] in {pid for _, _, pid in running_runs()},
             what="the blocked stage's pid in the store", proc=doomed)
    running = running_runs()
    assert running and all(h.split(":")[1] == str(doomed.pid) for _, h, _ in running)
    assert blocked["pid"] in {pid for _, _, pid in running}
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert system.remote_tags() == {}
    assert process_running(blocked["pid"]), "the stage outlives its killed worker"

    system.set_rules({})
    survivor = start(system, clone_worker(system, "survivor"), postgres_url, "--json")
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert sorted(json.loads(out)["landed"]) == sorted(ids), (out, err)
    assert not process_running(blocked["pid"]), "the orphaned stage was killed"
    with store.read() as c:
        killed = c.execute(select(s.pipeline_runs.c.state).where(
            s.pipeline_runs.c.id.in_([r for r, _, _ in running]))).scalars().all()
        landings = c.execute(select(s.landings.c.item_seq, s.landings.c.state)).all()
        states = [i.state for i in store.items(c, include_terminal=True)]
    store.close()
    assert set(killed) == {"infra"}, "the dead worker's runs count as lost runners"
    assert Counter(state for _, state in landings) == Counter(landed=len(landings))
    assert states == [State.LANDED] * 3
    tags = system.remote_tags()
    assert len(tags) == len(landings) and len(set(tags.values())) == len(tags)
    tagged = Counter(i for items, _ in landed_manifests(system) for i in items.split())
    assert tagged == Counter(ids), "each item is in exactly one tag"


def test_two_speculative_workers_on_one_sqlite_store_one_sigkilled(tmp_path: Path) -> None:
    """Q19: two `queue run` processes on one clone and its SQLite store, one runner each, both
    blocked in a stage; one is SIGKILLed: the other sees its pid gone at once (the lease is an
    hour), kills the stage it left, runs it again, and lands every item once; no other run is
    executed twice."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=1, lease_ttl=3600)
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    ids = [system.submit(c, "v1.1.0").id for c in COMPONENTS]
    workers = [system.start_worker("--json") for _ in range(2)]
    first = wait_started(release, 1, proc=workers[0])
    second = wait_started(release, 2, proc=workers[1])
    by_pid = {w.pid: w for w in workers}
    assert {first["ppid"], second["ppid"]} == set(by_pid), "each worker runs one stage"
    doomed = by_pid[first["ppid"]]
    survivor = by_pid[second["ppid"]]

    def recorded_pids() -> set[int]:
        store = system.store()
        with store.read() as c:
            pids = set(c.execute(select(s.pipeline_runs.c.pid)).scalars())
        store.close()
        return pids

    wait_for(lambda: first["pid"] in recorded_pids(), what="the stage's pid in the store",
             proc=doomed)
    doomed.send_signal(signal.SIGKILL)
    doomed.wait()
    assert process_running(first["pid"]) and system.remote_tags() == {}

    system.set_rules({})
    release.write_text("go")
    out, err = survivor.communicate(timeout=120)
    assert survivor.returncode == 0, err
    assert sorted(json.loads(out)["landed"]) == sorted(ids)
    assert not process_running(first["pid"]), "the dead worker's stage was killed"
    store = system.store()
    with store.read() as c:
        runs = c.execute(select(s.pipeline_runs.c.id, s.pipeline_runs.c.state,
                                s.pipeline_runs.c.holder)).all()
    store.close()
    # One stage process per run row: no run was executed twice.
    assert len(system.gate_runs()) == len(runs)
    dead = [(run, state) for run, state, holder in runs if holder.split(":")[1] == str(doomed.pid)]
    assert [state for _, state in dead] == ["infra"], "the dead worker's run counts as lost"
    again = dead[0][0].rsplit("/", 1)[0] + "/1"
    assert (again, "passed") in {(run, state) for run, state, _ in runs}, "and ran again"
    tagged = Counter(i for items, _ in landed_manifests(system) for i in items.split())
    assert tagged == Counter(ids)


def test_worker_stopped_holding_the_landing_lock_records_nothing(tmp_path: Path) -> None:
    """Q18: a worker SIGSTOPped with the landing lock, its journal written and nothing pushed;
    once the lock expired another worker finishes that landing from the journal; the stopped
    worker, continued, finds its push refused or identical and records nothing: exactly one
    commit and one tag, one landed journal row."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=1, lease_ttl=2)
    item = system.submit("alpha", "v1.1.0").id
    stalled = system.start_worker("--test-crash-at", "before-commit:stop", "--json")
    wait_for(lambda: psutil.Process(stalled.pid).status() == psutil.STATUS_STOPPED,
             what="the worker to stop itself with the landing lock", proc=stalled)
    store = system.store()
    with store.read() as c:
        q = store.queue(c)
        journal = c.execute(select(s.landings.c.state, s.landings.c.epoch)).all()
    assert q.landing_holder and q.landing_holder.split(":")[1] == str(stalled.pid)
    assert journal == [("open", q.landing_epoch)] and system.remote_tags() == {}
    before = system.commits()

    finisher = system.start_worker("--json")
    out, err = finisher.communicate(timeout=120)
    assert finisher.returncode == 0, err
    assert json.loads(out)["landed"] == [item]
    tags = system.remote_tags()
    assert len(tags) == 1
    head = system.remote_head()

    stalled.send_signal(signal.SIGCONT)
    out, err = stalled.communicate(timeout=120)
    assert stalled.returncode == 0, err
    assert json.loads(out)["landed"] == [], "the fenced worker records no landing"
    assert system.remote_tags() == tags and system.remote_head() == head
    assert system.commits()[1:] == before, "exactly one commit was added"
    with store.read() as c:
        rows = c.execute(select(s.landings.c.state)).scalars().all()
    store.close()
    assert rows == ["landed"]
    assert system.item(item).state == State.LANDED
