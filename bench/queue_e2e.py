"""Benchmark: the queue's serial, speculative and batch modes end to end on real git.

It builds one throwaway system: three component repos on local bare remotes (tags v1.0.0,
then v2.0.0, v2.0.1, ... as real annotated tags), an integration repo made by
`lockstep.scaffold.init` on a bare integration remote, and one stage, `check`, whose command is
this script (`queue_e2e.py stage RULES`): it sleeps S seconds and exits 1 when the candidate's
manifest pins a version RULES lists as bad. The system is copied once per mode; each copy
commits its own `[queue]` table, gets the same N submissions (round-robin over the components,
each component ascending; a seeded set of about 10 % of them bad) and is worked off by the real
`lockstep.queue.worker.Worker`, in this process, with `--until-empty`: stage processes, git
and the SQLite store are all real. The modes run one after the other on the same machine:

    serial                       one item at a time
    speculative  runners = P     (default P = 4)
    batch        runners = P     batch_size = 4, batch_max_wait = 0

For each mode it reports the makespan (first scheduling round to the last item's terminal
state), the items landed and rejected, the stage processes started, serial's makespan over the
mode's, and the model's figures for the same N, p (the bad fraction), P and T = S from
`lockstep.sim`: the expected makespan over random bad sets (the simulator's mean), §6's closed
form where one exists, and the makespan of a simulation of exactly these submissions (same bad
items, same components), also with each landing taking the mode's measured median landing
time. The time no stage ran, per landed item, is the per-landing overhead. It checks that the
three modes landed the same items and that serial and speculative tagged the same manifests, in
the same order.

    .venv/bin/python bench/queue_e2e.py [--items 24] [--stage-seconds 1.0] [--runners 4]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import shutil
import signal
import statistics
import sys
import time
import tomllib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from types import FrameType
from typing import TYPE_CHECKING, Any, NoReturn

from benchkit import (
    build_component,
    git_version,
    prepare,
    source_info,
    source_label,
    write_result,
)

if TYPE_CHECKING:
    from lockstep.queue.worker import WorkerReport

COMPONENTS = ("alpha", "beta", "gamma")
CONFIGURATION = "default"
STAGE = "check"
BASE_VERSION = "v1.0.0"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "queue_e2e.json"
MODES = ("serial", "speculative", "batch")


# --- the stage command -------------------------------------------------------------------------


def stage_main(rules_path: Path) -> int:
    """The `check` stage: note the start, sleep, fail on a bad pin, note the end (also when the
    worker kills it). RULES is JSON: {"sleep": S, "bad": [[component, version], ...],
    "log": path}; each start and end is one appended JSON line of that log."""
    start = time.time()
    rules = json.loads(rules_path.read_text(encoding="utf-8"))
    log = os.open(rules["log"], os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    def note(event: dict[str, Any]) -> None:
        os.write(log, (json.dumps({"pid": os.getpid(), **event}) + "\n").encode())

    def killed(signum: int, _frame: FrameType | None) -> NoReturn:
        note({"end": time.time(), "killed": True})
        os._exit(128 + signum)

    signal.signal(signal.SIGTERM, killed)
    note({"start": start, "item": os.environ.get("LOCKSTEP_ITEM"),
          "items": os.environ.get("LOCKSTEP_ITEMS", "").split()})
    manifest = tomllib.loads(Path(os.environ["LOCKSTEP_MANIFEST"]).read_text(encoding="utf-8"))
    pins = manifest["configurations"][os.environ["LOCKSTEP_CONFIG"]]
    bad = [f"{c} {v}" for c, v in rules["bad"] if pins.get(c, {}).get("version") == v]
    time.sleep(float(rules["sleep"]))
    code = 1 if bad else 0
    if bad:
        print(f"check: known bad pin {', '.join(bad)}")
    note({"end": time.time(), "exit": code})
    return code


# --- the system under test ---------------------------------------------------------------------


def version_name(k: int) -> str:
    """The k-th bump of a component: v2.0.0, v2.0.1, ..."""
    return f"v2.0.{k}"


def submissions(items: int) -> list[tuple[str, str]]:
    """(component, version) in submission order: round-robin, each component ascending."""
    return [(COMPONENTS[i % len(COMPONENTS)], version_name(i // len(COMPONENTS)))
            for i in range(items)]


def bad_indices(items: int, fraction: float, seed: int) -> list[int]:
    """The submissions that fail the stage: round(fraction · items) of them, drawn from `seed`
    (at least one when fraction > 0)."""
    count = max(1 if fraction > 0 else 0, round(fraction * items))
    return sorted(random.Random(f"queue_e2e/{seed}").sample(range(items), count))


def config_text(rules: Path, queue: dict[str, Any]) -> str:
    """lockstep.toml: three components, one stage running this script, the given [queue]."""
    def toml_value(value: Any) -> str:
        return json.dumps(value)  # strings and numbers: JSON's form is TOML's

    comps = "".join(
        f'[components.{name}]\nurl = "../remotes/{name}.git"\n'
        f'owners = ["team-{name}@example.com"]\n\n' for name in COMPONENTS)
    command = ", ".join(toml_value(a) for a in
                        (sys.executable, str(Path(__file__).resolve()), "stage", str(rules)))
    queue_lines = "".join(f"{key} = {toml_value(value)}\n" for key, value in queue.items())
    return (
        "# lockstep.toml of the queue end-to-end benchmark\n\n"
        '[integration]\nremote = "origin"\nbranch = "main"\nmanifest = "manifest.toml"\n\n'
        '[identity]\nname = "lockstep bench"\nemail = "bench@localhost"\n\n'
        f"[queue]\nretry_backoff = 0\nkill_grace = 2\n{queue_lines}\n"
        f"{comps}"
        f'[[stages]]\nname = "{STAGE}"\ncommand = [{command}]\ntimeout = 120\n'
    )


def build_base(root: Path, items: int) -> None:
    """Component remotes, the integration remote and its clone under root (serial config)."""
    from lockstep import git
    from lockstep.manifest import Pin, render_new
    from lockstep.scaffold import init

    remotes, sources = root / "remotes", root / "sources"
    bumps = {name: sum(1 for c, _ in submissions(items) if c == name) for name in COMPONENTS}
    pins = {name: Pin(BASE_VERSION, build_component(
        remotes, sources, name, [BASE_VERSION, *map(version_name, range(bumps[name]))]))
            for name in COMPONENTS}
    git.run(["init", "--quiet", "--bare", "--initial-branch=main",
             str(remotes / "integration.git")])
    init(root / "integration", remote_url=str(remotes / "integration.git"),
         config_text=config_text(root / "rules.json", {}),
         manifest_text=render_new({CONFIGURATION: pins}))


def mode_settings(mode: str, runners: int, batch_size: int) -> dict[str, Any]:
    """The [queue] keys of a mode (beyond the shared retry_backoff and kill_grace)."""
    if mode == "serial":
        return {}
    if mode == "speculative":
        return {"mode": mode, "runners": runners}
    return {"mode": mode, "runners": runners, "batch_size": batch_size, "batch_max_wait": 0}


def make_copy(base: Path, dest: Path, queue: dict[str, Any], sleep: float,
              bad: list[tuple[str, str]]) -> Path:
    """A copy of the base system with its own remote, rules and [queue] table (committed and
    pushed as a user would: one commit in every copy); returns its integration repo."""
    from lockstep import git

    shutil.copytree(base, dest, symlinks=True)
    integration = dest / "integration"
    git.run(["remote", "set-url", "origin", str(dest / "remotes" / "integration.git")],
            integration)
    rules = dest / "rules.json"
    rules.write_text(json.dumps({"sleep": sleep, "bad": bad, "log": str(dest / "stage.log")}),
                     encoding="utf-8")
    (integration / "lockstep.toml").write_text(config_text(rules, queue), encoding="utf-8")
    git.run(["commit", "--quiet", "-am", f"queue settings: {json.dumps(queue)}"], integration)
    git.run(["push", "--quiet", "origin", "HEAD:refs/heads/main"], integration)
    return integration


# --- running one mode --------------------------------------------------------------------------


@dataclass
class StageRun:
    """One stage process, as its own log lines tell it."""

    pid: int
    start: float
    end: float | None = None
    exit: int | None = None
    killed: bool = False

    @property
    def seconds(self) -> float:
        """Its wall time (0 if it never noted an end)."""
        return 0.0 if self.end is None else self.end - self.start


@dataclass
class ModeRun:
    """What one mode did on its copy of the system."""

    mode: str
    settings: dict[str, Any]
    ids: list[str]
    report: WorkerReport
    first_round: float
    queue_empty: float
    worker_wall: float
    stage_runs: list[StageRun]
    store_runs: int
    store_wasted: int | None
    tags: list[tuple[str, str]]
    final_manifest: str
    landings: list[float]
    load_before: tuple[float, float, float]
    load_after: tuple[float, float, float]
    warnings: list[str] = field(default_factory=list)

    @property
    def makespan(self) -> float:
        """First scheduling round to the last item's terminal state."""
        return self.queue_empty - self.first_round


class Instruments:
    """Notes when the worker's first scheduling round starts (serial `Worker.step`, pipeline
    `PipelineLoop.round`) and how long each landing takes (serial `Lander.land`, pipeline
    `CandidateLander._land`: journal, commit, tag, push, store), by wrapping those methods
    for the duration of the benchmark."""

    def __init__(self) -> None:
        self.first_round: float | None = None
        self.landings: list[float] = []

    def reset(self) -> None:
        """Forget what the previous mode's worker did."""
        self.first_round = None
        self.landings = []

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        """Wrap the round and landing methods; restore them afterwards."""
        from lockstep.queue.candidate_lander import CandidateLander
        from lockstep.queue.lander import Lander
        from lockstep.queue.pipeline_worker import PipelineLoop
        from lockstep.queue.worker import Worker

        rounds = ((Worker, "step"), (PipelineLoop, "round"))
        landings = ((Lander, "land"), (CandidateLander, "_land"))
        saved = [(cls, name, getattr(cls, name)) for cls, name in (*rounds, *landings)]
        for cls, name, real in saved:
            wrap = self._first if (cls, name) in rounds else self._timed
            setattr(cls, name, wrap(real))
        try:
            yield
        finally:
            for cls, name, real in saved:
                setattr(cls, name, real)

    def _first(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def first(obj: Any, *args: Any, **kwargs: Any) -> Any:
            if self.first_round is None:
                self.first_round = time.time()
            return real(obj, *args, **kwargs)
        return first

    def _timed(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def timed(obj: Any, *args: Any, **kwargs: Any) -> Any:
            start = time.perf_counter()
            try:
                return real(obj, *args, **kwargs)
            finally:
                self.landings.append(time.perf_counter() - start)
        return timed


def read_stage_log(path: Path) -> list[StageRun]:
    """The stage processes a copy ran, in start order."""
    runs: dict[int, StageRun] = {}
    if not path.exists():
        return []
    for line in path.read_text(encoding="utf-8").splitlines():
        event = json.loads(line)
        if "start" in event:
            runs[event["pid"]] = StageRun(event["pid"], event["start"])
        else:
            run = runs[event["pid"]]
            run.end, run.exit, run.killed = event["end"], event.get("exit"), event.get(
                "killed", False)
    return sorted(runs.values(), key=lambda r: r.start)


def tag_manifests(remote: Path) -> list[tuple[str, str]]:
    """(the tag's items, its manifest.toml blob) per tag on the remote, in landing order."""
    from lockstep import git

    order = git.out(["rev-list", "--reverse", "refs/heads/main"], remote).splitlines()
    refs = git.out(["for-each-ref", "--format=%(refname:short) %(*objectname)", "refs/tags"],
                   remote)
    found = []
    for line in refs.splitlines():
        name, commit = line.split(" ")
        message = git.out(["cat-file", "-p", name], remote)
        listed = message.split("Items:\n", 1)[-1].split("\n\n", 1)[0]
        items = " ".join(row.split()[0] for row in listed.splitlines() if row.strip())
        blob = git.out(["rev-parse", f"{commit}:manifest.toml"], remote)
        found.append((order.index(commit), items, blob))
    return [(items, blob) for _, items, blob in sorted(found)]


def run_mode(mode: str, integration: Path, stage_log: Path, settings: dict[str, Any],
             bumps: list[tuple[str, str]], tools: Instruments) -> ModeRun:
    """Submit the bumps in order, then work the queue off with an in-process Worker."""
    from sqlalchemy import func, select

    from lockstep import git
    from lockstep.queue import operations as ops
    from lockstep.queue import schema as s
    from lockstep.queue.model import State
    from lockstep.queue.worker import RunMode, Worker
    from lockstep.workspace import Workspace

    ws = Workspace.open(integration)
    store = ops.open_store(ws)
    ids = []
    for component, version in bumps:
        item = ops.submit(ws, store, component, version, [], 0)
        if item.state != State.QUEUED:
            raise SystemExit(f"{item.id} {component} {version} was not queued: {item.state}")
        ids.append(item.id)
    warnings: list[str] = []
    worker = Worker(ws, store, warn=warnings.append)
    load_before = os.getloadavg()
    tools.reset()
    called = time.time()
    report = worker.run(RunMode.UNTIL_EMPTY)
    returned = time.time()
    load_after = os.getloadavg()
    with store.read() as c:
        items = store.items(c, include_terminal=True)
        serial_runs = c.execute(select(func.count()).select_from(s.runs)).scalar_one()
        pipeline_runs = c.execute(
            select(func.count(), func.sum(s.pipeline_runs.c.wasted))).one()
    store.close()
    left = [i.id for i in items if not i.state.terminal]
    if left:
        raise SystemExit(f"{mode}: the worker stopped with items waiting: {', '.join(left)}")
    remote = ws.root.parent / "remotes" / "integration.git"
    return ModeRun(
        mode=mode, settings=settings, ids=ids, report=report,
        first_round=tools.first_round if tools.first_round is not None else called,
        queue_empty=max(i.updated_at for i in items), worker_wall=returned - called,
        stage_runs=read_stage_log(stage_log),
        store_runs=int(serial_runs) + int(pipeline_runs[0]),
        store_wasted=None if mode == "serial" else int(pipeline_runs[1] or 0),
        tags=tag_manifests(remote),
        final_manifest=git.out(["rev-parse", "refs/heads/main:manifest.toml"], remote),
        landings=list(tools.landings), load_before=load_before, load_after=load_after,
        warnings=warnings)


# --- the model ---------------------------------------------------------------------------------


def model(mode: str, items: int, bad: list[int], runners: int, seconds: float,
          batch_size: int, reps: int, seed: int, landing_s: float) -> dict[str, Any]:
    """The simulator's figures for this mode at the same N, p, P and T (P = 1 in serial mode,
    which runs one run at a time): the expected makespan over `reps` random bad sets, §6's
    closed form and lower bound, and one simulation of exactly these submissions (same bad items
    and components; fixed durations, so deterministic)."""
    from lockstep.queue.model import State
    from lockstep.queue.pipeline import ItemSnap, Mode
    from lockstep.sim import Distribution, SimParams, SimStage, simulate
    from lockstep.sim.bounds import bound, closed_form_per_item
    from lockstep.sim.engine import Simulation

    p = len(bad) / items
    params = SimParams(n=items, p=p, stages=(SimStage(STAGE, Distribution("fixed", seconds)),),
                       runners=1 if mode == "serial" else runners, mode=Mode(mode),
                       batch_size=batch_size, batch_max_wait=0.0, reps=reps, seed=seed)
    params.validate()
    row = simulate(params)
    closed = closed_form_per_item(params)
    bound_makespan, bound_runs = bound(params)
    snaps = [ItemSnap(f"q{k + 1}", k + 1, 0, State.QUEUED, component, (CONFIGURATION,))
             for k, (component, _) in enumerate(submissions(items))]
    failing = {s.id: frozenset({0} if k in bad else ()) for k, s in enumerate(snaps)}
    exact = Simulation(params, snaps, failing, random.Random(seed)).run()
    landing = Simulation(replace(params, landing_s=landing_s), snaps, failing,
                         random.Random(seed)).run()
    return {
        "p": round(p, 6), "reps": reps,
        "expected_makespan_s": round(row.makespan.mean, 3),
        "expected_makespan_se_s": round(row.makespan.se, 3),
        "expected_runs": round(row.runs.mean, 2),
        "closed_form_makespan_s": None if closed is None else round(closed * items * seconds, 3),
        "bound_makespan_s": round(bound_makespan, 3), "bound_runs": round(bound_runs, 2),
        "exact_makespan_s": round(exact.makespan, 3), "exact_runs": exact.runs,
        "exact_wasted_runs": exact.wasted, "exact_landed": len(exact.landed),
        "exact_rejected": len(exact.rejected), "exact_tags": exact.tags,
        "landing_s": round(landing_s, 3),
        "exact_with_landing_makespan_s": round(landing.makespan, 3),
    }


# --- reporting ---------------------------------------------------------------------------------


def busy_seconds(runs: list[StageRun]) -> float:
    """The wall time during which at least one stage process was running (union of runs)."""
    total, reach = 0.0, float("-inf")
    for run in sorted((r for r in runs if r.end is not None), key=lambda r: r.start):
        assert run.end is not None
        if run.end > reach:
            total += run.end - max(run.start, reach)
            reach = run.end
    return total


def mode_doc(run: ModeRun, serial: ModeRun, runners: int, figures: dict[str, Any]
             ) -> dict[str, Any]:
    """One mode's block of the JSON document."""
    landed = len(run.report.landed)
    runner_s = sum(r.seconds for r in run.stage_runs)
    busy = busy_seconds(run.stage_runs)
    slots = 1 if run.mode == "serial" else runners
    expected, exact = figures["expected_makespan_s"], figures["exact_makespan_s"]
    return {
        "settings": run.settings,
        "makespan_s": round(run.makespan, 3),
        "worker_wall_s": round(run.worker_wall, 3),
        "speedup_vs_serial": round(serial.makespan / run.makespan, 3),
        "landed": landed, "rejected": len(run.report.rejected),
        "skipped": len(run.report.skipped), "tags": len(run.tags),
        "stage_runs": len(run.stage_runs),
        "stage_runs_failed": sum(1 for r in run.stage_runs if r.exit == 1),
        "stage_runs_killed": sum(1 for r in run.stage_runs if r.killed),
        "store_runs": run.store_runs, "store_wasted_runs": run.store_wasted,
        "landings": len(run.landings),
        "landing_median_s": round(statistics.median(run.landings), 3) if run.landings else None,
        "landing_max_s": round(max(run.landings), 3) if run.landings else None,
        "stage_runner_s": round(runner_s, 3),
        "stage_busy_s": round(busy, 3),
        "runner_utilisation": round(runner_s / (slots * run.makespan), 3),
        "overhead_per_landing_s": round((run.makespan - busy) / landed, 3) if landed else None,
        "overhead_vs_model_per_landing_s": round((run.makespan - exact) / landed, 3)
        if landed else None,
        "model": figures,
        "makespan_over_expected": round(run.makespan / expected, 3),
        "makespan_over_exact": round(run.makespan / exact, 3),
        "makespan_over_exact_with_landing":
            round(run.makespan / figures["exact_with_landing_makespan_s"], 3),
        "loadavg_before": [round(v, 2) for v in run.load_before],
        "loadavg_after": [round(v, 2) for v in run.load_after],
        "landed_items": run.report.landed, "rejected_items": run.report.rejected,
        "warnings": run.warnings,
    }


def checks(runs: dict[str, ModeRun]) -> dict[str, bool]:
    """Serial equivalence on real git: the same items landed (and rejected) in every mode, the
    same order and tag manifests in serial and speculative mode, the same final manifest."""
    serial = runs["serial"]
    return {
        "same_landed_items": len({frozenset(r.report.landed) for r in runs.values()}) == 1,
        "same_rejected_items": len({frozenset(r.report.rejected) for r in runs.values()}) == 1,
        "serial_speculative_same_landing_order":
            serial.report.landed == runs["speculative"].report.landed,
        "serial_speculative_same_tag_manifests": serial.tags == runs["speculative"].tags,
        "same_final_manifest": len({r.final_manifest for r in runs.values()}) == 1,
    }


def print_table(doc: dict[str, Any]) -> None:
    """A short human summary on stdout."""
    p = doc["params"]
    print(f"\nqueue end to end on real git: lockstep {doc['lockstep']} at "
          f"{source_label(doc['source'])}; N = {p['items']}, {len(doc['bad_items'])} bad "
          f"(p = {p['p']:.3f}), T = S = {p['stage_seconds']:g} s, P = {p['runners']}, "
          f"batch_size {p['batch_size']}; load {doc['machine']['loadavg_start']} on "
          f"{doc['machine']['cpus']} cpus")
    columns = (("mode", 11), ("makespan", 9), ("×serial", 8), ("landed", 6), ("rej", 4),
               ("runs", 5), ("model E", 8), ("±SE", 5), ("exact", 7), ("+landing", 9),
               ("real/E", 7), ("ovh/land", 9), ("vs exact/land", 13))
    print(" ".join(f"{name:>{width}}" for name, width in columns))
    for mode, m in doc["modes"].items():
        f = m["model"]
        cells = (mode, f"{m['makespan_s']:.2f}s", f"{m['speedup_vs_serial']:.2f}×", m["landed"],
                 m["rejected"], m["stage_runs"], f"{f['expected_makespan_s']:.2f}s",
                 f"{f['expected_makespan_se_s']:.2f}", f"{f['exact_makespan_s']:.2f}s",
                 f"{f['exact_with_landing_makespan_s']:.2f}s", f"{m['makespan_over_expected']:.2f}",
                 f"{m['overhead_per_landing_s']:.3f}s",
                 f"{m['overhead_vs_model_per_landing_s']:.3f}s")
        print(" ".join(f"{cell:>{width}}" for cell, (_, width) in zip(cells, columns, strict=True)))
    print("  +landing: the exact model with each landing taking the median measured landing "
          "time (" + ", ".join(f"{mode} {m['model']['landing_s']:.3f} s"
                               for mode, m in doc["modes"].items()) + ")")
    for name, ok in doc["checks"].items():
        print(f"  {name}: {'yes' if ok else 'NO'}")


class OneLineParser(argparse.ArgumentParser):
    """argparse, but bad input is one line on stderr (what is wrong, how to fix it), exit 2."""

    def error(self, message: str) -> NoReturn:
        """Print `queue_e2e.py: error: ...; see --help` and exit 2."""
        self.exit(2, f"{self.prog}: error: {message}; see --help\n")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    """The command line, checked."""
    parser = OneLineParser(prog="queue_e2e.py",
                           description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=24, help="submissions N (default 24)")
    parser.add_argument("--stage-seconds", type=float, default=1.0,
                        help="seconds the stage sleeps, T = S (default 1.0)")
    parser.add_argument("--runners", type=int, default=4,
                        help="runners P of the parallel modes (default 4)")
    parser.add_argument("--batch-size", type=int, default=4, help="batch mode (default 4)")
    parser.add_argument("--bad-fraction", type=float, default=0.1,
                        help="share of bad submissions (default 0.1)")
    parser.add_argument("--seed", type=int, default=1, help="picks the bad ones (default 1)")
    parser.add_argument("--sim-reps", type=int, default=1000,
                        help="simulator repetitions for the expected makespan (default 1000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    parser.add_argument("--keep", action="store_true", help="keep the temporary systems")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build them")
    args = parser.parse_args(argv)
    problems = [
        (args.items >= 3, "--items must be at least 3 (one bump per component)"),
        (0 < args.stage_seconds <= 60, "--stage-seconds must be above 0 and at most 60"),
        (1 <= args.runners <= 64, "--runners must be from 1 to 64"),
        (1 <= args.batch_size <= 1024, "--batch-size must be from 1 to 1024"),
        (0 <= args.bad_fraction < 1, "--bad-fraction must be from 0 to below 1"),
        (args.sim_reps >= 1, "--sim-reps must be at least 1"),
    ]
    for ok, message in problems:
        if not ok:
            parser.error(message)
    return args


def main(argv: list[str] | None = None) -> int:
    """Run the three modes on copies of one system; exit 1 if a serial-equivalence check
    fails (the JSON is written either way, the checks in it)."""
    argv = sys.argv[1:] if argv is None else argv
    if argv[:1] == ["stage"] and len(argv) == 2:
        return stage_main(Path(argv[1]))
    args = parse_args(argv)
    os.environ.pop("LOCKSTEP_STORE_URL", None)  # every copy keeps its own SQLite store
    work = prepare("lockstep-e2e-", args.tmp, ROOT)
    started = time.time()
    load_start = os.getloadavg()
    bumps = submissions(args.items)
    bad = bad_indices(args.items, args.bad_fraction, args.seed)
    bad_pins = [bumps[k] for k in bad]
    runs: dict[str, ModeRun] = {}
    tools = Instruments()
    try:
        build_base(work / "base", args.items)
        with tools.installed():
            for mode in MODES:
                settings = mode_settings(mode, args.runners, args.batch_size)
                integration = make_copy(work / "base", work / mode, settings,
                                        args.stage_seconds, bad_pins)
                print(f"{mode}: running {args.items} items ...", flush=True)
                runs[mode] = run_mode(mode, integration, work / mode / "stage.log", settings,
                                      bumps, tools)
                print(f"{mode}: {runs[mode].makespan:.2f} s, {runs[mode].report.summary()}",
                      flush=True)
    finally:
        if args.keep:
            print(f"systems kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    import lockstep

    figures = {mode: model(mode, args.items, bad, args.runners, args.stage_seconds,
                           args.batch_size, args.sim_reps, args.seed,
                           statistics.median(runs[mode].landings or [0.0])) for mode in MODES}
    result = checks(runs)
    doc = {
        "benchmark": "queue_e2e",
        "lockstep": lockstep.__version__,
        "source": source_info(),
        "params": {"items": args.items, "components": list(COMPONENTS),
                   "stage_seconds": args.stage_seconds, "runners": args.runners,
                   "batch_size": args.batch_size, "batch_max_wait": 0,
                   "bad_fraction": args.bad_fraction, "p": len(bad) / args.items,
                   "seed": args.seed, "sim_reps": args.sim_reps,
                   "worker": "lockstep.queue.worker.Worker in this process, --until-empty",
                   "store": "SQLite, one per copy"},
        "bad_items": [{"item": runs["serial"].ids[k], "component": bumps[k][0],
                       "version": bumps[k][1]} for k in bad],
        "modes": {mode: mode_doc(run, runs["serial"], args.runners, figures[mode])
                  for mode, run in runs.items()},
        "checks": result,
        "tags": {mode: [items for items, _ in run.tags] for mode, run in runs.items()},
        "definitions": {
            "makespan_s": "from the start of the worker's first scheduling round to the last "
                          "item's terminal state (its updated_at in the store)",
            "worker_wall_s": "Worker.run(--until-empty) called to returned (preflight and the "
                             "final checkout sync included)",
            "stage_runs": "stage processes started (each notes its start and end in a log); "
                          "killed = ended by the worker (candidate discarded)",
            "stage_busy_s": "wall time during which at least one stage process ran",
            "overhead_per_landing_s": "(makespan - stage_busy_s) / landed: the time no stage "
                                      "was running, per landed item (in serial mode: makespan "
                                      "minus the runs' stage time); the stage interpreter's "
                                      "start-up counts as overhead",
            "overhead_vs_model_per_landing_s": "(makespan - model.exact_makespan_s) / landed: "
                                               "what real git, processes and the store add to "
                                               "the simulator's zero-cost world",
            "runner_utilisation": "sum of stage process seconds / (runner slots x makespan)",
            "model.expected_makespan_s": "lockstep.sim mean over sim_reps random bad sets at "
                                         "the same N, p, P, T (items all of distinct "
                                         "components, landing in 0 s)",
            "model.exact_makespan_s": "lockstep.sim's engine on exactly these submissions: the "
                                      "same bad items and components (a batch closes on a "
                                      "second bump of a component), landing in 0 s",
            "model.closed_form_makespan_s": "spec §6's closed form times N·T, where one exists",
            "model.exact_with_landing_makespan_s": "exact_makespan_s's simulation with every "
                                                   "landing taking landing_s, the median of the "
                                                   "mode's measured landings",
            "landing_median_s": "one landing (journal, commit, tag, push, store), timed around "
                                "Lander.land (serial) or CandidateLander._land (per candidate)",
        },
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform(), "git": git_version(),
                    "loadavg_start": [round(v, 2) for v in load_start],
                    "loadavg_end": [round(v, 2) for v in os.getloadavg()]},
        "wall_s": round(time.time() - started, 1),
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print_table(doc)
    write_result(args.out, doc)
    return 0 if all(result.values()) else 1


if __name__ == "__main__":
    sys.exit(main())
