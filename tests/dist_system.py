"""A sample system whose lockstep.toml has a `[distribution]` (tests/dist_command.py) and a
command notifier that appends every `distribution-failed` event to a file."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from lockstep.distribution import journal
from tests.system import System

DIST_COMMAND = Path(__file__).with_name("dist_command.py")


def dist_system(tmp: Path) -> System:
    """Three components, stages that pass, a distribution built by dist_command.py."""
    rules = tmp / "dist-rules.json"
    events = tmp / "events.jsonl"
    hook = ("import sys; open(sys.argv[1], 'ab').write(sys.stdin.buffer.read() + b'\\\\n')")
    extra = (
        "[distribution]\n"
        f'command = ["{sys.executable}", "{DIST_COMMAND}", "{rules}"]\n'
        "timeout = 60\n\n"
        "[[notifiers]]\n"
        'name = "owners"\ntype = "command"\n'
        f'command = ["{sys.executable}", "-c", "{hook}", "{events}"]\n'
        'events = ["distribution-failed"]\n'
    )
    system = System.create(tmp, extra_config=extra)
    system.edit_config(lambda t: t.replace(
        '[integration]\n', '[integration]\nowners = ["release@example.com"]\n', 1))
    return system


def set_dist_rules(system: System, rules: dict[str, Any]) -> None:
    """What dist_command.py does on its next run."""
    (system.root / "dist-rules.json").write_text(json.dumps(rules))


def events(system: System) -> list[dict[str, Any]]:
    """The distribution-failed events the command notifier received."""
    path = system.root / "events.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def dist_rows(system: System) -> list[dict[str, Any]]:
    """The distribution journal, oldest release first, each with its artifacts."""
    store = system.store()
    journal.ensure_tables(store)
    with store.read() as c:
        return [journal.decode(r, journal.artifacts_of(c, r["tag"])) | {
            "landing_id": r["landing_id"]} for r in journal.rows(c)]
