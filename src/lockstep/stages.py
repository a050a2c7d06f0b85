"""Running a stage: a fresh workspace per run, an argv without a shell, a timeout, a log file.

The result distinguishes pass, failure, infrastructure failure (the stage's infra exit code or a
workspace that could not be prepared) and timeout; only infrastructure failures are retried.
"""

from __future__ import annotations

import io
import os
import shutil
import signal
import subprocess
import tarfile
import time
from collections import OrderedDict
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from enum import StrEnum
from pathlib import Path

import psutil

from lockstep import git


class Outcome(StrEnum):
    """How one try of a run ended."""

    PASSED = "passed"
    FAILED = "failed"
    INFRA = "infra"
    TIMEOUT = "timeout"
    ABORTED = "aborted"


@dataclass(frozen=True)
class RunResult:
    """One try's outcome, exit code and log file."""

    outcome: Outcome
    exit_code: int | None
    log: Path


class _ArchiveCache:
    """Recent `git archive` outputs by (repo, object SHA): objects are immutable, so a pinned
    component extracted for every run of every item is read from git once. Bounded in bytes."""

    def __init__(self, max_bytes: int = 64 * 1024 * 1024) -> None:
        self.max_bytes = max_bytes
        self.entries: OrderedDict[tuple[str, str], bytes] = OrderedDict()
        self.size = 0

    def get(self, repo: Path, sha: str) -> bytes:
        key = (str(repo), sha)
        data = self.entries.get(key)
        if data is not None:
            self.entries.move_to_end(key)
            return data
        data = git.run(["archive", "--format=tar", sha], repo).stdout
        if len(data) <= self.max_bytes // 4:
            self.entries[key] = data
            self.size += len(data)
            while self.size > self.max_bytes:
                _, old = self.entries.popitem(last=False)
                self.size -= len(old)
        return data


_archives = _ArchiveCache()


def extract_tree(repo: Path, sha: str, dest: Path) -> None:
    """Write the tree of a commit or tree SHA into dest, through tarfile's safe 'data' filter."""
    data = _archives.get(repo, sha)
    dest.mkdir(parents=True, exist_ok=True)
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        tar.extractall(dest, filter="data")


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
) -> RunResult:
    """Run argv in its own process group, logging stdout+stderr; kill the group on timeout."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "ab") as out:
        out.write(f"$ {' '.join(argv)}\n".encode())
        out.flush()
        try:
            proc = subprocess.Popen(
                argv,
                cwd=cwd,
                env=dict(env),
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
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


def kill_orphaned_group(pid: int, started: float) -> bool:
    """SIGKILL the process group a dead worker's stage left, if that process still exists."""
    try:
        if abs(psutil.Process(pid).create_time() - started) > 1.0:
            return False
    except psutil.NoSuchProcess:
        return False
    _reap_group(pid)
    return True


def _reap_group(pgid: int) -> None:
    """Kill whatever is left of a stage's process group (background children)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass


def tail(path: Path, lines: int) -> list[str]:
    """The last lines of a log file."""
    try:
        text = path.read_bytes()[-256 * 1024 :].decode(errors="replace")
    except OSError:
        return []
    return text.splitlines()[-lines:]


def fresh_dir(path: Path) -> Path:
    """An empty directory at path (removing what a crashed run left)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path

