"""Picking a listening port before the server binds it, so the URL can be printed first."""

from __future__ import annotations

import socket


def free_port(host: str) -> int:
    """A port nobody listens on now at `host` (for --port 0)."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])
