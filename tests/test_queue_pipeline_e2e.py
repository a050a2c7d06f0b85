"""Speculative and batch modes end to end on real git (spec/queue.md §4, §5; Q10, Q11, Q13):
the same submissions processed in serial mode and in a pipeline mode land the same items, in
the same order, with the same tag trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import select

from lockstep.queue import schema as s
from lockstep.queue.model import State
from tests.system import System, process_running, sh, wait_for, wait_started

BAD = ("beta", "v1.2.0")


def twin(system: System, dest: Path) -> System:
    """A copy of a fresh system (same component SHAs), its workspace pointed at its own remote."""
    shutil.copytree(system.root, dest, symlinks=True)
    other = System(root=dest, ws_dir=dest / "integration",
                   remote=dest / "remotes" / "integration.git", rules=dest / "rules.json",
                   sources={k: dest / "src" / k for k in system.sources},
                   shas=dict(system.shas))
    sh(["remote", "set-url", "origin", str(other.remote)], other.ws_dir)
    other.edit_config(lambda text: text.replace(str(system.rules), str(other.rules)),
                      "stages record to this system's rules file")
    return other


def landed_manifests(system: System) -> list[tuple[str, str]]:
    """(tag's items, its manifest blob) per tag on the remote, in landing order (the trees
    differ only by lockstep.toml's [queue] table)."""
    tags = system.remote_tags()
    order = system.commits()[::-1]
    found = []
    for name, commit in sorted(tags.items(), key=lambda kv: order.index(kv[1])):
        message = sh(["cat-file", "-p", name], system.remote)
        items = [line.split()[0] for line in message.splitlines() if line.startswith("  q")]
        found.append((" ".join(items), sh(["rev-parse", f"{commit}:manifest.toml"],
                                          system.remote)))
    return found


def submit_all(system: System, bumps: list[tuple[str, str]]) -> list[str]:
    """Submit the bumps in order; their ids."""
    return [system.submit(component, version).id for component, version in bumps]


BUMPS = [("alpha", "v1.1.0"), ("beta", "v1.1.0"), ("beta", "v1.2.0"), ("gamma", "v1.1.0"),
         ("alpha", "v1.2.0"), ("gamma", "v1.2.0")]


def test_speculative_lands_what_serial_lands(tmp_path: Path) -> None:
    """Q10: P = 4, six items, the third bad: it is rejected once, at the head; the items behind
    it that were tested on top of it are retested without it; the rest land, one tag each,
    with exactly serial mode's trees."""
    serial = System.create(tmp_path / "serial", stages=("check",))
    serial.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    spec = twin(serial, tmp_path / "spec")
    spec.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    spec.set_queue_settings(mode="speculative", runners=4)
    serial.set_queue_settings(kill_grace=2)  # the same number of commits before the queue runs
    ids = submit_all(serial, BUMPS)
    assert submit_all(spec, BUMPS) == ids

    serial_report = serial.run_queue()
    spec_report = spec.run_queue()

    assert spec_report.landed == serial_report.landed == [ids[0], ids[1], ids[3], ids[4], ids[5]]
    assert spec_report.rejected == serial_report.rejected == [ids[2]]
    assert landed_manifests(spec) == landed_manifests(serial)
    tested = {r["candidate"] for r in spec.gate_runs()}
    assert {spec.tree_of(tag) for tag in spec.remote_tags()} <= tested
    assert spec.item(ids[2]).outcome["kind"] == "stage-failed"
    assert spec.item(ids[2]).outcome["log_tail"], "the rejection carries the failed run's log"
    logs = spec.cli("queue", "logs", ids[2])
    assert logs.returncode == 0 and "beta v1.2.0 is known bad" in logs.stdout, logs.stderr
    shown = json.loads(spec.cli("queue", "show", ids[2], "--json").stdout)
    # Its failed run, and (fail-fast) its other configuration's run killed or done.
    assert "failed" in [r["state"] for r in shown["runs"]]
    # The item behind the bad one was first built on top of it, then rebuilt without it.
    store = spec.store()
    with store.read() as c:
        rows = c.execute(select(s.candidates.c["items"], s.candidates.c.own, s.candidates.c.state,
                                s.candidates.c.why)).all()
    store.close()
    behind = [(json.loads(items), state, why) for items, own, state, why in rows
              if json.loads(own) == [ids[3]]]
    assert behind[0][0][-2:] == [ids[2], ids[3]] and behind[0][1:] == ("discarded", "rebuilt")
    assert ids[2] not in behind[-1][0] and behind[-1][1] == "landed"
    assert len({r["item"] for r in spec.gate_runs()}) == len(ids)
    for state in (spec.item(i).state for i in ids):
        assert state in (State.LANDED, State.REJECTED)


def test_batch_lands_one_tag_listing_its_items(tmp_path: Path) -> None:
    """Q13: a batch of four with one culprit is split until the culprit is isolated; the
    passing parts land, each as one tag listing its items; serial mode lands the same items
    (the batch's tags are coarser, so the final tree is compared)."""
    serial = System.create(tmp_path / "serial", stages=("check",))
    serial.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    batch = twin(serial, tmp_path / "batch")
    batch.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    batch.set_queue_settings(mode="batch", runners=1, batch_size=4, batch_max_wait=0,
                             bisect_ways=2)
    # Four items changing four different (component, configuration) pins: one batch.
    bumps = [("alpha", "v1.1.0", ["default"]), ("beta", "v1.2.0", []), ("gamma", "v1.1.0", []),
             ("alpha", "v1.2.0", ["edge"])]
    ids = [serial.submit(c, v, configs).id for c, v, configs in bumps]
    assert [batch.submit(c, v, configs).id for c, v, configs in bumps] == ids
    serial.run_queue()
    report = batch.run_queue()

    assert sorted(report.landed) == [ids[0], ids[2], ids[3]]
    assert report.rejected == [ids[1]]
    assert batch.manifest_at("refs/heads/main") == serial.manifest_at("refs/heads/main")
    tags = landed_manifests(batch)
    assert [items for items, _ in tags] == [ids[0], f"{ids[2]} {ids[3]}"]
    # Every tagged tree was tested: it is the candidate tree of a run.
    tested = {r["candidate"] for r in batch.gate_runs()}
    assert {batch.tree_of(tag) for tag in batch.remote_tags()} <= tested


def test_status_shows_each_runner_and_cancel_rebuilds_behind(tmp_path: Path) -> None:
    """`queue status` names what each runner tests (the candidate's own items, on top of which
    items) and why each other item waits; cancelling a testing item kills its run, and the item
    behind, built on top of it, is rebuilt and tested without it."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=2)
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    ids = [system.submit(c, "v1.1.0").id for c in ("alpha", "beta", "gamma")]
    worker = system.start_worker("--json")
    wait_started(release, 1, proc=worker)
    wait_started(release, 2, proc=worker)

    shown = system.cli("queue", "status", "--json")
    assert shown.returncode == 0, shown.stderr
    data = json.loads(shown.stdout)
    busy = sorted((r["own"], r["items"]) for r in data["pipeline"]["runners"])
    assert busy == [([ids[0]], [ids[0]]), ([ids[1]], [ids[0], ids[1]])]
    waits = {i["id"]: i["wait_reason"] for i in data["items"]}
    assert waits[ids[2]] == "outside-window"
    text = system.cli("queue", "status").stdout
    assert f"{ids[1]} on top of {ids[0]}: default/check" in text

    cancelled = system.cli("queue", "cancel", ids[0])
    assert cancelled.returncode == 0, cancelled.stderr
    system.set_rules({})
    release.write_text("go")
    out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    assert json.loads(out)["landed"] == ids[1:]
    assert system.item(ids[0]).state == State.CANCELLED
    final = [r for r in system.gate_runs() if r["item"] == ids[1]][-1]
    assert final["pins"]["alpha"] == "v1.0.0", "rebuilt without the cancelled bump"
    assert system.manifest_at("refs/heads/main")["default"]["alpha"]["version"] == "v1.0.0"


def test_stale_bumps_are_skipped_as_serial_mode_skips_them(tmp_path: Path) -> None:
    """A bump superseded by an item ahead of it (a newer version of the same component) and a
    bump already pinned by one ahead are skipped, not landed as commits changing nothing, and
    not tested: the landed and skipped items and the tags equal serial mode's."""
    serial = System.create(tmp_path / "serial", stages=("check",), configurations=("default",))
    spec = twin(serial, tmp_path / "spec")
    spec.set_queue_settings(mode="speculative", runners=4)
    serial.set_queue_settings(kill_grace=2)
    bumps = [("alpha", "v1.2.0"), ("alpha", "v1.1.0"), ("beta", "v1.1.0"), ("beta", "v1.1.0")]
    ids = submit_all(serial, bumps)
    assert submit_all(spec, bumps) == ids
    serial_report = serial.run_queue()
    spec_report = spec.run_queue()

    assert spec_report.landed == serial_report.landed == [ids[0], ids[2]]
    assert spec_report.skipped == serial_report.skipped == [ids[1], ids[3]]
    assert [spec.item(i).outcome["reason"] for i in (ids[1], ids[3])] == [
        "superseded", "already-pinned"]
    assert landed_manifests(spec) == landed_manifests(serial)
    assert {r["item"] for r in spec.gate_runs()} == {ids[0], ids[2]}, "stale bumps never ran"


def test_once_is_refused_in_the_parallel_modes(tmp_path: Path) -> None:
    """`queue run --once` means one item; with many in flight it is a usage error (exit 2)
    that changes nothing."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="batch", runners=2)
    item = system.submit("alpha", "v1.1.0")
    proc = system.cli("queue", "run", "--once")
    assert proc.returncode == 2
    assert "--once" in proc.stderr and "--until-empty" in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    assert system.item(item.id).state == State.QUEUED and system.gate_runs() == []


def test_pause_abort_running_kills_the_runs_and_resume_lands(tmp_path: Path) -> None:
    """`queue pause --abort-running` kills the runs in flight and starts nothing; after `queue
    resume` the items are tested again and land."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=2)
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    ids = [system.submit(c, "v1.1.0").id for c in ("alpha", "beta")]
    worker = system.start_worker("--json")
    blocked = [wait_started(release, n, proc=worker) for n in (1, 2)]
    paused = system.cli("queue", "pause", "--abort-running")
    assert paused.returncode == 0, paused.stderr
    for run in blocked:
        wait_for(lambda run=run: not process_running(run["pid"]),  # type: ignore[misc]
                 what="the aborted stages to be killed", proc=worker)
    assert [system.item(i).state for i in ids] == [State.QUEUED, State.QUEUED]
    out, err = worker.communicate(timeout=60)  # paused, nothing in flight: --until-empty stops
    assert worker.returncode == 3, err
    assert json.loads(out)["paused"] == "user" and len(system.gate_runs()) == 2

    system.set_rules({})
    resumed = system.cli("queue", "resume")
    assert resumed.returncode == 0, resumed.stderr
    assert system.run_queue().landed == ids
    assert len(system.gate_runs()) == 4


def test_item_timeout_rejects_and_kills_the_stage(tmp_path: Path) -> None:
    """A candidate outliving `item_timeout` fails: its item is rejected `item-timeout` and the
    stage still running is killed."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=1, item_timeout=2)
    release = system.root / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    item = system.submit("alpha", "v1.1.0").id
    report = system.run_queue()
    assert report.rejected == [item]
    outcome = system.item(item).outcome
    assert outcome["kind"] == "item-timeout" and "item_timeout" in outcome["message"]
    store = system.store()
    with store.read() as c:
        runs = c.execute(select(s.pipeline_runs.c.state)).scalars().all()
    store.close()
    assert runs == ["killed"], "the stage still running at the deadline was killed"
    marker = release.with_name("release.started.1")  # absent if killed before it started
    if marker.exists():
        assert not process_running(json.loads(marker.read_text())["pid"])
    assert system.remote_tags() == {}


def test_flake_retries_rerun_a_failed_run_and_mark_the_pass_flaky(tmp_path: Path) -> None:
    """With `flake_retries = 1` a run that fails once and passes on its rerun counts as passed;
    `queue show` marks that pass as flaky."""
    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=1, flake_retries=1)
    system.set_rules({"check": {"exits": [1, 0]}})
    item = system.submit("alpha", "v1.1.0").id
    assert system.run_queue().landed == [item]
    shown = json.loads(system.cli("queue", "show", item, "--json").stdout)
    assert [(r["state"], r["flaky"]) for r in shown["runs"]] == [("failed", False),
                                                                ("passed", True)]
    assert "flaky: passed after a failure" in system.cli("queue", "show", item).stdout


def test_unreadable_integration_remote_is_never_blamed_on_the_item(tmp_path: Path) -> None:
    """The integration remote vanishes after a run was handed out: building the candidate
    fails, the run is given back uncounted (killed, not an infrastructure failure that could
    reject the item), nobody is notified, and the worker stops with the error; once the remote
    is back the item is tested and lands."""
    from lockstep.errors import GitError
    from lockstep.queue import operations as ops
    from lockstep.queue import pipeline_leases, pipeline_store
    from lockstep.queue.pipeline_worker import PipelineLoop
    from lockstep.queue.worker import Worker

    system = System.create(tmp_path, stages=("check",), configurations=("default",))
    system.set_queue_settings(mode="speculative", runners=1)
    item = system.submit("alpha", "v1.1.0").id
    ws = system.workspace()
    store = ops.open_store(ws)
    worker = Worker(ws, store)
    loop = PipelineLoop(worker.ctx, worker.lease, worker.lander, worker.verdicts)
    with store.tx() as c:
        pipeline_store.add_runner(c, loop.runner_ids[0], worker.id)
    started = loop.round().started
    assert len(started) == 1
    hidden = system.remote.with_name("hidden.git")
    system.remote.rename(hidden)
    loop.runner.start(*started[0])
    loop.runner.join()
    assert isinstance(loop.runner.fatal, GitError)
    with store.read() as c:
        runs = c.execute(select(s.pipeline_runs.c.state)).scalars().all()
        outbox = c.execute(select(s.outbox)).all()
    assert runs == ["killed"] and outbox == []
    assert system.item(item).state == State.TESTING
    with store.tx() as c:
        pipeline_leases.remove_runners(c, loop.runner_ids)

    hidden.rename(system.remote)
    assert system.run_queue().landed == [item]
    with store.read() as c:
        runs = c.execute(select(s.pipeline_runs.c.state)).scalars().all()
    store.close()
    assert runs == ["killed", "passed"]
