"""Which checks a run selects (spec §2, §4 step 3, §9 sharding): sorted by name, then `--check`,
then `--shard`, then minus `@disabled` and `can_run` rejections."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from lockstep.errors import UsageError
from lockstep.scenarios.check import Check, disabled_reason, is_abstract
from lockstep.scenarios.errors import CheckContractError

_SHARD = re.compile(r"([0-9]+)/([0-9]+)")


@dataclass(frozen=True)
class Shard:
    """`--shard I/N`: the 0-based shard I of N."""

    index: int
    count: int

    @classmethod
    def parse(cls, text: str) -> Shard:
        """`I/N` with 0 ≤ I < N; anything else is a usage error."""
        m = _SHARD.fullmatch(text.strip())
        if not m or not 0 <= int(m.group(1)) < int(m.group(2)):
            raise UsageError(f"invalid --shard {text!r}",
                             "give I/N with 0 <= I < N, e.g. --shard 0/4")
        return cls(int(m.group(1)), int(m.group(2)))

    def __str__(self) -> str:
        return f"{self.index}/{self.count}"


@dataclass(frozen=True)
class CheckSelection:
    """The outcome of selection: selected classes in name order, and what was left out and why."""

    selected: tuple[type[Check], ...]
    disabled: tuple[tuple[str, str], ...]  # (name, reason)
    skipped: tuple[str, ...]               # rejected by can_run


def selectable(classes: Iterable[type[Check]]) -> list[type[Check]]:
    """The non-abstract classes sorted by name; two with one name are a CheckContractError."""
    by_name: dict[str, type[Check]] = {}
    for cls in classes:
        if is_abstract(cls):
            continue
        other = by_name.get(cls.name())
        if other is not None and other is not cls:
            raise CheckContractError(
                f"two checks are named {cls.name()}: {_where(other)} and {_where(cls)}",
                "a check's name is its class name; rename one of them")
        by_name[cls.name()] = cls
    return [by_name[n] for n in sorted(by_name)]


def select(classes: Iterable[type[Check]], *, names: Sequence[str] = (),
           shard: Shard | None = None, base_version: str | None = None,
           target_version: str | None = None) -> CheckSelection:
    """Selection in the spec's order; `can_run` is evaluated once per remaining check."""
    pool = selectable(classes)
    if names:
        known = {c.name() for c in pool}
        unknown = sorted(set(names) - known)
        if unknown:
            raise UsageError(f"unknown check {', '.join(unknown)}",
                             f"known checks: {', '.join(sorted(known)) or 'none'}")
        pool = [c for c in pool if c.name() in set(names)]
    if shard is not None:
        pool = pool[shard.index::shard.count]
    selected: list[type[Check]] = []
    off: list[tuple[str, str]] = []
    skipped: list[str] = []
    for cls in pool:
        reason = disabled_reason(cls)
        if reason is not None:
            off.append((cls.name(), reason))
        elif not cls.can_run(base_version, target_version):
            skipped.append(cls.name())
        else:
            selected.append(cls)
    return CheckSelection(tuple(selected), tuple(off), tuple(skipped))


def _where(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"
