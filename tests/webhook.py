"""A real HTTP listener on 127.0.0.1 that records webhook deliveries."""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

HOLD_CAP = 120.0  # seconds a held request waits at most: a safety net, not a timing


@dataclass
class Delivery:
    """One received POST."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Listener:
    """A running listener; `deliveries` fills as requests arrive, `answered` as they are answered.

    `hold()` makes it a receiver that takes requests but does not answer them until `release()`,
    so a test can act while a notifier is known to be waiting on it.
    """

    server: ThreadingHTTPServer
    thread: threading.Thread
    deliveries: list[Delivery] = field(default_factory=list)
    status: int = 200
    answered: int = 0
    answering: threading.Event = field(default_factory=threading.Event)

    def __post_init__(self) -> None:
        self.answering.set()

    @property
    def url(self) -> str:
        """The listener's URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def hold(self) -> None:
        """Leave requests from now on unanswered until release()."""
        self.answering.clear()

    def release(self) -> None:
        """Answer held requests and every later one at once."""
        self.answering.set()

    def stop(self) -> None:
        """Shut down and wait for the thread."""
        self.release()
        self.server.shutdown()
        self.server.server_close()
        self.thread.join()


def start(port: int = 0) -> Listener:
    """Start a listener on 127.0.0.1 (a free port unless one is given)."""
    holder: dict[str, Any] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            length = int(self.headers.get("Content-Length", "0"))
            body = self.rfile.read(length)
            listener: Listener = holder["listener"]
            listener.deliveries.append(
                Delivery(self.path, {k.lower(): v for k, v in self.headers.items()}, body))
            listener.answering.wait(HOLD_CAP)
            self.send_response(listener.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            listener.answered += 1

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    listener = Listener(server, thread)
    holder["listener"] = listener
    thread.start()
    return listener
