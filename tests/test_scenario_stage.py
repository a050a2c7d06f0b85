"""The queue's `upgrade` stage kind (spec upgrade-scenarios §9, queue §3.3): its argv, seed and
base release, its configuration keys, how its exits map to stage outcomes, and end to end on the
demo system: good inventory versions land through it, the broken migration is rejected with a
report naming the check, phase, step and FAILED_ file, and a rerun replays the same plan (F20)."""

from __future__ import annotations

import hashlib
import json
import sys
from pathlib import Path
from typing import Any

import pytest

from lockstep import config, demo
from lockstep.errors import ConfigError
from lockstep.queue import operations as ops
from lockstep.queue.worker import RunMode, Worker
from lockstep.scenarios import SCENARIOS
from lockstep.scenarios.stage import (
    DEFAULT_SCENARIO,
    FIRST_RELEASE_SCENARIO,
    failure_lines,
    plan_upgrade,
    releases_newest_first,
    stage_seed,
)
from lockstep.stages import Outcome, newest_reachable_release, run_upgrade
from lockstep.workspace import Workspace
from tests.system import System, sh

CANDIDATE = "4b825dc642cb6eb9a060e54bf8d69288f1e8e4c6"
FORMAT = "v{year}.{month:02d}.{n}"
ARGS = dict(manifest="/w/manifest.toml", configuration="default", candidate=CANDIDATE,
            workspace="/repo", artifacts="/logs/upgrade.1.scenarios", program=["lockstep"])


# --- seed, releases, argv (pure) ----------------------------------------------------------------

def test_seed_is_the_first_63_bits_of_the_candidates_sha256() -> None:
    digest = hashlib.sha256(CANDIDATE.encode()).hexdigest()
    assert stage_seed(CANDIDATE) == int(digest[:16], 16) >> 1
    assert stage_seed(CANDIDATE) == 8689115379211116016  # pinned: plans must not drift
    assert all(0 <= stage_seed(c) < 2**63 for c in ("", "a", "b" * 64))
    assert stage_seed("a") != stage_seed("b")


def test_releases_newest_first_skips_prereleases_and_foreign_tags() -> None:
    tags = ["v2026.09.10", "v2026.10.1", "v2026.10.2-rc.1", "nightly", "v2026.9.2", "v2025.12.7"]
    assert releases_newest_first(tags, FORMAT) == [
        "v2026.10.1", "v2026.09.10", "v2026.9.2", "v2025.12.7"]
    assert releases_newest_first(["nightly", "v1-rc.1"], FORMAT) == []


def test_default_stage_runs_zero_downtime_upgrade_from_the_current_release() -> None:
    run = plan_upgrade(None, release="v2026.11.3", **ARGS)  # type: ignore[arg-type]
    assert run.scenario == DEFAULT_SCENARIO == "zero-downtime-upgrade"
    assert run.argv == [
        "lockstep", "scenario", "run", "zero-downtime-upgrade", "--from", "v2026.11.3",
        "--to", "/w/manifest.toml", "--config", "default", "--seed", str(stage_seed(CANDIDATE)),
        "--json", "-C", "/repo", "--artifacts", "/logs/upgrade.1.scenarios"]
    assert "from v2026.11.3" in run.describe() and str(run.seed) in run.describe()


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_from_is_given_only_to_last_and_seeded_scenarios(name: str) -> None:
    run = plan_upgrade(name, release="v2026.11.3", **ARGS)  # type: ignore[arg-type]
    assert run.scenario == name
    wants_from = SCENARIOS[name].base in ("last", "seeded")
    assert ("--from" in run.argv) is wants_from
    assert run.from_release == ("v2026.11.3" if wants_from else None)


@pytest.mark.parametrize("name", sorted(SCENARIOS))
def test_before_the_first_release_only_target_based_scenarios_run_as_configured(
        name: str) -> None:
    run = plan_upgrade(name, release=None, **ARGS)  # type: ignore[arg-type]
    assert "--from" not in run.argv
    if SCENARIOS[name].base == "T":
        assert (run.scenario, run.first_release) == (name, False)
    else:
        assert (run.scenario, run.first_release) == (FIRST_RELEASE_SCENARIO, True)
        assert "no integration release yet" in run.describe()
    assert run.argv[3] == run.scenario


def test_f20_a_rerun_of_the_same_candidate_has_the_same_argv() -> None:
    first = plan_upgrade("kill-during-catch-up", release="v2026.11.3", **ARGS)  # type: ignore[arg-type]
    again = plan_upgrade("kill-during-catch-up", release="v2026.11.3", **ARGS)  # type: ignore[arg-type]
    assert first == again
    other = plan_upgrade("kill-during-catch-up", release="v2026.11.3",
                         **{**ARGS, "candidate": "0" * 40})  # type: ignore[arg-type]
    assert other.seed != first.seed


def test_failure_lines_name_check_phase_step_and_failed_file() -> None:
    report = {"scenario": "zero-downtime-upgrade", "seed": 7, "action_number": 8,
              "action": "Manipulate", "kind": "check", "check": "CounterAcrossPhases",
              "phase": "2", "error": "counter-1: expected 42\nread None",
              "failed_log": "/a/FAILED_008_manipulate.log"}
    lines = failure_lines(report)
    assert lines == [
        "lockstep: upgrade scenario zero-downtime-upgrade (seed 7) failed: check "
        "CounterAcrossPhases, phase 2, action 008 Manipulate",
        "lockstep:   error: counter-1: expected 42 read None",
        "lockstep:   log: /a/FAILED_008_manipulate.log"]
    lifecycle = {**report, "kind": "lifecycle", "check": None, "phase": None,
                 "action": "WaitReady", "action_number": 5}
    assert "lifecycle failure, action 005 WaitReady" in failure_lines([lifecycle])[0]
    assert failure_lines({"error": "no report"}) == []


# --- configuration ------------------------------------------------------------------------------

STAGE = "[[stages]]\nname = 'upgrade'\ntimeout = 60\n"


@pytest.mark.parametrize(("extra", "kind", "scenario", "command"), [
    ("kind = 'upgrade'\n", "upgrade", None, None),
    ("kind = 'upgrade'\nscenario = 'rollback-refused'\n", "upgrade", "rollback-refused", None),
    ("command = ['make']\n", None, None, ["make"]),
])
def test_stage_keys_accepted(extra: str, kind: str | None, scenario: str | None,
                             command: list[str] | None) -> None:
    [stage] = config.parse(STAGE + extra).stages
    assert (stage.kind, stage.scenario, stage.command) == (kind, scenario, command)


@pytest.mark.parametrize(("extra", "expected"), [
    ("", "stages.0: give exactly one of `command` (an argv) and `kind`"),
    ("command = ['make']\nkind = 'upgrade'\n", "stages.0: give exactly one of `command`"),
    ("kind = 'upgrades'\n", "stages.0.kind: unknown stage kind 'upgrades' (known kinds: upgrade"),
    ("kind = 'upgrade'\nscenario = 'zero-downtime'\n",
     "stages.0.scenario: unknown scenario 'zero-downtime' (known scenarios: no-restart,"),
    ("command = ['make']\nscenario = 'no-restart'\n",
     "stages.0: `scenario` belongs to kind = \"upgrade\" stages"),
])
def test_stage_keys_refused_with_one_line(extra: str, expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        config.parse(STAGE + extra)
    line = err.value.one_line()
    assert line.startswith(f"lockstep.toml: {expected}"), line
    assert "\n" not in line


def test_unknown_kind_is_refused_by_the_cli_with_one_line(system: System) -> None:
    system.edit_config(lambda text: text + "[[stages]]\nname = 'up'\nkind = 'upgrad'\n"
                                           "timeout = 60\n")
    proc = system.cli("queue", "run", "--once")
    assert proc.returncode == 2
    assert proc.stderr.strip().splitlines() == [
        "error: lockstep.toml: stages.3.kind: unknown stage kind 'upgrad' (known kinds: "
        "upgrade; or give a `command`)"]


# --- the hook: base release and exit codes, with a stand-in scenario command -----------------

def test_newest_reachable_release_reads_local_and_remote_tags(system: System) -> None:
    ws = system.workspace()
    base = ws.remote_head()
    assert newest_reachable_release(ws, base) is None
    sh(["tag", "-a", "v2026.10.1", "-m", "r", base], system.ws_dir)
    sh(["tag", "v2026.10.2-rc.1", base], system.ws_dir)  # a prerelease is no release
    assert newest_reachable_release(ws, base) == ("v2026.10.1", base)
    side = sh(["commit-tree", f"{base}^{{tree}}", "-p", base, "-m", "side"], system.ws_dir)
    sh(["tag", "v2026.11.9", side], system.ws_dir)  # newer, but not reachable from the base
    assert newest_reachable_release(ws, base) == ("v2026.10.1", base)
    # A release only on the remote (landed by another worker, never fetched here) counts too.
    sh(["push", "--quiet", "origin", "refs/tags/v2026.10.1"], system.ws_dir)
    sh(["tag", "-d", "v2026.10.1"], system.ws_dir)
    assert newest_reachable_release(ws, base) == ("v2026.10.1", base)


STAND_IN = """\
import json, os, sys
argv = sys.argv[1:]
code = int(os.environ["STAND_IN_EXIT"])
artifacts = argv[argv.index("--artifacts") + 1]
os.makedirs(artifacts, exist_ok=True)
failed = os.path.join(artifacts, "FAILED_008_manipulate.log")
open(failed, "w").write("counter-1: expected 42, read None\\n")
print("progress on stderr", file=sys.stderr)
if code == 1:
    print(json.dumps({"scenario": argv[2], "seed": int(argv[argv.index("--seed") + 1]),
                      "action_number": 8, "action": "Manipulate", "kind": "check",
                      "check": "CounterAcrossPhases", "phase": "2",
                      "error": "counter-1: expected 42, read None", "failed_log": failed}))
with open(os.path.join(os.environ["LOCKSTEP_WORKSPACE"], "argv.json"), "w") as fh:
    json.dump(argv, fh)
sys.exit(code)
"""


def _run_stand_in(system: System, tmp_path: Path, code: int, infra_exit_code: int = 3,
                  base: str | None = None) -> tuple[Outcome, list[str], list[str], Path]:
    """One run of an upgrade stage whose scenario command exits `code`: outcome, argv, log."""
    ws = system.workspace()
    script = tmp_path / "stand_in.py"
    script.write_text(STAND_IN)
    stage = config.Stage(name="upgrade", kind="upgrade", timeout=30,
                         infra_exit_code=infra_exit_code)
    workdir = tmp_path / f"run-{code}"
    workdir.mkdir()
    log = tmp_path / "logs" / f"upgrade.{code}.log"
    env = {"PATH": "/usr/bin:/bin", "STAND_IN_EXIT": str(code),
           "LOCKSTEP_WORKSPACE": str(workdir), "LOCKSTEP_BASE": base or ws.remote_head(),
           "LOCKSTEP_MANIFEST": str(workdir / "manifest.toml"), "LOCKSTEP_CONFIG": "default",
           "LOCKSTEP_CANDIDATE": CANDIDATE}
    result = run_upgrade(ws, stage, cwd=workdir, env=env, log=log, timeout=30,
                         program=[sys.executable, str(script)])
    argv = json.loads((workdir / "argv.json").read_text())
    return result.outcome, argv, log.read_text().splitlines(), log


def test_exit_75_is_infrastructure_whatever_infra_exit_code_says(system: System,
                                                                 tmp_path: Path) -> None:
    outcome, argv, _, _ = _run_stand_in(system, tmp_path, 75, infra_exit_code=3)
    assert outcome == Outcome.INFRA
    assert argv[:3] == ["scenario", "run", FIRST_RELEASE_SCENARIO]  # no release yet
    assert "--from" not in argv
    outcome, *_ = _run_stand_in(system, tmp_path, 3, infra_exit_code=3)
    assert outcome == Outcome.FAILED  # the stage's own infra code means nothing here


def test_exits_1_and_2_fail_with_a_log_tail_naming_the_failed_file(system: System,
                                                                   tmp_path: Path) -> None:
    base = system.workspace().remote_head()
    sh(["tag", "-a", "v2026.10.1", "-m", "r", base], system.ws_dir)
    outcome, argv, lines, log = _run_stand_in(system, tmp_path, 1)
    assert outcome == Outcome.FAILED
    assert argv[argv.index("--from") + 1] == "v2026.10.1"
    assert argv[argv.index("--seed") + 1] == str(stage_seed(CANDIDATE))
    failed = log.with_suffix(".scenarios") / "FAILED_008_manipulate.log"
    assert lines[-3:] == [
        f"lockstep: upgrade scenario zero-downtime-upgrade (seed {stage_seed(CANDIDATE)}) "
        "failed: check CounterAcrossPhases, phase 2, action 008 Manipulate",
        "lockstep:   error: counter-1: expected 42, read None",
        f"lockstep:   log: {failed}"]
    assert "progress on stderr" in lines and failed.is_file()
    outcome, _, lines, log = _run_stand_in(system, tmp_path, 2)
    assert outcome == Outcome.FAILED  # no JSON report: the FAILED_ files it left are named
    failed = log.with_suffix(".scenarios") / "FAILED_008_manipulate.log"
    assert lines[-1] == f"lockstep:   log: {failed}"
    outcome, _, _, log = _run_stand_in(system, tmp_path, 0)
    assert outcome == Outcome.PASSED and not log.with_suffix(".scenarios").exists()


# --- end to end, on the demo system -------------------------------------------------------------

def _demo(tmp_path: Path) -> Workspace:
    """The demo's repos (inventory with its service, the checks plugin, the upgrade stage)."""
    root = tmp_path / "demo"
    root.mkdir()
    return demo.build(root, lambda _line: None)


def _submit_and_run(ws: Workspace, *bumps: tuple[str, str, list[str]]) -> list[str]:
    store = ops.open_store(ws)
    ids = [ops.submit(ws, store, name, version, configs, 0).id for name, version, configs in bumps]
    Worker(ws, store).run(RunMode.UNTIL_EMPTY)
    return ids


def _item(ws: Workspace, item_id: str) -> dict[str, Any]:
    return ops.show(ws, ops.open_store(ws), int(item_id[1:]))


def _upgrade_log(shown: dict[str, Any]) -> str:
    """The log of the item's (last) upgrade stage run."""
    return Path([r for r in shown["runs"] if r["stage"] == "upgrade"][-1]["log"]).read_text()


def test_no_base_configuration_passes_with_an_event(tmp_path: Path) -> None:
    ws = _demo(tmp_path)
    root = ws.root
    sh(["tag", "-a", "v2026.10.1", "-m", "the first release, by hand"], root)
    sh(["push", "--quiet", "origin", "v2026.10.1"], root)
    manifest = (root / "manifest.toml").read_text()
    default = manifest[manifest.index("[configurations.default]"):
                       manifest.index("[configurations.edge]")]
    (root / "manifest.toml").write_text(manifest + "\n" + default.replace(
        "[configurations.default]", "[configurations.canary]"))
    cfg = (root / "lockstep.toml").read_text()
    (root / "lockstep.toml").write_text(cfg.replace(
        'kind = "upgrade"\ntimeout = 300\nconfigurations = ["default"]',
        'kind = "upgrade"\ntimeout = 300\nconfigurations = ["default", "canary"]'))
    sh(["commit", "--quiet", "-am", "add configuration canary"], root)
    sh(["push", "--quiet", "origin", "main"], root)
    ws = Workspace.open(root)
    [item] = _submit_and_run(ws, ("inventory", "v1.2.0", ["canary"]))
    shown = _item(ws, item)
    assert shown["state"] == "landed", shown
    assert [(r["stage"], r["state"]) for r in shown["runs"]] == [
        ("unit", "passed"), ("contract", "passed"), ("upgrade", "passed")]
    [event] = [e for e in shown["history"] if e["event"] == "no-base-configuration"]
    assert event["detail"] == {"stage": "upgrade", "configuration": "canary",
                               "release": "v2026.10.1"}
    assert "release v2026.10.1 has no configuration 'canary'" in _upgrade_log(shown)
    assert "scenario run" not in _upgrade_log(shown)  # nothing was started


def test_upgrade_stage_lands_good_versions_and_rejects_the_broken_migration(
        tmp_path: Path) -> None:
    ws = _demo(tmp_path)
    first, good, broken = _submit_and_run(ws, ("inventory", "v1.1.0", []),
                                          ("inventory", "v1.2.0", []),
                                          ("inventory", "v1.3.0", []))
    # Before the first release the stage runs zero-downtime-restart on the candidate alone.
    shown = _item(ws, first)
    assert shown["state"] == "landed", shown.get("rejection")
    assert "scenario zero-downtime-restart on the candidate alone" in _upgrade_log(shown)
    release = shown["landed"]["tag"]
    shown = _item(ws, good)
    assert shown["state"] == "landed", shown.get("rejection")
    assert f"scenario zero-downtime-upgrade from {release}, seed " in _upgrade_log(shown)
    tag = shown["landed"]["tag"]
    # The broken migration: rejected by the upgrade stage, its report at the end of the log.
    shown = _item(ws, broken)
    assert shown["state"] == "rejected", shown
    rejection = shown["rejection"]
    assert (rejection["kind"], rejection["stage"], rejection["configuration"],
            rejection["exit_code"]) == ("stage-failed", "upgrade", "default", 1)
    failed = _assert_report(rejection["log_tail"], "zero-downtime-upgrade")
    assert "not readable any more" in failed.read_text()
    # F20: the same candidate submitted again replays the same plan (same seed and inputs).
    [again] = _submit_and_run(ws, ("inventory", "v1.3.0", []))
    rerun = _item(ws, again)
    assert rerun["state"] == "rejected"
    assert rerun["candidate"]["tree"] == shown["candidate"]["tree"]
    refailed = _assert_report(rerun["rejection"]["log_tail"], "zero-downtime-upgrade")
    assert refailed != failed
    plans = [(f.parent / "plan.txt").read_text() for f in (failed, refailed)]
    assert plans[0] == plans[1]
    header = dict(line.split(" = ", 1) for line in plans[0].splitlines() if " = " in line)
    assert header["seed"] == str(stage_seed(shown["candidate"]["tree"]))
    assert header["base"] == tag


def _assert_report(tail: list[str], scenario: str) -> Path:
    """The tail's failure report names the scenario, check, phase, step and FAILED_ file,
    which exists and is the run's only one."""
    starts = [i for i, line in enumerate(tail)
              if line.startswith(f"lockstep: upgrade scenario {scenario} (seed ")]
    assert starts, tail
    head, error, log = tail[starts[-1]:starts[-1] + 3]
    assert any(f"check {c}, phase " in head for c in (
        "StockSurvivesUpgrade", "CounterAcrossPhases", "ReservedColumnMigration")), head
    assert ", action 0" in head and error.startswith("lockstep:   error: "), tail
    assert log.startswith("lockstep:   log: "), tail
    failed = Path(log.removeprefix("lockstep:   log: "))
    assert failed.name.startswith("FAILED_") and failed.is_file(), failed
    assert [p.name for p in failed.parent.glob("FAILED_*")] == [failed.name]
    return failed
