"""Base versions (spec §5): release tags parsed by the configured tag format, filtered, one per
series, and `minor_versions` / `last` / `previous`; also the spans the random planner needs."""

from __future__ import annotations

import logging
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from functools import cached_property

from lockstep.errors import NotFoundError, UsageError, ValidationError
from lockstep.scenarios.settings import ScenarioSettings

Series = tuple[int, ...]
_FIELD = re.compile(r"\{(year|month|n)(?::[^}]*)?\}")
_log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Version:
    """A parsed release tag: its numbers in format order and an optional prerelease suffix."""

    tag: str
    numbers: tuple[int, ...]
    prerelease: str | None = None

    @property
    def series(self) -> Series:
        """Every field but the last (year and month by default)."""
        return self.numbers[:-1]

    @property
    def key(self) -> tuple[tuple[int, ...], int, str, str]:
        """Total order: numbers, then a prerelease before its release, then the text."""
        return (self.numbers, 0 if self.prerelease is not None else 1, self.prerelease or "",
                self.tag)


class TagFormat:
    """Parses tags written by `integration.tag_format` (e.g. `v{year}.{month:02d}.{n}`).

    The leading `v` is optional and a `-suffix` marks a prerelease (spec §5 step 1).
    """

    def __init__(self, fmt: str) -> None:
        self.format = fmt
        body = fmt[1:] if fmt.startswith("v") else fmt
        pattern, pos = "v?", 0
        for m in _FIELD.finditer(body):
            pattern += re.escape(body[pos:m.start()]) + "([0-9]+)"
            pos = m.end()
        pattern += re.escape(body[pos:]) + r"(?:-([0-9A-Za-z][0-9A-Za-z.-]*))?"
        self._regex = re.compile(pattern)

    def parse(self, tag: str) -> Version | None:
        """The tag's version, or None when it does not follow the format."""
        m = self._regex.fullmatch(tag)
        if m is None:
            return None
        *numbers, pre = m.groups()
        return Version(tag, tuple(int(x) for x in numbers), pre)

    def version(self, tag: str, what: str) -> Version:
        """The tag's version; a tag not following the format is a validation error."""
        parsed = self.parse(tag)
        if parsed is None:
            raise ValidationError(f"malformed {what} {tag!r}",
                                  f"release tags follow the tag format {self.format!r}")
        return parsed


class Releases:
    """The integration release tags of one run, as spec §5 filters and groups them.

    `has_artifacts(tag)` answers whether every digest of the tag's frozen manifest resolves; it
    is asked once per tag surviving steps 1–2, in ascending order.
    """

    def __init__(self, tags: Iterable[str], *, tag_format: str, target_version: str,
                 has_artifacts: Callable[[str], bool],
                 settings: ScenarioSettings | None = None, include_prereleases: bool = False,
                 warn: Callable[[str], None] | None = None) -> None:
        self.format = TagFormat(tag_format)
        self.settings = settings or ScenarioSettings()
        self.include_prereleases = include_prereleases
        self.target = self.format.version(target_version, "target version")
        warn = warn or _log.warning
        self.known: dict[str, Version] = {}
        for tag in sorted(set(tags)):
            parsed = self.format.parse(tag)
            if parsed is None:
                warn(f"skipping tag {tag!r}: it does not follow the tag format "
                     f"{self.format.format!r}")
            else:
                self.known[tag] = parsed
        skip = set(self.settings.skip_versions)
        self.surviving: tuple[Version, ...] = tuple(sorted(
            (v for v in self.known.values()
             if (include_prereleases or v.prerelease is None) and v.tag not in skip
             and v.key < self.target.key and v.series != self.target.series),
            key=lambda v: v.key))
        self.artifacts: dict[str, bool] = {v.tag: bool(has_artifacts(v.tag))
                                           for v in self.surviving}
        self._has_artifacts = has_artifacts
        self._skip = skip
        self.asked: dict[str, bool] = {}  # own-series tags asked about by `between`

    @property
    def target_version(self) -> str:
        """The target's version tag."""
        return self.target.tag

    @cached_property
    def chosen(self) -> dict[Series, Version]:
        """Step 3: per series, its highest tag whose artifacts all exist (series without one are
        absent), in ascending series order."""
        out: dict[Series, Version] = {}
        for v in self.surviving:  # ascending, so the last ok tag of a series wins
            if self.artifacts[v.tag]:
                out[v.series] = v
        return dict(sorted(out.items()))

    @property
    def series(self) -> tuple[Series, ...]:
        """The series step 3 keeps, oldest first."""
        return tuple(self.chosen)

    @property
    def minor_versions(self) -> tuple[str, ...]:
        """Step 4: the kept tag of the newest `previous_series` series, newest first."""
        newest = list(self.chosen.values())[::-1]
        return tuple(v.tag for v in newest[:self.settings.previous_series])

    def require(self, needed: int) -> tuple[str, ...]:
        """`minor_versions`, or exit 2 when it holds fewer than `needed` releases."""
        found = self.minor_versions
        if len(found) < needed:
            raise not_enough(needed, len(found))
        return found

    @property
    def last(self) -> str:
        """`minor_versions[0]`."""
        return self.require(1)[0]

    @property
    def previous(self) -> str:
        """`minor_versions[1]`."""
        return self.require(2)[1]

    def patches(self, series: Series) -> list[str]:
        """The series' tags surviving steps 1–2 with all their artifacts, ascending."""
        return [v.tag for v in self.surviving if v.series == series and self.artifacts[v.tag]]

    def release(self, tag: str, what: str) -> Version:
        """A release named on the command line (`--from`, `--path`): a known tag older than the
        target. Step 2's filters do not apply to it."""
        parsed = self.format.version(tag, what)
        if tag not in self.known:
            raise NotFoundError(f"{what} {tag}: no such release tag",
                                f"newest releases: {', '.join(self.minor_versions) or 'none'}")
        if not parsed.key < self.target.key:
            raise UsageError(f"{what} {tag} is not older than the target {self.target.tag}",
                             "name a release older than the target")
        return parsed

    def between(self, older: Version) -> str | None:
        """The newest release strictly between `older` and the target that passes step 1's
        filters and has all its artifacts, its own series included: where `--from` names a
        release of the target's series, `minor_versions` has nothing newer (a lockstep choice;
        the spec would exit 2, see docs/scenarios.md)."""
        for v in sorted(self.known.values(), key=lambda v: v.key, reverse=True):
            if not older.key < v.key < self.target.key or v.tag in self._skip:
                continue
            if v.prerelease is not None and not self.include_prereleases:
                continue
            ok = self.artifacts.get(v.tag)
            if ok is None:
                ok = self.asked[v.tag] = bool(self._has_artifacts(v.tag))
            if ok:
                return v.tag
        return None

    def span(self, older: Series, newer: Series) -> int:
        """Series (of the tags surviving steps 1–2, and the target's) newer than `older` and not
        newer than `newer`: the number of series a hop crosses (spec §7)."""
        universe = {v.series for v in self.surviving} | {self.target.series}
        return sum(1 for s in universe if older < s <= newer)

    def key(self, version: str | None) -> tuple[tuple[int, ...], int, str, str]:
        """Order of versions; None (the target) sorts as the target's own version."""
        if version is None:
            return self.target.key
        return self.format.version(version, "version").key

    def input_lines(self) -> list[str]:
        """`target <version>` and `tag <tag> <ok|missing>` per surviving tag (spec §7 inputs)."""
        return [f"target {self.target.tag}"] + [
            f"tag {v.tag} {'ok' if self.artifacts[v.tag] else 'missing'}"
            for v in self.surviving] + [
            f"tag {tag} {'ok' if ok else 'missing'} (between)"
            for tag, ok in sorted(self.asked.items(), key=lambda kv: self.key(kv[0]))]


def not_enough(needed: int, found: int) -> UsageError:
    """The exit-2 error of a scenario needing more releases than exist."""
    return UsageError(f"not enough releases: needs {needed}, found {found}",
                      "land more releases, pass --from, or run a scenario whose base is T "
                      "(no-restart, restart-entire, zero-downtime-restart)")
