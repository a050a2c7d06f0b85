"""A real system to release: four component repositories in a DAG of depth 2, each bare remote
with the demo's artifact hook (a tag push builds the image into an OCI layout registry), and an
integration repository whose manifest pins them, tagged as an integration release."""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from pathlib import Path

from lockstep import git
from lockstep.demo_artifacts import ArtifactHook, install_hook
from lockstep.manifest import Pin, render_new
from lockstep.scaffold import init

REGISTRY = "registry.local"
INTEGRATION_TAG = "v2026.11.1"
LOCKSTEP = [sys.executable, "-m", "lockstep"]

def files(reg: str = REGISTRY) -> dict[str, dict[str, str]]:
    """Each repository's files at its manifest commit; images in registry `reg`."""
    return {
        "console": {"README": "console\n"},
        "base": {"README": "base\n"},
        "platform": {
            "Dockerfile": (
                "# syntax=docker/dockerfile:1\n"
                "ARG BASE_TAG=0.9.0\n"
                f"FROM --platform=$BUILDPLATFORM {reg}/demo/console:0.9.0 AS console\n"
                f"FROM {reg}/demo/base:${{BASE_TAG}}\n"
                "COPY --from=console /app /console\n"),
            "values.yaml": (
                "# platform chart values\n"
                "console:\n"
                "  image:\n"
                f"    repository: {reg}/demo/console  # the UI\n"
                '    tag: "0.9.0"\n'),
        },
        "chart": {
            "Chart.yaml": 'apiVersion: v2\nname: chart\nversion: 0.9.0\nappVersion: "0.9.0"\n',
            "values.yaml": f"image:\n  repository: {reg}/demo/platform\n  tag: v0.9.0\n",
        },
    }


def pinned(reg: str = REGISTRY) -> dict[str, dict[str, str]]:
    """The exact bytes of every file a pin changes, after the release."""
    return {
        "platform": {
            "Dockerfile": (
                "# syntax=docker/dockerfile:1\n"
                "ARG BASE_TAG=2026.11.1\n"
                f"FROM --platform=$BUILDPLATFORM {reg}/demo/console:2026.11.1 AS console\n"
                f"FROM {reg}/demo/base:${{BASE_TAG}}\n"
                "COPY --from=console /app /console\n"),
            "values.yaml": (
                "# platform chart values\n"
                "console:\n"
                "  image:\n"
                f"    repository: {reg}/demo/console  # the UI\n"
                '    tag: "2026.11.1"\n'),
        },
        "chart": {
            "Chart.yaml": ('apiVersion: v2\nname: chart\nversion: v2026.11.1\n'
                           'appVersion: "v2026.11.1"\n'),
            "values.yaml": f"image:\n  repository: {reg}/demo/platform\n  tag: v2026.11.1\n",
        },
    }


FILES = files()
DEPS = {"console": [], "base": [], "platform": ["console", "base"], "chart": ["platform"]}
TRANSFORM = {"console": "strip-v", "base": "strip-v", "platform": "none", "chart": "none"}
PINS = """
[[pins]]
repo = "platform"
component = "console"
file = "Dockerfile"
kind = "dockerfile"
image = "demo/console"

[[pins]]
repo = "platform"
component = "base"
file = "Dockerfile"
kind = "dockerfile"
image = "demo/base"

[[pins]]
repo = "platform"
component = "console"
file = "values.yaml"
kind = "helm-values"
image = "demo/console"

[[pins]]
repo = "chart"
component = "platform"
file = "values.yaml"
kind = "helm-values"

[[pins]]
repo = "chart"
component = "chart"
file = "Chart.yaml"
kind = "chart"
"""


@dataclass
class ReleaseSystem:
    """The repositories of one release test, and helpers to look at them."""

    root: Path
    ws_dir: Path
    layout: Path
    remotes: dict[str, Path] = field(default_factory=dict)
    sources: dict[str, str] = field(default_factory=dict)
    gates: dict[str, Path] = field(default_factory=dict)

    @classmethod
    def create(cls, tmp: Path, *, gated: bool | Collection[str] = False, extra_config: str = "",
               release_settings: str = "wait_timeout = \"60s\"\npoll = { initial = \"0.05s\", "
                                       "max = \"0.2s\" }\n",
               files: dict[str, dict[str, str]] | None = None,
               prepare: Callable[[str, Path], None] | None = None,
               component_settings: dict[str, str] | None = None,
               versions: dict[str, str] | None = None,
               digests: dict[str, str] | None = None) -> ReleaseSystem:
        """Build and publish everything; with `gated` (True: every component, or a set of
        names), artifacts appear only when the test creates `gates[name]`.

        Test variations: `files` adds or replaces files of a component at S; `prepare(name,
        work_tree)` runs after `git add` and before S is committed (symlinks, gitlinks);
        `component_settings` adds TOML lines to a component's table; `versions` sets its
        version tag (default v1.0.0) and `digests` the digest the manifest records for it."""
        ws = tmp / "integration"
        system = cls(tmp, ws, ws / "registry")
        tags = {n: (versions or {}).get(n, "v1.0.0") for n in FILES}
        for name, base_files in FILES.items():
            bare = tmp / "remotes" / f"{name}.git"
            git.run(["init", "--quiet", "--bare", str(bare)])
            git.run(["symbolic-ref", "HEAD", "refs/heads/main"], bare)
            system.remotes[name] = bare
            src = tmp / "src" / name
            git.run(["clone", "--quiet", str(bare), str(src)])
            for rel, text in {**base_files, **(files or {}).get(name, {})}.items():
                (src / rel).parent.mkdir(parents=True, exist_ok=True)
                (src / rel).write_text(text)
            git.run(["add", "--all"], src)
            if prepare is not None:
                prepare(name, src)
            git.run(["commit", "--quiet", "-m", f"{name} {tags[name]}"], src)
            git.run(["tag", "-a", tags[name], "-m", tags[name]], src)
            git.run(["push", "--quiet", "origin", "HEAD:refs/heads/main",
                     f"refs/tags/{tags[name]}"], src)
            system.sources[name] = git.out(["rev-parse", "HEAD"], src)
        comps = "".join(
            f'[components.{n}]\nurl = "../remotes/{n}.git"\nimage = "{REGISTRY}/demo/{n}"\n'
            f'tag_transform = "{TRANSFORM[n]}"\ndepends_on = {DEPS[n]!r}\n'.replace("'", '"')
            + (component_settings or {}).get(n, "") + "\n"
            for n in FILES)
        config = (
            f"{comps}[[stages]]\nname = \"check\"\ncommand = [\"true\"]\ntimeout = 60\n\n"
            f"[release]\n{release_settings}\n"
            f"[registries.\"{REGISTRY}\"]\nlayout = \"registry/\"\n{PINS}{extra_config}")
        manifest = render_new({"default": {
            n: Pin(tags[n], sha, (digests or {}).get(n)) for n, sha in system.sources.items()}})
        remote = tmp / "remotes" / "integration.git"
        git.run(["init", "--quiet", "--bare", str(remote)])
        init(ws, remote_url=str(remote), config_text=config, manifest_text=manifest)
        git.run(["tag", "-a", INTEGRATION_TAG, "-m", "integration release"], ws)
        git.run(["push", "--quiet", "origin", f"refs/tags/{INTEGRATION_TAG}"], ws)
        gated_names = set(FILES) if gated is True else set(gated or ())
        for name, bare in system.remotes.items():
            gate = tmp / "gates" / name
            system.gates[name] = gate
            install_hook(bare, ArtifactHook(repository=f"demo/{name}", layout_root=system.layout,
                                            tag_transform=TRANSFORM[name], delay=0.0,
                                            gate=gate if name in gated_names else None))
        return system

    def cli(self, *args: str, check: bool = False) -> subprocess.CompletedProcess[str]:
        """Run `lockstep ARGS -C ws` in a subprocess (its own process, as a user would)."""
        env = dict(os.environ)
        proc = subprocess.run([*LOCKSTEP, *args, "-C", str(self.ws_dir)], env=env,
                              capture_output=True, text=True, stdin=subprocess.DEVNULL,
                              timeout=300)
        if check and proc.returncode != 0:
            raise AssertionError(f"lockstep {' '.join(args)} exited {proc.returncode}:\n"
                                 f"{proc.stdout}\n{proc.stderr}")
        return proc

    def remote_tag(self, name: str, tag: str = INTEGRATION_TAG) -> str | None:
        """The commit a remote tag peels to, or None."""
        refs = git.ls_remote(self.root, str(self.remotes[name]), f"refs/tags/{tag}",
                             f"refs/tags/{tag}^{{}}")
        return refs.get(f"refs/tags/{tag}^{{}}") or refs.get(f"refs/tags/{tag}")

    def tag_object(self, name: str, tag: str = INTEGRATION_TAG) -> str | None:
        """The tag object (not peeled) a remote tag names."""
        return git.ls_remote(self.root, str(self.remotes[name]),
                             f"refs/tags/{tag}").get(f"refs/tags/{tag}")

    def show(self, name: str, rev: str, path: str) -> str:
        """A file at a revision of a component's remote."""
        return git.out(["show", f"{rev}:{path}"], self.remotes[name])

    def parents(self, name: str, rev: str) -> list[str]:
        """A commit's parents in a component's remote."""
        return git.out(["rev-list", "--parents", "-n", "1", rev], self.remotes[name]).split()[1:]

    def commit_count(self, name: str) -> int:
        """Every commit any ref of a component's remote reaches."""
        return len(git.out(["rev-list", "--all"], self.remotes[name]).split())
