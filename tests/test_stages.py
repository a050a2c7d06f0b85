"""Stage processes and workspaces: the environment function, log tails, streamed tree extraction,
and killing what a dead worker's stage left behind (real processes, real git)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from lockstep import git, stages
from lockstep.errors import GitError
from lockstep.queue.model import State
from lockstep.stages import extract_tree, kill_orphaned_group, stage_environment, tail
from tests.system import System

# --- the environment (pure) --------------------------------------------------------------------

WORKER_ENV = {
    "PATH": "/usr/bin:/bin", "HOME": "/home/w", "LANG": "C.UTF-8", "TZ": "UTC",
    "TMPDIR": "/tmp/w", "USER": "w", "LOGNAME": "w", "SSL_CERT_FILE": "/etc/ca.pem",
    "SHELL": "/bin/bash", "TERM": "xterm", "PYTHONPATH": "/src", "GIT_DIR": "/repo/.git",
    "AWS_SECRET_ACCESS_KEY": "aws", "HOOK_SECRET": "hmac-key", "LOCKSTEP_WEBHOOK_SECRET": "key2",
    "LOCKSTEP_ITEM": "q999", "CI_JOB_ID": "7", "PIP_INDEX_URL": "https://pypi.example",
    "PIP_NO_CACHE_DIR": "1",
}
OURS = {"LOCKSTEP_ITEM": "q1", "LOCKSTEP_STAGE": "build"}


def test_only_the_base_and_lockstep_variables_by_default() -> None:
    env = stage_environment(WORKER_ENV, OURS, [])
    assert env == {
        "PATH": "/usr/bin:/bin", "HOME": "/home/w", "LANG": "C.UTF-8", "TZ": "UTC",
        "TMPDIR": "/tmp/w", "USER": "w", "LOGNAME": "w", "SSL_CERT_FILE": "/etc/ca.pem",
        "LOCKSTEP_ITEM": "q1", "LOCKSTEP_STAGE": "build",
    }


def test_pass_env_names_and_globs_arrive() -> None:
    env = stage_environment(WORKER_ENV, OURS, ["CI_JOB_ID", "PIP_*", "NOT_SET", "TER?"])
    assert {k: env[k] for k in ("CI_JOB_ID", "PIP_INDEX_URL", "PIP_NO_CACHE_DIR", "TERM")} == {
        "CI_JOB_ID": "7", "PIP_INDEX_URL": "https://pypi.example", "PIP_NO_CACHE_DIR": "1",
        "TERM": "xterm"}
    assert "NOT_SET" not in env and "AWS_SECRET_ACCESS_KEY" not in env


def test_pass_env_never_overrides_or_adds_a_lockstep_variable() -> None:
    env = stage_environment(WORKER_ENV, OURS, ["*", "LOCKSTEP_*", "LOCKSTEP_ITEM"])
    assert env["LOCKSTEP_ITEM"] == "q1"
    assert {k for k in env if k.startswith("LOCKSTEP_")} == set(OURS)
    with pytest.raises(ValueError):
        stage_environment(WORKER_ENV, {"PATH": "/evil"}, [])


def test_notifier_secrets_are_denied_even_when_pass_env_matches_them() -> None:
    env = stage_environment(WORKER_ENV, OURS, ["*"], deny={"HOOK_SECRET", "HOME"})
    assert "HOOK_SECRET" not in env and "HOME" not in env
    assert env["AWS_SECRET_ACCESS_KEY"] == "aws"  # "*" asked for everything else
    assert "LOCKSTEP_WEBHOOK_SECRET" not in env


# --- log tails ---------------------------------------------------------------------------------


def _bytes_read() -> int:
    """Bytes this process has read through read(2) so far (Linux /proc/self/io rchar)."""
    for line in Path("/proc/self/io").read_text().splitlines():
        if line.startswith("rchar:"):
            return int(line.split()[1])
    raise AssertionError("no rchar in /proc/self/io")


def test_tail_reads_only_the_end_of_a_big_log(tmp_path: Path) -> None:
    log = tmp_path / "stage.log"
    with open(log, "wb") as fh:
        for i in range(400_000):  # ~20 MB
            fh.write(f"line {i:07d} of a long stage log ........................\n".encode())
    before = _bytes_read()
    lines = tail(log, 50)
    read = _bytes_read() - before
    assert lines == [f"line {i:07d} of a long stage log ........................"
                     for i in range(400_000 - 50, 400_000)]
    assert read < 64 * 1024, f"tail read {read} bytes of a {log.stat().st_size} byte log"


def test_tail_of_short_missing_and_unterminated_logs(tmp_path: Path) -> None:
    short = tmp_path / "short.log"
    short.write_text("a\nb\nc")
    assert tail(short, 2) == ["b", "c"]
    assert tail(short, 10) == ["a", "b", "c"]
    assert tail(tmp_path / "missing.log", 5) == []
    long_lines = tmp_path / "wide.log"
    long_lines.write_text("x" * 100_000 + "\n" + "last\n")
    assert tail(long_lines, 2) == ["x" * 100_000, "last"]


# --- workspaces --------------------------------------------------------------------------------


@pytest.fixture
def big_repo(tmp_path: Path) -> tuple[Path, str]:
    """A repo whose one commit holds a 24 MB file, a small file and an executable script."""
    repo = tmp_path / "repo"
    git.run(["init", "--quiet", str(repo)])
    (repo / "big.bin").write_bytes(os.urandom(24 * 1024 * 1024))
    (repo / "dir").mkdir()
    (repo / "dir" / "small.txt").write_text("hello\n")
    script = repo / "run.sh"
    script.write_text("#!/bin/sh\necho hi\n")
    script.chmod(0o755)
    git.run(["add", "--all"], repo)
    git.run(["commit", "--quiet", "-m", "big"], repo)
    return repo, git.out(["rev-parse", "HEAD"], repo)


def test_extract_tree_streams_instead_of_holding_the_tree(tmp_path: Path,
                                                          big_repo: tuple[Path, str]) -> None:
    repo, sha = big_repo
    dest = tmp_path / "out"
    tracemalloc.start()
    try:
        extract_tree(repo, sha, dest)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert (dest / "big.bin").read_bytes() == (repo / "big.bin").read_bytes()
    assert (dest / "dir" / "small.txt").read_text() == "hello\n"
    assert os.access(dest / "run.sh", os.X_OK)
    assert peak < 4 * 1024 * 1024, f"peak Python memory {peak} bytes for a 24 MB tree"


def test_extract_tree_reports_gits_own_error(tmp_path: Path, big_repo: tuple[Path, str]) -> None:
    repo, _ = big_repo
    with pytest.raises(GitError, match=r"not a valid object name|not a tree object"):
        extract_tree(repo, "0" * 40, tmp_path / "out")


def _commits(repo: Path, n: int) -> list[str]:
    """n commits in repo, each changing file.txt and keeping an executable script."""
    shas = []
    for i in range(n):
        (repo / "file.txt").write_text(f"version {i}\n")
        script = repo / "bin" / "run.sh"
        script.parent.mkdir(exist_ok=True)
        script.write_text("#!/bin/sh\n")
        script.chmod(0o755)
        git.run(["add", "--all"], repo)
        git.run(["commit", "--quiet", "-m", f"v{i}"], repo)
        shas.append(git.out(["rev-parse", "HEAD"], repo))
    return shas


def test_a_tree_is_extracted_once_and_copied_from_the_disk_cache(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    git.run(["init", "--quiet", str(repo)])
    (sha,) = _commits(repo, 1)
    first, second = tmp_path / "run1", tmp_path / "run2"
    extract_tree(repo, sha, first)
    cached = repo / ".git" / "lockstep-trees" / sha
    assert (cached / "file.txt").read_text() == "version 0\n"
    (first / "file.txt").write_text("a stage changed its copy\n")
    # With git's objects gone only the cache can answer: the next run is copied from it,
    # untouched by what the first run did to its own copy.
    shutil.rmtree(repo / ".git" / "objects")
    extract_tree(repo, sha, second)
    assert (second / "file.txt").read_text() == "version 0\n"
    assert os.access(second / "bin" / "run.sh", os.X_OK)


def test_without_the_cache_every_tree_is_streamed(tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stages, "TREE_CACHE_ENTRIES", 0)
    repo = tmp_path / "repo"
    git.run(["init", "--quiet", str(repo)])
    (sha,) = _commits(repo, 1)
    extract_tree(repo, sha, tmp_path / "run1")
    assert (tmp_path / "run1" / "file.txt").read_text() == "version 0\n"
    assert not (repo / ".git" / "lockstep-trees").exists()


def test_the_tree_cache_keeps_only_the_most_recently_used(tmp_path: Path,
                                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(stages, "TREE_CACHE_ENTRIES", 2)
    repo = tmp_path / "repo"
    git.run(["init", "--quiet", str(repo)])
    shas = _commits(repo, 3)
    runs = iter(range(100))
    for sha in [shas[0], shas[1], shas[0], shas[2]]:
        extract_tree(repo, sha, tmp_path / f"run{next(runs)}")
    kept = sorted(p.name for p in (repo / ".git" / "lockstep-trees").iterdir())
    assert kept == sorted([shas[0], shas[2]])  # shas[1] was the least recently used


# --- orphaned stage processes ------------------------------------------------------------------


@pytest.fixture
def leftovers() -> Iterator[list[int]]:
    """Pids a test started; whatever still runs at the end is killed."""
    pids: list[int] = []
    yield pids
    for pid in pids:
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass


def _gone(pid: int, timeout: float = 10.0) -> bool:
    """Whether pid exits (or is a zombie) within timeout."""
    try:
        proc = psutil.Process(pid)
        proc.wait(timeout=timeout)
    except psutil.NoSuchProcess:
        return True
    except psutil.TimeoutExpired:
        return proc.status() == psutil.STATUS_ZOMBIE
    return True


def test_children_of_an_exited_stage_leader_are_killed(leftovers: list[int]) -> None:
    # A stage-like leader in its own session starts a background child, then exits on our word.
    code = ("import subprocess, sys; c = subprocess.Popen(['sleep', '300']); "
            "print(c.pid, flush=True); sys.stdin.readline()")
    leader = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, start_new_session=True)
    assert leader.stdout is not None and leader.stdin is not None
    started = psutil.Process(leader.pid).create_time()
    child = int(leader.stdout.readline())
    leftovers.append(child)
    leader.stdin.write("\n")
    leader.stdin.close()
    leader.wait()  # reaped: the pid names no process any more, its group lives on in the child
    assert not psutil.pid_exists(leader.pid)
    assert os.getpgid(child) == leader.pid
    assert kill_orphaned_group(leader.pid, started) is True
    assert _gone(child)


def test_a_reused_pid_is_never_killed(leftovers: list[int]) -> None:
    for new_session in (True, False):
        other = subprocess.Popen(["sleep", "300"], start_new_session=new_session)
        leftovers.append(other.pid)
        created = psutil.Process(other.pid).create_time()
        # The run row says a stage with this pid started an hour earlier: a different process.
        assert kill_orphaned_group(other.pid, created - 3600) is False
        assert other.poll() is None
        other.kill()
        other.wait()


def test_nothing_to_kill_when_the_group_is_gone() -> None:
    proc = subprocess.Popen(["true"], start_new_session=True)
    started = psutil.Process(proc.pid).create_time()
    proc.wait()
    assert kill_orphaned_group(proc.pid, started) is False


def test_next_queue_run_kills_the_children_of_a_stage_that_exited(
        system: System, leftovers: list[int]) -> None:
    """A stage starts a background child, SIGKILLs its worker and exits; only the child is left.
    The next `queue run` must kill it when it recovers the item."""
    system.set_rules({"check": {"spawn_child_sleep": 300, "kill_worker_once": True,
                                "exit_after_kill": True}})
    item = system.submit("alpha", "v1.2.0", configs=["default"])
    crashed = system.cli("queue", "run")
    assert crashed.returncode == -signal.SIGKILL, crashed.stderr
    pids = json.loads(system.rules.with_name(system.rules.name + ".pids.check").read_text())
    leftovers.append(pids["child"])
    assert _gone(pids["gate"], timeout=30)  # the stage's main process has exited
    child = psutil.Process(pids["child"])
    assert child.is_running() and os.getpgid(child.pid) == pids["gate"]

    system.set_rules({})
    again = system.cli("queue", "run")
    assert again.returncode == 0, again.stderr
    assert _gone(pids["child"]), "the exited stage's background child survived recovery"
    assert system.item(item.id).state == State.LANDED
    assert system.item(item.id).recoveries == 1
