"""`lockstep rollout render --kubernetes`: the objects of one generation, valid Kubernetes
objects (checked against the Kubernetes schemas), named and labelled as spec §2.6 says."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest

from lockstep.errors import UsageError
from lockstep.rollout.hashing import rollout_hash
from lockstep.rollout.render import promotion_targets, render

K8S = kubernetes_validate.latest_version()
ENV: dict[str, Any] = {
    "apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
    "metadata": {"name": "shop", "namespace": "prod"},
    "spec": {"components": {
        "db": {"image": "registry.example.com/acme/db:1.2", "args": ["--mode=prod"],
               "env": {"LOG": "info"}},
        "web": {"image": "registry.example.com/acme/web:3.0", "stateless": True}}},
}


def test_objects_of_a_generation_are_valid_kubernetes_objects() -> None:
    objects = render(ENV, 4)
    for obj in objects:
        kubernetes_validate.validate(obj, K8S, strict=True)
    names = [(o["kind"], o["metadata"]["name"]) for o in objects]
    assert names == [("StatefulSet", "shop-db-4"), ("Service", "shop-db-4"),
                     ("Service", "shop-db"), ("Deployment", "shop-web"),
                     ("Service", "shop-web")]
    sts = objects[0]
    assert sts["metadata"]["labels"] == {"lockstep.dev/environment": "shop",
                                         "lockstep.dev/component": "db",
                                         "lockstep.dev/generation": "4"}
    assert sts["metadata"]["annotations"]["lockstep.dev/rollout-hash"] == rollout_hash(ENV)
    env = {e["name"]: e["value"] for e in sts["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert env == {"LOG": "info", "LOCKSTEP_DEPLOY_GENERATION": "4",
                   "LOCKSTEP_INTERNAL_ADDR": "0.0.0.0:6878"}
    # The stable endpoint routes to this generation; the stateless one has no generation.
    assert objects[2]["spec"]["selector"]["lockstep.dev/generation"] == "4"
    assert "lockstep.dev/generation" not in objects[3]["metadata"]["labels"]
    assert promotion_targets(objects) == {
        "db": "http://shop-db-4.prod.svc:6878/api/leader/promote"}


def test_the_validator_catches_a_broken_object() -> None:
    broken = render(ENV, 1)[0]
    broken["spec"]["replicas"] = "one"
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, K8S, strict=True)


def test_a_v1alpha1_object_renders_like_its_v1alpha2_form() -> None:
    v1 = {**ENV, "apiVersion": "lockstep.dev/v1alpha1"}
    assert render(v1, 2) == render(ENV, 2)


def test_release_mode_and_bad_generations_are_usage_errors() -> None:
    with pytest.raises(UsageError, match="release's manifest"):
        render({**ENV, "spec": {"release": "v2026.11.3"}}, 1)
    with pytest.raises(UsageError, match="generation 0 is not a deploy generation"):
        render(ENV, 0)


def test_cli(tmp_path: Path) -> None:
    path = tmp_path / "env.json"
    path.write_text(json.dumps(ENV))
    run = [sys.executable, "-m", "lockstep", "rollout", "render", str(path)]
    done = subprocess.run([*run, "--kubernetes", "--generation", "3", "--json"],
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["items"] == render(ENV, 3)
    missing = subprocess.run(run, capture_output=True, text=True, timeout=60)
    assert missing.returncode == 2 and "add --kubernetes" in missing.stderr
