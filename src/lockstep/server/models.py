"""Request and response models of the JSON API (they make the OpenAPI schema).

Response models describe the documents the CLI's `--json` prints and allow extra keys, so a
field the CLI gains later passes through unchanged instead of being dropped.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from lockstep import names


class Open(BaseModel):
    """A response document: the listed fields, plus any others the data functions return."""

    model_config = ConfigDict(extra="allow")


class Error(BaseModel):
    """Every error answer."""

    error: str
    hint: str | None = None


# --- queue -------------------------------------------------------------------------------------

class RunnerRun(Open):
    """What a runner is doing."""

    item: str
    stage: str | None
    configuration: str | None
    landing: bool


class Runner(Open):
    """A worker holding an item: running, or lost with what happens next."""

    worker: str | None
    state: str
    lost_reason: str | None
    next: str | None
    run: RunnerRun


class QueueInfo(Open):
    """The queue itself: mode, state and pause."""

    mode: str
    state: str
    paused_reason: str | None
    paused_message: str | None
    runners: list[Runner]


class Rejection(Open):
    """Why an item was rejected, with the failing stage's log tail."""

    kind: str
    message: str | None = None
    stage: str | None = None
    configuration: str | None = None
    exit_code: int | None = None
    log_tail: list[str] = Field(default_factory=list)


class ItemSummary(Open):
    """One item as `queue status --json` lists it."""

    id: str
    state: str
    component: str
    version: str
    sha: str
    configurations: list[str]
    priority: int
    seq: int
    position: int | None
    wait_reason: str | None
    submitted_at: str | None
    attempt: int
    rejection: Rejection | None = None


class PipelineRunner(BaseModel):
    """A pipeline runner and what it tests: its candidate's items (assumed ones first), the
    ones that candidate decides on, the configuration and stage, since when (Unix seconds)."""

    runner: str
    worker: str | None = None
    pool: str | None = None
    run: str | None = None
    candidate: str | None = None
    candidate_state: str | None = None
    items: list[str] = Field(default_factory=list)
    own: list[str] = Field(default_factory=list)
    configuration: str | None = None
    stage: str | None = None
    attempt: int | None = None
    started_at: float | None = None


class PipelineInfo(BaseModel):
    """The pipeline scheduler's view (only when runners are registered): the window, every
    runner, each waiting item's reason and the reason of those behind them."""

    mode: str
    window: int
    runners: list[PipelineRunner]
    waiting: dict[str, str]
    rest_reason: str | None = None


class QueueStatus(Open):
    """`queue status --json`, with `pipeline` when pipeline runners are registered."""

    queue: QueueInfo
    items: list[ItemSummary]
    recent: list[ItemSummary]
    pipeline: PipelineInfo | None = None


class StageState(BaseModel):
    """One stage of one configuration in an item's current attempt."""

    stage: str
    state: str
    exit_code: int | None = None
    tries: int = 0


class ConfigurationProgress(BaseModel):
    """An item's stages for one target configuration, in order."""

    configuration: str
    stages: list[StageState]


class ItemDetail(ItemSummary):
    """`queue show ID --json`, plus the stage progress and the latest run's log tail."""

    runs: list[dict[str, Any]]
    history: list[dict[str, Any]]
    progress: list[ConfigurationProgress] = Field(default_factory=list)
    log_tail: list[str] = Field(default_factory=list)


class LogRun(BaseModel):
    """The log of one run (its last lines)."""

    configuration: str
    stage: str
    attempt: int
    try_no: int = Field(alias="try")
    state: str
    lines: list[str]
    missing: bool

    model_config = ConfigDict(populate_by_name=True)


class ItemLogs(BaseModel):
    """`queue logs ID`, as JSON, each run's tail."""

    id: str
    runs: list[LogRun]


def _check(fn: Any, value: str) -> str:
    fn(value)
    return value


class SubmitRequest(BaseModel):
    """`queue submit COMPONENT VERSION [-c CONFIG]... [--priority N]`."""

    model_config = ConfigDict(extra="forbid")

    component: str = Field(max_length=64, examples=["alpha"])
    version: str = Field(max_length=200, examples=["v1.2.0"])
    configurations: list[str] = Field(default_factory=list, max_length=64)
    priority: int = Field(default=0, ge=-1000, le=1000)

    @field_validator("component")
    @classmethod
    def _component(cls, v: str) -> str:
        return _check(names.component_name, v)

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        return _check(names.version, v)

    @field_validator("configurations")
    @classmethod
    def _configurations(cls, v: list[str]) -> list[str]:
        return [_check(names.configuration_name, c) for c in v]


class PauseRequest(BaseModel):
    """`queue pause [--abort-running]`."""

    model_config = ConfigDict(extra="forbid")

    abort_running: bool = False


class ResumeRequest(BaseModel):
    """`queue resume [--accept-history]`."""

    model_config = ConfigDict(extra="forbid")

    accept_history: bool = False


class PauseResult(BaseModel):
    """What a pause did."""

    paused: bool
    aborted: list[str]


class ResumeResult(BaseModel):
    """What a resume did."""

    resumed: bool
    accepted_lost_commit: str | None


class DrainResult(BaseModel):
    """What a drain did: draining, or the queue was already paused."""

    draining: bool
    already_paused: str | None


# --- integration releases, cuts, environments, distributions ----------------------------------

class Change(Open):
    """One pin that changed between two manifests (`manifest diff --json`)."""

    configuration: str
    component: str


class IntegrationRelease(Open):
    """An integration release: its tag, commit, and the pins its landing changed."""

    tag: str
    commit: str
    parent: str | None
    changes: list[Change]


class IntegrationReleaseDetail(IntegrationRelease):
    """One integration release with its whole manifest."""

    manifest: dict[str, dict[str, dict[str, str]]]
    against: str | None


class ReleaseList(BaseModel):
    """The newest integration releases, newest first."""

    releases: list[IntegrationRelease]
    total: int


class CutComponent(Open):
    """One component's line of a release cut."""

    component: str
    level: int
    state: str
    step: str | None


class CutStatus(Open):
    """`release status --json`."""

    release: str
    configuration: str
    integration_commit: str
    state: str
    components: list[CutComponent]


class CutDetail(CutStatus):
    """A release cut's status with its journal, oldest entry first."""

    journal: list[dict[str, Any]]


class EnvironmentSummary(BaseModel):
    """One Environment's rollout at a glance: generations, hashes and condition."""

    name: str
    apiVersion: str | None
    generation: int
    observedGeneration: int | None
    activeGeneration: int | None
    pending: bool
    requested: str | None
    completed: str | None
    release: str | None
    completedRelease: str | None
    condition: dict[str, Any]


class EnvironmentObject(Open):
    """An Environment as `rollout status NAME --json` prints it."""

    apiVersion: str | None = None
    kind: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


class HistoryRow(Open):
    """One condition change (`rollout history --json`)."""

    at: float
    generation: int
    reason: str | None


class Distribution(Open):
    """`dist show TAG --json`."""

    tag: str
    state: str
    artifacts: list[dict[str, Any]]


class RegistryEvent(BaseModel):
    """A registry notification the server relayed."""

    at: float
    registry: str
    repository: str | None
    tag: str | None
    action: str | None
    relayed: str


class SubmissionAccepted(BaseModel):
    """The answer to a signed submission."""

    id: str
    state: str
    component: str
    version: str
    sha: str
    configurations: list[str]
