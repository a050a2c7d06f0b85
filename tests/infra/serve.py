"""`lockstep serve` as a real process on 127.0.0.1 for the tests, and small HTTP helpers."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import os
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests.infra import free_port, start, stop, tail, wait_until

REPO_ROOT = Path(__file__).resolve().parents[2]
TOKEN = "serve-test-token-0123456789"
SECRET = "serve-test-hmac-secret-0123456789"


@dataclass
class Served:
    """A running server: its base URL, process and log."""

    url: str
    proc: subprocess.Popen[bytes]
    log: Path

    def client(self, token: str | None = TOKEN) -> httpx.Client:
        """An HTTP client for it, with the bearer token unless `token` is None."""
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=self.url, headers=headers, timeout=30)

    def log_text(self) -> str:
        """Everything the server logged so far."""
        return self.log.read_text(errors="replace")


def sign(body: bytes, secret: str = SECRET) -> str:
    """The X-Lockstep-Signature value of a body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def _ready(url: str) -> bool:
    try:
        return httpx.get(f"{url}/openapi.json", timeout=0.5).status_code == 200
    except httpx.HTTPError:
        return False


@contextlib.contextmanager
def running_server(ws_dir: Path, log_dir: Path, *args: str, token: str | None = TOKEN,
                   secret: str | None = SECRET) -> Iterator[Served]:
    """`python -m lockstep serve -C ws_dir --port P ARGS` until the block ends (a port taken
    in between is retried with another)."""
    env = dict(os.environ, PYTHONPATH=str(REPO_ROOT / "src"))
    for name, value in (("LOCKSTEP_SERVE_TOKEN", token),
                        ("LOCKSTEP_SERVE_SUBMISSIONS_SECRET", secret)):
        env.pop(name, None)
        if value is not None:
            env[name] = value
    log_dir.mkdir(parents=True, exist_ok=True)
    for attempt in range(3):
        port = free_port()
        log = log_dir / f"serve.{port}.log"
        proc = start([sys.executable, "-m", "lockstep", "serve", "-C", str(ws_dir), "--port",
                      str(port), *args], log, env=env)
        url = f"http://127.0.0.1:{port}"
        try:
            wait_until(lambda u=url: _ready(u), proc, log, timeout=60)  # type: ignore[misc]
        except RuntimeError:
            if "address already in use" in tail(log).lower() and attempt < 2:
                continue
            raise
        try:
            yield Served(url, proc, log)
        finally:
            stop(proc)
        return


@contextlib.contextmanager
def app_in_thread(app: object) -> Iterator[str]:
    """Serve an ASGI app with uvicorn on a thread of this process (a free port bound first,
    so there is no race); yields its base URL."""
    import socket
    import threading

    import uvicorn

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning"))  # type: ignore[arg-type]
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    try:
        for _ in range(3000):
            if server.started:
                break
            if not thread.is_alive():
                raise RuntimeError("uvicorn exited before it started")
            thread.join(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(10)
        sock.close()
