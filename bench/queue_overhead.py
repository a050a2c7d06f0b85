"""Benchmark: the time lockstep's serial queue adds per landed item, beyond the stage itself.

It builds a throwaway system in a temporary directory: three component repos on local bare
remotes (tags v1.0.0, v1.0.1, ...), an integration repo made by `lockstep.scaffold.init` with
one configuration and one stage whose command is `true`, and a bare integration remote. It
submits N bumps, then drives an in-process `Worker` with `step()`, timing every step.

A landed item takes two steps (test, then land). Per item:

    overhead = test step + land step - the stage command's own time

where the stage command's own time is the exclusive wall time of `run_command` (fork, exec,
wait for `true`, reap), measured by wrapping it. Everything else (fetches, the candidate tree,
workspace preparation, commit, tag, push, store bookkeeping) is lockstep's overhead. The
figure the store's run rows give (step time minus `ended_at - started_at` of the item's runs)
is reported too; it is lower, because a run row's window also covers workspace preparation.

While stepping it accounts every `git` subprocess (by caller and subcommand), every store
transaction (write `tx()` and read-only `read()`) and the preparation of stage workspaces, so the
JSON says where the time goes. After each landing it also lands by hand, in the same loop, the
floor: a commit, an annotated tag and one atomic push to a local bare remote, made with git's
own commands; the overhead is reported as a multiple of that floor.
`--profile` runs the whole thing under cProfile instead and prints the top functions (the
timings of such a run are inflated; do not use them as the result).

    .venv/bin/python bench/queue_overhead.py [--items 50] [--out bench/results/queue_overhead.json]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import math
import os
import platform
import pstats
import shutil
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import (
    build_component,
    git_version,
    prepare,
    source_info,
    source_label,
    write_result,
)

TARGET_MS = 150.0
COMPONENTS = ("alpha", "beta", "gamma")
CONFIGURATION = "default"
ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "queue_overhead.json"


# --- the system under test ---------------------------------------------------------------------


def versions_needed(items: int) -> dict[str, int]:
    """How many bumps each component gets when `items` are spread round-robin."""
    return {name: len(range(i, items, len(COMPONENTS))) for i, name in enumerate(COMPONENTS)}


def version_name(k: int) -> str:
    """The k-th version tag: v1.0.0, v1.0.1, ..."""
    return f"v1.0.{k}"


def config_text(remotes: Path, stages: int = 1) -> str:
    """lockstep.toml: three components, `stages` trivial stages, no retry backoff."""
    comps = "".join(
        f'[components.{name}]\nurl = "{remotes / f"{name}.git"}"\n'
        f'owners = ["team-{name}@example.com"]\n\n'
        for name in COMPONENTS
    )
    return (
        "# lockstep.toml of the queue-overhead benchmark\n\n"
        '[integration]\nremote = "origin"\nbranch = "main"\nmanifest = "manifest.toml"\n\n'
        '[identity]\nname = "lockstep bench"\nemail = "bench@localhost"\n\n'
        '[queue]\nmode = "serial"\nretry_backoff = 0\n\n'
        f"{comps}"
        + "".join(f'[[stages]]\nname = "noop{"" if i == 0 else i + 1}"\ncommand = ["true"]\n'
                  "timeout = 60\nretries = 0\n\n" for i in range(stages))
    )


def build_system(root: Path, items: int, stages: int = 1) -> Path:
    """Component remotes, the integration remote and the integration repo; returns the latter."""
    from lockstep import git
    from lockstep.manifest import Pin, render_new
    from lockstep.scaffold import init

    remotes = root / "remotes"
    sources = root / "sources"
    pins = {
        name: Pin(version_name(0), build_component(
            remotes, sources, name, [version_name(k) for k in range(bumps + 1)]))
        for name, bumps in versions_needed(items).items()
    }
    integration_remote = remotes / "integration.git"
    git.run(["init", "--quiet", "--bare", "--initial-branch=main", str(integration_remote)])
    integration = root / "integration"
    init(integration, remote_url=str(integration_remote), config_text=config_text(remotes, stages),
         manifest_text=render_new({CONFIGURATION: pins}))
    return integration


def submissions(items: int) -> list[tuple[str, str]]:
    """(component, version) in submission order: round-robin, each component ascending."""
    return [(COMPONENTS[i % len(COMPONENTS)], version_name(i // len(COMPONENTS) + 1))
            for i in range(items)]


# --- accounting --------------------------------------------------------------------------------


@dataclass
class Call:
    """One git subprocess or store transaction made during a step (exclusive seconds)."""

    category: str
    label: str
    seconds: float


@dataclass
class StepRecord:
    """What one `worker.step()` cost and what it spent the time on (exclusive seconds)."""

    wall: float = 0.0
    exclusive: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    counts: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    calls: list[Call] = field(default_factory=list)

    def count(self, category: str) -> int:
        """How many calls of a category the step made."""
        return sum(1 for c in self.calls if c.category == category)


class Accountant:
    """Exclusive wall time per category, nested regions subtracted from their parents."""

    def __init__(self) -> None:
        self.current: StepRecord | None = None
        self._stack: list[list[Any]] = []
        self._thread = threading.get_ident()

    def active(self) -> bool:
        """Whether a step is being recorded and this is the stepping thread."""
        return self.current is not None and threading.get_ident() == self._thread

    @contextlib.contextmanager
    def region(self, category: str, label: str | None = None) -> Iterator[None]:
        """Time a region of the current step (no-op outside steps and off the main thread).

        With a label, the call is also listed, under its exclusive time.
        """
        record = self.current
        if record is None or threading.get_ident() != self._thread:
            yield
            return
        entry: list[Any] = [time.perf_counter(), 0.0]
        self._stack.append(entry)
        try:
            yield
        finally:
            self._stack.pop()
            elapsed = time.perf_counter() - entry[0]
            record.exclusive[category] += elapsed - entry[1]
            record.counts[category] += 1
            if label is not None:
                record.calls.append(Call(category, label, elapsed - entry[1]))
            if self._stack:
                self._stack[-1][1] += elapsed


def _git_subcommand(args: Sequence[str]) -> str:
    skip = False
    for arg in args:
        if skip:
            skip = False
        elif arg in ("-c", "-C"):
            skip = True
        elif not arg.startswith("-"):
            return arg
    return "?"


def _caller_chain(depth: int = 3) -> str:
    """The lockstep frames above the caller, outermost first: `worker._test_item > git.fetch`."""
    parts: list[str] = []
    frame = sys._getframe(2)
    while frame is not None and len(parts) < depth:
        module = str(frame.f_globals.get("__name__", ""))
        name = frame.f_code.co_name
        if module.startswith("lockstep") and not (
                module == "lockstep.git" and name in ("run", "out")):
            parts.append(f"{module.rsplit('.', 1)[-1]}.{name}")
        frame = frame.f_back  # type: ignore[assignment]
    return " > ".join(reversed(parts))


def instrument(acct: Accountant, store: Any) -> None:
    """Wrap git.run, the store's write and read transactions, run_command, the pid callback
    and extract_tree."""
    from lockstep import git, stages
    from lockstep.queue import stage_call as runner_mod

    for module, name in ((runner_mod, "run_command"), (stages, "extract_tree")):
        if not callable(getattr(module, name, None)):
            raise SystemExit(f"{module.__name__}.{name} is gone; update the benchmark")

    real_git_run = git.run

    def git_run(args: Sequence[str], *a: Any, **kw: Any) -> subprocess.CompletedProcess[bytes]:
        if not acct.active():
            return real_git_run(args, *a, **kw)
        with acct.region("git", f"{_caller_chain()}: git {_git_subcommand(args)}"):
            return real_git_run(args, *a, **kw)

    setattr(git, "run", git_run)  # noqa: B010 - monkeypatching on purpose

    def wrap(real: Callable[[], Any], category: str, kind: str) -> Callable[[], Any]:
        @contextlib.contextmanager
        def transaction() -> Iterator[Any]:
            label = f"{_caller_chain()}: {kind}" if acct.active() else None
            with acct.region(category, label), real() as c:
                yield c
        return transaction

    store.tx = wrap(store.tx, "store-write", "write transaction")
    store.read = wrap(store.read, "store-read", "read transaction")

    real_run_command = getattr(runner_mod, "run_command")  # noqa: B009

    def run_command(argv: list[str], **kw: Any) -> Any:
        on_start: Callable[[int], None] | None = kw.get("on_start")
        if on_start is not None:
            def record_pid(pid: int) -> None:
                with acct.region("pid-record"):
                    on_start(pid)
            kw["on_start"] = record_pid
        with acct.region("stage-command"):
            return real_run_command(argv, **kw)

    setattr(runner_mod, "run_command", run_command)  # noqa: B010

    real_extract = getattr(stages, "extract_tree")  # noqa: B009

    def extract_tree(repo: Path, treeish: str, dest: Path) -> None:
        with acct.region("extract-tree"):
            real_extract(repo, treeish, dest)

    setattr(stages, "extract_tree", extract_tree)  # noqa: B010


# --- the measurement ---------------------------------------------------------------------------


@dataclass
class ItemResult:
    """One item's two steps and its stage time."""

    seq: int
    component: str
    version: str
    state: str = ""
    test: StepRecord | None = None
    land: StepRecord | None = None
    store_stage: float = 0.0
    runs: int = 0
    extra_steps: list[str] = field(default_factory=list)

    @property
    def wall(self) -> float:
        return sum(s.wall for s in (self.test, self.land) if s is not None)

    @property
    def command(self) -> float:
        return sum(s.exclusive.get("stage-command", 0.0) for s in (self.test, self.land) if s)

    @property
    def overhead(self) -> float:
        return self.wall - self.command


class Floor:
    """The git work of one landing done by hand, with porcelain commands: edit the manifest,
    `git commit -a`, `git tag -a`, one `git push --atomic` of branch and tag to a local bare
    remote. What no tool can go below; lockstep's overhead is reported as a multiple of it."""

    def __init__(self, root: Path, manifest: str) -> None:
        self.remote = root / "floor.git"
        self.clone = root / "floor"
        self.manifest = manifest
        self.git("init", "--quiet", "--bare", "--initial-branch=main", str(self.remote), cwd=root)
        self.git("init", "--quiet", "--initial-branch=main", str(self.clone), cwd=root)
        self.git("remote", "add", "origin", str(self.remote))
        (self.clone / "manifest.toml").write_text(manifest, encoding="utf-8")
        self.git("add", "manifest.toml")
        self.git("commit", "--quiet", "-m", "initial manifest")
        self.git("push", "--quiet", "origin", "HEAD:refs/heads/main")
        self.times: list[float] = []

    def git(self, *args: str, cwd: Path | None = None) -> None:
        """One real git command (no lockstep code in between)."""
        subprocess.run(["git", *args], cwd=cwd or self.clone, check=True,
                       stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)

    def land(self, n: int) -> float:
        """Commit, tag and push item n by hand; returns and records the wall seconds."""
        start = time.perf_counter()
        (self.clone / "manifest.toml").write_text(f"{self.manifest}# bump {n}\n",
                                                  encoding="utf-8")
        tag = f"release-{n}"
        self.git("commit", "--quiet", "-a", "-m", f"Bump {n}")
        self.git("tag", "-a", tag, "-m", f"Integration release {tag}")
        self.git("push", "--quiet", "--atomic", "origin", "HEAD:refs/heads/main",
                 f"refs/tags/{tag}")
        elapsed = time.perf_counter() - start
        self.times.append(elapsed)
        return elapsed


def run_benchmark(items: int, work: Path, profile: cProfile.Profile | None,
                  stages: int = 1) -> tuple[list[ItemResult], list[float]]:
    """Build the system, submit the items, step the worker until the queue is empty; after
    each landing, do the floor's hand-made landing in the same loop."""
    from lockstep.queue import operations as ops
    from lockstep.queue.model import State
    from lockstep.queue.worker import Worker
    from lockstep.workspace import Workspace

    ws = Workspace.open(build_system(work, items, stages))
    store = ops.open_store(ws)
    results: dict[int, ItemResult] = {}
    for component, version in submissions(items):
        item = ops.submit(ws, store, component, version, [], 0)
        if item.state != State.QUEUED:
            raise SystemExit(f"{item.id} {component} {version} was not queued: {item.state}")
        results[item.seq] = ItemResult(item.seq, component, version)

    floor = Floor(work, (ws.root / ws.manifest_path).read_text(encoding="utf-8"))
    acct = Accountant()
    instrument(acct, store)
    worker = Worker(ws, store)

    def states() -> dict[int, State]:
        with store.tx() as c:
            return {i.seq: i.state for i in store.items(c, include_terminal=True)}

    before = states()
    for _ in range(4 * items + 10):
        record = StepRecord()
        acct.current = record
        if profile is not None:
            profile.enable()
        start = time.perf_counter()
        did = worker.step()
        record.wall = time.perf_counter() - start
        if profile is not None:
            profile.disable()
        acct.current = None
        if not did:
            break
        after = states()
        changed = [s for s in after if after[s] != before.get(s)]
        for seq in changed:
            res = results[seq]
            move = (before[seq], after[seq])
            if move == (State.QUEUED, State.PASSED) and res.test is None:
                res.test = record
            elif move == (State.PASSED, State.LANDED) and res.land is None:
                res.land = record
            else:
                res.extra_steps.append(f"{move[0].value}->{move[1].value}")
            if after[seq] == State.LANDED:
                floor.land(seq)
        before = after

    with store.tx() as c:
        for seq, res in results.items():
            res.state = store.item(c, seq).state.value
            runs = store.runs(c, seq)
            res.runs = len(runs)
            res.store_stage = sum((r["ended_at"] or 0) - (r["started_at"] or 0) for r in runs)
    store.close()
    return list(results.values()), floor.times


# --- reporting ---------------------------------------------------------------------------------


def ms(seconds: float) -> float:
    """Seconds → milliseconds, rounded for the report."""
    return round(seconds * 1000, 2)


def median(values: Sequence[float]) -> float:
    """The median (0 for no values)."""
    return statistics.median(values) if values else 0.0


def percentile(values: Sequence[float], p: float) -> float:
    """Linear-interpolated percentile, p in [0, 100]."""
    data = sorted(values)
    if not data:
        return 0.0
    pos = (len(data) - 1) * p / 100
    lo, hi = math.floor(pos), math.ceil(pos)
    return data[lo] + (data[hi] - data[lo]) * (pos - lo)


CATEGORIES = ("git", "store-write", "store-read", "extract-tree", "pid-record",
              "stage-command")


def step_breakdown(steps: list[StepRecord]) -> dict[str, float]:
    """Median exclusive ms per category over steps, plus the unaccounted Python time."""
    out: dict[str, float] = {"wall": ms(median([s.wall for s in steps]))}
    for cat in CATEGORIES:
        out[cat] = ms(median([s.exclusive.get(cat, 0.0) for s in steps]))
    out["other-python"] = ms(median([
        s.wall - sum(s.exclusive.get(c, 0.0) for c in CATEGORIES) for s in steps]))
    out["git_calls"] = median([s.count("git") for s in steps])
    out["store_write_transactions"] = median([s.count("store-write") for s in steps])
    out["store_read_transactions"] = median([s.count("store-read") for s in steps])
    return out


def call_table(landed: list[ItemResult], category: str) -> list[dict[str, Any]]:
    """Every call site of a category, per item: calls, median ms per call, total ms."""
    calls: dict[tuple[str, str], list[float]] = defaultdict(list)
    for res in landed:
        for phase, step in (("test", res.test), ("land", res.land)):
            assert step is not None
            for call in step.calls:
                if call.category == category:
                    calls[(phase, call.label)].append(call.seconds)
    n = len(landed) or 1
    rows = [
        {
            "phase": phase,
            "call": label,
            "calls_per_item": round(len(secs) / n, 2),
            "median_ms": ms(median(secs)),
            "ms_per_item": ms(sum(secs) / n),
        }
        for (phase, label), secs in calls.items()
    ]
    return sorted(rows, key=lambda r: -r["ms_per_item"])


def summarise(results: list[ItemResult], floor: list[float], items: int,
              settings: dict[str, Any] | None = None) -> dict[str, Any]:
    """The JSON document."""
    import lockstep

    landed = [r for r in results if r.test is not None and r.land is not None]
    overhead = [r.overhead for r in landed]
    tests = [r.test for r in landed if r.test is not None]
    lands = [r.land for r in landed if r.land is not None]
    third = max(1, len(landed) // 3)
    median_overhead = ms(median(overhead))

    def per_item(category: str) -> float:
        return round(sum(s.count(category) for s in [*tests, *lands]) / max(1, len(landed)), 2)

    floor_median = median(floor)
    floor_doc = {
        "what": "by hand per item, in the same loop: edit manifest.toml, git commit -a, "
                "git tag -a, git push --atomic (branch + tag) to a local bare remote",
        "samples": len(floor),
        "median_ms": ms(floor_median),
        "p90_ms": ms(percentile(floor, 90)),
        "overhead_x_floor": round(median(overhead) / floor_median, 2) if floor_median else None,
        "p90_overhead_x_floor": round(percentile(overhead, 90) / percentile(floor, 90), 2)
        if floor else None,
    }
    return {
        "benchmark": "queue_overhead",
        "lockstep": lockstep.__version__,
        "source": source_info(),
        "items": items,
        "settings": settings or {},
        "landed": len(landed),
        "median_overhead_ms": median_overhead,
        "p90_overhead_ms": ms(percentile(overhead, 90)),
        "mean_overhead_ms": ms(statistics.fmean(overhead)) if overhead else 0.0,
        "median_item_wall_ms": ms(median([r.wall for r in landed])),
        "median_stage_ms": ms(median([r.store_stage for r in landed])),
        "median_stage_command_ms": ms(median([r.command for r in landed])),
        "median_overhead_store_window_ms": ms(median([r.wall - r.store_stage for r in landed])),
        "median_test_step_ms": ms(median([s.wall for s in tests])),
        "median_land_step_ms": ms(median([s.wall for s in lands])),
        "median_overhead_first_third_ms": ms(median(overhead[:third])),
        "median_overhead_last_third_ms": ms(median(overhead[-third:])),
        "git_calls_per_item": per_item("git"),
        "store_write_transactions_per_item": per_item("store-write"),
        "store_read_transactions_per_item": per_item("store-read"),
        "floor": floor_doc,
        "target_ms": TARGET_MS,
        "meets_target": bool(landed) and median_overhead <= TARGET_MS,
        "definitions": {
            "overhead": "test step + land step wall time minus the stage command's own "
                        "time (exclusive wall time of run_command running `true`)",
            "median_stage_ms": "sum over the item's run rows of ended_at - started_at "
                               "(includes workspace preparation)",
            "median_overhead_store_window_ms": "item wall time minus median_stage_ms's "
                                               "per-item value (hides workspace preparation)",
            "breakdown_ms": "median exclusive ms per step: git = git subprocesses run through "
                            "lockstep.git.run; store-write = inside Store.tx() blocks (BEGIN "
                            "IMMEDIATE, SQL, commit and the Python work in the block); "
                            "store-read = inside Store.read() blocks (plain BEGIN); git calls "
                            "made inside a transaction count as git; extract-tree = stage "
                            "workspace preparation: `git archive` streamed into tar extraction "
                            "(its git process is not under git); pid-record = the on_start "
                            "callback",
            "floor": "the same git work done by hand with git porcelain (commit, annotated "
                     "tag, one atomic push), timed after each landing in the same loop; "
                     "overhead_x_floor = median overhead / median floor",
        },
        "breakdown_ms": {"test_step": step_breakdown(tests), "land_step": step_breakdown(lands)},
        "git_calls": call_table(landed, "git"),
        "store_transactions": sorted(call_table(landed, "store-write")
                                     + call_table(landed, "store-read"),
                                     key=lambda r: -r["ms_per_item"]),
        "per_item": [
            {"seq": r.seq, "component": r.component, "version": r.version, "state": r.state,
             "wall_ms": ms(r.wall), "overhead_ms": ms(r.overhead),
             "test_ms": ms(r.test.wall) if r.test else None,
             "land_ms": ms(r.land.wall) if r.land else None,
             "stage_store_ms": ms(r.store_stage), "stage_command_ms": ms(r.command),
             "runs": r.runs, "extra_steps": r.extra_steps}
            for r in results
        ],
        "machine": {
            "cpus": os.cpu_count(),
            "python": platform.python_version(),
            "platform": platform.platform(),
            "git": git_version(),
        },
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }


def print_table(doc: dict[str, Any], top: int = 12) -> None:
    """A short human summary on stdout."""
    def row(label: str, value: Any, unit: str = "ms") -> None:
        print(f"  {label:<42} {value:>10} {unit}")

    where = source_label(doc["source"])
    print(f"\nqueue overhead, {doc['landed']}/{doc['items']} items landed "
          f"(lockstep {doc['lockstep']} at {where}, {doc['machine']['git']})")
    row("overhead per item, median", doc["median_overhead_ms"])
    row("overhead per item, p90", doc["p90_overhead_ms"])
    row("overhead per item, mean", doc["mean_overhead_ms"])
    row("item wall time, median", doc["median_item_wall_ms"])
    row("  test step, median", doc["median_test_step_ms"])
    row("  land step, median", doc["median_land_step_ms"])
    row("stage run rows (store), median", doc["median_stage_ms"])
    row("stage command itself, median", doc["median_stage_command_ms"])
    row("overhead by the store's run rows, median", doc["median_overhead_store_window_ms"])
    row("overhead, first third / last third",
        f"{doc['median_overhead_first_third_ms']}/{doc['median_overhead_last_third_ms']}")
    verdict = "meets" if doc["meets_target"] else "MISSES"
    print(f"  target {doc['target_ms']:g} ms: {verdict}")
    fl = doc["floor"]
    row("floor: commit + tag + push by hand, median", fl["median_ms"])
    row("floor: p90", fl["p90_ms"])
    row("overhead as a multiple of the floor (median)", fl["overhead_x_floor"], "x")
    row("overhead as a multiple of the floor (p90)", fl["p90_overhead_x_floor"], "x")
    print("\n  median ms per step      " + " ".join(f"{c:>13}" for c in doc["breakdown_ms"]))
    keys = doc["breakdown_ms"]["test_step"].keys()
    for key in keys:
        vals = " ".join(f"{doc['breakdown_ms'][s][key]:>13}" for s in doc["breakdown_ms"])
        print(f"    {key:<22}{vals}")
    for key, what in (("git_calls", "git calls"), ("store_transactions", "store transactions")):
        print(f"\n  top {what} per item (of {len(doc[key])} call sites; exclusive ms)")
        print(f"    {'phase':<5} {'calls':>5} {'ms/call':>8} {'ms/item':>8}  call site")
        for r in doc[key][:top]:
            print(f"    {r['phase']:<5} {r['calls_per_item']:>5} {r['median_ms']:>8} "
                  f"{r['ms_per_item']:>8}  {r['call']}")


def print_profile(profile: cProfile.Profile, lines: int = 30) -> None:
    """The top functions of a profiled run, by cumulative and by own time."""
    for key in ("cumulative", "tottime"):
        buf = io.StringIO()
        stats = pstats.Stats(profile, stream=buf)
        stats.strip_dirs().sort_stats(key).print_stats(lines)
        print(f"\n--- cProfile of the stepping loop, sorted by {key} ---")
        print(buf.getvalue())


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark; exit 1 unless every item landed."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--items", type=int, default=50, help="bumps to land (default 50)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    parser.add_argument("--stages", type=int, default=1,
                        help="trivial stages each item runs (default 1)")
    parser.add_argument("--no-tree-cache", action="store_true",
                        help="stream every stage workspace tree from git archive (no cache)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary system")
    parser.add_argument("--tmp", type=Path, default=None, help="where to build it")
    parser.add_argument("--profile", action="store_true",
                        help="run under cProfile and print the top functions (writes no JSON)")
    args = parser.parse_args(argv)
    if args.items < 1:
        parser.error("--items must be at least 1")

    work = prepare("lockstep-bench-", args.tmp, ROOT)
    profile = cProfile.Profile() if args.profile else None
    try:
        if args.no_tree_cache:
            from lockstep import stages

            stages.TREE_CACHE_ENTRIES = 0
        results, floor = run_benchmark(args.items, work, profile, args.stages)
    finally:
        if args.keep:
            print(f"system kept in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)

    doc = summarise(results, floor, args.items,
                    {"stages": args.stages, "tree_cache": not args.no_tree_cache})
    print_table(doc)
    not_landed = [r for r in results if r.state != "landed" or r.test is None or r.land is None]
    odd = [r for r in results if r.extra_steps]
    if profile is not None:
        print_profile(profile)
    elif not not_landed:
        print()
        write_result(args.out, doc)
    for r in odd:
        print(f"warning: q{r.seq} took extra steps: {', '.join(r.extra_steps)}")
    if not_landed:
        print(f"FAILED: {len(not_landed)} of {args.items} items did not land: "
              + ", ".join(f"q{r.seq}={r.state}" for r in not_landed[:10]), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
