"""Integration releases (the tags the queue lands): listed from the integration remote as
`release cut` finds them, each with its manifest and the pins its landing changed
(`manifest diff` between the tag's commit and its parent)."""

from __future__ import annotations

from typing import Any

from lockstep import git, names
from lockstep import manifest as manifest_mod
from lockstep.errors import GitError, NotFoundError
from lockstep.release import plan as release_plan
from lockstep.workspace import Workspace


def tags_newest_first(ws: Workspace) -> list[tuple[str, str]]:
    """(tag, commit) of every integration release on the remote, newest first (by the tag
    format's year, month and number, the order `release cut` picks the newest by)."""
    tags = release_plan.integration_tags(ws)
    pattern = release_plan.tag_regex(ws.config.integration.tag_format)

    def key(name: str) -> tuple[int, int, int]:
        m = pattern.fullmatch(name)
        d = m.groupdict() if m else {}
        return int(d.get("year") or 0), int(d.get("month") or 0), int(d.get("n") or 0)

    return sorted(tags.items(), key=lambda kv: key(kv[0]), reverse=True)


def _present(ws: Workspace, tag: str, commit: str) -> None:
    """Fetch the tag's commit when this clone does not have it (landed by another machine)."""
    if not git.has_object(ws.root, commit):
        git.fetch(ws.root, ws.remote, f"refs/tags/{tag}")


def _parent(ws: Workspace, commit: str) -> str | None:
    return git.rev_parse(ws.root, f"{commit}^")


def summary(ws: Workspace, tag: str, commit: str) -> dict[str, Any]:
    """The release and what its landing changed (against the commit's first parent)."""
    _present(ws, tag, commit)
    parent = _parent(ws, commit)
    new = ws.manifest_at(commit)
    changes: list[dict[str, Any]] = []
    if parent is not None:
        try:
            old = ws.manifest_at(parent)
        except (GitError, NotFoundError):
            old = None
        if old is not None:
            changes = [c.to_dict() for c in manifest_mod.diff(old, new)]
    return {"tag": tag, "commit": commit, "parent": parent, "changes": changes}


def recent(ws: Workspace, limit: int) -> dict[str, Any]:
    """The newest `limit` integration releases with their changes, and how many exist."""
    tags = tags_newest_first(ws)
    return {"releases": [summary(ws, t, c) for t, c in tags[:limit]], "total": len(tags)}


def one(ws: Workspace, tag: str, against: str | None) -> dict[str, Any]:
    """One integration release: its manifest and its changes, against its parent commit or
    against another release or commit (`manifest diff AGAINST TAG`)."""
    names.ref_name(tag, "tag")
    found = dict(tags_newest_first(ws))
    if tag not in found:
        newest = ", ".join(list(found)[:5]) or "none yet"
        raise NotFoundError(f"no integration release {tag!r} on the integration remote",
                            f"newest: {newest}")
    out = summary(ws, tag, found[tag])
    new = ws.manifest_at(found[tag])
    if against is not None:
        base = found.get(against)
        if base is not None:
            _present(ws, against, base)
        else:
            base = ws.resolve_commit(against)
        out["changes"] = [c.to_dict() for c in manifest_mod.diff(ws.manifest_at(base), new)]
    out["manifest"] = new.to_dict()
    out["against"] = against
    return out
