"""A pipeline candidate's tree (spec/queue.md §4, §5): the integration head with the bumps of its
items applied in queue order, assumed items first, then its own.

Applying an item that already landed sets a pin the head already holds, so the tree does not
depend on how many of the assumed items landed before it was built; the lander checks that the
tree it would land is this one all the same.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from lockstep import git
from lockstep.manifest import Manifest
from lockstep.queue import candidate as candidate_mod
from lockstep.queue.store import Item
from lockstep.workspace import Workspace

# One git writer per process: fetches and index files of the integration clone are not safe to
# share between threads.
GIT_LOCK = threading.Lock()


@dataclass(frozen=True)
class CandidateTree:
    """Where a candidate was built, its tree and manifest text, and per own item what it changed
    (the serial worker's candidate record, which `queue show` and the rejection reason read)."""

    base: str
    tree: str
    manifest: str
    records: dict[int, dict[str, Any]]


def build(ws: Workspace, items: Sequence[Item], own: Sequence[int], key: str) -> CandidateTree:
    """Build the candidate of `items` (in order) on the remote head; `own` are the seqs it
    decides on, `key` names its temporary index file."""
    with GIT_LOCK:
        base = ws.remote_head()
        manifest = ws.manifest_at(base)
        text, records = apply_items(manifest, items, own, ws.manifest_path)
        tree = git.tree_with_file(ws.root, base, ws.manifest_path, text.encode(),
                                  ws.state_dir / f"index.{key}")
    ids = [item.id for item in items]
    for record in records.values():
        record.update(base=base, tree=tree, items=ids, manifest=text)
    return CandidateTree(base, tree, text, records)


def apply_items(manifest: Manifest, items: Sequence[Item], own: Sequence[int],
                source: str) -> tuple[str, dict[int, dict[str, Any]]]:
    """The manifest text once every item's bumps are applied in order, and for each own item
    the configurations it changed and their previous versions."""
    records: dict[int, dict[str, Any]] = {}
    current = manifest
    for item in items:
        plan = candidate_mod.plan(
            component=item.component, version=item.version, sha=item.sha, digest=item.digest,
            targets=item.configurations, base=current, superseding_item=lambda _c, _p: None)
        if plan.bumps:
            current = Manifest(current.apply(
                [(b.configuration, item.component, b.new) for b in plan.bumps]), source)
        if item.seq in own:
            records[item.seq] = {
                "configurations": [b.configuration for b in plan.bumps],
                "old": {b.configuration: b.old.version if b.old else None for b in plan.bumps}}
    return current.text, records
