"""Pins of one file, computed together on its original bytes: find each pin's references
(the one place kinds are dispatched), turn them into splices, count, check shared spans and
overlaps, and apply the splices."""

from __future__ import annotations

import itertools
from collections.abc import Sequence
from dataclasses import dataclass

from lockstep.errors import (
    PinAmbiguousError,
    PinConflictError,
    PinCountError,
    PinError,
    PinNotFoundError,
    PinUnresolvableError,
)
from lockstep.pinning import chart, dockerfile, helm_values, regex_pin
from lockstep.pinning.model import Edit, FilePlan, NewValue, Piece, PinSpec, Reference, Traced
from lockstep.pinning.text import LineIndex, decode
from lockstep.pinning.yaml_scalar import double_quoted, needs_quotes, requote

ScanKey = tuple[str, tuple[str, ...]]


@dataclass(frozen=True)
class _Want:
    """One splice a pin wants, on character offsets; `ref` names the reference it serves."""

    start: int
    end: int
    new: str
    line: int
    label: str
    ref: tuple[ScanKey, int] | None = None

    @property
    def key(self) -> tuple[int, int, str]:
        return (self.start, self.end, self.new)


def _overlap(a: tuple[int, int], b: tuple[int, int]) -> bool:
    return a[0] < b[1] and b[0] < a[1]


class _FilePlanner:
    """Computes one file's edits for several pins."""

    def __init__(self, path: str, data: bytes) -> None:
        self.path = path
        self.text = decode(path, data)
        self.index = LineIndex(self.text)
        self.plan = FilePlan(path)
        self.scans: dict[ScanKey, list[Reference]] = {}
        self.wants: list[_Want] = []

    # -- references -------------------------------------------------------------------------

    def _scan(self, spec: PinSpec) -> tuple[ScanKey, list[Reference]]:
        key: ScanKey = (spec.kind, spec.tag_keys if spec.kind == "helm-values" else ())
        if key not in self.scans:
            if spec.kind == "dockerfile":
                refs, warnings = dockerfile.scan(self.path, self.text)
                self.plan.warnings.extend(warnings)
            else:
                refs = helm_values.scan(self.path, self.text, spec.tag_keys)
            self.scans[key] = refs
        return key, self.scans[key]

    def sites(self, i: int, spec: PinSpec, nv: NewValue) -> list[list[_Want]]:
        """The splices of each place the pin matches (one list per reference or field)."""
        if spec.kind in ("dockerfile", "helm-values"):
            return self._image_sites(i, spec, nv)
        new = nv.value if nv.value is not None else nv.image_tag
        if spec.kind == "chart":
            found, keys = chart.fields(self.path, self.text, spec.fields)
            if "version" in found:
                chart.check_version(self.path, new)
            if not found:
                self.plan.missing[i] = PinNotFoundError(
                    f"{self.path}: no top-level {' or '.join(spec.fields)}",
                    f"top-level keys: {', '.join(keys) or 'none'}")
            return [self._site([(t, new)], name) for name, t in found.items()]
        if spec.kind == "regex":
            if spec.pattern is None:
                raise PinError(f"{self.path}: a regex pin needs a pattern", "set `pattern`")
            found_lines = regex_pin.find(self.text, spec.pattern)
            if not found_lines:
                self.plan.missing[i] = PinNotFoundError(
                    f"{self.path}: pattern {spec.pattern.pattern!r} matches no line",
                    "the pattern must match a whole line (re.fullmatch, one line at a time)")
            return [self._site([(t, new)], spec.pattern.pattern) for t in found_lines]
        raise PinError(f"{self.path}: unknown pin kind {spec.kind!r}",
                       "use dockerfile, helm-values, chart or regex")

    def _image_sites(self, i: int, spec: PinSpec, nv: NewValue) -> list[list[_Want]]:
        if spec.image is None:
            raise PinError(f"{self.path}: a {spec.kind} pin needs an image", "set `image`")
        key, refs = self._scan(spec)
        sites: list[list[_Want]] = []
        hints: list[str] = []
        for n, ref in enumerate(refs):
            if ref.image is None or not spec.image.matches(ref.image):
                continue
            if ref.tag is None and ref.digest is None:
                hints.append(f"{ref.text} (line {ref.line}) has neither tag nor digest")
                continue
            site = self._ref_site(ref, spec, nv)
            sites.append([_Want(w.start, w.end, w.new, w.line, w.label, (key, n)) for w in site])
        if not sites:
            names = sorted({r.image.name for r in refs if r.image is not None})
            notes = hints + [r.note for r in refs if r.image is None and r.note]
            found = f"images found: {', '.join(names)}" if names else "no image references found"
            self.plan.missing[i] = PinNotFoundError(
                f"{self.path}: no reference to image {spec.image.name}",
                "; ".join([found, *notes]))
        return sites

    def _ref_site(self, ref: Reference, spec: PinSpec, nv: NewValue) -> list[_Want]:
        assert spec.image is not None
        parts: list[tuple[Traced, str]] = []
        if ref.digest is not None:
            empty = ref.digest.value == ""
            if nv.digest is not None and (not empty or spec.digest):
                parts.append((ref.digest, nv.digest))
            elif nv.digest is None and not empty:
                raise PinUnresolvableError(
                    f"{self.path}:{ref.line}: {ref.text} carries a digest and no new digest "
                    "is known", "give the digest (NAME=TAG@sha256:…) so it does not go stale")
        if ref.tag is not None:
            new_tag = nv.image_tag
            if ref.digest is None and spec.digest and nv.digest is not None:
                new_tag = f"{new_tag}@{nv.digest}"
            parts.append((ref.tag, new_tag))
        return self._site(parts, spec.image.name)

    # -- splices ----------------------------------------------------------------------------

    def _site(self, parts: list[tuple[Traced, str]], label: str) -> list[_Want]:
        """Splices for the traced values of one reference; values inside one plain YAML
        scalar are joined, and the scalar double-quoted when its new text needs it."""
        wants: list[_Want] = []
        by_box: dict[int, list[tuple[Traced, str]]] = {}
        for traced, new in parts:
            box = traced.container
            if box is not None and box.quoting == "plain":
                by_box.setdefault(box.start, []).append((traced, new))
            else:
                wants.append(self._splice(traced, new, label))
        for group in by_box.values():
            box = group[0][0].container
            assert box is not None
            value = box.value
            for traced, new in sorted(group, key=lambda g: -(g[0].pieces[0].start or 0)):
                lo = (traced.pieces[0].start or 0) - box.start
                value = value[:lo] + new + value[lo + len(traced.value):]
            if value != box.value and needs_quotes(value):
                line = self.index.line(box.start)
                wants.append(_Want(box.start, box.end, double_quoted(value), line, label))
            else:
                wants.extend(self._splice(t, n, label) for t, n in group)
        return wants

    def _splice(self, traced: Traced, new: str, label: str) -> _Want:
        pieces = traced.pieces
        box = traced.container
        raw = requote(new, box.quoting) if box is not None else new
        if traced.value == new:
            piece = _middle(pieces) or pieces[0]
            start = piece.start or 0
            return _Want(start, start + len(piece.text), self.text[start:start + len(piece.text)],
                         piece.line, label)
        if len(pieces) == 1 and not pieces[0].opaque and pieces[0].start is not None:
            p = pieces[0]
            return _Want(p.start or 0, p.end or 0, raw, p.line, label)
        mid = _middle(pieces)
        if mid is not None and mid.start is not None:
            k = pieces.index(mid)
            prefix = "".join(p.text for p in pieces[:k])
            suffix = "".join(p.text for p in pieces[k + 1:])
            if (new.startswith(prefix) and new.endswith(suffix)
                    and len(new) >= len(prefix) + len(suffix)):
                middle = new[len(prefix):len(new) - len(suffix)]
                return _Want(mid.start, mid.start + len(mid.text), middle, mid.line, label)
        raise PinUnresolvableError(
            f'{self.path}:{traced.line}: "{traced.value}" = {traced.describe()}: no single '
            f'edit makes it "{new}"',
            "keep the tag in one place (one ARG default or the reference itself), or pin that "
            "place with a regex pin")

    # -- checks -----------------------------------------------------------------------------

    def count(self, spec: PinSpec, i: int, sites: list[list[_Want]]) -> None:
        """Distinct sites against `max_matches` (chart fields are distinct by construction)."""
        keyed: dict[tuple[tuple[int, int], ...], list[_Want]] = {}
        for site in sites:
            if site:
                keyed.setdefault(tuple(sorted((w.start, w.end) for w in site)), site)
        self.plan.matches[i] = len(keyed)
        if spec.kind != "chart" and spec.max_matches is not None \
                and len(keyed) > spec.max_matches:
            where = ", ".join(f"{self.path}:{min(w.line for w in s)}" for s in keyed.values())
            raise PinCountError(
                f"{spec.label} matches {len(keyed)} places, more than max_matches = "
                f"{spec.max_matches}: {where}",
                "raise max_matches, or make the pin more specific")
        for site in sites:
            self.wants.extend(site)

    def check_shared(self) -> None:
        """A span used by several references changes only if all of them want the same."""
        by_ref: dict[tuple[ScanKey, int], set[tuple[int, int, str]]] = {}
        for w in self.wants:
            if w.ref is not None:
                by_ref.setdefault(w.ref, set()).add(w.key)
        for w in self.wants:
            if w.ref is None or self.text[w.start:w.end] == w.new:
                continue
            scan_key = w.ref[0]
            for n, user in enumerate(self.scans[scan_key]):
                if not any(_overlap((w.start, w.end), span) for span in user.uses):
                    continue
                if w.key in by_ref.get((scan_key, n), set()):
                    continue
                if user.image is None:
                    other = f"a use that pins nothing ({user.note})"
                else:
                    why = "to another value" if (scan_key, n) in by_ref else "by no pin here"
                    other = f"{user.text!r} (line {user.line}), pinned {why}"
                raise PinAmbiguousError(
                    f"{self.path}:{w.line}: {self.text[w.start:w.end]!r} is also used by "
                    f"{other}",
                    "give each image its own value (ARG, anchor), or pin every image using it "
                    "to the same value")

    def edits(self) -> list[Edit]:
        """The distinct splices as edits; overlapping different ones are a conflict."""
        unique = sorted({w.key: w for w in self.wants}.values(), key=lambda w: (w.start, w.end))
        for a, b in itertools.pairwise(unique):
            if b.start < a.end or (a.start, a.end) == (b.start, b.end):
                raise PinConflictError(
                    f"{self.path}:{a.line}: pins edit {self.text[a.start:a.end]!r} differently: "
                    f"{a.new!r} ({a.label}) and {b.new!r} ({b.label})",
                    "pin that place once, or to one value")
        return [Edit(self.path, w.line, self.index.byte(w.start), self.index.byte(w.end),
                     self.text[w.start:w.end], w.new, w.label) for w in unique]


def _middle(pieces: tuple[Piece, ...]) -> Piece | None:
    """The one piece not written in the reference itself (the ARG that gets the middle)."""
    others = [p for p in pieces if not p.literal]
    if len(others) == 1 and not any(p.opaque for p in pieces):
        return others[0]
    return None


def plan_file(path: str, data: bytes, pins: Sequence[tuple[PinSpec, NewValue]]) -> FilePlan:
    """Every pin's edits of one file, computed on its original bytes. A pin that matches
    nothing is recorded in `missing` (the caller decides); every other problem raises."""
    planner = _FilePlanner(path, data)
    for i, (spec, nv) in enumerate(pins):
        planner.count(spec, i, planner.sites(i, spec, nv))
    planner.check_shared()
    planner.plan.edits = planner.edits()
    return planner.plan


def compute_edits(path: str, data: bytes,
                  pins: Sequence[tuple[PinSpec, NewValue]]) -> list[Edit]:
    """Every pin's edits of one file (unchanged ones are applied pins); raises
    PinNotFoundError for the first pin that matches nothing, and every other Pin*Error."""
    plan = plan_file(path, data, pins)
    for i in sorted(plan.missing):
        raise plan.missing[i]
    return plan.edits


def apply_edits(data: bytes, edits: Sequence[Edit]) -> bytes:
    """The bytes with every changing edit spliced in (edits must not overlap)."""
    out: list[bytes] = []
    pos = 0
    for edit in sorted((e for e in edits if e.changed), key=lambda e: e.start):
        if edit.start < pos:
            raise PinConflictError(f"{edit.file}:{edit.line}: overlapping edits",
                                   "compute the edits of one file together")
        if data[edit.start:edit.end] != edit.old.encode("utf-8"):
            raise PinConflictError(f"{edit.file}:{edit.line}: the file changed under the edit",
                                   "compute the edits again on the current bytes")
        out.append(data[pos:edit.start])
        out.append(edit.new.encode("utf-8"))
        pos = edit.end
    out.append(data[pos:])
    return b"".join(out)
