"""The remaining acceptance claims of the scenario runtime (spec upgrade-scenarios §3, §6, §8,
§10), with real processes through the rollout's LocalDriver:

- F16 negative: `rollback-refused` from a release whose service opens state written by a newer
  release (it ignores the newer-release refusal of rollouts.md §6) fails at its `refused` Starts,
  kind `lifecycle`, with the FAILED_ file of that Start.
- A fencing Promote kills the fenced instance's stateless processes instead of waiting the 60 s
  for them to exit by themselves (`zero-downtime-restart` of a release with a stateless
  component, under the spec's 60 s).
- `kill-during-catch-up` warns `killed after catch-up` exactly when its first K(b) found no
  stateful component Initializing.
- A Configure whose setup item raises: kind `framework`, a FAILED_ file, nothing recorded, so
  the next Configure applies every item again.

The release-mode tests run a real integration repo with release tags (tests/release_system.py):
`console` is the demo's stateful inventory service, `base` a stateless web server."""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import httpx
import pytest

from lockstep.demo_system import INVENTORY_SERVICE_V1, INVENTORY_SERVICE_V2
from lockstep.manifest import Manifest, Pin
from lockstep.scenarios import (
    Check,
    Configure,
    Kill,
    PlanOptions,
    Promote,
    Scenario,
    Start,
    Step,
    StepContext,
    WaitReady,
    build_plan,
    scenario_class,
)
from lockstep.scenarios.plugin import Plugin, SetupItem
from lockstep.scenarios.report import FailureReport, new_run_dir, run_scenario, run_warnings
from lockstep.scenarios.resolve import IntegrationCatalog, IntegrationRepo
from lockstep.scenarios.runtime import LocalExecutor, Timing
from tests.release_system import INTEGRATION_TAG, ReleaseSystem
from tests.system import isolated_git
from tests.test_rollout_release import DEPLOY, publish
from tests.test_rollout_release import FILES as SERVICE_FILES
from tests.test_scenario_executor import (
    FAST,
    SETTINGS,
    Custom,
    DemoCatalog,
    KeyValue,
    builtin,
    plan_of,
)
from tests.test_scenario_executor import run as run_demo_service

pytestmark = pytest.mark.slow

# The spec's waits, with status polls every 0.2 s instead of 1 s.
SPEC_WAITS = Timing(poll_interval=0.2, fast_poll=0.05, watch_interval=0.05, exit_timeout=60.0)

# The deliberately broken release: its inventory service boots against shared state that a newer
# release wrote, instead of refusing it (rollouts.md §6 boot rules, protocol.boot_rule).
BROKEN_SERVICE = INVENTORY_SERVICE_V1.replace("\nSCHEMA = 1\n", """
import lockstep.rollout.protocol as protocol

# The bug: the release comparison always says "not newer", so the refusal never happens.
protocol.release_is_newer = lambda recorded, running: False

SCHEMA = 1
""", 1)
assert BROKEN_SERVICE != INVENTORY_SERVICE_V1


# --- the release system ---------------------------------------------------------------------

@dataclass(frozen=True)
class Releases:
    """An integration repo whose release INTEGRATION_TAG runs the broken console, and a
    candidate manifest (the target) pinning console v1.1.0, the fixed schema-2 service."""

    system: ReleaseSystem
    candidate: Path

    @property
    def root(self) -> Path:
        return self.system.ws_dir


@pytest.fixture(scope="module")
def releases(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Releases]:
    with isolated_git(tmp_path_factory):
        tmp = tmp_path_factory.mktemp("releases")
        files = {**SERVICE_FILES, "console": {"service.py": BROKEN_SERVICE}}
        s = ReleaseSystem.create(tmp, files=files, component_settings=DEPLOY)
        fixed = publish(s, "console", "v1.1.0", {"service.py": INVENTORY_SERVICE_V2})
        candidate = tmp / "candidate.toml"
        manifest = Manifest((s.ws_dir / "manifest.toml").read_text())
        candidate.write_text(manifest.apply([("default", "console", Pin("v1.1.0", fixed))]))
        yield Releases(s, candidate)


class ConsoleStock(Check):
    """Stock written through the console (inventory) service in each phase reads back."""

    def initialize(self) -> Step:
        self.items: dict[str, int] = {}
        return self._put("init")

    def manipulate(self) -> list[Step]:
        return [self._put("p1"), self._put("p2")]

    def _put(self, label: str) -> Step:
        item, count = f"{label}-{self.rng.getrandbits(16)}", self.rng.randint(1, 99)

        def step(ctx: StepContext) -> None:
            def once() -> None:
                resp = httpx.put(_stock(ctx, item), content=str(count), timeout=5)
                assert resp.status_code == 200, resp.text
            ctx.eventually(once, timeout=20, interval=0.1)
            self.items[item] = count
        return step

    def validate(self) -> Step:
        def step(ctx: StepContext) -> None:
            for item, count in self.items.items():
                def once(item: str = item, count: int = count) -> None:
                    got = httpx.get(_stock(ctx, item), timeout=5)
                    assert got.status_code == 200 and got.json()["count"] == count, got.text
                ctx.eventually(once, timeout=20, interval=0.1)
        return step


def _stock(ctx: StepContext, item: str) -> str:
    return f"{ctx.endpoints['console']['public']}/stock/{item}"


@dataclass
class Ran:
    """One run against the release system: its report, executor and scenario."""

    report: FailureReport | None
    executor: LocalExecutor
    scenario: Scenario

    def log(self, number: int) -> str:
        """The log of action `number` (FAILED_ or not)."""
        [path] = self.executor.run_dir.glob(f"*{number:03d}_*.log")
        return path.read_text(encoding="utf-8")

    def numbers(self, kind: type) -> list[int]:
        """The action numbers of every action of that type."""
        return [n for n, e in enumerate(self.scenario.plan, start=1) if isinstance(e.action, kind)]


def run_release(r: Releases, tmp_path: Path, name: str, *, from_version: str | None = None,
                scenario: Scenario | None = None, timing: Timing = SPEC_WAITS) -> Ran:
    """Run a built-in scenario (or `scenario`) against the candidate, from the repo's releases,
    through IntegrationRepo and IntegrationCatalog as `scenario run --to FILE` does."""
    repo = IntegrationRepo(r.root)
    try:
        repo.fetch_tags()
        target = repo.target(str(r.candidate))
        if scenario is None:
            scenario = scenario_class(name)(
                [ConsoleStock], None, 3, releases=repo.releases(target.version),
                options=PlanOptions(from_version=from_version), settings=SETTINGS)
        plan = (plan_of(scenario) if scenario.name == "custom"  # deliberately partial plans
                else build_plan(scenario, target.manifest_sha256))
        catalog = IntegrationCatalog(target, repo.release_source(r.root / ".lockstep" /
                                                                 "rollouts"))
        executor = LocalExecutor(workspace=r.root, catalog=catalog, plugin=Plugin(),
                                 run_dir=new_run_dir(tmp_path / "artifacts", name,
                                                     scenario.seed),
                                 settings=SETTINGS, timing=timing)
        report = run_scenario(scenario, plan, executor, ["replay"])
        return Ran(report, executor, scenario)
    finally:
        repo.close()


# --- F16 negative -----------------------------------------------------------------------------

def test_f16_rollback_refused_fails_when_the_old_release_opens_newer_state(
        releases: Releases, tmp_path: Path) -> None:
    """The broken release boots against the state the target wrote: at generation 0 it is
    fenced (exit 0) instead of refused, so S(last, a, 0, refused) fails the scenario."""
    ran = run_release(releases, tmp_path, "rollback-refused", from_version=INTEGRATION_TAG)
    report = ran.report
    assert report is not None, "the broken release must fail rollback-refused"
    refused = [n for n in ran.numbers(Start)
               if getattr(ran.scenario.plan[n - 1].action, "expect_refusal", "") == "refused"]
    assert report.action_number == refused[0] == 10
    assert (report.kind, report.check, report.phase) == ("lifecycle", None, None)
    assert report.action == f"Start instance=a version={INTEGRATION_TAG} expect_refusal=refused"
    assert report.error.startswith(
        "a did not refuse as expected: every process should exit non-zero (refused) within "
        "60 s without leading; a/console exited 0")
    assert "\n  last lines of a/console:\n" in report.error  # quoted (it exits silently)
    assert "newer than this release" not in report.error  # it never refused
    failed = sorted(p.name for p in ran.executor.run_dir.glob("FAILED_*"))
    assert failed == ["FAILED_010_start.log"] and report.failed_log is not None
    assert report.failed_log.name == failed[0]
    text = report.failed_log.read_text(encoding="utf-8")
    assert text.startswith(f"010 Start instance=a version={INTEGRATION_TAG} "
                           "expect_refusal=refused\n")
    assert "a did not refuse as expected" in text
    assert report.instances["b"]["version"] == "T"  # the leader was not disturbed
    assert not any(f.startswith("011_") for f in (p.name for p in ran.executor.run_dir.iterdir()))


def test_f16_the_read_only_refused_start_fails_too(releases: Releases, tmp_path: Path) -> None:
    """The plan's other `refused` Start, S(last, c, 2, ro, refused), on its own: the broken
    release catches up read-only at generation 2 instead of refusing, so it fails, quoting the
    status it reported, and is killed."""
    actions = [Start(instance="a", version=INTEGRATION_TAG),
               Start(instance="b", deploy_generation=1, read_only=True),
               WaitReady(instance="b"), Promote(instance="b", fences="a"),
               Start(instance="c", version=INTEGRATION_TAG, deploy_generation=2, read_only=True,
                     expect_refusal="refused")]
    scenario = Custom(actions)
    short = Timing(poll_interval=0.2, fast_poll=0.05, watch_interval=0.05, exit_timeout=2.0)
    ran = run_release(releases, tmp_path, "custom", scenario=scenario, timing=short)
    report = ran.report
    assert report is not None
    assert (report.action_number, report.kind) == (7, "lifecycle")
    assert report.error.startswith(
        "c did not refuse as expected: every process should exit non-zero (refused) within 2 s "
        "without leading; c/console still running; c/console reported ReadyToPromote")
    assert sorted(p.name for p in ran.executor.run_dir.glob("FAILED_*")) == [
        "FAILED_007_start.log"]
    assert "killed c/console" in ran.log(7)


# --- fencing an instance with a stateless component ---------------------------------------------

def test_a_fencing_promote_does_not_wait_for_stateless_processes(releases: Releases,
                                                                 tmp_path: Path) -> None:
    """zero-downtime-restart of a release with a stateless component, under the spec's 60 s:
    each of the three fencing Promotes kills the fenced instance's stateless `base` (nothing
    fences it) as soon as its stateful `console` exited, instead of waiting 60 s for it."""
    began = time.monotonic()
    ran = run_release(releases, tmp_path, "zero-downtime-restart")
    elapsed = time.monotonic() - began
    assert ran.report is None, ran.report.render()
    assert ran.executor.timing.exit_timeout == 60.0
    promotes = ran.numbers(Promote)
    assert len(promotes) == 3
    for number in promotes:
        text = ran.log(number)
        fenced = getattr(ran.scenario.plan[number - 1].action, "fences", None)
        assert f"killed {fenced}/base" in text
        assert f"{fenced} exited after being fenced: base exited -9, console exited 0" in text
        assert _duration(text) < 20, text
    assert elapsed < 60
    processes = ran.executor.instance_report()
    assert sorted(processes["b"]["processes"]) == ["base", "console"]
    assert not any(i["running"] for i in processes.values())


def _duration(log: str) -> float:
    """Seconds between an action log's `started` and `ended` lines."""
    stamps = [datetime.fromisoformat(m.replace("Z", "+00:00")) for m in re.findall(
        r"^(?:started|ended) (\S+?)(?::)?(?: |$)", log, re.MULTILINE)]
    return (stamps[-1] - stamps[0]).total_seconds()


# --- kill-during-catch-up: the claim and its warning ----------------------------------------------

@pytest.mark.parametrize(("delay", "warned"), [(4.0, False), (0.0, True)],
                         ids=["long-catch-up", "no-catch-up"])
def test_kill_during_catch_up_warns_when_the_kill_came_after_catch_up(
        tmp_path: Path, delay: float, warned: bool) -> None:
    """A target that spends `delay` s catching up: with a long one the first K(b) finds b
    Initializing (the claim holds, no warning); without one it finds b ReadyToPromote, and the
    passing run carries the warning `killed after catch-up`."""
    extra: dict[str | None, list[str]] = {None: ["--catchup-delay", str(delay)]} if delay else {}
    scenario = builtin("kill-during-catch-up", [KeyValue])
    ran = run_demo_service(tmp_path, scenario, catalog=DemoCatalog(extra))
    assert ran.report is None, ran.report.render()
    first_kill = next(n for n, e in enumerate(scenario.plan, start=1)
                      if isinstance(e.action, Kill))
    status = "ReadyToPromote" if warned else "Initializing"
    assert ran.executor.kill_statuses[0] == {"store": status}
    assert f"b/store: {status}\n" in ran.text(f"{first_kill:03d}_kill.log")
    assert ran.executor.killed_mid_catch_up() is not warned
    assert ran.executor.warnings == (["killed after catch-up"] if warned else [])
    assert run_warnings(ran.executor.run_dir) == ran.executor.warnings  # kept in the run dir


# --- a failing Configure -----------------------------------------------------------------------

CALLS: list[str] = []


def _account(ctx: StepContext) -> None:
    CALLS.append("account")


def _quota_fails_once(ctx: StepContext) -> None:
    CALLS.append("quota")
    if CALLS.count("quota") == 1:
        raise RuntimeError("quota service not reachable")


def _quota_always_fails(ctx: StepContext) -> None:
    CALLS.append("quota")
    raise RuntimeError("quota service not reachable")


def test_a_failing_configure_is_a_framework_failure_recording_nothing(tmp_path: Path) -> None:
    """no-restart with a setup item that raises: the inserted Configure (action 2) fails with
    kind `framework`, its file is the one FAILED_ file, no check step ran, and the log never
    says the items were configured (the first item ran but is not recorded)."""
    CALLS.clear()
    plugin = Plugin(setup_items=[SetupItem("account", _account),
                                 SetupItem("quota", _quota_always_fails)])
    scenario = builtin("no-restart", [KeyValue])
    ran = run_demo_service(tmp_path, scenario, plugin=plugin)
    report = ran.report
    assert report is not None
    assert (report.action_number, report.action, report.kind, report.check, report.phase) == (
        2, "Configure", "framework", None, None)
    assert report.error == "RuntimeError: quota service not reachable"
    assert [p.name for p in ran.failed()] == ["FAILED_002_configure.log"]
    text = ran.failed()[0].read_text(encoding="utf-8")
    assert "[account] setup item started" in text and "[quota] setup item started" in text
    assert "configured:" not in text
    assert CALLS == ["account", "quota"]
    assert "003_initialize.log" not in ran.files()


def test_a_later_configure_retries_every_item_of_a_failed_one(tmp_path: Path) -> None:
    """Items are recorded in join, only after success: after a Configure failed, the next one
    applies every item again (the one that had succeeded too), and a third applies nothing."""
    CALLS.clear()
    plugin = Plugin(setup_items=[SetupItem("account", _account),
                                 SetupItem("quota", _quota_fails_once)])
    scenario = Custom([Start()])
    executor = LocalExecutor(workspace=tmp_path / "ws", catalog=DemoCatalog(), plugin=plugin,
                             run_dir=new_run_dir(tmp_path / "artifacts", "custom", 7),
                             settings=SETTINGS, timing=FAST)
    (tmp_path / "ws").mkdir()
    executor.begin_run(scenario.run_info())
    try:
        Start().execute(executor)
        configure = Configure()
        with pytest.raises(RuntimeError, match="quota service not reachable"):
            configure.execute(executor)
        assert CALLS == ["account", "quota"]
        configure.execute(executor)
        configure.join(executor)
        assert CALLS == ["account", "quota", "account", "quota"]
        configure.execute(executor)
        configure.join(executor)
        assert CALLS == ["account", "quota", "account", "quota"]  # both recorded now
    finally:
        executor.end_run(None)
    assert not any(i.live() for i in executor.instances.values())
