"""Conversion (spec §4.1–4.3) case by case: the conversion parts of X1–X10, each row of the §4.1
table in its order, §4.2's resourcesHash per reason, partial objects, what fails, and
`lockstep convert` run as a real process."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import pytest

from lockstep.rollout.convert import ConversionError, convert, down, up
from lockstep.rollout.hashing import rollout_hash, uuid5_of
from lockstep.rollout.resource import NIL_UUID, V1ALPHA1, V1ALPHA2, dump, load
from tests.test_rollout_hash import G4, H4, lockstep

SPEC: dict[str, Any] = {"release": "v2026.11.3", "rolloutStrategy": "ManuallyPromote"}
H = rollout_hash({"apiVersion": V1ALPHA2, "spec": SPEC})
H1 = "1" * 64
H2 = "2" * 64
R1 = "0b0c5e4e-7a55-4f3a-a4c8-0f7a2f7d1b11"
R2 = "5e1f0c2a-33b4-4c1d-9e8f-7a6b5c4d3e2f"
OTHER = "9a8b7c6d-5e4f-4a3b-8c2d-1e0f9a8b7c6d"


def condition(reason: str, status: str) -> dict[str, Any]:
    """An UpToDate condition as the controller writes it."""
    return {"type": "UpToDate", "status": status, "reason": reason, "message": f"{reason} 4",
            "lastTransitionTime": "2026-11-03T12:00:00Z", "observedGeneration": 7}


REASON_STATUS = {"Applying": "Unknown", "ReadyToPromote": "Unknown", "Promoting": "Unknown",
                 "Applied": "True", "WaitingForApproval": "False", "FailedDeploy": "False",
                 "RolloutTimeout": "False"}


def v1(spec: dict[str, Any] | None = None, request: str | None = R1,
       status: dict[str, Any] | None = None) -> dict[str, Any]:
    """A complete v1alpha1 Environment."""
    obj: dict[str, Any] = {"apiVersion": V1ALPHA1, "kind": "Environment",
                           "metadata": {"name": "prod", "namespace": "lab"},
                           "spec": {**copy.deepcopy(spec or SPEC)}}
    if request is not None:
        obj["spec"]["requestRollout"] = request
    if status is not None:
        obj["status"] = status
    return obj


def v1_status(reason: str | None, completed_request: str | None,
              resources_hash: str, **extra: Any) -> dict[str, Any]:
    status: dict[str, Any] = {"activeGeneration": 3, "lastCompletedRelease": "v2026.11.2",
                              "observedGeneration": 7, "resourcesHash": resources_hash,
                              "conditions": [condition(reason, REASON_STATUS[reason])]
                              if reason else []}
    if completed_request is not None:
        status["lastCompletedRolloutRequest"] = completed_request
    status.update(extra)
    return status


def v2(spec: dict[str, Any] | None = None, status: dict[str, Any] | None = None
       ) -> dict[str, Any]:
    """A complete v1alpha2 Environment."""
    obj: dict[str, Any] = {"apiVersion": V1ALPHA2, "kind": "Environment",
                           "metadata": {"name": "prod", "namespace": "lab"},
                           "spec": copy.deepcopy(spec or SPEC)}
    if status is not None:
        obj["status"] = status
    return obj


def v2_status(reason: str | None, completed: str | None, requested: str | None
              ) -> dict[str, Any]:
    return {"activeGeneration": 3, "lastCompletedRelease": "v2026.11.2", "observedGeneration": 7,
            "conditions": [condition(reason, REASON_STATUS[reason])] if reason else [],
            "lastCompletedRolloutHash": completed, "requestedRolloutHash": requested}


def expected_up(obj: dict[str, Any], completed: str | None, requested: str | None
                ) -> dict[str, Any]:
    """`obj` with the v1alpha1-only members dropped and the two hash members set."""
    out = copy.deepcopy(obj)
    out["apiVersion"] = V1ALPHA2
    out["spec"].pop("requestRollout", None)
    status = out["status"]
    status.pop("lastCompletedRolloutRequest", None)
    status.pop("resourcesHash", None)
    status["lastCompletedRolloutHash"] = completed
    status["requestedRolloutHash"] = requested
    return out


# --- §4.1 v1alpha1 → v1alpha2 -----------------------------------------------------------------


def test_x2_at_rest() -> None:
    obj = v1(status=v1_status("Applied", R1, H))
    assert up(obj) == expected_up(obj, H, H)
    assert rollout_hash(up(obj)) == rollout_hash(obj) == H


@pytest.mark.parametrize("completed_request", [R1, None, "", NIL_UUID])
def test_x3_mid_rollout(completed_request: str | None) -> None:
    """R2 ≠ R1 (or nothing completed yet): requested, not completed; the condition is kept."""
    obj = v1(request=R2, status=v1_status("Applying", completed_request, ""))
    converted = up(obj)
    assert converted == expected_up(obj, None, H)
    assert converted["status"]["conditions"] == [condition("Applying", "Unknown")]


@pytest.mark.parametrize("completed_request", [R1, R2])
def test_x4_promoting(completed_request: str) -> None:
    obj = v1(request=R2, status=v1_status("Promoting", completed_request, H))
    assert up(obj) == expected_up(obj, None, None)


def test_x5_waiting_for_approval_and_no_status() -> None:
    obj = v1(status=v1_status("WaitingForApproval", R1, H1))
    assert up(obj) == expected_up(obj, H1, H1)
    assert H1 != H
    bare = v1()
    assert up(bare) == {"apiVersion": V1ALPHA2, "kind": "Environment",
                        "metadata": bare["metadata"], "spec": SPEC}


def test_waiting_for_approval_without_a_hash_is_at_rest() -> None:
    """The WaitingForApproval row needs 64 hex digits; otherwise the object is at rest."""
    for resources_hash in ("", "abc", "AB" * 32, "1" * 63):
        obj = v1(status=v1_status("WaitingForApproval", R1, resources_hash))
        assert up(obj) == expected_up(obj, H, H)


@pytest.mark.parametrize(("force", "request_rollout", "expected"), [
    ("", R1, None),
    (NIL_UUID, R1, None),
    (None, R1, None),
    (R1, R1, H),                   # a natively issued request: promote the object's hash
    (OTHER, R1, OTHER),
    (uuid5_of(H), uuid5_of(H), uuid5_of(H)),   # the request came from v1alpha2: copied
    (H2, R1, H2),
])
def test_x6_force_promote(force: str | None, request_rollout: str,
                          expected: str | None) -> None:
    obj = v1(request=request_rollout)
    obj["spec"]["forcePromote"] = force
    converted = up(obj)["spec"]
    assert converted.get("forcePromote", "<absent>") == (expected or "<absent>")
    assert "requestRollout" not in converted


def test_force_promote_on_a_partial_object_is_only_copied() -> None:
    partial = {"spec": {"requestRollout": R1, "forcePromote": R1}}
    assert up(partial) == {"spec": {"forcePromote": R1}}


def test_x10_cancelled() -> None:
    obj = v1(status=v1_status("RolloutTimeout", R1, ""))
    converted = up(obj)
    assert converted == expected_up(obj, None, H)
    assert converted["status"]["conditions"][0]["reason"] == "RolloutTimeout"


def test_came_from_v1alpha2_row_wins() -> None:
    """The status carries lastCompletedRolloutHash and its request matches: members copied,
    even while Promoting or cancelled; a missing requestedRolloutHash stays missing."""
    for reason in ("Promoting", "RolloutTimeout", "Applied", "Applying"):
        obj = v1(request=R2, status=v1_status(reason, uuid5_of(H1), H1,
                                               lastCompletedRolloutHash=H1,
                                               requestedRolloutHash=H2))
        assert up(obj) == expected_up(obj, H1, H2)
    never = v1(status=v1_status("Applying", NIL_UUID, "", lastCompletedRolloutHash=None))
    converted = up(never)
    assert converted["status"]["lastCompletedRolloutHash"] is None
    assert "requestedRolloutHash" not in converted["status"]


def test_stale_round_trip_members_are_recomputed() -> None:
    """The hash members no longer match the request: the v1alpha1 controller moved on."""
    obj = v1(status=v1_status("Applied", R1, H, lastCompletedRolloutHash=H1,
                              requestedRolloutHash=H1))
    assert up(obj) == expected_up(obj, H, H)


def test_rows_apply_in_order() -> None:
    """Promoting beats the not-completed row; RolloutTimeout beats it too."""
    assert up(v1(request=R2, status=v1_status("Promoting", R1, "")))["status"][
        "requestedRolloutHash"] is None
    assert up(v1(request=R2, status=v1_status("RolloutTimeout", None, "")))["status"][
        "lastCompletedRolloutHash"] is None
    # not completed beats WaitingForApproval
    assert up(v1(request=R2, status=v1_status("WaitingForApproval", R1, H1)))["status"][
        "lastCompletedRolloutHash"] is None


# --- §4.2 v1alpha2 → v1alpha1 -----------------------------------------------------------------


def test_x7_applied_down_and_back() -> None:
    original = v2(status=v2_status("Applied", H, H))
    converted = down(original)
    assert converted["apiVersion"] == V1ALPHA1
    assert converted["spec"]["requestRollout"] == uuid5_of(H)
    status = converted["status"]
    assert status["lastCompletedRolloutRequest"] == uuid5_of(H)
    assert status["resourcesHash"] == H
    assert status["lastCompletedRolloutHash"] == status["requestedRolloutHash"] == H
    assert up(converted) == original


@pytest.mark.parametrize(("reason", "expected"), [
    ("Applied", H1), ("ReadyToPromote", H2), ("Promoting", H2), ("Applying", ""),
    ("FailedDeploy", ""), ("RolloutTimeout", ""), ("WaitingForApproval", ""), (None, ""),
])
def test_resources_hash_by_reason(reason: str | None, expected: str) -> None:
    converted = down(v2(status=v2_status(reason, H1, H2)))["status"]
    assert converted["resourcesHash"] == expected
    assert converted["lastCompletedRolloutRequest"] == uuid5_of(H1)


def test_null_hashes_give_empty_resources_hash_and_nil_request() -> None:
    for reason in ("Applied", "Promoting"):
        converted = down(v2(status=v2_status(reason, None, None)))["status"]
        assert converted["resourcesHash"] == ""
        assert converted["lastCompletedRolloutRequest"] == NIL_UUID


def test_x9_client_writes_back_force_promote() -> None:
    """A v1alpha1 client reads a parked ManuallyPromote rollout, sets forcePromote to the
    requestRollout it read and writes the object back: stored forcePromote is uuid5(H), which
    the controller's `forced` predicate accepts (uuid5 of requestedRolloutHash)."""
    stored = v2(status=v2_status("ReadyToPromote", H1, H))
    read = down(stored)
    read["spec"]["forcePromote"] = read["spec"]["requestRollout"]
    written = up(read)
    assert written["spec"]["forcePromote"] == uuid5_of(H)
    assert written["spec"]["forcePromote"] == uuid5_of(written["status"]["requestedRolloutHash"])
    assert written["status"] == stored["status"]


def test_force_promote_copied_verbatim_down() -> None:
    for force in (H, "abc", R1):
        assert down(v2({**SPEC, "forcePromote": force}))["spec"]["forcePromote"] == force


# --- §4.3 partial objects, tri-state, unknown members ------------------------------------------


def test_x8_partial_object_both_ways() -> None:
    partial = {"spec": {"forcePromote": "abc", "futureField": 1}}
    assert down(partial) == partial
    assert up(partial) == partial
    for args in ({"args": None}, {}):
        obj = {"spec": {"components": {"api": {"image": "example/api:1", **args}}}}
        assert down(obj) == obj and up(obj) == obj
        assert up(down(obj)) == obj


def test_partial_object_with_version_changes_only_the_version() -> None:
    partial = {"apiVersion": V1ALPHA2, "kind": "Environment", "metadata": {"name": "prod"},
               "spec": {"forcePromote": "abc"},
               "status": {"lastCompletedRolloutHash": H1, "conditions": []}}
    converted = convert(partial, V1ALPHA1)
    assert converted == {**partial, "apiVersion": V1ALPHA1}
    back = convert({**converted, "status": {**converted["status"], "resourcesHash": H1,
                                            "lastCompletedRolloutRequest": R1}}, V1ALPHA2)
    assert back == partial


def test_unknown_members_are_copied_everywhere() -> None:
    obj = v2({"components": {"api": {"image": "example/api:1", "futureC": [1]}},
              "futureS": {"x": None}}, v2_status("Applied", H1, H1))
    obj["futureTop"] = True
    obj["metadata"]["futureM"] = "m"
    obj["status"]["futureSt"] = None
    converted = down(obj)
    assert converted["futureTop"] is True and converted["metadata"]["futureM"] == "m"
    assert converted["spec"]["futureS"] == {"x": None}
    assert converted["spec"]["components"]["api"]["futureC"] == [1]
    assert "futureSt" in converted["status"] and converted["status"]["futureSt"] is None
    assert up(converted) == obj


def test_conversion_is_pure() -> None:
    obj = v1(status=v1_status("Applied", R1, H))
    snapshot = copy.deepcopy(obj)
    converted = up(obj)
    converted["metadata"]["name"] = "changed"
    converted["status"]["conditions"].clear()
    assert obj == snapshot
    assert up(obj) == up(snapshot)


# --- what converts and what fails ---------------------------------------------------------------


def test_conversion_never_validates() -> None:
    """Both release and components, invalid UUIDs, negative timeouts, unknown strategies."""
    spec = {"release": "v1", "components": {"Bad_Name": {"image": "NOT AN IMAGE"}},
            "rolloutStrategy": "Sometimes", "rolloutRequestTimeout": "-5h",
            "forceRollout": "not-a-uuid", "unknown": 1}
    obj = v1(spec, request="also-not-a-uuid", status={"resourcesHash": 5, "conditions": "x"})
    back = down(up(obj))
    assert back["spec"]["rolloutStrategy"] == "Sometimes"
    assert back["spec"]["components"] == spec["components"]
    assert convert(v2(spec), V1ALPHA2) == v2(spec)


@pytest.mark.parametrize(("obj", "desired", "message"), [
    ([], V1ALPHA2, "not a JSON object"),
    ("x", V1ALPHA1, "not a JSON object"),
    ({"apiVersion": "v1", "kind": "Pod"}, V1ALPHA2, "kind 'Pod'"),
    ({"apiVersion": "lockstep.dev/v9", "kind": "Environment"}, V1ALPHA2, "lockstep.dev/v9"),
    ({"kind": "Environment", "spec": {}}, V1ALPHA2, "apiVersion None"),
    ({"apiVersion": V1ALPHA2, "kind": "Environment"}, "lockstep.dev/v9", "desired apiVersion"),
])
def test_conversion_errors(obj: Any, desired: str, message: str) -> None:
    with pytest.raises(ConversionError) as caught:
        convert(obj, desired)
    assert message in caught.value.one_line()
    assert caught.value.exit_code == 2 and "\n" not in caught.value.one_line()


def test_up_and_down_reject_other_kinds_and_versions() -> None:
    for function in (up, down):
        with pytest.raises(ConversionError):
            function({"kind": "Pod"})
        with pytest.raises(ConversionError):
            function({"apiVersion": "lockstep.dev/v3"})
        with pytest.raises(ConversionError):
            function(None)


def test_same_version_is_identity() -> None:
    for obj in (v1(status=v1_status("WaitingForApproval", R1, H1)),
                v2(status=v2_status("Applied", None, H))):
        assert convert(obj, obj["apiVersion"]) == obj
    assert up(v2(G4)) == v2(G4) and down(v1()) == v1()


# --- `lockstep convert` as users run it ---------------------------------------------------------


def test_cli_convert_round_trip(tmp_path: Path) -> None:
    original = v2(G4, v2_status("Applied", H4, H4))
    (tmp_path / "env.yaml").write_text(dump(original, "yaml"))
    first = lockstep("convert", "--to", "v1alpha1", "env.yaml", "-o", "json", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    converted = json.loads(first.stdout)
    assert converted == down(original)
    assert converted["spec"]["requestRollout"] == uuid5_of(H4)
    (tmp_path / "v1.json").write_text(first.stdout)
    second = lockstep("convert", "--to", "lockstep.dev/v1alpha2", "v1.json", cwd=tmp_path)
    assert second.returncode == 0, second.stderr
    assert load(second.stdout) == original
    assert second.stdout == dump(original, "yaml")
    same = lockstep("convert", "--to", "v1alpha2", "env.yaml", cwd=tmp_path)
    assert same.stdout == dump(original, "yaml")


@pytest.mark.parametrize(("args", "content", "expected"), [
    (["--to", "v1alpha1"], "spec: {\n", "malformed YAML"),
    (["--to", "v1alpha1"], "{}\n", "kind None is not Environment"),
    (["--to", "v3"], "{}\n", "--to 'v3'"),
    (["--to", "v1alpha1", "-o", "xml"], "{}\n", "-o 'xml'"),
    (["--to", "v1alpha1"], "apiVersion: lockstep.dev/v1\nkind: Environment\n", "not supported"),
])
def test_cli_convert_bad_input(tmp_path: Path, args: list[str], content: str,
                               expected: str) -> None:
    (tmp_path / "env.yaml").write_text(content)
    proc = lockstep("convert", *args, "env.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr
