"""A pipeline candidate's tree (spec/queue.md §4, §5): the integration head with the bumps of its
items applied in queue order, assumed items first, then its own.

Applying an item that already landed sets a pin the head already holds, so the tree does not
depend on how many of the assumed items landed before it was built; the lander checks that the
tree it would land is this one all the same.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import threading
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any

from lockstep import git
from lockstep.manifest import Manifest, Pin
from lockstep.queue import candidate as candidate_mod
from lockstep.queue.freshness import descends, pin_moved
from lockstep.queue.store import Item
from lockstep.workspace import Workspace

_THREADS = threading.Lock()


@contextlib.contextmanager
def git_lock(ws: Workspace) -> Iterator[None]:
    """One git writer per clone at a time, across this worker's threads and across the
    `queue run` processes sharing the clone: concurrent fetches fail to lock refs."""
    ws.state_dir.mkdir(parents=True, exist_ok=True)
    with _THREADS, open(ws.state_dir / "git.lock", "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@dataclass(frozen=True)
class CandidateTree:
    """Where a candidate was built, its tree and manifest text, and per own item what it changed
    (the serial worker's candidate record, which `queue show` and the rejection reason read)."""

    base: str
    tree: str
    manifest: str
    records: dict[int, dict[str, Any]]


def superseded(ws: Workspace, item: Item, configuration: str, pin: Pin) -> str | None:
    """Whether `pin` (in the manifest the item's bump would apply to: the head, or an item ahead
    of it in the candidate) moved since the item's submission to a descendant of the item's
    commit: then the bump is stale and skipped, as serial mode does (spec/queue.md §3.2)."""
    since = item.submitted_base
    if since is None or not pin_moved(ws, item, configuration, pin, since):
        return None
    if descends(ws, item.component, item.sha, pin.sha):
        return f"{item.component} {pin.version}"
    return None


def build(ws: Workspace, items: Sequence[Item], own: Sequence[int], key: str,
          landing: Sequence[Item] = ()) -> CandidateTree:
    """Build the candidate of `items` (in order) on the remote head and the `landing` items
    (handed to the lander, perhaps not pushed yet); `own` are the seqs it decides on, `key`
    names its temporary index file."""
    with git_lock(ws):
        base = ws.remote_head()
        manifest = ws.manifest_at(base)
        text, records = apply_items(ws, manifest, [*landing, *items], own)
        tree = git.tree_with_file(ws.root, base, ws.manifest_path, text.encode(),
                                  ws.state_dir / f"index.{key}")
    ids = [item.id for item in items]
    for record in records.values():
        record.update(base=base, tree=tree, items=ids, manifest=text)
    return CandidateTree(base, tree, text, records)


def apply_items(ws: Workspace, manifest: Manifest, items: Sequence[Item],
                own: Sequence[int]) -> tuple[str, dict[int, dict[str, Any]]]:
    """The manifest text once every item's bumps are applied in order (a bump already pinned or
    superseded changes nothing), and for each own item the configurations it changed, their
    previous versions, and why it changes nothing (`skip`) when it does not."""
    records: dict[int, dict[str, Any]] = {}
    current = manifest
    for item in items:
        plan = candidate_mod.plan(
            component=item.component, version=item.version, sha=item.sha, digest=item.digest,
            targets=item.configurations, base=current,
            superseding_item=functools.partial(superseded, ws, item))
        if plan.bumps:
            current = Manifest(current.apply(
                [(b.configuration, item.component, b.new) for b in plan.bumps]),
                ws.manifest_path)
        if item.seq in own:
            records[item.seq] = {
                "configurations": [b.configuration for b in plan.bumps],
                "old": {b.configuration: b.old.version if b.old else None for b in plan.bumps},
                "skip": None if plan.bumps else {"reason": plan.skip_reason or "not-applicable",
                                                 "by": plan.superseded_by}}
    return current.text, records
