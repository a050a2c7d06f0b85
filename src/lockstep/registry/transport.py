"""An httpx transport whose requests end within a total deadline and stop at once when cancelled.

httpx's timeouts are per phase (each connect, each read), so a server that sends one byte every
9 s never trips a 10 s read timeout. This network backend clamps every socket wait to what is
left of the request's deadline and waits in short slices, checking the caller's cancel event
between them, so a request ends within its deadline and a Ctrl-C is seen within 0.2 s.
"""

from __future__ import annotations

import contextlib
import errno
import os
import select
import socket
import ssl
import threading
import time
from collections.abc import Iterable, Iterator
from contextvars import ContextVar
from dataclasses import dataclass
from typing import Any

import httpcore
import httpx

SLICE = 0.2  # seconds between two looks at the cancel event during one socket wait


class WaitCancelled(Exception):
    """The caller's cancel event was set (Ctrl-C) while a request or a wait was in progress."""


@dataclass(frozen=True)
class _Deadline:
    at: float  # time.monotonic() by which the request must be complete
    seconds: float


_deadline: ContextVar[_Deadline | None] = ContextVar("lockstep_registry_deadline", default=None)
_cancel: ContextVar[threading.Event | None] = ContextVar("lockstep_registry_cancel", default=None)


@contextlib.contextmanager
def deadline(seconds: float) -> Iterator[None]:
    """Every socket operation inside ends by `seconds` from now (connect, TLS, headers, body)."""
    token = _deadline.set(_Deadline(time.monotonic() + seconds, seconds))
    try:
        yield
    finally:
        _deadline.reset(token)


@contextlib.contextmanager
def cancellable(event: threading.Event | None) -> Iterator[None]:
    """Requests made inside stop with WaitCancelled soon after `event` is set."""
    token = _cancel.set(event)
    try:
        yield
    finally:
        _cancel.reset(token)


def check_cancelled() -> None:
    """Raise WaitCancelled when the current cancel event is set."""
    event = _cancel.get()
    if event is not None and event.is_set():
        raise WaitCancelled("cancelled")


def _budget(timeout: float | None, error: type[Exception]) -> tuple[float, float | None]:
    """(the next slice to wait, the absolute end of this operation or None): raises `error`
    when the request's deadline has passed."""
    check_cancelled()
    now = time.monotonic()
    ends = [now + timeout] if timeout is not None else []
    limit = _deadline.get()
    if limit is not None:
        ends.append(limit.at)
    end = min(ends) if ends else None
    if end is not None and end <= now:
        seconds = limit.seconds if limit is not None else timeout
        raise error(f"request not complete within {seconds:g}s")
    return (min(SLICE, end - now) if end is not None else SLICE), end


def _sliced(timeout: float | None, error: type[Exception], op: Any, sock: socket.socket) -> Any:
    """Run a resumable blocking socket operation in slices until done, cancelled or past its
    deadline (recv and the TLS handshake are resumable after a socket timeout)."""
    while True:
        step, _ = _budget(timeout, error)
        sock.settimeout(step)
        try:
            return op()
        except (TimeoutError, ssl.SSLWantReadError, ssl.SSLWantWriteError):
            continue


class _Stream(httpcore.NetworkStream):
    """A socket (plain or TLS) whose reads and handshake obey the deadline and cancel event."""

    def __init__(self, sock: socket.socket) -> None:
        self._sock = sock

    def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        try:
            data: bytes = _sliced(timeout, httpcore.ReadTimeout,
                                  lambda: self._sock.recv(max_bytes), self._sock)
        except OSError as exc:
            raise httpcore.ReadError(str(exc)) from exc
        return data

    def write(self, buffer: bytes, timeout: float | None = None) -> None:
        # Writes are not sliced (a timed-out send may have sent part): requests here are small.
        while buffer:
            _, end = _budget(timeout, httpcore.WriteTimeout)
            self._sock.settimeout(None if end is None else max(end - time.monotonic(), 0.001))
            try:
                sent = self._sock.send(buffer)
            except TimeoutError as exc:
                raise httpcore.WriteTimeout(str(exc)) from exc
            except OSError as exc:
                raise httpcore.WriteError(str(exc)) from exc
            buffer = buffer[sent:]

    def close(self) -> None:
        self._sock.close()

    def start_tls(self, ssl_context: ssl.SSLContext, server_hostname: str | None = None,
                  timeout: float | None = None) -> httpcore.NetworkStream:
        try:
            tls = ssl_context.wrap_socket(self._sock, server_hostname=server_hostname,
                                          do_handshake_on_connect=False)
            _sliced(timeout, httpcore.ConnectTimeout, tls.do_handshake, tls)
        except httpcore.ConnectTimeout:
            self._sock.close()
            raise
        except OSError as exc:
            self._sock.close()
            raise httpcore.ConnectError(str(exc)) from exc
        except BaseException:
            self._sock.close()
            raise
        return _Stream(tls)

    def get_extra_info(self, info: str) -> Any:
        if info == "ssl_object" and isinstance(self._sock, ssl.SSLSocket):
            return self._sock._sslobj  # type: ignore[attr-defined]
        if info == "client_addr":
            return self._sock.getsockname()
        if info == "server_addr":
            return self._sock.getpeername()
        if info == "socket":
            return self._sock
        if info == "is_readable":
            return _readable(self._sock)
        return None


def _readable(sock: socket.socket) -> bool:
    """Whether an idle pooled connection has data or EOF waiting (the peer closed it)."""
    try:
        ready, _, _ = select.select([sock], [], [], 0)
    except (OSError, ValueError):
        return True
    return bool(ready)


class _Backend(httpcore.NetworkBackend):
    """TCP connects in slices (non-blocking connect + poll), so they too obey deadline and
    cancel event; httpcore's own backend uses one blocking `create_connection`."""

    def connect_tcp(self, host: str, port: int, timeout: float | None = None,
                    local_address: str | None = None,
                    socket_options: Iterable[Any] | None = None) -> httpcore.NetworkStream:
        _budget(timeout, httpcore.ConnectTimeout)
        try:
            infos = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)
        except OSError as exc:
            raise httpcore.ConnectError(str(exc)) from exc
        error: Exception = httpcore.ConnectError(f"no address for {host}")
        for family, kind, proto, _, address in infos:
            sock = socket.socket(family, kind, proto)
            try:
                self._connect(sock, address, timeout)
            except httpcore.ConnectTimeout:
                sock.close()
                raise
            except httpcore.ConnectError as exc:
                sock.close()
                error = exc
                continue
            except BaseException:
                sock.close()
                raise
            for option in socket_options or ():
                sock.setsockopt(*option)
            sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return _Stream(sock)
        raise error

    @staticmethod
    def _connect(sock: socket.socket, address: Any, timeout: float | None) -> None:
        sock.setblocking(False)
        code = sock.connect_ex(address)
        if code not in (0, errno.EINPROGRESS):
            raise httpcore.ConnectError(f"connect to {address[0]}:{address[1]}: "
                                        f"{os.strerror(code)}")
        while code != 0:
            step, _ = _budget(timeout, httpcore.ConnectTimeout)
            _, writable, _ = select.select([], [sock], [], step)
            if writable:
                code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if code != 0:
                    raise httpcore.ConnectError(f"connect to {address[0]}:{address[1]}: "
                                                f"{os.strerror(code)}")
                break
        sock.setblocking(True)

    def connect_unix_socket(self, path: str, timeout: float | None = None,
                            socket_options: Iterable[Any] | None = None
                            ) -> httpcore.NetworkStream:
        raise httpcore.ConnectError("unix sockets are not used for registries")

    def sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class DeadlineTransport(httpx.HTTPTransport):
    """httpx's transport with the deadline-aware network backend (same pool, same TLS)."""

    def __init__(self, verify: ssl.SSLContext | bool = True) -> None:
        super().__init__(verify=verify, trust_env=False)
        ssl_context = verify if isinstance(verify, ssl.SSLContext) else None
        if ssl_context is None:
            ssl_context = ssl.create_default_context()
            if verify is False:
                ssl_context.check_hostname = False
                ssl_context.verify_mode = ssl.CERT_NONE
        self._pool = httpcore.ConnectionPool(ssl_context=ssl_context, max_connections=10,
                                             max_keepalive_connections=5, keepalive_expiry=30.0,
                                             network_backend=_Backend())
