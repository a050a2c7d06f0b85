"""A real HTTP listener on 127.0.0.1 that records webhook deliveries."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class Delivery:
    """One received POST."""

    path: str
    headers: dict[str, str]
    body: bytes


@dataclass
class Listener:
    """A running listener; `deliveries` fills as requests arrive."""

    server: ThreadingHTTPServer
    thread: threading.Thread
    deliveries: list[Delivery] = field(default_factory=list)
    status: int = 200
    delay: float = 0.0  # seconds to wait before answering
    answered_at: list[float] = field(default_factory=list)

    @property
    def url(self) -> str:
        """The listener's URL."""
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/hook"

    def stop(self) -> None:
        """Shut down and wait for the thread."""
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
            time.sleep(listener.delay)
            self.send_response(listener.status)
            self.send_header("Content-Length", "0")
            self.end_headers()
            listener.answered_at.append(time.time())

        def log_message(self, format: str, *args: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    listener = Listener(server, thread)
    holder["listener"] = listener
    thread.start()
    return listener
