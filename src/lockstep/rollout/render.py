"""The Kubernetes objects a Kubernetes driver applies for one generation of an Environment
(spec/rollouts.md §2.6): per stateful component a StatefulSet and a Service named
`<env>-<c>-<g>`, the stable Service `<env>-<c>` routed to the generation, and per stateless
component a Deployment and Service `<env>-<c>`. Pure: the same object, generation and (in
release mode) resolved release give the same objects."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from lockstep.errors import UsageError
from lockstep.release_config import transform_tag
from lockstep.rollout.convert import up
from lockstep.rollout.hashing import rollout_hash
from lockstep.rollout.resource import GROUP, validate

if TYPE_CHECKING:
    from lockstep.rollout.release_source import Release

INTERNAL_PORT = 6878  # the promotion protocol's listener (LOCKSTEP_INTERNAL_ADDR)
PUBLIC_PORT = 6875
STATUS_PATH = "/api/leader/status"


def _labels(env: str, component: str, generation: int | None) -> dict[str, str]:
    labels = {f"{GROUP}/environment": env, f"{GROUP}/component": component}
    if generation is not None:
        labels[f"{GROUP}/generation"] = str(generation)
    return labels


def _container(name: str, comp: dict[str, Any], generation: int | None) -> dict[str, Any]:
    env = [{"name": k, "value": v} for k, v in sorted((comp.get("env") or {}).items())]
    if generation is not None:
        env += [{"name": "LOCKSTEP_DEPLOY_GENERATION", "value": str(generation)},
                {"name": "LOCKSTEP_INTERNAL_ADDR", "value": f"0.0.0.0:{INTERNAL_PORT}"}]
    container: dict[str, Any] = {
        "name": name, "image": comp["image"], "args": list(comp.get("args") or []),
        "env": env,
        "ports": [{"name": "public", "containerPort": PUBLIC_PORT, "protocol": "TCP"}],
    }
    if generation is not None:
        container["ports"].append({"name": "internal", "containerPort": INTERNAL_PORT,
                                   "protocol": "TCP"})
        # Ready once the leader status answers at all; promotion reads the status itself.
        container["readinessProbe"] = {"httpGet": {"path": STATUS_PATH, "port": "internal"},
                                       "periodSeconds": 2}
    return container


def _service(name: str, namespace: str, labels: dict[str, str], selector: dict[str, str],
             internal: bool) -> dict[str, Any]:
    ports = [{"name": "public", "port": PUBLIC_PORT, "targetPort": "public", "protocol": "TCP"}]
    if internal:
        ports.append({"name": "internal", "port": INTERNAL_PORT, "targetPort": "internal",
                      "protocol": "TCP"})
    return {"apiVersion": "v1", "kind": "Service",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
            "spec": {"selector": dict(selector), "ports": ports}}


def release_components(release: Release) -> dict[str, dict[str, Any]]:
    """The deployed components of a resolved release as components-mode entries: the image
    pinned by the manifest's digest (else tagged with the version through its tag_transform),
    the deploy table's args and env plus LOCKSTEP_RELEASE, and `stateless`. On Kubernetes the
    image's own entrypoint runs; `deploy.command` is the local driver's."""
    out: dict[str, dict[str, Any]] = {}
    for name, comp in sorted(release.components.items()):
        spec = release.config.components.get(name) if release.config else None
        artifacts = spec.artifacts if spec is not None else ()
        if not artifacts:
            raise UsageError(f"component {name} of release {release.tag} names no image",
                             f"give [components.{name}] an image in lockstep.toml: a "
                             "Kubernetes workload runs one")
        first = artifacts[0]
        image = (f"{first.image}@{comp.pin.digest}" if comp.pin.digest else
                 f"{first.image}:{transform_tag(first.tag_transform, comp.pin.version)}")
        out[name] = {"image": image, "args": list(comp.deploy.args),
                     "env": dict(comp.deploy.env) | {"LOCKSTEP_RELEASE": release.tag},
                     "stateless": comp.deploy.stateless}
    return out


def render(obj: dict[str, Any], generation: int,
           release: Release | None = None) -> list[dict[str, Any]]:
    """The objects for `generation` of an Environment (either version); a release-mode one
    needs its release, resolved through the tag's frozen manifest."""
    if generation < 1:
        raise UsageError(f"generation {generation} is not a deploy generation",
                         "generations count from 1")
    validate(obj)
    v2 = up(obj)
    spec = v2["spec"]
    annotations = {f"{GROUP}/rollout-hash": rollout_hash(v2)}
    if "components" in spec:
        components = spec["components"]
    elif release is None or release.tag != spec.get("release"):
        raise UsageError("rendering a release-mode Environment needs its release's manifest",
                         "run it in the integration repo (-C DIR) that holds the release tag")
    else:
        components = release_components(release)
        annotations[f"{GROUP}/release"] = release.tag
    env = str(v2["metadata"]["name"])
    namespace = str(v2["metadata"].get("namespace") or "default")
    out: list[dict[str, Any]] = []
    for comp_name, comp in sorted(components.items()):
        if comp.get("stateless"):
            labels = _labels(env, comp_name, None)
            name = f"{env}-{comp_name}"
            out.append({
                "apiVersion": "apps/v1", "kind": "Deployment",
                "metadata": {"name": name, "namespace": namespace, "labels": dict(labels)},
                "spec": {"replicas": 1, "selector": {"matchLabels": dict(labels)},
                         "template": {"metadata": {"labels": dict(labels)},
                                      "spec": {"containers": [_container(comp_name, comp,
                                                                         None)]}}}})
            out.append(_service(name, namespace, labels, labels, internal=False))
            continue
        labels = _labels(env, comp_name, generation)
        name = f"{env}-{comp_name}-{generation}"
        out.append({
            "apiVersion": "apps/v1", "kind": "StatefulSet",
            "metadata": {"name": name, "namespace": namespace, "labels": dict(labels),
                         "annotations": dict(annotations)},
            "spec": {"replicas": 1, "serviceName": name,
                     "selector": {"matchLabels": dict(labels)},
                     "template": {"metadata": {"labels": dict(labels),
                                               "annotations": dict(annotations)},
                                  "spec": {"containers": [_container(comp_name, comp,
                                                                     generation)]}}}})
        # The generation's own Service: where the promotion calls go.
        out.append(_service(name, namespace, labels, labels, internal=True))
        # The stable endpoint, routed to this generation once it is promoted (Route(g)).
        out.append(_service(f"{env}-{comp_name}", namespace, _labels(env, comp_name, None),
                            labels, internal=False))
    return out


def promotion_targets(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Component → the URL the controller's promote call goes to, from rendered objects."""
    out: dict[str, str] = {}
    for o in objects:
        labels = o["metadata"]["labels"]
        if o["kind"] == "Service" and f"{GROUP}/generation" in labels:
            meta = o["metadata"]
            out[labels[f"{GROUP}/component"]] = (
                f"http://{meta['name']}.{meta['namespace']}.svc:{INTERNAL_PORT}"
                "/api/leader/promote")
    return out
