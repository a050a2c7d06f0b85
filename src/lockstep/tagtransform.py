"""Release tag → image tag (`tag_transform`): pure functions, no schema, so the demo's CI hook
job can use them without loading the configuration machinery."""

from __future__ import annotations

import re
from collections.abc import Mapping

from lockstep import imageref
from lockstep.errors import ValidationError

NAMED = ("none", "strip-v", "helm-oci")
Transform = str | tuple[str, str]  # a named transform, or (pattern, replace)


def parse(value: str | Mapping[str, str]) -> Transform:
    """A transform as written in configuration or a hook's settings; ValidationError if not."""
    if isinstance(value, str):
        if value not in NAMED:
            raise ValidationError(f"unknown tag_transform {value!r}",
                                  "use none, strip-v, helm-oci or {pattern, replace}")
        return value
    try:
        pattern, replace = value["pattern"], value["replace"]
        re.compile(pattern)
    except (KeyError, re.error) as exc:
        raise ValidationError(
            f"tag_transform {dict(value)!r} is not {{pattern, replace}}: {exc}",
            'write { pattern = "^v(.+)$", replace = "\\\\1" }') from None
    return pattern, replace


def apply(transform: Transform, tag: str) -> str:
    """The image tag for a git tag; ValidationError when a pattern does not match the whole tag
    or the result is not an OCI tag."""
    if transform == "strip-v":
        out = tag[1:] if tag.startswith("v") else tag
    elif transform == "helm-oci":
        out = tag.replace("+", "_")  # Helm stores SemVer build metadata so in OCI tags
    elif isinstance(transform, tuple):
        m = re.fullmatch(transform[0], tag)
        if m is None:
            raise ValidationError(f"tag {tag!r} does not match tag_transform pattern "
                                  f"{transform[0]!r}", "fix the pattern or the release tag")
        out = m.expand(transform[1])
    else:
        out = tag
    if not imageref.image_tag_valid(out):
        raise ValidationError(f"image tag {out!r} (from git tag {tag!r}) is not a valid OCI tag",
                              "use tag_transform (e.g. 'helm-oci' turns '+' into '_')")
    return out
