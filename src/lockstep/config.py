"""lockstep.toml: the workspace schema (pydantic) and its loading with one-line errors."""

from __future__ import annotations

import difflib
import graphlib
import os
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, Field, StrictBool, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from lockstep import config_values, names
from lockstep.distribution.settings import DistributionSettings
from lockstep.errors import ConfigError, DependencyCycleError, UsageError, ValidationError
from lockstep.queue import store_url
from lockstep.release_config import (
    GitHostSettings,
    Identity,
    ImageSpec,
    PinConfig,
    RegistrySettings,
    ReleaseSettings,
    StrictModel,
    TagTransform,
    check_url,
)
from lockstep.scenarios import stage as stage_kinds
from lockstep.scenarios.settings import ScenarioSettings
from lockstep.server.settings import ServeSettings

CONFIG_FILE = "lockstep.toml"
DEFAULT_TAG_FORMAT = "v{year}.{month:02d}.{n}"
_FORBIDDEN_URL_PREFIXES = ("ext::", "fd::", "-")
_pass_env = config_values.pass_env
_argv = config_values.argv


_Model = StrictModel


class Integration(_Model):
    """Where lockstep lands: the integration repo's remote, branch and manifest file."""

    remote: str = "origin"
    branch: str = "main"
    manifest: str = "manifest.toml"
    tag_format: str = DEFAULT_TAG_FORMAT
    owners: list[str] = Field(default_factory=list)  # told when a distribution fails

    @field_validator("remote", "branch")
    @classmethod
    def _ref(cls, v: str) -> str:
        return names.ref_name(v, "remote or branch name")

    @field_validator("manifest")
    @classmethod
    def _path(cls, v: str) -> str:
        return names.relative_path(v, "manifest path")

    @field_validator("tag_format")
    @classmethod
    def _tag_format(cls, v: str) -> str:
        if "{n}" not in v:
            raise ValueError("must contain {n}, e.g. v{year}.{month:02d}.{n}")
        try:
            sample = v.format(year=2026, month=11, n=3)
        except (KeyError, ValueError, IndexError) as exc:
            raise ValueError(f"only {{year}}, {{month}} and {{n}} may appear ({exc})") from None
        names.ref_name(sample, "tag format")
        return v


_ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


class Deploy(_Model):
    """`[components.<name>.deploy]`: how the rollout controller's local driver runs the
    component of a release (docs/rollouts-controller.md); components without it are libraries."""

    command: list[str]
    args: list[str] = Field(default_factory=list)
    env: dict[str, str] = Field(default_factory=dict)
    stateless: StrictBool = False

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        _argv(v)
        if not v[0].startswith("/") and v[0] != "{python}":
            names.relative_path(v[0], "deploy program")
        if v[0] == "{python}" and len(v) > 1 and not v[1].startswith(("-", "/")):
            names.relative_path(v[1], "deploy script")
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not _ENV_NAME.fullmatch(key) or key.startswith("LOCKSTEP_"):
                raise ValueError(f"{key!r} is not a variable name the component may set "
                                 "(letters, digits, '_'; LOCKSTEP_* are set by the driver)")
        return v


class Component(_Model):
    """A component repository: where to fetch it, its artifact and what it depends on."""

    url: str
    ssh_url: str | None = None
    image: str | None = None
    tag_transform: TagTransform = "none"
    images: list[ImageSpec] | None = None
    depends_on: list[str] = Field(default_factory=list)
    owners: list[str] = Field(default_factory=list)
    branch: str | None = None
    deploy: Deploy | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        return v if v is None else ImageSpec(image=v).image

    @field_validator("branch")
    @classmethod
    def _branch(cls, v: str | None) -> str | None:
        return v if v is None else names.ref_name(v, "branch")

    @model_validator(mode="after")
    def _artifacts(self) -> Component:
        if self.image is not None and self.images is not None:
            raise ValueError("set `image` (one artifact) or `images` (several), not both")
        if self.images is not None and self.tag_transform != "none":
            raise ValueError("with `images`, give each entry its own tag_transform")
        return self

    @property
    def artifacts(self) -> tuple[ImageSpec, ...]:
        """The images this component ships, each with its tag transform."""
        if self.images is not None:
            return tuple(self.images)
        if self.image is not None:
            return (ImageSpec(image=self.image, tag_transform=self.tag_transform),)
        return ()

    @field_validator("url", "ssh_url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        if v is None:
            return v
        if not v or any(c.isspace() for c in v) or v.startswith(_FORBIDDEN_URL_PREFIXES):
            raise ValueError("must be a git URL or path without spaces (ext:: and fd:: refused)")
        return v

    @field_validator("depends_on")
    @classmethod
    def _deps(cls, v: list[str]) -> list[str]:
        return [names.component_name(d) for d in v]


class Stage(_Model):
    """A stage: an argv run in a prepared workspace, with a timeout and infrastructure retries;
    or, with `kind = "upgrade"`, an upgrade scenario (lockstep.scenarios.stage)."""

    name: str
    command: list[str] | None = None
    kind: str | None = None
    scenario: str | None = None
    timeout: float
    retries: int = Field(default=2, ge=0, le=10)
    infra_exit_code: int = Field(default=75, ge=1, le=255)
    configurations: list[str] | None = None
    pool: str | None = None
    pass_env: list[str] = Field(default_factory=list)

    @field_validator("pool")
    @classmethod
    def _pool(cls, v: str | None) -> str | None:
        return None if v is None else names.pool_name(v)

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return names.stage_name(v)

    @field_validator("pass_env")
    @classmethod
    def _pass_env(cls, v: list[str]) -> list[str]:
        return _pass_env(v)

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else _argv(v)

    @field_validator("kind")
    @classmethod
    def _kind(cls, v: str | None) -> str | None:
        return None if v is None else stage_kinds.check_kind(v)

    @field_validator("scenario")
    @classmethod
    def _scenario(cls, v: str | None) -> str | None:
        return None if v is None else stage_kinds.check_scenario(v)

    @model_validator(mode="after")
    def _command_or_kind(self) -> Stage:
        if (self.command is None) == (self.kind is None):
            raise ValueError("give exactly one of `command` (an argv) and `kind` (\"upgrade\")")
        if self.scenario is not None and self.kind is None:
            raise ValueError("`scenario` belongs to kind = \"upgrade\" stages")
        return self

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: object) -> object:
        return config_values.positive_seconds(v)

    @field_validator("configurations")
    @classmethod
    def _configs(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else [names.configuration_name(c) for c in v]


class _NotifierBase(_Model):
    """What every notifier has: a stable name that binds its pending deliveries to it."""

    name: str

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        return names.notifier_name(v)


class WebhookNotifier(_NotifierBase):
    """POST a signed JSON event to a URL."""

    type: Literal["webhook"]
    url: str
    secret: str | None = None
    secret_env: str | None = None
    events: list[str] = Field(default_factory=lambda: ["rejected"])
    timeout: float = Field(default=10.0, gt=0)

    @field_validator("url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not re.match(r"^https?://[^\s]+$", v):
            raise ValueError("must be an http:// or https:// URL")
        return v

    @model_validator(mode="after")
    def _secret(self) -> WebhookNotifier:
        if not self.secret and not self.secret_env:
            raise ValueError("needs secret_env (the variable holding the HMAC secret) or secret")
        return self

    def resolve_secret(self) -> bytes:
        """The HMAC key, read from the environment when secret_env is set."""
        if self.secret_env:
            value = os.environ.get(self.secret_env)
            if not value:
                raise UsageError(
                    f"webhook secret variable {self.secret_env} is not set",
                    f"export {self.secret_env}=... before running the queue",
                )
            return value.encode()
        assert self.secret is not None
        return self.secret.encode()


class CommandNotifier(_NotifierBase):
    """Run a local command with the JSON event on stdin."""

    type: Literal["command"]
    command: list[str]
    events: list[str] = Field(default_factory=lambda: ["rejected"])
    timeout: float = Field(default=30.0, gt=0)

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str]) -> list[str]:
        return _argv(v)


Notifier = Annotated[WebhookNotifier | CommandNotifier, Field(discriminator="type")]
NOTIFIER_EVENTS = {"rejected", "landed", "skipped", "cancelled", "distribution-failed"}


class QueueSettings(_Model):
    """Queue discipline and recovery knobs (spec/queue.md §3, §8)."""

    mode: Literal["serial", "speculative", "batch"] = "serial"
    runners: int = Field(default=1, ge=1, le=256)
    window: Literal["runners", "fixed", "aimd"] = "runners"
    window_fixed: int | None = Field(default=None, ge=1)
    window_start: int | None = Field(default=None, ge=1)
    window_floor: int = Field(default=3, ge=1)
    window_max: int | None = Field(default=None, ge=1)
    batch_size: int = Field(default=8, ge=1, le=1024)
    batch_max_wait: float = Field(default=60.0, ge=0)
    bisect_ways: int | Literal["auto"] = "auto"
    item_timeout: float | None = Field(default=None, gt=0)
    flake_retries: int = Field(default=0, ge=0, le=10)
    pools: dict[str, int] = Field(default_factory=dict)
    max_recoveries: int = Field(default=3, ge=0)
    infra_pause_after: int = Field(default=3, ge=1)
    lease_ttl: float = Field(default=60.0, gt=0)
    notify_attempts: int = Field(default=5, ge=1)
    retry_backoff: float = Field(default=5.0, ge=0)
    log_tail_lines: int = Field(default=50, ge=1)
    kill_grace: float = Field(default=10.0, gt=0)
    pass_env: list[str] = Field(default_factory=list)

    @field_validator("pass_env")
    @classmethod
    def _pass_env(cls, v: list[str]) -> list[str]:
        return _pass_env(v)

    @field_validator("bisect_ways")
    @classmethod
    def _ways(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 2:
            raise ValueError("must be 2 or more (a split makes at least two parts), or \"auto\"")
        return v

    @field_validator("pools")
    @classmethod
    def _pools(cls, v: dict[str, int]) -> dict[str, int]:
        for name, size in v.items():
            names.pool_name(name)
            if size < 1:
                raise ValueError(f"pool {name!r} has size {size}: a pool needs at least 1 runner, "
                                 "or its stages could never run")
        return v

    @model_validator(mode="after")
    def _knobs_of_mode(self) -> QueueSettings:
        # A knob that the chosen mode ignores is an error, not a quiet no-op: whoever set it
        # believes the queue behaves differently.
        set_ = self.model_fields_set
        if self.mode == "serial":
            stray = sorted(set_ & {"runners", "window", "window_fixed", "window_start",
                                   "window_max", "window_floor", "batch_size",
                                   "batch_max_wait", "bisect_ways", "pools",
                                   "flake_retries", "item_timeout"})
            if stray:
                raise ValueError(f"{stray[0]} has no effect in mode \"serial\"; set mode = "
                                 "\"speculative\" or \"batch\", or remove it")
        if self.mode != "batch":
            stray = sorted(set_ & {"batch_size", "batch_max_wait", "bisect_ways"})
            if stray:
                raise ValueError(f"{stray[0]} has no effect in mode {self.mode!r}; set mode = "
                                 "\"batch\", or remove it")
        if self.window_fixed is not None and self.window != "fixed":
            raise ValueError("window_fixed needs window = \"fixed\"")
        if self.window != "aimd":
            stray = sorted(set_ & {"window_start", "window_max", "window_floor"})
            if stray:
                raise ValueError(f"{stray[0]} needs window = \"aimd\"")
        if self.window == "fixed" and self.window_fixed is None:
            raise ValueError("window = \"fixed\" needs window_fixed (the number of items "
                             "tested at once)")
        if self.window_max is not None and self.window_max < self.window_floor:
            raise ValueError(f"window_max ({self.window_max}) is below window_floor "
                             f"({self.window_floor})")
        return self


class StoreSettings(_Model):
    """Where the queue's state lives (spec/queue.md §8): unset is the workspace's SQLite file,
    a postgresql:// URL a shared PostgreSQL database; LOCKSTEP_STORE_URL overrides it."""

    url: str | None = None

    @field_validator("url")
    @classmethod
    def _url(cls, v: str | None) -> str | None:
        return store_url.check_configured(v)


class Config(_Model):
    """The whole lockstep.toml."""

    integration: Integration = Field(default_factory=Integration)
    identity: Identity = Field(default_factory=Identity)
    queue: QueueSettings = Field(default_factory=QueueSettings)
    store: StoreSettings = Field(default_factory=StoreSettings)
    components: dict[str, Component] = Field(default_factory=dict)
    stages: list[Stage] = Field(default_factory=list)
    notifiers: list[Notifier] = Field(default_factory=list)
    release: ReleaseSettings = Field(default_factory=ReleaseSettings)
    scenarios: ScenarioSettings = Field(default_factory=ScenarioSettings)
    distribution: DistributionSettings = Field(default_factory=DistributionSettings)
    serve: ServeSettings = Field(default_factory=ServeSettings)
    registries: dict[str, RegistrySettings] = Field(default_factory=dict)
    git: dict[str, GitHostSettings] = Field(default_factory=dict)
    pins: list[PinConfig] = Field(default_factory=list)

    @model_validator(mode="after")
    def _consistent(self) -> Config:
        # Cross-field checks: the message starts with the key path (parse() keeps it as is).
        for i, stage in enumerate(self.stages):
            if stage.pool is not None and stage.pool not in self.queue.pools:
                known = ", ".join(sorted(self.queue.pools)) or "none"
                raise ValueError(f"stages.{i}.pool: pool {stage.pool!r} is not declared in "
                                 f"[queue.pools] (declared: {known})")
        for name, comp in self.components.items():
            try:
                names.component_name(name)
            except ValidationError as exc:
                raise ValidationError(f"components.{name}: {exc.message}", exc.hint) from None
            for i, dep in enumerate(comp.depends_on):
                if dep not in self.components:
                    raise ValueError(f"components.{name}.depends_on.{i}: unknown component "
                                     f"{dep!r}")
        for name in self.serve.component_secret_envs:
            if name not in self.components:
                known = ", ".join(sorted(self.components)) or "none"
                raise ValueError(f"serve.component_secret_envs.{name}: unknown component "
                                 f"{name!r} (components: {known})")
        cycle = smallest_cycle({n: c.depends_on for n, c in self.components.items()})
        if cycle:
            raise DependencyCycleError(f"dependency cycle: {' → '.join(cycle)}",
                                       "depends_on must form a DAG: remove one edge of it")
        _check_release(self)
        seen: set[str] = set()
        for i, stage in enumerate(self.stages):
            if stage.name in seen:
                raise ValueError(f"stages.{i}.name: stage {stage.name!r} is declared twice")
            seen.add(stage.name)
        notifier_at: dict[str, int] = {}
        for i, notifier in enumerate(self.notifiers):
            if notifier.name in notifier_at:
                raise ValueError(f"notifiers.{i}.name: notifier {notifier.name!r} is declared "
                                 f"twice (also notifiers.{notifier_at[notifier.name]})")
            notifier_at[notifier.name] = i
            unknown = set(notifier.events) - NOTIFIER_EVENTS
            if unknown:
                raise ValueError(f"notifiers.{i}.events: unknown event(s) {sorted(unknown)}; "
                                 f"known: {sorted(NOTIFIER_EVENTS)}")
        return self

    def component(self, name: str) -> Component:
        """The named component, or a one-line error listing the known ones."""
        from lockstep.errors import NotFoundError

        names.component_name(name)
        try:
            return self.components[name]
        except KeyError:
            known = ", ".join(sorted(self.components)) or "none"
            raise NotFoundError(
                f"unknown component {name!r}", f"components in lockstep.toml: {known}"
            ) from None


def smallest_cycle(graph: dict[str, list[str]]) -> list[str] | None:
    """The elementary cycle to report (spec/release.md §3): rotated to start at its smallest
    name, the lexicographically smallest such sequence; closed (`a → b → a`). None for a DAG."""
    try:
        graphlib.TopologicalSorter(graph).prepare()
        return None
    except graphlib.CycleError:
        pass
    for start in sorted(graph):
        found = _first_cycle(graph, start)
        if found:
            return [*found, start]
    return None  # unreachable: graphlib saw a cycle, and every cycle has a smallest name


def _first_cycle(graph: dict[str, list[str]], start: str) -> list[str] | None:
    """The lexicographically first cycle through `start` using only names >= start.

    Depth first in sorted order, closing the cycle before going deeper: a closed path is a
    prefix of, hence smaller than, any longer one sharing it.
    """
    path = [start]

    def walk(node: str) -> bool:
        nexts = sorted(d for d in graph.get(node, []) if d >= start)
        if start in nexts:
            return True
        for nxt in nexts:
            if nxt not in path:
                path.append(nxt)
                if walk(nxt):
                    return True
                path.pop()
        return False

    return path if walk(start) else None


def _check_release(cfg: Config) -> None:
    """Cross-table rules of the release tables (spec/release.md §2)."""
    urls: dict[str, str] = {}
    insecure = [*cfg.release.insecure_hosts, *(h for h, s in cfg.git.items() if s.insecure)]
    for name, comp in cfg.components.items():
        for key, url in (("url", comp.url), ("ssh_url", comp.ssh_url)):
            if url is None:
                continue
            try:
                check_url(url, insecure)
            except ValueError as exc:
                raise ValueError(f"components.{name}.{key}: {exc}") from None
        if comp.url in urls:
            raise ValueError(f"components.{name}.url: the same URL as component "
                             f"{urls[comp.url]!r}; each repository is one component")
        urls[comp.url] = name
    for i, pin in enumerate(cfg.pins):
        where = f"pins.{i}"
        for key in ("repo", "component"):
            if getattr(pin, key) not in cfg.components:
                known = ", ".join(sorted(cfg.components)) or "none"
                raise ValueError(f"{where}.{key}: unknown component {getattr(pin, key)!r} "
                                 f"(components: {known})")
        if pin.component != pin.repo and pin.component not in cfg.components[pin.repo].depends_on:
            raise ValueError(f"{where}: {pin.repo!r} pins {pin.component!r}'s artifact, so "
                             f"components.{pin.repo}.depends_on must list {pin.component!r}")
        if pin.kind in ("dockerfile", "helm-values") or (pin.kind == "regex" and pin.image):
            pin_artifact(cfg, pin, where)


def pin_artifact(cfg: Config, pin: PinConfig, where: str = "pin") -> ImageSpec:
    """The artifact of `pin.component` that a pin refers to: the one whose image the pin's
    `image` names (by registry resolution), or the only one when the pin names none."""
    arts = cfg.components[pin.component].artifacts
    if not arts:
        raise ValueError(f"{where}: component {pin.component!r} has no image to pin "
                         "(set its `image`)")
    if pin.image is None:
        if len(arts) > 1:
            raise ValueError(f"{where}: component {pin.component!r} ships several images; "
                             "set the pin's `image` to choose one")
        return arts[0]
    from lockstep import imageref

    wanted = imageref.parse(pin.image)
    hits = [a for a in arts if wanted.matches(a.ref) or a.ref.matches(wanted)]
    if len(hits) != 1:
        shipped = ", ".join(a.image for a in arts)
        raise ValueError(f"{where}: image {pin.image!r} matches {len(hits)} of "
                         f"{pin.component!r}'s images ({shipped}); it must match exactly one")
    return hits[0]


def uncovered_configurations(cfg: Config, configurations: Iterable[str]) -> list[str]:
    """The configurations no stage runs for: a bump to any of them would land untested."""
    return [
        c for c in configurations
        if not any(s.configurations is None or c in s.configurations for s in cfg.stages)
    ]


def check_stage_coverage(cfg: Config, configurations: Iterable[str],
                         source: str = CONFIG_FILE) -> None:
    """Refuse stages that name a configuration the manifest lacks, and configurations no stage
    tests: with either, a bump could land without the testing the user believes it gets."""
    known = list(configurations)
    for i, stage in enumerate(cfg.stages):
        for j, name in enumerate(stage.configurations or []):
            if name not in known:
                close = difflib.get_close_matches(name, known, n=1)
                listed = f"the manifest has: {', '.join(known)}"
                raise ConfigError(
                    f"{source}: stages.{i}.configurations.{j}: stage {stage.name!r} names "
                    f"configuration {name!r}, which the manifest does not have",
                    f"did you mean {close[0]!r}? {listed}" if close else listed,
                )
    uncovered = uncovered_configurations(cfg, known)
    if not uncovered:
        return
    listed = ("configuration " if len(uncovered) == 1 else "configurations ") + ", ".join(
        repr(c) for c in uncovered)
    if not cfg.stages:
        raise ConfigError(
            f"{source}: no [[stages]] declared, so bumps to {listed} would land untested",
            "add a [[stages]] entry that tests the manifest",
        )
    raise ConfigError(
        f"{source}: no stage runs for {listed}: every stage is restricted to other "
        "configurations, so bumps to it would land untested",
        f"add {uncovered[0]!r} to a stage's configurations, or drop a stage's restriction",
    )


def unset_secrets(cfg: Config) -> list[str]:
    """One message per webhook whose secret_env is unset or empty here: it could not sign."""
    return [
        f"notifier {n.name!r} signs with ${n.secret_env}, which is not set"
        for n in cfg.notifiers
        if isinstance(n, WebhookNotifier) and n.secret_env and not os.environ.get(n.secret_env)
    ]


def committed_secrets(cfg: Config) -> list[str]:
    """One warning per webhook whose HMAC secret is written in lockstep.toml itself: that file
    is committed, so the secret is in git history and in every stage's workspace."""
    return [
        f"notifier {n.name!r} has its secret written in {CONFIG_FILE}, so it is in git and "
        "every stage can read it; move it to an environment variable named by secret_env"
        for n in cfg.notifiers
        if isinstance(n, WebhookNotifier) and n.secret
    ]


def parse(text: str, source: str = CONFIG_FILE) -> Config:
    """Parse and validate lockstep.toml text; every problem becomes one ConfigError line."""
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", "fix the syntax") from None
    try:
        return Config.model_validate(raw)
    except PydanticValidationError as exc:
        raise _one_error(exc, source) from None
    except DependencyCycleError:
        raise
    except UsageError as exc:
        raise ConfigError(f"{source}: {exc.message}", exc.hint) from None


_SECTIONS: dict[str, type[BaseModel]] = {
    "integration": Integration, "identity": Identity, "queue": QueueSettings,
    "release": ReleaseSettings, "scenarios": ScenarioSettings, "store": StoreSettings,
}
_NOTIFIER_TYPES: dict[str, type[_Model]] = {"webhook": WebhookNotifier, "command": CommandNotifier}
_DOCS_HINT = "see docs/config.md"


def _one_error(exc: PydanticValidationError, source: str) -> ConfigError:
    """The most useful of pydantic's errors as one line: an unknown key first (a misspelt key
    also makes the right one missing), with a "did you mean" from the keys allowed there."""
    errors = exc.errors()
    unknown = [e for e in errors if e["type"] == "extra_forbidden"]
    err = (unknown or errors)[0]
    loc = list(err["loc"])
    hint = _DOCS_HINT
    if err["type"] == "extra_forbidden":
        msg = "unknown key"
        known = _known_keys(loc[:-1])
        close = difflib.get_close_matches(str(loc[-1]), known, n=1)
        if close:
            hint = f"did you mean {close[0]!r}?"
            # The key the user meant to set is then reported missing: that is the same problem.
            errors = [e for e in errors if e is err or list(e["loc"]) != [*loc[:-1], close[0]]]
        elif known:
            hint = f"known keys here: {', '.join(known)}"
    elif err["type"] == "missing":
        msg = "required key is missing"
    else:
        msg = str(err["msg"]).removeprefix("Value error, ")
        cause = (err.get("ctx") or {}).get("error")
        if isinstance(cause, UsageError) and cause.hint:
            hint = cause.hint
    if len(loc) > 2 and loc[0] == "notifiers" and loc[2] in _NOTIFIER_TYPES:
        del loc[2]  # the discriminated union's tag is not a key in the file
    where = ".".join(str(p) for p in loc)
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    prefix = f"{where}: " if where else ""
    return ConfigError(f"{source}: {prefix}{msg}{more}", hint)


def _known_keys(parent: list[int | str]) -> list[str]:
    """The keys lockstep.toml allows in the table at `parent` (a pydantic error location)."""
    model: type[BaseModel] | None = None
    match parent:
        case []:
            model = Config
        case [str(section)]:
            model = _SECTIONS.get(section)
        case ["components", str()]:
            model = Component
        case ["components", str(), "deploy"]:
            model = Deploy
        case ["stages", int()]:
            model = Stage
        case ["notifiers", int(), str(kind)]:
            model = _NOTIFIER_TYPES.get(kind)
    return list(model.model_fields) if model else []


def load(workspace: Path) -> Config:
    """Load lockstep.toml from the workspace root."""
    path = workspace / CONFIG_FILE
    if not path.is_file():
        raise ConfigError(
            f"no {CONFIG_FILE} in {workspace}",
            "run inside an integration repo, pass -C DIR, or create one with `lockstep init`",
        )
    return parse(path.read_text(encoding="utf-8"))
