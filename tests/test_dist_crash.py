"""Crash tests: a worker SIGKILLed while a distribution builds or publishes; the next `queue run`
completes it, with one record and one published directory per tag.

Each test first asserts the state at the moment of the kill, read from the outside."""

from __future__ import annotations

import signal
from pathlib import Path

from lockstep.queue.model import State
from tests.dist_system import dist_rows, dist_system
from tests.system import System


def _crash(tmp_path: Path, point: str) -> tuple[System, str, Path]:
    system = dist_system(tmp_path)
    item = system.submit("alpha", "v1.2.0")
    worker = system.start_worker("--test-crash-at", point)
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == -signal.SIGKILL, err
    assert system.item(item.id).state == State.LANDED  # the landing was recorded first
    (tag,) = system.remote_tags()
    return system, tag, system.ws_dir / ".lockstep" / "dist"


def test_kill_during_build_is_completed_by_the_next_run(tmp_path: Path) -> None:
    system, tag, dist = _crash(tmp_path, "dist-during-build")
    (row,) = dist_rows(system)
    assert row["state"] == "building" and row["attempts"] == 1 and row["artifacts"] == []
    assert not (dist / tag).exists() and not (dist / f".{tag}.part").exists()
    assert not (system.ws_dir / ".lockstep" / "distributions" / f"{tag}.json").exists()
    system.run_queue()
    (row,) = dist_rows(system)
    assert row["state"] == "published" and row["attempts"] == 2
    assert sorted(p.name for p in dist.iterdir()) == sorted([tag, "latest.json"])
    assert sorted(p.name for p in (system.ws_dir / ".lockstep" / "distributions").iterdir()) \
        == [f"{tag}.json"]
    assert system.cli("dist", "verify", tag).returncode == 0


def test_kill_during_publish_is_completed_by_the_next_run(tmp_path: Path) -> None:
    system, tag, dist = _crash(tmp_path, "dist-during-publish")
    (row,) = dist_rows(system)
    assert row["state"] == "publishing" and row["attempts"] == 1
    assert {a["path"] for a in row["artifacts"]} == {"bundle.txt", "meta/release.json"}
    staged = dist / f".{tag}.part"
    assert (staged / "bundle.txt").is_file() and not (dist / tag).exists()
    system.run_queue()
    (row,) = dist_rows(system)
    assert row["state"] == "published" and row["attempts"] == 1  # published, not rebuilt
    assert sorted(p.name for p in dist.iterdir()) == sorted([tag, "latest.json"])
    assert system.cli("dist", "verify", tag).returncode == 0
