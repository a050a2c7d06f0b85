"""Faults of the integration repo or its configuration are never blamed on a bump.

A pin to a commit its component lacks, or a configuration no stage tests, pauses the queue and
returns the item untouched: no rejection, no notification, no infrastructure streak. A queue
that stops paused says so with its own exit code.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from sqlalchemy import select

from lockstep import git
from lockstep.errors import EXIT_PAUSED
from lockstep.queue import schema
from lockstep.queue.model import State
from lockstep.queue.worker import Worker
from tests.system import System, sh, wait_started

HOOK = (
    '[[notifiers]]\nname = "owners"\ntype = "command"\n'
    f'command = ["{sys.executable}", "-c", "import sys; sys.stdin.read()"]\n'
    'events = ["rejected", "landed", "skipped"]\n'
)
MISSING_SHA = "0123456789abcdef0123456789abcdef01234567"


def push_manifest_edit(system: System, old: str, new: str) -> str:
    """Someone edits the manifest by hand and pushes it; returns the new commit."""

    def edit(clone: Path) -> None:
        text = (clone / "manifest.toml").read_text()
        assert old in text
        (clone / "manifest.toml").write_text(text.replace(old, new))

    return system.commit_elsewhere(edit, "hand edit of the manifest")


def outbox(system: System) -> list[dict[str, object]]:
    store = system.store()
    with store.read() as c:
        return store.outbox_rows(c)


def test_pin_to_a_missing_commit_pauses_without_blaming_the_bump(tmp_path: Path) -> None:
    system = System.create(tmp_path, extra_config=HOOK)
    beta = system.shas[("beta", "v1.0.0")]
    push_manifest_edit(system, beta, MISSING_SHA)
    item = system.submit("alpha", "v1.2.0")

    result = system.cli("queue", "run")
    assert result.returncode == EXIT_PAUSED, result.stderr
    assert "manifest-invalid" in result.stderr and MISSING_SHA in result.stderr
    assert "paused (manifest-invalid) with 1 item(s) waiting" in result.stdout

    after = system.item(item.id)
    assert (after.state, after.attempt, after.outcome) == (State.QUEUED, 0, None)
    assert system.gate_runs() == []  # nothing was tested on a broken manifest
    assert outbox(system) == []  # no owner of an innocent component hears of it
    status = json.loads(system.cli("queue", "status", "--json").stdout)
    assert status["queue"]["paused_reason"] == "manifest-invalid"
    assert MISSING_SHA in status["queue"]["paused_message"]
    assert "then `lockstep queue resume`" in status["queue"]["paused_message"]
    store = system.store()
    with store.read() as c:
        assert store.queue(c).infra_streak == 0

    # Fixed by hand and resumed: the same item is tested and lands.
    push_manifest_edit(system, MISSING_SHA, beta)
    assert system.cli("queue", "resume").returncode == 0
    done = system.cli("queue", "run")
    assert done.returncode == 0, done.stderr
    assert system.item(item.id).state == State.LANDED


def test_a_configuration_no_stage_tests_is_refused_before_anything_runs(tmp_path: Path) -> None:
    system = System.create(tmp_path, stage_options='configurations = ["default"]\n')
    before = (system.remote_head(), system.remote_tags())
    submit = system.cli("queue", "submit", "alpha", "v1.2.0")
    assert submit.returncode == 2
    assert submit.stderr.startswith("error: ") and "'edge'" in submit.stderr
    assert len(submit.stderr.strip().splitlines()) == 1
    run = system.cli("queue", "run")
    assert run.returncode == 2 and "'edge'" in run.stderr
    assert system.items() == [] and (system.remote_head(), system.remote_tags()) == before


def test_worker_pauses_on_an_untested_configuration_it_meets_mid_run(tmp_path: Path) -> None:
    """Defence in depth: an item accepted earlier is not landed untested if the stages no
    longer cover its configuration; the queue pauses `config-invalid` instead."""
    system = System.create(tmp_path, stage_options='configurations = ["default"]\n')
    store = system.store()
    with store.tx() as c:
        seq = store.add_item(c, component="alpha", version="v1.2.0",
                             sha=system.shas[("alpha", "v1.2.0")],
                             configurations=["default", "edge"], priority=0)
    worker = Worker(system.workspace(), store)
    worker.step()  # the scheduling round, not run(): run() itself refuses to start
    item = system.item(f"q{seq}")
    assert (item.state, item.attempt) == (State.QUEUED, 0)
    with store.read() as c:
        q = store.queue(c)
    assert (q.paused, q.paused_reason) == (True, "config-invalid")
    assert system.gate_runs() == [] and system.remote_tags() == {}


def test_until_empty_exit_code_when_paused_with_items_waiting(system: System) -> None:
    assert system.cli("queue", "pause").returncode == 0
    item = system.submit("alpha", "v1.2.0")
    paused = system.cli("queue", "run", "--until-empty")
    assert paused.returncode == EXIT_PAUSED
    assert "paused (user) with 1 item(s) waiting" in paused.stdout
    assert system.item(item.id).state == State.QUEUED
    assert system.cli("queue", "resume").returncode == 0
    done = system.cli("queue", "run", "--until-empty")
    assert done.returncode == 0 and "landed 1," in done.stdout
    assert system.cli("queue", "pause").returncode == 0
    empty = system.cli("queue", "run", "--until-empty")  # paused but nothing waits
    assert empty.returncode == 0, empty.stdout


def test_base_moved_message_says_what_happened(system: System) -> None:
    item = system.submit("gamma", "v1.2.0")
    crashed = system.cli("queue", "run", "--test-crash-at", "before-commit")
    assert crashed.returncode == -9
    base = system.remote_head()
    system.commit_elsewhere(
        lambda clone: (clone / "README.md").write_text("an external change\n"), "external change")
    again = system.cli("queue", "run")
    assert again.returncode == 0, again.stderr
    assert (f"main on origin moved away from {base[:12]}, the commit {item.id} was tested on"
            in again.stderr)
    assert "landed 1, rejected 0, skipped 0, requeued 1" in again.stdout
    assert system.item(item.id).state == State.LANDED
    assert git.out(["rev-parse", "refs/heads/main"], system.ws_dir) == system.remote_head()


def test_a_dirty_checkout_is_reported_not_silently_left_stale(system: System) -> None:
    manifest = system.ws_dir / "manifest.toml"
    manifest.write_text(manifest.read_text() + "# a local note\n")
    item = system.submit("alpha", "v1.2.0")
    result = system.cli("queue", "run")
    assert result.returncode == 0, result.stderr
    assert system.item(item.id).state == State.LANDED
    assert ("warning: the checkout is 1 commit behind origin/main and has local edits to "
            "manifest.toml; it was left as it is" in result.stderr)
    assert git.out(["rev-parse", "HEAD"], system.ws_dir) != system.remote_head()


def test_bump_overtaken_by_a_pin_pushed_by_hand_while_testing_is_superseded(
        system: System, tmp_path: Path) -> None:
    """The same rule as for a landed bump: skipped `superseded`, naming the commit; never a
    silent downgrade."""
    release = tmp_path / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    item = system.submit("alpha", "v1.1.0")
    worker = system.start_worker()
    assert wait_started(release, proc=worker)["item"] == item.id
    newer = system.shas[("alpha", "v1.3.0")]
    by_hand = push_manifest_edit(system, system.shas[("alpha", "v1.0.0")], newer)
    release.write_text("go")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err

    after = system.item(item.id)
    assert after.state == State.SKIPPED
    assert after.outcome == {"reason": "superseded", "by": by_hand}
    assert system.remote_head() == by_hand and system.remote_tags() == {}
    assert system.manifest_at("main")["default"]["alpha"]["sha"] == newer


def test_a_downgrade_submitted_after_the_newer_pin_is_deliberate(system: System) -> None:
    newer = system.shas[("alpha", "v1.3.0")]
    push_manifest_edit(system, system.shas[("alpha", "v1.0.0")], newer)
    item = system.submit("alpha", "v1.1.0")
    system.run_queue()
    after = system.item(item.id)
    assert after.state == State.LANDED
    assert system.manifest_at("main")["default"]["alpha"]["version"] == "v1.1.0"


def test_accept_rewritten_history(system: System) -> None:
    system.submit("alpha", "v1.1.0")
    system.run_queue()
    landed = system.remote_head()
    rewritten = system.parent(landed)
    sh(["update-ref", "refs/heads/main", rewritten], system.remote)  # a force-push
    item = system.submit("beta", "v1.1.0")
    run = system.cli("queue", "run")
    assert run.returncode == EXIT_PAUSED
    assert "lockstep queue resume --accept-history" in run.stderr
    assert system.item(item.id).state == State.QUEUED

    accept = system.cli("queue", "resume", "--accept-history")
    assert accept.returncode == 0, accept.stderr
    assert f"without {landed[:12]}" in accept.stdout
    again = system.cli("queue", "resume", "--accept-history")
    assert again.returncode == 2 and again.stderr.startswith("error: --accept-history: the queue "
                                                             "is not paused for rewritten history")
    done = system.cli("queue", "run")
    assert done.returncode == 0, done.stderr
    after = system.item(item.id)
    assert after.state == State.LANDED and after.outcome is not None
    assert system.parent(after.outcome["commit"]) == rewritten
    store = system.store()
    with store.read() as c:
        accepted = store.last_event(c, "history-accepted")
        kinds = [r.kind for r in c.execute(
            select(schema.events.c.kind).where(schema.events.c.item_seq == after.seq))]
    assert accepted is not None and accepted["lost"] == landed
    assert kinds.index("history-accepted") < kinds.index("landed")  # in the item's history
    shown = json.loads(system.cli("queue", "show", item.id, "--json").stdout)["history"]
    assert [e["event"] for e in shown].count("history-accepted") == 1
    assert next(e for e in shown if e["event"] == "history-accepted")["detail"]["lost"] == landed


def add_failing_stage(clone: Path) -> None:
    """A new stage that fails every bump, as its author commits it from another clone."""
    toml = clone / "lockstep.toml"
    toml.write_text(toml.read_text() + f'\n[[stages]]\nname = "gate"\ncommand = '
                    f'["{sys.executable}", "-c", "raise SystemExit(9)"]\ntimeout = 60\n')


def test_a_worker_behind_the_branchs_lockstep_toml_refuses_to_gate(system: System) -> None:
    """A stage pushed to the integration branch must gate every bump, even from a checkout
    that has not pulled it yet: the stale worker refuses instead of landing untested."""
    system.commit_elsewhere(add_failing_stage, "a new gate")
    item = system.submit("alpha", "v1.2.0")
    tags = system.remote_tags()
    result = system.cli("queue", "run")
    assert result.returncode == 2
    assert result.stderr.startswith("error: this checkout's lockstep.toml differs from the one "
                                    "on origin/main (")
    assert "is 1 commit behind origin/main" in result.stderr
    assert (system.item(item.id).state, system.remote_tags()) == (State.QUEUED, tags)
    assert system.gate_runs() == []

    sh(["pull", "--quiet", "--ff-only", "origin", "main"], system.ws_dir)
    gated = system.cli("queue", "run")
    assert gated.returncode == 0, gated.stderr
    rejected = system.item(item.id)
    assert rejected.state == State.REJECTED and rejected.outcome is not None
    assert rejected.outcome["stage"] == "gate"


def test_uncommitted_edits_to_lockstep_toml_never_gate(system: System) -> None:
    toml = system.ws_dir / "lockstep.toml"
    toml.write_text(toml.read_text().replace('name = "check"', 'name = "renamed"'))
    item = system.submit("alpha", "v1.2.0")
    result = system.cli("queue", "run")
    assert result.returncode == 2
    assert "has local edits to lockstep.toml" in result.stderr
    assert system.item(item.id).state == State.QUEUED and system.gate_runs() == []


def test_lockstep_toml_pushed_while_an_item_is_tested_stops_the_stale_worker(
        system: System, tmp_path: Path) -> None:
    release = tmp_path / "release"
    system.set_rules({"check": {"wait_file": str(release)}})
    item = system.submit("alpha", "v1.2.0")
    worker = system.start_worker()
    assert wait_started(release, proc=worker)["item"] == item.id
    system.commit_elsewhere(add_failing_stage, "a new gate")
    release.write_text("go")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == 2, err
    assert "differs from the one on origin/main" in err
    after = system.item(item.id)
    assert after.state == State.QUEUED and system.remote_tags() == {}


def test_a_refused_push_keeps_the_remotes_reason_and_lands_once_allowed(system: System) -> None:
    hook = system.remote / "hooks" / "pre-receive"
    hook.write_text("#!/bin/sh\necho 'protected branch: pushes need review' >&2\nexit 1\n")
    hook.chmod(0o755)
    item = system.submit("alpha", "v1.2.0")
    refused = system.cli("queue", "run")
    assert refused.returncode == 1
    assert "protected branch: pushes need review" in refused.stderr
    assert "pre-receive hook declined" in refused.stderr
    assert system.item(item.id).state == State.LANDING and system.remote_tags() == {}
    hook.unlink()
    done = system.cli("queue", "run")
    assert done.returncode == 0, done.stderr
    assert system.item(item.id).state == State.LANDED and len(system.remote_tags()) == 1


def test_a_stage_command_that_cannot_start_is_refused_not_blamed_on_bumps(
        system: System) -> None:
    system.edit_config(lambda text: text.replace(f'command = ["{sys.executable}"',
                                                 'command = ["pyhton3-typo"', 1))
    item = system.submit("alpha", "v1.2.0")
    result = system.cli("queue", "run")
    assert result.returncode == 2
    assert result.stderr.startswith("error: lockstep.toml: stages.0.command: stage 'build' runs "
                                    "'pyhton3-typo', which is not on this worker's PATH (")
    assert system.item(item.id).state == State.QUEUED and outbox(system) == []
    validate = system.cli("manifest", "validate")
    assert validate.returncode == 0
    assert "warning: stages.0.command: stage 'build' runs 'pyhton3-typo'" in validate.stderr


def test_a_pin_force_pushed_away_pauses_even_if_the_mirror_still_has_it(system: System) -> None:
    """The worker asks the component's remote, as `manifest validate --remote` does, not only
    its own mirror, which keeps commits the remote lost."""
    doomed = system.publish("beta", "v9.0.0")
    assert system.submit("beta", "v9.0.0").state == State.QUEUED  # the mirror fetches it
    store = system.store()
    with store.tx() as c:
        store.transition(c, 1, {State.QUEUED}, State.CANCELLED)
    src = system.sources["beta"]
    sh(["tag", "-d", "v9.0.0"], src)
    sh(["push", "--quiet", "origin", ":refs/tags/v9.0.0"], src)
    sh(["push", "--quiet", "--force", "origin", f"{doomed}~1:refs/heads/main"], src)
    sh(["gc", "--quiet", "--prune=now"], system.root / "remotes" / "beta.git")
    push_manifest_edit(system, system.shas[("beta", "v1.0.0")], doomed)
    item = system.submit("alpha", "v1.2.0")
    result = system.cli("queue", "run")
    assert result.returncode == EXIT_PAUSED, result.stderr
    assert f"pins beta v1.0.0 at {doomed}" in result.stderr
    assert system.item(item.id).state == State.QUEUED and system.gate_runs() == []


def test_once_on_a_paused_queue_with_items_waiting_exits_3(system: System) -> None:
    assert system.cli("queue", "pause").returncode == 0
    item = system.submit("alpha", "v1.2.0")
    once = system.cli("queue", "run", "--once")
    assert once.returncode == EXIT_PAUSED and "paused (user)" in once.stdout
    assert system.item(item.id).state == State.QUEUED


def test_drain_of_a_paused_queue_says_so_and_changes_nothing(system: System) -> None:
    assert system.cli("queue", "pause").returncode == 0
    drain = system.cli("queue", "drain")
    assert drain.returncode == 0
    assert drain.stdout == "queue already paused (user): nothing to drain\n"
    store = system.store()
    with store.read() as c:
        q = store.queue(c)
    assert (q.paused, q.paused_reason, q.draining) == (True, "user", False)


def test_a_bump_whose_own_commit_left_its_component_is_rejected(system: System) -> None:
    """Tag deleted and commit force-pushed away after submit: the bump cannot land; it is the
    component's doing, so its owners hear of it (kind `commit-gone`)."""
    doomed = system.publish("beta", "v9.0.0")
    item = system.submit("beta", "v9.0.0")
    src = system.sources["beta"]
    sh(["tag", "-d", "v9.0.0"], src)
    sh(["push", "--quiet", "origin", ":refs/tags/v9.0.0"], src)
    sh(["push", "--quiet", "--force", "origin", f"{doomed}~1:refs/heads/main"], src)
    result = system.cli("queue", "run")
    assert result.returncode == 0, result.stderr
    rejected = system.item(item.id)
    assert rejected.state == State.REJECTED and rejected.outcome is not None
    assert rejected.outcome["kind"] == "commit-gone" and doomed in rejected.outcome["message"]
    assert system.gate_runs() == [] and system.remote_tags() == {}
