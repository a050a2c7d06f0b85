"""A harness for proving a function pure: within `outside_world_closed` the clock, randomness,
files, processes, sockets and databases all raise (patched functions, plus an audit hook for
what cannot be patched), so whatever touches them fails the test."""

from __future__ import annotations

import datetime as dt
import random
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from typing import NoReturn

import pytest

_closed_in: int | None = None  # the thread for which the outside world is closed
_hooked = False
_AUDITED = {"open", "os", "subprocess", "socket", "sqlite3", "shutil", "glob", "tempfile"}


def _deny_the_outside_world(event: str, args: tuple[object, ...]) -> None:
    """Audit hook: file, process, socket and database access fail in the closed thread."""
    if _closed_in == threading.get_ident() and event.split(".")[0] in _AUDITED:
        raise RuntimeError(f"the code under test touched the outside world: {event} {args!r}")


def stopped(*_args: object, **_kwargs: object) -> NoReturn:
    """What every closed door does."""
    raise RuntimeError("the code under test read the clock, randomness, a file, a socket, a "
                       "process or a store")


class StoppedClock(dt.datetime):
    """A datetime whose clock readings raise (construction and arithmetic still work)."""

    now = today = utcnow = fromtimestamp = classmethod(stopped)  # type: ignore[assignment]


@contextmanager
def outside_world_closed(monkeypatch: pytest.MonkeyPatch,
                         also: Iterable[tuple[object, str]] = ()) -> Iterator[None]:
    """Close the outside world for this thread; `also` names more (owner, attribute) to stop,
    e.g. a store's methods, or a module's own `datetime` import to replace with StoppedClock."""
    global _closed_in, _hooked
    if not _hooked:  # an audit hook cannot be removed: add it once, when first needed
        sys.addaudithook(_deny_the_outside_world)
        _hooked = True
    with monkeypatch.context() as m:
        for name in ("time", "time_ns", "monotonic", "monotonic_ns", "perf_counter",
                     "process_time", "localtime", "gmtime", "sleep"):
            m.setattr(time, name, stopped)
        m.setattr(dt, "datetime", StoppedClock)
        for name in ("random", "randint", "choice", "shuffle", "getrandbits"):
            m.setattr(random, name, stopped)
        m.setattr(uuid, "uuid4", stopped)
        m.setattr(socket, "socket", stopped)
        m.setattr(socket, "create_connection", stopped)
        for name in ("run", "Popen", "check_output", "check_call", "call"):
            m.setattr(subprocess, name, stopped)
        m.setattr("builtins.open", stopped)
        for owner, attr in also:
            m.setattr(owner, attr, StoppedClock if attr == "datetime" else stopped)
        _closed_in = threading.get_ident()
        try:
            yield
        finally:
            _closed_in = None
