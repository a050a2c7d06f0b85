"""Crash points: named places where a test can have lockstep SIGKILL itself.

Set LOCKSTEP_CRASH_AT=<point> in a worker's environment; when the worker reaches that point it
kills itself with SIGKILL, exactly as an OOM kill or power loss would, so tests can prove that
the next run repairs whatever state is left. Unset, a crash point costs one dict lookup.
"""

from __future__ import annotations

import os
import signal

POINTS = (
    "before-commit",  # stages passed, landing journal written, commit not yet created
    "after-commit",  # commit object created, tag not yet created
    "after-tag",  # tag created locally, nothing pushed
    "after-push",  # branch and tag pushed, store not yet updated
)


def crashpoint(name: str) -> None:
    """SIGKILL this process if LOCKSTEP_CRASH_AT names this point."""
    if os.environ.get("LOCKSTEP_CRASH_AT") == name:
        os.kill(os.getpid(), signal.SIGKILL)
