"""Logs and failure reports of a scenario run (spec §8): the run directory, one log file per
action, the single `FAILED_` file, `teardown.log`, the `FailureReport`, and `run_scenario`,
which writes the plan, runs it and reports how it failed."""

from __future__ import annotations

import shlex
import threading
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from lockstep.errors import LockstepError
from lockstep.scenarios.actions import Configure
from lockstep.scenarios.errors import CheckStepFailure, InfrastructureError, phase_label

if TYPE_CHECKING:
    from lockstep.scenarios.plan import Plan
    from lockstep.scenarios.runtime import LocalExecutor
    from lockstep.scenarios.scenario import PlanEntry, Scenario

Kind = Literal["check", "lifecycle", "framework", "infrastructure"]
RUN_DIGITS = 3
TAIL_LINES = 20
WARNINGS_FILE = "warnings.log"  # a passed run's warnings, one per line


class LifecycleError(LockstepError):
    """A Start, Kill, WaitReady or Promote failed, or an instance exited unexpectedly (kind
    `lifecycle`). `details` holds what the message quotes at length (log tails)."""

    def __init__(self, message: str, details: str = "", hint: str | None = None) -> None:
        super().__init__(message, hint)
        self.details = details

    def shown(self) -> str:
        """The one-line message, then the quoted details."""
        return self.one_line() + (f"\n{self.details}" if self.details else "")


class UnexpectedExit(LifecycleError):
    """A process exited although no action caused it (or exhausted its read-only restarts):
    kind `lifecycle`, whichever action was in progress."""


def error_text(error: BaseException) -> str:
    """How a report shows an error: lockstep's own with message, hint and details; others with
    their class name. A check's failure drops its hint: the report names the log itself."""
    if isinstance(error, CheckStepFailure):
        return " ".join(error.message.split())
    if isinstance(error, LockstepError):
        return error.shown()
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def now() -> str:
    """The current time as the logs write it (UTC, milliseconds)."""
    return datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def new_run_dir(artifacts: Path, scenario: str, seed: int | None) -> Path:
    """Create `<artifacts>/<scenario>/<seed>/<run>/`, `<run>` the first free 001, 002 …
    (created atomically, so two runs never share one); InfrastructureError if not writable."""
    parent = artifacts / scenario / ("none" if seed is None else str(seed))
    try:
        parent.mkdir(parents=True, exist_ok=True)
        taken = {p.name for p in parent.iterdir()}
        number = 1
        while True:
            name = f"{number:0{RUN_DIGITS}d}"
            if name not in taken:
                try:
                    (parent / name).mkdir()
                    return parent / name
                except FileExistsError:
                    pass
            number += 1
    except OSError as exc:
        raise InfrastructureError(f"the artifacts directory {artifacts} is not writable: "
                                  f"{exc.strerror or exc}",
                                  "pass a writable --artifacts DIR") from None


def tail(path: str | Path, offset: int = 0, lines: int = TAIL_LINES) -> list[str]:
    """The last `lines` lines a process wrote to its log since `offset`."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            text = f.read().decode("utf-8", errors="replace")
    except OSError:
        return ["(no log)"]
    return text.splitlines()[-lines:] or ["(no output)"]


class ActionLog:
    """One log file of the run; writes are whole lines and safe from several threads."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()

    def write(self, text: str) -> None:
        """Append `text` (one or more lines)."""
        with self._lock, open(self.path, "a", encoding="utf-8") as f:
            f.write(text if text.endswith("\n") else text + "\n")

    def section(self, title: str, path: str | Path, offset: int = 0) -> None:
        """Append a process's log (from `offset`) under a `--- title ---` line."""
        try:
            with open(path, "rb") as f:
                f.seek(offset)
                body = f.read().decode("utf-8", errors="replace")
        except OSError as exc:
            body = f"(log unreadable: {exc.strerror or exc})"
        self.write(f"--- {title} ---\n{body or '(no output)'}")

    def rename(self, path: Path) -> None:
        """Move the file (under the lock, so no write is lost)."""
        with self._lock:
            self.path.rename(path)
            self.path = path


class RunLogs:
    """The per-action files of a run directory and the one `FAILED_` file (spec §8)."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.failed: Path | None = None

    def action(self, number: int, entry: PlanEntry) -> ActionLog:
        """Start `NNN_<action>.log` with the action line and the start time."""
        log = ActionLog(self.run_dir / f"{number:03d}_{entry.action.kebab_name}.log")
        try:
            log.path.write_text(
                f"{number:03d} {entry.action.line()}{'  # inserted' if entry.inserted else ''}\n"
                f"started {now()}\n", encoding="utf-8")
        except OSError as exc:
            raise InfrastructureError(f"cannot write {log.path}: {exc.strerror or exc}",
                                      "pass a writable --artifacts DIR") from None
        return log

    def fail(self, log: ActionLog) -> Path:
        """Rename the failing action's file `FAILED_<name>` (exactly once per run)."""
        if self.failed is None:
            log.rename(log.path.with_name(f"FAILED_{log.path.name}"))
            self.failed = log.path
        return self.failed

    def teardown(self) -> ActionLog:
        """`teardown.log`, started now."""
        log = ActionLog(self.run_dir / "teardown.log")
        log.write(f"teardown started {now()}")
        return log

    def write_plan(self, plan: Plan) -> None:
        """plan.txt and plan.json, before any action runs."""
        try:
            (self.run_dir / "plan.txt").write_text(plan.text(), encoding="utf-8")
            (self.run_dir / "plan.json").write_text(plan.json_text(), encoding="utf-8")
        except OSError as exc:
            raise InfrastructureError(f"cannot write the plan into {self.run_dir}: "
                                      f"{exc.strerror or exc}",
                                      "pass a writable --artifacts DIR") from None


@dataclass
class ActionFailure:
    """What the executor records when an action fails, before anything is torn down."""

    number: int | None
    entry: PlanEntry | None
    error: BaseException
    failed_log: Path | None
    instances: dict[str, Any]


def failure_kind(entry: PlanEntry | None, error: BaseException) -> Kind:
    """Spec §8's kinds: infrastructure (exit 75 causes), framework (Configure, setup actions,
    contract and plan violations, lockstep itself), check (a check's step), lifecycle (Start,
    Kill, WaitReady, Promote, or an unexpected exit)."""
    if isinstance(error, InfrastructureError):
        return "infrastructure"
    if isinstance(error, UnexpectedExit):
        return "lifecycle"
    if entry is None or isinstance(entry.action, Configure) or entry.inserted:
        return "framework"
    if isinstance(error, CheckStepFailure):
        return "check"
    if isinstance(error, LifecycleError):
        return "lifecycle"
    return "framework"


@dataclass
class FailureReport:
    """How a run failed (spec §8): where, of what kind, the state of every instance, and the
    command line that replays it. `action_number` and `failed_log` are None only when the run
    failed outside any action."""

    scenario: str
    seed: int | None
    action_number: int | None
    action: str | None
    kind: Kind
    check: str | None
    phase: str | None
    error: str
    failed_log: Path | None
    instances: dict[str, Any]
    replay: str
    others: list[str] = field(default_factory=list)  # later checks' failures in that action

    @classmethod
    def of(cls, plan: Plan, failure: ActionFailure, replay_command: list[str]) -> FailureReport:
        """The report of `failure` in a run of `plan`."""
        error = failure.error
        step = error if isinstance(error, CheckStepFailure) else None
        return cls(
            scenario=plan.scenario, seed=plan.seed, action_number=failure.number,
            action=failure.entry.action.line() if failure.entry else None,
            kind=failure_kind(failure.entry, error),
            check=step.check if step else None, phase=step.phase if step else None,
            error=error_text(error), failed_log=failure.failed_log,
            instances=failure.instances, replay=shlex.join(replay_command),
            others=[error_text(o) for o in step.others] if step else [])

    def to_json(self) -> dict[str, Any]:
        """The report as `--json` prints it."""
        return {"scenario": self.scenario, "seed": self.seed,
                "action_number": self.action_number, "action": self.action,
                "kind": self.kind, "check": self.check, "phase": self.phase,
                "error": self.error,
                "failed_log": str(self.failed_log) if self.failed_log else None,
                "instances": self.instances, "replay": self.replay, "others": self.others}

    def render(self) -> str:
        """The report for people: what failed, where its log is, and how to replay it."""
        where = (f"action {self.action_number:03d} {self.action}"
                 if self.action_number is not None else "outside any action")
        lines = [f"scenario {self.scenario} failed (seed "
                 f"{'none' if self.seed is None else self.seed})",
                 f"  {where}", f"  kind: {self.kind}"]
        if self.check is not None:
            lines.append(f"  check: {self.check}, {phase_label(self.phase or '')}")
        first, *rest = self.error.splitlines() or [""]
        lines.append(f"  error: {first}")
        lines += [f"    {line}" for line in rest]
        lines += [f"  also failed: {other}" for other in self.others]
        if self.failed_log is not None:
            lines.append(f"  log: {self.failed_log}")
        for name, inst in sorted(self.instances.items()):
            version = inst.get("version") or "never led"
            generation = inst.get("generation")
            state = "running" if inst.get("running") else "stopped"
            lines.append(f"  instance {name}: {version}"
                         f"{'' if generation is None else f' generation {generation}'} ({state})")
        lines.append(f"  replay: {self.replay}")
        return "\n".join(lines) + "\n"


def run_scenario(scenario: Scenario, plan: Plan, executor: LocalExecutor,
                 replay_command: list[str]) -> FailureReport | None:
    """Write plan.txt and plan.json into the executor's run directory, run the scenario through
    the executor, and return None on success or the report of the failure."""
    executor.logs.write_plan(plan)
    scenario.executor = executor
    started = time.monotonic()
    try:
        scenario.run()
    except Exception as exc:
        failure = executor.failure or ActionFailure(None, None, exc, None,
                                                    executor.instance_report())
        return FailureReport.of(plan, failure, replay_command)
    if plan.scenario == "kill-during-catch-up" and not executor.killed_mid_catch_up():
        executor.warn("killed after catch-up")
    if executor.warnings:
        (executor.run_dir / WARNINGS_FILE).write_text(
            "".join(f"warning: {w}\n" for w in executor.warnings), encoding="utf-8")
    executor.say(f"scenario {plan.scenario} passed in {time.monotonic() - started:.1f} s")
    return None


def run_warnings(run_dir: Path) -> list[str]:
    """The warnings a passed run wrote into its directory (none: an empty list)."""
    try:
        text = (run_dir / WARNINGS_FILE).read_text(encoding="utf-8")
    except OSError:
        return []
    return [line.removeprefix("warning: ") for line in text.splitlines() if line]
