"""The Environment CustomResourceDefinition (spec/rollouts.md §2, §4.6): it validates against the
Kubernetes schema of CustomResourceDefinition, its schemas are structural, and Environment
objects of each version are judged by its own openAPIV3Schema as the API server would (nulls of
non-nullable fields pruned, unknown fields rejected as kubectl's strict field validation does) —
in agreement with the pydantic models used on write."""

from __future__ import annotations

import base64
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from jsonschema import Draft4Validator, FormatChecker
from jsonschema.exceptions import ValidationError as SchemaError

from lockstep import imageref
from lockstep.errors import ValidationError
from lockstep.rollout import crd as definition
from lockstep.rollout.convert import convert
from lockstep.rollout.resource import HASH, V1ALPHA1, V1ALPHA2, is_uuid, load, parse_duration
from lockstep.rollout.resource import validate as model_validate
from tests.infra import make_ca
from tests.system import REPO_ROOT

K8S_VERSION = kubernetes_validate.utils.latest_version()
H = "d288113130c5f2e7e3c69396cfda7604a50624ba07204770d0978c6f78359565"
H2 = "2193ab2a9976554f8313d59be9390c27c66fd0a908ca915806620328339339eb"
U1 = "f5b05c4a-56a3-5696-83de-153d3b2e3631"
U2 = "7d9b5c2e-3f1a-4b8e-9c6d-2a1e0f4b5c3d"
NIL = "00000000-0000-0000-0000-000000000000"
DIGEST = "sha256:" + "ab" * 32


# --- judging objects by the CRD's schema ------------------------------------------------------

TRANSLATED_EXTENSIONS = {"x-kubernetes-list-type", "x-kubernetes-list-map-keys",
                         "x-kubernetes-preserve-unknown-fields"}


def _prune(value: Any, schema: dict[str, Any] | None) -> Any:
    """What the API server does before validating: null values of fields that are not
    `nullable` are dropped, at every depth."""
    if schema is None:
        return value
    if isinstance(value, dict):
        props, extra = schema.get("properties"), schema.get("additionalProperties")
        out = {}
        for key, item in value.items():
            sub = props.get(key) if props is not None else (
                extra if isinstance(extra, dict) else None)
            if item is None and sub is not None and not sub.get("nullable"):
                continue
            out[key] = _prune(item, sub)
        return out
    if isinstance(value, list) and isinstance(schema.get("items"), dict):
        return [_prune(item, schema["items"]) for item in value]
    return value


def _type(validator: Any, types: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if instance is None and schema.get("nullable"):
        return
    yield from Draft4Validator.VALIDATORS["type"](validator, types, instance, schema)


def _enum(validator: Any, enums: Any, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    if instance is None and schema.get("nullable"):
        return
    yield from Draft4Validator.VALIDATORS["enum"](validator, enums, instance, schema)


def _properties(validator: Any, properties: Any, instance: Any,
                schema: dict[str, Any]) -> Iterator[Any]:
    """Properties, and unknown fields are errors unless x-kubernetes-preserve-unknown-fields."""
    yield from Draft4Validator.VALIDATORS["properties"](validator, properties, instance, schema)
    if isinstance(instance, dict) and not schema.get("x-kubernetes-preserve-unknown-fields"):
        for name in sorted(set(instance) - set(properties)):
            yield SchemaError(f"unknown field {name!r}")


def _list_type(validator: Any, kind: str, instance: Any, schema: dict[str, Any]) -> Iterator[Any]:
    """`map` lists: items unique by their map keys; `set`: unique items."""
    if not isinstance(instance, list):
        return
    if kind == "map":
        keys = schema["x-kubernetes-list-map-keys"]
        seen = [tuple(item.get(k) for k in keys) for item in instance if isinstance(item, dict)]
    elif kind == "set":
        seen = [repr(item) for item in instance]
    else:
        return
    if len(seen) != len(set(seen)):
        yield SchemaError(f"duplicate entries in a list-type {kind}")


def _rfc3339(value: object) -> bool:
    if not isinstance(value, str) or "T" not in value.upper():
        return False
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).tzinfo is not None
    except ValueError:
        return False


FORMATS = FormatChecker(formats=())
FORMATS.checks("date-time")(_rfc3339)
FORMATS.checks("int64")(lambda v: not isinstance(v, int) or -(2**63) <= v < 2**63)

K8sValidator = jsonschema.validators.extend(Draft4Validator, {
    "type": _type, "enum": _enum, "properties": _properties,
    "x-kubernetes-list-type": _list_type,
})


def crd_errors(obj: dict[str, Any]) -> list[str]:
    """Why the CRD's schema for the object's version rejects it (empty: accepted)."""
    version = obj["apiVersion"].rpartition("/")[2]
    schema = definition.schema(version)
    validator = K8sValidator(schema, format_checker=FORMATS)
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}"
            for e in validator.iter_errors(_prune(obj, schema))]


# --- the CustomResourceDefinition itself --------------------------------------------------------


@pytest.fixture(scope="module")
def ca_pem(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    return make_ca(tmp_path_factory.mktemp("crd")).ca_crt.read_bytes()


@pytest.mark.parametrize("with_bundle", [True, False])
def test_crd_validates_against_the_kubernetes_schema(ca_pem: bytes, with_bundle: bool) -> None:
    manifest = definition.crd(ca_pem if with_bundle else None)
    assert kubernetes_validate.validate(manifest, K8S_VERSION, strict=True) == \
        kubernetes_validate.utils.major_minor(K8S_VERSION)


@pytest.mark.parametrize("breakage", ["unknown-field", "bad-type", "bad-columns"])
def test_the_kubernetes_check_can_fail(breakage: str) -> None:
    manifest = definition.crd()
    if breakage == "unknown-field":
        manifest["spec"]["versions"][0]["servedd"] = True
    elif breakage == "bad-type":
        manifest["spec"]["versions"][0]["served"] = "yes"
    else:
        manifest["spec"]["versions"][0]["additionalPrinterColumns"][0].pop("jsonPath")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(manifest, K8S_VERSION, strict=True)


def test_versions_storage_subresource_and_conversion(ca_pem: bytes) -> None:
    spec = definition.crd(ca_pem, "hook", "ops")["spec"]
    assert (spec["group"], spec["scope"]) == ("lockstep.dev", "Namespaced")
    assert spec["names"]["kind"] == "Environment" and spec["names"]["plural"] == "environments"
    versions = {v["name"]: v for v in spec["versions"]}
    assert set(versions) == {"v1alpha1", "v1alpha2"}
    assert all(v["served"] for v in versions.values())
    assert [n for n, v in versions.items() if v["storage"]] == ["v1alpha2"]
    assert all(v["subresources"] == {"status": {}} for v in versions.values())
    assert spec["conversion"] == {"strategy": "Webhook", "webhook": {
        "conversionReviewVersions": ["v1"],
        "clientConfig": {"service": {"name": "hook", "namespace": "ops", "path": "/convert",
                                     "port": 443},
                         "caBundle": base64.b64encode(ca_pem).decode()}}}


def test_printer_columns_name_fields_of_the_schema() -> None:
    for version in definition.crd()["spec"]["versions"]:
        schema = version["schema"]["openAPIV3Schema"]
        names = [c["name"] for c in version["additionalPrinterColumns"]]
        assert {"Release", "Active", "UpToDate", "Reason", "Age"} <= set(names)
        for column in version["additionalPrinterColumns"]:
            top, field = re.match(r"\.(\w+)\.(\w+)", column["jsonPath"]).groups()  # type: ignore[union-attr]
            if top != "metadata":
                assert field in schema["properties"][top]["properties"], column


# --- structural schemas -----------------------------------------------------------------------

FORBIDDEN = ("$ref", "$schema", "id", "definitions", "dependencies", "patternProperties",
             "additionalItems")
JUNCTORS = ("allOf", "anyOf", "oneOf", "not")
NOT_IN_JUNCTORS = {"type", "description", "default", "additionalProperties", "nullable",
                   "title"}


def structural_problems(schema: dict[str, Any]) -> list[str]:
    """The rules of Kubernetes structural schemas that can be checked without an API server."""
    problems: list[str] = []

    def junctor(node: Any, skeleton: dict[str, Any], path: str) -> None:
        if not isinstance(node, dict):
            problems.append(f"{path}: not a schema")
            return
        for key in node:
            if key in NOT_IN_JUNCTORS or key.startswith("x-kubernetes-") or key in FORBIDDEN:
                problems.append(f"{path}: {key} inside a junctor")
        for name, sub in node.get("properties", {}).items():
            if name not in skeleton.get("properties", {}):
                problems.append(f"{path}.{name}: not in the structural skeleton")
            else:
                junctor(sub, skeleton["properties"][name], f"{path}.{name}")
        if "items" in node:
            if not isinstance(skeleton.get("items"), dict):
                problems.append(f"{path}[]: not in the structural skeleton")
            else:
                junctor(node["items"], skeleton["items"], f"{path}[]")
        for j in JUNCTORS:
            for i, sub in enumerate(_junctor_list(node, j)):
                junctor(sub, skeleton, f"{path}/{j}[{i}]")

    def walk(node: Any, path: str) -> None:
        if not isinstance(node, dict):
            problems.append(f"{path}: not a schema")
            return
        problems.extend(f"{path}: {k} is not allowed" for k in FORBIDDEN if k in node)
        if node.get("uniqueItems") is True:
            problems.append(f"{path}: uniqueItems: true is not allowed")
        if node.get("x-kubernetes-preserve-unknown-fields") is False:
            problems.append(f"{path}: x-kubernetes-preserve-unknown-fields: false")
        if not node.get("type") and not node.get("x-kubernetes-int-or-string") \
                and not node.get("x-kubernetes-preserve-unknown-fields"):
            problems.append(f"{path}: no type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{path}: both properties and additionalProperties")
        if node.get("additionalProperties") is False:
            problems.append(f"{path}: additionalProperties: false")
        if node.get("type") == "array" and not isinstance(node.get("items"), dict):
            problems.append(f"{path}: an array needs one items schema")
        if node.get("x-kubernetes-list-type") == "map":
            keys = node.get("x-kubernetes-list-map-keys") or []
            required = node.get("items", {}).get("required", [])
            if not keys or not set(keys) <= set(required):
                problems.append(f"{path}: list-map keys must be required")
        for name, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{name}")
        if isinstance(node.get("additionalProperties"), dict):
            walk(node["additionalProperties"], f"{path}.*")
        if isinstance(node.get("items"), dict):
            walk(node["items"], f"{path}[]")
        for j in JUNCTORS:
            for i, sub in enumerate(_junctor_list(node, j)):
                junctor(sub, node, f"{path}/{j}[{i}]")

    walk(schema, "")
    if schema.get("type") != "object":
        problems.append("the root is not an object")
    metadata = schema.get("properties", {}).get("metadata", {})
    if set(metadata.get("properties", {})) - {"name", "generateName"}:
        problems.append(".metadata: only name and generateName may be restricted")
    return problems


def _junctor_list(node: dict[str, Any], key: str) -> list[Any]:
    value = node.get(key)
    if value is None:
        return []
    return [value] if key == "not" else list(value)


def _nodes(schema: Any) -> Iterator[dict[str, Any]]:
    if isinstance(schema, dict):
        yield schema
        for value in schema.values():
            yield from _nodes(value)
    elif isinstance(schema, list):
        for value in schema:
            yield from _nodes(value)


@pytest.mark.parametrize("version", ["v1alpha1", "v1alpha2"])
def test_schemas_are_structural(version: str) -> None:
    schema = definition.schema(version)
    assert structural_problems(schema) == []
    used = {k for node in _nodes(schema) for k in node if k.startswith("x-kubernetes-")}
    assert used <= TRANSLATED_EXTENSIONS  # every extension used is translated for jsonschema
    assert not any(n.get("x-kubernetes-preserve-unknown-fields") for n in _nodes(schema))


@pytest.mark.parametrize(("broken", "problem"), [
    ({"type": "object", "properties": {"a": {"description": "untyped"}}}, ".a: no type"),
    ({"type": "object", "properties": {"a": {"type": "string"}},
      "oneOf": [{"type": "object"}]}, "type inside a junctor"),
    ({"type": "object", "properties": {"a": {"type": "string"}},
      "anyOf": [{"properties": {"b": {"pattern": "x"}}}]}, "not in the structural skeleton"),
    ({"type": "object", "properties": {"a": {"type": "string"}},
      "additionalProperties": {"type": "string"}}, "both properties and additionalProperties"),
    ({"type": "object", "properties": {"a": {"$ref": "#/definitions/x", "type": "string"}}},
     "$ref is not allowed"),
    ({"type": "object", "properties": {"metadata": {"type": "object", "properties": {
        "labels": {"type": "object"}}}}}, "only name and generateName"),
    ({"type": "object", "properties": {"l": {"type": "array", "x-kubernetes-list-type": "map",
                                             "x-kubernetes-list-map-keys": ["k"],
                                             "items": {"type": "object"}}}}, "must be required"),
])
def test_the_structural_check_can_fail(broken: dict[str, Any], problem: str) -> None:
    assert any(problem in p for p in structural_problems(broken)), structural_problems(broken)


def test_patterns_are_anchored_and_re2_compatible() -> None:
    patterns = [n["pattern"] for v in ("v1alpha1", "v1alpha2")
                for n in _nodes(definition.schema(v)) if "pattern" in n]
    assert len(patterns) >= 8
    for pattern in patterns:
        re.compile(pattern)
        assert pattern.startswith("^") and pattern.endswith("$"), pattern
        assert not re.search(r"\(\?[=!<]|\\[1-9]", pattern), pattern  # no lookaround, backrefs


# --- the patterns say what the models say ------------------------------------------------------


def _duration_ok(text: str) -> bool:
    try:
        parse_duration(text)
    except ValidationError:
        return False
    return True


@settings(max_examples=2000, deadline=None)
@given(st.one_of(st.text("0123456789mshd-. ", max_size=8),
                 st.from_regex(r"\A([0-9]{1,3}(ms|s|m|h|d)){1,3}\Z")))
def test_duration_pattern_agrees_with_parse_duration(text: str) -> None:
    assert (re.search(definition.DURATION_PATTERN, text) is not None) == _duration_ok(text)


_IMAGE_PIECES = st.sampled_from(["example", "web", "a", "A", "registry.io", "localhost",
                                 "host:5000", "[::1]:5000", "/", ":", "@", "1.2.3", "-", "_",
                                 "__", ".", DIGEST, "sha256:abc", "v1", " ", "x--y"])


@settings(max_examples=3000, deadline=None)
@given(st.lists(_IMAGE_PIECES, max_size=7).map("".join))
def test_image_pattern_agrees_with_imageref(text: str) -> None:
    assert (re.search(definition.IMAGE_PATTERN, text) is not None) == \
        (imageref.problem_of(text) is None), text


@settings(max_examples=500, deadline=None)
@given(st.one_of(st.uuids().map(str), st.uuids().map(lambda u: str(u).upper()),
                 st.text("0123456789abcdefABCDEF-g", max_size=40)))
def test_uuid_pattern_agrees_with_the_model(text: str) -> None:
    assert (re.search(definition.UUID_PATTERN, text) is not None) == is_uuid(text)


# --- Environment objects against the CRD's own schema ------------------------------------------

def _env(version: str, spec: dict[str, Any], status: dict[str, Any] | None = None,
         **metadata: Any) -> dict[str, Any]:
    obj: dict[str, Any] = {"apiVersion": version, "kind": "Environment",
                           "metadata": {"name": "prod", **metadata}, "spec": spec}
    if status is not None:
        obj["status"] = status
    return obj


def _condition(reason: str = "Applied", status: str = "True", **more: Any) -> dict[str, Any]:
    return {"type": "UpToDate", "status": status, "reason": reason,
            "message": "Successfully applied changes for generation 3",
            "lastTransitionTime": "2026-11-03T12:00:00Z", "observedGeneration": 5, **more}


G4_SPEC = {"components": {
    "web": {"image": "example/web:3.2.0", "stateless": True},
    "api": {"image": "example/api:3.2.0", "args": ["--mode=prod"], "env": {"LOG_LEVEL": "info"}},
    "store": {"image": "example/store:3.2.0", "args": [], "stateless": False}},
    "rolloutStrategy": "ManuallyPromote", "forceRollout": U2}
V2_STATUS = {"activeGeneration": 3, "requestedRolloutHash": H, "lastCompletedRolloutHash": H,
             "lastCompletedRelease": "v2026.11.3", "conditions": [_condition()],
             "observedGeneration": 5}
V1_STATUS = {"activeGeneration": 3, "lastCompletedRolloutRequest": U1, "resourcesHash": H,
             "lastCompletedRelease": "v2026.11.3", "conditions": [_condition()],
             "observedGeneration": 5}

VALID: dict[str, dict[str, Any]] = {
    "v2-release": _env(V1ALPHA2, {"release": "v2026.11.3"}),
    "v2-defaults-spelled": _env(V1ALPHA2, {
        "release": "v2026.11.3", "rolloutStrategy": "WaitUntilReady",
        "rolloutRequestTimeout": "24h", "forcePromote": "x", "forceRollout": None}),
    "v2-components": _env(V1ALPHA2, G4_SPEC),
    "v2-unicode-env": _env(V1ALPHA2, {"components": {"db": {
        "image": "example/db:1.0.0", "env": {"GREETING": "grüße\n"}}}}),
    "v2-images": _env(V1ALPHA2, {"components": {
        "a": {"image": f"registry.example.com:5000/team/api@{DIGEST}"},
        "b": {"image": "localhost/x:1"}, "c": {"image": f"[::1]:5000/y:2@{DIGEST}"},
        "d": {"image": "nginx"}}, "rolloutRequestTimeout": "1h30m"}),
    "v2-status-applied": _env(V1ALPHA2, {"release": "v2026.11.3", "forcePromote": H,
                                         "rolloutRequestTimeout": "1d"}, V2_STATUS,
                              annotations={"lockstep.dev/force-rollout": "node-pool-1"}),
    "v2-status-initial": _env(V1ALPHA2, {"release": "v2026.11.3"}, {
        "activeGeneration": 0, "requestedRolloutHash": None, "lastCompletedRolloutHash": None,
        "lastCompletedRelease": None, "conditions": [_condition("Applying", "Unknown")]}),
    "v2-null-args": _env(V1ALPHA2, {"components": {"api": {"image": "example/api:1",
                                                          "args": None}}}),
    "v1-at-rest": _env(V1ALPHA1, {"release": "v2026.11.3", "requestRollout": U1}, V1_STATUS),
    "v1-no-request": _env(V1ALPHA1, {"release": "v2026.11.3"}),
    "v1-force-empty": _env(V1ALPHA1, {"release": "v1", "requestRollout": U2,
                                      "forcePromote": ""}),
    "v1-force-uuid": _env(V1ALPHA1, {"release": "v1", "requestRollout": U2,
                                     "forcePromote": U2.upper()}),
    "v1-force-hash": _env(V1ALPHA1, {"release": "v1", "requestRollout": NIL,
                                     "forcePromote": H}),
    "v1-waiting": _env(V1ALPHA1, G4_SPEC | {"requestRollout": U1}, {
        "activeGeneration": 3, "lastCompletedRolloutRequest": U1, "resourcesHash": H2,
        "conditions": [_condition("WaitingForApproval", "False")]}),
    "v1-applying": _env(V1ALPHA1, {"release": "v2", "requestRollout": U2}, {
        "resourcesHash": "", "lastCompletedRolloutRequest": None,
        "conditions": [_condition("Applying", "Unknown")]}),
    "v1-round-trip-members": _env(V1ALPHA1, {"release": "v2", "requestRollout": U2},
                                  V1_STATUS | {"lastCompletedRolloutHash": H,
                                               "requestedRolloutHash": None}),
}


def _v2(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None,
        **meta: Any) -> dict[str, Any]:
    return _env(V1ALPHA2, {"release": "v2026.11.3"} if spec is None else spec, status, **meta)


def _v1(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None) -> dict[str, Any]:
    base = {"release": "v2026.11.3", "requestRollout": U1}
    return _env(V1ALPHA1, base if spec is None else base | spec, status)


def _with_condition(**change: Any) -> dict[str, Any]:
    condition = _condition()
    for key, value in change.items():
        if value is None:
            condition.pop(key)
        else:
            condition[key] = value
    return V2_STATUS | {"conditions": [condition]}


INVALID: dict[str, dict[str, Any]] = {
    "both-sources": _v2({"release": "v1", "components": {"a": {"image": "example/a:1"}}}),
    "no-source": _v2({"rolloutStrategy": "ManuallyPromote"}),
    "no-spec": {"apiVersion": V1ALPHA2, "kind": "Environment", "metadata": {"name": "x"}},
    "unknown-spec-field": _v2({"release": "v1", "futureField": 1}),
    "unknown-component-field": _v2({"components": {"a": {"image": "example/a:1",
                                                         "replicas": 2}}}),
    "component-without-image": _v2({"components": {"a": {"args": []}}}),
    "bad-image": _v2({"components": {"a": {"image": "Not An Image"}}}),
    "uppercase-image": _v2({"components": {"a": {"image": "Example:1"}}}),
    "unknown-strategy": _v2({"release": "v1", "rolloutStrategy": "Sometimes"}),
    "negative-timeout": _v2({"release": "v1", "rolloutRequestTimeout": "-5h"}),
    "zero-timeout": _v2({"release": "v1", "rolloutRequestTimeout": "0h0m"}),
    "unitless-timeout": _v2({"release": "v1", "rolloutRequestTimeout": "24"}),
    "fractional-timeout": _v2({"release": "v1", "rolloutRequestTimeout": "1.5h"}),
    "bad-force-rollout": _v2({"release": "v1", "forceRollout": "not-a-uuid"}),
    "empty-force-promote": _v2({"release": "v1", "forcePromote": ""}),
    "nil-force-promote": _v2({"release": "v1", "forcePromote": NIL}),
    "args-not-strings": _v2({"components": {"a": {"image": "example/a:1", "args": [1]}}}),
    "env-not-strings": _v2({"components": {"a": {"image": "example/a:1", "env": {"A": 1}}}}),
    "stateless-not-bool": _v2({"components": {"a": {"image": "example/a:1",
                                                    "stateless": "yes"}}}),
    "empty-release": _v2({"release": ""}),
    "spaced-release": _v2({"release": " v1"}),
    "request-rollout-in-v2": _v2({"release": "v1", "requestRollout": U1}),
    "negative-active": _v2(status=V2_STATUS | {"activeGeneration": -1}),
    "resources-hash-in-v2": _v2(status=V2_STATUS | {"resourcesHash": H}),
    "unknown-status-field": _v2(status=V2_STATUS | {"phase": "Running"}),
    "condition-status": _v2(status=_with_condition(status="Maybe")),
    "condition-time": _v2(status=_with_condition(lastTransitionTime="yesterday")),
    "condition-no-status": _v2(status=_with_condition(status=None)),
    "condition-unknown-field": _v2(status=_with_condition(severity="high")),
    "two-up-to-date": _v2(status=V2_STATUS | {"conditions": [_condition(), _condition()]}),
    "v1-no-resources-hash": _v1(status={"activeGeneration": 3}),
    "v1-bad-resources-hash": _v1(status=V1_STATUS | {"resourcesHash": "abc"}),
    "v1-bad-request": _v1({"requestRollout": "not-a-uuid"}),
    "v1-force-promote-word": _v1({"forcePromote": "x"}),
    "v1-bad-completed-request": _v1(status=V1_STATUS | {"lastCompletedRolloutRequest": "no"}),
    "v1-unknown-field": _v1({"futureField": True}),
}

# What a structural schema cannot say cheaply: the controller reports these as an invalid spec.
CONTROLLER_ONLY: dict[str, dict[str, Any]] = {
    "component-name-not-dns-label": _v2({"components": {"Bad_Name": {"image": "example/a:1"}}}),
    "unknown-up-to-date-reason": _v2(status=_with_condition(reason="Whatever")),
}


# The schema is stricter than the model on members only the controller writes.
SCHEMA_ONLY: dict[str, dict[str, Any]] = {
    "short-requested-hash": _v2(status=V2_STATUS | {"requestedRolloutHash": "abc"}),
    "upper-case-completed-hash": _v2(status=V2_STATUS | {"lastCompletedRolloutHash": H.upper()}),
}


@pytest.mark.parametrize("name", VALID)
def test_valid_environments_pass_the_crd_schema_and_the_model(name: str) -> None:
    obj = VALID[name]
    assert crd_errors(obj) == []
    model_validate(obj)


@pytest.mark.parametrize("name", INVALID)
def test_invalid_environments_fail_the_crd_schema_and_the_model(name: str) -> None:
    obj = INVALID[name]
    assert crd_errors(obj) != []
    with pytest.raises(ValidationError):
        model_validate(obj)


@pytest.mark.parametrize("name", CONTROLLER_ONLY)
def test_what_only_the_controller_rejects(name: str) -> None:
    obj = CONTROLLER_ONLY[name]
    assert crd_errors(obj) == []
    with pytest.raises(ValidationError):
        model_validate(obj)


@pytest.mark.parametrize("name", SCHEMA_ONLY)
def test_what_only_the_schema_rejects(name: str) -> None:
    obj = SCHEMA_ONLY[name]
    assert crd_errors(obj) != []
    model_validate(obj)


def test_nulls_are_pruned_only_where_not_nullable() -> None:
    """A null hash is kept (the controller always writes both keys); a null timeout is dropped
    as the API server drops it, so it passes."""
    obj = VALID["v2-status-initial"]
    schema = definition.schema("v1alpha2")
    assert _prune(obj, schema)["status"]["requestedRolloutHash"] is None
    assert crd_errors(_v2({"release": "v1", "rolloutRequestTimeout": None})) == []
    assert "rolloutRequestTimeout" not in _prune(
        _v2({"release": "v1", "rolloutRequestTimeout": None}), schema)["spec"]


@pytest.mark.parametrize("name", [n for n in VALID if VALID[n]["apiVersion"] == V1ALPHA1])
def test_up_converted_valid_objects_are_valid(name: str) -> None:
    """What the webhook hands the API server to store is valid in the storage version."""
    up = convert(VALID[name], V1ALPHA2)
    assert crd_errors(up) == []


def _down_convertible(obj: dict[str, Any]) -> bool:
    """A v1alpha2 forcePromote that is not a rollout hash (any non-empty string is allowed) is
    copied verbatim, and is no v1alpha1 value; `rollout promote` always writes a hash."""
    force = obj["spec"].get("forcePromote")
    return obj["apiVersion"] == V1ALPHA2 and (force is None or HASH.fullmatch(force) is not None)


@pytest.mark.parametrize("name", [n for n in VALID if _down_convertible(VALID[n])])
def test_down_converted_valid_objects_are_valid(name: str) -> None:
    assert crd_errors(convert(VALID[name], V1ALPHA1)) == []


# --- `lockstep crd` -----------------------------------------------------------------------------


def _lockstep(*args: str) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "lockstep", *args], env=env, text=True,
                          capture_output=True, timeout=60, stdin=subprocess.DEVNULL, check=False)


def test_cli_prints_the_crd_as_yaml(tmp_path: Path, ca_pem: bytes) -> None:
    bundle = tmp_path / "ca.crt"
    bundle.write_bytes(ca_pem)
    proc = _lockstep("crd", "--ca-bundle", str(bundle), "--service-name", "hook",
                     "--namespace", "ops")
    assert proc.returncode == 0, proc.stderr
    printed = load(proc.stdout)
    assert printed == definition.crd(ca_pem, "hook", "ops")
    client = printed["spec"]["conversion"]["webhook"]["clientConfig"]
    assert base64.b64decode(client["caBundle"]) == ca_pem
    kubernetes_validate.validate(printed, K8S_VERSION, strict=True)


def test_cli_default_service_has_no_bundle() -> None:
    proc = _lockstep("crd")
    assert proc.returncode == 0, proc.stderr
    client = load(proc.stdout)["spec"]["conversion"]["webhook"]["clientConfig"]
    assert client == {"service": {"name": "lockstep-webhook", "namespace": "lockstep-system",
                                  "path": "/convert", "port": 443}}


@pytest.mark.parametrize(("args", "words"), [
    (["--ca-bundle", "{missing}"], "cannot read"),
    (["--ca-bundle", "{notpem}"], "not a PEM certificate bundle"),
    (["--ca-bundle", "{badpem}"], "not a PEM certificate bundle"),
    (["--namespace", "Lockstep_System"], "is not a DNS label"),
    (["--service-name", "-hook"], "is not a DNS label"),
])
def test_cli_bad_input_exits_2(tmp_path: Path, args: list[str], words: str) -> None:
    (tmp_path / "notpem").write_text("hello\n")
    (tmp_path / "badpem").write_text("-----BEGIN CERTIFICATE-----\nnope\n"
                                     "-----END CERTIFICATE-----\n")
    values = {n: str(tmp_path / n) for n in ("missing", "notpem", "badpem")}
    proc = _lockstep("crd", *[a.format(**values) for a in args])
    assert proc.returncode == 2, proc.stderr
    (line,) = proc.stderr.strip().splitlines()
    assert line.startswith("error: ") and words in line, line
    assert proc.stdout == ""


def test_examples_are_distinct_cases() -> None:
    """No example is accidentally a copy of another."""
    everything = [*VALID.values(), *INVALID.values(), *CONTROLLER_ONLY.values(),
                  *SCHEMA_ONLY.values()]
    assert len({repr(o) for o in everything}) == len(everything)
