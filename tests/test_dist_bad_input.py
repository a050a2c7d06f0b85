"""Bad input to distributions: a command that cannot start, writes a symlink out of its
directory, or produces nothing → failed with a clear error, recorded, nothing published; a
`[distribution]` table that is wrong → one line, exit 2, nothing changed."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockstep.queue.model import State
from tests.dist_system import dist_rows, dist_system, events, set_dist_rules
from tests.system import System


@pytest.mark.parametrize(("rules", "error"), [
    ({"symlink": "/etc/hosts"}, "symlink escape -> /etc/hosts"),
    ({"empty": True}, "produced no artifact"),
])
def test_bad_artifacts_fail_and_publish_nothing(tmp_path: Path, rules: dict[str, object],
                                                error: str) -> None:
    system = dist_system(tmp_path)
    set_dist_rules(system, rules)
    item = system.submit("alpha", "v1.1.0")
    system.run_queue()
    assert system.item(item.id).state == State.LANDED
    (row,) = dist_rows(system)
    assert row["state"] == "failed" and error in row["error"]
    assert row["artifacts"] == [] and row["published_to"] is None
    assert not (system.ws_dir / ".lockstep" / "dist").exists()
    assert [e["tag"] for e in events(system)] == [row["tag"]]


def test_missing_program_fails_clearly(tmp_path: Path) -> None:
    system = dist_system(tmp_path)
    system.edit_config(lambda t: t.replace("[distribution]\ncommand = [",
                                           '[distribution]\ncommand = ["/nonexistent/dist", ', 1))
    system.submit("beta", "v1.1.0")
    system.run_queue()
    (row,) = dist_rows(system)
    assert row["state"] == "failed"
    assert "'/nonexistent/dist' could not start" in row["error"]
    assert "cannot start stage command" in Path(row["log"]).read_text()
    assert not (system.ws_dir / ".lockstep" / "dist").exists()


@pytest.mark.parametrize(("table", "message"), [
    ('[distribution]\ncommand = []\n', "distribution.command"),
    ('[distribution]\ncommand = ["make"]\npublish = "oci"\n', "needs repository"),
    ('[distribution]\ncommand = ["make"]\nrepository = "r.example/x"\n',
     "repository belongs to publish"),
    ('[distribution]\ncommand = ["make"]\ntimeout = 0\n', "distribution.timeout"),
    ('[distribution]\ncommand = ["make"]\ndirectory = "../out"\n', "distribution.directory"),
    ('[distribution]\ncommand = ["make"]\nbefore_landing = true\n', "before_landing"),
    ('[distribution]\ncommand = ["make"]\npass_env = ["LOCKSTEP_X"]\n', "LOCKSTEP_"),
    ('[distribution]\ncommand = ["make"]\nretries = -1\n', "distribution.retries"),
])
def test_bad_distribution_table_is_one_line_exit_2(system: System, table: str,
                                                  message: str) -> None:
    toml = system.ws_dir / "lockstep.toml"
    toml.write_text(toml.read_text() + "\n" + table)
    proc = system.cli("dist", "list")
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and message in lines[0]
    assert not (system.ws_dir / ".lockstep" / "queue.db").exists()
