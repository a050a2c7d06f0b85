"""A repository's pins at a source commit: every file's edits computed on the original blobs and
applied together, one commit's worth (spec/release.md §3 "Validation first", §6)."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

from lockstep import imageref
from lockstep.config import Config
from lockstep.pinning import plan as pinplan
from lockstep.pinning.model import Edit, NewValue, PinSpec
from lockstep.release.gitobjects import blob_at
from lockstep.release.plan import Node, Plan, pin_artifact
from lockstep.release_config import PinConfig

DIGEST_PLACEHOLDER = "sha256:" + "0" * 64


@dataclass
class RepoPins:
    """The outcome for one repository: changed files (path → mode, bytes) and every edit."""

    files: dict[str, tuple[str, bytes]] = field(default_factory=dict)
    edits: list[Edit] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether any file changes (else the release tags the source commit itself)."""
        return bool(self.files)


def spec_of(cfg: Config, plan: Plan, pin: PinConfig) -> PinSpec:
    """The pinning engine's view of a configured pin."""
    art = pin_artifact(cfg, plan, pin)
    name = pin.image or (art.image if art else None)
    image = imageref.parse(name) if name else None
    return PinSpec(kind=pin.kind, file=pin.file, image=image,
                   pattern=re.compile(pin.pattern) if pin.pattern else None,
                   fields=pin.chart_fields, tag_keys=tuple(pin.tag_keys),
                   max_matches=pin.max_matches, digest=pin.digest)


def value_of(cfg: Config, plan: Plan, pin: PinConfig, digests: dict[str, str | None]) -> NewValue:
    """What a pin writes: its artifact's tag and digest (`digests` by image; a placeholder when
    not known yet, at plan time), and the rendered `value` for regex and chart pins."""
    node = plan.nodes[pin.component]
    art = pin_artifact(cfg, plan, pin)
    image_tag = art.image_tag if art else node.tag
    # Always the artifact's digest: a reference that already has one must get the new one
    # (a stale digest would override the tag); `pin.digest` only adds it where there is none.
    digest = (digests.get(art.image) or DIGEST_PLACEHOLDER) if art else None
    value = None
    if pin.kind in ("regex", "chart"):
        template = pin.value or ("{tag}" if pin.kind == "chart" else "{image_tag}")
        value = template.format(version=plan.version, tag=node.tag, image_tag=image_tag,
                                digest=digest or "")
    return NewValue(image_tag=image_tag, digest=digest, value=value)


def compute(cfg: Config, plan: Plan, node: Node, cache: Path,
            digests: dict[str, dict[str, str | None]]) -> RepoPins:
    """Edit every pinned file of `node`'s repository at its source commit (in memory)."""
    out = RepoPins()
    by_file: dict[str, list[PinConfig]] = {}
    for i in node.pin_indexes:
        by_file.setdefault(cfg.pins[i].file, []).append(cfg.pins[i])
    for path, pins in sorted(by_file.items()):
        mode, data = blob_at(cache, node.source, path)
        requests = [(spec_of(cfg, plan, p), value_of(cfg, plan, p, digests.get(p.component, {})))
                    for p in pins]
        edits = pinplan.compute_edits(path, data, requests)
        out.edits.extend(edits)
        if any(e.changed for e in edits):
            out.files[path] = (mode, pinplan.apply_edits(data, edits))
    return out
