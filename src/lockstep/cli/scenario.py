"""`lockstep scenario list|plan|run` (spec upgrade-scenarios §7–§9): plan a scenario against the
integration repo's releases and a target manifest, print and write the plan before anything
runs, then run it through the local driver, in one run or one run per check.

Each command imports the scenario modules inside its body, so that `lockstep --help` stays fast.
"""

from __future__ import annotations

import dataclasses
import json
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from lockstep.cli.common import JsonOpt, WorkspaceOpt, info, print_json

if TYPE_CHECKING:
    from lockstep.scenarios import Plan, PlanOptions, Releases, Scenario, ScenarioSettings
    from lockstep.scenarios.check import Check
    from lockstep.scenarios.plugin import Plugin
    from lockstep.scenarios.report import FailureReport
    from lockstep.scenarios.resolve import IntegrationRepo, Target

app = typer.Typer(help="Upgrade scenarios: checks that must survive restarts, upgrades and "
                       "promotions.", no_args_is_help=True)

EXIT_INFRASTRUCTURE = 75
MODES = ("together", "one-at-a-time")
ARTIFACTS = Path(".lockstep") / "scenarios"  # under the workspace, unless --artifacts

NameArg = Annotated[str, typer.Argument(help="The scenario (see `lockstep scenario list`).",
                                        show_default=False)]
FromOpt = Annotated[str | None, typer.Option(
    "--from", help="The oldest release of the path (scenarios whose base is a release).",
    show_default=False)]
PathOpt = Annotated[str | None, typer.Option(
    "--path", help="random-upgrade-path only: the releases V1,… of the path, ascending.",
    show_default=False)]
ToOpt = Annotated[str | None, typer.Option(
    "--to", help="The target: a manifest file or a release tag (default: the work tree's "
                 "manifest).", show_default=False)]
ConfigOpt = Annotated[str | None, typer.Option(
    "--config", help="The manifest configuration started for every version [default: default].",
    show_default=False)]
SeedOpt = Annotated[str | None, typer.Option(
    "--seed", help="0 <= N < 2^63; drawn from the OS when absent.", show_default=False)]
CheckOpt = Annotated[list[str] | None, typer.Option(
    "--check", help="Select this check (repeatable); default: every check of the plugin.",
    show_default=False)]
ShardOpt = Annotated[str | None, typer.Option(
    "--shard", help="I/N: the 0-based shard I of N of the checks sorted by name.",
    show_default=False)]
ModeOpt = Annotated[str | None, typer.Option(
    "--mode", help="together (all checks in one run) or one-at-a-time (a run per check) "
                   "[default: together].", show_default=False)]
PrereleaseOpt = Annotated[bool, typer.Option(
    "--include-prereleases", help="Let prerelease tags be base versions.")]


@dataclass(frozen=True)
class Select:
    """The SELECT options as given on the command line (spec §9)."""

    from_version: str | None = None
    path: str | None = None
    to: str | None = None
    config: str | None = None
    seed: str | None = None
    checks: tuple[str, ...] = ()
    shard: str | None = None
    mode: str | None = None
    include_prereleases: bool = False

    def replay_conflicts(self) -> list[str]:
        """The options a `--plan` replay takes from the plan, where they were given."""
        given = [("--seed", self.seed), ("--from", self.from_version), ("--path", self.path),
                 ("--check", self.checks or None), ("--shard", self.shard),
                 ("--mode", self.mode), ("--config", self.config)]
        return [flag for flag, value in given if value is not None]


@dataclass
class Prepared:
    """A scenario planned against the integration repo, nothing written or started yet."""

    repo: IntegrationRepo
    target: Target
    releases: Releases
    plugin: Plugin
    checks: list[type[Check]]
    settings: ScenarioSettings
    options: PlanOptions
    configuration: str
    scenario: Scenario
    plan: Plan

    @property
    def mode(self) -> str:
        """`together` unless `--mode one-at-a-time` (given or replayed)."""
        return self.options.mode or "together"

    def rebuild(self, options: PlanOptions) -> tuple[Scenario, Plan]:
        """The same scenario with other options (one check of a one-at-a-time run)."""
        from lockstep.scenarios import build_plan, scenario_class

        scenario = scenario_class(self.scenario.name)(
            self.checks, None, self.scenario.seed, releases=self.releases, options=options,
            settings=self.settings)
        return scenario, build_plan(scenario, self.target.manifest_sha256)


# --- commands ---------------------------------------------------------------------------------


@app.command("list")
def list_(json_out: JsonOpt = False, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """List the built-in scenarios: name, base and purpose (`-C` is accepted, as by every
    command, and not needed)."""
    from lockstep.scenarios import SCENARIOS

    rows = [{"name": name, "base": cls.base, "purpose": cls.purpose}
            for name, cls in SCENARIOS.items()]
    if json_out:
        print_json(rows)
        return
    width = max(len(r["name"]) for r in rows)
    for r in rows:
        sys.stdout.write(f"{r['name']:<{width}}  {r['base']:<8}  {r['purpose']}\n")


@app.command("plan")
def plan(name: NameArg, from_version: FromOpt = None, path: PathOpt = None, to: ToOpt = None,
         config: ConfigOpt = None, seed: SeedOpt = None, check: CheckOpt = None,
         shard: ShardOpt = None, mode: ModeOpt = None,
         include_prereleases: PrereleaseOpt = False, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Print the scenario's plan and write plan.txt and plan.json; start nothing."""
    select = Select(from_version, path, to, config, seed, tuple(check or ()), shard, mode,
                    include_prereleases)
    prepared = prepare(name, select, ws_dir, None)
    try:
        show_plan(prepared.plan, json_mode=False)
        run_dir = new_run_dir(prepared.repo.root / ARTIFACTS, prepared.plan)
        write_plan(run_dir, prepared.plan)
        info(f"plan written to {run_dir}")
    finally:
        prepared.repo.close()


@app.command("run")
def run(name: NameArg, from_version: FromOpt = None, path: PathOpt = None, to: ToOpt = None,
        config: ConfigOpt = None, seed: SeedOpt = None, check: CheckOpt = None,
        shard: ShardOpt = None, mode: ModeOpt = None, include_prereleases: PrereleaseOpt = False,
        parallel: Annotated[bool, typer.Option(
            "--parallel", help="Run the checks' steps of one phase action in threads.")] = False,
        plan_file: Annotated[Path | None, typer.Option(
            "--plan", help="Replay a saved plan.json exactly (excludes --seed, --from, --path, "
                           "--check, --shard, --mode and --config).", show_default=False)] = None,
        dry_run: Annotated[bool, typer.Option(
            "--dry-run", help="Print and write the plan; start nothing.")] = False,
        keep_state: Annotated[bool, typer.Option(
            "--keep-state", help="Keep the run's shared state after teardown.")] = False,
        artifacts: Annotated[Path | None, typer.Option(
            "--artifacts", help="Where runs write their plans and logs "
                                "[default: <workspace>/.lockstep/scenarios].",
            show_default=False)] = None,
        json_out: JsonOpt = False, ws_dir: WorkspaceOpt = Path(".")) -> None:
    """Run a scenario: print and write its plan, then run every action (exit 0 passed, 1
    failed, 2 bad input, 75 infrastructure)."""
    select = Select(from_version, path, to, config, seed, tuple(check or ()), shard, mode,
                    include_prereleases)
    prepared = prepare(name, select, ws_dir, plan_file)
    try:
        if not dry_run and no_base_configuration(prepared, json_out):
            return
        show_plan(prepared.plan, json_mode=json_out)
        root = artifacts if artifacts is not None else prepared.repo.root / ARTIFACTS
        run_dir = new_run_dir(root, prepared.plan)
        write_plan(run_dir, prepared.plan)
        info(f"plan written to {run_dir}")
        if dry_run:
            if json_out:
                print_json({"result": "planned", "scenario": prepared.plan.scenario,
                            "seed": prepared.plan.seed, "run_dir": str(run_dir)})
            return
        replay = replay_command(prepared, select, ws_dir, parallel=parallel)
        code = execute(prepared, run_dir, replay, parallel=parallel, keep_state=keep_state,
                       json_out=json_out)
    finally:
        prepared.repo.close()
    if code:
        raise typer.Exit(code)


# --- planning ---------------------------------------------------------------------------------


def prepare(name: str, select: Select, ws_dir: Path, plan_file: Path | None) -> Prepared:
    """Validate the options, resolve the versions and build the plan (nothing is written)."""
    from lockstep import names
    from lockstep.errors import NotFoundError, UsageError
    from lockstep.manifest import DEFAULT_CONFIGURATION
    from lockstep.scenarios import build_plan, read_replay, scenario_class
    from lockstep.scenarios.plan import replay_releases_args
    from lockstep.scenarios.plugin import load_plugin
    from lockstep.scenarios.resolve import IntegrationRepo
    from lockstep.scenarios.versions import Releases, TagFormat

    cls = scenario_class(name)
    replay = None
    recorded: dict[str, Any] = {}
    if plan_file is not None:
        conflicts = select.replay_conflicts()
        if conflicts:
            raise UsageError(f"--plan excludes {', '.join(conflicts)}",
                             "the plan fixes them: drop them, or drop --plan")
        recorded = read_plan_json(plan_file)
        replay = read_replay(recorded)
        if replay.scenario != name:
            raise UsageError(f"{plan_file} is a plan of {replay.scenario}, not {name}",
                             f"run `lockstep scenario run {replay.scenario} --plan {plan_file}`")
        options, seed = replay.options, replay.seed
    else:
        options, seed = plan_options(select), parse_seed(select.seed)
    configuration = names.configuration_name(options.config or DEFAULT_CONFIGURATION)
    repo = IntegrationRepo(ws_dir)
    try:
        fmt = TagFormat(repo.tag_format)
        for version in ([options.from_version] if options.from_version else []) + list(
                options.path or ()):
            fmt.version(version, "--path version" if options.path else "--from version")
        plugin = load_plugin((replay.settings if replay else repo.settings).plugin, repo.root)
        checks = list(plugin.checks)
        if replay is not None:
            known = {c.name(): c for c in checks}
            missing = [c for c in replay.checks if c not in known]
            if missing:
                raise NotFoundError(f"the plan names check {', '.join(missing)}, which the "
                                    f"plugin does not have", "replay with the plugin the plan "
                                    "was made with")
            checks = [known[c] for c in replay.checks]
            settings = replay.settings
        else:
            settings = repo.settings
        repo.fetch_tags()
        target = repo.target(select.to, version=replay.target_version if replay else None)
        if replay is not None:
            check_replay_target(target, replay.manifest_sha256, replay.target_version)
            releases = Releases(**replay_releases_args(replay, repo.tag_format))
        else:
            releases = repo.releases(target.version, settings=settings,
                                     include_prereleases=select.include_prereleases,
                                     warn=lambda text: info(f"warning: {text}"))
        if configuration not in target.manifest.configurations:
            raise NotFoundError(f"the target manifest has no configuration {configuration!r}",
                                f"configurations: {', '.join(target.manifest.configurations)}")
        if seed is None:
            seed = draw_seed()
        scenario = cls(checks, None, seed, releases=releases, options=options, settings=settings)
        built = build_plan(scenario, target.manifest_sha256)
        if replay is not None:
            check_replay_plan(built, recorded)
        return Prepared(repo, target, releases, plugin, checks, settings, options, configuration,
                        scenario, built)
    except BaseException:
        repo.close()
        raise


def plan_options(select: Select) -> PlanOptions:
    """The PlanOptions of the command line: shard and mode checked, `--path` split, and the
    exclusions of spec §5 (`--from` with `--path`)."""
    from lockstep.errors import UsageError
    from lockstep.scenarios import PlanOptions, Shard

    if select.from_version is not None and select.path is not None:
        raise UsageError("--path and --from exclude each other", "give only one")
    path = None
    if select.path is not None:
        path = tuple(p.strip() for p in select.path.split(","))
        if not all(path):
            raise UsageError(f"invalid --path {select.path!r}",
                             "give release tags separated by commas, e.g. "
                             "--path v2026.08.2,v2026.10.1")
    if select.mode is not None and select.mode not in MODES:
        raise UsageError(f"invalid --mode {select.mode!r}", f"use {' or '.join(MODES)}")
    shard = Shard.parse(select.shard) if select.shard is not None else None
    return PlanOptions(from_version=select.from_version, path=path, checks=select.checks,
                       shard=shard, mode=select.mode, config=select.config)


def parse_seed(text: str | None) -> int | None:
    """`--seed N` with 0 <= N < 2^63, or None when absent."""
    from lockstep.errors import UsageError
    from lockstep.scenarios.scenario import check_seed

    if text is None:
        return None
    try:
        value = int(text.strip(), 10)
    except ValueError:
        raise UsageError(f"invalid seed {text!r}", "give an integer with 0 <= seed < 2^63"
                         ) from None
    return check_seed(value)


def draw_seed() -> int:
    """A seed from the OS's randomness, used exactly as a given one (spec §7)."""
    import secrets

    from lockstep.scenarios.scenario import MAX_SEED

    return secrets.randbelow(MAX_SEED)


def read_plan_json(path: Path) -> dict[str, Any]:
    """A saved plan.json; unreadable or not a JSON object is exit 2."""
    from lockstep.errors import UsageError

    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"cannot read the plan {path}: {exc}",
                         "pass a plan.json written by `lockstep scenario plan` or `run`") from None
    if not isinstance(data, dict):
        raise UsageError(f"{path} is not a scenario plan.json",
                         "pass a plan.json written by `lockstep scenario plan` or `run`")
    return data


def check_replay_target(target: Target, digest: str, version: str) -> None:
    """Spec §7: `--to` must resolve to the recorded manifest digest (and, naming a tag, to the
    recorded version)."""
    from lockstep.errors import UsageError

    if target.manifest_sha256 != digest:
        raise UsageError(f"the target manifest's digest {target.manifest_sha256[:12]} is not "
                         f"the plan's {digest[:12]}",
                         "pass --to with the manifest file or tag the plan was made for")
    if target.tag is not None and target.tag != version:
        raise UsageError(f"--to {target.tag} is not the plan's target version {version}",
                         f"pass --to {version}, or the manifest file the plan was made for")


def check_replay_plan(plan: Plan, recorded: dict[str, Any]) -> None:
    """The rebuilt plan must be the recorded one, action for action."""
    from lockstep.errors import UsageError

    lines = [a.get("line") for a in recorded.get("actions") or [] if isinstance(a, dict)]
    if plan.action_lines() != lines or plan.digest != (recorded.get("inputs") or {}).get(
            "digest"):
        raise UsageError("replaying the plan gives other actions than it records",
                         "the checks' can_run or the scenario changed since; plan again")


def no_base_configuration(prepared: Prepared, json_out: bool) -> bool:
    """Spec §9: a release the plan starts whose manifest lacks the configuration means there
    is nothing to upgrade from: report `no-base-configuration` and pass."""
    from lockstep.scenarios import Start

    versions = sorted({e.action.version for e in prepared.plan.entries
                       if isinstance(e.action, Start) and e.action.version is not None})
    for version in versions:
        if prepared.configuration not in prepared.repo.configurations(version, prepared.target):
            line = (f"no-base-configuration: release {version} has no configuration "
                    f"{prepared.configuration!r}; nothing to upgrade from")
            if json_out:
                print_json({"result": "no-base-configuration", "event": "no-base-configuration",
                            "scenario": prepared.plan.scenario, "seed": prepared.plan.seed,
                            "release": version, "config": prepared.configuration})
                info(line)
            else:
                sys.stdout.write(line + "\n")
            return True
    return False


# --- writing and running ----------------------------------------------------------------------


def show_plan(plan: Plan, *, json_mode: bool) -> None:
    """The seed first, then the plan (on stderr under --json, so stdout stays JSON)."""
    info(f"seed = {plan.seed}")
    if json_mode:
        sys.stderr.write(plan.text())
        sys.stderr.flush()
    else:
        sys.stdout.write(plan.text())
        sys.stdout.flush()


def new_run_dir(artifacts: Path, plan: Plan) -> Path:
    """`<artifacts>/<scenario>/<seed>/<run>/`, `<run>` the first free 001, 002, … (spec §8);
    an artifacts directory that cannot be written is an infrastructure failure (exit 75)."""
    from lockstep.scenarios.report import new_run_dir as make

    return make(artifacts, plan.scenario, plan.seed).resolve()


def write_plan(run_dir: Path, plan: Plan) -> None:
    """plan.txt and plan.json, before any action runs."""
    from lockstep.scenarios.report import RunLogs

    RunLogs(run_dir).write_plan(plan)


def replay_command(prepared: Prepared, select: Select, ws_dir: Path, *,
                   parallel: bool) -> list[str]:
    """The command line that replays a run: its plan.json (placed by the caller), the same
    target and workspace."""
    argv = ["lockstep", "scenario", "run", prepared.plan.scenario]
    if select.to is not None:
        target = prepared.target
        argv += ["--to", target.tag or str(target.path)]
    if parallel:
        argv.append("--parallel")
    return [*argv, "-C", str(ws_dir.resolve())]


def execute(prepared: Prepared, run_dir: Path, replay: list[str], *, parallel: bool,
            keep_state: bool, json_out: bool) -> int:
    """Run the plan (one run, or one run per check in `<run>/<check>/`); the exit code."""
    if prepared.mode == "one-at-a-time":
        return execute_each(prepared, run_dir, replay, parallel=parallel, keep_state=keep_state,
                            json_out=json_out)
    report = run_once(prepared, prepared.scenario, prepared.plan, run_dir,
                      [*replay, "--plan", str(run_dir / "plan.json")], parallel=parallel,
                      keep_state=keep_state)
    if report is None:
        passed(prepared, run_dir, json_out)
        return 0
    failed([report], prepared, run_dir, json_out)
    return exit_code([report])


def execute_each(prepared: Prepared, run_dir: Path, replay: list[str], *, parallel: bool,
                 keep_state: bool, json_out: bool) -> int:
    """One-at-a-time mode: each selected check in its own run with fresh state and the same
    seed; every check runs even after one failed."""
    reports: list[FailureReport] = []
    for name in prepared.plan.checks:
        scenario, sub_plan = prepared.rebuild(dataclasses.replace(prepared.options,
                                                                  checks=(name,)))
        sub_dir = run_dir / name
        try:
            sub_dir.mkdir()
        except OSError as exc:
            from lockstep.scenarios.errors import InfrastructureError

            raise InfrastructureError(f"cannot create {sub_dir}: {exc.strerror}",
                                      "pass --artifacts DIR naming a writable directory"
                                      ) from None
        write_plan(sub_dir, sub_plan)
        info(f"check {name}: running in {sub_dir}")
        report = run_once(prepared, scenario, sub_plan, sub_dir,
                          [*replay, "--plan", str(sub_dir / "plan.json")], parallel=parallel,
                          keep_state=keep_state)
        if report is not None:
            reports.append(report)
            info(f"check {name}: FAILED ({report.failed_log})")
            if report.kind == "infrastructure":
                break
        else:
            info(f"check {name}: passed")
    if not reports:
        passed(prepared, run_dir, json_out)
        return 0
    failed(reports, prepared, run_dir, json_out)
    return exit_code(reports)


def run_once(prepared: Prepared, scenario: Scenario, plan: Plan, run_dir: Path,
             replay: list[str], *, parallel: bool, keep_state: bool) -> FailureReport | None:
    """One run of `plan` in `run_dir` through the local driver; its failure report or None."""
    from lockstep.scenarios.report import run_scenario
    from lockstep.scenarios.resolve import IntegrationCatalog
    from lockstep.scenarios.runtime import LocalExecutor

    root = prepared.repo.root
    catalog = IntegrationCatalog(prepared.target,
                                 prepared.repo.release_source(root / ".lockstep" / "rollouts"),
                                 prepared.configuration)
    executor = LocalExecutor(workspace=root, run_dir=run_dir, catalog=catalog,
                             plugin=prepared.plugin, settings=prepared.settings,
                             parallel=parallel, keep_state=keep_state, log=info)
    scenario.executor = executor
    return run_scenario(scenario, plan, executor, replay)


def exit_code(reports: list[FailureReport]) -> int:
    """75 when a run failed for an infrastructure cause, else 1."""
    return EXIT_INFRASTRUCTURE if any(r.kind == "infrastructure" for r in reports) else 1


def passed(prepared: Prepared, run_dir: Path, json_out: bool) -> None:
    """The success line, or the success object under --json."""
    from lockstep.scenarios.report import run_warnings

    plan = prepared.plan
    warnings = run_warnings(run_dir)
    if json_out:
        print_json({"result": "passed", "scenario": plan.scenario, "seed": plan.seed,
                    "mode": prepared.mode, "checks": list(plan.checks), "run_dir": str(run_dir),
                    "warnings": warnings})
    else:
        sys.stdout.write(f"passed: {plan.scenario} seed {plan.seed} ({run_dir})"
                         f"{''.join(f'; warning: {w}' for w in warnings)}\n")


def failed(reports: list[FailureReport], prepared: Prepared, run_dir: Path,
           json_out: bool) -> None:
    """The failure report(s): readable lines, or the FailureReport's JSON under --json (a list
    of them, one per failed check run, in one-at-a-time mode)."""
    if json_out:
        if prepared.mode == "one-at-a-time":
            print_json({"result": "failed", "scenario": prepared.plan.scenario,
                        "seed": prepared.plan.seed, "mode": prepared.mode,
                        "run_dir": str(run_dir), "failures": [r.to_json() for r in reports]})
        else:
            print_json(reports[0].to_json())
        return
    for r in reports:
        sys.stdout.write(r.render())
