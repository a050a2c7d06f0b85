"""The Bazel worked example (docs/bazel.md), built from nothing with a real `bazel`.

Three component repos (lib, service, cli) and an integration repo whose Bazel WORKSPACE takes
each component from the stage workspace (`local_repository`, path `components/<name>`), on real
git remotes. A stage runs `bazel build //:check`, whose genrule fails when the service's required
API is not the library's; the distribution command builds `//:dist` from a landed tag.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from lockstep.manifest import Pin, render_new
from lockstep.queue import operations as ops
from lockstep.queue.store import Item
from lockstep.scaffold import init
from lockstep.stages import extract_tree
from lockstep.workspace import Workspace
from tests.system import REPO_ROOT, sh

EXAMPLE = Path(__file__).with_name("bazel_example")
COMPONENTS = ("lib", "service", "cli")
FIRST = "v1.0.0"
# What each later version changes in the example's component files.
LIB_GOOD = ("v1.1.0", {"notes.txt": "lib 1.1: faster lookups, same API\n"})
LIB_BREAKS_API = ("v2.0.0", {"api.txt": "API_VERSION=3\n"})
BAZEL_TIMEOUT = 300  # a safety net against a hung build; a cold build takes a few seconds


def require_bazel() -> None:
    """Skip (printing why) when bazel is absent and we are not root; as root, or under CI,
    fail instead: scripts/system-deps installs bazel-bootstrap there."""
    if shutil.which("bazel") is not None:
        return
    reason = ("bazel is not installed (Debian: `bash scripts/system-deps` as root installs "
              "bazel-bootstrap)")
    if os.geteuid() == 0 or os.environ.get("CI"):
        pytest.fail(reason)
    print(f"skipped: {reason}", file=sys.stderr)
    pytest.skip(reason)


@dataclass
class Example:
    """The example system on local bare remotes, plus a scratch HOME and Bazel output base."""

    root: Path
    ws_dir: Path
    home: Path
    output_base: Path
    sources: dict[str, Path] = field(default_factory=dict)
    shas: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def create(cls, tmp: Path, stage_command: list[str], extra_config: str = "") -> Example:
        """Component remotes at FIRST, and an integration repo pinning them, holding the
        example's Bazel files, with one stage running stage_command."""
        example = cls(root=tmp, ws_dir=tmp / "integration", home=tmp / "home",
                      output_base=tmp / "bazel-output")
        example.home.mkdir(parents=True)
        remotes = tmp / "remotes"
        pins: dict[str, Pin] = {}
        for name in COMPONENTS:
            bare = remotes / f"{name}.git"
            sh(["init", "--quiet", "--bare", str(bare)], tmp)
            src = tmp / "src" / name
            sh(["clone", "--quiet", str(bare), str(src)], tmp)
            shutil.copytree(EXAMPLE / "components" / name, src, dirs_exist_ok=True)
            example.sources[name] = src
            pins[name] = Pin(FIRST, example.publish(name, FIRST, {}))
        sh(["init", "--quiet", "--bare", str(remotes / "integration.git")], tmp)
        init(example.ws_dir, remote_url=str(remotes / "integration.git"),
             config_text=config_text(stage_command) + extra_config,
             manifest_text=render_new({"default": pins}))
        shutil.copytree(EXAMPLE / "integration", example.ws_dir, dirs_exist_ok=True)
        sh(["add", "--all"], example.ws_dir)
        sh(["commit", "--quiet", "-m", "the Bazel workspace of the example"], example.ws_dir)
        sh(["push", "--quiet", "origin", "HEAD:refs/heads/main"], example.ws_dir)
        return example

    def publish(self, name: str, version: str, files: dict[str, str]) -> str:
        """Commit files into a component, tag the commit as version, push; its SHA."""
        src = self.sources[name]
        for rel, text in files.items():
            (src / rel).write_text(text)
        sh(["add", "--all"], src)
        sh(["commit", "--quiet", "-m", f"{name} {version}"], src)
        sh(["tag", "-a", version, "-m", version], src)
        sh(["push", "--quiet", "origin", "HEAD:refs/heads/main", f"refs/tags/{version}"], src)
        sha = sh(["rev-parse", "HEAD"], src)
        self.shas[(name, version)] = sha
        return sha

    def env(self) -> dict[str, str]:
        """The environment of lockstep and Bazel here: HOME is a scratch directory, so no
        user's ~/.bazelrc or Bazel cache is used."""
        return {**os.environ, "HOME": str(self.home), "PYTHONPATH": str(REPO_ROOT / "src")}

    def submit(self, component: str, version: str) -> str:
        """Submit a bump in-process; the item's id."""
        ws = Workspace.open(self.ws_dir)
        return ops.submit(ws, ops.open_store(ws), component, version, [], 0).id

    def run_queue(self) -> None:
        """`lockstep queue run` as a real process until the queue is empty."""
        proc = self.cli("queue", "run", "-q")
        assert proc.returncode == 0, proc.stderr

    def cli(self, *args: str) -> subprocess.CompletedProcess[str]:
        """`python -m lockstep ARGS` as a real process in the integration repo."""
        return subprocess.run(
            [sys.executable, "-m", "lockstep", *args], cwd=self.ws_dir, env=self.env(),
            capture_output=True, text=True, timeout=BAZEL_TIMEOUT, stdin=subprocess.DEVNULL,
            check=False)


def config_text(stage_command: list[str]) -> str:
    """lockstep.toml of the example: three components, one stage."""
    comps = "".join(f'[components.{n}]\nurl = "../remotes/{n}.git"\n'
                    f'owners = ["{n}@example.com"]\n\n' for n in COMPONENTS)
    argv = ", ".join(f'"{a}"' for a in stage_command)
    return ('[integration]\nremote = "origin"\nbranch = "main"\n\n'
            "[queue]\nretry_backoff = 0\nkill_grace = 1\n\n"
            f'{comps}[[stages]]\nname = "bazel-check"\ncommand = [{argv}]\n'
            f"timeout = {BAZEL_TIMEOUT}\n")


def items_by_id(example: Example) -> dict[str, Item]:
    """Every item of the example's queue."""
    ws = Workspace.open(example.ws_dir)
    store = ops.open_store(ws)
    with store.tx() as c:
        return {item.id: item for item in store.items(c, include_terminal=True)}


def stage_logs(example: Example, item_id: str) -> str:
    """The text of every stage log of an item."""
    logs = Workspace.open(example.ws_dir).logs_dir / item_id
    return "".join(p.read_text(errors="replace") for p in sorted(logs.rglob("*.log")))


def remote_tags(example: Example) -> dict[str, str]:
    """Integration release tag → commit on the integration remote."""
    out = sh(["for-each-ref", "--format=%(refname:short) %(*objectname)", "refs/tags"],
             example.root / "remotes" / "integration.git")
    return dict(line.split(" ") for line in out.splitlines())


def pinned_files(example: Example, pins: dict[str, Pin]) -> dict[str, bytes]:
    """`<component>/<path>` → bytes of every file of each component at its pinned SHA."""
    files: dict[str, bytes] = {}
    for name in COMPONENTS:
        sha, src = pins[name].sha, example.sources[name]
        for rel in sh(["ls-tree", "-r", "--name-only", sha], src).splitlines():
            files[f"{name}/{rel}"] = subprocess.run(
                ["git", "show", f"{sha}:{rel}"], cwd=src, capture_output=True,
                check=True).stdout
    return files


def archive_files(path: Path) -> dict[str, bytes]:
    """Member name → bytes of a tar archive holding regular files only."""
    with tarfile.open(path) as tar:
        files = {}
        for member in tar.getmembers():
            data = tar.extractfile(member) if member.isfile() else None
            assert data is not None, f"{member.name} is not a regular file"
            files[member.name] = data.read()
    return files


def test_bazel_check_stage_lands_a_good_bump_and_rejects_a_broken_api(tmp_path: Path) -> None:
    require_bazel()
    started = time.monotonic()
    output_base = tmp_path / "bazel-output"
    example = Example.create(tmp_path, ["bazel", "--batch", f"--output_base={output_base}",
                                        "build", "//:check"])
    example.publish("lib", *LIB_GOOD)
    example.publish("lib", *LIB_BREAKS_API)

    good = example.submit("lib", LIB_GOOD[0])
    example.run_queue()
    bad = example.submit("lib", LIB_BREAKS_API[0])
    example.run_queue()

    items = items_by_id(example)
    assert items[good].state == "landed", items[good].outcome
    good_log = stage_logs(example, good)
    assert "Target //:check up-to-date" in good_log
    assert "Build completed successfully" in good_log
    tags = remote_tags(example)
    assert len(tags) == 1
    manifest = Workspace.open(example.ws_dir).manifest_at(next(iter(tags.values())))
    assert manifest.pins("default")["lib"] == Pin(LIB_GOOD[0], example.shas[("lib", "v1.1.0")])

    rejected = items[bad]
    assert rejected.state == "rejected"
    assert rejected.outcome is not None
    assert rejected.outcome["kind"] == "stage-failed"
    assert rejected.outcome["stage"] == "bazel-check" and rejected.outcome["exit_code"] == 1
    bad_log = stage_logs(example, bad)
    assert "ERROR: " in bad_log and "Executing genrule //:check failed" in bad_log
    assert "check failed: service requires lib API 2, lib provides API 3" in bad_log
    assert "FAILED: Build did NOT complete successfully" in bad_log
    assert any("check failed: service requires lib API 2" in line
               for line in rejected.outcome["log_tail"])
    assert len(remote_tags(example)) == 1  # nothing landed for it
    print(f"bazel check stage test: {time.monotonic() - started:.1f}s", file=sys.stderr)


def test_bazel_dist_bundles_exactly_the_pinned_components(tmp_path: Path) -> None:
    require_bazel()
    started = time.monotonic()
    example = Example.create(tmp_path, ["true"])
    example.publish("lib", *LIB_GOOD)
    example.submit("lib", LIB_GOOD[0])
    example.run_queue()
    tags = remote_tags(example)
    assert len(tags) == 1
    tag, commit = next(iter(tags.items()))

    # The tag's workspace, prepared as a stage's is: its tree, components/<name> at each pin.
    ws = Workspace.open(example.ws_dir)
    workdir = tmp_path / "release-workspace"
    extract_tree(ws.root, commit, workdir)
    pins = ws.manifest_at(commit).pins("default")
    for name, pin in pins.items():
        extract_tree(ws.components.ensure(name, pin.sha), pin.sha, workdir / "components" / name)
    dist_dir = tmp_path / "dist"
    dist_dir.mkdir()
    proc = subprocess.run(
        ["sh", "tools/dist.sh", f"--output_base={example.output_base}"], cwd=workdir,
        env={**example.env(), "LOCKSTEP_DIST_DIR": str(dist_dir)}, capture_output=True,
        text=True, timeout=BAZEL_TIMEOUT, stdin=subprocess.DEVNULL, check=False)
    assert proc.returncode == 0, proc.stderr
    assert "Build completed successfully" in proc.stderr

    assert [p.name for p in dist_dir.iterdir()] == ["example-dist.tar.gz"]
    archived = archive_files(dist_dir / "example-dist.tar.gz")
    assert pins["lib"].sha == example.shas[("lib", "v1.1.0")], tag
    expected = pinned_files(example, pins)
    assert "lib/notes.txt" in expected  # the landed bump's new file is in the archive
    assert archived == expected
    print(f"bazel dist test: {time.monotonic() - started:.1f}s", file=sys.stderr)


def test_bazel_distribution_of_each_landing(tmp_path: Path) -> None:
    """`[distribution]` runs tools/dist.sh (bazel build //:dist) after the landing: the
    published archive is exactly the tag's pinned components, and `dist verify` passes."""
    require_bazel()
    started = time.monotonic()
    output_base = tmp_path / "bazel-dist-output"
    example = Example.create(tmp_path, ["true"], extra_config=(
        '\n[distribution]\ncommand = ["sh", "tools/dist.sh", '
        f'"--output_base={output_base}"]\ntimeout = {BAZEL_TIMEOUT}\n'))
    example.publish("lib", *LIB_GOOD)
    example.submit("lib", LIB_GOOD[0])
    example.run_queue()
    tags = remote_tags(example)
    assert len(tags) == 1
    tag, commit = next(iter(tags.items()))

    shown = example.cli("dist", "show", tag, "--json")
    assert shown.returncode == 0, shown.stderr
    record = json.loads(shown.stdout)
    assert record["state"] == "published" and record["commit_sha"] == commit
    assert [a["path"] for a in record["artifacts"]] == ["example-dist.tar.gz"]
    published = Path(record["published_to"]["path"]) / "example-dist.tar.gz"
    assert hashlib.sha256(published.read_bytes()).hexdigest() == record["artifacts"][0]["sha256"]
    assert "Build completed successfully" in Path(record["log"]).read_text()
    pins = Workspace.open(example.ws_dir).manifest_at(commit).pins("default")
    assert pins["lib"].sha == example.shas[("lib", "v1.1.0")]
    assert archive_files(published) == pinned_files(example, pins)
    verified = example.cli("dist", "verify", tag)
    assert verified.returncode == 0, verified.stderr
    print(f"bazel distribution test: {time.monotonic() - started:.1f}s", file=sys.stderr)
