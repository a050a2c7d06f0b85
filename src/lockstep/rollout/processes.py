"""Processes of the local driver, shared by workloads and stable endpoints: gated spawning (a
process runs its command only once its record is durable, so a controller killed in between
leaves nothing running unrecorded), liveness by pid and start time, the `listening` line a
process announces its addresses with, and stopping a process group."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

# The gate: a stdlib-only interpreter (-I -S: no site, no PYTHON* variables) that waits for one
# byte on an inherited pipe and then becomes the command (exec keeps the pid and start time).
# End of file, because the controller died before recording the process, means: exit 0 unrun.
_GATE = ("import os,sys\nfd=int(sys.argv[1])\ngo=os.read(fd,1)\nos.close(fd)\n"
         "sys.exit(0) if go!=b'1' else os.execvp(sys.argv[2],sys.argv[2:])")


def process_start_time(pid: int) -> int | None:
    """The process's start time in clock ticks since boot (/proc/<pid>/stat field 22), None if
    there is no such process or it is a zombie."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    fields = stat.rsplit(")", 1)[-1].split()
    if not fields or fields[0] in ("Z", "X"):
        return None
    return int(fields[19])


@dataclass
class Spawned:
    """A process held at its gate: `go()` once its record is written, `abort()` otherwise."""

    proc: subprocess.Popen[bytes]
    log_offset: int
    _gate: int

    @property
    def pid(self) -> int:
        """The pid the command will run as."""
        return self.proc.pid

    def go(self) -> None:
        """Let the process run its command."""
        try:
            os.write(self._gate, b"1")
        finally:
            os.close(self._gate)

    def abort(self) -> None:
        """Close the gate unopened: the process exits without running its command."""
        with contextlib.suppress(OSError):
            os.close(self._gate)
        self.proc.wait()


def spawn(command: Sequence[str], *, env: Mapping[str, str], cwd: Path,
          log_path: Path) -> Spawned:
    """Start `command` held at its gate, in its own session (so it outlives the controller),
    stdin closed, stdout and stderr appended to `log_path`."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    read_end, write_end = os.pipe()
    try:
        with open(log_path, "ab") as out:
            offset = out.tell()
            proc = subprocess.Popen(
                [sys.executable, "-I", "-S", "-c", _GATE, str(read_end), *command],
                stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT, env=dict(env),
                cwd=cwd, start_new_session=True, pass_fds=(read_end,))
    except BaseException:
        os.close(write_end)
        raise
    finally:
        os.close(read_end)
    return Spawned(proc, offset, write_end)


def announcement(log_path: str | Path, offset: int) -> dict[str, Any] | None:
    """The `{"event": "listening", …}` line the process wrote to its log since `offset`."""
    try:
        with open(log_path, "rb") as f:
            f.seek(offset)
            lines = f.read().decode("utf-8", errors="replace").splitlines()
    except OSError:
        return None
    for line in lines:
        if not line.startswith("{"):
            continue
        try:
            event = json.loads(line)
        except ValueError:
            continue
        if isinstance(event, dict) and event.get("event") == "listening":
            return event
    return None


def last_line(path: str | Path, offset: int) -> str:
    """The last non-empty line the process wrote, for an error message."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            lines = [ln for ln in f.read().decode("utf-8", errors="replace").splitlines()
                     if ln.strip()]
    except OSError:
        return "(no log)"
    return lines[-1][:300] if lines else "(no output)"


def stop_group(pid: int, alive: Callable[[], bool], timeout: float) -> bool:
    """SIGTERM the process group `pid`, SIGKILL after `timeout`; True once the process is gone.
    Whatever else the group holds gets SIGKILL last."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        if not alive():
            break
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(pid, sig)
        deadline = time.monotonic() + timeout
        while alive() and time.monotonic() < deadline:
            time.sleep(0.02)
    if alive():
        return False
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pid, signal.SIGKILL)
    return True
