"""Publishing distributions as OCI artifacts to a real registry on 127.0.0.1 (Debian's
docker-registry, Basic auth), pulled back and compared byte for byte with what was built."""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from lockstep.distribution import oci
from lockstep.registry.distribution import OCI_MANIFEST
from tests.dist_system import dist_rows, dist_system, events, set_dist_rules
from tests.infra import stop
from tests.infra.registry import PASSWORD, USER, Registry, put_manifest, running_registry
from tests.system import System

REPO = "lockstep/dist"


@pytest.fixture
def registry() -> Iterator[Registry]:
    """A registry with Basic auth, stopped afterwards."""
    with running_registry(auth="basic") as reg:
        yield reg


def _oci_system(tmp_path: Path, reg: Registry, monkeypatch: pytest.MonkeyPatch) -> System:
    monkeypatch.setenv("LOCKSTEP_TEST_REG_USER", USER)
    monkeypatch.setenv("LOCKSTEP_TEST_REG_PASSWORD", PASSWORD)
    system = dist_system(tmp_path)
    system.edit_config(lambda t: t.replace("timeout = 60\n\n[[notifiers]]", (
        f'timeout = 60\npublish = "oci"\nrepository = "{reg.host}/{REPO}"\n\n'
        f'[registries."{reg.host}"]\nscheme = "http"\n'
        'username_env = "LOCKSTEP_TEST_REG_USER"\n'
        'password_env = "LOCKSTEP_TEST_REG_PASSWORD"\n\n[[notifiers]]'), 1))
    set_dist_rules(system, {"copy_to": str(tmp_path / "built")})
    return system


def test_each_release_is_one_oci_artifact_pulled_back_byte_for_byte(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    system = _oci_system(tmp_path, registry, monkeypatch)
    system.submit("alpha", "v1.1.0")
    system.submit("beta", "v1.1.0")
    assert len(system.run_queue().landed) == 2
    rows = dist_rows(system)
    assert [r["state"] for r in rows] == ["published", "published"]
    with registry.admin(REPO) as c:
        for row in rows:
            tag = row["tag"]
            to = row["published_to"]
            assert to == {"kind": "oci", "reference": f"{registry.host}/{REPO}:{tag}",
                          "digest": to["digest"]}
            got = c.get(f"/v2/{REPO}/manifests/{tag}", headers={"Accept": OCI_MANIFEST})
            assert got.status_code == 200
            assert "sha256:" + hashlib.sha256(got.content).hexdigest() == to["digest"]
            manifest = json.loads(got.content)
            assert manifest["artifactType"] == oci.ARTIFACT_TYPE
            assert manifest["annotations"] == {oci.TAG_ANNOTATION: tag,
                                               oci.MANIFEST_ANNOTATION: row["manifest_digest"]}
            titles = {layer["annotations"][oci.TITLE]: layer for layer in manifest["layers"]}
            assert sorted(titles) == ["bundle.txt", "meta/release.json"]
            for path, layer in titles.items():
                blob = c.get(f"/v2/{REPO}/blobs/{layer['digest']}")
                assert blob.status_code == 200
                built = (tmp_path / "built" / tag / path).read_bytes()
                assert blob.content == built  # byte for byte what the command wrote
                recorded = next(a for a in row["artifacts"] if a["path"] == path)
                assert recorded["sha256"] == hashlib.sha256(built).hexdigest()
            proc = system.cli("dist", "verify", tag)
            assert proc.returncode == 0, proc.stderr
    assert not (system.ws_dir / ".lockstep" / "dist").exists()  # nothing went to a directory


def test_verify_catches_a_replaced_artifact(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    system = _oci_system(tmp_path, registry, monkeypatch)
    system.submit("gamma", "v1.2.0")
    system.run_queue()
    (row,) = dist_rows(system)
    with registry.admin(REPO) as c:
        manifest = json.loads(c.get(f"/v2/{REPO}/manifests/{row['tag']}",
                                    headers={"Accept": OCI_MANIFEST}).content)
        manifest["annotations"]["extra"] = "replaced"
        put_manifest(c, REPO, row["tag"], json.dumps(manifest).encode())
    proc = system.cli("dist", "verify", row["tag"])
    assert proc.returncode == 1
    assert "manifest: sha256:" in proc.stderr and "recorded" in proc.stderr


def test_kill_during_oci_publish_is_pushed_by_the_next_run(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    system = _oci_system(tmp_path, registry, monkeypatch)
    system.submit("alpha", "v1.2.0")
    worker = system.start_worker("--test-crash-at", "dist-during-publish")
    _, err = worker.communicate(timeout=120)
    assert worker.returncode == -9, err
    (row,) = dist_rows(system)
    assert row["state"] == "publishing" and row["published_to"] is None
    with registry.admin(REPO) as c:  # blobs pushed, the manifest not yet
        assert c.get(f"/v2/{REPO}/manifests/{row['tag']}",
                     headers={"Accept": OCI_MANIFEST}).status_code == 404
        for a in row["artifacts"]:
            assert c.head(f"/v2/{REPO}/blobs/sha256:{a['sha256']}").status_code == 200
    system.run_queue()
    (row,) = dist_rows(system)
    assert row["state"] == "published" and row["attempts"] == 1
    with registry.admin(REPO) as c:
        tags = c.get(f"/v2/{REPO}/tags/list").json()["tags"]
    assert tags == [row["tag"]]
    assert system.cli("dist", "verify", row["tag"]).returncode == 0


def test_an_unreachable_registry_is_retried_not_blamed(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    """The registry down while publishing is an infrastructure fault: the build is kept, the
    owners hear nothing, `queue run` waits for the backoff, and it publishes once back."""
    system = _oci_system(tmp_path, registry, monkeypatch)
    stop(registry.proc)
    system.submit("alpha", "v1.2.0")
    assert len(system.run_queue().landed) == 1
    (row,) = dist_rows(system)
    assert row["state"] == "built" and row["infra_tries"] == 1 and row["attempts"] == 1
    assert "RegistryUnreachableError" in row["error"]
    assert row["retry_at"] > time.time()
    assert events(system) == []  # not the release's fault: nobody is notified
    shown = system.cli("dist", "show", row["tag"])
    assert "infrastructure fault 1; `queue run` retries it from" in shown.stdout
    system.run_queue()  # before the backoff passed: left alone
    assert dist_rows(system) == [row]
    registry.start()
    proc = system.cli("dist", "build", row["tag"])
    assert proc.returncode == 0, proc.stderr
    (row,) = dist_rows(system)
    assert row["state"] == "published" and row["infra_tries"] == 0 and row["error"] is None
    assert row["attempts"] == 1  # published what was built, not rebuilt
    assert system.cli("dist", "verify", row["tag"]).returncode == 0
    assert events(system) == []


def test_infrastructure_faults_beyond_retries_fail_and_notify(
        tmp_path: Path, registry: Registry, monkeypatch: pytest.MonkeyPatch) -> None:
    system = _oci_system(tmp_path, registry, monkeypatch)
    system.edit_config(lambda t: t.replace('publish = "oci"\n',
                                           'publish = "oci"\nretries = 0\n', 1))
    stop(registry.proc)
    system.submit("beta", "v1.2.0")
    assert len(system.run_queue().landed) == 1
    (row,) = dist_rows(system)
    assert row["state"] == "failed" and row["error"].startswith("infrastructure fault: ")
    (event,) = events(system)
    assert event["tag"] == row["tag"] and "RegistryUnreachableError" in event["error"]
    set_dist_rules(system, {})  # the rebuild `dist build` does of a failed one copies nothing
    proc = system.cli("dist", "build", row["tag"])
    assert proc.returncode == 1
    assert proc.stderr.splitlines()[-1].startswith(
        f"error: distribution of {row['tag']} failed: infrastructure fault: ")
