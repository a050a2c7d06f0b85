"""Simulator inputs (§7): items, failure rates, stage durations, runners, mode and its knobs."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, field

from lockstep.errors import UsageError
from lockstep.queue.pipeline import Mode, PipelineSettings, StageSpec, WindowKind


@dataclass(frozen=True)
class Distribution:
    """A stage duration: `fixed:S`, `uniform:MIN:MAX` or `lognormal:MEDIAN:SIGMA` (seconds)."""

    kind: str
    a: float
    b: float = 0.0

    @classmethod
    def parse(cls, text: str) -> Distribution:
        """Parse the command-line form; a bad one is a usage error."""
        kind, _, rest = text.partition(":")
        try:
            values = [float(v) for v in rest.split(":")] if rest else []
        except ValueError:
            values = []
        shapes = {"fixed": 1, "uniform": 2, "lognormal": 2}
        if kind not in shapes or len(values) != shapes[kind] or any(
                not math.isfinite(v) or v < 0 for v in values):
            raise UsageError(f"bad duration {text!r}",
                             "use fixed:SECONDS, uniform:MIN:MAX or lognormal:MEDIAN:SIGMA")
        if kind == "uniform" and values[1] < values[0]:
            raise UsageError(f"bad duration {text!r}", "uniform:MIN:MAX needs MIN <= MAX")
        if kind != "uniform" and values[0] <= 0:
            raise UsageError(f"bad duration {text!r}", "the duration must be positive")
        return cls(kind, values[0], values[1] if len(values) > 1 else 0.0)

    def mean(self) -> float:
        """The expected duration."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return (self.a + self.b) / 2
        return self.a * math.exp(self.b ** 2 / 2)

    def draw(self, rng: random.Random) -> float:
        """One duration from the repetition's run stream (fixed draws nothing)."""
        if self.kind == "fixed":
            return self.a
        if self.kind == "uniform":
            return rng.uniform(self.a, self.b)
        return self.a * math.exp(rng.gauss(0.0, self.b))

    def __str__(self) -> str:
        """The command-line form."""
        if self.kind == "fixed":
            return f"fixed:{self.a:g}"
        return f"{self.kind}:{self.a:g}:{self.b:g}"


@dataclass(frozen=True)
class SimStage:
    """A simulated stage: name, duration, optional pool, optional own failure probability."""

    name: str
    duration: Distribution
    pool: str | None = None
    p: float | None = None

    @classmethod
    def parse(cls, text: str) -> SimStage:
        """`NAME=DURATION[@POOL][~P]`, e.g. `hw=fixed:3600@hardware~0.05`."""
        name, eq, rest = text.partition("=")
        if not eq or not name:
            raise UsageError(f"bad stage {text!r}", "use NAME=DURATION[@POOL][~P], "
                                                    "e.g. test=fixed:600")
        rest, _, p_text = rest.partition("~")
        rest, _, pool = rest.partition("@")
        p = None
        if p_text:
            p = _probability(p_text, f"the failure probability of stage {name}")
        return cls(name, Distribution.parse(rest), pool or None, p)


def _probability(text: str, what: str) -> float:
    """A probability in [0, 1] from text."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not 0.0 <= value <= 1.0:
        raise UsageError(f"{what} must be a number from 0 to 1, not {text!r}",
                         "e.g. test=fixed:600~0.05")
    return value


@dataclass(frozen=True)
class SimParams:
    """One simulated configuration (one output row)."""

    n: int = 200
    p: float = 0.1
    stages: tuple[SimStage, ...] = (SimStage("test", Distribution("fixed", 600.0)),)
    configs: int = 1
    runners: int = 8
    pools: tuple[tuple[str, int], ...] = ()
    mode: Mode = Mode.SPECULATIVE
    window: WindowKind = WindowKind.RUNNERS
    window_fixed: int | None = None
    window_start: int | None = None
    window_floor: int = 3
    window_max: int | None = None
    batch_size: int = 8
    batch_max_wait: float = 60.0
    bisect_ways: int | None = None
    flake_retries: int = 0
    flake: float = 0.0
    infra: float = 0.0
    retries: int = 2
    arrivals: str = "all-at-0"
    landing_s: float = 0.0
    reps: int = 200
    seed: int = 1
    configurations: tuple[str, ...] = field(init=False)

    def __post_init__(self) -> None:
        """Name the configurations: `default` alone, else c1…cC."""
        names = ("default",) if self.configs == 1 else tuple(
            f"c{k}" for k in range(1, self.configs + 1))
        object.__setattr__(self, "configurations", names)

    def validate(self) -> None:
        """Reject impossible inputs with a usage error naming the option."""
        checks = [
            (self.n >= 1, "--n must be at least 1", "give the items per repetition"),
            (0.0 <= self.p <= 1.0, "--p must be from 0 to 1", "e.g. --p 0.1"),
            (self.runners >= 1, "--runners must be at least 1", "e.g. --runners 8"),
            (self.configs >= 1, "--configs must be at least 1", "e.g. --configs 1"),
            (self.reps >= 1, "--reps must be at least 1", "e.g. --reps 200"),
            (self.batch_size >= 1, "--batch-size must be at least 1", "e.g. --batch-size 8"),
            (self.batch_max_wait >= 0, "--batch-max-wait must not be negative",
             "give seconds, e.g. 60"),
            (self.bisect_ways is None or self.bisect_ways >= 2, "bad --bisect-ways",
             "use auto or a number N >= 2"),
            (self.window_fixed is None or self.window_fixed >= 1, "bad --window",
             "use runners, aimd or a number N >= 1"),
            (self.window_floor >= 1, "--window-floor must be at least 1", "e.g. 3"),
            (0.0 <= self.flake <= 1.0 and 0.0 <= self.infra < 1.0, "bad --flake or --infra",
             "--flake is from 0 to 1, --infra from 0 to below 1"),
            (self.retries >= 0 and self.flake_retries >= 0,
             "--retries and --flake-retries must not be negative", "e.g. --retries 2"),
            (self.landing_s >= 0, "--landing-s must not be negative", "give seconds, e.g. 0"),
            (bool(self.stages), "no stage given", "give at least one --stage"),
            (0 <= self.seed < 2 ** 63, "--seed must be from 0 to 2^63-1", "e.g. --seed 1"),
        ]
        for ok, message, hint in checks:
            if not ok:
                raise UsageError(message, hint)
        self.arrival_rate()
        pools = dict(self.pools)
        for stage in self.stages:
            if stage.pool is not None and stage.pool not in pools:
                raise UsageError(f"stage {stage.name} names pool {stage.pool!r}, which has no size",
                                 f"add --pool {stage.pool}=N")

    def arrival_rate(self) -> float | None:
        """Items per second for `poisson:RATE` (RATE per hour); None for `all-at-0`."""
        if self.arrivals == "all-at-0":
            return None
        kind, _, rate = self.arrivals.partition(":")
        try:
            value = float(rate) if kind == "poisson" else -1.0
        except ValueError:
            value = -1.0
        if not (value > 0 and math.isfinite(value)):
            raise UsageError(f"bad arrivals {self.arrivals!r}",
                             "use all-at-0 or poisson:RATE (items per hour)")
        return value / 3600.0

    def stage_p(self) -> tuple[float, ...]:
        """Per-stage failure probabilities: given, else p_s = 1 − (1−p)^(1/S)."""
        default = 1.0 - (1.0 - self.p) ** (1.0 / len(self.stages))
        return tuple(default if s.p is None else s.p for s in self.stages)

    def item_p(self) -> float:
        """The probability that an item is bad at some stage."""
        good = 1.0
        for p in self.stage_p():
            good *= 1.0 - p
        return 1.0 - good

    def test_time(self) -> float:
        """T: one full candidate test, every stage's mean duration."""
        return sum(s.duration.mean() for s in self.stages)

    def window_label(self) -> int | str:
        """W as the output row shows it."""
        if self.mode == Mode.SERIAL:
            return 1
        if self.window == WindowKind.AIMD:
            return "aimd"
        if self.window == WindowKind.FIXED:
            return self.window_fixed or self.runners
        return self.runners

    def settings(self) -> PipelineSettings:
        """The scheduler configuration these inputs stand for."""
        return PipelineSettings(
            mode=self.mode,
            stages=tuple(StageSpec(s.name, s.pool) for s in self.stages),
            pools=dict(self.pools),
            window=self.window,
            window_fixed=self.window_fixed,
            window_start=self.window_start,
            window_floor=self.window_floor,
            window_max=self.window_max,
            batch_size=self.batch_size,
            batch_max_wait=self.batch_max_wait,
            bisect_ways=self.bisect_ways,
            retries=self.retries,
            flake_retries=self.flake_retries,
        )

    def to_json(self) -> dict[str, object]:
        """The inputs as the JSON `params` block shows them."""
        return {
            "n": self.n, "p": self.p, "p_stage": list(self.stage_p()),
            "stages": [{"name": s.name, "duration": str(s.duration), "pool": s.pool}
                       for s in self.stages],
            "configs": self.configs, "runners": self.runners, "pools": dict(self.pools),
            "mode": str(self.mode), "window": str(self.window), "window_fixed": self.window_fixed,
            "window_start": self.window_start, "window_floor": self.window_floor,
            "window_max": self.window_max, "batch_size": self.batch_size,
            "batch_max_wait": self.batch_max_wait,
            "bisect_ways": "auto" if self.bisect_ways is None else self.bisect_ways,
            "flake_retries": self.flake_retries, "flake": self.flake, "infra": self.infra,
            "retries": self.retries, "arrivals": self.arrivals, "landing_s": self.landing_s,
            "reps": self.reps, "seed": self.seed,
        }
