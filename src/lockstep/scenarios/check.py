"""The check contract (spec §2): `Check`, its steps, `@disabled`, and a check prepared for a run."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal, TypeVar

from lockstep.scenarios.errors import CheckContractError

Phase = Literal["initialize", "1", "2", "validate"]
PHASES: tuple[Phase, ...] = ("initialize", "1", "2", "validate")
_T = TypeVar("_T")


@dataclass
class StepContext:
    """What a callable step sees (spec §1 "step"): the instance it runs against and the run.

    The executor builds one per step; argv steps get the same data as LOCKSTEP_* variables.
    `endpoints` maps component → endpoint name → URL of the instance's processes.
    """

    scenario: str
    seed: int | None
    check: str
    phase: Phase
    instance: str
    current_version: str | None
    generation: int
    base_version: str | None
    target_version: str | None
    rng: random.Random
    endpoints: Mapping[str, Mapping[str, str]] = field(default_factory=dict)
    logger: logging.Logger = field(default_factory=lambda: logging.getLogger("lockstep.scenarios"))
    deadline: float | None = None  # time.monotonic() value after which the step has timed out

    def eventually(self, fn: Callable[[], _T], timeout: float = 300.0,
                   interval: float = 0.1) -> _T:
        """`fn()`'s result once it stops raising; its last error if `timeout` (capped by the
        step's deadline) passes first. Steps run while the system may still be catching up."""
        end = time.monotonic() + timeout
        if self.deadline is not None:
            end = min(end, self.deadline)
        while True:
            try:
                return fn()
            except Exception:
                if time.monotonic() + interval > end:
                    raise
            time.sleep(interval)


StepFn = Callable[[StepContext], object]
Step = StepFn | Sequence[str]
"""A callable `fn(ctx)` or an argv list run without a shell."""


def noop(ctx: StepContext) -> None:
    """The step that does nothing: the default `initialize()`."""


class Check:
    """Something that must stay true across restarts, upgrades and promotions (spec §2).

    Subclass it; one instance exists per scenario run, so attributes carry data between phases.
    Steps take randomness only from `self.rng`.
    """

    __abstract__: ClassVar[bool] = True

    def __init__(self, base_version: str | None, rng: random.Random) -> None:
        self.base_version = base_version
        self.rng = rng

    @classmethod
    def name(cls) -> str:
        """The check's name: its class name."""
        return cls.__name__

    @classmethod
    def can_run(cls, base_version: str | None, target_version: str | None) -> bool:
        """Whether the check applies to this upgrade; evaluated once, when the scenario is built."""
        return True

    def initialize(self) -> Step:
        """The step creating the objects the check needs (called by Initialize, just before it)."""
        return noop

    def manipulate(self) -> list[Step]:
        """Exactly two steps: element 0 runs in phase 1, element 1 in phase 2."""
        raise NotImplementedError(f"{self.name()} must define manipulate()")

    def validate(self) -> Step:
        """The idempotent step asserting what initialize and both phases produced."""
        raise NotImplementedError(f"{self.name()} must define validate()")


_C = TypeVar("_C", bound=type[Check])


def disabled(reason: str) -> Callable[[_C], _C]:
    """Class decorator removing a check from selection; the plan lists it with `reason`.

    Applies to the decorated class only (kept in its own `__dict__`), like `__abstract__`.
    """
    if not reason.strip():
        raise ValueError("@disabled needs a reason")

    def mark(cls: _C) -> _C:
        cls.__disabled__ = reason  # type: ignore[attr-defined]
        return cls

    return mark


def is_abstract(cls: type[Check]) -> bool:
    """True when the class itself (not a base) sets `__abstract__ = True`: never selected."""
    return bool(cls.__dict__.get("__abstract__", False))


def disabled_reason(cls: type[Check]) -> str | None:
    """The reason given to `@disabled` on this very class, or None."""
    reason = cls.__dict__.get("__disabled__")
    return reason if isinstance(reason, str) else None


def check_step(check: str, what: str, step: object) -> Step:
    """`step` if it is a callable or a non-empty argv list of strings; else CheckContractError."""
    if callable(step):
        return step
    if (isinstance(step, list | tuple) and step
            and all(isinstance(a, str) for a in step) and step[0]):
        return list(step)
    raise CheckContractError(
        f"check {check}: {what} returned {type(step).__name__} {step!r:.60}",
        "a step is a callable fn(ctx) or a non-empty argv list of strings")


@dataclass(eq=False)
class CheckRun:
    """A selected check, instantiated for one run, with its two manipulate steps fixed (§2)."""

    check: Check
    manipulations: tuple[Step, Step]

    @property
    def name(self) -> str:
        """The check's name."""
        return self.check.name()

    @classmethod
    def prepare(cls, check: Check) -> CheckRun:
        """Call `manipulate()` once and verify it gave exactly two valid steps."""
        steps: Any = check.manipulate()
        if not isinstance(steps, list | tuple):
            raise CheckContractError(
                f"check {check.name()}: manipulate() returned {type(steps).__name__}, "
                "expected a list of exactly 2 steps",
                "return [phase-1 step, phase-2 step]")
        if len(steps) != 2:
            raise CheckContractError(
                f"check {check.name()}: manipulate() returned {len(steps)} steps, "
                "expected exactly 2",
                "return [phase-1 step, phase-2 step]; put version-dependent logic inside a step")
        first = check_step(check.name(), "manipulate()[0]", steps[0])
        second = check_step(check.name(), "manipulate()[1]", steps[1])
        return cls(check, (first, second))

    def step(self, phase: Phase) -> Step:
        """The step of `phase`: initialize() and validate() are called now, just before it runs."""
        if phase == "initialize":
            return check_step(self.name, "initialize()", self.check.initialize())
        if phase == "validate":
            return check_step(self.name, "validate()", self.check.validate())
        return self.manipulations[int(phase) - 1]
