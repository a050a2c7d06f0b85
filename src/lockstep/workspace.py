"""The integration workspace: the repo checkout, its lockstep.toml and the .lockstep/ dir."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

from lockstep import config as config_mod
from lockstep import git, transport
from lockstep.config import Config
from lockstep.errors import ConfigError, GitError, NotFoundError, UsageError
from lockstep.manifest import Manifest, Pin
from lockstep.transport import Remote

STATE_DIR = ".lockstep"


@dataclass
class Workspace:
    """An integration repo on disk and everything lockstep keeps beside it."""

    root: Path
    config: Config
    _manifests: dict[str, Manifest] = field(default_factory=dict, repr=False)
    _known_commits: set[str] = field(default_factory=set, repr=False)  # present locally
    _configs: dict[str, Config] = field(default_factory=dict, repr=False)  # by blob SHA

    @classmethod
    def open(cls, root: Path) -> Workspace:
        """Load the workspace at root, checking it is a git repo with a lockstep.toml."""
        root = root.resolve()
        if not root.is_dir():
            raise UsageError(f"workspace {root} does not exist", "pass an existing directory")
        cfg = config_mod.load(root)
        if not (root / ".git").exists():
            raise UsageError(f"{root} is not a git repository", "run `lockstep init` there first")
        return cls(root, cfg)

    @property
    def state_dir(self) -> Path:
        """Where the store, logs, caches and stage workspaces live (git-ignored)."""
        return self.root / STATE_DIR

    @property
    def store_path(self) -> Path:
        """The SQLite store."""
        return self.state_dir / "queue.db"

    @property
    def logs_dir(self) -> Path:
        """Stage logs: logs/<item>/<attempt>/<configuration>/<stage>.<try>.log."""
        return self.state_dir / "logs"

    @property
    def runs_dir(self) -> Path:
        """Fresh per-run stage workspaces."""
        return self.state_dir / "runs"

    @property
    def remote(self) -> str:
        """The integration remote's name."""
        return self.config.integration.remote

    @property
    def branch(self) -> str:
        """The integration branch."""
        return self.config.integration.branch

    @property
    def manifest_path(self) -> str:
        """The manifest file, relative to the repo root."""
        return self.config.integration.manifest

    @cached_property
    def components(self) -> ComponentMirrors:
        """Local mirrors of the component repositories."""
        return ComponentMirrors(self)

    def remote_head(self) -> str:
        """The integration branch's head on the remote, its objects present locally.

        One ls-remote; a fetch only when the head is a commit this repo does not have yet.
        """
        branch_ref = f"refs/heads/{self.branch}"
        try:
            head = git.ls_remote(self.root, self.remote, branch_ref).get(branch_ref)
            if head is None:
                raise GitError(f"the remote has no branch {self.branch!r}")
            if head not in self._known_commits and not git.has_object(self.root, head):
                self.fetch_branch()
            self._known_commits.add(head)
        except GitError as exc:
            raise GitError(
                f"cannot read {self.branch} from remote {self.remote!r}: {exc.message}",
                "check [integration] remote and branch in lockstep.toml",
            ) from None
        return head

    def fetch_branch(self) -> None:
        """Fetch the integration branch into its remote-tracking ref."""
        ref = f"refs/remotes/{self.remote}/{self.branch}"
        git.fetch(self.root, self.remote, f"+refs/heads/{self.branch}:{ref}")

    def manifest_at(self, commit: str) -> Manifest:
        """The manifest in a commit of the integration repo (cached: commits are immutable)."""
        cached = self._manifests.get(commit)
        if cached is not None:
            return cached
        try:
            data = git.show_file(self.root, commit, self.manifest_path)
        except GitError:
            raise ConfigError(
                f"{self.manifest_path} not found at {commit[:12]}",
                "set [integration] manifest to the manifest's path",
            ) from None
        manifest = Manifest(data.decode(), f"{self.manifest_path}@{commit[:12]}")
        self.remember_manifest(commit, manifest)
        return manifest

    def remember_manifest(self, commit: str, manifest: Manifest) -> None:
        """Record a commit's manifest (e.g. one lockstep just landed) to skip reading it."""
        if len(self._manifests) > 256:
            self._manifests.clear()
            self._known_commits.clear()
        self._manifests[commit] = manifest
        self._known_commits.add(commit)

    def config_at(self, commit: str) -> Config:
        """The lockstep.toml committed at a commit of the integration repo, parsed (cached by
        its blob: it rarely changes while the manifest moves with every landing)."""
        spec = f"{commit}:{config_mod.CONFIG_FILE}"
        blob = git.rev_parse(self.root, spec)
        if blob is None:
            raise ConfigError(
                f"{config_mod.CONFIG_FILE} is not committed at {commit[:12]}",
                f"commit and push {config_mod.CONFIG_FILE} to {self.remote}/{self.branch}",
            )
        cached = self._configs.get(blob)
        if cached is None:
            text = git.run(["cat-file", "blob", blob], self.root).stdout.decode()
            cached = config_mod.parse(text, f"{config_mod.CONFIG_FILE}@{commit[:12]}")
            self._configs[blob] = cached
        return cached

    def check_config_matches(self, commit: str) -> None:
        """Refuse to gate with a lockstep.toml other than the one the integration branch holds
        at `commit` (a checkout behind, on another branch, or with uncommitted edits): its
        stages are what every bump must pass."""
        if self.config_at(commit) == self.config:
            return
        drift = checkout_drift(self) or "the checkout's lockstep.toml has been edited"
        raise ConfigError(
            f"this checkout's {config_mod.CONFIG_FILE} differs from the one on "
            f"{self.remote}/{self.branch} ({commit[:12]}): {drift}",
            f"push a change you mean to keep; {drift_hint(self)}; then start "
            "`lockstep queue run` again",
        )

    def working_manifest(self) -> Manifest:
        """The manifest file as it is in the work tree."""
        path = self.root / self.manifest_path
        if not path.is_file():
            raise ConfigError(f"no manifest at {path}", "run `lockstep init` or fix the path")
        return Manifest(path.read_text(encoding="utf-8"), self.manifest_path)

    def resolve_commit(self, ref: str) -> str:
        """A commit of the integration repo named by a tag, branch or SHA."""
        from lockstep import names

        names.ref_name(ref, "revision")
        sha = git.rev_parse(self.root, f"{ref}^{{commit}}")
        if sha is None:
            raise NotFoundError(
                f"no commit or tag {ref!r} in the integration repo",
                "fetch tags with `git fetch --tags` or check the name",
            )
        return sha


@dataclass(frozen=True)
class Mirror:
    """A declared component, looked up once: where its mirror lives and the URLs to fetch."""

    name: str
    repo: Path
    urls: tuple[str, ...]  # the url, then the ssh_url fallback


class ComponentMirrors:
    """Bare mirrors of component repos under .lockstep/cache: resolve tags, hold tested SHAs."""

    def __init__(self, ws: Workspace) -> None:
        self.ws = ws
        self.dir = ws.state_dir / "cache" / "components"
        self._present: set[tuple[str, str]] = set()
        self._mirrors: dict[str, Mirror] = {}
        self._reachable: set[tuple[str, str]] = set()
        self._remotes: dict[str, Remote] = {}
        self._settings: transport.Settings | None = None

    def mirror(self, name: str) -> Mirror:
        """The component named `name`: checked against lockstep.toml once per workspace (an
        unknown or malformed name is a one-line error), then served from memory."""
        found = self._mirrors.get(name)
        if found is None:
            comp = self.ws.config.component(name)
            urls = [comp.url, *([comp.ssh_url] if comp.ssh_url else [])]
            found = Mirror(name, self.dir / f"{name}.git",
                           tuple(absolute_url(u, self.ws.root) for u in urls))
            self._mirrors[name] = found
        return found

    def path(self, name: str) -> Path:
        """The bare mirror of a component, created on first use."""
        repo = self.mirror(name).repo
        if not (repo / "HEAD").exists():
            repo.mkdir(parents=True, exist_ok=True)
            git.run(["init", "--quiet", "--bare", str(repo)])
        return repo

    def _urls(self, name: str) -> tuple[str, ...]:
        return self.mirror(name).urls

    def remote(self, name: str) -> Remote:
        """The component's remote in the transport layer: url, then ssh_url on an auth or
        transport failure; the URL that worked is tried first for the rest of the run."""
        found = self._remotes.get(name)
        if found is None:
            if self._settings is None:
                self._settings = transport.from_config(self.ws.config, self.ws.root)
            found = Remote(name, self._urls(name), self._settings)
            self._remotes[name] = found
        return found

    def _fetch(self, name: str, *refspecs: str) -> None:
        """Fetch from the component's URL, falling back to its SSH URL."""
        self.remote(name).fetch(self.path(name), refspecs)

    def _fetch_all(self, name: str) -> None:
        """Fetch every tag and branch of the component into the mirror."""
        self._fetch(name, "+refs/tags/*:refs/tags/*", "+refs/heads/*:refs/heads/*")

    def resolve(self, name: str, version: str) -> str:
        """The commit SHA a version tag names now, fetched into the mirror."""
        from lockstep import names

        names.version(version)
        try:
            self._fetch(name, f"+refs/tags/{version}:refs/tags/{version}")
        except GitError as exc:
            if "couldn't find remote ref" in exc.message:
                raise NotFoundError(
                    f"component {name!r} has no tag {version!r}",
                    f"list its tags with `git ls-remote --tags {self._urls(name)[0]}`",
                ) from None
            raise
        sha = git.rev_parse(self.path(name), f"refs/tags/{version}^{{commit}}")
        if sha is None:
            raise NotFoundError(
                f"tag {version!r} of component {name!r} names no commit",
                "a version must be a tag of a commit (not of a tree or blob); tag a commit",
            )
        return sha

    def has_commit(self, name: str, sha: str) -> bool:
        """Whether the component has the commit: in the mirror, or on one of its tags or branches
        (fetched now). False when it has not; GitError when the component cannot be reached."""
        repo = self.path(name)
        if (name, sha) in self._present or git.is_commit(repo, sha):
            self._present.add((name, sha))
            return True
        self._fetch_all(name)
        if not git.is_commit(repo, sha):
            return False
        self._present.add((name, sha))
        return True

    def ensure(self, name: str, sha: str) -> Path:
        """The mirror, holding the commit (fetching every tag and branch if it is missing)."""
        if not self.has_commit(name, sha):
            raise NotFoundError(
                f"commit {sha[:12]} not found in component {name!r}",
                "no tag or branch of the component contains it; check the pin in the manifest",
            )
        return self.path(name)

    def check_pin(self, name: str, pin: Pin) -> str | None:
        """What is wrong with a pin on the component's remote now, or None when it is sound:
        its commit gone (never pushed, or force-pushed away), its tag deleted or moved."""
        remote = self.remote(name).list_refs(self.path(name))
        tag = f"refs/tags/{pin.version}"
        tagged = remote.get(f"{tag}^{{}}", remote.get(tag))
        if tagged == pin.sha:
            return None
        if not self._on_remote(name, pin.sha, remote):
            return (f"commit {pin.sha} does not exist in component {name!r} "
                    "(no tag or branch of it contains that commit)")
        if tagged is None:
            return f"tag {pin.version!r} of component {name!r} was deleted"
        return (f"tag {pin.version!r} of component {name!r} was moved: it names {tagged}, "
                f"not the pinned {pin.sha}")

    def reachable(self, name: str, sha: str) -> bool:
        """Whether a tag or branch of the component's remote still contains the commit (not
        only this mirror, which keeps what was force-pushed away); remembered once true."""
        if (name, sha) in self._reachable:
            return True
        remote = self.remote(name).list_refs(self.path(name))
        tip = sha in remote.values()  # a tag (peeled) or branch names it: the common case
        if not tip and not (self.has_commit(name, sha) and self._on_remote(name, sha, remote)):
            return False
        self._reachable.add((name, sha))
        return True

    def _on_remote(self, name: str, sha: str, remote: dict[str, str]) -> bool:
        """Whether a tag or branch the remote has now (`remote`, from ls-remote) contains sha."""
        repo = self.path(name)
        tips = {ref: tip for ref, tip in remote.items()
                if ref.startswith(("refs/heads/", "refs/tags/")) and not ref.endswith("^{}")}
        if any(not git.has_object(repo, tip) for tip in tips.values()):
            self._fetch_all(name)
        if not git.is_commit(repo, sha):
            return False
        # The mirror may keep refs the remote has deleted: only refs matching the remote count.
        containing = git.out(["for-each-ref", "--contains", sha,
                              "--format=%(refname) %(objectname)", "refs/heads", "refs/tags"], repo)
        return any(tips.get(ref) == tip
                   for ref, _, tip in (line.partition(" ") for line in containing.splitlines()))


def checkout_drift(ws: Workspace) -> str | None:
    """How the local checkout differs from the integration branch as last fetched, in one line,
    or None: another branch, commits behind or ahead, local edits to the manifest. No network."""
    tracking = f"{ws.remote}/{ws.branch}"
    problems = []
    head_ref = git.run(["symbolic-ref", "--quiet", "HEAD"], ws.root, check=False)
    current = head_ref.stdout.decode().strip().removeprefix("refs/heads/")
    if head_ref.returncode != 0:
        problems.append(f"is on a detached HEAD, not {ws.branch}")
    elif current != ws.branch:
        problems.append(f"is on branch {current!r}, not {ws.branch!r}")
    remote_sha = git.rev_parse(ws.root, f"refs/remotes/{tracking}^{{commit}}")
    if remote_sha is not None and git.rev_parse(ws.root, "HEAD^{commit}") is not None:
        counts = git.out(["rev-list", "--left-right", "--count", f"HEAD...{remote_sha}"], ws.root)
        ahead, behind = (int(n) for n in counts.split())
        if ahead and behind:
            problems.append(f"has diverged from {tracking} ({ahead} commit{_s(ahead)} ahead, "
                            f"{behind} behind)")
        elif behind:
            problems.append(f"is {behind} commit{_s(behind)} behind {tracking}")
        elif ahead:
            problems.append(f"is {ahead} commit{_s(ahead)} ahead of {tracking}")
    edited = git.out(["diff", "--name-only", "HEAD", "--", ws.manifest_path,
                      config_mod.CONFIG_FILE], ws.root).split()
    if edited:
        problems.append(f"has local edits to {' and '.join(edited)}")
    if not problems:
        return None
    last = problems.pop()
    return f"the checkout {', '.join(problems)} and {last}" if problems else f"the checkout {last}"


def drift_hint(ws: Workspace) -> str:
    """How to bring a drifted checkout back to the integration branch, whatever the drift."""
    return (f"to follow {ws.remote}/{ws.branch}: commit or stash local edits, check out "
            f"{ws.branch}, then `git pull --ff-only` (a diverged branch needs a rebase or reset)")


def _s(n: int) -> str:
    return "" if n == 1 else "s"


def absolute_url(url: str, root: Path) -> str:
    """Relative local paths in lockstep.toml are relative to the integration repo."""
    if "://" in url or url.startswith("/") or ":" in url.split("/")[0]:
        return url
    return str((root / url).resolve())
