"""The demo's artifact hook end to end: real bare repository, real `git push`, real jobs."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockstep import demo_artifacts
from lockstep.demo_artifacts import ArtifactHook, build_artifact, install_hook
from lockstep.errors import UsageError
from lockstep.ocilayout import MEDIA_INDEX
from lockstep.registry.layout import LayoutSource
from tests.infra import require_tool

SECRET = "s3cret-token-value-do-not-leak"
JOB = re.compile(r"building (\S+) for tag (\S+) in the background \(job (\d+),")


@dataclass
class Component:
    """A bare remote with the hook installed, a clone to push from, and the layout root."""

    bare: Path
    clone: Path
    root: Path
    gate: Path
    hook: ArtifactHook
    jobs: list[int]

    def git(self, *args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(["git", *args], cwd=self.clone, capture_output=True, text=True,
                              check=True, timeout=60, stdin=subprocess.DEVNULL)

    def push(self, *refs: str) -> tuple[str, float]:
        """Push with a secret in the environment; returns stderr and the wall time."""
        env = dict(os.environ, LOCKSTEP_GIT_TOKEN=SECRET)
        start = time.monotonic()
        done = subprocess.run(["git", "push", "origin", *refs], cwd=self.clone, env=env,
                              capture_output=True, text=True, timeout=60,
                              stdin=subprocess.DEVNULL)
        took = time.monotonic() - start
        assert done.returncode == 0, done.stderr
        self.jobs += [int(m.group(3)) for m in JOB.finditer(done.stderr)]
        return done.stderr, took


def commit(c: Component, name: str, text: str, tag: str | None = None) -> str:
    (c.clone / name).write_text(text, encoding="utf-8")
    c.git("add", name)
    c.git("commit", "-q", "-m", f"add {name}")
    if tag:
        c.git("tag", "-a", tag, "-m", f"release {tag}")
    return c.git("rev-parse", "HEAD").stdout.strip()


def make_component(tmp_path: Path, **hook_args: object) -> Component:
    bare = tmp_path / "inventory.git"
    subprocess.run(["git", "init", "-q", "--bare", "--initial-branch=main", str(bare)],
                   check=True, timeout=60)
    root = tmp_path / "registry"
    gate = tmp_path / "gate"
    hook = ArtifactHook("demo/inventory", root, **{"tag_transform": "strip-v", "gate": gate,
                                                   **hook_args})  # type: ignore[arg-type]
    install_hook(bare, hook)
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "-q", str(bare), str(clone)], check=True, timeout=60,
                   capture_output=True)
    return Component(bare, clone, root, gate, hook, [])


@pytest.fixture
def comp(tmp_path: Path) -> Iterator[Component]:
    c = make_component(tmp_path)
    yield c
    for pid in c.jobs:  # a job left waiting on its gate by a failing test
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def eventually(check: Callable[[], bool], what: str, timeout: float = 30.0) -> None:
    """Poll until `check` holds (the jobs are detached: no handle to wait on)."""
    end = time.monotonic() + timeout
    while not check():
        if time.monotonic() > end:
            raise AssertionError(f"{what} not seen within {timeout}s")
        time.sleep(0.02)


def alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


def test_tag_push_returns_before_the_build_then_the_artifact_appears(
        comp: Component, tmp_path: Path) -> None:
    commit(comp, "inventory.py", "STOCK = {}\n", tag="v1.0.0")
    stderr, took = comp.push("main", "v1.0.0")
    assert len(comp.jobs) == 1, stderr
    job = comp.jobs[0]
    source = LayoutSource(comp.root)
    # The push is over while the job still waits for the gate the test holds.
    assert alive(job)
    assert not source.check("demo/inventory", "1.0.0").found
    assert took < 5, f"push took {took:.1f}s"
    # The job runs detached, without the pusher's environment.
    assert os.getsid(job) == job
    environ = Path(f"/proc/{job}/environ").read_bytes()
    assert SECRET.encode() not in environ and b"LOCKSTEP_GIT_TOKEN" not in environ
    assert sorted(e.split(b"=")[0] for e in environ.split(b"\0") if e) == [b"LC_ALL", b"PATH"]
    comp.gate.touch()
    eventually(lambda: source.check("demo/inventory", "1.0.0").found, "demo/inventory:1.0.0")
    answer = source.check("demo/inventory", "1.0.0")
    # The same tag of the same commit builds the same bytes anywhere.
    again = build_artifact(comp.bare, "v1.0.0", "v1.0.0",
                           ArtifactHook("demo/inventory", tmp_path / "elsewhere", "strip-v"))
    assert answer.digest == again.digest
    log = comp.hook.log_path().read_text()
    assert f"tag v1.0.0: built demo/inventory {answer.digest}" in log


def test_the_image_holds_the_tagged_tree(comp: Component) -> None:
    require_tool("skopeo")
    sha = commit(comp, "inventory.py", "STOCK = {'apple': 1}\n", tag="v2.1.0")
    comp.gate.touch()
    comp.push("main", "v2.1.0")
    source = LayoutSource(comp.root)
    eventually(lambda: source.check("demo/inventory", "2.1.0").found, "demo/inventory:2.1.0")
    done = subprocess.run(["skopeo", "inspect", f"oci:{comp.root / 'demo/inventory'}:2.1.0"],
                          capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL)
    assert done.returncode == 0, done.stderr
    labels = json.loads(done.stdout)["Labels"]
    assert labels == {"org.opencontainers.image.revision": sha,
                      "org.opencontainers.image.version": "2.1.0"}


def test_branch_push_builds_nothing(comp: Component) -> None:
    comp.gate.touch()
    commit(comp, "inventory.py", "STOCK = {}\n")
    stderr, _ = comp.push("main")
    commit(comp, "more.py", "X = 1\n")
    stderr2, _ = comp.push("main:refs/heads/feature")
    # The hook starts its jobs before it returns: no job line and no log means no build.
    assert "lockstep demo CI" not in stderr + stderr2
    assert comp.jobs == []
    assert not comp.hook.log_path().exists()
    assert not (comp.root / "demo").exists()


def test_tag_deletion_builds_nothing(comp: Component) -> None:
    comp.gate.touch()
    commit(comp, "inventory.py", "STOCK = {}\n", tag="v1.0.0")
    comp.push("main", "v1.0.0")
    assert len(comp.jobs) == 1
    stderr, _ = comp.push(":refs/tags/v1.0.0")
    assert "lockstep demo CI" not in stderr and len(comp.jobs) == 1


def test_two_tags_in_one_push_build_two_images(tmp_path: Path) -> None:
    c = make_component(tmp_path, gate=None, delay=0.0, multi_platform=True)
    try:
        commit(c, "a.py", "A = 1\n", tag="v1.0.0")
        commit(c, "b.py", "B = 1\n", tag="v1.1.0")
        c.push("main", "v1.0.0", "v1.1.0")
        assert len(c.jobs) == 2
        source = LayoutSource(c.root)
        for tag in ("1.0.0", "1.1.0"):
            eventually(lambda t=tag: source.check("demo/inventory", t).found,  # type: ignore[misc]
                       f"demo/inventory:{tag}")
        answers = [source.check("demo/inventory", t) for t in ("1.0.0", "1.1.0")]
        assert {a.media_type for a in answers} == {MEDIA_INDEX}
        assert answers[0].digest != answers[1].digest
    finally:
        for pid in c.jobs:
            try:
                os.kill(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass


def test_a_tag_the_transform_rejects_is_logged_not_built(tmp_path: Path) -> None:
    c = make_component(tmp_path, tag_transform={"pattern": r"^release-(.+)$", "replace": r"\1"})
    c.gate.touch()
    commit(c, "a.py", "A = 1\n", tag="v1.0.0")
    c.push("main", "v1.0.0")
    log = c.hook.log_path()
    eventually(lambda: "build failed" in log.read_text(), "the job's failure line")
    assert "does not match tag_transform pattern" in log.read_text()
    assert not (c.root / "demo/inventory/index.json").exists()


def test_install_refuses_a_foreign_hook_and_replaces_its_own(tmp_path: Path) -> None:
    c = make_component(tmp_path)
    again = install_hook(c.bare, ArtifactHook("demo/other", c.root))
    settings = json.loads((c.bare / "hooks" / demo_artifacts.CONFIG_NAME).read_text())
    assert settings["repository"] == "demo/other" and settings["gate"] is None
    assert again.read_text().startswith("#!") and os.access(again, os.X_OK)
    again.write_text("#!/bin/sh\necho mine\n")
    with pytest.raises(UsageError):
        install_hook(c.bare, c.hook)
    with pytest.raises(UsageError):
        install_hook(tmp_path / "x.git", ArtifactHook("demo/x", c.root, "strip-w"))
