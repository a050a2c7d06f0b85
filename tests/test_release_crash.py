"""SIGKILL at every journal step of `release cut`, then a rerun (spec/release.md R13).

Each test first proves where the process died (remote tags, the journal), so a crash point moved
by one step fails it; then the rerun must converge to the end state of an uninterrupted release:
one pin commit per downstream repository, every tag at its commit, nothing moved."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import pytest

from lockstep.release.journal import Journal
from tests.release_system import INTEGRATION_TAG, ReleaseSystem

pytestmark = pytest.mark.slow


def _rows(s: ReleaseSystem) -> list[tuple[str, str, str]]:
    journal = Journal(s.ws_dir / ".lockstep" / "release.db")
    return [(e.component, e.step, e.state)
            for e in journal.entries(INTEGRATION_TAG, "default")]


# --jobs 1 makes the first component (base) do all its git work before any other starts, so
# the state at each crash point is exact.
CASES = {
    "release-after-resolve": ([("base", "resolve", "done")], False),
    "release-after-pin": ([("base", "resolve", "done"), ("base", "pin", "done")], False),
    "release-after-commit": ([("base", "resolve", "done"), ("base", "pin", "done"),
                              ("base", "commit", "done")], False),
    "release-after-tag": ([("base", "resolve", "done"), ("base", "pin", "done"),
                           ("base", "commit", "done"), ("base", "tag", "done")], False),
    "release-push-unrecorded": ([("base", "resolve", "done"), ("base", "pin", "done"),
                                 ("base", "commit", "done"), ("base", "tag", "done"),
                                 ("base", "push", "started")], True),
    "release-after-push": ([("base", "resolve", "done"), ("base", "pin", "done"),
                            ("base", "commit", "done"), ("base", "tag", "done"),
                            ("base", "push", "started"), ("base", "push", "done")], True),
}


@pytest.mark.parametrize("point", sorted(CASES))
def test_a_crash_at_each_step_is_repaired_by_the_rerun(tmp_path: Path, point: str) -> None:
    s = ReleaseSystem.create(tmp_path, gated=True)
    counts = {n: s.commit_count(n) for n in s.remotes}
    crashed = s.cli("release", "cut", "--jobs", "1", "--test-crash-at", point)
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr

    rows, base_tagged = CASES[point]
    assert _rows(s) == rows
    assert (s.remote_tag("base") == s.sources["base"]) is base_tagged
    assert all(s.remote_tag(n) is None for n in ("console", "platform", "chart"))
    # No commit reached any remote, and no artifact exists yet (the CI builds are gated).
    assert {n: s.commit_count(n) for n in s.remotes} == counts
    assert not (s.layout / "demo").exists() or not any((s.layout / "demo").iterdir())

    for gate in s.gates.values():
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.touch()
    rerun = s.cli("release", "cut", "--json", check=True)
    assert json.loads(rerun.stdout)["state"] == "done"
    _assert_released(s, counts)


def test_a_crash_during_the_wait_resumes_waiting(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path, gated=True)
    counts = {n: s.commit_count(n) for n in s.remotes}
    crashed = s.cli("release", "cut", "--jobs", "1", "--test-crash-at", "release-during-wait")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    rows = _rows(s)
    waiting = [r for r in rows if r[1] == "wait"]
    assert len(waiting) == 1 and waiting[0][2] == "started"
    first = waiting[0][0]
    assert s.remote_tag(first) == s.sources[first]
    assert s.remote_tag("platform") is None and s.remote_tag("chart") is None
    assert {n: s.commit_count(n) for n in s.remotes} == counts
    assert not (s.layout / "demo" / first / "index.json").exists(), "artifact before its gate"

    for gate in s.gates.values():
        gate.parent.mkdir(parents=True, exist_ok=True)
        gate.touch()
    s.cli("release", "cut", check=True)
    _assert_released(s, counts)


def _assert_released(s: ReleaseSystem, before: dict[str, int]) -> None:
    """R1's end state: upstreams tagged at their commits, one pin commit per downstream."""
    for name in ("console", "base"):
        assert s.remote_tag(name) == s.sources[name]
        assert s.commit_count(name) == before[name]
    for name in ("platform", "chart"):
        pin = s.remote_tag(name)
        assert pin is not None and s.parents(name, pin) == [s.sources[name]]
        assert s.commit_count(name) == before[name] + 1, f"{name}: a duplicate pin commit"
    status = json.loads(s.cli("release", "status", "--json", check=True).stdout)
    assert {c["state"] for c in status["components"]} == {"done"}
