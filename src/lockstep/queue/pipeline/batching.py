"""Splitting a failed batch into consecutive parts of near-equal size (§5 bisection)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TypeVar

T = TypeVar("T")


def parts(batch: Sequence[T], ways: int) -> list[list[T]]:
    """k = min(len, ways) consecutive parts; the first len mod k parts hold one more."""
    k = max(1, min(len(batch), ways))
    size, extra = divmod(len(batch), k)
    out: list[list[T]] = []
    at = 0
    for index in range(k):
        length = size + (1 if index < extra else 0)
        out.append(list(batch[at: at + length]))
        at += length
    return out
