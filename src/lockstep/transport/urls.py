"""Git URL validation (spec/release.md §7) and the facts the transport needs from a URL.

Accepted: https, ssh (also scp-like `user@host:path`), file and local paths; http and git only
to loopback or a host listed as insecure. Refused: a leading `-`, `<transport>::` forms, a
password in the URL, whitespace or control characters.
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Collection
from dataclasses import dataclass
from urllib.parse import urlsplit

from lockstep.errors import ConfigError

SCHEMES = ("https", "ssh", "file", "http", "git")
INSECURE_SCHEMES = ("http", "git")
DEFAULT_PORTS = {"https": 443, "http": 80, "ssh": 22, "git": 9418}
_TRANSPORT_PREFIX = re.compile(r"^[A-Za-z][A-Za-z0-9+.-]*::")
_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]*)://")
# git's scp-like form: a colon before any slash, optionally `user@` (git/git connect.c).
_SCP = re.compile(r"^(?:(?P<user>[^@/:]+)@)?(?P<host>\[[^\]/]+\]|[^@/:\[\]]+):(?P<path>.*)$")
_HINT = ("use https://host/path, ssh://user@host/path, user@host:path or a local path; "
         'credentials go in [git."host"] username_env / password_env')


@dataclass(frozen=True)
class GitUrl:
    """A validated git URL: its scheme (as GIT_ALLOW_PROTOCOL names it) and host key."""

    text: str
    scheme: str  # https, http, ssh, git or file (local paths too)
    hostname: str | None  # lowercase, without brackets; None for file
    port: int | None  # explicit port, None when absent

    @property
    def host(self) -> str | None:
        """The `[git."…"]` key: the host, with `:port` when it is not the scheme's default."""
        if self.hostname is None:
            return None
        name = f"[{self.hostname}]" if ":" in self.hostname else self.hostname
        if self.port is not None and self.port != DEFAULT_PORTS.get(self.scheme):
            return f"{name}:{self.port}"
        return name

    @property
    def insecure(self) -> bool:
        """Whether the URL speaks plain text (http, git): allowed to few hosts, always warned."""
        return self.scheme in INSECURE_SCHEMES


def is_loopback(host: str) -> bool:
    """localhost or a loopback address (127.0.0.0/8, ::1)."""
    host = host.strip("[]").lower()
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def parse(url: str, insecure_hosts: Collection[str] = ()) -> GitUrl:
    """Validate a git URL by §7's rules; ConfigError (with the URL's password hidden) if refused.

    `insecure_hosts` lists host keys (`host` or `host:port`) where http and git are allowed.
    """
    if url.startswith("-"):
        raise ConfigError(f"git URL {_shown(url)} starts with '-' (git would read an option)",
                          _HINT)
    if _TRANSPORT_PREFIX.match(url):
        raise ConfigError(f"git URL {_shown(url)} uses a `<transport>::` form, which runs "
                          "arbitrary programs", _HINT)
    if not url or url != url.strip() or any(c.isspace() or ord(c) < 32 or ord(c) == 127
                                            for c in url):
        raise ConfigError(f"git URL {_shown(url)} is empty or holds whitespace or control "
                          "characters", _HINT)
    scheme_match = _SCHEME.match(url)
    if scheme_match:
        return _parse_scheme_url(url, scheme_match.group(1).lower(), insecure_hosts)
    scp = _SCP.match(url)
    if scp and "/" not in url.split(":", 1)[0]:
        host = scp.group("host").strip("[]").lower()
        return GitUrl(url, "ssh", host, None)
    return GitUrl(url, "file", None, None)


def _parse_scheme_url(url: str, scheme: str, insecure_hosts: Collection[str]) -> GitUrl:
    if scheme not in SCHEMES:
        raise ConfigError(f"git URL {_shown(url)}: scheme {scheme!r} is not allowed",
                          "use https, ssh or file (http and git only to loopback or an "
                          "insecure host)")
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError as exc:
        raise ConfigError(f"git URL {_shown(url)} is malformed: {exc}", _HINT) from None
    if parts.password is not None:
        raise ConfigError(f"git URL {_shown(url)} holds a password", _HINT)
    if scheme == "file":
        return GitUrl(url, "file", None, None)
    hostname = (parts.hostname or "").lower()
    if not hostname:
        raise ConfigError(f"git URL {_shown(url)} names no host", _HINT)
    found = GitUrl(url, scheme, hostname, port)
    if found.insecure and not is_loopback(hostname) and not (
            found.host in insecure_hosts or hostname in insecure_hosts):
        raise ConfigError(
            f"git URL {url}: plain {scheme} is allowed only to loopback or a host marked "
            "insecure",
            f'use https, or set insecure = true under [git."{found.host}"] if you accept '
            "an unencrypted, unauthenticated connection")
    return found


def _shown(url: str) -> str:
    """The URL quoted for an error, any `user:password@` reduced to `user:***@`."""
    return repr(re.sub(r"(://[^/@:\s]*):[^/\s]*@", r"\1:***@", url))
