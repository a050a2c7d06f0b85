"""The data of pinning: what to pin (PinSpec, NewValue), what a file holds (Reference, Traced)
and what changes (Edit, FilePlan). Offsets inside a file's text are character offsets; an Edit
carries byte offsets, since edits are splices of the file's bytes."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Literal

from lockstep.errors import PinNotFoundError
from lockstep.imageref import ImageRef

Kind = Literal["dockerfile", "helm-values", "chart", "regex"]
KINDS: tuple[Kind, ...] = ("dockerfile", "helm-values", "chart", "regex")
Quoting = Literal["raw", "plain", "single", "double"]


@dataclass(frozen=True)
class PinSpec:
    """One pin of one file: which references (kind + image, or pattern/fields) and how many."""

    kind: Kind
    file: str
    image: ImageRef | None = None
    pattern: re.Pattern[str] | None = None
    fields: tuple[str, ...] = ("version", "appVersion")
    tag_keys: tuple[str, ...] = ("tag",)
    max_matches: int | None = 1  # None: unlimited
    digest: bool = False  # add the new digest to references that have none

    @property
    def label(self) -> str:
        """What this pin looks for, as messages name it."""
        if self.kind == "regex" and self.pattern is not None:
            return f"pattern {self.pattern.pattern!r}"
        if self.kind == "chart":
            return f"fields {', '.join(self.fields)}"
        return f"image {self.image.name if self.image else '?'}"


@dataclass(frozen=True)
class NewValue:
    """The value a pin writes: the image tag (after the transform), the digest (`sha256:…`)
    and, for regex and chart pins, the already rendered text."""

    image_tag: str
    digest: str | None = None
    value: str | None = None


@dataclass(frozen=True)
class Piece:
    """A run of a value's characters that come from one contiguous place in the source
    (`start` None: not from the file, e.g. an automatic platform ARG)."""

    start: int | None
    text: str
    label: str  # e.g. 'ARG NODE_VERSION (line 2)' or 'literal (line 3)'
    line: int
    literal: bool = True  # written in the referencing instruction itself
    opaque: bool = False  # produced by an expansion lockstep cannot invert (`${N#…}`)

    @property
    def end(self) -> int | None:
        """The source offset after the piece."""
        return None if self.start is None else self.start + len(self.text)

    def describe(self) -> str:
        """`ARG X "1.2" (line 2)` or `literal "-alpine" (line 3)`, for error messages."""
        if self.literal:
            return f'literal "{self.text}" (line {self.line})'
        return f'{self.label} "{self.text}"'


@dataclass(frozen=True)
class Container:
    """A YAML scalar holding a slot: its whole source span, its text and its quoting."""

    start: int
    end: int
    value: str
    quoting: Quoting


@dataclass(frozen=True)
class Traced:
    """A tag or digest traced to its source pieces; inside `container` when it is part of a
    YAML scalar (which may need quotes once edited)."""

    pieces: tuple[Piece, ...]
    container: Container | None = None

    @property
    def value(self) -> str:
        """The current text."""
        return "".join(p.text for p in self.pieces)

    @property
    def line(self) -> int:
        """The line of the first piece."""
        return self.pieces[0].line if self.pieces else 0

    def describe(self) -> str:
        """The pieces joined with `+`."""
        return " + ".join(p.describe() for p in self.pieces)


@dataclass
class Reference:
    """One image reference in a file (or one use of a shared YAML node).

    `image` None: not a usable reference (never matches); `note` says why, for the
    PinNotFoundError hint. `uses` lists every source span the reference's text comes from."""

    text: str
    line: int
    image: ImageRef | None
    tag: Traced | None = None
    digest: Traced | None = None
    digest_key: bool = False  # the digest lives in a sibling `digest` key (Helm values)
    note: str | None = None
    uses: tuple[tuple[int, int], ...] = ()


@dataclass(frozen=True)
class Edit:
    """One splice: bytes [start, end) of `file` become `new`; `old` == `new` is an applied pin."""

    file: str
    line: int
    start: int
    end: int
    old: str
    new: str
    image: str

    @property
    def changed(self) -> bool:
        """Whether applying the edit changes the file."""
        return self.old != self.new

    def to_json(self) -> dict[str, object]:
        """The edit as `--json` prints it."""
        return {"file": self.file, "line": self.line, "start": self.start, "end": self.end,
                "old": self.old, "new": self.new, "image": self.image, "changed": self.changed}


@dataclass
class FilePlan:
    """The edits of one file for all its pins; `missing` holds, per pin index, the
    PinNotFoundError of a pin that matched nothing; `warnings` lists skipped references."""

    file: str
    edits: list[Edit] = field(default_factory=list)
    matches: dict[int, int] = field(default_factory=dict)
    missing: dict[int, PinNotFoundError] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)

    @property
    def changed(self) -> bool:
        """Whether any edit changes the file."""
        return any(e.changed for e in self.edits)
