"""The CustomResourceDefinition of `Environment` (spec/rollouts.md §2.1, §4.6): both versions
served, v1alpha2 stored, structural OpenAPI v3 schemas, status subresource, webhook conversion.

The schemas mirror the pydantic models of `resource.py` as far as a structural schema can say it
(types, enums, patterns, bounds); what it cannot say cheaply — component names being DNS labels
(map keys), at most one `UpToDate` condition per reason table — the controller reports as an
invalid spec. Patterns are anchored and RE2-compatible, so Go and Python read them alike.
"""

from __future__ import annotations

import base64
from typing import Any

from lockstep.rollout.resource import GROUP, KIND, NIL_UUID, PLURAL, REASONS, STRATEGIES

CRD_NAME = f"{PLURAL}.{GROUP}"
DEFAULT_SERVICE = "lockstep-webhook"
DEFAULT_NAMESPACE = "lockstep-system"
CONVERT_PATH = "/convert"
STORAGE_VERSION = "v1alpha2"

UUID_PATTERN = ("^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}"
                "-[0-9a-fA-F]{12}$")
HASH_PATTERN = "^[0-9a-f]{64}$"
_UNIT = "(ms|s|m|h|d)"
# <integer><unit> groups, at least one of them non-zero (a positive duration, `parse_duration`).
DURATION_PATTERN = f"^([0-9]+{_UNIT})*0*[1-9][0-9]*{_UNIT}([0-9]+{_UNIT})*$"
_HOST = (r"([A-Za-z0-9]([A-Za-z0-9-]*[A-Za-z0-9])?(\.[A-Za-z0-9-]+)*(:[0-9]+)?"
         r"|\[[0-9A-Fa-f:.]+\](:[0-9]+)?)")
_NAME = r"[a-z0-9]+(([._]|__|-+)[a-z0-9]+)*"
# A first segment holding '.' or ':' and followed by '/' is a registry host (`imageref`'s
# rule), so a name without a host has no '.' in its first component unless it is the only one.
_FIRST = r"[a-z0-9]+((_|__|-+)[a-z0-9]+)*"
# `[registry/]name[:tag][@algorithm:hex]`, the grammar `imageref` parses.
IMAGE_PATTERN = (f"^({_HOST}/{_NAME}(/{_NAME})*|{_FIRST}(/{_NAME})+|{_NAME})"
                 r"(:[A-Za-z0-9_][A-Za-z0-9._-]{0,127})?"
                 r"(@[a-z0-9]+([.+_-][a-z0-9]+)*:[A-Za-z0-9=_-]{32,})?$")
RELEASE_PATTERN = r"^\S(.*\S)?$"
REASON_PATTERN = "^[A-Za-z]([A-Za-z0-9_,:]*[A-Za-z0-9_])?$"  # metav1.Condition's
CONDITION_TYPE_PATTERN = ("^([a-z0-9]([-a-z0-9]*[a-z0-9])?(\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*/)?"
                          "(([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9])$")


def _str(description: str, **rules: Any) -> dict[str, Any]:
    return {"type": "string", "description": description, **rules}


def _nullable_hash(description: str) -> dict[str, Any]:
    return _str(description, nullable=True, pattern=HASH_PATTERN)


def _component() -> dict[str, Any]:
    return {
        "type": "object",
        "description": "One explicit component.",
        "required": ["image"],
        "properties": {
            "image": _str("OCI image reference, by tag or digest.", pattern=IMAGE_PATTERN),
            "args": {"type": "array", "description": "Extra arguments (default []).",
                     "items": {"type": "string"}},
            "env": {"type": "object", "description": "Extra environment (default {}).",
                    "additionalProperties": {"type": "string"}},
            "stateless": {"type": "boolean", "description":
                          "Updated in place, never part of a generation (default false)."},
        },
    }


def _spec(version: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "release": _str("Integration release tag, resolved through its frozen manifest.",
                        pattern=RELEASE_PATTERN),
        "components": {
            "type": "object",
            "description": "Explicit components by name (DNS labels).",
            "additionalProperties": _component(),
        },
        "rolloutStrategy": _str("How a ready generation is promoted (default WaitUntilReady).",
                                enum=list(STRATEGIES)),
        "rolloutRequestTimeout": _str("A rollout not promoted within it is cancelled "
                                      "(default 24h; <integer><unit> groups, ms/s/m/h/d).",
                                      pattern=DURATION_PATTERN),
        "forceRollout": _str("A new UUID forces a rollout of an unchanged spec.",
                             pattern=UUID_PATTERN),
    }
    if version == "v1alpha2":
        props["forcePromote"] = _str(
            "Promotes the in-progress rollout whose hash it names; not part of the hash.",
            minLength=1, **{"not": {"enum": [NIL_UUID]}})
    else:
        props["requestRollout"] = _str(
            "A rollout happens only when it differs from status.lastCompletedRolloutRequest.",
            pattern=UUID_PATTERN)
        props["forcePromote"] = _str(
            "Promotes the current rollout when equal to requestRollout (a UUID; \"\" = none), "
            "or when equal to the object's rollout hash.",
            pattern=f"^$|{UUID_PATTERN}|{HASH_PATTERN}")
    return {
        "type": "object",
        "description": "The desired state: exactly one of release and components.",
        "properties": props,
        "oneOf": [{"required": ["release"]}, {"required": ["components"]}],
    }


def _conditions() -> dict[str, Any]:
    return {
        "type": "array",
        "description": "Exactly one condition of type UpToDate.",
        "x-kubernetes-list-type": "map",
        "x-kubernetes-list-map-keys": ["type"],
        "items": {
            "type": "object",
            "required": ["type", "status"],
            "properties": {
                "type": _str("Condition type (UpToDate).", maxLength=316,
                             pattern=CONDITION_TYPE_PATTERN),
                "status": _str("True, False or Unknown.", enum=["True", "False", "Unknown"]),
                "reason": _str(f"One of {', '.join(REASONS)} for UpToDate.", maxLength=1024,
                               pattern=REASON_PATTERN),
                "message": _str("Human-readable detail.", maxLength=32768),
                "lastTransitionTime": _str("When status last changed (RFC 3339, UTC).",
                                           format="date-time"),
                "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0,
                                       "description": "metadata.generation of the writing pass."},
            },
        },
    }


def _status(version: str) -> dict[str, Any]:
    props: dict[str, Any] = {
        "activeGeneration": {"type": "integer", "format": "int64", "minimum": 0,
                             "description": "Generation serving traffic; 0 = none."},
        "lastCompletedRelease": _str("Release recorded on the last promoted generation.",
                                     nullable=True),
        "conditions": _conditions(),
        "observedGeneration": {"type": "integer", "format": "int64", "minimum": 0,
                               "description": "metadata.generation read by the writing pass."},
    }
    hashes = {
        "requestedRolloutHash": _nullable_hash(
            "Hash the current (or last) rollout targets; frozen while Promoting."),
        "lastCompletedRolloutHash": _nullable_hash(
            "Hash of the last promoted generation; null before the first."),
    }
    if version == "v1alpha2":
        return {"type": "object", "description": "Written by the controller only.",
                "properties": {**props, **hashes}}
    props.update({
        "lastCompletedRolloutRequest": _str("requestRollout of the last completed rollout.",
                                            nullable=True, pattern=UUID_PATTERN),
        "resourcesHash": _str("Rollout hash of the generation that is ReadyToPromote, "
                              "Promoting or Applied; \"\" otherwise.",
                              pattern=f"^$|{HASH_PATTERN}"),
    })
    for name, schema in hashes.items():
        props[name] = {**schema, "description": "Round-trip member (" + schema["description"]
                       + ")"}
    return {"type": "object", "description": "Written by the controller only.",
            "required": ["resourcesHash"], "properties": props}


def schema(version: str) -> dict[str, Any]:
    """The structural openAPIV3Schema of one version (`v1alpha1` or `v1alpha2`)."""
    return {
        "type": "object",
        "description": "An environment whose stateful components roll out in generations.",
        "required": ["spec"],
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": _spec(version),
            "status": _status(version),
        },
    }


def _up_to_date(field: str) -> str:
    return f'.status.conditions[?(@.type=="UpToDate")].{field}'


def _columns(version: str) -> list[dict[str, Any]]:
    cols: list[dict[str, Any]] = [
        {"name": "Release", "type": "string", "jsonPath": ".spec.release"},
        {"name": "Active", "type": "integer", "jsonPath": ".status.activeGeneration",
         "description": "Generation serving traffic."},
        {"name": "UpToDate", "type": "string", "jsonPath": _up_to_date("status")},
        {"name": "Reason", "type": "string", "jsonPath": _up_to_date("reason")},
        {"name": "Strategy", "type": "string", "jsonPath": ".spec.rolloutStrategy",
         "priority": 1},
        {"name": "Requested", "type": "string", "jsonPath": ".status.requestedRolloutHash",
         "priority": 1, "description": "Rollout hash the current rollout targets."},
    ]
    if version == "v1alpha1":
        cols.append({"name": "Request", "type": "string", "jsonPath": ".spec.requestRollout",
                     "priority": 1})
    cols.append({"name": "Age", "type": "date", "jsonPath": ".metadata.creationTimestamp"})
    return cols


def _version(name: str) -> dict[str, Any]:
    return {
        "name": name,
        "served": True,
        "storage": name == STORAGE_VERSION,
        "schema": {"openAPIV3Schema": schema(name)},
        "subresources": {"status": {}},
        "additionalPrinterColumns": _columns(name),
    }


def crd(ca_bundle: bytes | None = None, service_name: str = DEFAULT_SERVICE,
        namespace: str = DEFAULT_NAMESPACE, port: int = 443) -> dict[str, Any]:
    """The CustomResourceDefinition; `ca_bundle` (PEM) signs the webhook's certificate."""
    client: dict[str, Any] = {"service": {"name": service_name, "namespace": namespace,
                                          "path": CONVERT_PATH, "port": port}}
    if ca_bundle:
        client["caBundle"] = base64.b64encode(ca_bundle).decode("ascii")
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {"name": CRD_NAME, "labels": {"app.kubernetes.io/name": "lockstep"}},
        "spec": {
            "group": GROUP,
            "names": {"kind": KIND, "listKind": f"{KIND}List", "plural": PLURAL,
                      "singular": KIND.lower(), "shortNames": ["env"],
                      "categories": ["lockstep"]},
            "scope": "Namespaced",
            "versions": [_version("v1alpha2"), _version("v1alpha1")],
            "conversion": {"strategy": "Webhook", "webhook": {
                "conversionReviewVersions": ["v1"], "clientConfig": client}},
        },
    }
