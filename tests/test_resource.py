"""The Environment resource (spec §2): validation on write with one-line errors naming the
member, durations (§5.7), and YAML/JSON reading and writing."""

from __future__ import annotations

import copy
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from lockstep.errors import ValidationError
from lockstep.rollout.resource import (
    NIL_UUID,
    V1ALPHA1,
    V1ALPHA2,
    EnvironmentV1Alpha2,
    dump,
    load,
    parse_duration,
    validate,
)
from tests.test_convert import R1, H, condition, v1, v1_status, v2, v2_status
from tests.test_rollout_hash import G4

UUID = "7d9b5c2e-3f1a-4b8e-9c6d-2a1e0f4b5c3d"


def test_valid_objects_of_both_versions() -> None:
    full = v2({**G4, "rolloutRequestTimeout": "1h30m", "forcePromote": H},
              v2_status("Applied", H, H))
    full["metadata"].update(annotations={"lockstep.dev/force-rollout": "x",
                                         "lockstep.dev/last-known-active-generation": "3"},
                            generation=7, resourceVersion="12", labels={"team": "db"},
                            finalizers=["lockstep.dev/environment"])
    for obj in (full, v2(), v1(), v1(status=v1_status("Applied", R1, H)),
                v1({"release": "v1", "forcePromote": ""}), v1({"release": "v1", "forcePromote": H}),
                v1({"release": "v1", "forcePromote": None}, request=None,
                   status=v1_status(None, NIL_UUID, "")),
                v2({"components": {"a": {"image": "registry.example:5000/x/a@sha256:" + "0" * 64,
                                         "args": None, "env": {}, "stateless": True}},
                    "release": None})):
        validate(obj)
    assert EnvironmentV1Alpha2.model_validate(full).spec.rolloutStrategy == "ManuallyPromote"


Mutation = Callable[[dict[str, Any]], Any]


def _spec(**members: Any) -> Mutation:
    return lambda o: o["spec"].update(members)


def _components(**component: Any) -> Mutation:
    return lambda o: o["spec"].update(release=None, components={"web": {"image": "w:1",
                                                                        **component}})


BAD: list[tuple[str, Any, Mutation, str]] = [
    # id, base version, mutation, expected start of the error line
    ("both sources", V1ALPHA2, _spec(components={"a": {"image": "a:1"}}),
     "spec: exactly one of release and components must be set"),
    ("no source", V1ALPHA2, lambda o: o["spec"].pop("release"),
     "spec: exactly one of release and components"),
    ("unknown strategy", V1ALPHA2, _spec(rolloutStrategy="Sometimes"),
     "spec.rolloutStrategy: Input should be 'WaitUntilReady'"),
    ("negative timeout", V1ALPHA2, _spec(rolloutRequestTimeout="-1h"),
     "spec.rolloutRequestTimeout: value '-1h' is not a positive duration"),
    ("zero timeout", V1ALPHA2, _spec(rolloutRequestTimeout="0h0m"),
     "spec.rolloutRequestTimeout: value '0h0m' is not a positive duration"),
    ("timeout without unit", V1ALPHA2, _spec(rolloutRequestTimeout="24"),
     "spec.rolloutRequestTimeout: value '24' is not a positive duration"),
    ("timeout a number", V1ALPHA2, _spec(rolloutRequestTimeout=24),
     "spec.rolloutRequestTimeout: expected a string, not 24"),
    ("forceRollout not a UUID", V1ALPHA2, _spec(forceRollout="tuesday"),
     "spec.forceRollout: 'tuesday' is not a UUID"),
    ("empty forcePromote", V1ALPHA2, _spec(forcePromote=""),
     "spec.forcePromote: forcePromote is empty or the nil UUID"),
    ("nil forcePromote", V1ALPHA2, _spec(forcePromote=NIL_UUID), "spec.forcePromote:"),
    ("unknown spec field", V1ALPHA2, _spec(futureField=1), "spec.futureField: unknown field"),
    ("v1alpha1 field in v1alpha2", V1ALPHA2, _spec(requestRollout=UUID),
     "spec.requestRollout: unknown field"),
    ("unknown top-level field", V1ALPHA2, lambda o: o.update(extra=1), "extra: unknown field"),
    ("unknown metadata field", V1ALPHA2, lambda o: o["metadata"].update(colour="red"),
     "metadata.colour: unknown field"),
    ("bad name", V1ALPHA2, lambda o: o["metadata"].update(name="Prod_1"),
     "metadata.name: 'Prod_1' is not a DNS subdomain"),
    ("no metadata", V1ALPHA2, lambda o: o.pop("metadata"), "metadata: missing"),
    ("no spec", V1ALPHA2, lambda o: o.pop("spec"), "spec: missing"),
    ("spec a list", V1ALPHA2, lambda o: o.update(spec=[]), "spec: expected a mapping, not a list"),
    ("component name", V1ALPHA2,
     lambda o: o["spec"].update(release=None, components={"Web": {"image": "w:1"}}),
     "spec.components: component name 'Web' is not a DNS label"),
    ("component name too long", V1ALPHA2,
     lambda o: o["spec"].update(release=None, components={"a" * 64: {"image": "w:1"}}),
     "spec.components: component name"),
    ("image", V1ALPHA2, _components(image="Example/Web:1"),
     "spec.components.web.image: 'Example/Web:1' is not an OCI image reference"),
    ("no image", V1ALPHA2, lambda o: o["spec"].update(release=None, components={"web": {}}),
     "spec.components.web.image: missing"),
    ("stateless not a bool", V1ALPHA2, _components(stateless=1),
     "spec.components.web.stateless: expected true or false, not 1"),
    ("env value not a string", V1ALPHA2, _components(env={"A": 1}),
     "spec.components.web.env.A: expected a string, not 1"),
    ("args not a list", V1ALPHA2, _components(args="--x"),
     "spec.components.web.args: expected a list"),
    ("unknown component field", V1ALPHA2, _components(replicas=2),
     "spec.components.web.replicas: unknown field"),
    ("negative generation", V1ALPHA2, lambda o: o.update(status={"activeGeneration": -1}),
     "status.activeGeneration: -1 is below 0"),
    ("unknown reason", V1ALPHA2,
     lambda o: o.update(status={"conditions": [{**condition("Applied", "True"),
                                                "reason": "Done"}]}),
     "status.conditions.0: UpToDate reason 'Done' is unknown"),
    ("bad condition status", V1ALPHA2,
     lambda o: o.update(status={"conditions": [{**condition("Applied", "Yes")}]}),
     "status.conditions.0.status: Input should be 'True', 'False' or 'Unknown'"),
    ("bad time", V1ALPHA2,
     lambda o: o.update(status={"conditions": [{**condition("Applied", "True"),
                                                "lastTransitionTime": "yesterday"}]}),
     "status.conditions.0.lastTransitionTime: 'yesterday' is not an RFC 3339 time"),
    ("two UpToDate", V1ALPHA2,
     lambda o: o.update(status={"conditions": [condition("Applied", "True")] * 2}),
     "status: more than one UpToDate condition"),
    ("v1alpha1 status field in v1alpha2", V1ALPHA2,
     lambda o: o.update(status={"resourcesHash": ""}), "status.resourcesHash: unknown field"),
    ("bad seed annotation", V1ALPHA2,
     lambda o: o["metadata"].update(annotations={
         "lockstep.dev/last-known-active-generation": "-3"}),
     "metadata.annotations: annotation lockstep.dev/last-known-active-generation '-3'"),
    ("requestRollout not a UUID", V1ALPHA1, _spec(requestRollout="r1"),
     "spec.requestRollout: 'r1' is not a UUID"),
    ("v1alpha1 forcePromote", V1ALPHA1, _spec(forcePromote="please"),
     "spec.forcePromote: 'please' is not a UUID"),
    ("v1alpha1 status without resourcesHash", V1ALPHA1,
     lambda o: o.update(status={"activeGeneration": 1}), "status.resourcesHash: missing"),
    ("v1alpha1 resourcesHash", V1ALPHA1,
     lambda o: o.update(status={"resourcesHash": "abc"}), "status.resourcesHash: 'abc'"),
    ("v1alpha1 completed request", V1ALPHA1,
     lambda o: o.update(status={"resourcesHash": "", "lastCompletedRolloutRequest": "x"}),
     "status.lastCompletedRolloutRequest: 'x' is not a UUID"),
    ("unknown version", V1ALPHA2, lambda o: o.update(apiVersion="lockstep.dev/v1"),
     "apiVersion 'lockstep.dev/v1' is not supported"),
    ("no version", V1ALPHA2, lambda o: o.pop("apiVersion"), "apiVersion None is not supported"),
    ("other kind", V1ALPHA2, lambda o: o.update(kind="Pod"), "kind 'Pod' is not Environment"),
]


@pytest.mark.parametrize(("base", "mutation", "expected"), [b[1:] for b in BAD],
                         ids=[b[0] for b in BAD])
def test_validate_rejects_with_one_line(base: str, mutation: Mutation, expected: str) -> None:
    obj = v2() if base == V1ALPHA2 else v1()
    mutation(obj)
    with pytest.raises(ValidationError) as caught:
        validate(obj)
    line = caught.value.one_line()
    assert line.startswith(expected), line
    assert caught.value.hint, line  # every error says how to fix it
    assert "\n" not in line and caught.value.exit_code == 2
    assert "pydantic" not in line and "https://" not in line


@pytest.mark.parametrize("value", [[], "prod", None, 3])
def test_validate_rejects_non_objects(value: Any) -> None:
    with pytest.raises(ValidationError, match="an Environment is a mapping"):
        validate(value)


def test_validate_does_not_modify_the_object() -> None:
    obj = v2({**G4, "forcePromote": H}, v2_status("Applied", H, H))
    snapshot = copy.deepcopy(obj)
    validate(obj)
    assert obj == snapshot


# --- durations (§5.7) ---------------------------------------------------------------------------


@pytest.mark.parametrize(("text", "expected"), [
    ("24h", timedelta(hours=24)), ("1h30m", timedelta(minutes=90)), ("1d", timedelta(days=1)),
    ("500ms", timedelta(milliseconds=500)), ("30m1h", timedelta(minutes=90)),
    ("1h0m", timedelta(hours=1)), ("0h1s", timedelta(seconds=1)), ("90s", timedelta(seconds=90)),
])
def test_parse_duration(text: str, expected: timedelta) -> None:
    assert parse_duration(text) == expected


@pytest.mark.parametrize("text", ["", "24", "h", "-1h", "+1h", "0s", "0h0m", "1.5h", "1H",
                                  " 1h", "1h ", "1w", "1 h", "\u0663h", "1hh", 24, None])
def test_parse_duration_rejects(text: Any) -> None:
    with pytest.raises(ValidationError) as caught:
        parse_duration(text)
    assert "is not a positive duration" in caught.value.message
    assert "e.g. 24h or 1h30m" in (caught.value.hint or "")


# --- reading and writing --------------------------------------------------------------------------


def test_load_yaml_and_json_alike(tmp_path: Path) -> None:
    obj = v2(G4, v2_status("Applied", H, None))
    obj["metadata"]["annotations"] = {"note": "grüße\n", "lockstep.dev/force-rollout": ""}
    for fmt in ("yaml", "json"):
        text = dump(obj, fmt)  # type: ignore[arg-type]
        assert load(text) == obj
        path = tmp_path / f"env.{fmt}"
        path.write_text(text, encoding="utf-8")
        assert load(path) == obj
        assert list(load(path)["spec"]["components"]) == ["web", "api", "store"]  # order kept
    assert f"lastCompletedRolloutHash: {H}\n" in dump(obj, "yaml")  # a hash stays on its line


def test_yaml_timestamps_and_words_stay_strings() -> None:
    obj = load("metadata:\n  creationTimestamp: 2026-11-03T12:00:00Z\n  when: 2026-11-03\n"
               "  yes: no\n")
    assert obj == {"metadata": {"creationTimestamp": "2026-11-03T12:00:00Z",
                                "when": "2026-11-03", "yes": "no"}}


@pytest.mark.parametrize(("text", "expected"), [
    ("spec: [1\n", "<input>: malformed YAML: expected ',' or ']'"),
    ("a: 1\na: 2\n", "<input>: malformed YAML: found duplicate key \"a\""),
    ('{"a": 1, "a": 2}', "<input>: duplicate key 'a'"),
    ('{"a": 1,}', "<input>: malformed JSON: Expecting property name"),
    ('{"a": NaN}', "<input>: NaN is not a JSON number"),
    ("a: .inf\n", "<input>: a is inf, not a JSON number"),
    ("1: a\n", "<input>: key 1 at top level is not a string"),
    ("", "<input>: 0 YAML documents, expected one"),
    ("a: 1\n---\nb: 2\n", "<input>: 2 YAML documents, expected one"),
    ("- a\n", "<input>: the document is a list, not an object"),
    ("[1]", "<input>: the document is a list, not an object"),
    ("just text", "<input>: the document is \"just text\", not an object"),
    ("a: !!python/object:os.system x\n", "<input>: malformed YAML: could not determine"),
])
def test_load_rejects_malformed_input(text: str, expected: str) -> None:
    with pytest.raises(ValidationError) as caught:
        load(text)
    line = caught.value.one_line()
    assert line.startswith(expected), line
    assert caught.value.hint and caught.value.exit_code == 2


def test_load_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match="no such file"):
        load(tmp_path / "absent.yaml")
    latin = tmp_path / "latin.yaml"
    latin.write_bytes(b"name: gr\xfc\xdfe\n")
    with pytest.raises(ValidationError, match="cannot read"):
        load(latin)
