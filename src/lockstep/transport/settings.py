"""What the transport needs to know, as plain resolved values: per-host credentials and CA,
insecure hosts, timeouts. `from_config` builds it from lockstep.toml and the environment."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from lockstep.errors import ConfigError
from lockstep.transport.redact import Redactor

if TYPE_CHECKING:
    from lockstep.config import Config

LOOKUP_TIMEOUT = 30.0
TRANSFER_TIMEOUT = 300.0


@dataclass(frozen=True)
class HostAuth:
    """One `[git."host[:port]"]` table, resolved: the secret values themselves, not their names."""

    username: str | None = None
    password: str | None = None
    ca_file: Path | None = None
    insecure: bool = False  # plain http/git allowed and TLS unverified, warned on every use
    missing: str | None = None  # an unset username_env/password_env: an error once used

    def __repr__(self) -> str:
        shown = "***" if self.password else None
        return (f"HostAuth(username={self.username!r}, password={shown!r}, "
                f"ca_file={self.ca_file!r}, insecure={self.insecure!r}, missing={self.missing!r})")


@dataclass(frozen=True)
class Settings:
    """The transport's configuration for one run."""

    hosts: Mapping[str, HostAuth] = field(default_factory=dict)  # key: host or host:port
    insecure_hosts: frozenset[str] = frozenset()
    lookup_timeout: float = LOOKUP_TIMEOUT
    transfer_timeout: float = TRANSFER_TIMEOUT
    bundle_dir: Path | None = None  # where CA bundles are written; None: a private temp dir

    def host(self, key: str | None) -> HostAuth | None:
        """The settings of a host key (`host` or `host:port`), if configured."""
        return None if key is None else self.hosts.get(key)

    def allowed_insecure(self) -> frozenset[str]:
        """Hosts where plain http/git is allowed: listed ones and those marked insecure."""
        return self.insecure_hosts | {k for k, h in self.hosts.items() if h.insecure}

    def redactor(self) -> Redactor:
        """A redactor for every secret these settings hold."""
        return Redactor(pairs=[(h.username or "", h.password) for h in self.hosts.values()
                               if h.password])


def from_config(cfg: Config, root: Path, environ: Mapping[str, str] | None = None) -> Settings:
    """Resolve `[git.*]` (secret values from the named environment variables, `ca_file`
    relative to the workspace root) and `[release]`'s git timeouts and insecure hosts.

    An unset variable is recorded, not raised: only a command that reaches that host fails
    (`missing_credentials`), so the queue is not stopped by a release-only host.
    """
    env = os.environ if environ is None else environ
    hosts: dict[str, HostAuth] = {}
    for key, host in cfg.git.items():
        wanted = [v for v in (host.username_env, host.password_env) if v is not None]
        missing = next((v for v in wanted if v not in env), None)
        user = env.get(host.username_env) if host.username_env and not missing else None
        password = env.get(host.password_env) if host.password_env and not missing else None
        ca = None if host.ca_file is None else (root / host.ca_file)
        hosts[key] = HostAuth(user, password, ca, host.insecure, missing)
    timeouts = cfg.release.git_timeout
    return Settings(hosts, frozenset(cfg.release.insecure_hosts), timeouts.lookup,
                    timeouts.transfer, root / ".lockstep" / "cache" / "ca")


def missing_credentials(key: str, var: str) -> ConfigError:
    """The error for a host whose credential variable is not set."""
    return ConfigError(f'[git."{key}"] names the environment variable {var}, which is not set',
                       f"export {var} before running lockstep, or remove the entry")
