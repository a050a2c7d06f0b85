"""The scheduler's configuration: mode, window, batching, stages, pools, retries (spec §3–§5)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from functools import cached_property


class Mode(StrEnum):
    """`[queue] mode`: serial is speculative with a window of one."""

    SERIAL = "serial"
    SPECULATIVE = "speculative"
    BATCH = "batch"


class WindowKind(StrEnum):
    """How W is chosen: the runner count, a fixed depth, or additive-increase/halve (§4)."""

    RUNNERS = "runners"
    FIXED = "fixed"
    AIMD = "aimd"


@dataclass(frozen=True)
class StageSpec:
    """A declared stage: name, optional pool, the configurations it runs for (None: all)."""

    name: str
    pool: str | None = None
    configurations: frozenset[str] | None = None
    retries: int | None = None  # infrastructure retries; None: PipelineSettings.retries


@dataclass(frozen=True)
class PipelineSettings:
    """Everything `decide` needs to know about the queue's configuration."""

    mode: Mode = Mode.SERIAL
    stages: tuple[StageSpec, ...] = (StageSpec("test"),)
    pools: Mapping[str, int] = field(default_factory=dict)
    window: WindowKind = WindowKind.RUNNERS
    window_fixed: int | None = None
    window_start: int | None = None  # aimd; None: the runner count
    window_floor: int = 3
    window_max: int | None = None  # aimd; None: 4 × runners
    batch_size: int = 8
    batch_max_wait: float = 60.0
    bisect_ways: int | None = None  # None: auto = max(2, runners)
    retries: int = 2
    retry_backoff_s: float = 5.0
    flake_retries: int = 0
    item_timeout: float | None = None
    infra_pause_after: int = 3
    artifact_wait: float = 3600.0

    @cached_property
    def stage_order(self) -> Mapping[str, tuple[int, ...]]:
        """Per configuration seen so far, the indexes of its stages in declared order (memoised)."""
        return _StageOrder(self.stages)

    def retries_of(self, stage: int) -> int:
        """How often an infrastructure failure of a stage is retried."""
        own = self.stages[stage].retries
        return self.retries if own is None else own

    def ways(self, runners: int) -> int:
        """How many parts a failed batch is split into (before capping at its size)."""
        return self.bisect_ways if self.bisect_ways is not None else max(2, runners)

    def initial_window(self, runners: int) -> int:
        """W before any landing or rejection."""
        if self.mode == Mode.SERIAL:
            return 1
        if self.window == WindowKind.FIXED:
            return max(1, self.window_fixed or runners)
        if self.window == WindowKind.AIMD:
            start = max(self.window_start or runners, self.window_floor)
            return max(1, min(start, self.aimd_max(runners)))
        return max(1, runners)

    def aimd_max(self, runners: int) -> int:
        """The aimd cap: `window_max`, default 4 × runners."""
        return self.window_max if self.window_max is not None else 4 * max(1, runners)


class _StageOrder(dict[str, tuple[int, ...]]):
    """configuration → indexes of the stages that run for it; filled on first lookup."""

    def __init__(self, stages: tuple[StageSpec, ...]) -> None:
        """Remember the stages; nothing is computed yet."""
        super().__init__()
        self._stages = stages

    def __missing__(self, configuration: str) -> tuple[int, ...]:
        """Compute and keep the stage order of a configuration seen for the first time."""
        found = tuple(i for i, s in enumerate(self._stages)
                      if s.configurations is None or configuration in s.configurations)
        self[configuration] = found
        return found
