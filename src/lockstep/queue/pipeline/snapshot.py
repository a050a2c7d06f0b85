"""The state `decide` reads: a snapshot a worker builds from store rows in one transaction.

`QueueSnap.items` holds the non-terminal items in queue order: items that entered the pipeline
(they have a `position`) first by position, then the waiting ones by priority descending and seq
ascending. `decide` reads only its front, so a prefix is enough when it holds every positioned
item and at least window × batch size waiting ones.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from enum import StrEnum

from lockstep.queue.model import State
from lockstep.queue.pipeline.settings import PipelineSettings


class RunState(StrEnum):
    """A run's state as the store records it."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"  # any exit other than 0 and the infrastructure code
    TIMEOUT = "timeout"  # outlived the stage's timeout
    INFRA = "infra"  # infrastructure failure: retried with backoff, never the component's fault
    KILLED = "killed"


@dataclass(frozen=True)
class ItemSnap:
    """One non-terminal item: identity, order keys, what it changes, where it is in the pipeline."""

    id: str
    seq: int
    priority: int
    state: State
    component: str
    configurations: tuple[str, ...] = ("default",)
    submitted_at: float = 0.0
    position: int | None = None  # set once the item entered the pipeline; kept on requeue
    group: int | None = None  # its batch (batch mode); None: a unit of its own
    candidate: str | None = None  # its current (testing, passed or failed) candidate
    artifact_ready: bool = True


@dataclass(frozen=True)
class RunSnap:
    """One run of one stage for one configuration of a candidate, one try."""

    id: str
    configuration: str
    stage: int  # index into PipelineSettings.stages
    state: RunState
    attempt: int = 0
    runner: str | None = None
    exit_code: int | None = None
    ended_at: float | None = None


@dataclass(frozen=True)
class Failure:
    """Why a candidate failed; becomes the rejection reason of its item once final."""

    kind: str  # stage-failed, stage-timeout, item-timeout
    stage: str | None = None
    configuration: str | None = None
    exit_code: int | None = None
    run: str | None = None


@dataclass(frozen=True)
class CandidateSnap:
    """A tested tree: the base's landing counters plus the ordered items whose bumps it applies."""

    id: str
    items: tuple[str, ...]  # assumed items first, then its own
    own: tuple[str, ...]  # the items this candidate decides on (one, or a batch)
    configurations: tuple[str, ...]
    state: State  # TESTING, PASSED or FAILING (failed)
    base_landed: int  # QueueSnap.landed_count when it was built
    base_external: int  # QueueSnap.external_commits when it was built
    started_at: float = 0.0
    runs: tuple[RunSnap, ...] = ()  # in start order
    failure: Failure | None = None

    @property
    def assumed(self) -> tuple[str, ...]:
        """The items ahead whose bumps it was built on."""
        return self.items[: len(self.items) - len(self.own)]


@dataclass(frozen=True)
class RunnerSnap:
    """A runner slot and the run it executes (None: free)."""

    id: str
    run: str | None = None
    pool: str | None = None  # the pool of the stage it runs


@dataclass(frozen=True)
class QueueSnap:
    """One queue's state at the start of a scheduling transaction."""

    settings: PipelineSettings
    items: Sequence[ItemSnap]
    candidates: Mapping[str, CandidateSnap]
    runners: tuple[RunnerSnap, ...]
    states: Mapping[str, State]  # at least every item a candidate names, terminal ones included
    landed_count: int = 0  # items landed or landing, ever
    external_commits: int = 0  # commits on the branch not made by lockstep
    window: int | None = None  # the stored W (aimd); None: not set yet
    paused: bool = False
    paused_reason: str | None = None
    draining: bool = False
    infra_streak: int = 0  # consecutive items rejected `infrastructure`
    next_candidate: int = 1
    next_group: int = 1
    next_position: int = 1
