"""One component's steps (spec/release.md §4): resolve → pin → commit → tag → push → advance →
wait. Each step checks the world (remote refs, the registry) before acting, so a rerun after a
crash at any point converges; the journal only records what was computed and observed."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep import faults, git
from lockstep.config import Config
from lockstep.errors import (
    DigestMismatchError,
    GitError,
    SourceCommitError,
    TagConflictError,
    TransportError,
)
from lockstep.registry.wait import WaitCancelled
from lockstep.release import gitobjects
from lockstep.release import pins as pins_mod
from lockstep.release.artifacts import Artifacts
from lockstep.release.journal import Journal
from lockstep.release.plan import Node, Plan
from lockstep.transport.remote import PushRejectedError, Remote
from lockstep.transport.settings import Settings
from lockstep.workspace import Workspace, absolute_url


@dataclass
class Context:
    """What every component of one run shares."""

    ws: Workspace
    cfg: Config
    plan: Plan
    journal: Journal
    run_id: str
    identity: git.Identity
    transport: Settings
    artifacts: Artifacts
    jobs: threading.BoundedSemaphore
    jobs_limit: int
    cancel: threading.Event = field(default_factory=threading.Event)
    digests: dict[str, dict[str, str | None]] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)
    # Validation already read these in this run: the source was found reachable and the tag
    # looked up (peeled commit or None); resolve records them instead of reading again.
    resolved: dict[str, str | None] = field(default_factory=dict)
    remotes: dict[str, Remote] = field(default_factory=dict)

    def cache(self, name: str) -> Path:
        """The component's bare release cache (scratch: rebuilt freely)."""
        repo = self.ws.state_dir / "cache" / "release" / f"{name}.git"
        if not (repo / "HEAD").exists():
            repo.mkdir(parents=True, exist_ok=True)
            git.run(["init", "--quiet", "--bare", str(repo)])
        return repo

    def trailers(self, node: Node) -> str:
        """The trailers of every object a release creates."""
        p = self.plan
        return (f"Lockstep-Release: {p.version}\nLockstep-Configuration: {p.configuration}\n"
                f"Lockstep-Integration: {p.integration_tag or '-'} {p.integration_commit}\n"
                f"Lockstep-Source: {node.source}\n")


class Interrupted(Exception):
    """The run was cancelled (Ctrl-C, SIGTERM, --fail-fast) before this component finished."""


class ComponentRun:
    """The steps of one component, journaled."""

    def __init__(self, ctx: Context, node: Node, *, record: bool = True) -> None:
        self.ctx = ctx
        self.node = node
        self.recording = record
        comp = ctx.cfg.components[node.name]
        hint = self._observed("resolve").get("transport_url")
        with ctx.lock:
            remote = ctx.remotes.get(node.name)
            if remote is None:
                urls = [absolute_url(u, ctx.ws.root) for u in (comp.url, comp.ssh_url) if u]
                remote = Remote(node.name, urls, ctx.transport, prefer=hint)
                ctx.remotes[node.name] = remote
        self.remote = remote
        self.cache = ctx.cache(node.name)
        self.target = node.source
        self.tree: str | None = None
        self.edits: list[dict[str, Any]] = []
        self.remote_tag: str | None = None
        self._attempts_seen = 0  # remote attempts already journaled by this run

    # -- journal helpers --------------------------------------------------------------------

    def _observed(self, step: str) -> dict[str, Any]:
        p = self.ctx.plan
        return self.ctx.journal.last_done(p.version, p.configuration, self.node.name, step) or {}

    def _record(self, step: str, state: str, intent: dict[str, Any] | None = None,
                observed: dict[str, Any] | None = None) -> None:
        p = self.ctx.plan
        if not self.recording:
            return
        if observed is not None and state == "done":
            observed = {**observed, "transport": self.remote.transport,
                        "transport_url": self.remote.preferred}
            # §4.2's note: each URL that failed over to the next, with its redacted cause.
            failed = [{"url": a.url, "action": a.action, "seconds": round(a.seconds, 3),
                       "cause": a.cause} for a in self.remote.attempts[self._attempts_seen:]
                      if a.verdict is not None]
            self._attempts_seen = len(self.remote.attempts)
            if failed:
                observed["fallbacks"] = failed
        self.ctx.journal.record(p.version, p.configuration, self.node.name, step, state,
                                self.ctx.run_id, intent, observed)

    def _done(self, step: str, observed: dict[str, Any]) -> None:
        self._record(step, "done", observed=observed)
        if self.recording:
            faults.crashpoint(f"release-after-{step}")

    def _check_cancel(self) -> None:
        if self.ctx.cancel.is_set():
            raise Interrupted(self.node.name)

    # -- the steps --------------------------------------------------------------------------

    def run(self) -> None:
        """Every step in order; git and file work under a jobs slot, the wait without one."""
        with self.ctx.jobs:
            for step in (self.resolve, self.pin, self.commit, self.tag, self.push, self.advance):
                self._check_cancel()
                step()
        self._check_cancel()
        self.wait()

    def resolve(self) -> None:
        """S reachable from the remote's refs (§4.1 Source); T looked up."""
        node = self.node
        with self.ctx.lock:
            known = node.name in self.ctx.resolved
            found = self.ctx.resolved.get(node.name)
        if known:
            self.remote_tag = found
        else:
            self._source_reachable()
            found = self._lookup_tag()
            if not self.recording:
                with self.ctx.lock:
                    self.ctx.resolved[node.name] = found
        self._done("resolve", {"source": node.source, "tag": node.tag, "remote_tag": found})

    def _source_reachable(self) -> None:
        node, cache = self.node, self.cache
        looked = [f"refs/tags/{node.version}"]
        try:
            self.remote.fetch(cache, [f"+refs/tags/{node.version}:refs/tags/{node.version}"],
                              what=f"fetch {node.version}")
            if (git.is_commit(cache, node.source)
                    and git.is_ancestor(cache, node.source, f"refs/tags/{node.version}")):
                return
        except GitError as exc:
            if isinstance(exc, TransportError):
                raise
        looked.append("every branch and tag")
        self.remote.fetch(cache, ["+refs/heads/*:refs/heads/*", "+refs/tags/*:refs/tags/*"],
                          what="fetch branches and tags")
        if git.is_commit(cache, node.source):
            refs = git.out(["for-each-ref", "--contains", node.source, "--format=%(refname)",
                            "refs/heads", "refs/tags"], cache)
            if refs:
                return
        raise SourceCommitError(
            f"{node.name}: commit {node.source} (its {node.version} in the manifest) is "
            f"reachable from none of the remote's refs (looked at {', '.join(looked)})",
            "the commit was force-pushed away or never pushed; fix the manifest first")

    def _lookup_tag(self) -> str | None:
        ref = f"refs/tags/{self.node.tag}"
        found = self.remote.ls_remote([ref], cwd=self.cache).get(ref)
        self.remote_tag = found.peeled if found else None
        return self.remote_tag

    def pin(self) -> None:
        """This repository's pins at S, computed in memory (§4 pin); none changed → target S."""
        node = self.node
        if not node.pin_indexes:
            self._done("pin", {"changed": False, "edits": []})
            return
        with self.ctx.lock:
            digests = dict(self.ctx.digests)
        result = pins_mod.compute(self.ctx.cfg, self.ctx.plan, node, self.cache, digests)
        self.edits = [e.to_json() for e in result.edits]
        if result.changed:
            self.tree = gitobjects.tree_with_files(self.cache, node.source, result.files)
        self._done("pin", {"changed": result.changed, "tree": self.tree, "edits": self.edits})

    def commit(self) -> None:
        """The pin commit on S (dated at the release's start: a rerun rebuilds the same SHA)."""
        node = self.node
        if self.tree is None:
            self.target = node.source
            self._done("commit", {"target": self.target, "pin_commit": None})
            return
        changed = [e for e in self.edits if e["changed"]]
        lines = [f"release {self.ctx.plan.version}: pin {len(changed)} "
                 f"reference{'s' if len(changed) != 1 else ''} in {node.name}", ""]
        lines += [f"{e['file']}:{e['line']} {e['image']} {e['old']} -> {e['new']}"
                  for e in changed]
        message = "\n".join(lines) + "\n\n" + self.ctx.trailers(node)
        self.target = git.commit_tree(self.cache, self.tree, node.source, message,
                                      self.ctx.identity)
        self._done("commit", {"target": self.target, "pin_commit": self.target})

    def _acceptable(self, commit: str) -> bool:
        """Whether a remote T at `commit` is this release's tag (§4.1): at the target, or at a
        child of S with the computed tree whose message names this release."""
        if commit == self.target:
            return True
        if self.tree is None:
            return False
        node = self.node
        self._fetch_seen(commit)
        if not git.is_commit(self.cache, commit):
            return False
        same = (gitobjects.parents(self.cache, commit) == [node.source]
                and git.tree_of(self.cache, commit) == self.tree
                and f"Lockstep-Release: {self.ctx.plan.version}"
                in gitobjects.commit_message(self.cache, commit))
        if same:
            self.target = commit
        return same

    def acceptable_at_plan(self, commit: str) -> bool:
        """§4.1 at plan time: a check needing a digest not in the registry yet (a digest pin's
        tree) is left to the tag step; the parent and the release trailer are checked now."""
        if self.tree is None:
            return commit == self.node.source
        if commit == self.node.source:
            return False  # the pins change S's tree: a tag at S lacks them
        if not any(self.ctx.cfg.pins[i].digest for i in self.node.pin_indexes):
            return self._acceptable(commit)
        self._fetch_seen(commit)
        return (git.is_commit(self.cache, commit)
                and gitobjects.parents(self.cache, commit) == [self.node.source]
                and f"Lockstep-Release: {self.ctx.plan.version}"
                in gitobjects.commit_message(self.cache, commit))

    def _fetch_seen(self, commit: str) -> None:
        tag = self.node.tag
        if not git.is_commit(self.cache, commit):
            self.remote.fetch(self.cache, [f"+refs/tags/{tag}:refs/lockstep/seen/{tag}"],
                              what=f"fetch {tag}")

    def conflict(self, found: str) -> TagConflictError:
        # Planning computes the pinned tree but not the pin commit: name its parent S then.
        expected = (f"a pin commit on {self.node.source}"
                    if self.tree is not None and self.target == self.node.source
                    else self.target)
        return TagConflictError(
            f"tag {self.node.tag} in {self.node.name} points at {found}, the release expects "
            f"{expected}", "delete the tag if it is wrong, or release another version")

    def tag(self) -> None:
        """Reuse a remote T at the target; else create the annotated tag in the cache."""
        if self.remote_tag is not None:
            if not self._acceptable(self.remote_tag):
                raise self.conflict(self.remote_tag)
            self._done("tag", {"target": self.target, "reused": True})
            return
        obj = self._make_tag()
        self._done("tag", {"target": self.target, "tag_object": obj, "reused": False})

    def _make_tag(self) -> str:
        """The annotated tag T on the target in the cache (same inputs → same object; a stale
        local T is replaced)."""
        node = self.node
        message = (f"release {self.ctx.plan.version}: {node.name} {node.tag}\n\n"
                   + self.ctx.trailers(node))
        return git.make_tag(self.cache, node.tag, self.target, message, self.ctx.identity)

    def push(self) -> None:
        """Push T unless the remote has it at the target; never forced."""
        node = self.node
        found = self._lookup_tag()
        if found is not None:
            if not self._acceptable(found):
                raise self.conflict(found)
            self._done("push", {"pushed": False, "target": self.target})
            return
        self._make_tag()  # the cache is scratch: make sure the T pushed names the target
        self._record("push", "started", intent={"tag": node.tag, "target": self.target})
        try:
            self.remote.push(self.cache, [f"refs/tags/{node.tag}:refs/tags/{node.tag}"],
                             what=f"push tag {node.tag}")
        except PushRejectedError:
            found = self._lookup_tag()
            if found is None or not self._acceptable(found):
                raise self.conflict(found or "(nothing)") from None
        faults.crashpoint("release-push-unrecorded")
        self._done("push", {"pushed": True, "target": self.target})

    def advance(self) -> None:
        """With `branch = B`: fast-forward B from S to the pin commit, never forced."""
        node = self.node
        branch = node.branch
        if branch is None:
            return
        ref = f"refs/heads/{branch}"
        for attempt in range(2):
            found = self.remote.ls_remote([ref], cwd=self.cache).get(ref)
            at = found.peeled if found else None
            if at == self.target:
                self._done("advance", {"branch": branch, "moved": False})
                return
            if at != node.source:
                warning = (f"branch {branch} is at {(at or 'nothing')[:12]}, not "
                           f"{node.source[:12]}; the pin commit is only on tag {node.tag}")
                with self.ctx.lock:
                    self.ctx.warnings.append(f"{node.name}: {warning}")
                self._record("advance", "skipped", observed={"branch": branch,
                                                             "warning": warning})
                return
            self._record("advance", "started", intent={"branch": branch, "to": self.target})
            try:
                self.remote.push(self.cache, [f"{self.target}:{ref}"],
                                 what=f"advance {branch}")
            except PushRejectedError:
                if attempt == 0:
                    continue
                raise
            self._done("advance", {"branch": branch, "moved": True})
            return

    def wait(self) -> None:
        """Each artifact at the release tag exists in its registry; record the digests."""
        node = self.node
        if not node.artifacts:
            with self.ctx.lock:
                self.ctx.digests[node.name] = {}
            self._done("wait", {"digests": {}})
            return
        self._record("wait", "started", intent={"images": [a.reference
                                                           for a in node.artifacts]})
        digests: dict[str, str | None] = {}
        p = self.ctx.plan
        pushes = [e for e in self.ctx.journal.entries(p.version, p.configuration, node.name)
                  if e.step == "push" and e.state == "done"]
        pushed = (node.tag, pushes[0].at) if pushes else None
        for art in node.artifacts:
            try:
                found = self.ctx.artifacts.wait(node.name, art, self.ctx.cancel, pushed)
            except WaitCancelled:
                raise Interrupted(node.name) from None
            digests[art.image] = found.digest
            if (node.recorded_digest and self.target == node.source
                    and node.tag == node.version and len(node.artifacts) == 1
                    and found.digest != node.recorded_digest):
                raise DigestMismatchError(
                    f"{art.reference} has digest {found.digest}, the manifest records "
                    f"{node.recorded_digest}",
                    self.ctx.artifacts.mismatch_hint(found) or
                    "the image was rebuilt or retagged; fix the manifest or the registry")
        with self.ctx.lock:
            self.ctx.digests[node.name] = digests
        self._done("wait", {"digests": digests})
