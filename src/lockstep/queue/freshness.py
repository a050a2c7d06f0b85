"""Is a bump still worth testing (spec/queue.md §3.2)? Who superseded it since it was submitted.

A pin moved after the submission to a descendant of the bump's commit makes the bump stale; this
finds who moved it (a landed item, or a commit made by hand) so the skip can say so.
"""

from __future__ import annotations

from lockstep import git
from lockstep.errors import ConfigError, GitError, LockstepError
from lockstep.manifest import Pin
from lockstep.queue.model import parse_item_id
from lockstep.queue.store import Item
from lockstep.queue.worker_context import WorkerContext
from lockstep.workspace import Workspace


def superseding(ctx: WorkerContext, item: Item, head: str, configuration: str,
                pin: Pin) -> str | None:
    """Who moved `pin` after the item's submission to a descendant of the item's commit: the
    landed item's id, or the commit that pinned it by hand; None when the bump is tested
    (the pin predates the submission, so a downgrade is deliberate, or histories diverged)."""
    ws = ctx.ws
    since = item.submitted_base or (item.candidate or {}).get("base")
    if since is None or not pin_moved(ws, item, configuration, pin, since):
        return None
    if not git.is_ancestor(ws.root, since, head):
        return None  # history was rewritten since the submit: test the bump
    if not descends(ws, item.component, item.sha, pin.sha):
        return None
    commit = _commit_that_pinned(ws, since, head, configuration, item.component, pin.sha)
    if commit is None:
        return None
    with ctx.store.read() as c:
        for trailer in git.trailers(ws.root, commit, "Lockstep-Item"):
            try:
                other = ctx.store.item(c, parse_item_id(trailer))
            except LockstepError:
                continue
            if other.component == item.component and other.sha == pin.sha:
                return other.id
    return commit


def pin_moved(ws: Workspace, item: Item, configuration: str, pin: Pin, since: str) -> bool:
    """Whether `pin` is not the pin the manifest held at `since` (the item's submission): a pin
    that predates the submission makes a downgrade deliberate. False when `since` is not in
    this clone (a rewritten history it never fetched): the bump is tested."""
    try:
        at_submit = ws.manifest_at(since)  # cached; fails if the commit is not here
    except ConfigError:
        return False
    before = (at_submit.pin(configuration, item.component)
              if configuration in at_submit.configurations else None)
    return before is None or before.sha != pin.sha


def descends(ws: Workspace, component: str, ancestor: str, sha: str) -> bool:
    """Whether commit `sha` of a component descends from `ancestor` (fetching either into the
    component's mirror when it is missing)."""
    repo = ws.components.path(component)
    try:
        return git.is_ancestor(repo, ancestor, sha)
    except GitError:  # an object is missing from the mirror: fetch, then ask again
        ws.components.ensure(component, sha)
        ws.components.ensure(component, ancestor)
        return git.is_ancestor(repo, ancestor, sha)


def _commit_that_pinned(ws: Workspace, since: str, head: str, configuration: str,
                        component: str, sha: str) -> str | None:
    """The first-parent commit in since..head whose manifest change pinned component at
    sha in configuration (the last such change, if it happened more than once)."""
    found = None
    previous = ws.manifest_at(since)
    for commit in git.first_parent_range(ws.root, since, head):
        manifest = ws.manifest_at(commit)
        now = (manifest.pin(configuration, component)
               if configuration in manifest.configurations else None)
        was = (previous.pin(configuration, component)
               if configuration in previous.configurations else None)
        if now is not None and now.sha == sha and (was is None or was.sha != sha):
            found = commit
        previous = manifest
    return found
