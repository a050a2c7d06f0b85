"""Upgrade scenarios (spec upgrade-scenarios.md): checks that must stay true across restarts,
upgrades and promotions, the scenarios that exercise them, and their seeded, printed plans."""

from lockstep.scenarios.actions import (
    Action,
    Configure,
    Executor,
    Initialize,
    Kill,
    Manipulate,
    PhaseAction,
    Promote,
    Start,
    Validate,
    WaitReady,
)
from lockstep.scenarios.builtin import SCENARIOS, scenario_class
from lockstep.scenarios.check import Check, CheckRun, Phase, Step, StepContext, disabled, noop
from lockstep.scenarios.errors import CheckContractError, CheckStepFailure, PlanError
from lockstep.scenarios.invariants import check_plan
from lockstep.scenarios.phases import PhaseSteps
from lockstep.scenarios.plan import Plan, build_plan, read_replay
from lockstep.scenarios.scenario import PlanEntry, PlanOptions, RunInfo, Scenario, enrich
from lockstep.scenarios.selection import Shard, select
from lockstep.scenarios.settings import ScenarioSettings
from lockstep.scenarios.versions import Releases, TagFormat, Version

__all__ = [
    "SCENARIOS", "Action", "Check", "CheckContractError", "CheckRun", "CheckStepFailure",
    "Configure", "Executor", "Initialize", "Kill", "Manipulate", "Phase", "PhaseAction",
    "PhaseSteps", "Plan", "PlanEntry", "PlanError", "PlanOptions", "Promote", "Releases",
    "RunInfo", "Scenario", "ScenarioSettings", "Shard", "Start", "Step", "StepContext",
    "TagFormat", "Validate", "Version", "WaitReady", "build_plan", "check_plan", "disabled",
    "enrich", "noop", "read_replay", "scenario_class", "select",
]
