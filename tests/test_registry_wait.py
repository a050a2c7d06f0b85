"""The wait loop against the real registry on 127.0.0.1: polling, timeout, multi-arch, faults
(through a misbehaving proxy in front of the registry, for the fault modes only) and cancel."""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Iterator

import pytest

from lockstep.errors import ArtifactTimeoutError, RegistryAuthError, RegistryProtocolError
from lockstep.registry.distribution import REQUEST_DEADLINE, DistributionSource, RegistrySettings
from lockstep.registry.wait import (
    Found,
    Poll,
    Progress,
    WaitCancelled,
    backoff,
    format_duration,
    wait_for_artifact,
)
from tests.infra.registry import FaultProxy, Registry, push_image, push_index, running_registry

FAST = Poll(initial=0.05, max=0.2)
# The per-request deadline of the fault tests, shorter than the 10 s default so that a hang costs
# 2 s, not 10; the trickling proxy sends each byte well within it (see test_default_deadline).
DEADLINE = 2.0


@pytest.fixture(scope="module")
def reg() -> Iterator[Registry]:
    with running_registry() as r:
        yield r


@pytest.fixture
def proxy(reg: Registry) -> Iterator[FaultProxy]:
    p = FaultProxy(reg.url, trickle_every=DEADLINE * 0.75)
    yield p
    p.close()


def source(host: str, request_deadline: float = REQUEST_DEADLINE) -> DistributionSource:
    return DistributionSource(RegistrySettings(host, scheme="http"),
                              request_deadline=request_deadline)


class Recorder:
    """Progress reports, with an event per check so a test can act right after one."""

    def __init__(self) -> None:
        self.reports: list[Progress] = []
        self.checked = threading.Event()

    def __call__(self, p: Progress) -> None:
        self.reports.append(p)
        if p.kind == "check":
            self.checked.set()

    @property
    def checks(self) -> list[Progress]:
        return [p for p in self.reports if p.kind == "check"]


def in_thread(fn: object) -> tuple[threading.Thread, dict[str, object]]:
    out: dict[str, object] = {}

    def run() -> None:
        try:
            out["result"] = fn()  # type: ignore[operator]
        except BaseException as exc:
            out["error"] = exc
        out["ended"] = time.monotonic()

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t, out


def test_backoff_is_capped_exponential_with_jitter() -> None:
    rng = random.Random(1)
    poll = Poll(0.5, 10.0)
    for miss, d in [(0, 0.5), (1, 1.0), (2, 2.0), (4, 8.0), (5, 10.0), (30, 10.0)]:
        values = [backoff(miss, poll, rng) for _ in range(200)]
        assert d / 2 <= min(values) and max(values) <= d
        assert max(values) - min(values) > d / 4  # really jittered
    assert format_duration(5) == "5s" and format_duration(3600) == "60m0s"


def test_polling_finds_a_push_within_5s(reg: Registry) -> None:
    rec = Recorder()
    with source(reg.host) as src:
        t, out = in_thread(lambda: wait_for_artifact(src, "poll/app", "1.0", timeout=60,
                                                     image=f"{reg.host}/poll/app",
                                                     progress=rec))
        assert rec.checked.wait(10)
        assert rec.checks[0].last == "404 MANIFEST_UNKNOWN"  # the first miss explained by GET
        pushed = time.monotonic()
        digest = push_image(reg, "poll/app", "1.0")
        t.join(15)
    found = out["result"]
    assert isinstance(found, Found) and found.digest == digest
    assert float(out["ended"]) - pushed < 5  # type: ignore[arg-type]


def test_timeout_names_image_tag_and_last_answer(reg: Registry) -> None:
    rec = Recorder()
    began = time.monotonic()
    with source(reg.host) as src, pytest.raises(ArtifactTimeoutError) as info:
        wait_for_artifact(src, "never/app", "9.9", timeout=5, image=f"{reg.host}/never/app",
                          progress=rec, note=lambda: "tag v9.9 pushed 1m ago")
    took = time.monotonic() - began
    text = info.value.one_line()
    assert 5 <= took < 7
    assert f"{reg.host}/never/app:9.9 not found after 5s" in text
    assert f"({len(rec.checks)} checks, last: 404 MANIFEST_UNKNOWN); tag v9.9 pushed" in text
    assert "rerun to keep waiting" in text
    assert info.value.last == "404 MANIFEST_UNKNOWN"  # type: ignore[attr-defined]
    # Only the last check is explained again: the middle ones are plain HEAD 404s.
    assert [p.last for p in rec.checks[1:-1]] == ["404"] * (len(rec.checks) - 2)


def test_timeout_zero_checks_once(reg: Registry) -> None:
    with source(reg.host) as src, pytest.raises(ArtifactTimeoutError) as info:
        wait_for_artifact(src, "never/app", "1", timeout=0)
    assert info.value.checks == 1  # type: ignore[attr-defined]
    assert src.requests == 2  # the HEAD and its explaining GET


def test_multi_arch_index_digest_from_head(reg: Registry) -> None:
    index, manifests = push_index(reg, "multi/app", "2.0")
    with source(reg.host) as src:
        found = wait_for_artifact(src, "multi/app", "2.0", timeout=5)
    assert found.digest == index and found.digest not in manifests
    assert found.media_type == "application/vnd.oci.image.index.v1+json"


def test_default_deadline_is_10s_for_the_whole_request() -> None:
    with source("127.0.0.1:5000") as src:
        assert src.request_deadline == REQUEST_DEADLINE == 10.0


def test_500_hang_trickle_then_recovery(reg: Registry, proxy: FaultProxy) -> None:
    digest = push_image(reg, "fault/app", "1.0")
    proxy.queue("500", "hang", "trickle")
    rec = Recorder()
    with source(proxy.host, DEADLINE) as src:
        found = wait_for_artifact(src, "fault/app", "1.0", timeout=60, poll=FAST, progress=rec)
    assert found.digest == digest
    lasts = [p.last for p in rec.checks]
    assert lasts == ["500 Internal Server Error", "no complete answer within 2s",
                     "no complete answer within 2s", "200"]
    assert [p.transient for p in rec.checks] == [True, True, True, False]
    for p in rec.checks:
        assert p.check_seconds is not None and p.check_seconds < DEADLINE + 0.5
    assert [s.mode for s in proxy.seen] == ["500", "hang", "trickle", "pass"]
    hang = proxy.seen[1]
    # the client gave up at its deadline
    assert hang.ended is not None and DEADLINE - 0.5 < hang.ended - hang.started < DEADLINE + 0.5


def test_refused_connection_is_transient_until_timeout() -> None:
    from tests.infra import free_port

    with source(f"127.0.0.1:{free_port()}") as src, pytest.raises(ArtifactTimeoutError) as info:
        wait_for_artifact(src, "x/app", "1", timeout=1, poll=FAST)
    assert "last: connection refused" in info.value.one_line()


def test_router_404_is_a_protocol_error_at_once(reg: Registry, proxy: FaultProxy) -> None:
    proxy.queue("404-text")
    began = time.monotonic()
    with source(proxy.host) as src, pytest.raises(RegistryProtocolError) as info:
        wait_for_artifact(src, "fault/app", "1.0", timeout=60)
    assert time.monotonic() - began < 1
    assert "answered 404 text/plain: not the registry API" in info.value.one_line()


def test_accept_refusal_is_a_protocol_error(reg: Registry, proxy: FaultProxy) -> None:
    push_image(reg, "oci/app", "1.0")
    proxy.queue("strip-accept", "strip-accept")  # the real registry refuses HEAD and GET
    with source(proxy.host) as src, pytest.raises(RegistryProtocolError) as info:
        wait_for_artifact(src, "oci/app", "1.0", timeout=60)
    assert "accept header does not support OCI manifests" in info.value.one_line()


def test_403_is_an_auth_error(reg: Registry, proxy: FaultProxy) -> None:
    proxy.queue("403")
    with source(proxy.host) as src, pytest.raises(RegistryAuthError, match="403"):
        wait_for_artifact(src, "fault/app", "1.0", timeout=60)


def test_429_waits_for_retry_after_even_when_woken(reg: Registry, proxy: FaultProxy) -> None:
    digest = push_image(reg, "slow/app", "1.0")
    proxy.queue("429:1")
    rec = Recorder()
    with source(proxy.host) as src:
        found = wait_for_artifact(src, "slow/app", "1.0", timeout=30, poll=FAST, progress=rec)
    assert found.digest == digest
    assert rec.checks[0].last == "429 Too Many Requests"
    assert proxy.seen[1].started - proxy.seen[0].started >= 1.0


def test_cancel_mid_request_ends_within_1s(reg: Registry, proxy: FaultProxy) -> None:
    proxy.queue("hang")
    cancel = threading.Event()
    with source(proxy.host) as src:
        t, out = in_thread(lambda: wait_for_artifact(src, "fault/app", "1.0", timeout=60,
                                                     cancel=cancel))
        from tests.infra.registry import wait_for

        wait_for(lambda: len(proxy.seen) == 1)
        asked = time.monotonic()
        cancel.set()
        t.join(5)
    assert isinstance(out["error"], WaitCancelled)
    assert float(out["ended"]) - asked < 1  # type: ignore[arg-type]


def test_cancel_while_sleeping_ends_within_1s(reg: Registry) -> None:
    cancel = threading.Event()
    rec = Recorder()
    with source(reg.host) as src:
        t, out = in_thread(lambda: wait_for_artifact(src, "never/app", "1", timeout=60,
                                                     poll=Poll(30, 30), cancel=cancel,
                                                     progress=rec))
        assert rec.checked.wait(10)
        asked = time.monotonic()
        cancel.set()
        t.join(5)
    assert isinstance(out["error"], WaitCancelled)
    assert float(out["ended"]) - asked < 1  # type: ignore[arg-type]
