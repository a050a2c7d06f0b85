"""`[scenarios]` in lockstep.toml: step limits, base-version choice, random planner knobs."""

from __future__ import annotations

import json
import re
from typing import Literal

from pydantic import Field, field_validator

from lockstep.release_config import StrictModel

_MODULE = re.compile(r"[A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z_][A-Za-z0-9_]*)*")


class ScenarioSettings(StrictModel):
    """The `[scenarios]` table (spec upgrade-scenarios §2, §3, §5, §7); every key has a default."""

    step_timeout: int = Field(default=600, ge=1)
    max_restarts: int = Field(default=5, ge=0)
    previous_series: int = Field(default=4, ge=1)
    skip_versions: tuple[str, ...] = ()
    random_previous_series: int = Field(default=8, ge=1)
    random_keep_probability: float = Field(default=0.5, ge=0.0, le=1.0)
    random_max_hops: int = Field(default=6, ge=1)
    max_hop_series: int | None = Field(default=None, ge=1)
    random_patch: Literal["random", "latest"] = "random"
    plugin: str | None = None

    @field_validator("plugin")
    @classmethod
    def _plugin(cls, v: str | None) -> str | None:
        if v is not None and not _MODULE.fullmatch(v):
            raise ValueError("must be an importable module name such as 'myproject.checks'")
        return v

    def input_lines(self) -> list[str]:
        """`config <key>=<value>` for every key, defaults included, sorted by key (spec §7 inputs).

        Values are compact JSON, so replay can read them back unambiguously.
        """
        data = self.model_dump(mode="json")
        return [f"config {key}={json.dumps(data[key], separators=(',', ':'), sort_keys=True)}"
                for key in sorted(data)]
