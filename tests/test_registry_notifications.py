"""The webhook against the real registry's notifications: a manifest push wakes the wait at
once; other events, forged and malformed requests are answered 200 and cost at most a HEAD."""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Iterator

import httpx
import pytest

from lockstep.errors import ConfigError
from lockstep.registry.distribution import OCI_MANIFEST, DistributionSource, RegistrySettings
from lockstep.registry.notifications import NotificationServer
from lockstep.registry.wait import Found, Poll, Progress, wait_for_artifact
from tests.infra.registry import (
    Notify,
    Registry,
    image_manifest,
    put_manifest,
    running_registry,
)

TOKEN = "hook-secret-token"
SLOW = Poll(initial=5, max=60)  # no poll within 2.5 s of a check: a quick find is a wake's
EVENTS = "application/vnd.docker.distribution.events.v1+json"


@pytest.fixture(scope="module")
def hook() -> Iterator[NotificationServer]:
    with NotificationServer(token=TOKEN) as server:
        yield server


@pytest.fixture(scope="module")
def reg(hook: NotificationServer) -> Iterator[Registry]:
    # The registry key in the path is the registry's host:port, known only once started.
    with running_registry(notify=Notify(hook.url("pending"), TOKEN)) as r:
        cfg = json.loads(r.config.read_text())
        cfg["notifications"]["endpoints"][0]["url"] = hook.url(r.host)
        r.config.write_text(json.dumps(cfg))
        r.restart()
        yield r


def post(hook: NotificationServer, path: str, body: bytes, token: str | None = TOKEN,
         content_type: str = EVENTS) -> int:
    headers = {"Content-Type": content_type}
    if token is not None:
        headers["Authorization"] = f"Bearer {token}"
    return httpx.post(f"http://127.0.0.1:{hook.port}{path}", content=body, headers=headers,
                      timeout=5).status_code


def event(action: str, repository: str, media_type: str = OCI_MANIFEST) -> dict[str, object]:
    return {"action": action, "target": {"mediaType": media_type, "repository": repository,
                                         "tag": "1.0", "url": "http://elsewhere/v2/x"}}


class Waiter:
    """A wait on a thread, with an event per check."""

    def __init__(self, reg: Registry, hook: NotificationServer, repository: str) -> None:
        self.src = DistributionSource(RegistrySettings(reg.host, scheme="http"))
        self.checks: list[Progress] = []
        self.kinds: list[str] = []
        self.checked = threading.Condition()
        self.out: dict[str, object] = {}

        def progress(p: Progress) -> None:
            if p.kind != "tick":
                self.kinds.append(p.kind)
            if p.kind == "check":
                with self.checked:
                    self.checks.append(p)
                    self.checked.notify_all()

        def run() -> None:
            try:
                self.out["found"] = wait_for_artifact(
                    self.src, repository, "1.0", timeout=60, poll=SLOW, notifications=hook,
                    registry=reg.host, progress=progress)
            except BaseException as exc:
                self.out["error"] = exc
            self.out["ended"] = time.monotonic()

        self.thread = threading.Thread(target=run, daemon=True)
        self.thread.start()

    def wait_checks(self, n: int) -> None:
        with self.checked:
            assert self.checked.wait_for(lambda: len(self.checks) >= n, 10)

    def close(self) -> None:
        self.thread.join(10)
        self.src.close()


def test_push_wakes_the_wait_within_1s(reg: Registry, hook: NotificationServer) -> None:
    w = Waiter(reg, hook, "wake/app")
    try:
        w.wait_checks(1)
        with reg.admin("wake/app") as c:
            body = image_manifest(c, "wake/app", "wake")
            put_started = time.monotonic()
            digest = put_manifest(c, "wake/app", "1.0", body)
        w.thread.join(5)
    finally:
        w.close()
    found = w.out.get("found")
    assert isinstance(found, Found) and found.digest == digest
    assert float(w.out["ended"]) - put_started < 1  # type: ignore[arg-type]
    assert w.kinds == ["check", "wake", "check"]  # the first check and the one the push woke


def test_other_events_cost_nothing_and_a_forged_push_one_head(
        reg: Registry, hook: NotificationServer, caplog: pytest.LogCaptureFixture) -> None:
    path = f"/events/{reg.host}"
    w = Waiter(reg, hook, "quiet/app")
    try:
        w.wait_checks(1)
        wakes = hook.wakes
        assert post(hook, path, json.dumps({"events": [event("push", "other/app")]}).encode()
                    ) == 200
        assert post(hook, path, json.dumps({"events": [event("pull", "quiet/app")]}).encode()
                    ) == 200
        blob = event("push", "quiet/app", "application/octet-stream")
        assert post(hook, path, json.dumps({"events": [blob]}).encode()) == 200
        with caplog.at_level(logging.WARNING, "lockstep.registry.notifications"):
            assert post(hook, path, b"{not json") == 200
            assert post(hook, path, b"x" * (2 * 1024 * 1024)) == 200  # over 1 MiB
            assert post(hook, "/events/unknown.example", b"{}") == 200
        assert "not an events envelope" in caplog.text and "over 1048576 bytes" in caplog.text
        assert hook.wakes == wakes and w.kinds == ["check"]
        # A forged push for the awaited repository (twice in one envelope): one HEAD.
        forged = {"events": [event("push", "quiet/app"), event("push", "quiet/app")]}
        assert post(hook, path, json.dumps(forged).encode()) == 200
        w.wait_checks(2)
        assert w.kinds == ["check", "wake", "check"]
        assert w.checks[1].last == "404" and "found" not in w.out
        with reg.admin("quiet/app") as c:
            digest = put_manifest(c, "quiet/app", "1.0", image_manifest(c, "quiet/app", "q"))
        w.thread.join(5)
    finally:
        w.close()
    found = w.out.get("found")
    assert isinstance(found, Found) and found.digest == digest
    assert w.kinds[-2:] == ["wake", "check"]


def test_wrong_token_gets_401_and_one_log_line(
        hook: NotificationServer, caplog: pytest.LogCaptureFixture) -> None:
    body = json.dumps({"events": []}).encode()
    with caplog.at_level(logging.WARNING, "lockstep.registry.notifications"):
        assert post(hook, "/events/x", body, token="wrong") == 401
        assert post(hook, "/events/x", body, token=None) == 401
        assert post(hook, "/events/x", body) == 200
    lines = [r for r in caplog.records if "token mismatch" in r.getMessage()]
    assert len(lines) <= 1  # at most once a minute (an earlier test may have logged already)
    assert hook.rejected >= 2
    if lines:
        assert lines[0].getMessage() == ("notifications from 127.0.0.1 rejected: token mismatch "
                                         "(the registry will retry this event forever)")
    assert TOKEN not in caplog.text


def test_token_required_off_loopback() -> None:
    with pytest.raises(ConfigError, match="without a token"):
        NotificationServer(host="0.0.0.0")


def test_registry_events_arrive_with_the_token(reg: Registry, hook: NotificationServer) -> None:
    got = threading.Event()
    remove = hook.listen(reg.host, "direct/app", got.set)
    try:
        with reg.admin("direct/app") as c:
            put_manifest(c, "direct/app", "1.0", image_manifest(c, "direct/app", "d"))
        assert got.wait(5)
    finally:
        remove()
    assert hook.received > 0
