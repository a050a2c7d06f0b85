"""What `lockstep serve` is configured with: where the write token and the submission secrets
come from, and whether reads need the token too.

The `[serve]` table of lockstep.toml maps onto ServeSettings (the `serve` command's options
override it).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Literal

from pydantic import Field, field_validator

from lockstep import names
from lockstep.errors import ConfigError, ValidationError
from lockstep.release_config import StrictModel

if TYPE_CHECKING:  # config.py can import this module to add the [serve] table
    from lockstep.workspace import Workspace

DEFAULT_TOKEN_ENV = "LOCKSTEP_SERVE_TOKEN"  # noqa: S105 (a variable name, not a secret)
DEFAULT_SUBMISSIONS_ENV = "LOCKSTEP_SERVE_SUBMISSIONS_SECRET"
MIN_SECRET = 16  # characters: a shorter token or HMAC key is refused at startup


class ServeSettings(StrictModel):
    """The `[serve]` table: env variable names only, never the secrets themselves."""

    token_env: str = DEFAULT_TOKEN_ENV
    reads: Literal["open", "token"] = "open"
    submissions_secret_env: str = DEFAULT_SUBMISSIONS_ENV
    component_secret_envs: dict[str, str] = Field(default_factory=dict)
    poll_seconds: float = Field(default=1.0, gt=0, le=60)
    cache_seconds: float = Field(default=0.5, ge=0, le=10)

    @field_validator("token_env", "submissions_secret_env")
    @classmethod
    def _env_name(cls, v: str) -> str:
        return env_name(v)

    @field_validator("component_secret_envs")
    @classmethod
    def _component_envs(cls, v: dict[str, str]) -> dict[str, str]:
        for component, env in v.items():
            try:
                names.component_name(component)
            except ValidationError as exc:
                raise ValueError(exc.message) from None
            env_name(env)
        return v


def env_name(v: str) -> str:
    """An environment variable name (letters, digits, `_`; not starting with a digit)."""
    if not v or not v.replace("_", "A").isalnum() or v[0].isdigit():
        raise ValueError(f"{v!r} is not an environment variable name")
    return v


@dataclass(frozen=True)
class Secrets:
    """The secrets read from the environment at startup (None: that feature is off).
    `components` holds the HMAC keys scoped to one component each (set ones only)."""

    token: str | None
    submissions: bytes | None
    components: Mapping[str, bytes] = field(default_factory=dict)

    @property
    def submissions_enabled(self) -> bool:
        """Whether any key can sign a submission."""
        return self.submissions is not None or bool(self.components)


def settings_of(ws: Workspace) -> ServeSettings:
    """The workspace's `[serve]` settings (the defaults when lockstep.toml has no such table)."""
    return ws.config.serve


def read_secrets(settings: ServeSettings, environ: dict[str, str] | None = None) -> Secrets:
    """Read the token and the submission secret from the environment; a set but too short
    value is a configuration error (a guessable token is worse than none)."""
    env = dict(os.environ) if environ is None else environ

    def one(name: str, what: str) -> str | None:
        value = env.get(name) or None
        if value is not None and len(value) < MIN_SECRET:
            raise ConfigError(f"${name} ({what}) is {len(value)} characters long",
                              f"use at least {MIN_SECRET}, e.g. `openssl rand -hex 32`")
        return value

    token = one(settings.token_env, "the serve API token")
    secret = one(settings.submissions_secret_env, "the submissions HMAC secret")
    scoped = {component: one(env, f"the submissions HMAC secret of {component}")
              for component, env in sorted(settings.component_secret_envs.items())}
    return Secrets(token=token, submissions=secret.encode() if secret else None,
                   components={c: v.encode() for c, v in scoped.items() if v is not None})
