"""Speculative and batch modes end to end on real git (spec/queue.md §4, §5; Q10, Q11, Q13):
the same submissions processed in serial mode and in a pipeline mode land the same items, in
the same order, with the same tag trees."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

from sqlalchemy import select

from lockstep.queue import schema as s
from lockstep.queue.model import State
from tests.system import System, sh

BAD = ("beta", "v1.2.0")


def twin(system: System, dest: Path) -> System:
    """A copy of a fresh system (same component SHAs), its workspace pointed at its own remote."""
    shutil.copytree(system.root, dest, symlinks=True)
    other = System(root=dest, ws_dir=dest / "integration",
                   remote=dest / "remotes" / "integration.git", rules=dest / "rules.json",
                   sources={k: dest / "src" / k for k in system.sources},
                   shas=dict(system.shas))
    sh(["remote", "set-url", "origin", str(other.remote)], other.ws_dir)
    other.edit_config(lambda text: text.replace(str(system.rules), str(other.rules)),
                      "stages record to this system's rules file")
    return other


def landed_manifests(system: System) -> list[tuple[str, str]]:
    """(tag's items, its manifest blob) per tag on the remote, in landing order (the trees
    differ only by lockstep.toml's [queue] table)."""
    tags = system.remote_tags()
    order = system.commits()[::-1]
    found = []
    for name, commit in sorted(tags.items(), key=lambda kv: order.index(kv[1])):
        message = sh(["cat-file", "-p", name], system.remote)
        items = [line.split()[0] for line in message.splitlines() if line.startswith("  q")]
        found.append((" ".join(items), sh(["rev-parse", f"{commit}:manifest.toml"],
                                          system.remote)))
    return found


def submit_all(system: System, bumps: list[tuple[str, str]]) -> list[str]:
    """Submit the bumps in order; their ids."""
    return [system.submit(component, version).id for component, version in bumps]


BUMPS = [("alpha", "v1.1.0"), ("beta", "v1.1.0"), ("beta", "v1.2.0"), ("gamma", "v1.1.0"),
         ("alpha", "v1.2.0"), ("gamma", "v1.2.0")]


def test_speculative_lands_what_serial_lands(tmp_path: Path) -> None:
    """Q10: P = 4, six items, the third bad: it is rejected once, at the head; the items behind
    it that were tested on top of it are retested without it; the rest land, one tag each,
    with exactly serial mode's trees."""
    serial = System.create(tmp_path / "serial", stages=("check",))
    serial.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    spec = twin(serial, tmp_path / "spec")
    spec.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    spec.set_queue_settings(mode="speculative", runners=4)
    serial.set_queue_settings(kill_grace=2)  # the same number of commits before the queue runs
    ids = submit_all(serial, BUMPS)
    assert submit_all(spec, BUMPS) == ids

    serial_report = serial.run_queue()
    spec_report = spec.run_queue()

    assert spec_report.landed == serial_report.landed == [ids[0], ids[1], ids[3], ids[4], ids[5]]
    assert spec_report.rejected == serial_report.rejected == [ids[2]]
    assert landed_manifests(spec) == landed_manifests(serial)
    tested = {r["candidate"] for r in spec.gate_runs()}
    assert {spec.tree_of(tag) for tag in spec.remote_tags()} <= tested
    assert spec.item(ids[2]).outcome["kind"] == "stage-failed"
    assert spec.item(ids[2]).outcome["log_tail"], "the rejection carries the failed run's log"
    # The item behind the bad one was first built on top of it, then rebuilt without it.
    store = spec.store()
    with store.read() as c:
        rows = c.execute(select(s.candidates.c["items"], s.candidates.c.own, s.candidates.c.state,
                                s.candidates.c.why)).all()
    store.close()
    behind = [(json.loads(items), state, why) for items, own, state, why in rows
              if json.loads(own) == [ids[3]]]
    assert behind[0][0][-2:] == [ids[2], ids[3]] and behind[0][1:] == ("discarded", "rebuilt")
    assert ids[2] not in behind[-1][0] and behind[-1][1] == "landed"
    assert len({r["item"] for r in spec.gate_runs()}) == len(ids)
    for state in (spec.item(i).state for i in ids):
        assert state in (State.LANDED, State.REJECTED)


def test_batch_lands_one_tag_listing_its_items(tmp_path: Path) -> None:
    """Q13: a batch of four with one culprit is split until the culprit is isolated; the
    passing parts land, each as one tag listing its items; serial mode lands the same items
    (the batch's tags are coarser, so the final tree is compared)."""
    serial = System.create(tmp_path / "serial", stages=("check",))
    serial.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    batch = twin(serial, tmp_path / "batch")
    batch.set_rules({"check": {"fail_if": [list(BAD)], "exit": 3}})
    batch.set_queue_settings(mode="batch", runners=1, batch_size=4, batch_max_wait=0,
                             bisect_ways=2)
    # Four items changing four different (component, configuration) pins: one batch.
    bumps = [("alpha", "v1.1.0", ["default"]), ("beta", "v1.2.0", []), ("gamma", "v1.1.0", []),
             ("alpha", "v1.2.0", ["edge"])]
    ids = [serial.submit(c, v, configs).id for c, v, configs in bumps]
    assert [batch.submit(c, v, configs).id for c, v, configs in bumps] == ids
    serial.run_queue()
    report = batch.run_queue()

    assert sorted(report.landed) == [ids[0], ids[2], ids[3]]
    assert report.rejected == [ids[1]]
    assert batch.manifest_at("refs/heads/main") == serial.manifest_at("refs/heads/main")
    tags = landed_manifests(batch)
    assert [items for items, _ in tags] == [ids[0], f"{ids[2]} {ids[3]}"]
    # Every tagged tree was tested: it is the candidate tree of a run.
    tested = {r["candidate"] for r in batch.gate_runs()}
    assert {batch.tree_of(tag) for tag in batch.remote_tags()} <= tested
