"""`lockstep demo --serve`: the status page in a child `lockstep serve` process, up while the
demo story runs and until the user stops it, so a newcomer can watch the queue move."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import httpx

from lockstep.errors import UsageError

READY_TIMEOUT = 60.0  # seconds for the server to answer (a loaded machine imports slowly)


class StatusPage:
    """A `lockstep serve` child process for the demo's integration repo (read-only: no token
    is passed, so the page can watch but not write)."""

    def __init__(self, host: str, port: int, log: Path) -> None:
        self.host, self.port, self.log = host, port, log
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """Where the page is."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}/"

    def start(self, ws_dir: Path) -> None:
        """Start serving ws_dir and wait until it answers; a port in use is a one-line error."""
        env = {k: v for k, v in os.environ.items()
               if k not in ("LOCKSTEP_SERVE_TOKEN", "LOCKSTEP_SERVE_SUBMISSIONS_SECRET")}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", "lockstep", "serve", "-C", str(ws_dir), "--host",
                 self.host, "--port", str(self.port)],
                stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env,
                start_new_session=True)
        deadline = time.monotonic() + READY_TIMEOUT
        while not self._answers():
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.stop()
                last = self.log.read_text(errors="replace").strip().splitlines()[-1:] or ["-"]
                raise UsageError(f"the status page could not start on {self.host}:{self.port}: "
                                 f"{last[0]}", "pick another --port (0: any free port)")
            time.sleep(0.1)

    def _answers(self) -> bool:
        try:
            return httpx.get(f"{self.url}openapi.json", timeout=1).status_code == 200
        except httpx.HTTPError:
            return False

    def wait(self) -> None:
        """Block until the user interrupts (Ctrl-C or SIGTERM) or the server exits."""
        assert self.proc is not None
        previous = signal.signal(signal.SIGTERM, _interrupt)
        try:
            self.proc.wait()
        except KeyboardInterrupt:
            pass
        finally:
            signal.signal(signal.SIGTERM, previous)

    def stop(self) -> None:
        """Stop the server's process group and reap it."""
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()
        except ProcessLookupError:
            pass


def _interrupt(_sig: int, _frame: object) -> None:
    raise KeyboardInterrupt
