"""The scenario runtime with real processes (spec §3, §8, §10): the demo service started, killed
and promoted through the rollout's LocalDriver, small checks writing and reading keys through its
public endpoint, per-action logs, FAILED_ files and failure reports. F6, F8, F9, F13, F14, F16,
F18, F19, F23."""

from __future__ import annotations

import json
import random
import sys
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from lockstep.config import DEFAULT_TAG_FORMAT
from lockstep.errors import ConfigError
from lockstep.rollout.processes import process_start_time
from lockstep.scenarios import (
    Action,
    Check,
    Initialize,
    Manipulate,
    Plan,
    PlanOptions,
    Promote,
    Releases,
    Scenario,
    ScenarioSettings,
    Start,
    Step,
    StepContext,
    Validate,
    WaitReady,
    build_plan,
    scenario_class,
)
from lockstep.scenarios.actions import Kill
from lockstep.scenarios.plugin import Plugin, SetupItem, load_plugin
from lockstep.scenarios.report import FailureReport, new_run_dir, run_scenario
from lockstep.scenarios.runtime import LocalExecutor, Timing
from lockstep.scenarios.steps import StepTimeout, run_step

IMAGE = "demo.local/demo/demo-service"
LAST = "v2026.10.1"
TARGET = "v2026.11.1"
STUCK = ["--catchup-delay", "3600"]  # a read-only generation that stays Initializing
FAST = Timing(poll_interval=0.2, fast_poll=0.05, watch_interval=0.05, exit_timeout=20.0)
SETTINGS = ScenarioSettings(step_timeout=30)


@dataclass
class DemoCatalog:
    """Every version is one stateful demo-service component `store` whose release is the tag;
    `extra` adds arguments per version (None = the target)."""

    extra: dict[str | None, list[str]] = field(default_factory=dict)

    def components(self, version: str | None) -> dict[str, dict[str, Any]]:
        tag = version or TARGET
        return {"store": {"image": f"{IMAGE}:{tag}", "env": {}, "stateless": False,
                          "args": ["--fence-interval", "0.2", *self.extra.get(version, [])]}}


# --- checks -----------------------------------------------------------------------------------

def url(ctx: StepContext, key: str) -> str:
    return f"{ctx.endpoints['store']['public']}/kv/{key}"


def put(ctx: StepContext, key: str, value: str) -> None:
    def once() -> None:
        httpx.put(url(ctx, key), content=value, timeout=5).raise_for_status()
    ctx.eventually(once, timeout=20, interval=0.1)


def get(ctx: StepContext, key: str) -> str | None:
    resp = httpx.get(url(ctx, key), timeout=5)
    if resp.status_code == 404:
        return None
    resp.raise_for_status()
    return str(resp.json()["value"])


class KeyValue(Check):
    """A key written in initialize and in each phase is readable in every validate."""

    def initialize(self) -> Step:
        self.key = f"kv-{self.rng.getrandbits(32):08x}"
        return lambda ctx: put(ctx, self.key, "initial")

    def manipulate(self) -> list[Step]:
        return [lambda ctx: put(ctx, self.key + "-1", "one"),
                lambda ctx: put(ctx, self.key + "-2", "two")]

    def validate(self) -> Step:
        def check(ctx: StepContext) -> None:
            for suffix, value in (("", "initial"), ("-1", "one"), ("-2", "two")):
                def read(k: str = self.key + suffix, v: str = value) -> None:
                    assert get(ctx, k) == v, f"{k} should be {v!r}"
                ctx.eventually(read, timeout=20, interval=0.1)
                ctx.logger.info("%s%s = %s", self.key, suffix, value)
        return check


ENV_SCRIPT = """
import json, os, urllib.request
req = urllib.request.Request(os.environ["LOCKSTEP_ENDPOINT_STORE_PUBLIC"] + "/kv/argv",
                             data=os.environ["LOCKSTEP_PHASE"].encode(), method="PUT")
urllib.request.urlopen(req, timeout=10).read()
print(json.dumps(dict(os.environ), sort_keys=True))
"""


class ArgvWriter(Check):
    """Argv steps: phase 1 writes through the endpoint variable and prints its environment."""

    def manipulate(self) -> list[Step]:
        return [[sys.executable, "-c", ENV_SCRIPT], [sys.executable, "-c", "print('phase 2')"]]

    def validate(self) -> Step:
        def check(ctx: StepContext) -> None:
            ctx.eventually(lambda: _equal(get(ctx, "argv"), "1"), timeout=20, interval=0.1)
        return check


def _exited(pid: int) -> None:
    assert process_start_time(pid) is None, f"pid {pid} still runs"


def _equal(got: object, want: object) -> None:
    assert got == want, f"{got!r} != {want!r}"


# --- running scenarios ------------------------------------------------------------------------

def releases(settings: ScenarioSettings = SETTINGS) -> Releases:
    return Releases([LAST], tag_format=DEFAULT_TAG_FORMAT, target_version=TARGET,
                    has_artifacts=lambda tag: True, settings=settings)


class Custom(Scenario):
    """A scenario with the given actions (no plan invariants: these plans are deliberately
    broken or partial)."""

    name = "custom"

    def __init__(self, actions: Sequence[Action], checks: Sequence[type[Check]] = (),
                 seed: int | None = 7, settings: ScenarioSettings = SETTINGS) -> None:
        self._actions = list(actions)
        super().__init__(checks, None, seed, releases=releases(settings), settings=settings)

    def actions(self) -> list[Action]:
        return list(self._actions)


def plan_of(scenario: Scenario) -> Plan:
    """The plan, with the invariants checked for built-in scenarios only."""
    if scenario.name != "custom":
        return build_plan(scenario, "ab" * 32)
    return Plan(scenario=scenario.name, seed=scenario.seed, inputs=(), base=None,
                target_version=TARGET, manifest_sha256="ab" * 32, path_override=None,
                checks=tuple(c.name for c in scenario.checks), disabled=(), skipped=(),
                entries=scenario.plan, options=PlanOptions())


@dataclass
class Ran:
    report: FailureReport | None
    executor: LocalExecutor
    seconds: float

    @property
    def run_dir(self) -> Path:
        return self.executor.run_dir

    def files(self) -> list[str]:
        return sorted(p.name for p in self.run_dir.iterdir())

    def failed(self) -> list[Path]:
        return sorted(self.run_dir.glob("FAILED_*"))

    def text(self, name: str) -> str:
        return (self.run_dir / name).read_text(encoding="utf-8")


def run(tmp_path: Path, scenario: Scenario, *, catalog: DemoCatalog | None = None,
        timing: Timing = FAST, parallel: bool = False, plugin: Plugin | None = None,
        keep_state: bool = False) -> Ran:
    ws = tmp_path / "ws"
    ws.mkdir(parents=True, exist_ok=True)
    executor = LocalExecutor(
        workspace=ws, run_dir=new_run_dir(tmp_path / "artifacts", scenario.name, scenario.seed),
        catalog=catalog or DemoCatalog(), plugin=plugin or Plugin(), settings=scenario.settings,
        parallel=parallel, keep_state=keep_state, timing=timing)
    started = time.monotonic()
    report = run_scenario(scenario, plan_of(scenario), executor,
                          ["lockstep", "scenario", "run", scenario.name, "--seed",
                           str(scenario.seed)])
    ran = Ran(report, executor, time.monotonic() - started)
    assert not any(inst.live() for inst in executor.instances.values())  # teardown killed all
    assert not executor.state_dir.exists() or keep_state
    return ran


def builtin(name: str, checks: Sequence[type[Check]], seed: int = 5) -> Scenario:
    return scenario_class(name)(checks, None, seed, releases=releases(), settings=SETTINGS)


# --- built-in scenarios end to end (F16 positive) ----------------------------------------------

VERSIONS_SEEN: list[tuple[str, str | None]] = []


def probe(ctx: StepContext) -> str:
    """The plugin's version probe: the release the instance's /info reports."""
    info = httpx.get(f"{ctx.endpoints['store']['public']}/info", timeout=5).json()
    VERSIONS_SEEN.append((ctx.instance, str(info["release"])))
    return str(info["release"])


SETUP_RAN: list[str] = []


def create_account(ctx: StepContext) -> None:
    SETUP_RAN.append(ctx.instance)
    put(ctx, "account", "admin")


@pytest.mark.parametrize("name", ["no-restart", "zero-downtime-restart", "zero-downtime-upgrade",
                                  "rollback-refused"])
def test_builtin_scenarios_pass_end_to_end(tmp_path: Path, name: str,
                                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKSTEP_CANDIDATE", "must-not-leak")  # a queue variable
    VERSIONS_SEEN.clear()
    SETUP_RAN.clear()
    plugin = Plugin(setup_items=[SetupItem("account", create_account)], version_probe=probe)
    scenario = builtin(name, [KeyValue, ArgvWriter])
    ran = run(tmp_path, scenario, plugin=plugin)
    assert ran.report is None, ran.report.render() if ran.report else ""
    plan = plan_of(scenario)
    numbered = [f"{n:03d}_{e.action.kebab_name}.log"
                for n, e in enumerate(plan.entries, start=1)]
    assert ran.files() == sorted([*numbered, "plan.json", "plan.txt", "teardown.log"])
    assert ran.text("plan.txt") == plan.text()
    first = plan.entries[0].action
    assert isinstance(first, Start)
    assert [first.instance] == SETUP_RAN  # Configure applied the item once
    # the version probe saw each plain Start's version (the target as its tag)
    leading = [(e.action.instance, e.action.version or TARGET) for e in plan.entries
               if isinstance(e.action, Start) and e.action.leads]
    assert leading == VERSIONS_SEEN
    # every log names its action, start and end; phase logs hold each check's prefixed output
    for number, entry in enumerate(plan.entries, start=1):
        text = ran.text(numbered[number - 1])
        assert text.startswith(f"{number:03d} {entry.action.line()}")
        assert "\nended " in text and ": ok\n" in text
        if isinstance(entry.action, Validate):
            assert "[KeyValue] step passed" in text and "[ArgvWriter] step passed" in text
            assert "[KeyValue] INFO kv-" in text  # the step's logger writes to the action log
    # the argv step saw exactly the documented environment
    m1 = next(n for n, e in zip(numbered, plan.entries, strict=True)
              if isinstance(e.action, Manipulate) and e.action.phase == 1)
    env_line = next(line for line in ran.text(m1).splitlines()
                    if line.startswith("[ArgvWriter] {"))
    env = json.loads(env_line.removeprefix("[ArgvWriter] "))
    m1_instance = next(e.action.instance for e in plan.entries
                       if isinstance(e.action, Manipulate) and e.action.phase == 1)
    assert set(env) == {"PATH", "LC_ALL", "LOCKSTEP_SCENARIO", "LOCKSTEP_SEED",
                        "LOCKSTEP_CHECK", "LOCKSTEP_PHASE", "LOCKSTEP_INSTANCE",
                        "LOCKSTEP_CURRENT_VERSION", "LOCKSTEP_BASE_VERSION",
                        "LOCKSTEP_TARGET_VERSION", "LOCKSTEP_STEP_SEED",
                        "LOCKSTEP_ENDPOINT_STORE_PUBLIC", "LOCKSTEP_ENDPOINT_STORE_INTERNAL"}
    base = scenario.resolved_base or TARGET
    assert (env["LOCKSTEP_SCENARIO"], env["LOCKSTEP_SEED"], env["LOCKSTEP_CHECK"],
            env["LOCKSTEP_PHASE"], env["LOCKSTEP_INSTANCE"], env["LOCKSTEP_BASE_VERSION"],
            env["LOCKSTEP_TARGET_VERSION"]) == (name, "5", "ArgvWriter", "1", m1_instance,
                                                base, TARGET)
    assert env["LOCKSTEP_CURRENT_VERSION"] == base  # phase 1 runs on the base's leader
    assert 0 <= int(env["LOCKSTEP_STEP_SEED"]) < 2**63
    teardown = ran.text("teardown.log")
    assert "shared state deleted" in teardown
    report = ran.executor.instance_report()
    last = plan.entries[-1].action
    assert isinstance(last, Validate)
    final = last.instance
    assert report[final]["version"] == "T" and report[final]["running"] is False
    if name == "rollback-refused":
        logs = "".join(ran.text(f) for f in numbered)
        assert "a refused as expected (refused): store exited 1" in logs
        assert "c refused as expected (fenced): store exited 0" in logs
        assert "c refused as expected (refused): store exited 1" in logs
    if name == "zero-downtime-upgrade":
        promote = next(n for n, e in zip(numbered, plan.entries, strict=True)
                       if isinstance(e.action, Promote))
        text = ran.text(promote)
        assert 'HTTP 200 {"result": "Success"}' in text
        assert "a exited after being fenced: store exited 0" in text


def test_a_step_that_is_not_idempotent_fails_the_second_validate(tmp_path: Path) -> None:
    """F14: validate increments a counter and asserts it is 1."""

    class Counter(Check):
        def manipulate(self) -> list[Step]:
            return [lambda ctx: None, lambda ctx: None]

        def validate(self) -> Step:
            def count(ctx: StepContext) -> None:
                value = int(get(ctx, "rows") or 0) + 1
                put(ctx, "rows", str(value))
                assert value == 1, f"count(t) is {value}"
            return count

    scenario = builtin("no-restart", [Counter])
    ran = run(tmp_path, scenario)
    report = ran.report
    assert report is not None
    validates = [n for n, e in enumerate(scenario.plan, start=1)
                 if isinstance(e.action, Validate)]
    assert report.action_number == validates[1]
    assert (report.kind, report.check, report.phase) == ("check", "Counter", "validate")
    assert "count(t) is 2" in report.error
    assert [p.name for p in ran.failed()] == [f"FAILED_{validates[1]:03d}_validate.log"]


# --- failures ---------------------------------------------------------------------------------

def test_a_failing_phase_step_leaves_one_failed_file_and_a_check_report(tmp_path: Path) -> None:
    """F13: the failing action's file alone is FAILED_, with the error and the instance logs."""

    class Breaks(Check):
        def manipulate(self) -> list[Step]:
            def boom(ctx: StepContext) -> None:
                ctx.logger.warning("about to fail")
                raise AssertionError("balance went negative")
            return [boom, lambda ctx: None]

        def validate(self) -> Step:
            return lambda ctx: None

    scenario = builtin("no-restart", [KeyValue, Breaks], seed=99)
    ran = run(tmp_path, scenario)
    report = ran.report
    assert report is not None
    number = next(n for n, e in enumerate(scenario.plan, start=1)
                  if isinstance(e.action, Manipulate))
    failed = ran.failed()
    assert [p.name for p in failed] == [f"FAILED_{number:03d}_manipulate.log"]
    text = failed[0].read_text(encoding="utf-8")
    assert "[Breaks] WARNING about to fail" in text
    assert "Breaks (phase 1): AssertionError: balance went negative" in text
    assert "--- log of running main/store" in text and '"event": "listening"' in text
    others = [f for f in ran.files() if f.endswith(".log") and f != failed[0].name]
    assert others and not any(f.startswith("FAILED_") for f in others)
    assert f"{number + 1:03d}_manipulate.log" not in ran.files()  # nothing after the failure
    assert (report.action_number, report.kind, report.check, report.phase, report.seed) == (
        number, "check", "Breaks", "1", 99)
    assert report.failed_log == failed[0]
    assert report.instances["main"]["version"] == "T"
    assert report.instances["main"]["generation"] == 0
    assert report.replay == "lockstep scenario run no-restart --seed 99"
    data = json.loads(json.dumps(report.to_json()))
    assert data["check"] == "Breaks" and data["action_number"] == number
    human = report.render()
    assert "check: Breaks, phase 1" in human and "replay: lockstep scenario run" in human
    assert "killing main" in ran.text("teardown.log")


def test_wait_ready_times_out_on_an_instance_stuck_initializing(tmp_path: Path) -> None:
    """F8 and F23: the exact timeout message after 2 s; one FAILED_NNN_wait-ready.log; a
    lifecycle report without check or phase."""
    scenario = Custom([Start(instance="a", version=LAST),
                       Start(instance="b", deploy_generation=1, read_only=True),
                       WaitReady(instance="b", timeout=2)])
    began = time.monotonic()
    ran = run(tmp_path, scenario, catalog=DemoCatalog({None: STUCK}),
              timing=Timing(exit_timeout=20.0))  # the spec's poll interval: once a second
    report = ran.report
    assert report is not None
    assert report.error == ("Timed out waiting for b to reach ReadyToPromote, still in status "
                            "Initializing")
    assert [p.name for p in ran.failed()] == ["FAILED_004_wait-ready.log"]
    text = ran.failed()[0].read_text(encoding="utf-8")
    polls = [line for line in text.splitlines() if line.startswith("poll ")]
    assert 2 <= len(polls) <= 4 and polls[0] == "poll 1: store=Initializing"
    assert (report.action_number, report.kind, report.check, report.phase, report.seed) == (
        4, "lifecycle", None, None, 7)
    assert report.instances["a"]["version"] == LAST
    assert report.instances["b"]["version"] is None  # never led
    assert report.instances["b"]["started"]["generation"] == 1
    assert 2.0 <= time.monotonic() - began < 15


def test_promote_failure_quotes_the_status_and_body(tmp_path: Path) -> None:
    """F9: a promote answered 400 Failure fails the Promote, quoting it."""
    scenario = Custom([Start(instance="a", version=LAST),
                       Start(instance="b", deploy_generation=1, read_only=True),
                       Promote(instance="b", fences="a")])
    ran = run(tmp_path, scenario, catalog=DemoCatalog({None: STUCK}))
    report = ran.report
    assert report is not None and report.kind == "lifecycle"
    assert report.error == (
        'Promote of b/store failed: HTTP 400 {"result": {"Failure": {"message": '
        '"generation 1 is not ready to promote (status Initializing)"}}}')
    assert [p.name for p in ran.failed()] == ["FAILED_004_promote.log"]


def test_promote_fails_when_the_fenced_instance_keeps_running(tmp_path: Path) -> None:
    """F9: c (read-only at a higher generation) is not fenced by b's promotion, so a Promote
    naming it in `fences` fails once the (shortened) 60 s have passed."""
    scenario = Custom([Start(instance="a", version=LAST),
                       Start(instance="c", deploy_generation=5, read_only=True),
                       Start(instance="b", deploy_generation=1, read_only=True),
                       WaitReady(instance="b"), Kill(instance="a"),
                       Promote(instance="b", fences="c")])
    timing = Timing(poll_interval=0.2, fast_poll=0.05, watch_interval=0.05, exit_timeout=2.0)
    ran = run(tmp_path, scenario, timing=timing)
    report = ran.report
    assert report is not None and report.kind == "lifecycle", report
    assert report.error.startswith("c still runs 2 s after b was promoted: c/store")
    assert [p.name for p in ran.failed()] == ["FAILED_007_promote.log"]
    assert report.instances["b"]["version"] == "T" and report.instances["b"]["generation"] == 1


def test_a_read_only_start_that_exits_every_boot_fails_after_the_restarts(
        tmp_path: Path) -> None:
    """F18: the old release refuses the newer state on every boot (exit 1): five restarts, then
    the Start fails quoting the status, well under 60 s, and no WaitReady runs."""
    scenario = Custom([Start(instance="a"),
                       Start(instance="b", version=LAST, deploy_generation=1, read_only=True),
                       WaitReady(instance="b")])
    began = time.monotonic()
    ran = run(tmp_path, scenario)
    report = ran.report
    assert report is not None, "the read-only Start should fail"
    assert time.monotonic() - began < 60
    assert report.error.startswith("b/store exited 1 6 times")
    assert "newer than this release v2026.10.1" in report.error  # the last log lines
    assert (report.action_number, report.kind) == (3, "lifecycle")
    assert [p.name for p in ran.failed()] == ["FAILED_003_start.log"]
    assert not any("wait-ready" in f for f in ran.files())
    text = ran.failed()[0].read_text(encoding="utf-8")
    assert text.count("b/store exited 1; restart") == 5
    assert report.instances["b"]["processes"]["store"]["restarts"] == 5


def test_a_step_that_never_ends_times_out(tmp_path: Path) -> None:
    """F19: an argv step sleeping forever under step_timeout 2 s."""

    class Sleeper(Check):
        def manipulate(self) -> list[Step]:
            return [[sys.executable, "-c", "import time; print('sleeping', flush=True); "
                                           "time.sleep(3600)"], lambda ctx: None]

        def validate(self) -> Step:
            return lambda ctx: None

    settings = ScenarioSettings(step_timeout=2)
    scenario = Custom([Start(), Initialize(), Manipulate(phase=1)], [Sleeper],
                      settings=settings)
    ran = run(tmp_path, scenario)
    report = ran.report
    assert report is not None
    assert report.error == "Sleeper (phase 1): step timed out after 2 s"
    assert [p.name for p in ran.failed()] == ["FAILED_004_manipulate.log"]
    text = ran.failed()[0].read_text(encoding="utf-8")
    assert "[Sleeper] sleeping" in text and "[Sleeper] step timed out after 2 s" in text
    assert ran.seconds < 30


def test_a_callable_step_that_never_ends_times_out() -> None:
    ctx = StepContext(scenario="s", seed=1, check="C", phase="1", instance="main",
                      current_version=None, generation=0, base_version=None,
                      target_version=TARGET, rng=random.Random(1))
    began = time.monotonic()
    with pytest.raises(StepTimeout, match=r"^step timed out after 0.3 s$"):
        run_step(lambda c: threading.Event().wait(), ctx, timeout=0.3, output=lambda s: None)
    assert time.monotonic() - began < 5


def test_an_exit_no_action_caused_fails_the_run(tmp_path: Path) -> None:
    """A Promote without `fences` fences the old leader: its exit fails the run, naming the
    instance, process and status; a Kill of an already-exited instance is fine."""
    workloads = tmp_path / "ws" / ".lockstep" / "rollouts"

    class OldLeaderGone(Check):
        """Waits (on /proc) until the old leader's process is gone."""

        def manipulate(self) -> list[Step]:
            return [lambda ctx: None, lambda ctx: None]

        def validate(self) -> Step:
            def gone(ctx: StepContext) -> None:
                for path in workloads.glob("*/workloads/a-store-*.json"):
                    pid = int(json.loads(path.read_text(encoding="utf-8"))["pid"])
                    ctx.eventually(partial(_exited, pid), timeout=20, interval=0.05)
            return gone

    scenario = Custom([Start(instance="a"),
                       Start(instance="b", deploy_generation=1, read_only=True),
                       WaitReady(instance="b"), Promote(instance="b"),
                       Validate(instance="b"), Kill(instance="a")], [OldLeaderGone])
    ran = run(tmp_path, scenario)
    report = ran.report
    assert report is not None and report.kind == "lifecycle"
    assert report.error.startswith("a/store exited with status 0 although no action stopped it")
    assert len(ran.failed()) == 1


def test_refusal_start_that_leads_fails_and_kills_it(tmp_path: Path) -> None:
    """An expected refusal that does not happen fails quoting the statuses and kills the
    survivor."""
    scenario = Custom([Start(instance="a", version=LAST, expect_refusal="refused")])
    ran = run(tmp_path, scenario, timing=Timing(fast_poll=0.05, exit_timeout=3.0))
    report = ran.report
    assert report is not None and report.kind == "lifecycle"
    assert report.error.startswith("a did not refuse as expected: every process should exit "
                                   "non-zero (refused) within 3 s without leading; "
                                   "a/store still running; a/store reported IsLeader")
    assert "killed a/store" in ran.failed()[0].read_text(encoding="utf-8")


# --- F6: phase steps in real threads -----------------------------------------------------------

def test_parallel_steps_join_every_thread_and_raise_the_first_check(tmp_path: Path) -> None:
    started: list[str] = []
    finished: list[str] = []
    a_failed = threading.Event()

    class AFails(Check):
        def manipulate(self) -> list[Step]:
            def fail(ctx: StepContext) -> None:
                started.append("AFails")
                a_failed.set()
                raise RuntimeError("first check broke")
            return [fail, lambda ctx: None]

        def validate(self) -> Step:
            return lambda ctx: None

    class BSlow(Check):
        def manipulate(self) -> list[Step]:
            def slow(ctx: StepContext) -> None:
                started.append("BSlow")
                assert a_failed.wait(20)
                put(ctx, "b", "done")  # real work after the other check failed
                finished.append(threading.current_thread().name)
            return [slow, lambda ctx: None]

        def validate(self) -> Step:
            return lambda ctx: None

    actions = [Start(), Manipulate(phase=1)]
    ran = run(tmp_path / "parallel", Custom(actions, [AFails, BSlow], seed=None),
              parallel=True)
    assert ran.report is not None
    assert ran.report.error == "AFails (phase 1): RuntimeError: first check broke"
    assert sorted(started) == ["AFails", "BSlow"]
    assert finished == ["step-BSlow-1"]  # joined before the failure was raised
    assert ran.report.others == []

    started.clear()
    finished.clear()
    a_failed.clear()
    ran = run(tmp_path / "sequential", Custom(actions, [AFails, BSlow], seed=None))
    assert ran.report is not None and ran.report.check == "AFails"
    assert started == ["AFails"]  # the second check's step never started


# --- plugin -----------------------------------------------------------------------------------

PLUGIN = """
from lockstep.scenarios import Check, disabled
from lockstep.scenarios.plugin import SetupItem

class Base(Check):
    __abstract__ = True
    def manipulate(self):
        return [lambda ctx: None, lambda ctx: None]
    def validate(self):
        return lambda ctx: None

class Alpha(Base):
    pass

@disabled("flaky")
class Beta(Base):
    pass

SETUP_ITEMS = [SetupItem("grants", ["true"])]

def version_probe(ctx):
    return "v1"
"""


def test_load_plugin_imports_the_module_from_the_repo(tmp_path: Path) -> None:
    (tmp_path / "scenario_checks_x.py").write_text(PLUGIN, encoding="utf-8")
    plugin = load_plugin("scenario_checks_x", tmp_path)
    assert sorted(c.name() for c in plugin.checks) == ["Alpha", "Beta"]
    assert [i.name for i in plugin.setup_items] == ["grants"]
    assert plugin.version_probe is not None and str(tmp_path) not in sys.path
    assert load_plugin(None, tmp_path).checks == []


@pytest.mark.parametrize(("source", "message"), [
    (None, "scenarios plugin 'scenario_checks_missing' not found in"),
    ("raise RuntimeError('no database driver')",
     "scenarios plugin 'scenario_checks_missing' is broken: RuntimeError: no database driver"),
    ("import no_such_module_anywhere",
     "scenarios plugin 'scenario_checks_missing' is broken: cannot import "
     "'no_such_module_anywhere'"),
    ("SETUP_ITEMS = ['grants']", "SETUP_ITEMS holds 'grants'"),
])
def test_a_missing_or_broken_plugin_is_a_one_line_usage_error(
        tmp_path: Path, source: str | None, message: str) -> None:
    sys.modules.pop("scenario_checks_missing", None)
    if source is not None:
        (tmp_path / "scenario_checks_missing.py").write_text(source, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_plugin("scenario_checks_missing", tmp_path)
    assert info.value.exit_code == 2
    assert message in info.value.one_line() and "\n" not in info.value.one_line()


# --- release mode: the target is a manifest file, not a tag ------------------------------------

class Stock(Check):
    """Stock written through the release's inventory service is readable after the upgrade."""

    def manipulate(self) -> list[Step]:
        def put_stock(ctx: StepContext) -> None:
            url = f"{ctx.endpoints['console']['public']}/stock/apple"
            httpx.put(url, content=b"12", timeout=5).raise_for_status()
        return [put_stock, lambda ctx: None]

    def validate(self) -> Step:
        def read(ctx: StepContext) -> None:
            got = httpx.get(f"{ctx.endpoints['console']['public']}/stock/apple", timeout=5)
            _equal(got.json()["count"], 12)
            _equal(httpx.get(f"{ctx.endpoints['console']['public']}/info").json()["schema"], 2)
        return check_partial(read)


def check_partial(fn: Any) -> Step:
    return lambda ctx: ctx.eventually(lambda: fn(ctx), timeout=20, interval=0.1)


@pytest.mark.slow
def test_a_release_upgrades_to_an_untagged_candidate_manifest(tmp_path: Path) -> None:
    """Release-mode entries: the base runs from its tag, the target from a manifest file that
    no tag names (ReleaseSource.resolve_manifest); the stateless component goes with its
    instance when the stateful one is fenced."""
    from lockstep import git
    from lockstep.manifest import Manifest, Pin
    from lockstep.rollout.driver import release_entries
    from lockstep.rollout.release_source import ReleaseSource
    from tests.release_system import INTEGRATION_TAG
    from tests.test_rollout_release import INVENTORY_SERVICE_V2, publish, system

    s = system(tmp_path)
    console2 = publish(s, "console", "v1.1.0", {"service.py": INVENTORY_SERVICE_V2})
    candidate = tmp_path / "candidate.toml"
    manifest = Manifest((s.ws_dir / "manifest.toml").read_text())
    candidate.write_text(manifest.apply([("default", "console", Pin("v1.1.0", console2))]))
    ws = tmp_path / "controller"  # beside remotes/, as the component URLs are relative
    git.run(["clone", "--quiet", str(tmp_path / "remotes" / "integration.git"), str(ws)])
    source = ReleaseSource(ws, ws / ".lockstep" / "rollouts")
    V2 = "v2026.11.2"

    class ReleaseCatalog:
        def components(self, version: str | None) -> dict[str, dict[str, Any]]:
            if version is None:
                return release_entries(source.resolve_manifest(candidate, version=V2),
                                       manifest=candidate)
            return release_entries(source.resolve(version))

    scenario = Custom([Start(instance="a", version=INTEGRATION_TAG), Initialize(instance="a"),
                       Manipulate(instance="a", phase=1),
                       Start(instance="b", deploy_generation=1, read_only=True),
                       WaitReady(instance="b"), Promote(instance="b", fences="a"),
                       Validate(instance="b")], [Stock])
    executor = LocalExecutor(
        workspace=ws, run_dir=new_run_dir(tmp_path / "artifacts", "custom", 7),
        catalog=ReleaseCatalog(), plugin=Plugin(), settings=SETTINGS, timing=FAST)
    report = run_scenario(scenario, plan_of(scenario), executor, ["replay"])
    assert report is None, report.render() if report else ""
    instances = executor.instance_report()
    assert sorted(instances["b"]["processes"]) == ["base", "console"]
    assert instances["a"]["running"] is False and instances["b"]["version"] == "T"
    promote = (executor.run_dir / "007_promote.log").read_text(encoding="utf-8")
    assert "a exited after being fenced: base exited -9, console exited 0" in promote
    record = executor.instances["b"].processes["console"].record
    assert record["release"] == V2 and record["instance"] == "b"  # labelled with its version
