"""Image references in a Dockerfile, read as BuildKit reads it (parser directives, line
continuations, heredocs, ARG/ENV expansion), each character traced to the source bytes it came
from. Hand-written: no Python library parses Dockerfiles with BuildKit's semantics and offsets."""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Final

from lockstep import imageref
from lockstep.errors import PinParseError
from lockstep.pinning.model import Piece, Reference, Traced
from lockstep.pinning.text import LineIndex

PLATFORM_ARGS: Final = frozenset({
    "TARGETPLATFORM", "TARGETOS", "TARGETARCH", "TARGETVARIANT",
    "BUILDPLATFORM", "BUILDOS", "BUILDARCH", "BUILDVARIANT"})
_DIRECTIVE = re.compile(r"\s*#\s*([a-zA-Z][a-zA-Z0-9]*)\s*=\s*(.+?)\s*")
_DIRECTIVES = ("syntax", "escape", "check")
_HEREDOC = re.compile(r"(?:^|\s)[0-9]*<<(-?)(\"|'|)([^\s<\"']+)\2")
_NAME_CHAR = re.compile(r"[A-Za-z0-9_]")


class _Unknown:
    """The value of an automatic platform ARG: known only at build time."""


UNKNOWN: Final = _Unknown()


@dataclass(frozen=True)
class Ch:
    """One character of an expanded word and where it came from."""

    ch: str
    off: int | None
    label: str
    line: int
    literal: bool = True
    opaque: bool = False


VarValue = tuple[Ch, ...] | _Unknown | None  # None: declared without a value (unset)


@dataclass
class _Expansion:
    chars: list[Ch] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    unset: list[str] = field(default_factory=list)


class _Lexer:
    """BuildKit's shell-word processing of one word: quotes, escapes and `$` expansion."""

    def __init__(self, word: list[Ch], scope: Mapping[str, VarValue], esc: str, path: str,
                 expand: bool = True) -> None:
        self.word, self.scope, self.esc, self.path, self.expand = word, scope, esc, path, expand
        self.i = 0
        self.out = _Expansion()

    def _fail(self, what: str) -> PinParseError:
        line = self.word[min(self.i, len(self.word) - 1)].line if self.word else 0
        return PinParseError(f"{self.path}:{line}: {what}", "fix the Dockerfile's syntax")

    def run(self) -> _Expansion:
        w = self.word
        while self.i < len(w):
            c = w[self.i].ch
            if c == self.esc:
                if self.i + 1 < len(w):
                    self.out.chars.append(w[self.i + 1])
                self.i += 2
            elif c == "'":
                self._single()
            elif c == '"':
                self._double()
            elif c == "$" and self.expand:
                self._dollar()
            else:
                self.out.chars.append(w[self.i])
                self.i += 1
        return self.out

    def _single(self) -> None:
        end = next((j for j in range(self.i + 1, len(self.word)) if self.word[j].ch == "'"), None)
        if end is None:
            raise self._fail("unterminated single quote")
        self.out.chars.extend(self.word[self.i + 1:end])
        self.i = end + 1

    def _double(self) -> None:
        w = self.word
        self.i += 1
        while True:
            if self.i >= len(w):
                raise self._fail("unterminated double quote")
            c = w[self.i].ch
            if c == '"':
                self.i += 1
                return
            if c == "$" and self.expand:
                self._dollar()
                continue
            if c == self.esc and self.i + 1 < len(w) and w[self.i + 1].ch in ('"', "$", self.esc):
                self.i += 1
            self.out.chars.append(w[self.i])
            self.i += 1

    def _dollar(self) -> None:
        w = self.word
        start = self.i
        self.i += 1
        if self.i < len(w) and w[self.i].ch == "{":
            self.i += 1
            name = self._name()
            if self.i >= len(w):
                self.i = start
                raise self._fail("unbalanced ${ in a variable reference")
            op = w[self.i].ch
            if op == "}":
                self.i += 1
                self._use(name, None, [])
                return
            if op == ":" and self.i + 1 < len(w) and w[self.i + 1].ch in "-+?":
                op = ":" + w[self.i + 1].ch
                self.i += 2
            elif op in "-+?":
                self.i += 1
            else:
                op = "#"  # ${N#…}, ${N%…}, ${N/…}, ${N:off}: not invertible
            body = self._until_brace(start)
            if op == "#":
                self._use(name, "opaque", [])
            else:
                self._use(name, op, body)
            return
        name = self._name()
        if not name:
            self.out.chars.append(w[start])
            return
        self._use(name, None, [])

    def _name(self) -> str:
        w = self.word
        j = self.i
        while j < len(w) and _NAME_CHAR.fullmatch(w[j].ch):
            j += 1
        name = "".join(c.ch for c in w[self.i:j])
        self.i = j
        return name

    def _until_brace(self, start: int) -> list[Ch]:
        w = self.word
        depth, j = 0, self.i
        while j < len(w):
            c = w[j].ch
            if c == self.esc:
                j += 2
                continue
            if c == "$" and j + 1 < len(w) and w[j + 1].ch == "{":
                depth += 1
                j += 2
                continue
            if c == "}":
                if depth == 0:
                    body = w[self.i:j]
                    self.i = j + 1
                    return body
                depth -= 1
            j += 1
        self.i = start
        raise self._fail("unbalanced ${ in a variable reference")

    def _use(self, name: str, op: str | None, word: list[Ch]) -> None:
        value = self.scope.get(name)
        if isinstance(value, _Unknown):
            self.out.unknown.append(name)
            return
        if value is None:
            self.out.unset.append(name)
        chars = list(value or ())
        is_set = value is not None
        if op is None or op in ("?", ":?"):
            self.out.chars.extend(chars)
        elif op == "opaque":
            self.out.chars.extend(Ch(c.ch, c.off, f"${{{name}…}}", c.line, False, True)
                                  for c in chars)
        else:
            use_word = {":-": not chars, "-": not is_set, ":+": bool(chars), "+": is_set}[op]
            if use_word:
                sub = _Lexer(word, self.scope, self.esc, self.path).run()
                self.out.chars.extend(sub.chars)
                self.out.unknown.extend(sub.unknown)
                self.out.unset.extend(sub.unset)
            elif op in (":-", "-"):
                self.out.chars.extend(chars)


def _split_ws(chars: list[Ch]) -> list[list[Ch]]:
    """Words separated by spaces and tabs (no quote handling, as BuildKit's FROM)."""
    words: list[list[Ch]] = []
    cur: list[Ch] = []
    for c in chars:
        if c.ch in " \t":
            if cur:
                words.append(cur)
                cur = []
        else:
            cur.append(c)
    if cur:
        words.append(cur)
    return words


def _split_words(chars: list[Ch], esc: str) -> list[list[Ch]]:
    """Words separated by whitespace outside quotes, quotes and escapes kept (BuildKit's
    parseWords, used for ARG, ENV and flags)."""
    words: list[list[Ch]] = []
    cur: list[Ch] = []
    quote: str | None = None
    i = 0
    while i < len(chars):
        c = chars[i]
        if quote is None and c.ch in " \t":
            if cur:
                words.append(cur)
                cur = []
            i += 1
            continue
        cur.append(c)
        if c.ch == esc and quote != "'" and i + 1 < len(chars):
            cur.append(chars[i + 1])
            i += 2
            continue
        if quote is None and c.ch in "'\"":
            quote = c.ch
        elif quote == c.ch:
            quote = None
        i += 1
    if cur:
        words.append(cur)
    return words


def _text(chars: list[Ch]) -> str:
    return "".join(c.ch for c in chars)


def _pieces(chars: list[Ch]) -> tuple[Piece, ...]:
    """Runs of characters with consecutive source offsets and one origin."""
    pieces: list[Piece] = []
    run: list[Ch] = []

    def flush() -> None:
        if run:
            first = run[0]
            pieces.append(Piece(first.off, _text(run), first.label, first.line, first.literal,
                                first.opaque))
            run.clear()

    for c in chars:
        if run:
            prev = run[-1]
            if (c.off is None or prev.off is None or c.off != prev.off + 1
                    or c.label != prev.label or c.opaque != prev.opaque):
                flush()
        run.append(c)
    flush()
    return tuple(pieces)


@dataclass
class _Instruction:
    chars: list[Ch]
    line: int

    @property
    def text(self) -> str:
        return _text(self.chars)


class DockerfileScanner:
    """Reads one Dockerfile and lists its image references."""

    def __init__(self, path: str, text: str) -> None:
        self.path, self.text = path, text
        self.index = LineIndex(text)
        self.esc = "\\"
        self.refs: list[Reference] = []
        self.warnings: list[str] = []
        self.global_args: dict[str, VarValue] = {name: UNKNOWN for name in PLATFORM_ARGS}
        self.stage_vars: dict[str, VarValue] | None = None
        self.stage_envs: dict[str, dict[str, VarValue]] = {}
        self.stage_env: dict[str, VarValue] = {}
        self.stages: list[str] = []

    def _fail(self, line: int, what: str) -> PinParseError:
        return PinParseError(f"{self.path}:{line}: {what}", "fix the Dockerfile's syntax")

    def _lines(self) -> list[tuple[int, str]]:
        out: list[tuple[int, str]] = []
        pos = 1 if self.text.startswith("\ufeff") else 0
        for raw in self.text[pos:].split("\n"):
            content = raw[:-1] if raw.endswith("\r") else raw
            out.append((pos, content))
            pos += len(raw) + 1
        if out and out[-1][1] == "" and self.text.endswith("\n"):
            out.pop()
        return out

    def scan(self) -> list[Reference]:
        """Every reference: `# syntax=`, FROM, COPY --from, RUN --mount from=."""
        lines = self._lines()
        i = self._directives(lines)
        while i < len(lines):
            start, content = lines[i]
            stripped = content.lstrip(" \t")
            if not stripped or stripped.startswith("#"):
                i += 1
                continue
            chars: list[Ch] = []
            first = self.index.line(start)
            lead = len(content) - len(stripped)
            while True:
                body, cont = self._continues(content)
                base = start + (lead if not chars else 0)
                seg = body[lead:] if not chars else body
                line = self.index.line(start)
                chars.extend(Ch(c, base + k, f"literal (line {line})", line)
                             for k, c in enumerate(seg))
                i += 1
                if not cont:
                    break
                while i < len(lines) and (not lines[i][1].strip(" \t")
                                          or lines[i][1].lstrip(" \t").startswith("#")):
                    i += 1
                if i >= len(lines):
                    break
                start, content = lines[i]
                lead = 0
            if not chars:
                continue
            inst = _Instruction(chars, first)
            i = self._heredocs(inst, lines, i)
            self._dispatch(inst)
        return self.refs

    def _continues(self, content: str) -> tuple[str, bool]:
        body = content.rstrip(" \t")
        if body.endswith(self.esc) and not body.endswith(self.esc * 2):
            return body[:-1], True
        return content, False

    def _directives(self, lines: list[tuple[int, str]]) -> int:
        seen: set[str] = set()
        for i, (start, content) in enumerate(lines):
            m = _DIRECTIVE.fullmatch(content)
            if not m or m.group(1).lower() not in _DIRECTIVES:
                return i
            key, value = m.group(1).lower(), m.group(2)
            line = self.index.line(start)
            if key in seen:
                raise self._fail(line, f"parser directive {key!r} is repeated")
            seen.add(key)
            if key == "escape":
                if value not in ("\\", "`"):
                    raise self._fail(line, f"invalid escape directive {value!r}")
                self.esc = value
            elif key == "syntax":
                off = start + m.start(2)
                chars = [Ch(c, off + k, f"literal (line {line})", line)
                         for k, c in enumerate(value)]
                self._reference(chars, line, "# syntax=")
        return len(lines)

    def _heredocs(self, inst: _Instruction, lines: list[tuple[int, str]], i: int) -> int:
        keyword = inst.text.split(None, 1)[0].upper() if inst.text.strip() else ""
        if keyword not in ("RUN", "COPY", "ADD"):
            return i
        for m in _HEREDOC.finditer(inst.text):
            strip_tabs, word = m.group(1) == "-", m.group(3)
            while True:
                if i >= len(lines):
                    raise self._fail(inst.line, f"heredoc <<{word} is not terminated")
                content = lines[i][1]
                i += 1
                if (content.lstrip("\t") if strip_tabs else content) == word:
                    break
        return i

    def _dispatch(self, inst: _Instruction) -> None:
        words = _split_ws(inst.chars)
        keyword = _text(words[0]).upper()
        rest_start = len(words[0])
        while rest_start < len(inst.chars) and inst.chars[rest_start].ch in " \t":
            rest_start += 1
        rest = inst.chars[rest_start:]
        if keyword == "FROM":
            self._from(words[1:], inst.line)
        elif keyword == "ARG":
            self._arg(rest, inst.line)
        elif keyword == "ENV":
            self._env(rest, inst.line)
        elif keyword == "COPY":
            self._copy(rest)
        elif keyword == "RUN":
            self._run(rest)

    def _scope(self) -> dict[str, VarValue]:
        if self.stage_vars is None:
            return self.global_args
        return {**self.stage_env, **self.stage_vars}

    def _from(self, words: list[list[Ch]], line: int) -> None:
        while words and _text(words[0]).startswith("--"):
            words = words[1:]
        if not words:
            raise self._fail(line, "FROM without an image")
        exp = _Lexer(words[0], self.global_args, self.esc, self.path).run()
        name = _text(exp.chars).lower()
        base_env = self.stage_envs.get(name, {}) if name in self.stages else {}
        if not self._skip_stage(name):
            self._expanded(exp, line, "FROM")
        self.stage_vars = {}
        self.stage_env = dict(base_env)
        if len(words) >= 3 and _text(words[1]).lower() == "as":
            stage = _text(words[2]).lower()
            self.stages.append(stage)
            self.stage_envs[stage] = self.stage_env
        else:
            self.stages.append(str(len(self.stages)))

    def _skip_stage(self, name: str) -> bool:
        return name == "scratch" or name in self.stages or name.isdigit()

    def _assignments(self, rest: list[Ch]) -> list[tuple[str, list[Ch] | None]]:
        out: list[tuple[str, list[Ch] | None]] = []
        for word in _split_words(rest, self.esc):
            text = _text(word)
            if "=" in text:
                eq = text.index("=")
                out.append((text[:eq], word[eq + 1:]))
            else:
                out.append((text, None))
        return out

    def _declared(self, raw: list[Ch], kind: str, name: str, line: int) -> VarValue:
        exp = _Lexer(raw, self._scope(), self.esc, self.path).run()
        if exp.unknown:
            return UNKNOWN
        label = f"{kind} {name} (line {line})"
        return tuple(Ch(c.ch, c.off, label, c.line, False, c.opaque) if c.literal else c
                     for c in exp.chars)

    def _arg(self, rest: list[Ch], line: int) -> None:
        for name, raw in self._assignments(rest):
            if self.stage_vars is None:
                if raw is not None:
                    self.global_args[name] = self._declared(raw, "ARG", name, line)
                else:
                    self.global_args.setdefault(name, None)
            elif raw is not None:
                self.stage_vars[name] = self._declared(raw, "ARG", name, line)
            else:
                self.stage_vars[name] = self.global_args.get(name)

    def _env(self, rest: list[Ch], line: int) -> None:
        words = _split_words(rest, self.esc)
        if not words:
            return
        if "=" not in _text(words[0]):  # legacy `ENV NAME value with spaces`
            name = _text(words[0])
            value = rest[len(words[0]):]
            while value and value[0].ch in " \t":
                value = value[1:]
            self.stage_env[name] = self._declared(value, "ENV", name, line)
            return
        for name, raw in self._assignments(rest):
            if raw is not None:
                self.stage_env[name] = self._declared(raw, "ENV", name, line)

    def _flags(self, rest: list[Ch]) -> list[list[Ch]]:
        flags: list[list[Ch]] = []
        for word in _split_words(rest, self.esc):
            if not _text(word).startswith("--"):
                break
            flags.append(word)
        return flags

    def _copy(self, rest: list[Ch]) -> None:
        for flag in self._flags(rest):
            text = _text(flag)
            if not text.startswith("--from="):
                continue
            value = flag[len("--from="):]
            if len(value) >= 2 and value[0].ch in "'\"" and value[-1].ch == value[0].ch:
                value = value[1:-1]
            if "$" in _text(value) or not value or self._skip_stage(_text(value).lower()):
                continue
            self._reference(value, value[0].line, "COPY --from")

    def _run(self, rest: list[Ch]) -> None:
        for flag in self._flags(rest):
            if not _text(flag).startswith("--mount="):
                continue
            spec = flag[len("--mount="):]
            fields: list[list[Ch]] = [[]]
            for c in spec:
                if c.ch == ",":
                    fields.append([])
                else:
                    fields[-1].append(c)
            for f in fields:
                if not _text(f).startswith("from="):
                    continue
                exp = _Lexer(f[5:], self._scope(), self.esc, self.path).run()
                if not self._skip_stage(_text(exp.chars).lower()):
                    self._expanded(exp, f[0].line, "RUN --mount from=")

    def _expanded(self, exp: _Expansion, line: int, where: str) -> None:
        if exp.unknown:
            self.refs.append(Reference(
                _text(exp.chars), line, None,
                note=f"{where} on line {line} uses automatic platform ARG "
                     f"{', '.join(exp.unknown)} (value known only at build time)"))
            return
        if not exp.chars:
            unset = f" (ARG {', '.join(exp.unset)} has no value here)" if exp.unset else ""
            self.refs.append(Reference("", line, None,
                                       note=f"{where} on line {line} is empty{unset}"))
            return
        self._reference(exp.chars, line, where, exp.unset)

    def _reference(self, chars: list[Ch], line: int, where: str,
                   unset: list[str] | None = None) -> None:
        text = _text(chars)
        problem = imageref.problem_of(text)
        uses = tuple((p.start, p.end) for p in _pieces(chars)
                     if p.start is not None and p.end is not None)
        if problem is not None:
            why = f" (ARG {', '.join(unset)} has no value here)" if unset else ""
            note = f"{where} on line {line}: {text!r} is not a valid reference{why}"
            self.warnings.append(f"{self.path}:{line}: skipped {text!r}: {problem}")
            self.refs.append(Reference(text, line, None, note=note, uses=uses))
            return
        ref = imageref.parse(text)
        tag = digest = None
        if ref.tag is not None and ref.tag_start is not None:
            tag = Traced(_pieces(chars[ref.tag_start:ref.tag_start + len(ref.tag)]))
        if ref.digest is not None and ref.digest_start is not None:
            digest = Traced(_pieces(chars[ref.digest_start:]))
        self.refs.append(Reference(text, line, ref, tag, digest, uses=uses))


def scan(path: str, text: str) -> tuple[list[Reference], list[str]]:
    """The references of a Dockerfile and the warnings about skipped invalid ones."""
    scanner = DockerfileScanner(path, text)
    return scanner.scan(), scanner.warnings
