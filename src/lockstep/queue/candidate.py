"""What an item changes on a base manifest: its effective configurations and the new pins.

Implements spec/queue.md §3.2: a configuration already pinning the item's SHA is dropped
(`already-pinned`); one whose pin moved after submission (by a landing or by hand) to a
descendant of the item's SHA is dropped (`superseded`); a deliberate downgrade is tested.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from lockstep.manifest import Manifest, Pin


@dataclass(frozen=True)
class Bump:
    """One configuration's change: old pin (None when newly pinned) and new pin."""

    configuration: str
    old: Pin | None
    new: Pin


@dataclass(frozen=True)
class CandidatePlan:
    """The bumps to test, or why there is nothing to test."""

    bumps: list[Bump] = field(default_factory=list)
    skip_reason: str | None = None  # already-pinned | superseded
    superseded_by: str | None = None
    not_applicable: list[str] = field(default_factory=list)


def plan(
    *,
    component: str,
    version: str,
    sha: str,
    digest: str | None,
    targets: list[str],
    base: Manifest,
    superseding_item: Callable[[str, Pin], str | None],
) -> CandidatePlan:
    """Work out the bumps of one item on a base manifest.

    `superseding_item(configuration, pin)` names what moved the pin after this item's submission
    to a descendant of `sha` (a landed item's id, or a commit SHA), or returns None.
    """
    bumps: list[Bump] = []
    already = superseded = 0
    by: str | None = None
    missing: list[str] = []
    for configuration in targets:
        if configuration not in base.configurations:
            missing.append(configuration)
            continue
        old = base.pin(configuration, component)
        if old is not None and old.sha == sha:
            already += 1
            continue
        if old is not None:
            landed_by = superseding_item(configuration, old)
            if landed_by is not None:
                superseded += 1
                by = by or landed_by
                continue
        bumps.append(Bump(configuration, old, Pin(version, sha, digest)))
    if bumps:
        return CandidatePlan(bumps, not_applicable=missing)
    if superseded:
        return CandidatePlan([], "superseded", by, missing)
    if already:
        return CandidatePlan([], "already-pinned", None, missing)
    return CandidatePlan([], None, None, missing)
