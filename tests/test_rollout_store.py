"""The local Environment store keeps the API server's guarantees: generation on spec changes,
resourceVersion on every write, conditional writes, spec and status written separately."""

from __future__ import annotations

from pathlib import Path

import pytest

from lockstep.errors import NotFoundError
from lockstep.rollout.store import ConflictError, EnvironmentStore

OBJ = {"apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
       "metadata": {"name": "prod"}, "spec": {"release": "v2026.11.3"}}


def test_generation_grows_only_with_the_spec(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "rollouts.db")
    first = store.put(OBJ)
    assert (first.generation, first.resource_version) == (1, 1)
    same = store.put({**OBJ, "metadata": {"name": "prod", "generation": 9}})
    assert (same.generation, same.resource_version) == (1, 1), "client metadata is ignored"
    annotated = store.put({**OBJ, "metadata": {"name": "prod", "annotations": {"a": "b"}}})
    assert (annotated.generation, annotated.resource_version) == (1, 2)
    changed = store.put({**OBJ, "spec": {"release": "v2026.11.4"}})
    assert (changed.generation, changed.resource_version) == (2, 3)
    full = store.get("prod").full()
    assert full["metadata"]["generation"] == 2 and full["metadata"]["resourceVersion"] == "3"


def test_writes_are_conditional_on_the_resource_version(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "rollouts.db")
    stored = store.put(OBJ)
    status = {"activeGeneration": 0, "conditions": [
        {"type": "UpToDate", "status": "Unknown", "reason": "Applying",
         "message": "Applying changes for generation 1", "lastTransitionTime": "t0"}]}
    rv = store.write_status("prod", status, stored.resource_version)
    with pytest.raises(ConflictError):
        store.write_status("prod", status, stored.resource_version)  # stale read
    with pytest.raises(ConflictError):
        store.put({**OBJ, "spec": {"release": "v2026.11.5"}}, expected_rv=stored.resource_version)
    store.put({**OBJ, "spec": {"release": "v2026.11.5"}}, expected_rv=rv)
    assert store.get("prod").status == status, "a spec write keeps the status"
    # Only a changed condition (lastTransitionTime aside) is history.
    again = {**status, "conditions": [{**status["conditions"][0], "lastTransitionTime": "t1"}]}
    store.write_status("prod", again, store.get("prod").resource_version)
    assert [h["reason"] for h in store.history("prod")] == ["Applying"]


def test_unknown_environment(tmp_path: Path) -> None:
    store = EnvironmentStore(tmp_path / "rollouts.db")
    with pytest.raises(NotFoundError, match="no environment 'nope'"):
        store.get("nope")


def test_a_default_mode_controller_migrates_v1alpha1_objects(tmp_path: Path) -> None:
    """§4.6: at startup every object stored as v1alpha1 (left by a v1alpha1-mode controller) is
    rewritten as v1alpha2, spec and status in one write, metadata.generation unchanged."""
    from lockstep.rollout.controller import Controller, store_path
    from lockstep.rollout.convert import up
    from lockstep.rollout.hashing import rollout_hash

    store = EnvironmentStore(store_path(tmp_path))
    request = "0b6bd0c1-7f53-4a8e-9d55-1f7d1e6f2a10"
    old = {"apiVersion": "lockstep.dev/v1alpha1", "kind": "Environment",
           "metadata": {"name": "legacy"},
           "spec": {"components": {"db": {"image": "demo.local/demo/demo-service:1.0"}},
                    "requestRollout": request}}
    store.put(old)
    store.put({**old, "spec": {**old["spec"], "rolloutStrategy": "ManuallyPromote"}})
    h = rollout_hash(store.get("legacy").obj)
    rv = store.write_status("legacy", {
        "activeGeneration": 1, "lastCompletedRolloutRequest": request, "resourcesHash": h,
        "conditions": [{"type": "UpToDate", "status": "True", "reason": "Applied",
                        "message": "Successfully applied changes for generation 1",
                        "lastTransitionTime": "2026-11-30T00:00:00Z"}]}, 2)
    before = store.get("legacy")
    store.put({**old, "metadata": {"name": "current"}, "apiVersion": "lockstep.dev/v1alpha2",
               "spec": {k: v for k, v in old["spec"].items() if k != "requestRollout"}})

    controller = Controller.for_workspace(tmp_path)
    assert controller.migrate_storage() == ["legacy"]
    after = store.get("legacy")
    assert after.obj["apiVersion"] == "lockstep.dev/v1alpha2"
    assert after.generation == before.generation == 2
    assert after.resource_version == rv + 1
    assert after.full() | {"metadata": {}} == up(before.full()) | {"metadata": {}}
    assert after.status is not None
    assert after.status["lastCompletedRolloutHash"] == h
    assert store.get("current").resource_version == 1  # a v1alpha2 object is left alone
    assert controller.migrate_storage() == []  # idempotent
