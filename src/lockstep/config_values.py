"""Checks of values that several tables of lockstep.toml share (stages, notifiers,
`[queue]`, `[distribution]`): one wording of each error wherever the value appears."""

from __future__ import annotations

import re

_PASS_ENV = re.compile(r"[A-Za-z0-9_*?]+")


def pass_env(v: list[str]) -> list[str]:
    """Variable names or fnmatch patterns (as tox's passenv): letters, digits, '_', '*', '?'."""
    for i, pattern in enumerate(v):
        if not _PASS_ENV.fullmatch(pattern):
            raise ValueError(f"entry {i} ({pattern!r}) must be a variable name or a glob of "
                             "letters, digits, '_', '*' and '?', e.g. 'CI_*'")
    return v


def argv(v: list[str]) -> list[str]:
    """A command: a non-empty argv whose program is named (it is never run through a shell)."""
    if not v or not v[0].strip():
        raise ValueError("needs a command: a non-empty list such as ['make', 'test']")
    return v


def positive_seconds(v: object) -> object:
    """A timeout: a finite number of seconds above zero (a bool is not a number here)."""
    if isinstance(v, bool) or not isinstance(v, int | float) or not 0 < v < float("inf"):
        raise ValueError("must be a positive number of seconds")
    return v
