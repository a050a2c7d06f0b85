"""Repetitions → one output row: means, standard errors, pooled percentiles, serial speed-up."""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace

from lockstep.queue.pipeline import Mode, WindowKind
from lockstep.sim.bounds import bound, closed_form_per_item
from lockstep.sim.engine import run_repetition
from lockstep.sim.params import SimParams


@dataclass(frozen=True)
class Stat:
    """A mean over repetitions and its standard error."""

    mean: float
    se: float

    @classmethod
    def of(cls, values: Sequence[float]) -> Stat:
        """Mean and standard error (0 for one repetition)."""
        n = len(values)
        mean = math.fsum(values) / n
        if n < 2:
            return cls(mean, 0.0)
        var = math.fsum((v - mean) ** 2 for v in values) / (n - 1)
        return cls(mean, math.sqrt(var / n))


@dataclass(frozen=True)
class RowResult:
    """One parameter set, simulated: the aggregates and each repetition's landed order."""

    params: SimParams
    makespan: Stat
    runs: Stat
    wasted: Stat
    runner_s: Stat
    landed: Stat
    rejected: Stat
    tags: Stat
    ttl_p50: float | None
    ttl_p95: float | None
    ttr_p50: float | None
    makespans: tuple[float, ...]
    run_counts: tuple[int, ...]
    landed_orders: tuple[tuple[str, ...], ...]
    decide_ns: tuple[int, ...]

    def per_item(self) -> Stat:
        """Wall per change in units of T."""
        scale = self.params.n * self.params.test_time()
        return Stat(self.makespan.mean / scale, self.makespan.se / scale)

    def runs_per_item(self) -> Stat:
        """Runs per change."""
        return Stat(self.runs.mean / self.params.n, self.runs.se / self.params.n)


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile (deterministic, no interpolation)."""
    if not values:
        return None
    ordered = sorted(values)
    rank = max(1, math.ceil(q / 100 * len(ordered)))
    return ordered[rank - 1]


def simulate(params: SimParams, timed: bool = False, verify: bool = False) -> RowResult:
    """Run every repetition of one parameter set."""
    measures = []
    decide_ns: list[int] = []
    for rep in range(params.reps):
        result = run_repetition(params, rep, timed=timed, verify=verify)
        measures.append(result.measures)
        decide_ns.extend(result.decide_ns)
    ttl = [v for m in measures for v in m.ttl]
    ttr = [v for m in measures for v in m.ttr]
    return RowResult(
        params=params,
        makespan=Stat.of([m.makespan for m in measures]),
        runs=Stat.of([float(m.runs) for m in measures]),
        wasted=Stat.of([float(m.wasted) for m in measures]),
        runner_s=Stat.of([m.runner_s for m in measures]),
        landed=Stat.of([float(len(m.landed)) for m in measures]),
        rejected=Stat.of([float(len(m.rejected)) for m in measures]),
        tags=Stat.of([float(m.tags) for m in measures]),
        ttl_p50=percentile(ttl, 50), ttl_p95=percentile(ttl, 95), ttr_p50=percentile(ttr, 50),
        makespans=tuple(m.makespan for m in measures),
        run_counts=tuple(m.runs for m in measures),
        landed_orders=tuple(tuple(m.landed) for m in measures),
        decide_ns=tuple(decide_ns),
    )


def serial_of(params: SimParams) -> SimParams:
    """The serial baseline of a row: same items, stages, runners and seed."""
    return replace(params, mode=Mode.SERIAL, window=WindowKind.RUNNERS, window_fixed=None)


def run_grid(rows: Sequence[SimParams], timed: bool = False, verify: bool = False,
             progress: Callable[[SimParams], None] | None = None,
             ) -> tuple[list[RowResult], dict[SimParams, RowResult]]:
    """Simulate the rows and, once each, their serial baselines."""
    done: dict[SimParams, RowResult] = {}
    out: list[RowResult] = []
    for params in [*rows, *(serial_of(r) for r in rows)]:
        if params not in done:
            if progress is not None:
                progress(params)
            done[params] = simulate(params, timed=timed, verify=verify)
    out = [done[params] for params in rows]
    return out, {params: done[serial_of(params)] for params in rows}


def row_json(row: RowResult, serial: RowResult) -> dict[str, object]:
    """A ROW of the lockstep.sim/v1 document (§7)."""
    params = row.params
    bound_makespan, bound_runs = bound(params)
    closed = closed_form_per_item(params)
    return {
        "mode": str(params.mode),
        "p": params.p, "runners": params.runners, "n": params.n, "reps": params.reps,
        "seed": params.seed,
        "batch_size": params.batch_size if params.mode == Mode.BATCH else None,
        "window": params.window_label(),
        "makespan_s": _r(row.makespan.mean), "makespan_se_s": _r(row.makespan.se),
        "per_item_T": _r(row.per_item().mean),
        "speedup_vs_serial": _r(serial.makespan.mean / row.makespan.mean)
        if row.makespan.mean else None,
        "runs": _r(row.runs.mean), "runs_per_item": _r(row.runs_per_item().mean),
        "wasted_runs": _r(row.wasted.mean), "runner_s": _r(row.runner_s.mean),
        "ttl_p50_s": _r(row.ttl_p50), "ttl_p95_s": _r(row.ttl_p95), "ttr_p50_s": _r(row.ttr_p50),
        "landed": _r(row.landed.mean), "rejected": _r(row.rejected.mean), "tags": _r(row.tags.mean),
        "closed_form_per_item_T": _r(closed), "bound_makespan_s": _r(bound_makespan),
        "bound_runs": _r(bound_runs),
    }


def _r(value: float | None) -> float | None:
    """Six decimals: enough for every figure, stable in the JSON."""
    return None if value is None else round(value, 6)
