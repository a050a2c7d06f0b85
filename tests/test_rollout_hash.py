"""The rollout hash (spec §3): golden vectors G1–G7 pinned forever (X1), the elision rules one by
one, and `lockstep rollout hash` run as a real process on files of both versions."""

from __future__ import annotations

import copy
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from lockstep.rollout.hashing import canonical_json, hashed_spec, rollout_hash, uuid5_of
from lockstep.rollout.resource import FORCE_ROLLOUT_ANNOTATION, V1ALPHA1, V1ALPHA2, dump
from tests.system import REPO_ROOT

G1: dict[str, Any] = {"release": "v2026.11.3"}
G2 = {**G1, "rolloutStrategy": "WaitUntilReady", "rolloutRequestTimeout": "24h",
      "forcePromote": "x", "forceRollout": None}
G4: dict[str, Any] = {
    "components": {
        "web": {"image": "example/web:3.2.0", "stateless": True},
        "api": {"image": "example/api:3.2.0", "args": ["--mode=prod"],
                "env": {"LOG_LEVEL": "info"}},
        "store": {"image": "example/store:3.2.0", "args": [], "stateless": False},
    },
    "rolloutStrategy": "ManuallyPromote",
    "forceRollout": "7d9b5c2e-3f1a-4b8e-9c6d-2a1e0f4b5c3d",
}
G5 = copy.deepcopy(G4)
G5["components"]["web"]["image"] = "example/web:3.3.0"
G6 = copy.deepcopy(G4)
G6["components"]["api"]["stateless"] = True
G7: dict[str, Any] = {"components": {"db": {"image": "example/db:1.0.0",
                                            "env": {"GREETING": "grüße\n"}}}}

G1_JSON = '{"release":"v2026.11.3"}'
G4_JSON = ('{"components":{"api":{"args":["--mode=prod"],"env":{"LOG_LEVEL":"info"},'
           '"image":"example/api:3.2.0"},"store":{"image":"example/store:3.2.0"}},'
           '"forceRollout":"7d9b5c2e-3f1a-4b8e-9c6d-2a1e0f4b5c3d","rolloutStrategy":"ManuallyPromote"}')
G6_JSON = ('{"components":{"store":{"image":"example/store:3.2.0"}},'
           '"forceRollout":"7d9b5c2e-3f1a-4b8e-9c6d-2a1e0f4b5c3d","rolloutStrategy":"ManuallyPromote"}')
G7_JSON = '{"components":{"db":{"env":{"GREETING":"grüße\\n"},"image":"example/db:1.0.0"}}}'

H1 = "d288113130c5f2e7e3c69396cfda7604a50624ba07204770d0978c6f78359565"
H3 = "aced8536401003d6700c769eb0dd7654b83545a18cb9b62663e2df39235ffe0f"
H4 = "2193ab2a9976554f8313d59be9390c27c66fd0a908ca915806620328339339eb"
H6 = "b98d252c864eddf7483640da2a0f3ed9b8b7e08991262d8f0dbb7455b9145481"
H7 = "bf978536ff01c618f826a6e624f52df7f016a73dbc5baa01042e0e077b05317a"

# id: (spec, annotation, canonical JSON, rolloutHash, uuid5(hash)) — spec §3.3, never changes.
GOLDEN = {
    "G1": (G1, None, G1_JSON, H1, "f5b05c4a-56a3-5696-83de-153d3b2e3631"),
    "G2": (G2, None, G1_JSON, H1, "f5b05c4a-56a3-5696-83de-153d3b2e3631"),
    "G3": (G1, "node-pool-upgrade-1", G1_JSON, H3, "3feace0b-5d01-5a82-902b-d674d5d00b50"),
    "G4": (G4, None, G4_JSON, H4, "a726ec52-cd2b-52ba-aeff-07a2f763713c"),
    "G5": (G5, None, G4_JSON, H4, "a726ec52-cd2b-52ba-aeff-07a2f763713c"),
    "G6": (G6, None, G6_JSON, H6, "1f2024c9-aada-56d3-aab7-525f31dc7d5a"),
    "G7": (G7, None, G7_JSON, H7, "d1ef1785-b805-5f52-85d2-c0462ad9ad84"),
}


def env(spec: Any, annotation: str | None = None, api: str = V1ALPHA2) -> dict[str, Any]:
    """A complete Environment around `spec`."""
    metadata: dict[str, Any] = {"name": "prod"}
    if annotation is not None:
        metadata["annotations"] = {FORCE_ROLLOUT_ANNOTATION: annotation}
    return {"apiVersion": api, "kind": "Environment", "metadata": metadata, "spec": spec}


@pytest.mark.parametrize("vector", GOLDEN)
def test_golden_vectors(vector: str) -> None:
    spec, annotation, canonical, h, uuid5 = GOLDEN[vector]
    obj = env(copy.deepcopy(spec), annotation)
    assert canonical_json(hashed_spec(obj)).decode("utf-8") == canonical
    assert rollout_hash(obj) == h
    assert uuid5_of(h) == uuid5
    assert obj["spec"] == spec  # hashing never mutates its input


@pytest.mark.parametrize("vector", GOLDEN)
def test_golden_vectors_in_v1alpha1_form(vector: str) -> None:
    """A v1alpha1 object is up-converted first: requestRollout and forcePromote never count."""
    spec, annotation, _canonical, h, _uuid5 = GOLDEN[vector]
    v1 = env({**copy.deepcopy(spec), "requestRollout": "0b0c5e4e-7a55-4f3a-a4c8-0f7a2f7d1b11",
              "forcePromote": "0b0c5e4e-7a55-4f3a-a4c8-0f7a2f7d1b11"}, annotation, V1ALPHA1)
    assert rollout_hash(v1) == h


def test_g4_with_members_reordered() -> None:
    """X1: key order is not part of the hash, at any depth."""
    reordered = {"forceRollout": G4["forceRollout"], "rolloutStrategy": "ManuallyPromote",
                 "components": {name: dict(reversed(list(c.items())))
                                for name, c in reversed(list(G4["components"].items()))}}
    assert json.dumps(reordered) != json.dumps(G4)
    obj = env(reordered)
    obj["metadata"] = {"labels": {"a": "b"}, "name": "prod"}
    assert rollout_hash(obj) == H4


def test_annotation_empty_is_absent_and_other_annotations_do_not_count() -> None:
    assert rollout_hash(env(G1, "")) == H1
    obj = env(G1)
    obj["metadata"]["annotations"] = {"other": "x"}
    assert rollout_hash(obj) == H1
    assert rollout_hash(env(G1, "node-pool-upgrade-1")) == H3


def test_defaults_compare_as_json_not_by_meaning() -> None:
    """`"1d"` means 24 h but is kept; `stateless: 0` or `args: {}` are not the defaults."""
    assert rollout_hash(env({**G1, "rolloutRequestTimeout": "1d"})) != H1
    store = {"image": "example/store:3.2.0"}
    base = rollout_hash(env({"components": {"store": store}}))
    for member, value in [("stateless", 0), ("args", {}), ("env", []), ("stateless", None),
                          ("args", None), ("env", {"A": None})]:
        spelled = rollout_hash(env({"components": {"store": {**store, member: value}}}))
        assert (spelled == base) == (value is None or value == {"A": None}), (member, value)
    # `stateless: 1` is not `true`: the entry stays in the hash
    kept = {"components": {"store": store, "web": {"image": "example/web:1", "stateless": 1}}}
    assert rollout_hash(env(kept)) != base


def test_nulls_removed_at_every_depth_but_array_elements_stay() -> None:
    spec = {"components": {"store": {"image": "s:1", "args": ["a", None],
                                     "x": [{"k": None, "j": 1}]}}, "forceRollout": None}
    assert canonical_json(hashed_spec(env(spec))) == (
        b'{"components":{"store":{"args":["a",null],"image":"s:1","x":[{"j":1}]}}}')


def test_every_input_that_must_count_does() -> None:
    """`release`, stateful components, strategy, timeout, forceRollout, the annotation."""
    hashes = {rollout_hash(env(G4))}
    variants = [
        {**G4, "rolloutStrategy": "WaitUntilReady"},
        {**G4, "rolloutRequestTimeout": "1h"},
        {**G4, "forceRollout": "11111111-2222-4333-8444-555555555555"},
        {**G4, "components": {**G4["components"], "store": {"image": "example/store:3.3.0"}}},
        {**G4, "components": {**G4["components"],
                              "api": {**G4["components"]["api"], "args": []}}},
    ]
    for variant in variants:
        hashes.add(rollout_hash(env(variant)))
    hashes.add(rollout_hash(env(G4, "x")))
    assert len(hashes) == len(variants) + 2


def test_missing_or_null_spec_hashes_as_empty() -> None:
    empty = rollout_hash(env({}))
    assert rollout_hash({"apiVersion": V1ALPHA2}) == empty
    assert rollout_hash(env(None)) == empty


# --- `lockstep rollout hash` as users run it -------------------------------------------------


def lockstep(*args: str, cwd: Path, stdin: str | None = None) -> subprocess.CompletedProcess[str]:
    """The real CLI in a subprocess."""
    environ = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    return subprocess.run([sys.executable, "-m", "lockstep", *args], cwd=cwd, env=environ,
                          capture_output=True, text=True, timeout=120, check=False,
                          input=stdin, stdin=None if stdin is not None else subprocess.DEVNULL)


def test_cli_hash_of_v1alpha1_file_equals_v1alpha2_file(tmp_path: Path) -> None:
    v2 = env(copy.deepcopy(G4), "node-pool-upgrade-1")
    v2["status"] = {"activeGeneration": 3}
    v1 = env({**copy.deepcopy(G4), "requestRollout": "0b0c5e4e-7a55-4f3a-a4c8-0f7a2f7d1b11"},
             "node-pool-upgrade-1", V1ALPHA1)
    (tmp_path / "v2.yaml").write_text(dump(v2, "yaml"))
    (tmp_path / "v1.json").write_text(dump(v1, "json"))
    first = lockstep("rollout", "hash", "v2.yaml", cwd=tmp_path)
    second = lockstep("rollout", "hash", "v1.json", cwd=tmp_path)
    assert first.returncode == 0 and second.returncode == 0, first.stderr + second.stderr
    assert first.stdout == second.stdout == rollout_hash(v2) + "\n"
    assert rollout_hash(v2) != H4  # the annotation is part of it
    shown = lockstep("rollout", "hash", "--json", "-", cwd=tmp_path, stdin=dump(v1, "yaml"))
    assert json.loads(shown.stdout) == {"apiVersion": V1ALPHA1, "rolloutHash": rollout_hash(v2),
                                        "requestRollout": uuid5_of(rollout_hash(v2))}


@pytest.mark.parametrize(("content", "expected"), [
    ("spec: [\n", "malformed YAML"),
    ('{"spec": ', "malformed JSON"),
    ("- a\n- b\n", "not an object"),
    ("a: 1\n---\nb: 2\n", "2 YAML documents"),
    ("apiVersion: lockstep.dev/v9\nkind: Environment\n", "apiVersion 'lockstep.dev/v9'"),
    ("apiVersion: v1\nkind: Pod\n", "kind 'Pod'"),
])
def test_cli_hash_rejects_malformed_files(tmp_path: Path, content: str, expected: str) -> None:
    (tmp_path / "bad.yaml").write_text(content)
    proc = lockstep("rollout", "hash", "bad.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stdout == ""
    assert proc.stderr.startswith("error: ") and proc.stderr.count("\n") == 1, proc.stderr
    assert expected in proc.stderr


def test_cli_hash_missing_file(tmp_path: Path) -> None:
    proc = lockstep("rollout", "hash", "nope.yaml", cwd=tmp_path)
    assert proc.returncode == 2
    assert proc.stderr == "error: nope.yaml: no such file (check the path)\n"
