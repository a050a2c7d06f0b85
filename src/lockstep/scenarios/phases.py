"""The steps of one phase action (spec §3): run one after another or all at once, then joined
with the earliest failure in check order. The executor supplies how one step runs."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from lockstep.scenarios.check import CheckRun, Phase
from lockstep.scenarios.errors import CheckStepFailure

RunStep = Callable[[CheckRun, Phase], None]
"""Runs one check's step of a phase (calling `CheckRun.step(phase)` just before it); raises on
failure. The executor provides it: argv steps, timeouts, logs and contexts are its business."""


class PhaseSteps:
    """One phase action's steps: `start` is the action's execute, `join` its join.

    Sequential: steps run in check order inside `start`, and none starts after a failure.
    Parallel: `start` launches every step in its own thread; `join` waits for all of them.
    Either way `join` raises the failure of the earliest check in check order, with the other
    failures attached as `others`.
    """

    def __init__(self, checks: Sequence[CheckRun], phase: Phase, run_step: RunStep, *,
                 parallel: bool = False) -> None:
        self.checks = tuple(checks)
        self.phase = phase
        self.run_step = run_step
        self.parallel = parallel
        self.started: list[str] = []
        self._errors: dict[int, BaseException] = {}
        self._threads: list[threading.Thread] = []
        self._lock = threading.Lock()

    def start(self) -> None:
        """Start the steps (and, sequentially, run them to the first failure)."""
        for index, check in enumerate(self.checks):
            if not self.parallel and self._errors:
                return
            self.started.append(check.name)
            if self.parallel:
                thread = threading.Thread(target=self._run, args=(index, check), daemon=True,
                                          name=f"step-{check.name}-{self.phase}")
                self._threads.append(thread)
                thread.start()
            else:
                self._run(index, check)

    def _run(self, index: int, check: CheckRun) -> None:
        try:
            self.run_step(check, self.phase)
        except Exception as exc:
            with self._lock:
                self._errors[index] = exc

    def join(self) -> None:
        """Wait for every started step; raise the earliest check's failure (CheckStepFailure)."""
        for thread in self._threads:
            thread.join()
        if not self._errors:
            return
        failures = [CheckStepFailure(self.checks[i].name, self.phase, self._errors[i])
                    for i in sorted(self._errors)]
        first = failures[0]
        raise CheckStepFailure(first.check, first.phase, first.cause,
                               tuple(failures[1:])) from first.cause
