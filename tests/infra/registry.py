"""A real OCI registry (Debian `docker-registry`, distribution 2.8) on 127.0.0.1 for the tests.

Optional htpasswd Basic auth, token auth with an RS256 token server on a thread, TLS with the
test CA, and a notifications endpoint. Helpers push small images and a two-platform index
over the API with httpx, and a fault proxy misbehaves in front of the registry on request.
"""

from __future__ import annotations

import base64
import contextlib
import datetime as dt
import hashlib
import json
import shutil
import socket
import threading
import time
import urllib.parse
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx

from lockstep.registry.distribution import ACCEPT, OCI_INDEX, OCI_MANIFEST
from tests.infra import (
    TestCA,
    as_nobody,
    make_ca,
    require_tool,
    scratch_dir,
    start,
    stop,
    wait_until,
)

USER, PASSWORD = "relbot", "s3cret"
SERVICE, ISSUER = "test-registry", "test-issuer"


# --- token server -----------------------------------------------------------------------------

def _signer(name: str) -> tuple[bytes, bytes, bytes]:
    """A fresh RSA key and self-signed certificate: (key PEM, cert DER, cert PEM)."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import rsa
    from cryptography.x509.oid import NameOID

    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = dt.datetime.now(dt.UTC)
    cert = (x509.CertificateBuilder().subject_name(subject).issuer_name(subject)
            .public_key(key.public_key()).serial_number(x509.random_serial_number())
            .not_valid_before(now - dt.timedelta(minutes=5))
            .not_valid_after(now + dt.timedelta(days=2))
            .sign(key, hashes.SHA256()))
    key_pem = key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                serialization.NoEncryption())
    return (key_pem, cert.public_bytes(serialization.Encoding.DER),
            cert.public_bytes(serialization.Encoding.PEM))


@dataclass
class TokenServer:
    """`GET /token?service=…&scope=…`: RS256 JWTs with an `x5c` header (aud a string).

    `relbot:s3cret` gets the actions it asks for, except on repositories in `deny`; anonymous
    callers get none; wrong credentials get 401. `requests` records every call (user, scopes).
    `rotate()` makes a new signing key (the registry must be restarted to trust it);
    `untrusted` signs with a key the registry never trusts.
    """

    bundle: Path
    expires_in: int = 300
    deny: set[str] = field(default_factory=set)
    untrusted: bool = False
    requests: list[dict[str, Any]] = field(default_factory=list)
    port: int = 0

    def __post_init__(self) -> None:
        self._lock = threading.Lock()
        self._key, self._der, pem = _signer("token-signer")
        self._bad_key, self._bad_der, _ = _signer("token-signer")
        self.bundle.write_bytes(pem)
        self.bundle.chmod(0o644)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _token_handler(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})  # quick shutdown()
        self._thread.start()

    @property
    def realm(self) -> str:
        return f"http://127.0.0.1:{self.port}/token"

    def rotate(self) -> None:
        """A new signing key and certificate in the bundle (restart the registry after)."""
        self._key, self._der, pem = _signer("token-signer")
        self.bundle.write_bytes(pem)

    def mint(self, user: str, access: list[dict[str, Any]], *, bad: bool = False) -> str:
        """A token for `user` granting `access` (in-process: not counted in `requests`)."""
        import jwt

        now = int(time.time())
        claims = {"iss": ISSUER, "sub": user, "aud": SERVICE, "iat": now, "nbf": now - 10,
                  "exp": now + self.expires_in, "jti": uuid.uuid4().hex, "access": access}
        key, der = (self._bad_key, self._bad_der) if bad else (self._key, self._der)
        return jwt.encode(claims, key, algorithm="RS256",
                          headers={"x5c": [base64.b64encode(der).decode()]})

    def count(self, user: str | None = None) -> int:
        """How many token requests came (by `user`, when given)."""
        with self._lock:
            return sum(1 for r in self.requests if user is None or r["user"] == user)

    def close(self) -> None:
        self._server.shutdown()
        self._server.server_close()


def _token_handler(ts: TokenServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            query = urllib.parse.parse_qs(urllib.parse.urlsplit(self.path).query)
            user = None
            header = self.headers.get("Authorization", "")
            if header.startswith("Basic "):
                name, _, pw = base64.b64decode(header[6:]).decode().partition(":")
                if (name, pw) != (USER, PASSWORD):
                    with ts._lock:
                        ts.requests.append({"user": name, "scopes": [], "refused": True})
                    self.send_response(401)
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return
                user = name
            access = []
            for scope in query.get("scope", []):
                kind, _, rest = scope.partition(":")
                name, _, actions = rest.rpartition(":")
                granted = [] if user is None or name in ts.deny else actions.split(",")
                access.append({"type": kind, "name": name, "actions": granted})
            with ts._lock:
                ts.requests.append({"user": user, "scopes": query.get("scope", []),
                                    "service": query.get("service", [None])[0]})
            tok = ts.mint(user or "", access, bad=ts.untrusted)
            body = json.dumps({"token": tok, "access_token": tok,
                               "expires_in": ts.expires_in}).encode()
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


# --- the registry -----------------------------------------------------------------------------

@dataclass
class Notify:
    """Where the registry sends its events: our webhook URL and the bearer token it sends."""

    url: str
    token: str | None = None


@dataclass
class Registry:
    """A running registry and how to push to it."""

    root: Path
    port: int
    auth: str | None
    tls: TestCA | None
    token: TokenServer | None
    config: Path
    log: Path
    proc: Any = None

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def url(self) -> str:
        return f"{'https' if self.tls else 'http'}://{self.host}"

    def start(self) -> None:
        require_tool("docker-registry")
        self.proc = start(as_nobody(["docker-registry", "serve", str(self.config)]), self.log)
        wait_until(self._ready, self.proc, self.log)

    def _ready(self) -> bool:
        try:
            r = httpx.get(f"{self.url}/v2/", timeout=0.5, verify=self._verify())
        except httpx.HTTPError:
            return False
        return r.status_code in (200, 401)

    def _verify(self) -> Any:
        import ssl

        return ssl.create_default_context(cafile=str(self.tls.ca_crt)) if self.tls else True

    def restart(self) -> None:
        stop(self.proc)
        self.start()

    def admin(self, repo: str) -> httpx.Client:
        """A client with every right on `repo` (Basic credentials, or a minted token)."""
        headers: dict[str, str] = {}
        auth = None
        if self.auth == "basic":
            auth = (USER, PASSWORD)
        elif self.auth == "token" and self.token is not None:
            tok = self.token.mint(USER, [{"type": "repository", "name": repo,
                                          "actions": ["pull", "push", "delete"]}])
            headers["Authorization"] = f"Bearer {tok}"
        return httpx.Client(base_url=self.url, auth=auth, headers=headers,
                            verify=self._verify(), timeout=10)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")


def push_blob(c: httpx.Client, repo: str, data: bytes) -> str:
    """Upload one blob (POST then PUT); its digest."""
    d = "sha256:" + hashlib.sha256(data).hexdigest()
    if c.head(f"/v2/{repo}/blobs/{d}").status_code == 200:
        return d
    r = c.post(f"/v2/{repo}/blobs/uploads/")
    assert r.status_code == 202, r.text
    loc = r.headers["Location"]
    r = c.put(f"{loc}{'&' if '?' in loc else '?'}digest={d}", content=data,
              headers={"Content-Type": "application/octet-stream"})
    assert r.status_code == 201, r.text
    return d


def image_manifest(c: httpx.Client, repo: str, seed: str, arch: str = "amd64") -> bytes:
    """Push a config and a layer blob and return a manifest naming them (not pushed yet)."""
    config = json.dumps({"architecture": arch, "os": "linux", "seed": seed,
                         "rootfs": {"type": "layers", "diff_ids": []}}).encode()
    layer = f"layer {seed} {arch}".encode()
    cd, ld = push_blob(c, repo, config), push_blob(c, repo, layer)
    return json.dumps({
        "schemaVersion": 2, "mediaType": OCI_MANIFEST,
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": cd,
                   "size": len(config)},
        "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar", "digest": ld,
                    "size": len(layer)}],
    }).encode()


def put_manifest(c: httpx.Client, repo: str, ref: str, body: bytes,
                 media_type: str = OCI_MANIFEST) -> str:
    """PUT a manifest under a tag or digest; its digest (checked against the registry's)."""
    r = c.put(f"/v2/{repo}/manifests/{ref}", content=body, headers={"Content-Type": media_type})
    assert r.status_code == 201, r.text
    digest = "sha256:" + hashlib.sha256(body).hexdigest()
    assert r.headers["Docker-Content-Digest"] == digest
    return digest


def push_image(reg: Registry, repo: str, tag: str, seed: str = "") -> str:
    """Push a one-platform image; its manifest digest."""
    with reg.admin(repo) as c:
        return put_manifest(c, repo, tag, image_manifest(c, repo, seed or f"{repo}:{tag}"))


def push_index(reg: Registry, repo: str, tag: str) -> tuple[str, list[str]]:
    """Push a two-platform image (amd64, arm64) under `tag`: (index digest, manifest digests)."""
    with reg.admin(repo) as c:
        parts = []
        for arch in ("amd64", "arm64"):
            body = image_manifest(c, repo, f"{repo}:{tag}", arch)
            parts.append((put_manifest(c, repo, "sha256:" + hashlib.sha256(body).hexdigest(),
                                       body), len(body), arch))
        index = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": d, "size": n,
             "platform": {"architecture": arch, "os": "linux"}} for d, n, arch in parts]}).encode()
        return put_manifest(c, repo, tag, index, OCI_INDEX), [d for d, _, _ in parts]


def _htpasswd(path: Path) -> None:
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt  # bcrypt through libxcrypt: distribution reads only bcrypt entries

    hashed = crypt.crypt(PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=16))
    path.write_text(f"{USER}:{hashed}\n")
    path.chmod(0o644)


@contextlib.contextmanager
def running_registry(*, auth: str | None = None, tls: bool = False,
                     notify: Notify | None = None) -> Iterator[Registry]:
    """Start a registry as `nobody`: auth None | "basic" | "token"; stopped afterwards."""
    require_tool("docker-registry")
    root = scratch_dir("lockstep-registry-")
    token: TokenServer | None = None
    try:
        data = root / "data"
        data.mkdir()
        if _root():
            shutil.chown(data, "nobody", "nogroup")
        ca = make_ca(root) if tls else None
        port = _free_port()
        http: dict[str, Any] = {"addr": f"127.0.0.1:{port}", "secret": "fixed-test-secret"}
        if ca is not None:
            http["tls"] = {"certificate": str(ca.server_crt), "key": str(ca.server_key)}
        cfg: dict[str, Any] = {
            "version": 0.1, "log": {"level": "info"},
            "storage": {"filesystem": {"rootdirectory": str(data)}, "delete": {"enabled": True}},
            "http": http, "health": {"storagedriver": {"enabled": False}},
        }
        if auth == "basic":
            _htpasswd(root / "htpasswd")
            cfg["auth"] = {"htpasswd": {"realm": "test", "path": str(root / "htpasswd")}}
        elif auth == "token":
            token = TokenServer(root / "token.crt")
            cfg["auth"] = {"token": {"realm": token.realm, "service": SERVICE, "issuer": ISSUER,
                                     "rootcertbundle": str(root / "token.crt")}}
        if notify is not None:
            endpoint: dict[str, Any] = {
                "name": "lockstep", "url": notify.url, "timeout": "2s", "threshold": 5,
                "backoff": "1s",
                "ignore": {"actions": ["pull"], "mediatypes": ["application/octet-stream"]}}
            if notify.token:
                endpoint["headers"] = {"Authorization": [f"Bearer {notify.token}"]}
            cfg["notifications"] = {"endpoints": [endpoint]}
        config = root / "config.yml"
        config.write_text(json.dumps(cfg))  # JSON is YAML
        config.chmod(0o644)
        reg = Registry(root, port, auth, ca, token, config, root / "registry.log")
        reg.start()
        try:
            yield reg
        finally:
            stop(reg.proc)
    finally:
        if token is not None:
            token.close()
        shutil.rmtree(root, ignore_errors=True)


def _root() -> bool:
    import os

    return os.geteuid() == 0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# --- a misbehaving proxy in front of the registry (fault modes only) -----------------------------

@dataclass
class Seen:
    """One request the proxy got: the mode it served, and when it ended on our side."""

    mode: str
    method: str
    path: str
    headers: dict[str, str]
    started: float
    ended: float | None = None


class FaultProxy:
    """Forwards to the registry ("pass") unless a queued fault mode says otherwise:

    "500", "403", "429:<seconds>", "404-text" (a router's text/plain 404), "strip-accept"
    (forwarded with only a Docker v2 Accept, so the real registry refuses the OCI manifest),
    "hang" (never answers), "trickle" (one byte of headers every `trickle_every` seconds: each
    read in time, the whole answer never), "redirect:<url>".
    """

    def __init__(self, upstream: str, verify: Any = True, trickle_every: float = 9.0) -> None:
        self.upstream = upstream
        self.trickle_every = trickle_every
        self.modes: list[str] = []
        self.seen: list[Seen] = []
        self.stopping = threading.Event()
        self._lock = threading.Lock()
        self._client = httpx.Client(base_url=upstream, verify=verify, timeout=10)
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), _proxy_handler(self))
        self._server.daemon_threads = True
        self.port = int(self._server.server_address[1])
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True,
                                        kwargs={"poll_interval": 0.05})  # quick shutdown()
        self._thread.start()

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    def queue(self, *modes: str) -> None:
        with self._lock:
            self.modes.extend(modes)

    def next_mode(self) -> str:
        with self._lock:
            return self.modes.pop(0) if self.modes else "pass"

    def record(self, seen: Seen) -> None:
        with self._lock:
            self.seen.append(seen)

    def close(self) -> None:
        self.stopping.set()
        self._server.shutdown()
        self._server.server_close()
        self._client.close()


def _proxy_handler(proxy: FaultProxy) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def do_HEAD(self) -> None:
            self._serve()

        def do_GET(self) -> None:
            self._serve()

        def _serve(self) -> None:
            mode = proxy.next_mode()
            seen = Seen(mode, self.command, self.path, dict(self.headers.items()),
                        time.monotonic())
            proxy.record(seen)
            try:
                self._fault(mode)
            except OSError:
                self.close_connection = True
            finally:
                seen.ended = time.monotonic()

        def _fault(self, mode: str) -> None:
            if mode == "hang":
                self.close_connection = True
                # Until the client gives up (EOF) or the proxy stops: never an answer.
                self.connection.settimeout(30)
                with contextlib.suppress(OSError):
                    self.connection.recv(1)
                return
            if mode == "trickle":
                self.close_connection = True
                for byte in b"HTTP/1.1 200 OK\r\nX-Slow: yes\r\n\r\n":
                    self.wfile.write(bytes([byte]))
                    self.wfile.flush()
                    if proxy.stopping.wait(proxy.trickle_every):
                        return
                return
            if mode.startswith("redirect:"):
                return self._answer(307, {"Location": mode.partition(":")[2]}, b"")
            if mode in ("500", "403"):
                body = json.dumps({"errors": [{"code": "UNKNOWN", "message": mode}]}).encode()
                return self._answer(int(mode), {"Content-Type": "application/json"}, body)
            if mode.startswith("429:"):
                return self._answer(429, {"Retry-After": mode.partition(":")[2],
                                          "Content-Type": "application/json"}, b"{}")
            if mode == "404-text":
                return self._answer(404, {"Content-Type": "text/plain; charset=utf-8"},
                                    b"404 page not found\n")
            headers = {k: v for k, v in self.headers.items()
                       if k.lower() in ("accept", "authorization")}
            if mode == "strip-accept":
                headers["Accept"] = "application/vnd.docker.distribution.manifest.v2+json"
            r = proxy._client.request(self.command, self.path, headers=headers)
            keep = {k.lower(): v for k, v in r.headers.items()
                    if k.lower() in ("content-type", "docker-content-digest", "www-authenticate",
                                     "content-length", "retry-after", "location")}
            self._answer(r.status_code, keep, r.content)

        def _answer(self, status: int, headers: dict[str, str], body: bytes) -> None:
            self.send_response(status)
            for k, v in headers.items():
                if k.lower() != "content-length":
                    self.send_header(k, v)
            self.send_header("Content-Length", headers.get("content-length", str(len(body))))
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            pass

    return Handler


def wait_for(predicate: Any, timeout: float = 10.0) -> None:
    """Poll a condition the test controls (an event list filling), with a deadline."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return
        time.sleep(0.005)
    raise AssertionError(f"condition not met within {timeout}s")


__all__ = ["ACCEPT", "FaultProxy", "Notify", "Registry", "TokenServer", "push_image",
           "push_index", "running_registry"]
