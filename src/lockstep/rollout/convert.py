"""Conversion between Environment v1alpha1 and v1alpha2 (spec §4.1–4.3): pure, member by member.

Every field is tri-state (absent, null, value) and unknown members are copied, so partial objects
(server-side apply's field-manager subsets) convert too; derived members are produced only for
complete objects. Conversion never validates: only what is not an Environment of a supported
version fails.
"""

from __future__ import annotations

import copy
from typing import Any

from lockstep.errors import UsageError
from lockstep.rollout.hashing import rollout_hash, uuid5_of
from lockstep.rollout.resource import (
    API_VERSIONS,
    HASH,
    KIND,
    NIL_UUID,
    UP_TO_DATE,
    V1ALPHA1,
    V1ALPHA2,
)


class ConversionError(UsageError):
    """Not convertible: not a JSON object, another kind, or an unsupported apiVersion."""


def convert(obj: Any, desired_api_version: str) -> dict[str, Any]:
    """`obj` in `desired_api_version` (a copy); the same version is returned unchanged."""
    if desired_api_version not in API_VERSIONS:
        raise ConversionError(f"desired apiVersion {desired_api_version!r} is not supported",
                              f"use {V1ALPHA1} or {V1ALPHA2}")
    _check(obj)
    if obj.get("apiVersion") not in API_VERSIONS:
        raise ConversionError(f"apiVersion {obj.get('apiVersion')!r} is not supported",
                              f"use {V1ALPHA1} or {V1ALPHA2}")
    return up(obj) if desired_api_version == V1ALPHA2 else down(obj)


def up(obj: Any) -> dict[str, Any]:
    """v1alpha1 → v1alpha2 (§4.1). A v1alpha2 object comes back as an unchanged copy; an object
    without `apiVersion` is taken to be v1alpha1 and keeps having none."""
    out: dict[str, Any] = copy.deepcopy(_check(obj))
    if obj.get("apiVersion") == V1ALPHA2:
        return out
    complete = _complete(obj)
    h = rollout_hash(obj) if complete else ""
    if "apiVersion" in out:
        out["apiVersion"] = V1ALPHA2
    spec = out.get("spec")
    if isinstance(spec, dict):
        request = spec.pop("requestRollout", None)
        if "forcePromote" in spec:
            force = spec["forcePromote"]
            if _nil(force):
                del spec["forcePromote"]
            elif complete and force == request and request != uuid5_of(h):
                spec["forcePromote"] = h
    status = out.get("status")
    if isinstance(status, dict):
        if complete:
            _up_status(status, obj["spec"].get("requestRollout"), h)
        status.pop("lastCompletedRolloutRequest", None)
        status.pop("resourcesHash", None)
    return out


def down(obj: Any) -> dict[str, Any]:
    """v1alpha2 → v1alpha1 (§4.2). A v1alpha1 object comes back as an unchanged copy; an object
    without `apiVersion` is taken to be v1alpha2 and keeps having none."""
    out: dict[str, Any] = copy.deepcopy(_check(obj))
    if obj.get("apiVersion") == V1ALPHA1:
        return out
    if "apiVersion" in out:
        out["apiVersion"] = V1ALPHA1
    if not _complete(obj):
        return out
    out["spec"]["requestRollout"] = uuid5_of(rollout_hash(obj))
    status = out.get("status")
    if isinstance(status, dict):
        completed = status.get("lastCompletedRolloutHash")
        status["lastCompletedRolloutRequest"] = _request_of(completed)
        reason = _reason(status)
        if reason == "Applied":
            shown = completed
        elif reason in ("ReadyToPromote", "Promoting"):
            shown = status.get("requestedRolloutHash")
        else:
            shown = None
        status["resourcesHash"] = shown if isinstance(shown, str) else ""
    return out


def _up_status(status: dict[str, Any], request: Any, h: str) -> None:
    """The two hash members of an up-converted status: the first matching row of §4.1."""
    completed_request = status.get("lastCompletedRolloutRequest")
    reason = _reason(status)
    resources_hash = status.get("resourcesHash")
    if ("lastCompletedRolloutHash" in status
            and completed_request == _request_of(status["lastCompletedRolloutHash"])):
        return  # came from v1alpha2: both members are already right
    if reason == "Promoting":
        completed, requested = None, None
    elif reason == "RolloutTimeout" or _nil(completed_request) or completed_request != request:
        completed, requested = None, h
    elif (reason == "WaitingForApproval" and isinstance(resources_hash, str)
          and HASH.fullmatch(resources_hash)):
        completed, requested = resources_hash, resources_hash
    else:
        completed, requested = h, h
    status["lastCompletedRolloutHash"] = completed
    status["requestedRolloutHash"] = requested


def _check(obj: Any) -> dict[str, Any]:
    """Raise ConversionError unless `obj` is a JSON object of kind Environment (or no kind) with
    a supported (or no) apiVersion."""
    if not isinstance(obj, dict):
        raise ConversionError(f"the object is a {type(obj).__name__}, not a JSON object",
                              "convert one Environment object")
    if "kind" in obj and obj["kind"] != KIND:
        raise ConversionError(f"kind {obj['kind']!r} is not {KIND}",
                              f"only {KIND} objects convert")
    if "apiVersion" in obj and obj["apiVersion"] not in API_VERSIONS:
        raise ConversionError(f"apiVersion {obj['apiVersion']!r} is not supported",
                              f"use {V1ALPHA1} or {V1ALPHA2}")
    return obj


def _complete(obj: dict[str, Any]) -> bool:
    """apiVersion, kind, metadata.name and a spec with `release` or `components` (§4)."""
    metadata, spec = obj.get("metadata"), obj.get("spec")
    return (obj.get("apiVersion") is not None and obj.get("kind") is not None
            and isinstance(metadata, dict) and metadata.get("name") is not None
            and isinstance(spec, dict)
            and (spec.get("release") is not None or spec.get("components") is not None))


def _nil(value: Any) -> bool:
    """The nil UUID, null, absent (None here) or ""."""
    return value is None or value == "" or value == NIL_UUID


def _request_of(completed_hash: Any) -> str:
    """The v1alpha1 request a v1alpha2 completed hash stands for: uuid5 of it, nil UUID if null."""
    return uuid5_of(completed_hash) if isinstance(completed_hash, str) else NIL_UUID


def _reason(status: dict[str, Any]) -> Any:
    """The reason of the status's UpToDate condition, or None without one."""
    conditions = status.get("conditions")
    if isinstance(conditions, list):
        for condition in conditions:
            if isinstance(condition, dict) and condition.get("type") == UP_TO_DATE:
                return condition.get("reason")
    return None
