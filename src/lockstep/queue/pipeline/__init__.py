"""The pure multi-mode queue scheduler (spec/queue.md §3–§5): serial, speculative and batch.

`decide(state, events, now)` reads a snapshot the worker builds from store rows (or the simulator
from its in-memory world) and returns plain decisions; it reads no clock, store or randomness.
"""

from lockstep.queue.pipeline.decide import decide
from lockstep.queue.pipeline.decisions import (
    Action,
    Decisions,
    Discard,
    DrainQueue,
    Enter,
    FailCandidate,
    Land,
    PassCandidate,
    PauseQueue,
    Reject,
    ResumeQueue,
    SetWindow,
    Split,
    StartCandidate,
    StartRun,
    WithdrawItem,
)
from lockstep.queue.pipeline.events import (
    CancelRequest,
    DrainRequest,
    Event,
    PauseRequest,
    ResumeRequest,
)
from lockstep.queue.pipeline.settings import Mode, PipelineSettings, StageSpec, WindowKind
from lockstep.queue.pipeline.snapshot import (
    CandidateSnap,
    Failure,
    ItemSnap,
    QueueSnap,
    RunnerSnap,
    RunSnap,
    RunState,
)

__all__ = [
    "Action",
    "CancelRequest",
    "CandidateSnap",
    "Decisions",
    "Discard",
    "DrainQueue",
    "DrainRequest",
    "Enter",
    "Event",
    "FailCandidate",
    "Failure",
    "ItemSnap",
    "Land",
    "Mode",
    "PassCandidate",
    "PauseQueue",
    "PauseRequest",
    "PipelineSettings",
    "QueueSnap",
    "Reject",
    "ResumeQueue",
    "ResumeRequest",
    "RunSnap",
    "RunState",
    "RunnerSnap",
    "SetWindow",
    "Split",
    "StageSpec",
    "StartCandidate",
    "StartRun",
    "WindowKind",
    "WithdrawItem",
    "decide",
]
