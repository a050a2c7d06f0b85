"""Distributions end to end on real git remotes: built after each landing from the tag's frozen
manifest, recorded with digests, published per release, verified, retried after a failure."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import pytest

from lockstep import git
from lockstep.queue.model import State
from tests.dist_system import dist_rows, dist_system, events, set_dist_rules
from tests.system import wait_for


@pytest.mark.parametrize("mode", ["serial", "speculative"])
def test_three_landings_give_three_distributions_in_tag_order(tmp_path: Path,
                                                              mode: str) -> None:
    system = dist_system(tmp_path)
    if mode != "serial":
        system.set_queue_settings(mode=mode, runners=3)
    for name in ("alpha", "beta", "gamma"):
        system.submit(name, "v1.1.0")
    report = system.run_queue()
    assert len(report.landed) == 3
    rows = dist_rows(system)
    tags = sorted(system.remote_tags(), key=lambda t: [int(x) for x in t.lstrip("v").split(".")])
    assert [r["tag"] for r in rows] == tags and len(tags) == 3
    assert [r["state"] for r in rows] == ["published"] * 3
    assert [r["landing_id"] for r in rows] == sorted(r["landing_id"] for r in rows)
    # Built in tag order: each one published before the next one's row changed.
    assert [r["updated_at"] for r in rows] == sorted(r["updated_at"] for r in rows)
    for i, row in enumerate(rows):
        published = Path(row["published_to"]["path"])
        assert published == system.ws_dir / ".lockstep" / "dist" / row["tag"]
        assert {a["path"] for a in row["artifacts"]} == {"bundle.txt", "meta/release.json"}
        for a in row["artifacts"]:
            data = (published / a["path"]).read_bytes()
            assert hashlib.sha256(data).hexdigest() == a["sha256"] and len(data) == a["size"]
        bundle = (published / "bundle.txt").read_text()
        manifest = system.manifest_at(row["tag"])
        assert bundle.startswith(f"release {row['tag']}\n")
        for j, name in enumerate(("alpha", "beta", "gamma")):
            version = "v1.1.0" if j <= i else "v1.0.0"
            assert manifest["default"][name]["version"] == version
            assert f"{name} {version} \n" in bundle
        env = json.loads((published / "meta" / "release.json").read_text())
        assert env["LOCKSTEP_RELEASE"] == row["tag"]
        assert row["manifest_digest"] == "sha256:" + hashlib.sha256(
            git.run(["show", f"{row['tag']}:manifest.toml"], system.remote).stdout).hexdigest()
        record = json.loads((system.ws_dir / ".lockstep" / "distributions"
                             / f"{row['tag']}.json").read_text())
        assert record["artifacts"] == row["artifacts"] and record["state"] == "published"
        proc = system.cli("dist", "verify", row["tag"])
        assert proc.returncode == 0, proc.stderr
        assert "2 artifact(s) verified" in proc.stdout
    latest = json.loads((system.ws_dir / ".lockstep" / "dist" / "latest.json").read_text())
    assert latest == {"tag": tags[-1]}
    listed = json.loads(system.cli("dist", "list", "--json").stdout)
    assert [d["tag"] for d in listed] == tags
    newest = (system.ws_dir / ".lockstep" / "distributions" / f"{tags[-1]}.json").read_text()
    rebuilt = system.cli("dist", "build", tags[0])  # an older tag built again, last
    assert rebuilt.returncode == 0, rebuilt.stderr
    assert json.loads((system.ws_dir / ".lockstep" / "dist" / "latest.json").read_text()) == {
        "tag": tags[-1]}
    assert (system.ws_dir / ".lockstep" / "distributions"
            / f"{tags[-1]}.json").read_text() == newest
    assert dist_rows(system)[0]["attempts"] == 2


def test_build_uses_the_tag_not_the_branch(tmp_path: Path) -> None:
    system = dist_system(tmp_path)
    fifo = tmp_path / "build.fifo"
    os.mkfifo(fifo)
    set_dist_rules(system, {"fifo": str(fifo)})
    system.submit("alpha", "v1.1.0")
    worker = system.start_worker()
    started = Path(f"{fifo}.started")
    wait_for(started.exists, what="the distribution command to block", proc=worker)
    (tag,) = system.remote_tags()
    tagged = system.remote_tags()[tag]
    moved = system.commit_elsewhere(
        lambda clone: (clone / "manifest.toml").write_text(
            (clone / "manifest.toml").read_text().replace(
                system.shas[("alpha", "v1.1.0")], system.shas[("alpha", "v1.3.0")]).replace(
                'version = "v1.1.0"', 'version = "v1.3.0"')),
        "move alpha on the branch during the build")
    assert system.remote_head() == moved != tagged
    with open(fifo, "w") as fh:  # release the build
        fh.write("go")
    _out, err = worker.communicate(timeout=120)
    assert worker.returncode == 0, err
    (row,) = dist_rows(system)
    assert row["tag"] == tag and row["state"] == "published"
    bundle = (Path(row["published_to"]["path"]) / "bundle.txt").read_text()
    assert "alpha v1.1.0 \n" in bundle and "v1.3.0" not in bundle
    assert system.shas[("alpha", "v1.1.0")] in bundle


def test_failed_build_stays_landed_is_notified_and_retried(tmp_path: Path) -> None:
    system = dist_system(tmp_path)
    set_dist_rules(system, {"fail": True})
    item = system.submit("beta", "v1.2.0")
    report = system.run_queue()
    assert report.landed == [item.id]
    assert system.item(item.id).state == State.LANDED
    (tag,) = system.remote_tags()
    (row,) = dist_rows(system)
    assert row["state"] == "failed" and "exited 1" in row["error"]
    assert "failing as the rules say" in Path(row["log"]).read_text()
    assert not (system.ws_dir / ".lockstep" / "dist" / tag).exists()
    (event,) = events(system)
    assert event["event"] == "distribution-failed" and event["tag"] == tag
    assert event["owners"] == ["release@example.com"]
    assert any("failing as the rules say" in line for line in event["log_tail"])
    shown = system.cli("dist", "show", tag)
    assert shown.returncode == 0 and "failed" in shown.stdout and "failing as" in shown.stdout
    again = system.cli("dist", "build", tag)  # still failing: exit 1, still failed
    assert again.returncode == 1 and "failed" in again.stderr
    set_dist_rules(system, {})
    fixed = system.cli("dist", "build", tag)
    assert fixed.returncode == 0, fixed.stderr
    (row,) = dist_rows(system)
    assert row["state"] == "published" and row["attempts"] == 3 and row["error"] is None
    assert system.remote_tags() == {tag: system.remote_head()}  # never moved for it
    assert system.cli("dist", "verify", tag).returncode == 0


def test_tampered_file_fails_verify_naming_it(tmp_path: Path) -> None:
    system = dist_system(tmp_path)
    system.submit("gamma", "v1.1.0")
    system.run_queue()
    (row,) = dist_rows(system)
    path = Path(row["published_to"]["path"]) / "meta" / "release.json"
    path.write_text(path.read_text() + " ")
    proc = system.cli("dist", "verify", row["tag"])
    assert proc.returncode == 1
    assert "meta/release.json" in proc.stderr and "recorded" in proc.stderr
