"""`[distribution]` in lockstep.toml: the command that builds a release's artifacts, and where
they are published (a directory per release, or one OCI artifact in a registry)."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, field_validator, model_validator

from lockstep import config_values, names
from lockstep.release_config import StrictModel

DEFAULT_DIRECTORY = ".lockstep/dist"


class DistributionSettings(StrictModel):
    """The `[distribution]` table; without `command`, no release gets a distribution.

    Distributions are built only after a landing, from the landed tag: no key here can make
    lockstep publish something untested or build before the stages passed (unknown keys are
    errors)."""

    command: list[str] | None = None
    timeout: float = 3600.0
    publish: Literal["directory", "oci"] = "directory"
    directory: str = DEFAULT_DIRECTORY
    repository: str | None = None  # the OCI reference (registry/name) when publish = "oci"
    configuration: str | None = None  # the manifest configuration built (default: its first)
    pass_env: list[str] = Field(default_factory=list)
    retries: int = Field(default=3, ge=0, le=20)  # automatic tries after infrastructure faults

    @field_validator("command")
    @classmethod
    def _command(cls, v: list[str] | None) -> list[str] | None:
        return None if v is None else config_values.argv(v)

    @field_validator("timeout", mode="before")
    @classmethod
    def _timeout(cls, v: object) -> object:
        return config_values.positive_seconds(v)

    @field_validator("directory")
    @classmethod
    def _directory(cls, v: str) -> str:
        if not v.strip():
            raise ValueError("must name a directory, e.g. '.lockstep/dist'")
        if not v.startswith("/"):
            names.relative_path(v, "distribution directory")
        return v

    @field_validator("configuration")
    @classmethod
    def _configuration(cls, v: str | None) -> str | None:
        return None if v is None else names.configuration_name(v)

    @field_validator("pass_env")
    @classmethod
    def _pass_env(cls, v: list[str]) -> list[str]:
        config_values.pass_env(v)
        for i, name in enumerate(v):
            if name.startswith("LOCKSTEP_"):
                raise ValueError(f"entry {i} ({name!r}): LOCKSTEP_* variables are set by "
                                 "lockstep, never passed through")
        return v

    @model_validator(mode="after")
    def _target(self) -> DistributionSettings:
        if self.publish == "oci" and not self.repository:
            raise ValueError("publish = \"oci\" needs repository, the OCI reference to push "
                             "to, e.g. \"registry.example.com/team/dist\"")
        if self.publish == "directory" and self.repository is not None:
            raise ValueError("repository belongs to publish = \"oci\"; a directory publish "
                             "uses directory")
        return self
