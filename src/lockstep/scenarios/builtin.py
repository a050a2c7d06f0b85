"""The built-in scenarios of spec §6, with their bases, and `random-upgrade-path` (§7)."""

from __future__ import annotations

import random
from typing import ClassVar

from lockstep.errors import UsageError
from lockstep.scenarios.actions import (
    Action,
    Initialize,
    Kill,
    Manipulate,
    Promote,
    Refusal,
    Start,
    Validate,
    WaitReady,
)
from lockstep.scenarios.planner import (
    UpgradePath,
    draw_positions,
    draw_versions,
    fixed_versions,
    path_actions,
)
from lockstep.scenarios.scenario import Base, Scenario

T = None  # the target, as an action's version


def S(version: str | None = T, instance: str = "main", generation: int | None = None,
      *, ro: bool = False, refusal: Refusal = "none") -> Start:
    """Start, in the notation of spec §6."""
    return Start(instance=instance, version=version, deploy_generation=generation,
                 read_only=ro, expect_refusal=refusal)


def I(instance: str = "main") -> Initialize:  # noqa: E743 - the spec's notation
    """Initialize."""
    return Initialize(instance=instance)


def M(phase: int, instance: str = "main") -> Manipulate:
    """Manipulate(phase)."""
    return Manipulate(instance=instance, phase=1 if phase == 1 else 2)


def V(instance: str = "main") -> Validate:
    """Validate."""
    return Validate(instance=instance)


def K(instance: str = "main") -> Kill:
    """Kill, capturing logs."""
    return Kill(instance=instance)


def W(instance: str) -> WaitReady:
    """WaitReady."""
    return WaitReady(instance=instance)


def P(instance: str, fences: str) -> Promote:
    """Promote(instance ⊣ fences)."""
    return Promote(instance=instance, fences=fences)


class ReleaseBased(Scenario):
    """A fixed scenario starting from an earlier release: resolves `last` and `previous` with
    `--from` as spec §5 says."""

    needs: ClassVar[int] = 1

    @property
    def last(self) -> str:
        """The newest release of minor_versions, or `--from` in single-hop scenarios."""
        start = self.options.from_version
        releases = self.need_releases()
        if start is None:
            return releases.require(self.needs)[0]
        if self.base == "last":
            releases.release(start, "--from")
            return start
        older = releases.release(start, "--from")
        newer = [t for t in releases.minor_versions if releases.key(t) > older.key]
        if newer:
            return newer[0]
        between = releases.between(older)
        if between is None:
            raise UsageError(f"no release between {start} and the target",
                             "pass an older --from")
        return between

    @property
    def previous(self) -> str:
        """minor_versions[1], or `--from` in upgrade-via-previous."""
        if self.options.from_version is not None:
            return self.need_releases().release(self.options.from_version, "--from").tag
        return self.need_releases().require(self.needs)[1]

    def base_version(self) -> str | None:
        """`last` or `previous`, as the scenario's base says."""
        return self.previous if self.base == "previous" else self.last


class NoRestart(Scenario):
    """S(T) I M1 M2 V V."""

    name = "no-restart"
    purpose = "the undisturbed control: every phase on one running target"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        return [S(), I(), M(1), M(2), V(), V()]


class RestartEntire(Scenario):
    """S(T) I K S(T) M1 K S(T) M2 K S(T) V K S(T) V."""

    name = "restart-entire"
    purpose = "a full restart between every phase keeps everything"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        return [S(), I(), K(), S(), M(1), K(), S(), M(2), K(), S(), V(), K(), S(), V()]


class ZeroDowntimeRestart(Scenario):
    """Three promotions on the target alone: the generation protocol without an upgrade."""

    name = "zero-downtime-restart"
    purpose = "catch-up under writes, fencing and promotion on one release"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        return [S(T, "a"), I("a"), S(T, "b", 1, ro=True), M(1, "a"), W("b"), P("b", "a"),
                S(T, "a", 2, ro=True), M(2, "b"), W("a"), P("a", "b"), S(T, "b", 3, ro=True),
                V("a"), W("b"), P("b", "a"), V("b")]


class UpgradeFromPrevious(ReleaseBased):
    """S(last) I M1 K S(T) M2 V K S(T) V."""

    name = "upgrade-from-previous"
    base: ClassVar[Base] = "last"
    purpose = "a plain stop-and-start upgrade from the last release"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        return [S(self.last), I(), M(1), K(), S(), M(2), V(), K(), S(), V()]


class UpgradeViaPrevious(ReleaseBased):
    """S(previous) I K S(last) M1 K S(T) M2 V K S(T) V."""

    name = "upgrade-via-previous"
    base: ClassVar[Base] = "previous"
    needs: ClassVar[int] = 2
    purpose = "two plain upgrades: previous, then last, then the target"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        return [S(self.previous), I(), K(), S(self.last), M(1), K(), S(), M(2), V(), K(), S(),
                V()]


class ZeroDowntimeUpgrade(ReleaseBased):
    """The target catches up while the last release takes phase-1 writes, then is promoted."""

    name = "zero-downtime-upgrade"
    base: ClassVar[Base] = "last"
    purpose = "catch-up and promotion from the last release to the target"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        last = self.last
        return [S(last, "a"), I("a"), S(T, "b", 1, ro=True), M(1, "a"), W("b"), P("b", "a"),
                M(2, "b"), V("b"), K("b"), S(T, "b", 1), V("b")]


class KillDuringCatchUp(ReleaseBased):
    """A read-only target generation killed mid catch-up, then started afresh."""

    name = "kill-during-catch-up"
    base: ClassVar[Base] = "last"
    purpose = "a generation killed during catch-up leaves no trace"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        last = self.last
        return [S(last, "a"), I("a"), M(1, "a"), S(T, "b", 1, ro=True), K("b"),
                S(T, "b", 1, ro=True), M(2, "a"), W("b"), P("b", "a"), V("b"), K("b"),
                S(T, "b", 1), V("b"), ]


class RollbackRefused(ReleaseBased):
    """After promotion neither the old release nor an older generation can lead."""

    name = "rollback-refused"
    base: ClassVar[Base] = "last"
    purpose = "no rollback after promotion: old releases refuse, old generations are fenced"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        last = self.last
        return [S(last, "a"), I("a"), M(1, "a"), S(T, "b", 1, ro=True), W("b"), P("b", "a"),
                M(2, "b"), S(last, "a", 0, refusal="refused"), S(T, "c", 0, refusal="fenced"),
                S(last, "c", 2, ro=True, refusal="refused"), V("b"), K("b"), S(T, "b", 1),
                V("b")]


class AbandonPreflight(ReleaseBased):
    """An unpromoted target generation is discarded; the last release carries on."""

    name = "abandon-preflight"
    base: ClassVar[Base] = "last"
    purpose = "an abandoned preflight leaves the old release as it was"

    def actions(self) -> list[Action]:
        """The plan of spec §6."""
        last = self.last
        return [S(last, "a"), I("a"), M(1, "a"), S(T, "b", 1, ro=True), W("b"), K("b"),
                M(2, "a"), V("a"), K("a"), S(last, "a"), V("a")]


class RandomUpgradePath(Scenario):
    """A seeded path of zero-downtime promotions through earlier releases (spec §7)."""

    name = "random-upgrade-path"
    base: ClassVar[Base] = "seeded"
    purpose = "seeded hops through earlier releases with randomly placed phases"

    path: UpgradePath

    def plan_versions(self, r: random.Random) -> None:
        """Draw the versions (unless --path fixes them), then the two positions."""
        releases = self.need_releases()
        if self.options.path is not None:
            versions = fixed_versions(releases, self.options.path)
        else:
            versions = draw_versions(releases, r, self.options.from_version)
        q1, q2 = draw_positions(r, len(versions))
        self.path = UpgradePath(versions, q1, q2)

    def base_version(self) -> str | None:
        """v0."""
        return self.path.versions[0]

    def actions(self) -> list[Action]:
        """The plan shape of spec §7."""
        return path_actions(self.path)


SCENARIOS: dict[str, type[Scenario]] = {cls.name: cls for cls in (
    NoRestart, RestartEntire, ZeroDowntimeRestart, UpgradeFromPrevious, UpgradeViaPrevious,
    ZeroDowntimeUpgrade, KillDuringCatchUp, RollbackRefused, AbandonPreflight,
    RandomUpgradePath)}
"""Every built-in scenario by name, in the order of spec §6."""


def scenario_class(name: str) -> type[Scenario]:
    """The built-in scenario of that name, or exit 2 listing the known ones."""
    try:
        return SCENARIOS[name]
    except KeyError:
        raise UsageError(f"unknown scenario {name!r}",
                         f"known scenarios: {', '.join(SCENARIOS)}") from None
