"""Writing OCI image layouts: small reproducible images into `<root>/<name>/` under a tag.

The demo's artifact builds and the tests use it; the same files and tag always give the same
digest (fixed mtimes, owners and modes; gzip without a timestamp; canonical JSON). Hand-written
because no Python library writes OCI layouts, and the format is three JSON documents and a tar.
"""

from __future__ import annotations

import fcntl
import gzip
import hashlib
import io
import json
import os
import tarfile
import tempfile
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any

from lockstep import imageref
from lockstep.errors import ValidationError

LAYOUT_VERSION = "1.0.0"
MEDIA_INDEX = "application/vnd.oci.image.index.v1+json"
MEDIA_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
MEDIA_CONFIG = "application/vnd.oci.image.config.v1+json"
MEDIA_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
REF_NAME = "org.opencontainers.image.ref.name"
EPOCH = "1970-01-01T00:00:00Z"


@dataclass(frozen=True)
class Platform:
    """An image's platform as OCI descriptors and configs spell it."""

    os: str = "linux"
    architecture: str = "amd64"
    variant: str | None = None

    def as_json(self) -> dict[str, str]:
        """The `platform` object of a descriptor."""
        out = {"architecture": self.architecture, "os": self.os}
        if self.variant:
            out["variant"] = self.variant
        return out


LINUX_AMD64 = Platform("linux", "amd64")
DEFAULT_PLATFORMS = (LINUX_AMD64, Platform("linux", "arm64", "v8"))


@dataclass(frozen=True)
class Descriptor:
    """An OCI content descriptor: what a tag in `index.json` points at."""

    media_type: str
    digest: str
    size: int

    def as_json(self, annotations: Mapping[str, str] | None = None) -> dict[str, Any]:
        """The descriptor as JSON, with optional annotations."""
        out: dict[str, Any] = {"mediaType": self.media_type, "digest": self.digest,
                               "size": self.size}
        if annotations:
            out["annotations"] = dict(annotations)
        return out


class IndexWrite(Enum):
    """How `index.json` is replaced: atomically by rename, or in place as skopeo does."""

    RENAME = "rename"
    IN_PLACE = "in-place"


def canonical_json(value: object) -> bytes:
    """Sorted keys, no spaces: the same document always hashes alike."""
    return json.dumps(value, sort_keys=True, separators=(",", ":")).encode()


def layout_dir(root: Path, name: str) -> Path:
    """The layout directory of repository `name` (OCI name grammar, so no `..` or `/` escape)."""
    ref = imageref.try_parse(name)
    if ref is None or ref.host is not None or ref.tag or ref.digest:
        raise ValidationError(f"{name!r} is not a repository name",
                              "use lower-case path components such as demo/inventory")
    return root / ref.path


def tar_layer(files: Mapping[str, bytes]) -> bytes:
    """An uncompressed tar of `files` (sorted, parent directories included, fixed metadata)."""
    dirs: set[str] = set()
    for path in files:
        _check_member(path)
        parts = path.split("/")[:-1]
        dirs.update("/".join(parts[: i + 1]) for i in range(len(parts)))
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for name in sorted(dirs):
            tar.addfile(_member(name + "/", tarfile.DIRTYPE, 0o755, 0))
        for name in sorted(files):
            data = files[name]
            tar.addfile(_member(name, tarfile.REGTYPE, 0o644, len(data)), io.BytesIO(data))
    return buf.getvalue()


def _check_member(path: str) -> None:
    parts = path.split("/")
    if not path or path.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ValidationError(f"layer path {path!r} is not a relative path",
                              "give paths such as app/VERSION")


def _member(name: str, kind: bytes, mode: int, size: int) -> tarfile.TarInfo:
    info = tarfile.TarInfo(name)
    info.type, info.mode, info.size = kind, mode, size
    info.mtime, info.uid, info.gid, info.uname, info.gname = 0, 0, 0, "", ""
    return info


class LayoutWriter:
    """Writes blobs and tags into one layout directory; tag updates hold an flock on it, so
    concurrent writers (two hook jobs of one image) do not lose each other's tags."""

    def __init__(self, directory: Path, index_write: IndexWrite = IndexWrite.RENAME) -> None:
        """`directory` is `<root>/<name>`; created with `oci-layout` and `blobs/sha256`."""
        self.dir = directory
        self.index_write = index_write
        (directory / "blobs" / "sha256").mkdir(parents=True, exist_ok=True)
        marker = directory / "oci-layout"
        if not marker.exists():
            _atomic_write(marker, canonical_json({"imageLayoutVersion": LAYOUT_VERSION}))

    def blob(self, media_type: str, data: bytes) -> Descriptor:
        """Store `data` (temp file, then rename: a blob is never seen partial)."""
        digest = hashlib.sha256(data).hexdigest()
        path = self.dir / "blobs" / "sha256" / digest
        if not path.exists() or path.stat().st_size != len(data):
            _atomic_write(path, data)
        return Descriptor(media_type, f"sha256:{digest}", len(data))

    def image(self, files: Mapping[str, bytes], platform: Platform = LINUX_AMD64,
              labels: Mapping[str, str] | None = None) -> Descriptor:
        """A single-platform image: one gzip'd tar layer of `files`, its config, its manifest."""
        tar = tar_layer(files)
        layer = self.blob(MEDIA_LAYER, gzip.compress(tar, mtime=0))
        config: dict[str, Any] = {
            "architecture": platform.architecture, "os": platform.os, "created": EPOCH,
            "config": {"Labels": dict(labels)} if labels else {},
            "rootfs": {"type": "layers",
                       "diff_ids": [f"sha256:{hashlib.sha256(tar).hexdigest()}"]},
            "history": [{"created": EPOCH, "created_by": "lockstep ocilayout"}],
        }
        if platform.variant:
            config["variant"] = platform.variant
        cfg = self.blob(MEDIA_CONFIG, canonical_json(config))
        manifest = {"schemaVersion": 2, "mediaType": MEDIA_MANIFEST,
                    "config": cfg.as_json(), "layers": [layer.as_json()]}
        return self.blob(MEDIA_MANIFEST, canonical_json(manifest))

    def index(self, files: Mapping[str, bytes],
              platforms: Sequence[Platform] = DEFAULT_PLATFORMS,
              labels: Mapping[str, str] | None = None) -> Descriptor:
        """A multi-platform image: one manifest per platform (each layer also holds
        `.platform`, so per-platform digests differ) under one image index."""
        entries = []
        for p in platforms:
            own = {**files, ".platform": f"{p.os}/{p.architecture}\n".encode()}
            entry = self.image(own, p, labels).as_json()
            entry["platform"] = p.as_json()
            entries.append(entry)
        return self.blob(MEDIA_INDEX, canonical_json(
            {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": entries}))

    def tag(self, descriptor: Descriptor, tag: str, *,
            between: Callable[[], None] | None = None) -> None:
        """Point `tag` at `descriptor` in `index.json`, replacing the tag's earlier descriptor
        (as skopeo does) and keeping every other entry. `between` (in-place mode only) runs
        after half the new bytes are written: tests read the torn file there."""
        if not imageref.image_tag_valid(tag):
            raise ValidationError(f"{tag!r} is not a valid OCI tag",
                                  "tags match [A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
        with self.locked():
            index = self.read_index()
            kept = [m for m in index.get("manifests", [])
                    if m.get("annotations", {}).get(REF_NAME) != tag]
            kept.append(descriptor.as_json({REF_NAME: tag}))
            index = {"schemaVersion": 2, "mediaType": MEDIA_INDEX, "manifests": kept}
            self.write_index(index, between=between)

    def read_index(self) -> dict[str, Any]:
        """The current `index.json`, or an empty index when there is none yet."""
        try:
            data: dict[str, Any] = json.loads((self.dir / "index.json").read_bytes())
        except FileNotFoundError:
            return {"schemaVersion": 2, "manifests": []}
        return data

    def write_index(self, index: Mapping[str, Any], *,
                    between: Callable[[], None] | None = None) -> None:
        """Replace `index.json` with `index` in this writer's mode (no lock: see `tag`)."""
        data = json.dumps(index, indent=2, sort_keys=True).encode() + b"\n"
        path = self.dir / "index.json"
        if self.index_write is IndexWrite.RENAME:
            _atomic_write(path, data)
            return
        with path.open("wb") as fh:  # O_TRUNC, no rename: what skopeo does
            half = len(data) // 2
            fh.write(data[:half])
            fh.flush()
            if between is not None:
                between()
            fh.write(data[half:])

    @contextmanager
    def locked(self) -> Iterator[None]:
        """An exclusive flock on the layout directory itself (no lock file in the layout)."""
        fd = os.open(self.dir, os.O_RDONLY | os.O_DIRECTORY)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)


def _atomic_write(path: Path, data: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=".tmp-", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as fh:
            fh.write(data)
            fh.flush()
            os.fsync(fh.fileno())
        os.chmod(tmp, 0o644)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_image(root: Path, name: str, tag: str, files: Mapping[str, bytes], *,
                platforms: Sequence[Platform] | None = None,
                labels: Mapping[str, str] | None = None,
                index_write: IndexWrite = IndexWrite.RENAME) -> Descriptor:
    """Write `files` as image `<name>:<tag>` into the layout registry at `root`; returns the
    tagged descriptor. `platforms` None: one linux/amd64 manifest; else an index of them."""
    writer = LayoutWriter(layout_dir(root, name), index_write)
    if platforms is None:
        desc = writer.image(files, labels=labels)
    else:
        desc = writer.index(files, platforms, labels)
    writer.tag(desc, tag)
    return desc
