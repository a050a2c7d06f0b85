"""Crash tests: SIGKILL the worker at every distinct point of handling an item, then restart.

Each case runs `lockstep queue run` as a real process that kills itself with SIGKILL at the
named point (LOCKSTEP_CRASH_AT, or the stage killing its parent worker), then runs the queue
again and checks the integration remote, its tags and the store agree.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from lockstep.queue.model import State
from tests.system import STAGES, System

POINTS = ["inside-stage", "before-commit", "after-commit", "after-tag", "after-push"]


@pytest.mark.parametrize("point", POINTS)
def test_sigkill_then_restart(tmp_path: Path, point: str) -> None:
    system = System.create(tmp_path)
    env = dict(os.environ)
    if point == "inside-stage":
        system.set_rules({"check": {"kill_worker_once": True}})
    else:
        env["LOCKSTEP_CRASH_AT"] = point
    start = system.remote_head()
    first = system.submit("alpha", "v1.2.0")
    second = system.submit("beta", "v1.3.0")

    crashed = system.cli("queue", "run", env=env)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    assert system.item(first.id).state in (State.TESTING, State.LANDING)
    assert system.item(second.id).state == State.QUEUED

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
    # Every tagged tree passed every stage for every configuration it changes.
    runs = system.gate_runs()
    for name, commit in tags.items():
        tree = system.tree_of(commit)
        ran = {(r["stage"], r["config"]) for r in runs if r["candidate"] == tree}
        assert ran == {(s, c) for s in STAGES for c in ("default", "edge")}, name
    if point == "inside-stage":
        assert a.recoveries == 1 and a.attempt == 2
        retest = [r["stage"] for r in runs if r["item"] == first.id and r["attempt"] == "2"]
        assert retest[0] == "build"
    else:
        assert a.recoveries == 0 and a.attempt == 1
        # The passed result was durable: the stages were not run again.
        assert len([r for r in runs if r["item"] == first.id]) == 2 * len(STAGES)
