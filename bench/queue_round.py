"""Benchmark: one whole scheduling round of the pipeline scheduler against a real store.

A round is one write transaction: `pipeline_store.read_snapshot` (the queue's front), the pure
`pipeline.decide`, and `pipeline_store.apply_decisions` (the decisions recorded), then the
commit. The store holds 10,000 queued and 50,000 finished items; the queue is speculative with
P = 8 runners and one stage, and the pipeline is full (8 candidates in flight). Each iteration a
runner reports, outside the timed round, that the head's run ended (passed, or failed with
probability `--p`), and the lander lands what the previous round handed it; then two rounds are
timed: `pass` (pass, land, admit the next item, start its run) or `fail` (fail, reject, rebuild
the seven candidates behind, start eight runs), then `idle` (nothing changed: nothing to
record). `fill` is the first round (an empty pipeline filled; statement caches still cold).
`apply` is the recording: one executemany per table on SQLite, two statements on PostgreSQL (the
queue row, then every other row in one), whatever the number of actions.

It runs on SQLite (a file in a temporary directory, WAL, synchronous=FULL) and on a throwaway
PostgreSQL server started as the tests start theirs (tests/infra/postgres.py), and times the
old serial path on the same store too: `Store.view` + `scheduler.decide` in one transaction.

    .venv/bin/python bench/queue_round.py [--rounds 200] [--queued 10000] [--finished 50000]
        [--p 0.1] [--backends sqlite,postgres] [--out bench/results/queue_round.json]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import random
import statistics
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from benchkit import prepare, source_info, source_label, write_result

ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUT = ROOT / "bench" / "results" / "queue_round.json"
TARGET_MS = 20.0
RUNNERS = 8
STAGE_S = 600.0
PHASES = ("read", "decide", "apply", "commit")


def percentiles(values: list[float]) -> dict[str, float]:
    """p50 and p95 (nearest rank) of durations in seconds, in milliseconds."""
    ordered = sorted(values)
    return {"p50_ms": round(statistics.median(ordered) * 1000, 3),
            "p95_ms": round(ordered[int(0.95 * (len(ordered) - 1))] * 1000, 3),
            "n": len(ordered)}


def populate(store: Any, queued: int, finished: int) -> None:
    """Insert the finished history, then the queued items, in bulk; register the runners."""
    from sqlalchemy import insert

    from lockstep.queue import pipeline_store as ps
    from lockstep.queue import schema as s
    from lockstep.queue.store import QUEUE_ID

    def rows(n: int, state: str, start: int) -> Iterator[dict[str, Any]]:
        for k in range(start, start + n):
            yield {"queue_id": QUEUE_ID, "component": f"comp{k % 50}", "version": f"v1.{k}.0",
                   "sha": f"{k:040x}", "configurations": '["default"]', "priority": 0,
                   "state": state, "submitted_at": 0.0, "updated_at": 0.0, "attempt": 0,
                   "recoveries": 0,
                   "outcome": '{"landed": true}' if state == "landed" else None}

    chunk = 5000
    with store.tx() as c:
        for start in range(0, finished, chunk):
            c.execute(insert(s.items), list(rows(min(chunk, finished - start), "landed", start)))
        for start in range(0, queued, chunk):
            c.execute(insert(s.items), list(rows(min(chunk, queued - start), "queued",
                                                 finished + start)))
        for k in range(1, RUNNERS + 1):
            ps.add_runner(c, f"r{k}", worker="bench")
    if store.is_postgres:  # what autovacuum does after a bulk load
        with store.engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("ANALYZE")


class Bench:
    """One backend's store, the scheduler's settings and the virtual clock."""

    def __init__(self, store: Any, p: float, seed: int) -> None:
        """Time rounds on `store`; the head fails with probability p."""
        from lockstep.queue.pipeline import Mode, PipelineSettings

        self.store = store
        self.settings = PipelineSettings(mode=Mode.SPECULATIVE)
        self.p = p
        self.rng = random.Random(seed)
        self.now = 0.0
        self.times: dict[str, dict[str, list[float]]] = {}
        self.outcomes: dict[str, int] = {}

    def round(self, situation: str) -> int:
        """One timed scheduling round; how many actions it recorded."""
        from lockstep.queue import pipeline_store as ps
        from lockstep.queue.pipeline import decide

        t0 = time.perf_counter()
        with self.store.tx() as c:
            t1 = time.perf_counter()
            snap = ps.read_snapshot(self.store, c, self.settings)
            t2 = time.perf_counter()
            decisions = decide(snap, (), self.now)
            t3 = time.perf_counter()
            ps.apply_decisions(self.store, c, snap, decisions, self.now)
            t4 = time.perf_counter()
        t5 = time.perf_counter()
        self._record(situation, {"round": t5 - t0, "begin": t1 - t0, "read": t2 - t1,
                                 "decide": t3 - t2, "apply": t4 - t3, "commit": t5 - t4})
        return len(decisions.actions)

    def old_round(self) -> None:
        """One round of the serial path: `Store.view` + `scheduler.decide` in one transaction."""
        from lockstep.queue import scheduler

        t0 = time.perf_counter()
        with self.store.tx() as c:
            t1 = time.perf_counter()
            view = self.store.view(c, 3)
            t2 = time.perf_counter()
            scheduler.decide(view)
            t3 = time.perf_counter()
        t4 = time.perf_counter()
        self._record("old", {"round": t4 - t0, "begin": t1 - t0, "read": t2 - t1,
                             "decide": t3 - t2, "apply": 0.0, "commit": t4 - t3})

    def report(self) -> str:
        """Outside the timed rounds: the lander lands, then the head's run ends; returns the
        situation the next round meets, `pass` or `fail`."""
        from lockstep.queue import pipeline_store as ps
        from lockstep.queue.pipeline import RunState

        self.now += STAGE_S
        with self.store.tx() as c:
            for candidate in ps.landing_candidates(c):
                ps.landed(self.store, c, candidate, self.now)
            snap = ps.read_snapshot(self.store, c, self.settings)
            head = snap.candidates[snap.items[0].candidate or ""]
            run = next(r for r in head.runs if r.state == RunState.RUNNING)
            failed = self.rng.random() < self.p
            ps.finish_run(c, run.id, RunState.FAILED if failed else RunState.PASSED,
                          1 if failed else 0, self.now)
        kind = "fail" if failed else "pass"
        self.outcomes[kind] = self.outcomes.get(kind, 0) + 1
        return kind

    def _record(self, situation: str, phases: dict[str, float]) -> None:
        """Keep one round's timings under its situation."""
        slot = self.times.setdefault(situation, {})
        for phase, value in phases.items():
            slot.setdefault(phase, []).append(value)

    def summary(self) -> dict[str, Any]:
        """Per situation: the round's and each phase's p50/p95."""
        return {situation: {phase: percentiles(values) for phase, values in phases.items()}
                for situation, phases in self.times.items()}


def measure(store: Any, rounds: int, p: float) -> dict[str, Any]:
    """Fill the pipeline, then time `rounds` iterations: a pass or fail round, an idle round,
    an old-path round."""
    bench = Bench(store, p, seed=1)
    fill = bench.round("fill")
    actions = 0
    for _ in range(rounds):
        actions += bench.round(bench.report())
        bench.round("idle")
        bench.old_round()
    result = bench.summary()
    every = [t for situation in ("pass", "fail", "idle")
             for t in bench.times.get(situation, {}).get("round", [])]
    result["all_rounds"] = percentiles(every)
    result["fill_actions"] = fill
    result["actions_per_event_round"] = round(actions / rounds, 2)
    result["head_outcomes"] = bench.outcomes
    new = result["all_rounds"]["p50_ms"]
    result["old_to_new_p50"] = round(result["old"]["round"]["p50_ms"] / new, 1) if new else None
    return result


@contextlib.contextmanager
def sqlite_store(work: Path) -> Iterator[Any]:
    """A fresh SQLite store file in the work directory."""
    from lockstep.queue.store import Store

    store = Store.open(work / "queue.db")
    try:
        yield store
    finally:
        store.close()


@contextlib.contextmanager
def postgres_store() -> Iterator[Any]:
    """A fresh database on a throwaway PostgreSQL server (the tests' helper)."""
    sys.path.insert(0, str(ROOT))
    from tests.infra.postgres import running_postgres

    from lockstep.queue.store import Store

    with running_postgres() as server:
        store = Store.open(Path("unused.db"), url=server.url(server.create_database()))
        try:
            yield store, server.version
        finally:
            store.close()


def run_backend(name: str, work: Path, args: argparse.Namespace) -> dict[str, Any]:
    """Populate one backend and measure it."""
    if name == "sqlite":
        import sqlite3

        with sqlite_store(work) as store:
            populate(store, args.queued, args.finished)
            result = measure(store, args.rounds, args.p)
        result["server"] = f"SQLite {sqlite3.sqlite_version}"
        return result
    with postgres_store() as (store, version):
        populate(store, args.queued, args.finished)
        result = measure(store, args.rounds, args.p)
    result["server"] = version
    return result


def main(argv: list[str] | None = None) -> int:
    """Measure each backend; print and write the figures."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--rounds", type=int, default=200, help="timed iterations (200)")
    parser.add_argument("--queued", type=int, default=10_000, help="queued items (10000)")
    parser.add_argument("--finished", type=int, default=50_000, help="finished items (50000)")
    parser.add_argument("--p", type=float, default=0.1, help="head failure probability (0.1)")
    parser.add_argument("--backends", default="sqlite,postgres",
                        help="comma-separated: sqlite, postgres (both)")
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT, help="the JSON result file")
    args = parser.parse_args(argv)
    backends = [b.strip() for b in args.backends.split(",") if b.strip()]
    if not backends or set(backends) - {"sqlite", "postgres"}:
        parser.error("--backends takes sqlite, postgres or both, comma-separated")
    if args.rounds < 10 or args.queued < 2 * args.rounds + 100 or args.finished < 0:
        parser.error("--rounds must be at least 10, --queued at least 2 × rounds + 100 "
                     "(each round may land or reject one item), --finished at least 0")
    if not 0.0 <= args.p < 1.0:
        parser.error("--p must be a probability in [0, 1)")
    work = prepare("lockstep-round-", None, ROOT)
    import lockstep

    results = {name: run_backend(name, work, args) for name in backends}
    worst = max(r["all_rounds"]["p95_ms"] for r in results.values())
    doc = {
        "benchmark": "queue_round", "lockstep": lockstep.__version__, "source": source_info(),
        "queued": args.queued, "finished": args.finished, "runners": RUNNERS,
        "mode": "speculative", "rounds": args.rounds, "p": args.p, "target_ms": TARGET_MS,
        "worst_p95_ms": worst, "meets_target": worst < TARGET_MS, "backends": results,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                    "platform": platform.platform()},
        "timestamp": datetime.now(UTC).isoformat(timespec="seconds"),
    }
    print(f"queue round: lockstep {doc['lockstep']} at {source_label(doc['source'])}; "
          f"{args.queued} queued, {args.finished} finished, P = {RUNNERS}, speculative, "
          f"{args.rounds} iterations, head fails with p = {args.p}")
    for name, r in results.items():
        print(f"{name} ({r['server']}):")
        print(f"  {'situation':<10}{'round p50':>11}{'p95':>9}" + "".join(
            f"{phase + ' p50':>13}{'p95':>8}" for phase in PHASES))
        for situation in ("pass", "fail", "idle", "fill", "old"):
            row = r.get(situation)
            if row is None:
                continue
            print(f"  {situation:<10}{row['round']['p50_ms']:>11.2f}{row['round']['p95_ms']:>9.2f}"
                  + "".join(f"{row[ph]['p50_ms']:>13.2f}{row[ph]['p95_ms']:>8.2f}"
                            for ph in PHASES))
        print(f"  new rounds p50 {r['all_rounds']['p50_ms']:.2f} ms, p95 "
              f"{r['all_rounds']['p95_ms']:.2f} ms; old path p50 "
              f"{r['old']['round']['p50_ms']:.2f} ms ({r['old_to_new_p50']}× the new)")
    print(f"worst p95 {worst:.2f} ms per round (target < {TARGET_MS:g} ms)")
    write_result(args.out, doc)
    print(json.dumps({n: r["all_rounds"] for n, r in results.items()}))
    return 0 if worst < TARGET_MS else 1


if __name__ == "__main__":
    sys.exit(main())
