"""The OCI distribution API artifact source: `HEAD /v2/<name>/manifests/<tag>` (spec §5.1).

One `DistributionSource` per registry for a whole run: it keeps the connection pool, the token
cache and which repositories answered 200 (which makes a later `insufficient_scope` an error).
"""

from __future__ import annotations

import hashlib
import logging
import re
import ssl
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from email.utils import parsedate_to_datetime
from pathlib import Path

import httpx

from lockstep import imageref
from lockstep.errors import ConfigError, RegistryAuthError, RegistryError, RegistryProtocolError
from lockstep.registry.auth import (
    AuthTransient,
    Credentials,
    NotReadable,
    RegistryAuth,
    TokenCache,
)
from lockstep.registry.source import Answer
from lockstep.registry.transport import DeadlineTransport, deadline
from lockstep.transport.urls import is_loopback

log = logging.getLogger("lockstep.registry")

OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
MANIFEST_TYPES = (OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST)
ACCEPT = ", ".join(MANIFEST_TYPES)  # always all four: some registries 404 an unaccepted type
REQUEST_DEADLINE = 10.0  # seconds for a whole request: connect, TLS, headers and body
MAX_REDIRECTS = 5
MAX_MANIFEST = 4 * 1024 * 1024
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def clean(text: str, limit: int = 200) -> str:
    """Remote text made safe to show: control characters escaped, cut at `limit`."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", text.strip())
    return text if len(text) <= limit else text[:limit] + "…"


@dataclass(frozen=True)
class RegistrySettings:
    """How to reach one registry, resolved from `[registries."host[:port]"]` and the environment.

    `host` is the registry key (`docker.io` for Docker Hub, reached at registry-1.docker.io).
    The scheme is https unless `scheme="http"` is given, which needs a loopback host or
    `insecure`; `insecure` with https turns certificate verification off (warned on each use).
    `ca_file` is trusted in addition to the system roots.
    """

    host: str
    insecure: bool = False
    ca_file: str | Path | None = None
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    scheme: str | None = None

    @property
    def base_url(self) -> str:
        """`scheme://host[:port]` of the API."""
        if self.host == imageref.DOCKER_HUB:
            return imageref.DOCKER_HUB_API
        scheme = self.scheme or ("http" if self.insecure else "https")
        return f"{scheme}://{self.host}"

    @property
    def hostname(self) -> str:
        """The host without its port."""
        return httpx.URL(self.base_url).host


def ssl_context(ca_file: str | Path | None) -> ssl.SSLContext:
    """The default roots plus `ca_file` (never instead of them)."""
    ctx = ssl.create_default_context()
    if ca_file is not None:
        ctx.load_verify_locations(cafile=str(ca_file))
    return ctx


class _Transient(Exception):
    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError):
        return None


def _origin(url: httpx.URL) -> tuple[str, str, int | None]:
    return url.scheme, url.host, url.port


class DistributionSource:
    """Checks tags over the OCI distribution API: an `ArtifactSource` for one registry."""

    def __init__(self, settings: RegistrySettings, *, request_deadline: float = REQUEST_DEADLINE,
                 clock: Callable[[], float] = time.monotonic) -> None:
        scheme = httpx.URL(settings.base_url).scheme
        if scheme not in ("http", "https"):
            raise ConfigError(f"registry {settings.host}: scheme {scheme!r} is not http(s)",
                              'use scheme = "https" (or "http" to loopback) under [registries]')
        if scheme == "http" and not (settings.insecure or is_loopback(settings.hostname)):
            raise ConfigError(f"registry {settings.host} over plain HTTP is not allowed",
                              'use https, or set insecure = true under [registries."…"]')
        self.settings = settings
        self.request_deadline = request_deadline
        if scheme == "https" and settings.insecure:
            verify: ssl.SSLContext | bool = False
        else:
            verify = ssl_context(settings.ca_file)
        self._client = httpx.Client(transport=DeadlineTransport(verify), follow_redirects=False,
                                    timeout=httpx.Timeout(request_deadline),
                                    headers={"User-Agent": "lockstep"})
        credentials = None
        if settings.username is not None and settings.password is not None:
            credentials = Credentials(settings.username, settings.password)
        self.auth = RegistryAuth(settings.host, credentials, self._fetch_token, self._may_send,
                                 TokenCache(clock))
        self._readable: set[str] = set()
        self._lock = threading.Lock()
        self.requests = 0
        self._warned = False

    def close(self) -> None:
        """Close the connection pool."""
        self._client.close()

    def __enter__(self) -> DistributionSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _warn_insecure(self) -> None:
        if self._warned:
            return
        self._warned = True
        if self.settings.insecure and not is_loopback(self.settings.hostname):
            what = ("plain HTTP" if self.settings.base_url.startswith("http:")
                    else "no TLS verification")
            log.warning("registry %s is insecure (%s)", self.settings.host, what)

    def _may_send(self, url: str) -> bool:
        """Credentials may go to https, to loopback, or to this registry when insecure."""
        u = httpx.URL(url)
        if u.scheme == "https" or is_loopback(u.host):
            return True
        return self.settings.insecure and u.host == self.settings.hostname

    def manifest_url(self, repository: str, tag: str) -> str:
        """`<base>/v2/<name>/manifests/<tag>`."""
        return f"{self.settings.base_url}/v2/{repository}/manifests/{tag}"

    # --- one check -------------------------------------------------------------------------

    def check(self, repository: str, tag: str, *, first_or_last: bool = False) -> Answer:
        """HEAD the tag (or a sha256 digest) once and classify the answer (spec §5.1)."""
        if not imageref.image_tag_valid(tag) and not _DIGEST.fullmatch(tag):
            raise RegistryProtocolError(f"{tag!r} is not a valid OCI tag",
                                        "use a tag_transform (e.g. helm-oci for SemVer '+')")
        self._warn_insecure()
        url = self.manifest_url(repository, tag)
        try:
            response = self._request("HEAD", url, repository)
            status = response.status_code
            if status == 200:
                return self._found(response, url, repository)
            if status == 404:
                return self._missing(response, url, repository, first_or_last)
        except _Transient as t:
            return Answer(False, detail=t.detail, transient=True)
        except AuthTransient as t:
            return Answer(False, detail=t.detail, transient=True)
        except NotReadable:
            with self._lock:
                seen = repository in self._readable
            if seen:
                raise RegistryAuthError(
                    f"{self.settings.host} no longer lets these credentials read {repository} "
                    "(insufficient_scope), though it did earlier in this run",
                    "check the credentials' permissions on the repository") from None
            return Answer(False, detail="401 (repository absent or not readable)")
        if status == 429:
            return Answer(False, detail="429 Too Many Requests", transient=True,
                          retry_after=_retry_after(response.headers.get("retry-after")))
        if status >= 500:
            return Answer(False, detail=f"{status} {response.reason_phrase}".strip(),
                          transient=True)
        if status == 403:
            raise RegistryAuthError(f"{self.settings.host} denied access to {repository} (403)",
                                    "check the credentials' permissions on the repository")
        if status == 401:
            raise RegistryAuthError(f"{self.settings.host} refused access to {repository} (401)",
                                    "check the credentials")
        raise RegistryProtocolError(
            f"{self.settings.host} answered {status} {response.reason_phrase} for "
            f"{repository}:{tag}", "this answer cannot turn into the artifact; check the name")

    def _found(self, response: httpx.Response, url: str, repository: str) -> Answer:
        with self._lock:
            self._readable.add(repository)
        media_type = response.headers.get("content-type", "").split(";")[0].strip() or None
        digest = response.headers.get("docker-content-digest", "").strip()
        if not _DIGEST.fullmatch(digest):
            body = self._request("GET", url, repository)
            if body.status_code != 200:
                return Answer(False, detail=f"{body.status_code} on GET after 200 on HEAD",
                              transient=True)
            if len(body.content) > MAX_MANIFEST:
                raise RegistryProtocolError(f"manifest of {url} is over 4 MiB")
            digest = "sha256:" + hashlib.sha256(body.content).hexdigest()
        return Answer(True, digest=digest, detail="200", media_type=media_type)

    def _missing(self, response: httpx.Response, url: str, repository: str,
                 explain: bool) -> Answer:
        self._check_json_404(response, url)
        if not explain:
            return Answer(False, detail="404")
        got = self._request("GET", url, repository)
        if got.status_code == 200:
            return self._found(got, url, repository)  # pushed between the HEAD and the GET
        if got.status_code != 404:
            return Answer(False, detail=f"404 (GET: {got.status_code})",
                          transient=got.status_code >= 500)
        self._check_json_404(got, url)
        code, message = "", ""
        try:
            errors = got.json().get("errors") or []
            if errors and isinstance(errors[0], dict):
                code = str(errors[0].get("code", ""))
                message = str(errors[0].get("message", ""))
        except (ValueError, AttributeError):
            pass
        if code == "MANIFEST_UNKNOWN" and "accept header" in message.lower():
            raise RegistryProtocolError(
                f"{self.settings.host}: {clean(message)}",
                "the registry refuses the Accept media types; it will never answer 200")
        detail = f"404 {clean(code, 40)}".strip()
        if message and code != "MANIFEST_UNKNOWN":
            detail += f": {clean(message, 80)}"
        return Answer(False, detail=detail)

    def _check_json_404(self, response: httpx.Response, url: str) -> None:
        kind = response.headers.get("content-type", "").split(";")[0].strip().lower()
        if kind != "application/json":
            text = clean(response.text, 80) if response.content else ""
            raise RegistryProtocolError(
                f"{url} answered 404 {kind or 'without a content type'}"
                + (f" ({text})" if text else "")
                + ": not the registry API's answer",
                "a router or proxy 404 never turns into the artifact; check the host, "
                "the path and the tag")

    # --- requests ----------------------------------------------------------------------------

    def _request(self, method: str, url: str, repository: str) -> httpx.Response:
        """One logical request with auth: at most a few 401 rounds (token fetch, one refetch)."""
        for _ in range(4):
            authorization, sent = self.auth.authorization(repository, url)
            response = self._send(method, url, {"Accept": ACCEPT}, authorization)
            if response.status_code != 401:
                return response
            self.auth.unauthorized(response, repository, sent)
        raise RegistryAuthError(f"{self.settings.host} keeps answering 401",
                                "check the credentials and the token service")

    def _send(self, method: str, url: str, headers: dict[str, str],
              authorization: str | None, params: dict[str, str] | None = None) -> httpx.Response:
        """Send with redirects followed by hand: `Authorization` never goes to another origin.
        The whole exchange, redirects included, ends within the request deadline."""
        start = httpx.URL(url, params=params)
        target = start
        try:
            with deadline(self.request_deadline):
                for _ in range(MAX_REDIRECTS + 1):
                    hdrs = dict(headers)
                    if authorization is not None and _origin(target) == _origin(start):
                        hdrs["Authorization"] = authorization
                    with self._lock:
                        self.requests += 1
                    response = self._client.request(method, target, headers=hdrs)
                    location = response.headers.get("location")
                    if response.status_code not in (301, 302, 303, 307, 308) or not location:
                        return response
                    target = target.join(location)
                    if method not in ("GET", "HEAD"):
                        return response
        except httpx.TimeoutException:
            raise _Transient(f"no complete answer within {self.request_deadline:g}s") from None
        except httpx.TransportError as exc:
            if _caused_by(exc, ssl.SSLCertVerificationError):
                raise RegistryError(f"{target.host}: TLS certificate not trusted "
                                    f"({clean(str(exc), 120)})",
                                    f'set ca_file under [registries."{self.settings.host}"]'
                                    ) from None
            raise _Transient(_describe(exc)) from None
        raise RegistryProtocolError(f"{url}: more than {MAX_REDIRECTS} redirects")

    def _fetch_token(self, realm: str, params: dict[str, str],
                     authorization: str | None) -> httpx.Response:
        try:
            return self._send("GET", realm, {"Accept": "application/json"}, authorization, params)
        except _Transient as t:
            raise AuthTransient(f"token service: {t.detail}") from None


def _caused_by(exc: BaseException, kind: type[BaseException]) -> bool:
    """Whether `kind` is anywhere in `exc`'s chain of causes."""
    seen: BaseException | None = exc
    for _ in range(10):
        if seen is None:
            return False
        if isinstance(seen, kind):
            return True
        seen = seen.__cause__ or seen.__context__
    return False


def _describe(exc: httpx.TransportError) -> str:
    """A short cause for the progress line: refused, reset, TLS …"""
    text = str(exc) or type(exc).__name__
    low = text.lower()
    if "refused" in low:
        return "connection refused"
    if "reset" in low:
        return "connection reset"
    if "certificate" in low:
        return f"TLS: {clean(text, 120)}"
    if isinstance(exc, httpx.RemoteProtocolError):
        return f"connection closed ({clean(text, 80)})"
    return clean(f"{type(exc).__name__}: {text}", 120)


def source_for(settings: RegistrySettings) -> DistributionSource:
    """A distribution API source for `settings` (the lead's factory hook)."""
    return DistributionSource(settings)


def registry_key(image: str) -> tuple[str, str]:
    """`(registry key, repository)` of an image name as configured (`docker.io` for Hub)."""
    ref = imageref.parse(image, "image")
    return ref.registry, ref.repository
