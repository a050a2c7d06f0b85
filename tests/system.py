"""A real sample system for tests: component repos and an integration repo on local bare remotes."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil
import pytest
import tomlkit

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
STARTED: list[subprocess.Popen[str]] = []  # background workers, killed after each test


def sh(args: list[str], cwd: Path) -> str:
    """Run git in a test repo and return stdout."""
    return git.out(args, cwd)


def wait_for(predicate: Callable[[], object], *, what: str, timeout: float = 60.0,
             proc: subprocess.Popen[str] | None = None) -> None:
    """Poll until predicate() is true: synchronise on an event, never on a guessed duration.

    The timeout is only a safety net against a hung test. With `proc`, fail at once (with its
    stderr) if that process exits before the event happens.
    """
    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            _, err = proc.communicate()
            raise AssertionError(f"process exited {proc.returncode} while waiting for {what}: "
                                 f"{err.strip()}")
        if time.monotonic() >= deadline:
            raise AssertionError(f"gave up after {timeout:g}s waiting for {what}")
        time.sleep(0.01)


def process_running(pid: int) -> bool:
    """Whether pid is a live process (one that exited but is not reaped yet is not)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def wait_started(release: Path, n: int = 1, *, timeout: float = 60.0,
                 proc: subprocess.Popen[str] | None = None) -> dict[str, Any]:
    """Wait until the n-th invocation of a `wait_file` stage (tests/gate.py) blocks on `release`;
    returns its marker: pid, ppid, stage, config, item, n."""
    marker = release.with_name(f"{release.name}.started.{n}")
    wait_for(marker.exists, what=f"stage invocation {n} to block on {release.name}",
             timeout=timeout, proc=proc)
    started: dict[str, Any] = json.loads(marker.read_text())
    return started


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
        """The workspace's store (as the CLI opens it)."""
        return ops.open_store(self.workspace())

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

    def store_runs(self, item_id: str) -> list[dict[str, Any]]:
        """The store's run rows of an item (stage, configuration, state, worker, ...)."""
        store = self.store()
        with store.read() as c:
            return store.runs(c, int(item_id[1:]))

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

    def start_worker(self, *args: str,
                     env: dict[str, str] | None = None) -> subprocess.Popen[str]:
        """Start `python -m lockstep queue run -q ARGS` as a background process."""
        full_env = dict(os.environ if env is None else env)
        full_env["PYTHONPATH"] = str(REPO_ROOT / "src")
        proc = subprocess.Popen(
            [sys.executable, "-m", "lockstep", "queue", "run", "-q", *args], cwd=self.ws_dir,
            env=full_env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            stdin=subprocess.DEVNULL)
        STARTED.append(proc)
        return proc

    def edit_config(self, edit: Callable[[str], str], message: str = "edit lockstep.toml") -> None:
        """Change lockstep.toml, committed and pushed as a user would (the worker refuses to
        gate with a lockstep.toml the integration branch does not hold)."""
        toml = self.ws_dir / "lockstep.toml"
        toml.write_text(edit(toml.read_text()))
        sh(["commit", "--quiet", "-am", message], self.ws_dir)
        sh(["push", "--quiet", "origin", "HEAD:refs/heads/main"], self.ws_dir)

    def set_queue_settings(self, **values: float) -> None:
        """Set keys of lockstep.toml's [queue] table, committed and pushed as a user would."""
        toml = self.ws_dir / "lockstep.toml"
        doc = tomlkit.parse(toml.read_text())
        queue = doc["queue"]
        assert isinstance(queue, tomlkit.items.Table)
        for key, value in values.items():
            queue[key] = value
        toml.write_text(tomlkit.dumps(doc))
        sh(["commit", "--quiet", "-am", f"queue settings: {', '.join(values)}"], self.ws_dir)
        sh(["push", "--quiet", "origin", "HEAD:refs/heads/main"], self.ws_dir)

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

    def commit_elsewhere(self, edit: Callable[[Path], None], message: str) -> str:
        """Someone else commits on the integration branch from their own clone and pushes;
        `edit` changes files in that clone. Returns the pushed commit."""
        clone = self.root / "elsewhere"
        if clone.exists():
            sh(["pull", "--quiet", "--ff-only", "origin", "main"], clone)
        else:
            sh(["clone", "--quiet", str(self.remote), str(clone)], self.root)
        edit(clone)
        sh(["add", "--all"], clone)
        sh(["commit", "--quiet", "-m", message], clone)
        sh(["push", "--quiet", "origin", "HEAD:refs/heads/main"], clone)
        return sh(["rev-parse", "HEAD"], clone)


@contextlib.contextmanager
def isolated_git(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """While it lasts, every git call sees a throwaway global config and never prompts (the
    autouse fixture for each test; module-scoped fixtures use it directly)."""
    cfg = tmp_path_factory.mktemp("gitconfig") / "gitconfig"
    cfg.write_text("[user]\n\tname = Test\n\temail = test@example.com\n"
                   "[init]\n\tdefaultBranch = main\n[advice]\n\tdetachedHead = false\n",
                   encoding="utf-8")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("GIT_CONFIG_GLOBAL", str(cfg))
        mp.setenv("GIT_CONFIG_NOSYSTEM", "1")
        mp.setenv("GIT_TERMINAL_PROMPT", "0")
        yield
