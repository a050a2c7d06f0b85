"""Registry authentication against the real registry: the Bearer token flow with a real token
server (cache per scope, expiry, refetch once), Basic, TLS with a CA file, redirects."""

from __future__ import annotations

import time
from collections.abc import Iterator

import pytest

from lockstep.errors import ConfigError, RegistryAuthError, RegistryError
from lockstep.registry.auth import parse_challenges
from lockstep.registry.distribution import DistributionSource, RegistrySettings
from lockstep.registry.wait import wait_for_artifact
from tests.infra.registry import (
    PASSWORD,
    USER,
    FaultProxy,
    Registry,
    push_image,
    running_registry,
)


def test_challenges_keep_quoted_commas_and_split_challenges() -> None:
    [c] = parse_challenges('Bearer realm="https://a/token",service="reg",'
                           'scope="repository:a/b:pull,push",error="insufficient_scope"')
    assert c.scheme == "bearer"
    assert c.params == {"realm": "https://a/token", "service": "reg",
                        "scope": "repository:a/b:pull,push", "error": "insufficient_scope"}
    basic, bearer, neg = parse_challenges('Basic realm="x, y", Bearer realm="r", service=s',
                                          "Negotiate abc==")
    assert (basic.scheme, basic.params) == ("basic", {"realm": "x, y"})
    assert (bearer.scheme, bearer.params) == ("bearer", {"realm": "r", "service": "s"})
    assert (neg.scheme, neg.token68) == ("negotiate", "abc==")
    assert parse_challenges('Bearer realm="a\\"b"')[0].params["realm"] == 'a"b'


class Clock:
    """A monotonic clock the test moves (token expiry without sleeping)."""

    def __init__(self) -> None:
        self.offset = 0.0

    def __call__(self) -> float:
        return time.monotonic() + self.offset


@pytest.fixture(scope="module")
def token_reg() -> Iterator[Registry]:
    with running_registry(auth="token") as r:
        push_image(r, "team/app", "1.0")
        push_image(r, "team/other", "1.0")
        yield r


def creds(reg: Registry, clock: Clock | None = None, **kw: object) -> DistributionSource:
    settings = RegistrySettings(reg.host, scheme="http", username=USER, password=PASSWORD)
    return DistributionSource(settings, clock=clock or time.monotonic, **kw)  # type: ignore[arg-type]


def test_one_token_per_scope_reused_then_renewed_when_expired(token_reg: Registry) -> None:
    ts = token_reg.token
    assert ts is not None
    clock = Clock()
    before = ts.count()
    with creds(token_reg, clock) as src:
        for _ in range(5):
            assert src.check("team/app", "1.0").found
        assert ts.count() - before == 1  # one token for repository:team/app:pull, reused
        assert src.check("team/other", "1.0").found
        assert ts.count() - before == 2  # another scope, another token
        requests = src.requests
        clock.offset += ts.expires_in * 0.9  # past 90 % of its lifetime
        assert src.check("team/app", "1.0").found
        assert ts.count() - before == 3  # renewed before use: no 401 round trip
        assert src.requests - requests == 2  # the token GET and one HEAD
    assert ts.requests[-1]["scopes"] == ["repository:team/app:pull"]
    assert ts.requests[-1]["user"] == USER


def test_refused_cached_token_fetched_again_once(token_reg: Registry) -> None:
    ts = token_reg.token
    assert ts is not None
    with creds(token_reg) as src:
        assert src.check("team/app", "1.0").found
        count = ts.count()
        ts.rotate()  # the registry now trusts another signer: the cached token is invalid
        token_reg.restart()
        assert src.check("team/app", "1.0").found
        assert ts.count() - count == 1
        ts.untrusted = True  # every new token is refused: one refetch, then an error
        ts.rotate()
        token_reg.restart()
        count = ts.count()
        try:
            with pytest.raises(RegistryAuthError, match="refused a token just issued"):
                src.check("team/app", "1.0")
        finally:
            ts.untrusted = False
        assert ts.count() - count == 1


def test_wrong_password_at_the_realm_is_an_auth_error(token_reg: Registry) -> None:
    settings = RegistrySettings(token_reg.host, scheme="http", username=USER, password="nope")
    with DistributionSource(settings) as src, \
            pytest.raises(RegistryAuthError, match="refused the configured credentials"):
        src.check("team/app", "1.0")
    assert "nope" not in repr(settings)


def test_anonymous_insufficient_scope_waits_like_404(token_reg: Registry) -> None:
    settings = RegistrySettings(token_reg.host, scheme="http")
    with DistributionSource(settings) as src:
        answer = src.check("team/app", "1.0", first_or_last=True)
    assert not answer.found and not answer.transient
    assert answer.detail == "401 (repository absent or not readable)"


def test_scope_lost_after_a_200_is_an_auth_error(token_reg: Registry) -> None:
    ts = token_reg.token
    assert ts is not None
    clock = Clock()
    with creds(token_reg, clock) as src:
        assert src.check("team/other", "1.0").found
        ts.deny.add("team/other")
        try:
            clock.offset += 3600  # the cached token expires: a fresh one lacks the scope
            with pytest.raises(RegistryAuthError, match="insufficient_scope"):
                src.check("team/other", "2.0")
        finally:
            ts.deny.clear()


def test_http_realm_gets_no_credentials_off_loopback() -> None:
    settings = RegistrySettings("registry.example.com", insecure=True, scheme="http")
    src = DistributionSource(settings)
    try:
        assert src._may_send("https://auth.example.com/token")
        assert not src._may_send("http://auth.example.com/token")
        assert src._may_send("http://registry.example.com/token")  # the insecure registry itself
        assert src._may_send("http://127.0.0.1:1/token")
    finally:
        src.close()
    with pytest.raises(ConfigError, match="plain HTTP"):
        DistributionSource(RegistrySettings("registry.example.com", scheme="http"))


@pytest.fixture(scope="module")
def basic_reg() -> Iterator[Registry]:
    with running_registry(auth="basic") as r:
        push_image(r, "team/app", "1.0")
        yield r


def test_basic_without_credentials_fails_at_once(basic_reg: Registry) -> None:
    began = time.monotonic()
    with DistributionSource(RegistrySettings(basic_reg.host, scheme="http")) as src, \
            pytest.raises(RegistryAuthError) as info:
        wait_for_artifact(src, "team/app", "1.0", timeout=60)
    assert time.monotonic() - began < 1
    assert src.requests == 1
    assert f"{basic_reg.host} requires credentials" in info.value.one_line()


def test_basic_with_credentials(basic_reg: Registry) -> None:
    with creds(basic_reg) as src:
        assert src.check("team/app", "1.0").found
        assert src.check("team/app", "1.0").found
        assert src.requests == 3  # one 401 to learn the scheme, then Basic sent up front
    bad = RegistrySettings(basic_reg.host, scheme="http", username=USER, password="nope")
    with DistributionSource(bad) as src, pytest.raises(RegistryAuthError, match="refused"):
        src.check("team/app", "1.0")


def test_authorization_not_sent_after_redirect_to_another_host(basic_reg: Registry) -> None:
    other = FaultProxy(basic_reg.url)  # reached as `localhost`: another host
    front = FaultProxy(basic_reg.url)
    try:
        url = f"http://localhost:{other.port}/v2/team/app/manifests/1.0"
        front.queue("pass", f"redirect:{url}")
        with creds(basic_reg).__class__(RegistrySettings(
                front.host, scheme="http", username=USER, password=PASSWORD)) as src, \
                pytest.raises(RegistryAuthError):
            src.check("team/app", "1.0")
        assert "Authorization" in front.seen[1].headers  # Basic sent to the registry's host
        assert other.seen and all("Authorization" not in s.headers for s in other.seen)
    finally:
        other.close()
        front.close()


@pytest.fixture(scope="module")
def tls_reg() -> Iterator[Registry]:
    with running_registry(tls=True) as r:
        push_image(r, "team/app", "1.0")
        yield r


def test_tls_ca_file_trusted_in_addition_to_default_roots(tls_reg: Registry) -> None:
    assert tls_reg.tls is not None
    with DistributionSource(RegistrySettings(tls_reg.host, ca_file=tls_reg.tls.ca_crt)) as src:
        assert src.check("team/app", "1.0").found
    began = time.monotonic()
    with DistributionSource(RegistrySettings(tls_reg.host)) as src, \
            pytest.raises(RegistryError, match="TLS certificate not trusted"):
        src.check("team/app", "1.0")
    assert time.monotonic() - began < 1
