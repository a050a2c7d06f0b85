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
