"""The `lockstep.sim/v1` JSON document (§7) and the plain-text table."""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from lockstep.sim.runner import RowResult, percentile, row_json

SCHEMA = "lockstep.sim/v1"


def document(rows: Sequence[RowResult], serials: Sequence[RowResult], params: dict[str, Any],
             wall_s: float) -> dict[str, Any]:
    """The whole result: schema, version, inputs, rows, and the wall-clock `timing` block (the
    only part that differs between two runs of the same inputs)."""
    import lockstep

    decide_ns = [ns for row in rows for ns in row.decide_ns]
    p50 = percentile([float(v) for v in decide_ns], 50)
    p95 = percentile([float(v) for v in decide_ns], 95)
    return {
        "schema": SCHEMA,
        "lockstep": lockstep.__version__,
        "params": params,
        "rows": [row_json(row, serial) for row, serial in zip(rows, serials, strict=True)],
        "timing": {"wall_s": round(wall_s, 3),
                   "decision_us_p50": None if p50 is None else round(p50 / 1000, 2),
                   "decision_us_p95": None if p95 is None else round(p95 / 1000, 2)},
    }


def dumps(doc: dict[str, Any]) -> str:
    """Stable JSON text."""
    return json.dumps(doc, indent=2, sort_keys=True) + "\n"


def table(doc: dict[str, Any]) -> str:
    """The rows as an aligned plain-text table."""
    head = ("mode", "p", "P", "W", "wall/T", "±SE", "speed-up", "runs/item", "bound runs",
            "wasted", "ttl p50 s", "ttl p95 s", "closed")
    lines = [head]
    for row in doc["rows"]:
        se = row["makespan_se_s"] * row["per_item_T"] / row["makespan_s"] \
            if row["makespan_s"] else 0.0
        lines.append((
            row["mode"], f"{row['p']:g}", str(row["runners"]), str(row["window"]),
            f"{row['per_item_T']:.4f}", f"{se:.4f}", f"{row['speedup_vs_serial']:.2f}×",
            f"{row['runs_per_item']:.3f}", f"{row['bound_runs'] / row['n']:.3f}",
            f"{row['wasted_runs']:.1f}", f"{row['ttl_p50_s']:.0f}" if row["ttl_p50_s"] is not
            None else "-", f"{row['ttl_p95_s']:.0f}" if row["ttl_p95_s"] is not None else "-",
            "-" if row["closed_form_per_item_T"] is None else
            f"{row['closed_form_per_item_T']:.4f}"))
    widths = [max(len(line[k]) for line in lines) for k in range(len(head))]
    return "\n".join("  ".join(cell.rjust(w) for cell, w in zip(line, widths, strict=True))
                     for line in lines)
