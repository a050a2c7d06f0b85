"""The registry webhook of `lockstep serve` wakes a release wait through the wait's own
receiver (src/lockstep/registry/notifications.py), and the server's settings: reads behind
the token, writes off without one, bad options and secrets refused at startup."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from lockstep.registry.notifications import NotificationServer
from lockstep.server.app import create_app
from lockstep.server.settings import Secrets, ServeSettings
from tests.infra.serve import TOKEN, app_in_thread
from tests.system import System, wait_for

HOOK_TOKEN = "registry-hook-token-0123456789"
EVENTS = "application/vnd.docker.distribution.events.v1+json"


@pytest.fixture
def small(tmp_path: Path) -> System:
    return System.create(tmp_path / "sys", configurations=("default",))


def envelope(action: str, repository: str) -> bytes:
    return json.dumps({"events": [{"action": action, "target": {
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "repository": repository, "tag": "2.0"}}]}).encode()


@pytest.fixture
def hook() -> Iterator[NotificationServer]:
    with NotificationServer(token=HOOK_TOKEN) as server:
        yield server


def test_a_manifest_push_reaches_the_waiting_release(small: System, hook: NotificationServer,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SERVE_TEST_HOOK_TOKEN", HOOK_TOKEN)
    toml = small.ws_dir / "lockstep.toml"
    toml.write_text(toml.read_text() + f'\n[release.notifications]\nlisten = "127.0.0.1:'
                    f'{hook.port}"\npath = "/events"\ntoken_env = "SERVE_TEST_HOOK_TOKEN"\n')
    woken = threading.Event()
    hook.listen("reg.example:5000", "team/app", woken.set)
    app = create_app(small.ws_dir, ServeSettings(), Secrets(TOKEN, None))
    with app_in_thread(app) as url:
        post = f"{url}/webhooks/registry/reg.example:5000"
        serve_token = httpx.post(post, content=envelope("push", "team/app"), headers={
            "Content-Type": EVENTS, "Authorization": f"Bearer {TOKEN}"})
        assert serve_token.status_code == 403, "the registry's own token is the one asked for"
        pulled = httpx.post(post, content=envelope("pull", "team/app"), headers={
            "Content-Type": EVENTS, "Authorization": f"Bearer {HOOK_TOKEN}"})
        assert pulled.json() == {"received": 0}
        pushed = httpx.post(post, content=envelope("push", "team/app"), headers={
            "Content-Type": EVENTS, "Authorization": f"Bearer {HOOK_TOKEN}"})
        assert pushed.status_code == 200 and pushed.json() == {"received": 1}
        assert woken.wait(10), "the release wait's listener was not woken"

        def relayed() -> str:
            return str(httpx.get(f"{url}/api/webhooks/registry").json()[0]["relayed"])

        wait_for(lambda: relayed() != "relaying", what="the relay's answer", timeout=10)
        assert relayed() == "answered 200"
    assert hook.wakes == 1


def test_reads_behind_the_token_and_writes_off_without_one(small: System) -> None:
    guarded = create_app(small.ws_dir, ServeSettings(reads="token"), Secrets(TOKEN, None))
    with app_in_thread(guarded) as url:
        assert httpx.get(f"{url}/api/queue").status_code == 401
        assert httpx.get(f"{url}/api/overview",
                         headers={"Authorization": "Bearer wrong-token"}).status_code == 403
        ok = httpx.get(f"{url}/api/queue", headers={"Authorization": f"Bearer {TOKEN}"})
        assert ok.status_code == 200 and ok.json()["queue"]["state"] == "idle"
        assert httpx.get(f"{url}/").status_code == 200, "the page itself asks for the token"
        hook = httpx.post(f"{url}/webhooks/submissions", content=b"{}",
                          headers={"X-Lockstep-Signature": "sha256=" + "0" * 64})
        assert hook.status_code == 404 and "not enabled" in hook.json()["error"]
    open_ro = create_app(small.ws_dir, ServeSettings(), Secrets(None, None))
    with app_in_thread(open_ro) as url:
        assert httpx.get(f"{url}/api/queue").status_code == 200
        refused = httpx.post(f"{url}/api/queue/pause",
                             headers={"Authorization": f"Bearer {TOKEN}"})
        assert refused.status_code == 403
        assert "no API token" in refused.json()["error"]
        assert "LOCKSTEP_SERVE_TOKEN" in refused.json()["hint"]


def test_bad_options_are_one_line_errors(small: System) -> None:
    import os

    cases = [(["--port", "70000"], {}, "--port 70000 is out of range"),
             (["--reads", "maybe"], {}, "--reads 'maybe' is not 'open' or 'token'"),
             (["--host", "a b"], {}, "is not an address"),
             ([], {"LOCKSTEP_SERVE_TOKEN": "short"},
              "$LOCKSTEP_SERVE_TOKEN (the serve API token) is 5 characters long")]
    for args, env, message in cases:
        proc = small.cli("serve", "--port", "0", *args, env={**os.environ, **env})
        assert proc.returncode == 2, proc.stderr
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and message in lines[0], proc.stderr
