"""Benchmark: the cost of one scheduler decision (`pipeline.decide`) with 10,000 queued items.

The state is the simulator's in-memory world (the snapshot a worker would read in its
scheduling transaction), with 10,000 queued items and 50,000 finished ones in its state map,
P = 8 runners, in situations a worker meets, per mode:

- `steady`: the window is full and every run is in flight: nothing to do;
- `pass`: the head's run passed: pass, land, admit the next item or batch, start its run;
- `fail`: the head's run failed: fail it, reject it (or split the batch), rebuild what is
  behind, start the runs;
- `fill`: an empty pipeline: admit a window of items or batches and start their runs.

Each situation's state is built once; `decide` is pure, so it is timed on the same state
(`--calls` times, wall clock, perf_counter_ns). Only `decide` is timed: reading the state from a
store and recording the decisions is the worker's round, measured elsewhere.

    .venv/bin/python bench/queue_decide.py [--queued 10000] [--calls 2000] [--out PATH]
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import statistics
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import prepare, source_info, source_label, write_result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "queue_decide.json"
TARGET_US = 1000.0
RUNNERS = 8
FINISHED = 50_000


def situation(mode: Any, queued: int, name: str) -> tuple[Any, float]:
    """(state, now) for one situation, built by driving the simulator's world."""
    from lockstep.queue.model import State
    from lockstep.queue.pipeline import ItemSnap
    from lockstep.sim.engine import Simulation
    from lockstep.sim.params import SimParams

    params = SimParams(n=queued, p=0.0, runners=RUNNERS, mode=mode, reps=1)
    items = [ItemSnap(f"q{k}", k, 0, State.QUEUED, f"comp{k}", ("default",))
             for k in range(1, queued + 1)]
    bad = {item.id: frozenset({0}) if name == "fail" and item.seq == 1 else frozenset()
           for item in items}
    sim = Simulation(params, items, bad, random.Random(0))
    world = sim.world
    for k in range(1, FINISHED + 1):  # history: what a long-lived queue's state map holds
        world.states[f"done{k}"] = State.LANDED
    sim.step()  # t = 0: arrivals, then the pipeline fills
    if name == "fill":
        # the same queue before anything entered the pipeline
        fresh = Simulation(params, items, bad, random.Random(0))
        while fresh.world.events and fresh.world.events[0][3] == "arrival":
            _, _, _, _, payload = fresh.world.events.pop(0)
            fresh.world.submit(fresh.pending.pop(payload))
        fresh.world.states.update(world.states)
        return fresh.world.snapshot(), 0.0
    if name == "steady":
        return world.snapshot(), 1.0
    head_run = next(r for r in world.runs if r.startswith(
        world.items["q1"].candidate + "/"))  # type: ignore[operator]
    world.run_ended(head_run, 600.0)
    return world.snapshot(), 600.0


def measure(state: Any, now: float, calls: int) -> dict[str, Any]:
    """p50 and p95 of `decide` on one state, in microseconds."""
    from lockstep.queue.pipeline import decide

    decisions = decide(state, (), now)
    costs = []
    for _ in range(calls):
        start = time.perf_counter_ns()
        decide(state, (), now)
        costs.append(time.perf_counter_ns() - start)
    costs.sort()
    return {"p50_us": round(statistics.median(costs) / 1000, 1),
            "p95_us": round(costs[int(0.95 * (len(costs) - 1))] / 1000, 1),
            "actions": len(decisions.actions),
            "kinds": sorted({type(a).__name__ for a in decisions.actions})}


def main(argv: list[str] | None = None) -> int:
    """Measure every mode and situation; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--queued", type=int, default=10_000, help="queued items (10000)")
    parser.add_argument("--calls", type=int, default=2000, help="calls per situation (2000)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    args = parser.parse_args(argv)
    if args.queued < 100 or args.calls < 10:
        parser.error("--queued must be at least 100 and --calls at least 10")
    prepare("lockstep-decide-", None, ROOT)
    import lockstep
    from lockstep.queue.pipeline import Mode

    results: dict[str, dict[str, Any]] = {}
    for mode in (Mode.SERIAL, Mode.SPECULATIVE, Mode.BATCH):
        for name in ("steady", "pass", "fail", "fill"):
            state, now = situation(mode, args.queued, name)
            results[f"{mode}/{name}"] = measure(state, now, args.calls)
    worst = max(r["p95_us"] for r in results.values())
    doc = {
        "benchmark": "queue_decide",
        "lockstep": lockstep.__version__,
        "source": source_info(),
        "queued": args.queued, "finished_in_state": FINISHED, "runners": RUNNERS,
        "calls": args.calls, "target_us": TARGET_US, "worst_p95_us": worst,
        "meets_target": worst < TARGET_US,
        "situations": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"queue decide: lockstep {doc['lockstep']} at {source_label(doc['source'])}; "
          f"{args.queued} queued, {FINISHED} finished, P = {RUNNERS}, {args.calls} calls each")
    print(f"  {'mode/situation':<22}{'p50 µs':>9}{'p95 µs':>9}  actions")
    for key, r in results.items():
        print(f"  {key:<22}{r['p50_us']:>9}{r['p95_us']:>9}  {r['actions']} "
              f"({', '.join(r['kinds'])})")
    print(f"worst p95 {worst} µs (target < {TARGET_US:g} µs)")
    write_result(args.out, doc)
    return 0 if worst < TARGET_US else 1


if __name__ == "__main__":
    sys.exit(main())
