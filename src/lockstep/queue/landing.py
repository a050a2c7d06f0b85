"""Landing a passed candidate and repairing a half-done landing (spec/queue.md §2.3, §2.4).

The journal row holds every input of the commit and tag objects, so recreating them gives the
same SHAs; `reconcile` looks at the remote and converges from whatever point a crash left.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from lockstep import faults, git
from lockstep.errors import GitError
from lockstep.manifest import Manifest
from lockstep.queue.store import Item
from lockstep.workspace import Workspace

MAX_TAG_N = 100_000


class Result(StrEnum):
    """How a reconcile ended."""

    LANDED = "landed"
    UNDONE = "undone"


@dataclass(frozen=True)
class Outcome:
    """The result of reconciling a journal row."""

    result: Result
    commit: str | None = None
    tag: str | None = None
    tag_object: str | None = None
    renamed_tag: str | None = None


def tag_pattern(fmt: str, when: datetime) -> re.Pattern[str]:
    """A regex matching this month's tags of a tag format, capturing N."""
    marker = "\x00"
    text = fmt.replace("{n}", marker).format(year=when.year, month=when.month)
    return re.compile("^" + re.escape(text).replace(marker, "([0-9]+)") + "$")


def next_tag_name(fmt: str, taken: set[str], when: datetime) -> str:
    """1 + the highest N of this month's tags (remote and local names both count)."""
    pattern = tag_pattern(fmt, when)
    highest = 0
    for name in taken:
        m = pattern.match(name)
        if m:
            highest = max(highest, int(m.group(1)))
    return fmt.format(year=when.year, month=when.month, n=highest + 1)


def _bump_line(item: Item, cand: dict[str, Any]) -> str:
    """`<component> <old> → <new>`: what one item changes."""
    olds = sorted({v or "(none)" for v in cand["old"].values()})
    return f"{item.component} {'/'.join(olds)} → {item.version}"


def commit_message(item: Item, cand: dict[str, Any], landing_id: int) -> str:
    """`Bump <component> <old> → <new> (<id>)` with the landing and item trailers."""
    return (
        f"Bump {_bump_line(item, cand)} ({item.id})\n\n"
        f"Configurations: {', '.join(cand['configurations'])}\n"
        f"Commit: {item.sha}\n\n"
        f"Lockstep-Landing: {landing_id}\n"
        f"Lockstep-Item: {item.id}\n"
    )


def commit_message_of(entries: list[tuple[Item, dict[str, Any]]], landing_id: int) -> str:
    """One item: as `commit_message`. Several (a batch): `Land <k> items (<ids>)`, a line per
    item, then the landing trailer and an item trailer per item, in landing order."""
    if len(entries) == 1:
        return commit_message(*entries[0], landing_id)
    ids = ", ".join(item.id for item, _ in entries)
    lines = [f"Land {len(entries)} items ({ids})", ""]
    lines += [f"Bump {_bump_line(item, cand)} ({item.id}, {item.sha[:12]}; "
              f"{', '.join(cand['configurations'])})" for item, cand in entries]
    lines += ["", f"Lockstep-Landing: {landing_id}"]
    lines += [f"Lockstep-Item: {item.id}" for item, _ in entries]
    return "\n".join(lines) + "\n"


def tag_message(name: str, item: Item, cand: dict[str, Any]) -> str:
    """`Integration release <T>`, the item, then the frozen manifest of every configuration."""
    return tag_message_of(name, [(item, cand)], cand["manifest"])


def tag_message_of(name: str, entries: list[tuple[Item, dict[str, Any]]],
                   manifest_text: str) -> str:
    """`Integration release <T>`, its items, then the frozen manifest of every configuration."""
    manifest = Manifest(manifest_text)
    lines = [f"Integration release {name}", "", "Items:"]
    lines += [f"  {item.id} {_bump_line(item, cand)} ({item.sha[:12]})" for item, cand in entries]
    lines.append("")
    for configuration in manifest.configurations:
        lines.append(f"[{configuration}]")
        for component, pin in manifest.pins(configuration).items():
            digest = f" {pin.digest}" if pin.digest else ""
            lines.append(f"  {component} {pin.version} {pin.sha}{digest}")
    return "\n".join(lines) + "\n"


def remote_tags(ws: Workspace) -> dict[str, str]:
    """Tag name → peeled commit SHA on the integration remote."""
    refs = git.ls_remote(ws.root, ws.remote, "refs/tags/*")
    tags: dict[str, str] = {}
    for ref, sha in refs.items():
        name = ref.removeprefix("refs/tags/")
        if name.endswith("^{}"):
            tags[name[:-3]] = sha
        else:
            tags.setdefault(name, sha)
    return tags


def identity(journal: dict[str, Any]) -> git.Identity:
    """The fixed author/committer/tagger of a journal row."""
    return git.Identity(journal["who_name"], journal["who_email"], journal["timestamp"])


def create_objects(ws: Workspace, journal: dict[str, Any], manifest_text: str) -> tuple[str, str]:
    """(Re)create the landing's commit and tag; same journal → same SHAs."""
    who = identity(journal)
    try:
        commit = git.commit_tree(ws.root, journal["tree"], journal["base"],
                                 journal["commit_message"], who)
    except GitError:  # the tree was made in another clone: make it again (same SHA)
        index = ws.state_dir / f"index.landing.{journal['id']}"
        tree = git.tree_with_file(
            ws.root, journal["base"], ws.manifest_path, manifest_text.encode(), index
        )
        commit = git.commit_tree(ws.root, tree, journal["base"], journal["commit_message"], who)
    faults.crashpoint("after-commit")
    tag = git.make_tag(ws.root, journal["tag_name"], commit, journal["tag_message"], who)
    faults.crashpoint("after-tag")
    return commit, tag


def reconcile(ws: Workspace, journal: dict[str, Any], manifest_text: str,
              fresh: bool = False) -> Outcome:
    """Drive one journal row to landed or undone, whatever state the repo and remote are in.

    `fresh` means the journal was just written by this worker, so nothing of it can be on the
    remote yet: try the atomic push at once, and look at the remote only if it is refused.
    """
    name = journal["tag_name"]
    base = journal["base"]
    branch_ref = f"refs/heads/{ws.branch}"
    if fresh:
        commit, tag = create_objects(ws, journal, manifest_text)
        try:
            _push(ws, [f"{commit}:{branch_ref}", f"refs/tags/{name}:refs/tags/{name}"],
                  lease=f"{branch_ref}:{base}")
        except GitError:
            pass  # the base moved or the name was taken: decide from the remote below
        else:
            faults.crashpoint("after-push")
            return Outcome(Result.LANDED, commit, name, tag)
    head = ws.remote_head()
    tags = remote_tags(ws)
    commit, tag = create_objects(ws, journal, manifest_text)
    if name in tags and tags[name] != commit:
        # (b) someone else took the name: pick the next free one; the caller rewrites the journal.
        git.delete_local_tag(ws.root, name)
        when = datetime.fromtimestamp(journal["timestamp"], UTC)
        new = next_tag_name(ws.config.integration.tag_format, set(tags), when)
        return Outcome(Result.UNDONE, renamed_tag=new)
    if name in tags:
        # (a) the tag is on the remote at our commit.
        if head == base:
            _push(ws, [f"{commit}:{branch_ref}"], lease=f"{branch_ref}:{base}")
        elif not git.is_ancestor(ws.root, commit, head):
            return _undo(ws, name)
        return Outcome(Result.LANDED, commit, name, tag)
    if head == base:
        # (c) nothing of ours is on the remote: push branch and tag atomically.
        _push(ws, [f"{commit}:{branch_ref}", f"refs/tags/{name}:refs/tags/{name}"],
              lease=f"{branch_ref}:{base}")
        faults.crashpoint("after-push")
        return Outcome(Result.LANDED, commit, name, tag)
    if git.is_ancestor(ws.root, commit, head):
        # (d) the branch has our commit but the tag is missing.
        _push(ws, [f"refs/tags/{name}:refs/tags/{name}"])
        faults.crashpoint("after-push")
        return Outcome(Result.LANDED, commit, name, tag)
    # (e) the base moved under us: nothing of ours was published.
    return _undo(ws, name)


def _undo(ws: Workspace, name: str) -> Outcome:
    git.delete_local_tag(ws.root, name)
    return Outcome(Result.UNDONE)


def _push(ws: Workspace, refspecs: list[str], lease: str | None = None) -> None:
    try:
        git.push(ws.root, ws.remote, refspecs, lease=lease, atomic=True)
    except GitError as exc:
        raise GitError(
            f"push to {ws.remote!r} was refused: {exc.message}",
            "the next `lockstep queue run` re-checks the remote and repairs the landing",
        ) from None


def fast_forward_checkout(ws: Workspace, commit: str) -> bool:
    """Move the local integration branch (and its tracking ref) to a landed commit.

    Only a fast-forward: a checkout with local commits or conflicting edits is left alone.
    """
    git.run(["update-ref", f"refs/remotes/{ws.remote}/{ws.branch}", commit], ws.root)
    current = git.out(["symbolic-ref", "--quiet", "--short", "HEAD"], ws.root, check=False)
    if current != ws.branch:
        local = git.rev_parse(ws.root, f"refs/heads/{ws.branch}")
        if local is None or git.is_ancestor(ws.root, local, commit):
            git.run(["update-ref", f"refs/heads/{ws.branch}", commit], ws.root)
            return True
        return False
    proc = git.run(["merge", "--ff-only", "--quiet", commit], ws.root, check=False)
    return proc.returncode == 0
