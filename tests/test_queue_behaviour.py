"""Serial-queue behaviour on real remotes: pinning, stale bumps, retries, timeouts, pause."""

from __future__ import annotations

import json
from pathlib import Path

from lockstep.queue import operations as ops
from lockstep.queue.model import State
from tests.system import System, process_running


def test_moved_tag_changes_nothing(system: System) -> None:
    """Q5: the SHA resolved at submit is what is tested and landed."""
    item = system.submit("alpha", "v1.2.0")
    submitted_sha = system.shas[("alpha", "v1.2.0")]
    moved = system.publish("alpha", "v1.2.0", force=True, content="moved")
    assert moved != submitted_sha and item.sha == submitted_sha
    system.run_queue()
    landed = system.item(item.id)
    assert landed.state == State.LANDED
    assert landed.outcome is not None
    manifest = system.manifest_at(landed.outcome["tag"])
    assert manifest["default"]["alpha"]["sha"] == submitted_sha
    assert {r["pins"]["alpha"] for r in system.gate_runs()} == {"v1.2.0"}


def test_bump_to_pinned_version_is_skipped_at_submit(system: System) -> None:
    """Q6: a no-op bump exits 0, shows skipped, runs nothing, tags nothing."""
    proc = system.cli("queue", "submit", "alpha", "v1.0.0", "--json")
    assert proc.returncode == 0, proc.stderr
    assert '"state": "skipped"' in proc.stdout and "already-pinned" in proc.stdout
    system.run_queue()
    assert system.gate_runs() == [] and system.remote_tags() == {}


def test_superseded_bump_is_skipped_and_names_the_landed_item(system: System) -> None:
    """Q6: a bump overtaken by a higher-priority bump to a descendant is skipped."""
    older = system.submit("beta", "v1.2.0")
    newer = system.submit("beta", "v1.3.0", priority=10)
    report = system.run_queue()
    assert report.landed == [newer.id]
    skipped = system.item(older.id)
    assert skipped.state == State.SKIPPED
    assert skipped.outcome == {"reason": "superseded", "by": newer.id}
    assert len(system.remote_tags()) == 1
    assert {r["item"] for r in system.gate_runs()} == {newer.id}


def test_deliberate_downgrade_is_tested_and_lands(system: System) -> None:
    system.submit("gamma", "v1.3.0")
    system.run_queue()
    down = system.submit("gamma", "v1.1.0")
    system.run_queue()
    assert system.item(down.id).state == State.LANDED
    assert system.manifest_at("refs/heads/main")["edge"]["gamma"]["version"] == "v1.1.0"


def test_configuration_subset(system: System) -> None:
    item = system.submit("alpha", "v1.1.0", configs=["edge"])
    system.run_queue()
    assert system.item(item.id).state == State.LANDED
    manifest = system.manifest_at("refs/heads/main")
    assert manifest["edge"]["alpha"]["version"] == "v1.1.0"
    assert manifest["default"]["alpha"]["version"] == "v1.0.0"
    assert {r["config"] for r in system.gate_runs()} == {"edge"}


def test_infrastructure_failures_are_retried(system: System) -> None:
    """Q7: exits 75, 75, 0 with retries 2 pass with 3 tries."""
    system.set_rules({"build": {"exits": [75, 75, 0]}})
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    system.run_queue()
    shown = ops.show(system.workspace(), system.store(), item.seq)
    assert shown["state"] == "landed"
    builds = [r for r in shown["runs"] if r["stage"] == "build"]
    assert [(r["try"], r["state"]) for r in builds] == [(1, "infra"), (2, "infra"),
                                                        (3, "passed")]


def test_exhausted_infrastructure_rejects_and_pauses(system: System) -> None:
    """Q7: 75 three times → rejected `infrastructure`; three such items → queue paused."""
    system.set_rules({"build": {"exits": [75] * 9}})
    ids = [system.submit(c, "v1.1.0", configs=["default"]).id for c in ("alpha", "beta",
                                                                          "gamma")]
    extra = system.submit("alpha", "v1.2.0", configs=["default"])
    system.run_queue()
    for i in ids:
        rejected = system.item(i)
        assert rejected.state == State.REJECTED
        assert rejected.outcome is not None and rejected.outcome["kind"] == "infrastructure"
    status = ops.status(system.workspace(), system.store())
    assert status["queue"]["state"] == "paused"
    assert status["queue"]["paused_reason"] == "infrastructure"
    assert system.item(extra.id).state == State.QUEUED
    assert status["items"][0]["wait_reason"] == "paused"
    assert len(system.gate_runs()) == 9
    system.set_rules({})
    ops.resume(system.store())
    system.run_queue()
    assert system.item(extra.id).state == State.LANDED


def test_stage_timeout_kills_the_process_group(tmp_path: Path) -> None:
    """Q7: a stage outliving its timeout is killed with its children; rejected stage-timeout."""
    system = System.create(tmp_path, stages=("build",),
                           stage_options="")
    system.edit_config(lambda text: text.replace("timeout = 60", "timeout = 1"))
    release = tmp_path / "release"  # never created: only the timeout can end the stage
    system.set_rules({"build": {"spawn_child_sleep": 300, "wait_file": str(release)}})
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    system.run_queue()
    rejected = system.item(item.id)
    assert rejected.state == State.REJECTED and rejected.outcome is not None
    assert rejected.outcome["kind"] == "stage-timeout"
    assert any("timed out" in line for line in rejected.outcome["log_tail"])
    pids = json.loads(system.rules.with_name(system.rules.name + ".pids.build").read_text())
    assert [pid for pid in pids.values() if process_running(pid)] == []


def test_pause_accepts_submissions_and_starts_nothing(system: System) -> None:
    ops.pause(system.store())
    item = system.submit("beta", "v1.1.0")
    report = system.run_queue()
    assert report.landed == [] and system.gate_runs() == []
    assert system.item(item.id).state == State.QUEUED
    ops.resume(system.store())
    system.run_queue()
    assert system.item(item.id).state == State.LANDED


def test_cancel_rules(system: System) -> None:
    """Q9 (serial part): cancel queued → cancelled (again: exit 0); landed → exit 1."""
    queued = system.submit("alpha", "v1.1.0")
    assert system.cli("queue", "cancel", queued.id).returncode == 0
    assert system.cli("queue", "cancel", queued.id).returncode == 0
    assert system.item(queued.id).state == State.CANCELLED
    landed = system.submit("beta", "v1.1.0")
    system.run_queue()
    proc = system.cli("queue", "cancel", landed.id)
    assert proc.returncode == 1 and "already landed" in proc.stderr
    assert system.gate_runs() and {r["item"] for r in system.gate_runs()} == {landed.id}


def test_logs_of_a_configuration_the_item_does_not_target_is_bad_input(system: System) -> None:
    item = system.submit("alpha", "v1.1.0", configs=["default"])
    result = system.cli("queue", "logs", item.id, "--config", "edge")
    assert result.returncode == 2
    assert result.stderr == (f"error: {item.id} does not target configuration 'edge' (its "
                             "configurations: default)\n")


def test_a_landed_item_leaves_no_stage_workspace(system: System) -> None:
    item = system.submit("alpha", "v1.1.0")
    system.run_queue()
    assert system.item(item.id).state == State.LANDED
    assert not (system.ws_dir / ".lockstep" / "runs" / item.id).exists()
