"""F15 and issue 8's Must show 1 on the demo system: every built-in scenario passes on the demo
from each of the two previous releases, with the demo's own checks plugin
(checks/demo_checks.py, the text of lockstep.demo_checks).

The demo is built once for the module: `demo.build()` (the component repos, the registry hooks,
the integration repo with the checks plugin), then the demo's queue lands its submissions. The
landed releases are those of `lockstep demo`, one month's series `vYYYY.MM.1` … `.4`:

    .1  inventory v1.1.0 (the schema-1 inventory service)
    .2  pricing v1.1.0      (pricing v2.0.0 is rejected by the contract stage, landing nothing)
    .3  storefront v1.1.0
    .4  inventory v1.2.0 (the schema-2 service: its migration adds the `reserved` column)

The queue runs without its `upgrade` stage and inventory v1.3.0 is not submitted: that stage
would run the very scenarios tested here on every candidate (20 s more), and v1.3.0 is the
version it rejects, so it lands no release. Tags, commits and pins are otherwise those of
`lockstep demo`.

The target is the newest release, `--to vYYYY.MM.4` (its version is the tag itself; the work
tree's manifest pins the same versions). The two previous releases are `.3` and `.2`: the two
landed before the newest. Both run the schema-1 inventory service, so every upgrade from them
crosses v1.2.0's migration and `ReservedColumnMigration` sees schema 1 turn into schema 2.
`minor_versions` is empty on the demo (all its tags share the target's series, and its pins
carry no image digests), so every scenario whose base is not T runs with `--from` set to each
of the two; `random-upgrade-path` with seed 1 (its path is then `--from` → T). The T-based
scenarios run once. `upgrade-via-previous` goes from `--from` through a release between it and
the target: spec §5 takes that `last` from `minor_versions`, empty here, so lockstep takes the
newest release between `--from` and the target (docs/scenarios.md, "Base versions"). From `.2`
it runs `.2` → `.3` → T; from `.3` no release lies between, and that combination does not exist:
exit 2 `no release between <V> and the target`, tested as such.

Runs go through the CLI's own planning (`lockstep.cli.scenario.prepare`: IntegrationRepo,
releases, target, plugin, Scenario, build_plan) and an `IntegrationCatalog` + `LocalExecutor` +
`run_scenario`, as `scenario run` does, with one difference: WaitReady and Promote poll every
0.2 s instead of the spec's 1 s (`runtime.Timing`, which exists so tests can shorten it).
"""

from __future__ import annotations

import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from lockstep import demo
from lockstep import demo_system as sample
from lockstep.cli.scenario import Prepared, Select, new_run_dir, prepare, replay_command
from lockstep.config import Config
from lockstep.errors import UsageError
from lockstep.manifest import Manifest
from lockstep.queue import operations as ops
from lockstep.queue.model import State
from lockstep.queue.worker import RunMode, Worker
from lockstep.scenarios import SCENARIOS, Promote, Start, Validate
from lockstep.scenarios.report import FailureReport, run_scenario
from lockstep.scenarios.resolve import IntegrationCatalog
from lockstep.scenarios.runtime import LocalExecutor, Timing
from lockstep.workspace import Workspace
from tests.system import isolated_git

pytestmark = pytest.mark.slow

FAST = Timing(poll_interval=0.2, fast_poll=0.05, watch_interval=0.05)
SEED = 1
CHECKS = ["CounterAcrossPhases", "ReservedColumnMigration", "StockSurvivesUpgrade"]
REJECTED_BY_UPGRADE_STAGE = ("inventory", "v1.3.0")
FROM_SCENARIOS = sorted(n for n, c in SCENARIOS.items()
                        if c.base != "T" and n != "upgrade-via-previous")
VIA = "upgrade-via-previous"
T_SCENARIOS = sorted(n for n, c in SCENARIOS.items() if c.base == "T")


@dataclass(frozen=True)
class Demo:
    """The demo's integration repo after the queue landed its releases (oldest first)."""

    root: Path
    releases: tuple[str, ...]

    @property
    def newest(self) -> str:
        """The target of every run."""
        return self.releases[-1]

    @property
    def previous_two(self) -> tuple[str, str]:
        """The two releases landed before the newest, newest first."""
        return self.releases[-2], self.releases[-3]


def _without_upgrade_stage(cfg: Config) -> Config:
    return cfg.model_copy(update={"stages": [s for s in cfg.stages if s.kind != "upgrade"]})


def _land(ws: Workspace) -> tuple[str, ...]:
    """The demo's queue, without its upgrade stage: the release tags it lands, in order."""
    committed = ws.config_at
    ws.config = _without_upgrade_stage(ws.config)
    ws.config_at = lambda commit: _without_upgrade_stage(committed(commit))  # type: ignore[method-assign]
    store = ops.open_store(ws)
    items = [ops.submit(ws, store, c, v, [], 0) for c, v in sample.SUBMISSIONS
             if (c, v) != REJECTED_BY_UPGRADE_STAGE]
    Worker(ws, store).run(RunMode.UNTIL_EMPTY)
    with store.tx() as c:
        done = [store.item(c, i.seq) for i in items]
    states = [(i.component, i.version, i.state) for i in done]
    assert [s for *_, s in states] == [State.LANDED, State.LANDED, State.REJECTED,
                                       State.LANDED, State.LANDED], states
    return tuple(str(i.outcome["tag"]) for i in done if i.state == State.LANDED and i.outcome)


@pytest.fixture(scope="module")
def demo_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Demo]:
    """The demo system, built once for the module, with git isolated as conftest does."""
    with isolated_git(tmp_path_factory):
        root = tmp_path_factory.mktemp("demo")
        ws = demo.build(root, lambda _line: None)
        yield Demo(ws.root, _land(ws))


@dataclass
class Ran:
    """One scenario run on the demo: its plan, report and executor."""

    prepared: Prepared
    report: FailureReport | None
    executor: LocalExecutor
    seconds: float

    def log(self, kind: type) -> str:
        """The logs of every action of that type, joined."""
        return "".join((self.executor.run_dir / f"{n:03d}_{e.action.kebab_name}.log").read_text()
                       for n, e in enumerate(self.prepared.plan.entries, start=1)
                       if isinstance(e.action, kind))


def run(d: Demo, name: str, from_version: str | None, tmp_path: Path) -> Ran:
    """Plan `name` as `lockstep scenario run NAME [--from V] --to <newest> --seed 1` does, and
    run it through the local driver."""
    select = Select(from_version=from_version, to=d.newest, seed=str(SEED))
    prepared = prepare(name, select, d.root, None)
    try:
        run_dir = new_run_dir(tmp_path / "artifacts", prepared.plan)
        catalog = IntegrationCatalog(
            prepared.target, prepared.repo.release_source(d.root / ".lockstep" / "rollouts"),
            prepared.configuration)
        executor = LocalExecutor(workspace=d.root, run_dir=run_dir, catalog=catalog,
                                 plugin=prepared.plugin, settings=prepared.settings, timing=FAST)
        replay = [*replay_command(prepared, select, d.root, parallel=False), "--plan",
                  str(run_dir / "plan.json")]
        began = time.monotonic()
        report = run_scenario(prepared.scenario, prepared.plan, executor, replay)
        return Ran(prepared, report, executor, time.monotonic() - began)
    finally:
        prepared.repo.close()


def assert_passed(ran: Ran, name: str, base: str | None, target: str) -> None:
    """The run passed with the demo's three checks, every instance was torn down, and the plan
    names the expected base and target."""
    assert ran.report is None, ran.report.render()
    plan = ran.prepared.plan
    assert (plan.scenario, plan.seed, plan.base, plan.target_version) == (name, SEED, base,
                                                                          target)
    assert sorted(plan.checks) == CHECKS
    assert ran.prepared.plugin.module == "checks.demo_checks"  # the demo repo's own plugin
    files = sorted(p.name for p in ran.executor.run_dir.iterdir())
    assert not [f for f in files if f.startswith("FAILED_")]
    assert len([f for f in files if f[:3].isdigit()]) == len(plan.entries)
    assert not any(i.live() for i in ran.executor.instances.values())
    teardown = (ran.executor.run_dir / "teardown.log").read_text()
    assert "shared state deleted" in teardown
    validates = ran.log(Validate)
    for check in CHECKS:
        assert f"[{check}] step passed" in validates


def test_the_demo_landed_four_releases_of_one_series(demo_system: Demo) -> None:
    """The fixture's releases are the demo's: four tags of one month, inventory v1.1.0 in the
    two previous ones and v1.2.0 (schema 2) in the newest."""
    releases = demo_system.releases
    assert len(releases) == 4 and len({r.rsplit(".", 1)[0] for r in releases}) == 1
    assert [r.rsplit(".", 1)[1] for r in releases] == ["1", "2", "3", "4"]

    def pins(tag: str | None) -> dict[str, str]:
        text = (demo_system.root / "manifest.toml").read_text() if tag is None else subprocess.run(
            ["git", "show", f"{tag}:manifest.toml"], cwd=demo_system.root, check=True,
            capture_output=True, text=True).stdout
        return {c: p.version for c, p in Manifest(text).pins("default").items()}

    assert [pins(t)["inventory"] for t in releases] == ["v1.1.0", "v1.1.0", "v1.1.0", "v1.2.0"]
    assert pins(None) == pins(demo_system.newest)  # the work tree pins what the newest does


@pytest.mark.parametrize("name", T_SCENARIOS)
def test_f15_every_target_based_scenario_passes_once(demo_system: Demo, name: str,
                                                     tmp_path: Path) -> None:
    ran = run(demo_system, name, None, tmp_path)
    assert_passed(ran, name, None, demo_system.newest)
    starts = [e.action for e in ran.prepared.plan.entries if isinstance(e.action, Start)]
    assert {s.version for s in starts} == {None}  # the target alone
    if name == "zero-downtime-restart":
        promotes = ran.log(Promote)
        assert promotes.count("exited after being fenced: inventory exited 0") == 3


@pytest.mark.parametrize("which", [0, 1], ids=["newest-but-one", "newest-but-two"])
@pytest.mark.parametrize("name", FROM_SCENARIOS)
def test_f15_every_release_based_scenario_passes_from_each_previous_release(
        demo_system: Demo, name: str, which: int, tmp_path: Path) -> None:
    start = demo_system.previous_two[which]
    ran = run(demo_system, name, start, tmp_path)
    assert_passed(ran, name, start, demo_system.newest)
    plan = ran.prepared.plan
    first = plan.entries[0].action
    assert isinstance(first, Start) and first.version == start
    if name == "random-upgrade-path":  # no candidate series newer than --from: V → T
        hops = [e.action for e in plan.entries
                if isinstance(e.action, Start) and e.action.read_only]
        assert [(h.version, h.deploy_generation) for h in hops] == [(None, 1)]
    if name == "rollback-refused":
        starts = ran.log(Start)
        assert "a refused as expected (refused): inventory exited 1" in starts
        assert "c refused as expected (fenced): inventory exited 0" in starts
        assert "c refused as expected (refused): inventory exited 1" in starts
    if name == "kill-during-catch-up":
        statuses = ran.executor.kill_statuses[0]
        assert statuses  # the first K(b) logged b's status
        after = "Initializing" not in statuses.values()
        assert ("killed after catch-up" in ran.executor.warnings) == after


def test_f15_upgrade_via_previous_passes_through_the_release_between(
        demo_system: Demo, tmp_path: Path) -> None:
    """From the newest-but-two release, through the newest-but-one (the release between it and
    the target), to the target: three versions lead in turn and the checks pass."""
    start, between = demo_system.previous_two[1], demo_system.previous_two[0]
    ran = run(demo_system, VIA, start, tmp_path)
    assert_passed(ran, VIA, start, demo_system.newest)
    leads = [e.action.version for e in ran.prepared.plan.entries
             if isinstance(e.action, Start) and not e.action.read_only]
    assert leads[:2] == [start, between] and set(leads[2:]) == {None}


def test_upgrade_via_previous_from_the_newest_but_one_has_no_release_between(
        demo_system: Demo, tmp_path: Path) -> None:
    """No release lies between the newest-but-one and the target: exit 2, nothing starts."""
    start = demo_system.previous_two[0]
    with pytest.raises(UsageError) as info:
        run(demo_system, VIA, start, tmp_path)
    assert info.value.exit_code == 2
    assert info.value.one_line().startswith(f"no release between {start} and the target")
    assert not (tmp_path / "artifacts").exists()


@pytest.mark.parametrize("name", sorted(n for n, c in SCENARIOS.items() if c.base != "T"))
def test_without_from_the_release_based_scenarios_find_no_release(demo_system: Demo,
                                                                  name: str) -> None:
    """F15's "as is" runs: `minor_versions` is empty on the demo (one series, which is the
    target's, and no digests in its pins), so each needs `--from`; exit 2 names the count."""
    needs = 2 if name == "upgrade-via-previous" else 1
    with pytest.raises(UsageError) as info:
        prepare(name, Select(to=demo_system.newest, seed=str(SEED)), demo_system.root, None)
    assert info.value.one_line().startswith(f"not enough releases: needs {needs}, found 0")
