"""The scenario framework's errors: contract and plan violations (exit 2), failed steps (exit 1)."""

from __future__ import annotations

from lockstep import errors


class CheckContractError(errors.NamedError, errors.UsageError):
    """A check breaks the contract of spec §2 (step count, step type, name clash): exit 2."""


class PlanError(errors.PlanError):
    """A scenario's plan cannot be made or breaks an invariant of spec §7: exit 2.

    A subclass of lockstep's PlanError of the same name, so the CLI prints `PlanError: …`.
    """


class CheckStepFailure(errors.LockstepError):
    """A check's step failed inside a phase action: the earliest failing check in check order.

    `others` holds the failures of later checks in the same action (parallel executor), so a
    report can list them; the scenario fails with exit 1.
    """

    def __init__(self, check: str, phase: str, cause: BaseException,
                 others: tuple[CheckStepFailure, ...] = ()) -> None:
        super().__init__(f"{check} ({phase_label(phase)}): {_describe(cause)}",
                         "see the FAILED_ log file for the step's output")
        self.check = check
        self.phase = phase
        self.cause = cause
        self.others = others


def phase_label(phase: str) -> str:
    """`initialize`, `phase 1`, `phase 2` or `validate`, as a report names the phase."""
    return f"phase {phase}" if phase in ("1", "2") else phase


def _describe(exc: BaseException) -> str:
    """An exception as one readable line: its message, or its class name when it has none."""
    if isinstance(exc, errors.LockstepError):
        return exc.one_line()
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


class InfrastructureError(errors.LockstepError):
    """The run could not be carried out, through no fault of the system under test (processes
    could not be spawned, ports allocated, the artifacts directory written): exit 75."""

    exit_code = 75
