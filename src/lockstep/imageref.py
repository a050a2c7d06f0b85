"""Container image references as registries resolve them: host, path, tag and digest.

Parsed once at the edge (configuration, `--image`, a file) into an `ImageRef`; matching and
registry lookups work on that object. The grammar is the OCI distribution spec's and the
docker reference library's (no library for Python implements its host rules exactly).
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from lockstep.errors import ValidationError

DOCKER_HUB = "docker.io"
DOCKER_HUB_API = "https://registry-1.docker.io"
_HUB_ALIASES = {"docker.io", "index.docker.io"}
_COMPONENT = re.compile(r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*")
_HOST = re.compile(r"(?:[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?)(?:\.[A-Za-z0-9-]+)*(?::[0-9]+)?"
                   r"|\[[0-9A-Fa-f:.]+\](?::[0-9]+)?")
TAG = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]{0,127}")
DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,}")


@dataclass(frozen=True)
class ImageRef:
    """One reference: `host` is None when not written; offsets locate tag and digest in `text`."""

    text: str
    host: str | None
    path: str
    tag: str | None = None
    digest: str | None = None
    tag_start: int | None = None
    digest_start: int | None = None

    @property
    def registry(self) -> str:
        """The registry host this reference resolves to (`docker.io` when none is written)."""
        if self.host is None or self.host.lower() in _HUB_ALIASES:
            return DOCKER_HUB
        return self.host.lower()

    @property
    def repository(self) -> str:
        """The repository name as the registry's API knows it (`library/` added on Docker Hub)."""
        if self.registry == DOCKER_HUB and "/" not in self.path:
            return f"library/{self.path}"
        return self.path

    @property
    def name(self) -> str:
        """Host and path as written, without tag or digest."""
        return f"{self.host}/{self.path}" if self.host else self.path

    @property
    def canonical(self) -> str:
        """`registry/repository`, the form two references resolving alike share."""
        return f"{self.registry}/{self.repository}"

    def matches(self, other: ImageRef) -> bool:
        """Whether `other` (found in a file) names this image (configured).

        With a host: same registry and repository. Without: the exact path on any host, where
        Docker Hub's `library/` prefix is implied. Never by suffix.
        """
        if self.host is not None:
            return self.canonical == other.canonical
        if other.path == self.path:
            return True
        return other.registry == DOCKER_HUB and other.repository == self.repository


def parse(text: str, what: str = "image reference") -> ImageRef:
    """Parse `[host/]path[:tag][@digest]`; ValidationError when it is not one."""
    problem, ref = _parse(text)
    if ref is None:
        raise ValidationError(f"{what} {text!r} is invalid: {problem}",
                              "write it as [registry/]name[:tag][@sha256:…], lower-case name")
    return ref


def try_parse(text: str) -> ImageRef | None:
    """The reference, or None when `text` is not a valid one."""
    return _parse(text)[1]


def problem_of(text: str) -> str | None:
    """Why `text` is not a valid reference, or None when it is."""
    return _parse(text)[0] or None


def _parse(text: str) -> tuple[str, ImageRef | None]:
    if not text or text != text.strip():
        return "empty or surrounded by spaces", None
    rest, digest, digest_start = text, None, None
    if "@" in rest:
        rest, _, digest = rest.partition("@")
        digest_start = len(rest) + 1
        if not DIGEST.fullmatch(digest):
            return f"digest {digest!r} is not algorithm:hex", None
    host: str | None = None
    first, slash, after = rest.partition("/")
    if slash and ("." in first or ":" in first or first == "localhost" or first != first.lower()):
        if not _HOST.fullmatch(first):
            return f"registry host {first!r} is invalid", None
        host, rest = first, after
    offset = len(host) + 1 if host else 0
    tag, tag_start = None, None
    last_slash = rest.rfind("/")
    colon = rest.rfind(":")
    if colon > last_slash:
        tag = rest[colon + 1 :]
        tag_start = offset + colon + 1
        rest = rest[:colon]
        if not TAG.fullmatch(tag):
            return f"tag {tag!r} is invalid", None
    if not rest:
        return "no image name", None
    for part in rest.split("/"):
        if part != part.lower():
            return f"name {rest!r} has upper-case letters", None
        if not _COMPONENT.fullmatch(part):
            return f"name component {part!r} is invalid", None
    return "", ImageRef(text, host, rest, tag, digest, tag_start, digest_start)


def image_tag_valid(tag: str) -> bool:
    """Whether `tag` fits the OCI tag grammar."""
    return TAG.fullmatch(tag) is not None
