"""The actions of a plan (spec §3) as immutable values, the `Executor` they delegate to, and the
rendering of one plan line (spec §7 "Printed plan")."""

from __future__ import annotations

import dataclasses
import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, ClassVar, Literal, Protocol

from lockstep.scenarios.errors import PlanError

if TYPE_CHECKING:
    from lockstep.scenarios.check import Phase
    from lockstep.scenarios.scenario import PlanEntry, RunInfo

Refusal = Literal["none", "fenced", "refused"]
_BARE = re.compile(r"[A-Za-z0-9._:/-]+")
_VERSION = {"version": True}  # field metadata: None renders as `T` (the target)


class Executor(Protocol):
    """Runs actions against instances; the scenario calls it strictly in plan order (spec §4).

    `begin_run`/`end_run` bracket a run, `begin_action`/`end_action` each action (the place for
    per-action logs, `FAILED_` files and the unexpected-exit check at action boundaries).
    """

    def begin_run(self, run: RunInfo) -> None:
        """The run starts: its checks in check order, the plan, seed and versions."""

    def end_run(self, error: BaseException | None) -> None:
        """The run ended (after the last action or a failure): tear everything down."""

    def begin_action(self, number: int, entry: PlanEntry) -> None:
        """Action `number` (from 1) is about to execute."""

    def end_action(self, number: int, entry: PlanEntry, error: BaseException | None) -> None:
        """Action `number` has joined, successfully or with `error`."""

    def start_phase(self, action: PhaseAction) -> None:
        """Start the steps of every selected check for a phase action."""

    def join_phase(self, action: PhaseAction) -> None:
        """Wait for the phase's steps; raise the earliest failure in check order."""

    def start(self, action: Start) -> None:
        """Start the instance's processes (spec §3 Start)."""

    def kill(self, action: Kill) -> None:
        """SIGKILL the instance, wait for exit, capture logs."""

    def wait_ready(self, action: WaitReady) -> None:
        """Poll until every stateful component reports ReadyToPromote."""

    def promote(self, action: Promote) -> None:
        """Promote the instance; optionally wait for the fenced one to exit."""

    def configure(self, action: Configure) -> None:
        """Apply the setup items not yet recorded."""

    def join_configure(self, action: Configure) -> None:
        """Record the items `configure` applied (only after success)."""


class Action:
    """One line of a plan: `execute` starts its work, `join` waits for it and raises its failure."""

    lifecycle: ClassVar[bool] = False  # a failure of it is of kind `lifecycle` (spec §8)

    @property
    def name(self) -> str:
        """The action's name as the plan prints it: its class name."""
        return type(self).__name__

    @property
    def kebab_name(self) -> str:
        """The name in kebab case, as log files use it (`WaitReady` → `wait-ready`)."""
        return re.sub(r"(?<!^)(?=[A-Z])", "-", self.name).lower()

    def execute(self, executor: Executor) -> None:
        """Start the action's work."""
        raise NotImplementedError

    def join(self, executor: Executor) -> None:
        """Wait for the work `execute` started; the default has nothing to wait for."""

    def params(self) -> list[tuple[str, object]]:
        """The parameters a plan line shows: those without a table default or differing from it
        (a `deploy_generation` of 0 counts as the default), in declaration order."""
        if not dataclasses.is_dataclass(self):
            return []
        out: list[tuple[str, object]] = []
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if f.default is not dataclasses.MISSING:
                default: object = f.default
            elif f.default_factory is not dataclasses.MISSING:
                default = f.default_factory()
            else:
                out.append((f.name, value))
                continue
            if value == default or (f.name == "deploy_generation" and value == 0):
                continue
            out.append((f.name, value))
        return out

    def line(self) -> str:
        """`<ActionName>[ key=value…]`, without the action number."""
        fields: dict[str, dataclasses.Field[Any]] = (
            {f.name: f for f in dataclasses.fields(self)} if dataclasses.is_dataclass(self)
            else {})
        parts = [self.name]
        for key, value in self.params():
            is_version = key in fields and bool(fields[key].metadata.get("version"))
            parts.append(f"{key}={render_value(value, version=is_version)}")
        return " ".join(parts)

    def to_json(self) -> dict[str, Any]:
        """The action and every parameter (defaults included), for plan.json."""
        data: dict[str, Any] = {"action": self.name}
        if dataclasses.is_dataclass(self):
            for f in dataclasses.fields(self):
                value = getattr(self, f.name)
                data[f.name] = dict(value) if isinstance(value, Mapping) else value
        return data


def render_value(value: object, *, version: bool = False) -> str:
    """A parameter value as spec §7 renders it: tags as the tag, the target as `T`, numbers as
    integer seconds, booleans as true/false, bare or JSON-quoted strings, env as compact JSON."""
    if value is None:
        return "T" if version else "none"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return str(int(value)) if value.is_integer() else repr(value)
    if isinstance(value, Mapping):
        return json.dumps(dict(value), sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    text = str(value)
    return text if _BARE.fullmatch(text) else json.dumps(text, ensure_ascii=False)


@dataclass(frozen=True, kw_only=True)
class PhaseAction(Action):
    """Initialize, Manipulate or Validate: runs one step of every selected check."""

    instance: str = "main"

    @property
    def phase_name(self) -> Phase:
        """The phase whose steps this action runs, as LOCKSTEP_PHASE names it."""
        raise NotImplementedError

    def execute(self, executor: Executor) -> None:
        """Start every selected check's step of this phase."""
        executor.start_phase(self)

    def join(self, executor: Executor) -> None:
        """Wait for them; raise the earliest failure in check order."""
        executor.join_phase(self)


@dataclass(frozen=True, kw_only=True)
class Initialize(PhaseAction):
    """Runs every check's `initialize()` step."""

    @property
    def phase_name(self) -> Phase:
        """Always `initialize`."""
        return "initialize"


@dataclass(frozen=True, kw_only=True)
class Manipulate(PhaseAction):
    """Runs every check's manipulate step of `phase` (1 or 2)."""

    phase: Literal[1, 2]

    def __post_init__(self) -> None:
        if self.phase not in (1, 2) or isinstance(self.phase, bool):
            raise PlanError(f"Manipulate phase must be 1 or 2, not {self.phase!r}",
                            "a check has exactly two manipulate phases")

    @property
    def phase_name(self) -> Phase:
        """`1` or `2`."""
        return "1" if self.phase == 1 else "2"


@dataclass(frozen=True, kw_only=True)
class Validate(PhaseAction):
    """Runs every check's idempotent `validate()` step."""

    @property
    def phase_name(self) -> Phase:
        """Always `validate`."""
        return "validate"


@dataclass(frozen=True, kw_only=True)
class Start(Action):
    """Starts a version's components at a deploy generation (spec §3 Start)."""

    lifecycle: ClassVar[bool] = True
    instance: str = "main"
    version: str | None = field(default=None, metadata=_VERSION)
    deploy_generation: int | None = None
    read_only: bool = False
    expect_refusal: Refusal = "none"
    env: Mapping[str, str] = field(default_factory=dict, hash=False)
    timeout: int = 300

    def __post_init__(self) -> None:
        object.__setattr__(self, "env", MappingProxyType(dict(self.env)))
        if self.expect_refusal not in ("none", "fenced", "refused"):
            raise PlanError(f"expect_refusal must be none, fenced or refused, not "
                            f"{self.expect_refusal!r}", "see spec §3 Start")
        if self.read_only and self.deploy_generation is None:
            raise PlanError(f"a read-only Start of {self.instance} needs a deploy_generation",
                            "give deploy_generation, higher than the current leader's")
        if self.timeout <= 0:
            raise PlanError("Start timeout must be positive", "give whole seconds")

    @property
    def generation(self) -> int:
        """The deploy generation (None means 0)."""
        return self.deploy_generation or 0

    @property
    def leads(self) -> bool:
        """A plain Start: leaves the instance leading (not read-only, no refusal expected)."""
        return not self.read_only and self.expect_refusal == "none"

    def execute(self, executor: Executor) -> None:
        """Start the processes (the work is done here; join is a no-op)."""
        executor.start(self)


@dataclass(frozen=True, kw_only=True)
class Kill(Action):
    """SIGKILLs every process group of the instance and waits for them."""

    lifecycle: ClassVar[bool] = True
    instance: str = "main"
    capture_logs: bool = True

    def execute(self, executor: Executor) -> None:
        """Kill the instance."""
        executor.kill(self)


@dataclass(frozen=True, kw_only=True)
class WaitReady(Action):
    """Waits until every stateful component of the instance reports ReadyToPromote."""

    lifecycle: ClassVar[bool] = True
    instance: str = "main"
    timeout: int = 1200

    def execute(self, executor: Executor) -> None:
        """Poll the statuses."""
        executor.wait_ready(self)


@dataclass(frozen=True, kw_only=True)
class Promote(Action):
    """Promotes the instance; with `fences`, that instance must then exit by itself."""

    lifecycle: ClassVar[bool] = True
    instance: str = "main"
    fences: str | None = None
    timeout: int = 1200

    def execute(self, executor: Executor) -> None:
        """Promote and wait for IsLeader."""
        executor.promote(self)


@dataclass(frozen=True, kw_only=True)
class Configure(Action):
    """Applies the plugin's setup items not yet recorded; records them in `join`."""

    instance: str = "main"

    def execute(self, executor: Executor) -> None:
        """Apply the pending setup items."""
        executor.configure(self)

    def join(self, executor: Executor) -> None:
        """Record them, only after success."""
        executor.join_configure(self)
