"""The rollout hash of an Environment (spec §3): what decides that a change needs a new generation.

Hand-written because the hash is a contract: the elision rules and the serialisation are pinned
by golden vectors and must never change without a new API version.
"""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from lockstep.rollout.resource import FORCE_ROLLOUT_ANNOTATION, V1ALPHA1

# Step 3 of §3.1: members equal to their declared default are elided (compared as JSON values).
_SPEC_DEFAULTS: dict[str, Any] = {"rolloutStrategy": "WaitUntilReady",
                                  "rolloutRequestTimeout": "24h"}
_COMPONENT_DEFAULTS: dict[str, Any] = {"args": [], "env": {}, "stateless": False}


def canonical_json(value: Any) -> bytes:
    """UTF-8 JSON, keys sorted by code point, no insignificant whitespace (§3.1 step 4)."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"),
                      ensure_ascii=False).encode("utf-8")


def uuid5_of(text: str) -> str:
    """The UUIDv5 (namespace OID) of a hash string, lowercase and hyphenated (§4)."""
    return str(uuid.uuid5(uuid.NAMESPACE_OID, text))


def hashed_spec(obj: dict[str, Any]) -> Any:
    """The spec as hashed: v1alpha2 form, forcePromote, stateless entries, nulls and defaults
    removed (§3.1 steps 1–3). A v1alpha1 spec differs only by `requestRollout` and by its
    `forcePromote`, which the hash ignores in both versions: up-converting is dropping it."""
    spec = obj.get("spec")
    if spec is None:
        spec = {}
    if not isinstance(spec, dict):
        return _drop_nulls(spec)
    spec = dict(spec)
    spec.pop("forcePromote", None)
    if obj.get("apiVersion") == V1ALPHA1:
        spec.pop("requestRollout", None)
    components = spec.get("components")
    if isinstance(components, dict):
        spec["components"] = {name: c for name, c in components.items()
                              if not (isinstance(c, dict) and c.get("stateless") is True)}
    spec = _drop_nulls(spec)
    _drop_defaults(spec, _SPEC_DEFAULTS)
    components = spec.get("components")
    if isinstance(components, dict):
        for component in components.values():
            if isinstance(component, dict):
                _drop_defaults(component, _COMPONENT_DEFAULTS)
    return spec


def rollout_hash(obj: dict[str, Any]) -> str:
    """64 lowercase hex digits: SHA-256 of the canonical hashed spec, then the UTF-8 value of the
    `lockstep.dev/force-rollout` annotation (absent and "" alike, §3.1 step 5)."""
    digest = hashlib.sha256(canonical_json(hashed_spec(obj)))
    metadata = obj.get("metadata")
    annotations = metadata.get("annotations") if isinstance(metadata, dict) else None
    force = annotations.get(FORCE_ROLLOUT_ANNOTATION) if isinstance(annotations, dict) else None
    if isinstance(force, str):
        digest.update(force.encode("utf-8"))
    return digest.hexdigest()


def _drop_nulls(value: Any) -> Any:
    """A copy without object members whose value is null, at every depth (array elements stay)."""
    if isinstance(value, dict):
        return {k: _drop_nulls(v) for k, v in value.items() if v is not None}
    if isinstance(value, list):
        return [_drop_nulls(v) for v in value]
    return value


def _same_json(a: Any, b: Any) -> bool:
    """JSON equality: `false` is not `0` and `[]` is not `{}`, unlike Python's `==`."""
    return type(a) is type(b) and a == b


def _drop_defaults(obj: dict[str, Any], defaults: dict[str, Any]) -> None:
    """Remove the members of `obj` equal (as JSON) to their declared default."""
    for key, default in defaults.items():
        if key in obj and _same_json(obj[key], default):
            del obj[key]
