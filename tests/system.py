"""A real sample system for tests: component repos and an integration repo on local bare remotes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep import git
from lockstep.manifest import Pin, render_new
from lockstep.queue import operations as ops
from lockstep.queue.store import Item, Store
from lockstep.queue.worker import RunMode, Worker, WorkerReport
from lockstep.scaffold import init
from lockstep.workspace import Workspace

GATE = Path(__file__).with_name("gate.py")
REPO_ROOT = Path(__file__).resolve().parents[1]
COMPONENTS = ("alpha", "beta", "gamma")
VERSIONS = ("v1.0.0", "v1.1.0", "v1.2.0", "v1.3.0")
STAGES = ("build", "check", "deploy")


def sh(args: list[str], cwd: Path) -> str:
    """Run git in a test repo and return stdout."""
    return git.out(args, cwd)


@dataclass
class System:
    """Handles on every repo of a sample system plus the stage gate's rules."""

    root: Path
    ws_dir: Path
    remote: Path
    rules: Path
    sources: dict[str, Path] = field(default_factory=dict)
    shas: dict[tuple[str, str], str] = field(default_factory=dict)

    @classmethod
    def create(
        cls,
        tmp: Path,
        *,
        stages: tuple[str, ...] = STAGES,
        configurations: tuple[str, ...] = ("default", "edge"),
        extra_config: str = "",
        stage_options: str = "",
    ) -> System:
        """Build the component remotes, the integration remote and its workspace clone."""
        tmp.mkdir(parents=True, exist_ok=True)
        remotes = tmp / "remotes"
        system = cls(root=tmp, ws_dir=tmp / "integration", remote=remotes / "integration.git",
                     rules=tmp / "rules.json")
        first: dict[str, Pin] = {}
        for name in COMPONENTS:
            bare = remotes / f"{name}.git"
            sh(["init", "--quiet", "--bare", str(bare)], tmp)
            src = tmp / "src" / name
            sh(["clone", "--quiet", str(bare), str(src)], tmp)
            system.sources[name] = src
            for version in VERSIONS:
                sha = system.publish(name, version)
                first.setdefault(name, Pin(version, sha))
        sh(["init", "--quiet", "--bare", str(system.remote)], tmp)
        config = system.config_text(stages, extra_config, stage_options)
        manifest = render_new({c: dict(first) for c in configurations})
        init(system.ws_dir, remote_url=str(system.remote), config_text=config,
             manifest_text=manifest)
        return system

    def config_text(self, stages: tuple[str, ...], extra: str = "",
                    stage_options: str = "") -> str:
        """lockstep.toml for this system: every stage runs tests/gate.py."""
        comps = "".join(
            f'[components.{n}]\nurl = "../remotes/{n}.git"\nowners = ["{n}@example.com"]\n\n'
            for n in COMPONENTS
        )
        stage_text = "".join(
            f'[[stages]]\nname = "{s}"\n'
            f'command = ["{sys.executable}", "{GATE}", "{self.rules}", "{s}"]\n'
            f"timeout = 60\n{stage_options}\n"
            for s in stages
        )
        return (
            "[integration]\nremote = \"origin\"\nbranch = \"main\"\n\n"
            "[queue]\nretry_backoff = 0\nkill_grace = 1\n\n"
            f"{comps}{stage_text}{extra}"
        )

    # --- component repos -------------------------------------------------------------------

    def publish(self, name: str, version: str, *, force: bool = False, content: str = "") -> str:
        """Commit a new version of a component, tag it (moving the tag with force), push."""
        src = self.sources[name]
        (src / f"{name}.txt").write_text(f"{name} {version} {content}\n")
        sh(["add", "--all"], src)
        sh(["commit", "--quiet", "-m", f"{name} {version} {content}"], src)
        sh(["tag", "-a", *(["-f"] if force else []), version, "-m", version], src)
        sh(["push", "--quiet", *(["--force"] if force else []), "origin", "HEAD:refs/heads/main",
            f"refs/tags/{version}"], src)
        sha = sh(["rev-parse", "HEAD"], src)
        self.shas[(name, version)] = sha
        return sha

    # --- lockstep --------------------------------------------------------------------------

    def workspace(self) -> Workspace:
        """A freshly loaded workspace (re-reads lockstep.toml)."""
        return Workspace.open(self.ws_dir)

    def store(self) -> Store:
        """The workspace's store."""
        return Store.open(self.workspace().store_path)

    def submit(self, component: str, version: str, configs: list[str] | None = None,
               priority: int = 0) -> Item:
        """Submit in-process."""
        ws = self.workspace()
        return ops.submit(ws, ops.open_store(ws), component, version, configs or [], priority)

    def run_queue(self, mode: RunMode = RunMode.UNTIL_EMPTY) -> WorkerReport:
        """Run an in-process worker."""
        ws = self.workspace()
        return Worker(ws, ops.open_store(ws)).run(mode)

    def item(self, item_id: str) -> Item:
        """An item by id."""
        store = self.store()
        with store.tx() as c:
            return store.item(c, int(item_id[1:]))

    def items(self) -> list[Item]:
        """Every item, terminal ones included."""
        store = self.store()
        with store.tx() as c:
            return store.items(c, include_terminal=True)

    def cli(self, *args: str, env: dict[str, str] | None = None,
            timeout: float = 120) -> subprocess.CompletedProcess[str]:
        """Run `python -m lockstep -C <workspace> ...` as a real process."""
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = str(REPO_ROOT / "src")
        return subprocess.run(
            [sys.executable, "-m", "lockstep", *args], cwd=self.ws_dir, env=full_env,
            capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL,
            check=False,
        )

    # --- rules and observations ------------------------------------------------------------

    def set_rules(self, rules: dict[str, Any]) -> None:
        """What tests/gate.py does per stage."""
        self.rules.write_text(json.dumps(rules))

    def gate_runs(self) -> list[dict[str, Any]]:
        """Every stage invocation so far."""
        path = self.rules.with_name(self.rules.name + ".runs")
        if not path.exists():
            return []
        return [json.loads(line) for line in path.read_text().splitlines()]

    def remote_tags(self) -> dict[str, str]:
        """Tag name → peeled commit on the integration remote."""
        out = sh(["for-each-ref", "--format=%(refname:short) %(*objectname) %(objectname)",
                  "refs/tags"], self.remote)
        tags = {}
        for line in out.splitlines():
            name, peeled, obj = [*line.split(" "), "", ""][:3]
            tags[name] = peeled or obj
        return tags

    def remote_head(self) -> str:
        """The integration branch head on the remote."""
        return sh(["rev-parse", "refs/heads/main"], self.remote)

    def manifest_at(self, rev: str) -> dict[str, Any]:
        """The parsed manifest at a revision of the integration remote."""
        text = sh(["show", f"{rev}:manifest.toml"], self.remote)
        return tomllib.loads(text)["configurations"]

    def tree_of(self, rev: str) -> str:
        """The tree SHA of a revision of the integration remote."""
        return sh(["rev-parse", f"{rev}^{{tree}}"], self.remote)

    def parent(self, rev: str) -> str:
        """The first parent of a commit on the integration remote."""
        return sh(["rev-parse", f"{rev}^"], self.remote)

    def commits(self) -> list[str]:
        """Commits on the remote branch, newest first."""
        return sh(["rev-list", "refs/heads/main"], self.remote).splitlines()
