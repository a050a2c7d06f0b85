"""Decoding a file to pin and mapping character offsets to lines and bytes."""

from __future__ import annotations

import bisect

from lockstep.errors import PinParseError


def decode(path: str, data: bytes) -> str:
    """The file's text (a BOM kept as U+FEFF, so offsets cover every byte); PinParseError with
    the line of the first invalid byte when it is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise PinParseError(f"{path}:{line}: not UTF-8 (byte {exc.start})",
                            "pinned files must be UTF-8 text") from None


class LineIndex:
    """Line numbers and byte offsets of character offsets in one text."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.starts = [0]
        self.starts.extend(i + 1 for i, c in enumerate(text) if c == "\n")

    def line(self, offset: int) -> int:
        """The 1-based line holding character `offset`."""
        return bisect.bisect_right(self.starts, offset)

    def byte(self, offset: int) -> int:
        """The byte offset of character `offset` in the UTF-8 encoding."""
        line = self.line(offset) - 1
        start = self.starts[line]
        before = len(self.text[:start].encode("utf-8")) if start else 0
        return before + len(self.text[start:offset].encode("utf-8"))
