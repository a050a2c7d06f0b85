"""The Kubernetes conversion webhook (spec/rollouts.md §4.5): ConversionReview v1 on `POST /convert`
and `GET /healthz`, over HTTPS, with the certificate and key re-read periodically.

The standard library's threading HTTP server is enough for an endpoint the API server alone calls;
TLS is done per connection in the handler's thread (a slow handshake never blocks accepting), with
whichever certificate was loaded last.
"""

from __future__ import annotations

import io
import json
import socket
import ssl
import sys
import threading
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from email.message import Message
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from lockstep.errors import ConfigError
from lockstep.rollout.convert import ConversionError, convert
from lockstep.rollout.resource import V1ALPHA1, V1ALPHA2

REVIEW_API_VERSION = "apiextensions.k8s.io/v1"
REVIEW_KIND = "ConversionReview"
CONVERT_PATH = "/convert"
HEALTH_PATH = "/healthz"
DEFAULT_RELOAD_EVERY = 3600.0
MAX_BODY = 64 * 1024 * 1024  # the API server's own request limit is 3 MiB per object
IDLE_TIMEOUT = 60.0  # seconds a connection may sit in a handshake or between requests
_DESIRED = (V1ALPHA1, V1ALPHA2)
_METHODS = {CONVERT_PATH: "POST", HEALTH_PATH: "GET"}


def _review(uid: str, result: dict[str, Any],
            converted: list[Any] | None = None) -> dict[str, Any]:
    """A ConversionReview response; `convertedObjects` only on success."""
    response: dict[str, Any] = {"uid": uid, "result": result}
    if converted is not None:
        response["convertedObjects"] = converted
    return {"apiVersion": REVIEW_API_VERSION, "kind": REVIEW_KIND, "response": response}


def failure(uid: str, message: str) -> dict[str, Any]:
    """A failed review: the `metav1.Status` word `Failure`, the message, no objects."""
    return _review(uid, {"status": "Failure", "message": message})


def answer(review: Any) -> tuple[int, dict[str, Any]]:
    """The HTTP status and ConversionReview answering a decoded request body (pure).

    A body that is not a v1 ConversionReview with `request.uid` is a 400 with uid `""`; anything
    wrong with the conversion itself is a 200 `Failure` echoing the uid, as controller-runtime
    answers, so that the API server shows the message. All objects convert, or none is returned.
    """
    if not isinstance(review, dict):
        return 400, failure("", "the body is not a JSON object (expected a ConversionReview)")
    if review.get("apiVersion") != REVIEW_API_VERSION or review.get("kind") != REVIEW_KIND:
        got = f"{review.get('apiVersion')!s} {review.get('kind')!s}"
        return 400, failure("", f"expected a {REVIEW_API_VERSION} {REVIEW_KIND}, got {got}")
    request = review.get("request")
    if not isinstance(request, dict):
        return 400, failure("", "the ConversionReview has no request object")
    uid = request.get("uid")
    if not isinstance(uid, str) or not uid:
        return 400, failure("", "request.uid is missing or not a non-empty string")
    desired = request.get("desiredAPIVersion")
    if desired not in _DESIRED:
        return 200, failure(uid, f"desiredAPIVersion {desired!r} is not supported "
                                 f"(expected {' or '.join(_DESIRED)})")
    objects = request.get("objects", [])
    if not isinstance(objects, list):
        return 200, failure(uid, "request.objects is not a list")
    converted = []
    for index, obj in enumerate(objects):
        try:
            converted.append(convert(obj, desired))
        except ConversionError as exc:
            return 200, failure(uid, f"object {index}: {exc.one_line()}")
    return 200, _review(uid, {"status": "Success"}, converted)


def answer_body(body: bytes) -> tuple[int, dict[str, Any]]:
    """`answer` for raw request bytes: a body that is not UTF-8 JSON is a 400."""
    try:
        review = json.loads(body)
    except (UnicodeDecodeError, ValueError) as exc:
        return 400, failure("", f"the body is not JSON: {exc}")
    return answer(review)


class _BodyError(Exception):
    """The request body cannot be read: answered with `status`, then the connection closes."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _read_body(rfile: io.BufferedIOBase, headers: Message) -> bytes:
    """The request body by Content-Length or chunked transfer coding, at most MAX_BODY bytes."""
    if "chunked" in headers.get("Transfer-Encoding", "").lower():
        chunks: list[bytes] = []
        total = 0
        while True:
            size_line = rfile.readline(1024).split(b";", 1)[0].strip()
            try:
                size = int(size_line, 16)
            except ValueError:
                raise _BodyError(400, "malformed chunked body") from None
            total += size
            if total > MAX_BODY:
                raise _BodyError(413, f"body larger than {MAX_BODY} bytes")
            if size == 0:
                while rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                    pass  # trailers
                return b"".join(chunks)
            chunks.append(rfile.read(size))
            rfile.readline(1024)
    raw = headers.get("Content-Length")
    if raw is None:
        return b""
    try:
        length = int(raw)
    except ValueError:
        raise _BodyError(400, "malformed Content-Length") from None
    if length < 0:
        raise _BodyError(400, "malformed Content-Length")
    if length > MAX_BODY:
        raise _BodyError(413, f"body larger than {MAX_BODY} bytes")
    return rfile.read(length)


def _is_json(content_type: str | None) -> bool:
    """Whether a Content-Type names JSON (parameters such as charset allowed)."""
    media = (content_type or "").split(";", 1)[0].strip().lower()
    return media == "application/json"


class _Handler(BaseHTTPRequestHandler):
    """Routes requests: the two paths, 404 elsewhere, 405 for another method on a known path."""

    protocol_version = "HTTP/1.1"  # keep-alive: the API server reuses connections
    server_version = "lockstep-webhook"
    timeout = IDLE_TIMEOUT

    def _route(self) -> None:
        path = self.path.split("?", 1)[0]  # the API server adds `?timeout=30s`
        allowed = _METHODS.get(path)
        try:
            body = _read_body(self.rfile, self.headers)
        except _BodyError as exc:
            self.close_connection = True
            self._send(exc.status, failure("", str(exc)) if path == CONVERT_PATH else None)
            return
        if allowed is None:
            self._send(404, None)
        elif self.command != allowed and (self.command, allowed) != ("HEAD", "GET"):
            self._send(405, None, {"Allow": allowed})
        elif path == HEALTH_PATH:
            self._send(200, b"ok\n", content_type="text/plain; charset=utf-8")
        elif not _is_json(self.headers.get("Content-Type")):
            self._send(400, failure("", f"Content-Type {self.headers.get('Content-Type')!r} "
                                        "is not application/json"))
        else:
            status, review = self._convert(body)
            self._send(status, review)

    def _convert(self, body: bytes) -> tuple[int, dict[str, Any]]:
        """Answer the review; a bug in conversion is a 500 whose traceback goes to the log."""
        try:
            return answer_body(body)
        except Exception as exc:
            traceback.print_exc(file=sys.stderr)
            return 500, failure("", f"internal error: {type(exc).__name__}: {exc}")

    def _send(self, status: int, payload: dict[str, Any] | bytes | None,
              headers: dict[str, str] | None = None,
              content_type: str = "application/json") -> None:
        if isinstance(payload, dict):
            data = json.dumps(payload, separators=(",", ":")).encode()
        else:
            data = payload or b""
        self.send_response(status)
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        if data:
            self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(data)))
        if self.close_connection:
            self.send_header("Connection", "close")
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(data)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_HEAD = do_OPTIONS = _route

    def version_string(self) -> str:
        """The Server header: the name only, no Python version."""
        return self.server_version

    def log_message(self, format: str, *args: Any) -> None:
        """One line per request on stderr (method, path, status; never a body)."""
        sys.stderr.write(f"webhook: {self.client_address[0]} {format % args}\n")


class CertReloader:
    """The server's TLS context, rebuilt when the certificate or key file changes.

    `reload()` compares the files' bytes with those last loaded; a pair that does not load (a
    half-written rotation) keeps the previous context and is tried again next time.
    """

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert, self.key = cert, key
        self._lock = threading.Lock()
        self._loaded = self._read()
        self._context = self._build()

    def _read(self) -> tuple[bytes, bytes]:
        try:
            return self.cert.read_bytes(), self.key.read_bytes()
        except OSError as exc:
            raise ConfigError(f"cannot read the webhook certificate or key: {exc}",
                              "check --cert and --key") from exc

    def _build(self) -> ssl.SSLContext:
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        ctx.minimum_version = ssl.TLSVersion.TLSv1_2
        try:
            ctx.load_cert_chain(self.cert, self.key)
        except (ssl.SSLError, OSError) as exc:
            raise ConfigError(f"cannot load the webhook certificate {self.cert} with key "
                              f"{self.key}: {exc}",
                              "--cert takes a PEM certificate (chain), --key its PEM key") from exc
        return ctx

    @property
    def context(self) -> ssl.SSLContext:
        """The context new connections are served with."""
        with self._lock:
            return self._context

    def reload(self) -> bool:
        """Re-read both files; True when a changed pair was loaded."""
        current = self._read()
        if current == self._loaded:
            return False
        ctx = self._build()
        with self._lock:
            self._context, self._loaded = ctx, current
        return True


class WebhookServer(ThreadingHTTPServer):
    """A threading HTTP server whose connections are wrapped in TLS in their own thread."""

    daemon_threads = True
    block_on_close = False

    def __init__(self, address: tuple[str, int], certs: CertReloader) -> None:
        self.address_family = socket.AF_INET6 if ":" in address[0] else socket.AF_INET
        self.certs = certs
        super().__init__(address, _Handler)

    def finish_request(self, request: Any, client_address: Any) -> None:
        """Handshake with the current certificate, then serve the connection."""
        request.settimeout(IDLE_TIMEOUT)
        # Headers and body are separate writes: without this, Nagle's algorithm and the
        # client's delayed ACK hold every answer for 40 ms.
        request.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        try:
            tls = self.certs.context.wrap_socket(request, server_side=True)
        except (ssl.SSLError, OSError) as exc:
            sys.stderr.write(f"webhook: {client_address[0]} TLS handshake failed: {exc}\n")
            return
        try:
            super().finish_request(tls, client_address)
        finally:
            tls.close()

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A connection that broke mid-request is one line, not a traceback."""
        exc = sys.exc_info()[1]
        sys.stderr.write(f"webhook: {client_address[0]} connection error: {exc!r}\n")


@dataclass
class Webhook:
    """A running webhook: the server, its serving thread and the certificate reloader's."""

    server: WebhookServer
    stop_event: threading.Event
    threads: tuple[threading.Thread, ...]

    @property
    def port(self) -> int:
        """The port actually bound (useful with port 0)."""
        return int(self.server.server_address[1])

    def stop(self) -> None:
        """Stop serving and wait for both threads."""
        self.stop_event.set()
        self.server.shutdown()
        self.server.server_close()
        for t in self.threads:
            t.join()


def _reload_loop(certs: CertReloader, every: float, stop: threading.Event,
                 on_reload: Callable[[CertReloader], None] | None) -> None:
    """Every `every` seconds, re-read the certificate; a failure is logged, never fatal."""
    while not stop.wait(every):
        try:
            changed = certs.reload()
        except ConfigError as exc:
            sys.stderr.write(f"webhook: certificate reload failed, keeping the previous one: "
                             f"{exc.one_line()}\n")
            continue
        if changed:
            sys.stderr.write(f"webhook: reloaded certificate {certs.cert}\n")
            if on_reload is not None:
                on_reload(certs)


def start(cert: Path, key: Path, host: str = "127.0.0.1", port: int = 8443,
          reload_every: float = DEFAULT_RELOAD_EVERY,
          on_reload: Callable[[CertReloader], None] | None = None) -> Webhook:
    """Load the certificate, bind, and serve in background threads until `stop()`.

    `on_reload` runs after a changed certificate was loaded (the operator writes the CA into the
    CRD's `caBundle` there).
    """
    certs = CertReloader(cert, key)
    try:
        server = WebhookServer((host, port), certs)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {host}:{port}: {exc.strerror or exc}",
                          "pick a free --listen address") from exc
    stop = threading.Event()
    serving = threading.Thread(target=server.serve_forever, name="webhook-serve", daemon=True)
    reloading = threading.Thread(target=_reload_loop, args=(certs, reload_every, stop, on_reload),
                                 name="webhook-reload", daemon=True)
    serving.start()
    reloading.start()
    return Webhook(server, stop, (serving, reloading))
