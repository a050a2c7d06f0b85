"""Where one candidate's runs stand: per configuration, stages in declared order, fail-fast (§3.3).

Infrastructure failures are retried after 5 s · 2^try (`retries` times), a failed run
`flake_retries` times; `item_timeout` caps the candidate's wall time from its first run.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum

from lockstep.queue.pipeline.settings import PipelineSettings
from lockstep.queue.pipeline.snapshot import CandidateSnap, Failure, RunSnap, RunState


class Outcome(StrEnum):
    """A candidate's verdict from its runs."""

    RUNNING = "running"
    PASSED = "passed"
    FAILED = "failed"
    INFRA_EXHAUSTED = "infra-exhausted"


@dataclass(frozen=True)
class Need:
    """A run that may start now."""

    candidate: str
    configuration: str
    stage: int
    attempt: int

    @property
    def run_id(self) -> str:
        """Deterministic run id: candidate/configuration/stage index/try."""
        return f"{self.candidate}/{self.configuration}/{self.stage}/{self.attempt}"


@dataclass
class Progress:
    """The verdict, the runs to start, and the earliest retry time still in the future."""

    outcome: Outcome
    needs: list[Need] = field(default_factory=list)
    failure: Failure | None = None
    wake_at: float | None = None


def evaluate(c: CandidateSnap, settings: PipelineSettings, now: float) -> Progress:
    """What the candidate's runs say and which runs should start next."""
    last: dict[str, RunSnap] = {}
    for each in c.runs:
        last[each.configuration] = each
    progress = Progress(Outcome.RUNNING)
    done = 0
    for configuration in c.configurations:
        order = settings.stage_order[configuration]
        run = last.get(configuration)
        if not order:
            done += 1
        elif run is None:
            progress.needs.append(Need(c.id, configuration, order[0], 0))
        elif run.state == RunState.PASSED:
            at = order.index(run.stage) + 1
            if at == len(order):
                done += 1
            else:
                progress.needs.append(Need(c.id, configuration, order[at], 0))
        elif run.state == RunState.RUNNING:
            continue
        elif run.state in (RunState.FAILED, RunState.TIMEOUT):
            if run.state == RunState.FAILED and _tries(c, run, RunState.FAILED) <= \
                    settings.flake_retries:
                progress.needs.append(Need(c.id, configuration, run.stage, run.attempt + 1))
                continue
            kind = "stage-failed" if run.state == RunState.FAILED else "stage-timeout"
            return Progress(Outcome.FAILED, failure=_failure(kind, run, settings))
        elif run.state == RunState.INFRA:
            tries = _tries(c, run, RunState.INFRA)
            if tries > settings.retries_of(run.stage):
                return Progress(Outcome.INFRA_EXHAUSTED,
                                failure=_failure("infrastructure", run, settings))
            due = (run.ended_at or 0.0) + settings.retry_backoff_s * 2 ** (tries - 1)
            if now >= due:
                progress.needs.append(Need(c.id, configuration, run.stage, run.attempt + 1))
            elif progress.wake_at is None or due < progress.wake_at:
                progress.wake_at = due
        else:  # killed without the candidate being discarded: run it again
            progress.needs.append(Need(c.id, configuration, run.stage, run.attempt + 1))
    if done == len(c.configurations):
        return Progress(Outcome.PASSED)
    if settings.item_timeout is not None and c.runs:
        deadline = c.started_at + settings.item_timeout
        if now >= deadline:
            return Progress(Outcome.FAILED, failure=Failure("item-timeout"))
        if progress.wake_at is None or deadline < progress.wake_at:
            progress.wake_at = deadline
    return progress


def _tries(c: CandidateSnap, run: RunSnap, state: RunState) -> int:
    """How many runs of this configuration and stage ended in `state`."""
    return sum(1 for r in c.runs if r.configuration == run.configuration
               and r.stage == run.stage and r.state == state)


def _failure(kind: str, run: RunSnap, settings: PipelineSettings) -> Failure:
    """The failure record of a run."""
    return Failure(kind, settings.stages[run.stage].name, run.configuration, run.exit_code, run.id)
