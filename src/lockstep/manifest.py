"""The manifest: per configuration, per component, a pin (version tag, commit SHA, digest).

Reading uses tomllib; editing uses tomlkit so comments, order and formatting survive (round trip).
"""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from typing import Any

import tomlkit
from tomlkit.items import Comment, InlineTable, Table, Whitespace

from lockstep import names
from lockstep.errors import ConfigError, LockstepError, NotFoundError

DEFAULT_CONFIGURATION = "default"
_DIGEST = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")  # the OCI digest grammar
_FORMAT_HINT = "see docs/manifest.md for the format"
HEADER = """\
# lockstep manifest: the exact version of every component, per configuration.
# Edited by `lockstep queue` when a bump lands; comments and order are kept.
"""


@dataclass(frozen=True)
class Pin:
    """One component's pinned version in one configuration."""

    version: str
    sha: str
    digest: str | None = None

    def to_dict(self) -> dict[str, str]:
        """JSON form; the digest only when known."""
        out = {"version": self.version, "sha": self.sha}
        if self.digest:
            out["digest"] = self.digest
        return out


@dataclass(frozen=True)
class Change:
    """One difference between two manifests."""

    configuration: str
    component: str
    old: Pin | None
    new: Pin | None

    def to_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {
            "configuration": self.configuration,
            "component": self.component,
            "old": self.old.to_dict() if self.old else None,
            "new": self.new.to_dict() if self.new else None,
        }

    def describe(self) -> str:
        """`api v1.0.0 → v1.1.0 [default]` style summary."""
        old = self.old.version if self.old else "(none)"
        new = self.new.version if self.new else "(removed)"
        return f"{self.component} {old} → {new} [{self.configuration}]"


class Manifest:
    """A parsed manifest; immutable: edits return new manifest text."""

    def __init__(self, text: str, source: str = "manifest") -> None:
        self.text = text
        self.source = source
        self._pins = _parse_pins(text, source)

    @property
    def configurations(self) -> list[str]:
        """Configuration names in file order."""
        return list(self._pins)

    def pins(self, configuration: str) -> dict[str, Pin]:
        """The pins of one configuration."""
        try:
            return dict(self._pins[configuration])
        except KeyError:
            known = ", ".join(self._pins)
            raise NotFoundError(
                f"unknown configuration {configuration!r}", f"configurations: {known}"
            ) from None

    def pin(self, configuration: str, component: str) -> Pin | None:
        """One pin, or None when the configuration does not pin the component."""
        return self.pins(configuration).get(component)

    def configurations_pinning(self, component: str) -> list[str]:
        """The configurations that pin a component."""
        return [c for c, pins in self._pins.items() if component in pins]

    def with_pin(self, configuration: str, component: str, pin: Pin) -> str:
        """The manifest text with one pin set, everything else byte-identical."""
        doc = tomlkit.parse(self.text)
        configs = doc.get("configurations")
        if not isinstance(configs, Table | InlineTable):
            raise ConfigError(f"{self.source}: no [configurations] table", _FORMAT_HINT)
        table = configs.get(configuration)
        if not isinstance(table, Table | InlineTable):
            raise NotFoundError(f"unknown configuration {configuration!r}",
                                f"configurations: {', '.join(self.configurations)}")
        entry = table.get(component)
        if isinstance(entry, InlineTable | Table):
            entry["version"] = pin.version
            entry["sha"] = pin.sha
            if pin.digest:
                entry["digest"] = pin.digest
            elif "digest" in entry:
                del entry["digest"]
        else:
            inline = tomlkit.inline_table()
            inline.update(pin.to_dict())
            _append_before_trailing_trivia(table, component, inline)
        return tomlkit.dumps(doc)

    def apply(self, bumps: list[tuple[str, str, Pin]]) -> str:
        """Apply (configuration, component, pin) bumps in order; returns the new text."""
        text = self.text
        for configuration, component, pin in bumps:
            text = Manifest(text, self.source).with_pin(configuration, component, pin)
        return text

    def to_dict(self) -> dict[str, dict[str, dict[str, str]]]:
        """JSON form: {configuration: {component: pin}}."""
        return {
            c: {name: pin.to_dict() for name, pin in pins.items()} for c, pins in self._pins.items()
        }

    def validate(self, components: set[str]) -> list[str]:
        """Problems with this manifest against the declared components (empty when valid)."""
        problems = []
        for configuration, pins in self._pins.items():
            for component in pins:
                if component not in components:
                    problems.append(
                        f"configuration {configuration!r} pins {component!r}, "
                        "which lockstep.toml does not declare"
                    )
        return problems


def _append_before_trailing_trivia(table: Table | InlineTable, key: str, value: Any) -> None:
    """Add a key after the table's last entry, not after the blank lines and comments that
    tomlkit keeps at the end of a table but that belong, visually, to the next table."""
    if isinstance(table, InlineTable):
        table[key] = value
        return
    body = table.value.body
    trailing = []
    while body and body[-1][0] is None and isinstance(body[-1][1], Whitespace | Comment):
        trailing.append(body.pop())
    table.append(key, value)
    body.extend(reversed(trailing))


def _parse_pins(text: str, source: str) -> dict[str, dict[str, Pin]]:
    try:
        raw = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{source} is not valid TOML: {exc}", "fix the syntax") from None
    configs = raw.get("configurations")
    if not isinstance(configs, dict):
        raise ConfigError(f"{source}: missing [configurations] table", _FORMAT_HINT)
    if DEFAULT_CONFIGURATION not in configs:
        raise ConfigError(
            f"{source}: configuration 'default' is missing", "add [configurations.default]"
        )
    out: dict[str, dict[str, Pin]] = {}
    for configuration, pins in configs.items():
        try:
            names.configuration_name(configuration)
        except LockstepError as exc:
            raise ConfigError(f"{source}: {exc.message}", exc.hint) from None
        if not isinstance(pins, dict):
            raise ConfigError(f"{source}: configurations.{configuration} must be a table",
                              f"write [configurations.{configuration}] with one pin per component")
        out[configuration] = {}
        for component, value in pins.items():
            where = f"{source}: configurations.{configuration}.{component}"
            if not isinstance(value, dict) or set(value) - {"version", "sha", "digest"}:
                raise ConfigError(f"{where}: expected {{ version = ..., sha = ..., digest = ... }}",
                                  _FORMAT_HINT)
            try:
                names.component_name(component)
                digest = value.get("digest")
                if digest is not None and not (
                    isinstance(digest, str) and _DIGEST.fullmatch(digest)
                ):
                    raise ConfigError(
                        f"invalid digest {digest!r}", "expected e.g. sha256:<64 hex digits>"
                    )
                pin = Pin(
                    version=names.version(str(value.get("version", ""))),
                    sha=names.sha(str(value.get("sha", ""))),
                    digest=digest or None,
                )
            except LockstepError as exc:
                raise ConfigError(f"{where}: {exc.message}", exc.hint) from None
            out[configuration][component] = pin
    return out


def diff(old: Manifest, new: Manifest) -> list[Change]:
    """Every pin that differs between two manifests, in configuration then component order."""
    changes = []
    for configuration in dict.fromkeys(old.configurations + new.configurations):
        a = old.pins(configuration) if configuration in old.configurations else {}
        b = new.pins(configuration) if configuration in new.configurations else {}
        for component in dict.fromkeys([*a, *b]):
            if a.get(component) != b.get(component):
                changes.append(Change(configuration, component, a.get(component), b.get(component)))
    return changes


def render_new(configurations: dict[str, dict[str, Pin]]) -> str:
    """A fresh manifest file for `lockstep init` and the demo."""
    doc = tomlkit.parse(HEADER)
    root = tomlkit.table(is_super_table=True)
    for configuration, pins in configurations.items():
        table = tomlkit.table()
        for component, pin in pins.items():
            inline = tomlkit.inline_table()
            inline.update(pin.to_dict())
            table[component] = inline
        root[configuration] = table
    doc["configurations"] = root
    return tomlkit.dumps(doc)
