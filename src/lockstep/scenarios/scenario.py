"""`Scenario` (spec §4): construction in the spec's order, enrichment of its actions into the
plan, and the strictly sequential run (execute, join, next action)."""

from __future__ import annotations

import random
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import ClassVar, Literal

from lockstep.errors import UsageError
from lockstep.scenarios.actions import Action, Configure, Executor, Promote, Start
from lockstep.scenarios.check import Check, CheckRun
from lockstep.scenarios.selection import CheckSelection, Shard, select, selectable
from lockstep.scenarios.settings import ScenarioSettings
from lockstep.scenarios.versions import Releases

MAX_SEED = 2**63
Base = Literal["T", "last", "previous", "seeded"]


@dataclass(frozen=True)
class PlanOptions:
    """The SELECT options that shape a plan (spec §9), as given on the command line."""

    from_version: str | None = None
    path: tuple[str, ...] | None = None
    checks: tuple[str, ...] = ()
    shard: Shard | None = None
    mode: str | None = None
    config: str | None = None

    def input_lines(self) -> list[str]:
        """`option <flag>=<value>` per given flag, in the spec's order (spec §7 inputs)."""
        given = [("--from", self.from_version),
                 ("--path", ",".join(self.path) if self.path is not None else None),
                 ("--check", ",".join(sorted(set(self.checks))) if self.checks else None),
                 ("--shard", str(self.shard) if self.shard is not None else None),
                 ("--mode", self.mode), ("--config", self.config)]
        return [f"option {flag}={value}" for flag, value in given if value is not None]


@dataclass(frozen=True)
class PlanEntry:
    """One action of the enriched plan, and whether enrichment inserted it (`# inserted`)."""

    action: Action
    inserted: bool = False


@dataclass(frozen=True)
class RunInfo:
    """What an executor learns when a run begins."""

    scenario: str
    seed: int | None
    base_version: str | None
    target_version: str | None
    checks: tuple[CheckRun, ...]
    plan: tuple[PlanEntry, ...]


def enrich(actions: Sequence[Action],
           setup_actions: Callable[[str], list[Action]]) -> tuple[PlanEntry, ...]:
    """Spec §4 enrichment: Configure(main) in front unless the plan starts with a Start; then,
    walking by index over the growing list, Configure(i) after every action leaving i leading
    (a plain Start or a Promote), and `setup_actions(i)` before the first plain Start's one."""
    entries = [PlanEntry(a) for a in actions]
    if not entries or not isinstance(entries[0].action, Start):
        entries.insert(0, PlanEntry(Configure(instance="main"), inserted=True))
    set_up = False
    index = 0
    while index < len(entries):
        action = entries[index].action
        if isinstance(action, Promote) or (isinstance(action, Start) and action.leads):
            added: list[Action] = []
            if isinstance(action, Start) and not set_up:
                set_up = True
                added.extend(setup_actions(action.instance))
            added.append(Configure(instance=action.instance))
            entries[index + 1:index + 1] = [PlanEntry(a, inserted=True) for a in added]
        index += 1
    return tuple(entries)


def check_seed(seed: object) -> int:
    """A seed: an int with 0 <= seed < 2^63."""
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < MAX_SEED:
        raise UsageError(f"invalid seed {seed!r}", "give an integer with 0 <= seed < 2^63")
    return seed


class Scenario:
    """A lifecycle during which every selected check is exercised (spec §4).

    Subclasses define `actions()`, and optionally `plan_versions(r)`, `base_version()` and
    `setup_actions(instance)`. Everything is decided at construction; `run` only executes.
    """

    name: ClassVar[str] = ""
    base: ClassVar[Base] = "T"
    purpose: ClassVar[str] = ""

    def __init__(self, checks: Iterable[type[Check]], executor: Executor | None = None,
                 seed: int | None = None, *, releases: Releases | None = None,
                 options: PlanOptions | None = None,
                 settings: ScenarioSettings | None = None) -> None:
        self.seed = None if seed is None else check_seed(seed)
        self.executor = executor
        self.releases = releases
        self.options = options or PlanOptions()
        self.settings = settings or (releases.settings if releases else ScenarioSettings())
        self.check_classes = tuple(checks)
        self._check_options()
        r = random.Random(self.seed)
        self.plan_versions(r)                                        # 1.
        self.resolved_base = self.base_version()                     # 2.
        self.selection: CheckSelection = select(                     # 3.
            self.check_classes, names=self.options.checks, shard=self.options.shard,
            base_version=self.resolved_base, target_version=self.target_version)
        order = list(self.selection.selected)
        if self.seed is not None:
            r.shuffle(order)                                         # 4.
        prefix = "none" if self.seed is None else str(self.seed)
        instances = [cls(self.resolved_base, random.Random(f"{prefix}/{cls.name()}"))
                     for cls in order]                               # 5.
        self.checks: tuple[CheckRun, ...] = tuple(CheckRun.prepare(c) for c in instances)
        self.plan: tuple[PlanEntry, ...] = enrich(self.actions(), self.setup_actions)

    def _check_options(self) -> None:
        """Options that do not apply to this scenario are usage errors (spec §5)."""
        if self.seed is None and self.base == "seeded":
            raise UsageError(f"{self.name} needs a seed", "pass --seed N")
        if self.options.from_version is not None and self.base == "T":
            raise UsageError(f"{self.name} starts from the target and takes no --from",
                             "drop --from, or pick a scenario whose base is a release")
        if self.options.path is not None:
            if self.base != "seeded":
                raise UsageError(f"--path applies only to random-upgrade-path, not {self.name}",
                                 "drop --path")
            if self.options.from_version is not None:
                raise UsageError("--path and --from exclude each other", "give only one")
        self.check_classes = tuple(selectable(self.check_classes))

    @property
    def target_version(self) -> str | None:
        """The target's version tag (None when planned without releases, as tests do)."""
        return self.releases.target_version if self.releases else None

    def need_releases(self) -> Releases:
        """The run's releases; planning without them counts as having none."""
        if self.releases is None:
            from lockstep.scenarios.versions import not_enough

            raise not_enough(1, 0)
        return self.releases

    def plan_versions(self, r: random.Random) -> None:
        """The scenario's random choices of versions and positions; fixed scenarios draw none."""

    def base_version(self) -> str | None:
        """The oldest version the checks see; default the target (None)."""
        return None

    def actions(self) -> list[Action]:
        """The lifecycle, before enrichment."""
        raise NotImplementedError(f"{type(self).__name__} must define actions()")

    def setup_actions(self, instance: str) -> list[Action]:
        """One-time system setup, after the first plain Start; default none."""
        return []

    def run_info(self) -> RunInfo:
        """What the executor is told when the run begins."""
        return RunInfo(self.name or type(self).__name__, self.seed, self.resolved_base,
                       self.target_version, self.checks, self.plan)

    def run(self) -> None:
        """Execute the plan strictly sequentially: execute, join, then the next action."""
        executor = self.executor
        if executor is None:
            raise UsageError("this scenario was built without an executor", "plan only")
        executor.begin_run(self.run_info())
        error: BaseException | None = None
        try:
            for number, entry in enumerate(self.plan, start=1):
                executor.begin_action(number, entry)
                try:
                    entry.action.execute(executor)
                    entry.action.join(executor)
                except BaseException as exc:
                    executor.end_action(number, entry, exc)
                    raise
                executor.end_action(number, entry, None)
        except BaseException as exc:
            error = exc
            raise
        finally:
            executor.end_run(error)
