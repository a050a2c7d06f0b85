"""The release plan (spec/release.md §3): which integration release, which components in which
dependency levels, each one's source commit, release tag, artifacts and pins. No network here:
the checks against remotes and registries come after, in `preview`."""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from typing import Any

from lockstep import config as config_mod
from lockstep import git, imageref, names
from lockstep.config import Config
from lockstep.errors import ConfigError, NotFoundError
from lockstep.release_config import ImageSpec, PinConfig, transform_tag
from lockstep.workspace import Workspace


@dataclass(frozen=True)
class Artifact:
    """One image a component ships, at this release: `image:image_tag` in `registry`."""

    image: str
    image_tag: str
    registry: str
    repository: str

    @property
    def reference(self) -> str:
        """`image:tag` as messages show it."""
        return f"{self.image}:{self.image_tag}"


@dataclass(frozen=True)
class Node:
    """One component of the release."""

    name: str
    level: int
    deps: tuple[str, ...]
    version: str  # the component's version tag in the manifest
    source: str  # S: the commit the manifest pins
    recorded_digest: str | None
    tag: str  # T: the release tag
    artifacts: tuple[Artifact, ...]
    pin_indexes: tuple[int, ...]  # into config.pins: the pins that edit this repository
    branch: str | None


@dataclass
class Plan:
    """A whole release: version, configuration, integration release and nodes by level."""

    version: str
    configuration: str
    integration_tag: str | None
    integration_commit: str
    nodes: dict[str, Node] = field(default_factory=dict)
    levels: list[list[str]] = field(default_factory=list)

    def to_json(self) -> dict[str, Any]:
        """The plan as the journal keeps it (so `release status` needs no remote)."""
        return {"version": self.version, "configuration": self.configuration,
                "integration_tag": self.integration_tag,
                "integration_commit": self.integration_commit, "levels": self.levels,
                "nodes": {n: asdict(node) for n, node in self.nodes.items()}}


def integration_tags(ws: Workspace) -> dict[str, str]:
    """Integration release tags (by the configured tag format) → commit, from the remote."""
    refs = git.ls_remote(ws.root, ws.remote, "refs/tags/*")
    fmt = ws.config.integration.tag_format
    pattern = tag_regex(fmt)
    tags: dict[str, str] = {}
    for ref, sha in refs.items():
        name = ref.removeprefix("refs/tags/")
        peeled = name.endswith("^{}")
        name = name.removesuffix("^{}")
        if pattern.fullmatch(name) and (peeled or name not in tags):
            tags[name] = sha
    return tags


def tag_regex(fmt: str) -> re.Pattern[str]:
    """The tag format as a regex with named groups year, month, n."""
    out, pos = "", 0
    for m in re.finditer(r"\{(year|month|n)(?::[^}]*)?\}", fmt):
        out += re.escape(fmt[pos:m.start()]) + f"(?P<{m.group(1)}>[0-9]+)"
        pos = m.end()
    return re.compile(out + re.escape(fmt[pos:]))


def newest_integration_tag(ws: Workspace) -> tuple[str, str]:
    """The highest integration tag by its format's year, month and n: the last one landed."""
    tags = integration_tags(ws)
    if not tags:
        raise NotFoundError("the integration remote has no integration release tag yet",
                            "land a bump with `lockstep queue run`, or pass --manifest REF")
    pattern = tag_regex(ws.config.integration.tag_format)

    def key(name: str) -> tuple[int, int, int]:
        m = pattern.fullmatch(name)
        assert m is not None
        d = m.groupdict()
        return int(d.get("year") or 0), int(d.get("month") or 0), int(d.get("n") or 0)

    name = max(tags, key=key)
    return name, tags[name]


def levels_of(graph: dict[str, tuple[str, ...]]) -> dict[str, int]:
    """Level 0: no dependencies; any other: one above its highest dependency."""
    level: dict[str, int] = {}

    def of(name: str) -> int:
        if name not in level:
            level[name] = 1 + max((of(d) for d in graph[name]), default=-1)
        return level[name]

    for name in graph:
        of(name)
    return level


def build(ws: Workspace, cfg: Config, *, configuration: str, manifest_ref: str | None,
          version: str | None) -> Plan:
    """The plan from configuration and manifest alone; every name, tag and image validated."""
    names.configuration_name(configuration)
    if version is not None:  # before any git command (spec §7)
        names.release_tag(version, "release version")
    integration_tag: str | None
    if manifest_ref is None:
        integration_tag, commit = newest_integration_tag(ws)
        if not git.has_object(ws.root, commit):
            git.fetch(ws.root, ws.remote, f"+refs/tags/{integration_tag}:"
                                          f"refs/tags/{integration_tag}")
    else:
        names.ref_name(manifest_ref, "--manifest revision")
        commit = ws.resolve_commit(manifest_ref)
        integration_tag = manifest_ref if git.rev_parse(
            ws.root, f"refs/tags/{manifest_ref}") else None
    commit = git.rev_parse(ws.root, f"{commit}^{{commit}}") or commit
    manifest = ws.manifest_at(commit)
    if configuration not in manifest.configurations:
        raise NotFoundError(f"configuration {configuration!r} is not in the manifest at "
                            f"{commit[:12]}",
                            f"configurations there: {', '.join(manifest.configurations)}")
    release_version = version or integration_tag
    if release_version is None:
        raise ConfigError(f"{manifest_ref!r} is not an integration tag, so the release has no "
                          "default version", "pass --version V")
    names.release_tag(release_version, "release version")
    pins = manifest.pins(configuration)
    graph: dict[str, tuple[str, ...]] = {}
    for name in pins:
        comp = cfg.component(name)
        for dep in comp.depends_on:
            if dep not in pins:
                raise ConfigError(f"components.{name}.depends_on: {dep!r} is not pinned in "
                                  f"configuration {configuration!r}",
                                  "pin it in the manifest or remove the dependency")
        graph[name] = tuple(sorted(comp.depends_on))
    levels = levels_of(graph)
    plan = Plan(release_version, configuration, integration_tag, commit)
    for name, pin in sorted(pins.items()):
        comp = cfg.components[name]
        tag = cfg.release.tag.format(version=release_version, component=name)
        names.release_tag(tag)
        plan.nodes[name] = Node(
            name=name, level=levels[name], deps=graph[name], version=pin.version,
            source=pin.sha, recorded_digest=pin.digest, tag=tag,
            artifacts=tuple(artifact(a, tag) for a in comp.artifacts),
            pin_indexes=tuple(i for i, p in enumerate(cfg.pins) if p.repo == name),
            branch=comp.branch)
    for i, p in enumerate(cfg.pins):
        if p.repo in plan.nodes and p.component not in plan.nodes:
            raise ConfigError(f"pins.{i}: {p.component!r} is not pinned in configuration "
                              f"{configuration!r}", "pin it in the manifest or drop the pin")
    top = max(levels.values(), default=-1)
    plan.levels = [sorted(n for n in plan.nodes if levels[n] == lv) for lv in range(top + 1)]
    return plan


def artifact(spec: ImageSpec, tag: str) -> Artifact:
    """The artifact of an image spec at release tag `tag` (transform applied, tag validated)."""
    ref = imageref.parse(spec.image)
    return Artifact(spec.image, transform_tag(spec.tag_transform, tag), ref.registry,
                    ref.repository)


def pin_artifact(cfg: Config, plan: Plan, pin: PinConfig) -> Artifact | None:
    """The artifact a pin writes (None for chart and regex pins without an image)."""
    if pin.kind == "chart" or (pin.kind == "regex" and pin.image is None
                               and len(cfg.components[pin.component].artifacts) != 1):
        return None
    if not cfg.components[pin.component].artifacts:
        return None
    spec = config_mod.pin_artifact(cfg, pin)
    return artifact(spec, plan.nodes[pin.component].tag)
