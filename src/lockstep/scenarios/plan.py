"""The printed plan (spec §7): `plan.txt`'s header and action lines, `plan.json`, and the
`inputs` digest that explains why two plans differ. Same seed and inputs, same bytes."""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from typing import Any

from lockstep.errors import UsageError
from lockstep.scenarios.invariants import check_plan
from lockstep.scenarios.scenario import PlanEntry, PlanOptions, Scenario
from lockstep.scenarios.selection import Shard
from lockstep.scenarios.settings import ScenarioSettings
from lockstep.scenarios.versions import TagFormat


@dataclass(frozen=True)
class Plan:
    """Everything `plan.txt` and `plan.json` show, decided before any action runs."""

    scenario: str
    seed: int | None
    inputs: tuple[str, ...]
    base: str | None
    target_version: str
    manifest_sha256: str
    path_override: tuple[str, ...] | None
    checks: tuple[str, ...]
    disabled: tuple[tuple[str, str], ...]
    skipped: tuple[str, ...]
    entries: tuple[PlanEntry, ...]
    options: PlanOptions

    @property
    def digest(self) -> str:
        """The first 12 hex digits of the SHA-256 of the input lines joined by newlines."""
        return inputs_digest(self.inputs)

    def header_lines(self) -> list[str]:
        """`key = value` lines in the spec's order; `path-override` only under `--path`."""
        lines = [f"scenario = {self.scenario}",
                 f"seed = {'none' if self.seed is None else self.seed}",
                 f"inputs = {self.digest}",
                 f"base = {self.base or 'T'}",
                 f"target = {self.target_version} ({self.manifest_sha256[:12]})"]
        if self.path_override is not None:
            lines.append(f"path-override = {','.join(self.path_override)}")
        lines += [f"checks = {', '.join(self.checks) or 'none'}",
                  "disabled = " + (", ".join(f"{name} ({json.dumps(reason)})"
                                             for name, reason in self.disabled) or "none"),
                  f"skipped = {', '.join(self.skipped) or 'none'}"]
        return lines

    def action_lines(self) -> list[str]:
        """`NNN <ActionName>[ key=value…][  # inserted]`, numbered from 001."""
        return [f"{number:03d} {entry.action.line()}{'  # inserted' if entry.inserted else ''}"
                for number, entry in enumerate(self.entries, start=1)]

    def text(self) -> str:
        """plan.txt: the header, then one line per action; every line ends in a newline."""
        return "".join(f"{line.rstrip()}\n" for line in self.header_lines() + self.action_lines())

    def to_json(self) -> dict[str, Any]:
        """plan.json's data: the same as plan.txt, structured, with the input lines."""
        return {
            "scenario": self.scenario, "seed": self.seed,
            "inputs": {"digest": self.digest, "lines": list(self.inputs)},
            "base": self.base, "target": {"version": self.target_version,
                                          "manifest_sha256": self.manifest_sha256},
            "path_override": list(self.path_override) if self.path_override is not None
            else None,
            "options": _options_json(self.options),
            "checks": list(self.checks),
            "disabled": [{"check": n, "reason": r} for n, r in self.disabled],
            "skipped": list(self.skipped),
            "actions": [{"number": number, "line": line, "inserted": entry.inserted,
                         **entry.action.to_json()}
                        for number, (entry, line) in enumerate(
                            zip(self.entries, self.action_lines(), strict=True), start=1)],
        }

    def json_text(self) -> str:
        """plan.json's bytes: sorted keys, two-space indent, final newline."""
        return json.dumps(self.to_json(), indent=2, sort_keys=True, ensure_ascii=False) + "\n"


def inputs_digest(lines: tuple[str, ...] | list[str]) -> str:
    """SHA-256 of the UTF-8 lines joined by `\\n`, first 12 hex digits."""
    return hashlib.sha256("\n".join(lines).encode()).hexdigest()[:12]


def input_lines(scenario: Scenario) -> list[str]:
    """The inputs of spec §7 in order: target, tags, config, checks, options."""
    releases = scenario.need_releases()
    return (releases.input_lines() + scenario.settings.input_lines()
            + [f"check {cls.name()}" for cls in scenario.check_classes]
            + scenario.options.input_lines())


def build_plan(scenario: Scenario, manifest_sha256: str) -> Plan:
    """The scenario's plan, after checking the invariants of spec §7 (PlanError on violation)."""
    releases = scenario.need_releases()
    check_plan([e.action for e in scenario.plan], releases.key)
    return Plan(
        scenario=scenario.name, seed=scenario.seed, inputs=tuple(input_lines(scenario)),
        base=scenario.resolved_base, target_version=releases.target_version,
        manifest_sha256=manifest_sha256, path_override=scenario.options.path,
        checks=tuple(c.name for c in scenario.checks), disabled=scenario.selection.disabled,
        skipped=scenario.selection.skipped, entries=scenario.plan, options=scenario.options)


def _options_json(options: PlanOptions) -> dict[str, Any]:
    return {"from": options.from_version,
            "path": list(options.path) if options.path is not None else None,
            "check": list(options.checks), "shard": str(options.shard) if options.shard else None,
            "mode": options.mode, "config": options.config}


@dataclass(frozen=True)
class Replay:
    """What `--plan FILE` takes from a saved plan.json to rebuild the same plan."""

    scenario: str
    seed: int | None
    target_version: str
    manifest_sha256: str
    tags: dict[str, bool]          # tag → all artifacts exist, as recorded
    settings: ScenarioSettings
    checks: tuple[str, ...]        # every selectable check the plan saw
    options: PlanOptions


def read_replay(data: dict[str, Any]) -> Replay:
    """Parse a plan.json for replay; a file whose inputs do not match its digest is exit 2."""
    try:
        lines = [str(x) for x in data["inputs"]["lines"]]
        if inputs_digest(lines) != data["inputs"]["digest"]:
            raise UsageError("plan.json's inputs do not match their digest",
                             "the file was edited; replay an unmodified plan.json")
        tags: dict[str, bool] = {}
        config: dict[str, Any] = {}
        checks: list[str] = []
        for line in lines:
            kind, _, rest = line.partition(" ")
            if kind == "tag":
                tag, status = rest.split(" ")
                tags[tag] = status == "ok"
            elif kind == "config":
                k, _, v = rest.partition("=")
                config[k] = json.loads(v)
            elif kind == "check":
                checks.append(rest)
        opts = data["options"]
        options = PlanOptions(
            from_version=opts["from"],
            path=tuple(opts["path"]) if opts["path"] is not None else None,
            checks=tuple(opts["check"]),
            shard=Shard.parse(opts["shard"]) if opts["shard"] else None,
            mode=opts["mode"], config=opts["config"])
        return Replay(str(data["scenario"]), data["seed"], str(data["target"]["version"]),
                      str(data["target"]["manifest_sha256"]), tags,
                      ScenarioSettings.model_validate(config), tuple(checks), options)
    except (KeyError, TypeError, ValueError, AttributeError) as exc:
        raise UsageError(f"not a scenario plan.json ({type(exc).__name__}: {exc})",
                         "pass a plan.json written by `lockstep scenario plan` or `run`") from None


def replay_releases_args(replay: Replay, tag_format: str) -> dict[str, Any]:
    """Keyword arguments for `Releases` that reproduce the recorded tags and artifacts exactly
    (prereleases were filtered when the plan was made, so any recorded ones stay)."""
    TagFormat(tag_format)
    return {"tags": list(replay.tags), "tag_format": tag_format,
            "target_version": replay.target_version, "has_artifacts": replay.tags.__getitem__,
            "settings": replay.settings, "include_prereleases": True}
