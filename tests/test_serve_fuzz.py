"""Schemathesis against the served OpenAPI schema: generated requests to every operation (with
the write token, so writes run too) never get a server error (5xx)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from tests.infra.serve import TOKEN, running_server
from tests.system import System

EXAMPLES = 3  # per operation and phase: about 550 requests (mostly boundary cases), < 20 s


def test_no_generated_request_gets_a_server_error(tmp_path: Path) -> None:
    pytest.importorskip("schemathesis")
    system = System.create(tmp_path / "sys", configurations=("default",))
    system.submit("alpha", "v1.1.0")
    with running_server(system.ws_dir, tmp_path / "logs") as server:
        proc = subprocess.run(
            [sys.executable, "-m", "schemathesis.cli", "run", f"{server.url}/openapi.json",
             "--checks", "not_a_server_error", "--max-examples", str(EXAMPLES), "--seed", "11",
             "--phases", "examples,coverage,fuzzing", "--generation-database", "none",
             "--request-timeout", "20", "-H", f"Authorization: Bearer {TOKEN}",
             # An event stream answers for minutes by design (test_serve_live.py covers it).
             "--exclude-path", "/api/events"],
            capture_output=True, text=True, timeout=120, check=False, cwd=tmp_path)
        log = server.log_text()
    summary = proc.stdout[-3000:]
    assert proc.returncode == 0, summary
    generated = re.search(r"(\d+) generated, (\d+) passed", proc.stdout)
    assert generated is not None and int(generated[1]) > 200, summary
    assert generated[1] == generated[2], summary
    assert re.search(r'HTTP/1\.1" 5\d\d', log) is None, "a 5xx in the server log"
    assert "Traceback" not in log, log[-3000:]
