"""The queue simulator (spec/queue.md §7): the real scheduler on a virtual clock, seeded.

`simulate` runs one parameter set for many repetitions; `run_grid` adds the serial baselines and
`document` renders the `lockstep.sim/v1` JSON. Scheduling is exactly `pipeline.decide`.
"""

from lockstep.sim.params import Distribution, SimParams, SimStage
from lockstep.sim.report import document
from lockstep.sim.runner import RowResult, run_grid, simulate

__all__ = [
    "Distribution",
    "RowResult",
    "SimParams",
    "SimStage",
    "document",
    "run_grid",
    "simulate",
]
