"""The registry webhook (spec §5.3): a push of an awaited manifest wakes that wait at once.

Served on a thread with the standard library's ThreadingHTTPServer (a handful of small POSTs;
no web framework needed). One path per registry, `<path>/<registry key>`. Every request with
the right bearer token gets 200, even ones we ignore or cannot parse, because the distribution
registry retries a non-2xx answer forever and in order, stalling every later event.
"""

from __future__ import annotations

import hmac
import json
import logging
import threading
import time
import urllib.parse
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from lockstep.errors import ConfigError
from lockstep.registry.distribution import MANIFEST_TYPES, clean
from lockstep.transport.urls import is_loopback

log = logging.getLogger("lockstep.registry.notifications")

MAX_BODY = 1024 * 1024
EVENT_TYPES = {"application/vnd.docker.distribution.events.v1+json",
               "application/vnd.docker.distribution.events.v2+json", "application/json"}
REJECT_LOG_EVERY = 60.0  # seconds between two "token mismatch" log lines

Listener = Callable[[], None]


class NotificationServer:
    """The webhook endpoint. `listen(registry, repository, fn)` calls `fn` (on the server's
    thread: keep it quick) for each push of a manifest to that repository."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0, path: str = "/events",
                 token: str | None = None) -> None:
        if not token and not is_loopback(host):
            raise ConfigError(f"notifications listen on {host}, not a loopback address, "
                              "without a token",
                              "set token_env in [release] notifications")
        self.path = "/" + path.strip("/")
        self._token = token.encode() if token else None
        self._listeners: dict[tuple[str, str], list[Listener]] = {}
        self._lock = threading.Lock()
        self._last_reject_log = -REJECT_LOG_EVERY
        self.received = 0  # requests answered, for tests and the progress line
        self.rejected = 0
        self.wakes = 0
        self._server = ThreadingHTTPServer((host, port), _handler(self))
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever,
                                        name="lockstep-notifications", daemon=True)

    @property
    def port(self) -> int:
        """The port listened on (useful with port 0)."""
        return int(self._server.server_address[1])

    def url(self, registry: str) -> str:
        """The endpoint URL to configure in that registry's `notifications.endpoints`."""
        host = str(self._server.server_address[0])
        return f"http://{host}:{self.port}{self.path}/{registry}"

    def start(self) -> NotificationServer:
        """Serve on a background thread."""
        self._thread.start()
        return self

    def close(self) -> None:
        """Stop serving and close the socket."""
        if self._thread.is_alive():
            self._server.shutdown()
            self._thread.join()
        self._server.server_close()

    def __enter__(self) -> NotificationServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    def listen(self, registry: str, repository: str, fn: Listener) -> Callable[[], None]:
        """Call `fn` on each manifest push to `registry`/`repository`; returns the undo."""
        key = (registry.lower(), repository)
        with self._lock:
            self._listeners.setdefault(key, []).append(fn)

        def remove() -> None:
            with self._lock:
                fns = self._listeners.get(key, [])
                if fn in fns:
                    fns.remove(fn)
                if not fns:
                    self._listeners.pop(key, None)

        return remove

    # --- called by the handler ---------------------------------------------------------------

    def authorised(self, header: str | None) -> bool:
        """Constant-time check of `Authorization: Bearer <token>` (any request when no token)."""
        if self._token is None:
            return True
        given = header.encode("latin-1", "replace") if header else b""
        return hmac.compare_digest(given, b"Bearer " + self._token)

    def rejected_from(self, addr: str) -> None:
        """Log a token mismatch, at most once a minute."""
        now = time.monotonic()
        with self._lock:
            self.rejected += 1
            if now - self._last_reject_log < REJECT_LOG_EVERY:
                return
            self._last_reject_log = now
        log.warning("notifications from %s rejected: token mismatch "
                    "(the registry will retry this event forever)", addr)

    def deliver(self, path: str, content_type: str, body: bytes | None) -> None:
        """Wake the waits the envelope's manifest pushes concern; ignore everything else."""
        registry = self._registry_of(path)
        if registry is None:
            return
        if body is None:
            log.warning("notification to %s dropped: body over %d bytes", clean(path), MAX_BODY)
            return
        if content_type.split(";")[0].strip().lower() not in EVENT_TYPES:
            log.warning("notification to %s dropped: content type %s", clean(path),
                        clean(content_type, 80))
            return
        try:
            events = json.loads(body)["events"]
            if not isinstance(events, list):
                raise TypeError("events is not a list")
        except (ValueError, KeyError, TypeError) as exc:
            log.warning("notification to %s dropped: not an events envelope (%s)", clean(path),
                        clean(str(exc), 80))
            return
        for event in events:
            repository = pushed_manifest(event)
            if repository is None:
                continue
            with self._lock:
                fns = list(self._listeners.get((registry, repository), ()))
                self.wakes += bool(fns)
            for fn in fns:
                fn()

    def _registry_of(self, path: str) -> str | None:
        path = urllib.parse.unquote(urllib.parse.urlsplit(path).path).rstrip("/")
        prefix = self.path.rstrip("/") + "/"
        if not path.startswith(prefix):
            return None
        key = path[len(prefix):]
        return key.lower() if key and "/" not in key else None


def pushed_manifest(event: Any) -> str | None:
    """The repository of a manifest `push` event, else None (pulls, blobs, deletes …)."""
    if not isinstance(event, dict) or event.get("action") != "push":
        return None
    target = event.get("target")
    if not isinstance(target, dict) or target.get("mediaType") not in MANIFEST_TYPES:
        return None
    repository = target.get("repository")
    return repository if isinstance(repository, str) and repository else None


def _handler(server: NotificationServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        """One webhook request: authenticate, read (bounded), answer, then deliver."""

        timeout = 10  # a client that stalls mid-body is dropped
        protocol_version = "HTTP/1.1"
        server_version = "lockstep"

        def do_POST(self) -> None:
            body = self._read_body()
            with server._lock:
                server.received += 1
            if not server.authorised(self.headers.get("Authorization")):
                server.rejected_from(self.client_address[0])
                self._answer(401)
                return
            self._answer(200)
            server.deliver(self.path, self.headers.get("Content-Type", ""), body)

        def do_GET(self) -> None:
            self._answer(200 if server.authorised(self.headers.get("Authorization")) else 401)

        do_PUT = do_POST

        def _read_body(self) -> bytes | None:
            """The body, or None when over MAX_BODY (then drained, so the connection stays
            usable and the sender sees a clean answer)."""
            length = self.headers.get("Content-Length")
            if length is not None:
                try:
                    remaining = max(0, int(length))
                except ValueError:
                    self.close_connection = True
                    return b""
                if remaining <= MAX_BODY:
                    return self.rfile.read(remaining)
                while remaining > 0:
                    chunk = self.rfile.read(min(remaining, 65536))
                    if not chunk:
                        break
                    remaining -= len(chunk)
                return None
            if "chunked" in self.headers.get("Transfer-Encoding", "").lower():
                try:
                    return self._read_chunked()
                except ValueError:
                    self.close_connection = True
                    return b""
            return b""

        def _read_chunked(self) -> bytes | None:
            data, over = bytearray(), False
            while True:
                size = int(self.rfile.readline(64).split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    while self.rfile.readline(1024) not in (b"\r\n", b"\n", b""):
                        pass
                    return None if over else bytes(data)
                chunk = self.rfile.read(size)
                self.rfile.readline(8)
                if len(data) + len(chunk) > MAX_BODY:
                    over = True
                elif not over:
                    data += chunk

        def _answer(self, status: int) -> None:
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            log.debug("notifications: " + format, *args)

    return Handler
