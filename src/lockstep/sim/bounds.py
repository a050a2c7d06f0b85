"""The yardsticks of §6: closed forms, lower bounds and the spec's reference grid."""

from __future__ import annotations

import math

from lockstep.queue.pipeline import Mode, WindowKind
from lockstep.sim.params import SimParams

# §6 benchmark grid (N = 200, 1000 repetitions, fixed T, W = P, batch B = 8, bisect auto):
# (mode, p, P) → (wall per change in T, runs per change or None when not printed).
GRID_N200: dict[tuple[str, float, int], tuple[float, float | None]] = {
    ("batch", 0.02, 1): (0.241, None), ("batch", 0.10, 1): (0.632, None),
    ("batch", 0.20, 1): (0.992, None),
    ("speculative", 0.02, 4): (0.260, 1.03), ("speculative", 0.10, 4): (0.293, 1.16),
    ("speculative", 0.20, 4): (0.342, 1.36),
    ("batch", 0.02, 4): (0.089, 0.35), ("batch", 0.10, 4): (0.289, 1.13),
    ("batch", 0.20, 4): (0.498, 1.96),
    ("speculative", 0.02, 8): (0.136, 1.07), ("speculative", 0.10, 8): (0.178, 1.40),
    ("speculative", 0.20, 8): (0.244, 1.92),
    ("batch", 0.02, 8): (0.0545, 0.41), ("batch", 0.10, 8): (0.181, 1.39),
    ("batch", 0.20, 8): (0.311, 2.37),
}
GRID_REPS = 1000
# Speed-up ceilings at P = 8 (§6): (mode, p) → the most a correct scheduler can reach.
CEILINGS_P8: dict[tuple[str, float], float] = {
    ("speculative", 0.02): 8.0, ("speculative", 0.10): 7.9, ("speculative", 0.20): 4.9,
    ("batch", 0.02): 37.5, ("batch", 0.10): 9.6, ("batch", 0.20): 4.9,
}
# §4: the aimd window at P = 8 (N = 200, 1000 repetitions), speed-up over serial.
AIMD_P8 = {0.10: 5.03, 0.20: 3.23}


def entropy(p: float) -> float:
    """H(p) in bits."""
    if p <= 0.0 or p >= 1.0:
        return 0.0
    return -p * math.log2(p) - (1 - p) * math.log2(1 - p)


def depth(params: SimParams) -> int:
    """D = min(P, W) for the fixed windows."""
    if params.mode == Mode.SERIAL:
        return 1
    if params.window == WindowKind.FIXED and params.window_fixed is not None:
        return min(params.runners, params.window_fixed)
    return params.runners


def closed_form_per_item(params: SimParams) -> float | None:
    """§6's closed form for the wall time per change in units of T, where one exists."""
    p = params.item_p()
    if params.mode == Mode.SERIAL:
        stage_p = params.stage_p()
        total, alive = 0.0, 1.0
        for stage, ps in zip(params.stages, stage_p, strict=True):
            total += alive * stage.duration.mean()
            alive *= 1.0 - ps
        return total / params.test_time()
    if params.window == WindowKind.AIMD:
        return None
    if params.mode == Mode.SPECULATIVE:
        d = depth(params)
        return 1.0 if p == 0 else p / (1 - (1 - p) ** d)
    if params.runners == 1 and params.batch_size > 1:
        b = params.batch_size
        return 1 / b + 2 * p * math.log2(b)
    return None


def closed_form_runs_per_item(params: SimParams) -> float | None:
    """Speculative runs per change, D·p / (1 − (1−p)^D)."""
    if params.mode != Mode.SPECULATIVE or params.window == WindowKind.AIMD:
        return None
    p, d = params.item_p(), depth(params)
    return 1.0 if p == 0 else d * p / (1 - (1 - p) ** d)


def bound(params: SimParams) -> tuple[float, float]:
    """(makespan, runs) lower bounds: the oracle (every state tagged) for serial and
    speculative, group testing (batch heads tagged) for batch mode."""
    t, n, runners = params.test_time(), params.n, params.runners
    if params.mode == Mode.BATCH:
        runs = n * entropy(params.item_p())
        return max(t, runs * t / runners), runs
    return math.ceil(n / runners) * t, float(n)
