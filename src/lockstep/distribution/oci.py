"""Publishing a distribution as one OCI artifact, and reading it back to verify it.

One image manifest per release (artifactType below, the empty config, one layer per file titled
with its path) pushed under the integration tag, through lockstep's registry client (the same
settings, credentials, CA and token handling as release waits). The manifest carries no time,
so pushing the same release again gives the same digest: a publish killed half way is simply
pushed again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

from lockstep import faults, imageref
from lockstep.distribution.journal import Artifact
from lockstep.errors import RegistryAuthError, RegistryError, RegistryUnreachableError
from lockstep.registry.distribution import OCI_MANIFEST, DistributionSource, registry_key
from lockstep.workspace import Workspace

ARTIFACT_TYPE = "application/vnd.lockstep.distribution.v1"
EMPTY_TYPE = "application/vnd.oci.empty.v1+json"
EMPTY = b"{}"
LAYER_TYPE = "application/octet-stream"
TITLE = "org.opencontainers.image.title"
TAG_ANNOTATION = "dev.lockstep.integration.tag"
MANIFEST_ANNOTATION = "dev.lockstep.integration.manifest.digest"


class Pusher(DistributionSource):
    """The registry client, with the writes the distribution API offers: blob uploads and
    manifest puts, each authorised like the client's reads."""

    def send(self, method: str, url: str, repository: str, *, headers: dict[str, str],
             content: bytes | None = None) -> httpx.Response:
        """One request with the client's authorisation rounds (no redirects: the registry
        answers uploads with a Location the caller follows)."""
        for _ in range(4):
            authorization, sent = self.auth.authorization(repository, url)
            hdrs = dict(headers)
            if authorization is not None:
                hdrs["Authorization"] = authorization
            try:
                response = self._client.request(method, url, headers=hdrs, content=content)
            except httpx.HTTPError as exc:
                raise RegistryUnreachableError(
                    f"{self.settings.host}: {type(exc).__name__}: {exc}",
                    "check that the registry is reachable") from None
            if response.status_code != 401:
                return response
            self.auth.unauthorized(response, repository, sent)
        raise RegistryAuthError(f"{self.settings.host} keeps answering 401",
                                "check the credentials and the token service")

    def push_blob(self, repository: str, data: bytes) -> str:
        """Upload one blob unless the registry has it; its digest."""
        digest = "sha256:" + hashlib.sha256(data).hexdigest()
        base = f"{self.settings.base_url}/v2/{repository}/blobs"
        if self.send("HEAD", f"{base}/{digest}", repository, headers={}).status_code == 200:
            return digest
        started = self.send("POST", f"{base}/uploads/", repository, headers={})
        _expect(started, 202, "start a blob upload")
        location = str(httpx.URL(self.settings.base_url).join(started.headers["location"]))
        sep = "&" if "?" in location else "?"
        done = self.send("PUT", f"{location}{sep}digest={digest}", repository,
                         headers={"Content-Type": LAYER_TYPE}, content=data)
        _expect(done, 201, "upload a blob")
        return digest

    def put_manifest(self, repository: str, tag: str, body: bytes) -> str:
        """PUT an image manifest under tag; its digest."""
        url = self.manifest_url(repository, tag)
        _expect(self.send("PUT", url, repository, headers={"Content-Type": OCI_MANIFEST},
                          content=body), 201, "push the manifest")
        return "sha256:" + hashlib.sha256(body).hexdigest()

    def get(self, repository: str, path: str, accept: str = "*/*") -> bytes:
        """GET `/v2/<repository>/<path>` (a manifest or a blob); its body."""
        url = f"{self.settings.base_url}/v2/{repository}/{path}"
        response = self.send("GET", url, repository, headers={"Accept": accept})
        _expect(response, 200, f"read {path}")
        return response.content


def _expect(response: httpx.Response, status: int, what: str) -> None:
    if response.status_code >= 500:
        raise RegistryUnreachableError(f"the registry failed to {what}: "
                                       f"{response.status_code} {response.text[:200].strip()}",
                                       "see the registry's log; a later try may work")
    if response.status_code != status:
        raise RegistryError(f"the registry did not {what}: {response.status_code} "
                            f"{response.text[:200].strip()}", "see the registry's log")


def pusher(ws: Workspace) -> tuple[Pusher, str]:
    """The client for `[distribution] repository` (with `[registries]` settings), and the
    repository name in that registry."""
    from lockstep.release.artifacts import Artifacts

    reference = ws.config.distribution.repository
    assert reference is not None
    registry, repository = registry_key(reference)
    source = Artifacts(ws.config, ws.root).source(registry)
    if not isinstance(source, DistributionSource):
        raise RegistryError(f"registry {registry} is an OCI layout directory",
                            "a distribution is pushed to a registry's API")
    return Pusher(source.settings), repository


def manifest_body(tag: str, manifest_digest: str, layers: list[dict[str, Any]]) -> bytes:
    """The artifact's image manifest (deterministic: no time in it)."""
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST, "artifactType": ARTIFACT_TYPE,
        "config": {"mediaType": EMPTY_TYPE, "digest": "sha256:" + hashlib.sha256(
            EMPTY).hexdigest(), "size": len(EMPTY)},
        "layers": layers,
        "annotations": {TAG_ANNOTATION: tag, MANIFEST_ANNOTATION: manifest_digest},
    }, sort_keys=True, separators=(",", ":")).encode()


def publish(ws: Workspace, tag: str, built: Path, found: list[Artifact],
            manifest_digest: str) -> dict[str, Any]:
    """Push tag's files as one OCI artifact; returns where, for the record."""
    if not imageref.image_tag_valid(tag):
        raise RegistryError(f"{tag!r} is not a valid OCI tag", "use a tag_format giving one")
    client, repository = pusher(ws)
    with client:
        client.push_blob(repository, EMPTY)
        layers = []
        for a in found:
            digest = client.push_blob(repository, (built / a.path).read_bytes())
            layers.append({"mediaType": LAYER_TYPE, "digest": digest, "size": a.size,
                           "annotations": {TITLE: a.path}})
        faults.crashpoint("dist-during-publish")
        digest = client.put_manifest(repository, tag,
                                     manifest_body(tag, manifest_digest, layers))
    return {"kind": "oci", "reference": f"{client.settings.host}/{repository}:{tag}",
            "digest": digest}


def pull(ws: Workspace, tag: str,
         each: Callable[[str, bytes], None]) -> tuple[str, dict[str, Any]]:
    """Read tag's artifact back: calls each(path, data) per layer; returns the manifest's
    digest and the manifest."""
    client, repository = pusher(ws)
    with client:
        body = client.get(repository, f"manifests/{tag}", OCI_MANIFEST)
        manifest: dict[str, Any] = json.loads(body)
        for layer in manifest.get("layers", []):
            each(layer.get("annotations", {}).get(TITLE, layer["digest"]),
                 client.get(repository, f"blobs/{layer['digest']}"))
    return "sha256:" + hashlib.sha256(body).hexdigest(), manifest


def mismatches(ws: Workspace, tag: str, recorded_digest: str,
               found: list[Artifact]) -> list[str]:
    """One line per recorded file the pulled artifact lacks or holds with another digest."""
    got: dict[str, str] = {}
    digest, _ = pull(ws, tag, lambda path, data: got.__setitem__(
        path, hashlib.sha256(data).hexdigest()))
    problems = []
    if digest != recorded_digest:
        problems.append(f"manifest: {digest}, recorded {recorded_digest}")
    for a in found:
        if a.path not in got:
            problems.append(f"{a.path}: missing from the artifact")
        elif got[a.path] != a.sha256:
            problems.append(f"{a.path}: sha256 {got[a.path]}, recorded {a.sha256}")
    return problems
