"""Crash tests: SIGKILL the worker at every distinct point of handling an item, then restart.

Each case runs `lockstep queue run --test-crash-at POINT` as a real process, which kills itself
with SIGKILL at that point (or the stage kills its parent worker), and first proves WHERE it
died: the local and remote branch, the local and remote tag, the commit object and the store
are exactly as that point leaves them, so moving a crash point one step breaks its test. Then
it runs the queue again and checks the remote, its tags and the store agree.
"""

from __future__ import annotations

import os
import signal
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from lockstep import git
from lockstep.queue.model import State
from tests.system import STAGES, System

POINTS = ["inside-stage", "before-commit", "after-commit", "after-tag", "after-push"]


@dataclass(frozen=True)
class World:
    """Everything a crash can have changed, read from the outside."""

    remote_head: str
    remote_tags: dict[str, str]
    local_branch: str
    local_tags: set[str]
    states: dict[str, State]
    journal: dict[str, Any] | None
    running_runs: int


def look(system: System, item_ids: list[str]) -> World:
    """Read the repos and the store as they are now."""
    store = system.store()
    with store.read() as c:
        states = {i: store.item(c, int(i[1:])).state for i in item_ids}
        journal = store.open_landing(c, int(item_ids[0][1:]))
        running = sum(1 for r in store.runs(c, int(item_ids[0][1:])) if r["state"] == "running")
    local_tags = set(git.out(["tag", "--list"], system.ws_dir).split())
    return World(system.remote_head(), system.remote_tags(),
                 git.out(["rev-parse", "refs/heads/main"], system.ws_dir), local_tags, states,
                 journal, running)


def journal_objects(repo: Path, journal: dict[str, Any]) -> tuple[str, str]:
    """The commit and tag SHAs the journal row determines, computed without writing them."""
    who = f"{journal['who_name']} <{journal['who_email']}> {journal['timestamp']} +0000"
    commit_text = (f"tree {journal['tree']}\nparent {journal['base']}\nauthor {who}\n"
                   f"committer {who}\n\n{journal['commit_message']}")
    commit = git.out(["hash-object", "-t", "commit", "--stdin"], repo,
                     input=commit_text.encode())
    tag_text = (f"object {commit}\ntype commit\ntag {journal['tag_name']}\ntagger {who}\n\n"
                f"{journal['tag_message'].rstrip()}\n")
    tag = git.out(["hash-object", "-t", "tag", "--stdin"], repo, input=tag_text.encode())
    return commit, tag


def assert_died_at(point: str, world: World, start: str, system: System) -> None:
    """The state each crash point leaves, and nothing further along."""
    first, second = list(world.states)
    assert world.states[second] == State.QUEUED
    assert world.local_branch == start  # the checkout is synced only when the worker is idle
    if point == "inside-stage":
        assert world.states[first] == State.TESTING
        assert world.journal is None and world.running_runs == 1
        assert (world.remote_head, world.remote_tags, world.local_tags) == (start, {}, set())
        return
    assert world.states[first] == State.LANDING
    assert world.journal is not None and world.journal["state"] == "open"
    assert world.journal["commit_sha"] is None  # the store never learned of the push
    commit, tag_object = journal_objects(system.ws_dir, world.journal)
    tag = world.journal["tag_name"]
    made_commit = git.has_object(system.ws_dir, commit)
    local_tag = git.rev_parse(system.ws_dir, f"refs/tags/{tag}")
    pushed = world.remote_head != start
    expected = {
        "before-commit": (False, None, False),
        "after-commit": (True, None, False),
        "after-tag": (True, tag_object, False),
        "after-push": (True, tag_object, True),
    }[point]
    assert (made_commit, local_tag, pushed) == expected, point
    if pushed:
        assert world.remote_head == commit and world.remote_tags == {tag: commit}
    else:
        assert world.remote_tags == {}


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_then_restart(tmp_path: Path, point: str) -> None:
    system = System.create(tmp_path)
    args = ["queue", "run"]
    if point == "inside-stage":
        system.set_rules({"check": {"kill_worker_once": True}})
    else:
        args += ["--test-crash-at", point]
    start = system.remote_head()
    first = system.submit("alpha", "v1.2.0")
    second = system.submit("beta", "v1.3.0")

    crashed = system.cli(*args)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    if point != "inside-stage":
        assert "TEST FAULT INJECTION ARMED" in crashed.stderr and point in crashed.stderr
    at_crash = look(system, [first.id, second.id])
    assert_died_at(point, at_crash, start, system)

    again = system.cli("queue", "run")
    assert again.returncode == 0, again.stderr

    # No lost item, nothing duplicated: both landed, one commit and one tag each.
    a, b = system.item(first.id), system.item(second.id)
    assert (a.state, b.state) == (State.LANDED, State.LANDED)
    commits = system.commits()
    assert commits[2] == start and len(commits) == 3
    tags = system.remote_tags()
    assert len(tags) == 2
    assert a.outcome is not None and b.outcome is not None
    assert tags[a.outcome["tag"]] == a.outcome["commit"] == commits[1]
    assert tags[b.outcome["tag"]] == b.outcome["commit"] == commits[0]
    if at_crash.journal is not None:
        # The journal's inputs recreated exactly the objects computed at the moment of the kill.
        commit, tag_object = journal_objects(system.ws_dir, at_crash.journal)
        assert (a.outcome["commit"], a.outcome["tag_object"]) == (commit, tag_object)
        assert a.outcome["tag"] == at_crash.journal["tag_name"]
    # Every tagged tree passed every stage for every configuration it changes.
    runs = system.gate_runs()
    for name, commit in tags.items():
        tree = system.tree_of(commit)
        ran = {(r["stage"], r["config"]) for r in runs if r["candidate"] == tree}
        assert ran == {(s, c) for s in STAGES for c in ("default", "edge")}, name
    # The summary counts what recovery finished.
    if point == "inside-stage":
        assert again.stdout.startswith("landed 2, rejected 0, skipped 0, retested 1 whose worker "
                                       "died"), again.stdout
    else:
        assert again.stdout.startswith("landed 2 (1 of them half-done landings finished by "
                                       "recovery)"), again.stdout
    if point == "inside-stage":
        assert a.recoveries == 1 and a.attempt == 2
        retest = [r["stage"] for r in runs if r["item"] == first.id and r["attempt"] == "2"]
        assert retest[0] == "build"
    else:
        assert a.recoveries == 0 and a.attempt == 1
        # The passed result was durable: the stages were not run again.
        assert len([r for r in runs if r["item"] == first.id]) == 2 * len(STAGES)


def test_sigkill_during_recovery_repairs_again(tmp_path: Path) -> None:
    """A second and third SIGKILL while repairing a half-done landing leave it repairable."""
    system = System.create(tmp_path)
    start = system.remote_head()
    item = system.submit("alpha", "v1.2.0")
    assert system.cli("queue", "run", "--test-crash-at", "after-tag").returncode == -9
    first = look(system, [item.id, item.id])
    assert first.journal is not None
    commit, tag_object = journal_objects(system.ws_dir, first.journal)
    tag = first.journal["tag_name"]

    # Killed as recovery starts: nothing touched git, the landing is still open.
    killed = system.cli("queue", "run", "--test-crash-at", "recovery-start")
    assert killed.returncode == -9, killed.stderr
    second = look(system, [item.id])
    assert (second.remote_head, second.remote_tags) == (start, {})
    assert second.journal == first.journal and second.states[item.id] == State.LANDING

    # Killed after recovery pushed (rule c) but before it recorded the landing.
    killed = system.cli("queue", "run", "--test-crash-at", "after-push")
    assert killed.returncode == -9, killed.stderr
    third = look(system, [item.id])
    assert third.remote_head == commit and third.remote_tags == {tag: commit}
    assert third.states[item.id] == State.LANDING and third.journal == first.journal
    assert git.rev_parse(system.ws_dir, f"refs/tags/{tag}") == tag_object

    done = system.cli("queue", "run")
    assert done.returncode == 0, done.stderr
    landed = system.item(item.id)
    assert landed.state == State.LANDED and landed.outcome is not None
    assert (landed.outcome["commit"], landed.outcome["tag"]) == (commit, tag)
    assert system.commits() == [commit, start] and system.remote_tags() == {tag: commit}


def test_old_crash_variable_alone_is_inert(system: System) -> None:
    """LOCKSTEP_CRASH_AT left in a shell does nothing: only the explicit switch arms a crash."""
    item = system.submit("alpha", "v1.2.0")
    env = dict(os.environ, LOCKSTEP_CRASH_AT="before-commit")
    result = system.cli("queue", "run", env=env)
    assert result.returncode == 0, result.stderr
    assert "FAULT INJECTION" not in result.stderr
    assert system.item(item.id).state == State.LANDED


def test_unknown_crash_point_is_refused(system: System) -> None:
    item = system.submit("alpha", "v1.2.0")
    result = system.cli("queue", "run", "--test-crash-at", "after-everything")
    assert result.returncode == 2
    assert result.stderr.startswith("error: unknown crash point 'after-everything' (one of:")
    assert system.item(item.id).state == State.QUEUED and system.gate_runs() == []
