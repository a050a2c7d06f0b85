"""`lockstep scenario list|plan|run` end to end (spec upgrade-scenarios §5, §7–§9): a real
integration repo with release tags on a real remote (tests/release_system.py), an OCI layout
registry holding the pinned artifacts, the CLI run as a user runs it, and, for runs, real
processes through the rollout's local driver.

F7 (base versions from real tags, one missing an artifact), F10 through the CLI, F11, replay
with `--plan`, every bad input, exit 75 for an unreachable registry, and F21."""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest

from lockstep import git
from lockstep.demo_artifacts import ArtifactHook, build_artifact
from lockstep.manifest import Pin
from lockstep.scenarios import SCENARIOS
from lockstep.scenarios.resolve import IntegrationRepo
from tests.release_system import FILES, TRANSFORM, ReleaseSystem
from tests.system import isolated_git
from tests.test_rollout_release import DEPLOY, land, system
from tests.test_rollout_release import FILES as SERVICE_FILES

pytestmark = pytest.mark.slow

TARGET = "v2026.11.2"
OK_TAGS = ("v2026.08.1", "v2026.08.2", "v2026.09.1", "v2026.10.1", "v2026.10.2-rc.1")
BROKEN = "v2026.09.4"  # pins a console digest the registry does not hold
MISSING_DIGEST = "sha256:" + "0" * 64


def tag(s: ReleaseSystem, *names: str) -> None:
    """Tag the integration repo's HEAD with each name (annotated) and push the tags."""
    for name in names:
        git.run(["tag", "-a", name, "-m", name], s.ws_dir)
    git.run(["push", "--quiet", "origin", *(f"refs/tags/{n}" for n in names)], s.ws_dir)


def with_releases(tmp: Path, extra_config: str = "") -> ReleaseSystem:
    """Spec §5's example as real tags: every component's v1.0.0 built into the layout registry
    and pinned by digest; v2026.09.4 pins a console digest the registry lacks. The target tag
    v2026.11.2 names the same commit as the complete releases, and so does the work tree."""
    s = ReleaseSystem.create(tmp, files=SERVICE_FILES, component_settings=DEPLOY,
                             extra_config=extra_config)
    digests = {n: build_artifact(s.remotes[n], "v1.0.0", "v1.0.0", ArtifactHook(
        f"demo/{n}", s.layout, tag_transform=TRANSFORM[n], delay=0.0)).digest for n in FILES}
    good = {n: Pin("v1.0.0", s.sources[n], digests[n]) for n in FILES}
    land(s, None, {**good, "console": Pin("v1.0.0", s.sources["console"], MISSING_DIGEST)})
    tag(s, BROKEN)
    land(s, None, good)
    tag(s, *OK_TAGS, TARGET)
    return s


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ReleaseSystem]:
    """One release history shared by the tests that only plan (each writes its own run dir)."""
    with isolated_git(tmp_path_factory):
        yield with_releases(tmp_path_factory.mktemp("released"))


def run_dirs(root: Path) -> list[Path]:
    """Every run directory under an artifacts root, sorted."""
    return sorted(p.parent for p in root.glob("*/*/*/plan.txt"))


def one_line_error(proc: subprocess.CompletedProcess[str]) -> str:
    """The single `error: …` line of a bad-input exit, checked to be exactly that."""
    assert proc.returncode == 2, (proc.returncode, proc.stdout, proc.stderr)
    lines = proc.stderr.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
    assert proc.stdout == ""
    return lines[0]


# --- list -------------------------------------------------------------------------------------


def test_list_names_every_scenario_with_its_base_and_purpose(tmp_path: Path) -> None:
    s = system(tmp_path)
    proc = s.cli("scenario", "list", check=True)
    lines = proc.stdout.splitlines()
    assert len(lines) == len(SCENARIOS)
    for line, (name, cls) in zip(lines, SCENARIOS.items(), strict=True):
        assert line.split()[:2] == [name, cls.base] and line.endswith(cls.purpose)
    rows = json.loads(s.cli("scenario", "list", "--json", check=True).stdout)
    assert [r["name"] for r in rows] == list(SCENARIOS)
    assert all(r["purpose"] for r in rows)


# --- F7: base versions from real tags -----------------------------------------------------------


def test_f7_minor_versions_from_real_tags_skip_the_one_missing_an_artifact(
        released: ReleaseSystem) -> None:
    repo = IntegrationRepo(released.ws_dir)
    repo.fetch_tags()
    target = repo.target(TARGET)
    assert target.tag == TARGET and target.version == TARGET
    releases = repo.releases(target.version)
    assert releases.minor_versions == ("v2026.10.1", "v2026.09.1", "v2026.08.2")
    assert not repo.has_artifacts(BROKEN) and repo.has_artifacts("v2026.09.1")
    assert releases.input_lines() == [
        f"target {TARGET}", "tag v2026.08.1 ok", "tag v2026.08.2 ok", "tag v2026.09.1 ok",
        f"tag {BROKEN} missing", "tag v2026.10.1 ok"]

    proc = released.cli("scenario", "plan", "upgrade-via-previous", "--to", TARGET,
                        "--seed", "7", check=True)
    assert "base = v2026.09.1\n" in proc.stdout
    assert "001 Start version=v2026.09.1\n" in proc.stdout
    assert "Start version=v2026.10.1\n" in proc.stdout
    assert proc.stderr.splitlines()[0] == "seed = 7"


def test_a_tag_on_the_remote_only_is_fetched(released: ReleaseSystem, tmp_path: Path) -> None:
    """The tags come from the integration remote: a clone without them still sees them."""
    clone = tmp_path / "clone"
    git.run(["clone", "--quiet", "--no-tags", str(released.root / "remotes/integration.git"),
             str(clone)])
    assert git.rev_parse(clone, "refs/tags/v2026.10.1") is None
    (clone / "registry").symlink_to(released.layout)  # the layout registry is the same one
    repo = IntegrationRepo(clone)
    repo.fetch_tags()
    assert repo.releases(TARGET).minor_versions[0] == "v2026.10.1"


# --- F11, F10, replay -------------------------------------------------------------------------


def test_f11_plan_and_dry_run_print_and_write_the_plan_and_start_nothing(
        released: ReleaseSystem, tmp_path: Path) -> None:
    ws = released.ws_dir
    before = run_dirs(ws / ".lockstep/scenarios")
    proc = released.cli("scenario", "plan", "zero-downtime-upgrade", "--to", TARGET, "--seed",
                        "11", check=True)
    (run_dir,) = sorted(set(run_dirs(ws / ".lockstep/scenarios")) - set(before))
    assert run_dir.parent == ws / ".lockstep/scenarios/zero-downtime-upgrade/11"
    assert proc.stdout == (run_dir / "plan.txt").read_text()
    assert proc.stdout.startswith("scenario = zero-downtime-upgrade\nseed = 11\n")
    data = json.loads((run_dir / "plan.json").read_text())
    assert data["target"]["version"] == TARGET and data["base"] == "v2026.10.1"

    artifacts = tmp_path / "artifacts"
    proc = released.cli("scenario", "run", "zero-downtime-upgrade", "--to", TARGET, "--seed",
                        "11", "--dry-run", "--artifacts", str(artifacts), check=True)
    (dry,) = run_dirs(artifacts)
    assert dry == artifacts / "zero-downtime-upgrade/11/001"
    assert sorted(p.name for p in dry.iterdir()) == ["plan.json", "plan.txt"]
    assert (dry / "plan.txt").read_text() == (run_dir / "plan.txt").read_text() == proc.stdout
    assert not (ws / ".lockstep/rollouts").exists()  # no process was ever started

    proc = released.cli("scenario", "run", "zero-downtime-upgrade", "--to", TARGET, "--seed",
                        "11", "--dry-run", "--json", "--artifacts", str(artifacts), check=True)
    out = json.loads(proc.stdout)
    assert out["result"] == "planned" and out["run_dir"] == str(artifacts /
                                                                "zero-downtime-upgrade/11/002")
    assert "001 Start instance=a version=v2026.10.1" in proc.stderr


def test_f10_the_same_seed_gives_a_byte_identical_plan_through_the_cli(
        released: ReleaseSystem, tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    for _ in range(2):
        released.cli("scenario", "run", "random-upgrade-path", "--to", TARGET, "--seed",
                     "12345", "--dry-run", "--artifacts", str(artifacts), check=True)
    first, second = run_dirs(artifacts)
    assert (first.name, second.name) == ("001", "002")
    assert (first / "plan.txt").read_bytes() == (second / "plan.txt").read_bytes()
    assert (first / "plan.json").read_bytes() == (second / "plan.json").read_bytes()
    other = released.cli("scenario", "plan", "random-upgrade-path", "--to", TARGET, "--seed",
                         "2", check=True).stdout
    assert other != (first / "plan.txt").read_text()


def test_an_absent_seed_is_drawn_printed_first_and_recorded(released: ReleaseSystem,
                                                            tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    proc = released.cli("scenario", "run", "no-restart", "--to", TARGET, "--dry-run",
                        "--artifacts", str(artifacts), check=True)
    first = proc.stderr.splitlines()[0]
    assert first.startswith("seed = ")
    seed = int(first.removeprefix("seed = "))
    assert 0 <= seed < 2**63
    (run_dir,) = run_dirs(artifacts)
    assert run_dir.parent.name == str(seed)
    assert json.loads((run_dir / "plan.json").read_text())["seed"] == seed


def test_replay_gives_the_same_plan_whatever_the_tags_are_now(released: ReleaseSystem,
                                                              tmp_path: Path) -> None:
    artifacts = tmp_path / "artifacts"
    released.cli("scenario", "run", "random-upgrade-path", "--to", TARGET, "--seed", "3",
                 "--dry-run", "--artifacts", str(artifacts), check=True)
    (original,) = run_dirs(artifacts)
    saved = tmp_path / "saved.json"
    saved.write_bytes((original / "plan.json").read_bytes())
    # A newer release in a series of the path changes what a fresh plan would use.
    tag(released, "v2026.10.9")
    try:
        fresh = released.cli("scenario", "plan", "random-upgrade-path", "--to", TARGET,
                             "--seed", "3", check=True).stdout
        proc = released.cli("scenario", "run", "random-upgrade-path", "--plan", str(saved),
                            "--to", TARGET, "--dry-run", "--artifacts", str(artifacts),
                            check=True)
    finally:
        git.run(["tag", "-d", "v2026.10.9"], released.ws_dir)
        git.run(["push", "--quiet", "origin", ":refs/tags/v2026.10.9"], released.ws_dir)
    replayed = run_dirs(artifacts)[-1]
    assert replayed.name == "002"
    assert (replayed / "plan.txt").read_bytes() == (original / "plan.txt").read_bytes()
    assert proc.stdout == (original / "plan.txt").read_text()
    assert fresh.splitlines()[2] != proc.stdout.splitlines()[2]  # the new tag is an input


@pytest.mark.parametrize("option", [
    ["--seed", "3"], ["--from", "v2026.09.1"], ["--path", "v2026.09.1"], ["--check", "X"],
    ["--shard", "0/2"], ["--mode", "together"], ["--config", "default"]])
def test_replay_excludes_the_options_the_plan_fixes(released: ReleaseSystem, tmp_path: Path,
                                                    option: list[str]) -> None:
    saved = _saved_plan(released, tmp_path)
    artifacts = tmp_path / "replays"
    proc = released.cli("scenario", "run", "random-upgrade-path", "--plan", str(saved), "--to",
                        TARGET, *option, "--dry-run", "--artifacts", str(artifacts))
    assert option[0] in one_line_error(proc) and "--plan excludes" in proc.stderr
    assert not artifacts.exists()


def test_replay_requires_the_recorded_target_and_scenario(released: ReleaseSystem,
                                                          tmp_path: Path) -> None:
    saved = _saved_plan(released, tmp_path)
    artifacts = tmp_path / "replays"
    other = released.cli("scenario", "run", "random-upgrade-path", "--plan", str(saved),
                         "--to", BROKEN, "--dry-run", "--artifacts", str(artifacts))
    assert "digest" in one_line_error(other)
    default = released.cli("scenario", "run", "random-upgrade-path", "--plan", str(saved),
                           "--dry-run", "--artifacts", str(artifacts))
    # The work tree's manifest has the target's bytes, but its version would be another tag.
    assert default.returncode == 0, default.stderr
    wrong = released.cli("scenario", "run", "no-restart", "--plan", str(saved), "--to", TARGET,
                         "--dry-run", "--artifacts", str(artifacts))
    assert "is a plan of random-upgrade-path" in one_line_error(wrong)
    data = json.loads(saved.read_text())
    data["inputs"]["lines"][0] = "target v2026.11.3"
    saved.write_text(json.dumps(data))
    edited = released.cli("scenario", "run", "random-upgrade-path", "--plan", str(saved),
                          "--to", TARGET, "--dry-run", "--artifacts", str(artifacts))
    assert "do not match their digest" in one_line_error(edited)
    assert len(run_dirs(artifacts)) == 1


def _saved_plan(s: ReleaseSystem, tmp_path: Path) -> Path:
    artifacts = tmp_path / "saved"
    s.cli("scenario", "run", "random-upgrade-path", "--to", TARGET, "--seed", "3", "--dry-run",
          "--artifacts", str(artifacts), check=True)
    (run_dir,) = run_dirs(artifacts)
    return run_dir / "plan.json"


# --- bad input --------------------------------------------------------------------------------


BAD_INPUT = {
    "unknown scenario": (["run", "no-such-scenario"], "unknown scenario 'no-such-scenario'"),
    "unknown check": (["run", "no-restart", "--check", "Nope"], "unknown check Nope"),
    "malformed --from": (["run", "zero-downtime-upgrade", "--from", "banana"],
                         "malformed --from version 'banana'"),
    "malformed --path": (["run", "random-upgrade-path", "--seed", "1", "--path",
                          "v2026.09.1,x"], "malformed --path version 'x'"),
    "unknown --from": (["run", "zero-downtime-upgrade", "--from", "v2026.07.1"],
                       "no such release tag"),
    "--from newer than the target": (["run", "zero-downtime-upgrade", "--from", TARGET],
                                     "is not older than the target"),
    "--from on a T-based scenario": (["run", "no-restart", "--from", "v2026.09.1"],
                                     "takes no --from"),
    "--from and --path": (["run", "random-upgrade-path", "--seed", "1", "--from",
                           "v2026.09.1", "--path", "v2026.10.1"], "exclude each other"),
    "--path on a fixed scenario": (["run", "zero-downtime-upgrade", "--path", "v2026.09.1"],
                                   "--path applies only to random-upgrade-path"),
    "negative seed": (["run", "no-restart", "--seed", "-1"], "invalid seed"),
    "seed of 2^63": (["run", "no-restart", "--seed", str(2**63)], "invalid seed"),
    "seed not a number": (["run", "no-restart", "--seed", "twelve"], "invalid seed"),
    "shard out of range": (["run", "no-restart", "--shard", "2/2"], "invalid --shard"),
    "shard malformed": (["run", "no-restart", "--shard", "one"], "invalid --shard"),
    "unknown mode": (["run", "no-restart", "--mode", "sometimes"], "invalid --mode"),
    "unknown configuration": (["run", "no-restart", "--config", "nope"],
                              "no configuration 'nope'"),
    "unknown --to": (["run", "no-restart", "--to", "v2026.12.9"],
                     "no such manifest file or release tag"),
    "no release between": (["plan", "upgrade-via-previous", "--from", "v2026.11.1"],
                           "no release between v2026.11.1 and the target"),
    "plan file missing": (["run", "no-restart", "--plan", "/nonexistent/plan.json"],
                          "cannot read the plan"),
}


@pytest.mark.parametrize("case", BAD_INPUT)
def test_bad_input_is_one_line_exit_2_and_writes_nothing(released: ReleaseSystem,
                                                         tmp_path: Path, case: str) -> None:
    args, message = BAD_INPUT[case]
    artifacts = tmp_path / "artifacts"
    before = run_dirs(released.ws_dir / ".lockstep/scenarios")
    extra = ["--to", TARGET] if "--to" not in args and "--plan" not in args else []
    if args[0] == "run":
        extra += ["--artifacts", str(artifacts)]
    proc = released.cli("scenario", *args, *extra)
    assert message in one_line_error(proc)
    assert not artifacts.exists()
    assert run_dirs(released.ws_dir / ".lockstep/scenarios") == before
    assert not (released.ws_dir / ".lockstep/rollouts").exists()


def test_a_base_release_without_the_configuration_passes_with_no_base_configuration(
        tmp_path: Path) -> None:
    """The target adds configuration `ha`; the release it upgrades from has none: nothing to
    upgrade from, so the run passes with the event and writes nothing (spec §9). A manifest
    file's target is named after today, so its base is the newest complete release of an
    earlier month."""
    s = with_releases(tmp_path)
    text = (s.ws_dir / "manifest.toml").read_text()
    manifest = tmp_path / "candidate.toml"
    manifest.write_text(text + text.split("\n", 2)[-1].replace("configurations.default",
                                                               "configurations.ha"))
    proc = s.cli("scenario", "run", "zero-downtime-upgrade", "--to", str(manifest), "--config",
                 "ha", "--seed", "1", "--json", "--artifacts", str(tmp_path / "artifacts"))
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    month = datetime.now(UTC).strftime("%Y.%m")
    base = max((t for t in (*OK_TAGS, TARGET) if "-" not in t and t[1:8] < month),
               key=lambda t: tuple(int(n) for n in t[1:].split(".")))
    assert out["event"] == "no-base-configuration" and out["release"] == base
    assert not (tmp_path / "artifacts").exists()


def test_an_unreachable_registry_is_exit_75(tmp_path: Path) -> None:
    """A release whose frozen lockstep.toml puts console's image in a registry nobody serves
    (a closed loopback port): resolving the base versions cannot finish."""
    s = with_releases(tmp_path)
    land(s, None, {}, edit=lambda text: text.replace(
        'image = "registry.local/demo/console"', 'image = "127.0.0.1:9/demo/console"')
        + '\n[registries."127.0.0.1:9"]\nscheme = "http"\n')
    tag(s, "v2026.10.5")
    proc = s.cli("scenario", "plan", "upgrade-from-previous", "--to", TARGET, "--seed", "1")
    assert proc.returncode == 75, (proc.stdout, proc.stderr)
    assert "registry 127.0.0.1:9 is unreachable" in proc.stderr
    assert proc.stdout == ""


# --- runs through the local driver ------------------------------------------------------------

PLUGIN_CONFIG = '\n[scenarios]\nplugin = "scenario_checks"\nstep_timeout = 60\n'
PLUGIN = '''\
"""Checks over the console component (the inventory service): stock written in every phase
survives; FailsInPhase2 fails on purpose."""

import httpx

from lockstep.scenarios import Check, Step, StepContext


def url(ctx: StepContext, item: str) -> str:
    return ctx.endpoints["console"]["public"] + "/stock/" + item


def put(ctx: StepContext, item: str, count: int) -> None:
    ctx.eventually(lambda: httpx.put(url(ctx, item), content=str(count), timeout=5,
                                     trust_env=False).raise_for_status(), timeout=30,
                   interval=0.1)


def expect(ctx: StepContext, item: str, count: int) -> None:
    def read() -> None:
        got = httpx.get(url(ctx, item), timeout=5, trust_env=False).json()
        assert got["count"] == count, got
    ctx.eventually(read, timeout=30, interval=0.1)


class StockSurvives(Check):
    def initialize(self) -> Step:
        self.item = f"item-{self.rng.getrandbits(32):08x}"
        return lambda ctx: put(ctx, self.item, 1)

    def manipulate(self) -> list[Step]:
        return [lambda ctx: put(ctx, self.item + "-1", 2),
                lambda ctx: put(ctx, self.item + "-2", 3)]

    def validate(self) -> Step:
        def check(ctx: StepContext) -> None:
            for suffix, count in (("", 1), ("-1", 2), ("-2", 3)):
                expect(ctx, self.item + suffix, count)
        return check


class FailsInPhase2(Check):
    def manipulate(self) -> list[Step]:
        def fail(ctx: StepContext) -> None:
            raise AssertionError("phase 2 broke on purpose at " + str(ctx.current_version))
        return [lambda ctx: None, fail]

    def validate(self) -> Step:
        return lambda ctx: None
'''


def with_plugin(s: ReleaseSystem) -> ReleaseSystem:
    """The integration repo's checks plugin, importable from its root."""
    (s.ws_dir / "scenario_checks.py").write_text(PLUGIN)
    return s


def no_workload_left(s: ReleaseSystem) -> None:
    """Every process a run started is gone: no workload record remains."""
    assert not list((s.ws_dir / ".lockstep/rollouts").glob("*/workloads/*.json"))


def test_f7_end_to_end_upgrade_via_previous_skips_the_release_missing_an_artifact(
        tmp_path: Path) -> None:
    """upgrade-via-previous runs v2026.09.1 (not v2026.09.4, whose console artifact is
    missing), then v2026.10.1, then the target, all from their artifacts; the stock written in
    every phase survives."""
    s = with_plugin(with_releases(tmp_path, extra_config=PLUGIN_CONFIG))
    artifacts = tmp_path / "artifacts"
    proc = s.cli("scenario", "run", "upgrade-via-previous", "--to", TARGET, "--seed", "4",
                 "--check", "StockSurvives", "--json", "--artifacts", str(artifacts))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    out = json.loads(proc.stdout)
    assert out["result"] == "passed" and out["checks"] == ["StockSurvives"]
    run_dir = Path(out["run_dir"])
    assert run_dir == artifacts / "upgrade-via-previous/4/001"
    plan_text = (run_dir / "plan.txt").read_text()
    assert "001 Start version=v2026.09.1\n" in plan_text
    assert "Start version=v2026.10.1\n" in plan_text and BROKEN not in plan_text
    assert (run_dir / "001_start.log").is_file() and not list(run_dir.glob("FAILED_*"))
    no_workload_left(s)


def test_a_failing_check_exits_1_with_the_report_and_one_at_a_time_runs_every_check(
        tmp_path: Path) -> None:
    s = with_plugin(with_releases(tmp_path, extra_config=PLUGIN_CONFIG))
    artifacts = tmp_path / "artifacts"
    proc = s.cli("scenario", "run", "upgrade-from-previous", "--to", TARGET, "--seed", "5",
                 "--json", "--artifacts", str(artifacts))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    report = json.loads(proc.stdout)
    assert (report["kind"], report["check"], report["phase"], report["seed"]) == (
        "check", "FailsInPhase2", "2", 5)
    failed_log = Path(report["failed_log"])
    assert failed_log.name.startswith("FAILED_") and failed_log.parent == artifacts / (
        "upgrade-from-previous/5/001")
    assert "phase 2 broke on purpose" in failed_log.read_text()
    assert report["replay"].startswith("lockstep scenario run upgrade-from-previous --to "
                                       f"{TARGET} -C ")
    assert report["replay"].endswith(f"--plan {failed_log.parent / 'plan.json'}")
    no_workload_left(s)

    proc = s.cli("scenario", "run", "upgrade-from-previous", "--to", TARGET, "--seed", "5",
                 "--mode", "one-at-a-time", "--artifacts", str(artifacts))
    assert proc.returncode == 1, proc.stdout + proc.stderr
    run_dir = artifacts / "upgrade-from-previous/5/002"
    assert "--mode=one-at-a-time" in (run_dir / "plan.json").read_text()
    assert len(list((run_dir / "FailsInPhase2").glob("FAILED_*"))) == 1
    assert (run_dir / "StockSurvives/plan.txt").is_file()
    assert not list((run_dir / "StockSurvives").glob("FAILED_*"))
    assert "checks = StockSurvives\n" in (run_dir / "StockSurvives/plan.txt").read_text()
    assert "check StockSurvives: passed" in proc.stderr
    assert "FailsInPhase2" in proc.stdout and "phase 2" in proc.stdout
    no_workload_left(s)


def test_f21_zero_downtime_restart_in_a_repo_with_no_release_tag(tmp_path: Path) -> None:
    """No integration release exists: the target (the work tree's manifest, run from the
    components' commits) is promoted three times under writes, and keeps every one."""
    # Only console deploys: a promotion fences the stateful generation, which exits by itself.
    s = with_plugin(ReleaseSystem.create(
        tmp_path, files={"console": SERVICE_FILES["console"]},
        component_settings={"console": DEPLOY["console"]}, extra_config=PLUGIN_CONFIG))
    git.run(["tag", "-d", "v2026.11.1"], s.ws_dir)
    git.run(["push", "--quiet", "origin", ":refs/tags/v2026.11.1"], s.ws_dir)
    assert IntegrationRepo(s.ws_dir).tags() == []
    artifacts = tmp_path / "artifacts"
    proc = s.cli("scenario", "run", "zero-downtime-restart", "--seed", "21", "--check",
                 "StockSurvives", "--artifacts", str(artifacts))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    run_dir = artifacts / "zero-downtime-restart/21/001"
    assert proc.stdout.startswith((run_dir / "plan.txt").read_text())
    assert "passed: zero-downtime-restart seed 21" in proc.stdout
    assert len(list(run_dir.glob("*_promote.log"))) == 3
    no_workload_left(s)
