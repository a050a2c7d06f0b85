"""What the pure reconciler decides (spec/rollouts.md §5.1): the steps of a `Plan`, its endings,
and the `Observed` world and `Settings` it decides from.

Every type is a frozen dataclass, so a plan compares by value and tests assert whole plans.
"""

from __future__ import annotations

import copy
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal, TypeAlias

LeaderStatus = Literal["Initializing", "ReadyToPromote", "Promoting", "IsLeader", "unreachable"]
ApiMode = Literal["v1alpha2", "v1alpha1"]
Status: TypeAlias = Mapping[str, Any]


def _with_error(status: Status, error: str) -> dict[str, Any]:
    """A copy of a failure status whose `UpToDate` message gets `error` appended."""
    out = copy.deepcopy(dict(status))
    for cond in out.get("conditions") or []:
        if isinstance(cond, dict) and cond.get("type") == "UpToDate":
            cond["message"] = f"{cond.get('message', '')}{error}"
    return out


# --- steps -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class WriteSpec:
    """Set these spec members (v1alpha1 mode: a fresh `requestRollout`), conditional on the
    resourceVersion read."""

    members: Mapping[str, Any]


@dataclass(frozen=True)
class WriteStatus:
    """Replace the status, conditional on the resourceVersion read; it MUST be durably
    acknowledged before the next step starts (a conflict ends the pass with `Requeue(0, 0)`)."""

    status: Status


@dataclass(frozen=True)
class Apply:
    """Render generation `generation` from the current spec (resolving `release`) and apply it
    idempotently. If that fails, the executor writes `failure(error)` and ends the pass."""

    generation: int
    on_failure: Status

    def failure(self, error: str) -> dict[str, Any]:
        """The FailedDeploy status to write when applying failed with `error`."""
        return _with_error(self.on_failure, error)


@dataclass(frozen=True)
class Teardown:
    """Delete everything of generation `generation`; done only when nothing is left
    (not-found is done), so no generation number is ever live twice."""

    generation: int


@dataclass(frozen=True)
class SkipCatchup:
    """`POST /api/leader/skip-catchup` on `component` of `generation`; 204 succeeds. On a 400
    the executor writes `failure(message)` and ends the pass."""

    generation: int
    component: str
    on_failure: Status

    def failure(self, message: str) -> dict[str, Any]:
        """The FailedDeploy status to write when skip-catchup answered 400 with `message`."""
        return _with_error(self.on_failure, f"failed to skip catchup: {message}")


@dataclass(frozen=True)
class Promote:
    """`POST /api/leader/promote` on `component` of `generation`. Any failure ends the pass
    with `Requeue(5, 10)`: while Promoting nothing else may happen."""

    generation: int
    component: str


@dataclass(frozen=True)
class Route:
    """Point each component's stable endpoint `<env>-<c>` at generation `generation`."""

    generation: int


@dataclass(frozen=True)
class ApplyStateless:
    """Create, update in place or delete the stateless workloads (§5.8): the spec's stateless
    `components` in components mode, else those of `release` (None: none yet)."""

    components: Mapping[str, Any] | None = None
    release: str | None = None


# --- endings -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Requeue:
    """Run another pass after a delay drawn uniformly in [min_seconds, max_seconds]."""

    min_seconds: float
    max_seconds: float


@dataclass(frozen=True)
class Done:
    """Nothing more to do until the object or its workloads change."""


@dataclass(frozen=True)
class Fail:
    """The pass failed: retry with exponential backoff (1 s to 300 s)."""

    error: str


Step: TypeAlias = (WriteSpec | WriteStatus | Apply | Teardown | SkipCatchup | Promote | Route
                   | ApplyStateless)
Ending: TypeAlias = Requeue | Done | Fail
ENDINGS = (Requeue, Done, Fail)


@dataclass(frozen=True)
class Plan:
    """An ordered list of steps, the last one (and only it) an ending; plus warnings to log."""

    steps: tuple[Step | Ending, ...]
    warnings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        endings = [i for i, s in enumerate(self.steps) if isinstance(s, ENDINGS)]
        if endings != [len(self.steps) - 1]:
            raise ValueError(f"a plan ends with exactly one ending, not {self.steps!r}")

    @property
    def ending(self) -> Ending:
        """How the pass ends: `Requeue`, `Done` or `Fail`."""
        last = self.steps[-1]
        assert isinstance(last, ENDINGS)
        return last

    def statuses(self) -> list[Status]:
        """The statuses the plan writes, in order."""
        return [s.status for s in self.steps if isinstance(s, WriteStatus)]


# --- what the reconciler decides from ----------------------------------------------------------


@dataclass(frozen=True)
class Generation:
    """One existing deploy generation as its workloads record it (§2.6)."""

    number: int
    rollout_hash: str | None
    release: str | None = None
    request: str | None = None  # lockstep.dev/rollout-request (v1alpha1 mode)
    ready: bool = False  # every workload of the generation has a ready replica


@dataclass(frozen=True, kw_only=True)
class Observed:
    """What the executor gathered just before the pass: the existing generations, the leader
    status of each stateful component of candidate N (`unreachable` on a connection error,
    timeout, non-200 or unparsable body), and a fresh UUIDv4 the executor drew (the reconciler
    draws no randomness; v1alpha1 mode writes it into a nil `requestRollout`)."""

    generations: tuple[Generation, ...] = ()
    leaders: Mapping[str, LeaderStatus] = field(default_factory=dict)
    fresh_uuid: str | None = None

    def generation(self, number: int) -> Generation | None:
        """The generation numbered `number`, if any of its workloads exist."""
        return next((g for g in self.generations if g.number == number), None)


@dataclass(frozen=True)
class Settings:
    """Controller-wide settings: the API mode (v1alpha1 semantics, §5.2) and `allowRollback`."""

    api: ApiMode = "v1alpha2"
    allow_rollback: bool = False
