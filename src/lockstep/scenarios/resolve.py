"""A scenario's versions, read from the integration repo (spec upgrade-scenarios §1, §5): the
release tags (fetched from the integration remote through the transport layer), whether each
one's artifacts all exist, the target (`--to FILE|TAG`) with its version and manifest digest,
and the `Catalog` of what each version runs in the chosen manifest configuration."""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from lockstep import git, imageref, names, ocilayout, transport
from lockstep.config import Config
from lockstep.errors import ConfigError, GitError, LockstepError, NotFoundError, UsageError
from lockstep.manifest import DEFAULT_CONFIGURATION, Manifest
from lockstep.scenarios.errors import InfrastructureError
from lockstep.scenarios.settings import ScenarioSettings
from lockstep.scenarios.versions import Releases, TagFormat
from lockstep.workspace import Workspace

if TYPE_CHECKING:
    from lockstep.registry.source import ArtifactSource
    from lockstep.rollout.release_source import ReleaseSource

_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Target:
    """The version under test (spec §1): its manifest, where it came from, and its version."""

    version: str            # the tag `--to` names, else the tag it would receive if it landed now
    manifest_text: str
    manifest_sha256: str    # of the manifest's bytes, as the plan header shows it
    tag: str | None = None  # set when `--to` names a release tag
    path: Path | None = None  # set when the target is a manifest file

    @property
    def manifest(self) -> Manifest:
        """The target's manifest, parsed."""
        return Manifest(self.manifest_text, str(self.path or self.tag or "target manifest"))


class IntegrationRepo:
    """The integration repo a scenario command runs against (`-C`), opened once per command."""

    def __init__(self, root: Path) -> None:
        self.ws = Workspace.open(root)
        self._commits: dict[str, str] = {}
        self._artifacts: dict[str, bool] = {}
        self._sources: dict[str, ArtifactSource] = {}
        self._registries: Any = None  # lockstep.release.artifacts.Artifacts, made on first use

    @property
    def root(self) -> Path:
        """The integration repo's work tree."""
        return self.ws.root

    @property
    def config(self) -> Config:
        """The work tree's lockstep.toml."""
        return self.ws.config

    @property
    def settings(self) -> ScenarioSettings:
        """`[scenarios]` of the work tree's lockstep.toml."""
        return self.ws.config.scenarios

    @property
    def tag_format(self) -> str:
        """`[integration] tag_format`."""
        return self.ws.config.integration.tag_format

    # --- tags ---------------------------------------------------------------------------------

    def fetch_tags(self) -> None:
        """Bring every tag of the integration remote in (a local tag that differs from the
        remote's is never overwritten); an unreachable remote is an infrastructure failure."""
        try:
            git.fetch(self.root, self.ws.remote, "refs/tags/*:refs/tags/*",
                      settings=self._transport())
        except GitError as exc:
            if "would clobber" in exc.message or "rejected" in exc.message:
                raise UsageError(f"a local tag differs from the integration remote's: "
                                 f"{exc.message}", "delete the local tag (git tag -d NAME) and "
                                 "run again") from None
            raise InfrastructureError(
                f"cannot fetch release tags from the integration remote {self.ws.remote!r}: "
                f"{exc.message}", "check that the remote is reachable, then run again"
            ) from None

    def remote_tag_names(self) -> set[str]:
        """The tag names on the integration remote (for the target's version, queue.md §2.3)."""
        from lockstep.queue.landing import remote_tags

        try:
            return set(remote_tags(self.ws))
        except GitError as exc:
            raise InfrastructureError(
                f"cannot list the tags of the integration remote {self.ws.remote!r}: "
                f"{exc.message}", "check that the remote is reachable, then run again"
            ) from None

    def tags(self) -> list[str]:
        """The local tag names, sorted (after `fetch_tags` they include the remote's)."""
        out = git.out(["for-each-ref", "--format=%(refname:strip=2)", "refs/tags/"], self.root)
        return sorted(line for line in out.splitlines() if line)

    def commit(self, tag: str) -> str:
        """The commit a local tag names, or exit 2 when there is no such tag."""
        found = self._commits.get(tag)
        if found is None:
            found = git.rev_parse(self.root, f"refs/tags/{tag}^{{commit}}")
            if found is None:
                raise NotFoundError(f"no release tag {tag} in the integration repo or on its "
                                    f"remote {self.ws.remote!r}", "list them with git tag")
            self._commits[tag] = found
        return found

    def frozen(self, tag: str) -> tuple[Config, str]:
        """The tag's frozen lockstep.toml and manifest text (read at the tag, never the work
        tree)."""
        commit = self.commit(tag)
        cfg = self.ws.config_at(commit)
        try:
            text = git.show_file(self.root, commit, cfg.integration.manifest).decode("utf-8")
        except (GitError, UnicodeDecodeError):
            raise ConfigError(f"release {tag} has no readable {cfg.integration.manifest}",
                              "an integration release tag names a commit holding the "
                              "manifest") from None
        return cfg, text

    # --- artifacts ------------------------------------------------------------------------------

    def has_artifacts(self, tag: str) -> bool:
        """Whether every digest pinned by the tag's frozen manifest (every configuration)
        resolves in the configured registry or OCI layout. A pin without a digest has nothing
        to resolve: the local driver runs it from the component's repository at the pinned
        commit. Unreadable releases count as missing (warned)."""
        known = self._artifacts.get(tag)
        if known is not None:
            return known
        try:
            cfg, text = self.frozen(tag)
            manifest = Manifest(text, f"{cfg.integration.manifest}@{tag}")
        except (ConfigError, GitError) as exc:
            _log.warning("release %s counts as missing artifacts: %s", tag, exc.one_line())
            self._artifacts[tag] = False
            return False
        ok = True
        for configuration in manifest.configurations:
            for component, pin in manifest.pins(configuration).items():
                comp = cfg.components.get(component)
                images = [a.image for a in comp.artifacts] if comp is not None else []
                if pin.digest is not None:
                    ok = any(self._resolves(cfg, image, pin.digest) for image in images)
                if not ok:
                    break
            if not ok:
                break
        self._artifacts[tag] = ok
        return ok

    def _resolves(self, cfg: Config, image: str, digest: str) -> bool:
        """Whether `digest` resolves in the registry of `image`: a layout holds its blob, or
        the distribution API answers the digest's manifest."""
        from lockstep.registry.layout import LayoutSource

        ref = imageref.parse(image, "image")
        source = self._source(cfg, ref.registry)
        if isinstance(source, LayoutSource):
            try:
                directory = ocilayout.layout_dir(source.root, ref.repository)
            except LockstepError:
                return False
            algorithm, _, hexdigest = digest.partition(":")
            return (directory / "blobs" / algorithm / hexdigest).is_file()
        answer = source.check(ref.repository, digest)
        if answer.transient:
            raise InfrastructureError(
                f"registry {ref.registry} is unreachable while resolving base versions: "
                f"{answer.detail}", "check the registry, then run again")
        return answer.found

    def _source(self, cfg: Config, registry: str) -> ArtifactSource:
        """One artifact source per registry key, for the whole command."""
        found = self._sources.get(registry)
        if found is None:
            from lockstep.release.artifacts import Artifacts

            found = self._sources[registry] = Artifacts(cfg, self.root).source(registry)
        return found

    def close(self) -> None:
        """Close the registry clients."""
        for source in self._sources.values():
            close = getattr(source, "close", None)
            if close is not None:
                close()

    def _transport(self) -> transport.Settings:
        return transport.from_config(self.ws.config, self.root)

    # --- the target and the releases ----------------------------------------------------------

    def target(self, to: str | None, *, version: str | None = None,
               now: datetime | None = None) -> Target:
        """The target of `--to FILE|TAG` (default: the work tree's manifest). Its version is the
        tag `--to` names, else `version` (a replayed plan's) or the next tag name on the
        remote at `now` (queue.md §2.3 step 2)."""
        if to is not None and not Path(to).is_file():
            names.release_tag(to, "--to")
            if git.rev_parse(self.root, f"refs/tags/{to}^{{commit}}") is None:
                raise NotFoundError(f"--to {to}: no such manifest file or release tag",
                                    "name a manifest file or an integration release tag")
            _, text = self.frozen(to)
            TagFormat(self.tag_format).version(to, "--to tag")
            return Target(to, text, _sha256(text.encode()), tag=to)
        path = Path(to) if to is not None else self.root / self.ws.manifest_path
        try:
            data = path.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the target manifest {path}: {exc.strerror}",
                              "pass --to FILE|TAG, or run where the manifest is") from None
        try:
            text = data.decode("utf-8")
            Manifest(text, str(path))
        except UnicodeDecodeError:
            raise ConfigError(f"{path} is not UTF-8", "pass a manifest file") from None
        from lockstep.queue.landing import next_tag_name

        if version is None:
            version = next_tag_name(self.tag_format, self.remote_tag_names(),
                                    now or datetime.now(UTC))
        return Target(version, text, _sha256(data), path=path.resolve())

    def releases(self, target_version: str, *, settings: ScenarioSettings | None = None,
                 include_prereleases: bool = False,
                 warn: Callable[[str], None] | None = None) -> Releases:
        """The §5 view of the local release tags, artifacts checked in the registries."""
        return Releases(self.tags(), tag_format=self.tag_format, target_version=target_version,
                        has_artifacts=self.has_artifacts, settings=settings or self.settings,
                        include_prereleases=include_prereleases, warn=warn)

    def configurations(self, version: str | None, target: Target) -> list[str]:
        """The manifest configurations a version (None: the target) pins."""
        if version is None:
            return target.manifest.configurations
        cfg, text = self.frozen(version)
        return Manifest(text, f"{cfg.integration.manifest}@{version}").configurations

    def release_source(self, rollouts_root: Path) -> ReleaseSource:
        """A release source over this repo (what the rollout's local driver resolves with)."""
        from lockstep.rollout.release_source import ReleaseSource

        return ReleaseSource(self.root, rollouts_root)


class IntegrationCatalog:
    """`runtime.Catalog` over the integration repo: a release tag runs its frozen release-mode
    components, the target the components its manifest pins, in one manifest configuration."""

    def __init__(self, target: Target, source: ReleaseSource,
                 configuration: str = DEFAULT_CONFIGURATION) -> None:
        self.target = target
        self.source = source
        self.configuration = configuration

    def components(self, version: str | None) -> dict[str, dict[str, Any]]:
        """What LocalDriver starts for `version` (None: the target): release-mode entries that
        carry the configuration (and, for a target file, the manifest) so the driver resolves
        the same release again."""
        from lockstep.rollout.driver import release_entries

        if version is None and self.target.path is not None:
            release = self.source.resolve_manifest(self.target.path, version=self.target.version,
                                                   configuration=self.configuration)
            return release_entries(release, manifest=self.target.path,
                                   configuration=self.configuration)
        tag = self.target.tag if version is None else version
        assert tag is not None
        return release_entries(self.source.resolve(tag, self.configuration),
                               configuration=self.configuration)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()
