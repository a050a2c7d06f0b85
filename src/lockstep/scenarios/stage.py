"""The queue's `upgrade` stage kind (spec upgrade-scenarios §9, queue §3.3), the pure half: which
scenario it runs, from which release, with which seed, as the argv of `lockstep scenario run`,
and the lines that name a failed run's check, phase, step and `FAILED_` file in the stage log.

The caller (lockstep.stages) lists the release tags reachable from the base, reads the base
release's manifest and runs the argv; nothing here touches git or a process.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from lockstep.errors import ValidationError
from lockstep.scenarios.builtin import SCENARIOS
from lockstep.scenarios.versions import TagFormat

STAGE_KINDS = ("upgrade",)
DEFAULT_SCENARIO = "zero-downtime-upgrade"
FIRST_RELEASE_SCENARIO = "zero-downtime-restart"  # before the first integration release
INFRA_EXIT = 75  # the scenario CLI's infrastructure failure, whatever the stage's infra_exit_code
NO_BASE_CONFIGURATION = "no-base-configuration"  # the event of a base lacking the configuration
_FROM_BASES = ("last", "seeded")  # scenarios whose `--from` the stage sets (spec §9)


def check_kind(kind: str) -> str:
    """A known stage kind, else a one-line ValidationError listing the known ones."""
    if kind not in STAGE_KINDS:
        raise ValidationError(f"unknown stage kind {kind!r}",
                              f"known kinds: {', '.join(STAGE_KINDS)}; or give a `command`")
    return kind


def check_scenario(name: str) -> str:
    """A built-in scenario's name, else a one-line ValidationError listing them."""
    if name not in SCENARIOS:
        raise ValidationError(f"unknown scenario {name!r}",
                              f"known scenarios: {', '.join(SCENARIOS)}")
    return name


def stage_seed(candidate: str) -> int:
    """The first 63 bits, big-endian, of the SHA-256 of the candidate's tree SHA (UTF-8): every
    retry and rerun of the same candidate replays the same plan."""
    return int.from_bytes(hashlib.sha256(candidate.encode("utf-8")).digest()[:8], "big") >> 1


def releases_newest_first(tags: Iterable[str], tag_format: str) -> list[str]:
    """The integration release tags among `tags`, newest first: tags not following the tag
    format and prereleases (`-suffix`) are not releases."""
    fmt = TagFormat(tag_format)
    parsed = [v for v in map(fmt.parse, set(tags)) if v is not None and v.prerelease is None]
    return [v.tag for v in sorted(parsed, key=lambda v: v.key, reverse=True)]


@dataclass(frozen=True)
class UpgradeRun:
    """What one run of an upgrade stage does: the scenario, its `--from`, seed and argv."""

    scenario: str
    from_release: str | None  # `--from`; None for T- and previous-based scenarios
    seed: int
    argv: list[str]
    first_release: bool = False  # no integration release yet: zero-downtime-restart instead

    def describe(self) -> str:
        """One line for the stage log, before the scenario's own output."""
        start = (f"from {self.from_release}" if self.from_release is not None else
                 "on the candidate alone (no integration release yet)" if self.first_release
                 else "from the releases the scenario chooses")
        return f"lockstep: upgrade stage: scenario {self.scenario} {start}, seed {self.seed}"


def plan_upgrade(scenario: str | None, *, release: str | None, manifest: str,
                 configuration: str, candidate: str, workspace: str, artifacts: str,
                 program: Sequence[str]) -> UpgradeRun:
    """The run of an upgrade stage: `program scenario run <scenario> [--from <release>] --to
    <manifest> --config <configuration> --seed <seed> --json`, plus `-C <workspace>` (the
    integration repo holding the release tags) and `--artifacts <artifacts>`.

    `release` is the newest integration release reachable from the base, or None: then a
    scenario that needs an earlier release is replaced by zero-downtime-restart.
    """
    name = check_scenario(scenario or DEFAULT_SCENARIO)
    base = SCENARIOS[name].base
    first = release is None and base != "T"
    if first:
        name = FIRST_RELEASE_SCENARIO
    start = release if SCENARIOS[name].base in _FROM_BASES else None
    seed = stage_seed(candidate)
    argv = [*program, "scenario", "run", name, *(["--from", start] if start else []),
            "--to", manifest, "--config", configuration, "--seed", str(seed), "--json",
            "-C", workspace, "--artifacts", artifacts]
    return UpgradeRun(name, start, seed, argv, first)


def failure_lines(report: Mapping[str, Any] | Sequence[Any]) -> list[str]:
    """The end of a failed stage's log: per failure report (one, or a list in one-at-a-time
    mode) the scenario, action, check and phase, the error and the `FAILED_` file."""
    reports = [report] if isinstance(report, Mapping) else list(report)
    lines: list[str] = []
    for r in reports:
        if not isinstance(r, Mapping) or "failed_log" not in r:
            continue
        number = r.get("action_number")
        step = f"action {number:03d} {r.get('action')}" if isinstance(number, int) else (
            f"action {r.get('action')}")
        what = (f"check {r['check']}, phase {r.get('phase')}" if r.get("check")
                else f"{r.get('kind', 'lifecycle')} failure")
        lines += [f"lockstep: upgrade scenario {r.get('scenario')} (seed {r.get('seed')}) "
                  f"failed: {what}, {step}",
                  f"lockstep:   error: {' '.join(str(r.get('error')).split())[:300]}"]
        if r["failed_log"]:
            lines.append(f"lockstep:   log: {r['failed_log']}")
    return lines
