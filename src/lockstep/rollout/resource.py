"""The `Environment` resource (spec §2): names, pydantic models of both versions validated on
write, duration parsing, and YAML/JSON in and out.

Objects travel between modules as plain JSON dicts (absent ≠ null); the models here only judge
whether such a dict may be written.
"""

from __future__ import annotations

import io
import json
import math
import re
import uuid
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from pydantic import ValidationError as PydanticValidationError

from lockstep import imageref, names
from lockstep.errors import ValidationError

GROUP = "lockstep.dev"
KIND = "Environment"
PLURAL = "environments"
V1ALPHA1 = f"{GROUP}/v1alpha1"
V1ALPHA2 = f"{GROUP}/v1alpha2"
API_VERSIONS = (V1ALPHA1, V1ALPHA2)
FORCE_ROLLOUT_ANNOTATION = f"{GROUP}/force-rollout"
LAST_KNOWN_ACTIVE_GENERATION_ANNOTATION = f"{GROUP}/last-known-active-generation"
FINALIZER = f"{GROUP}/environment"
NIL_UUID = "00000000-0000-0000-0000-000000000000"
DEFAULT_STRATEGY = "WaitUntilReady"
DEFAULT_TIMEOUT = "24h"
UP_TO_DATE = "UpToDate"

Strategy = Literal["WaitUntilReady", "ManuallyPromote", "ImmediatelyPromoteCausingDowntime"]
STRATEGIES: tuple[str, ...] = ("WaitUntilReady", "ManuallyPromote",
                               "ImmediatelyPromoteCausingDowntime")
REASONS: tuple[str, ...] = ("Applying", "ReadyToPromote", "Promoting", "Applied",
                            "WaitingForApproval", "FailedDeploy", "RolloutTimeout")

_DNS_LABEL = re.compile(r"[a-z0-9](?:[-a-z0-9]{0,61}[a-z0-9])?")
_UUID = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
HASH = re.compile(r"[0-9a-f]{64}")
_DURATION = re.compile(r"(?:[0-9]+(?:ms|s|m|h|d))+")
_DURATION_GROUP = re.compile(r"([0-9]+)(ms|s|m|h|d)")
_UNIT_SECONDS = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
_DURATION_HINT = "write <integer><unit> groups with units ms, s, m, h, d, e.g. 24h or 1h30m"


def parse_duration(text: str, what: str = "rolloutRequestTimeout") -> timedelta:
    """A positive `<integer><unit>` duration (`24h`, `1h30m`; §5.7); ValidationError otherwise."""
    if not isinstance(text, str) or not _DURATION.fullmatch(text):
        raise ValidationError(f"{what} {text!r} is not a positive duration", _DURATION_HINT)
    total = timedelta()
    for number, unit in _DURATION_GROUP.findall(text):
        total += timedelta(seconds=int(number) * _UNIT_SECONDS[unit])
    if total <= timedelta():
        raise ValidationError(f"{what} {text!r} is not a positive duration", _DURATION_HINT)
    return total


def is_uuid(text: object) -> bool:
    """Whether `text` is a hyphenated UUID string (any version, the nil UUID included)."""
    return isinstance(text, str) and _UUID.fullmatch(text) is not None


def _uuid(value: str | None) -> str | None:
    if value is not None and not is_uuid(value):
        raise ValueError(f"{value!r} is not a UUID "
                         f"(write one like {uuid.UUID(int=0x7D9B5C2E3F1A4B8E9C6D2A1E0F4B5C3D)})")
    return value


class _Strict(BaseModel):
    """Unknown members are rejected and JSON types are not coerced (`1` is not `true`)."""

    model_config = ConfigDict(extra="forbid", strict=True)


class ObjectMeta(_Strict):
    """Kubernetes ObjectMeta: the members a client may send; `name` a DNS subdomain."""

    name: str | None = None
    generateName: str | None = None
    namespace: str | None = None
    selfLink: str | None = None
    uid: str | None = None
    resourceVersion: str | None = None
    generation: int | None = Field(default=None, ge=0)
    creationTimestamp: str | None = None
    deletionTimestamp: str | None = None
    deletionGracePeriodSeconds: int | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None
    ownerReferences: list[dict[str, Any]] | None = None
    finalizers: list[str] | None = None
    managedFields: list[dict[str, Any]] | None = None

    @field_validator("name", "namespace")
    @classmethod
    def _dns_subdomain(cls, value: str | None) -> str | None:
        if value is not None and not names.is_dns_subdomain(value):
            raise ValueError(f"{value!r} is not a DNS subdomain (lower-case letters, digits, "
                             f"'-' and '.', at most 253 characters)")
        return value

    @field_validator("annotations")
    @classmethod
    def _annotations(cls, value: dict[str, str] | None) -> dict[str, str] | None:
        seed = (value or {}).get(LAST_KNOWN_ACTIVE_GENERATION_ANNOTATION)
        if seed is not None and not (seed.isascii() and seed.isdigit()):
            raise ValueError(f"annotation {LAST_KNOWN_ACTIVE_GENERATION_ANNOTATION} {seed!r} "
                             f"is not a generation number (write an integer ≥ 0)")
        return value


class Component(_Strict):
    """One explicit component: its image, extra arguments and environment (§2.2)."""

    image: str
    args: list[str] | None = None
    env: dict[str, str] | None = None
    stateless: bool | None = None

    @field_validator("image")
    @classmethod
    def _image(cls, value: str) -> str:
        problem = imageref.problem_of(value)
        if problem:
            raise ValueError(f"{value!r} is not an OCI image reference: {problem} "
                             f"(write [registry/]name[:tag][@sha256:…])")
        return value


class SpecV1Alpha2(_Strict):
    """The v1alpha2 spec (§2.2): exactly one of `release` and `components`."""

    release: str | None = None
    components: dict[str, Component] | None = None
    rolloutStrategy: Strategy | None = None
    rolloutRequestTimeout: str | None = None
    forceRollout: str | None = None
    forcePromote: str | None = None

    @field_validator("components")
    @classmethod
    def _component_names(cls, value: dict[str, Component] | None) -> dict[str, Component] | None:
        for name in value or {}:
            if not _DNS_LABEL.fullmatch(name):
                raise ValueError(f"component name {name!r} is not a DNS label (lower-case "
                                 f"letters, digits and '-', at most 63 characters)")
        return value

    @field_validator("release")
    @classmethod
    def _release(cls, value: str | None) -> str | None:
        if value is not None and (not value or value != value.strip()):
            raise ValueError(f"release {value!r} is empty or surrounded by spaces "
                             f"(write a release tag such as v2026.11.3)")
        return value

    @field_validator("rolloutRequestTimeout")
    @classmethod
    def _timeout(cls, value: str | None) -> str | None:
        if value is not None:
            parse_duration(value, "value")
        return value

    @field_validator("forceRollout")
    @classmethod
    def _force_rollout(cls, value: str | None) -> str | None:
        return _uuid(value)

    @field_validator("forcePromote")
    @classmethod
    def _force_promote(cls, value: str | None) -> str | None:
        if value is not None and (value == "" or value == NIL_UUID):
            raise ValueError("forcePromote is empty or the nil UUID (remove it, or write the "
                             "rollout hash to promote)")
        return value

    @model_validator(mode="after")
    def _one_source(self) -> SpecV1Alpha2:
        if (self.release is None) == (self.components is None):
            raise ValueError("exactly one of release and components must be set "
                             "(a release tag, or a map of explicit components)")
        return self


class SpecV1Alpha1(SpecV1Alpha2):
    """The v1alpha1 spec (§2.5): plus `requestRollout`; `forcePromote` a UUID, "" or a hash."""

    requestRollout: str | None = None

    @field_validator("requestRollout")
    @classmethod
    def _request_rollout(cls, value: str | None) -> str | None:
        return _uuid(value)

    @field_validator("forcePromote")
    @classmethod
    def _force_promote(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not HASH.fullmatch(value):
            _uuid(value)
        return value


class Condition(_Strict):
    """A status condition; the `UpToDate` one carries one of the reasons of §2.4."""

    type: str
    status: Literal["True", "False", "Unknown"]
    reason: str | None = None
    message: str | None = None
    lastTransitionTime: str | None = None
    observedGeneration: int | None = Field(default=None, ge=0)

    @field_validator("lastTransitionTime")
    @classmethod
    def _rfc3339(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                stamp = datetime.fromisoformat(value.replace("Z", "+00:00"))
            except ValueError:
                stamp = None
            if stamp is None or stamp.tzinfo is None or "T" not in value.upper():
                raise ValueError(f"{value!r} is not an RFC 3339 time (write e.g. "
                                 f"2026-11-03T12:00:00Z)")
        return value

    @model_validator(mode="after")
    def _reason(self) -> Condition:
        if self.type == UP_TO_DATE and self.reason not in REASONS:
            raise ValueError(f"UpToDate reason {self.reason!r} is unknown "
                             f"(one of {', '.join(REASONS)})")
        return self


class _StatusCommon(_Strict):
    activeGeneration: int | None = Field(default=None, ge=0)
    lastCompletedRelease: str | None = None
    conditions: list[Condition] | None = None
    observedGeneration: int | None = Field(default=None, ge=0)
    requestedRolloutHash: str | None = None
    lastCompletedRolloutHash: str | None = None

    @model_validator(mode="after")
    def _one_up_to_date(self) -> _StatusCommon:
        if sum(c.type == UP_TO_DATE for c in self.conditions or []) > 1:
            raise ValueError("more than one UpToDate condition (keep exactly one)")
        return self


class StatusV1Alpha2(_StatusCommon):
    """The v1alpha2 status (§2.3)."""


class StatusV1Alpha1(_StatusCommon):
    """The v1alpha1 status (§2.5): the hash members only ride along for the round trip."""

    lastCompletedRolloutRequest: str | None = None
    resourcesHash: str

    @field_validator("lastCompletedRolloutRequest")
    @classmethod
    def _request(cls, value: str | None) -> str | None:
        return _uuid(value)

    @field_validator("resourcesHash")
    @classmethod
    def _resources_hash(cls, value: str) -> str:
        if value and not HASH.fullmatch(value):
            raise ValueError(f"{value!r} is neither \"\" nor 64 lowercase hex digits "
                             f"(the controller writes it; remove the status)")
        return value


class EnvironmentV1Alpha2(_Strict):
    """An Environment as stored (§2.1)."""

    apiVersion: Literal["lockstep.dev/v1alpha2"]
    kind: Literal["Environment"]
    metadata: ObjectMeta
    spec: SpecV1Alpha2
    status: StatusV1Alpha2 | None = None


class EnvironmentV1Alpha1(_Strict):
    """An Environment in the older version (§2.5)."""

    apiVersion: Literal["lockstep.dev/v1alpha1"]
    kind: Literal["Environment"]
    metadata: ObjectMeta
    spec: SpecV1Alpha1
    status: StatusV1Alpha1 | None = None


_MODELS: dict[str, type[BaseModel]] = {V1ALPHA1: EnvironmentV1Alpha1, V1ALPHA2: EnvironmentV1Alpha2}
_HINTS = {
    "extra_forbidden": "remove it; docs/rollouts.md lists the fields of each version",
    "missing": "add it",
    "literal_error": "use one of them",
}
# Pydantic's type errors, worded for someone writing YAML or JSON.
_EXPECTED = {"string_type": "a string", "bool_type": "true or false", "int_type": "an integer",
             "dict_type": "a mapping", "model_type": "a mapping", "list_type": "a list",
             "model_attributes_type": "a mapping"}


def up_to_date(status: object) -> dict[str, Any]:
    """The `UpToDate` condition of a status (empty if there is none, or the status is garbled)."""
    conditions = status.get("conditions") if isinstance(status, dict) else None
    return next((c for c in conditions if isinstance(c, dict) and c.get("type") == UP_TO_DATE),
                {}) if isinstance(conditions, list) else {}


def validate(obj: object) -> None:
    """Raise ValidationError (one line, naming the member's path) unless `obj` may be written."""
    if not isinstance(obj, dict):
        raise ValidationError(f"an Environment is a mapping, not {_json_type(obj)}",
                              "write a mapping with apiVersion, kind, metadata and spec")
    version = obj.get("apiVersion")
    if version not in _MODELS:
        raise ValidationError(f"apiVersion {version!r} is not supported",
                              f"use {V1ALPHA2} or {V1ALPHA1}")
    if obj.get("kind") != KIND:
        raise ValidationError(f"kind {obj.get('kind')!r} is not {KIND}", f"write kind: {KIND}")
    try:
        _MODELS[version].model_validate(obj)
    except PydanticValidationError as exc:
        raise _one_line(exc) from None


def _one_line(exc: PydanticValidationError) -> ValidationError:
    """The first pydantic error as `<path>: <problem>` with a hint."""
    error = exc.errors(include_url=False)[0]
    path = ".".join(str(p) for p in error["loc"] if not str(p).startswith("function-"))
    kind = error["type"]
    message = str(error["msg"]).removeprefix("Value error, ")
    hint = _HINTS.get(kind, "see docs/rollouts.md")
    cause = error.get("ctx", {}).get("error")
    if kind == "extra_forbidden":
        message = "unknown field"
    elif kind == "missing":
        message = "missing"
    elif kind in _EXPECTED:
        message = f"expected {_EXPECTED[kind]}, not {_json_type(error['input'])}"
        hint = f"write {_EXPECTED[kind]}"
    elif kind == "greater_than_equal":
        message = f"{error['input']!r} is below {error['ctx']['ge']}"
        hint = f"write an integer ≥ {error['ctx']['ge']}"
    elif isinstance(cause, ValidationError):
        message, hint = cause.message, cause.hint or hint
    elif kind == "value_error" and message.endswith(")") and " (" in message:
        message, _, hint = message[:-1].rpartition(" (")
    return ValidationError(f"{path or 'Environment'}: {' '.join(message.split())}", hint)


def _json_type(value: object) -> str:
    """How a JSON value reads in a message: `a list`, `a mapping`, or the scalar itself."""
    if isinstance(value, list):
        return "a list"
    if isinstance(value, dict):
        return "a mapping"
    text = json.dumps(value, ensure_ascii=False, default=str)
    return text if len(text) <= 40 else f"{text[:37]}..."


# --- YAML and JSON in and out ---------------------------------------------------------------


def load(source: Path | str, name: str | None = None) -> dict[str, Any]:
    """One JSON object from a file (a `Path`) or from text (a `str`): JSON when it starts with
    `{`, else YAML 1.2 (timestamps stay strings). ValidationError for anything else."""
    where = name or (str(source) if isinstance(source, Path) else "<input>")
    if isinstance(source, Path):
        try:
            text = source.read_text(encoding="utf-8")
        except FileNotFoundError:
            raise ValidationError(f"{where}: no such file", "check the path") from None
        except (OSError, UnicodeDecodeError) as exc:
            raise ValidationError(f"{where}: cannot read: {exc}", "pass a UTF-8 text file") \
                from None
    else:
        text = source
    value = _parse_json(text, where) if text.lstrip().startswith(("{", "[")) \
        else _parse_yaml(text, where)
    if not isinstance(value, dict):
        raise ValidationError(f"{where}: the document is {_json_type(value)}, not an object",
                              "write one Environment as a mapping")
    _check_json(value, where, "")
    return value


def _parse_json(text: str, where: str) -> Any:
    def no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        result: dict[str, Any] = {}
        for key, value in pairs:
            if key in result:
                raise ValidationError(f"{where}: duplicate key {key!r}", "keep one of them")
            result[key] = value
        return result

    def no_constant(word: str) -> Any:
        raise ValidationError(f"{where}: {word} is not a JSON number", "write a finite number")

    try:
        return json.loads(text, object_pairs_hook=no_duplicates, parse_constant=no_constant)
    except json.JSONDecodeError as exc:
        raise ValidationError(f"{where}: malformed JSON: {exc.msg} at line {exc.lineno}, "
                              f"column {exc.colno}", "fix the JSON syntax") from None


def _yaml() -> Any:
    from ruamel.yaml import YAML
    from ruamel.yaml.constructor import SafeConstructor

    class JsonConstructor(SafeConstructor):
        """Safe loading, but a timestamp stays the string it was, as Kubernetes reads it."""

    JsonConstructor.add_constructor("tag:yaml.org,2002:timestamp",
                                    SafeConstructor.construct_yaml_str)
    yaml = YAML(typ="safe", pure=True)
    yaml.Constructor = JsonConstructor
    yaml.default_flow_style = False
    yaml.allow_unicode = True
    yaml.width = 1 << 16  # a hash or a long message stays on its line
    yaml.representer.sort_base_mapping_type_on_output = False
    return yaml


def _parse_yaml(text: str, where: str) -> Any:
    from ruamel.yaml.error import MarkedYAMLError, YAMLError

    try:
        documents = [d for d in _yaml().load_all(text) if d is not None]
    except MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = " ".join(str(exc.problem or exc.context or "invalid").split())
        raise ValidationError(f"{where}: malformed YAML: {problem}{at}",
                              "fix the YAML syntax") from None
    except YAMLError as exc:
        raise ValidationError(f"{where}: malformed YAML: {' '.join(str(exc).split())}",
                              "fix the YAML syntax") from None
    if len(documents) != 1:
        raise ValidationError(f"{where}: {len(documents)} YAML documents, expected one",
                              "put one Environment in the file")
    return documents[0]


def _check_json(value: Any, where: str, path: str) -> None:
    """Reject what YAML allows and JSON cannot hold: non-string keys, NaN and infinities."""
    if isinstance(value, dict):
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValidationError(f"{where}: key {key!r} at {path or 'top level'} is not "
                                      f"a string", "quote the key")
            _check_json(item, where, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _check_json(item, where, f"{path}[{i}]")
    elif isinstance(value, float) and not math.isfinite(value):
        raise ValidationError(f"{where}: {path} is {value}, not a JSON number",
                              "write a finite number")
    elif not isinstance(value, str | int | float | bool) and value is not None:
        raise ValidationError(f"{where}: {path} holds a {type(value).__name__}, not JSON",
                              "write strings, numbers, booleans, lists and mappings only")


def dump(obj: Any, fmt: Literal["yaml", "json"] = "yaml") -> str:
    """The object as YAML (block style, member order kept) or indented JSON, ending in a newline."""
    if fmt == "json":
        return json.dumps(obj, indent=2, ensure_ascii=False) + "\n"
    stream = io.StringIO()
    _yaml().dump(obj, stream)
    return stream.getvalue()
