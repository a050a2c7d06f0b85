"""The release tables of lockstep.toml: `[release]`, `[registries.…]`, `[git.…]`, `[[pins]]` and
each component's artifact (`image`/`images` with `tag_transform`), as in spec/release.md §2."""

from __future__ import annotations

import re
import string
from typing import Annotated, Literal

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    field_validator,
    model_validator,
)

from lockstep import imageref, names, tagtransform
from lockstep.errors import ConfigError
from lockstep.transport import urls

DEFAULT_RELEASE_TAG = "{version}"
RELEASE_TAG_FIELDS = frozenset({"version", "component"})
PIN_VALUE_FIELDS = frozenset({"version", "tag", "image_tag", "digest"})
PIN_KINDS = ("dockerfile", "helm-values", "chart", "regex")
CHART_FIELDS = ("version", "appVersion")
_DURATION = re.compile(r"(?:(\d+(?:\.\d+)?)h)?(?:(\d+(?:\.\d+)?)m(?!s))?(?:(\d+(?:\.\d+)?)s)?"
                       r"(?:(\d+)ms)?")
_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class StrictModel(BaseModel):
    """Every table of lockstep.toml: unknown keys are errors, values are immutable."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def duration(value: object) -> float:
    """Seconds from a number or a Go-style duration (`60m`, `0.5s`, `1h30m`, `250ms`)."""
    if isinstance(value, bool):
        raise ValueError("must be a duration such as '30s', '10m' or a number of seconds")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("must not be negative")
        return float(value)
    if isinstance(value, str):
        m = _DURATION.fullmatch(value.strip())
        if value.strip() and m and any(m.groups()):
            h, mi, s, ms = (float(g) if g else 0.0 for g in m.groups())
            return h * 3600 + mi * 60 + s + ms / 1000
    raise ValueError(f"{value!r} is not a duration; write e.g. '30s', '10m', '1h' or seconds")


def positive_duration(value: object) -> float:
    """A duration that must be above zero (poll intervals, timeouts)."""
    d = duration(value)
    if d <= 0:
        raise ValueError("must be positive")
    return d


Duration = Annotated[float, BeforeValidator(duration)]
PositiveDuration = Annotated[float, BeforeValidator(positive_duration)]


def template_fields(template: str, allowed: frozenset[str], what: str) -> str:
    """Check a `{name}` template uses only the allowed fields (str.format syntax)."""
    try:
        found = [f for _, f, _, _ in string.Formatter().parse(template) if f is not None]
    except ValueError as exc:
        raise ValueError(f"{what} {template!r} is not a valid template: {exc}") from None
    bad = [f for f in found if f not in allowed]
    if bad:
        raise ValueError(f"{what} {template!r} uses {{{bad[0]}}}; known fields: "
                         + ", ".join(f"{{{f}}}" for f in sorted(allowed)))
    return template


def _env_name(v: str | None) -> str | None:
    if v is not None and not _ENV_NAME.fullmatch(v):
        raise ValueError(f"{v!r} is not an environment variable name")
    return v


class PatternTransform(StrictModel):
    """`{ pattern = "^v(.+)$", replace = "\\1" }`: a full-match regex rewrite of the tag."""

    pattern: str
    replace: str

    @field_validator("pattern")
    @classmethod
    def _pattern(cls, v: str) -> str:
        try:
            re.compile(v)
        except re.error as exc:
            raise ValueError(f"pattern {v!r} is not a regular expression: {exc}") from None
        return v


TagTransform = Literal["none", "strip-v", "helm-oci"] | PatternTransform


def transform_tag(transform: TagTransform, tag: str) -> str:
    """The image tag for a git tag (lockstep.tagtransform.apply on the parsed setting)."""
    parsed = ((transform.pattern, transform.replace) if isinstance(transform, PatternTransform)
              else transform)
    return tagtransform.apply(parsed, tag)


class ImageSpec(StrictModel):
    """One artifact of a component: an image and how its tag derives from the release tag."""

    image: str
    tag_transform: TagTransform = "none"

    @field_validator("image")
    @classmethod
    def _image(cls, v: str) -> str:
        ref = imageref.parse(v, "image")
        if ref.tag or ref.digest:
            raise ValueError(f"image {v!r} must be a name without tag or digest")
        return v

    @property
    def ref(self) -> imageref.ImageRef:
        """The parsed image name."""
        return imageref.parse(self.image)


class Poll(StrictModel):
    """Polling backoff bounds (seconds)."""

    initial: PositiveDuration = 0.5
    max: PositiveDuration = 10.0


class GitTimeout(StrictModel):
    """Timeouts of git children: lookups (ls-remote) and transfers (fetch, push)."""

    lookup: PositiveDuration = 30.0
    transfer: PositiveDuration = 300.0


class Notifications(StrictModel):
    """Where lockstep listens for the registry's push notifications."""

    listen: str = "127.0.0.1:5081"
    path: str = "/events"
    token_env: str | None = None

    @field_validator("token_env")
    @classmethod
    def _token(cls, v: str | None) -> str | None:
        return _env_name(v)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not v.startswith("/") or any(c.isspace() for c in v):
            raise ValueError("must be an absolute URL path such as '/events'")
        return v.rstrip("/") or "/"

    @model_validator(mode="after")
    def _loopback(self) -> Notifications:
        host, _, port = self.listen.rpartition(":")
        if not host or not port.isdigit():
            raise ValueError(f"listen {self.listen!r} must be HOST:PORT")
        if not urls.is_loopback(host) and self.token_env is None:
            raise ValueError(f"listen {self.listen!r} is not a loopback address: token_env is "
                             "required so only the registry can wake the waits")
        return self

    @property
    def address(self) -> tuple[str, int]:
        """(host, port) to bind."""
        host, _, port = self.listen.rpartition(":")
        return host.strip("[]"), int(port)


class ReleaseSettings(StrictModel):
    """`[release]`: the release tag template and the run's limits."""

    tag: str = DEFAULT_RELEASE_TAG
    identity: Identity | None = None
    jobs: int = Field(default=8, ge=1, le=64)
    wait_timeout: Duration = 3600.0
    poll: Poll = Field(default_factory=Poll)
    git_timeout: GitTimeout = Field(default_factory=GitTimeout)
    notifications: Notifications | None = None
    insecure_hosts: list[str] = Field(default_factory=list)

    @field_validator("tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        template_fields(v, RELEASE_TAG_FIELDS, "release tag")
        names.release_tag(v.format(version="v1.2.3", component="app"), "release tag template")
        return v


class Identity(StrictModel):
    """The author, committer and tagger of the commits and tags lockstep makes."""

    name: str = "lockstep"
    email: str = "lockstep@localhost"

    @field_validator("name", "email")
    @classmethod
    def _ident(cls, v: str) -> str:
        # git refuses an empty ident and these characters in one: a landing would fail forever.
        if not v.strip() or any(c in v for c in "<>\n\r\0"):
            raise ValueError("must be non-empty, without '<', '>' or line breaks")
        return v


class _HostAuth(StrictModel):
    username_env: str | None = None
    password_env: str | None = None
    ca_file: str | None = None
    insecure: bool = False

    @field_validator("username_env", "password_env")
    @classmethod
    def _env(cls, v: str | None) -> str | None:
        return _env_name(v)

    @model_validator(mode="after")
    def _pair(self) -> _HostAuth:
        if (self.username_env is None) != (self.password_env is None):
            raise ValueError("username_env and password_env go together: set both or neither")
        return self


class RegistrySettings(_HostAuth):
    """`[registries."host[:port]"]`: an OCI layout directory, or how to reach a registry."""

    layout: str | None = None
    scheme: Literal["https", "http"] = "https"

    @model_validator(mode="after")
    def _layout(self) -> RegistrySettings:
        if self.layout is not None:
            if not self.layout.strip() or any(ord(c) < 32 for c in self.layout):
                raise ValueError("layout must be a directory path (relative to the workspace)")
            if self.username_env or self.ca_file:
                raise ValueError("a layout registry is a directory: it takes no credentials "
                                 "or ca_file")
        return self


class GitHostSettings(_HostAuth):
    """`[git."host[:port]"]`: credentials and CA for one git host, never in a URL."""


class PinConfig(StrictModel):
    """`[[pins]]`: one reference to a component's artifact in a file of another (or its own)."""

    repo: str
    component: str
    file: str
    kind: Literal["dockerfile", "helm-values", "chart", "regex"]
    image: str | None = None
    pattern: str | None = None
    value: str | None = None
    fields: list[Literal["version", "appVersion"]] | None = None
    tag_keys: list[str] = Field(default_factory=lambda: ["tag"])
    max_matches: int = Field(default=1, ge=1)
    digest: bool = False

    @field_validator("repo", "component")
    @classmethod
    def _names(cls, v: str) -> str:
        return names.component_name(v)

    @field_validator("file")
    @classmethod
    def _file(cls, v: str) -> str:
        return names.pin_path(v)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None:
            ref = imageref.parse(v, "pin image")
            if ref.tag or ref.digest:
                raise ValueError(f"image {v!r} must be a name without tag or digest")
        return v

    @field_validator("value")
    @classmethod
    def _value(cls, v: str | None) -> str | None:
        return v if v is None else template_fields(v, PIN_VALUE_FIELDS, "pin value")

    @model_validator(mode="after")
    def _kind(self) -> PinConfig:
        if self.kind == "regex":
            if self.pattern is None:
                raise ValueError("a regex pin needs `pattern` with one capture group")
            try:
                groups = re.compile(self.pattern).groups
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: "
                                 f"{exc}") from None
            if groups != 1:
                raise ValueError(f"pattern {self.pattern!r} has {groups} capture groups; "
                                 "it needs exactly one, around the value to pin")
        elif self.pattern is not None:
            raise ValueError(f"`pattern` is only for kind = 'regex', not {self.kind!r}")
        if self.fields is not None and self.kind != "chart":
            raise ValueError("`fields` is only for kind = 'chart'")
        if self.value is not None and self.kind not in ("regex", "chart"):
            raise ValueError(f"`value` is only for kinds 'regex' and 'chart', not {self.kind!r}")
        if self.component == self.repo and self.value and "{digest}" in self.value:
            raise ValueError("a pin of the repository's own release cannot use {digest}")
        return self

    @property
    def chart_fields(self) -> tuple[str, ...]:
        """The Chart.yaml fields a chart pin sets."""
        return tuple(self.fields) if self.fields else CHART_FIELDS


def check_url(url: str, insecure_hosts: list[str]) -> None:
    """Spec §7's URL rules (the transport's own parser); ValueError on a refused one."""
    try:
        urls.parse(url, insecure_hosts)
    except ConfigError as exc:
        raise ValueError(f"{exc.message} ({exc.hint})" if exc.hint else exc.message) from None


ReleaseSettings.model_rebuild()
