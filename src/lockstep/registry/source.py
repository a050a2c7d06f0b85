"""The small protocol every artifact source implements: one check of `<repository>:<tag>`.

The wait loop (registry/wait.py) only talks to this protocol, so the distribution API client
(registry/distribution.py) and the OCI layout reader (registry/layout.py) are interchangeable.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol, runtime_checkable


@dataclass(frozen=True)
class Answer:
    """One check's outcome.

    `found` with the `digest` the tag resolves to (an index digest for a multi-arch image);
    otherwise not yet. `detail` is the last answer as a user reads it in the progress line and in
    `ArtifactTimeoutError` ("200", "404 MANIFEST_UNKNOWN", "500", "timed out after 10s",
    "index.json unparsable for 12s"). `transient` marks a failure that is not a "not yet" answer
    (5xx, refused, reset, deadline): shown, retried, never fatal before `wait_timeout`.
    `media_type` is the found manifest's media type when known (a layout's descriptor, the HEAD's
    `Content-Type`), for hints such as "copied without --all?". `retry_after` is the least
    number of seconds before the next check the source asks for (a 429's `Retry-After`).

    Errors waiting cannot fix are raised by `check` instead (`RegistryAuthError`,
    `RegistryProtocolError`, `ArtifactAmbiguousError`).
    """

    found: bool
    digest: str | None = None
    detail: str = ""
    transient: bool = False
    media_type: str | None = None
    retry_after: float | None = None


@runtime_checkable
class ArtifactSource(Protocol):
    """Something that can say whether `<repository>:<tag>` exists, and its digest."""

    def check(self, repository: str, tag: str, *, first_or_last: bool = False) -> Answer:
        """Check once. `first_or_last` is set on the first check of a wait and on the last one
        before it times out: a source may then spend more to explain a miss (the distribution
        client repeats a HEAD 404 as a GET to show the registry's error code and message)."""
        ...
