"""Crash points: named places where a test can have a worker SIGKILL itself.

Inert unless armed explicitly for one process, by the hidden `--test-crash-at POINT` option of
`queue run`, `release cut` and `controller run` (never by an environment variable a shell could
keep). An armed process says so on stderr when it starts; when it reaches the point it kills
itself with SIGKILL, exactly as an OOM kill or power loss would, so tests can prove that the next
run repairs whatever state is left.
"""

from __future__ import annotations

import os
import signal

from lockstep.errors import UsageError

POINTS = {
    "before-commit": "stages passed, landing journal written, commit not yet created",
    "after-commit": "commit object created, tag not yet created",
    "after-tag": "tag created locally, nothing pushed",
    "after-push": "branch and tag pushed, store not yet updated",
    "recovery-start": "a half-done landing's lock taken by recovery, remote not yet read",
    "release-after-resolve": "release: source checked and tag looked up, recorded",
    "release-after-pin": "release: pinned files computed (in memory, tree written), recorded",
    "release-after-commit": "release: pin commit created in the cache, recorded",
    "release-after-tag": "release: tag object created in the cache, not pushed",
    "release-push-unrecorded": "release: tag pushed, the journal still says started",
    "release-after-push": "release: tag pushed and recorded",
    "release-after-advance": "release: branch fast-forwarded and recorded",
    "release-during-wait": "release: waiting for an artifact, after the first miss",
    "release-after-wait": "release: artifact found and its digest recorded",
    "dist-during-build": "distribution: the command started and its pid recorded, not done",
    "dist-during-publish": "distribution: files staged (directory) or blobs pushed (OCI), "
                           "not yet put in place",
    "rollout-before-record": "rollout: a workload spawned and held at its gate, not recorded",
    "rollout-after-apply": "rollout: Applying written and Apply(N) returned (candidate started)",
    "rollout-before-promoting": "rollout: the pass found candidate N ready, Promoting not written",
    "rollout-before-promote-call": "rollout: Promoting written, promote not yet called",
    "rollout-after-promote-call": "rollout: promote answered Success, nothing written since",
    "rollout-teardown-stopped": "rollout: a workload's process stopped (SIGTERM, then SIGKILL "
                                "if needed), its record not yet removed",
}

_armed: str | None = None
_signal = signal.SIGKILL


def arm(point: str) -> None:
    """Arm one crash point for this process (tests only); `POINT:stop` stops the process there
    (SIGSTOP, as a paused VM or a stalled machine) instead of killing it."""
    global _armed, _signal
    name, _, how = point.partition(":")
    if name not in POINTS or how not in ("", "stop"):
        raise UsageError(f"unknown crash point {point!r}",
                         f"one of: {', '.join(POINTS)} (each optionally followed by :stop)")
    _armed = name
    _signal = signal.SIGSTOP if how == "stop" else signal.SIGKILL


def armed() -> str | None:
    """The armed crash point, if any."""
    return _armed


def crashpoint(name: str, when: bool = True) -> None:
    """SIGKILL (or SIGSTOP) this process if `name` is the armed point (and `when` holds);
    otherwise nothing."""
    if _armed == name and when:
        os.kill(os.getpid(), _signal)


def announcement(what: str) -> str:
    """The line an armed process writes on stderr when it starts."""
    how = "SIGSTOPs" if _signal == signal.SIGSTOP else "SIGKILLs"
    point = _armed or ""
    return (f"lockstep: TEST FAULT INJECTION ARMED: this {what} {how} itself at {point!r} "
            f"({POINTS.get(point, '')})\n")
