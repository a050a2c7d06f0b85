"""Q1: five submissions over three components, one failing at the middle stage, real remotes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from lockstep.queue.notify import verify
from tests import webhook
from tests.system import System, sh

SECRET = "s3cret-for-tests"


@pytest.fixture
def listener():  # type: ignore[no-untyped-def]
    lst = webhook.start()
    yield lst
    lst.stop()


def test_five_submissions_one_rejected(tmp_path: Path, listener: webhook.Listener,
                                       monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("LOCKSTEP_TEST_SECRET", SECRET)
    notifier = (f'[[notifiers]]\nname = "hook"\ntype = "webhook"\nurl = "{listener.url}"\n'
                'secret_env = "LOCKSTEP_TEST_SECRET"\nevents = ["rejected"]\n')
    system = System.create(tmp_path, extra_config=notifier)
    system.set_rules({"check": {"fail_if": [["beta", "v1.2.0"]], "exit": 3}})
    start_head = system.remote_head()
    bumps = [("alpha", "v1.1.0"), ("beta", "v1.1.0"), ("beta", "v1.2.0"), ("gamma", "v1.1.0"),
             ("alpha", "v1.2.0")]
    ids = [system.submit(c, v).id for c, v in bumps]
    report = system.run_queue()

    assert report.landed == [ids[0], ids[1], ids[3], ids[4]]
    assert report.rejected == [ids[2]]
    tags = system.remote_tags()
    assert len(tags) == 4
    # Each tag is one commit on the branch, whose manifest is its parent's plus exactly one bump.
    landed_bumps = [b for i, b in enumerate(bumps) if i != 2]
    tag_names = sorted(tags, key=lambda t: int(t.rsplit(".", 1)[1]))
    assert system.commits() == [*(tags[n] for n in reversed(tag_names)), start_head]
    for name, (component, version) in zip(tag_names, landed_bumps, strict=True):
        commit = tags[name]
        after = system.manifest_at(commit)
        before = system.manifest_at(system.parent(commit))
        changed = [(cfg, comp) for cfg in after for comp in after[cfg]
                   if after[cfg][comp] != before[cfg][comp]]
        assert changed == [("default", component), ("edge", component)], name
        assert after["default"][component]["version"] == version
        assert after["default"][component]["sha"] == system.shas[(component, version)]
    # The rejected bump is in no tag.
    bad_sha = system.shas[("beta", "v1.2.0")]
    for commit in tags.values():
        for cfg in system.manifest_at(commit).values():
            assert cfg["beta"]["sha"] != bad_sha
    # Stage 3 never ran for it, and it failed in its first configuration.
    runs = [r for r in system.gate_runs() if r["item"] == ids[2]]
    assert [(r["stage"], r["config"]) for r in runs] == [("build", "default"),
                                                         ("check", "default")]
    rejected = system.item(ids[2])
    assert rejected.outcome is not None
    assert rejected.outcome["kind"] == "stage-failed"
    assert rejected.outcome["stage"] == "check" and rejected.outcome["exit_code"] == 3
    assert any("known bad" in line for line in rejected.outcome["log_tail"])
    # The signed webhook reached the listener on 127.0.0.1.
    assert len(listener.deliveries) == 1
    delivery = listener.deliveries[0]
    assert verify(SECRET.encode(), delivery.body, delivery.headers["x-lockstep-signature"])
    assert not verify(b"wrong", delivery.body, delivery.headers["x-lockstep-signature"])
    payload = json.loads(delivery.body)
    assert payload["event"] == "rejected" and payload["item"] == ids[2]
    assert payload["owners"] == ["beta@example.com"]
    assert payload["delivery"] == delivery.headers["x-lockstep-delivery"]
    assert delivery.headers["x-lockstep-event"] == "rejected"


def test_stage_workspace_has_candidate_and_components(system: System) -> None:
    system.submit("gamma", "v1.3.0")
    system.run_queue()
    runs = system.gate_runs()
    assert runs, "no stage ran"
    for run in runs:
        assert run["components"] == ["alpha", "beta", "gamma"]
        assert run["pins"]["gamma"] == "v1.3.0"
        assert run["item"] == "q1"
    assert {r["config"] for r in runs} == {"default", "edge"}
    tag = next(iter(system.remote_tags().values()))
    assert system.tree_of(tag) == runs[0]["candidate"]


def test_workspace_checkout_follows_landings(system: System) -> None:
    system.submit("alpha", "v1.3.0")
    system.run_queue()
    text = (system.ws_dir / "manifest.toml").read_text()
    assert 'version = "v1.3.0"' in text
    landed = system.item("q1").outcome
    assert landed is not None
    assert sh(["rev-parse", "HEAD"], system.ws_dir) == system.remote_head() == landed["commit"]
