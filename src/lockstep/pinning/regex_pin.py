"""Regex pins: a pattern with exactly one capturing group, full-matched against each line."""

from __future__ import annotations

import re

from lockstep.errors import ValidationError
from lockstep.pinning.model import Piece, Traced


def validate_pattern(pattern: str) -> re.Pattern[str]:
    """Compile a pin's `pattern`; ValidationError (a ValueError, so pydantic reports the key)
    unless it compiles and has exactly one capturing group."""
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise ValidationError(f"pin pattern {pattern!r} is not a valid regular expression: {exc}",
                              "use Python `re` syntax") from None
    if compiled.groups != 1:
        raise ValidationError(
            f"pin pattern {pattern!r} has {compiled.groups} capturing groups, not exactly 1",
            "capture only the value to replace; make other groups non-capturing: (?:…)")
    return compiled


def find(text: str, pattern: re.Pattern[str]) -> list[Traced]:
    """The group's span on every line the pattern full-matches (lines split on `\\n`, one
    trailing `\\r` removed; `^`/`$` optional since the match is full)."""
    found: list[Traced] = []
    offset = 0
    for number, raw in enumerate(text.split("\n"), start=1):
        line = raw[:-1] if raw.endswith("\r") else raw
        if number == 1 and line.startswith("\ufeff"):
            line, base = line[1:], offset + 1
        else:
            base = offset
        m = pattern.fullmatch(line)
        if m is not None and m.start(1) >= 0:
            found.append(Traced((Piece(base + m.start(1), m.group(1), f"line {number}", number,
                                       literal=False),)))
        offset += len(raw) + 1
    return found
