"""Benchmark: a release's wall time follows its DAG's depth, not its number of repositories.

Each shape is a throwaway system: N component repositories on local bare remotes, spread over
depth + 1 levels (every component above level 0 depends on one component of the level below
and pins its image in a Dockerfile), an integration repository whose manifest pins them all, and
in every bare remote the demo's CI hook, which builds the pushed tag's image into an OCI layout
registry DELAY seconds after the push (playing a CI that takes that long). `lockstep release cut`
runs as a user runs it (a subprocess) and is timed as a whole.

The floor is what no tool can beat: one artifact build per level, (depth + 1) x DELAY, since a
level's images can only be built once the level below is pinned. The shapes run interleaved, in
one run, so machine noise hits them alike:

    .venv/bin/python bench/release_depth.py [--delay 1.0] [--rounds 3]
        [--out bench/results/release_depth.json]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from benchkit import isolate_git, prepare, source_info, write_result  # noqa: E402

SHAPES = [  # (repositories, depth)
    (20, 0), (20, 1), (20, 3), (4, 3), (20, 4),
]
REGISTRY = "bench.local"


def build(root: Path, n: int, depth: int, delay: float) -> Path:
    """The system for one shape; returns the integration workspace."""
    from lockstep import git
    from lockstep.demo_artifacts import ArtifactHook, install_hook
    from lockstep.manifest import Pin, render_new
    from lockstep.scaffold import init

    levels = [[f"c{i:02d}" for i in range(n) if i % (depth + 1) == lv] for lv in range(depth + 1)]
    deps: dict[str, str | None] = {}
    for lv, names in enumerate(levels):
        for j, name in enumerate(names):
            below = levels[lv - 1] if lv else []
            deps[name] = below[j % len(below)] if below else None
    pins: dict[str, Pin] = {}
    for name, dep in deps.items():
        bare = root / "remotes" / f"{name}.git"
        git.run(["init", "--quiet", "--bare", "--initial-branch=main", str(bare)])
        src = root / "src" / name
        git.run(["clone", "--quiet", str(bare), str(src)])
        git.run(["checkout", "--quiet", "-B", "main"], src)
        body = f"FROM {REGISTRY}/bench/{dep}:0.0.0\n" if dep else "FROM scratch\n"
        (src / "Dockerfile").write_text(body + f"COPY {name} /app\n")
        (src / name).write_text(f"{name}\n")
        git.run(["add", "--all"], src)
        git.run(["commit", "--quiet", "-m", name], src)
        git.run(["tag", "-a", "v1.0.0", "-m", "v1.0.0"], src)
        git.run(["push", "--quiet", "origin", "main", "refs/tags/v1.0.0"], src)
        pins[name] = Pin("v1.0.0", git.out(["rev-parse", "HEAD"], src))
    comps = "".join(
        f'[components.{n_}]\nurl = "../remotes/{n_}.git"\nimage = "{REGISTRY}/bench/{n_}"\n'
        f'tag_transform = "strip-v"\ndepends_on = [{f"{chr(34)}{d}{chr(34)}" if d else ""}]\n\n'
        for n_, d in deps.items())
    pin_text = "".join(
        f'[[pins]]\nrepo = "{n_}"\ncomponent = "{d}"\nfile = "Dockerfile"\nkind = "dockerfile"\n\n'
        for n_, d in deps.items() if d)
    config = (f'{comps}[[stages]]\nname = "check"\ncommand = ["true"]\ntimeout = 60\n\n'
              f'[release]\nwait_timeout = "5m"\npoll = {{ initial = "0.1s", max = "0.5s" }}\n\n'
              f'[registries."{REGISTRY}"]\nlayout = "../registry"\n\n{pin_text}')
    ws = root / "integration"
    remote = root / "remotes" / "integration.git"
    git.run(["init", "--quiet", "--bare", str(remote)])
    init(ws, remote_url=str(remote), config_text=config,
         manifest_text=render_new({"default": pins}))
    git.run(["tag", "-a", "v2026.11.1", "-m", "integration"], ws)
    git.run(["push", "--quiet", "origin", "refs/tags/v2026.11.1"], ws)
    for name in deps:
        install_hook(root / "remotes" / f"{name}.git", ArtifactHook(
            repository=f"bench/{name}", layout_root=root / "registry", tag_transform="strip-v",
            delay=delay))
    return ws


def cut(ws: Path) -> float:
    """Seconds for one `lockstep release cut` (a subprocess, as a user runs it)."""
    start = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "lockstep", "release", "cut", "-C", str(ws)],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL,
                          env=dict(os.environ), timeout=900)
    took = time.perf_counter() - start
    if proc.returncode != 0:
        raise SystemExit(f"release cut failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    return took


def measure(delay: float, rounds: int, base: Path | None = None) -> dict[str, Any]:
    """Time every shape `rounds` times, interleaved; print and return the figures."""
    if base is None:
        base = prepare("lockstep-bench-depth-", None, ROOT)
        isolate_git(base)
    times: dict[tuple[int, int], list[float]] = {shape: [] for shape in SHAPES}
    for r in range(rounds):
        for n, depth in SHAPES:
            root = Path(tempfile.mkdtemp(prefix=f"r{r}-n{n}-d{depth}-", dir=base))
            took = cut(build(root, n, depth, delay))
            times[(n, depth)].append(took)
            print(f"round {r + 1}: {n:2d} repos, depth {depth}: {took:6.2f} s", flush=True)
    rows: list[dict[str, Any]] = []
    print(f"\nrelease wall time, median of {rounds} rounds; floor = (depth + 1) x {delay:g} s "
          "of CI builds")
    print(f"{'repos':>5} {'depth':>5} {'median s':>9} {'floor s':>8} {'ratio':>6}")
    for n, depth in SHAPES:
        med = statistics.median(times[(n, depth)])
        floor = (depth + 1) * delay
        rows.append({"repositories": n, "depth": depth, "median_s": round(med, 3),
                     "runs_s": [round(t, 3) for t in times[(n, depth)]],
                     "floor_s": floor, "ratio_to_floor": round(med / floor, 2)})
        print(f"{n:5d} {depth:5d} {med:9.2f} {floor:8.2f} {med / floor:6.2f}")
    by = {(r["repositories"], r["depth"]): r["median_s"] for r in rows}
    same_depth = round(by[(20, 3)] / by[(4, 3)], 2)
    deeper = round(by[(20, 4)] / by[(20, 0)], 2)
    print(f"20 repos vs 4 repos, both depth 3: {same_depth}x the time")
    print(f"20 repos, depth 4 vs depth 0: {deeper}x the time")
    return {"delay_s": delay, "rounds": rounds, "shapes": rows,
            "ratio_20_vs_4_repos_depth3": same_depth, "ratio_depth4_vs_depth0_20_repos": deeper}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--delay", type=float, default=1.0,
                        help="seconds the CI hook takes to build an artifact after a tag push")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--out", type=Path, default=ROOT / "bench/results/release_depth.json")
    args = parser.parse_args()
    doc = {"benchmark": "release_depth", **measure(args.delay, args.rounds),
           "source": source_info(),
           "machine": {"python": platform.python_version(), "cpus": os.cpu_count()}}
    write_result(args.out, doc)


if __name__ == "__main__":
    main()
