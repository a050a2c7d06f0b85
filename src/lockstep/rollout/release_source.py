"""Release mode of the local driver (spec/rollouts.md §2.2, §5.3 g): an integration release tag
resolved, through its frozen lockstep.toml and manifest, into the components to run and the
unpacked files each one runs from.

The tag is read in the controller's workspace (an integration repo checkout), fetched from the
integration remote through the transport layer when it is not local; `lockstep.toml` and the
manifest are read *at the tag* (`git show <tag>:<path>`), never from the work tree. A component
runs only with a `[components.<name>.deploy]` table; its files come from its artifact when the
pin has a digest that the release's OCI layout registry holds (every blob's digest verified),
otherwise from the component repository at the pinned commit. Each tree is unpacked once under
`<ws>/.lockstep/rollouts/<env>/releases/<release>/<component>/` (temp dir, then rename).
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import platform
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep import git, imageref, names, ocilayout
from lockstep.config import CONFIG_FILE, Config, Deploy
from lockstep.errors import GitError, LockstepError, NotFoundError
from lockstep.manifest import DEFAULT_CONFIGURATION, Manifest, Pin
from lockstep.workspace import Workspace

PYTHON_PLACEHOLDER = "{python}"  # stands for lockstep's own interpreter in a deploy command
SOURCE_MARKER = ".lockstep-source"  # in an unpacked tree: what it was unpacked from
_MANIFEST_TYPES = {ocilayout.MEDIA_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"}
_INDEX_TYPES = {ocilayout.MEDIA_INDEX,
                "application/vnd.docker.distribution.manifest.list.v2+json"}
_ARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64", "arm64": "arm64"}


class ReleaseError(LockstepError):
    """A release could not be resolved or a component's files could not be unpacked."""


@dataclass(frozen=True)
class ReleaseComponent:
    """One deployed component of a release: its pin and its deploy table, both as of the tag."""

    name: str
    pin: Pin
    deploy: Deploy
    images: tuple[str, ...] = ()  # the component's image names (for the digest lookup)

    @property
    def source_key(self) -> dict[str, str | None]:
        """What decides whether a running workload of this component must be replaced."""
        return {"version": self.pin.version, "sha": self.pin.sha, "digest": self.pin.digest}


@dataclass(frozen=True)
class Release:
    """A resolved integration release: its tag, commit and deployed components (by name)."""

    tag: str
    commit: str
    components: Mapping[str, ReleaseComponent] = field(default_factory=dict)
    config: Config | None = field(default=None, compare=False, repr=False)


def command_line(component: ReleaseComponent, tree: Path) -> list[str]:
    """The argv of a deployed component, then its `args`: `{python}` is lockstep's interpreter
    and a relative script after it lives in the unpacked `tree`; a program with a `/` is in the
    tree too, and a bare name is the tree's file of that name if there is one, else PATH's."""
    command = list(component.deploy.command)
    program = command[0]
    if program == PYTHON_PLACEHOLDER:
        command[0] = sys.executable
        if len(command) > 1 and not command[1].startswith(("-", "/")):
            command[1] = str(tree / command[1])
    elif not program.startswith("/") and ("/" in program or (tree / program).is_file()):
        command[0] = str(tree / program)
    return [*command, *component.deploy.args]


class ReleaseSource:
    """Resolves release tags in one integration workspace and unpacks their components."""

    def __init__(self, workspace: Path, rollouts_root: Path) -> None:
        self.root = workspace
        self.rollouts_root = rollouts_root
        self._ws: Workspace | None = None
        self._releases: dict[tuple[str, str, str], Release] = {}  # tag, commit, configuration

    def workspace(self) -> Workspace:
        """The integration workspace (opened on first use: components mode needs none)."""
        if self._ws is None:
            self._ws = Workspace.open(self.root)
        return self._ws

    # --- resolving ----------------------------------------------------------------------------

    def resolve(self, tag: str, configuration: str = DEFAULT_CONFIGURATION) -> Release:
        """The deployed components of release `tag`, read from its frozen lockstep.toml and the
        manifest's `configuration` (default `default`)."""
        names.release_tag(tag, "release tag")
        commit = self._commit(tag)
        cached = self._releases.get((tag, commit, configuration))
        if cached is not None:
            return cached
        ws = self.workspace()
        try:
            cfg = ws.config_at(commit)
        except LockstepError as exc:
            raise ReleaseError(f"release {tag}: {exc.message}", exc.hint) from None
        manifest_path = cfg.integration.manifest
        try:
            text = git.show_file(ws.root, commit, manifest_path).decode("utf-8")
        except (GitError, UnicodeDecodeError):
            raise ReleaseError(f"release {tag} has no {manifest_path}",
                               f"the tag must name an integration commit holding "
                               f"{CONFIG_FILE} and its manifest") from None
        release = _release(tag, commit, cfg, text, f"{manifest_path}@{tag}", configuration)
        self._releases[tag, commit, configuration] = release
        return release

    def resolve_manifest(self, manifest: Path, *, version: str,
                         configuration: str = DEFAULT_CONFIGURATION) -> Release:
        """A candidate that is not tagged yet (an upgrade scenario's target): the manifest file
        read with the work tree's lockstep.toml, labelled `version` (the tag it would receive),
        so its components run like a release's."""
        try:
            text = manifest.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ReleaseError(f"cannot read manifest {manifest}: {exc}",
                               "pass a readable manifest file") from None
        key = "manifest:" + hashlib.sha256(text.encode()).hexdigest()
        cached = self._releases.get((version, key, configuration))
        if cached is not None:
            return cached
        release = _release(version, key, self.workspace().config, text, str(manifest),
                           configuration)
        self._releases[version, key, configuration] = release
        return release

    def _commit(self, tag: str) -> str:
        """The integration commit `tag` names, fetching the tag from the integration remote
        (through the transport layer) when it is not local."""
        ws = self.workspace()
        ref = f"refs/tags/{tag}"
        sha = git.rev_parse(ws.root, f"{ref}^{{commit}}")
        if sha is not None:
            return sha
        try:
            git.fetch(ws.root, ws.remote, f"+{ref}:{ref}")
        except GitError as exc:
            if "couldn't find remote ref" in exc.message:
                raise NotFoundError(
                    f"unknown release {tag}: no such tag in the integration repo or on its "
                    f"remote {ws.remote!r}",
                    "name a tag the queue created (git tag --list 'v*')") from None
            raise ReleaseError(f"cannot fetch release {tag} from remote {ws.remote!r}: "
                               f"{exc.message}", exc.hint) from None
        sha = git.rev_parse(ws.root, f"{ref}^{{commit}}")
        if sha is None:
            raise NotFoundError(f"release {tag} names no commit",
                                "an integration release tag must name a commit")
        return sha

    # --- unpacking ----------------------------------------------------------------------------

    def tree(self, env: str, release: Release, component: str) -> Path:
        """The unpacked files of one component of `release` for environment `env`: reused when
        already unpacked from the same source, else unpacked now (atomically)."""
        comp = release.components[component]
        assert release.config is not None
        ws = Workspace(self.workspace().root, release.config)
        blob_dir = self._artifact_dir(ws, comp)
        key = (f"digest {comp.pin.digest}" if blob_dir is not None
               else f"commit {comp.pin.sha}")
        parent = self.rollouts_root / env / "releases" / release.tag
        target = parent / component
        if _marker(target) == key:
            return target
        parent.mkdir(parents=True, exist_ok=True)
        for stale in parent.glob(f".tmp-{component}-*"):  # left by a crash: never used
            shutil.rmtree(stale, ignore_errors=True)
        tmp = Path(tempfile.mkdtemp(prefix=f".tmp-{component}-", dir=parent))
        try:
            if blob_dir is not None:
                assert comp.pin.digest is not None
                _unpack_artifact(blob_dir, comp.pin.digest, tmp, f"{component} {comp.pin.version}")
            else:
                self._unpack_commit(ws, comp, tmp)
            (tmp / SOURCE_MARKER).write_text(key + "\n", encoding="utf-8")
            if target.exists():
                old = Path(tempfile.mkdtemp(prefix=f".tmp-{component}-", dir=parent))
                os.replace(target, old / "old")
                shutil.rmtree(old, ignore_errors=True)
            os.replace(tmp, target)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return target

    def _artifact_dir(self, ws: Workspace, comp: ReleaseComponent) -> Path | None:
        """The OCI layout directory holding the pin's digest, or None (no digest, no layout
        registry, or the blob is not there): then the files come from the repository."""
        digest = comp.pin.digest
        if digest is None or not digest.startswith("sha256:"):
            return None
        for image in comp.images:
            ref = imageref.parse(image)
            settings = next((s for key, s in ws.config.registries.items()
                             if key.lower() == ref.registry), None)
            if settings is None or settings.layout is None:
                continue
            directory = ocilayout.layout_dir(ws.root / settings.layout, ref.path)
            if _blob_path(directory, digest).is_file():
                return directory
        return None

    def _unpack_commit(self, ws: Workspace, comp: ReleaseComponent, into: Path) -> None:
        """The component repository's tree at the pinned commit (fetched through the transport
        layer into the workspace's mirror), checked to be exactly that commit."""
        try:
            mirror = ws.components.ensure(comp.name, comp.pin.sha)
        except LockstepError as exc:
            raise ReleaseError(f"cannot fetch {comp.name} {comp.pin.version} "
                               f"({comp.pin.sha[:12]}): {exc.message}", exc.hint) from None
        if git.rev_parse(mirror, f"{comp.pin.sha}^{{commit}}") != comp.pin.sha:
            raise ReleaseError(f"{comp.name}: commit {comp.pin.sha} is not in its repository",
                               "check the pin in the release's manifest")
        archive = git.run(["archive", "--format=tar", comp.pin.sha], mirror).stdout
        _extract(archive, into, f"{comp.name} {comp.pin.version}")


def _release(tag: str, commit: str, cfg: Config, text: str, where: str,
             configuration: str) -> Release:
    """The release whose manifest is `text` under config `cfg`: the pinned components of
    `configuration` that have a deploy table."""
    try:
        pins = Manifest(text, where).pins(configuration)
    except LockstepError as exc:
        raise ReleaseError(f"release {tag}: {exc.message}", exc.hint) from None
    components = {
        name: ReleaseComponent(name, pin, comp.deploy, tuple(a.image for a in comp.artifacts))
        for name, pin in sorted(pins.items())
        if (comp := cfg.components.get(name)) is not None and comp.deploy is not None}
    if not components:
        raise ReleaseError(
            f"release {tag} deploys no component: no component it pins has a deploy table",
            "add [components.<name>.deploy] with a command to lockstep.toml "
            "(see docs/config.md)")
    return Release(tag, commit, components, cfg)


def _marker(tree: Path) -> str | None:
    """The source an unpacked tree records, None when there is none (or no tree)."""
    try:
        return (tree / SOURCE_MARKER).read_text(encoding="utf-8").strip()
    except OSError:
        return None


def _blob_path(layout: Path, digest: str) -> Path:
    algorithm, _, hexdigest = digest.partition(":")
    return layout / "blobs" / algorithm / hexdigest


def _blob(layout: Path, digest: str, what: str) -> bytes:
    """A blob of the layout, refused unless its bytes hash to `digest`."""
    if not imageref.DIGEST.fullmatch(digest) or not digest.startswith("sha256:"):
        raise ReleaseError(f"{what}: unsupported digest {digest!r}", "only sha256 is read")
    try:
        data = _blob_path(layout, digest).read_bytes()
    except OSError as exc:
        raise ReleaseError(f"{what}: blob {digest} is missing from {layout}: {exc.strerror}",
                           "push the image again") from None
    actual = "sha256:" + hashlib.sha256(data).hexdigest()
    if actual != digest:
        raise ReleaseError(f"{what}: digest mismatch: blob {digest} in {layout} hashes to "
                           f"{actual}", "the layout was altered; rebuild or re-copy the image")
    return data


def _json_blob(layout: Path, digest: str, what: str) -> dict[str, Any]:
    try:
        doc = json.loads(_blob(layout, digest, what))
    except ValueError:
        raise ReleaseError(f"{what}: {digest} is not a JSON document",
                           "the pinned digest must name an image manifest or index") from None
    if not isinstance(doc, dict):
        raise ReleaseError(f"{what}: {digest} is not an OCI manifest",
                           "the pinned digest must name an image manifest or index")
    return doc


def _unpack_artifact(layout: Path, digest: str, into: Path, what: str) -> None:
    """Unpack the image the pinned digest names (an index: this machine's platform, else its
    first manifest) layer by layer; the component's tree is the image's `app/` directory (where
    the demo CI and the usual `COPY . /app` put it) or, without one, the whole image."""
    doc = _json_blob(layout, digest, what)
    if doc.get("mediaType") in _INDEX_TYPES or "manifests" in doc:
        entries = [m for m in doc.get("manifests") or [] if isinstance(m, dict)]
        arch = _ARCH.get(platform.machine().lower())
        chosen = next((m for m in entries if (m.get("platform") or {}).get("architecture") == arch),
                      entries[0] if entries else None)
        if chosen is None or not isinstance(chosen.get("digest"), str):
            raise ReleaseError(f"{what}: image index {digest} lists no manifest",
                               "the pinned digest must name a usable image")
        doc = _json_blob(layout, chosen["digest"], what)
    if doc.get("mediaType", ocilayout.MEDIA_MANIFEST) not in _MANIFEST_TYPES:
        raise ReleaseError(f"{what}: {digest} is a {doc.get('mediaType')!r}, not an image",
                           "the pinned digest must name an image manifest or index")
    rootfs = into / ".rootfs"
    rootfs.mkdir()
    for layer in doc.get("layers") or []:
        layer_digest = layer.get("digest") if isinstance(layer, dict) else None
        if not isinstance(layer_digest, str):
            raise ReleaseError(f"{what}: a layer of {digest} has no digest", "rebuild the image")
        data = _blob(layout, layer_digest, what)
        if str(layer.get("mediaType", "")).endswith("gzip"):
            try:
                data = gzip.decompress(data)
            except (OSError, EOFError) as exc:
                raise ReleaseError(f"{what}: layer {layer_digest} is not gzip: {exc}",
                                   "rebuild the image") from None
        _extract(data, rootfs, what)
    top = rootfs / "app" if (rootfs / "app").is_dir() else rootfs
    for entry in top.iterdir():
        os.replace(entry, into / entry.name)
    shutil.rmtree(rootfs)


def _extract(archive: bytes, into: Path, what: str) -> None:
    """Extract a tar safely (tarfile's `data` filter: nothing outside `into`, no devices)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as exc:
        raise ReleaseError(f"{what}: cannot unpack: {exc}", "rebuild the artifact") from None
