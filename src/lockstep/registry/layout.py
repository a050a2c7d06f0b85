"""The OCI image layout artifact source (spec/release.md §5.2): `<host>/<name>` is `<root>/<name>/`.

A tag exists when `index.json` holds exactly one descriptor annotated with it and that
descriptor's blob is complete. Writers such as skopeo rewrite `index.json` in place, so a torn
or missing file is "not yet"; the file is re-read only when its inode, size or mtime change, so
an unchanged layout costs one `stat` per check.
"""

from __future__ import annotations

import json
import os
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from lockstep.errors import ArtifactAmbiguousError
from lockstep.ocilayout import MEDIA_MANIFEST, REF_NAME, layout_dir
from lockstep.registry.source import Answer

UNPARSABLE_GRACE = 10.0  # seconds a torn index.json stays a quiet "not yet"
_DIGEST = re.compile(r"(sha256:[a-f0-9]{64}|sha512:[a-f0-9]{128})")
_SINGLE_PLATFORM = {MEDIA_MANIFEST, "application/vnd.docker.distribution.manifest.v2+json"}
_Key = tuple[int, int, int, int]


@dataclass
class _Index:
    """What one read of a repository's `index.json` gave, and the stat it was read under."""

    key: _Key
    manifests: list[dict[str, Any]] | None
    error: str = ""
    unparsable_since: float | None = None
    settled: dict[str, Answer] = field(default_factory=dict)  # found, or no such tag


def digest_mismatch_hint(answer: Answer) -> str | None:
    """`copied without --all?` when a layout tag holds one platform's manifest, not an index."""
    if answer.media_type in _SINGLE_PLATFORM:
        return ("copied without --all? the layout holds a single-platform manifest under this "
                "tag; copy the multi-platform image with `skopeo copy --all`")
    return None


class LayoutSource:
    """An `ArtifactSource` over an OCI layout registry rooted at `root` (thread-safe)."""

    def __init__(self, root: Path, host: str = "", *,
                 clock: Callable[[], float] = time.monotonic) -> None:
        """`host` only names the registry in answers; `clock` is injectable for the 10 s rule."""
        self.root = root
        self.host = host
        self._clock = clock
        self._lock = threading.Lock()
        self._cache: dict[str, _Index] = {}
        self._dirs: dict[str, Path] = {}

    def check(self, repository: str, tag: str, *, first_or_last: bool = False) -> Answer:
        """Whether `<repository>:<tag>` is in the layout; its descriptor's digest when it is."""
        with self._lock:
            directory = self._dirs.get(repository)
            if directory is None:
                directory = self._dirs[repository] = layout_dir(self.root, repository)
            index, miss = self._index(repository, directory)
            if index is None:
                return miss
            return self._resolve(index, directory, tag, first_or_last)

    def _index(self, repository: str, directory: Path) -> tuple[_Index | None, Answer]:
        path = directory / "index.json"
        try:
            st = os.stat(path)
        except (FileNotFoundError, NotADirectoryError):
            self._cache.pop(repository, None)
            if not directory.is_dir():
                return None, Answer(False, detail=f"no layout directory {directory}")
            return None, Answer(False, detail=f"no index.json in {directory}")
        except OSError as exc:
            return None, Answer(False, detail=f"cannot read {path}: {exc.strerror}",
                                transient=True)
        cached = self._cache.get(repository)
        if cached is None or cached.key != _key(st):
            cached = self._read(path, cached)
            self._cache[repository] = cached
        if cached.manifests is not None:
            return cached, Answer(False)
        assert cached.unparsable_since is not None
        waited = self._clock() - cached.unparsable_since
        if waited < UNPARSABLE_GRACE:
            return None, Answer(False, detail="index.json being written")
        return None, Answer(False, transient=True,
                            detail=f"index.json unparsable for {waited:.0f}s: {cached.error}")

    def _read(self, path: Path, before: _Index | None) -> _Index:
        try:
            with path.open("rb") as fh:
                key = _key(os.fstat(fh.fileno()))  # taken before reading: a later write shows
                data = fh.read()
        except OSError as exc:
            key, data = (0, 0, 0, 0), b""
            error = f"cannot read: {exc.strerror}"
        else:
            manifests, error = _parse(data)
            if manifests is not None:
                return _Index(key, manifests)
        since = before.unparsable_since if before and before.unparsable_since else self._clock()
        return _Index(key, None, error, since)

    def _resolve(self, index: _Index, directory: Path, tag: str, verbose: bool) -> Answer:
        settled = index.settled.get(tag)
        if settled is not None and not verbose:
            return settled
        assert index.manifests is not None
        hits = [m for m in index.manifests if _names(m, tag)]
        if not hits:
            detail = f"no tag {tag} in {directory}/index.json"
            if not verbose:
                index.settled[tag] = Answer(False, detail=detail)
            else:
                tags = sorted({_ref_name(m) or "" for m in index.manifests} - {""})
                detail += f" (tags: {', '.join(tags[:10]) or 'none'}"
                detail += ", …)" if len(tags) > 10 else ")"
            return Answer(False, detail=detail)
        if len(hits) > 1:
            where = f"{self.host}/{directory.relative_to(self.root)}" if self.host else directory
            raise ArtifactAmbiguousError(
                f"{where}:{tag} names {len(hits)} manifests in {directory}/index.json: "
                + ", ".join(str(m.get("digest")) for m in hits),
                "remove all but one descriptor with this tag from index.json")
        desc = hits[0]
        digest, size = desc.get("digest"), desc.get("size")
        if not isinstance(digest, str) or not _DIGEST.fullmatch(digest) \
                or not isinstance(size, int):
            return Answer(False, transient=True,
                          detail=f"tag {tag} has an invalid descriptor in index.json")
        algorithm, _, hexdigest = digest.partition(":")
        blob = directory / "blobs" / algorithm / hexdigest
        try:
            have = blob.stat().st_size
        except OSError:
            return Answer(False, detail=f"tag {tag} points at {digest}, whose blob is missing")
        if have != size:
            return Answer(False, detail=f"blob {digest} of tag {tag} is incomplete "
                                        f"({have} of {size} bytes)")
        media = desc.get("mediaType")
        answer = Answer(True, digest, "found in index.json",
                        media_type=media if isinstance(media, str) else None)
        index.settled[tag] = answer
        return answer


def _key(st: os.stat_result) -> _Key:
    return (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


def _parse(data: bytes) -> tuple[list[dict[str, Any]] | None, str]:
    try:
        doc = json.loads(data)
    except (ValueError, UnicodeDecodeError) as exc:
        return None, f"{type(exc).__name__}: {exc}" if data else "empty file"
    manifests = doc.get("manifests") if isinstance(doc, dict) else None
    if not isinstance(manifests, list):
        return None, "no manifests list"
    return [m for m in manifests if isinstance(m, dict)], ""


def _names(descriptor: dict[str, Any], tag: str) -> bool:
    """Whether the descriptor's ref.name is `tag` or a full reference ending in `:<tag>`."""
    name = _ref_name(descriptor)
    return name is not None and (name == tag or name.endswith(f":{tag}"))


def _ref_name(descriptor: dict[str, Any]) -> str | None:
    annotations = descriptor.get("annotations")
    name = annotations.get(REF_NAME) if isinstance(annotations, dict) else None
    return name if isinstance(name, str) else None
