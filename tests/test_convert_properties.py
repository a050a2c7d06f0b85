"""Round-trip guarantees of conversion (spec §4.4, P1–P4) over ≥ 10,000 generated objects per
direction: complete and partial objects, every field tri-state (absent, null, value), unknown
members at every level, statuses in every reason, and v1alpha1 objects that came from v1alpha2.

Hypothesis draws one seed per example and the objects are built from it with `random.Random`:
drawing every member through Hypothesis cost about 4 ms an object (most of each test's time), a
seeded build costs about 0.1 ms. A failure reports its seed and, as notes, the objects built
from it: calling `v2_objects` (or `v1_objects`) PER_EXAMPLE times on `random.Random(seed)`
rebuilds them.
"""

from __future__ import annotations

import copy
import random
import uuid
from collections import Counter
from collections.abc import Callable
from typing import Any

from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from lockstep.rollout.convert import convert, down, up
from lockstep.rollout.hashing import rollout_hash, uuid5_of
from lockstep.rollout.resource import (
    FORCE_ROLLOUT_ANNOTATION,
    NIL_UUID,
    REASONS,
    STRATEGIES,
    V1ALPHA1,
    V1ALPHA2,
)

# Each example checks PER_EXAMPLE objects built from its seed: Hypothesis's own cost per example
# (about 0.5 ms) is then paid once for several objects.
PER_EXAMPLE = 4
EXAMPLES = settings(max_examples=10_000 // PER_EXAMPLE, deadline=None, database=None,
                    suppress_health_check=[HealthCheck.too_slow])
seeds = st.integers(min_value=0, max_value=2**64 - 1)

Obj = dict[str, Any]

# --- building blocks --------------------------------------------------------------------------


class Gen:
    """Builds one value from a seeded random source; `a | b` picks either side half the time."""

    def __init__(self, build: Callable[[random.Random], Any]) -> None:
        self.build = build

    def __call__(self, rng: random.Random) -> Any:
        return self.build(rng)

    def __or__(self, other: Gen) -> Gen:
        return one_of(self, other)


def one_of(*gens: Gen) -> Gen:
    """One of `gens`, each equally likely."""
    return Gen(lambda rng: rng.choice(gens)(rng))


def sampled(*values: Any) -> Gen:
    """One of `values`, a fresh copy each time (built objects get mutated: never share them)."""
    return Gen(lambda rng: copy.deepcopy(rng.choice(values)))


def coin(rng: random.Random) -> bool:
    """Heads or tails."""
    return rng.random() < 0.5


none = sampled(None)
HEX = "0123456789abcdef"
ABSENT = object()  # a member left out, as opposed to a member whose value is null
# Each member is one pick from a tuple of choices: ABSENT, null, constants, or generators of
# arbitrary values. Small pools make equalities (a request equal to a completed request, a
# shared hash) frequent.
hashes = sampled("1" * 64, "2" * 64) | Gen(lambda rng: rng.randbytes(32).hex())
UUID_POOL = ("7d9b5c2e-3f1a-4b8e-9c6d-2a1e0f4b5c3d", "0b0c5e4e-7a55-4f3a-a4c8-0f7a2f7d1b11")
uuids = sampled(*UUID_POOL) | Gen(lambda rng: str(uuid.UUID(int=rng.getrandbits(128) or 1)))
JUNK = ("x", "grüße\n", " ", "not-a-uuid", "0" * 64, "\x00")
# Unknown members (names start with "u" and have no "i", so they never collide with a known
# member, `uid` of ObjectMeta included), nulls and nested nulls among them.
unknown = sampled({}, {}, {}, {"uFuture": 1}, {"u-x": None, "uz": {"k": None}},
                  {"u": [None, {"c": None}]}, {"uz": {"a": {"b": [1, None]}}},
                  {"uFuture": "ü", "u": False}, {"u-x": []}, {"uz": 2**40})
Choices = tuple[Any, ...]


def tri(*values: Any) -> Choices:
    """Absent, null, or one of `values` (constants or generators)."""
    return (ABSENT, None, *values)


def members(fields: dict[str, Choices], with_unknown: bool = True) -> Gen:
    """A JSON object picking each member from its choices, plus unknown members."""
    def build(rng: random.Random) -> Obj:
        obj: Obj = unknown(rng) if with_unknown else {}
        for name, choices in fields.items():
            choice = rng.choice(choices)
            if choice is ABSENT:
                continue
            obj[name] = choice(rng) if isinstance(choice, Gen) else copy.deepcopy(choice)
        return obj

    return Gen(build)


def list_of(item: Gen, min_size: int, max_size: int) -> Gen:
    """A list of `min_size`..`max_size` items."""
    return Gen(lambda rng: [item(rng) for _ in range(rng.randint(min_size, max_size))])


component = members({
    "image": tri("example/api:1", "example/db:2.0", "NOT AN IMAGE"),
    "args": tri([], ["--mode=prod"], [None], ["a", "b"], [""]),
    "env": tri({}, {"A": None}, {"A": "1"}, {"LOG": "ü\n", "B": None}, {"": ""}),
    "stateless": tri(True, False, 0, 1),
})
COMPONENT_NAMES = ("api", "db", "web", "Store")
maybe_component = none | component
components = Gen(lambda rng: {name: maybe_component(rng) for name in rng.sample(
    COMPONENT_NAMES, rng.randint(0, 3))})
SPEC_FIELDS: dict[str, Choices] = {
    "release": tri("v2026.11.3", "v2026.10.7", "", *JUNK),
    "components": tri(components, components, {}),
    "rolloutStrategy": tri(*STRATEGIES, "Sometimes"),
    "rolloutRequestTimeout": tri("24h", "1h30m", "1d", "-5h", ""),
    "forceRollout": tri(uuids, *JUNK),
}
# v1alpha2 forcePromote, when present, is non-empty and not the nil UUID (P1's schema note).
V2_FORCE_PROMOTE = (ABSENT, hashes, uuids, *JUNK)

condition = members({
    "type": ("UpToDate",) * 5 + ("Other",),
    "status": tri("True", "False", "Unknown"),
    "reason": (*REASONS, "Weird", None, ABSENT),
    "message": tri(*JUNK),
    "lastTransitionTime": tri("2026-11-03T12:00:00Z"),
    "observedGeneration": tri(0, 7),
}, with_unknown=False)
with_condition = list_of(condition, 1, 2)
CONDITIONS: Choices = (ABSENT, None, [], with_condition, with_condition, with_condition,
                       with_condition, with_condition)
STATUS_FIELDS: dict[str, Choices] = {
    "activeGeneration": tri(0, 3, 4),
    "lastCompletedRelease": tri("v2026.11.2", "v2026.11.3"),
    "observedGeneration": tri(0, 7),
    "requestedRolloutHash": tri(hashes),
    "conditions": CONDITIONS,
}
metadata = members({"name": tri("prod", "lab"), "namespace": tri(*JUNK),
                    "annotations": tri({}, {"note": "x"}, {FORCE_ROLLOUT_ANNOTATION: ""},
                                       {FORCE_ROLLOUT_ANNOTATION: "node-pool-upgrade-1",
                                        "note": "y"})})


def envelope(api_version: str, spec: Gen, status: Gen) -> Gen:
    """A complete object (about half the time) or a partial one, members tri-state."""
    maybe_metadata, maybe_spec = none | metadata, none | spec

    def build(rng: random.Random) -> Obj:
        complete = coin(rng)
        obj: Obj = unknown(rng)
        if complete or coin(rng):
            obj["apiVersion"] = api_version
        if complete or coin(rng):
            obj["kind"] = "Environment"
        if complete or coin(rng):
            obj["metadata"] = metadata(rng) if complete else maybe_metadata(rng)
            if complete:
                obj["metadata"]["name"] = rng.choice(["prod", "lab"])
        if complete or coin(rng):
            obj["spec"] = spec(rng) if complete else maybe_spec(rng)
            if complete and obj["spec"].get("release") is None \
                    and obj["spec"].get("components") is None:
                source = rng.choice(["release", "components"])
                obj["spec"][source] = components(rng) if source == "components" \
                    else rng.choice(["v2026.11.3", *JUNK])
        presence = rng.choice(["absent", "null", "object", "object", "object"])
        if presence != "absent":
            obj["status"] = status(rng) if presence == "object" else None
        return obj

    return Gen(build)


def is_complete(obj: Obj) -> bool:
    """§4: apiVersion, kind, metadata.name and a spec with release or components."""
    meta, spec = obj.get("metadata"), obj.get("spec")
    return (obj.get("apiVersion") is not None and obj.get("kind") is not None
            and isinstance(meta, dict) and meta.get("name") is not None
            and isinstance(spec, dict)
            and (spec.get("release") is not None or spec.get("components") is not None))


def reason_of(obj: Obj) -> Any:
    """The reason of the first UpToDate condition, or None."""
    status = obj.get("status")
    items = status.get("conditions") if isinstance(status, dict) else None
    for item in items if isinstance(items, list) else []:
        if isinstance(item, dict) and item.get("type") == "UpToDate":
            return item.get("reason")
    return None


# --- v1alpha2 objects (P1's domain) ------------------------------------------------------------

v2_spec = members({**SPEC_FIELDS, "forcePromote": V2_FORCE_PROMOTE})
v2_status = members({**STATUS_FIELDS, "lastCompletedRolloutHash": (None, hashes, hashes)})
v2_objects = envelope(V1ALPHA2, v2_spec, v2_status)


# --- v1alpha1 objects (P2's domain) -------------------------------------------------------------


v1_spec = members(SPEC_FIELDS)
v1_status = members(STATUS_FIELDS)
v1_envelope = envelope(V1ALPHA1, v1_spec, v1_status)


def native_v1_object(rng: random.Random) -> Obj:
    """A v1alpha1 object as a v1alpha1 controller and its clients write it; requests,
    forcePromote and completed requests are picked from the values that make the rows of §4.1
    differ."""
    obj: Obj = v1_envelope(rng)
    h = rollout_hash({**obj, "apiVersion": V1ALPHA1})
    spec = obj.get("spec")
    request: Any = None
    if isinstance(spec, dict):
        if coin(rng):
            request = (none | sampled("", NIL_UUID, uuid5_of(h)) | uuids)(rng)
            spec["requestRollout"] = request
        if coin(rng):
            spec["forcePromote"] = one_of(none, sampled(
                "", NIL_UUID, uuid5_of(h), h, *JUNK, *[request or ""] * 4), uuids)(rng)
    status = obj.get("status")
    if isinstance(status, dict):
        if coin(rng):
            status["lastCompletedRolloutHash"] = one_of(none, hashes, sampled(h))(rng)
        if coin(rng):
            candidates = [NIL_UUID, "", request or NIL_UUID]
            completed = status.get("lastCompletedRolloutHash")
            if isinstance(completed, str):
                candidates.append(uuid5_of(completed))
            status["lastCompletedRolloutRequest"] = one_of(none, sampled(*candidates),
                                                           uuids)(rng)
        if coin(rng):
            status["resourcesHash"] = (sampled("", h, "AB" * 32, *JUNK) | hashes)(rng)
    return obj


def from_v2_object(rng: random.Random) -> Obj:
    """A v1alpha2 object read as v1alpha1, sometimes with only requestRollout changed since."""
    obj = down(v2_objects(rng))
    spec = obj.get("spec")
    if isinstance(spec, dict) and coin(rng):
        spec["requestRollout"] = uuids(rng)
    return obj


v1_objects = Gen(native_v1_object) | Gen(from_v2_object)


# --- what the generated objects cover --------------------------------------------------------


def kinds_of(obj: Obj) -> set[str]:
    """The cases an object exercises, so that each test can assert its inputs reached them all."""
    kinds = {"complete" if is_complete(obj) else "partial"}
    status = obj.get("status")
    if status is None and "status" in obj:
        kinds.add("null status")
    if is_complete(obj) and isinstance(status, dict):
        kinds.add(f"reason {reason_of(obj)}")
        completed = status.get("lastCompletedRolloutHash")
        if isinstance(completed, str) \
                and status.get("lastCompletedRolloutRequest") == uuid5_of(completed):
            kinds.add("came from v1alpha2")
            if obj["spec"].get("requestRollout") != uuid5_of(rollout_hash(obj)):
                kinds.add("came from v1alpha2, request changed")
    spec = obj.get("spec")
    if isinstance(spec, dict):
        force = spec.get("forcePromote")
        if is_complete(obj) and force is not None and force == spec.get("requestRollout") \
                and force != uuid5_of(rollout_hash(obj)):
            kinds.add("forcePromote = native request")
        if spec.get("components") and any(isinstance(c, dict) and c.get("stateless") is True
                                          for c in spec["components"].values()):
            kinds.add("stateless component")
    if any(k.startswith("u") for k in obj) or (isinstance(spec, dict)
                                               and any(k.startswith("u") for k in spec)):
        kinds.add("unknown members")
    return kinds


COMMON_KINDS = {"complete", "partial", "null status", "stateless component", "unknown members",
                *(f"reason {r}" for r in [*REASONS, None])}


# --- P1–P4 over v1alpha2 objects -------------------------------------------------------------
# One test per direction checks every property on each object: 10,000 objects each way.


def check_every_object(objects: Callable[[random.Random], Obj],
                       *checks: Callable[[Obj], None]) -> Counter[str]:
    """Run `checks` on PER_EXAMPLE objects of each seeded example, and on no object changed by
    them (conversion is pure); the kinds of the objects seen, for the coverage assertions."""
    seen: Counter[str] = Counter()

    @EXAMPLES
    @given(seeds)
    def check(seed: int) -> None:
        rng = random.Random(seed)
        for _ in range(PER_EXAMPLE):
            x = objects(rng)
            note(x)
            seen.update(kinds_of(x))
            snapshot = copy.deepcopy(x)
            for one in checks:
                one(x)
            assert x == snapshot  # pure: the input is never modified

    check()
    return seen


def test_v1alpha2_objects_p1_p3_p4() -> None:
    seen = check_every_object(v2_objects, check_p1, check_p3_v1alpha2, check_p4_down)
    assert seen["complete"] + seen["partial"] >= 10_000
    assert not COMMON_KINDS - set(seen), COMMON_KINDS - set(seen)


def check_p1(x: Obj) -> None:
    """P1: up(down(X)) == X, absent ≠ null."""
    converted = down(x)
    if "apiVersion" in x:
        assert converted["apiVersion"] == V1ALPHA1
    assert up(converted) == x


def check_p3_v1alpha2(x: Obj) -> None:
    """P3: converting to the same version is the identity; converting twice is converting once."""
    assert up(x) == x
    assert down(down(x)) == down(x)
    if "apiVersion" in x:
        assert convert(x, V1ALPHA2) == x
        once = convert(x, V1ALPHA1)
        assert convert(once, V1ALPHA1) == once


def check_p4_down(x: Obj) -> None:
    """P4: rolloutHash(down(X)) == rolloutHash(X) (the hash reads the version, so X has one)."""
    x = {**x, "apiVersion": V1ALPHA2}
    assert rollout_hash(down(x)) == rollout_hash(x)


# --- P1–P4 over v1alpha1 objects -------------------------------------------------------------


def test_v1alpha1_objects_p2_p3_p4() -> None:
    seen = check_every_object(v1_objects, check_p2, check_p3_v1alpha1, check_p4_up)
    assert seen["complete"] + seen["partial"] >= 10_000
    expected = COMMON_KINDS | {"came from v1alpha2", "came from v1alpha2, request changed",
                               "forcePromote = native request"}
    assert not expected - set(seen), expected - set(seen)


V1_DERIVED_SPEC = ("requestRollout", "forcePromote")
V1_DERIVED_STATUS = ("lastCompletedRolloutRequest", "resourcesHash", "lastCompletedRolloutHash",
                     "requestedRolloutHash")


def _nil(value: Any) -> bool:
    return value is None or value in ("", NIL_UUID)


def without_derived(obj: Obj, status_members: tuple[str, ...]) -> Obj:
    """A copy without the derived spec members and the named status members."""
    out = copy.deepcopy(obj)
    if isinstance(out.get("spec"), dict):
        for name in V1_DERIVED_SPEC:
            out["spec"].pop(name, None)
    if isinstance(out.get("status"), dict):
        for name in status_members:
            out["status"].pop(name, None)
    return out


def at_rest(obj: Obj) -> bool:
    """v1alpha1: requestRollout equals a non-nil lastCompletedRolloutRequest."""
    completed = obj["status"].get("lastCompletedRolloutRequest")
    return not _nil(completed) and obj["spec"].get("requestRollout") == completed


def check_p2(y: Obj) -> None:
    """P2: down(up(Y)) keeps Y's non-derived members and its rollout state, but for the
    exceptions §4.4 lists."""
    back = down(up(y))
    complete = is_complete(y)
    # every non-derived member is kept (the round-trip members too, on partial objects)
    assert without_derived(back, V1_DERIVED_STATUS) == without_derived(y, V1_DERIVED_STATUS)
    if not complete:
        assert without_derived(back, V1_DERIVED_STATUS[:2]) == \
            without_derived(y, V1_DERIVED_STATUS[:2])
    # forcePromote: none becomes absent, a native request becomes H, anything else is kept
    spec = y.get("spec")
    if isinstance(spec, dict) and "forcePromote" in spec:
        force, request = spec["forcePromote"], spec.get("requestRollout")
        h = rollout_hash(y)
        if _nil(force):
            assert "forcePromote" not in back["spec"]
        elif complete and force == request and request != uuid5_of(h):
            assert back["spec"]["forcePromote"] == h
        else:
            assert back["spec"]["forcePromote"] == force
    if not complete or not isinstance(y.get("status"), dict):
        return
    # rollout state: at rest exactly when it was, but for the documented exceptions
    h = rollout_hash(y)
    status, reason = y["status"], reason_of(y)
    came_from_v2 = ("lastCompletedRolloutHash" in status
                    and status.get("lastCompletedRolloutRequest")
                    == (uuid5_of(status["lastCompletedRolloutHash"])
                        if isinstance(status["lastCompletedRolloutHash"], str) else NIL_UUID))
    assert back["spec"]["requestRollout"] == uuid5_of(h)
    if came_from_v2:  # requestRollout may have been changed since: at rest iff completed == H
        assert at_rest(back) == (status["lastCompletedRolloutHash"] == h)
    elif reason == "Promoting":  # D1 finishes the promotion whatever the request says
        assert back["status"]["lastCompletedRolloutRequest"] == NIL_UUID
    elif reason == "RolloutTimeout":  # comes back requested; D2a keeps it cancelled
        assert not at_rest(back)
        assert up(back)["status"]["requestedRolloutHash"] == h
    elif reason == "WaitingForApproval" and at_rest(y):  # becomes a request for its hash
        shown = status.get("resourcesHash")
        valid = isinstance(shown, str) and len(shown) == 64 and set(shown) <= set(HEX)
        assert at_rest(back) == (not valid or shown == h)
    else:
        assert at_rest(back) == at_rest(y)


def check_p3_v1alpha1(y: Obj) -> None:
    """P3 from v1alpha1."""
    if "apiVersion" in y:
        assert down(y) == y
        assert convert(y, V1ALPHA1) == y
        once = convert(y, V1ALPHA2)
        assert convert(once, V1ALPHA2) == once
    assert up(up(y)) == up(y)


def check_p4_up(y: Obj) -> None:
    """P4: rolloutHash(up(Y)) == rolloutHash(Y)."""
    y = {**y, "apiVersion": V1ALPHA1}
    assert rollout_hash(up(y)) == rollout_hash(y)
