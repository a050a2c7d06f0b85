"""Registry authentication: `WWW-Authenticate` parsing (RFC 7235), Basic, and the Bearer token
flow with a token cache per (realm, service, scope) (spec/release.md §5.1, §7).

Hand-written: httpx has no challenge parser, and the token flow's failure rules (refetch once,
`insufficient_scope` as "not readable yet") are the registry protocol's, not HTTP's.
"""

from __future__ import annotations

import base64
import re
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

import httpx

from lockstep.errors import RegistryAuthError

_TCHARS = r"[!#$%&'*+.^_`|~0-9A-Za-z-]+"
_QUOTED = r'"(?:[^"\\]|\\.)*"'
_PARAM = re.compile(rf"({_TCHARS})[ \t]*=[ \t]*({_TCHARS}|{_QUOTED})")
_SCHEME = re.compile(_TCHARS)
_TOKEN68 = re.compile(r"[A-Za-z0-9._~+/-]+=*")
_SKIP = re.compile(r"[ \t,]*")
_OWS = re.compile(r"[ \t]*")

DEFAULT_EXPIRES_IN = 60.0  # seconds, when the token answer has no `expires_in`
REFRESH_MARGIN = 0.10  # a token is renewed when 90 % of its lifetime has passed


@dataclass(frozen=True)
class Challenge:
    """One challenge of a `WWW-Authenticate` header: scheme (lower case) and its parameters
    (names lower case, quoted values unquoted)."""

    scheme: str
    params: dict[str, str] = field(default_factory=dict)
    token68: str | None = None


def _unquote(value: str) -> str:
    if value.startswith('"'):
        return re.sub(r"\\(.)", r"\1", value[1:-1])
    return value


def parse_challenges(*headers: str) -> list[Challenge]:
    """Every challenge in the given `WWW-Authenticate` values; a quoted value may hold `,`
    and spaces (`scope="repository:a/b:pull,push"`). Unparsable text is skipped."""
    out: list[Challenge] = []
    for text in headers:
        pos = 0
        while True:
            pos = _SKIP.match(text, pos).end()  # type: ignore[union-attr]
            scheme = _SCHEME.match(text, pos)
            if scheme is None:
                break
            pos = _OWS.match(text, scheme.end()).end()  # type: ignore[union-attr]
            params: dict[str, str] = {}
            token68: str | None = None
            param = _PARAM.match(text, pos)
            if param is None:
                t68 = _TOKEN68.match(text, pos)
                if t68 is not None and pos > scheme.end():
                    token68 = t68.group()
                    pos = t68.end()
            while param is not None:
                params[param.group(1).lower()] = _unquote(param.group(2))
                pos = _OWS.match(text, param.end()).end()  # type: ignore[union-attr]
                if not text.startswith(",", pos):
                    break
                nxt = _SKIP.match(text, pos).end()  # type: ignore[union-attr]
                param = _PARAM.match(text, nxt)
                if param is not None and text.startswith("=", param.end()):
                    param = None  # a token68 ending in '=': the next challenge's
                if param is None:
                    break
                # `Basic realm="x", Bearer realm="y"`: a bare token followed by a space and a
                # parameter starts a new challenge; _PARAM does not match that, so we are fine.
                pos = nxt
            out.append(Challenge(scheme.group().lower(), params, token68))
            if pos >= len(text):
                break
            if not text.startswith(",", pos) and not text[pos:pos + 1].isspace():
                # Garbage we cannot parse: skip to the next comma.
                comma = text.find(",", pos)
                if comma < 0:
                    break
                pos = comma
    return out


@dataclass(frozen=True)
class Credentials:
    """A username and password for one registry (and its token realm); never shown."""

    username: str
    password: str = field(repr=False)

    def basic(self) -> str:
        """The `Authorization` value for HTTP Basic."""
        raw = f"{self.username}:{self.password}".encode()
        return "Basic " + base64.b64encode(raw).decode("ascii")


TokenKey = tuple[str, str, str]  # (realm, service, scope)


@dataclass
class _Token:
    value: str = field(repr=False)
    expires_at: float  # on the cache's clock


class TokenCache:
    """Bearer tokens per (realm, service, scope), each kept until 90 % of its lifetime."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._tokens: dict[TokenKey, _Token] = {}
        self._lock = threading.Lock()

    def get(self, key: TokenKey) -> str | None:
        """The cached token, or None when absent or past its renewal time."""
        with self._lock:
            tok = self._tokens.get(key)
            if tok is None:
                return None
            if self._clock() >= tok.expires_at:
                del self._tokens[key]
                return None
            return tok.value

    def put(self, key: TokenKey, value: str, answer: dict[str, Any]) -> None:
        """Cache `value` until `issued_at` (else now) + `expires_in` − 10 %."""
        try:
            lifetime = float(answer.get("expires_in") or DEFAULT_EXPIRES_IN)
        except (TypeError, ValueError):
            lifetime = DEFAULT_EXPIRES_IN
        age = 0.0
        issued = answer.get("issued_at")
        if isinstance(issued, str):
            try:
                stamp = datetime.fromisoformat(issued.replace("Z", "+00:00"))
                age = max(0.0, time.time() - stamp.timestamp())
            except ValueError:
                age = 0.0
        expires_at = self._clock() + lifetime * (1 - REFRESH_MARGIN) - age
        with self._lock:
            self._tokens[key] = _Token(value, expires_at)

    def drop(self, key: TokenKey) -> None:
        """Forget the token for `key` (the registry refused it)."""
        with self._lock:
            self._tokens.pop(key, None)


@dataclass(frozen=True)
class Sent:
    """What a request carried: no credentials, Basic, or a Bearer token (and whether that token
    was fetched for this very request)."""

    kind: str  # "none" | "basic" | "bearer"
    key: TokenKey | None = None
    fresh: bool = False


class NotReadable(Exception):
    """A fresh token lacks the scope: the repository is absent or not readable (yet)."""


class AuthTransient(Exception):
    """The token realm could not be reached or answered 5xx."""

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


Fetch = Callable[[str, dict[str, str], str | None], httpx.Response]


class RegistryAuth:
    """Chooses each request's `Authorization` and decides what a 401 means for one registry.

    `fetch(url, params, authorization)` GETs the token realm (with the caller's deadline and
    redirect rules); `may_send(url)` says whether credentials may go to that URL (https,
    loopback, or the registry itself when it is configured insecure).
    """

    def __init__(self, host: str, credentials: Credentials | None, fetch: Fetch,
                 may_send: Callable[[str], bool], cache: TokenCache | None = None) -> None:
        self.host = host
        self.credentials = credentials
        self.cache = cache or TokenCache()
        self._fetch = fetch
        self._may_send = may_send
        self._basic = False
        self._keys: dict[str, TokenKey] = {}  # repository → the token key its challenge named
        self._fresh: set[TokenKey] = set()  # tokens fetched and not yet used
        self._lock = threading.Lock()
        self.token_requests = 0

    def authorization(self, repository: str, url: str) -> tuple[str | None, Sent]:
        """The `Authorization` value for a request to `url` (None: send none) and what it is."""
        if self._basic and self.credentials is not None and self._may_send(url):
            return self.credentials.basic(), Sent("basic")
        with self._lock:
            key = self._keys.get(repository)
        if key is not None:
            token = self.cache.get(key)
            if token is None:
                self._get_token(key, repository)  # expired: renew before use, not after a 401
                token = self.cache.get(key)
            if token is not None:
                with self._lock:
                    fresh = key in self._fresh
                    self._fresh.discard(key)
                return f"Bearer {token}", Sent("bearer", key, fresh)
        return None, Sent("none")

    def unauthorized(self, response: httpx.Response, repository: str, sent: Sent) -> None:
        """React to a 401: return to retry (with what `authorization` gives next), or raise
        RegistryAuthError, NotReadable or AuthTransient."""
        challenges = parse_challenges(*response.headers.get_list("www-authenticate"))
        bearer = next((c for c in challenges if c.scheme == "bearer"), None)
        if bearer is not None and "realm" in bearer.params:
            self._bearer(bearer, repository, sent)
            return
        if any(c.scheme == "basic" for c in challenges):
            self._basic_challenge(sent, str(response.request.url))
            return
        raise RegistryAuthError(f"{self.host} answered 401 without a usable challenge",
                                "check that this host is an OCI distribution registry")

    def _basic_challenge(self, sent: Sent, url: str) -> None:
        if self.credentials is None:
            raise RegistryAuthError(
                f"{self.host} requires credentials",
                f'set username_env and password_env under [registries."{self.host}"]')
        if sent.kind == "basic":
            raise RegistryAuthError(f"{self.host} refused the configured credentials",
                                    "check the username and password variables")
        if not self._may_send(url):
            raise RegistryAuthError(
                f"{self.host} asks for Basic credentials over plain HTTP; not sent",
                "use https, or mark the registry insecure if it is on a trusted network")
        self._basic = True

    def _bearer(self, challenge: Challenge, repository: str, sent: Sent) -> None:
        params = challenge.params
        key: TokenKey = (params["realm"], params.get("service", ""),
                         params.get("scope") or f"repository:{repository}:pull")
        error = params.get("error", "")
        if sent.kind == "bearer" and sent.key is not None:
            self.cache.drop(sent.key)
            if error == "insufficient_scope":
                if sent.fresh:
                    raise NotReadable(repository)
            elif sent.fresh:
                raise RegistryAuthError(
                    f"{self.host} refused a token just issued by {params['realm']} "
                    f"({error or 'no error given'})",
                    "check that the registry trusts the token service's signing certificate")
        elif self.cache.get(key) is not None:
            with self._lock:
                self._keys[repository] = key  # another request already got this scope's token
            return
        self._get_token(key, repository)

    def _get_token(self, key: TokenKey, repository: str) -> None:
        realm, service, scope = key
        authorization = None
        if self.credentials is not None:
            if not self._may_send(realm):
                raise RegistryAuthError(
                    f"token service {realm} is not https; credentials for {self.host} not sent",
                    "the token realm must be https (or loopback, or the insecure registry)")
            authorization = self.credentials.basic()
        params = {"scope": scope}
        if service:
            params["service"] = service
        with self._lock:
            self.token_requests += 1
        try:
            answer = self._fetch(realm, params, authorization)
        except httpx.TransportError as exc:
            raise AuthTransient(f"token service: {type(exc).__name__}") from exc
        if answer.status_code in (401, 403):
            raise RegistryAuthError(
                f"token service {realm} refused "
                + ("the configured credentials" if authorization else "an anonymous request")
                + f" for {self.host} ({answer.status_code})",
                "check the username and password variables")
        if answer.status_code >= 500 or answer.status_code == 429:
            raise AuthTransient(f"token service {answer.status_code}")
        try:
            body = answer.json()
            token = body.get("token") or body.get("access_token")
        except (ValueError, AttributeError):
            token = None
        if answer.status_code != 200 or not isinstance(token, str) or not token:
            raise RegistryAuthError(
                f"token service {realm} gave no token ({answer.status_code})",
                "check the registry's token realm")
        self.cache.put(key, token, body)
        with self._lock:
            self._keys[repository] = key
            self._fresh.add(key)
