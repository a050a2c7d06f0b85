"""`lockstep release cut` end to end on real repositories and a real hook-built layout registry:
tags at the right commits, one pin commit per downstream repository with the exact bytes, and a
rerun that changes nothing (spec/release.md R1, R2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockstep import git
from tests.release_system import INTEGRATION_TAG, ReleaseSystem, pinned

pytestmark = pytest.mark.slow


def test_a_release_tags_waits_and_pins_in_dependency_order(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path)
    dry = s.cli("release", "cut", "--dry-run", "--json", check=True)
    plan = json.loads(dry.stdout)
    assert [[c["name"] for c in level] for level in plan["levels"]] == [
        ["base", "console"], ["platform"], ["chart"]]
    assert all(s.remote_tag(n) is None for n in s.remotes), "--dry-run pushed a tag"
    status = s.cli("release", "status")  # --dry-run wrote no journal entry
    assert status.returncode == 2 and "no release" in status.stderr, status.stderr

    out = s.cli("release", "cut", "--json", check=True)
    status = json.loads(out.stdout)
    assert status["state"] == "done"
    assert {c["component"]: c["state"] for c in status["components"]} == {
        "base": "done", "console": "done", "platform": "done", "chart": "done"}

    # Upstreams are tagged at the commits the manifest pins; downstreams at one pin commit
    # each, whose only parent is that commit.
    for name in ("console", "base"):
        assert s.remote_tag(name) == s.sources[name]
    for name in ("platform", "chart"):
        pin = s.remote_tag(name)
        assert pin is not None and pin != s.sources[name]
        assert s.parents(name, pin) == [s.sources[name]]
    for name, changed in pinned().items():  # the golden bytes of every pinned file
        for path, text in changed.items():
            assert s.show(name, INTEGRATION_TAG, path) == text.rstrip("\n")
    message = git.out(["log", "-1", "--format=%B", INTEGRATION_TAG], s.remotes["platform"])
    assert message.startswith(f"release {INTEGRATION_TAG}: pin 3 references in platform")
    assert f"Lockstep-Source: {s.sources['platform']}" in message
    # The digests recorded are those of the hook-built images at the release tags.
    by_name = {c["component"]: c for c in status["components"]}
    index = json.loads((s.layout / "demo" / "console" / "index.json").read_text())
    assert by_name["console"]["digests"] == {
        "registry.local/demo/console": index["manifests"][0]["digest"]}

    # R2: a rerun is a no-op: no commit, tag or push; every tag object unchanged.
    tags = {n: s.tag_object(n) for n in s.remotes}
    counts = {n: s.commit_count(n) for n in s.remotes}
    again = s.cli("release", "cut", "--json", check=True)
    assert json.loads(again.stdout)["state"] == "done"
    assert {n: s.tag_object(n) for n in s.remotes} == tags
    assert {n: s.commit_count(n) for n in s.remotes} == counts


def test_a_tag_made_by_hand_at_the_manifest_commit_is_reused(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path)
    src = tmp_path / "hand"
    git.run(["clone", "--quiet", str(s.remotes["console"]), str(src)])
    git.run(["tag", INTEGRATION_TAG, s.sources["console"]], src)  # lightweight, by hand
    git.run(["push", "--quiet", "origin", f"refs/tags/{INTEGRATION_TAG}"], src)
    hand = s.tag_object("console")
    s.cli("release", "cut", check=True)
    assert s.tag_object("console") == hand
    assert s.remote_tag("platform") is not None


def test_a_tag_at_another_commit_stops_the_release_before_any_change(tmp_path: Path) -> None:
    s = ReleaseSystem.create(tmp_path)
    src = tmp_path / "other"
    git.run(["clone", "--quiet", str(s.remotes["base"]), str(src)])
    (src / "x").write_text("x\n")
    git.run(["add", "x"], src)
    git.run(["commit", "--quiet", "-m", "elsewhere"], src)
    other = git.out(["rev-parse", "HEAD"], src)
    git.run(["tag", INTEGRATION_TAG, other], src)
    git.run(["push", "--quiet", "origin", f"refs/tags/{INTEGRATION_TAG}"], src)
    proc = s.cli("release", "cut")
    assert proc.returncode == 2, proc.stderr
    assert "TagConflictError" in proc.stderr
    assert other in proc.stderr and s.sources["base"] in proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1
    for name in ("console", "platform", "chart"):
        assert s.remote_tag(name) is None, f"{name} was tagged despite the conflict"
