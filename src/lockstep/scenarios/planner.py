"""`random-upgrade-path` (spec §7): the seeded choice of versions, the re-insertion that bounds
each hop by `max_hop_series`, the two manipulate positions and the plan they give."""

from __future__ import annotations

import itertools
import random
from collections.abc import Sequence
from dataclasses import dataclass

from lockstep.errors import UsageError
from lockstep.scenarios.actions import (
    Action,
    Initialize,
    Kill,
    Manipulate,
    Promote,
    Start,
    Validate,
    WaitReady,
)
from lockstep.scenarios.versions import Releases, Series, not_enough


@dataclass(frozen=True)
class UpgradePath:
    """v0 … vn−1 (release tags; the target vn is implicit) and the positions q1 ≤ q2."""

    versions: tuple[str, ...]
    q1: int
    q2: int

    @property
    def hops(self) -> int:
        """n: the number of hops, the last one to the target."""
        return len(self.versions)


def draw_series(releases: Releases, r: random.Random,
                from_version: str | None = None) -> list[Series]:
    """The kept series, oldest first, by the seeded rules of spec §7 (before re-insertion)."""
    settings = releases.settings
    candidates = list(releases.series[-settings.random_previous_series:])
    if from_version is not None:
        start = releases.release(from_version, "--from").series
        candidates = [s for s in candidates if s > start]
    kept = [s for s in candidates if r.random() < settings.random_keep_probability]
    if not kept and from_version is None:
        if not candidates:
            raise not_enough(1, 0)
        kept = [r.choice(candidates)]
    if len(kept) > settings.random_max_hops:
        kept = sorted(r.sample(kept, settings.random_max_hops))
    return kept


def bound_hops(releases: Releases, path: list[Series], dropped: Sequence[Series],
               max_hop_series: int | None) -> list[Series]:
    """Insert dropped candidates, without randomness, until no hop of `path` + the target spans
    more than `max_hop_series` series; exit 2 when no candidate can shorten a hop."""
    if max_hop_series is None:
        return list(path)
    seq = [*path, releases.target.series]
    spare = sorted(dropped)
    while True:
        long_hop = next((i for i in range(1, len(seq))
                         if releases.span(seq[i - 1], seq[i]) > max_hop_series), None)
        if long_hop is None:
            return seq[:-1]
        prev = seq[long_hop - 1]
        reach = [c for c in spare if c > prev and releases.span(prev, c) <= max_hop_series]
        if not reach:
            raise UsageError(
                "no upgrade path within max_hop_series",
                f"no release series between {'.'.join(map(str, prev))} and the next hop is "
                f"within {max_hop_series} series; raise [scenarios] max_hop_series")
        seq.insert(long_hop, reach[-1])
        spare.remove(reach[-1])


def draw_versions(releases: Releases, r: random.Random,
                  from_version: str | None = None) -> tuple[str, ...]:
    """v0 … vn−1 for a seed: kept series, bounded hops, then one tag per kept series."""
    settings = releases.settings
    kept = draw_series(releases, r, from_version)
    candidates = releases.series[-settings.random_previous_series:]
    dropped = [s for s in candidates if s not in kept]
    start: list[Series] = []
    if from_version is not None:
        start = [releases.release(from_version, "--from").series]
        dropped = [s for s in dropped if s > start[0]]
    series = bound_hops(releases, start + kept, dropped, settings.max_hop_series)
    tags: list[str] = [from_version] if from_version is not None else []
    for s in series[len(start):]:
        if settings.random_patch == "random":
            tags.append(r.choice(releases.patches(s)))
        else:
            tags.append(releases.chosen[s].tag)
    return tuple(tags)


def fixed_versions(releases: Releases, path: Sequence[str]) -> tuple[str, ...]:
    """`--path V1,…,Vk`: known releases older than the target, strictly ascending."""
    if not path:
        raise UsageError("--path is empty", "give at least one release, e.g. --path v2026.09.1")
    versions = [releases.release(tag, "--path entry") for tag in path]
    for older, newer in itertools.pairwise(versions):
        if not older.key < newer.key:
            raise UsageError(f"--path must ascend: {older.tag} is not older than {newer.tag}",
                             "list the releases oldest first")
    return tuple(path)


def draw_positions(r: random.Random, hops: int) -> tuple[int, int]:
    """q1 ≤ q2, the slots of Manipulate(1) and Manipulate(2), each in 0 … 2n."""
    q1, q2 = sorted([r.randint(0, 2 * hops), r.randint(0, 2 * hops)])
    return q1, q2


def instance_of(hop: int) -> str:
    """x_i: instances alternate `a`, `b`, starting with x0 = a."""
    return "a" if hop % 2 == 0 else "b"


def path_actions(path: UpgradePath) -> list[Action]:
    """The plan shape of spec §7: hop i starts v_i read-only at generation i on x_i, promotes it
    over x_{i−1} and kills x_{i−1}; the manipulate slots sit in catch-up or after promotion."""
    n = path.hops
    versions: list[str | None] = [*path.versions, None]
    actions: list[Action] = [Start(instance="a", version=versions[0]), Initialize(instance="a")]

    def slot(number: int, instance: str) -> None:
        if path.q1 == number:
            actions.append(Manipulate(instance=instance, phase=1))
        if path.q2 == number:
            actions.append(Manipulate(instance=instance, phase=2))
            if number == 0:
                actions.append(Validate(instance=instance))

    slot(0, "a")
    for i in range(1, n + 1):
        new, old = instance_of(i), instance_of(i - 1)
        actions.append(Start(instance=new, version=versions[i], deploy_generation=i,
                             read_only=True))
        slot(2 * i - 1, old)
        actions += [WaitReady(instance=new), Promote(instance=new, fences=old),
                    Kill(instance=old)]
        slot(2 * i, new)
        if 2 * i >= path.q2:
            actions.append(Validate(instance=new))
    last = instance_of(n)
    actions += [Kill(instance=last), Start(instance=last, deploy_generation=n),
                Validate(instance=last)]
    return actions
