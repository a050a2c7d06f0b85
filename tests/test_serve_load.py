"""The load benchmark at small scale (bench/serve_load.py, run as its own process against a
`lockstep serve` process): no error, no lost submission, latencies reported."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[1] / "bench" / "serve_load.py"


def test_pollers_and_submissions_at_small_scale(tmp_path: Path) -> None:
    out = tmp_path / "serve_load.json"
    proc = subprocess.run(
        [sys.executable, str(BENCH), "--clients", "20", "--submissions", "8", "--rate", "30",
         "--interval", "0.2", "--out", str(out), "--tmp", str(tmp_path)],
        capture_output=True, text=True, timeout=180, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    doc = json.loads(out.read_text())
    assert (doc["errors"], doc["lost"], doc["submitted"]) == (0, [], 8)
    assert doc["submit"]["count"] == 8
    assert doc["poll"]["count"] >= 20, "every poller polled at least once"
    assert set(doc["per_path"]) == {"/api/queue", "/api/overview"}
    assert 0 < doc["poll"]["p50_ms"] <= doc["poll"]["p95_ms"] <= doc["poll"]["max_ms"]
