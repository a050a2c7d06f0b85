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
from tests.infra.serve import SECRET, TOKEN, app_in_thread, running_server, sign
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


GAMMA_KEY = "gamma-ci-hmac-key-0123456789"
SCOPED = ServeSettings(component_secret_envs={"gamma": "GAMMA_CI_KEY"})


def test_a_component_key_signs_only_its_own_component(small: System) -> None:
    """With no shared key, gamma's CI key submits gamma's bumps and nothing else: the body it
    signs names the component, so another component's body (or a second `component` key) is
    refused and nothing is queued."""
    app = create_app(small.ws_dir, SCOPED, Secrets(TOKEN, None, {"gamma": GAMMA_KEY.encode()}))

    def post(body: bytes, key: str) -> httpx.Response:
        return httpx.post(f"{url}/webhooks/submissions", content=body,
                          headers={"X-Lockstep-Signature": sign(body, key)}, timeout=30)

    with app_in_thread(app) as url:
        gamma = json.dumps({"component": "gamma", "version": "v1.1.0"}).encode()
        alpha = json.dumps({"component": "alpha", "version": "v1.1.0"}).encode()
        assert post(alpha, GAMMA_KEY).status_code == 403
        assert post(gamma, SECRET).status_code == 403, "no shared key is configured"
        twice = [b'{"component": "gamma", "version": "v1.1.0", "component": "alpha"}',
                 b'{"component": "alpha", "version": "v1.1.0", "component": "gamma"}']
        for body in twice:
            assert post(body, GAMMA_KEY).status_code == 403, body
        made = post(gamma, GAMMA_KEY)
        assert made.status_code == 201, made.text
        queued = httpx.get(f"{url}/api/queue").json()["items"]
    assert [(i["component"], i["version"]) for i in queued] == [("gamma", "v1.1.0")]


def test_the_shared_key_still_signs_any_component(small: System) -> None:
    """Component keys add to the shared key; they do not narrow it."""
    app = create_app(small.ws_dir, SCOPED,
                     Secrets(TOKEN, SECRET.encode(), {"gamma": GAMMA_KEY.encode()}))
    with app_in_thread(app) as url:
        body = json.dumps({"component": "alpha", "version": "v1.1.0"}).encode()
        made = httpx.post(f"{url}/webhooks/submissions", content=body,
                          headers={"X-Lockstep-Signature": sign(body)}, timeout=30)
        assert made.status_code == 201, made.text
        assert made.json()["component"] == "alpha"


def test_component_keys_at_startup(small: System, tmp_path: Path) -> None:
    """The startup line names the keys that can sign and the configured variables left unset;
    a short component key is refused with one line and exit 2."""
    import os

    small.edit_config(lambda text: text + "\n[serve.component_secret_envs]\n"
                      "gamma = 'GAMMA_CI_KEY'\nbeta = 'BETA_CI_KEY'\n")
    env = {k: v for k, v in os.environ.items() if not k.endswith("_CI_KEY")}
    proc = small.cli("serve", "--port", "0", env={**env, "GAMMA_CI_KEY": "short"})
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "$GAMMA_CI_KEY (the submissions HMAC secret of gamma) is 5 " \
        "characters long" in lines[0], proc.stderr
    os.environ["GAMMA_CI_KEY"] = GAMMA_KEY
    try:
        with running_server(small.ws_dir, tmp_path / "logs") as server:
            text = server.log_text()
    finally:
        del os.environ["GAMMA_CI_KEY"]
    assert "submissions webhook enabled (shared key; keys of gamma; unset: $BETA_CI_KEY)" \
        in text, text
    assert GAMMA_KEY not in text
