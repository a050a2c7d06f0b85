"""The §7 check: serial exactness, speculative closed forms, the §6 grid, serial equivalence.

One fixed stage, C = 1, no flakes or infrastructure failures, arrivals at 0, `landing_s` 0,
`window_fixed = P`. Tolerances: 3 standard errors (+ 1/N against the closed forms, for the last,
partly filled round); against the grid 3 combined standard errors (the grid's own SE estimated
from ours and its 1000 repetitions) plus half a unit of the grid's last printed digit.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from lockstep.queue.pipeline import Mode, WindowKind
from lockstep.sim.bounds import (
    CEILINGS_P8,
    GRID_N200,
    GRID_REPS,
    closed_form_per_item,
    closed_form_runs_per_item,
)
from lockstep.sim.params import Distribution, SimParams, SimStage
from lockstep.sim.runner import RowResult, Stat, run_grid

CHECK_T = 600.0
CHECK_P = (0.02, 0.10, 0.20)
CHECK_ROWS = ((Mode.SERIAL, 1), (Mode.SPECULATIVE, 4), (Mode.SPECULATIVE, 8), (Mode.BATCH, 1),
              (Mode.BATCH, 4), (Mode.BATCH, 8))


@dataclass(frozen=True)
class Finding:
    """One checked statement and whether it held."""

    ok: bool
    text: str


def check_params(n: int, reps: int, seed: int, ps: Sequence[float] = CHECK_P,
                 rows: Sequence[tuple[Mode, int]] = CHECK_ROWS) -> list[SimParams]:
    """The rows the check simulates."""
    stage = (SimStage("test", Distribution("fixed", CHECK_T)),)
    return [SimParams(n=n, p=p, stages=stage, runners=runners, mode=mode,
                      window=WindowKind.FIXED if mode != Mode.SERIAL else WindowKind.RUNNERS,
                      window_fixed=runners if mode != Mode.SERIAL else None, reps=reps,
                      seed=seed)
            for p in ps for mode, runners in rows]


def run_check(n: int = 200, reps: int = 200, seed: int = 1, ps: Sequence[float] = CHECK_P,
              rows: Sequence[tuple[Mode, int]] = CHECK_ROWS,
              progress: Callable[[SimParams], None] | None = None) -> list[Finding]:
    """Simulate the check's rows and judge them."""
    results, serials = run_grid(check_params(n, reps, seed, ps, rows), progress=progress)
    findings: list[Finding] = []
    for row in results:
        findings.extend(judge(row, serials[row.params]))
    return findings


def judge(row: RowResult, serial: RowResult) -> list[Finding]:
    """Every statement the check makes about one row."""
    params = row.params
    name = f"{params.mode} p={params.p:g} P={params.runners}"
    out: list[Finding] = []
    if params.mode == Mode.SERIAL:
        exact = params.n * params.test_time()
        ok = all(m == exact for m in row.makespans) and all(r == params.n for r in row.run_counts)
        out.append(Finding(ok, f"{name}: makespan exactly N·T = {exact:g} s and N runs in every "
                               f"repetition"))
    else:
        same = sum(a == b for a, b in zip(row.landed_orders, serial.landed_orders, strict=True))
        out.append(Finding(same == params.reps, f"{name}: landed set and order equal serial "
                                                f"mode's in {same}/{params.reps} repetitions"))
    if params.mode == Mode.SPECULATIVE:
        slack = 1 / params.n
        wall, runs = closed_form_per_item(params), closed_form_runs_per_item(params)
        assert wall is not None and runs is not None
        out.append(_near(f"{name}: wall per change vs T·p/(1−(1−p)^D)", row.per_item(), wall,
                         3 * row.per_item().se + slack))
        out.append(_near(f"{name}: runs per change vs D·p/(1−(1−p)^D)", row.runs_per_item(), runs,
                         3 * row.runs_per_item().se + slack))
    reference = GRID_N200.get((str(params.mode), params.p, params.runners))
    if reference is not None and params.n == 200:
        grow = math.sqrt(1 + params.reps / GRID_REPS)
        wall_ref, runs_ref = reference
        out.append(_near(f"{name}: wall per change vs §6 grid", row.per_item(), wall_ref,
                         3 * row.per_item().se * grow + _half_unit(wall_ref)))
        if runs_ref is not None:
            out.append(_near(f"{name}: runs per change vs §6 grid", row.runs_per_item(),
                             runs_ref, 3 * row.runs_per_item().se * grow + _half_unit(runs_ref)))
    ceiling = CEILINGS_P8.get((str(params.mode), params.p))
    if ceiling is not None and params.runners == 8:
        speedup = serial.makespan.mean / row.makespan.mean
        out.append(Finding(speedup <= ceiling, f"{name}: speed-up {speedup:.2f}× ≤ ceiling "
                                               f"{ceiling:g}×"))
    return out


def _near(text: str, got: Stat, want: float, tolerance: float) -> Finding:
    """|got − want| ≤ tolerance."""
    ok = abs(got.mean - want) <= tolerance
    return Finding(ok, f"{text}: {got.mean:.4f} ± {got.se:.4f} against {want:g} "
                       f"(|Δ| {abs(got.mean - want):.4f} ≤ {tolerance:.4f})")


def _half_unit(value: float) -> float:
    """Half a unit of the last digit a table value was printed with (0.0545 → 0.00005)."""
    text = f"{value:g}"
    decimals = len(text.split(".")[1]) if "." in text else 0
    return 0.5 * 10.0 ** -decimals
