"""Every Kubernetes object docs/kubernetes.md tells a user to apply is valid, and the operator's
ClusterRole grants what its driver does with the objects `rollout render --kubernetes` prints."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
from ruamel.yaml import YAML

from lockstep.rollout.render import render

DOC = Path(__file__).resolve().parents[1] / "docs" / "kubernetes.md"
K8S = kubernetes_validate.latest_version()
# Objects of other projects' CRDs, which the Kubernetes schemas do not know.
FOREIGN = {"cert-manager.io/v1"}
# Verbs the driver needs on every kind it renders (apply, observe, teardown).
DRIVER_VERBS = {"get", "list", "watch", "create", "patch", "delete"}


def doc_objects() -> list[dict[str, Any]]:
    """Every object of every ```yaml block of the page."""
    yaml = YAML(typ="safe")
    blocks = re.findall(r"```yaml\n(.*?)```", DOC.read_text(encoding="utf-8"), re.S)
    objects = []
    for block in blocks:
        objects += [o for o in yaml.load_all(io.StringIO(_dedent(block))) if o]
    return objects


def _dedent(block: str) -> str:
    """Blocks inside a numbered list are indented; YAML wants them at column 0."""
    lines = block.splitlines()
    indent = min((len(ln) - len(ln.lstrip()) for ln in lines if ln.strip()), default=0)
    return "\n".join(ln[indent:] for ln in lines)


def test_the_page_has_the_install_objects() -> None:
    kinds = sorted({o["kind"] for o in doc_objects()})
    assert kinds == ["Certificate", "ClusterRole", "ClusterRoleBinding", "Deployment", "Role",
                     "RoleBinding", "Service", "ServiceAccount"]


@pytest.mark.parametrize("obj", doc_objects(), ids=lambda o: f"{o['kind']}-{o['metadata']['name']}")
def test_each_object_is_a_valid_kubernetes_object(obj: dict[str, Any]) -> None:
    if obj["apiVersion"] in FOREIGN:
        assert set(obj) == {"apiVersion", "kind", "metadata", "spec"}
        return
    kubernetes_validate.validate(obj, K8S, strict=True)


def test_the_operator_may_do_what_the_driver_does_with_rendered_objects() -> None:
    role = next(o for o in doc_objects() if o["kind"] == "ClusterRole")
    granted: dict[tuple[str, str], set[str]] = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                granted.setdefault((group, resource), set()).update(rule["verbs"])
    env = {"apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
           "metadata": {"name": "shop", "namespace": "prod"},
           "spec": {"components": {"db": {"image": "registry.example.com/acme/db:1"},
                                   "web": {"image": "registry.example.com/acme/web:1",
                                           "stateless": True}}}}
    for obj in render(env, 2):
        group = obj["apiVersion"].rpartition("/")[0]
        resource = obj["kind"].lower() + "s"
        assert granted.get((group, resource), set()) >= DRIVER_VERBS, (group, resource)
    assert {"update"} <= granted[("lockstep.dev", "environments/status")]
    assert {"update"} <= granted[("lockstep.dev", "environments/finalizers")]
    lease_role = next(o for o in doc_objects() if o["kind"] == "Role")
    assert lease_role["rules"][0]["resources"] == ["leases"]
