"""`lockstep serve` over real HTTP: every endpoint against a real queue system (real git
remotes, a real worker's results), its answers equal to the CLI's `--json`, and the auth and
bad-input answers (401, 403, 422 with the CLI's own messages)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest

from lockstep.distribution import journal as dist_journal
from lockstep.release.journal import Journal
from lockstep.rollout.store import EnvironmentStore
from lockstep.server import models
from tests.infra.serve import SECRET, TOKEN, Served, running_server, sign
from tests.system import System, isolated_git

ENV = {"apiVersion": "lockstep.dev/v1alpha2", "kind": "Environment",
       "metadata": {"name": "staging"}, "spec": {"release": "v2026.11.1"}}
APPLYING = {"activeGeneration": 0, "observedGeneration": 1,
            "requestedRolloutHash": "a" * 64, "conditions": [
                {"type": "UpToDate", "status": "Unknown", "reason": "Applying",
                 "message": "Applying changes for generation 1",
                 "lastTransitionTime": "2026-11-30T10:00:00Z"}]}
WRITES = [("POST", "/api/queue/items", {"component": "alpha", "version": "v1.3.0"}),
          ("POST", "/api/queue/items/q1/cancel", None), ("POST", "/api/queue/pause", {}),
          ("POST", "/api/queue/resume", {}), ("POST", "/api/queue/drain", None),
          ("POST", "/api/environments/staging/promote", None)]


@dataclass
class World:
    """The sample system with a landed, a rejected and a queued item, and the server."""

    system: System
    server: Served
    api: httpx.Client
    anon: httpx.Client
    ids: dict[str, str]

    @property
    def landed_tag(self) -> str:
        """The integration tag the landed item made (named after today's date)."""
        return str(self.cli_json("queue", "show", self.ids["landed"])["landed"]["tag"])

    def cli_json(self, *args: str) -> Any:
        proc = self.system.cli(*args, "--json")
        assert proc.returncode == 0, proc.stderr
        return json.loads(proc.stdout)


def seed_journals(system: System, tag: str) -> None:
    """A release cut and a distribution of the landed release `tag`, written with the journals'
    own functions (what `release cut` and `queue run` record), and an Environment mid-rollout."""
    state = system.ws_dir / ".lockstep"
    journal = Journal(state / "release.db")
    plan = {"version": "v1.0.0", "configuration": "default", "integration_tag": tag,
            "integration_commit": "c" * 40, "levels": [["alpha"]],
            "nodes": {"alpha": {"level": 0, "tag": "alpha-v1.0.0", "source": "d" * 40,
                                "artifacts": []}}}
    journal.begin("v1.0.0", "default", plan)
    journal.record("v1.0.0", "default", "alpha", "tag", "done", "run-1", {"tag": "alpha-v1.0.0"},
                   {"created": True})
    journal.finish("v1.0.0", "default", {"ok": False, "interrupted": None})
    store = system.store()
    dist_journal.ensure_tables(store)
    with store.tx() as c:
        dist_journal.add_pending(c, tag, 1, 1, "e" * 40)
        dist_journal.replace_artifacts(c, tag, [dist_journal.Artifact(
            "app.tar.gz", 10, "f" * 64)])
        dist_journal.set_state(c, tag, "published",
                               published_to=json.dumps({"kind": "dir", "path": "/srv/d"}))
    envs = EnvironmentStore(state / "rollouts.db")
    stored = envs.put(ENV)
    envs.write_status("staging", APPLYING, stored.resource_version)


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    with isolated_git(tmp_path_factory):
        tmp = tmp_path_factory.mktemp("serve-api")
        system = System.create(tmp / "sys", configurations=("default",))
        system.set_rules({"check": {"fail_if": [["beta", "v1.2.0"]], "exit": 3}})
        landed = system.submit("alpha", "v1.1.0").id
        rejected = system.submit("beta", "v1.2.0").id
        system.run_queue()
        queued = system.submit("gamma", "v1.1.0").id
        shown = json.loads(system.cli("queue", "show", landed, "--json").stdout)
        seed_journals(system, shown["landed"]["tag"])
        with running_server(system.ws_dir, tmp / "logs") as server, \
                server.client() as api, server.client(token=None) as anon:
            yield World(system, server, api, anon,
                        {"landed": landed, "rejected": rejected, "queued": queued})


def error_of(resp: httpx.Response, status: int) -> str:
    assert resp.status_code == status, (resp.status_code, resp.text)
    body = resp.json()
    assert set(body) >= {"error", "hint"}
    return str(body["error"])


def test_queue_status_is_the_cli_document(world: World) -> None:
    api = world.anon.get("/api/queue").json()
    assert api == world.cli_json("queue", "status")
    models.QueueStatus.model_validate(api)  # the documented schema holds the real document
    assert [i["id"] for i in api["items"]] == [world.ids["queued"]]
    assert api["items"][0]["wait_reason"] == "no-runner"
    assert {i["id"]: i["state"] for i in api["recent"]} == {
        world.ids["landed"]: "landed", world.ids["rejected"]: "rejected"}
    assert len(world.anon.get("/api/queue", params={"limit": 1}).json()["recent"]) == 1
    assert "limit" in error_of(world.anon.get("/api/queue", params={"limit": 0}), 422)


def test_item_detail_has_progress_log_and_the_cli_fields(world: World) -> None:
    rid = world.ids["rejected"]
    api = world.anon.get(f"/api/queue/items/{rid}").json()
    cli = world.cli_json("queue", "show", rid)
    models.ItemDetail.model_validate(api)
    assert {k: v for k, v in api.items() if k not in ("progress", "log_tail")} == cli
    default = next(p for p in api["progress"] if p["configuration"] == "default")
    assert [(s["stage"], s["state"]) for s in default["stages"]] == [
        ("build", "passed"), ("check", "failed"), ("deploy", "pending")]
    assert api["rejection"]["stage"] == "check" and api["rejection"]["exit_code"] == 3
    assert any("gate check" in line for line in api["log_tail"])
    landed = world.anon.get(f"/api/queue/items/{world.ids['landed']}").json()
    assert all(s["state"] == "passed" for p in landed["progress"] for s in p["stages"])
    assert landed["landed"]["tag"].startswith("v")


def test_item_logs_and_their_filters(world: World) -> None:
    rid = world.ids["rejected"]
    runs = world.anon.get(f"/api/queue/items/{rid}/logs", params={"stage": "check"}).json()
    assert [(r["stage"], r["state"]) for r in runs["runs"]] == [("check", "failed")]
    assert runs["runs"][0]["lines"][0].startswith("$ ")
    one = world.anon.get(f"/api/queue/items/{rid}/logs", params={"lines": 1}).json()
    assert all(len(r["lines"]) == 1 for r in one["runs"])
    assert "invalid stage name" in error_of(
        world.anon.get(f"/api/queue/items/{rid}/logs", params={"stage": "Bad!"}), 422)
    assert "unknown stage" in error_of(
        world.anon.get(f"/api/queue/items/{rid}/logs", params={"stage": "lint"}), 404)
    assert "does not target" in error_of(
        world.anon.get(f"/api/queue/items/{rid}/logs", params={"config": "nope"}), 404)


def test_unknown_and_malformed_item_ids(world: World) -> None:
    assert "invalid item id" in error_of(world.anon.get("/api/queue/items/x1"), 422)
    assert "q999" in error_of(world.anon.get("/api/queue/items/q999"), 404)


def test_integration_releases_with_manifest_and_diff(world: World) -> None:
    listed = world.anon.get("/api/releases").json()
    assert listed["total"] == 1
    rel = listed["releases"][0]
    assert [(c["configuration"], c["component"], c["old"]["version"], c["new"]["version"])
            for c in rel["changes"]] == [("default", "alpha", "v1.0.0", "v1.1.0")]
    detail = world.anon.get(f"/api/releases/{rel['tag']}").json()
    assert detail["manifest"]["default"]["alpha"]["version"] == "v1.1.0"
    assert detail["commit"] == world.system.remote_tags()[rel["tag"]]
    same = world.anon.get(f"/api/releases/{rel['tag']}",
                          params={"against": rel["tag"]}).json()
    assert same["changes"] == [] and same["against"] == rel["tag"]
    assert "no integration release" in error_of(world.anon.get("/api/releases/v1999.1.1"), 404)
    assert "invalid tag" in error_of(world.anon.get("/api/releases/-x"), 422)
    assert "limit" in error_of(world.anon.get("/api/releases", params={"limit": 0}), 422)


def test_release_cuts_and_their_journal(world: World) -> None:
    cuts = world.anon.get("/api/cuts").json()
    assert [(c["release"], c["configuration"], c["state"]) for c in cuts] == [
        ("v1.0.0", "default", "in progress")]
    detail = world.anon.get("/api/cuts/default/v1.0.0").json()
    assert detail["components"][0]["step"] == "tag"
    assert [(e["component"], e["step"], e["state"]) for e in detail["journal"]] == [
        ("alpha", "tag", "done")]
    assert "no release v9" in error_of(world.anon.get("/api/cuts/default/v9"), 404)
    assert "invalid configuration name" in error_of(world.anon.get("/api/cuts/BAD/v1"), 422)


def test_environments_status_history_and_promote(world: World) -> None:
    envs = world.anon.get("/api/environments").json()
    assert [(e["name"], e["pending"], e["condition"]["reason"]) for e in envs] == [
        ("staging", True, "Applying")]
    full = world.anon.get("/api/environments/staging").json()
    assert full == world.cli_json("rollout", "status", "staging")
    history = world.anon.get("/api/environments/staging/history").json()
    assert [h["reason"] for h in history] == ["Applying"]
    assert "no environment 'prod'" in error_of(world.anon.get("/api/environments/prod"), 404)
    assert "invalid environment name" in error_of(
        world.anon.get("/api/environments/Bad_Name"), 422)
    promoted = world.api.post("/api/environments/staging/promote")
    assert promoted.status_code == 200, promoted.text
    spec = world.anon.get("/api/environments/staging").json()["spec"]
    assert spec["forcePromote"] == "a" * 64


def test_distributions(world: World) -> None:
    dists = world.anon.get("/api/distributions").json()
    assert dists == world.cli_json("dist", "list")
    assert dists[0]["state"] == "published" and dists[0]["artifacts"][0]["path"] == "app.tar.gz"
    assert world.anon.get(f"/api/distributions/{world.landed_tag}").json() == dists[0]
    assert "no distribution" in error_of(world.anon.get("/api/distributions/v0.0.0"), 404)
    assert "invalid tag" in error_of(world.anon.get("/api/distributions/..x"), 422)


@pytest.mark.parametrize(("method", "path", "body"), WRITES)
def test_writes_need_the_right_token(world: World, method: str, path: str,
                                     body: dict[str, Any] | None) -> None:
    none = world.anon.request(method, path, json=body)
    assert "needs a token" in error_of(none, 401)
    assert none.headers["www-authenticate"].startswith("Bearer")
    malformed = world.anon.request(method, path, json=body,
                                   headers={"Authorization": "Basic dXNlcjpwdw=="})
    assert "malformed" in error_of(malformed, 401)
    wrong = world.anon.request(method, path, json=body,
                               headers={"Authorization": "Bearer not-the-token-at-all"})
    assert "wrong token" in error_of(wrong, 403)


@pytest.mark.parametrize(("body", "message"), [
    ({"component": "Alpha!", "version": "v1.3.0"}, "component: invalid component name"),
    ({"component": "alpha", "version": "-rf"}, "version: invalid version"),
    ({"component": "alpha", "version": "v1.3.0", "configurations": ["x y"]},
     "invalid configuration name"),
    ({"component": "alpha", "version": "v1.3.0", "priority": 5000}, "priority"),
    ({"component": "alpha"}, "version: required field is missing"),
    ({"component": "alpha", "version": "v1.3.0", "force": True}, "force"),
])
def test_bad_submissions_are_422_with_the_cli_message(world: World, body: dict[str, Any],
                                                      message: str) -> None:
    assert message in error_of(world.api.post("/api/queue/items", json=body), 422)


def test_submit_cancel_pause_resume(world: World) -> None:
    assert "unknown component 'delta'" in error_of(world.api.post(
        "/api/queue/items", json={"component": "delta", "version": "v1.0.0"}), 404)
    assert "has no tag" in error_of(world.api.post(
        "/api/queue/items", json={"component": "beta", "version": "v9.9.9"}), 404)
    made = world.api.post("/api/queue/items", json={"component": "beta", "version": "v1.3.0",
                                                    "configurations": ["default"], "priority": 5})
    assert made.status_code == 201, made.text
    item = made.json()
    assert (item["state"], item["configurations"], item["sha"]) == (
        "queued", ["default"], world.system.shas[("beta", "v1.3.0")])
    assert item["id"] in [i["id"] for i in world.anon.get("/api/queue").json()["items"]]
    cancelled = world.api.post(f"/api/queue/items/{item['id']}/cancel").json()
    assert cancelled["state"] == "cancelled" and cancelled["cancelled"]["by"] == "api"
    assert "already landed" in error_of(
        world.api.post(f"/api/queue/items/{world.ids['landed']}/cancel"), 409)
    paused = world.api.post("/api/queue/pause", json={"abort_running": True}).json()
    assert paused == {"paused": True, "aborted": []}
    assert world.anon.get("/api/queue").json()["queue"]["state"] == "paused"
    assert world.api.post("/api/queue/drain").json() == {"draining": False,
                                                         "already_paused": "user"}
    assert "not paused for rewritten history" in error_of(
        world.api.post("/api/queue/resume", json={"accept_history": True}), 422)
    assert world.api.post("/api/queue/resume").json() == {"resumed": True,
                                                          "accepted_lost_commit": None}
    assert world.anon.get("/api/queue").json()["queue"]["state"] == "waiting"
    assert error_of(world.api.post("/api/queue/pause", json={"x": 1}), 422).startswith("x: ")


def test_signed_submissions_from_component_ci(world: World) -> None:
    body = json.dumps({"component": "gamma", "version": "v1.2.0"}).encode()
    url = "/webhooks/submissions"
    assert "missing" in error_of(world.anon.post(url, content=body), 401)
    assert "malformed" in error_of(world.anon.post(
        url, content=body, headers={"X-Lockstep-Signature": "md5=abc"}), 401)
    assert "does not match" in error_of(world.anon.post(
        url, content=body, headers={"X-Lockstep-Signature": sign(body, SECRET + "x")}), 403)
    tampered = body.replace(b"v1.2.0", b"v1.3.0")
    assert "does not match" in error_of(world.anon.post(
        url, content=tampered, headers={"X-Lockstep-Signature": sign(body)}), 403)
    ok = world.anon.post(url, content=body, headers={"X-Lockstep-Signature": sign(body)})
    assert ok.status_code == 201, ok.text
    assert (ok.json()["component"], ok.json()["state"]) == ("gamma", "queued")
    assert ok.json()["id"] in [i["id"] for i in world.anon.get("/api/queue").json()["items"]]
    bad = json.dumps({"component": "gamma", "version": "v 1"}).encode()
    assert "invalid version" in error_of(world.anon.post(
        url, content=bad, headers={"X-Lockstep-Signature": sign(bad)}), 422)
    junk = b"not json"
    assert error_of(world.anon.post(url, content=junk,
                                    headers={"X-Lockstep-Signature": sign(junk)}), 422)


def test_openapi_lists_every_endpoint(world: World) -> None:
    schema = world.anon.get("/openapi.json").json()
    assert set(schema["paths"]) >= {
        "/api/queue", "/api/queue/items", "/api/queue/items/{item}",
        "/api/queue/items/{item}/logs", "/api/queue/items/{item}/cancel", "/api/queue/pause",
        "/api/queue/resume", "/api/queue/drain", "/api/releases", "/api/releases/{tag}",
        "/api/cuts", "/api/cuts/{configuration}/{version}", "/api/environments",
        "/api/environments/{name}", "/api/environments/{name}/history",
        "/api/environments/{name}/promote", "/api/distributions", "/api/distributions/{tag}",
        "/webhooks/registry/{registry}", "/webhooks/submissions", "/api/overview",
        "/api/webhooks/registry"}
    page = world.anon.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    assert "default-src 'self'" in page.headers["content-security-policy"]
    assert world.anon.get("/static/app.js").status_code == 200
    assert world.anon.get("/static/../app.py").status_code == 404


def test_secrets_never_reach_the_log(world: World) -> None:
    world.anon.get("/api/queue", params={"token": TOKEN})
    world.anon.get("/api/queue", headers={"Authorization": f"Bearer {TOKEN}"})
    log = world.server.log_text()
    assert "GET /api/queue?token=*** HTTP/1.1" in log, log[-2000:]
    assert TOKEN not in log and SECRET not in log


def test_registry_notifications_without_a_release_wait(world: World) -> None:
    envelope = json.dumps({"events": [{"action": "push", "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json", "repository": "team/app",
        "tag": "1.0"}}]}).encode()
    headers = {"Content-Type": "application/vnd.docker.distribution.events.v1+json"}
    url = "/webhooks/registry/reg.example:5000"
    assert "without a token" in error_of(world.anon.post(url, content=envelope,
                                                         headers=headers), 401)
    assert "wrong" in error_of(world.anon.post(url, content=envelope, headers={
        **headers, "Authorization": "Bearer nope"}), 403)
    ok = world.api.post(url, content=envelope, headers=headers)
    assert ok.status_code == 200 and ok.json() == {"received": 1}
    junk = world.api.post(url, content=b"{not json", headers=headers)
    assert junk.status_code == 200 and junk.json() == {"received": 0}
    events = world.anon.get("/api/webhooks/registry").json()
    assert [(e["registry"], e["repository"], e["tag"]) for e in events] == [
        ("reg.example:5000", "team/app", "1.0")]
    assert events[0]["relayed"].startswith("not relayed")


def test_the_overview_shows_each_release_distribution(world: World) -> None:
    """The page's document names each shown release's recorded distribution, as `dist list`."""
    overview = world.api.get("/api/overview").json()
    tags = [r["tag"] for r in overview["releases"]["releases"]]
    assert world.landed_tag in tags
    listed = {d["tag"]: d for d in world.cli_json("dist", "list")}
    assert overview["distributions"] == {
        tag: {"state": d["state"], "artifacts": len(d["artifacts"]), "error": d["error"],
              "published_to": d["published_to"]} for tag, d in listed.items() if tag in tags}
    assert overview["distributions"][world.landed_tag]["state"] == "published"


def test_the_overview_shows_recent_cuts_with_their_steps(world: World) -> None:
    """The page's document lists the newest release cuts as `release status` does, with each
    component's journal steps."""
    cuts = world.anon.get("/api/overview").json()["cuts"]
    assert [(c["release"], c["configuration"], c["state"]) for c in cuts] == [
        ("v1.0.0", "default", "in progress")]
    assert [(s["step"], s["state"]) for s in cuts[0]["components"][0]["steps"]] == [
        ("tag", "done")]
    assert len(world.anon.get("/api/overview", params={"cuts": 1}).json()["cuts"]) == 1
    assert "cuts" in error_of(world.anon.get("/api/overview", params={"cuts": 0}), 422)
