"""Running one git child the transport's way: argv only, own session, stdin closed, output
captured, a timeout that kills the child's whole process group (git, its helpers, ssh)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from lockstep.errors import GitError

REAP_TIMEOUT = 5.0  # after a kill: how long to wait for pipes held by escaped grandchildren
INTERRUPT_GRACE = 10.0  # Ctrl-C: a running git command may finish for this long (§3)


@dataclass(frozen=True)
class Child:
    """A finished git child: exit status, output, and whether the timeout killed it."""

    argv: tuple[str, ...]
    returncode: int
    stdout: bytes
    stderr: bytes
    timed_out: bool
    timeout: float
    seconds: float
    pid: int

    @property
    def ok(self) -> bool:
        """Exit status 0 and not killed."""
        return self.returncode == 0 and not self.timed_out


def run(argv: Sequence[str], cwd: Path | None, env: Mapping[str, str],
        timeout: float) -> Child:
    """Run argv in a new session (no controlling terminal: ssh and askpass helpers cannot open
    /dev/tty, a terminal's SIGINT does not reach it); on expiry kill its process group."""
    start = time.monotonic()
    try:
        proc = subprocess.Popen(list(argv), cwd=cwd, env=dict(env), stdin=subprocess.DEVNULL,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                start_new_session=True)
    except FileNotFoundError as exc:
        raise GitError(f"cannot run {argv[0]}: {exc.strerror}",
                       "install git 2.30 or newer") from None
    timed_out = False
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        timed_out = True
        _kill_group(proc.pid)
        try:
            out, err = proc.communicate(timeout=REAP_TIMEOUT)
        except subprocess.TimeoutExpired:  # a grandchild left the group and holds the pipes
            proc.kill()
            proc.wait()
            out, err = b"", b""
    except KeyboardInterrupt:
        _finish_after_interrupt(proc)
        raise
    except BaseException:
        _kill_group(proc.pid)
        proc.wait()
        raise
    return Child(tuple(argv), proc.returncode, out, err, timed_out, timeout,
                 time.monotonic() - start, proc.pid)


def _finish_after_interrupt(proc: subprocess.Popen[bytes]) -> None:
    """Ctrl-C reached lockstep, not the child (its own session): let it finish, a push is not
    cut in half; kill its group after the grace period or at a second Ctrl-C."""
    try:
        proc.communicate(timeout=INTERRUPT_GRACE)
    except (subprocess.TimeoutExpired, KeyboardInterrupt):
        _kill_group(proc.pid)
        proc.wait()


def _kill_group(pgid: int) -> None:
    """SIGKILL the child's process group (its session leader's pid is the group id)."""
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass
