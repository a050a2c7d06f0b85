"""Benchmark: queue throughput by mode, from the simulator (spec/queue.md §6–§7).

One run of the grid N = 200, p ∈ {0.02, 0.1, 0.2}, P ∈ {1, 4, 8}: serial (one run at a time
with C = 1, so one baseline serves every P), speculative and batch (B = 8, bisect auto, W = P),
plus the aimd window at P = 8 for both modes. Every row is `lockstep.sim` driving the real
`pipeline.decide` on a virtual clock with one fixed 600 s stage; rows are simulated in parallel
processes (a row's figures do not depend on which process ran it).

It prints the table and judges each row: wall and runs per change within 3 combined standard
errors (+ half a printed digit) of the §6 grid, speed-up under the §6 ceilings at P = 8, and the
issue's targets (speculative p = 0.1, P = 8 ≥ 5.5×; batch p = 0.02, P = 8 ≥ 15×); every
statement of §7's check (`lockstep.sim.check.judge`) is made on the non-aimd rows too.

    .venv/bin/python bench/queue_throughput.py [--reps 1000] [--jobs 2] [--out PATH]
"""

from __future__ import annotations

import argparse
import math
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import prepare, source_info, source_label, write_result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "queue_throughput.json"
PS = (0.02, 0.10, 0.20)
RUNNERS = (1, 4, 8)
TARGETS = {("speculative", 0.10, 8): 5.5, ("batch", 0.02, 8): 15.0}


def grid(reps: int, seed: int) -> list[Any]:
    """The rows, in table order."""
    from lockstep.queue.pipeline import Mode, WindowKind
    from lockstep.sim import SimParams

    rows = []
    for p in PS:
        base = SimParams(n=200, p=p, runners=1, mode=Mode.SERIAL, reps=reps, seed=seed)
        rows.append(base)
        for runners in RUNNERS:
            for mode in (Mode.SPECULATIVE, Mode.BATCH):
                rows.append(replace(base, mode=mode, runners=runners))
        for mode in (Mode.SPECULATIVE, Mode.BATCH):
            rows.append(replace(base, mode=mode, runners=8, window=WindowKind.AIMD))
    return rows


def simulate_one(params: Any) -> Any:
    """One row, in a worker process (the cyclic garbage collector is off while it runs: the
    simulation makes no reference cycles, and the figures do not depend on it)."""
    import gc

    from lockstep.sim import simulate

    gc.disable()
    try:
        return simulate(params, timed=True)
    finally:
        gc.enable()
        gc.collect()


def judge(row: Any, serial: Any) -> dict[str, Any]:
    """The row against the §6 grid, its ceiling and the issue's targets."""
    from lockstep.sim.bounds import AIMD_P8, CEILINGS_P8, GRID_N200, GRID_REPS
    from lockstep.sim.check import _half_unit
    from lockstep.sim.check import judge as check_judge

    params = row.params
    key = (str(params.mode), params.p, params.runners)
    aimd = str(params.window) == "aimd"
    speedup = serial.makespan.mean / row.makespan.mean
    out: dict[str, Any] = {"speedup": round(speedup, 3)}
    reference = None if aimd else GRID_N200.get(key)
    grow = math.sqrt(1 + params.reps / GRID_REPS)
    if reference is not None:
        for name, got, want in (("wall", row.per_item(), reference[0]),
                                ("runs", row.runs_per_item(), reference[1])):
            if want is None:
                continue
            tolerance = 3 * got.se * grow + _half_unit(want)
            out[f"{name}_ref"] = want
            out[f"{name}_z"] = round((got.mean - want) / (got.se * grow), 2) if got.se else 0.0
            out[f"{name}_within_3se"] = abs(got.mean - want) <= tolerance
    ceiling = CEILINGS_P8.get((str(params.mode), params.p)) if params.runners == 8 else None
    if ceiling is not None:
        out["ceiling"] = ceiling
        out["under_ceiling"] = speedup <= ceiling
    if aimd and str(params.mode) == "speculative" and params.p in AIMD_P8:
        out["spec_s4_speedup"] = AIMD_P8[params.p]
    target = None if aimd else TARGETS.get(key)
    if target is not None:
        out["target"] = target
        out["meets_target"] = speedup >= target
    same = sum(a == b for a, b in zip(row.landed_orders, serial.landed_orders, strict=True))
    out["serial_equivalent_reps"] = same
    if not aimd:  # §7's check, at this run's repetitions
        out["check"] = [{"ok": f.ok, "text": f.text} for f in check_judge(row, serial)]
    return out


def main(argv: list[str] | None = None) -> int:
    """Simulate the grid, print the table and the verdicts, write the JSON."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--reps", type=int, default=1000, help="repetitions per row (1000)")
    parser.add_argument("--seed", type=int, default=1, help="seed of every stream (1)")
    parser.add_argument("--jobs", type=int, default=os.cpu_count() or 1,
                        help="processes simulating rows in parallel (CPU count)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    args = parser.parse_args(argv)
    if args.reps < 2 or args.jobs < 1:
        parser.error("--reps must be at least 2 and --jobs at least 1")
    prepare("lockstep-throughput-", None, ROOT)
    from lockstep.sim.report import document, table
    from lockstep.sim.runner import serial_of

    rows = grid(args.reps, args.seed)
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.jobs) as pool:
        results = list(pool.map(simulate_one, rows))
    wall = time.perf_counter() - started
    by_params = {r.params: r for r in results}
    serials = [by_params[replace(serial_of(r.params), runners=1)] for r in results]
    doc = document(results, serials, {"n": 200, "stages": "test=fixed:600", "configs": 1,
                                      "batch_size": 8, "bisect_ways": "auto",
                                      "reps": args.reps, "seed": args.seed}, wall)
    verdicts = [judge(r, s) for r, s in zip(results, serials, strict=True)]
    for json_row, verdict in zip(doc["rows"], verdicts, strict=True):
        json_row["verdict"] = verdict
    source = source_info()
    print(f"queue throughput: lockstep {doc['lockstep']} at {source_label(source)}; "
          f"{args.reps} repetitions per row, {wall:.0f} s on {args.jobs} processes")
    print("serial rows hold for every P: with C = 1 serial mode runs one run at a time")
    print(table(doc))
    problems = []
    for json_row, verdict in zip(doc["rows"], verdicts, strict=True):
        label = f"{json_row['mode']} p={json_row['p']:g} P={json_row['runners']} " \
                f"W={json_row['window']}"
        for flag in ("wall_within_3se", "runs_within_3se", "under_ceiling", "meets_target"):
            if verdict.get(flag) is False:
                problems.append(f"{label}: {flag} failed ({verdict})")
        problems.extend(f"{label}: {f['text']}" for f in verdict.get("check", [])
                        if not f["ok"])
        if verdict["serial_equivalent_reps"] != args.reps:
            problems.append(f"{label}: landed order differs from serial in "
                            f"{args.reps - verdict['serial_equivalent_reps']} repetitions")
    checked = sum(1 for v in verdicts if "wall_within_3se" in v)
    statements = [f for v in verdicts for f in v.get("check", [])]
    print(f"§7 check on these rows: {sum(f['ok'] for f in statements)}/{len(statements)} "
          f"statements hold (serial exactly N·T, speculative closed forms, §6 grid, ceilings, "
          f"serial equivalence)")
    print(f"§6 grid: {checked} rows compared (wall and runs per change, 3 combined SE); "
          f"decide p50 {doc['timing']['decision_us_p50']} µs, "
          f"p95 {doc['timing']['decision_us_p95']} µs")
    for key, target in TARGETS.items():
        hit = next(v for r, v in zip(doc["rows"], verdicts, strict=True)
                   if (r["mode"], r["p"], r["runners"]) == key and r["window"] != "aimd")
        print(f"target {key[0]} p={key[1]:g} P={key[2]}: {hit['speedup']:.2f}× "
              f"(≥ {target:g}×)")
    print("all rows within 3 SE of the §6 grid, under the ceilings, serial-equivalent"
          if not problems else "\n".join(problems))
    doc.update({
        "benchmark": "queue_throughput",
        "source": source,
        "command": "bench/queue_throughput.py " + " ".join(argv if argv is not None
                                                           else sys.argv[1:]),
        "problems": problems,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    })
    write_result(args.out, doc)
    return 0 if not problems else 1


if __name__ == "__main__":
    sys.exit(main())
