"""Running a stage: a fresh workspace per run, an argv without a shell, a timeout, a log file.

The result distinguishes pass, failure, infrastructure failure (the stage's infra exit code or a
workspace that could not be prepared) and timeout; only infrastructure failures are retried.
"""

from __future__ import annotations

import fnmatch
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import threading
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from lockstep import git
from lockstep.config import Config, Stage, WebhookNotifier
from lockstep.errors import GitError, LockstepError
from lockstep.scenarios import stage as upgrade

if TYPE_CHECKING:
    from lockstep.manifest import Pin
    from lockstep.workspace import Workspace


class Outcome(StrEnum):
    """How one try of a run ended."""

    PASSED = "passed"
    FAILED = "failed"
    INFRA = "infra"
    TIMEOUT = "timeout"
    ABORTED = "aborted"


@dataclass(frozen=True)
class RunResult:
    """One try's outcome, exit code and log file, and the item events it asks to record."""

    outcome: Outcome
    exit_code: int | None
    log: Path
    events: tuple[tuple[str, dict[str, Any]], ...] = ()


# The base every stage gets from the worker's environment; anything else only through pass_env.
BASE_ENV = (
    "PATH",  # find programs (the stage's argv[0] too)
    "HOME",  # tools read their configuration and caches under it (git, pip, npm, ssh)
    "USER", "LOGNAME",  # who runs the stage, for tools that ask (getpass, ssh)
    "LANG", "LC_ALL", "LC_CTYPE",  # text encoding of the stage's output
    "TZ",  # local time in what the stage prints
    "TMPDIR",  # where the worker's host wants temporary files
    "SSL_CERT_FILE", "SSL_CERT_DIR",  # the host's CA certificates (OpenSSL), not a credential
)
RESERVED_PREFIX = "LOCKSTEP_"


def stage_environment(source: Mapping[str, str], lockstep_vars: Mapping[str, str],
                      pass_env: Sequence[str], deny: Collection[str] = ()) -> dict[str, str]:
    """A stage's environment: BASE_ENV and what pass_env names or globs from source, then
    lockstep_vars. Never a `LOCKSTEP_*` variable of source (lockstep's own namespace) nor a
    name in deny (the notifiers' secret variables), whatever pass_env says."""
    if any(not k.startswith(RESERVED_PREFIX) for k in lockstep_vars):
        raise ValueError("lockstep_vars may only hold LOCKSTEP_* variables")
    env = {
        name: value for name, value in source.items()
        if not name.startswith(RESERVED_PREFIX) and name not in deny
        and (name in BASE_ENV or any(fnmatch.fnmatchcase(name, p) for p in pass_env))
    }
    env.update(lockstep_vars)
    return env


def unrunnable_stages(config: Config, path: str | None = None) -> list[str]:
    """One message per stage whose program cannot be found here: a bare name not on PATH, or
    an absolute path that is not an executable file. (A relative path is looked up in the
    stage's workspace when it runs, so it is not checked.) Such a stage would fail every bump
    as an infrastructure failure; it is the configuration's fault, not the bump's."""
    problems = []
    for i, stage in enumerate(config.stages):
        if stage.command is None:
            continue  # an upgrade stage runs this very lockstep
        program = stage.command[0]
        if "/" not in program:
            if shutil.which(program, path=path) is None:
                problems.append(f"stages.{i}.command: stage {stage.name!r} runs {program!r}, "
                                "which is not on this worker's PATH")
        elif program.startswith("/") and not os.access(program, os.X_OK):
            problems.append(f"stages.{i}.command: stage {stage.name!r} runs {program}, which "
                            "is not an executable file here")
    return problems


def secret_env_names(config: Config) -> set[str]:
    """The variables holding notifier secrets: never given to a stage."""
    return {n.secret_env for n in config.notifiers
            if isinstance(n, WebhookNotifier) and n.secret_env}


def environment_for(config: Config, stage: Stage,
                    lockstep_vars: Mapping[str, str]) -> dict[str, str]:
    """The environment of one run of stage, from this worker's environment."""
    return stage_environment(os.environ, lockstep_vars,
                             [*config.queue.pass_env, *stage.pass_env],
                             deny=secret_env_names(config))


# Trees kept extracted per repository (<git dir>/lockstep-trees/<sha>); 0 turns the cache off.
TREE_CACHE_ENTRIES = 8
_STALE_SECONDS = 3600.0  # a '.part' or '.trash' directory this old was left by a killed worker
_HEX_SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")  # a cache entry's name: nothing else


def extract_tree(repo: Path, sha: str, dest: Path) -> None:
    """Write the tree of a commit or tree SHA into dest: extracted once into the repo's tree
    cache on disk (pinned components and candidates are asked for by run after run) and copied
    from there; streamed from `git archive` straight into dest if it cannot be cached."""
    cache = _tree_cache(repo) if _HEX_SHA.fullmatch(sha) else None
    if cache is not None and (_copy_cached(cache / sha, dest)
                              or (_fill_cache(cache, repo, sha)
                                  and _copy_cached(cache / sha, dest))):
        return
    stream_tree(repo, sha, dest)


def _tree_cache(repo: Path) -> Path | None:
    """Where repo's extracted trees are kept: inside its git directory, invisible to git."""
    if TREE_CACHE_ENTRIES <= 0:
        return None
    if (repo / ".git").is_dir():
        return repo / ".git" / "lockstep-trees"
    if (repo / "objects").is_dir() and (repo / "HEAD").is_file():  # a bare repository
        return repo / "lockstep-trees"
    return None  # a worktree or a submodule (.git is a file): stream every time


def _copy_cached(entry: Path, dest: Path) -> bool:
    """Copy a cached tree into dest; False (and no dest) if it is not there, or was evicted
    by another worker while being copied."""
    if not entry.is_dir():
        return False
    try:
        os.utime(entry)  # recently used: evicted last
        shutil.copytree(entry, dest, symlinks=True, dirs_exist_ok=True)
    except OSError:
        shutil.rmtree(dest, ignore_errors=True)
        return False
    return True


def _fill_cache(cache: Path, repo: Path, sha: str) -> bool:
    """Extract sha into the cache (under a private name, then renamed: a reader never sees a
    half-written tree), then evict the least recently used trees beyond TREE_CACHE_ENTRIES."""
    part = cache / f".{sha}.{os.getpid()}.{threading.get_ident()}.part"
    try:
        cache.mkdir(parents=True, exist_ok=True)
        shutil.rmtree(part, ignore_errors=True)
        stream_tree(repo, sha, part)
        os.rename(part, cache / sha)
    except OSError:  # another worker cached it first, or the disk is full: stream instead
        pass
    finally:
        shutil.rmtree(part, ignore_errors=True)
    _evict(cache)
    return (cache / sha).is_dir()


def _evict(cache: Path) -> None:
    """Remove the least recently used trees beyond the limit, and what killed workers left."""
    now = time.time()
    trees: list[tuple[float, Path]] = []
    try:
        entries = list(cache.iterdir())
    except OSError:
        return
    for entry in entries:
        try:
            mtime = entry.stat().st_mtime
        except OSError:
            continue
        if not entry.name.startswith("."):
            trees.append((mtime, entry))
        elif now - mtime > _STALE_SECONDS:
            shutil.rmtree(entry, ignore_errors=True)
    for _, old in sorted(trees, reverse=True)[TREE_CACHE_ENTRIES:]:
        trash = cache / f".{old.name}.{os.getpid()}.trash"
        try:
            os.rename(old, trash)  # a worker copying it fails, and streams the tree instead
        except OSError:
            continue
        shutil.rmtree(trash, ignore_errors=True)


def stream_tree(repo: Path, sha: str, dest: Path, timeout: float = git.DEFAULT_TIMEOUT) -> None:
    """Write the tree of a commit or tree SHA into dest, streaming `git archive` through
    tarfile's safe 'data' filter: the tree is never held in memory."""
    dest.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryFile() as err:
        proc = subprocess.Popen(["git", "archive", "--format=tar", sha], cwd=repo,
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                env=git.base_env())
        assert proc.stdout is not None
        timer = threading.Timer(timeout, proc.kill)
        timer.start()
        bad: tarfile.TarError | None = None
        try:
            with proc.stdout:
                try:
                    with tarfile.open(fileobj=proc.stdout, mode="r|") as tar:
                        tar.extractall(dest, filter="data")
                    while proc.stdout.read(64 * 1024):  # the archive's zero padding
                        pass
                except tarfile.TarError as exc:
                    bad = exc
        finally:
            code = proc.wait()
            timer.cancel()
        if code != 0:
            err.seek(0)
            lines = err.read().decode(errors="replace").strip().splitlines()
            cause = lines[-1] if lines else (f"timed out after {timeout:g}s"
                                             if code == -signal.SIGKILL else f"exit code {code}")
            raise GitError(f"git archive {sha[:12]} failed: {git.redact(cause)}")
        if bad is not None:
            raise GitError(f"git archive {sha[:12]} gave an unusable tar stream: {bad}")


def prepare_workspace(ws: Workspace, tree: str, pins: Mapping[str, Pin], workdir: Path) -> Path:
    """A stage's workspace in workdir, made afresh: the integration tree `tree` (whose manifest
    is frozen) with `components/<name>` at each pinned SHA; returns the components directory."""
    fresh_dir(workdir)
    extract_tree(ws.root, tree, workdir)
    components = workdir / "components"
    for name, pin in pins.items():
        repo = ws.components.ensure(name, pin.sha)
        extract_tree(repo, pin.sha, components / name)
    return components


def run_command(
    argv: list[str],
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    timeout: float,
    infra_exit_code: int,
    kill_grace: float = 10.0,
    should_abort: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
    stdout: Path | None = None,
) -> RunResult:
    """Run argv in its own process group, logging stdout+stderr (stdout into its own file when
    `stdout` is given); kill the group on timeout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out, open(stdout or os.devnull, "wb") as own:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out if stdout is None else own,
                stderr=subprocess.STDOUT if stdout is None else out,
                start_new_session=True,
            )
        except OSError as exc:
            out.write(f"lockstep: cannot start stage command: {exc}\n".encode())
            return RunResult(Outcome.INFRA, None, log)
        if on_start is not None:
            on_start(proc.pid)
        deadline = time.monotonic() + timeout
        aborted = False
        while True:
            try:
                code = proc.wait(timeout=0.05)
                break
            except subprocess.TimeoutExpired:
                pass
            if should_abort is not None and should_abort():
                aborted = True
                _kill_group(proc, kill_grace)
                code = proc.returncode
                break
            if time.monotonic() >= deadline:
                out.write(f"\nlockstep: stage timed out after {timeout:g}s\n".encode())
                out.flush()
                _kill_group(proc, kill_grace)
                return RunResult(Outcome.TIMEOUT, None, log)
        _reap_group(proc.pid)
    if aborted:
        return RunResult(Outcome.ABORTED, code, log)
    if code == 0:
        return RunResult(Outcome.PASSED, 0, log)
    if code == infra_exit_code:
        return RunResult(Outcome.INFRA, code, log)
    return RunResult(Outcome.FAILED, code, log)


def run_upgrade(
    ws: Workspace,
    stage: Stage,
    *,
    cwd: Path,
    env: Mapping[str, str],
    log: Path,
    timeout: float,
    kill_grace: float = 10.0,
    should_abort: Callable[[], bool] | None = None,
    on_start: Callable[[int], None] | None = None,
    program: Sequence[str] = (sys.executable, "-m", "lockstep"),
) -> RunResult:
    """Run a `kind = "upgrade"` stage (spec upgrade-scenarios §9): `lockstep scenario run` from
    the newest integration release reachable from $LOCKSTEP_BASE to $LOCKSTEP_MANIFEST, seeded
    from $LOCKSTEP_CANDIDATE, its artifacts beside the log. Exit 75 is an infrastructure failure
    whatever the stage's infra_exit_code; a failure ends the log with the check, phase, step
    and `FAILED_` file; a base release lacking the configuration passes (an item event).
    `program` is the lockstep to run: this one, in this interpreter."""
    configuration = env["LOCKSTEP_CONFIG"]
    artifacts = log.with_suffix(".scenarios")
    report = log.with_suffix(".report.json")
    try:
        found = newest_reachable_release(ws, env["LOCKSTEP_BASE"])
        run = upgrade.plan_upgrade(
            stage.scenario, release=found[0] if found else None,
            manifest=env["LOCKSTEP_MANIFEST"], configuration=configuration,
            candidate=env["LOCKSTEP_CANDIDATE"], workspace=str(ws.root),
            artifacts=str(artifacts), program=program)
        lacking = (found is not None and run.from_release is not None
                   and configuration not in ws.manifest_at(found[1]).configurations)
        shutil.rmtree(artifacts, ignore_errors=True)
    except LockstepError as exc:
        _log_lines(log, [f"lockstep: cannot prepare the upgrade stage: {exc.one_line()}"])
        return RunResult(Outcome.INFRA, None, log)
    _log_lines(log, [run.describe()])
    if lacking:
        _log_lines(log, [f"lockstep: release {run.from_release} has no configuration "
                         f"{configuration!r}: nothing to upgrade from, the stage passes "
                         f"({upgrade.NO_BASE_CONFIGURATION})"])
        detail = {"stage": stage.name, "configuration": configuration,
                  "release": run.from_release}
        return RunResult(Outcome.PASSED, 0, log, ((upgrade.NO_BASE_CONFIGURATION, detail),))
    result = run_command(run.argv, cwd=cwd, env=env, log=log, timeout=timeout,
                         infra_exit_code=upgrade.INFRA_EXIT, kill_grace=kill_grace,
                         should_abort=should_abort, on_start=on_start, stdout=report)
    text = report.read_text(encoding="utf-8", errors="replace") if report.is_file() else ""
    report.unlink(missing_ok=True)
    lines = text.splitlines()
    if result.outcome == Outcome.FAILED:
        lines += _failure_lines(text, artifacts)
    elif result.outcome == Outcome.PASSED:
        shutil.rmtree(artifacts, ignore_errors=True)
    _log_lines(log, lines)
    return result


def _failure_lines(report: str, artifacts: Path) -> list[str]:
    """What names a failed scenario run at the end of its log: the JSON report's check, phase,
    step and FAILED_ file, or else every FAILED_ file the run left."""
    try:
        lines = upgrade.failure_lines(json.loads(report))
    except ValueError:
        lines = []
    return lines or [f"lockstep:   log: {path}"
                     for path in sorted(artifacts.rglob("FAILED_*.log"))]


def _log_lines(log: Path, lines: Sequence[str]) -> None:
    """Append lines to a stage log."""
    if lines:
        log.parent.mkdir(parents=True, exist_ok=True)
        with open(log, "a", encoding="utf-8") as fh:
            fh.write("".join(f"{line}\n" for line in lines))


def newest_reachable_release(ws: Workspace, base: str) -> tuple[str, str] | None:
    """The newest integration release tag (local or on the integration remote) whose commit is
    reachable from `base`, with that commit; None before the first release."""
    commits: dict[str, str] = {}
    for ref, sha in git.ls_remote(ws.root, ws.remote, "refs/tags/*").items():
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            commits[name[:-3]] = sha
        else:
            commits.setdefault(name, sha)
    local = git.out(["for-each-ref", "--format=%(refname:strip=2) %(objectname) %(*objectname)",
                     "refs/tags"], ws.root)
    for line in local.splitlines():
        name, sha, *peeled = line.split()
        commits[name] = peeled[0] if peeled else sha
    for tag in upgrade.releases_newest_first(commits, ws.config.integration.tag_format):
        sha = commits[tag]
        if git.is_commit(ws.root, sha) and git.is_ancestor(ws.root, sha, base):
            return tag, sha
    return None


def _kill_group(proc: subprocess.Popen[bytes], grace: float) -> None:
    """SIGTERM the process group, SIGKILL it after the grace period."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        proc.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        pass
    _reap_group(proc.pid)
    proc.wait()


def process_started(pid: int) -> float | None:
    """When a process started (what tells it from a later one reusing its pid), or None once
    it is gone."""
    try:
        return float(psutil.Process(pid).create_time())
    except psutil.NoSuchProcess:
        return None


def kill_orphaned_group(pid: int, started: float) -> bool:
    """SIGKILL what a dead worker's stage left: the process group its main process `pid`
    (started at `started`) led, even when that process has exited and only its children remain.

    Linux reuses no pid while a process group of that id exists, so a live process holding
    `pid` with another start time means the stage's group is gone: nothing is killed.
    """
    try:
        leader: psutil.Process | None = psutil.Process(pid)
    except psutil.NoSuchProcess:
        leader = None
    if leader is not None:
        try:
            if abs(leader.create_time() - started) > 1.0:
                return False
        except psutil.NoSuchProcess:
            leader = None
    if leader is None and not _group_members(pid, started):
        return False
    _reap_group(pid)
    return True


def _group_members(pgid: int, started: float) -> list[int]:
    """Live processes of the stage group pgid: in that group and in the session the stage
    opened (start_new_session: session id = group id = the stage's pid), started after it."""
    members = []
    for proc in psutil.process_iter():
        try:
            if (os.getpgid(proc.pid) == pgid and os.getsid(proc.pid) == pgid
                    and proc.create_time() >= started - 1.0):
                members.append(proc.pid)
        except (psutil.Error, ProcessLookupError, PermissionError):
            continue
    return members


def _reap_group(pgid: int) -> None:
    """Kill whatever is left of a stage's process group (background children)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, lines: int, max_bytes: int = 256 * 1024) -> list[str]:
    """The last lines of a log file, reading it backwards from its end (at most max_bytes)."""
    block = 8 * 1024
    try:
        with open(path, "rb") as fh:
            end = pos = fh.seek(0, os.SEEK_END)
            data = b""
            while pos > 0 and data.count(b"\n") <= lines and end - pos < max_bytes:
                step = min(block, pos, max_bytes - (end - pos))
                pos -= step
                fh.seek(pos)
                data = fh.read(step) + data
    except OSError:
        return []
    return data.decode(errors="replace").splitlines()[-lines:]


def fresh_dir(path: Path) -> Path:
    """An empty directory at path (removing what a crashed run left)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path

