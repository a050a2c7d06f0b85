"""The wait for one artifact (spec §5.4): check at once, then capped exponential backoff with
jitter, woken at once by a registry notification, until found, `wait_timeout` or cancel.
"""

from __future__ import annotations

import functools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

from lockstep.errors import ArtifactTimeoutError
from lockstep.registry.notifications import NotificationServer
from lockstep.registry.source import Answer, ArtifactSource
from lockstep.registry.transport import WaitCancelled, cancellable, check_cancelled

__all__ = ["Found", "Poll", "Progress", "WaitCancelled", "backoff", "format_duration",
           "wait_for_artifact"]

log = logging.getLogger("lockstep.registry")

SETTLE = 0.05  # seconds between a wake and its HEAD: distribution sends the push event
# before it links the tag, so a HEAD at the same instant can still answer 404
CANCEL_SLICE = 0.1  # seconds between two looks at the cancel event while sleeping
TICK = 1.0  # seconds between two progress reports while sleeping
LOG_EVERY = 60.0  # without a progress callback: one log line a minute


@dataclass(frozen=True)
class Poll:
    """Backoff bounds in seconds (`[release] poll = {initial, max}`)."""

    initial: float = 0.5
    max: float = 10.0


@dataclass(frozen=True)
class Progress:
    """What the live line shows. `kind` is "check" after each check, "tick" about once a
    second while sleeping, "wake" when a notification cut the sleep short."""

    kind: str
    image: str
    elapsed: float
    checks: int
    last: str
    transient: bool
    next_check_in: float | None
    notifications: bool
    check_seconds: float | None = None


@dataclass(frozen=True)
class Found:
    """The artifact: the digest its tag resolves to (an index digest for a multi-arch image)."""

    digest: str
    media_type: str | None
    checks: int
    elapsed: float
    answer: Answer


def backoff(miss: int, poll: Poll, rng: random.Random) -> float:
    """Seconds to sleep after miss `miss` (0 for the first): uniform in `[d/2, d]`,
    `d = min(poll.max, poll.initial × 2^miss)`."""
    d = min(poll.max, poll.initial * (2.0 ** min(miss, 60)))
    return rng.uniform(d / 2, d)


def format_duration(seconds: float) -> str:
    """`5s`, `1.5s`, `1m30s`, `60m0s` (minutes and seconds, as the error messages read)."""
    if seconds < 60:
        return f"{seconds:.1f}s".replace(".0s", "s") if seconds < 10 else f"{seconds:.0f}s"
    minutes, secs = divmod(round(seconds), 60)
    return f"{minutes}m{secs}s"


def wait_for_artifact(
    source: ArtifactSource, repository: str, tag: str, *, timeout: float,
    image: str | None = None, poll: Poll | None = None,
    notifications: NotificationServer | None = None, registry: str | None = None,
    cancel: threading.Event | None = None, progress: Callable[[Progress], None] | None = None,
    note: Callable[[], str | None] | None = None, rng: random.Random | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Found:
    """Wait until `repository:tag` exists in `source`; its digest.

    `timeout` counts from now (0: check once). `notifications` with `registry` (the registry
    key of the webhook path) wakes the wait on a manifest push to `repository`: one check in
    flight, at most one queued, however many events come. `cancel` set → WaitCancelled within
    about 0.2 s, mid-request included. `image` names the artifact in messages; `note()` adds a
    clause to the timeout error (e.g. "tag v26.5.0 pushed 61m ago"). Errors the source raises
    (RegistryAuthError, RegistryProtocolError, …) end the wait at once.
    """
    poll = poll or Poll()
    rng = rng or random.Random()
    shown = f"{image or repository}:{tag}"
    start = clock()
    end = start + max(0.0, timeout)
    woken = threading.Event()
    listening = notifications is not None and registry is not None
    remove = (notifications.listen(registry, repository, woken.set)
              if notifications is not None and registry is not None else None)
    checks, misses, explained = 0, 0, False
    last = Answer(False, detail="no answer yet")
    last_log = start

    def report(kind: str, next_at: float | None, took: float | None = None) -> None:
        nonlocal last_log
        now = clock()
        state = Progress(kind, shown, now - start, checks, last.detail or "-", last.transient,
                         None if next_at is None else max(0.0, next_at - now), listening, took)
        if progress is not None:
            progress(state)
        elif now - last_log >= LOG_EVERY:
            last_log = now
            log.info("waiting for %s: %s, %d checks, last: %s", shown,
                     format_duration(state.elapsed), checks, state.last)

    try:
        with cancellable(cancel):
            while True:
                check_cancelled()
                final = clock() >= end
                woken.clear()
                began = clock()
                answer = source.check(repository, tag, first_or_last=final or not explained)
                checks += 1
                took = clock() - began
                last = answer
                if answer.found and answer.digest:
                    report("check", None, took)
                    return Found(answer.digest, answer.media_type, checks, clock() - start,
                                 answer)
                explained = explained or not answer.transient
                if final:
                    report("check", None, took)
                    raise _timeout(shown, repository, tag, timeout, checks, answer, note)
                delay = backoff(misses, poll, rng)
                misses += 1
                earliest = clock() + (answer.retry_after or 0.0)
                next_at = min(max(clock() + delay, earliest), end)
                report("check", next_at, took)
                if _sleep(next_at, earliest, woken, cancel, clock,
                          functools.partial(report, "tick", next_at),
                          lambda: report("wake", clock())):
                    misses = 0  # something changed: poll from `initial` again after this

    finally:
        if remove is not None:
            remove()


def _sleep(until: float, earliest: float, woken: threading.Event,
           cancel: threading.Event | None, clock: Callable[[], float],
           tick: Callable[[], None], wake: Callable[[], None]) -> bool:
    """Sleep until `until`, or until woken (not before `earliest`, a 429's Retry-After):
    whether a notification ended the sleep."""
    last_tick = clock()
    while True:
        now = clock()
        if now >= until:
            return False
        if woken.is_set() and now >= earliest:
            wake()
            if cancel is not None and cancel.wait(SETTLE):
                raise WaitCancelled("cancelled")
            if cancel is None:
                time.sleep(SETTLE)
            return True
        if cancel is not None and cancel.is_set():
            raise WaitCancelled("cancelled")
        if now - last_tick >= TICK:
            last_tick = now
            tick()
        step = min(until - now, CANCEL_SLICE)
        if woken.is_set():  # woken before a 429's Retry-After has passed
            step = min(step, earliest - now)
            if cancel is not None:
                cancel.wait(step)
            else:
                time.sleep(step)
        else:
            woken.wait(step)


def _timeout(shown: str, repository: str, tag: str, timeout: float, checks: int,
             answer: Answer, note: Callable[[], str | None] | None) -> ArtifactTimeoutError:
    extra = note() if note is not None else None
    message = (f"{shown} not found after {format_duration(timeout)} ({checks} check"
               f"{'s' if checks != 1 else ''}, last: {answer.detail or 'no answer'})")
    if extra:
        message += f"; {extra}"
    err = ArtifactTimeoutError(message, "rerun to keep waiting")
    err.image = shown  # type: ignore[attr-defined]
    err.repository = repository  # type: ignore[attr-defined]
    err.tag = tag  # type: ignore[attr-defined]
    err.checks = checks  # type: ignore[attr-defined]
    err.last = answer.detail  # type: ignore[attr-defined]
    return err
